/* write.c - making a range writable: block allocation and metadata publish.
 *
 * Crash-consistent order for a new block (DESIGN.md rule 3):
 *   1. prepare: write the footer at the new end of the file (the file grows;
 *      a valid trailing footer always exists), then the block's bitmap where
 *      the block starts (over the old footer or its padding): all ones for a
 *      dynamic disk (unwritten sectors are fresh file space and read as
 *      zeros), empty for a differencing disk.  No BAT entry yet.
 *   2. the caller writes the data and makes it durable (fdatasync).
 *   3. commit: write the BAT entry (the commit point: a crash before it
 *      leaves only an unreferenced, leaked block), then, for a differencing
 *      disk, the bitmap bits of the sectors written.  A crash between the two
 *      shows the parent's (old) content for those sectors, never garbage.
 * For an allocated block whose bitmap lacks bits for the written sectors, the
 * bits are set in commit, after the data is durable, so a reader never sees a
 * sector marked present whose data is not there.
 *
 * Several plans may be in flight on one new block (the engine batches):
 * a prepare of a block whose allocation is pending joins it (same place in
 * the file), and whichever plan commits first publishes the BAT entry.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* 4096-aligned buffers keep metadata writes valid under O_DIRECT. */
static void *meta_alloc(size_t len)
{
	void *p = NULL;

	return posix_memalign(&p, 4096, len) ? NULL : p;
}

uint64_t next_block_offset(const struct vhd_image *img)
{
	uint64_t start = img->data_end > img->footer_pos ? img->data_end : img->footer_pos;

	return round_up(start + img->bitmap_size, 4096) - img->bitmap_size;
}

/* Rewrites the BAT sector that holds entry `block`.  Whole sectors keep
 * O_DIRECT happy; the sector is read back first so that bytes after the last
 * entry (padding, or whatever a foreign producer put there) are preserved. */
static int write_bat_sector(struct vhd_image *img, uint32_t block)
{
	uint64_t pos = img->hdr.table_offset + 4ull * block;
	uint64_t sector = pos / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
	uint8_t *buf = meta_alloc(VHD_SECTOR_SIZE);
	int ret;

	if (!buf)
		return -ENOMEM;
	if (pos - sector > VHD_SECTOR_SIZE - 4) { /* unaligned BAT: entry straddles */
		vhd_put_be32(buf, img->bat[block]);
		ret = pwrite_full(img->fd, buf, 4, pos);
		goto out;
	}
	ret = pread_full(img->fd, buf, VHD_SECTOR_SIZE, sector);
	if (ret < 0)
		goto out;
	vhd_put_be32(buf + (pos - sector), img->bat[block]);
	ret = pwrite_full(img->fd, buf, VHD_SECTOR_SIZE, sector);
out:
	free(buf);
	return ret;
}

static int write_footer_at(struct vhd_image *img, uint64_t pos)
{
	uint8_t *buf = meta_alloc(VHD_FOOTER_SIZE);
	int ret;

	if (!buf)
		return -ENOMEM;
	vhd_footer_encode(&img->footer, buf);
	ret = pwrite_full(img->fd, buf, VHD_FOOTER_SIZE, pos);
	free(buf);
	return ret;
}

static struct pending_alloc *pending_find(struct vhd_image *img, uint32_t block)
{
	for (size_t i = 0; i < img->nr_pending; i++)
		if (img->pending[i].block == block)
			return &img->pending[i];
	return NULL;
}

