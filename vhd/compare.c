/* compare.c - content comparison of two disks of any format. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CHUNK (4u << 20)

/* First offset in [off, end) of d that is not zero, or end. */
static int first_nonzero(struct vhd_disk *d, uint64_t off, uint64_t end, uint8_t *buf,
			 uint64_t *at)
{
	while (off < end) {
		struct vhd_extent e;
		uint64_t n;
		int ret = vhd_disk_map(d, off, end - off, &e);

		if (ret < 0)
			return ret;
		n = e.length < CHUNK ? e.length : CHUNK;
		if (e.kind == VHD_EXT_DATA) {
			ret = vhd_disk_pread(d, buf, n, off);
			if (ret < 0)
				return ret;
			for (uint64_t i = 0; i < n; i++)
				if (buf[i]) {
					*at = off + i;
					return 1;
				}
		}
		off += e.kind == VHD_EXT_DATA ? n : e.length;
	}
	*at = end;
	return 0;
}

int vhd_compare(struct vhd_disk *a, struct vhd_disk *b, bool strict, uint64_t *first_diff,
		vhd_progress_fn progress, void *progress_ctx, struct vhd_err *err)
{
	uint64_t sa = vhd_disk_size(a), sb = vhd_disk_size(b);
	uint64_t common = sa < sb ? sa : sb, off = 0;
	uint8_t *ba = malloc(CHUNK), *bb = malloc(CHUNK);
	int ret = 0;

	if (!ba || !bb) {
		ret = -ENOMEM;
		goto out;
	}
	if (strict && sa != sb) {
		*first_diff = common;
		ret = 1;
		goto out;
	}
	while (off < common) {
		struct vhd_extent ea, eb;
		uint64_t n;

		ret = vhd_disk_map(a, off, common - off, &ea);
		if (ret == 0)
			ret = vhd_disk_map(b, off, common - off, &eb);
		if (ret < 0) {
			vhd_err_set(err, "mapping offset %" PRIu64 ": %s", off, strerror(-ret));
			goto out;
		}
		n = ea.length < eb.length ? ea.length : eb.length;
		if (n > CHUNK)
			n = CHUNK;
		if (ea.kind != VHD_EXT_ZERO || eb.kind != VHD_EXT_ZERO) {
			if (ea.kind == VHD_EXT_ZERO)
				memset(ba, 0, n);
			else if ((ret = vhd_disk_pread(a, ba, n, off)) < 0)
				goto read_fail;
			if (eb.kind == VHD_EXT_ZERO)
				memset(bb, 0, n);
			else if ((ret = vhd_disk_pread(b, bb, n, off)) < 0)
				goto read_fail;
			if (memcmp(ba, bb, n)) {
				for (uint64_t i = 0; i < n; i++)
					if (ba[i] != bb[i]) {
						*first_diff = off + i;
						break;
					}
				ret = 1;
				goto out;
			}
		}
		off += n;
		if (progress)
			progress(progress_ctx, off, sa > sb ? sa : sb);
	}
	/* the longer one must read as zeros beyond the shorter */
	ret = first_nonzero(sa > sb ? a : b, common, sa > sb ? sa : sb, ba, first_diff);
	if (ret < 0)
		goto read_fail;
	goto out;
read_fail:
	vhd_err_set(err, "reading offset %" PRIu64 ": %s", off, strerror(-ret));
out:
	free(ba);
	free(bb);
	return ret;
}
