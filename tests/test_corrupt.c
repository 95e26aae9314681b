/* test_corrupt.c - corrupted and hostile images.
 *
 * Good images are made with vhd_create/vhd_pwrite (fixed 1 MiB; dynamic
 * 32 MiB in 64 KiB blocks with six blocks allocated; a differencing child
 * over a dynamic parent), then each defect is applied to a copy with pwrite
 * (checksums recomputed unless the checksum is the defect) and we assert:
 *   (a) a read-only vhd_open fails with "FILE: FIELD: message" naming the
 *       file and the field, or, for defects we may tolerate, succeeds with a
 *       warning (to opts.warn) naming them and reads the right data;
 *   (b) vhd_check returns 0 with a problem of the right severity naming the
 *       field (or, for files that cannot be read, a negative return);
 *   (c) the file's bytes are unchanged: read-only never writes, and neither
 *       does a refused writable open;
 *   (d) nothing crashes or hangs: every case runs in a forked child with an
 *       alarm, so a crash is reported as that case's failure (with the
 *       sanitizer's report on stderr) and the other cases still run.
 * Then a few hundred rounds of random byte changes (fixed seed) over the
 * metadata of each image: no crash, no hang, no write.  A round that crashes
 * is saved as $TEST_BIN_DIR/corrupt-crash-*.vhd for replay.
 *
 * Every case prints one line (the message it got) so a log shows what users
 * would read.  Exit 0 pass, 1 fail. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format.h"
#include "vhd.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define GiB (1024ull * MiB)
#define CASE_TIMEOUT 120

static char T[PATH_MAX];          /* the temp dir */
static char case_name[160];
static int failures;              /* in a case's child: its own count */
static unsigned cases_run, cases_failed;

/* ---- reporting ---------------------------------------------------------- */

#define EXPECT(cond, ...)                                                         \
	do {                                                                      \
		if (!(cond)) {                                                    \
			failures++;                                               \
			fprintf(stderr, "FAIL [%s] %s:%d: %s: ", case_name, __FILE__, \
				__LINE__, #cond);                                 \
			fprintf(stderr, __VA_ARGS__);                             \
			fputc('\n', stderr);                                      \
		}                                                                 \
	} while (0)

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static void cleanup(void)
{
	if (T[0])
		nftw(T, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	T[0] = 0;
}

/* Setup failures end the run (nothing after them would mean anything). */
__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FATAL [%s]: ", case_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cleanup();
	exit(1);
}

static void on_alarm(int sig)
{
	static const char m[] = "FAIL: case timed out (hang)\n";

	(void)sig;
	(void)!write(2, m, sizeof(m) - 1);
	_exit(3);
}

/* ---- files -------------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static char *tp(char *buf, const char *fmt, ...)
{
	char rel[PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(buf, PATH_MAX, "%s/%s", T, rel);
	return buf;
}

static uint64_t fsize(const char *p)
{
	struct stat st;

	if (stat(p, &st) < 0)
		die("stat %s: %s", p, strerror(errno));
	return (uint64_t)st.st_size;
}

/* Whole content of a regular file; NULL when it is not one. */
static uint8_t *slurp(const char *p, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd;

	if (lstat(p, &st) < 0 || !S_ISREG(st.st_mode))
		return NULL;
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open %s: %s", p, strerror(errno));
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
		die("read %s", p);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void spit(const char *p, const void *buf, size_t len)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0 || (len && pwrite(fd, buf, len, 0) != (ssize_t)len))
		die("write %s: %s", p, strerror(errno));
	close(fd);
}

static void copy_file(const char *src, const char *dst)
{
	size_t len;
	uint8_t *buf = slurp(src, &len);

	if (!buf)
		die("copy: %s is not a regular file", src);
	spit(dst, buf, len);
	free(buf);
}

static void pwr(const char *p, const void *buf, size_t len, uint64_t off)
{
	int fd = open(p, O_WRONLY | O_CLOEXEC);

	if (fd < 0 || pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
		die("pwrite %s at %" PRIu64 ": %s", p, off, strerror(errno));
	close(fd);
}

static void prd(const char *p, void *buf, size_t len, uint64_t off)
{
	int fd = open(p, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || pread(fd, buf, len, (off_t)off) != (ssize_t)len)
		die("pread %s at %" PRIu64 ": %s", p, off, strerror(errno));
	close(fd);
}

static void trunc_to(const char *p, uint64_t len)
{
	if (truncate(p, (off_t)len) < 0)
		die("truncate %s: %s", p, strerror(errno));
}

static void mkdir_p(const char *p)
{
	if (mkdir(p, 0755) < 0 && errno != EEXIST)
		die("mkdir %s: %s", p, strerror(errno));
}

/* Deterministic bytes (xorshift32), so a mismatch is reproducible. */
static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (uint8_t)x;
	}
}

static uint32_t rng_state = 20240611;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* ---- making images ------------------------------------------------------ */

static void create(const char *path, enum vhd_type type, uint64_t size, uint32_t bs,
		   const char *parent)
{
	struct vhd_create_opts o = {.type = type, .size = size, .block_size = bs,
				    .parent = parent, .overwrite = true};
	struct vhd_err err;

	if (vhd_create(path, &o, &err) < 0)
		die("vhd_create %s: %s", path, err.msg);
}

/* Writes fill(seed) at off through the library and mirrors it in model. */
static void write_img(const char *path, uint64_t off, size_t len, uint32_t seed, uint8_t *model)
{
	struct vhd_open_opts o = {.flags = VHD_OPEN_RDWR};
	struct vhd_image *img;
	struct vhd_err err;
	uint8_t *buf = malloc(len);
	int ret;

	if (!buf)
		die("malloc");
	fill(buf, len, seed);
	if (vhd_open(path, &o, &img, &err) < 0)
		die("open %s for writing: %s", path, err.msg);
	ret = vhd_pwrite(img, buf, len, off);
	if (ret < 0)
		die("vhd_pwrite %s at %" PRIu64 ": %s", path, off, strerror(-ret));
	if (vhd_close(img) < 0)
		die("vhd_close %s", path);
	if (model)
		memcpy(model + off, buf, len);
	free(buf);
}

/* ---- editing metadata --------------------------------------------------- */

enum { TAIL = 1, HEAD = 2, BOTH = 3 };

static void footer_get(const char *p, struct vhd_footer *f)
{
	uint8_t b[VHD_FOOTER_SIZE];

	prd(p, b, sizeof(b), fsize(p) - VHD_FOOTER_SIZE);
	vhd_footer_decode(b, f);
}

/* Encodes f (checksum recomputed) into the chosen copies. */
static void footer_put(const char *p, struct vhd_footer *f, int where)
{
	uint8_t b[VHD_FOOTER_SIZE];

	vhd_footer_encode(f, b);
	if (where & TAIL)
		pwr(p, b, sizeof(b), fsize(p) - VHD_FOOTER_SIZE);
	if (where & HEAD)
		pwr(p, b, sizeof(b), 0);
}

static void hdr_get(const char *p, struct vhd_dynhdr *h)
{
	uint8_t b[VHD_DYNHDR_SIZE];

	prd(p, b, sizeof(b), VHD_FOOTER_SIZE); /* we create them at 512 */
	vhd_dynhdr_decode(b, h);
}

static void hdr_put(const char *p, struct vhd_dynhdr *h)
{
	uint8_t b[VHD_DYNHDR_SIZE];

	vhd_dynhdr_encode(h, b);
	pwr(p, b, sizeof(b), VHD_FOOTER_SIZE);
}

static uint32_t bat_get(const char *p, uint32_t i)
{
	struct vhd_dynhdr h;
	uint8_t b[4];

	hdr_get(p, &h);
	prd(p, b, 4, h.table_offset + 4ull * i);
	return vhd_be32(b);
}

static void bat_put(const char *p, uint32_t i, uint32_t v)
{
	struct vhd_dynhdr h;
	uint8_t b[4];

	hdr_get(p, &h);
	vhd_put_be32(b, v);
	pwr(p, b, 4, h.table_offset + 4ull * i);
}

