/* test_chain.c - differencing chains against an independently kept raw
 * reference.
 *
 * For several (block size, disk size) configurations: a dynamic base gets
 * random writes (unaligned offsets and lengths, writes straddling block
 * boundaries, the last bytes of the disk, overwrites, zero writes, large
 * unaligned writes that take vhd_pwrite's split path) which are applied to an
 * in-memory reference buffer too.  Then a differencing child is stacked on top
 * (up to 5 levels), and so on.  After every level:
 *   - vhd_pread of the whole disk, in random chunkings and single bytes, equals
 *     the reference;
 *   - walking vhd_map(VHD_MAP_RESOLVE) and reading DATA extents straight from
 *     (ext.fd, ext.file_offset) gives the same bytes, ZERO extents are zero;
 *   - without VHD_MAP_RESOLVE no extent leaves the leaf (depth 0), and the
 *     leaf's DATA sectors are exactly the sectors written at this level (a
 *     differencing disk) or the blocks written (a dynamic base);
 *   - vhd_check of the leaf reports no warning or error;
 *   - every older level, opened read-only alone by its own path, still equals
 *     the snapshot taken when it became a parent.
 * Each differencing level also gets 1-byte writes into sectors whose content
 * lives in the parent: the other 511 bytes must come from the parent.
 *
 * Seed: TEST_SEED (decimal or 0x hex) or a fresh one, printed either way.
 * TEST_KEEP=1 keeps the temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "randtest.h"
#include "vhd.h"

#define MAX_LEVEL 5 /* differencing levels above the base */

static void cleanup_dir(void);

static void fill_random(uint8_t *p, size_t n)
{
	while (n >= 8) {
		uint64_t v = rnd64();

		memcpy(p, &v, 8);
		p += 8;
		n -= 8;
	}
	if (n) {
		uint64_t v = rnd64();

		memcpy(p, &v, n);
	}
}

/* ---- temp dir ------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

static void cleanup_dir(void)
{
	const char *keep = getenv("TEST_KEEP");

	if (!tmpdir[0])
		return;
	if (keep && *keep && strcmp(keep, "0")) {
		printf("keeping %s\n", tmpdir);
		return;
	}
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- state of one configuration ----------------------------------------- */

struct level {
	char path[4200];
	uint32_t block_size;
	uint8_t *snapshot; /* content when it became a parent (NULL for the leaf) */
};

struct chain_state {
	uint64_t size;
	uint8_t *ref;           /* what the leaf must read */
	uint8_t *touched;       /* per sector: written at the leaf's level */
	uint8_t *block_touched; /* per leaf block: some write touched it (base) */
	struct level lv[MAX_LEVEL + 1];
	int nlevels; /* levels created so far; the leaf is lv[nlevels - 1] */
	struct vhd_image *leaf;
	/* earlier writes, for overwrites */
	struct { uint64_t off, len; } hist[4096];
	size_t nhist;
	uint8_t *buf;  /* write buffer */
	uint8_t *rbuf; /* read buffer */
	uint64_t *hot;  /* blocks this level mostly writes to */
	uint8_t *is_hot;
	size_t nhot;
	size_t buf_size;
	/* statistics */
	uint64_t writes, bytes_written, reads, extents;
	unsigned one_byte[2]; /* 1-byte parent-sector writes: unallocated, allocated block */
};

static void mark_written(struct chain_state *st, uint64_t off, uint64_t len)
{
	uint32_t bs = st->lv[st->nlevels - 1].block_size;

	for (uint64_t s = off / 512; s < (off + len + 511) / 512; s++)
		st->touched[s] = 1;
	for (uint64_t b = off / bs; b < (off + len + bs - 1) / bs; b++)
		st->block_touched[b] = 1;
	if (st->nhist < sizeof(st->hist) / sizeof(st->hist[0])) {
		st->hist[st->nhist].off = off;
		st->hist[st->nhist].len = len;
		st->nhist++;
	} else {
		size_t i = (size_t)rnd(st->nhist);

		st->hist[i].off = off;
		st->hist[i].len = len;
	}
}

static void do_write(struct chain_state *st, const uint8_t *data, uint64_t off, uint64_t len)
{
	int ret = vhd_pwrite(st->leaf, data, len, off);

	if (ret < 0)
		fail("vhd_pwrite(off=%" PRIu64 ", len=%" PRIu64 ") = %s", off, len, strerror(-ret));
	memcpy(st->ref + off, data, len);
	mark_written(st, off, len);
	st->writes++;
	st->bytes_written += len;
}

/* Each level writes mostly into a random half of its blocks ("hot"), so that
 * children keep unallocated blocks and partially written ones. */
static uint64_t pick_off(struct chain_state *st, uint64_t len)
{
	uint32_t bs = st->lv[st->nlevels - 1].block_size;
	uint64_t off;

	if (rnd(10) == 0 || !st->nhot)
		return rnd(st->size - len + 1);
	off = st->hot[rnd(st->nhot)] * bs + rnd(bs);
	if (off > st->size - len)
		off = st->size - len;
	return off;
}

