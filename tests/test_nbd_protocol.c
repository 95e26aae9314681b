/* test_nbd_protocol.c - the NBD front door against hostile and odd clients.
 *
 * Starts the real daemon ($VSPD, vhd-vspd) on a Unix socket in a temp dir,
 * serving a 64 MiB dynamic VHD ("main", random content written through the
 * library first) and a read-only 8 MiB one ("ro"), and drives it with the
 * raw client of nbd_client.c:
 *
 *   - handshake garbage: unknown client flags, bad option magic, huge and
 *     truncated options, option data whose inner lengths lie, INFO/GO with a
 *     name beyond the option, SET_META_CONTEXT before STRUCTURED_REPLY,
 *     unknown options, STARTTLS, unknown exports, ABORT, EXPORT_NAME;
 *   - transmission garbage: bad magic, unknown commands and flags, ranges
 *     beyond the end (and offsets that overflow), length 0, oversize reads
 *     and writes, BLOCK_STATUS without a context, writes to a read-only
 *     export, DISC with requests in flight, unaligned I/O, a write payload
 *     dribbled a few bytes at a time, hundreds of requests in flight, a
 *     client that never reads its replies;
 *   - 100 connections at once, half of them stalled in the handshake;
 *   - a client that dies in the middle of a write payload, on a server with
 *     a small --max-connections: its slot must come back, and SIGTERM must
 *     still stop the server promptly.
 *
 * After every hostile session a well-behaved client (alternating simple and
 * structured replies) writes, reads back and flushes on the same server,
 * and a "witness" connection opened at the start (it must survive every
 * other client's misbehaviour) reads.  A byte model of each disk follows
 * every acknowledged write; at the end the server is stopped with SIGTERM
 * (exit 0 within 10 s, socket removed), both images check clean, "main"
 * equals the model and the read-only image is byte-identical to before.
 *
 * TEST_SEED=<n> replays a run.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nbd_client.h"
#include "testutil.h" /* now_ms, sleep_ms */
#undef CHECK /* randtest.h's CHECK, which names the seed, is the one used here */
#include "randtest.h"
#include "vhd.h"

#define MAIN_SIZE (64 * MiB)
#define MAIN_BLOCK (2 * MiB)
#define RO_SIZE (8 * MiB)
#define EOF_WAIT_MS 10000
#define STOP_WAIT_MS 10000
#define MAX_REQ (32u << 20)

#define CHECK_EQ_SIZE(a, b)                                                        \
	do {                                                                       \
		if ((uint64_t)(a) != (uint64_t)(b))                                \
			fail("%s:%d: %s is %llu, expected %llu", __FILE__, __LINE__, #a, \
			     (unsigned long long)(a), (unsigned long long)(b));   \
	} while (0)

struct server {
	pid_t pid;
	char sock[PATH_MAX];
	char pidfile[PATH_MAX];
	char log[PATH_MAX];
};

static const char *vspd;
static char main_path[PATH_MAX], ro_path[PATH_MAX];
static uint8_t *model;                  /* content of main */
static bool touched[MAIN_SIZE / MAIN_BLOCK]; /* blocks anything ever wrote to */
static uint8_t *ro_model;
static uint8_t *ro_file_before;
static size_t ro_file_len;
static struct server srv_main, srv_small;
static struct nbdc witness;
static unsigned good_round;

/* ---- helpers ----------------------------------------------------------------- */

static void fill_random(uint8_t *p, size_t n)
{
	while (n >= 8) {
		uint64_t v = rnd64();

		memcpy(p, &v, 8);
		p += 8;
		n -= 8;
	}
	while (n--)
		*p++ = (uint8_t)rnd64();
}

/* The end of a server's log, to explain a failure. */
static void print_log_tail(const struct server *s)
{
	char buf[4096];
	FILE *f = fopen(s->log, "r");
	long size;
	size_t n;

	fflush(stdout);
	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	fprintf(stderr, "--- end of %s ---\n%s\n---\n", s->log, buf);
}

static void kill_servers(void)
{
	struct server *all[] = {&srv_main, &srv_small};

	for (size_t i = 0; i < 2; i++)
		if (all[i]->pid > 0) {
			kill(all[i]->pid, SIGKILL);
			waitpid(all[i]->pid, NULL, 0);
			all[i]->pid = 0;
		}
}

/* Fails unless the server process still runs (a crash shows here). */
static void server_alive(struct server *s)
{
	int st;
	pid_t p = waitpid(s->pid, &st, WNOHANG);

	if (p == s->pid) {
		s->pid = 0;
		print_log_tail(s);
		fail("the server died: %s %d", WIFSIGNALED(st) ? "signal" : "exit status",
		     WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	}
}

/* Starts vhd-vspd with extra arguments (NULL-terminated) and waits until it
 * listens (its pid file appears only then). */
static void server_start(struct server *s, const char *tag, const char *const *extra)
{
	const char *argv[32];
	unsigned n = 0;
	int64_t deadline;

	snprintf(s->sock, sizeof(s->sock), "%s/%s.sock", tmpdir, tag);
	snprintf(s->pidfile, sizeof(s->pidfile), "%s/%s.pid", tmpdir, tag);
	snprintf(s->log, sizeof(s->log), "%s/%s.log", tmpdir, tag);
	argv[n++] = vspd;
	argv[n++] = "-s";
	argv[n++] = s->sock;
	argv[n++] = "--pid-file";
	argv[n++] = s->pidfile;
	argv[n++] = "-v"; /* refused requests are logged: the log explains a failure */
	while (*extra && n < 31)
		argv[n++] = *extra++;
	argv[n] = NULL;
	s->pid = fork();
	if (s->pid < 0)
		fail("fork: %s", strerror(errno));
	if (s->pid == 0) {
		int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
		}
		execv(vspd, (char *const *)argv);
		_exit(127);
	}
	deadline = now_ms() + 20000;
	while (access(s->pidfile, F_OK) < 0) {
		server_alive(s);
		if (now_ms() > deadline)
			fail("%s: no pid file after 20 s", vspd);
		sleep_ms(10);
	}
}

/* SIGTERM: the server must exit 0 within STOP_WAIT_MS and remove its socket. */
static void server_stop(struct server *s)
{
	int64_t deadline = now_ms() + STOP_WAIT_MS;
	int st;

	kill(s->pid, SIGTERM);
	for (;;) {
		pid_t p = waitpid(s->pid, &st, WNOHANG);

		if (p == s->pid)
			break;
		if (now_ms() > deadline) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, NULL, 0);
			s->pid = 0;
			print_log_tail(s);
			fail("the server did not exit within %d ms of SIGTERM", STOP_WAIT_MS);
		}
		sleep_ms(10);
	}
	s->pid = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		print_log_tail(s);
		fail("the server ended with %s %d after SIGTERM, expected exit 0",
		     WIFSIGNALED(st) ? "signal" : "status",
		     WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	}
	if (access(s->sock, F_OK) == 0)
		fail("%s still exists after the server stopped", s->sock);
	if (access(s->pidfile, F_OK) == 0)
		fail("%s still exists after the server stopped", s->pidfile);
}

static void must(int ret, const char *what)
{
	if (ret != 0)
		fail("%s: %s", what, nbdc_strerror(ret));
}

static void expect_err(int ret, int want, const char *what)
{
	if (ret != want)
		fail("%s: got %s, expected %s", what, nbdc_strerror(ret), nbdc_strerror(want));
}

static void expect_err2(int ret, int a, int b, const char *what)
{
	if (ret != a && ret != b)
		fail("%s: got %s, expected %s or %s", what, nbdc_strerror(ret), nbdc_strerror(a),
		     nbdc_strerror(b));
}

/* The server must close the connection within EOF_WAIT_MS. */
static void expect_hangup(int fd, const char *what)
{
	int ret = nbdc_wait_eof(fd, EOF_WAIT_MS, NULL);

	if (ret < 0)
		fail("%s: the server did not hang up (%s)", what, strerror(-ret));
}

/* A raw connection past the greeting. */
static void raw_open(struct nbdc *c, const struct server *s, uint32_t cflags)
{
	int fd = nbdc_connect_unix(s->sock);

	if (fd < 0)
		fail("connect %s: %s", s->sock, strerror(-fd));
	nbdc_init(c, fd);
	must(nbdc_greeting(c, cflags), "greeting");
	if (!(c->hflags & NBDC_FLAG_FIXED_NEWSTYLE))
		fail("handshake flags %#x lack FIXED_NEWSTYLE", c->hflags);
}

