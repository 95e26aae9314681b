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

/* Writes whole sectors [off, off+len) from buf: every piece is prepared
 * (blocks allocated), all data written, one fdatasync if any metadata is
 * pending, then all metadata published. */
static int write_sectors(struct vhd_image *img, const uint8_t *buf, uint64_t len, uint64_t off)
{
	size_t max = (size_t)(len / (img->block_size ? img->block_size : len) + 2);
	struct vhd_write_plan *plans = calloc(max, sizeof(*plans));
	size_t n = 0;
	bool sync = false;
	int ret = 0;

	if (!plans)
		return -ENOMEM;
	for (uint64_t done = 0; done < len; n++) {
		ret = vhd_write_prepare(img, off + done, len - done, &plans[n]);
		if (ret < 0)
			goto out;
		ret = pwrite_full(plans[n].fd, buf + done, plans[n].length, plans[n].file_offset);
		if (ret < 0)
			goto out;
		sync |= plans[n].needs_commit;
		done += plans[n].length;
	}
	if (sync && !img->no_sync && fdatasync(img->fd) < 0) {
		ret = -errno;
		goto out;
	}
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = vhd_write_commit(img, &plans[i]);
out:
	free(plans);
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
