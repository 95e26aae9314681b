/* resize.c - grow and shrink fixed, dynamic and differencing VHDs
 * (Hyper-V Resize-VHD).
 *
 * Rules.  Growing makes the new range read as zeros.  Shrinking never loses
 * a non-zero byte unless asked (discard): what lies between the new and the
 * old end must read as zeros through the whole chain, else -ENOTEMPTY names
 * the first non-zero sector.  A disk in saved state, with an interrupted
 * merge, or that does not open read-write (damaged footer, permissions, lock)
 * is refused before anything is written.
 *
 * Crash safety.  Every step is one of: a write into space no reader looks at
 * (beyond the visible end, beyond the BAT, beyond the trailing footer, an
 * unreferenced region), or a single-sector metadata write that switches from
 * one valid state to the next, each made durable (fdatasync) before the next
 * step.  A crash at any point leaves an image that opens and shows either the
 * old size with the old content or the new size with the new content (old
 * content cut or extended with zeros).  At most one warning can be left, and
 * running the same resize again clears it (it also clears when the image
 * already has the target size):
 *   - dynamic/differencing: "the footer copy at offset 0 differs" between
 *     the trailing footer's update and the copy's (`vhdtool repair` fixes it
 *     too);
 *   - fixed: "extra bytes before its footer" while the footer sits beyond
 *     the data (see below).
 *
 * Fixed disk, data [0, C) + footer at P (normally P == C); target N.
 *   grow:   1. if N > P: the current footer (still saying C) is written at N
 *              (the file grows; [C, N) is now invisible slack before the
 *              trailing footer: a warning, not an error);
 *           2. [C, N) is made zero: only data runs (SEEK_DATA) are read, and
 *              only non-zero pieces rewritten.  The old footer's 512 bytes
 *              lie there: this is where they are wiped, while nobody can see
 *              them (the trailing footer still says C);
 *           3. a dense (preallocated) file gets the new range allocated;
 *           4. the footer at N is rewritten saying N: the switch.
 *      The old footer can never show up as data: it is zeroed before the
 *      footer that makes its bytes visible exists.
 *   shrink: 1. the footer is rewritten in place (at P) saying N: the disk is
 *              N bytes at once, the bytes [N, P) become invisible slack;
 *           2. the same footer is written at N (into the slack), synced, and
 *              the file truncated after it.
 *      (Writing the footer at N first would put footer bytes inside the old
 *      disk's visible data until the truncate.)
 *
 * Dynamic and differencing disks.  The trailing footer is the authority; the
 * copy at offset 0 follows it.
 *   1. (grow) the last old block, if it ends short in the file (foreign
 *      producers), is moved to the end of the file the way write.c allocates
 *      (footer to the new end, block copy, sync, BAT entry, sync); then every
 *      sector of this file between the old and the new visible end whose
 *      bitmap bit is set is zeroed where it is not zero (invisible: beyond
 *      the visible end).
 *   2. BAT entries past the new end (shrink: the blocks cut off, whose
 *      visible content was checked to be zero, or dropped with discard) and
 *      past the old end (foreign leftovers a grow would expose) are set
 *      unused.
 *   3. (grow, BAT too small) either in place, when the BAT's sector padding
 *      and the free space up to the next structure hold the new entries
 *      (written 0xFF, synced, then max_table_entries grows), or relocated:
 *      the trailing footer moves to the new end, the new BAT is written into
 *      the space freed before it, synced, then the dynamic header switches to
 *      it.  Table offset, max table entries and the header checksum all lie
 *      in the header's first 512 bytes (offsets 16, 28, 36), so that one
 *      sector write switches atomically; the old BAT becomes leaked space.
 *   4. the trailing footer gets the new current size and CHS geometry,
 *      synced, then the copy at offset 0 (the one warning window).
 *   5. (shrink) max_table_entries drops to the new block count (extra
 *      entries, all unused since step 2, were tolerated meanwhile).
 *   6. (shrink) when blocks were dropped from the end of the file, the space
 *      is given back the way repair does: footer written at the new end
 *      inside the unreferenced space, synced, then the file truncated.
 * Finally the file is re-validated with the opener's rules: an error there
 * is a bug, reported as -EIO rather than hidden.
 *
 * A differencing disk reads zeros beyond its parent's end (vhd_map), so it
 * may grow past its parent.  If the parent is larger than the child, growing
 * would expose the parent's data in the new range: refused (-ENOTEMPTY)
 * unless that data is all zeros.
 *
 * Sizes: images whose size readers take from the CHS geometry (creators
 * "vpc " and "qemu") get the smallest geometry whose product covers the
 * request and that product as current size, as qemu does on create; the
 * result reports the size actually made.  Everyone else gets exactly the
 * requested size (rounded up to a sector) and the spec's CHS for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define CHUNK (1u << 20)
/* load.c looks at this many BAT entries past the disk's last block (a
 * non-unused one is a warning); resize keeps them unused. */
