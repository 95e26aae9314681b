/* test_resize.c - vhd_resize (Resize-VHD) against an in-memory reference.
 *
 * Content model: every test keeps the bytes the disk must show in a buffer
 * (the reference); whatever lies beyond the buffer must read as zeros.  Data
 * is written with vhd_pwrite (random offsets and lengths, plus the first and
 * last sectors and block boundaries) and mirrored into the reference.
 *
 * Functional cases (each followed by vhd_check with no warning or error):
 *   fixed:   grow (old footer bytes read as zeros), shrink refused naming the
 *            first non-zero sector, shrink over zeros, --discard, a dense
 *            (preallocated) disk stays dense, a sparse one sparse;
 *   dynamic: block sizes 512 B, 4 KiB, 64 KiB, 2 MiB; grows that extend the
 *            BAT in place and grows that relocate it (checked through
 *            table_offset); shrink refused / over zeros (blocks dropped, file
 *            given back) / --discard; grow after a discard shrink reads zeros
 *            where the cut block kept data; same-size resize is a no-op;
 *   differencing: grows past the parent (BAT relocated: locators follow it),
 *            shrink refused for the parent's data too, --discard, grow over a
 *            larger parent's data refused; the parent never changes;
 *   foreign: a last block stored short in the file is moved when the disk
 *            grows; spare BAT entries holding a leftover are cleared before
 *            a grow makes them part of the disk;
 *   refusals: saved state, damaged trailing footer, image in use, size 0 or
 *            beyond 2040 GiB, nothing written.
 *
 * Crash: for each scenario a child runs vhd_resize under ptrace; a first run
 * counts its modifying syscalls (pwrite, fdatasync, fsync, ftruncate,
 * fallocate), then one round per syscall kills the child with SIGKILL at the
 * entry of that syscall (so it never runs), on a fresh copy of the image.
 * Without ptrace (some containers), kills are timed at random.  After each
 * kill:
 *   - vhd_check reports no error, and at most the warnings an interrupted
 *     resize may leave (footer copy at offset 0 differs; fixed: footer beyond
 *     the data);
 *   - the disk opens and shows the old size with the old content or the new
 *     size with the new content (discard shrink: blocks beyond the new end
 *     may already be dropped, i.e. zero);
 *   - resizing again to the target succeeds and leaves a check-clean disk
 *     with the new content; a differencing disk's parent is unchanged.
 *
 * TEST_SEED=<n> replays; TEST_KEEP=1 keeps the temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "randtest.h"
#include "internal.h"
#include "ptrace_probe.h"

#define SECTOR 512u

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *P(const char *name)
{
	static char bufs[8][4200];
	static int i;

	i = (i + 1) % 8;
	snprintf(bufs[i], sizeof(bufs[i]), "%s/%s", tmpdir, name);
	return bufs[i];
}

/* ---- reference ------------------------------------------------------------- */

struct ref {
	uint8_t *b;
	uint64_t len;  /* bytes beyond read as zeros */
};

static void ref_reserve(struct ref *r, uint64_t len)
{
	if (len <= r->len)
		return;
	r->b = realloc(r->b, len);
	CHECK(r->b);
	memset(r->b + r->len, 0, len - r->len);
	r->len = len;
}

/* The disk after a resize to size: cut, or (nothing to do) zeros beyond. */
static void ref_cut(struct ref *r, uint64_t size)
{
	if (size < r->len)
		r->len = size;
}

static void ref_copy(struct ref *dst, const struct ref *src)
{
	dst->b = malloc(src->len ? src->len : 1);
	CHECK(dst->b);
	memcpy(dst->b, src->b, src->len);
	dst->len = src->len;
}

static uint8_t ref_at(const struct ref *r, uint64_t off)
{
	return off < r->len ? r->b[off] : 0;
}

static bool ref_zero(const struct ref *r, uint64_t off, uint64_t len)
{
	if (off >= r->len)
		return true;
	if (len > r->len - off)
		len = r->len - off;
	return vhd_buf_is_zero(r->b + off, len);
}

/* buf (len bytes read at off) against the reference: -1 equal, else the
 * index of the first difference. */
static int64_t ref_diff(const struct ref *r, const uint8_t *buf, uint64_t off, uint64_t len)
{
	uint64_t in = off < r->len ? (r->len - off < len ? r->len - off : len) : 0;

	if (in && memcmp(buf, r->b + off, in))
		for (uint64_t i = 0; i < in; i++)
			if (buf[i] != r->b[off + i])
				return (int64_t)i;
	if (in < len && !vhd_buf_is_zero(buf + in, len - in))
		for (uint64_t i = in; i < len; i++)
			if (buf[i])
				return (int64_t)i;
	return -1;
}

static struct vhd_image *open_img(const char *path, bool rw)
{
	struct vhd_open_opts o = {.flags = (rw ? VHD_OPEN_RDWR : 0) | VHD_OPEN_NO_LOCK};
	struct vhd_image *img;
	struct vhd_err err;
	int ret = vhd_open(path, &o, &img, &err);

	if (ret < 0)
		fail("vhd_open(%s, %s) = %s: %s", path, rw ? "rw" : "ro", strerror(-ret), err.msg);
	return img;
}

