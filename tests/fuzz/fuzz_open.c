/* fuzz_open.c - libFuzzer target: an untrusted file through the opener, the
 * mapper, the reader and the checker, plus the buffer decoders.
 *
 * Built as `fuzz_open` when -DFUZZ=ON; the same LLVMFuzzerTestOneInput is
 * linked into test_fuzz_regressions, which replays fixtures/fuzz/ in every
 * build so that an input that once crashed keeps passing.
 *
 * An input is one image, or two: "VHDPAIR\0", a big-endian u32 length, that
 * many bytes of a child, and the rest a parent, written as parent.vhd in the
 * only directory parents may come from (a child made over "parent.vhd" finds
 * it by name), so the chain code is fuzzed too.
 *
 * Besides "no crash, no leak, no UB" (the sanitizers), it aborts on broken
 * invariants: an extent that is empty, overruns the asked range or points
 * outside its file; a read-only open or a check that changed the file. */
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "vhd.h"

#define MAP_MAX_STEPS 4096
#define READ_CHUNK 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[PATH_MAX];
static char fuzz_file[PATH_MAX + 16];
static char fuzz_parents[PATH_MAX + 16];
static char fuzz_parent_file[PATH_MAX + 32];
static uint8_t *readback;
static uint8_t *rbuf;

#define INVARIANT(cond)                                                             \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "fuzz_open: invariant failed: %s (%s:%d)\n", \
				#cond, __FILE__, __LINE__);                         \
			abort();                                                    \
		}                                                                   \
	} while (0)

static void fuzz_cleanup(void)
{
	if (!fuzz_dir[0])
		return;
	unlink(fuzz_file);
	unlink(fuzz_parent_file);
	rmdir(fuzz_parents);
	rmdir(fuzz_dir);
	fuzz_dir[0] = 0;
}

/* One temp dir per process: the input file, and an empty directory that is
 * the only place parents may be looked up (so a crafted locator can never
 * make the target open a file of the host). */
static void fuzz_setup(void)
{
	const char *tmp = getenv("TMPDIR");

	if (fuzz_dir[0])
		return;
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/vhd-fuzz-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(fuzz_dir)) {
		perror("fuzz_open: mkdtemp");
		abort();
	}
	snprintf(fuzz_file, sizeof(fuzz_file), "%s/input.vhd", fuzz_dir);
	snprintf(fuzz_parents, sizeof(fuzz_parents), "%s/parents", fuzz_dir);
	snprintf(fuzz_parent_file, sizeof(fuzz_parent_file), "%s/parent.vhd", fuzz_parents);
	if (mkdir(fuzz_parents, 0700) < 0) {
		perror("fuzz_open: mkdir");
		abort();
	}
	readback = malloc(READ_CHUNK);
	rbuf = malloc(READ_CHUNK);
	if (!readback || !rbuf)
		abort();
	atexit(fuzz_cleanup);
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t done = 0;

	if (fd < 0)
		abort();
	while (done < size) {
		ssize_t n = write(fd, data + done, size - done);

		if (n <= 0)
			abort();
		done += (size_t)n;
	}
	close(fd);
}

/* The file must hold exactly the input after read-only work on it. */
static void verify_unchanged(const char *path, const uint8_t *data, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t done = 0;
	off_t end;

	INVARIANT(fd >= 0);
	end = lseek(fd, 0, SEEK_END);
	INVARIANT(end == (off_t)size);
	while (done < size) {
		size_t want = size - done < READ_CHUNK ? size - done : READ_CHUNK;
		ssize_t n = pread(fd, readback, want, (off_t)done);

		INVARIANT(n == (ssize_t)want);
		INVARIANT(!memcmp(readback, data + done, want));
		done += want;
	}
	close(fd);
}

static void warn_sink(void *ctx, const char *msg)
{
	size_t *n = ctx;

	*n += strlen(msg);
}