#define BAT_SCAN_EXTRA 65536u
/* load.c refuses to load a BAT with more entries than the disk needs beyond
 * this many (its BAT_MAX_ENTRIES). */
#define BAT_LOAD_LIMIT (64u << 20)

struct resize {
	struct vhd_image *img;
	const char *path;
	struct vhd_err *err;
	struct vhd_resize_result *res;
	bool discard;
	bool chs;                       /* size read from the CHS geometry */
	uint8_t tail[VHD_FOOTER_SIZE];  /* the trailing footer's bytes as found */
	uint64_t old_vsize, new_vsize;  /* what readers see */
	uint64_t old_cur, new_cur;      /* footer current size */
	struct vhd_geometry new_geo;
	uint8_t *buf;                   /* CHUNK bytes */
	uint8_t *zeros;                 /* CHUNK zero bytes */
	uint32_t dropped;               /* allocated blocks whose entries were cleared */
};

static int sync_data(struct resize *r)
{
	if (r->img->no_sync)
		return 0;
	return fdatasync(r->img->fd) < 0 ? -errno : 0;
}

static int sync_all(struct resize *r)
{
	if (r->img->no_sync)
		return 0;
	return fsync(r->img->fd) < 0 ? -errno : 0;
}

static int write_sync(struct resize *r, const void *buf, size_t len, uint64_t off)
{
	int ret = pwrite_full(r->img->fd, buf, len, off);

	return ret < 0 ? ret : sync_data(r);
}

/* The footer as found with another current size (and geometry when g). The
 * raw bytes are patched so that whatever else a producer put there (blktap's
 * byte 85, reserved bytes) stays. */
static void footer_bytes(const struct resize *r, uint64_t cur, const struct vhd_geometry *g,
			 uint8_t out[VHD_FOOTER_SIZE])
{
	memcpy(out, r->tail, VHD_FOOTER_SIZE);
	vhd_put_be64(out + 48, cur);
	if (g) {
		vhd_put_be16(out + 56, g->cylinders);
		out[58] = g->heads;
		out[59] = g->sectors;
	}
	vhd_put_be32(out + 64, vhd_checksum(out, VHD_FOOTER_SIZE, 64));
}

static void new_footer(const struct resize *r, uint8_t out[VHD_FOOTER_SIZE])
{
	footer_bytes(r, r->new_cur, &r->new_geo, out);
}

/* Footer current size, geometry and visible size for a requested size. */
static void choose_size(struct resize *r, uint64_t want)
{
	struct vhd_footer f = r->img->footer;
	struct vhd_geometry g;
	const char *src;

	if (want == r->old_vsize) {
		/* same size: nothing about the size changes (a re-run only
		 * finishes what an interrupted one left) */
		r->new_cur = r->old_cur;
		r->new_geo = f.geometry;
		r->new_vsize = r->old_vsize;
		return;
	}
	vhd_chs_for_size(want, &g);
	r->new_cur = want;
	if (vhd_chs_is_max(&f.geometry)) {
		/* The maximal geometry says "use current size" to every reader
		 * (qemu < 10 for any creator): keep the marker. */
		g = f.geometry;
	} else if (r->chs) {
		/* qemu's create rule: walk up until the product covers the size
		 * (gaps are at most heads * sectors = 4080 sectors). */
		for (uint64_t t = want / VHD_SECTOR_SIZE, i = 0; i < 65536; i++) {
			vhd_chs_for_size((t + i) * VHD_SECTOR_SIZE, &g);
			if (vhd_chs_is_max(&g) || vhd_chs_bytes(&g) >= want)
				break;
		}
		if (!vhd_chs_is_max(&g) && vhd_chs_bytes(&g) >= want)
			r->new_cur = vhd_chs_bytes(&g);
		else
			vhd_chs_for_size(want, &g);
	}
	r->new_geo = g;
	f.current_size = r->new_cur;
	f.geometry = g;
	r->new_vsize = vhd_footer_virtual_size(&f, &src);
}

/* ---- finding non-zero bytes ------------------------------------------------ */

/* First non-zero byte of fd in [off, off + len): 1 and *at, 0 none, or -errno.
 * Holes are skipped with SEEK_DATA where the file system has it. */
static int fd_find_nonzero(struct resize *r, int fd, uint64_t off, uint64_t len, uint64_t *at)
{
	uint64_t end = off + len, pos = off;
	int ret;

	while (pos < end) {
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
		uint64_t stop = end;

		if (d < 0) {
			if (errno == ENXIO)
				return 0; /* nothing but hole up to the end of file */
			if (errno != EINVAL && errno != EOPNOTSUPP)
				return -errno;
		} else {
			off_t h;

			if ((uint64_t)d >= end)
				return 0;
			pos = (uint64_t)d;
			h = lseek(fd, d, SEEK_HOLE);
			if (h > d && (uint64_t)h < end)
				stop = (uint64_t)h;
		}
		while (pos < stop) {
			size_t n = stop - pos < CHUNK ? (size_t)(stop - pos) : CHUNK;

			ret = pread_full(fd, r->buf, n, pos);
			if (ret < 0)
				return ret;
			if (!vhd_buf_is_zero(r->buf, n)) {
				size_t i = 0;

				while (!r->buf[i])
					i++;
				*at = pos + i;
				return 1;
			}
			pos += n;
		}
	}
	return 0;
}