static void put(struct vhd_image *img, struct ref *r, uint64_t off, uint64_t len, int kind)
{
	uint8_t *buf = malloc(len);
	int ret;

	CHECK(buf);
	if (kind == 0)
		memset(buf, 0, len);
	else if (kind == 1)
		memset(buf, (int)rnd_in(1, 255), len);
	else
		for (uint64_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rnd64();
	ret = vhd_pwrite(img, buf, len, off);
	if (ret < 0)
		fail("vhd_pwrite(%" PRIu64 "+%" PRIu64 ") = %s", off, len, strerror(-ret));
	ref_reserve(r, off + len);
	memcpy(r->b + off, buf, len);
	free(buf);
}

/* Zeros over every 64 KiB piece of [from, to) where the reference has data
 * (the blocks stay allocated, now holding zeros). */
static void zero_data(const char *path, struct ref *r, uint64_t from, uint64_t to)
{
	struct vhd_image *img = open_img(path, true);
	const uint64_t g = 64 * 1024;

	for (uint64_t off = from; off < to && off < r->len;) {
		uint64_t end = (off / g + 1) * g < to ? (off / g + 1) * g : to;

		if (!ref_zero(r, off, end - off))
			put(img, r, off, end - off, 0);
		off = end;
	}
	CHECK(vhd_close(img) == 0);
}

/* Random writes over [lo, hi) of the disk, plus its edges. */
static void populate_range(const char *path, struct ref *r, uint64_t lo, uint64_t hi, unsigned n)
{
	struct vhd_image *img = open_img(path, true);
	uint64_t size = vhd_virtual_size(img), bs = img->block_size ? img->block_size : 65536;

	if (hi > size)
		hi = size;
	CHECK(lo < hi);
	ref_reserve(r, size);
	put(img, r, lo, SECTOR < hi - lo ? SECTOR : hi - lo, 2);
	put(img, r, hi - 1, 1, 1);
	put(img, r, hi - SECTOR - 700 > lo ? hi - SECTOR - 700 : lo, 600, 2);
	for (unsigned i = 0; i < n; i++) {
		uint64_t len = rnd_in(1, rnd(4) ? 20000 : 300000), off;

		if (len > hi - lo)
			len = hi - lo;
		off = lo + rnd(hi - lo - len + 1);
		if (rnd(3) == 0) { /* straddle a block boundary */
			uint64_t b = (off / bs + 1) * bs;

			if (b > lo + len / 2 && b - len / 2 + len <= hi)
				off = b - len / 2;
		}
		put(img, r, off, len, (int)rnd(3));
	}
	CHECK(vhd_close(img) == 0);
}

static void populate(const char *path, struct ref *r, unsigned n)
{
	struct vhd_image *img = open_img(path, false);
	uint64_t size = vhd_virtual_size(img);

	vhd_close(img);
	populate_range(path, r, 0, size, n);
}

/* The whole disk against the reference (zeros beyond it), read through
 * vhd_map so that large empty ranges cost nothing. */
static void verify(const char *path, const struct ref *r, uint64_t size, const char *what)
{
	struct vhd_image *img = open_img(path, false);
	const uint64_t chunk = 4 << 20;
	uint8_t *buf = malloc(chunk);
	uint64_t off = 0;

	CHECK(buf);
	if (vhd_virtual_size(img) != size)
		fail("%s: %s: virtual size %" PRIu64 ", expected %" PRIu64, what, path,
		     vhd_virtual_size(img), size);
	while (off < size) {
		struct vhd_extent e;
		int ret = vhd_map(img, off, size - off < chunk ? size - off : chunk, VHD_MAP_RESOLVE, &e);

		if (ret < 0)
			fail("%s: vhd_map(%" PRIu64 ") = %s", what, off, strerror(-ret));
		if (e.kind == VHD_EXT_DATA) {
			ret = pread_full(e.fd, buf, e.length, e.file_offset);
			if (ret < 0)
				fail("%s: read %" PRIu64 ": %s", what, off, strerror(-ret));
			{
				int64_t i = ref_diff(r, buf, off, e.length);

				if (i >= 0)
					fail("%s: %s: byte %" PRIu64 " is 0x%02x, expected 0x%02x", what,
					     path, off + (uint64_t)i, buf[i], ref_at(r, off + (uint64_t)i));
			}
		} else {
			CHECK(e.kind == VHD_EXT_ZERO);
			if (!ref_zero(r, off, e.length))
				fail("%s: %s: %" PRIu64 "+%" PRIu64 " reads as zeros, the reference has data",
				     what, path, off, e.length);
		}
		off += e.length;
	}
	free(buf);
	vhd_close(img);
}

/* Problems of severity >= warning; *benign when all are the warnings an
 * interrupted resize may leave. */
static size_t problems(const char *path, bool print, bool *benign)
{
	struct vhd_check_report rep;
	struct vhd_err err;
	size_t n;
	int ret = vhd_check(path, NULL, &rep, &err);

	if (ret < 0)
		fail("vhd_check(%s) = %s: %s", path, strerror(-ret), err.msg);
	n = vhd_check_count(&rep, VHD_SEV_WARNING);
	if (benign)
		*benign = true;
	for (size_t i = 0; i < rep.count; i++) {
		const struct vhd_problem *p = &rep.problems[i];

		if (p->severity < VHD_SEV_WARNING)
			continue;
		if (benign && (p->severity == VHD_SEV_ERROR ||
			       (strcmp(p->field, "footer copy") && strcmp(p->field, "current size"))))
			*benign = false;
		if (print)
			fprintf(stderr, "  %s: %s: %s: %s\n", vhd_severity_name(p->severity), p->file,
				p->field, p->msg);
	}
	vhd_check_report_free(&rep);
	return n;
}

static void expect_clean(const char *path, const char *what)
{
	if (problems(path, false, NULL)) {
		problems(path, true, NULL);
		fail("%s: vhd_check(%s) is not clean", what, path);
	}
}

static int resize(const char *path, uint64_t size, bool discard, struct vhd_resize_result *res,
		  struct vhd_err *err)
{
	return vhd_resize(path, size, discard, NULL, res, err);
}

static void resize_ok(const char *path, uint64_t size, bool discard, const char *what)
{
	struct vhd_resize_result res;
	struct vhd_err err;
	int ret = resize(path, size, discard, &res, &err);

	if (ret < 0)
		fail("%s: vhd_resize(%s, %" PRIu64 "%s) = %s: %s", what, path, size,
		     discard ? ", discard" : "", strerror(-ret), err.msg);
	CHECK(res.new_size == (size + SECTOR - 1) / SECTOR * SECTOR);
}

static void info_of(const char *path, struct vhd_info *info)
{
	struct vhd_image *img = open_img(path, false);

	vhd_get_info(img, info);
	vhd_close(img);
}

static uint8_t *slurp(const char *path, uint64_t *len)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY);

	CHECK(fd >= 0 && fstat(fd, &st) == 0);
	b = malloc((size_t)st.st_size + 1);
	CHECK(b && pread_full(fd, b, (size_t)st.st_size, 0) == 0);
	close(fd);
	*len = (uint64_t)st.st_size;
	return b;
}