/* Walks the disk extent by extent and checks each against its owner. */
static void walk_map(struct vhd_image *img, unsigned flags)
{
	uint64_t size = vhd_virtual_size(img), off = 0;

	for (unsigned step = 0; off < size && step < MAP_MAX_STEPS; step++) {
		struct vhd_extent e;
		struct vhd_info oi;
		int ret = vhd_map(img, off, size - off, flags, &e);

		if (ret < 0)
			return; /* an I/O error on a bitmap is a fair answer */
		INVARIANT(e.offset == off);
		INVARIANT(e.length > 0 && e.length <= size - off);
		INVARIANT(e.owner != NULL);
		switch (e.kind) {
		case VHD_EXT_DATA:
			vhd_get_info(e.owner, &oi);
			INVARIANT(e.fd >= 0);
			/* never into (or past) the trailing footer */
			INVARIANT(oi.file_size >= 511 && e.file_offset <= oi.file_size - 511 &&
				  oi.file_size - 511 - e.file_offset >= e.length);
			break;
		case VHD_EXT_ZERO:
			break;
		case VHD_EXT_PARENT:
			INVARIANT(!(flags & VHD_MAP_RESOLVE) || vhd_parent(e.owner) == NULL);
			break;
		default:
			INVARIANT(!"extent kind");
		}
		off += e.length;
	}
}

static void read_some(struct vhd_image *img)
{
	uint64_t size = vhd_virtual_size(img);
	uint64_t at[] = {0, size / 2, size > 4096 ? size - 4096 : 0, 511, size > 1 ? size - 1 : 0};

	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		uint64_t len = size - at[i] < 4096 ? size - at[i] : 4096;

		if (at[i] >= size)
			continue;
		(void)vhd_pread(img, rbuf, len, at[i]);
	}
	/* out of range must be refused, not read */
	INVARIANT(vhd_pread(img, rbuf, 1, size) < 0 || size == UINT64_MAX);
}

/* Returns whether the image opened. */
static bool exercise_image(unsigned flags)
{
	struct vhd_open_opts o = {.flags = flags, .parent_dir = fuzz_parents};
	struct vhd_image *img = NULL;
	struct vhd_err err;
	struct vhd_info info;
	size_t warned = 0;
	char uuid[37];

	o.warn = warn_sink;
	o.warn_ctx = &warned;
	if (vhd_open(fuzz_file, &o, &img, &err) < 0) {
		INVARIANT(img == NULL);
		INVARIANT(err.msg[0] != 0); /* a refused image gets a sentence */
		return false;
	}
	INVARIANT(!vhd_is_writable(img));
	vhd_get_info(img, &info);
	vhd_uuid_format(info.uuid, uuid);
	INVARIANT(info.virtual_size <= VHD_MAX_SIZE);
	walk_map(img, VHD_MAP_RESOLVE);
	walk_map(img, 0);
	read_some(img);
	INVARIANT(vhd_pwrite(img, "x", 1, 0) < 0); /* read-only handle */
	vhd_close(img);
	return true;
}

static void exercise_check(void)
{
	struct vhd_open_opts o = {.flags = VHD_OPEN_NO_LOCK, .parent_dir = fuzz_parents};
	struct vhd_check_report r;
	struct vhd_err err;
	size_t total = 0;

	if (vhd_check(fuzz_file, &o, &r, &err) < 0) {
		INVARIANT(err.msg[0] != 0);
		vhd_check_report_free(&r);
		return;
	}
	for (size_t i = 0; i < r.count; i++) {
		const struct vhd_problem *p = &r.problems[i];

		INVARIANT(p->severity <= VHD_SEV_ERROR);
		INVARIANT(p->field[0] && p->msg[0]);
		total += strlen(p->file) + strlen(vhd_severity_name(p->severity));
	}
	(void)total;
	(void)vhd_check_count(&r, VHD_SEV_WARNING);
	vhd_check_report_free(&r);
}