/* Rewrites locator `slot` in place (its data space is 4 KiB) to hold text. */
static void loc_set(const char *p, int slot, uint32_t code, const char *text)
{
	struct vhd_dynhdr h;
	uint8_t data[4096] = {0};
	int len;

	hdr_get(p, &h);
	if (code == VHD_PLAT_W2RU || code == VHD_PLAT_W2KU)
		len = vhd_utf8_to_utf16(text, false, data, sizeof(data));
	else
		len = snprintf((char *)data, sizeof(data), "%s", text);
	if (len <= 0 || (uint64_t)len > vhd_locator_space_bytes(h.loc[slot].data_space))
		die("locator %d of %s: no room for \"%s\"", slot, p, text);
	pwr(p, data, sizeof(data) < vhd_locator_space_bytes(h.loc[slot].data_space)
			     ? sizeof(data)
			     : vhd_locator_space_bytes(h.loc[slot].data_space),
	    h.loc[slot].data_offset);
	h.loc[slot].code = code;
	h.loc[slot].data_length = (uint32_t)len;
	hdr_put(p, &h);
}

/* Points every parent reference of a child (the three locators we write and
 * the unicode name) at target: rel relative to the child, abs absolute. */
static void point_parent_at(const char *p, const char *rel, const char *abs, const char *name)
{
	struct vhd_dynhdr h;
	char url[PATH_MAX + 16];

	loc_set(p, 0, VHD_PLAT_W2RU, rel);
	loc_set(p, 1, VHD_PLAT_W2KU, abs);
	snprintf(url, sizeof(url), "file://%s", abs);
	loc_set(p, 2, VHD_PLAT_MACX, url);
	hdr_get(p, &h);
	memset(h.parent_name, 0, sizeof(h.parent_name));
	if (vhd_utf8_to_utf16(name, true, h.parent_name, sizeof(h.parent_name)) < 0)
		die("parent name %s", name);
	hdr_put(p, &h);
}

static void uuid_of(const char *p, char out[37])
{
	struct vhd_footer f;

	footer_get(p, &f);
	vhd_uuid_format(f.uuid, out);
}

/* ---- expectations ------------------------------------------------------- */

enum open_expect {
	OPEN_FAILS,          /* error naming the file and the field */
	OPEN_WARNS,          /* opens; a warning names the file and the field */
	OPEN_FAILS_OR_WARNS, /* either is acceptable */
	OPEN_CLEAN,          /* a sound image: opens without a word */
	OPEN_OK,             /* opens (warnings allowed, none required) */
};

struct expect {
	enum open_expect open;
	const char *word, *word2;  /* the field: either word, case-insensitive */
	const char *also[3];       /* more text the open error must contain */
	const char *msg_path;      /* the file the sentence must name (default path) */
	bool rw_refused;           /* OPEN_WARNS: a writable open must be refused */
	bool check_may_fail;       /* the file cannot be read: vhd_check may return < 0 */
	bool check_any_file;       /* the problem may be filed under another chain member */
	const uint8_t *model;      /* when it opens: the disk must read as this */
	uint64_t model_len;
	const char *parent_dir;
	const char *others[2];     /* chain members that must stay unchanged too */
	unsigned max_diags;        /* if set: at most this many warnings, and problems
				    * (or the library's VHD_CHECK_MAX_PROBLEMS) */
};

struct warnings {
	char text[8192];
	size_t len;
	unsigned n;
};

static void collect_warning(void *ctx, const char *msg)
{
	struct warnings *w = ctx;
	int n = snprintf(w->text + w->len, sizeof(w->text) - w->len, "%s\n", msg);

	w->n++;
	if (n > 0)
		w->len += (size_t)n < sizeof(w->text) - w->len ? (size_t)n : sizeof(w->text) - w->len - 1;
}

static bool names_field(const char *s, const struct expect *e)
{
	return (e->word && strcasestr(s, e->word)) || (e->word2 && strcasestr(s, e->word2));
}

static void print_report(const struct vhd_check_report *r)
{
	for (size_t i = 0; i < r->count; i++)
		fprintf(stderr, "    %s: %s: %s: %s\n", vhd_severity_name(r->problems[i].severity),
			r->problems[i].file, r->problems[i].field, r->problems[i].msg);
}

/* Reads the whole disk and compares it with the model. */
static void verify_content(struct vhd_image *img, const struct expect *e)
{
	uint64_t size = vhd_virtual_size(img);
	uint8_t *buf;

	if (!e->model)
		return;
	EXPECT(size == e->model_len, "virtual size %" PRIu64 ", expected %" PRIu64, size,
	       e->model_len);
	if (size != e->model_len)
		return;
	buf = malloc(1 * MiB);
	if (!buf)
		die("malloc");
	for (uint64_t off = 0; off < size; off += 1 * MiB) {
		uint64_t n = size - off < 1 * MiB ? size - off : 1 * MiB;
		int ret = vhd_pread(img, buf, n, off);

		EXPECT(ret == 0, "vhd_pread at %" PRIu64 ": %s", off, strerror(-ret));
		if (ret)
			break;
		if (memcmp(buf, e->model + off, n)) {
			uint64_t i = 0;

			while (buf[i] == e->model[off + i])
				i++;
			EXPECT(0, "content differs at virtual byte %" PRIu64, off + i);
			break;
		}
	}
	free(buf);
}

/* The checks of one case; runs in the forked child. */
static void case_body(const char *path, const struct expect *e)
{
	const char *mp = e->msg_path ? e->msg_path : path;
	struct warnings w;
	struct vhd_open_opts o = {.parent_dir = e->parent_dir, .warn = collect_warning,
				  .warn_ctx = &w};
	struct vhd_image *img = NULL;
	struct vhd_check_report r;
	struct vhd_err err = {{0}};
	bool opened, found = false;
	int ret;

	memset(&w, 0, sizeof(w));
	/* (a) read-only open */
	ret = vhd_open(path, &o, &img, &err);
	opened = ret == 0;
	if (opened) {
		EXPECT(img != NULL, "no handle");
		const char *nl = strchr(w.text, '\n');

		if (w.n)
			printf("  %-28s opens, warning: %.*s%s\n", case_name,
			       (int)(nl ? nl - w.text : (ptrdiff_t)w.len), w.text,
			       w.n > 1 ? " (and more)" : "");
		else
			printf("  %-28s opens\n", case_name);
	} else {
		EXPECT(img == NULL, "a handle despite the error");
		printf("  %-28s refused: %s\n", case_name, err.msg);
	}
	switch (e->open) {
	case OPEN_FAILS:
		EXPECT(!opened, "opened, expected an error about \"%s\" (%u warnings)", e->word,
		       w.n);
		break;
	case OPEN_WARNS:
		EXPECT(opened, "refused, expected a warning about \"%s\": %s", e->word, err.msg);
		break;
	case OPEN_CLEAN:
		EXPECT(opened, "a sound image was refused: %s", err.msg);
		EXPECT(w.n == 0, "a sound image gave warnings: %.300s", w.text);
		break;
	case OPEN_OK:
		EXPECT(opened, "refused: %s", err.msg);
		break;
	case OPEN_FAILS_OR_WARNS:
		break;
	}
	if (!opened && e->open != OPEN_CLEAN && e->open != OPEN_OK) {
		EXPECT(!strncmp(err.msg, mp, strlen(mp)) && err.msg[strlen(mp)] == ':',
		       "the error is not \"%s: FIELD: message\": %s", mp, err.msg);
		EXPECT(names_field(err.msg, e), "the error does not name \"%s\": %s", e->word,
		       err.msg);
		for (int i = 0; i < 3 && e->also[i]; i++)
			EXPECT(strcasestr(err.msg, e->also[i]), "the error lacks \"%s\": %s",
			       e->also[i], err.msg);
	}
	if (opened && e->open != OPEN_CLEAN && e->open != OPEN_OK) {
		bool named = false;

		for (char *line = w.text; *line;) {
			char *nl = strchr(line, '\n');

			if (nl)
				*nl = 0;
			if (!strncmp(line, mp, strlen(mp)) && line[strlen(mp)] == ':' &&
			    names_field(line, e))
				named = true;
			if (nl)
				*nl = '\n';
			line = nl ? nl + 1 : line + strlen(line);
		}
		EXPECT(named, "no warning names %s and \"%s\": %.600s", mp, e->word,
		       w.len ? w.text : "(no warnings)");
	}
	if (e->max_diags)
		EXPECT(w.n <= e->max_diags, "%u warnings (at most %u expected): one per entry does not scale",
		       w.n, e->max_diags);
	if (opened) {
		EXPECT(!vhd_is_writable(img), "a read-only open gave a writable handle");
		verify_content(img, e);
		vhd_close(img);
	}

	/* (b) check */
	ret = vhd_check(path, &o, &r, &err);
	if (ret < 0) {
		EXPECT(e->check_may_fail, "vhd_check failed: %s", err.msg);
		EXPECT(strstr(err.msg, mp), "the check error does not name %s: %s", mp, err.msg);
	} else {
		enum vhd_severity want = e->open == OPEN_FAILS ? VHD_SEV_ERROR : VHD_SEV_WARNING;

		for (size_t i = 0; i < r.count; i++) {
			const struct vhd_problem *p = &r.problems[i];

			if (e->open == OPEN_OK)
				continue;
			if (e->open == OPEN_CLEAN) {
				EXPECT(p->severity < VHD_SEV_WARNING, "check on a sound image: %s: %s: %s",
				       p->file, p->field, p->msg);
				continue;
			}
			if (p->severity >= want && (names_field(p->field, e) || names_field(p->msg, e)) &&
			    (e->check_any_file || !strcmp(p->file, mp)))
				found = true;
		}
		if (e->max_diags) {
#ifdef VHD_CHECK_MAX_PROBLEMS
			/* the library's own bound on a report (the rest is counted) */
			size_t bound = VHD_CHECK_MAX_PROBLEMS > e->max_diags ? VHD_CHECK_MAX_PROBLEMS
									     : e->max_diags;
#else
			size_t bound = e->max_diags;
#endif
			EXPECT(r.count <= bound,
			       "check listed %zu problems (at most %zu expected): %zu bytes of report",
			       r.count, bound, r.count * sizeof(*r.problems));
		}
		if (e->open != OPEN_CLEAN && e->open != OPEN_OK) {
			EXPECT(found, "check reports no %s naming \"%s\" in %s (%zu problems)",
			       want == VHD_SEV_ERROR ? "error" : "warning or error", e->word, mp,
			       r.count);
			if (!found)
				print_report(&r);
		}
		vhd_check_report_free(&r);
	}

	/* a writable open must be refused where asked (done last: if it is
	 * wrongly accepted, closing it may write, and (c) would say so) */
	if (e->open == OPEN_FAILS || e->rw_refused) {
		struct vhd_open_opts rw = o;

		rw.flags |= VHD_OPEN_RDWR;
		img = NULL;
		ret = vhd_open(path, &rw, &img, &err);
		EXPECT(ret < 0, "a writable open was accepted");
		if (ret == 0)
			vhd_close(img);
		else
			EXPECT(strstr(err.msg, mp), "the writable-open error does not name %s: %s", mp,
			       err.msg);
	}
}