/* Sparse copy (holes stay holes). */
static void copy_file(const char *from, const char *to)
{
	int a = open(from, O_RDONLY), b = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	uint8_t *buf = malloc(1 << 20);
	struct stat st;
	off_t pos = 0;

	CHECK(a >= 0 && b >= 0 && buf && fstat(a, &st) == 0);
	CHECK(ftruncate(b, st.st_size) == 0);
	while (pos < st.st_size) {
		off_t d = lseek(a, pos, SEEK_DATA), h;

		if (d < 0)
			break;
		h = lseek(a, d, SEEK_HOLE);
		for (pos = d; pos < h;) {
			size_t n = h - pos < (1 << 20) ? (size_t)(h - pos) : (1 << 20);

			CHECK(pread_full(a, buf, n, (uint64_t)pos) == 0);
			CHECK(pwrite_full(b, buf, n, (uint64_t)pos) == 0);
			pos += (off_t)n;
		}
	}
	free(buf);
	close(a);
	close(b);
}

static void create(const char *path, enum vhd_type type, uint64_t size, uint32_t bs,
		   const char *parent, bool prealloc)
{
	struct vhd_create_opts o = {.type = type, .size = size, .block_size = bs, .parent = parent,
				    .overwrite = true, .preallocate = prealloc};
	struct vhd_err err;
	int ret = vhd_create(path, &o, &err);

	if (ret < 0)
		fail("vhd_create(%s) = %s: %s", path, strerror(-ret), err.msg);
}

/* ---- functional cases ------------------------------------------------------ */

static void test_fixed(void)
{
	const char *f = P("fixed.vhd");
	struct ref r = {0};
	struct vhd_resize_result res;
	struct vhd_err err;
	struct stat st;
	uint64_t s0 = 16 * MiB + 3 * SECTOR, s1 = 40 * MiB + 7 * SECTOR, s2 = 12 * MiB;
	uint64_t first = 0;

	snprintf(ctx, sizeof(ctx), "fixed");
	create(f, VHD_TYPE_FIXED, s0, 0, NULL, false);
	populate(f, &r, 40);
	resize_ok(f, s1, false, "fixed grow");
	verify(f, &r, s1, "fixed grow"); /* the old footer's bytes read as zeros */
	expect_clean(f, "fixed grow");
	CHECK(stat(f, &st) == 0 && (uint64_t)st.st_size == s1 + SECTOR);
	CHECK((uint64_t)st.st_blocks * 512 < 4 * MiB); /* still sparse */

	/* shrink over data: refused, nothing changes, the first non-zero sector named */
	for (uint64_t i = s2; i < r.len; i++)
		if (r.b[i]) {
			first = i / SECTOR * SECTOR;
			break;
		}
	CHECK(first);
	CHECK(resize(f, s2, false, &res, &err) == -ENOTEMPTY);
	CHECK(res.first_allocated_beyond == first);
	CHECK(strstr(err.msg, "non-zero data at offset"));
	verify(f, &r, s1, "fixed refused shrink");
	expect_clean(f, "fixed refused shrink");

	/* zero the tail, then the shrink goes through */
	{
		struct vhd_image *img = open_img(f, true);

		put(img, &r, s2, s1 - s2, 0);
		vhd_close(img);
	}
	resize_ok(f, s2 + SECTOR, false, "fixed shrink");
	ref_cut(&r, s2 + SECTOR);
	verify(f, &r, s2 + SECTOR, "fixed shrink");
	expect_clean(f, "fixed shrink");
	CHECK(stat(f, &st) == 0 && (uint64_t)st.st_size == s2 + 2 * SECTOR);

	/* --discard */
	populate(f, &r, 10);
	resize_ok(f, 5 * MiB + SECTOR, true, "fixed discard");
	ref_cut(&r, 5 * MiB + SECTOR);
	verify(f, &r, 5 * MiB + SECTOR, "fixed discard");
	expect_clean(f, "fixed discard");
	resize_ok(f, 9 * MiB, false, "fixed regrow");
	verify(f, &r, 9 * MiB, "fixed regrow");

	/* same size: nothing changes */
	resize_ok(f, 9 * MiB, false, "fixed same size");
	verify(f, &r, 9 * MiB, "fixed same size");
	expect_clean(f, "fixed same size");
	free(r.b);

	/* a preallocated disk stays dense */
	snprintf(ctx, sizeof(ctx), "fixed preallocated");
	f = P("dense.vhd");
	memset(&r, 0, sizeof(r));
	create(f, VHD_TYPE_FIXED, 4 * MiB, 0, NULL, true);
	populate(f, &r, 5);
	resize_ok(f, 12 * MiB, false, "dense grow");
	verify(f, &r, 12 * MiB, "dense grow");
	expect_clean(f, "dense grow");
	CHECK(stat(f, &st) == 0 && (uint64_t)st.st_blocks * 512 >= 12 * MiB);
	free(r.b);
	printf("fixed: grow, refused shrink, shrink, discard, dense: ok\n");
}

