/* test_vhost_user.c - the vhost-user-blk front door of vhd-vspd against a
 * fake front end (vhost_user_fake.c): what QEMU and a guest driver do,
 * written by hand, plus everything a hostile guest or front end can do.
 *
 * Starts the real daemon ($VSPD) as `vhd-vspd --vhost-user SOCK --num-queues
 * 3 --workers 2` on a fresh 64 MiB dynamic VHD (queues 0 and 2 share worker
 * 0, queue 1 runs on worker 1).  Guest memory: three memfd regions at
 * non-trivial guest addresses - A and B adjacent in guest physical space
 * (B with a nonzero mmap_offset, so buffers span regions), C far above with
 * the rings and request headers - and front-end virtual addresses that
 * differ from the guest physical ones.
 *
 * Data path (both with EVENT_IDX + protocol features and without either):
 * batches of random reads and writes in flight on all queues at once,
 * 512 B to 4 MiB, split over 1-20 descriptors, direct and indirect, aligned
 * guest buffers (zero copy) and odd ones (the bounce path), header sharing a
 * descriptor with the data, status sharing one with the data, buffers
 * spanning regions A and B; FLUSH, GET_ID (the first 20 hex digits of the
 * VHD unique id), WRITE_ZEROES, DISCARD, reads past the end and sectors that
 * overflow (IOERR), unknown types (UNSUPP), GET_CONFIG.  A byte model of the
 * disk follows every acknowledged write; at the end the daemon is stopped
 * with SIGTERM (exit 0), the image checks clean and equals the model.
 *
 * Hostile inputs: each must fail that request (used entry with length 0, the
 * status byte untouched) or stop that queue, and never crash or hang the
 * daemon; afterwards well-formed requests on the other queues, and on the
 * same queue once restarted, still work.  See the RUN list in main().
 *
 * A case that fails is reported and the run goes on (the daemon is restarted
 * if it died), so one run lists every failure; the exit status is 1 if any.
 * TEST_SEED=<n> replays a run; TEST_ONLY=<name> runs one case.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h" /* now_ms, sleep_ms */
#include "vhd.h"
#include "vhost_user_fake.h"

#define KiB ((uint64_t)1024)
#define MiB (1024 * KiB)
#define DISK_SIZE (64 * MiB)
#define SECTOR 512u
#define NQ 3
#define QSZ 128u
#define SLOTS 16u               /* requests in flight per queue */
#define SLOT_DESCS 8u           /* direct descriptors per slot */
#define MAX_SEGS 40u

/* Guest memory: A and B adjacent (the data buffers), C far above. */
#define REG_A 0x100000ull
#define REG_B 0x900000ull
#define REG_AB_SIZE (8 * MiB)
#define REG_C 0x100000000ull
#define REG_C_SIZE (2 * MiB)
#define DATA_LO REG_A
#define DATA_HI (REG_B + REG_AB_SIZE)
#define GAP_GPA 0x40000000ull   /* in no region */
#define RING_GPA(q) (REG_C + (uint64_t)(q) * 0x8000)
#define DESC_GPA(q) RING_GPA(q)
#define AVAIL_GPA(q) (RING_GPA(q) + 0x1000)
#define USED_GPA(q) (RING_GPA(q) + 0x2000)
#define SCRATCH(q, s) (REG_C + 0x80000 + ((uint64_t)(q) * SLOTS + (s)) * 0x1000)
#define SCR_HDR 0x0
#define SCR_STATUS 0x100
#define SCR_AUX 0x140           /* GET_ID buffers, discard segments */
#define SCR_TABLE 0x200         /* indirect table: up to 224 entries */

#define ANSWER_MS 15000         /* an answer that must come (sanitized daemons are slow) */
#define SILENCE_MS 400          /* an answer that must not come */
#define STOP_WAIT_MS 10000
#define STATUS_UNTOUCHED 0xee

struct vstate {
	uint32_t index, num;
};

struct server {
	pid_t pid;
	char image[4200], sock[4200], pidfile[4200], log[4200];
};

static const char *vspd;
static char tmpdir[4096];
static char ctx[128];
static uint64_t seed, rng;
static struct server srv;
static struct vuf_mem mem;
static uint8_t *model;                   /* the disk as acknowledged */
static uint8_t unknown[DISK_SIZE / SECTOR]; /* sectors whose content a failure left open */
static uint8_t vhd_uuid[16];

/* the front ends of the running case, closed when it ends */
static struct vuf *fronts[8];
static unsigned nr_fronts;

/* writes submitted and not acknowledged: unknown if the case fails */
static struct {
	uint64_t off, len;
} pending[256];
static unsigned nr_pending;

/* the case runner */
static sigjmp_buf case_jmp;
static bool in_case;
static unsigned nr_failed, nr_passed;
static char failed_list[2048];

/* ---- helpers -------------------------------------------------------------------- */

static uint64_t rnd64(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd(uint64_t n)
{
	return n ? rnd64() % n : 0;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = rnd64();

		memcpy(p + i, &v, n - i < 8 ? n - i : 8);
	}
}

static void print_log_tail(const struct server *s)
{
	char buf[3000];
	FILE *f = fopen(s->log, "r");
	long size;
	size_t n;

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	fprintf(stderr, "--- end of %s ---\n%s---\n", s->log, buf);
}

/* A failure inside a case ends that case (the runner goes on); outside one
 * it ends the test. */
__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "FAIL [%s]: ", ctx);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n  (TEST_SEED=%" PRIu64 ", temporary directory %s)\n", seed, tmpdir);
	if (in_case)
		siglongjmp(case_jmp, 1);
	exit(1);
}

/* ours, not testutil.h's: a failure ends only the running case */
#undef CHECK
#define CHECK(cond)                                                               \
	do {                                                                      \
		if (!(cond))                                                      \
			fail("%s:%d: %s", __FILE__, __LINE__, #cond);             \
	} while (0)

#define CHECK_EQ(a, b)                                                            \
	do {                                                                      \
		uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                  \
		if (a_ != b_)                                                     \
			fail("%s:%d: %s is %" PRIu64 " (%#" PRIx64 "), expected %" PRIu64, \
			     __FILE__, __LINE__, #a, a_, a_, b_);                 \
	} while (0)

static void must(struct vuf *f, int ret, const char *what)
{
	if (ret < 0)
		fail("%s: %s", what, f->err);
	if (ret > 0)
		fail("%s: refused by the back end (%s)", what, f->err);
}

/* ---- the daemon -------------------------------------------------------------------- */

static bool server_running(struct server *s)
{
	int st;

	if (s->pid <= 0)
		return false;
	if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
		fprintf(stderr, "the daemon (pid %d) ended: %s %d\n", (int)s->pid,
			WIFSIGNALED(st) ? "signal" : "exit status",
			WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
		print_log_tail(s);
		s->pid = 0;
		return false;
	}
	return true;
}

static void server_alive(struct server *s)
{
	if (!server_running(s))
		fail("the daemon died (see its log above)");
}

static void server_start(struct server *s, const char *tag, const char *image,
			 const char *const *extra)
{
	const char *argv[32];
	unsigned n = 0;
	int64_t deadline;

	snprintf(s->image, sizeof(s->image), "%s", image);
	snprintf(s->sock, sizeof(s->sock), "%s/%s.sock", tmpdir, tag);
	snprintf(s->pidfile, sizeof(s->pidfile), "%s/%s.pid", tmpdir, tag);
	snprintf(s->log, sizeof(s->log), "%s/%s.log", tmpdir, tag);
	argv[n++] = vspd;
	argv[n++] = "--vhost-user";
	argv[n++] = s->sock;
	argv[n++] = "--pid-file";
	argv[n++] = s->pidfile;
	argv[n++] = "-v"; /* refused requests are logged: the log explains a failure */
	while (extra && *extra && n < 30)
		argv[n++] = *extra++;
	argv[n++] = s->image;
	argv[n] = NULL;
	unlink(s->pidfile);
	s->pid = fork();
	if (s->pid < 0)
		fail("fork: %s", strerror(errno));
	if (s->pid == 0) {
		int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
		}
		/* the daemon must cope with SIGPIPE itself: ours is ignored */
		signal(SIGPIPE, SIG_DFL);
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

static const char *const main_args[] = {"--num-queues", "3", "--workers", "2", NULL};

static void main_server_start(void)
{
	char image[4200];

	snprintf(image, sizeof(image), "%s/disk.vhd", tmpdir);
	server_start(&srv, "main", image, main_args);
}

/* SIGTERM; the daemon must exit 0 within STOP_WAIT_MS (else it is killed).
 * Returns the milliseconds it took, or -1 when it had to be killed. */
static int64_t server_stop(struct server *s, bool must_exit_zero, int64_t wait_ms)
{
	int64_t t0 = now_ms();
	int st;

	if (s->pid <= 0)
		return 0;
	kill(s->pid, SIGTERM);
	for (;;) {
		if (waitpid(s->pid, &st, WNOHANG) == s->pid)
			break;
		if (now_ms() - t0 > wait_ms) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, NULL, 0);
			s->pid = 0;
			return -1;
		}
		sleep_ms(5);
	}
	s->pid = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		printf("    (the daemon ended with %s %d after SIGTERM)\n",
		       WIFSIGNALED(st) ? "signal" : "status",
		       WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	if (must_exit_zero && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
		print_log_tail(s);
		fail("the daemon ended with %s %d after SIGTERM, expected exit 0",
		     WIFSIGNALED(st) ? "signal" : "status",
		     WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	}
	return now_ms() - t0;
}

static void kill_servers(void)
{
	if (srv.pid > 0) {
		kill(srv.pid, SIGKILL);
		waitpid(srv.pid, NULL, 0);
		srv.pid = 0;
	}
}

/* CPU the daemon used (all threads), in clock ticks. */
static long server_cpu_ticks(const struct server *s)
{
	char path[64], buf[2048], *p;
	unsigned long ut = 0, stime = 0;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)s->pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')'); /* the command name may hold spaces */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stime) != 2)
		return -1;
	return (long)(ut + stime);
}

/* Share of one CPU the daemon used over ms milliseconds. */
static double server_cpu_share(const struct server *s, unsigned ms)
{
	long a = server_cpu_ticks(s), b;

	sleep_ms(ms);
	b = server_cpu_ticks(s);
	return a < 0 || b < 0 ? 0 : (double)(b - a) / (double)sysconf(_SC_CLK_TCK) / (ms / 1000.0);
}

/* ---- front ends ---------------------------------------------------------------------- */

static void front_register(struct vuf *f)
{
	for (unsigned i = 0; i < nr_fronts; i++)
		if (fronts[i] == f)
			return;
	if (nr_fronts < sizeof(fronts) / sizeof(fronts[0]))
		fronts[nr_fronts++] = f;
}

static void fronts_close(void)
{
	for (unsigned i = 0; i < nr_fronts; i++)
		vuf_close(fronts[i]);
	nr_fronts = 0;
}

static void queue_layout(struct vuf *f, unsigned q)
{
	must(f, vuf_vq_layout(f, q, QSZ, DESC_GPA(q), AVAIL_GPA(q), USED_GPA(q)), "ring layout");
}

/* Connects and sets everything up as QEMU does: negotiation, memory table,
 * every queue laid out afresh and started at index 0. */
static void fe_open(struct vuf *f, uint64_t drop, bool protocol)
{
	vuf_init(f, &mem);
	front_register(f);
	must(f, vuf_connect(f, srv.sock), "connect");
	must(f, vuf_negotiate(f, drop, protocol), "negotiation");
	CHECK_EQ(f->queues, NQ);
	must(f, vuf_set_mem_table(f), "SET_MEM_TABLE");
	for (unsigned q = 0; q < NQ; q++) {
		queue_layout(f, q);
		must(f, vuf_vq_start(f, q, 0), "queue start");
	}
}

/* Stops queue q (GET_VRING_BASE must answer), clears its rings and starts it
 * again from index 0. */
static void queue_restart(struct vuf *f, unsigned q)
{
	uint32_t base;

	must(f, vuf_get_vring_base(f, q, &base), "GET_VRING_BASE");
	queue_layout(f, q);
	must(f, vuf_vq_start(f, q, 0), "queue restart");
}