/* Runs one case in a child process (crash or hang = failure of this case)
 * and compares the file before and after (c). */
static void expect_case(const char *name, const char *path, const struct expect *e)
{
	size_t before_len = 0, after_len = 0, olen[2] = {0, 0};
	uint8_t *before, *after, *obefore[2] = {NULL, NULL};
	pid_t pid;
	int status;

	snprintf(case_name, sizeof(case_name), "%s", name);
	cases_run++;
	fflush(stdout);
	fflush(stderr);
	before = slurp(path, &before_len);
	for (int i = 0; i < 2; i++)
		if (e->others[i])
			obefore[i] = slurp(e->others[i], &olen[i]);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		signal(SIGALRM, on_alarm);
		alarm(CASE_TIMEOUT);
		failures = 0;
		case_body(path, e);
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid: %s", strerror(errno));
	failures = 0;
	if (WIFSIGNALED(status))
		EXPECT(0, "the case crashed with signal %d", WTERMSIG(status));
	else if (WEXITSTATUS(status) == 3)
		EXPECT(0, "the case hung (more than %d s)", CASE_TIMEOUT);
	else if (WEXITSTATUS(status) != 0)
		EXPECT(0, "the case failed (exit %d; see above: sanitizer reports exit 1 too)",
		       WEXITSTATUS(status));
	after = slurp(path, &after_len);
	if (before) {
		EXPECT(after && after_len == before_len && !memcmp(before, after, before_len),
		       "the file changed (%zu -> %zu bytes): read-only must never write",
		       before_len, after_len);
	}
	for (int i = 0; i < 2; i++) {
		size_t l = 0;
		uint8_t *now;

		if (!obefore[i])
			continue;
		now = slurp(e->others[i], &l);
		EXPECT(now && l == olen[i] && !memcmp(now, obefore[i], l),
		       "%s (in the chain) changed: read-only must never write", e->others[i]);
		free(now);
		free(obefore[i]);
	}
	if (failures)
		cases_failed++;
	free(before);
	free(after);
}

/* ---- the good images ---------------------------------------------------- */

#define FIXED_SIZE (1 * MiB)
#define DYN_SIZE (32 * MiB)
#define DYN_BS (64 * 1024u)
#define PAR_SIZE (4 * MiB)

static char fixed_path[PATH_MAX], dyn_path[PATH_MAX], par_path[PATH_MAX], child_path[PATH_MAX];
static uint8_t *fixed_model, *dyn_model, *par_model, *child_model;

static void make_base_images(void)
{
	snprintf(case_name, sizeof(case_name), "setup");
	tp(fixed_path, "fixed.vhd");
	tp(dyn_path, "dyn.vhd");
	tp(par_path, "par.vhd");
	tp(child_path, "child.vhd");
	fixed_model = calloc(1, FIXED_SIZE);
	dyn_model = calloc(1, DYN_SIZE);
	par_model = calloc(1, PAR_SIZE);
	child_model = calloc(1, PAR_SIZE);
	if (!fixed_model || !dyn_model || !par_model || !child_model)
		die("malloc");

	/* fixed: whole sectors only (a partial write would read first) */
	create(fixed_path, VHD_TYPE_FIXED, FIXED_SIZE, 0, NULL);
	write_img(fixed_path, 0, 4096, 1, fixed_model);
	write_img(fixed_path, 512 * 1000, 20 * 512, 2, fixed_model);
	write_img(fixed_path, FIXED_SIZE - 512, 512, 3, fixed_model);

	/* dynamic: blocks 0 (full), 1 (partial, unaligned), 5, 100-101, 511 */
	create(dyn_path, VHD_TYPE_DYNAMIC, DYN_SIZE, DYN_BS, NULL);
	write_img(dyn_path, 0, DYN_BS, 11, dyn_model);
	write_img(dyn_path, DYN_BS + 8192 + 100, 3000, 12, dyn_model);
	write_img(dyn_path, 5 * DYN_BS + 1536, 512, 13, dyn_model);
	write_img(dyn_path, 100 * DYN_BS + 60 * 1024, 8192, 14, dyn_model);
	write_img(dyn_path, DYN_SIZE - 4096, 4096, 15, dyn_model);

	/* differencing: child over a dynamic parent, partial bitmaps */
	create(par_path, VHD_TYPE_DYNAMIC, PAR_SIZE, DYN_BS, NULL);
	write_img(par_path, 0, 2 * DYN_BS, 21, par_model);
	write_img(par_path, 1 * MiB, DYN_BS, 22, par_model);
	write_img(par_path, 3 * MiB + 100, 1000, 23, par_model);
	create(child_path, VHD_TYPE_DIFF, 0, 0, par_path);
	memcpy(child_model, par_model, PAR_SIZE);
	write_img(child_path, 4096, 4096, 31, child_model);
	write_img(child_path, 2 * MiB, DYN_BS, 32, child_model);
	write_img(child_path, 1 * MiB + 512 * 3, 700, 33, child_model);
	write_img(child_path, PAR_SIZE - 512, 512, 34, child_model);
}

/* A working copy named after the case, in the temp dir (beside par.vhd). */
static char *case_copy(char *buf, const char *src, const char *name)
{
	tp(buf, "c-%s.vhd", name);
	copy_file(src, buf);
	return buf;
}

/* ---- cases: every image type ------------------------------------------- */

static void truncation_cases(const char *src, const char *tag)
{
	static const uint64_t sizes[] = {0, 100, 511};
	char p[PATH_MAX], name[64];

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(name, sizeof(name), "%s-trunc-%" PRIu64, tag, sizes[i]);
		case_copy(p, src, name);
		trunc_to(p, sizes[i]);
		expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "file size",
						      .word2 = "footer", .check_may_fail = true});
	}
}

