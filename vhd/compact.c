/* compact.c - Optimize-VHD: drop blocks that hold nothing and shrink the file.
 *
 * Crash safety: every step leaves the content unchanged.
 *  1. Dropping: a dynamic block that reads as all zeros has its BAT entry set
 *     to unused (it reads as zeros either way).  In a differencing disk with
 *     against_parent, bitmap bits of sectors identical to the parent are
 *     cleared (those sectors read the same from the parent), and a block left
 *     with no bits is dropped.  Without against_parent only blocks whose
 *     bitmap is already empty are dropped.
 *  2. Packing: blocks are moved down, in file order, into space that no BAT
 *     entry references any more: copy bitmap and data to the new place,
 *     fdatasync, then repoint the BAT entry (one sector), fdatasync.  A block
 *     is only moved when old and new places do not overlap, so the BAT always
 *     points at a complete copy.  Nothing is moved below the lowest block of
 *     the original file: what lies before it (header, BAT, locators, vendor
 *     extensions) is never overwritten.
 *  3. The footer is written at the new end (inside unreferenced space), then
 *     the file is truncated right after it.
 * An interrupted compact leaves leaked space at worst; run it again.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct blk {
	uint32_t index;
	uint64_t offset;
};

static int blk_cmp(const void *a, const void *b)
{
	const struct blk *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int write_bat_entry(struct vhd_image *img, uint32_t block, uint32_t value)
{
	uint8_t e[4];

	vhd_put_be32(e, value);
	if (pwrite_full(img->fd, e, 4, img->hdr.table_offset + 4ull * block) < 0)
		return -errno;
	img->bat[block] = value;
	img->cache[block % VHD_BITMAP_CACHE_SLOTS].block = VHD_BAT_UNUSED;
	return 0;
}

/* The parent's content of [voff, voff+len): zeros beyond the parent's end. */
static int read_parent(struct vhd_image *parent, uint8_t *buf, uint64_t len, uint64_t voff)
{
	uint64_t have = voff >= parent->virtual_size ? 0 : parent->virtual_size - voff;

	if (have > len)
		have = len;
	memset(buf + have, 0, len - have);
	return have ? vhd_pread(parent, buf, have, voff) : 0;
}

/* Step 1 for one block.  Returns 1 when the block was dropped. */
static int drop_if_empty(struct vhd_image *img, uint32_t b, bool against_parent, uint8_t *data,
			 uint8_t *pdata, struct vhd_compact_stats *st)
{
	uint64_t voff = (uint64_t)b * img->block_size, len = img->block_size;
	bool diff = img->footer.disk_type == VHD_TYPE_DIFF;
	uint8_t *bm;
	bool any = false, changed = false;
	int ret;

	if (voff + len > img->virtual_size)
		len = img->virtual_size > voff ? img->virtual_size - voff : 0;
	ret = bitmap_get(img, b, &bm);
	if (ret < 0)
		return ret;
	if (!diff) {
		ret = pread_full(img->fd, data, len, block_file_offset(img, b) + img->bitmap_size);
		if (ret < 0)
			return ret;
		if (!vhd_buf_is_zero(data, len))
			return 0;
	} else {
		uint32_t sectors = (uint32_t)(round_up(len, VHD_SECTOR_SIZE) / VHD_SECTOR_SIZE);

		if (against_parent && img->parent && len) {
			ret = pread_full(img->fd, data, len, block_file_offset(img, b) + img->bitmap_size);
			if (ret == 0)
				ret = read_parent(img->parent, pdata, len, voff);
			if (ret < 0)
				return ret;
			for (uint32_t s = 0; s < sectors; s++) {
				uint64_t o = (uint64_t)s * VHD_SECTOR_SIZE;
				uint64_t n = len - o < VHD_SECTOR_SIZE ? len - o : VHD_SECTOR_SIZE;

				if (vhd_bit_test(bm, s) && !memcmp(data + o, pdata + o, n)) {
					bm[s >> 3] &= (uint8_t)~(0x80u >> (s & 7));
					changed = true;
					st->sectors_cleared++;
				}
			}
		}
		for (uint32_t i = 0; i < img->bitmap_size && !any; i++)
			any = bm[i] != 0;
		if (changed && any) {
			/* keep the block, with fewer bits: same content either way */
			ret = pwrite_full(img->fd, bm, img->bitmap_size, block_file_offset(img, b));
			return ret < 0 ? ret : 0;
		}
		if (any)
			return 0;
	}
	ret = write_bat_entry(img, b, VHD_BAT_UNUSED);
	if (ret < 0)
		return ret;
	img->nr_allocated--;
	st->blocks_dropped++;
	return 1;
}