static void test_dynamic_bs(uint32_t bs)
{
	const char *f = P("dyn.vhd");
	struct ref r = {0};
	struct vhd_resize_result res;
	struct vhd_info a, b;
	struct vhd_err err;
	struct stat st;
	uint64_t s0 = 8 * MiB + 5 * SECTOR, big, cut;

	snprintf(ctx, sizeof(ctx), "dynamic bs %u", bs);
	create(f, VHD_TYPE_DYNAMIC, s0, bs, NULL, false);
	populate(f, &r, 30);
	expect_clean(f, "dynamic populate");

	/* a small grow: the BAT's sector padding or the space after it */
	info_of(f, &a);
	resize_ok(f, s0 + bs + 3 * SECTOR, false, "small grow");
	verify(f, &r, s0 + bs + 3 * SECTOR, "small grow");
	expect_clean(f, "small grow");
	info_of(f, &b);
	CHECK(b.max_table_entries == (s0 + bs + 3 * SECTOR + bs - 1) / bs);

	/* a big grow: the BAT cannot stay (blocks follow it): relocated */
	big = bs >= 64 * 1024 ? 1024 * MiB + 3 * SECTOR : 96 * MiB;
	resize_ok(f, big, false, "big grow");
	verify(f, &r, big, "big grow");
	expect_clean(f, "big grow");
	info_of(f, &b);
	CHECK(b.max_table_entries == (big + bs - 1) / bs);
	if (4ull * b.max_table_entries > 2048 + 4096)
		CHECK(b.table_offset != a.table_offset);
	/* writes after the grow land beyond the relocated BAT */
	populate_range(f, &r, s0 - 4096, big, 20);
	verify(f, &r, big, "writes after grow");
	expect_clean(f, "writes after grow");

	/* shrink over data: refused with the first non-zero sector */
	cut = s0 / 2 / SECTOR * SECTOR + SECTOR;
	{
		uint64_t first = 0;

		for (uint64_t i = cut; i < r.len; i++)
			if (r.b[i]) {
				first = i / SECTOR * SECTOR;
				break;
			}
		CHECK(resize(f, cut, false, &res, &err) == -ENOTEMPTY);
		CHECK(res.first_allocated_beyond == first);
	}
	verify(f, &r, big, "refused shrink");

	/* zeros beyond: the shrink drops the blocks and gives back the tail */
	zero_data(f, &r, cut, big);
	CHECK(stat(f, &st) == 0);
	resize_ok(f, cut, false, "shrink over zeros");
	ref_cut(&r, cut);
	verify(f, &r, cut, "shrink over zeros");
	expect_clean(f, "shrink over zeros");
	{
		struct stat st2;

		CHECK(stat(f, &st2) == 0 && st2.st_size < st.st_size);
	}
	info_of(f, &b);
	CHECK(b.max_table_entries == (cut + bs - 1) / bs);

	/* discard: data beyond goes; the part of the cut block beyond the end
	 * must not come back on the next grow */
	populate(f, &r, 20);
	cut = cut / 2 / SECTOR * SECTOR + 3 * SECTOR;
	resize_ok(f, cut, true, "discard shrink");
	ref_cut(&r, cut);
	verify(f, &r, cut, "discard shrink");
	expect_clean(f, "discard shrink");
	resize_ok(f, s0, false, "grow after discard");
	verify(f, &r, s0, "grow after discard");
	expect_clean(f, "grow after discard");

	/* same size */
	resize_ok(f, s0, false, "same size");
	verify(f, &r, s0, "same size");
	expect_clean(f, "same size");
	free(r.b);
	printf("dynamic, %u-byte blocks: grow in place and relocated, shrink, discard: ok\n", bs);
}

/* The brief's example: 64 MiB in 2 MiB blocks (32 entries in one BAT sector).
 * 512 MiB (1 KiB of BAT) fits before the first block's bitmap at 3584; 2 GiB
 * (4 KiB of BAT) does not. */
static void test_dynamic_layout(void)
{
	const char *f = P("layout.vhd");
	struct ref r = {0};
	struct vhd_info a, b;

	snprintf(ctx, sizeof(ctx), "dynamic layout");
	create(f, VHD_TYPE_DYNAMIC, 64 * MiB, 2 * MiB, NULL, false);
	populate(f, &r, 20);
	info_of(f, &a);
	CHECK(a.table_offset == 1536 && a.max_table_entries == 32);
	resize_ok(f, 512 * MiB, false, "64M->512M");
	info_of(f, &b);
	CHECK(b.table_offset == 1536 && b.max_table_entries == 256);
	verify(f, &r, 512 * MiB, "64M->512M");
	expect_clean(f, "64M->512M");
	resize_ok(f, 2048 * MiB, false, "512M->2G");
	info_of(f, &b);
	CHECK(b.table_offset != 1536 && b.table_offset % 4096 == 0 && b.max_table_entries == 1024);
	verify(f, &r, 2048 * MiB, "512M->2G");
	expect_clean(f, "512M->2G");
	/* an empty disk: the footer follows the BAT; a grow past the padding relocates */
	f = P("empty.vhd");
	free(r.b);
	memset(&r, 0, sizeof(r));
	create(f, VHD_TYPE_DYNAMIC, 64 * MiB, 2 * MiB, NULL, false);
	resize_ok(f, 1024 * MiB, false, "empty grow");
	verify(f, &r, 1024 * MiB, "empty grow");
	expect_clean(f, "empty grow");
	populate(f, &r, 20);
	verify(f, &r, 1024 * MiB, "empty grow then writes");
	expect_clean(f, "empty grow then writes");
	free(r.b);
	printf("dynamic layout: 64M->512M in place, ->2G relocated, empty disk: ok\n");
}