static void footer_field_cases(const char *src, const char *tag, int where)
{
	static const uint32_t types[] = {0, 1, 5, 99};
	struct vhd_footer f;
	char p[PATH_MAX], name[64];

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		snprintf(name, sizeof(name), "%s-disk-type-%u", tag, types[i]);
		case_copy(p, src, name);
		footer_get(p, &f);
		f.disk_type = types[i];
		footer_put(p, &f, where);
		expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "disk type"});
	}

	snprintf(name, sizeof(name), "%s-size-over-2040g", tag);
	case_copy(p, src, name);
	footer_get(p, &f);
	f.current_size = VHD_MAX_SIZE + 1 * MiB;
	footer_put(p, &f, where);
	expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "current size"});

	snprintf(name, sizeof(name), "%s-size-2040g-plus-1-sector", tag);
	case_copy(p, src, name);
	footer_get(p, &f);
	f.current_size = VHD_MAX_SIZE + 512;
	footer_put(p, &f, where);
	expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "current size"});

	snprintf(name, sizeof(name), "%s-size-unaligned", tag);
	case_copy(p, src, name);
	footer_get(p, &f);
	f.current_size -= 100;
	footer_put(p, &f, where);
	expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "current size"});

	snprintf(name, sizeof(name), "%s-version-2.0", tag);
	case_copy(p, src, name);
	footer_get(p, &f);
	f.version = 0x00020000;
	footer_put(p, &f, where);
	expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "version"});

	snprintf(name, sizeof(name), "%s-cookie-both", tag);
	case_copy(p, src, name);
	footer_get(p, &f);
	memcpy(f.cookie, "conectiX", 8);
	footer_put(p, &f, where);
	expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "footer cookie"});
}

/* ---- fixed -------------------------------------------------------------- */

static void fixed_cases(void)
{
	struct vhd_footer f;
	uint8_t b[VHD_FOOTER_SIZE];
	char p[PATH_MAX];
	uint64_t sz;

	expect_case("fixed-sound", fixed_path,
		    &(struct expect){.open = OPEN_CLEAN, .model = fixed_model,
				     .model_len = FIXED_SIZE});
	truncation_cases(fixed_path, "fixed");
	footer_field_cases(fixed_path, "fixed", TAIL);

	/* the footer cut off: no footer anywhere */
	case_copy(p, fixed_path, "fixed-truncated");
	trunc_to(p, FIXED_SIZE - 4096);
	expect_case("fixed-truncated", p,
		    &(struct expect){.open = OPEN_FAILS, .word = "footer cookie"});

	/* data cut, footer re-appended: the footer says more than the file holds */
	case_copy(p, fixed_path, "fixed-truncated-refooted");
	prd(p, b, sizeof(b), FIXED_SIZE);
	trunc_to(p, FIXED_SIZE / 2);
	pwr(p, b, sizeof(b), FIXED_SIZE / 2);
	expect_case("fixed-truncated-refooted", p,
		    &(struct expect){.open = OPEN_FAILS, .word = "current size",
				     .also = {"truncated"}});

	/* the only footer has a bad checksum: tolerated read-only, never written */
	case_copy(p, fixed_path, "fixed-footer-checksum");
	sz = fsize(p);
	prd(p, b, sizeof(b), sz - 512);
	b[200] ^= 0x55;
	pwr(p, b, sizeof(b), sz - 512);
	expect_case("fixed-footer-checksum", p,
		    &(struct expect){.open = OPEN_WARNS, .word = "checksum", .rw_refused = true,
				     .model = fixed_model, .model_len = FIXED_SIZE});

	/* extra bytes between the data and the footer: readable, flagged */
	case_copy(p, fixed_path, "fixed-size-smaller-than-file");
	footer_get(p, &f);
	f.current_size -= 4096;
	f.original_size = f.current_size;
	footer_put(p, &f, TAIL);
	expect_case("fixed-size-smaller-than-file", p,
		    &(struct expect){.open = OPEN_FAILS_OR_WARNS, .word = "current size",
				     .model = fixed_model, .model_len = FIXED_SIZE - 4096});

	/* The guest wrote a (valid, dynamic) VHD footer into its sector 0.  A fixed
	 * disk has no footer copy there: this must open cleanly, and must not be
	 * read as a dynamic disk. */
	{
		struct vhd_footer g;
		uint8_t *model = malloc(FIXED_SIZE);
		uint8_t sec[512];

		if (!model)
			die("malloc");
		case_copy(p, fixed_path, "fixed-guest-footer-at-0");
		footer_get(p, &g);
		g.disk_type = VHD_TYPE_DYNAMIC;
		g.data_offset = 512;
		g.uuid[0] ^= 1;
		vhd_footer_encode(&g, sec);
		pwr(p, sec, sizeof(sec), 0);
		memcpy(model, fixed_model, FIXED_SIZE);
		memcpy(model, sec, sizeof(sec));
		expect_case("fixed-guest-footer-at-0", p,
			    &(struct expect){.open = OPEN_CLEAN, .model = model,
					     .model_len = FIXED_SIZE});
		free(model);
	}
}

/* ---- dynamic ------------------------------------------------------------ */

static void dyn_hdr_case(const char *name, void (*edit)(struct vhd_dynhdr *, uint64_t fsz),
			 const struct expect *e)
{
	struct vhd_dynhdr h;
	char p[PATH_MAX];

	case_copy(p, dyn_path, name);
	hdr_get(p, &h);
	edit(&h, fsize(p));
	hdr_put(p, &h);
	expect_case(name, p, e);
}

static void ed_bs_pow2(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->block_size = DYN_BS + 512; }
static void ed_bs_zero(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->block_size = 0; }
static void ed_bs_small(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->block_size = 256; }
static void ed_bs_512m(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->block_size = 512u << 20; }
static void ed_bs_huge(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->block_size = 0x80000000u; }
static void ed_bs_max(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->block_size = 0xFFFFFFFFu; }
static void ed_mte_short(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->max_table_entries--; }
static void ed_mte_zero(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->max_table_entries = 0; }
static void ed_mte_huge(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->max_table_entries = 0x40000000u; }
static void ed_mte_max(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->max_table_entries = 0xFFFFFFFFu; }
static void ed_to_eof(struct vhd_dynhdr *h, uint64_t s) { h->table_offset = s + 4096; }
static void ed_to_last(struct vhd_dynhdr *h, uint64_t s) { h->table_offset = s - 1024; }
static void ed_to_hdr(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->table_offset = 1024; }
static void ed_to_zero(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->table_offset = 0; }
static void ed_to_huge(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->table_offset = 0xFFFFFFFFFFFFFE00ull; }
static void ed_hdr_ver(struct vhd_dynhdr *h, uint64_t s) { (void)s; h->version = 0x00020000; }
static void ed_hdr_cookie(struct vhd_dynhdr *h, uint64_t s) { (void)s; memcpy(h->cookie, "cxsparsE", 8); }
static void ed_loc_eof(struct vhd_dynhdr *h, uint64_t s)
{
	h->loc[0] = (struct vhd_locator){.code = VHD_PLAT_W2RU, .data_space = 4096,
					 .data_length = 20, .data_offset = s + 1 * MiB};
}
static void ed_loc_space(struct vhd_dynhdr *h, uint64_t s)
{
	(void)s;
	h->loc[0] = (struct vhd_locator){.code = VHD_PLAT_W2RU, .data_space = 1000,
					 .data_length = 20, .data_offset = 1536};
}

static void dyn_bat_case(const char *name, uint32_t entry, uint32_t value, const char *word2)
{
	char p[PATH_MAX];

	case_copy(p, dyn_path, name);
	bat_put(p, entry, value);
	expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "block allocation table",
					      .word2 = word2});
}