/* Regions that never move: the dynamic header, the BAT and locator data
 * (they may sit between blocks in files others wrote). */
struct fixed {
	uint64_t start, end;
};

static size_t fixed_regions(const struct vhd_image *img, struct fixed *f)
{
	size_t n = 0;

	f[n++] = (struct fixed){img->footer.data_offset, img->footer.data_offset + VHD_DYNHDR_SIZE};
	f[n++] = (struct fixed){img->hdr.table_offset,
				img->hdr.table_offset + round_up(4ull * img->hdr.max_table_entries,
								 VHD_SECTOR_SIZE)};
	for (int i = 0; i < VHD_NR_LOCATORS; i++) {
		const struct vhd_locator *l = &img->hdr.loc[i];
		uint64_t len = vhd_locator_space_bytes(l->data_space);

		if (l->code == VHD_PLAT_NONE)
			continue;
		if (len < l->data_length)
			len = l->data_length;
		f[n++] = (struct fixed){l->data_offset, l->data_offset + round_up(len, VHD_SECTOR_SIZE)};
	}
	return n;
}

/* The first place >= target (data 4 KiB aligned) where span bytes touch no
 * fixed region. */
static uint64_t free_place(uint64_t target, uint64_t bitmap, uint64_t span,
			   const struct fixed *f, size_t nf)
{
	for (;;) {
		uint64_t to = round_up(target + bitmap, 4096) - bitmap;
		bool clash = false;

		for (size_t i = 0; i < nf; i++)
			if (to < f[i].end && f[i].start < to + span) {
				target = f[i].end;
				clash = true;
			}
		if (!clash)
			return to;
	}
}

/* Step 2: move blocks down into unreferenced space, in file order. */
static int pack(struct vhd_image *img, uint64_t floor, uint64_t *end_out, struct vhd_compact_stats *st)
{
	uint64_t span = (uint64_t)img->bitmap_size + img->block_size;
	struct blk *list = malloc((img->nr_allocated + 1) * sizeof(*list));
	struct fixed fixed[2 + VHD_NR_LOCATORS];
	size_t nf = fixed_regions(img, fixed);
	uint8_t *buf = NULL;
	size_t n = 0;
	uint64_t target = floor;
	int ret = 0;

	if (!list || posix_memalign((void **)&buf, 4096, span)) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < img->nr_blocks; i++)
		if (img->bat[i] != VHD_BAT_UNUSED)
			list[n++] = (struct blk){i, block_file_offset(img, i)};
	qsort(list, n, sizeof(*list), blk_cmp);
	for (size_t i = 0; i < n; i++) {
		uint64_t to = free_place(target, img->bitmap_size, span, fixed, nf);

		if (to + span <= list[i].offset) {
			ret = pread_full(img->fd, buf, span, list[i].offset);
			if (ret == 0)
				ret = pwrite_full(img->fd, buf, span, to);
			if (ret == 0 && fdatasync(img->fd) < 0)
				ret = -errno;
			if (ret == 0)
				ret = write_bat_entry(img, list[i].index, (uint32_t)(to / VHD_SECTOR_SIZE));
			if (ret == 0 && fdatasync(img->fd) < 0)
				ret = -errno;
			if (ret < 0)
				goto out;
			st->blocks_moved++;
			target = to + span;
		} else {
			target = list[i].offset + span;
		}
	}
	/* never cut below a fixed region */
	for (size_t i = 0; i < nf; i++)
		if (fixed[i].end > target)
			target = fixed[i].end;
	*end_out = target;