/* ---- requests ------------------------------------------------------------------------ */

enum {
	SH_INDIRECT = 1,
	SH_UNALIGNED = 2,     /* odd guest addresses and split points: the bounce path */
	SH_HDR_MERGED = 4,    /* OUT: the header shares the first data descriptor */
	SH_STATUS_MERGED = 8, /* IN: the status byte shares the last data descriptor */
};

struct req {
	unsigned q, slot;
	uint32_t type;
	uint64_t sector;
	uint64_t data_gpa;
	uint32_t data_len;
	uint64_t status_gpa;
	uint16_t head;
	unsigned pending;   /* index in pending[] + 1 for a write */
	bool done;
	uint32_t used_len;
	uint8_t status;
};

static void pending_add(struct req *r, uint64_t off, uint64_t len)
{
	CHECK(nr_pending < sizeof(pending) / sizeof(pending[0]));
	pending[nr_pending].off = off;
	pending[nr_pending].len = len;
	r->pending = ++nr_pending;
}

static void pending_done(struct req *r)
{
	if (r->pending)
		pending[r->pending - 1].len = 0;
	r->pending = 0;
	while (nr_pending && pending[nr_pending - 1].len == 0)
		nr_pending--;
}

/* After a failed case: writes never acknowledged may or may not be there. */
static void pending_forget(void)
{
	for (unsigned i = 0; i < nr_pending; i++)
		for (uint64_t s = pending[i].off / SECTOR;
		     s < (pending[i].off + pending[i].len + SECTOR - 1) / SECTOR && s < DISK_SIZE / SECTOR; s++)
			unknown[s] = 1;
	nr_pending = 0;
}

/* Builds the chain of r in slot r->slot of queue r->q and publishes it.
 * aux_len: readable bytes after the header from data_gpa (DISCARD,
 * WRITE_ZEROES), or writable ones (GET_ID) - see the callers. */
static void submit(struct vuf *f, struct req *r, unsigned pieces, unsigned shape)
{
	struct vuf_seg segs[MAX_SEGS];
	struct virtio_blk_outhdr h = {r->type, 0, r->sector};
	uint64_t scratch = SCRATCH(r->q, r->slot), hdr_gpa = scratch + SCR_HDR;
	bool out = r->type != VIRTIO_BLK_T_IN && r->type != VIRTIO_BLK_T_GET_ID;
	bool hdr_merged = (shape & SH_HDR_MERGED) && out && r->data_len;
	bool status_merged = (shape & SH_STATUS_MERGED) && !out && r->data_len;
	unsigned n = 0, first = n;
	uint8_t untouched = STATUS_UNTOUCHED;
	uint64_t pos = 0;
	int head;

	if (pieces == 0 || r->data_len == 0)
		pieces = r->data_len ? 1 : 0;
	if (pieces > r->data_len)
		pieces = r->data_len;
	if (hdr_merged)
		hdr_gpa = r->data_gpa - sizeof(h);
	else
		segs[n++] = (struct vuf_seg){hdr_gpa, sizeof(h), false};
	CHECK(vuf_mem_write(&mem, hdr_gpa, &h, sizeof(h)));
	first = n;
	for (unsigned i = 0; i < pieces; i++) {
		uint64_t left = r->data_len - pos, take;

		if (i + 1 == pieces) {
			take = left;
		} else if (shape & SH_UNALIGNED) {
			take = 1 + rnd(left - (pieces - 1 - i));
		} else {
			uint64_t units = left / SECTOR;

			take = units > pieces - i ? SECTOR * (1 + rnd(units - (pieces - 1 - i))) : 0;
			if (!take) /* too short to split along sectors */
				take = 1 + rnd(left - (pieces - 1 - i));
		}
		segs[n++] = (struct vuf_seg){r->data_gpa + pos, (uint32_t)take, !out};
		pos += take;
	}
	if (hdr_merged) {
		segs[first].gpa -= sizeof(h);
		segs[first].len += sizeof(h);
	}
	if (status_merged) {
		r->status_gpa = r->data_gpa + r->data_len;
		segs[n - 1].len++;
	} else {
		r->status_gpa = scratch + SCR_STATUS;
		segs[n++] = (struct vuf_seg){r->status_gpa, 1, true};
	}
	CHECK(vuf_mem_write(&mem, r->status_gpa, &untouched, 1));
	if (n > SLOT_DESCS)
		shape |= SH_INDIRECT;
	head = vuf_chain(f, r->q, r->slot * SLOT_DESCS, segs, n,
			 (shape & SH_INDIRECT) ? scratch + SCR_TABLE : 0);
	if (head < 0)
		fail("chain: %s", f->err);
	r->head = (uint16_t)head;
	r->done = false;
	vuf_avail_push(f, r->q, r->head);
}

/* vuf_used_next, in slices, failing at once when the daemon died. */
static int used_next(struct vuf *f, unsigned q, int timeout_ms, uint32_t *id, uint32_t *len)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		int64_t left = deadline - now_ms();
		int ret = vuf_used_next(f, q, left < 250 ? (int)(left > 0 ? left : 0) : 250, id, len);

		if (ret != -ETIMEDOUT || now_ms() >= deadline)
			return ret;
		server_alive(&srv);
	}
}

/* Waits for the used entry of every request of reqs that is not done. */
static void wait_reqs(struct vuf *f, struct req *reqs, unsigned n)
{
	for (unsigned q = 0; q < VUF_MAX_QUEUES; q++) {
		for (;;) {
			unsigned left = 0;
			uint32_t id, len;
			int ret;

			for (unsigned i = 0; i < n; i++)
				left += reqs[i].q == q && !reqs[i].done;
			if (!left)
				break;
			ret = used_next(f, q, ANSWER_MS, &id, &len);
			if (ret == -ETIMEDOUT) {
				server_alive(&srv);
				fail("queue %u: %u requests unanswered after %d ms", q, left, ANSWER_MS);
			}
			must(f, ret, "used ring");
			for (ret = -1, left = 0; left < n; left++)
				if (reqs[left].q == q && !reqs[left].done && reqs[left].head == id) {
					struct req *r = &reqs[left];

					r->done = true;
					r->used_len = len;
					CHECK(vuf_mem_read(&mem, r->status_gpa, &r->status, 1));
					ret = 0;
					break;
				}
			if (ret < 0)
				fail("queue %u: used entry for head %u, which is not in flight", q, id);
		}
	}
}

/* One request, start to end. */
static struct req one(struct vuf *f, unsigned q, uint32_t type, uint64_t sector,
		      uint64_t data_gpa, uint32_t data_len, unsigned pieces, unsigned shape)
{
	struct req r = {.q = q, .slot = 0, .type = type, .sector = sector, .data_gpa = data_gpa,
			.data_len = data_len};

	submit(f, &r, pieces, shape);
	vuf_kick(f, q);
	wait_reqs(f, &r, 1);
	return r;
}

static void expect_ok(const struct req *r, uint32_t used_len, const char *what)
{
	if (r->status != VIRTIO_BLK_S_OK || r->used_len != used_len)
		fail("%s: status %u used length %u, expected OK (0) and %u", what, r->status,
		     r->used_len, used_len);
}

/* ---- reads and writes against the model ----------------------------------------------- */

static void check_read(const struct req *r, const char *what)
{
	uint8_t *buf = malloc(r->data_len ? r->data_len : 1);
	uint64_t off = r->sector * SECTOR;

	CHECK(buf);
	expect_ok(r, r->data_len + 1, what);
	CHECK(vuf_mem_read(&mem, r->data_gpa, buf, r->data_len));
	for (uint64_t i = 0; i < r->data_len; i++)
		if (buf[i] != model[off + i] && !unknown[(off + i) / SECTOR]) {
			uint8_t got = buf[i];

			free(buf);
			fail("%s: byte %" PRIu64 " of the disk reads %#x, expected %#x (request of %u "
			     "bytes at sector %" PRIu64 ", guest buffer %#" PRIx64 ")",
			     what, off + i, got, model[off + i], r->data_len, r->sector, r->data_gpa);
		}
	free(buf);
}

/* Fills the guest buffer of a write with random bytes and updates the model
 * (the caller makes sure nothing else in flight touches the range). */
static void prepare_write(struct req *r)
{
	uint8_t *buf = malloc(r->data_len ? r->data_len : 1);
	uint64_t off = r->sector * SECTOR;

	CHECK(buf);
	fill_random(buf, r->data_len);
	CHECK(vuf_mem_write(&mem, r->data_gpa, buf, r->data_len));
	memcpy(model + off, buf, r->data_len);
	for (uint64_t s = off / SECTOR; s < (off + r->data_len) / SECTOR; s++)
		unknown[s] = 0;
	free(buf);
	pending_add(r, off, r->data_len);
}

static void garble(uint64_t gpa, uint32_t len)
{
	uint8_t *buf = malloc(len ? len : 1);

	CHECK(buf);
	memset(buf, 0xa5, len);
	CHECK(vuf_mem_write(&mem, gpa, buf, len));
	free(buf);
}

/* A write then a read back of a random small range on queue q: the queue and
 * the disk still work. */
static void health(struct vuf *f, unsigned q)
{
	uint32_t len = SECTOR * (uint32_t)(1 + rnd(16));
	uint64_t sector = rnd((DISK_SIZE - len) / SECTOR);
	uint64_t gpa = DATA_LO + 0x10000 * (1 + q);
	struct req r = {.q = q, .type = VIRTIO_BLK_T_OUT, .sector = sector, .data_gpa = gpa,
			.data_len = len};
	char what[64];

	server_alive(&srv);
	snprintf(what, sizeof(what), "health write on queue %u", q);
	prepare_write(&r);
	submit(f, &r, 2, 0);
	vuf_kick(f, q);
	wait_reqs(f, &r, 1);
	expect_ok(&r, 1, what);
	pending_done(&r);
	garble(gpa, len);
	r = one(f, q, VIRTIO_BLK_T_IN, sector, gpa, len, 3, SH_UNALIGNED * (rnd(2)));
	snprintf(what, sizeof(what), "health read on queue %u", q);
	check_read(&r, what);
}

static void health_all(struct vuf *f)
{
	for (unsigned q = 0; q < NQ; q++)
		health(f, q);
}

/* A request that must fail: a used entry for head with length 0 (the chain
 * was refused: nothing written, the status byte untouched) or an IOERR. */
static void expect_refused(struct vuf *f, unsigned q, uint16_t head, uint64_t status_gpa,
			   const char *what)
{
	uint32_t id, len;
	uint8_t status = STATUS_UNTOUCHED;
	int ret = used_next(f, q, ANSWER_MS, &id, &len);

	if (ret == -ETIMEDOUT) {
		server_alive(&srv);
		fail("%s: no used entry within %d ms (the queue should fail the request, not "
		     "stop)", what, ANSWER_MS);
	}
	must(f, ret, what);
	if (id != head)
		fail("%s: used entry for head %u, expected %u", what, id, head);
	if (status_gpa)
		CHECK(vuf_mem_read(&mem, status_gpa, &status, 1));
	if (len == 0 && status != STATUS_UNTOUCHED)
		fail("%s: used length 0 but the status byte was written (%#x)", what, status);
	if (len != 0 && status != VIRTIO_BLK_S_IOERR)
		fail("%s: used length %u and status %#x: the request was not refused", what, len,
		     status);
}

/* No used entry may come (the queue stopped). */
static void expect_silence(struct vuf *f, unsigned q, const char *what)
{
	uint32_t id, len;
	int ret = vuf_used_next(f, q, SILENCE_MS, &id, &len);

	if (ret == 0)
		fail("%s: a used entry came (head %u, length %u): expected the queue to stop", what,
		     id, len);
	if (ret != -ETIMEDOUT)
		must(f, ret, what);
	server_alive(&srv);
}

/* ---- the data path --------------------------------------------------------------------- */

struct alloc {
	uint64_t next, end;
};

/* Guest memory for a data buffer with 32 bytes of room on each side. */
static bool alloc_buf(struct alloc *a, uint32_t len, bool unaligned, uint64_t *gpa)
{
	uint64_t start = (a->next + 4095) & ~4095ull;

	start += unaligned ? 32 + 1 + rnd(480) : 4096;
	if (start + len + 32 > a->end)
		return false;
	*gpa = start;
	a->next = start + len + 32;
	return true;
}

