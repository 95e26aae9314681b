/* test_crash.c - kill -9 in the middle of writes.
 *
 * The disk is cut into disjoint slots (byte ranges of varied sizes, some with
 * unaligned ends, some spanning block boundaries, a few big ones).  Every
 * sector belongs to at most one slot, so each sector's content is described
 * by one "tag": 0 = never written (zeros, or the parent's data in a
 * differencing disk), else the content of slot bytes is pattern(offset, tag).
 *
 * Each round the test plans a sequence of slot writes (each slot at most once
 * per round, most of them fresh slots in untouched blocks, so blocks are
 * allocated constantly; the rest overwrites), then forks a writer that opens
 * the image read-write and executes the plan with vhd_pwrite; after every k
 * writes (k random 1..4, fixed by the plan) it calls vhd_flush and only then
 * appends the flushed plan indices to an ack log with write()+fsync().  The
 * test kills the writer with SIGKILL after a random delay (0-200 ms after it
 * is ready), then:
 *   - vhd_check: no warning or error (leaked space, INFO, is allowed);
 *   - vhd_open read-write succeeds;
 *   - every acknowledged slot reads back exactly its new pattern;
 *   - every other slot the writer may have started reads, per 512-byte
 *     sector, either the old content or the new one (no garbage);
 *   - every few rounds and at the end of a phase, the whole disk is compared
 *     with the model (nothing outside the slots ever changes).
 * The state carries over to the next round.  Phase 1 works on a dynamic disk,
 * phase 2 on a differencing child of the phase-1 image (the parent must not
 * change); in both, some rounds kill a single long vhd_pwrite that covers many
 * new blocks.  Two image sets: 64 KiB blocks (many allocations) and 2 MiB.
 *
 * Seed: TEST_SEED or a fresh one, printed.  TEST_KEEP=1 keeps the temporary
 * directory.  CRASH_ROUNDS_SCALE=N multiplies the number of rounds.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
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
#include "ptrace_probe.h"
#include "vhd.h"

#define SECTOR 512u
#define MAX_PLAN 6000
#define NR_BIG 6

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- the content model ------------------------------------------------------ */

static inline uint64_t mix64(uint64_t z)
{
	z ^= z >> 33;
	z *= 0xff51afd7ed558ccdull;
	z ^= z >> 33;
	z *= 0xc4ceb9fe1a85ec53ull;
	z ^= z >> 33;
	return z;
}

/* pattern(offset, tag) for the bytes [off, off+len); never a zero byte, so
 * that new data always differs from zeros. */
static void fill_pattern(uint8_t *buf, uint64_t off, uint64_t len, uint32_t tag)
{
	uint64_t key = mix64((uint64_t)tag * 0x9e3779b97f4a7c15ull + 0x5bd1e995);

	if (!tag) {
		memset(buf, 0, len);
		return;
	}
	while (len) {
		uint64_t w = off >> 3;
		unsigned b = (unsigned)(off & 7);
		uint64_t v = mix64(w ^ key) | 0x0101010101010101ull;
		uint8_t bytes[8];
		unsigned n = 8 - b < len ? 8 - b : (unsigned)len;

		memcpy(bytes, &v, 8);
		memcpy(buf, bytes + b, n);
		buf += n;
		off += n;
		len -= n;
	}
}

struct slot {
	uint64_t off, len;
	bool big;
	int last_round;  /* round that last planned it */
	bool fresh;      /* never planned in this phase */
};

struct plan_entry {
	uint32_t slot;
	uint32_t tag;
	bool flush;      /* vhd_flush + ack after this write */
	bool was_fresh;  /* the slot had not been written in this phase */
};

struct set {
	const char *name;
	uint64_t size;
	uint32_t bs;
	uint64_t nsec;
	struct slot *slots;
	uint32_t nslots;
	int32_t *slot_of; /* per sector, -1 = gap */
	uint32_t *tag;    /* per sector: the content the image holds now */
	uint32_t next_tag;
	uint8_t *block_touched; /* planned writes touched this block (this phase) */
	uint32_t *fresh;  /* fresh non-big slots (indices) */
	uint32_t nfresh;
	uint32_t big[NR_BIG];
	uint32_t nbig;
};