out:
	free(buf);
	free(list);
	return ret;
}

int vhd_compact(const char *path, bool against_parent, const struct vhd_open_opts *opts,
		struct vhd_compact_stats *st, struct vhd_err *err)
{
	struct vhd_open_opts o = opts ? *opts : (struct vhd_open_opts){0};
	struct vhd_image *img = NULL;
	uint8_t *data = NULL, *pdata = NULL;
	uint64_t floor = UINT64_MAX, end, meta_end;
	int ret;

	memset(st, 0, sizeof(*st));
	o.flags |= VHD_OPEN_RDWR;
	if (!against_parent)
		o.flags |= VHD_OPEN_NO_PARENT;
	ret = vhd_open(path, &o, &img, err);
	if (ret < 0)
		return ret;
	st->old_file_size = img->file_size;
	if (img->footer.disk_type == VHD_TYPE_FIXED) {
		vhd_err_set(err, "%s: a fixed disk has no blocks to drop (convert it to dynamic instead)", path);
		ret = -EINVAL;
		goto out;
	}
	if (img->footer.saved_state) {
		vhd_err_set(err, "%s: saved state: the disk belongs to a saved virtual machine; refusing to compact", path);
		ret = -EBUSY;
		goto out;
	}
	if (against_parent && img->footer.disk_type != VHD_TYPE_DIFF) {
		vhd_err_set(err, "%s: --against-parent needs a differencing disk", path);
		ret = -EINVAL;
		goto out;
	}
	if (posix_memalign((void **)&data, 4096, img->block_size) ||
	    posix_memalign((void **)&pdata, 4096, img->block_size)) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t b = 0; b < img->nr_blocks; b++) {
		if (img->bat[b] == VHD_BAT_UNUSED)
			continue;
		if (block_file_offset(img, b) < floor)
			floor = block_file_offset(img, b);
		ret = drop_if_empty(img, b, against_parent, data, pdata, st);
		if (ret < 0)
			goto io_fail;
	}
	if (fdatasync(img->fd) < 0) {
		ret = -errno;
		goto io_fail;
	}
	/* what lies before the first block is never touched */
	meta_end = img->hdr.table_offset + round_up(4ull * img->hdr.max_table_entries, VHD_SECTOR_SIZE);
	if (floor == UINT64_MAX)
		floor = meta_end > img->data_end ? meta_end : img->data_end;
	ret = pack(img, floor, &end, st);
	if (ret < 0)
		goto io_fail;
	if (end < img->footer_pos) {
		uint8_t foot[VHD_FOOTER_SIZE];

		end = round_up(end, VHD_SECTOR_SIZE);
		vhd_footer_encode(&img->footer, foot);
		ret = pwrite_full(img->fd, foot, sizeof(foot), end);
		if (ret == 0 && fdatasync(img->fd) < 0)
			ret = -errno;
		if (ret == 0 && ftruncate(img->fd, (off_t)(end + VHD_FOOTER_SIZE)) < 0)
			ret = -errno;
		if (ret == 0 && fsync(img->fd) < 0)
			ret = -errno;
		if (ret < 0)
			goto io_fail;
		img->footer_pos = end;
		img->file_size = end + VHD_FOOTER_SIZE;
		img->data_end = end;
	}
	st->new_file_size = img->file_size;
	goto out;
io_fail:
	vhd_err_set(err, "%s: compact: %s (the content is unchanged; leaked space may remain)", path,
		    strerror(-ret));
out:
	free(data);
	free(pdata);
	vhd_close(img);
	return ret;
}