/* what the data path did, for the log */
static struct {
	unsigned long reqs, indirect, unaligned, hdr_merged, status_merged, spanning;
	uint64_t bytes;
} dp;

static bool overlaps(const struct req *reqs, unsigned n, uint64_t off, uint64_t len)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t o = reqs[i].sector * SECTOR;

		if (off < o + reqs[i].data_len && o < off + len)
			return true;
	}
	return false;
}

static uint32_t random_len(void)
{
	uint64_t c = rnd(100);

	if (c < 60)
		return SECTOR * (uint32_t)(1 + rnd(32));
	if (c < 92)
		return SECTOR * (uint32_t)(1 + rnd(1024));
	return SECTOR * (uint32_t)(1 + rnd(8192)); /* up to 4 MiB */
}

/* Random reads and writes, up to nreq in flight over nq queues at once, on
 * ranges that do not overlap within the batch. */
static void rw_batch(struct vuf *f, unsigned nq, unsigned nreq)
{
	struct req reqs[NQ * SLOTS];
	/* start near the A/B boundary so that buffers often span both */
	struct alloc a = {REG_B - rnd(4 * MiB), DATA_HI};
	unsigned n = 0, used_slots[NQ] = {0};

	if (nreq > nq * SLOTS)
		nreq = nq * SLOTS;
	while (n < nreq) {
		struct req *r = &reqs[n];
		unsigned q = n % nq, shape = (unsigned)rnd(16), pieces;
		uint32_t len = random_len();
		uint64_t sector = 0, gpa;
		int tries = 0;

		do
			sector = rnd((DISK_SIZE - len) / SECTOR + 1);
		while (overlaps(reqs, n, sector * SECTOR, len) && ++tries < 8);
		if (tries == 8)
			break;
		if (!alloc_buf(&a, len, shape & SH_UNALIGNED, &gpa))
			break;
		pieces = (shape & SH_INDIRECT) ? 1 + (unsigned)rnd(20) : 1 + (unsigned)rnd(6);
		*r = (struct req){.q = q, .slot = used_slots[q]++, .sector = sector, .data_gpa = gpa,
				  .data_len = len,
				  .type = rnd(2) ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN};
		if (r->type == VIRTIO_BLK_T_OUT)
			prepare_write(r);
		else
			garble(gpa, len);
		submit(f, r, pieces, shape);
		dp.reqs++;
		dp.bytes += len;
		dp.indirect += (shape & SH_INDIRECT) || pieces + 2 > SLOT_DESCS;
		dp.unaligned += !!(shape & SH_UNALIGNED);
		dp.hdr_merged += (shape & SH_HDR_MERGED) && r->type == VIRTIO_BLK_T_OUT;
		dp.status_merged += (shape & SH_STATUS_MERGED) && r->type == VIRTIO_BLK_T_IN;
		dp.spanning += gpa < REG_B && gpa + len > REG_B;
		n++;
	}
	for (unsigned q = 0; q < nq; q++)
		vuf_kick(f, q);
	wait_reqs(f, reqs, n);
	for (unsigned i = 0; i < n; i++) {
		char what[96];

		snprintf(what, sizeof(what), "%s of %u bytes at sector %" PRIu64 " on queue %u",
			 reqs[i].type == VIRTIO_BLK_T_IN ? "read" : "write", reqs[i].data_len,
			 reqs[i].sector, reqs[i].q);
		if (reqs[i].type == VIRTIO_BLK_T_IN) {
			check_read(&reqs[i], what);
		} else {
			expect_ok(&reqs[i], 1, what);
			pending_done(&reqs[i]);
		}
	}
}

static void data_path(uint64_t drop, bool protocol)
{
	struct vuf f;

	memset(&dp, 0, sizeof(dp));
	fe_open(&f, drop, protocol);
	for (unsigned b = 0; b < 30; b++)
		rw_batch(&f, NQ, 8 + (unsigned)rnd(NQ * SLOTS - 8));
	health_all(&f);
	printf("    (%lu requests, %.1f MiB; %lu indirect, %lu with odd buffers, %lu header+data, "
	       "%lu data+status, %lu across regions A/B)\n", dp.reqs, dp.bytes / 1048576.0,
	       dp.indirect, dp.unaligned, dp.hdr_merged, dp.status_merged, dp.spanning);
}

static void case_data_path_event_idx(void)
{
	data_path(0, true);
}

static void case_data_path_plain(void)
{
	/* no EVENT_IDX, and no protocol features: rings start on their kick,
	 * without SET_VRING_ENABLE and without REPLY_ACK */
	data_path(1ull << VIRTIO_RING_F_EVENT_IDX, false);
}

/* Every shape at fixed places, including a buffer exactly on the A/B edge. */
static void case_shapes(void)
{
	struct vuf f;
	static const uint64_t gpas[] = {REG_B - 4096, REG_B - 1000, REG_B, REG_A + 4096,
					REG_B - 3 * SECTOR, DATA_HI - 64 * KiB - 64};

	fe_open(&f, 0, true);
	for (unsigned s = 0; s < 16; s++)
		for (size_t g = 0; g < sizeof(gpas) / sizeof(gpas[0]); g++) {
			uint32_t len = 16 * SECTOR;
			uint64_t sector = rnd((DISK_SIZE - len) / SECTOR);
			unsigned q = (unsigned)(g % NQ);
			uint64_t gpa = gpas[g] + ((s & SH_UNALIGNED) ? 7 : 0);
			struct req r = {.q = q, .type = VIRTIO_BLK_T_OUT, .sector = sector,
					.data_gpa = gpa, .data_len = len};
			char what[96];

			snprintf(what, sizeof(what), "shape %#x at guest %#" PRIx64, s, gpa);
			prepare_write(&r);
			submit(&f, &r, 1 + s % 5, s);
			vuf_kick(&f, q);
			wait_reqs(&f, &r, 1);
			expect_ok(&r, 1, what);
			pending_done(&r);
			garble(gpa, len);
			r = one(&f, q, VIRTIO_BLK_T_IN, sector, gpa, len, 1 + (s + 2) % 5, s);
			check_read(&r, what);
		}
}

/* ---- the other request types ---------------------------------------------------------- */