static uint64_t hot_block(struct chain_state *st)
{
	uint32_t bs = st->lv[st->nlevels - 1].block_size;

	return st->nhot ? st->hot[rnd(st->nhot)] : rnd((st->size + bs - 1) / bs);
}

static void choose_hot(struct chain_state *st)
{
	uint32_t bs = st->lv[st->nlevels - 1].block_size;
	uint64_t nblocks = (st->size + bs - 1) / bs;

	uint64_t max_run = nblocks / 6 > 1 ? nblocks / 6 : 1;

	/* runs of hot and cold blocks, so that large writes fit in a hot run */
	st->nhot = 0;
	for (uint64_t b = 0; b < nblocks;) {
		uint8_t hot = (uint8_t)rnd(2);

		for (uint64_t n = rnd_in(1, max_run); n && b < nblocks; n--, b++) {
			st->is_hot[b] = hot;
			if (hot)
				st->hot[st->nhot++] = b;
		}
	}
	if (!st->nhot) {
		st->hot[st->nhot++] = rnd(nblocks);
		st->is_hot[st->hot[0]] = 1;
	}
}

static bool touches_cold(struct chain_state *st, uint64_t off, uint64_t len)
{
	uint32_t bs = st->lv[st->nlevels - 1].block_size;

	for (uint64_t b = off / bs; b <= (off + len - 1) / bs; b++)
		if (!st->is_hot[b])
			return true;
	return false;
}

/* One random write (geometry from gen_write, content random). */
static void gen_write(struct chain_state *st, uint64_t *off_out, uint64_t *len_out);

static void random_write(struct chain_state *st)
{
	uint32_t bs = st->lv[st->nlevels - 1].block_size;
	uint64_t nblocks = (st->size + bs - 1) / bs;
	bool strict = nblocks <= 64 || rnd(10);
	int content = (int)rnd(10); /* 0: zeros, 1: one byte value, else random */
	uint64_t off, len;

	/* Stay inside the hot blocks (small disks always, others mostly). */
	for (int tries = 0;; tries++) {
		gen_write(st, &off, &len);
		if (!strict || tries >= 200 || !touches_cold(st, off, len))
			break;
	}
	CHECK(len >= 1 && off + len <= st->size);
	CHECK(len <= st->buf_size);
	if (content == 0)
		memset(st->buf, 0, len);
	else if (content == 1)
		memset(st->buf, (int)rnd_in(1, 255), len);
	else
		fill_random(st->buf, len);
	do_write(st, st->buf, off, len);
}

static void gen_write(struct chain_state *st, uint64_t *off_out, uint64_t *len_out)
{
	uint64_t size = st->size, off, len;
	uint32_t bs = st->lv[st->nlevels - 1].block_size;
	unsigned k = (unsigned)rnd(100);

	if (k < 20) { /* tiny */
		len = rnd_in(1, 16);
		off = pick_off(st, len);
	} else if (k < 34) { /* small, any alignment */
		len = rnd_in(1, 2 * (uint64_t)bs < 256 * KiB ? 2 * (uint64_t)bs : 256 * KiB);
		off = pick_off(st, len);
	} else if (k < 48) { /* straddling a block boundary (start or end of a hot block) */
		uint64_t b = (hot_block(st) + rnd(2)) * bs;
		uint64_t before = rnd_in(1, bs < 8192 ? bs : 8192);
		uint64_t after = rnd_in(1, 8192);

		if (b == 0 || b >= size)
			b = bs < size ? bs : size / 2;
		if (rnd(4) == 0) /* sector aligned on both sides */
			before = (before + 511) / 512 * 512, after = (after + 511) / 512 * 512;
		if (before > b)
			before = b;
		off = b - before;
		len = before + after;
		if (off + len > size)
			len = size - off;
	} else if (k < 56) { /* the last bytes of the disk */
		len = rnd_in(1, 3 * (uint64_t)bs < 64 * KiB ? 3 * (uint64_t)bs : 64 * KiB);
		if (len > size)
			len = size;
		off = size - len;
		if (rnd(3) == 0 && off > 0) { /* near the end, not touching it */
			uint64_t back = rnd_in(1, off < 700 ? off : 700);

			off -= back;
		}
	} else if (k < 64 && st->nhist) { /* over an earlier write, maybe of a parent */
		size_t i = (size_t)rnd(st->nhist);
		int64_t shift = (int64_t)rnd(401) - 200;

		off = st->hist[i].off;
		len = st->hist[i].len;
		if (len > 256 * KiB)
			len = rnd_in(1, 256 * KiB);
		if (rnd(2)) { /* a part of it */
			uint64_t a = rnd(len), b = rnd(len);

			if (a > b) {
				uint64_t t = a;

				a = b;
				b = t;
			}
			off += a;
			len = b - a + 1;
		} else if ((int64_t)off + shift >= 0) {
			off = (uint64_t)((int64_t)off + shift);
		}
		if (off >= size)
			off = size - 1;
		if (len > size - off)
			len = size - off;
	} else if (k < 74) { /* whole sectors */
		len = rnd_in(1, 4 * (uint64_t)bs / 512 < 512 ? 4 * (uint64_t)bs / 512 : 512) * 512;
		if (len > size)
			len = size / 512 * 512;
		off = pick_off(st, len) / 512 * 512;
	} else if (k < 77) { /* >= 1 MiB unaligned: vhd_pwrite's head/middle/tail path */
		len = rnd_in(MiB, MiB + 512 * KiB);
		if (len > size)
			len = size;
		off = pick_off(st, len);
		if (off % 512 == 0 && len % 512 == 0) {
			if (off + len < size)
				len++;
			else
				off++, len--;
		}
	} else if (k < 85) { /* exactly one block */
		off = hot_block(st) * bs;
		len = bs;
		if (len > 512 * KiB) /* or its first part */
			len = rnd_in(1, 512 * KiB);
		if (len > size - off)
			len = size - off;
	} else if (k < 90) { /* the first bytes of the disk */
		off = rnd(2) ? 0 : rnd(1024);
		len = rnd_in(1, 8192);
		if (len > size - off)
			len = size - off;
	} else { /* the last bytes of a block */
		len = rnd_in(1, bs < 1024 ? bs : 1024);
		off = hot_block(st) * bs + bs - len;
		if (off + len > size)
			off = size - len;
	}
	*off_out = off;
	*len_out = len;
}