static void dynamic_cases(void)
{
	const struct expect e_bs = {.open = OPEN_FAILS, .word = "block size"};
	const struct expect e_mte = {.open = OPEN_FAILS, .word = "max table entries"};
	const struct expect e_to = {.open = OPEN_FAILS, .word = "table offset"};
	const struct expect e_to_or_mte = {.open = OPEN_FAILS, .word = "table offset",
					   .word2 = "max table entries"};
	struct vhd_footer f;
	uint8_t b[VHD_FOOTER_SIZE];
	char p[PATH_MAX];
	uint64_t sz = fsize(dyn_path);
	uint32_t bat0 = bat_get(dyn_path, 0), bat511 = bat_get(dyn_path, 511);

	expect_case("dyn-sound", dyn_path,
		    &(struct expect){.open = OPEN_CLEAN, .model = dyn_model, .model_len = DYN_SIZE});
	truncation_cases(dyn_path, "dyn");
	footer_field_cases(dyn_path, "dyn", BOTH);

	/* cut inside the BAT (1536..3584) and inside the last block */
	case_copy(p, dyn_path, "dyn-trunc-mid-bat");
	trunc_to(p, 3000);
	expect_case("dyn-trunc-mid-bat", p,
		    &(struct expect){.open = OPEN_FAILS, .word = "table offset",
				     .word2 = "block allocation table"});
	case_copy(p, dyn_path, "dyn-trunc-mid-block");
	trunc_to(p, (uint64_t)bat511 * 512 + 512 + 30000);
	expect_case("dyn-trunc-mid-block", p,
		    &(struct expect){.open = OPEN_FAILS, .word = "block allocation table"});

	/* footers: the head copy saves a bad tail, read-only only */
	case_copy(p, dyn_path, "dyn-tail-cookie");
	pwr(p, "XXXXXXXX", 8, sz - 512);
	expect_case("dyn-tail-cookie", p,
		    &(struct expect){.open = OPEN_WARNS, .word = "footer cookie", .rw_refused = true,
				     .model = dyn_model, .model_len = DYN_SIZE});
	case_copy(p, dyn_path, "dyn-tail-checksum");
	prd(p, b, sizeof(b), sz - 512);
	b[300] ^= 0x10;
	pwr(p, b, sizeof(b), sz - 512);
	expect_case("dyn-tail-checksum", p,
		    &(struct expect){.open = OPEN_WARNS, .word = "footer checksum",
				     .rw_refused = true, .model = dyn_model, .model_len = DYN_SIZE});
	case_copy(p, dyn_path, "dyn-checksum-both");
	prd(p, b, sizeof(b), 0);
	b[300] ^= 0x10;
	pwr(p, b, sizeof(b), 0);
	pwr(p, b, sizeof(b), sz - 512);
	expect_case("dyn-checksum-both", p,
		    &(struct expect){.open = OPEN_WARNS, .word = "checksum", .rw_refused = true,
				     .model = dyn_model, .model_len = DYN_SIZE});
	case_copy(p, dyn_path, "dyn-head-differs");
	footer_get(p, &f);
	f.timestamp ^= 0x1234;
	footer_put(p, &f, HEAD);
	expect_case("dyn-head-differs", p,
		    &(struct expect){.open = OPEN_WARNS, .word = "footer copy",
				     .model = dyn_model, .model_len = DYN_SIZE});
	case_copy(p, dyn_path, "dyn-tail-cookie-head-checksum");
	pwr(p, "XXXXXXXX", 8, sz - 512);
	prd(p, b, sizeof(b), 0);
	b[300] ^= 0x10;
	pwr(p, b, sizeof(b), 0);
	expect_case("dyn-tail-cookie-head-checksum", p,
		    &(struct expect){.open = OPEN_WARNS, .word = "checksum", .rw_refused = true,
				     .model = dyn_model, .model_len = DYN_SIZE});

	/* data offset (where the dynamic header is) */
	{
		static const uint64_t bad[] = {0, 256, 513, 1ull << 40, VHD_NO_OFFSET};
		char name[64];

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			snprintf(name, sizeof(name), "dyn-data-offset-0x%" PRIx64, bad[i]);
			case_copy(p, dyn_path, name);
			footer_get(p, &f);
			f.data_offset = bad[i];
			footer_put(p, &f, BOTH);
			expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "data offset"});
		}
		snprintf(name, sizeof(name), "dyn-data-offset-past-eof");
		case_copy(p, dyn_path, name);
		footer_get(p, &f);
		f.data_offset = sz;
		footer_put(p, &f, BOTH);
		expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "data offset"});
	}

	/* dynamic header */
	dyn_hdr_case("dyn-header-cookie", ed_hdr_cookie,
		     &(struct expect){.open = OPEN_FAILS, .word = "header cookie"});
	case_copy(p, dyn_path, "dyn-header-checksum");
	prd(p, b, 4, 512 + 36);
	b[3] ^= 1;
	pwr(p, b, 4, 512 + 36);
	expect_case("dyn-header-checksum", p,
		    &(struct expect){.open = OPEN_WARNS, .word = "header checksum",
				     .model = dyn_model, .model_len = DYN_SIZE});
	dyn_hdr_case("dyn-header-version-2.0", ed_hdr_ver,
		     &(struct expect){.open = OPEN_FAILS, .word = "version"});
	dyn_hdr_case("dyn-block-size-not-pow2", ed_bs_pow2, &e_bs);
	dyn_hdr_case("dyn-block-size-0", ed_bs_zero, &e_bs);
	dyn_hdr_case("dyn-block-size-256", ed_bs_small, &e_bs);
	dyn_hdr_case("dyn-block-size-512m", ed_bs_512m, &e_bs);
	dyn_hdr_case("dyn-block-size-2g", ed_bs_huge, &e_bs);
	dyn_hdr_case("dyn-block-size-4g-1", ed_bs_max, &e_bs);
	dyn_hdr_case("dyn-max-entries-short", ed_mte_short, &e_mte);
	dyn_hdr_case("dyn-max-entries-0", ed_mte_zero, &e_mte);
	dyn_hdr_case("dyn-max-entries-huge", ed_mte_huge, &e_to_or_mte);
	dyn_hdr_case("dyn-max-entries-4g-1", ed_mte_max, &e_to_or_mte);
	dyn_hdr_case("dyn-table-offset-past-eof", ed_to_eof, &e_to);
	dyn_hdr_case("dyn-table-offset-at-end", ed_to_last, &e_to);
	dyn_hdr_case("dyn-table-offset-in-header", ed_to_hdr, &e_to);
	dyn_hdr_case("dyn-table-offset-0", ed_to_zero, &e_to);
	dyn_hdr_case("dyn-table-offset-huge", ed_to_huge, &e_to);
	/* a dynamic disk has no parent: bad locators are only worth a warning */
	dyn_hdr_case("dyn-locator-past-eof", ed_loc_eof,
		     &(struct expect){.open = OPEN_FAILS_OR_WARNS, .word = "parent locator",
				      .model = dyn_model, .model_len = DYN_SIZE});
	dyn_hdr_case("dyn-locator-space-invalid", ed_loc_space,
		     &(struct expect){.open = OPEN_FAILS_OR_WARNS, .word = "parent locator",
				      .model = dyn_model, .model_len = DYN_SIZE});

	/* BAT entries (block 2 is unallocated, block 0 is the first in the file) */
	dyn_bat_case("dyn-bat-past-eof", 2, (uint32_t)(sz / 512 + 10), NULL);
	dyn_bat_case("dyn-bat-ffffffffe", 2, 0xFFFFFFFEu, NULL);
	dyn_bat_case("dyn-bat-zero", 2, 0, NULL);
	dyn_bat_case("dyn-bat-over-footer", 2, (uint32_t)((sz - 512) / 512 - 10), NULL);
	dyn_bat_case("dyn-bat-over-header", 2, 1, "dynamic header");
	dyn_bat_case("dyn-bat-over-header-2", 2, 2, "dynamic header");
	dyn_bat_case("dyn-bat-over-bat", 2, 3, NULL);
	dyn_bat_case("dyn-bat-duplicate", 2, bat0, NULL);
	dyn_bat_case("dyn-bat-overlap-half", 2, bat0 + 64, NULL);
	dyn_bat_case("dyn-bat-overlap-last", 511, bat0 + 1, NULL);

	/* the disk shrunk to 16 MiB: BAT entries past its blocks are ignored */
	case_copy(p, dyn_path, "dyn-bat-beyond-disk");
	footer_get(p, &f);
	f.current_size = DYN_SIZE / 2;
	footer_put(p, &f, BOTH);
	expect_case("dyn-bat-beyond-disk", p,
		    &(struct expect){.open = OPEN_WARNS, .word = "block allocation table",
				     .model = dyn_model, .model_len = DYN_SIZE / 2});

	/* A BAT far longer than the disk needs (1 MiB disk, 16 blocks, 65536
	 * entries), its tail zero (free in a sparse file).  Tolerable, but the
	 * diagnostics must not grow with the entry count: the check report
	 * costs ~1.6 KB per problem, so a 64 MiB file of zeros would need
	 * 25 GiB. */
	{
		const uint32_t entries = 65536, needed = (uint32_t)(1 * MiB / DYN_BS);
		size_t len = 512 + 1024 + 4ull * entries + 512;
		uint8_t *buf = calloc(1, len);
		uint8_t *zero = calloc(1, 1 * MiB);
		struct vhd_dynhdr h;

		if (!buf || !zero)
			die("malloc");
		tp(p, "c-dyn-long-bat.vhd");
		create(p, VHD_TYPE_DYNAMIC, 1 * MiB, DYN_BS, NULL);
		prd(p, buf, 512, 0);
		hdr_get(p, &h);
		h.max_table_entries = entries;
		vhd_dynhdr_encode(&h, buf + 512);
		memset(buf + 1536, 0xFF, 4 * needed);
		memcpy(buf + len - 512, buf, 512);
		spit(p, buf, len);
		expect_case("dyn-long-bat-of-zeros", p,
			    &(struct expect){.open = OPEN_FAILS_OR_WARNS,
					     .word = "block allocation table",
					     .word2 = "max table entries", .max_diags = 64,
					     .model = zero, .model_len = 1 * MiB});
		free(buf);
		free(zero);
	}

	/* The same, scaled up: 268 million declared entries (a 1 GiB BAT, free
	 * in a sparse file) on a 16-block disk.  Opening must stay fast and small:
	 * only the entries the disk needs are loaded. */
	{
		const uint32_t entries = 1u << 28, needed = (uint32_t)(1 * MiB / DYN_BS);
		uint64_t len = 512 + 1024 + 4ull * entries + 512;
		uint8_t head[1536 + 4 * 16];
		uint8_t *zero = calloc(1, 1 * MiB);
		struct vhd_dynhdr h;
		struct rusage ru;
		int fd;

		if (!zero)
			die("malloc");
		tp(p, "c-dyn-huge-bat.vhd");
		create(p, VHD_TYPE_DYNAMIC, 1 * MiB, DYN_BS, NULL);
		prd(p, head, 512, 0);
		hdr_get(p, &h);
		h.max_table_entries = entries;
		vhd_dynhdr_encode(&h, head + 512);
		memset(head + 1536, 0xFF, 4 * needed);
		fd = open(p, O_WRONLY | O_TRUNC);
		if (fd < 0 || pwrite(fd, head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
		    pwrite(fd, head, 512, (off_t)(len - 512)) != 512)
			die("write %s", p);
		close(fd);
		/* not expect_case: it would read the 1 GiB file into memory twice */
		snprintf(case_name, sizeof(case_name), "dyn-huge-bat-sparse");
		cases_run++;
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0) {
			struct vhd_open_opts o = {0};
			struct vhd_check_report r;
			struct vhd_image *img;
			struct vhd_err err;
			uint8_t *got = malloc(1 * MiB);

			alarm(CASE_TIMEOUT);
			if (!got || vhd_open(p, &o, &img, &err) < 0)
				_exit(10);
			if (vhd_pread(img, got, 1 * MiB, 0) < 0 || memcmp(got, zero, 1 * MiB))
				_exit(11);
			vhd_close(img);
			if (vhd_check(p, &o, &r, &err) < 0 || vhd_check_count(&r, VHD_SEV_ERROR) ||
			    !vhd_check_count(&r, VHD_SEV_WARNING))
				_exit(12);
			vhd_check_report_free(&r);
			free(got);
			_exit(0);
		}
		int status = 0;
		if (pid < 0 || wait4(pid, &status, 0, &ru) < 0)
			die("fork/wait4");
		failures = 0;
		EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		       "open/read/check of a 1 GiB sparse BAT failed (status 0x%x)", status);
		EXPECT(ru.ru_maxrss < 256 * 1024, "opening a 16-block disk used %ld KiB", ru.ru_maxrss);
		if (failures)
			cases_failed++;
		unlink(p);
		free(zero);
	}

	/* The same amplification inside the disk: 32 MiB in 512-byte blocks,
	 * 65536 BAT entries all 0 (a sparse hole).  Each entry is an error; open
	 * stops at the first, check must not list 65536 of them. */
	{
		const uint32_t entries = 65536;
		size_t len = 512 + 1024 + 4ull * entries + 512;
		uint8_t *buf = calloc(1, len);
		struct vhd_dynhdr h;

		if (!buf)
			die("malloc");
		tp(p, "c-dyn-bat-all-zero.vhd");
		create(p, VHD_TYPE_DYNAMIC, 32 * MiB, 512, NULL);
		prd(p, buf, 512, 0);
		hdr_get(p, &h);
		vhd_dynhdr_encode(&h, buf + 512);
		memcpy(buf + len - 512, buf, 512);
		spit(p, buf, len);
		expect_case("dyn-bat-all-zero", p,
			    &(struct expect){.open = OPEN_FAILS, .word = "block allocation table",
					     .max_diags = 64});
		free(buf);
	}
}