static void raw_close(struct nbdc *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static void open_main(struct nbdc *c, unsigned want)
{
	must(nbdc_open(c, srv_main.sock, "main", want), "open main");
	CHECK_EQ_SIZE(c->size, MAIN_SIZE);
}

/* Reads [off, off+len) and compares with m. */
static void check_range(struct nbdc *c, const uint8_t *m, uint64_t off, uint32_t len,
			const char *what)
{
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf)
		fail("out of memory");
	must(nbdc_pread(c, buf, len, off, 0), what);
	for (uint32_t i = 0; i < len; i++)
		if (buf[i] != m[off + i])
			fail("%s: byte %llu reads %#x, expected %#x", what,
			     (unsigned long long)(off + i), buf[i], m[off + i]);
	free(buf);
}

static void touch(uint64_t off, uint64_t len)
{
	for (uint64_t b = off / MAIN_BLOCK; len && b <= (off + len - 1) / MAIN_BLOCK; b++)
		touched[b] = true;
}

/* A write through c that must succeed; the model follows. */
static void good_write(struct nbdc *c, uint64_t off, uint32_t len, uint16_t flags)
{
	uint8_t *buf = malloc(len);

	if (!buf)
		fail("out of memory");
	fill_random(buf, len);
	snprintf(ctx, sizeof(ctx), "write %llu+%u flags %#x", (unsigned long long)off, len, flags);
	must(nbdc_pwrite(c, buf, len, off, flags), ctx);
	memcpy(model + off, buf, len);
	touch(off, len);
	free(buf);
}

/* The well-behaved client, after every hostile session. */
static void good_check(const char *after)
{
	static const unsigned wants[] = {0, NBDC_WANT_STRUCTURED, NBDC_WANT_META,
					 NBDC_WANT_EXPORT_NAME, NBDC_WANT_EXPORT_NAME | NBDC_WANT_ZEROES};
	struct nbdc c;
	unsigned want = wants[good_round++ % 5];
	uint32_t len = (uint32_t)rnd_in(1, 300 * KiB);
	uint64_t off;

	snprintf(ctx, sizeof(ctx), "good client after %s", after);
	server_alive(&srv_main);
	open_main(&c, want);
	if (rnd(2)) {
		len = (len + 511) / 512 * 512;
		off = rnd(MAIN_SIZE / 512 - len / 512) * 512;
	} else {
		off = rnd(MAIN_SIZE - len);
	}
	good_write(&c, off, len, rnd(3) == 0 ? NBDC_CMD_FLAG_FUA : 0);
	snprintf(ctx, sizeof(ctx), "good client after %s", after);
	{
		uint64_t lo = off > 4096 ? off - 4096 : 0;
		uint64_t hi = off + len + 4096 < MAIN_SIZE ? off + len + 4096 : MAIN_SIZE;

		check_range(&c, model, lo, (uint32_t)(hi - lo), "good read-back");
	}
	must(nbdc_cmd(&c, NBDC_CMD_FLUSH, 0, 0, 0), "good flush");
	nbdc_close(&c);
	/* The witness, idle all along, still works. */
	off = rnd(MAIN_SIZE - 65536);
	check_range(&witness, model, off, 65536, "witness read");
}

/* ---- handshake cases -------------------------------------------------------- */

static void hs_unknown_client_flags(void)
{
	struct nbdc c;

	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | (1u << 7));
	expect_hangup(c.fd, "unknown client flag bit 7");
	raw_close(&c);
	raw_open(&c, &srv_main, 0xffffffffu);
	expect_hangup(c.fd, "client flags 0xffffffff");
	raw_close(&c);
}

static void hs_bad_option_magic(void)
{
	struct nbdc c;
	uint8_t h[16] = "IHAVEOPX";

	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
	h[11] = NBDC_OPT_GO;
	must(nbdc_send(c.fd, h, sizeof(h), 1000), "send");
	expect_hangup(c.fd, "bad option magic");
	raw_close(&c);
}

/* Random bytes right after the greeting. */
static void hs_garbage(void)
{
	for (int i = 0; i < 8; i++) {
		struct nbdc c;
		uint8_t junk[4096];
		size_t n = rnd_in(1, sizeof(junk));
		int ret;

		raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
		fill_random(junk, n);
		/* The server may hang up before it read everything. */
		ret = nbdc_send(c.fd, junk, n, 2000);
		if (ret < 0 && ret != -EPIPE && ret != -ECONNRESET)
			fail("send garbage: %s", strerror(-ret));
		shutdown(c.fd, SHUT_WR);
		expect_hangup(c.fd, "garbage options");
		raw_close(&c);
	}
}

/* An option header that announces far more data than any option needs: the
 * server must not wait for (or allocate) it. */
static void hs_huge_option(void)
{
	static const uint32_t lens[] = {0xffffffffu, 0x80000000u, 64u << 20};

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct nbdc c;
		uint8_t h[16];
		int ret;

		raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
		memcpy(h, "IHAVEOPT", 8);
		h[8] = 0, h[9] = 0, h[10] = 0, h[11] = NBDC_OPT_GO;
		h[12] = (uint8_t)(lens[i] >> 24), h[13] = (uint8_t)(lens[i] >> 16);
		h[14] = (uint8_t)(lens[i] >> 8), h[15] = (uint8_t)lens[i];
		must(nbdc_send(c.fd, h, sizeof(h), 1000), "send");
		/* An error reply is acceptable too, as long as nothing waits for the data. */
		ret = nbdc_wait_eof(c.fd, EOF_WAIT_MS, NULL);
		if (ret < 0)
			fail("option of %u bytes announced: the server waits for it", lens[i]);
		raw_close(&c);
	}
}

/* The option's data stops early: EOF (the server must clean up), or a stall
 * (the server must keep serving others). */