/* First 512-byte sector in [from, to) of what img shows (through its chain)
 * holding a non-zero byte: 1 with *at and *owner, 0 none, or -errno. */
static int find_nonzero(struct resize *r, struct vhd_image *img, uint64_t from, uint64_t to,
			uint64_t *at, const struct vhd_image **owner)
{
	while (from < to) {
		struct vhd_extent e;
		uint64_t fat;
		int ret = vhd_map(img, from, to - from, VHD_MAP_RESOLVE, &e);

		if (ret < 0)
			return ret;
		if (e.kind == VHD_EXT_PARENT)
			return -ENOLINK;
		if (e.kind == VHD_EXT_DATA) {
			ret = fd_find_nonzero(r, e.fd, e.file_offset, e.length, &fat);
			if (ret != 0) {
				*at = (e.offset + (fat - e.file_offset)) / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
				*owner = e.owner;
				return ret;
			}
		}
		from += e.length;
	}
	return 0;
}

/* Refuses (-ENOTEMPTY) when [from, to) of img shows a non-zero byte. */
static int require_zero(struct resize *r, struct vhd_image *img, uint64_t from, uint64_t to,
			const char *why)
{
	const struct vhd_image *owner = NULL;
	uint64_t at = 0;
	int ret;

	if (from >= to)
		return 0;
	ret = find_nonzero(r, img, from, to, &at, &owner);
	if (ret < 0) {
		vhd_err_set(r->err, "%s: reading %" PRIu64 "-%" PRIu64 " to check it is empty: %s",
			    r->path, from, to, strerror(-ret));
		return ret;
	}
	if (ret == 0)
		return 0;
	r->res->first_allocated_beyond = at;
	if (owner && owner != r->img)
		vhd_err_set(r->err, "%s: %s: non-zero data at offset %" PRIu64 " (held by the parent %s)",
			    r->path, why, at, owner->path);
	else if (r->img->block_size)
		vhd_err_set(r->err, "%s: %s: non-zero data at offset %" PRIu64 " (block %" PRIu64 ")",
			    r->path, why, at, at / r->img->block_size);
	else
		vhd_err_set(r->err, "%s: %s: non-zero data at offset %" PRIu64, r->path, why, at);
	return -ENOTEMPTY;
}

static int check_shrink(struct resize *r)
{
	char why[256];
	int ret;

	if (r->new_vsize >= r->old_vsize || r->discard)
		return 0;
	snprintf(why, sizeof(why),
		 "cannot shrink from %" PRIu64 " to %" PRIu64 " bytes without losing data "
		 "(move it below the new end first, or discard it)",
		 r->old_vsize, r->new_vsize);
	ret = require_zero(r, r->img, r->new_vsize, r->old_vsize, why);
	/* A child block dropped below would uncover the parent there (before the
	 * footer switch hides the range): the parent must be empty too. */
	if (ret == 0 && r->img->parent) {
		struct vhd_image *p = r->img->parent;
		uint64_t end = r->old_vsize < p->virtual_size ? r->old_vsize : p->virtual_size;

		ret = require_zero(r, p, r->new_vsize, end, why);
	}
	return ret;
}

/* ---- fixed disks ------------------------------------------------------------ */

/* Makes file bytes [from, to) zero, rewriting only the non-zero sectors (a
 * sparse file stays sparse). */
static int zero_file_range(struct resize *r, uint64_t from, uint64_t to, bool *wrote)
{
	uint64_t at;
	int ret;

	while (from < to) {
		size_t n, s = 0;

		ret = fd_find_nonzero(r, r->img->fd, from, to - from, &at);
		if (ret <= 0)
			return ret;
		at = at / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
		if (at < from)
			at = from;
		n = to - at < CHUNK ? (size_t)(to - at) : CHUNK;
		ret = pread_full(r->img->fd, r->buf, n, at);
		if (ret < 0)
			return ret;
		while (s < n) { /* runs of non-zero sectors */
			size_t e = s, len = n - s < VHD_SECTOR_SIZE ? n - s : VHD_SECTOR_SIZE;

			if (vhd_buf_is_zero(r->buf + s, len)) {
				s += len;
				continue;
			}
			while (e < n) {
				size_t l = n - e < VHD_SECTOR_SIZE ? n - e : VHD_SECTOR_SIZE;

				if (vhd_buf_is_zero(r->buf + e, l))
					break;
				e += l;
			}
			ret = pwrite_full(r->img->fd, r->zeros, e - s, at + s);
			if (ret < 0)
				return ret;
			*wrote = true;
			s = e;
		}
		from = at + n;
	}
	return 0;
}