/* ---- verification --------------------------------------------------------- */

static void first_diff(const uint8_t *a, const uint8_t *b, uint64_t len, uint64_t base,
		       const char *what)
{
	for (uint64_t i = 0; i < len; i++)
		if (a[i] != b[i]) {
			uint64_t n = 0;

			for (uint64_t j = i; j < len && a[j] != b[j]; j++)
				n++;
			fail("%s: first difference at disk offset %" PRIu64
			     " (got 0x%02x, want 0x%02x; %" PRIu64 " differing bytes follow in a run)",
			     what, base + i, a[i], b[i], n);
		}
}

static void read_check(struct vhd_image *img, const uint8_t *want, uint64_t off, uint64_t len,
		       uint8_t *buf, const char *what)
{
	int ret = vhd_pread(img, buf, len, off);

	if (ret < 0)
		fail("%s: vhd_pread(off=%" PRIu64 ", len=%" PRIu64 ") = %s", what, off, len,
		     strerror(-ret));
	if (memcmp(buf, want + off, len))
		first_diff(buf, want + off, len, off, what);
}

static void verify_reads(struct chain_state *st, struct vhd_image *img, const uint8_t *want)
{
	uint64_t size = st->size;
	uint32_t bs = st->lv[st->nlevels - 1].block_size;
	uint8_t *all = malloc(size);
	char what[128];

	CHECK(all);
	read_check(img, want, 0, size, all, "whole-disk read");
	free(all);
	/* random chunkings: small (straddling blocks), large, odd sizes */
	for (int pass = 0; pass < 3; pass++) {
		uint64_t max = pass == 0 ? 2ull * bs + 17 : pass == 1 ? 3 * MiB : 1537;

		snprintf(what, sizeof(what), "chunked read pass %d", pass);
		for (uint64_t off = 0; off < size;) {
			uint64_t len = rnd_in(1, max);

			if (pass == 2 && rnd(4) == 0) {
				static const uint64_t odd[] = {1, 511, 512, 513, 4095, 4096, 4097};

				len = odd[rnd(sizeof(odd) / sizeof(odd[0]))];
			}
			if (len > size - off)
				len = size - off;
			read_check(img, want, off, len, st->rbuf, what);
			st->reads++;
			off += len;
		}
	}
	/* single bytes: random ones, around block boundaries, the last one */
	for (int i = 0; i < 3000; i++)
		read_check(img, want, rnd(size), 1, st->rbuf, "single-byte read");
	for (int i = 0; i < 200; i++) {
		uint64_t b = rnd((size + bs - 1) / bs) * bs;

		if (b > 0)
			read_check(img, want, b - 1, 1, st->rbuf, "byte before a block boundary");
		if (b < size)
			read_check(img, want, b, 1, st->rbuf, "byte at a block boundary");
		if (b > 0 && b < size)
			read_check(img, want, b - 1, 2, st->rbuf, "two bytes across a block boundary");
	}
	read_check(img, want, size - 1, 1, st->rbuf, "last byte");
	/* out of range must fail */
	CHECK(vhd_pread(img, st->rbuf, 2, size - 1) < 0);
}

/* The chain member at depth d below img. */
static const struct vhd_image *chain_at(const struct vhd_image *img, unsigned d)
{
	while (d-- && img)
		img = vhd_parent(img);
	return img;
}