/* ---- differencing ------------------------------------------------------- */

static void diff_pair(const char *dir, char *parent, char *child)
{
	char d[PATH_MAX];

	mkdir_p(tp(d, "%s", dir));
	snprintf(parent, PATH_MAX, "%s/p.vhd", d);
	snprintf(child, PATH_MAX, "%s/c.vhd", d);
	create(parent, VHD_TYPE_DYNAMIC, 1 * MiB, DYN_BS, NULL);
	write_img(parent, 0, 4096, 41, NULL);
	create(child, VHD_TYPE_DIFF, 0, 0, parent);
	write_img(child, DYN_BS, 4096, 42, NULL);
}

/* A child whose locators all name target (a FIFO, a directory, a device). */
static void odd_parent_case(const char *name, const char *target_rel, const char *target_abs)
{
	char p[PATH_MAX], d[PATH_MAX], parent[PATH_MAX];
	const char *base = strrchr(target_abs, '/');

	snprintf(d, sizeof(d), "%s/odd", T);
	snprintf(p, sizeof(p), "%s/%s.vhd", d, name);
	snprintf(parent, sizeof(parent), "%s/p.vhd", d);
	create(p, VHD_TYPE_DIFF, 0, 0, parent);
	point_parent_at(p, target_rel, target_abs, base ? base + 1 : target_abs);
	expect_case(name, p, &(struct expect){.open = OPEN_FAILS, .word = "parent",
					      .also = {"regular"}});
}