static void hs_truncated_option(void)
{
	struct nbdc c, stalled;
	uint8_t d[10] = {0};

	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
	{
		uint8_t h[16];

		memcpy(h, "IHAVEOPT", 8);
		memset(h + 8, 0, 8);
		h[11] = NBDC_OPT_GO;
		h[15] = 100;
		must(nbdc_send(c.fd, h, 16, 1000), "send header");
		must(nbdc_send(c.fd, d, sizeof(d), 1000), "send 10 of 100 bytes");
	}
	shutdown(c.fd, SHUT_WR);
	expect_hangup(c.fd, "option truncated by EOF");
	raw_close(&c);

	/* Half an option header, then silence. */
	raw_open(&stalled, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
	must(nbdc_send(stalled.fd, "IHAVE", 5, 1000), "send");
	good_check("a stalled half option header");
	raw_close(&stalled);
}

static void put32be(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
	p[3] = (uint8_t)v;
}

static void put16be(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
}

/* Every reply to opt until ACK or error: the error type, or 0 for ACK. */
static int opt_expect(struct nbdc *c, uint32_t opt, const void *data, uint32_t len)
{
	must(nbdc_opt_send(c, opt, data, len), "send option");
	return nbdc_opt_simple(c, opt);
}

/* INFO/GO whose inner lengths lie; each must get an error reply, and the
 * same session must then succeed with a correct GO. */
static void hs_lying_lengths(void)
{
	struct nbdc c;
	uint8_t d[64];
	uint8_t buf[4096];

	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
	/* option shorter than the fixed fields */
	expect_err(opt_expect(&c, NBDC_OPT_GO, d, 0), NBDC_OPTERR(NBDC_REP_ERR_INVALID), "GO, 0 bytes");
	memset(d, 0, sizeof(d));
	expect_err(opt_expect(&c, NBDC_OPT_INFO, d, 5), NBDC_OPTERR(NBDC_REP_ERR_INVALID), "INFO, 5 bytes");
	/* name length beyond the option */
	put32be(d, 4);
	memcpy(d + 4, "ma", 2);
	expect_err(opt_expect(&c, NBDC_OPT_GO, d, 8), NBDC_OPTERR(NBDC_REP_ERR_INVALID),
		   "GO with name length 4 in an 8-byte option");
	put32be(d, 0xfffffff0u);
	expect_err(opt_expect(&c, NBDC_OPT_INFO, d, 40), NBDC_OPTERR(NBDC_REP_ERR_INVALID),
		   "INFO with name length 0xfffffff0");
	put32be(d, 0xffffffffu);
	expect_err(opt_expect(&c, NBDC_OPT_GO, d, 6), NBDC_OPTERR(NBDC_REP_ERR_INVALID),
		   "GO with name length 0xffffffff");
	/* information request count that disagrees with the length */
	put32be(d, 4);
	memcpy(d + 4, "main", 4);
	put16be(d + 8, 3);
	put16be(d + 10, NBDC_INFO_BLOCK_SIZE);
	expect_err(opt_expect(&c, NBDC_OPT_INFO, d, 12), NBDC_OPTERR(NBDC_REP_ERR_INVALID),
		   "INFO claiming 3 requests, carrying 1");
	put16be(d + 8, 0);
	expect_err(opt_expect(&c, NBDC_OPT_INFO, d, 12), NBDC_OPTERR(NBDC_REP_ERR_INVALID),
		   "INFO claiming 0 requests, carrying 1");
	put16be(d + 8, 0xffff);
	expect_err(opt_expect(&c, NBDC_OPT_GO, d, 12), NBDC_OPTERR(NBDC_REP_ERR_INVALID),
		   "GO claiming 65535 requests");
	/* a good INFO does not end the handshake, and unknown info types are ignored */
	put16be(d + 8, 2);
	put16be(d + 10, 0x7777);
	put16be(d + 12, NBDC_INFO_NAME);
	must(nbdc_opt_send(&c, NBDC_OPT_INFO, d, 14), "send INFO");
	{
		bool got_name = false, got_export = false;

		for (;;) {
			uint32_t o, type, len;

			must(nbdc_opt_reply(&c, &o, &type, buf, sizeof(buf), &len), "INFO reply");
			CHECK(o == NBDC_OPT_INFO);
			if (type == NBDC_REP_ACK)
				break;
			CHECK(type == NBDC_REP_INFO && len >= 2);
			if (buf[1] == NBDC_INFO_NAME && len == 6 && !memcmp(buf + 2, "main", 4))
				got_name = true;
			if (buf[1] == NBDC_INFO_EXPORT && len == 12)
				got_export = true;
		}
		CHECK(got_export);
		(void)got_name; /* NAME is optional for the server */
	}
	/* unknown export */
	expect_err(nbdc_info_go(&c, NBDC_OPT_GO, "nosuch"), NBDC_OPTERR(NBDC_REP_ERR_UNKNOWN),
		   "GO for an unknown export");
	/* and now a correct GO on the same session */
	must(nbdc_info_go(&c, NBDC_OPT_GO, "main"), "GO after the lies");
	CHECK_EQ_SIZE(c.size, MAIN_SIZE);
	if (c.min_block)
		CHECK(c.min_block <= 512 && c.max_block >= 4096);
	check_range(&c, model, rnd(MAIN_SIZE - 8192), 8192, "read after a lying handshake");
	nbdc_close(&c);
}

static void hs_meta_before_structured(void)
{
	struct nbdc c;
	static const char *const q[] = {"base:allocation"};
	static const char *const base[] = {"base:"};
	static const char *const other[] = {"qemu:dirty-bitmap:x", "nosuch:thing"};
	unsigned n;

	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
	expect_err(nbdc_meta(&c, NBDC_OPT_SET_META_CONTEXT, "main", q, 1, &n),
		   NBDC_OPTERR(NBDC_REP_ERR_INVALID), "SET_META_CONTEXT before STRUCTURED_REPLY");
	CHECK(!c.meta);
	/* STRUCTURED_REPLY takes no data */
	expect_err(opt_expect(&c, NBDC_OPT_STRUCTURED_REPLY, "x", 1),
		   NBDC_OPTERR(NBDC_REP_ERR_INVALID), "STRUCTURED_REPLY with data");
	must(opt_expect(&c, NBDC_OPT_STRUCTURED_REPLY, NULL, 0), "STRUCTURED_REPLY");
	c.structured = true;
	/* LIST: "base:" and the empty list both name base:allocation */
	must(nbdc_meta(&c, NBDC_OPT_LIST_META_CONTEXT, "main", base, 1, &n), "LIST base:");
	CHECK_EQ_SIZE(n, 1);
	must(nbdc_meta(&c, NBDC_OPT_LIST_META_CONTEXT, "main", NULL, 0, &n), "LIST all");
	CHECK_EQ_SIZE(n, 1);
	must(nbdc_meta(&c, NBDC_OPT_SET_META_CONTEXT, "main", other, 2, &n), "SET unknown contexts");
	CHECK_EQ_SIZE(n, 0);
	expect_err(nbdc_meta(&c, NBDC_OPT_SET_META_CONTEXT, "nosuch", q, 1, &n),
		   NBDC_OPTERR(NBDC_REP_ERR_UNKNOWN), "SET_META_CONTEXT on an unknown export");
	/* query lengths that lie */
	{
		uint8_t d[64] = {0};

		put32be(d, 4);
		memcpy(d + 4, "main", 4);
		put32be(d + 8, 1);
		put32be(d + 12, 200);
		memcpy(d + 16, "base:allocation", 15);
		expect_err(opt_expect(&c, NBDC_OPT_SET_META_CONTEXT, d, 31),
			   NBDC_OPTERR(NBDC_REP_ERR_INVALID), "query length 200 in a 31-byte option");
		put32be(d + 8, 5);
		put32be(d + 12, 15);
		expect_err(opt_expect(&c, NBDC_OPT_SET_META_CONTEXT, d, 31),
			   NBDC_OPTERR(NBDC_REP_ERR_INVALID), "5 queries announced, 1 sent");
		put32be(d + 8, 1);
		expect_err(opt_expect(&c, NBDC_OPT_SET_META_CONTEXT, d, 40),
			   NBDC_OPTERR(NBDC_REP_ERR_INVALID), "trailing bytes after the queries");
		put32be(d, 0xfffffff8u);
		expect_err(opt_expect(&c, NBDC_OPT_LIST_META_CONTEXT, d, 31),
			   NBDC_OPTERR(NBDC_REP_ERR_INVALID), "meta export name length 0xfffffff8");
	}
	must(nbdc_meta(&c, NBDC_OPT_SET_META_CONTEXT, "main", q, 1, &n), "SET base:allocation");
	CHECK(c.meta && n == 1);
	must(nbdc_info_go(&c, NBDC_OPT_GO, "main"), "GO");
	{
		struct nbdc_extent e[4];

		must(nbdc_block_status(&c, 0, 65536, 0, e, 4, &n), "BLOCK_STATUS after meta negotiation");
	}
	nbdc_close(&c);
}

static void hs_unknown_and_tls(void)
{
	struct nbdc c;
	uint8_t junk[100];

	fill_random(junk, sizeof(junk));
	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
	expect_err(opt_expect(&c, 0x4242, junk, sizeof(junk)), NBDC_OPTERR(NBDC_REP_ERR_UNSUP),
		   "unknown option 0x4242");
	expect_err(opt_expect(&c, 0, NULL, 0), NBDC_OPTERR(NBDC_REP_ERR_UNSUP), "option 0");
	expect_err(opt_expect(&c, 0xffffffffu, junk, 3), NBDC_OPTERR(NBDC_REP_ERR_UNSUP),
		   "option 0xffffffff");
	expect_err(opt_expect(&c, NBDC_OPT_STARTTLS, NULL, 0), NBDC_OPTERR(NBDC_REP_ERR_UNSUP),
		   "STARTTLS on a server without TLS");
	expect_err(opt_expect(&c, NBDC_OPT_LIST, "x", 1), NBDC_OPTERR(NBDC_REP_ERR_INVALID),
		   "LIST with data");
	/* LIST names both exports */
	must(nbdc_opt_send(&c, NBDC_OPT_LIST, NULL, 0), "LIST");
	{
		bool seen_main = false, seen_ro = false;

		for (;;) {
			uint32_t o, type, len;
			uint8_t buf[600];

			must(nbdc_opt_reply(&c, &o, &type, buf, sizeof(buf), &len), "LIST reply");
			CHECK(o == NBDC_OPT_LIST);
			if (type == NBDC_REP_ACK)
				break;
			CHECK(type == NBDC_REP_SERVER && len >= 4);
			if (buf[3] == 4 && !memcmp(buf + 4, "main", 4))
				seen_main = true;
			if (buf[3] == 2 && !memcmp(buf + 4, "ro", 2))
				seen_ro = true;
		}
		CHECK(seen_main && seen_ro);
	}
	/* the session is still usable, in the clear; "" is the default export */
	must(nbdc_info_go(&c, NBDC_OPT_GO, ""), "GO default export after STARTTLS refused");
	CHECK_EQ_SIZE(c.size, MAIN_SIZE);
	check_range(&c, model, 0, 4096, "read default export");
	nbdc_close(&c);
}

static void hs_export_name_and_abort(void)
{
	struct nbdc c;
	uint8_t x[134];

	/* EXPORT_NAME of an unknown export: no way to say no but to hang up */
	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
	must(nbdc_opt_send(&c, NBDC_OPT_EXPORT_NAME, "nosuch", 6), "send");
	expect_hangup(c.fd, "EXPORT_NAME nosuch");
	raw_close(&c);
	/* EXPORT_NAME without NO_ZEROES: 124 zero bytes follow size and flags */
	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE);
	must(nbdc_opt_send(&c, NBDC_OPT_EXPORT_NAME, "ro", 2), "send");
	must(nbdc_recv(c.fd, x, sizeof(x), 5000), "export data");
	c.eflags = (uint16_t)(x[8] << 8 | x[9]);
	CHECK(c.eflags & NBDC_FLAG_READ_ONLY);
	for (int i = 10; i < 134; i++)
		CHECK(x[i] == 0);
	check_range(&c, ro_model, RO_SIZE - 4096, 4096, "ro read after EXPORT_NAME");
	nbdc_close(&c);
	/* ABORT: an ACK (optional) and the end */
	raw_open(&c, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
	must(nbdc_opt_send(&c, NBDC_OPT_ABORT, NULL, 0), "send ABORT");
	expect_hangup(c.fd, "ABORT");
	raw_close(&c);
	/* Clients that leave early */
	{
		int fd = nbdc_connect_unix(srv_main.sock);

		if (fd < 0)
			fail("connect: %s", strerror(-fd));
		close(fd);
		fd = nbdc_connect_unix(srv_main.sock);
		if (fd < 0)
			fail("connect: %s", strerror(-fd));
		must(nbdc_recv(fd, x, 18, 5000), "greeting");
		must(nbdc_send(fd, "\0\0", 2, 1000), "half the client flags");
		close(fd);
	}
}

/* ---- transmission cases -------------------------------------------------------- */

static void tx_unknown_commands(void)
{
	struct nbdc c;
	static const uint16_t types[] = {NBDC_CMD_CACHE, 8, 9, 99, 0x7fff, 0xffff};

	open_main(&c, rnd(2) ? NBDC_WANT_STRUCTURED : 0);
	CHECK(!(c.eflags & NBDC_FLAG_READ_ONLY));
	CHECK(c.eflags & NBDC_FLAG_SEND_FLUSH);
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		snprintf(ctx, sizeof(ctx), "command type %u", types[i]);
		expect_err(nbdc_cmd(&c, types[i], 0, 0, 4096), NBDC_EINVAL, ctx);
	}
	check_range(&c, model, 0, 65536, "read after unknown commands");
	nbdc_close(&c);
}

