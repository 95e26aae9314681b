/* io.c - the synchronous read/write path for tools, built on vhd_map and
 * vhd_write_prepare/commit (the same calls the block VSP engine makes). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int vhd_pread(struct vhd_image *img, void *buf, uint64_t length, uint64_t offset)
{
	uint8_t *p = buf;
	struct vhd_extent e;
	int ret;

	if (offset > img->virtual_size || img->virtual_size - offset < length)
		return -EINVAL;
	while (length) {
		ret = vhd_map(img, offset, length, VHD_MAP_RESOLVE, &e);
		if (ret < 0)
			return ret;
		switch (e.kind) {
		case VHD_EXT_DATA:
			ret = pread_full(e.fd, p, e.length, e.file_offset);
			if (ret < 0)
				return ret;
			break;
		case VHD_EXT_ZERO:
			memset(p, 0, e.length);
			break;
		case VHD_EXT_PARENT:
			return -ENOLINK; /* opened without its parent */
		}
		p += e.length;
		offset += e.length;
		length -= e.length;
	}
	return 0;
}

/* Writes whole sectors [off, off+len) from buf: every piece prepared (blocks
 * allocated) and its data written, one fdatasync, then all metadata. */
static int write_sectors(struct vhd_image *img, const uint8_t *buf, uint64_t len, uint64_t off)
{
	size_t pieces = (size_t)(len / (img->block_size ? img->block_size : len) + 2);
	struct write_batch b;
	int ret = batch_init(&b, img, pieces, UINT64_MAX);

	if (ret == 0)
		ret = batch_write(&b, buf, len, off);
	if (ret == 0)
		ret = batch_flush(&b);
	batch_free(&b);
	return ret;
}

int vhd_pwrite(struct vhd_image *img, const void *buf, uint64_t length, uint64_t offset)
{
	uint64_t start, end;
	uint8_t *bounce = NULL;
	int ret;

	if (!img->writable)
		return -EROFS;
	if (offset > img->virtual_size || img->virtual_size - offset < length)
		return -ENOSPC;
	if (length == 0)
		return 0;
	if (offset % VHD_SECTOR_SIZE == 0 && length % VHD_SECTOR_SIZE == 0)
		return write_sectors(img, buf, length, offset);

	/* Unaligned: read-modify-write the partial sectors at each end (the
	 * old content may come from a parent), the middle goes straight. */
	start = offset / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
	end = round_up(offset + length, VHD_SECTOR_SIZE);
	if (end - start <= 2 * VHD_SECTOR_SIZE || length < (1u << 20)) {
		bounce = malloc(end - start);
		if (!bounce)
			return -ENOMEM;
		ret = vhd_pread(img, bounce, end - start, start);
		if (ret == 0) {
			memcpy(bounce + (offset - start), buf, length);
			ret = write_sectors(img, bounce, end - start, start);
		}
		free(bounce);
		return ret;
	}
	{
		uint64_t head_end = round_up(offset, VHD_SECTOR_SIZE);
		uint64_t tail_start = (offset + length) / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
		const uint8_t *p = buf;

		if (head_end > offset) {
			ret = vhd_pwrite(img, p, head_end - offset, offset);
			if (ret < 0)
				return ret;
		}
		ret = write_sectors(img, p + (head_end - offset), tail_start - head_end, head_end);
		if (ret < 0)
			return ret;
		if (offset + length > tail_start)
			ret = vhd_pwrite(img, p + (tail_start - offset), offset + length - tail_start,
					 tail_start);
		return ret;
	}
}

int vhd_flush(struct vhd_image *img)
{
	if (!img->writable)
		return 0;
	return fdatasync(img->fd) < 0 ? -errno : 0;
}