/* Expected content of sector s when its slot bytes hold `tag`. */
static void expected_sector(const struct set *S, uint64_t s, uint32_t tag, uint8_t *out)
{
	int32_t sl = S->slot_of[s];
	uint64_t a, b;

	memset(out, 0, SECTOR);
	if (sl < 0 || !tag)
		return;
	a = S->slots[sl].off > s * SECTOR ? S->slots[sl].off : s * SECTOR;
	b = S->slots[sl].off + S->slots[sl].len < (s + 1) * SECTOR ? S->slots[sl].off + S->slots[sl].len
								      : (s + 1) * SECTOR;
	fill_pattern(out + (a - s * SECTOR), a, b - a, tag);
}

static uint64_t slot_len_random(void)
{
	unsigned k = (unsigned)rnd(100);

	if (k < 25)
		return rnd_in(1, 4096);
	if (k < 60)
		return rnd_in(4096, 64 * KiB);
	if (k < 95)
		return rnd_in(64 * KiB, 256 * KiB);
	return rnd_in(256 * KiB, 2 * MiB + 512 * KiB);
}

static void add_slot(struct set *S, uint64_t off, uint64_t len, bool big)
{
	struct slot *sl = &S->slots[S->nslots];

	sl->off = off;
	sl->len = len;
	sl->big = big;
	sl->last_round = -1;
	for (uint64_t s = off / SECTOR; s <= (off + len - 1) / SECTOR; s++) {
		CHECK(S->slot_of[s] == -1);
		S->slot_of[s] = (int32_t)S->nslots;
	}
	if (big)
		S->big[S->nbig++] = S->nslots;
	S->nslots++;
}

static void layout(struct set *S, uint64_t big_min, uint64_t big_max)
{
	uint64_t pos = 0, big_at = S->size * 2 / 5;
	bool big_done = false;
	size_t cap = S->size / SECTOR + 16;

	S->nsec = (S->size + SECTOR - 1) / SECTOR;
	S->slots = calloc(cap, sizeof(*S->slots));
	S->slot_of = malloc(S->nsec * sizeof(*S->slot_of));
	S->tag = calloc(S->nsec, sizeof(*S->tag));
	S->block_touched = calloc(S->size / S->bs + 2, 1);
	S->fresh = malloc(cap * sizeof(*S->fresh));
	CHECK(S->slots && S->slot_of && S->tag && S->block_touched && S->fresh);
	for (uint64_t s = 0; s < S->nsec; s++)
		S->slot_of[s] = -1;
	while (pos < S->size) {
		uint64_t start = pos, len;

		if (!big_done && pos >= big_at) {
			for (int i = 0; i < NR_BIG; i++) {
				start = pos + (rnd(2) ? rnd_in(1, 511) : 0);
				len = rnd_in(big_min, big_max) + rnd(2) * rnd_in(1, 511);
				add_slot(S, start, len, true);
				pos = (start + len + SECTOR - 1) / SECTOR * SECTOR + rnd(3) * SECTOR;
			}
			big_done = true;
			continue;
		}
		if (rnd(10) < 3)
			start += rnd_in(1, 511); /* unaligned start */
		if (start >= S->size)
			break;
		len = slot_len_random();
		if (len > S->size - start || S->size - start - len < 2 * SECTOR)
			len = S->size - start; /* the last slot ends at the end of the disk */
		add_slot(S, start, len, false);
		pos = (start + len + SECTOR - 1) / SECTOR * SECTOR;
		if (rnd(3) == 0)
			pos += rnd_in(1, 4) * SECTOR; /* a gap */
	}
	CHECK(S->nbig == NR_BIG);
	S->next_tag = 1;
}

static void phase_reset(struct set *S)
{
	memset(S->block_touched, 0, S->size / S->bs + 2);
	S->nfresh = 0;
	for (uint32_t i = 0; i < S->nslots; i++) {
		S->slots[i].fresh = true;
		S->slots[i].last_round = -1;
		if (!S->slots[i].big)
			S->fresh[S->nfresh++] = i;
	}
}

/* After a round: slots whose planned write never started are fresh again;
 * the touched blocks are those of slots written in this phase. */
static void unplan(struct set *S, const struct plan_entry *plan, size_t from, size_t n)
{
	for (size_t i = from; i < n; i++)
		if (plan[i].was_fresh)
			S->slots[plan[i].slot].fresh = true;
	memset(S->block_touched, 0, S->size / S->bs + 2);
	S->nfresh = 0;
	for (uint32_t i = 0; i < S->nslots; i++) {
		const struct slot *sl = &S->slots[i];

		if (sl->fresh) {
			if (!sl->big)
				S->fresh[S->nfresh++] = i;
			continue;
		}
		for (uint64_t b = sl->off / S->bs; b <= (sl->off + sl->len - 1) / S->bs; b++)
			S->block_touched[b] = 1;
	}
}