static void tx_out_of_range(void)
{
	struct nbdc c;
	uint8_t buf[1024] = {0};
	uint8_t tail[512];

	memcpy(tail, model + MAIN_SIZE - 512, 512);
	open_main(&c, NBDC_WANT_META);
	expect_err(nbdc_pread(&c, buf, 512, MAIN_SIZE, 0), NBDC_EINVAL, "READ at the end");
	expect_err(nbdc_pread(&c, buf, 1024, MAIN_SIZE - 512, 0), NBDC_EINVAL, "READ across the end");
	expect_err(nbdc_pread(&c, buf, 1024, UINT64_MAX - 511, 0), NBDC_EINVAL,
		   "READ whose end overflows 64 bits");
	expect_err(nbdc_pread(&c, buf, 512, 1ull << 63, 0), NBDC_EINVAL, "READ at 2^63");
	fill_random(buf, sizeof(buf));
	expect_err2(nbdc_pwrite(&c, buf, 1024, MAIN_SIZE - 512, 0), NBDC_ENOSPC, NBDC_EINVAL,
		    "WRITE across the end");
	expect_err2(nbdc_pwrite(&c, buf, 1024, UINT64_MAX - 511, 0), NBDC_ENOSPC, NBDC_EINVAL,
		    "WRITE whose end overflows");
	expect_err2(nbdc_cmd(&c, NBDC_CMD_WRITE_ZEROES, 0, MAIN_SIZE - 512, 1024), NBDC_ENOSPC,
		    NBDC_EINVAL, "WRITE_ZEROES across the end");
	expect_err2(nbdc_cmd(&c, NBDC_CMD_TRIM, 0, MAIN_SIZE, 512), NBDC_ENOSPC, NBDC_EINVAL,
		    "TRIM beyond the end");
	{
		struct nbdc_extent e[4];
		unsigned n;

		expect_err(nbdc_block_status(&c, MAIN_SIZE - 512, 1024, 0, e, 4, &n), NBDC_EINVAL,
			   "BLOCK_STATUS across the end");
	}
	check_range(&c, model, MAIN_SIZE - 512, 512, "last sector after refused writes");
	CHECK(!memcmp(tail, model + MAIN_SIZE - 512, 512));
	nbdc_close(&c);
}

static void tx_zero_length(void)
{
	struct nbdc c;
	uint8_t b[1];
	int ret;
	static const uint16_t types[] = {NBDC_CMD_READ, NBDC_CMD_WRITE, NBDC_CMD_WRITE_ZEROES,
					 NBDC_CMD_TRIM};

	open_main(&c, rnd(2) ? NBDC_WANT_STRUCTURED : 0);
	for (size_t i = 0; i < 4; i++) {
		snprintf(ctx, sizeof(ctx), "command %u with length 0", types[i]);
		/* The protocol leaves length 0 open: success or EINVAL, and the
		 * connection goes on. */
		ret = types[i] == NBDC_CMD_READ ? nbdc_pread(&c, b, 0, 4096, 0)
						: nbdc_cmd(&c, types[i], 0, 4096, 0);
		expect_err2(ret, 0, NBDC_EINVAL, ctx);
	}
	check_range(&c, model, 0, 8192, "read after zero-length commands");
	nbdc_close(&c);
}

static void tx_oversize(void)
{
	struct nbdc c;
	int ret;

	open_main(&c, rnd(2) ? NBDC_WANT_STRUCTURED : 0);
	if (c.max_block)
		CHECK(c.max_block <= MAX_REQ);
	/* a read over the maximum: an error reply, the connection goes on */
	{
		struct nbdc_reply r = {0};

		must(nbdc_request(&c, 0, NBDC_CMD_READ, 77, 0, MAX_REQ + 512, NULL, 0), "send");
		must(nbdc_reply(&c, &r, NULL, 0, 0), "reply to an oversize READ");
		CHECK(r.handle == 77);
		if (r.error == 0)
			fail("a READ of %u bytes (maximum %u) succeeded", MAX_REQ + 512, MAX_REQ);
	}
	check_range(&c, model, 4096, 4096, "read after an oversize READ");
	/* a write over the maximum: its payload cannot be skipped, hang up */
	must(nbdc_request(&c, 0, NBDC_CMD_WRITE, 78, 0, MAX_REQ + 512, NULL, 0), "send");
	expect_hangup(c.fd, "oversize WRITE");
	raw_close(&c);
	/* a write with the largest length (0xffffffff): hang up */
	open_main(&c, 0);
	ret = nbdc_request(&c, 0, NBDC_CMD_WRITE, 79, 0, 0xffffffffu, "abcd", 4);
	if (ret < 0 && ret != -EPIPE)
		fail("send: %s", strerror(-ret));
	expect_hangup(c.fd, "WRITE of 0xffffffff bytes");
	raw_close(&c);
}

static void tx_bad_magic(void)
{
	struct nbdc c;
	uint8_t junk[28];
	struct nbdc_reply r = {0};
	uint8_t buf[4096];
	int ret;

	open_main(&c, 0);
	fill_random(junk, sizeof(junk));
	junk[0] = 0x11; /* never the request magic */
	/* a good READ, then garbage in the same write */
	must(nbdc_request(&c, 0, NBDC_CMD_READ, 5, 8192, 4096, NULL, 0), "send READ");
	must(nbdc_send(c.fd, junk, sizeof(junk), 1000), "send garbage");
	/* The READ may or may not be answered before the hang-up. */
	ret = nbdc_reply(&c, &r, buf, 8192, sizeof(buf));
	if (ret == 0) {
		CHECK(r.handle == 5 && r.error == 0);
		must(nbdc_recv(c.fd, buf, sizeof(buf), 5000), "READ data");
		CHECK(!memcmp(buf, model + 8192, sizeof(buf)));
	}
	expect_hangup(c.fd, "bad request magic");
	raw_close(&c);
}

/* WRITE_ZEROES over blocks that read as zero must not allocate them (they
 * stay holes); over data it zeroes. */