/* Puts the trailing footer `f` at pos (the file grows or is cut after it). */
static int move_footer(struct resize *r, const uint8_t *f, uint64_t pos)
{
	struct vhd_image *img = r->img;
	int ret;

	if (pos != img->footer_pos &&
	    (pos > img->footer_pos ? pos - img->footer_pos : img->footer_pos - pos) < VHD_FOOTER_SIZE) {
		/* would overwrite part of the live footer: step past it first */
		ret = move_footer(r, f, img->footer_pos + VHD_FOOTER_SIZE);
		if (ret < 0)
			return ret;
	}
	ret = write_sync(r, f, VHD_FOOTER_SIZE, pos);
	if (ret < 0)
		return ret;
	if (pos < img->footer_pos) {
		if (ftruncate(img->fd, (off_t)(pos + VHD_FOOTER_SIZE)) < 0)
			return -errno;
		ret = sync_all(r);
		if (ret < 0)
			return ret;
	}
	if (pos + VHD_FOOTER_SIZE > img->file_size || pos < img->footer_pos)
		img->file_size = pos + VHD_FOOTER_SIZE;
	img->footer_pos = pos;
	return 0;
}

static int resize_fixed(struct resize *r)
{
	struct vhd_image *img = r->img;
	uint64_t n = r->new_cur, vo = r->old_vsize, vn = r->new_vsize;
	uint8_t fin[VHD_FOOTER_SIZE], cur[VHD_FOOTER_SIZE];
	bool dense = false, wrote = false;
	struct stat st;
	int ret;

	if (fstat(img->fd, &st) == 0)
		dense = (uint64_t)st.st_blocks * 512 >= r->old_cur && r->old_cur > 0;
	new_footer(r, fin);
	if (n > img->footer_pos) {
		/* The footer still showing the old size moves to the new end.  For
		 * a CHS-sized disk it may carry the new current size already (the
		 * old geometry keeps the old visible size): no slack warning. */
		footer_bytes(r, n, NULL, cur);
		{
			struct vhd_footer f;
			const char *src;

			vhd_footer_decode(cur, &f);
			if (vhd_footer_virtual_size(&f, &src) != vo)
				footer_bytes(r, r->old_cur, NULL, cur);
		}
		ret = move_footer(r, cur, n);
		if (ret < 0)
			return ret;
	}
	if (vn > vo) {
		/* invisible now: the trailing footer still shows vo */
		ret = zero_file_range(r, vo, vn, &wrote);
		if (ret == 0 && wrote)
			ret = sync_data(r);
		/* A dense (preallocated) disk stays dense: Windows refuses sparse
		 * fixed VHDs.  fallocate(2), not posix_fallocate: glibc's fallback
		 * for file systems without it writes into the file. */
		if (ret == 0 && dense && fallocate(img->fd, 0, (off_t)vo, (off_t)(vn - vo)) < 0 &&
		    errno != EOPNOTSUPP)
			ret = -errno;
		if (ret < 0)
			return ret;
	}
	/* The switch: the trailing footer says the new size. */
	ret = pread_full(img->fd, cur, VHD_FOOTER_SIZE, img->footer_pos);
	if (ret < 0 || memcmp(cur, fin, VHD_FOOTER_SIZE))
		ret = write_sync(r, fin, VHD_FOOTER_SIZE, img->footer_pos);
	if (ret < 0)
		return ret;
	/* Slack after the data (a shrink, or left by someone): cut it. */
	if (img->footer_pos != n)
		ret = move_footer(r, fin, n);
	return ret;
}

/* ---- dynamic and differencing disks --------------------------------------- */

/* Start of the first structure that begins after `after`, or the trailing
 * footer: the end of the free space there. */
static uint64_t next_structure(const struct vhd_image *img, uint64_t after)
{
	uint64_t best = img->footer_pos;

#define CONSIDER(x)                                                            \
	do {                                                                   \
		uint64_t x_ = (x);                                             \
		if (x_ > after && x_ < best)                                   \
			best = x_;                                             \
	} while (0)
	CONSIDER(img->footer.data_offset);
	CONSIDER(img->hdr.table_offset);
	for (int i = 0; i < VHD_NR_LOCATORS; i++) {
		const struct vhd_locator *l = &img->hdr.loc[i];

		if (l->code != VHD_PLAT_NONE && (l->data_length || l->data_space))
			CONSIDER(l->data_offset);
	}
	for (uint32_t b = 0; b < img->nr_blocks; b++)
		if (img->bat[b] != VHD_BAT_UNUSED)
			CONSIDER(block_file_offset(img, b));
#undef CONSIDER
	return best;
}

static int write_bat_entry(struct resize *r, uint32_t b, uint32_t v)
{
	uint8_t e[4];

	vhd_put_be32(e, v);
	return pwrite_full(r->img->fd, e, 4, r->img->hdr.table_offset + 4ull * b);
}

