/* map.c - virtual range -> extents (data at a file offset, zeros, parent). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void bitmap_cache_drop(struct vhd_image *img)
{
	for (int i = 0; i < VHD_BITMAP_CACHE_SLOTS; i++) {
		free(img->cache[i].bits);
		img->cache[i].bits = NULL;
		img->cache[i].block = VHD_BAT_UNUSED;
	}
}

int bitmap_get(struct vhd_image *img, uint32_t block, uint8_t **bits)
{
	struct bitmap_slot *s = &img->cache[block % VHD_BITMAP_CACHE_SLOTS];
	int ret;

	if (s->block == block && s->bits) {
		*bits = s->bits;
		return 0;
	}
	if (!s->bits) {
		void *p = NULL;

		/* Aligned: the read below may go through O_DIRECT. */
		if (posix_memalign(&p, 4096, img->bitmap_size))
			return -ENOMEM;
		s->bits = p;
	}
	s->block = VHD_BAT_UNUSED;
	ret = pread_full(img->fd, s->bits, img->bitmap_size, block_file_offset(img, block));
	if (ret < 0)
		return ret;
	s->block = block;
	*bits = s->bits;
	return 0;
}

/* Length of the run of sectors [s, end) whose bits all equal the bit of s. */
static uint32_t bit_run(const uint8_t *bm, uint32_t s, uint32_t end)
{
	bool want = vhd_bit_test(bm, s);
	uint8_t full = want ? 0xFF : 0x00;
	uint32_t i = s;

	while (i < end) {
		if ((i & 7) == 0 && i + 8 <= end && bm[i >> 3] == full) {
			i += 8;
			continue;
		}
		if (vhd_bit_test(bm, i) != want)
			break;
		i++;
	}
	return i - s;
}

static int map_one(struct vhd_image *img, uint64_t off, uint64_t len, struct vhd_extent *e)
{
	uint64_t bs = img->block_size, in_block;
	uint32_t block;
	enum vhd_extent_kind absent =
		img->footer.disk_type == VHD_TYPE_DIFF ? VHD_EXT_PARENT : VHD_EXT_ZERO;
	uint8_t *bm;
	int ret;

	e->offset = off;
	e->owner = img;
	e->fd = -1;
	e->file_offset = 0;
	if (img->footer.disk_type == VHD_TYPE_FIXED) {
		e->kind = VHD_EXT_DATA;
		e->fd = image_data_fd(img);
		e->file_offset = off;
		e->length = len;
		return 0;
	}
	block = (uint32_t)(off / bs); /* no blocks in a fixed disk: bs is 0 there */
	in_block = off % bs;
	if (img->bat[block] == VHD_BAT_UNUSED) {
		/* Unallocated: extend over following unallocated blocks. */
		uint64_t end = ((uint64_t)block + 1) * bs;

		while (end < off + len && img->bat[end / bs] == VHD_BAT_UNUSED)
			end += bs;
		e->kind = absent;
		e->length = (end < off + len ? end : off + len) - off;
		return 0;
	}
	ret = bitmap_get(img, block, &bm);
	if (ret < 0)
		return ret;
	{
		uint32_t s = (uint32_t)(in_block / VHD_SECTOR_SIZE);
		uint64_t want_end = in_block + len;
		uint32_t end_sector = (uint32_t)((want_end < bs ? round_up(want_end, VHD_SECTOR_SIZE) : bs) /
						 VHD_SECTOR_SIZE);
		uint32_t run = bit_run(bm, s, end_sector);
		uint64_t run_end = (uint64_t)(s + run) * VHD_SECTOR_SIZE;

		e->length = (run_end < want_end ? run_end : want_end) - in_block;
		if (vhd_bit_test(bm, s)) {
			e->kind = VHD_EXT_DATA;
			e->fd = image_data_fd(img);
			e->file_offset = block_file_offset(img, block) + img->bitmap_size + in_block;
		} else {
			e->kind = absent;
		}
	}
	return 0;
}

int vhd_map(struct vhd_image *img, uint64_t offset, uint64_t length, unsigned flags,
	    struct vhd_extent *ext)
{
	unsigned depth = 0;
	int ret;

	if (length == 0 || offset > img->virtual_size || img->virtual_size - offset < length)
		return -EINVAL;
	for (;;) {
		ret = map_one(img, offset, length, ext);
		if (ret < 0)
			return ret;
		ext->depth = depth;
		if (ext->kind != VHD_EXT_PARENT || !(flags & VHD_MAP_RESOLVE) || !img->parent)
			return 0;
		/* Fall through to the parent for this run only. */
		length = ext->length;
		img = img->parent;
		depth++;
		if (offset >= img->virtual_size) {
			/* A child larger than its parent: beyond the parent is zero. */
			ext->kind = VHD_EXT_ZERO;
			ext->owner = img;
			ext->depth = depth;
			return 0;
		}
		if (img->virtual_size - offset < length)
			length = img->virtual_size - offset;
	}
}