static void tx_zeroes_no_alloc(void)
{
	struct nbdc c;
	struct nbdc_extent e[4];
	unsigned n, done = 0;

	open_main(&c, NBDC_WANT_META);
	for (uint64_t b = 0; b < MAIN_SIZE / MAIN_BLOCK && done < 2; b++) {
		if (touched[b])
			continue;
		snprintf(ctx, sizeof(ctx), "WRITE_ZEROES over never-written block %llu",
			 (unsigned long long)b);
		must(nbdc_cmd(&c, NBDC_CMD_WRITE_ZEROES, done ? NBDC_CMD_FLAG_FUA : 0, b * MAIN_BLOCK,
			      (uint32_t)MAIN_BLOCK), ctx);
		must(nbdc_block_status(&c, b * MAIN_BLOCK, (uint32_t)MAIN_BLOCK, 0, e, 4, &n), ctx);
		if (n != 1 || e[0].length != MAIN_BLOCK ||
		    e[0].flags != (NBDC_STATE_HOLE | NBDC_STATE_ZERO))
			fail("%s: it is no longer one hole (%u extents, first %u bytes flags %#x)", ctx,
			     n, e[0].length, e[0].flags);
		done++;
	}
	if (!done)
		printf("  (no never-written block left to zero)\n");
	nbdc_close(&c);
}

static void tx_block_status(void)
{
	struct nbdc c;
	struct nbdc_extent e[1100];
	unsigned n;
	uint64_t pos = 0;

	open_main(&c, NBDC_WANT_STRUCTURED);
	expect_err(nbdc_block_status(&c, 0, 65536, 0, e, 4, &n), NBDC_EINVAL,
		   "BLOCK_STATUS without a negotiated context");
	nbdc_close(&c);
	open_main(&c, 0);
	expect_err(nbdc_cmd(&c, NBDC_CMD_BLOCK_STATUS, 0, 0, 65536), NBDC_EINVAL,
		   "BLOCK_STATUS on simple replies");
	nbdc_close(&c);

	/* With the context: the extents tile the range, zero/hole runs read as
	 * zeros, and blocks nobody ever wrote are holes. */
	open_main(&c, NBDC_WANT_META);
	while (pos < MAIN_SIZE) {
		uint32_t len = (uint32_t)(MAIN_SIZE - pos < 48 * MiB ? MAIN_SIZE - pos : 48 * MiB);
		uint16_t flags = rnd(3) == 0 ? NBDC_CMD_FLAG_REQ_ONE : 0;
		uint64_t sum = 0;

		snprintf(ctx, sizeof(ctx), "BLOCK_STATUS %llu+%u flags %#x", (unsigned long long)pos,
			 len, flags);
		must(nbdc_block_status(&c, pos, len, flags, e, 1100, &n), ctx);
		if (flags && n != 1)
			fail("REQ_ONE gave %u extents", n);
		for (unsigned i = 0; i < n; i++) {
			if (e[i].length == 0 || e[i].length % 512)
				fail("extent %u has length %u", i, e[i].length);
			if (e[i].flags & ~(NBDC_STATE_HOLE | NBDC_STATE_ZERO))
				fail("extent %u has unknown flags %#x", i, e[i].flags);
			if (e[i].flags & NBDC_STATE_ZERO)
				for (uint64_t b = 0; b < e[i].length; b++)
					if (model[pos + sum + b])
						fail("extent at %llu+%u says zero, byte %llu is %#x",
						     (unsigned long long)(pos + sum), e[i].length,
						     (unsigned long long)(pos + sum + b),
						     model[pos + sum + b]);
			if (!(e[i].flags & NBDC_STATE_HOLE))
				for (uint64_t o = pos + sum; o < pos + sum + e[i].length; o += MAIN_BLOCK)
					if (!touched[o / MAIN_BLOCK])
						fail("never-written block %llu reported as data",
						     (unsigned long long)(o / MAIN_BLOCK));
			sum += e[i].length;
		}
		/* fewer bytes than asked are allowed, more are not */
		if (sum > len || sum == 0)
			fail("extents add up to %llu of %u", (unsigned long long)sum, len);
		pos += sum;
	}
	/* unknown flags on BLOCK_STATUS */
	expect_err(nbdc_block_status(&c, 0, 4096, 0x100, e, 4, &n), NBDC_EINVAL,
		   "BLOCK_STATUS with flag 0x100");
	nbdc_close(&c);
}

static void tx_unknown_flags(void)
{
	struct nbdc c;
	uint8_t buf[4096];
	uint64_t off = rnd(MAIN_SIZE / 4096) * 4096;

	open_main(&c, 0);
	expect_err(nbdc_pread(&c, buf, 4096, off, 0x8000), NBDC_EINVAL, "READ with flag 0x8000");
	expect_err(nbdc_pread(&c, buf, 4096, off, NBDC_CMD_FLAG_DF), NBDC_EINVAL,
		   "READ with DF on simple replies");
	expect_err(nbdc_pread(&c, buf, 4096, off, NBDC_CMD_FLAG_REQ_ONE), NBDC_EINVAL,
		   "READ with REQ_ONE");
	fill_random(buf, sizeof(buf));
	expect_err(nbdc_pwrite(&c, buf, 4096, off, 0x8000), NBDC_EINVAL, "WRITE with flag 0x8000");
	expect_err(nbdc_pwrite(&c, buf, 4096, off, NBDC_CMD_FLAG_NO_HOLE), NBDC_EINVAL,
		   "WRITE with NO_HOLE");
	if (!(c.eflags & (1u << 11))) /* NBD_FLAG_SEND_FAST_ZERO */
		expect_err(nbdc_cmd(&c, NBDC_CMD_WRITE_ZEROES, NBDC_CMD_FLAG_FAST_ZERO, off, 4096),
			   NBDC_EINVAL, "WRITE_ZEROES with FAST_ZERO (not advertised)");
	/* nothing of that reached the disk */
	check_range(&c, model, off, 4096, "data after refused writes");
	nbdc_close(&c);
	/* DF is fine once structured replies are on */
	open_main(&c, NBDC_WANT_STRUCTURED);
	CHECK(c.eflags & NBDC_FLAG_SEND_DF);
	must(nbdc_pread(&c, buf, 4096, off, NBDC_CMD_FLAG_DF), "READ with DF, structured");
	CHECK(!memcmp(buf, model + off, 4096));
	nbdc_close(&c);
}

static void tx_read_only(void)
{
	struct nbdc c;
	uint8_t buf[8192];

	must(nbdc_open(&c, srv_main.sock, "ro", rnd(2) ? NBDC_WANT_META : 0), "open ro");
	CHECK_EQ_SIZE(c.size, RO_SIZE);
	CHECK(c.eflags & NBDC_FLAG_READ_ONLY);
	fill_random(buf, sizeof(buf));
	expect_err(nbdc_pwrite(&c, buf, 4096, 0, 0), NBDC_EPERM, "WRITE to a read-only export");
	expect_err(nbdc_pwrite(&c, buf, 4096, 4096, NBDC_CMD_FLAG_FUA), NBDC_EPERM,
		   "WRITE+FUA to a read-only export");
	expect_err(nbdc_pwrite(&c, buf, 777, 1001, 0), NBDC_EPERM, "unaligned WRITE, read-only");
	expect_err(nbdc_cmd(&c, NBDC_CMD_WRITE_ZEROES, 0, 0, 65536), NBDC_EPERM,
		   "WRITE_ZEROES to a read-only export");
	expect_err(nbdc_cmd(&c, NBDC_CMD_TRIM, 0, 0, 65536), NBDC_EPERM,
		   "TRIM on a read-only export");
	must(nbdc_cmd(&c, NBDC_CMD_FLUSH, 0, 0, 0), "FLUSH on a read-only export");
	for (int i = 0; i < 8; i++) {
		uint32_t len = (uint32_t)rnd_in(1, sizeof(buf));
		uint64_t off = rnd(RO_SIZE - len);

		check_range(&c, ro_model, off, len, "ro read");
	}
	nbdc_close(&c);
}

/* DISC right behind a batch of writes: every write is answered, then EOF,
 * and the writes are in the disk. */