/* Rewrites the dynamic header's table offset and entry count.  Both and the
 * checksum sit in the header's first sector: one sector write, atomic. */
static int write_header(struct resize *r, uint64_t table_offset, uint32_t entries)
{
	struct vhd_image *img = r->img;
	uint8_t h[VHD_DYNHDR_SIZE];
	int ret;

	_Static_assert(16 + 8 <= VHD_SECTOR_SIZE && 28 + 4 <= VHD_SECTOR_SIZE &&
			       36 + 4 <= VHD_SECTOR_SIZE,
		       "header fields resize switches must share the first sector");
	ret = pread_full(img->fd, h, sizeof(h), img->footer.data_offset);
	if (ret < 0)
		return ret;
	vhd_put_be64(h + 16, table_offset);
	vhd_put_be32(h + 28, entries);
	vhd_put_be32(h + 36, vhd_checksum(h, VHD_DYNHDR_SIZE, 36));
	ret = write_sync(r, h, VHD_SECTOR_SIZE, img->footer.data_offset);
	if (ret < 0)
		return ret;
	img->hdr.table_offset = table_offset;
	img->hdr.max_table_entries = entries;
	return 0;
}

/* The last old block may be stored short (the file ends, or something
 * starts, right after the part the old size used).  If the new size needs
 * more of it, the block moves to the end of the file like a new allocation:
 * footer to the new end, copy, sync, BAT entry, sync. */
static int ensure_block_room(struct resize *r, uint32_t b)
{
	struct vhd_image *img = r->img;
	uint64_t start = (uint64_t)b * img->block_size;
	uint64_t off = block_file_offset(img, b);
	uint64_t new_used = (r->new_cur - start < img->block_size ? r->new_cur - start : img->block_size);
	uint64_t old_used = round_up(r->old_cur - start, VHD_SECTOR_SIZE);
	uint64_t have = next_structure(img, off) - off, len, noff, end;
	uint8_t f[VHD_FOOTER_SIZE], *copy = NULL;
	int ret;

	if (img->bitmap_size + round_up(new_used, VHD_SECTOR_SIZE) <= have)
		return 0;
	len = img->bitmap_size + (old_used < img->block_size ? old_used : img->block_size);
	if (len > have)
		len = have;
	noff = next_block_offset(img);
	end = noff + img->bitmap_size + img->block_size;
	if (end / VHD_SECTOR_SIZE > UINT32_MAX) {
		vhd_err_set(r->err, "%s: no room to move block %u below 2 TiB in the file", r->path, b);
		return -ENOSPC;
	}
	copy = malloc(len);
	if (!copy)
		return -ENOMEM;
	ret = pread_full(img->fd, copy, len, off);
	if (ret == 0) {
		footer_bytes(r, r->old_cur, NULL, f);
		ret = move_footer(r, f, end);
	}
	if (ret == 0)
		ret = write_sync(r, copy, len, noff);
	free(copy);
	if (ret < 0)
		return ret;
	img->bat[b] = (uint32_t)(noff / VHD_SECTOR_SIZE);
	ret = write_bat_entry(r, b, img->bat[b]);
	if (ret == 0)
		ret = sync_data(r);
	img->cache[b % VHD_BITMAP_CACHE_SLOTS].block = VHD_BAT_UNUSED;
	img->data_end = end;
	return ret;
}

/* Makes [from, to) (beyond the visible end) read as zeros from this file:
 * sectors whose bitmap bit is set get their data zeroed where it is not. */
static int scrub(struct resize *r, uint64_t from, uint64_t to, bool *wrote)
{
	struct vhd_image *img = r->img;
	uint64_t bs = img->block_size;
	int ret;

	for (uint64_t pos = from; pos < to;) {
		uint32_t b = (uint32_t)(pos / bs);
		uint64_t bend = ((uint64_t)b + 1) * bs < to ? ((uint64_t)b + 1) * bs : to;
		uint64_t data;
		uint32_t s, e;
		uint8_t *bm;

		if (b >= img->nr_blocks)
			break;
		if (img->bat[b] == VHD_BAT_UNUSED) {
			pos = bend;
			continue;
		}
		ret = bitmap_get(img, b, &bm);
		if (ret < 0)
			return ret;
		data = block_file_offset(img, b) + img->bitmap_size;
		s = (uint32_t)((pos - (uint64_t)b * bs) / VHD_SECTOR_SIZE);
		e = (uint32_t)(round_up(bend - (uint64_t)b * bs, VHD_SECTOR_SIZE) / VHD_SECTOR_SIZE);
		while (s < e) {
			uint32_t t = s;

			while (t < e && vhd_bit_test(bm, t) == vhd_bit_test(bm, s))
				t++;
			if (vhd_bit_test(bm, s)) {
				ret = zero_file_range(r, data + (uint64_t)s * VHD_SECTOR_SIZE,
						      data + (uint64_t)t * VHD_SECTOR_SIZE, wrote);
				if (ret < 0)
					return ret;
			}
			s = t;
		}
		pos = bend;
	}
	return 0;
}