static void test_differencing(void)
{
	const char *base = P("base.vhd"), *child = P("child.vhd");
	struct ref r = {0};
	struct vhd_resize_result res;
	struct vhd_err err;
	struct vhd_info a, b;
	uint8_t *before, *after;
	uint64_t blen, alen, ps = 32 * MiB;

	snprintf(ctx, sizeof(ctx), "differencing");
	create(base, VHD_TYPE_DYNAMIC, ps, 512 * 1024, NULL, false);
	populate(base, &r, 30);
	create(child, VHD_TYPE_DIFF, 0, 0, base, false);
	populate(child, &r, 30);
	before = slurp(base, &blen);
	info_of(child, &a);

	resize_ok(child, 100 * MiB + SECTOR, false, "diff grow");
	verify(child, &r, 100 * MiB + SECTOR, "diff grow");
	expect_clean(child, "diff grow");
	info_of(child, &b);
	CHECK(b.table_offset != a.table_offset); /* locators follow the BAT */
	populate_range(child, &r, ps - 8192, 100 * MiB + SECTOR, 20);
	verify(child, &r, 100 * MiB + SECTOR, "diff writes past the parent");
	expect_clean(child, "diff writes past the parent");

	/* shrink below the parent's data: refused even where only the parent has it */
	zero_data(child, &r, ps, 100 * MiB + SECTOR);
	CHECK(resize(child, ps - 4 * MiB, false, &res, &err) == -ENOTEMPTY);
	CHECK(res.first_allocated_beyond >= ps - 4 * MiB);
	resize_ok(child, ps, false, "diff shrink to the parent's size");
	ref_cut(&r, ps);
	verify(child, &r, ps, "diff shrink");
	expect_clean(child, "diff shrink");

	/* discard: the child is cut, the parent keeps its data */
	resize_ok(child, ps - 4 * MiB, true, "diff discard");
	ref_cut(&r, ps - 4 * MiB);
	verify(child, &r, ps - 4 * MiB, "diff discard");
	expect_clean(child, "diff discard");

	/* growing back would show the parent's data: refused */
	CHECK(resize(child, ps, false, &res, &err) == -ENOTEMPTY);
	CHECK(strstr(err.msg, "parent"));
	verify(child, &r, ps - 4 * MiB, "diff refused grow");

	after = slurp(base, &alen);
	CHECK(blen == alen && !memcmp(before, after, blen));
	free(before);
	free(after);
	free(r.b);
	printf("differencing: grow past the parent, shrink, discard, parent unchanged: ok\n");
}

/* A foreign layout: the last block stored only as far as the disk uses it,
 * the footer right after.  Growing must move the block. */
static void test_short_block(void)
{
	const char *f = P("short.vhd");
	struct ref r = {0};
	struct vhd_image *img;
	uint64_t size = 3 * MiB, off, pos;
	uint8_t foot[SECTOR];
	int fd;

	snprintf(ctx, sizeof(ctx), "short last block");
	create(f, VHD_TYPE_DYNAMIC, size, 2 * MiB, NULL, false);
	populate(f, &r, 10);
	img = open_img(f, false);
	CHECK(img->bat[1] != VHD_BAT_UNUSED);
	off = block_file_offset(img, 1);
	CHECK(off + SECTOR + 2 * MiB == img->footer_pos); /* the last thing in the file */
	pos = off + SECTOR + 1 * MiB;                        /* keep what the disk uses */
	CHECK(pread_full(img->fd, foot, SECTOR, img->footer_pos) == 0);
	vhd_close(img);
	fd = open(f, O_RDWR);
	CHECK(fd >= 0 && pwrite_full(fd, foot, SECTOR, pos) == 0 && ftruncate(fd, (off_t)(pos + SECTOR)) == 0);
	close(fd);
	expect_clean(f, "short block image");
	verify(f, &r, size, "short block image");
	resize_ok(f, 8 * MiB, false, "short block grow");
	verify(f, &r, 8 * MiB, "short block grow");
	expect_clean(f, "short block grow");
	populate(f, &r, 10);
	verify(f, &r, 8 * MiB, "short block then writes");
	expect_clean(f, "short block then writes");
	free(r.b);
	printf("short last block moved on grow: ok\n");
}

/* A foreign BAT with spare entries past the disk's blocks, one of them not
 * unused (a leftover: readers warn and ignore it).  A grow that makes those
 * entries part of the disk must clear the leftover first (else old bytes
 * would show), and the entry count ends equal to the block count. */
static void test_spare_entries(void)
{
	const char *f = P("spare.vhd");
	struct ref r = {0};
	struct vhd_image *img;
	struct vhd_info info;
	uint8_t hdr[VHD_DYNHDR_SIZE], e[4];
	struct vhd_dynhdr h;
	bool benign;
	int fd;

	snprintf(ctx, sizeof(ctx), "spare BAT entries");
	for (int round = 0; round < 2; round++) {
		uint64_t target = round ? 10 * MiB : 12 * MiB;

		memset(&r, 0, sizeof(r));
		create(f, VHD_TYPE_DYNAMIC, 8 * MiB, 2 * MiB, NULL, false); /* 4 entries */
		populate(f, &r, 10);
		img = open_img(f, false);
		fd = open(f, O_RDWR);
		CHECK(fd >= 0 && pread_full(fd, hdr, sizeof(hdr), 512) == 0);
		vhd_dynhdr_decode(hdr, &h);
		h.max_table_entries = 6;
		vhd_dynhdr_encode(&h, hdr);
		CHECK(pwrite_full(fd, hdr, sizeof(hdr), 512) == 0);
		/* BAT[5] = the data of block 0: non-zero bytes if it were used */
		vhd_put_be32(e, img->bat[0] != VHD_BAT_UNUSED ? img->bat[0] : 8);
		CHECK(pwrite_full(fd, e, 4, h.table_offset + 4 * 5) == 0);
		close(fd);
		vhd_close(img);
		CHECK(problems(f, false, &benign) == 1); /* the leftover's warning */
		resize_ok(f, target, false, "grow over spare entries");
		verify(f, &r, target, "grow over spare entries");
		expect_clean(f, "grow over spare entries");
		info_of(f, &info);
		CHECK(info.max_table_entries == target / (2 * MiB));
		free(r.b);
	}
	printf("spare BAT entries with a leftover: cleared before they become visible: ok\n");
}

static void set_saved_state(const char *path)
{
	struct vhd_image *img = open_img(path, false);
	struct vhd_footer ft = img->footer;
	uint64_t tail = img->footer_pos;
	bool dyn = ft.disk_type != VHD_TYPE_FIXED;
	uint8_t buf[SECTOR];
	int fd;

	vhd_close(img);
	ft.saved_state = 1;
	vhd_footer_encode(&ft, buf);
	fd = open(path, O_RDWR);
	CHECK(fd >= 0 && pwrite_full(fd, buf, SECTOR, tail) == 0);
	if (dyn)
		CHECK(pwrite_full(fd, buf, SECTOR, 0) == 0);
	close(fd);
}