static void verify_map_resolve(struct chain_state *st, struct vhd_image *img, const uint8_t *want,
			       unsigned chain_len, bool random_windows)
{
	uint64_t size = st->size;
	struct vhd_extent e;

	for (uint64_t off = 0; off < size;) {
		uint64_t ask = size - off;
		int ret;

		if (random_windows)
			ask = rnd_in(1, ask < 3 * MiB ? ask : 3 * MiB);
		ret = vhd_map(img, off, ask, VHD_MAP_RESOLVE, &e);
		if (ret < 0)
			fail("vhd_map(RESOLVE, off=%" PRIu64 ", len=%" PRIu64 ") = %s", off, ask,
			     strerror(-ret));
		if (e.offset != off || e.length == 0 || e.length > ask)
			fail("vhd_map(RESOLVE, off=%" PRIu64 ", len=%" PRIu64 ") returned offset %" PRIu64
			     " length %" PRIu64, off, ask, e.offset, e.length);
		if (e.kind == VHD_EXT_PARENT)
			fail("vhd_map(RESOLVE) returned a PARENT extent at %" PRIu64 " (depth %u) with the whole chain open",
			     off, e.depth);
		if (e.depth >= chain_len)
			fail("vhd_map(RESOLVE) at %" PRIu64 ": depth %u in a chain of %u", off, e.depth,
			     chain_len);
		if (e.owner != chain_at(img, e.depth))
			fail("vhd_map(RESOLVE) at %" PRIu64 ": owner is not the chain member at depth %u",
			     off, e.depth);
		if (e.kind == VHD_EXT_DATA) {
			uint64_t done = 0;

			while (done < e.length) {
				uint64_t n = e.length - done < st->buf_size ? e.length - done : st->buf_size;
				ssize_t r = pread(e.fd, st->rbuf, n, (off_t)(e.file_offset + done));

				if (r != (ssize_t)n)
					fail("pread(ext.fd, %" PRIu64 ", file offset %" PRIu64 ") for the DATA extent at %" PRIu64
					     " (depth %u) returned %zd", n, e.file_offset + done, off, e.depth, r);
				if (memcmp(st->rbuf, want + off + done, n))
					first_diff(st->rbuf, want + off + done, n, off + done,
						   "DATA extent read via (ext.fd, ext.file_offset)");
				done += n;
			}
		} else {
			for (uint64_t i = 0; i < e.length; i++)
				if (want[off + i])
					fail("ZERO extent at %" PRIu64 "+%" PRIu64 " (depth %u) but the reference byte at %" PRIu64
					     " is 0x%02x", off, e.length, e.depth, off + i, want[off + i]);
		}
		st->extents++;
		off += e.length;
	}
}

/* Without VHD_MAP_RESOLVE: nothing below the leaf, and the leaf's own data
 * is exactly what was written at this level. */
static void verify_map_local(struct chain_state *st, struct vhd_image *img, bool diff)
{
	uint64_t size = st->size;
	uint32_t bs = st->lv[st->nlevels - 1].block_size;
	struct vhd_extent e;

	for (uint64_t off = 0; off < size;) {
		uint64_t ask = rnd(3) ? size - off : rnd_in(1, size - off < 5 * MiB ? size - off : 5 * MiB);
		int ret = vhd_map(img, off, ask, 0, &e);

		if (ret < 0)
			fail("vhd_map(0, off=%" PRIu64 ") = %s", off, strerror(-ret));
		if (e.offset != off || e.length == 0 || e.length > ask)
			fail("vhd_map(0, off=%" PRIu64 ", len=%" PRIu64 ") returned offset %" PRIu64
			     " length %" PRIu64, off, ask, e.offset, e.length);
		if (e.depth != 0 || e.owner != img)
			fail("vhd_map without RESOLVE at %" PRIu64 " crossed into depth %u", off, e.depth);
		if (!diff && e.kind == VHD_EXT_PARENT)
			fail("vhd_map on a dynamic disk returned a PARENT extent at %" PRIu64, off);
		for (uint64_t o = off; o < off + e.length;) {
			uint64_t s = o / 512;
			bool have = diff ? st->touched[s] : st->block_touched[o / bs];

			if (have != (e.kind == VHD_EXT_DATA))
				fail("vhd_map without RESOLVE at %" PRIu64 ": extent %" PRIu64 "+%" PRIu64
				     " is %s but byte %" PRIu64 " was %swritten at this level",
				     off, e.offset, e.length,
				     e.kind == VHD_EXT_DATA ? "DATA" : e.kind == VHD_EXT_ZERO ? "ZERO" : "PARENT",
				     o, have ? "" : "not ");
			if (e.kind == VHD_EXT_DATA) {
				uint64_t n = off + e.length - o < 512 - o % 512 ? off + e.length - o : 512 - o % 512;
				uint8_t b[512];

				if (pread(e.fd, b, n, (off_t)(e.file_offset + (o - off))) != (ssize_t)n)
					fail("pread of a local DATA extent at %" PRIu64 " failed", o);
				if (memcmp(b, st->ref + o, n))
					first_diff(b, st->ref + o, n, o, "local DATA extent");
			}
			o = (o / 512 + 1) * 512;
		}
		off += e.length;
	}
}