static bool slot_in_untouched_blocks(const struct set *S, uint32_t i)
{
	const struct slot *sl = &S->slots[i];

	for (uint64_t b = sl->off / S->bs; b <= (sl->off + sl->len - 1) / S->bs; b++)
		if (S->block_touched[b])
			return false;
	return true;
}

static void plan_slot(struct set *S, struct plan_entry *p, uint32_t i, int round)
{
	struct slot *sl = &S->slots[i];

	p->slot = i;
	p->tag = S->next_tag++;
	p->was_fresh = sl->fresh;
	sl->last_round = round;
	sl->fresh = false;
	for (uint64_t b = sl->off / S->bs; b <= (sl->off + sl->len - 1) / S->bs; b++)
		S->block_touched[b] = 1;
}

static uint32_t take_fresh(struct set *S, uint32_t fi)
{
	uint32_t i = S->fresh[fi];

	S->fresh[fi] = S->fresh[--S->nfresh];
	return i;
}

/* Plans up to max writes for a normal round. */
static size_t make_plan(struct set *S, struct plan_entry *plan, size_t max, int round)
{
	size_t n = 0;
	unsigned k = (unsigned)rnd_in(1, 4), in_batch = 0;

	while (n < max) {
		unsigned c = (unsigned)rnd(100);
		bool found = false;
		uint32_t i = 0;

		if (c < 60 && S->nfresh) { /* a fresh slot whose blocks nobody touched */
			for (int t = 0; t < 40 && !found; t++) {
				uint32_t fi = (uint32_t)rnd(S->nfresh);

				if (slot_in_untouched_blocks(S, S->fresh[fi])) {
					i = take_fresh(S, fi);
					found = true;
				}
			}
		}
		if (!found && c < 85 && S->nfresh) { /* any fresh slot */
			i = take_fresh(S, (uint32_t)rnd(S->nfresh));
			found = true;
		}
		for (int t = 0; t < 40 && !found; t++) { /* overwrite a slot planned before */
			uint32_t j = (uint32_t)rnd(S->nslots);

			if (!S->slots[j].big && !S->slots[j].fresh && S->slots[j].last_round != round) {
				i = j;
				found = true;
			}
		}
		if (!found && S->nfresh) { /* nothing to overwrite yet */
			i = take_fresh(S, (uint32_t)rnd(S->nfresh));
			found = true;
		}
		if (!found)
			break;
		plan_slot(S, &plan[n], i, round);
		plan[n].flush = ++in_batch == k;
		if (plan[n].flush) {
			in_batch = 0;
			k = (unsigned)rnd_in(1, 4);
		}
		n++;
	}
	if (n)
		plan[n - 1].flush = true;
	return n;
}

/* ---- the writer (forked child) ------------------------------------------------ */

static void note(int fd, char c)
{
	ssize_t r = write(fd, &c, 1);

	(void)r;
}