static void test_refusals(void)
{
	const char *f = P("refuse.vhd"), *g = P("fixedss.vhd");
	struct vhd_resize_result res;
	struct vhd_err err;
	struct vhd_image *holder;
	uint8_t *before, *after;
	uint64_t blen, alen;
	int fd, ret;

	snprintf(ctx, sizeof(ctx), "refusals");
	create(f, VHD_TYPE_DYNAMIC, 8 * MiB, 0, NULL, false);
	create(g, VHD_TYPE_FIXED, 8 * MiB, 0, NULL, false);
	set_saved_state(f);
	set_saved_state(g);
	for (int i = 0; i < 2; i++) {
		const char *p = i ? g : f;

		before = slurp(p, &blen);
		ret = resize(p, 16 * MiB, false, &res, &err);
		if (ret != -EBUSY || !strstr(err.msg, "saved state"))
			fail("saved state: vhd_resize = %s: %s", strerror(-ret), err.msg);
		after = slurp(p, &alen);
		CHECK(blen == alen && !memcmp(before, after, blen));
		free(before);
		free(after);
	}

	/* damaged trailing footer (the copy at 0 is sound): repair first */
	create(f, VHD_TYPE_DYNAMIC, 8 * MiB, 0, NULL, false);
	{
		struct stat st;

		CHECK(stat(f, &st) == 0);
		fd = open(f, O_RDWR);
		CHECK(fd >= 0 && pwrite_full(fd, "X", 1, (uint64_t)st.st_size - SECTOR + 40) == 0);
		close(fd);
	}
	ret = resize(f, 16 * MiB, false, &res, &err);
	if (ret != -EROFS)
		fail("damaged footer: vhd_resize = %s: %s", strerror(-ret), err.msg);

	/* in use by another writer */
	create(f, VHD_TYPE_DYNAMIC, 8 * MiB, 0, NULL, false);
	{
		struct vhd_open_opts o = {.flags = VHD_OPEN_RDWR};

		CHECK(vhd_open(f, &o, &holder, &err) == 0);
	}
	ret = resize(f, 16 * MiB, false, &res, &err);
	if (ret != -EBUSY)
		fail("in use: vhd_resize = %s: %s", strerror(-ret), err.msg);
	vhd_close(holder);

	/* sizes */
	CHECK(resize(f, 0, false, &res, &err) == -EINVAL);
	CHECK(resize(f, VHD_MAX_SIZE + 1, false, &res, &err) == -EFBIG);
	resize_ok(f, VHD_MAX_SIZE, false, "2040 GiB");
	expect_clean(f, "2040 GiB");
	resize_ok(f, 1000, false, "back to 1000 bytes");
	expect_clean(f, "1000 bytes");
	CHECK(resize(f, 1000, false, &res, &err) == 0 && res.new_size == 1024);
	printf("refusals: saved state, damaged footer, in use, sizes: ok\n");
}

/* ---- crash ------------------------------------------------------------------ */

struct scenario {
	const char *name;
	char base[4200];
	char parent[4200];   /* differencing: must never change */
	uint8_t *parent_bytes;
	uint64_t parent_len;
	struct ref old;      /* content at the old size */
	uint64_t old_size, new_size;
	uint32_t bs;         /* dynamic: for the discard rule */
	bool discard;
	int relocate;        /* the BAT must move (1), stay (0), don't care (-1) */
};

/* After a complete run: did the BAT move as the scenario intends? */
static void check_relocation(const struct scenario *s, const char *work)
{
	struct vhd_info a, b;

	if (s->relocate < 0)
		return;
	info_of(s->base, &a);
	info_of(work, &b);
	if ((a.table_offset != b.table_offset) != (s->relocate == 1))
		fail("%s: the BAT %s (table offset %" PRIu64 " -> %" PRIu64 ")", s->name,
		     s->relocate ? "was expected to move" : "was expected to stay", a.table_offset,
		     b.table_offset);
}

struct crash_stats {
	unsigned rounds, old_seen, new_seen, warned, rerun_needed;
};

static bool have_ptrace;

static void probe_ptrace(void)
{
	have_ptrace = ptrace_available();
}

static pid_t spawn(const struct scenario *s, const char *work, bool traced)
{
	pid_t pid = fork();

	CHECK(pid >= 0);
	if (pid == 0) {
		struct vhd_resize_result res;
		struct vhd_err err;
		int ret;

		if (traced) {
			if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
				_exit(5);
			raise(SIGSTOP);
		}
		ret = vhd_resize(work, s->new_size, s->discard, NULL, &res, &err);
		if (ret < 0)
			fprintf(stderr, "child: vhd_resize = %s: %s\n", strerror(-ret), err.msg);
		_exit(ret < 0 ? 3 : 0);
	}
	return pid;
}

/* Runs the traced child and kills it at the entry of its target-th
 * modifying syscall (0: never).  Returns how many it saw; *done when the
 * child finished on its own. */
static unsigned run_traced(pid_t pid, unsigned target, bool *done)
{
	unsigned count = 0;
	int status, sig = 0;

	*done = false;
	CHECK(waitpid(pid, &status, 0) == pid && WIFSTOPPED(status));
	if (ptrace(PTRACE_SETOPTIONS, pid, NULL,
		   (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) < 0)
		fail("ptrace(SETOPTIONS): %s", strerror(errno));
	for (;;) {
		struct __ptrace_syscall_info info;

		if (ptrace(PTRACE_SYSCALL, pid, NULL, (void *)(long)sig) < 0)
			fail("ptrace(SYSCALL): %s", strerror(errno));
		sig = 0;
		CHECK(waitpid(pid, &status, 0) == pid);
		if (WIFEXITED(status)) {
			if (WEXITSTATUS(status) != 0)
				fail("the resize child failed on its own (exit %d)", WEXITSTATUS(status));
			*done = true;
			return count;
		}
		if (!WIFSTOPPED(status))
			fail("the resize child ended (status 0x%x)", status);
		if (WSTOPSIG(status) != (SIGTRAP | 0x80)) {
			sig = WSTOPSIG(status);
			continue;
		}
		memset(&info, 0, sizeof(info));
		if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof(info), &info) <= 0)
			fail("ptrace(GET_SYSCALL_INFO): %s", strerror(errno));
		if (info.op != PTRACE_SYSCALL_INFO_ENTRY)
			continue;
		switch (info.entry.nr) {
		case SYS_write: case SYS_pwrite64: case SYS_pwritev: case SYS_writev:
		case SYS_fdatasync: case SYS_fsync: case SYS_ftruncate: case SYS_fallocate:
			break;
		default:
			continue;
		}
		if (++count == target) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return count;
		}
	}
}