static void tx_disc_in_flight(void)
{
	enum { N = 16, LEN = 65536 };
	struct nbdc c;
	uint8_t *bufs = malloc((size_t)N * LEN);
	uint64_t offs[N];
	bool answered[N] = {false};

	if (!bufs)
		fail("out of memory");
	open_main(&c, rnd(2) ? NBDC_WANT_STRUCTURED : 0);
	fill_random(bufs, (size_t)N * LEN);
	for (int i = 0; i < N; i++) {
		/* distinct 64 KiB slots, so the order of execution does not matter */
		offs[i] = (rnd(MAIN_SIZE / LEN / N) * N + (uint64_t)i) * LEN;
		must(nbdc_request(&c, 0, NBDC_CMD_WRITE, 1000 + (uint64_t)i, offs[i], LEN,
				  bufs + (size_t)i * LEN, LEN), "send WRITE");
	}
	must(nbdc_request(&c, 0, NBDC_CMD_DISC, 2000, 0, 0, NULL, 0), "send DISC");
	for (int i = 0; i < N; i++) {
		struct nbdc_reply r = {0};

		snprintf(ctx, sizeof(ctx), "reply %d of %d after DISC", i + 1, N);
		must(nbdc_reply(&c, &r, NULL, 0, 0), ctx);
		if (r.handle < 1000 || r.handle >= 1000 + N || answered[r.handle - 1000])
			fail("reply with unexpected handle %llu", (unsigned long long)r.handle);
		answered[r.handle - 1000] = true;
		if (r.error)
			fail("write %llu failed: %s", (unsigned long long)r.handle,
			     nbdc_strerror((int)r.error));
	}
	expect_hangup(c.fd, "after DISC");
	raw_close(&c);
	for (int i = 0; i < N; i++) {
		memcpy(model + offs[i], bufs + (size_t)i * LEN, LEN);
		touch(offs[i], LEN);
	}
	free(bufs);
	open_main(&c, 0);
	for (int i = 0; i < N; i++)
		check_range(&c, model, offs[i], LEN, "write answered before DISC");
	nbdc_close(&c);
}

/* Unaligned reads and writes (the server's read-modify-write path), checked
 * against the model; simple and structured replies. */
static void tx_unaligned(void)
{
	struct nbdc c;

	for (int round = 0; round < 2; round++) {
		open_main(&c, round ? NBDC_WANT_STRUCTURED : 0);
		for (int i = 0; i < 30; i++) {
			uint32_t len = (uint32_t)(rnd(4) ? rnd_in(1, 2000) : rnd_in(1, 3 * MiB));
			uint64_t off = rnd(MAIN_SIZE - len);

			if (rnd(4) == 0) /* straddle a VHD block boundary */
				off = rnd_in(1, MAIN_SIZE / MAIN_BLOCK - 1) * MAIN_BLOCK - rnd_in(1, len);
			if (rnd(2)) {
				good_write(&c, off, len, rnd(4) == 0 ? NBDC_CMD_FLAG_FUA : 0);
			} else {
				snprintf(ctx, sizeof(ctx), "write zeroes %llu+%u", (unsigned long long)off,
					 len);
				must(nbdc_cmd(&c, NBDC_CMD_WRITE_ZEROES,
					      rnd(2) ? NBDC_CMD_FLAG_NO_HOLE : 0, off, len), ctx);
				memset(model + off, 0, len);
				touch(off, len); /* a partial sector is rewritten: may allocate */
			}
			{
				uint64_t lo = off > 700 ? off - 700 : 0;
				uint64_t hi = off + len + 700 < MAIN_SIZE ? off + len + 700 : MAIN_SIZE;

				check_range(&c, model, lo, (uint32_t)(hi - lo), "unaligned read-back");
			}
		}
		must(nbdc_cmd(&c, NBDC_CMD_FLUSH, 0, 0, 0), "flush");
		nbdc_close(&c);
	}
}

/* Handles are opaque: 0 and all-ones come back as sent. */
static void tx_handles(void)
{
	struct nbdc c;
	static const uint64_t handles[] = {0, UINT64_MAX, 0x8000000000000000ull, 1};

	open_main(&c, NBDC_WANT_STRUCTURED);
	for (size_t i = 0; i < 4; i++) {
		struct nbdc_reply r = {0};
		uint8_t buf[512];

		must(nbdc_request(&c, 0, NBDC_CMD_READ, handles[i], 512, 512, NULL, 0), "send");
		must(nbdc_reply(&c, &r, buf, 512, sizeof(buf)), "reply");
		if (r.handle != handles[i])
			fail("handle %#llx came back as %#llx", (unsigned long long)handles[i],
			     (unsigned long long)r.handle);
		CHECK(!memcmp(buf, model + 512, 512));
	}
	nbdc_close(&c);
}

/* A WRITE whose payload arrives a few bytes at a time. */
static void tx_dribble(void)
{
	struct nbdc c;
	uint32_t len = 65536 + 512;
	uint64_t off = rnd(MAIN_SIZE / 512 - len / 512) * 512;
	uint8_t *buf = malloc(len);
	struct nbdc_reply r = {0};
	size_t pos = 0;

	if (!buf)
		fail("out of memory");
	fill_random(buf, len);
	open_main(&c, 0);
	must(nbdc_request(&c, 0, NBDC_CMD_WRITE, 9, off, len, NULL, 0), "send header");
	while (pos < len) {
		size_t n = rnd_in(1, 9000);

		if (n > len - pos)
			n = len - pos;
		must(nbdc_send(c.fd, buf + pos, n, 5000), "send a piece");
		pos += n;
		if (rnd(4) == 0)
			sleep_ms(1);
	}
	must(nbdc_reply(&c, &r, NULL, 0, 0), "reply to the dribbled WRITE");
	CHECK(r.handle == 9 && r.error == 0);
	memcpy(model + off, buf, len);
	touch(off, len);
	free(buf);
	check_range(&c, model, off, len, "dribbled write read-back");
	nbdc_close(&c);
}

/* Several hundred requests in flight (more than the server reads ahead), of
 * every kind, answered in any order, each exactly once. */
static void tx_many_in_flight(void)
{
	enum { N = 600, LEN = 8192 };
	struct nbdc c;
	uint8_t *wbuf = malloc((size_t)N * LEN), *rbuf = malloc((size_t)N * LEN);
	uint8_t *before = malloc(MAIN_SIZE / 2);
	bool *seen = calloc(N, 1);
	uint64_t *offs = malloc(N * sizeof(*offs));
	bool *is_write = malloc(N);
	uint8_t *sendbuf = malloc((size_t)N * (28 + LEN));
	uint8_t *scratch = malloc(MAIN_SIZE);
	size_t sl = 0;
	int structured = (int)rnd(2);

	if (!wbuf || !rbuf || !seen || !offs || !is_write || !sendbuf || !before || !scratch)
		fail("out of memory");
	/* writes go to the first half, reads come from the second: disjoint */
	fill_random(wbuf, (size_t)N * LEN);
	for (int i = 0; i < N; i++) {
		uint8_t *h = sendbuf + sl;

		is_write[i] = rnd(2);
		offs[i] = is_write[i] ? (uint64_t)i * (MAIN_SIZE / 2 / N) / 4096 * 4096
				      : MAIN_SIZE / 2 + rnd(MAIN_SIZE / 2 / LEN) * LEN;
		put32be(h, NBDC_REQUEST_MAGIC);
		put16be(h + 4, 0);
		put16be(h + 6, is_write[i] ? NBDC_CMD_WRITE : NBDC_CMD_READ);
		memset(h + 8, 0, 4);
		put32be(h + 12, (uint32_t)i);
		put32be(h + 16, (uint32_t)(offs[i] >> 32));
		put32be(h + 20, (uint32_t)offs[i]);
		put32be(h + 24, LEN);
		sl += 28;
		if (is_write[i]) {
			memcpy(sendbuf + sl, wbuf + (size_t)i * LEN, LEN);
			sl += LEN;
		}
	}
	memcpy(before, model + MAIN_SIZE / 2, MAIN_SIZE / 2);
	open_main(&c, structured ? NBDC_WANT_STRUCTURED : 0);
	/* Send everything, reading whole replies as they come so that neither
	 * side blocks.  Structured read data lands at its disk offset in
	 * scratch; simple read data follows the header of its reply. */
	{
		size_t sent = 0;
		int got = 0;
		int64_t deadline = now_ms() + 60000;

		while (got < N) {
			struct pollfd p = {.fd = c.fd, .events = POLLIN | (sent < sl ? POLLOUT : 0)};

			if (now_ms() > deadline)
				fail("%d of %d replies after 60 s", got, N);
			if (poll(&p, 1, 1000) < 0 && errno != EINTR)
				fail("poll: %s", strerror(errno));
			if ((p.revents & POLLOUT) && sent < sl) {
				ssize_t n = send(c.fd, sendbuf + sent, sl - sent,
						 MSG_DONTWAIT | MSG_NOSIGNAL);

				if (n < 0 && errno != EAGAIN)
					fail("send: %s", strerror(errno));
				if (n > 0)
					sent += (size_t)n;
			}
			if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
				struct nbdc_reply r = {0};
				uint64_t h;

				must(nbdc_reply(&c, &r, scratch, 0, MAIN_SIZE), "reply");
				h = r.handle;
				if (h >= N || seen[h])
					fail("reply for unknown or repeated handle %llu",
					     (unsigned long long)h);
				if (r.error)
					fail("request %llu failed: %s", (unsigned long long)h,
					     nbdc_strerror((int)r.error));
				if (!is_write[h] && !r.structured)
					must(nbdc_recv(c.fd, rbuf + h * LEN, LEN, 5000), "read data");
				if (!is_write[h] && r.structured) {
					if (r.data_bytes != LEN)
						fail("read %llu: %llu bytes of data", (unsigned long long)h,
						     (unsigned long long)r.data_bytes);
					memcpy(rbuf + h * LEN, scratch + offs[h], LEN);
				}
				seen[h] = true;
				got++;
			}
		}
	}
	for (int i = 0; i < N; i++) {
		if (is_write[i]) {
			memcpy(model + offs[i], wbuf + (size_t)i * LEN, LEN);
			touch(offs[i], LEN);
		} else if (memcmp(rbuf + (size_t)i * LEN, before + (offs[i] - MAIN_SIZE / 2), LEN)) {
			fail("pipelined read %d at %llu returned wrong data", i,
			     (unsigned long long)offs[i]);
		}
	}
	for (int i = 0; i < N; i++)
		if (is_write[i])
			check_range(&c, model, offs[i], LEN, "pipelined write read-back");
	nbdc_close(&c);
	free(wbuf);
	free(rbuf);
	free(before);
	free(seen);
	free(offs);
	free(is_write);
	free(sendbuf);
	free(scratch);
}