static __attribute__((noreturn)) void writer(const struct set *S, const char *path,
					     const char *ackpath, const struct plan_entry *plan,
					     size_t n, int pipefd, bool traced)
{
	struct vhd_open_opts o = {.flags = VHD_OPEN_RDWR};
	struct vhd_image *img = NULL;
	struct vhd_err err;
	uint64_t maxlen = 0;
	uint32_t batch[8];
	unsigned nb = 0;
	uint8_t *buf;
	int ackfd, ret;

	for (size_t i = 0; i < n; i++)
		if (S->slots[plan[i].slot].len > maxlen)
			maxlen = S->slots[plan[i].slot].len;
	buf = malloc(maxlen ? maxlen : 1);
	ackfd = open(ackpath, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (!buf || ackfd < 0) {
		fprintf(stderr, "writer: setup failed: %s\n", strerror(errno));
		_exit(2);
	}
	ret = vhd_open(path, &o, &img, &err);
	if (ret < 0) {
		fprintf(stderr, "writer: vhd_open(%s, RDWR) = %s: %s\n", path, strerror(-ret), err.msg);
		_exit(2);
	}
	note(pipefd, 'r');
	if (traced) {
		/* the test counts our syscalls from here on and kills us at one */
		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
			_exit(5);
		raise(SIGSTOP);
	}
	for (size_t i = 0; i < n; i++) {
		const struct slot *sl = &S->slots[plan[i].slot];

		fill_pattern(buf, sl->off, sl->len, plan[i].tag);
		ret = vhd_pwrite(img, buf, sl->len, sl->off);
		if (ret < 0) {
			fprintf(stderr, "writer: vhd_pwrite(off=%" PRIu64 ", len=%" PRIu64 ") = %s\n",
				sl->off, sl->len, strerror(-ret));
			_exit(3);
		}
		batch[nb++] = (uint32_t)i;
		if (plan[i].flush) {
			ret = vhd_flush(img);
			if (ret < 0) {
				fprintf(stderr, "writer: vhd_flush = %s\n", strerror(-ret));
				_exit(3);
			}
			if (write(ackfd, batch, nb * sizeof(batch[0])) != (ssize_t)(nb * sizeof(batch[0])) ||
			    fsync(ackfd) < 0) {
				fprintf(stderr, "writer: ack log: %s\n", strerror(errno));
				_exit(3);
			}
			nb = 0;
		}
	}
	note(pipefd, 'd'); /* plan done: wait to be killed */
	for (;;)
		pause();
}

/* ---- checks after a kill ---------------------------------------------------- */

struct stats {
	unsigned rounds, big_rounds, plan_exhausted;
	unsigned kills_mid_write;     /* rounds where some unacked slot was partly new */
	uint64_t writes_acked, writes_unacked_new, writes_unacked_old, writes_unacked_mixed;
	double sum_file_size;
	unsigned nfile_size;
	uint64_t leaked_last, leaked_max;
	unsigned leak_rounds;         /* rounds where leaked space grew */
	unsigned rounds_with_allocs;  /* rounds where the image file grew */
	double sum_writes_per_round;
	unsigned precise;             /* rounds killed at a chosen syscall */
	/* where precise kills landed (the syscall that never ran) */
	unsigned at_footer, at_bitmap, at_data, at_bat, at_fdatasync, at_ack, at_other;
};

static bool have_ptrace;

static void probe_ptrace(void)
{
	have_ptrace = ptrace_available();
}

/* Steps the stopped tracee from syscall to syscall and kills it at the entry
 * of its target-th modifying syscall (which therefore never runs).  Returns
 * false when the writer announced the end of its plan first. */
static bool kill_at_syscall(pid_t pid, unsigned target, int done_fd, const struct set *S,
			    const char *path, struct stats *stt)
{
	uint64_t entries = (S->size + S->bs - 1) / S->bs;
	uint64_t bat_end = 1536 + (4 * entries + SECTOR - 1) / SECTOR * SECTOR;
	unsigned count = 0;
	int status, sig = 0;

	CHECK(waitpid(pid, &status, 0) == pid && WIFSTOPPED(status)); /* its SIGSTOP */
	if (ptrace(PTRACE_SETOPTIONS, pid, NULL,
		   (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) < 0)
		fail("ptrace(SETOPTIONS): %s", strerror(errno));
	for (;;) {
		struct __ptrace_syscall_info info;

		if (ptrace(PTRACE_SYSCALL, pid, NULL, (void *)(long)sig) < 0)
			fail("ptrace(SYSCALL): %s", strerror(errno));
		sig = 0;
		CHECK(waitpid(pid, &status, 0) == pid);
		if (!WIFSTOPPED(status))
			fail("the traced writer ended on its own (status 0x%x)", status);
		if (WSTOPSIG(status) != (SIGTRAP | 0x80)) {
			sig = WSTOPSIG(status); /* a real signal: deliver it */
			continue;
		}
		memset(&info, 0, sizeof(info));
		if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof(info), &info) <= 0)
			fail("ptrace(GET_SYSCALL_INFO): %s", strerror(errno));
		if (info.op != PTRACE_SYSCALL_INFO_ENTRY)
			continue;
		switch (info.entry.nr) {
		case SYS_write:
			if ((int)info.entry.args[0] == done_fd)
				return false; /* 'd': the plan is done */
			/* fallthrough */
		case SYS_pwrite64: case SYS_fdatasync: case SYS_fsync: case SYS_ftruncate:
		case SYS_fallocate: case SYS_pwritev: case SYS_writev:
			break;
		default:
			continue;
		}
		if (++count < target)
			continue;
		/* where are we? */
		if (info.entry.nr == SYS_pwrite64) {
			uint64_t len = info.entry.args[2], off = info.entry.args[3];
			struct stat st;

			CHECK(stat(path, &st) == 0);
			if (off < bat_end)
				stt->at_bat++;
			else if (len == SECTOR && off + len > (uint64_t)st.st_size)
				stt->at_footer++;
			else if (len == SECTOR && (off + SECTOR) % 4096 == 0)
				stt->at_bitmap++;
			else
				stt->at_data++;
		} else if (info.entry.nr == SYS_fdatasync) {
			stt->at_fdatasync++;
		} else if (info.entry.nr == SYS_write || info.entry.nr == SYS_fsync) {
			stt->at_ack++;
		} else {
			stt->at_other++;
		}
		stt->precise++;
		return true;
	}
}