/* Content the disk may show at the old size: the reference, except that a
 * discard shrink may already have dropped blocks wholly beyond the new end. */
static void verify_old(const struct scenario *s, const char *work)
{
	struct ref r;

	if (!s->discard) {
		verify(work, &s->old, s->old_size, "after kill, old size");
		return;
	}
	/* each dropped block is either still there or zero: compare block-wise */
	ref_copy(&r, &s->old);
	{
		struct vhd_image *img = open_img(work, false);
		uint8_t *buf = malloc(s->bs);
		uint64_t first = (s->new_size + s->bs - 1) / s->bs * s->bs;

		CHECK(buf && vhd_virtual_size(img) == s->old_size);
		for (uint64_t off = first; off < s->old_size; off += s->bs) {
			uint64_t len = s->old_size - off < s->bs ? s->old_size - off : s->bs;

			CHECK(vhd_pread(img, buf, len, off) == 0);
			if (vhd_buf_is_zero(buf, len) && off < r.len)
				memset(r.b + off, 0, len < r.len - off ? len : r.len - off);
		}
		free(buf);
		vhd_close(img);
	}
	verify(work, &r, s->old_size, "after kill, old size (discard)");
	free(r.b);
}

static void evaluate(struct scenario *s, const char *work, struct crash_stats *st)
{
	struct ref nr;
	struct vhd_image *img;
	uint64_t size;
	bool benign;
	size_t n = problems(work, false, &benign);

	if (n && !benign) {
		problems(work, true, NULL);
		fail("after the kill: check reports problems a resize must never leave");
	}
	st->warned += n > 0;
	img = open_img(work, false);
	size = vhd_virtual_size(img);
	vhd_close(img);
	ref_copy(&nr, &s->old);
	ref_cut(&nr, s->new_size);
	if (size == s->old_size && size != s->new_size) {
		verify_old(s, work);
		st->old_seen++;
	} else if (size == s->new_size) {
		verify(work, &nr, s->new_size, "after kill, new size");
		st->new_seen++;
	} else {
		fail("after the kill the disk is %" PRIu64 " bytes: neither old %" PRIu64 " nor new %" PRIu64,
		     size, s->old_size, s->new_size);
	}
	/* finishing: the same resize again */
	resize_ok(work, s->new_size, s->discard, "re-run after kill");
	expect_clean(work, "re-run after kill");
	verify(work, &nr, s->new_size, "re-run after kill");
	st->rerun_needed += n > 0;
	if (s->parent_bytes) {
		uint64_t len;
		uint8_t *now = slurp(s->parent, &len);

		if (len != s->parent_len || memcmp(now, s->parent_bytes, len))
			fail("the parent %s changed", s->parent);
		free(now);
	}
	free(nr.b);
	st->rounds++;
}

static void crash_scenario(struct scenario *s)
{
	const char *work = P("work.vhd");
	struct crash_stats st = {0};
	unsigned total = 0, rounds;
	double t0 = now_s(), dur = 0.01;
	bool done;

	snprintf(ctx, sizeof(ctx), "crash %s", s->name);
	expect_clean(s->base, "scenario base");
	verify(s->base, &s->old, s->old_size, "scenario base");
	if (s->parent[0]) {
		s->parent_bytes = slurp(s->parent, &s->parent_len);
	}
	if (have_ptrace) {
		/* count, then kill at every one of them */
		copy_file(s->base, work);
		total = run_traced(spawn(s, work, true), 0, &done);
		CHECK(done);
		check_relocation(s, work);
		evaluate(s, work, &st);
		rounds = total;
		for (unsigned k = 1; k <= rounds; k++) {
			copy_file(s->base, work);
			snprintf(ctx, sizeof(ctx), "crash %s, kill at modifying syscall %u of %u", s->name, k, total);
			run_traced(spawn(s, work, true), k, &done);
			CHECK(!done);
			evaluate(s, work, &st);
		}
	}
	/* timed kills (the only kind without ptrace) */
	{
		double t = now_s();
		pid_t pid;
		int status;

		copy_file(s->base, work);
		pid = spawn(s, work, false);
		CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
		dur = now_s() - t;
		check_relocation(s, work);
		evaluate(s, work, &st);
	}
	rounds = have_ptrace ? 8 : 30;
	for (unsigned i = 0; i < rounds; i++) {
		pid_t pid;
		int status;
		useconds_t delay = (useconds_t)rnd((uint64_t)(dur * 1.2e6) + 1);

		copy_file(s->base, work);
		snprintf(ctx, sizeof(ctx), "crash %s, timed kill after %u us", s->name, (unsigned)delay);
		pid = spawn(s, work, false);
		usleep(delay);
		kill(pid, SIGKILL);
		CHECK(waitpid(pid, &status, 0) == pid);
		evaluate(s, work, &st);
	}
	printf("crash %-28s %3u rounds (%u modifying syscalls): old size %u, new size %u, "
	       "warned %u (fixed by re-run), %.1f s\n",
	       s->name, st.rounds, total, st.old_seen, st.new_seen, st.warned, now_s() - t0);
	free(s->parent_bytes);
	s->parent_bytes = NULL;
	free(s->old.b);
	memset(&s->old, 0, sizeof(s->old));
}