static void diff_cases(void)
{
	char p[PATH_MAX], c[PATH_MAX], want[37], got[37];
	struct vhd_dynhdr h;

	expect_case("diff-sound", child_path,
		    &(struct expect){.open = OPEN_CLEAN, .model = child_model,
				     .model_len = PAR_SIZE, .others = {par_path}});
	expect_case("diff-parent-sound", par_path,
		    &(struct expect){.open = OPEN_CLEAN, .model = par_model,
				     .model_len = PAR_SIZE});

	/* the child's own structure: same rules as dynamic, plus locators */
	case_copy(c, child_path, "diff-block-size-0");
	hdr_get(c, &h);
	h.block_size = 0;
	hdr_put(c, &h);
	expect_case("diff-block-size-0", c, &(struct expect){.open = OPEN_FAILS, .word = "block size"});

	case_copy(c, child_path, "diff-locator-past-eof");
	hdr_get(c, &h);
	h.loc[0].data_offset = fsize(c) + 4096;
	hdr_put(c, &h);
	expect_case("diff-locator-past-eof", c,
		    &(struct expect){.open = OPEN_FAILS_OR_WARNS, .word = "parent locator",
				     .model = child_model, .model_len = PAR_SIZE,
				     .others = {par_path}});
	case_copy(c, child_path, "diff-locator-space-invalid");
	hdr_get(c, &h);
	h.loc[1].data_space = 1000;
	hdr_put(c, &h);
	expect_case("diff-locator-space-invalid", c,
		    &(struct expect){.open = OPEN_FAILS_OR_WARNS, .word = "parent locator",
				     .model = child_model, .model_len = PAR_SIZE});
	case_copy(c, child_path, "diff-locators-all-bad");
	hdr_get(c, &h);
	for (int i = 0; i < 3; i++)
		h.loc[i].data_offset = 0xFFFFFFFFFFFF0000ull;
	memset(h.parent_name, 0, sizeof(h.parent_name));
	hdr_put(c, &h);
	expect_case("diff-locators-all-bad", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "parent locator", .word2 = "parent",
				     .others = {par_path}});
	case_copy(c, child_path, "diff-locator-unknown-code");
	hdr_get(c, &h);
	h.loc[5] = (struct vhd_locator){.code = 0x41424344, .data_space = 1, .data_length = 4,
					.data_offset = h.loc[0].data_offset};
	hdr_put(c, &h);
	expect_case("diff-locator-unknown-code", c,
		    &(struct expect){.open = OPEN_WARNS, .word = "parent locator",
				     .model = child_model, .model_len = PAR_SIZE,
				     .others = {par_path}});
	case_copy(c, child_path, "diff-locator-length-over-space");
	hdr_get(c, &h);
	h.loc[2].data_length = (uint32_t)vhd_locator_space_bytes(h.loc[2].data_space) + 100;
	hdr_put(c, &h);
	expect_case("diff-locator-length-over-space", c,
		    &(struct expect){.open = OPEN_FAILS_OR_WARNS, .word = "locator",
				     .model = child_model, .model_len = PAR_SIZE,
				     .others = {par_path}});
	case_copy(c, child_path, "diff-locators-overlap");
	hdr_get(c, &h);
	h.loc[1].data_offset = h.loc[0].data_offset + 512;
	hdr_put(c, &h);
	expect_case("diff-locators-overlap", c,
		    &(struct expect){.open = OPEN_FAILS_OR_WARNS, .word = "locator",
				     .model = child_model, .model_len = PAR_SIZE,
				     .others = {par_path}});
	case_copy(c, child_path, "diff-locator-over-bat");
	hdr_get(c, &h);
	h.loc[0].data_offset = h.table_offset;
	hdr_put(c, &h);
	expect_case("diff-locator-over-bat", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "locator",
				     .others = {par_path}});
	case_copy(c, child_path, "diff-bat-over-locator");
	hdr_get(c, &h);
	bat_put(c, 10, (uint32_t)(h.loc[0].data_offset / 512 + 1));
	expect_case("diff-bat-over-locator", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "block allocation table",
				     .also = {"locator"}, .others = {par_path}});
	case_copy(c, child_path, "diff-tail-cookie");
	pwr(c, "XXXXXXXX", 8, fsize(c) - 512);
	expect_case("diff-tail-cookie", c,
		    &(struct expect){.open = OPEN_WARNS, .word = "footer cookie", .rw_refused = true,
				     .model = child_model, .model_len = PAR_SIZE,
				     .others = {par_path}});

	/* sizes that differ from the parent's: beyond the parent reads as zeros */
	{
		struct vhd_footer f;
		uint8_t *model = calloc(1, 2 * PAR_SIZE);

		if (!model)
			die("malloc");
		memcpy(model, child_model, PAR_SIZE);
		case_copy(c, child_path, "diff-larger-than-parent");
		footer_get(c, &f);
		f.current_size = 2 * PAR_SIZE;
		footer_put(c, &f, BOTH);
		hdr_get(c, &h);
		h.max_table_entries *= 2; /* the BAT sector's 0xFF padding holds them */
		hdr_put(c, &h);
		expect_case("diff-larger-than-parent", c,
			    &(struct expect){.open = OPEN_OK, .model = model,
					     .model_len = 2 * PAR_SIZE, .others = {par_path}});
		case_copy(c, child_path, "diff-smaller-than-parent");
		footer_get(c, &f);
		f.current_size = PAR_SIZE / 2 + 512;
		footer_put(c, &f, BOTH);
		expect_case("diff-smaller-than-parent", c,
			    &(struct expect){.open = OPEN_OK, .model = child_model,
					     .model_len = PAR_SIZE / 2 + 512, .others = {par_path}});
		free(model);
	}

	/* parent missing */
	diff_pair("miss", p, c);
	uuid_of(p, want);
	unlink(p);
	expect_case("diff-parent-missing", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {want}});

	/* a different disk where the parent was: name both ids */
	diff_pair("mismatch", p, c);
	uuid_of(p, want);
	create(p, VHD_TYPE_DYNAMIC, 1 * MiB, DYN_BS, NULL);
	uuid_of(p, got);
	expect_case("diff-parent-uuid-mismatch", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {want, got},
				     .others = {p}});

	/* the parent itself is corrupt: the child's error says why it was rejected */
	diff_pair("badparent", p, c);
	hdr_get(p, &h);
	h.block_size = 3;
	hdr_put(p, &h);
	expect_case("diff-parent-corrupt", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {"block size"},
				     .others = {p}});

	/* loops: a child naming itself, and A -> B -> A */
	{
		char abs[PATH_MAX];

		diff_pair("loop", p, c);
		snprintf(abs, sizeof(abs), "%s", c);
		point_parent_at(c, ".\\c.vhd", abs, "c.vhd");
		expect_case("diff-loop-self", c,
			    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {"loop"}});
		/* same, with the parent id set to its own id, so only the loop
		 * check can stop it */
		{
			struct vhd_footer f;

			footer_get(c, &f);
			hdr_get(c, &h);
			memcpy(h.parent_uuid, f.uuid, 16);
			hdr_put(c, &h);
		}
		expect_case("diff-loop-self-same-id", c,
			    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {"loop"}});
	}
	{
		char a[PATH_MAX], b[PATH_MAX], d[PATH_MAX];
		struct vhd_footer fb;

		diff_pair("aba", p, a);
		snprintf(d, sizeof(d), "%s/aba", T);
		snprintf(b, sizeof(b), "%s/b.vhd", d);
		create(b, VHD_TYPE_DIFF, 0, 0, a);
		/* now A's parent is B */
		point_parent_at(a, ".\\b.vhd", b, "b.vhd");
		footer_get(b, &fb);
		hdr_get(a, &h);
		memcpy(h.parent_uuid, fb.uuid, 16);
		hdr_put(a, &h);
		expect_case("diff-loop-a-b-a", a,
			    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {"loop"},
					     .check_any_file = true, .others = {b, p}});
		expect_case("diff-loop-b-a-b", b,
			    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {"loop"},
					     .check_any_file = true, .others = {a, p}});
	}

	/* parents that are not regular files: must not hang, must not be used */
	{
		char d[PATH_MAX], fifo[PATH_MAX], dir[PATH_MAX], link[PATH_MAX], parent[PATH_MAX];

		mkdir_p(tp(d, "odd"));
		snprintf(parent, sizeof(parent), "%s/p.vhd", d);
		create(parent, VHD_TYPE_DYNAMIC, 1 * MiB, DYN_BS, NULL);
		snprintf(fifo, sizeof(fifo), "%s/fifo.vhd", d);
		if (mkfifo(fifo, 0644) < 0)
			die("mkfifo: %s", strerror(errno));
		snprintf(dir, sizeof(dir), "%s/dir.vhd", d);
		mkdir_p(dir);
		snprintf(link, sizeof(link), "%s/zero.vhd", d);
		if (symlink("/dev/zero", link) < 0)
			die("symlink: %s", strerror(errno));
		odd_parent_case("diff-parent-fifo", ".\\fifo.vhd", fifo);
		odd_parent_case("diff-parent-directory", ".\\dir.vhd", dir);
		odd_parent_case("diff-parent-dev-zero", "/dev/zero", "/dev/zero");
		odd_parent_case("diff-parent-symlink-dev-zero", ".\\zero.vhd", link);
		/* and as the image itself */
		expect_case("leaf-fifo", fifo,
			    &(struct expect){.open = OPEN_FAILS, .word = "file type",
					     .word2 = "regular", .check_may_fail = true});
		expect_case("leaf-directory", dir,
			    &(struct expect){.open = OPEN_FAILS, .word = "file type",
					     .word2 = "regular", .check_may_fail = true});
		expect_case("leaf-dev-zero", "/dev/zero",
			    &(struct expect){.open = OPEN_FAILS, .word = "file type",
					     .word2 = "regular", .check_may_fail = true});
	}
}

/* A chain deeper than VHD_MAX_CHAIN_DEPTH: tiny images, built one on the other. */
static void deep_chain_cases(void)
{
	char d[PATH_MAX], prev[PATH_MAX], cur[PATH_MAX];

	snprintf(case_name, sizeof(case_name), "deep-chain-setup");
	mkdir_p(tp(d, "deep"));
	snprintf(prev, sizeof(prev), "%s/d000.vhd", d);
	create(prev, VHD_TYPE_DYNAMIC, 4096, 4096, NULL);
	for (int i = 1; i <= VHD_MAX_CHAIN_DEPTH; i++) {
		snprintf(cur, sizeof(cur), "%s/d%03d.vhd", d, i);
		create(cur, VHD_TYPE_DIFF, 0, 0, prev);
		snprintf(prev, sizeof(prev), "%s", cur);
	}
	/* d127: 128 images, the most we follow; d128: one too many */
	snprintf(cur, sizeof(cur), "%s/d%03d.vhd", d, VHD_MAX_CHAIN_DEPTH - 1);
	expect_case("chain-128-deep", cur, &(struct expect){.open = OPEN_CLEAN});
	snprintf(cur, sizeof(cur), "%s/d%03d.vhd", d, VHD_MAX_CHAIN_DEPTH);
	expect_case("chain-129-deep", cur,
		    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {"deep"},
				     .check_any_file = true});
}