/* Sets BAT entries [from, to) unused on disk (and in memory for those the
 * disk has), writing only the pieces that change. */
static int clear_entries(struct resize *r, uint32_t from, uint32_t to, bool *wrote)
{
	struct vhd_image *img = r->img;
	uint32_t per = CHUNK / 4;
	int ret;

	for (uint32_t i = from; i < to;) {
		uint32_t n = to - i < per ? to - i : per, first = n, last = 0;
		uint64_t pos = img->hdr.table_offset + 4ull * i;

		ret = pread_full(img->fd, r->buf, (size_t)n * 4, pos);
		if (ret < 0)
			return ret;
		for (uint32_t k = 0; k < n; k++) {
			uint32_t e = vhd_be32(r->buf + 4 * k);

			if (e == VHD_BAT_UNUSED)
				continue;
			if (k < first)
				first = k;
			last = k;
			vhd_put_be32(r->buf + 4 * k, VHD_BAT_UNUSED);
			if (i + k < img->nr_blocks && img->bat[i + k] != VHD_BAT_UNUSED) {
				img->bat[i + k] = VHD_BAT_UNUSED;
				img->cache[(i + k) % VHD_BITMAP_CACHE_SLOTS].block = VHD_BAT_UNUSED;
				r->dropped++;
			}
		}
		if (first <= last) {
			ret = pwrite_full(img->fd, r->buf + 4 * first, 4 * (size_t)(last - first + 1),
					  pos + 4ull * first);
			if (ret < 0)
				return ret;
			*wrote = true;
		}
		i += n;
	}
	return 0;
}

/* The BAT needs `entries` entries: in place when the free space after it
 * allows, else a new BAT at the end of the file. */
static int grow_bat(struct resize *r, uint32_t entries)
{
	struct vhd_image *img = r->img;
	uint64_t t = img->hdr.table_offset, old_end = t + 4ull * img->hdr.max_table_entries;
	uint64_t need_end = round_up(t + 4ull * entries, VHD_SECTOR_SIZE);
	uint64_t room = next_structure(img, t), pad = round_up(old_end, VHD_SECTOR_SIZE);
	uint64_t bat_bytes = round_up(4ull * entries, VHD_SECTOR_SIZE), newt;
	uint8_t *bat = NULL, f[VHD_FOOTER_SIZE], magic[8];
	int ret;

	/* blktap keeps its batmap right after the BAT padding without any
	 * pointer to it: never write over one. */
	if (pad + 8 <= room && pread_full(img->fd, magic, 8, pad) == 0 &&
	    !memcmp(magic, "tdbatmap", 8))
		room = pad;
	if (need_end <= room) {
		/* in place: the new entries are written unused, then published */
		bat = malloc(need_end - old_end);
		if (!bat)
			return -ENOMEM;
		memset(bat, 0xFF, need_end - old_end);
		ret = write_sync(r, bat, need_end - old_end, old_end);
		free(bat);
		return ret < 0 ? ret : write_header(r, t, entries);
	}

	/* relocate */
	newt = round_up(img->data_end > img->footer_pos ? img->data_end : img->footer_pos, 4096);
	if ((newt + bat_bytes) / VHD_SECTOR_SIZE > UINT32_MAX) {
		vhd_err_set(r->err, "%s: no room for a BAT of %u entries below 2 TiB in the file",
			    r->path, entries);
		return -ENOSPC;
	}
	bat = malloc(bat_bytes);
	if (!bat)
		return -ENOMEM;
	memset(bat, 0xFF, bat_bytes);
	for (uint32_t b = 0; b < img->nr_blocks && b < entries; b++)
		vhd_put_be32(bat + 4ull * b, img->bat[b]);
	footer_bytes(r, r->old_cur, NULL, f);
	ret = move_footer(r, f, newt + bat_bytes);         /* 1. room at the end */
	if (ret == 0)
		ret = write_sync(r, bat, bat_bytes, newt);    /* 2. the new BAT, unreferenced */
	free(bat);
	if (ret == 0)
		ret = write_header(r, newt, entries);          /* 3. the switch */
	if (ret == 0 && img->data_end < newt + bat_bytes)
		img->data_end = newt + bat_bytes;
	return ret;
}

/* Trailing footer, synced, then the copy at offset 0. */
static int write_footers(struct resize *r)
{
	struct vhd_image *img = r->img;
	uint8_t fin[VHD_FOOTER_SIZE], cur[VHD_FOOTER_SIZE];
	uint64_t pos[2] = {img->footer_pos, 0};
	int ret;

	new_footer(r, fin);
	for (int i = 0; i < 2; i++) {
		ret = pread_full(img->fd, cur, VHD_FOOTER_SIZE, pos[i]);
		if (ret == 0 && !memcmp(cur, fin, VHD_FOOTER_SIZE))
			continue;
		ret = write_sync(r, fin, VHD_FOOTER_SIZE, pos[i]);
		if (ret < 0)
			return ret;
	}
	if (img->file_size < img->footer_pos + VHD_FOOTER_SIZE) /* a 511-byte footer grew */
		img->file_size = img->footer_pos + VHD_FOOTER_SIZE;
	return 0;
}