static void scenario_dynamic(const char *name, uint64_t size, uint32_t bs, uint64_t new_size,
			     bool discard, bool zero_tail, int relocate)
{
	struct scenario s = {.name = name, .old_size = size, .new_size = new_size, .bs = bs,
			     .discard = discard, .relocate = relocate};

	snprintf(s.base, sizeof(s.base), "%s", P("crash-base.vhd"));
	snprintf(ctx, sizeof(ctx), "crash %s setup", name);
	create(s.base, VHD_TYPE_DYNAMIC, size, bs, NULL, false);
	populate(s.base, &s.old, 30);
	if (zero_tail) { /* allocated but zero beyond the new end: dropped by the shrink */
		struct vhd_image *img = open_img(s.base, true);

		put(img, &s.old, new_size, size - new_size, 0);
		vhd_close(img);
	}
	crash_scenario(&s);
}

static void scenario_fixed(const char *name, uint64_t size, uint64_t new_size, bool zero_tail)
{
	struct scenario s = {.name = name, .old_size = size, .new_size = new_size, .relocate = -1};

	snprintf(s.base, sizeof(s.base), "%s", P("crash-base.vhd"));
	snprintf(ctx, sizeof(ctx), "crash %s setup", name);
	create(s.base, VHD_TYPE_FIXED, size, 0, NULL, false);
	populate(s.base, &s.old, 30);
	if (zero_tail)
		zero_data(s.base, &s.old, new_size, size);
	crash_scenario(&s);
}

static void scenario_diff(void)
{
	struct scenario s = {.name = "differencing grow (relocate)", .old_size = 32 * MiB,
			     .new_size = 100 * MiB, .relocate = 1};

	snprintf(s.base, sizeof(s.base), "%s", P("crash-child.vhd"));
	snprintf(s.parent, sizeof(s.parent), "%s", P("crash-parent.vhd"));
	snprintf(ctx, sizeof(ctx), "crash differencing setup");
	/* 512 KiB blocks: 64 entries fill the BAT's sector, locators follow */
	create(s.parent, VHD_TYPE_DYNAMIC, 32 * MiB, 512 * 1024, NULL, false);
	populate(s.parent, &s.old, 20);
	create(s.base, VHD_TYPE_DIFF, 0, 0, s.parent, false);
	populate(s.base, &s.old, 20);
	crash_scenario(&s);
}

/* A discard shrink leaves the cut block's tail data in the file; the grow
 * that follows must wipe it before the size switch. */
static void scenario_regrow(void)
{
	struct scenario s = {.name = "dynamic regrow (scrub tail)", .bs = 2 * MiB, .relocate = 0};
	uint64_t big = 64 * MiB, cut = 63 * MiB + 5 * SECTOR;

	snprintf(s.base, sizeof(s.base), "%s", P("crash-base.vhd"));
	snprintf(ctx, sizeof(ctx), "crash regrow setup");
	create(s.base, VHD_TYPE_DYNAMIC, big, 2 * MiB, NULL, false);
	populate(s.base, &s.old, 30);
	resize_ok(s.base, cut, true, "regrow setup");
	ref_cut(&s.old, cut);
	s.old_size = cut;
	s.new_size = 80 * MiB;
	crash_scenario(&s);
}

static void scenario_short(void)
{
	struct scenario s = {.name = "short last block grow", .old_size = 3 * MiB,
			     .new_size = 9 * MiB, .bs = 2 * MiB, .relocate = 0};
	struct vhd_image *img;
	uint8_t foot[SECTOR];
	uint64_t pos;
	int fd;

	snprintf(s.base, sizeof(s.base), "%s", P("crash-base.vhd"));
	snprintf(ctx, sizeof(ctx), "crash short setup");
	create(s.base, VHD_TYPE_DYNAMIC, 3 * MiB, 2 * MiB, NULL, false);
	populate(s.base, &s.old, 10);
	img = open_img(s.base, false);
	pos = block_file_offset(img, 1) + SECTOR + 1 * MiB;
	CHECK(pread_full(img->fd, foot, SECTOR, img->footer_pos) == 0);
	vhd_close(img);
	fd = open(s.base, O_RDWR);
	CHECK(fd >= 0 && pwrite_full(fd, foot, SECTOR, pos) == 0 && ftruncate(fd, (off_t)(pos + SECTOR)) == 0);
	close(fd);
	crash_scenario(&s);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

int main(int argc, char **argv)
{
	const char *env = getenv("TEST_SEED");
	double t0 = now_s();

	(void)argc;
	(void)argv;
	seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
	rng = seed;
	printf("test_resize: seed %" PRIu64 " (replay with TEST_SEED=%" PRIu64 ")\n", seed, seed);
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_resize.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	test_fixed();
	test_dynamic_bs(512);
	test_dynamic_bs(4096);
	test_dynamic_bs(64 * 1024);
	test_dynamic_bs(2 * 1024 * 1024);
	test_dynamic_layout();
	test_differencing();
	test_short_block();
	test_spare_entries();
	test_refusals();

	probe_ptrace();
	if (!have_ptrace)
		printf("ptrace is not available here: crash rounds use timed kills only\n");
	scenario_dynamic("dynamic grow (relocate BAT)", 64 * MiB, 2 * MiB, 2048 * MiB, false, false, 1);
	scenario_dynamic("dynamic grow (BAT in place)", 64 * MiB, 2 * MiB, 512 * MiB, false, false, 0);
	scenario_dynamic("dynamic shrink (drop zeros)", 64 * MiB, 2 * MiB, 40 * MiB + 3 * SECTOR, false, true, 0);
	scenario_dynamic("dynamic shrink --discard", 64 * MiB, 2 * MiB, 40 * MiB + 3 * SECTOR, true, false, 0);
	scenario_dynamic("dynamic 64K grow (relocate)", 16 * MiB, 64 * 1024, 96 * MiB, false, false, 1);
	scenario_regrow();
	scenario_fixed("fixed grow", 16 * MiB + SECTOR, 40 * MiB + 3 * SECTOR, false);
	scenario_fixed("fixed shrink", 40 * MiB + 3 * SECTOR, 16 * MiB + SECTOR, true);
	scenario_diff();
	scenario_short();

	if (getenv("TEST_KEEP") && !strcmp(getenv("TEST_KEEP"), "1"))
		printf("kept %s\n", tmpdir);
	else
		nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	printf("test_resize: PASS (%.1f s)\n", now_s() - t0);
	return 0;
}