/* parent_dir confines where parents may come from. */
static void parent_dir_cases(void)
{
	char base[PATH_MAX], kids[PATH_MAX], other[PATH_MAX], copy[PATH_MAX], p[PATH_MAX],
		c[PATH_MAX], s[PATH_MAX], cp[PATH_MAX], nodir[PATH_MAX];
	uint8_t *model = calloc(1, 1 * MiB);

	if (!model)
		die("malloc");
	snprintf(case_name, sizeof(case_name), "parent-dir-setup");
	mkdir_p(tp(base, "pd-base"));
	mkdir_p(tp(kids, "pd-kids"));
	mkdir_p(tp(other, "pd-symlink"));
	mkdir_p(tp(copy, "pd-copy"));
	snprintf(p, sizeof(p), "%s/p.vhd", base);
	snprintf(c, sizeof(c), "%s/c.vhd", kids);
	create(p, VHD_TYPE_DYNAMIC, 1 * MiB, DYN_BS, NULL);
	write_img(p, 0, 8192, 51, model);
	create(c, VHD_TYPE_DIFF, 0, 0, p);
	write_img(c, 4096, 8192, 52, model);
	snprintf(s, sizeof(s), "%s/p.vhd", other);
	if (symlink(p, s) < 0)
		die("symlink: %s", strerror(errno));
	snprintf(cp, sizeof(cp), "%s/p.vhd", copy);
	copy_file(p, cp);
	snprintf(nodir, sizeof(nodir), "%s/pd-does-not-exist", T);

	expect_case("parent-dir-inside", c,
		    &(struct expect){.open = OPEN_CLEAN, .parent_dir = base, .model = model,
				     .model_len = 1 * MiB, .others = {p}});
	expect_case("parent-dir-outside", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {"outside"},
				     .parent_dir = kids});
	expect_case("parent-dir-symlink-escape", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {"outside"},
				     .parent_dir = other});
	expect_case("parent-dir-copy-by-name", c,
		    &(struct expect){.open = OPEN_CLEAN, .parent_dir = copy, .model = model,
				     .model_len = 1 * MiB});
	/* a parent dir that does not exist: open and check must both say so
	 * (check must not pass a chain whose parent it never looked at) */
	expect_case("parent-dir-missing", c,
		    &(struct expect){.open = OPEN_FAILS, .word = "parent", .also = {nodir},
				     .check_may_fail = true, .parent_dir = nodir});
	free(model);
}

/* ---- random damage ------------------------------------------------------ */

struct span {
	uint64_t start, len;
};

/* Opens, maps, reads and checks the damaged copy; runs in a child. */
static void damaged_body(const char *path)
{
	struct vhd_open_opts o = {.flags = VHD_OPEN_NO_LOCK};
	struct vhd_image *img;
	struct vhd_check_report r;
	struct vhd_err err;
	static uint8_t buf[256 * 1024];

	if (vhd_open(path, &o, &img, &err) == 0) {
		uint64_t size = vhd_virtual_size(img), off = 0;
		struct vhd_extent e;
		unsigned steps = 0;

		while (off < size && steps++ < 100000 &&
		       vhd_map(img, off, size - off, VHD_MAP_RESOLVE, &e) == 0) {
			if (e.length == 0 || e.length > size - off) {
				fprintf(stderr, "bad extent at %" PRIu64 ": length %" PRIu64 "\n",
					off, e.length);
				_exit(1);
			}
			off += e.length;
		}
		for (off = 0; off < size && off < 64 * MiB; off += sizeof(buf))
			(void)vhd_pread(img, buf, size - off < sizeof(buf) ? size - off : sizeof(buf),
					off);
		vhd_close(img);
	} else if (!strstr(err.msg, path)) {
		fprintf(stderr, "error without the file name: %s\n", err.msg);
		_exit(1);
	}
	if (vhd_check(path, &o, &r, &err) == 0)
		vhd_check_report_free(&r);
}

static void fix_checksums(uint8_t *img, size_t len)
{
	if (len >= 512 && !memcmp(img + len - 512, VHD_COOKIE, 8))
		vhd_put_be32(img + len - 512 + 64, vhd_checksum(img + len - 512, 512, 64));
	if (len >= 1536 && !memcmp(img, VHD_COOKIE, 8)) {
		vhd_put_be32(img + 64, vhd_checksum(img, 512, 64));
		if (!memcmp(img + 512, VHD_DYN_COOKIE, 8))
			vhd_put_be32(img + 512 + 36, vhd_checksum(img + 512, 1024, 36));
	}
}

static void damage_rounds(const char *tag, const char *src, unsigned rounds)
{
	struct span spans[64];
	size_t nspans = 0, len;
	uint8_t *orig = slurp(src, &len), *img;
	char p[PATH_MAX];
	unsigned crashed = 0, changed = 0;
	const char *bin = getenv("TEST_BIN_DIR");

	if (!orig || !(img = malloc(len)))
		die("damage: %s", src);
	tp(p, "dmg-%s.vhd", tag);
	/* where metadata lives: the footers, and for dynamic/differencing the
	 * header, BAT, locators (all before the first block) and each bitmap */
	spans[nspans++] = (struct span){len - 512, 512};
	if (memcmp(orig, VHD_COOKIE, 8)) {
		spans[nspans++] = (struct span){0, 512};
	} else {
		struct vhd_dynhdr h;
		uint64_t first = len - 512;

		vhd_dynhdr_decode(orig + 512, &h);
		for (uint32_t i = 0; i < h.max_table_entries; i++) {
			uint32_t v = vhd_be32(orig + h.table_offset + 4 * i);

			if (v == VHD_BAT_UNUSED)
				continue;
			if ((uint64_t)v * 512 < first)
				first = (uint64_t)v * 512;
			if (nspans < 63)
				spans[nspans++] = (struct span){(uint64_t)v * 512, 512};
		}
		spans[nspans++] = (struct span){0, first};
	}
	snprintf(case_name, sizeof(case_name), "damage-%s", tag);
	cases_run++;
	failures = 0;
	for (unsigned round = 0; round < rounds; round++) {
		unsigned n = 1 + rnd() % 8;
		pid_t pid;
		int status;
		size_t after_len;
		uint8_t *after;

		memcpy(img, orig, len);
		for (unsigned k = 0; k < n; k++) {
			const struct span *s = &spans[rnd() % nspans];
			uint64_t at = s->start + rnd() % s->len;

			if (rnd() % 2)
				img[at] ^= (uint8_t)(1u << (rnd() % 8));
			else
				img[at] = (uint8_t)rnd();
		}
		if (round % 2)
			fix_checksums(img, len);
		spit(p, img, len);
		fflush(stdout);
		fflush(stderr);
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			signal(SIGALRM, on_alarm);
			alarm(CASE_TIMEOUT);
			damaged_body(p);
			_exit(0);
		}
		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			if (crashed++ < 3) {
				char keep[PATH_MAX];

				snprintf(keep, sizeof(keep), "%s/corrupt-crash-%s-%u.vhd",
					 bin ? bin : T, tag, round);
				spit(keep, img, len);
				EXPECT(0, "round %u crashed, hung or failed (status 0x%x); input kept as %s",
				       round, status, keep);
			}
		}
		after = slurp(p, &after_len);
		if (!after || after_len != len || memcmp(after, img, len))
			changed++;
		free(after);
	}
	EXPECT(crashed == 0, "%u of %u rounds crashed, hung or failed", crashed, rounds);
	EXPECT(changed == 0, "%u of %u rounds changed the file", changed, rounds);
	printf("  %-28s %u rounds, %u failed\n", case_name, rounds, crashed);
	if (failures)
		cases_failed++;
	unlink(p);
	free(orig);
	free(img);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(T, sizeof(T), "%s/vhd-corrupt-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(T)) {
		printf("SKIP: cannot make a temp dir: %s\n", strerror(errno));
		return 77;
	}
	make_base_images();
	printf("fixed:\n");
	fixed_cases();
	printf("dynamic:\n");
	dynamic_cases();
	printf("differencing:\n");
	diff_cases();
	deep_chain_cases();
	parent_dir_cases();
	printf("random damage:\n");
	damage_rounds("fixed", fixed_path, 100);
	damage_rounds("dyn", dyn_path, 200);
	damage_rounds("diff", child_path, 200);

	cleanup();
	free(fixed_model);
	free(dyn_model);
	free(par_model);
	free(child_model);
	printf("%u cases, %u failed\n", cases_run, cases_failed);
	return cases_failed ? 1 : 0;
}
