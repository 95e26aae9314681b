/* drv_raw.c - raw files and block devices as struct vhd_disk.  Holes are
 * found with SEEK_DATA/SEEK_HOLE so that sparse input converts quickly. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk.h"
#include "internal.h"

struct raw {
	int fd;
	bool writable;
	bool no_sync;  /* VHD_OPEN_NO_SYNC: no fdatasync on close */
	bool seekable; /* SEEK_DATA works here */
	uint64_t size;
};

static bool raw_probe(int fd, uint64_t size)
{
	(void)fd;
	(void)size;
	return true; /* anything is a raw image */
}

static int raw_open(const char *path, const struct vhd_open_opts *opts, void **priv,
		    uint64_t *size, struct vhd_err *err)
{
	bool writable = opts && (opts->flags & VHD_OPEN_RDWR);
	struct raw *r = calloc(1, sizeof(*r));
	struct stat st;
	int ret;

	if (!r)
		return -ENOMEM;
	r->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY);
	if (r->fd < 0 || fstat(r->fd, &st) < 0) {
		ret = -errno;
		vhd_err_set(err, "%s: %s", path, strerror(-ret));
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(r->fd, BLKGETSIZE64, &r->size) < 0) {
			ret = -errno;
			vhd_err_set(err, "%s: cannot get the device size: %s", path, strerror(-ret));
			goto fail;
		}
	} else if (S_ISREG(st.st_mode)) {
		r->size = (uint64_t)st.st_size;
		r->seekable = lseek(r->fd, 0, SEEK_DATA) >= 0 || errno == ENXIO;
	} else {
		vhd_err_set(err, "%s: not a regular file or block device", path);
		ret = -EINVAL;
		goto fail;
	}
	if (!(opts && (opts->flags & VHD_OPEN_NO_LOCK)) &&
	    flock(r->fd, (writable ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
		ret = -EBUSY;
		vhd_err_set(err, "%s: is in use by another process (lock conflict)", path);
		goto fail;
	}
	r->writable = writable;
	r->no_sync = opts && (opts->flags & VHD_OPEN_NO_SYNC);
	*priv = r;
	*size = r->size;
	return 0;
fail:
	if (r->fd >= 0)
		close(r->fd);
	free(r);
	return ret;
}

static int raw_close(void *priv)
{
	struct raw *r = priv;
	int ret = 0;

	if (r->writable && !r->no_sync && fdatasync(r->fd) < 0)
		ret = -errno;
	close(r->fd);
	free(r);
	return ret;
}

static int raw_map(void *priv, uint64_t off, uint64_t len, struct vhd_extent *e)
{
	struct raw *r = priv;
	off_t data, hole;

	memset(e, 0, sizeof(*e));
	e->offset = off;
	e->fd = r->fd;
	e->file_offset = off;
	e->kind = VHD_EXT_DATA;
	e->length = len;
	if (!r->seekable)
		return 0;
	data = lseek(r->fd, (off_t)off, SEEK_DATA);
	if (data < 0 && errno != ENXIO)
		return 0; /* cannot tell: treat as data */
	if (data < 0 || (uint64_t)data >= off + len) {
		e->kind = VHD_EXT_ZERO; /* a hole up to the end of the range */
		e->fd = -1;
		return 0;
	}
	if ((uint64_t)data > off) {
		e->kind = VHD_EXT_ZERO;
		e->fd = -1;
		e->length = (uint64_t)data - off;
		return 0;
	}
	hole = lseek(r->fd, (off_t)off, SEEK_HOLE);
	if (hole >= 0 && (uint64_t)hole < off + len)
		e->length = (uint64_t)hole - off;
	return 0;
}

static int raw_pread(void *priv, void *buf, uint64_t len, uint64_t off)
{
	return pread_full(((struct raw *)priv)->fd, buf, len, off);
}

static int raw_pwrite(void *priv, const void *buf, uint64_t len, uint64_t off)
{
	return pwrite_full(((struct raw *)priv)->fd, buf, len, off);
}

static int raw_flush(void *priv)
{
	return fdatasync(((struct raw *)priv)->fd) < 0 ? -errno : 0;
}

static void raw_start_writeback(void *priv)
{
	sync_file_range(((struct raw *)priv)->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

const struct disk_driver vhd_raw_driver = {
	.name = "raw",
	.format = VHD_FMT_RAW,
	.probe = raw_probe,
	.open = raw_open,
	.close = raw_close,
	.map = raw_map,
	.pread = raw_pread,
	.pwrite = raw_pwrite,
	.start_writeback = raw_start_writeback,
	.flush = raw_flush,
};