/* A client that sends requests and never reads its replies stalls only
 * itself. */
static void tx_no_reader(void)
{
	struct nbdc hog;
	uint8_t h[28];
	int64_t t0;

	open_main(&hog, 0);
	put32be(h, NBDC_REQUEST_MAGIC);
	put16be(h + 4, 0);
	put16be(h + 6, NBDC_CMD_READ);
	for (int i = 0; i < 400; i++) {
		uint64_t off = rnd(MAIN_SIZE / MiB) * MiB;

		memset(h + 8, 0, 8);
		put32be(h + 12, (uint32_t)i);
		put32be(h + 16, 0);
		put32be(h + 20, (uint32_t)off);
		put32be(h + 24, 65536);
		/* The server may stop reading once its socket buffer is full. */
		if (nbdc_send(hog.fd, h, 28, 200) < 0)
			break;
	}
	t0 = now_ms();
	good_check("a client that does not read its replies");
	if (now_ms() - t0 > 10000)
		fail("a good client took %lld ms next to a stalled reader", (long long)(now_ms() - t0));
	raw_close(&hog);
}

/* Resident memory of a process, in KiB (0 when unknown). */
static uint64_t rss_kib(pid_t pid)
{
	char path[64], line[256];
	uint64_t v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			v = strtoull(line + 6, NULL, 10);
	fclose(f);
	return v;
}

/* One client pipelines maximum-size READs and reads no reply: what the
 * server holds for it must stay bounded (a few requests' worth), or any
 * client can take the host's memory. */
static void tx_memory_bound(void)
{
	enum { N = 48 };
	struct nbdc hog;
	uint8_t h[28];
	uint64_t base, peak = 0;
	int64_t end;

	base = rss_kib(srv_main.pid);
	open_main(&hog, 0);
	put32be(h, NBDC_REQUEST_MAGIC);
	put16be(h + 4, 0);
	put16be(h + 6, NBDC_CMD_READ);
	for (int i = 0; i < N; i++) {
		memset(h + 8, 0, 8);
		put32be(h + 12, (uint32_t)i);
		memset(h + 16, 0, 8);
		put32be(h + 24, MAX_REQ);
		if (nbdc_send(hog.fd, h, 28, 200) < 0)
			break;
	}
	for (end = now_ms() + 2000; now_ms() < end; sleep_ms(20)) {
		uint64_t r = rss_kib(srv_main.pid);

		if (r > peak)
			peak = r;
	}
	raw_close(&hog);
	printf("  (server RSS %llu MiB before, %llu MiB peak with %d x 32 MiB reads unread)\n",
	       (unsigned long long)(base >> 10), (unsigned long long)(peak >> 10), N);
	if (peak > base + 768 * 1024)
		fail("one client with %d pipelined 32 MiB READs and no reader grew the server by "
		     "%llu MiB: memory per connection is not bounded",
		     N, (unsigned long long)((peak - base) >> 10));
}

/* ---- many clients -------------------------------------------------------------- */

static void many_clients(void)
{
	enum { N = 100 };
	struct nbdc c[N];
	int64_t t0;

	for (int i = 0; i < N; i++) {
		int fd = nbdc_connect_unix(srv_main.sock);

		if (fd < 0)
			fail("connection %d: %s", i, strerror(-fd));
		nbdc_init(&c[i], fd);
		if (i % 2 == 0)
			continue; /* stalls before even reading the greeting */
		must(nbdc_greeting(&c[i], NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES), "greeting");
		if (i % 4 == 1) {
			/* stalls inside an option */
			must(nbdc_send(c[i].fd, "IHAVEOPT\0\0\0\7\0\0\0\40", 16, 1000), "option header");
		} else {
			must(nbdc_info_go(&c[i], NBDC_OPT_GO, i % 8 == 3 ? "ro" : "main"), "GO");
		}
	}
	t0 = now_ms();
	good_check("100 connections, half stalled in the handshake");
	if (now_ms() - t0 > 5000)
		fail("the good client took %lld ms", (long long)(now_ms() - t0));
	/* the idle ones in transmission still work */
	for (int i = 3; i < N; i += 4) {
		uint8_t buf[512];

		if (c[i].eflags & NBDC_FLAG_READ_ONLY)
			must(nbdc_pread(&c[i], buf, 512, 0, 0), "idle ro client read");
		else
			check_range(&c[i], model, rnd(MAIN_SIZE / 512) * 512, 512, "idle client read");
	}
	for (int i = 0; i < N; i++)
		if (i % 4 == 3)
			nbdc_close(&c[i]);
		else
			raw_close(&c[i]);
}

/* ---- the small server: slots and shutdown ------------------------------------------ */

/* A client that dies in the middle of a WRITE payload must give its
 * connection slot back, and must not keep the server from stopping. */
static void small_server(void)
{
	char spec[PATH_MAX + 8];
	const char *const argv[] = {"--max-connections", "4", "--workers", "1", "-e", spec, NULL};
	uint8_t payload[1000];

	snprintf(spec, sizeof(spec), "main=%s", main_path);
	server_start(&srv_small, "small", argv);
	fill_random(payload, sizeof(payload));
	/* Each client dies in the middle of a 1 MiB WRITE payload; closing is
	 * asynchronous, so every open gets a few seconds to find a free slot. */
	for (int i = 0; i < 9; i++) {
		int64_t deadline = now_ms() + 5000;
		struct nbdc c;
		int ret;

		for (;;) {
			ret = nbdc_open(&c, srv_small.sock, "main", i % 2 ? NBDC_WANT_STRUCTURED : 0);
			if (ret == 0 || now_ms() > deadline)
				break;
			sleep_ms(50);
		}
		if (ret != 0) {
			print_log_tail(&srv_small);
			fail("--max-connections 4: after %d clients died in the middle of a WRITE "
			     "payload no client gets in (%s): their connections were never closed",
			     i, nbdc_strerror(ret));
		}
		if (i == 8) {
			check_range(&c, model, 0, 65536, "read on the small server");
			nbdc_close(&c);
			break;
		}
		must(nbdc_request(&c, 0, NBDC_CMD_WRITE, 1, 0, (uint32_t)MiB, payload,
				  sizeof(payload)), "half a write");
		close(c.fd);
	}
	/* SIGTERM while a client is stuck in a payload and another in the handshake */
	{
		struct nbdc stuck, hs;

		must(nbdc_open(&stuck, srv_small.sock, "main", 0), "open");
		must(nbdc_request(&stuck, 0, NBDC_CMD_WRITE, 1, 0, (uint32_t)MiB, payload,
				  sizeof(payload)), "half a write");
		raw_open(&hs, &srv_small, NBDC_FLAG_FIXED_NEWSTYLE);
		sleep_ms(100);
		server_stop(&srv_small);
		raw_close(&stuck);
		raw_close(&hs);
	}
}