static int pending_add(struct vhd_image *img, uint32_t block, uint64_t bitmap_offset)
{
	if (img->nr_pending == img->cap_pending) {
		size_t cap = img->cap_pending ? img->cap_pending * 2 : 8;
		struct pending_alloc *n = realloc(img->pending, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		img->pending = n;
		img->cap_pending = cap;
	}
	img->pending[img->nr_pending++] = (struct pending_alloc){block, bitmap_offset};
	return 0;
}

static int allocate_block(struct vhd_image *img, struct vhd_write_plan *plan)
{
	uint64_t off = next_block_offset(img);
	uint64_t end = off + img->bitmap_size + img->block_size;
	uint8_t *bm = NULL;
	int ret;

	if (end / VHD_SECTOR_SIZE > UINT32_MAX)
		return -ENOSPC; /* BAT entries are 32-bit sector numbers */
	ret = write_footer_at(img, end);
	if (ret < 0)
		goto out;
	bm = meta_alloc(img->bitmap_size);
	if (!bm) {
		ret = -ENOMEM;
		goto out;
	}
	/* Differencing: no bits yet, they are set at commit once data is durable. */
	memset(bm, img->footer.disk_type == VHD_TYPE_DIFF ? 0x00 : 0xFF, img->bitmap_size);
	ret = pwrite_full(img->fd, bm, img->bitmap_size, off);
	if (ret < 0)
		goto out;
	ret = pending_add(img, plan->block, off);
	if (ret < 0)
		goto out;
	img->footer_pos = end;
	img->file_size = end + VHD_FOOTER_SIZE;
	img->data_end = end;
	plan->file_offset = off + img->bitmap_size;
	plan->new_block = true;
	plan->needs_commit = true;
	plan->bitmap_offset = off;
out:
	free(bm);
	return ret;
}

static bool bits_all_set(const uint8_t *bm, uint32_t first, uint32_t n)
{
	for (uint32_t s = first; s < first + n; s++)
		if (!vhd_bit_test(bm, s))
			return false;
	return true;
}

int vhd_write_prepare(struct vhd_image *img, uint64_t offset, uint64_t length,
		      struct vhd_write_plan *plan)
{
	uint64_t in_block;
	uint8_t *bm;
	int ret;

	memset(plan, 0, sizeof(*plan));
	if (!img->writable)
		return -EROFS;
	if (length == 0 || offset % VHD_SECTOR_SIZE || length % VHD_SECTOR_SIZE ||
	    offset > img->virtual_size || img->virtual_size - offset < length)
		return -EINVAL;
	plan->offset = offset;
	plan->fd = image_data_fd(img);
	if (img->footer.disk_type == VHD_TYPE_FIXED) {
		plan->length = length;
		plan->file_offset = offset;
		return 0;
	}
	in_block = offset % img->block_size;
	plan->block = (uint32_t)(offset / img->block_size);
	plan->length = img->block_size - in_block < length ? img->block_size - in_block : length;
	plan->first_sector = (uint32_t)(in_block / VHD_SECTOR_SIZE);
	plan->nr_sectors = (uint32_t)(plan->length / VHD_SECTOR_SIZE);
	if (img->bat[plan->block] == VHD_BAT_UNUSED) {
		struct pending_alloc *p = pending_find(img, plan->block);

		if (p) { /* join the allocation in flight */
			plan->bitmap_offset = p->bitmap_offset;
			plan->file_offset = p->bitmap_offset + img->bitmap_size + in_block;
			plan->new_block = true;
			plan->needs_commit = true;
			return 0;
		}
		ret = allocate_block(img, plan);
		if (ret < 0)
			return ret;
		plan->file_offset += in_block;
		return 0;
	}
	ret = bitmap_get(img, plan->block, &bm);
	if (ret < 0)
		return ret;
	plan->file_offset = block_file_offset(img, plan->block) + img->bitmap_size + in_block;
	plan->needs_commit = !bits_all_set(bm, plan->first_sector, plan->nr_sectors);
	return 0;
}

/* Sets the plan's bits in an allocated block's bitmap and rewrites only the
 * bitmap sectors whose bits changed. */
static int set_bitmap_bits(struct vhd_image *img, const struct vhd_write_plan *plan)
{
	uint32_t first = plan->first_sector, last = plan->first_sector + plan->nr_sectors - 1;
	uint32_t sec_first = first / 4096, sec_last = last / 4096; /* 4096 bits per sector */
	uint64_t base = block_file_offset(img, plan->block);
	uint8_t *bm, *buf = NULL;
	int ret;

	ret = bitmap_get(img, plan->block, &bm);
	if (ret < 0)
		return ret;
	for (uint32_t s = first; s <= last; s++)
		vhd_bit_set(bm, s);
	buf = meta_alloc(VHD_SECTOR_SIZE);
	if (!buf)
		return -ENOMEM;
	for (uint32_t sec = sec_first; sec <= sec_last; sec++) {
		memcpy(buf, bm + sec * VHD_SECTOR_SIZE, VHD_SECTOR_SIZE);
		ret = pwrite_full(img->fd, buf, VHD_SECTOR_SIZE, base + (uint64_t)sec * VHD_SECTOR_SIZE);
		if (ret < 0)
			break;
	}
	free(buf);
	if (ret < 0) /* the cached copy may now be ahead of the disk: drop it */
		img->cache[plan->block % VHD_BITMAP_CACHE_SLOTS].block = VHD_BAT_UNUSED;
	return ret;
}

/* Publishes a pending allocation's BAT entry (no-op once published). */
static int publish_block(struct vhd_image *img, uint32_t block)
{
	struct pending_alloc *p = pending_find(img, block);
	int ret;

	if (!p)
		return 0; /* another plan on this block committed first */
	img->bat[block] = (uint32_t)(p->bitmap_offset / VHD_SECTOR_SIZE);
	ret = write_bat_sector(img, block);
	if (ret < 0) {
		img->bat[block] = VHD_BAT_UNUSED;
		return ret;
	}
	*p = img->pending[--img->nr_pending];
	img->nr_allocated++;
	/* The cache slot may hold a stale copy from an earlier owner of the slot. */
	img->cache[block % VHD_BITMAP_CACHE_SLOTS].block = VHD_BAT_UNUSED;
	return 0;
}

int vhd_write_commit(struct vhd_image *img, const struct vhd_write_plan *plan)
{
	int ret;

	if (!plan->needs_commit)
		return 0;
	if (plan->new_block) {
		ret = publish_block(img, plan->block);
		if (ret < 0 || img->footer.disk_type != VHD_TYPE_DIFF)
			return ret;
	}
	return set_bitmap_bits(img, plan);
}