static void case_config(void)
{
	struct vuf f;
	struct virtio_blk_config c;
	uint64_t want = (1ull << VUF_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
			(1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VUF_F_PROTOCOL_FEATURES) |
			(1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) |
			(1ull << VIRTIO_BLK_F_MQ) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
			(1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	uint8_t part[8];

	fe_open(&f, 0, true);
	if ((f.offered & want) != want)
		fail("features %#" PRIx64 " lack %#" PRIx64, f.offered, want & ~f.offered);
	CHECK(!(f.offered & (1ull << VIRTIO_BLK_F_RO)));
	CHECK((f.protocol_offered & 0x209) == 0x209); /* MQ, REPLY_ACK, CONFIG */
	must(&f, vuf_get_config(&f, 0, &c, sizeof(c)), "GET_CONFIG");
	CHECK_EQ(c.capacity, DISK_SIZE / SECTOR);
	CHECK_EQ(c.blk_size, SECTOR);
	CHECK_EQ(c.num_queues, NQ);
	CHECK(c.seg_max >= 1 && c.seg_max <= QSZ - 2);
	CHECK(c.max_discard_seg >= 1 && c.max_write_zeroes_seg >= 1);
	CHECK(c.max_write_zeroes_sectors >= 8);
	/* a window in the middle, and one past the end (zeros) */
	must(&f, vuf_get_config(&f, 20, part, 2), "GET_CONFIG at offset 20");
	CHECK(!memcmp(part, (uint8_t *)&c + 20, 2));
	must(&f, vuf_get_config(&f, 250, part, 6), "GET_CONFIG past the end");
	for (int i = 0; i < 6; i++)
		CHECK_EQ(part[i], 0);
}

static void case_flush_get_id(void)
{
	struct vuf f;
	uint64_t idbuf = SCRATCH(1, 0) + SCR_AUX;
	char want[21], got[21] = {0};
	struct req r;

	fe_open(&f, 0, true);
	r = one(&f, 1, VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0, 0);
	expect_ok(&r, 1, "FLUSH");
	/* a FLUSH whose sector field is nonzero: ignored */
	r = one(&f, 0, VIRTIO_BLK_T_FLUSH, 12345, 0, 0, 0, 0);
	expect_ok(&r, 1, "FLUSH with a sector");
	for (int i = 0; i < 10; i++)
		snprintf(want + 2 * i, 3, "%02x", vhd_uuid[i]);
	garble(idbuf, 20);
	r = one(&f, 1, VIRTIO_BLK_T_GET_ID, 0, idbuf, 20, 1, 0);
	expect_ok(&r, 21, "GET_ID");
	CHECK(vuf_mem_read(&mem, idbuf, got, 20));
	if (memcmp(got, want, 20))
		fail("GET_ID returned \"%.20s\", expected \"%s\"", got, want);
	/* a short buffer gets what fits, in two descriptors */
	garble(idbuf, 20);
	r = one(&f, 2, VIRTIO_BLK_T_GET_ID, 0, idbuf, 9, 2, 0);
	expect_ok(&r, 10, "GET_ID into 9 bytes");
	CHECK(vuf_mem_read(&mem, idbuf, got, 9));
	CHECK(!memcmp(got, want, 9));
}

/* DISCARD and WRITE_ZEROES carry one 16-byte segment after the header. */
static struct req zeroes_req(struct vuf *f, unsigned q, uint32_t type, uint64_t sector,
			     uint32_t num, unsigned nseg)
{
	struct virtio_blk_discard_write_zeroes seg[2] = {{sector, num, 0}, {sector, num, 0}};
	uint64_t gpa = SCRATCH(q, 0) + SCR_AUX;

	CHECK(vuf_mem_write(&mem, gpa, seg, sizeof(seg)));
	/* the segment travels as "data" of an OUT-like request */
	return one(f, q, type, 0, gpa, (uint32_t)(nseg * sizeof(seg[0])), 1, 0);
}

static void case_zeroes_discard(void)
{
	struct vuf f;
	uint64_t gpa = DATA_LO + 0x200000;
	struct req r;

	fe_open(&f, 0, true);
	/* write data, zero part of it (across a block boundary), read back */
	r = (struct req){.q = 0, .type = VIRTIO_BLK_T_OUT, .sector = (2 * MiB - 64 * KiB) / SECTOR,
			 .data_gpa = gpa, .data_len = 256 * KiB};
	prepare_write(&r);
	submit(&f, &r, 3, 0);
	vuf_kick(&f, 0);
	wait_reqs(&f, &r, 1);
	expect_ok(&r, 1, "write before WRITE_ZEROES");
	pending_done(&r);
	r = zeroes_req(&f, 1, VIRTIO_BLK_T_WRITE_ZEROES, (2 * MiB - 32 * KiB) / SECTOR, 128, 1);
	expect_ok(&r, 1, "WRITE_ZEROES");
	memset(model + 2 * MiB - 32 * KiB, 0, 64 * KiB);
	garble(gpa, 256 * KiB);
	r = one(&f, 2, VIRTIO_BLK_T_IN, (2 * MiB - 64 * KiB) / SECTOR, gpa, 256 * KiB, 2, 0);
	check_read(&r, "read after WRITE_ZEROES");
	/* zeroes on a range never written: must not fail (and reads zero) */
	r = zeroes_req(&f, 0, VIRTIO_BLK_T_WRITE_ZEROES, (DISK_SIZE - 4 * MiB) / SECTOR, 8192, 1);
	expect_ok(&r, 1, "WRITE_ZEROES of 4 MiB");
	memset(model + DISK_SIZE - 4 * MiB, 0, 4 * MiB);
	/* DISCARD is accepted and keeps the content (documented no-op) */
	r = zeroes_req(&f, 1, VIRTIO_BLK_T_DISCARD, (2 * MiB - 64 * KiB) / SECTOR, 64, 1);
	expect_ok(&r, 1, "DISCARD");
	r = one(&f, 1, VIRTIO_BLK_T_IN, (2 * MiB - 64 * KiB) / SECTOR, gpa, 64 * KiB, 1, 0);
	check_read(&r, "read after DISCARD");
	/* two segments (max_*_seg is 1), past the end, sector overflow */
	r = zeroes_req(&f, 2, VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 2);
	if (r.status != VIRTIO_BLK_S_UNSUPP && r.status != VIRTIO_BLK_S_IOERR)
		fail("WRITE_ZEROES with 2 segments: status %u, expected UNSUPP or IOERR", r.status);
	r = zeroes_req(&f, 2, VIRTIO_BLK_T_WRITE_ZEROES, DISK_SIZE / SECTOR - 4, 8, 1);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	r = zeroes_req(&f, 2, VIRTIO_BLK_T_DISCARD, UINT64_MAX / 2, 8, 1);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	r = zeroes_req(&f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 8, UINT32_MAX, 1);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	health_all(&f);
}

static void case_bounds_and_types(void)
{
	struct vuf f;
	uint64_t gpa = DATA_LO + 0x300000, last = DISK_SIZE / SECTOR;
	struct req r;

	fe_open(&f, 0, true);
	/* the last sector reads; one past it does not */
	r = one(&f, 0, VIRTIO_BLK_T_IN, last - 1, gpa, SECTOR, 1, 0);
	check_read(&r, "read of the last sector");
	r = one(&f, 0, VIRTIO_BLK_T_IN, last, gpa, SECTOR, 1, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	r = one(&f, 1, VIRTIO_BLK_T_IN, last - 1, gpa, 2 * SECTOR, 1, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	r = one(&f, 1, VIRTIO_BLK_T_OUT, last - 1, gpa, 2 * SECTOR, 2, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	/* sectors whose byte offset overflows 64 bits */
	r = one(&f, 2, VIRTIO_BLK_T_IN, UINT64_MAX / SECTOR + 2, gpa, SECTOR, 1, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	r = one(&f, 2, VIRTIO_BLK_T_OUT, UINT64_MAX, gpa, SECTOR, 1, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	/* lengths that are not whole sectors */
	r = one(&f, 0, VIRTIO_BLK_T_IN, 0, gpa, 1000, 2, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	r = one(&f, 0, VIRTIO_BLK_T_OUT, 0, gpa, 100, 1, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_IOERR);
	/* zero-length reads and writes succeed and touch nothing */
	r = one(&f, 1, VIRTIO_BLK_T_IN, 5, 0, 0, 0, 0);
	expect_ok(&r, 1, "read of 0 bytes");
	r = one(&f, 1, VIRTIO_BLK_T_OUT, 5, 0, 0, 0, 0);
	expect_ok(&r, 1, "write of 0 bytes");
	/* unknown types, with and without data */
	r = one(&f, 2, 99, 0, gpa, SECTOR, 1, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_UNSUPP);
	r = one(&f, 2, 0x80000001u, 0, 0, 0, 0, 0);
	CHECK_EQ(r.status, VIRTIO_BLK_S_UNSUPP);
	health_all(&f);
}

/* ---- hostile descriptors ------------------------------------------------------------ */

/* Writes a GET_ID header in slot 0 of q and returns its address. */
static uint64_t hostile_hdr(unsigned q, uint32_t type)
{
	struct virtio_blk_outhdr h = {type, 0, 0};
	uint64_t gpa = SCRATCH(q, 0) + SCR_HDR;
	uint8_t st = STATUS_UNTOUCHED;

	CHECK(vuf_mem_write(&mem, gpa, &h, sizeof(h)));
	CHECK(vuf_mem_write(&mem, SCRATCH(q, 0) + SCR_STATUS, &st, 1));
	return gpa;
}

#define HDR(q) (SCRATCH(q, 0) + SCR_HDR)
#define STATUS(q) (SCRATCH(q, 0) + SCR_STATUS)
#define TABLE(q) (SCRATCH(q, 0) + SCR_TABLE)
#define N VRING_DESC_F_NEXT
#define W VRING_DESC_F_WRITE
#define I VRING_DESC_F_INDIRECT

/* Writes one indirect table entry (byte copy: tables may be misaligned). */
static void table_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		       uint16_t next)
{
	struct vring_desc d = {addr, len, flags, next};

	CHECK(vuf_mem_write(&mem, table + i * sizeof(d), &d, sizeof(d)));
}

/* Writes descriptors 0..n-1 of q, a fresh header of type and an untouched
 * status byte, publishes head 0 and expects the request refused; then every
 * queue still serves (health reuses slot 0, so each case writes its whole
 * chain). */
static void hostile(struct vuf *f, unsigned q, uint32_t type, const struct vring_desc *d,
		    unsigned n, uint64_t status_gpa, const char *what)
{
	hostile_hdr(q, type);
	for (unsigned i = 0; i < n; i++)
		vuf_desc(f, q, i, d[i].addr, d[i].len, d[i].flags, d[i].next);
	vuf_avail_push(f, q, 0);
	vuf_kick(f, q);
	expect_refused(f, q, 0, status_gpa, what);
	health_all(f);
}

#define HOSTILE(f, q, type, what, ...)                                                   \
	do {                                                                             \
		const struct vring_desc d_[] = {__VA_ARGS__};                            \
		hostile(f, q, type, d_, sizeof(d_) / sizeof(d_[0]), STATUS(q), what);    \
	} while (0)

static void case_bad_addresses(void)
{
	struct vuf f;
	uint64_t data = DATA_LO + 0x400000;
	const uint32_t in = VIRTIO_BLK_T_IN;

	fe_open(&f, 0, true);
	HOSTILE(&f, 0, in, "data buffer in no region",
		{HDR(0), 16, N, 1}, {GAP_GPA, 4096, N | W, 2}, {STATUS(0), 1, W, 0});
	HOSTILE(&f, 0, in, "header in no region",
		{GAP_GPA + 512, 16, N, 1}, {data, 4096, N | W, 2}, {STATUS(0), 1, W, 0});
	HOSTILE(&f, 1, in, "buffer past the end of region C",
		{HDR(1), 16, N, 1}, {REG_C + REG_C_SIZE - 2048, 4096, N | W, 2},
		{STATUS(1), 1, W, 0});
	HOSTILE(&f, 1, in, "buffer past the end of A+B",
		{HDR(1), 16, N, 1}, {DATA_HI - 512, 1024, N | W, 2}, {STATUS(1), 1, W, 0});
	HOSTILE(&f, 1, in, "buffer starting just below region A",
		{HDR(1), 16, N, 1}, {REG_A - 512, 1024, N | W, 2}, {STATUS(1), 1, W, 0});
	HOSTILE(&f, 2, in, "buffer wrapping around 2^64",
		{HDR(2), 16, N, 1}, {UINT64_MAX - 511, 1024, N | W, 2}, {STATUS(2), 1, W, 0});
	HOSTILE(&f, 2, in, "buffer of 4 GiB - 1",
		{HDR(2), 16, N, 1}, {data, UINT32_MAX, N | W, 2}, {STATUS(2), 1, W, 0});
	HOSTILE(&f, 2, VIRTIO_BLK_T_OUT, "write from 4 GiB - 512 at the end of B",
		{HDR(2), 16, N, 1}, {DATA_HI - 4096, UINT32_MAX - 511, N, 2},
		{STATUS(2), 1, W, 0});
	/* the status byte in no region: nothing to write the status into */
	hostile_hdr(2, in);
	vuf_desc(&f, 2, 0, HDR(2), 16, N, 1);
	vuf_desc(&f, 2, 1, data, 4096, N | W, 2);
	vuf_desc(&f, 2, 2, GAP_GPA, 1, W, 0);
	vuf_avail_push(&f, 2, 0);
	vuf_kick(&f, 2);
	expect_refused(&f, 2, 0, 0, "status byte in no region");
	health_all(&f);
}

static void case_bad_chains(void)
{
	struct vuf f;
	uint64_t data = DATA_LO + 0x500000;
	uint8_t before[4096], after[4096];
	const uint32_t in = VIRTIO_BLK_T_IN;

	fe_open(&f, 0, true);
	HOSTILE(&f, 0, in, "chain with a loop 0 -> 1 -> 2 -> 1",
		{HDR(0), 16, N, 1}, {data, 512, N | W, 2}, {STATUS(0), 1, N | W, 1});
	HOSTILE(&f, 0, in, "descriptor chained to itself", {HDR(0), 16, N, 0});
	HOSTILE(&f, 0, in, "next index beyond the queue",
		{HDR(0), 16, N, QSZ + 5});
	HOSTILE(&f, 0, in, "next index 65535", {HDR(0), 16, N, 0xffff});
	/* a chain through every descriptor of the queue and back to the start */
	hostile_hdr(0, in);
	for (unsigned i = 0; i < QSZ; i++)
		vuf_desc(&f, 0, i, i ? data : HDR(0), i ? 512 : 16, (uint16_t)(N | (i ? W : 0)),
			 (uint16_t)((i + 1) % QSZ));
	vuf_avail_push(&f, 0, 0);
	vuf_kick(&f, 0);
	expect_refused(&f, 0, 0, STATUS(0), "chain longer than the queue");
	health_all(&f);
	queue_restart(&f, 0); /* a clean descriptor table again */

	/* readable after writable: an IN whose data comes after the status;
	 * the data buffer must stay as it was */
	garble(data, sizeof(before));
	CHECK(vuf_mem_read(&mem, data, before, sizeof(before)));
	HOSTILE(&f, 1, in, "readable descriptor after a writable one",
		{HDR(1), 16, N, 1}, {STATUS(1), 1, N | W, 2}, {data, 4096, 0, 0});
	CHECK(vuf_mem_read(&mem, data, after, sizeof(after)));
	CHECK(!memcmp(before, after, sizeof(before)));
	HOSTILE(&f, 1, VIRTIO_BLK_T_OUT, "write with a readable buffer after the status",
		{HDR(1), 16, N, 1}, {data, 512, N, 2}, {STATUS(1), 1, N | W, 3},
		{data + 512, 512, 0, 0});
	HOSTILE(&f, 1, VIRTIO_BLK_T_OUT, "no writable descriptor (no status byte)",
		{HDR(1), 16, N, 1}, {data, 4096, 0, 0});
	HOSTILE(&f, 1, in, "header of 8 bytes",
		{HDR(1), 8, N, 1}, {STATUS(1), 1, W, 0});
	HOSTILE(&f, 1, in, "status byte only", {STATUS(1), 1, W, 0});
	HOSTILE(&f, 1, in, "zero-length descriptors",
		{HDR(1), 0, N, 1}, {data, 0, N | W, 2}, {STATUS(1), 0, W, 0});
	HOSTILE(&f, 1, in, "a writable header",
		{HDR(1), 16, N | W, 1}, {data, 512, N | W, 2}, {STATUS(1), 1, W, 0});
}

static void case_bad_indirect(void)
{
	struct vuf f;
	uint64_t data = DATA_LO + 0x600000, t = TABLE(2);
	const uint32_t in = VIRTIO_BLK_T_IN;
	struct req r;
	const unsigned q = 2;

	fe_open(&f, 0, true);
	table_desc(t, 0, HDR(q), 16, N, 1);
	table_desc(t, 1, data, 512, N | W, 2);
	table_desc(t, 2, STATUS(q), 1, W, 0);
	HOSTILE(&f, q, in, "indirect descriptor with NEXT",
		{t, 48, I | N, 1}, {STATUS(q), 1, W, 0});
	HOSTILE(&f, q, in, "indirect table of 40 bytes", {t, 40, I, 0});
	HOSTILE(&f, q, in, "indirect table of 0 bytes", {t, 0, I, 0});
	HOSTILE(&f, q, in, "indirect table in no region", {GAP_GPA, 48, I, 0});
	HOSTILE(&f, q, in, "indirect table past the end of a region",
		{REG_C + REG_C_SIZE - 32, 48, I, 0});
	HOSTILE(&f, q, in, "indirect table of 4 GiB", {t, 0xfffffff0u, I, 0});
	HOSTILE(&f, q, in, "indirect table of 1025 entries", {t, 1025 * 16, I, 0});
	/* nested: an indirect entry inside the table */
	table_desc(t, 1, t + 1024, 32, I, 0);
	table_desc(t + 1024, 0, data, 512, N | W, 1);
	table_desc(t + 1024, 1, STATUS(q), 1, W, 0);
	HOSTILE(&f, q, in, "nested indirect table", {t, 32, I, 0});
	/* a loop inside the table */
	table_desc(t, 1, data, 512, N | W, 2);
	table_desc(t, 2, STATUS(q), 1, N | W, 0);
	HOSTILE(&f, q, in, "loop inside an indirect table", {t, 48, I, 0});
	table_desc(t, 2, STATUS(q), 1, N | W, 3);
	HOSTILE(&f, q, in, "next beyond the indirect table", {t, 48, I, 0});
	/* direct descriptors, then an indirect one holding the rest: allowed by
	 * the layout rules, so served (correctly) or refused */
	table_desc(t, 0, data, 512, N | W, 1);
	table_desc(t, 1, STATUS(q), 1, W, 0);
	hostile_hdr(q, in);
	vuf_desc(&f, q, 0, HDR(q), 16, N, 1);
	vuf_desc(&f, q, 1, t, 32, I, 0);
	garble(data, 512);
	vuf_avail_push(&f, q, 0);
	vuf_kick(&f, q);
	r = (struct req){.q = q, .type = in, .sector = 0, .data_gpa = data, .data_len = 512,
			 .status_gpa = STATUS(q), .head = 0};
	wait_reqs(&f, &r, 1);
	if (r.used_len != 0)
		check_read(&r, "direct descriptors then an indirect table");
	health_all(&f);
}

/* Odd addresses the spec forbids or does not promise: the daemon may serve
 * or refuse, but must not crash (UBSan: misaligned loads). */
static void case_misaligned_indirect(void)
{
	struct vuf f;
	uint64_t data = DATA_LO + 0x700000, table = TABLE(0) + 3;
	struct req r;

	fe_open(&f, 0, true);
	/* an indirect table at an odd guest address */
	hostile_hdr(0, VIRTIO_BLK_T_IN);
	table_desc(table, 0, HDR(0), 16, N, 1);
	table_desc(table, 1, data, 512, N | W, 2);
	table_desc(table, 2, STATUS(0), 1, W, 0);
	vuf_desc(&f, 0, 0, table, 48, I, 0);
	garble(data, 512);
	vuf_avail_push(&f, 0, 0);
	vuf_kick(&f, 0);
	r = (struct req){.q = 0, .type = VIRTIO_BLK_T_IN, .sector = 0, .data_gpa = data,
			 .data_len = 512, .status_gpa = STATUS(0), .head = 0};
	wait_reqs(&f, &r, 1);
	if (r.used_len != 0)
		check_read(&r, "indirect table at an odd address");
	health_all(&f);
}

static void case_misaligned_rings(void)
{
	struct vuf f;
	uint64_t data = DATA_LO + 0x700000;

	fe_open(&f, 0, true);
	/* rings at odd addresses (desc 4 past 16-alignment, avail odd, used 2
	 * past 4-alignment): refused, or served, but no crash */
	{
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} addr = {1, 0, vuf_uva(&mem, DESC_GPA(1) + 4), vuf_uva(&mem, USED_GPA(1) + 2),
			  vuf_uva(&mem, AVAIL_GPA(1) + 1), 0};
		struct vring_desc d[3] = {{HDR(1), 16, N, 1}, {data, 512, N | W, 2}, {STATUS(1), 1, W, 0}};
		uint16_t avail[3] = {0, 1, 0}; /* flags, idx, ring[0] */
		uint16_t used_idx = 0;
		uint32_t base;
		int64_t deadline;

		must(&f, vuf_get_vring_base(&f, 1, &base), "GET_VRING_BASE");
		queue_layout(&f, 1);
		hostile_hdr(1, VIRTIO_BLK_T_IN);
		CHECK(vuf_mem_write(&mem, DESC_GPA(1) + 4, d, sizeof(d)));
		CHECK(vuf_mem_write(&mem, AVAIL_GPA(1) + 1, avail, sizeof(avail)));
		must(&f, vuf_request(&f, VUF_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0, NULL, 0),
		     "SET_VRING_ADDR at odd addresses");
		must(&f, vuf_vq_rekick(&f, 1), "SET_VRING_KICK");
		vuf_kick(&f, 1);
		deadline = now_ms() + SILENCE_MS;
		while (now_ms() < deadline && used_idx == 0) {
			CHECK(vuf_mem_read(&mem, USED_GPA(1) + 2 + 2, &used_idx, 2));
			sleep_ms(5);
		}
		server_alive(&srv);
		queue_restart(&f, 1);
	}
	health_all(&f);
}

/* ---- hostile ring indices --------------------------------------------------------------- */

static void case_bad_ring_indices(void)
{
	struct vuf f;

	fe_open(&f, 0, true);
	/* a head index beyond the queue stops the queue */
	hostile_hdr(0, VIRTIO_BLK_T_GET_ID);
	vuf_avail_push(&f, 0, QSZ);
	vuf_kick(&f, 0);
	expect_silence(&f, 0, "head index == queue size");
	health(&f, 1);
	health(&f, 2);
	queue_restart(&f, 0);
	health(&f, 0);
	vuf_avail_push(&f, 0, 0xffff);
	vuf_kick(&f, 0);
	expect_silence(&f, 0, "head index 65535");
	queue_restart(&f, 0);
	health(&f, 0);

	/* the avail index jumps more than the queue size ahead */
	f.vq[1].avail_idx = (uint16_t)(f.vq[1].avail_idx + QSZ + 1);
	__atomic_store_n(&f.vq[1].avail->idx, f.vq[1].avail_idx, __ATOMIC_RELEASE);
	vuf_kick(&f, 1);
	expect_silence(&f, 1, "avail index 129 entries ahead");
	health(&f, 0);
	health(&f, 2);
	queue_restart(&f, 1);
	health(&f, 1);
	/* ... or moves backwards */
	health(&f, 1);
	f.vq[1].avail_idx = (uint16_t)(f.vq[1].avail_idx - 1);
	__atomic_store_n(&f.vq[1].avail->idx, f.vq[1].avail_idx, __ATOMIC_RELEASE);
	vuf_kick(&f, 1);
	expect_silence(&f, 1, "avail index going backwards");
	queue_restart(&f, 1);
	/* exactly a full queue of requests at once is fine */
	{
		struct req reqs[QSZ];
		uint64_t idbuf = SCRATCH(2, 0) + SCR_AUX;
		uint16_t used_before = f.vq[2].last_used;

		hostile_hdr(2, VIRTIO_BLK_T_GET_ID);
		vuf_desc(&f, 2, 0, HDR(2), 16, N, 1);
		vuf_desc(&f, 2, 1, idbuf, 20, N | W, 2);
		vuf_desc(&f, 2, 2, STATUS(2), 1, W, 0);
		/* the same chain made available QSZ times: only the guest's problem */
		for (unsigned i = 0; i < QSZ; i++) {
			vuf_avail_push(&f, 2, 0);
			reqs[i] = (struct req){.q = 2, .head = 0, .status_gpa = STATUS(2)};
		}
		vuf_kick(&f, 2);
		wait_reqs(&f, reqs, QSZ);
		CHECK_EQ((uint16_t)(f.vq[2].last_used - used_before), QSZ);
		for (unsigned i = 0; i < QSZ; i++)
			CHECK_EQ(reqs[i].used_len, 21);
	}
	health_all(&f);
}

/* SET_VRING_ADDR pointing outside the memory: that queue never runs, the
 * others do; a correct SET_VRING_ADDR repairs it. */
static void case_ring_outside_memory(void)
{
	struct vuf f;
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} addr = {0, 0, 0x12345000, vuf_uva(&mem, USED_GPA(0)), vuf_uva(&mem, AVAIL_GPA(0)), 0};
	int ret;

	fe_open(&f, 0, true);
	ret = vuf_request(&f, VUF_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0, NULL, 0);
	must(&f, ret < 0 ? ret : 0, "SET_VRING_ADDR outside memory"); /* refusing is fine */
	hostile_hdr(0, VIRTIO_BLK_T_GET_ID);
	vuf_avail_push(&f, 0, 0);
	vuf_kick(&f, 0);
	expect_silence(&f, 0, "desc ring outside memory");
	health(&f, 1);
	/* the used ring straddling the end of region C */
	addr.desc = vuf_uva(&mem, DESC_GPA(0));
	addr.used = vuf_uva(&mem, REG_C) + REG_C_SIZE - 64;
	ret = vuf_request(&f, VUF_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0, NULL, 0);
	must(&f, ret < 0 ? ret : 0, "SET_VRING_ADDR used ring across the end");
	vuf_kick(&f, 0);
	expect_silence(&f, 0, "used ring across the end of a region");
	/* the avail ring at a guest physical (not front-end virtual) address */
	addr.used = vuf_uva(&mem, USED_GPA(0));
	addr.avail = AVAIL_GPA(0);
	ret = vuf_request(&f, VUF_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0, NULL, 0);
	must(&f, ret < 0 ? ret : 0, "SET_VRING_ADDR with a guest address");
	vuf_kick(&f, 0);
	expect_silence(&f, 0, "avail ring given as a guest physical address");
	health(&f, 2);
	queue_restart(&f, 0);
	health_all(&f);
}

/* ---- hostile control messages -------------------------------------------------------- */

static void expect_refused_msg(struct vuf *f, uint32_t req, const void *p, uint32_t size,
			       const int *fds, unsigned nfds, const char *what)
{
	int ret = vuf_request(f, req, p, size, fds, nfds, NULL, 0);

	if (ret < 0)
		fail("%s: %s", what, f->err);
	if (ret == 0)
		fail("%s: accepted (REPLY_ACK 0), expected a refusal", what);
}

static void case_bad_mem_tables(void)
{
	struct vuf f;
	struct {
		uint32_t nregions, padding;
		struct {
			uint64_t gpa, size, uva, mmap_offset;
		} r[9];
	} m = {0, 0, {{0}}};
	int fds[VUF_MAX_REGIONS];

	fe_open(&f, 0, true);
	for (unsigned i = 0; i < mem.n; i++) {
		m.r[i].gpa = mem.r[i].gpa;
		m.r[i].size = mem.r[i].size;
		m.r[i].uva = mem.r[i].uva;
		m.r[i].mmap_offset = mem.r[i].mmap_offset;
		fds[i] = mem.r[i].fd;
	}
	m.nregions = 3;
	expect_refused_msg(&f, VUF_SET_MEM_TABLE, &m, 8 + 3 * 32, fds, 2, "3 regions, 2 fds");
	health_all(&f); /* the old table is still in force */
	m.nregions = 1;
	expect_refused_msg(&f, VUF_SET_MEM_TABLE, &m, 8 + 32, fds, 3, "1 region, 3 fds");
	m.nregions = 0;
	expect_refused_msg(&f, VUF_SET_MEM_TABLE, &m, 8, NULL, 0, "0 regions");
	m.nregions = 9;
	expect_refused_msg(&f, VUF_SET_MEM_TABLE, &m, 8 + 9 * 32, fds, 3, "9 regions");
	m.nregions = 3;
	expect_refused_msg(&f, VUF_SET_MEM_TABLE, &m, 8 + 32, fds, 3, "3 regions in 40 bytes");
	health_all(&f);
	/* the table again while requests run (memory hot-plug does this) */
	{
		struct req reqs[NQ * 4];
		unsigned n = 0;

		for (unsigned q = 0; q < NQ; q++)
			for (unsigned s = 0; s < 4; s++, n++) {
				reqs[n] = (struct req){.q = q, .slot = s, .type = VIRTIO_BLK_T_OUT,
						       .sector = (q * 4 + s) * 2048,
						       .data_gpa = DATA_LO + n * MiB + 512,
						       .data_len = 512 * KiB};
				prepare_write(&reqs[n]);
				submit(&f, &reqs[n], 4, SH_UNALIGNED);
			}
		for (unsigned q = 0; q < NQ; q++)
			vuf_kick(&f, q);
		must(&f, vuf_set_mem_table(&f), "SET_MEM_TABLE while requests run");
		wait_reqs(&f, reqs, n);
		for (unsigned i = 0; i < n; i++) {
			expect_ok(&reqs[i], 1, "write across SET_MEM_TABLE");
			pending_done(&reqs[i]);
		}
	}
	health_all(&f);
}

/* A region the front end says is larger than its memfd: touching the part
 * beyond the file would raise SIGBUS in the daemon. */
static void case_region_beyond_file(void)
{
	struct vuf f;
	struct vuf_mem hostile = mem; /* shares A, B and C */
	uint64_t d = 0x200000000ull, idbuf = d + 1536 * KiB;
	int ret;

	fe_open(&f, 0, true);
	CHECK(vuf_mem_add(&hostile, d, 2 * MiB, 0x730000000000ull, 0, 1 * MiB) == 0);
	f.mem = &hostile;
	ret = vuf_set_mem_table(&f);
	f.mem = &mem;
	if (ret < 0)
		fail("SET_MEM_TABLE: %s", f.err);
	if (ret == 0) {
		/* accepted: a request into the missing half must fail, not kill */
		hostile_hdr(0, VIRTIO_BLK_T_GET_ID);
		vuf_desc(&f, 0, 0, HDR(0), 16, N, 1);
		vuf_desc(&f, 0, 1, idbuf, 20, N | W, 2);
		vuf_desc(&f, 0, 2, STATUS(0), 1, W, 0);
		vuf_avail_push(&f, 0, 0);
		vuf_kick(&f, 0);
		sleep_ms(200);
		if (!server_running(&srv)) {
			munmap(hostile.r[3].map, hostile.r[3].map_len);
			close(hostile.r[3].fd);
			fail("a memory region larger than its memfd (2 MiB declared, 1 MiB file) was "
			     "accepted, and a GET_ID into the missing half killed the daemon");
		}
		expect_refused(&f, 0, 0, STATUS(0), "GET_ID beyond the end of a region's file");
	}
	must(&f, vuf_set_mem_table(&f), "SET_MEM_TABLE back to the good one");
	munmap(hostile.r[3].map, hostile.r[3].map_len);
	close(hostile.r[3].fd);
	queue_restart(&f, 0);
	health_all(&f);
}

static void case_bad_vring_messages(void)
{
	struct vuf f;
	struct vstate st;
	uint64_t v;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	CHECK(efd >= 0);
	fe_open(&f, 0, true);
	st = (struct vstate){0, 0};
	expect_refused_msg(&f, VUF_SET_VRING_NUM, &st, 8, NULL, 0, "SET_VRING_NUM 0");
	st.num = 100;
	expect_refused_msg(&f, VUF_SET_VRING_NUM, &st, 8, NULL, 0, "SET_VRING_NUM 100");
	st.num = 32768;
	expect_refused_msg(&f, VUF_SET_VRING_NUM, &st, 8, NULL, 0, "SET_VRING_NUM 32768");
	st = (struct vstate){NQ, 64};
	expect_refused_msg(&f, VUF_SET_VRING_NUM, &st, 8, NULL, 0, "SET_VRING_NUM queue 3 of 3");
	st = (struct vstate){0x7fffffff, 64};
	expect_refused_msg(&f, VUF_SET_VRING_BASE, &st, 8, NULL, 0, "SET_VRING_BASE huge queue");
	st = (struct vstate){1, 70000};
	expect_refused_msg(&f, VUF_SET_VRING_BASE, &st, 8, NULL, 0, "SET_VRING_BASE 70000");
	st = (struct vstate){200, 1};
	expect_refused_msg(&f, VUF_SET_VRING_ENABLE, &st, 8, NULL, 0, "SET_VRING_ENABLE queue 200");
	v = 255;
	expect_refused_msg(&f, VUF_SET_VRING_KICK, &v, 8, &efd, 1, "SET_VRING_KICK queue 255");
	v = 0;
	expect_refused_msg(&f, VUF_SET_VRING_CALL, &v, 8, NULL, 0, "SET_VRING_CALL without an fd");
	{
		int two[2] = {efd, efd};

		expect_refused_msg(&f, VUF_SET_VRING_CALL, &v, 8, two, 2, "SET_VRING_CALL with 2 fds");
	}
	v = ~0ull;
	expect_refused_msg(&f, VUF_SET_FEATURES, &v, 8, NULL, 0, "SET_FEATURES with unknown bits");
	expect_refused_msg(&f, VUF_SET_PROTOCOL_FEATURES, &v, 8, NULL, 0,
			   "SET_PROTOCOL_FEATURES with unknown bits");
	expect_refused_msg(&f, 99, NULL, 0, NULL, 0, "request 99");
	expect_refused_msg(&f, 0, NULL, 0, NULL, 0, "request 0");
	/* fds on messages that take none are closed, not kept */
	v = f.features;
	must(&f, vuf_request(&f, VUF_SET_FEATURES, &v, 8, &efd, 1, NULL, 0), "SET_FEATURES + fd");
	/* a message shorter than its payload should be (zeros are read) */
	must(&f, vuf_sync(&f), "sync");
	{
		int ret = vuf_request(&f, VUF_SET_VRING_NUM, &st, 2, NULL, 0, NULL, 0);

		if (ret < 0)
			fail("SET_VRING_NUM with 2 payload bytes: %s", f.err);
	}
	/* SET_VRING_ERR and SET_LOG_FD with fds are accepted and the fds closed */
	v = 1;
	{
		int ret = vuf_request(&f, VUF_SET_VRING_ERR, &v, 8, &efd, 1, NULL, 0);

		if (ret < 0)
			fail("SET_VRING_ERR: %s", f.err);
	}
	close(efd);
	health_all(&f);
	/* SET_VRING_CALL without an fd (NOFD): requests are still answered,
	 * only the call is missing */
	v = 2 | VUF_VRING_NOFD;
	must(&f, vuf_request(&f, VUF_SET_VRING_CALL, &v, 8, NULL, 0, NULL, 0), "CALL with NOFD");
	{
		struct req r = {.q = 2, .type = VIRTIO_BLK_T_FLUSH};
		int64_t deadline = now_ms() + ANSWER_MS;

		submit(&f, &r, 0, 0);
		vuf_kick(&f, 2);
		while (!vuf_used_pending(&f, 2) && now_ms() < deadline)
			sleep_ms(2);
		CHECK(vuf_used_pending(&f, 2) == 1);
		f.vq[2].last_used++;
	}
	queue_restart(&f, 2);
	health_all(&f);
}

/* sendmsg of bytes as they are, with fds. */
static int send_with_fds(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	char control[CMSG_SPACE(8 * sizeof(int))] = {0};
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			    .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	return sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -errno;
}

/* Messages that break the stream: the daemon hangs up, and serves the next
 * front end. */
static void case_broken_streams(void)
{
	struct vuf f;
	uint8_t big[VUF_MAX_PAYLOAD + 8] = {0};
	struct vuf_hdr h;
	static const uint32_t bad_flags[] = {0, 2, 3, 1 | 0x4 | 0x8 | 0x10 | 0x80000000u};

	/* payload size beyond 4096 */
	fe_open(&f, 0, true);
	health(&f, 0);
	must(&f, vuf_send_raw(&f, VUF_SET_FEATURES, VUF_VERSION, big, VUF_MAX_PAYLOAD + 1, NULL, 0),
	     "send");
	if (!vuf_wait_hangup(&f, ANSWER_MS))
		fail("a message of %u payload bytes did not end the connection", VUF_MAX_PAYLOAD + 1);
	vuf_close(&f);
	/* size 0xffffffff with nothing after it */
	fe_open(&f, 0, true);
	h = (struct vuf_hdr){VUF_GET_FEATURES, VUF_VERSION, 0xffffffffu};
	CHECK(send(f.fd, &h, sizeof(h), MSG_NOSIGNAL) == sizeof(h));
	if (!vuf_wait_hangup(&f, ANSWER_MS))
		fail("a header claiming 4 GiB of payload did not end the connection");
	vuf_close(&f);
	/* wrong version bits */
	for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
		fe_open(&f, 0, true);
		must(&f, vuf_send_raw(&f, VUF_GET_FEATURES, bad_flags[i], NULL, 0, NULL, 0), "send");
		if (i < 3 && !vuf_wait_hangup(&f, ANSWER_MS))
			fail("flags %#x (version %u) did not end the connection", bad_flags[i],
			     bad_flags[i] & 3);
		vuf_close(&f);
	}
	/* truncated: half a header, then the end */
	fe_open(&f, 0, true);
	CHECK(send(f.fd, &h, 6, MSG_NOSIGNAL) == 6);
	vuf_close(&f);
	/* a header and half its payload with an fd attached, then the end */
	fe_open(&f, 0, true);
	{
		uint8_t msg[12 + 4] = {0};
		int efd = eventfd(0, EFD_CLOEXEC);

		CHECK(efd >= 0);
		h = (struct vuf_hdr){VUF_SET_VRING_CALL, VUF_VERSION, 8};
		memcpy(msg, &h, sizeof(h));
		CHECK(send_with_fds(f.fd, msg, sizeof(msg), &efd, 1) == 0);
		close(efd);
	}
	vuf_close(&f);
	/* a payload that stops in the middle: the first half now, the rest
	 * never (the connection stays open until the daemon gives up or we do) */
	fe_open(&f, 0, true);
	{
		struct vstate st = {0, 64};

		h = (struct vuf_hdr){VUF_SET_VRING_NUM, VUF_VERSION, 8};
		CHECK(send(f.fd, &h, sizeof(h), MSG_NOSIGNAL) == sizeof(h));
		CHECK(send(f.fd, &st, 4, MSG_NOSIGNAL) == 4);
		sleep_ms(50);
	}
	vuf_close(&f);
	/* the daemon serves the next front end normally */
	fe_open(&f, 0, true);
	health_all(&f);
}

/* RESET_OWNER in the middle: everything is forgotten, a new setup on the
 * same connection works. */
static void case_reset_owner(void)
{
	struct vuf f;

	fe_open(&f, 0, true);
	health_all(&f);
	must(&f, vuf_send_raw(&f, VUF_RESET_OWNER, VUF_VERSION, NULL, 0, NULL, 0), "RESET_OWNER");
	must(&f, vuf_sync(&f), "sync after RESET_OWNER");
	f.protocol_features = 0;
	must(&f, vuf_negotiate(&f, 0, true), "negotiation after RESET_OWNER");
	must(&f, vuf_set_mem_table(&f), "SET_MEM_TABLE");
	for (unsigned q = 0; q < NQ; q++) {
		queue_layout(&f, q);
		must(&f, vuf_vq_start(&f, q, 0), "queue start");
	}
	health_all(&f);
}

/* ---- in flight: GET_VRING_BASE, disconnect, killed front end ---------------------------------- */

/* Waits until the daemon took every published request of q (EVENT_IDX: it
 * writes the avail index it reached after the used ring). */
static void wait_taken(struct vuf *f, unsigned q)
{
	int64_t deadline = now_ms() + ANSWER_MS;
	volatile uint16_t *avail_event = (volatile uint16_t *)&f->vq[q].used->ring[f->vq[q].num];

	while (*avail_event != f->vq[q].avail_idx) {
		if (now_ms() > deadline)
			fail("queue %u: the daemon did not take the requests (avail event %u, avail "
			     "index %u)", q, *avail_event, f->vq[q].avail_idx);
		sched_yield();
	}
}

/* Big unaligned writes to never-written blocks: slow enough to be in flight. */
static unsigned slow_writes(struct vuf *f, struct req *reqs, unsigned q, unsigned n,
			    uint64_t first_sector)
{
	for (unsigned i = 0; i < n; i++) {
		reqs[i] = (struct req){.q = q, .slot = i, .type = VIRTIO_BLK_T_OUT,
				       .sector = first_sector + i * 1024,
				       .data_gpa = DATA_LO + i * (640 * KiB) + 1,
				       .data_len = 512 * KiB};
		prepare_write(&reqs[i]);
		submit(f, &reqs[i], 3, SH_UNALIGNED);
	}
	vuf_kick(f, q);
	return n;
}

static void case_get_vring_base_in_flight(void)
{
	struct vuf f;
	struct req reqs[SLOTS];
	unsigned inflight_seen = 0;

	fe_open(&f, 0, true);
	for (unsigned round = 0; round < 3; round++) {
		uint32_t base;
		uint16_t used_at_reply;

		slow_writes(&f, reqs, 0, SLOTS, (8 + round * 8) * MiB / SECTOR);
		wait_taken(&f, 0);
		inflight_seen += vuf_used_pending(&f, 0) < SLOTS;
		must(&f, vuf_get_vring_base(&f, 0, &base), "GET_VRING_BASE with requests in flight");
		used_at_reply = __atomic_load_n(&f.vq[0].used->idx, __ATOMIC_ACQUIRE);
		CHECK_EQ(base, f.vq[0].avail_idx);
		if (used_at_reply != base)
			fail("GET_VRING_BASE answered %u while the used index was %u: it must wait for "
			     "the requests in flight", base, used_at_reply);
		wait_reqs(&f, reqs, SLOTS);
		for (unsigned i = 0; i < SLOTS; i++) {
			expect_ok(&reqs[i], 1, "write in flight at GET_VRING_BASE");
			pending_done(&reqs[i]);
		}
		/* stopped: a kick does nothing until a new SET_VRING_KICK */
		{
			struct req r = {.q = 0, .slot = 0, .type = VIRTIO_BLK_T_FLUSH};

			submit(&f, &r, 0, 0);
			vuf_kick(&f, 0);
			expect_silence(&f, 0, "kick after GET_VRING_BASE");
			must(&f, vuf_vq_rekick(&f, 0), "SET_VRING_KICK");
			wait_reqs(&f, &r, 1);
			expect_ok(&r, 1, "FLUSH after the restart");
		}
	}
	printf("    (requests still in flight at GET_VRING_BASE in %u of 3 rounds)\n", inflight_seen);
	health_all(&f);
}

/* The front end goes away with requests in flight: the daemon answers them
 * into the memory (still shared), then serves the next front end. */
static void case_disconnect_in_flight(void)
{
	struct vuf f;
	struct req reqs[SLOTS];
	int64_t deadline;

	fe_open(&f, 0, true);
	slow_writes(&f, reqs, 1, SLOTS, 40 * MiB / SECTOR);
	wait_taken(&f, 1);
	vuf_close(&f);
	deadline = now_ms() + ANSWER_MS;
	while (vuf_used_pending(&f, 1) < SLOTS && now_ms() < deadline)
		sleep_ms(2);
	if (vuf_used_pending(&f, 1) != SLOTS)
		fail("after the disconnect only %u of %u requests in flight were answered",
		     vuf_used_pending(&f, 1), SLOTS);
	for (unsigned i = 0; i < SLOTS; i++) {
		struct vring_used_elem e = f.vq[1].used->ring[(f.vq[1].last_used + i) % QSZ];

		CHECK_EQ(e.len, 1);
		for (unsigned k = 0; k < SLOTS; k++)
			if (reqs[k].head == e.id) {
				CHECK(vuf_mem_read(&mem, reqs[k].status_gpa, &reqs[k].status, 1));
				CHECK_EQ(reqs[k].status, VIRTIO_BLK_S_OK);
				pending_done(&reqs[k]);
			}
	}
	CHECK_EQ(nr_pending, 0);
	/* the next front end reads what the answered writes wrote */
	fe_open(&f, 0, true);
	for (unsigned i = 0; i < SLOTS; i++) {
		struct req r = one(&f, i % NQ, VIRTIO_BLK_T_IN, reqs[i].sector, DATA_HI - MiB,
				   reqs[i].data_len, 2, 0);

		check_read(&r, "read after reconnect");
	}
	health_all(&f);
}

/* A front end killed with SIGKILL in the middle of writes. */
static void case_front_end_killed(void)
{
	struct vuf f;
	int go[2];
	pid_t child;
	char c;
	int64_t deadline;
	uint16_t base_before;

	CHECK(pipe2(go, O_CLOEXEC) == 0);
	fflush(stdout);
	fflush(stderr);
	child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		/* the child: set up, write, report that the daemon took them, wait */
		struct req reqs[SLOTS];

		close(go[0]);
		in_case = false;
		srv.pid = 0; /* the parent's: exit handlers must not kill it */
		vuf_init(&f, &mem);
		if (vuf_connect(&f, srv.sock) || vuf_negotiate(&f, 0, true) ||
		    vuf_set_mem_table(&f))
			_exit(2);
		for (unsigned q = 0; q < NQ; q++)
			if (vuf_vq_layout(&f, q, QSZ, DESC_GPA(q), AVAIL_GPA(q), USED_GPA(q)) ||
			    vuf_vq_start(&f, q, 0))
				_exit(3);
		nr_pending = 0;
		slow_writes(&f, reqs, 2, SLOTS, 48 * MiB / SECTOR);
		wait_taken(&f, 2);
		if (write(go[1], "g", 1) != 1)
			_exit(4);
		pause();
		_exit(0);
	}
	close(go[1]);
	{
		struct pollfd p = {.fd = go[0], .events = POLLIN};

		if (poll(&p, 1, ANSWER_MS) != 1 || read(go[0], &c, 1) != 1) {
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
			close(go[0]);
			fail("the child front end did not get its writes taken");
		}
	}
	close(go[0]);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	/* the daemon answers them into the shared memory */
	vuf_init(&f, &mem);
	f.vq[2].num = QSZ;
	f.vq[2].used = vuf_gpa(&mem, USED_GPA(2), 4096);
	base_before = 0;
	deadline = now_ms() + ANSWER_MS;
	while (__atomic_load_n(&f.vq[2].used->idx, __ATOMIC_ACQUIRE) != SLOTS && now_ms() < deadline)
		sleep_ms(2);
	CHECK_EQ(f.vq[2].used->idx, (uint16_t)(base_before + SLOTS));
	/* the child's writes: the same layout as slow_writes, data in memory */
	for (unsigned i = 0; i < SLOTS; i++) {
		uint64_t off = 48 * MiB + i * 1024 * SECTOR, gpa = DATA_LO + i * (640 * KiB) + 1;
		uint8_t st;

		CHECK(vuf_mem_read(&mem, SCRATCH(2, i) + SCR_STATUS, &st, 1));
		CHECK_EQ(st, VIRTIO_BLK_S_OK);
		CHECK(vuf_mem_read(&mem, gpa, model + off, 512 * KiB));
		for (uint64_t s = off / SECTOR; s < (off + 512 * KiB) / SECTOR; s++)
			unknown[s] = 0;
	}
	fe_open(&f, 0, true);
	for (unsigned i = 0; i < SLOTS; i += 3) {
		struct req r = one(&f, i % NQ, VIRTIO_BLK_T_IN, (48 * MiB) / SECTOR + i * 1024,
				   DATA_HI - MiB, 512 * KiB, 1, 0);

		check_read(&r, "read of a killed front end's write");
	}
	health_all(&f);
}

/* ---- hostile eventfds ---------------------------------------------------------------- */

/* A kick "eventfd" that is always readable (/dev/null reads 0 bytes at
 * once): the queue's worker must not spin on it. */
static void case_kick_not_eventfd(void)
{
	struct vuf f;
	uint64_t v = 0;
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	double share;

	CHECK(null >= 0);
	fe_open(&f, 0, true);
	share = server_cpu_share(&srv, 500);
	if (share > 0.2) {
		close(null);
		fail("the idle daemon uses %.0f%% of a CPU", share * 100);
	}
	must(&f, vuf_request(&f, VUF_SET_VRING_KICK, &v, 8, &null, 1, NULL, 0), "KICK /dev/null");
	close(null);
	share = server_cpu_share(&srv, 1000);
	must(&f, vuf_vq_rekick(&f, 0), "SET_VRING_KICK back to an eventfd");
	health_all(&f);
	if (share > 0.3)
		fail("with /dev/null as queue 0's kick fd the daemon uses %.0f%% of a CPU (a worker "
		     "spinning on reads that return 0)", share * 100);
}

/* A call "eventfd" that is a pipe nobody reads: writing to it must not kill
 * the daemon (SIGPIPE). */
static void case_call_broken_pipe(void)
{
	struct vuf f;
	uint64_t v = 1;
	int p[2];
	struct req r = {.q = 1, .type = VIRTIO_BLK_T_FLUSH};
	int64_t deadline;

	CHECK(pipe2(p, O_CLOEXEC) == 0);
	fe_open(&f, 0, true);
	must(&f, vuf_request(&f, VUF_SET_VRING_CALL, &v, 8, &p[1], 1, NULL, 0), "CALL = a pipe");
	close(p[0]);
	close(p[1]);
	submit(&f, &r, 0, 0);
	vuf_kick(&f, 1);
	deadline = now_ms() + 2000;
	while (!vuf_used_pending(&f, 1) && now_ms() < deadline)
		sleep_ms(2);
	sleep_ms(100);
	if (!server_running(&srv))
		fail("a call fd that is a pipe without a reader killed the daemon (SIGPIPE on the "
		     "notification write)");
	CHECK(vuf_used_pending(&f, 1) == 1);
	queue_restart(&f, 1);
	health_all(&f);
}

/* ---- limits and fairness --------------------------------------------------------------- */

/* A read of 40 MiB: 10 descriptors of 4 MiB over the same odd guest buffer.
 * The engine takes at most VSP_MAX_REQUEST (32 MiB); beyond it the front
 * door must refuse (else a guest makes the daemon allocate bounce buffers
 * as large as the disk, 4 GiB per descriptor). */
static void case_oversize_request(void)
{
	struct vuf f;
	struct vuf_seg segs[12];
	unsigned n = 0;
	uint64_t status = SCRATCH(0, 1) + SCR_STATUS;
	int head;

	fe_open(&f, 0, true);
	hostile_hdr(0, VIRTIO_BLK_T_IN);
	segs[n++] = (struct vuf_seg){HDR(0), 16, false};
	for (int i = 0; i < 10; i++)
		segs[n++] = (struct vuf_seg){DATA_LO + 1, 4 * MiB, true};
	segs[n++] = (struct vuf_seg){status, 1, true};
	CHECK(vuf_mem_write(&mem, status, &(uint8_t){STATUS_UNTOUCHED}, 1));
	head = vuf_chain(&f, 0, 0, segs, n, TABLE(0));
	CHECK(head == 0);
	vuf_avail_push(&f, 0, 0);
	vuf_kick(&f, 0);
	{
		uint32_t id, len;
		uint8_t st;

		must(&f, used_next(&f, 0, ANSWER_MS, &id, &len), "40 MiB read");
		CHECK(vuf_mem_read(&mem, status, &st, 1));
		if (!(len == 0 || st == VIRTIO_BLK_S_IOERR))
			fail("a read of 40 MiB (over the engine's 32 MiB maximum) was served: status "
			     "%u, used length %u", st, len);
	}
	health_all(&f);
}

struct flood {
	struct vuf *f;
	unsigned q;
	volatile bool stop;
	unsigned long pushed;
};

/* A guest that keeps the avail index moving with requests the daemon
 * answers at once (GET_ID): never more than the queue size ahead. */
static void *flood_main(void *arg)
{
	struct flood *fl = arg;
	struct vuf_vq *vq = &fl->f->vq[fl->q];
	volatile uint16_t *avail_event = (volatile uint16_t *)&vq->used->ring[vq->num];
	uint16_t a = vq->avail_idx;
	int64_t end = now_ms() + 4000;

	while (!fl->stop && now_ms() < end) {
		uint16_t u = __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE);
		uint16_t t = (uint16_t)(u + vq->num - 8);

		if ((int16_t)(t - a) > 0) {
			uint16_t old = a;

			fl->pushed += (uint16_t)(t - a);
			a = t;
			__atomic_store_n(&vq->avail->idx, a, __ATOMIC_RELEASE);
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			/* kick as a driver with EVENT_IDX does: when the device asked */
			if (vring_need_event(*avail_event, a, old))
				vuf_kick(fl->f, fl->q);
		}
	}
	vq->avail_idx = a;
	return NULL;
}

/* Queues 0 and 2 share worker 0: a guest flooding queue 0 must not keep
 * queue 2 (which could belong to another disk) from being served.  Each
 * flooded request is a GET_ID spread over a 1024-entry indirect table: cheap
 * for the guest to repeat, some 20 us of chain walking for the daemon, so
 * that the guest's backlog outlasts a scheduler time slice on a busy
 * machine. */
static void case_fairness(void)
{
	struct vuf f;
	struct flood fl = {.f = &f, .q = 0};
	pthread_t t;
	int64_t worst = 0;
	uint64_t base = SCRATCH(0, 1), table = REG_C + 0x1c0000;
	unsigned probes = 0;
	uint32_t id, len;
	int ret = 0;

	fe_open(&f, 0, true);
	/* queue 0 at the largest size: the most the guest may queue at once */
	{
		uint32_t b;

		must(&f, vuf_get_vring_base(&f, 0, &b), "GET_VRING_BASE");
		must(&f, vuf_vq_layout(&f, 0, 1024, REG_C + 0x180000, REG_C + 0x184000,
				       REG_C + 0x186000), "layout of 1024 entries");
		must(&f, vuf_vq_start(&f, 0, 0), "queue of 1024 entries");
	}
	hostile_hdr(0, VIRTIO_BLK_T_GET_ID);
	table_desc(table, 0, HDR(0), 16, N, 1);
	for (unsigned i = 1; i < 1024; i++)
		table_desc(table, i, base + i, 1, (uint16_t)(W | (i < 1023 ? N : 0)), (uint16_t)(i + 1));
	vuf_desc(&f, 0, 0, table, 1024 * 16, I, 0);
	for (unsigned i = 0; i < 1024; i++)
		f.vq[0].avail->ring[i] = 0;
	CHECK(pthread_create(&t, NULL, flood_main, &fl) == 0);
	vuf_kick(&f, 0);
	sleep_ms(50);
	for (; probes < 8 && ret == 0; probes++) {
		struct req r = {.q = 2, .type = VIRTIO_BLK_T_GET_ID, .data_gpa = SCRATCH(2, 0) + SCR_AUX,
				.data_len = 20};
		int64_t t0;

		submit(&f, &r, 1, 0);
		t0 = now_ms();
		vuf_kick(&f, 2);
		ret = vuf_used_next(&f, 2, 2000, &id, &len);
		if (now_ms() - t0 > worst)
			worst = now_ms() - t0;
		sleep_ms(20);
	}
	fl.stop = true;
	pthread_join(t, NULL);
	if (ret != 0) /* let it finish, to leave the queue in a known state */
		must(&f, vuf_used_next(&f, 2, ANSWER_MS, &id, &len), "queue 2 after the flood");
	queue_restart(&f, 0);
	health_all(&f);
	printf("    (%lu requests flooded on queue 0; worst wait on queue 2 over %u probes: %lld "
	       "ms)\n", fl.pushed, probes, (long long)worst);
	if (ret != 0 || worst > 300)
		fail("while queue 0 is flooded with requests, a GET_ID on queue 2 (same worker) waited "
		     "%s%lld ms: one guest starves every queue of its worker", ret ? "over " : "",
		     (long long)worst);
}

/* ---- stopping the daemon with a hostile front end connected ------------------------------ */

/* A front end that sent half a message and stalls: SIGTERM must still stop
 * the daemon promptly. */
#define HOSTILE_STOP_MS 5000

static void case_sigterm_partial_message(void)
{
	struct vuf f;
	struct vuf_hdr h = {VUF_SET_FEATURES, VUF_VERSION, 8};
	int64_t took;

	fe_open(&f, 0, true);
	health(&f, 0);
	CHECK(send(f.fd, &h, sizeof(h), MSG_NOSIGNAL) == sizeof(h));
	CHECK(send(f.fd, "abc", 3, MSG_NOSIGNAL) == 3);
	sleep_ms(100);
	took = server_stop(&srv, false, HOSTILE_STOP_MS);
	vuf_close(&f);
	main_server_start();
	if (took < 0)
		fail("a front end stalled in the middle of a message (3 of 8 payload bytes sent) "
		     "keeps SIGTERM from stopping the daemon (killed after %d ms)", HOSTILE_STOP_MS);
	printf("    (stopped %lld ms after SIGTERM)\n", (long long)took);
	fe_open(&f, 0, true);
	health_all(&f);
}

/* A front end that never reads its replies. */
static void case_sigterm_unread_replies(void)
{
	struct vuf f;
	int64_t took;
	unsigned sent = 0;

	fe_open(&f, 0, true);
	/* send until the daemon stops reading for 300 ms: its replies then
	 * fill our receive buffer and its sendmsg blocks */
	for (int64_t end = now_ms() + 3000, last = now_ms(); now_ms() < end && now_ms() - last < 300;) {
		struct vuf_hdr g = {VUF_GET_FEATURES, VUF_VERSION, 0};
		struct pollfd p = {.fd = f.fd, .events = POLLOUT};

		if (send(f.fd, &g, sizeof(g), MSG_NOSIGNAL | MSG_DONTWAIT) == sizeof(g)) {
			sent++;
			last = now_ms();
		} else if (errno == EAGAIN) {
			poll(&p, 1, 20);
		} else {
			break;
		}
	}
	sleep_ms(100);
	took = server_stop(&srv, false, HOSTILE_STOP_MS);
	vuf_close(&f);
	main_server_start();
	if (took < 0)
		fail("a front end that never reads its replies (%u GET_FEATURES sent) keeps SIGTERM "
		     "from stopping the daemon (killed after %d ms)", sent, HOSTILE_STOP_MS);
	printf("    (%u requests sent; stopped %lld ms after SIGTERM)\n", sent, (long long)took);
	fe_open(&f, 0, true);
	health_all(&f);
}

/* ---- the end ----------------------------------------------------------------------------- */

static void final_checks(void)
{
	struct vhd_open_opts oo = {0};
	struct vhd_check_report rep = {0};
	struct vhd_image *img;
	struct vhd_err e;
	uint8_t *buf = malloc(DISK_SIZE);
	uint64_t unknown_sectors = 0;

	snprintf(ctx, sizeof(ctx), "final checks");
	CHECK(buf);
	server_stop(&srv, true, STOP_WAIT_MS);
	if (access(srv.sock, F_OK) == 0)
		fail("%s still exists after the daemon stopped", srv.sock);
	if (vhd_check(srv.image, NULL, &rep, &e) < 0)
		fail("check %s: %s", srv.image, e.msg);
	for (size_t i = 0; i < rep.count; i++)
		fprintf(stderr, "  check: %s: %s: %s\n", vhd_severity_name(rep.problems[i].severity),
			rep.problems[i].field, rep.problems[i].msg);
	if (vhd_check_count(&rep, VHD_SEV_WARNING))
		fail("%s does not check clean", srv.image);
	vhd_check_report_free(&rep);
	if (vhd_open(srv.image, &oo, &img, &e) < 0)
		fail("open %s: %s", srv.image, e.msg);
	CHECK(vhd_pread(img, buf, DISK_SIZE, 0) == 0);
	vhd_close(img);
	for (uint64_t s = 0; s < DISK_SIZE / SECTOR; s++) {
		if (unknown[s]) {
			unknown_sectors++;
			continue;
		}
		if (memcmp(buf + s * SECTOR, model + s * SECTOR, SECTOR))
			fail("sector %" PRIu64 " of the image differs from what was written", s);
	}
	free(buf);
	printf("image checks clean and equals the model (%" PRIu64 " sectors left open by failed "
	       "cases)\n", unknown_sectors);
}

static void make_image(void)
{
	char image[4200];
	struct vhd_create_opts co = {.type = VHD_TYPE_DYNAMIC, .size = DISK_SIZE};
	struct vhd_open_opts oo = {0};
	struct vhd_image *img;
	struct vhd_info info;
	struct vhd_err e;

	snprintf(image, sizeof(image), "%s/disk.vhd", tmpdir);
	if (vhd_create(image, &co, &e) < 0)
		fail("create %s: %s", image, e.msg);
	if (vhd_open(image, &oo, &img, &e) < 0)
		fail("open %s: %s", image, e.msg);
	vhd_get_info(img, &info);
	CHECK_EQ(info.virtual_size, DISK_SIZE);
	memcpy(vhd_uuid, info.uuid, 16);
	vhd_close(img);
}

static void make_memory(void)
{
	/* B's file starts with 64 KiB that are not guest memory (mmap_offset) */
	if (vuf_mem_add(&mem, REG_A, REG_AB_SIZE, 0x7f0000000000ull, 0, 0) ||
	    vuf_mem_add(&mem, REG_B, REG_AB_SIZE, 0x7f0100000000ull, 64 * KiB, 0) ||
	    vuf_mem_add(&mem, REG_C, REG_C_SIZE, 0x7f0200000000ull, 0, 0))
		fail("guest memory: %s", strerror(errno));
}

static void rm_tree(void)
{
	char cmd[4200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
}

static const char *only;

static void run_case(const char *name, void (*fn)(void))
{
	int64_t t0 = now_ms();

	if (only && strcmp(only, name))
		return;
	snprintf(ctx, sizeof(ctx), "%s", name);
	if (!server_running(&srv))
		main_server_start();
	if (sigsetjmp(case_jmp, 1) == 0) {
		in_case = true;
		fn();
		server_alive(&srv);
		in_case = false;
		fronts_close();
		nr_passed++;
		printf("  %-30s ok (%lld ms)\n", name, (long long)(now_ms() - t0));
	} else {
		in_case = false;
		fronts_close();
		pending_forget();
		nr_failed++;
		snprintf(failed_list + strlen(failed_list), sizeof(failed_list) - strlen(failed_list),
			 " %s", name);
		printf("  %-30s FAILED (%lld ms)\n", name, (long long)(now_ms() - t0));
		if (!server_running(&srv)) {
			printf("    (the daemon died: restarting it)\n");
			main_server_start();
		}
	}
	fflush(stdout);
}

#define RUN(fn) run_case(&(#fn)[5], fn)

int main(void)
{
	const char *s = getenv("TEST_SEED");
	const char *t = getenv("TMPDIR");
	int64_t t0 = now_ms();

	vspd = getenv("VSPD");
	only = getenv("TEST_ONLY");
	if (!vspd || access(vspd, X_OK) < 0) {
		printf("SKIP: VSPD (the vhd-vspd binary) is not set or not executable (run through "
		       "ctest)\n");
		return 77;
	}
	seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16;
	rng = seed;
	printf("seed %" PRIu64 " (replay with TEST_SEED=%" PRIu64 ")\n", seed, seed);
	snprintf(tmpdir, sizeof(tmpdir), "%s/vhost-user.XXXXXX", t && *t ? t : "/tmp");
	snprintf(ctx, sizeof(ctx), "setup");
	if (!mkdtemp(tmpdir))
		fail("mkdtemp: %s", strerror(errno));
	atexit(kill_servers);
	signal(SIGPIPE, SIG_IGN);
	model = calloc(1, DISK_SIZE);
	CHECK(model);
	make_image();
	make_memory();
	main_server_start();

	RUN(case_config);
	RUN(case_data_path_event_idx);
	RUN(case_data_path_plain);
	RUN(case_shapes);
	RUN(case_flush_get_id);
	RUN(case_zeroes_discard);
	RUN(case_bounds_and_types);
	RUN(case_bad_addresses);
	RUN(case_bad_chains);
	RUN(case_bad_indirect);
	RUN(case_misaligned_indirect);
	RUN(case_misaligned_rings);
	RUN(case_bad_ring_indices);
	RUN(case_ring_outside_memory);
	RUN(case_bad_mem_tables);
	RUN(case_bad_vring_messages);
	RUN(case_broken_streams);
	RUN(case_reset_owner);
	RUN(case_get_vring_base_in_flight);
	RUN(case_disconnect_in_flight);
	RUN(case_front_end_killed);
	RUN(case_kick_not_eventfd);
	RUN(case_call_broken_pipe);
	RUN(case_region_beyond_file);
	RUN(case_oversize_request);
	RUN(case_fairness);
	RUN(case_sigterm_partial_message);
	RUN(case_sigterm_unread_replies);

	final_checks();
	vuf_mem_free(&mem);
	printf("%u cases passed, %u failed%s%s (%.1f s)\n", nr_passed, nr_failed,
	       nr_failed ? ":" : "", failed_list, (now_ms() - t0) / 1000.0);
	if (nr_failed) {
		printf("(temporary directory kept: %s)\n", tmpdir);
		return 1;
	}
	rm_tree();
	free(model);
	return 0;
}
