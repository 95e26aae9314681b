/* drv_vhd.c - the VHD driver of struct vhd_disk (a thin shim over vhd_*). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "disk.h"
#include "internal.h"

static bool vhd_probe(int fd, uint64_t size)
{
	uint8_t b[VHD_FOOTER_SIZE];

	if (size < VHD_FOOTER_SIZE)
		return false;
	if (pread_full(fd, b, sizeof(b), size - VHD_FOOTER_SIZE) == 0 &&
	    !memcmp(b, VHD_COOKIE, 8))
		return true;
	/* a dynamic disk with a damaged tail still has its copy at 0, and one
	 * with both copies destroyed still has its header: better a clear error
	 * from the VHD parser than its metadata copied as raw data */
	if (size >= 2 * VHD_FOOTER_SIZE && pread_full(fd, b, sizeof(b), 0) == 0 &&
	    !memcmp(b, VHD_COOKIE, 8) &&
	    (vhd_be32(b + 60) == VHD_TYPE_DYNAMIC || vhd_be32(b + 60) == VHD_TYPE_DIFF))
		return true;
	return size >= 3 * VHD_FOOTER_SIZE && pread_full(fd, b, 8, VHD_FOOTER_SIZE) == 0 &&
	       !memcmp(b, VHD_DYN_COOKIE, 8);
}

static int vhd_drv_open(const char *path, const struct vhd_open_opts *opts, void **priv,
			uint64_t *size, struct vhd_err *err)
{
	struct vhd_image *img;
	int ret = vhd_open(path, opts, &img, err);

	if (ret < 0)
		return ret;
	*priv = img;
	*size = vhd_virtual_size(img);
	return 0;
}

static int vhd_drv_close(void *priv)
{
	return vhd_close(priv);
}

/* A fixed VHD (or a fixed base of a chain) is often a sparse file: its
 * holes read as zeros, found with SEEK_DATA/SEEK_HOLE as for raw files. */
static void refine_fixed(struct vhd_extent *e)
{
	off_t data, hole;
	uint64_t end = e->file_offset + e->length;

	data = lseek(e->fd, (off_t)e->file_offset, SEEK_DATA);
	if (data < 0 && errno != ENXIO)
		return;
	if (data < 0 || (uint64_t)data >= end) {
		e->kind = VHD_EXT_ZERO;
		return;
	}
	if ((uint64_t)data > e->file_offset) {
		e->kind = VHD_EXT_ZERO;
		e->length = (uint64_t)data - e->file_offset;
		return;
	}
	hole = lseek(e->fd, (off_t)e->file_offset, SEEK_HOLE);
	if (hole >= 0 && (uint64_t)hole < end)
		e->length = (uint64_t)hole - e->file_offset;
}

static int vhd_drv_map(void *priv, uint64_t off, uint64_t len, struct vhd_extent *ext)
{
	int ret = vhd_map(priv, off, len, VHD_MAP_RESOLVE, ext);

	if (ret == 0 && ext->kind == VHD_EXT_PARENT)
		return -ENOLINK;
	if (ret == 0 && ext->kind == VHD_EXT_DATA && ext->owner->footer.disk_type == VHD_TYPE_FIXED)
		refine_fixed(ext);
	return ret;
}

static int vhd_drv_pread(void *priv, void *buf, uint64_t len, uint64_t off)
{
	return vhd_pread(priv, buf, len, off);
}

static int vhd_drv_pwrite(void *priv, const void *buf, uint64_t len, uint64_t off)
{
	return vhd_pwrite(priv, buf, len, off);
}

static int vhd_drv_flush(void *priv)
{
	return vhd_flush(priv);
}

static struct vhd_image *vhd_drv_image(void *priv)
{
	return priv;
}

static void vhd_drv_start_writeback(void *priv)
{
	sync_file_range(((struct vhd_image *)priv)->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

const struct disk_driver vhd_vhd_driver = {
	.name = "vhd",
	.format = VHD_FMT_VHD,
	.probe = vhd_probe,
	.open = vhd_drv_open,
	.close = vhd_drv_close,
	.map = vhd_drv_map,
	.pread = vhd_drv_pread,
	.pwrite = vhd_drv_pwrite,
	.start_writeback = vhd_drv_start_writeback,
	.flush = vhd_drv_flush,
	.image = vhd_drv_image,
};