static void verify_check(const char *path, unsigned chain_len)
{
	struct vhd_check_report r;
	struct vhd_err err;
	int ret = vhd_check(path, NULL, &r, &err);

	if (ret < 0)
		fail("vhd_check(%s) = %s: %s", path, strerror(-ret), err.msg);
	if (vhd_check_count(&r, VHD_SEV_WARNING)) {
		for (size_t i = 0; i < r.count; i++)
			fprintf(stderr, "  %s: %s: %s: %s\n", vhd_severity_name(r.problems[i].severity),
				r.problems[i].file, r.problems[i].field, r.problems[i].msg);
		fail("vhd_check(%s) reports %zu warnings/errors", path,
		     vhd_check_count(&r, VHD_SEV_WARNING));
	}
	if (r.chain_depth != chain_len)
		fail("vhd_check(%s): chain depth %u, expected %u", path, r.chain_depth, chain_len);
	vhd_check_report_free(&r);
}

static struct vhd_image *open_image(const char *path, unsigned flags)
{
	struct vhd_open_opts o = {.flags = flags};
	struct vhd_image *img = NULL;
	struct vhd_err err;
	int ret = vhd_open(path, &o, &img, &err);

	if (ret < 0)
		fail("vhd_open(%s, flags %u) = %s: %s", path, flags, strerror(-ret), err.msg);
	return img;
}

static void verify_level(struct chain_state *st)
{
	int leaf = st->nlevels - 1;
	bool diff = leaf > 0;

	verify_reads(st, st->leaf, st->ref);
	verify_map_resolve(st, st->leaf, st->ref, (unsigned)st->nlevels, false);
	verify_map_resolve(st, st->leaf, st->ref, (unsigned)st->nlevels, true);
	verify_map_local(st, st->leaf, diff);
	verify_check(st->lv[leaf].path, (unsigned)st->nlevels);
	/* parents never change */
	for (int k = 0; k < leaf; k++) {
		struct vhd_image *p = open_image(st->lv[k].path, 0);
		uint8_t *all = malloc(st->size);
		char what[64];

		CHECK(all);
		CHECK(!vhd_is_writable(p));
		CHECK(vhd_virtual_size(p) == st->size);
		snprintf(what, sizeof(what), "level %d re-opened alone", k);
		read_check(p, st->lv[k].snapshot, 0, st->size, all, what);
		free(all);
		verify_check(st->lv[k].path, (unsigned)k + 1);
		vhd_close(p);
	}
}

/* 1-byte writes into sectors whose content is in the parent: once into a
 * block the child has not allocated, once into an allocated block whose
 * sector is not present. */
static void one_byte_into_parent_sector(struct chain_state *st, bool want_allocated_block)
{
	uint32_t bs = st->lv[st->nlevels - 1].block_size;
	uint64_t nsec = st->size / 512;

	for (int tries = 0; tries < 100000; tries++) {
		uint64_t s = rnd(nsec), off = s * 512;
		unsigned nonzero = 0;
		struct vhd_extent e;
		uint8_t b, sec[512];
		uint64_t pos;

		if (st->touched[s] || (bool)st->block_touched[off / bs] != want_allocated_block)
			continue;
		for (int i = 0; i < 512; i++)
			nonzero += st->ref[off + i] != 0;
		if (nonzero < 64)
			continue;
		pos = off + rnd(512);
		b = (uint8_t)(st->ref[pos] ^ (uint8_t)rnd_in(1, 255));
		do_write(st, &b, pos, 1);
		if (vhd_pread(st->leaf, sec, 512, off) < 0)
			fail("vhd_pread after a 1-byte write failed");
		if (memcmp(sec, st->ref + off, 512))
			first_diff(sec, st->ref + off, 512, off,
				   want_allocated_block
					   ? "1-byte write into an allocated child block: the rest of the sector must come from the parent"
					   : "1-byte write into an unallocated child block: the rest of the sector must come from the parent");
		/* the sector is now the child's; its neighbours (unless written) are not */
		CHECK(vhd_map(st->leaf, off, 512, 0, &e) == 0);
		if (e.kind != VHD_EXT_DATA || e.length != 512)
			fail("after a 1-byte write at %" PRIu64 " the sector is not child DATA", pos);
		if (s + 1 < nsec && !st->touched[s + 1]) {
			CHECK(vhd_map(st->leaf, off + 512, 512, 0, &e) == 0);
			if (e.kind != VHD_EXT_PARENT)
				fail("after a 1-byte write at %" PRIu64 " the next sector is no longer in the parent",
				     pos);
		}
		st->one_byte[want_allocated_block]++;
		return;
	}
	printf("  (no suitable sector for a 1-byte write, %s block)\n",
	       want_allocated_block ? "allocated" : "unallocated");
}