/* The buffer-level decoders, fed straight from the input. */
static void exercise_decoders(const uint8_t *data, size_t size)
{
	uint8_t fbuf[VHD_FOOTER_SIZE] = {0}, hbuf[VHD_DYNHDR_SIZE] = {0};
	uint8_t re[VHD_DYNHDR_SIZE];
	struct vhd_footer f, f1, f2;
	struct vhd_dynhdr h, h1, h2;
	struct vhd_geometry g;
	const char *src;
	char small[8], big[2048], name[5];

	memcpy(fbuf, data, size < sizeof(fbuf) ? size : sizeof(fbuf));
	memcpy(hbuf, data, size < sizeof(hbuf) ? size : sizeof(hbuf));

	vhd_footer_decode(fbuf, &f);
	(void)vhd_footer_checksum_ok(fbuf);
	(void)vhd_footer_virtual_size(&f, &src);
	(void)vhd_chs_bytes(&f.geometry);
	vhd_chs_for_size(f.current_size, &g);
	INVARIANT(vhd_chs_bytes(&g) <= (f.current_size / 512 < 65535ull * 16 * 255
						 ? f.current_size
						 : 65535ull * 16 * 255 * 512));
	vhd_fourcc_text(f.creator_app, name);
	/* decode(encode(decode(x))) == decode(x), and the checksum verifies */
	memcpy(&f1, &f, sizeof(f));
	vhd_footer_encode(&f1, re);
	INVARIANT(vhd_footer_checksum_ok(re));
	vhd_footer_decode(re, &f2);
	INVARIANT(!memcmp(&f1, &f2, sizeof(f1)));

	vhd_dynhdr_decode(hbuf, &h);
	(void)vhd_dynhdr_checksum_ok(hbuf);
	for (int i = 0; i < VHD_NR_LOCATORS; i++) {
		(void)vhd_locator_space_bytes(h.loc[i].data_space);
		vhd_platform_name(h.loc[i].code, name);
	}
	memcpy(&h1, &h, sizeof(h));
	vhd_dynhdr_encode(&h1, re);
	INVARIANT(vhd_dynhdr_checksum_ok(re));
	vhd_dynhdr_decode(re, &h2);
	INVARIANT(!memcmp(&h1, &h2, sizeof(h1)));

	/* text: both byte orders, a buffer that is too small and one that fits */
	for (int be = 0; be < 2; be++) {
		int n = vhd_utf16_to_utf8(data, size, be, big, sizeof(big));

		INVARIANT(n < (int)sizeof(big));
		if (n >= 0)
			INVARIANT(strlen(big) == (size_t)n);
		n = vhd_utf16_to_utf8(data, size, be, small, sizeof(small));
		INVARIANT(n < (int)sizeof(small));
		(void)vhd_utf16_to_utf8(h.parent_name, sizeof(h.parent_name), be, big, sizeof(big));
	}
}

#ifdef VHD_FUZZ_MUTATOR
/* libFuzzer's mutations, then (every other time) the footer and header
 * checksums made right again, so that inputs also reach the paths behind a
 * sound checksum (bad ones are tolerated with a warning, but take other
 * branches).  Only in the fuzzer build: the regression replay has no
 * libFuzzer to call. */
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed);

static void fix_checksums(uint8_t *data, size_t size)
{
	if (size >= VHD_FOOTER_SIZE && !memcmp(data + size - VHD_FOOTER_SIZE, VHD_COOKIE, 8))
		vhd_put_be32(data + size - VHD_FOOTER_SIZE + 64,
			     vhd_checksum(data + size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, 64));
	if (size >= VHD_FOOTER_SIZE + VHD_DYNHDR_SIZE && !memcmp(data, VHD_COOKIE, 8)) {
		uint64_t h = vhd_be64(data + 16);

		vhd_put_be32(data + 64, vhd_checksum(data, VHD_FOOTER_SIZE, 64));
		if (h <= size - VHD_DYNHDR_SIZE && !memcmp(data + h, VHD_DYN_COOKIE, 8))
			vhd_put_be32(data + h + 36, vhd_checksum(data + h, VHD_DYNHDR_SIZE, 36));
	}
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed)
{
	size = LLVMFuzzerMutate(data, size, max_size);
	if (seed & 1)
		return size;
	if (size >= 12 && !memcmp(data, "VHDPAIR", 8) && vhd_be32(data + 8) <= size - 12) {
		size_t child = vhd_be32(data + 8);

		fix_checksums(data + 12, child);
		fix_checksums(data + 12 + child, size - 12 - child);
	} else {
		fix_checksums(data, size);
	}
	return size;
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *parent = NULL;
	size_t parent_size = 0;

	fuzz_setup();
	exercise_decoders(data, size);
	if (size >= 12 && !memcmp(data, "VHDPAIR", 8) && vhd_be32(data + 8) <= size - 12) {
		size_t child_size = vhd_be32(data + 8);

		parent = data + 12 + child_size;
		parent_size = size - 12 - child_size;
		data += 12;
		size = child_size;
		write_file(fuzz_parent_file, parent, parent_size);
	}
	write_file(fuzz_file, data, size);
	/* chain lookup confined to the empty dir: a differencing input fails at
	 * its parent, so it is also opened without one to reach its BAT/bitmaps */
	if (!exercise_image(VHD_OPEN_NO_LOCK))
		exercise_image(VHD_OPEN_NO_LOCK | VHD_OPEN_NO_PARENT);
	exercise_check();
	verify_unchanged(fuzz_file, data, size);
	if (parent) {
		verify_unchanged(fuzz_parent_file, parent, parent_size);
		unlink(fuzz_parent_file); /* the next input starts with an empty dir */
	}
	return 0;
}