/* Loads the file again with the opener's rules (on a second descriptor of
 * the same open file: the lock stays).  *errors counts errors (the first
 * one's sentence in first); data_end and footer_pos of the fresh parse. */
static int reload(struct resize *r, size_t *errors, char *first, size_t first_len,
		  uint64_t *data_end, uint64_t *footer_pos)
{
	struct vhd_check_report rep = {0};
	struct vhd_diag d = {.file = r->path, .report = &rep};
	struct vhd_image *n = calloc(1, sizeof(*n));
	int ret;

	*errors = 0;
	*data_end = *footer_pos = 0;
	first[0] = 0;
	if (!n)
		return -ENOMEM;
	for (int i = 0; i < VHD_BITMAP_CACHE_SLOTS; i++)
		n->cache[i].block = VHD_BAT_UNUSED;
	n->data_fd = -1;
	n->path = strdup(r->path);
	n->fd = fcntl(r->img->fd, F_DUPFD_CLOEXEC, 0);
	if (!n->path || n->fd < 0) {
		ret = n->path ? -errno : -ENOMEM;
		goto out;
	}
	ret = image_load(n, &d);
	if (ret == -EINVAL)
		ret = 0;
	*errors = vhd_check_count(&rep, VHD_SEV_ERROR);
	first[0] = 0;
	for (size_t i = 0; i < rep.count; i++)
		if (rep.problems[i].severity == VHD_SEV_ERROR) {
			snprintf(first, first_len, "%s: %s", rep.problems[i].field, rep.problems[i].msg);
			break;
		}
	*data_end = n->data_end;
	*footer_pos = n->footer_pos;
out:
	vhd_check_report_free(&rep);
	image_free(n);
	return ret;
}

/* After a shrink dropped blocks: give back the space after the last
 * structure, like repair does (footer into the free space, sync, cut). */
static int reclaim(struct resize *r, bool tail_was_ours)
{
	uint64_t data_end, fpos, end;
	uint8_t fin[VHD_FOOTER_SIZE];
	char first[VHD_ERR_LEN];
	size_t errors;
	int ret;

	ret = reload(r, &errors, first, sizeof(first), &data_end, &fpos);
	if (ret < 0)
		return ret;
	if (errors) {
		vhd_err_set(r->err, "%s: internal error: the resized image does not validate: %s",
			    r->path, first);
		return -EIO;
	}
	end = round_up(data_end, VHD_SECTOR_SIZE);
	if (!r->dropped || !tail_was_ours || end >= fpos)
		return 0;
	new_footer(r, fin);
	return move_footer(r, fin, end);
}

static int resize_sparse(struct resize *r)
{
	struct vhd_image *img = r->img;
	uint64_t bs = img->block_size, nb64 = (r->new_cur + bs - 1) / bs;
	uint32_t nb_old = img->nr_blocks, nb_new, m = img->hdr.max_table_entries, lo, hi;
	bool grow = r->new_vsize > r->old_vsize, wrote = false;
	/* nothing of unknown purpose after the last structure: space freed at
	 * the end of the file may be given back */
	bool tail_ours = round_up(img->data_end, VHD_SECTOR_SIZE) >= img->footer_pos;
	int ret;

	if (nb64 > BAT_LOAD_LIMIT) {
		vhd_err_set(r->err, "%s: %" PRIu64 " bytes in %u-byte blocks need %" PRIu64
				    " BAT entries, more than the %u an image may have here; "
				    "convert to larger blocks first",
			    r->path, r->new_cur, img->block_size, nb64, BAT_LOAD_LIMIT);
		return -EFBIG;
	}
	nb_new = (uint32_t)nb64;

	if (grow && img->parent) {
		struct vhd_image *p = img->parent;
		uint64_t end = r->new_vsize < p->virtual_size ? r->new_vsize : p->virtual_size;

		ret = require_zero(r, p, r->old_vsize, end,
				   "cannot grow: the parent is larger than this differencing disk "
				   "and its data would show in the new range");
		if (ret < 0)
			return ret;
	}

	/* 1. grow: the range about to become visible reads zero in this file */
	if (grow) {
		if (nb_old && r->old_cur % bs && img->bat[nb_old - 1] != VHD_BAT_UNUSED) {
			ret = ensure_block_room(r, nb_old - 1);
			if (ret < 0)
				return ret;
		}
		ret = scrub(r, r->old_vsize, r->new_vsize, &wrote);
		if (ret < 0)
			return ret;
	}
	/* 2. entries beyond the smaller end unused (shrink: drops the blocks cut
	 * off; both: clears foreign leftovers a reader would warn about) */
	lo = nb_old < nb_new ? nb_old : nb_new;
	hi = nb_old > nb_new ? nb_old : nb_new;
	hi = (uint64_t)hi + BAT_SCAN_EXTRA < m ? hi + BAT_SCAN_EXTRA : m;
	if (lo < hi) {
		ret = clear_entries(r, lo, hi, &wrote);
		if (ret < 0)
			return ret;
	}
	if (wrote) {
		ret = sync_data(r);
		if (ret < 0)
			return ret;
	}
	/* 3. room for the entries of a larger disk */
	if (nb_new > m) {
		ret = grow_bat(r, nb_new);
		if (ret < 0)
			return ret;
	}
	/* 4. the switch */
	ret = write_footers(r);
	if (ret < 0)
		return ret;
	/* 5. exactly as many entries as blocks (Azure insists) */
	if (img->hdr.max_table_entries != nb_new) {
		ret = write_header(r, img->hdr.table_offset, nb_new);
		if (ret < 0)
			return ret;
	}
	/* 6. give back what the dropped blocks held at the end; re-validate */
	return reclaim(r, tail_ours);
}