struct config {
	const char *name;
	uint32_t base_bs;
	uint64_t size;
	/* block sizes of the differencing children; 0 = the parent's */
	uint32_t child_bs[MAX_LEVEL];
	int writes_per_level;
};

static void run_config(const struct config *c)
{
	struct chain_state *st = calloc(1, sizeof(*st));
	uint64_t size = c->size;
	uint32_t min_bs = c->base_bs;

	CHECK(st);
	for (int i = 0; i < MAX_LEVEL; i++)
		if (c->child_bs[i] && c->child_bs[i] < min_bs)
			min_bs = c->child_bs[i];
	st->size = size;
	st->ref = calloc(1, size);
	st->touched = calloc(1, size / 512 + 1);
	st->block_touched = calloc(1, size / min_bs + 2);
	st->buf_size = 4 * MiB;
	st->buf = malloc(st->buf_size);
	st->rbuf = malloc(st->buf_size);
	st->hot = malloc((size / min_bs + 2) * sizeof(*st->hot));
	st->is_hot = calloc(1, size / min_bs + 2);
	CHECK(st->ref && st->touched && st->block_touched && st->buf && st->rbuf && st->hot && st->is_hot);

	printf("config %s: size %" PRIu64 " (%" PRIu64 " MiB + %" PRIu64 " bytes), base block %u\n",
	       c->name, size, size / MiB, size % MiB, c->base_bs);
	for (int level = 0; level <= MAX_LEVEL; level++) {
		struct level *lv = &st->lv[level];
		struct vhd_create_opts co = {0};
		struct vhd_err err;
		int ret;

		snprintf(lv->path, sizeof(lv->path), "%s/%s-%d.vhd", tmpdir, c->name, level);
		if (level == 0) {
			co.type = VHD_TYPE_DYNAMIC;
			co.size = size;
			co.block_size = c->base_bs;
			lv->block_size = c->base_bs;
		} else {
			struct level *pl = &st->lv[level - 1];

			/* The leaf becomes a parent: freeze its reference. */
			pl->snapshot = malloc(size);
			CHECK(pl->snapshot);
			memcpy(pl->snapshot, st->ref, size);
			/* While the leaf is open for writing, nobody may stack a
			 * child on it (the parent could still change). */
			co.type = VHD_TYPE_DIFF;
			co.parent = pl->path;
			ret = vhd_create(lv->path, &co, &err);
			if (ret != -EBUSY)
				fail("vhd_create(child of %s) while that image is open read-write = %d (%s), expected -EBUSY",
				     pl->path, ret, ret < 0 ? err.msg : "created");
			CHECK(access(lv->path, F_OK) < 0);
			ret = vhd_close(st->leaf);
			st->leaf = NULL;
			if (ret < 0)
				fail("vhd_close(%s) = %s", pl->path, strerror(-ret));
			co.type = VHD_TYPE_DIFF;
			co.parent = pl->path;
			co.block_size = c->child_bs[level - 1];
			lv->block_size = co.block_size ? co.block_size : pl->block_size;
		}
		snprintf(ctx, sizeof(ctx), "config %s, level %d", c->name, level);
		ret = vhd_create(lv->path, &co, &err);
		if (ret < 0)
			fail("vhd_create(%s) = %s: %s", lv->path, strerror(-ret), err.msg);
		st->nlevels = level + 1;
		st->leaf = open_image(lv->path, VHD_OPEN_RDWR);
		CHECK(vhd_is_writable(st->leaf));
		CHECK(vhd_virtual_size(st->leaf) == size);
		{
			struct vhd_info info;

			vhd_get_info(st->leaf, &info);
			CHECK(info.type == (level ? VHD_TYPE_DIFF : VHD_TYPE_DYNAMIC));
			CHECK(info.block_size == lv->block_size);
			CHECK(info.allocated_blocks == 0);
		}
		/* the chain below is open and read-only */
		for (int k = 1; k <= level; k++) {
			const struct vhd_image *p = chain_at(st->leaf, (unsigned)k);

			CHECK(p != NULL);
			CHECK(!vhd_is_writable(p));
		}
		CHECK(chain_at(st->leaf, (unsigned)level + 1) == NULL);
		/* and the parents are locked against writers */
		if (level > 0) {
			struct vhd_open_opts po = {.flags = VHD_OPEN_RDWR};
			struct vhd_image *p = NULL;

			ret = vhd_open(st->lv[rnd((uint64_t)level)].path, &po, &p, &err);
			if (ret != -EBUSY)
				fail("opening a parent read-write while its child is open = %d, expected -EBUSY", ret);
			CHECK(p == NULL);
		}
		memset(st->touched, 0, size / 512 + 1);
		memset(st->block_touched, 0, size / min_bs + 2);
		choose_hot(st);

		/* An empty child reads exactly as its parent. */
		if (level > 0) {
			verify_map_resolve(st, st->leaf, st->ref, (unsigned)st->nlevels, false);
			one_byte_into_parent_sector(st, false);
		}
		for (int i = 0; i < c->writes_per_level; i++) {
			random_write(st);
			if (i == c->writes_per_level / 2 && level > 0) {
				one_byte_into_parent_sector(st, true);
				one_byte_into_parent_sector(st, false);
			}
		}
		if (level > 0)
			one_byte_into_parent_sector(st, true);
		verify_level(st);
		{
			struct vhd_info info;

			vhd_get_info(st->leaf, &info);
			printf("  level %d (%s, block %u): %d writes, %u blocks allocated, file %" PRIu64
			       " bytes: ok\n",
			       level, level ? "differencing" : "dynamic", lv->block_size,
			       c->writes_per_level, info.allocated_blocks, info.file_size);
		}
		fflush(stdout);
	}
	/* The whole chain again after a close and a read-only re-open. */
	snprintf(ctx, sizeof(ctx), "config %s, re-opened leaf", c->name);
	CHECK(vhd_close(st->leaf) == 0);
	st->leaf = open_image(st->lv[MAX_LEVEL].path, 0);
	CHECK(!vhd_is_writable(st->leaf));
	CHECK(vhd_pwrite(st->leaf, st->buf, 1, 0) < 0);
	verify_reads(st, st->leaf, st->ref);
	verify_map_resolve(st, st->leaf, st->ref, MAX_LEVEL + 1, true);
	verify_map_local(st, st->leaf, true);
	vhd_close(st->leaf);

	printf("  %" PRIu64 " writes (%" PRIu64 " bytes), %" PRIu64 " chunked reads, %" PRIu64
	       " extents checked, 1-byte writes over parent sectors: %u in unallocated, %u in allocated child blocks\n",
	       st->writes, st->bytes_written, st->reads, st->extents, st->one_byte[0], st->one_byte[1]);
	CHECK(st->one_byte[0] > 0);
	for (int i = 0; i <= MAX_LEVEL; i++)
		free(st->lv[i].snapshot);
	free(st->ref);
	free(st->touched);
	free(st->block_touched);
	free(st->buf);
	free(st->rbuf);
	free(st->hot);
	free(st->is_hot);
	free(st);
}