/* ---- setup and the end ------------------------------------------------------------ */

static void make_images(void)
{
	struct vhd_create_opts o = {.type = VHD_TYPE_DYNAMIC, .size = MAIN_SIZE,
				    .block_size = MAIN_BLOCK};
	struct vhd_open_opts oo = {.flags = VHD_OPEN_RDWR};
	struct vhd_err err;
	struct vhd_image *img;
	uint8_t *buf = malloc(MiB);

	if (!buf)
		fail("out of memory");
	snprintf(main_path, sizeof(main_path), "%s/main.vhd", tmpdir);
	snprintf(ro_path, sizeof(ro_path), "%s/ro.vhd", tmpdir);
	if (vhd_create(main_path, &o, &err) < 0)
		fail("create: %s", err.msg);
	o.size = RO_SIZE;
	o.block_size = 64 * KiB;
	if (vhd_create(ro_path, &o, &err) < 0)
		fail("create: %s", err.msg);
	if (vhd_open(main_path, &oo, &img, &err) < 0)
		fail("open: %s", err.msg);
	/* data in about a third of the blocks, some of it partial */
	for (uint64_t b = 0; b < MAIN_SIZE / MAIN_BLOCK; b++) {
		uint64_t len, off;

		if (rnd(3))
			continue;
		len = rnd_in(1, MiB);
		off = b * MAIN_BLOCK + rnd(MAIN_BLOCK - len);
		fill_random(buf, len);
		if (vhd_pwrite(img, buf, len, off) < 0)
			fail("vhd_pwrite");
		memcpy(model + off, buf, len);
		touched[b] = true;
	}
	if (vhd_close(img) < 0)
		fail("close main");
	if (vhd_open(ro_path, &oo, &img, &err) < 0)
		fail("open: %s", err.msg);
	for (int i = 0; i < 20; i++) {
		uint64_t len = rnd_in(1, 200 * KiB), off = rnd(RO_SIZE - len);

		fill_random(buf, len);
		if (vhd_pwrite(img, buf, len, off) < 0)
			fail("vhd_pwrite ro");
		memcpy(ro_model + off, buf, len);
	}
	if (vhd_close(img) < 0)
		fail("close ro");
	free(buf);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *p = NULL;
	long l;

	if (!f)
		fail("%s: %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) == 0 && (l = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		p = malloc((size_t)l + 1);
		if (p && fread(p, 1, (size_t)l, f) != (size_t)l) {
			free(p);
			p = NULL;
		}
		*len = (size_t)l;
	}
	fclose(f);
	if (!p)
		fail("%s: cannot read", path);
	return p;
}

/* shared: while the server holds the image (it is idle between cases) */
static void check_clean(const char *path, bool shared)
{
	struct vhd_check_report rep = {0};
	struct vhd_open_opts o = {.flags = shared ? VHD_OPEN_NO_LOCK : 0};
	struct vhd_err err;

	if (vhd_check(path, &o, &rep, &err) < 0)
		fail("check %s: %s", path, err.msg);
	if (vhd_check_count(&rep, VHD_SEV_WARNING)) {
		for (size_t i = 0; i < rep.count; i++)
			fprintf(stderr, "  %s: %s: %s\n", rep.problems[i].file, rep.problems[i].field,
				rep.problems[i].msg);
		fail("%s does not check clean", path);
	}
	vhd_check_report_free(&rep);
}

static void compare_image(const char *path, const uint8_t *m, uint64_t size)
{
	struct vhd_image *img;
	struct vhd_err err;
	uint8_t *buf = malloc(MiB);

	if (!buf || vhd_open(path, NULL, &img, &err) < 0)
		fail("open %s: %s", path, buf ? err.msg : "out of memory");
	CHECK_EQ_SIZE(vhd_virtual_size(img), size);
	for (uint64_t off = 0; off < size; off += MiB) {
		if (vhd_pread(img, buf, MiB, off) < 0)
			fail("read %s", path);
		for (uint64_t i = 0; i < MiB; i++)
			if (buf[i] != m[off + i])
				fail("%s: byte %llu is %#x, the model says %#x", path,
				     (unsigned long long)(off + i), buf[i], m[off + i]);
	}
	vhd_close(img);
	free(buf);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

#define RUN(fn)                                                    \
	do {                                                       \
		int64_t t_ = now_ms();                             \
		snprintf(ctx, sizeof(ctx), "%s", #fn);             \
		fn();                                              \
		good_check(#fn);                                   \
		check_clean(main_path, true);                      \
		printf("  %-28s ok (%lld ms)\n", #fn, (long long)(now_ms() - t_)); \
		fflush(stdout);                                    \
	} while (0)

int main(void)
{
	const char *s = getenv("TEST_SEED");
	const char *t = getenv("TMPDIR");

	vspd = getenv("VSPD");
	if (!vspd || access(vspd, X_OK) < 0) {
		printf("SKIP: VSPD (the vhd-vspd binary) is not set or not executable (run through ctest)\n");
		return 77;
	}
	seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16;
	rng = seed;
	printf("seed %llu (replay with TEST_SEED=%llu)\n", (unsigned long long)seed,
	       (unsigned long long)seed);
	snprintf(tmpdir, sizeof(tmpdir), "%s/nbd-proto.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir))
		fail("mkdtemp: %s", strerror(errno));
	atexit(kill_servers);
	signal(SIGPIPE, SIG_IGN);
	model = calloc(1, MAIN_SIZE);
	ro_model = calloc(1, RO_SIZE);
	if (!model || !ro_model)
		fail("out of memory");
	make_images();
	ro_file_before = slurp(ro_path, &ro_file_len);
	{
		char a[PATH_MAX + 8], b[PATH_MAX + 8];
		const char *const args[] = {"--max-connections", "256", "-e", a, "-e", b, NULL};

		snprintf(a, sizeof(a), "main=%s", main_path);
		snprintf(b, sizeof(b), "ro=%s,ro", ro_path);
		server_start(&srv_main, "main", args);
	}
	open_main(&witness, NBDC_WANT_STRUCTURED);
	good_check("start");

	RUN(hs_unknown_client_flags);
	RUN(hs_bad_option_magic);
	RUN(hs_garbage);
	RUN(hs_huge_option);
	RUN(hs_truncated_option);
	RUN(hs_lying_lengths);
	RUN(hs_meta_before_structured);
	RUN(hs_unknown_and_tls);
	RUN(hs_export_name_and_abort);
	RUN(tx_unknown_commands);
	RUN(tx_out_of_range);
	RUN(tx_zero_length);
	RUN(tx_oversize);
	RUN(tx_bad_magic);
	RUN(tx_zeroes_no_alloc);
	RUN(tx_block_status);
	RUN(tx_unknown_flags);
	RUN(tx_read_only);
	RUN(tx_disc_in_flight);
	RUN(tx_unaligned);
	RUN(tx_handles);
	RUN(tx_dribble);
	RUN(tx_many_in_flight);
	RUN(tx_no_reader);
	RUN(many_clients);
	RUN(tx_memory_bound);

	/* Stop with the witness connected and a client stalled in the handshake. */
	{
		struct nbdc stalled;

		raw_open(&stalled, &srv_main, NBDC_FLAG_FIXED_NEWSTYLE | NBDC_FLAG_NO_ZEROES);
		snprintf(ctx, sizeof(ctx), "SIGTERM of the main server");
		server_stop(&srv_main);
		raw_close(&stalled);
		raw_close(&witness);
	}
	snprintf(ctx, sizeof(ctx), "after the server stopped");
	check_clean(main_path, false);
	check_clean(ro_path, false);
	compare_image(main_path, model, MAIN_SIZE);
	compare_image(ro_path, ro_model, RO_SIZE);
	{
		size_t l;
		uint8_t *after = slurp(ro_path, &l);

		if (l != ro_file_len || memcmp(after, ro_file_before, l))
			fail("%s changed although it was served read-only", ro_path);
		free(after);
	}
	printf("  main server: stopped cleanly, images check clean, content equals the model\n");

	snprintf(ctx, sizeof(ctx), "small server");
	small_server();
	check_clean(main_path, false);
	compare_image(main_path, model, MAIN_SIZE);
	printf("  small_server                 ok\n");

	free(model);
	free(ro_model);
	free(ro_file_before);
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	printf("PASS\n");
	return 0;
}