/* ---- entry point ------------------------------------------------------------ */

int vhd_resize(const char *path, uint64_t new_size, bool discard,
	       const struct vhd_open_opts *opts, struct vhd_resize_result *res,
	       struct vhd_err *err)
{
	struct vhd_resize_result dummy;
	struct vhd_open_opts o = opts ? *opts : (struct vhd_open_opts){0};
	struct resize r = {.path = path, .err = err, .discard = discard};
	struct vhd_image *img = NULL;
	uint64_t want;
	int ret, cret;

	if (!res)
		res = &dummy;
	memset(res, 0, sizeof(*res));
	r.res = res;
	if (err)
		err->msg[0] = 0;
	if (new_size == 0) {
		vhd_err_set(err, "%s: size: a disk needs at least one sector", path);
		return -EINVAL;
	}
	if (new_size > VHD_MAX_SIZE) {
		vhd_err_set(err, "%s: size: %" PRIu64 " bytes exceeds the VHD maximum of 2040 GiB (%llu bytes)",
			    path, new_size, VHD_MAX_SIZE);
		return -EFBIG;
	}
	want = round_up(new_size, VHD_SECTOR_SIZE);
	if (vhd_merge_pending(path)) {
		vhd_err_set(err, "%s: an interrupted merge of this disk waits to be finished "
				 "(vhdtool merge or vhdtool repair); not resizing it meanwhile", path);
		return -EBUSY;
	}
	/* Read-write (exclusive lock) with the whole chain: what a shrink cuts
	 * and a grow uncovers is judged on what the disk shows. */
	o.flags = (o.flags | VHD_OPEN_RDWR) & ~(unsigned)(VHD_OPEN_NO_PARENT | VHD_OPEN_DIRECT);
	ret = vhd_open(path, &o, &img, err);
	if (ret < 0)
		return ret;
	r.img = img;
	if (img->footer.saved_state) {
		vhd_err_set(err, "%s: saved state: the footer says a virtual machine was saved with this "
				 "disk attached (saved-state byte 0x%02x); resizing it would invalidate that "
				 "saved state; restore or discard the saved state first",
			    path, img->footer.saved_state);
		ret = -EBUSY;
		goto out;
	}
	r.chs = !strcmp(img->size_source, "chs");
	r.old_vsize = img->virtual_size;
	r.old_cur = img->footer.current_size;
	res->old_size = r.old_vsize;
	{
		uint64_t avail = img->file_size - img->footer_pos;

		ret = pread_full(img->fd, r.tail, avail < VHD_FOOTER_SIZE ? avail : VHD_FOOTER_SIZE,
				 img->footer_pos);
		if (ret < 0)
			goto io_err;
	}
	choose_size(&r, want);
	r.buf = malloc(CHUNK);
	r.zeros = calloc(1, CHUNK);
	if (!r.buf || !r.zeros) {
		ret = -ENOMEM;
		goto out;
	}
	ret = check_shrink(&r);
	if (ret < 0)
		goto out;
	if (img->footer.disk_type == VHD_TYPE_FIXED)
		ret = resize_fixed(&r);
	else
		ret = resize_sparse(&r);
	if (ret == 0)
		res->new_size = r.new_vsize;
io_err:
	if (ret < 0 && err && !err->msg[0])
		vhd_err_set(err, "%s: resize to %" PRIu64 " bytes: %s", path, want, strerror(-ret));
out:
	free(r.buf);
	free(r.zeros);
	cret = vhd_close(img);
	if (ret == 0 && cret < 0) {
		ret = cret;
		vhd_err_set(err, "%s: flush after resize: %s", path, strerror(-ret));
	}
	return ret;
}