/* ---- the prepare/commit protocol with two plans in flight ----------------
 *
 * docs/vhd-library.md: "Two prepares of the same unallocated block before its
 * commit would allocate twice (a leak, never corruption)".  Checked here: two
 * plans on different sectors of one unallocated block, data written and
 * synced for both, both committed (in either order): both writes must read
 * back, before and after a re-open, and check must stay clean. */
static unsigned inflight_failed, inflight_total;

__attribute__((format(printf, 1, 2))) static void inflight_bad(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL [%s]: ", ctx);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	inflight_failed++;
}

static void inflight_case(bool diff, bool reverse)
{
	const uint32_t bs = 64 * KiB;
	const uint64_t size = 4 * MiB;
	char base[4200], leaf[4200];
	struct vhd_create_opts co = {.type = VHD_TYPE_DYNAMIC, .size = size, .block_size = bs};
	struct vhd_write_plan pa, pb;
	struct vhd_image *img;
	struct vhd_err err;
	uint8_t a[512], b[512], old[512], got[512];
	uint64_t blk = 3 * bs, off_a = blk + 2 * 512, off_b = blk + 9 * 512;
	int ret;

	snprintf(ctx, sizeof(ctx), "two plans in flight on one unallocated block (%s, commit %s)",
		 diff ? "differencing child" : "dynamic disk", reverse ? "B then A" : "A then B");
	snprintf(base, sizeof(base), "%s/inflight-%d%d-base.vhd", tmpdir, diff, reverse);
	snprintf(leaf, sizeof(leaf), "%s/inflight-%d%d-child.vhd", tmpdir, diff, reverse);
	ret = vhd_create(base, &co, &err);
	if (ret < 0)
		fail("vhd_create: %s", err.msg);
	memset(old, 0, sizeof(old));
	if (diff) { /* parent data everywhere, then an empty child */
		uint8_t *p = malloc(size);

		CHECK(p);
		memset(p, 'P', size);
		img = open_image(base, VHD_OPEN_RDWR);
		CHECK(vhd_pwrite(img, p, size, 0) == 0);
		CHECK(vhd_close(img) == 0);
		free(p);
		memset(old, 'P', sizeof(old));
		co = (struct vhd_create_opts){.type = VHD_TYPE_DIFF, .parent = base};
		ret = vhd_create(leaf, &co, &err);
		if (ret < 0)
			fail("vhd_create: %s", err.msg);
	} else {
		snprintf(leaf, sizeof(leaf), "%s", base);
	}
	memset(a, 'A', sizeof(a));
	memset(b, 'B', sizeof(b));
	img = open_image(leaf, VHD_OPEN_RDWR);
	CHECK(vhd_write_prepare(img, off_a, 512, &pa) == 0);
	CHECK(vhd_write_prepare(img, off_b, 512, &pb) == 0);
	CHECK(pa.length == 512 && pb.length == 512 && pa.needs_commit && pb.needs_commit);
	CHECK(pwrite(pa.fd, a, 512, (off_t)pa.file_offset) == 512);
	CHECK(pwrite(pb.fd, b, 512, (off_t)pb.file_offset) == 512);
	CHECK(fdatasync(pa.fd) == 0 && fdatasync(pb.fd) == 0);
	if (reverse) {
		CHECK(vhd_write_commit(img, &pb) == 0);
		CHECK(vhd_write_commit(img, &pa) == 0);
	} else {
		CHECK(vhd_write_commit(img, &pa) == 0);
		CHECK(vhd_write_commit(img, &pb) == 0);
	}
	for (int pass = 0; pass < 2; pass++) {
		const char *when = pass ? "after a re-open" : "right after the commits";

		CHECK(vhd_pread(img, got, 512, off_a) == 0);
		if (memcmp(got, a, 512))
			inflight_bad("%s: write A (disk offset %" PRIu64 ") reads back 0x%02x, not 'A' (0x41): an "
				     "acknowledged write is lost (the plans got file offsets %" PRIu64 " and %" PRIu64
				     ": the block was allocated twice and the later commit replaced the BAT entry)",
				     when, off_a, got[0], pa.file_offset, pb.file_offset);
		CHECK(vhd_pread(img, got, 512, off_b) == 0);
		if (memcmp(got, b, 512))
			inflight_bad("%s: write B (disk offset %" PRIu64 ") reads back 0x%02x, not 'B' (0x42): an "
				     "acknowledged write is lost (the plans got file offsets %" PRIu64 " and %" PRIu64
				     ": the block was allocated twice and the later commit replaced the BAT entry)",
				     when, off_b, got[0], pa.file_offset, pb.file_offset);
		CHECK(vhd_pread(img, got, 512, blk + 5 * 512) == 0);
		if (memcmp(got, old, 512))
			inflight_bad("%s: an unwritten sector of the block changed", when);
		CHECK(vhd_close(img) == 0);
		img = open_image(leaf, pass ? 0 : VHD_OPEN_RDWR);
	}
	vhd_close(img);
	verify_check(leaf, diff ? 2 : 1);
	printf("  %s: %s\n", ctx, inflight_failed ? "FAILED" : "ok");
	inflight_total += inflight_failed;
	inflight_failed = 0;
}