static void check_image(const char *path, uint64_t *leaked)
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
		fail("vhd_check(%s) reports %zu warnings/errors after the kill", path,
		     vhd_check_count(&r, VHD_SEV_WARNING));
	}
	*leaked = r.leaked_bytes;
	vhd_check_report_free(&r);
}

static void hexdump_diff(const uint8_t *got, const uint8_t *a, const uint8_t *b)
{
	for (int i = 0; i < (int)SECTOR; i += 16) {
		if (!memcmp(got + i, a + i, 16) && !memcmp(got + i, b + i, 16))
			continue;
		fprintf(stderr, "   +%03x got ", i);
		for (int j = 0; j < 16; j++)
			fprintf(stderr, "%02x", got[i + j]);
		fprintf(stderr, " old ");
		for (int j = 0; j < 16; j++)
			fprintf(stderr, "%02x", a[i + j]);
		fprintf(stderr, " new ");
		for (int j = 0; j < 16; j++)
			fprintf(stderr, "%02x", b[i + j]);
		fputc('\n', stderr);
	}
}

/* Verifies one planned slot: acked -> all new; else per sector old or new.
 * Updates the model.  Returns 0 all old, 1 all new, 2 mixed. */
static int verify_slot(struct set *S, struct vhd_image *img, const struct plan_entry *p, bool acked,
		       uint8_t *buf, size_t idx)
{
	const struct slot *sl = &S->slots[p->slot];
	uint64_t s0 = sl->off / SECTOR, s1 = (sl->off + sl->len - 1) / SECTOR;
	uint64_t n_new = 0, n_old = 0;
	uint8_t o[SECTOR], nw[SECTOR];
	int ret = vhd_pread(img, buf, (s1 - s0 + 1) * SECTOR, s0 * SECTOR);

	if (ret < 0)
		fail("vhd_pread of slot %u (%" PRIu64 "+%" PRIu64 ") = %s", p->slot, sl->off, sl->len,
		     strerror(-ret));
	for (uint64_t s = s0; s <= s1; s++) {
		const uint8_t *got = buf + (s - s0) * SECTOR;
		bool is_old, is_new;

		expected_sector(S, s, S->tag[s], o);
		expected_sector(S, s, p->tag, nw);
		is_old = !memcmp(got, o, SECTOR);
		is_new = !memcmp(got, nw, SECTOR);
		if (acked && !is_new) {
			fprintf(stderr, "  sector %" PRIu64 " (disk offset %" PRIu64 "):\n", s, s * SECTOR);
			hexdump_diff(got, o, nw);
			fail("acknowledged write #%zu of slot %u (%" PRIu64 "+%" PRIu64 ", tag %u) lost: sector %" PRIu64
			     " %s", idx, p->slot, sl->off, sl->len, p->tag, s,
			     is_old ? "holds the old content" : "holds garbage");
		}
		if (!is_old && !is_new) {
			fprintf(stderr, "  sector %" PRIu64 " (disk offset %" PRIu64 "):\n", s, s * SECTOR);
			hexdump_diff(got, o, nw);
			fail("unacknowledged write #%zu of slot %u (%" PRIu64 "+%" PRIu64 ", tag %u): sector %" PRIu64
			     " is neither the old (tag %u) nor the new content", idx, p->slot, sl->off, sl->len,
			     p->tag, s, S->tag[s]);
		}
		if (is_new) {
			n_new++;
			S->tag[s] = p->tag;
		} else {
			n_old++;
		}
	}
	return n_new && n_old ? 2 : n_new ? 1 : 0;
}