static int run_inflight(void)
{
	printf("test_chain --inflight: the write_prepare/commit protocol with two plans on one new block\n");
	for (int diff = 0; diff < 2; diff++)
		for (int reverse = 0; reverse < 2; reverse++)
			inflight_case(diff, reverse);
	return 0;
}

int main(int argc, char **argv)
{
	bool inflight = argc > 1 && !strcmp(argv[1], "--inflight");
	const char *s = getenv("TEST_SEED");
	const char *base = getenv("TMPDIR");
	struct timespec ts;

	if (s && *s) {
		seed = strtoull(s, NULL, 0);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
	}
	rng = seed;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("test_chain: seed %" PRIu64 " (set TEST_SEED to reproduce)\n", seed);

	snprintf(tmpdir, sizeof(tmpdir), "%s/vhd-chain-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("cannot create a temporary directory under %s: %s\n",
		       base && *base ? base : "/tmp", strerror(errno));
		return 77;
	}

	if (inflight) {
		run_inflight();
		snprintf(ctx, sizeof(ctx), "cleanup");
		cleanup_dir(); /* deterministic: nothing worth keeping */
		if (inflight_total) {
			printf("test_chain --inflight: FAIL (%u problems)\n", inflight_total);
			return 1;
		}
		printf("test_chain --inflight: PASS\n");
		return 0;
	}
	{
		/* random disk sizes: 8-40 MiB, mostly not block multiples */
		uint64_t r4k = rnd_in(8 * MiB / 512, 40 * MiB / 512) * 512;
		uint64_t r2m = rnd_in(24 * MiB / 512, 40 * MiB / 512) * 512;
		struct config cfgs[] = {
			{"bs4k", 4 * KiB, r4k | 512, {0}, 400},
			{"bs64k", 64 * KiB, 10 * MiB + 3 * 512, {0}, 400},
			{"bs2m", 2 * MiB, 10 * MiB + 3 * 512, {0}, 300},
			{"bs2m-big", 2 * MiB, r2m, {0}, 300},
			/* children with other block sizes than their parents */
			{"mixed", 64 * KiB, 12 * MiB + 7 * 512, {2 * MiB, 4 * KiB, 512, 64 * KiB, 1 * MiB}, 250},
		};

		for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
			run_config(&cfgs[i]);
	}
	snprintf(ctx, sizeof(ctx), "cleanup");
	cleanup_dir();
	printf("test_chain: PASS (seed %" PRIu64 ")\n", seed);
	return 0;
}