/* Whole disk against the model. */
static void verify_all(const struct set *S, struct vhd_image *img, const uint32_t *tags,
		       const char *what)
{
	const uint64_t chunk = 4 * MiB;
	uint8_t *buf = malloc(chunk), exp[SECTOR];

	CHECK(buf);
	CHECK(vhd_virtual_size(img) == S->size);
	for (uint64_t off = 0; off < S->size; off += chunk) {
		uint64_t len = S->size - off < chunk ? S->size - off : chunk;
		int ret = vhd_pread(img, buf, len, off);

		if (ret < 0)
			fail("%s: vhd_pread(%" PRIu64 ", %" PRIu64 ") = %s", what, off, len, strerror(-ret));
		for (uint64_t s = off / SECTOR; s < (off + len) / SECTOR; s++) {
			const uint8_t *got = buf + (s * SECTOR - off);

			expected_sector(S, s, tags[s], exp);
			if (memcmp(got, exp, SECTOR)) {
				int32_t sl = S->slot_of[s];

				fprintf(stderr, "  sector %" PRIu64 " (disk offset %" PRIu64 "):\n", s, s * SECTOR);
				hexdump_diff(got, exp, exp);
				fail("%s: sector %" PRIu64 " (slot %d, tag %u) differs from the model", what, s,
				     (int)sl, tags[s]);
			}
		}
	}
	free(buf);
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

static uint64_t file_size(const char *path)
{
	struct stat st;

	CHECK(stat(path, &st) == 0);
	return (uint64_t)st.st_size;
}

/* ---- one round ------------------------------------------------------------- */

static double big_ms = 40; /* how long a big write takes (learned) */

static void run_round(struct set *S, const char *path, int round, bool big, bool precise,
		      struct stats *stt, struct plan_entry *plan, uint8_t *buf)
{
	unsigned target = 0;
	char ackpath[4200];
	size_t n;
	int pfd[2], fd, status;
	pid_t pid;
	double delay, t_ready, t_done = -1;
	bool done = false;
	uint64_t leaked, size_before = file_size(path);
	char c;

	snprintf(ackpath, sizeof(ackpath), "%s/ack.log", tmpdir);
	fd = open(ackpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0);
	close(fd);

	if (big) {
		/* a big slot not yet written in this phase, else any */
		uint32_t i = S->big[rnd(S->nbig)];

		for (uint32_t t = 0; t < S->nbig; t++)
			if (S->slots[S->big[t]].fresh) {
				i = S->big[t];
				break;
			}
		plan_slot(S, &plan[0], i, round);
		plan[0].flush = true;
		n = 1;
		delay = (double)rnd((uint64_t)(big_ms * 1000) + 1) / 1000.0;
		/* per new block: footer, bitmap, data; then a sync and the BAT entries */
		target = (unsigned)rnd_in(1, 4 * (S->slots[i].len / S->bs + 2) + 2);
	} else {
		target = (unsigned)rnd_in(1, 300);
		n = make_plan(S, plan, MAX_PLAN, round);
		delay = rnd(3) == 0 ? (double)rnd(20001) / 1000.0 : (double)rnd(200001) / 1000.0;
	}
	CHECK(n > 0);

	CHECK(pipe2(pfd, O_CLOEXEC) == 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		writer(S, path, ackpath, plan, n, pfd[1], precise);
	}
	close(pfd[1]);
	/* wait until the writer has the image open */
	{
		struct pollfd p = {.fd = pfd[0], .events = POLLIN};

		if (poll(&p, 1, 60000) != 1 || read(pfd[0], &c, 1) != 1 || c != 'r') {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fail("the writer did not get ready (status 0x%x)", status);
		}
	}
	t_ready = now_ms();
	if (precise)
		done = !kill_at_syscall(pid, target, pfd[1], S, path, stt);
	/* sleep `delay`, but notice a writer that finished its plan early */
	for (; !precise;) {
		double left = t_ready + delay - now_ms();
		struct pollfd p = {.fd = pfd[0], .events = POLLIN};
		int r;

		if (left <= 0)
			break;
		r = poll(&p, 1, (int)(left + 0.999));
		if (r == 1) {
			if (read(pfd[0], &c, 1) == 1 && c == 'd') {
				done = true;
				t_done = now_ms() - t_ready;
			}
			break; /* done, or the writer died (EOF) */
		}
	}
	kill(pid, SIGKILL);
	CHECK(waitpid(pid, &status, 0) == pid);
	close(pfd[0]);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail("the writer failed on its own (exit status %d)", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	if (done)
		stt->plan_exhausted++;
	if (big && done)
		big_ms = t_done * 1.2 + 1;

	/* the image after the crash */
	check_image(path, &leaked);
	{
		struct vhd_image *img = open_image(path, VHD_OPEN_RDWR);
		uint8_t *acked = calloc(n, 1);
		long max_acked = -1;
		int mixed_seen = 0;
		size_t upto;
		uint32_t idx;

		CHECK(acked);
		fd = open(ackpath, O_RDONLY | O_CLOEXEC);
		CHECK(fd >= 0);
		while (read(fd, &idx, sizeof(idx)) == (ssize_t)sizeof(idx)) {
			CHECK(idx < n);
			acked[idx] = 1;
			if ((long)idx > max_acked)
				max_acked = (long)idx;
		}
		close(fd);
		for (long i = 0; i <= max_acked; i++)
			if (!acked[i])
				fail("the ack log skips plan entry %ld (acked up to %ld)", i, max_acked);
		/* the writer can have started at most the 4 writes after the last ack */
		upto = (size_t)(max_acked + 1) + 4;
		if (upto > n)
			upto = n;
		for (size_t i = 0; i < upto; i++) {
			int r = verify_slot(S, img, &plan[i], acked[i], buf, i);

			if (acked[i])
				stt->writes_acked++;
			else if (r == 1)
				stt->writes_unacked_new++;
			else if (r == 2)
				stt->writes_unacked_mixed++, mixed_seen = 1;
			else
				stt->writes_unacked_old++;
		}
		/* later entries were never started: they must read old */
		for (size_t i = upto; i < n && i < upto + 4; i++)
			if (verify_slot(S, img, &plan[i], false, buf, i) != 0)
				fail("plan entry %zu (never started: acked up to %ld) reads new data", i,
				     max_acked);
		unplan(S, plan, upto, n);
		stt->kills_mid_write += mixed_seen;
		stt->sum_writes_per_round += (double)(max_acked + 1);
		if (round % 5 == 4)
			verify_all(S, img, S->tag, "whole-disk check");
		CHECK(vhd_close(img) == 0);
		free(acked);
	}
	stt->rounds++;
	stt->big_rounds += big;
	if (leaked > stt->leaked_last)
		stt->leak_rounds++;
	stt->leaked_last = leaked;
	if (leaked > stt->leaked_max)
		stt->leaked_max = leaked;
	if (file_size(path) > size_before)
		stt->rounds_with_allocs++;
	stt->sum_file_size += (double)file_size(path);
	stt->nfile_size++;
}

static void print_stats(const char *what, const struct stats *s)
{
	printf("  %s: %u rounds (%u with one big write; %u where the writer finished its plan before the kill)\n"
	       "    writes: %" PRIu64 " acknowledged; unacknowledged ones read %" PRIu64 " new, %" PRIu64
	       " old, %" PRIu64 " partly new (in %u rounds); %.1f acked writes per round\n"
	       "    image file grew in %u rounds; average image size %.1f MiB; leaked space %" PRIu64
	       " bytes at the end (max %" PRIu64 ", grew in %u rounds)\n",
	       what, s->rounds, s->big_rounds, s->plan_exhausted, s->writes_acked, s->writes_unacked_new,
	       s->writes_unacked_old, s->writes_unacked_mixed, s->kills_mid_write,
	       s->rounds ? s->sum_writes_per_round / s->rounds : 0.0, s->rounds_with_allocs,
	       s->nfile_size ? s->sum_file_size / s->nfile_size / (double)MiB : 0.0, s->leaked_last,
	       s->leaked_max, s->leak_rounds);
	if (s->precise)
		printf("    %u kills at a chosen syscall, just before: %u footer writes (allocation), %u bitmap writes"
		       " (allocation), %u data writes, %u fdatasyncs, %u BAT entry writes, %u ack-log writes/fsyncs, %u other\n",
		       s->precise, s->at_footer, s->at_bitmap, s->at_data, s->at_fdatasync, s->at_bat, s->at_ack,
		       s->at_other);
}

static void create_image(const char *path, const struct vhd_create_opts *co)
{
	struct vhd_err err;
	int ret = vhd_create(path, co, &err);

	if (ret < 0)
		fail("vhd_create(%s) = %s: %s", path, strerror(-ret), err.msg);
}

struct set_cfg {
	const char *name;
	uint64_t size;
	uint32_t bs;
	uint64_t big_min, big_max;
	int rounds[2], big_rounds[2]; /* per phase */
};

static unsigned run_set(const struct set_cfg *cfg, unsigned scale)
{
	struct set S = {.name = cfg->name, .size = cfg->size, .bs = cfg->bs};
	struct plan_entry *plan = malloc(MAX_PLAN * sizeof(*plan));
	uint8_t *buf = malloc(cfg->big_max + 2 * MiB);
	char base[4200], child[4200];
	uint32_t *parent_tags = NULL;
	unsigned total = 0;

	CHECK(plan && buf);
	layout(&S, cfg->big_min, cfg->big_max);
	printf("set %s: disk %" PRIu64 " bytes, block %u, %u slots (%d big)\n", cfg->name, cfg->size,
	       cfg->bs, S.nslots, NR_BIG);
	snprintf(base, sizeof(base), "%s/%s-base.vhd", tmpdir, cfg->name);
	snprintf(child, sizeof(child), "%s/%s-child.vhd", tmpdir, cfg->name);
	create_image(base, &(struct vhd_create_opts){.type = VHD_TYPE_DYNAMIC, .size = cfg->size,
						     .block_size = cfg->bs});
	for (int phase = 0; phase < 2; phase++) {
		const char *path = phase ? child : base;
		struct stats stt = {0};
		int rounds = cfg->rounds[phase] * (int)scale, bigs = cfg->big_rounds[phase] * (int)scale;
		uint64_t leaked;

		if (phase == 1) {
			/* The phase-1 image becomes the parent: its content is the
			 * child's "old" content. */
			parent_tags = malloc(S.nsec * sizeof(*parent_tags));
			CHECK(parent_tags);
			memcpy(parent_tags, S.tag, S.nsec * sizeof(*parent_tags));
			create_image(child, &(struct vhd_create_opts){.type = VHD_TYPE_DIFF, .parent = base});
		}
		phase_reset(&S);
		for (int r = 0; r < rounds + bigs; r++) {
			/* spread the big rounds over the phase */
			bool big = bigs && r % ((rounds + bigs) / bigs) == (rounds + bigs) / bigs - 1 &&
				   stt.big_rounds < (unsigned)bigs;

			snprintf(ctx, sizeof(ctx), "set %s, phase %d (%s), round %d%s", cfg->name, phase + 1,
				 phase ? "differencing" : "dynamic", r, big ? " (big write)" : "");
			/* every other round (normal, and big ones) kills at a chosen
			 * syscall instead of after a delay */
			bool precise = have_ptrace && (big ? stt.big_rounds % 2 == 1 : r % 2 == 1);

			run_round(&S, path, r, big, precise, &stt, plan, buf);
		}
		snprintf(ctx, sizeof(ctx), "set %s, end of phase %d", cfg->name, phase + 1);
		check_image(path, &leaked);
		{
			struct vhd_image *img = open_image(path, 0);

			verify_all(&S, img, S.tag, "final whole-disk check");
			vhd_close(img);
		}
		print_stats(phase ? "phase 2 (differencing over the phase-1 image)" : "phase 1 (dynamic)",
			    &stt);
		total += stt.rounds;
	}
	/* The parent never changed. */
	snprintf(ctx, sizeof(ctx), "set %s, parent after phase 2", cfg->name);
	{
		struct vhd_image *img = open_image(base, 0);
		uint64_t leaked;

		verify_all(&S, img, parent_tags, "parent re-opened alone");
		vhd_close(img);
		check_image(base, &leaked);
	}
	free(parent_tags);
	free(plan);
	free(buf);
	free(S.slots);
	free(S.slot_of);
	free(S.tag);
	free(S.block_touched);
	free(S.fresh);
	return total;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *s = getenv("TEST_SEED"), *base = getenv("TMPDIR"), *sc = getenv("CRASH_ROUNDS_SCALE");
	const char *keep = getenv("TEST_KEEP");
	unsigned scale = sc && atoi(sc) > 0 ? (unsigned)atoi(sc) : 1, total = 0;
	double t0 = now_ms();
	struct timespec ts;

	if (s && *s) {
		seed = strtoull(s, NULL, 0);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
	}
	rng = seed;
	probe_ptrace();
	if (!have_ptrace)
		printf("ptrace is not available here: every kill is timed, none at a chosen syscall\n");
	printf("test_crash: seed %" PRIu64 " (set TEST_SEED to reproduce)\n", seed);
	snprintf(tmpdir, sizeof(tmpdir), "%s/vhd-crash-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("cannot create a temporary directory: %s\n", strerror(errno));
		return 77;
	}
	{
		struct set_cfg cfgs[] = {
			/* 64 KiB blocks: allocation on most writes */
			{"bs64k", 512 * MiB + 7 * SECTOR, 64 * KiB, 6 * MiB, 14 * MiB, {30, 30}, {4, 4}},
			/* 2 MiB blocks */
			{"bs2m", 1024 * MiB + 3 * SECTOR, 2 * MiB, 12 * MiB, 28 * MiB, {15, 15}, {3, 3}},
		};

		for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
			total += run_set(&cfgs[i], scale);
	}
	if (!(keep && *keep && strcmp(keep, "0")))
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	else
		printf("keeping %s\n", tmpdir);
	printf("test_crash: PASS: %u rounds in %.1f s (seed %" PRIu64 ")\n", total,
	       (now_ms() - t0) / 1000, seed);
	return 0;
}
