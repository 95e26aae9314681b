/* nbd_crash_writer.c - the client side of nbd_crash.sh.
 *
 *   nbd_crash_writer write SOCKET EXPORT LOG SEQBASE SEED [CONNS [SECONDS [START END]]]
 *       Writes self-describing sectors at random offsets (inside [START, END)
 *       of the disk when given) over CONNS (2)
 *       connections, several requests in flight on each, with FLUSH now and
 *       then on one connection and FUA on some writes, until the server goes
 *       away (it is killed) or SECONDS (30) pass.  Every event goes to LOG:
 *         W seq offset length fua   sent
 *         A seq                     acknowledged
 *         S k                       FLUSH k sent
 *         D k                       FLUSH k acknowledged
 *       A write acknowledged before FLUSH k was sent is durable once "D k"
 *       appears (the server advertises multi-conn: a flush on any connection
 *       covers every connection's acknowledged writes); a FUA write is
 *       durable once acknowledged.  Exit 0 when the server went away (or time
 *       ran out), 1 on a protocol error or an error reply.
 *
 *   nbd_crash_writer verify RAW [--base BASE] [--range START END] [--acked-durable] LOG...
 *       RAW is the disk read back after the crash (vhdtool read).  Every
 *       512-byte sector must hold either a sector of some write W that
 *       covered it, or, when no durable write covers it, the initial content
 *       (zeros, or BASE: the parent's data of a differencing disk).  W must
 *       not be superseded: no durable write covering the sector was sent
 *       after W completed (writes in flight together may land in any order;
 *       a write never acknowledged completed at the latest when its server
 *       died).  Anything else - a lost durable write, a sector from the wrong
 *       place, torn or foreign bytes - fails, naming the sector.  LOGs are
 *       given oldest first; sequence numbers are unique across them.
 *       --range checks only those bytes (another client wrote elsewhere);
 *       --acked-durable holds every acknowledged write durable (the server
 *       was stopped cleanly, which flushes).
 *
 * A written sector holds "NBDCRASH", its write's sequence number, its own
 * disk offset, and 488 bytes derived from both.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nbd_client.h"

#define SECTOR 512u
#define DEPTH 8                     /* writes in flight per connection */
#define MAX_LEN (256u << 10)
#define FLUSH_BIT ((uint64_t)1 << 63)

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void make_sector(uint8_t *s, uint64_t seq, uint64_t off)
{
	uint64_t st = mix(seq * 0x9e3779b97f4a7c15ull ^ off);

	memcpy(s, "NBDCRASH", 8);
	memcpy(s + 8, &seq, 8);
	memcpy(s + 16, &off, 8);
	for (unsigned i = 24; i < SECTOR; i += 8) {
		uint64_t v = mix(st += 0x9e3779b97f4a7c15ull);

		memcpy(s + i, &v, 8);
	}
}

/* ---- write mode --------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng;

static uint64_t rnd(uint64_t n)
{
	return mix(rng += 0x9e3779b97f4a7c15ull) % n;
}

/* A server that went away (killed) ends the run normally. */
static bool gone(int ret)
{
	return ret == -ECONNRESET || ret == -EPIPE || ret == -ENOTCONN || ret == -ECONNREFUSED ||
	       ret == -ENOENT;
}

static int do_write(int argc, char **argv)
{
	const char *sock = argv[2], *export = argv[3], *logpath = argv[4];
	uint64_t seq = strtoull(argv[5], NULL, 0);
	unsigned nconn = argc > 7 ? (unsigned)atoi(argv[7]) : 2;
	int64_t end = now_ms() + 1000 * (argc > 8 ? atoi(argv[8]) : 30);
	uint64_t lo = argc > 10 ? strtoull(argv[9], NULL, 0) : 0;
	uint64_t hi = argc > 10 ? strtoull(argv[10], NULL, 0) : UINT64_MAX;
	struct nbdc c[8];
	unsigned inflight[8] = {0};
	uint8_t *buf = malloc(MAX_LEN);
	FILE *log = fopen(logpath, "w");
	uint64_t flushes = 0, acked = 0, since_flush = 0;
	int ret = 0, status = 0;

	rng = strtoull(argv[6], NULL, 0);
	if (!buf || !log || nconn < 1 || nconn > 8) {
		fprintf(stderr, "nbd_crash_writer: bad arguments or %s: %s\n", logpath, strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	for (unsigned i = 0; i < nconn; i++) {
		ret = nbdc_open(&c[i], sock, export, i % 2 ? NBDC_WANT_STRUCTURED : 0);
		if (ret) {
			fprintf(stderr, "nbd_crash_writer: connect %s: %s\n", sock, nbdc_strerror(ret));
			return gone(ret) ? 0 : 1;
		}
		if (hi > c[i].size)
			hi = c[i].size;
		if (lo % SECTOR || hi % SECTOR || lo + MAX_LEN > hi) {
			fprintf(stderr, "nbd_crash_writer: bad range %" PRIu64 "..%" PRIu64 "\n", lo, hi);
			return 1;
		}
		if (!(c[i].eflags & NBDC_FLAG_CAN_MULTI_CONN) && nconn > 1) {
			fprintf(stderr, "nbd_crash_writer: the server does not advertise multi-conn\n");
			return 1;
		}
	}
	while (now_ms() < end) {
		struct pollfd p[8];

		/* Fill every connection's pipeline. */
		for (unsigned i = 0; i < nconn && ret == 0; i++)
			while (inflight[i] < DEPTH && ret == 0) {
				uint32_t len = (uint32_t)(rnd(8) ? rnd(16) + 1 : rnd(MAX_LEN / 4096) + 1) * 4096;
				uint64_t off = lo + rnd((hi - lo - len) / SECTOR + 1) * SECTOR;
				bool fua = rnd(10) == 0;

				if (since_flush > 24 + rnd(24) && rnd(2)) {
					flushes++;
					fprintf(log, "S %" PRIu64 "\n", flushes);
					fflush(log);
					ret = nbdc_request(&c[i], 0, NBDC_CMD_FLUSH, FLUSH_BIT | flushes, 0, 0,
							   NULL, 0);
					since_flush = 0;
					inflight[i]++;
					continue;
				}
				for (uint32_t s = 0; s < len; s += SECTOR)
					make_sector(buf + s, seq, off + s);
				fprintf(log, "W %" PRIu64 " %" PRIu64 " %u %d\n", seq, off, len, fua);
				fflush(log);
				ret = nbdc_request(&c[i], fua ? NBDC_CMD_FLAG_FUA : 0, NBDC_CMD_WRITE, seq, off,
						   len, buf, len);
				seq++;
				since_flush++;
				inflight[i]++;
			}
		if (ret)
			break;
		for (unsigned i = 0; i < nconn; i++)
			p[i] = (struct pollfd){.fd = c[i].fd, .events = POLLIN};
		if (poll(p, nconn, 1000) < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		for (unsigned i = 0; i < nconn && ret == 0; i++) {
			struct nbdc_reply r = {0};

			if (!p[i].revents)
				continue;
			ret = nbdc_reply(&c[i], &r, NULL, 0, 0);
			if (ret)
				break;
			inflight[i]--;
			if (r.error) {
				fprintf(stderr, "nbd_crash_writer: request %#" PRIx64 " failed: %s\n",
					r.handle, nbdc_strerror((int)r.error));
				status = 1;
				ret = -EIO;
				break;
			}
			if (r.handle & FLUSH_BIT)
				fprintf(log, "D %" PRIu64 "\n", r.handle & ~FLUSH_BIT);
			else
				fprintf(log, "A %" PRIu64 "\n", r.handle);
			acked++;
			fflush(log);
		}
	}
	if (ret && !gone(ret) && status == 0) {
		fprintf(stderr, "nbd_crash_writer: %s\n", nbdc_strerror(ret));
		status = 1;
	}
	fprintf(stderr, "nbd_crash_writer: %" PRIu64 " replies, %" PRIu64 " flushes sent, %s\n",
		acked, flushes, ret ? "server gone" : "time is up");
	fclose(log);
	for (unsigned i = 0; i < nconn; i++)
		close(c[i].fd);
	free(buf);
	return status;
}

/* ---- verify mode ------------------------------------------------------------------ */

/* Positions order the events of all logs: (log index << 40) | line. */
struct wr {
	uint64_t seq, off;
	uint32_t len;
	bool fua, acked, durable;
	uint64_t sent_pos;
	uint64_t done_pos;         /* its ack; the end of its log when never acked
				    * (the server died with it in flight) */
};

struct wlist {
	struct wr *w;
	size_t n, cap;
};

static struct wr *find(struct wlist *l, uint64_t seq)
{
	size_t lo = 0, hi = l->n; /* sequence numbers only grow: binary search */

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (l->w[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n && l->w[lo].seq == seq ? &l->w[lo] : NULL;
}

static int read_log(const char *path, unsigned idx, struct wlist *l)
{
	FILE *f = fopen(path, "r");
	char line[256];
	long pos = 0, durable_until = -1;
	long *flush_pos = NULL;
	size_t nflush = 0, first = l->n;

	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		uint64_t a, b;
		unsigned len;
		int fua;

		pos++;
		if (sscanf(line, "W %" SCNu64 " %" SCNu64 " %u %d", &a, &b, &len, &fua) == 4) {
			if (l->n && a <= l->w[l->n - 1].seq) {
				fprintf(stderr, "%s:%ld: sequence %" PRIu64 " not increasing\n", path, pos, a);
				return -1;
			}
			if (l->n == l->cap) {
				l->cap = l->cap ? 2 * l->cap : 1024;
				l->w = realloc(l->w, l->cap * sizeof(*l->w));
				if (!l->w)
					return -1;
			}
			l->w[l->n++] = (struct wr){.seq = a, .off = b, .len = len, .fua = fua,
						    .sent_pos = (uint64_t)idx << 40 | (uint64_t)pos};
		} else if (sscanf(line, "A %" SCNu64, &a) == 1) {
			struct wr *w = find(l, a);

			if (!w) {
				fprintf(stderr, "%s:%ld: ack of unknown write %" PRIu64 "\n", path, pos, a);
				return -1;
			}
			w->acked = true;
			w->done_pos = (uint64_t)idx << 40 | (uint64_t)pos;
			if (w->fua)
				w->durable = true;
		} else if (sscanf(line, "S %" SCNu64, &a) == 1) {
			flush_pos = realloc(flush_pos, (a + 1) * sizeof(*flush_pos));
			if (!flush_pos)
				return -1;
			while (nflush <= a)
				flush_pos[nflush++] = -1;
			flush_pos[a] = pos;
		} else if (sscanf(line, "D %" SCNu64, &a) == 1) {
			if (a >= nflush || flush_pos[a] < 0) {
				fprintf(stderr, "%s:%ld: flush %" PRIu64 " done, never sent\n", path, pos, a);
				return -1;
			}
			if (flush_pos[a] > durable_until)
				durable_until = flush_pos[a];
		}
		/* A torn last line (the writer is never killed, but be safe) is ignored. */
	}
	fclose(f);
	free(flush_pos);
	for (size_t i = first; i < l->n; i++) {
		struct wr *w = &l->w[i];

		if (w->acked && (long)(w->done_pos & 0xffffffffff) < durable_until)
			w->durable = true;
		if (!w->acked)
			w->done_pos = (uint64_t)idx << 40 | (uint64_t)(pos + 1);
	}
	return 0;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *p = NULL;
	long l;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (l = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		p = malloc((size_t)l + 1);
		if (p && fread(p, 1, (size_t)l, f) != (size_t)l) {
			free(p);
			p = NULL;
		}
		*len = (size_t)l;
	}
	fclose(f);
	return p;
}

static int do_verify(int argc, char **argv)
{
	const char *raw = argv[2], *base_path = NULL;
	uint64_t lo = 0, hi = UINT64_MAX;
	bool acked_durable = false;
	struct wlist l = {0};
	uint8_t *disk, *base = NULL, expect[SECTOR];
	size_t size, base_size = 0, nsec;
	uint64_t *need;             /* per sector: latest sent_pos of a durable write
				     * covering it, +1 (0: none) */
	unsigned bad = 0, logs = 0;
	size_t durable = 0, acked = 0;
	int a = 3;

	for (;;) {
		if (a + 1 < argc && !strcmp(argv[a], "--base")) {
			base_path = argv[a + 1];
			a += 2;
		} else if (a + 2 < argc && !strcmp(argv[a], "--range")) {
			lo = strtoull(argv[a + 1], NULL, 0);
			hi = strtoull(argv[a + 2], NULL, 0);
			a += 3;
		} else if (a < argc && !strcmp(argv[a], "--acked-durable")) {
			acked_durable = true;
			a++;
		} else {
			break;
		}
	}
	disk = slurp(raw, &size);
	if (!disk) {
		fprintf(stderr, "%s: cannot read\n", raw);
		return 1;
	}
	if (base_path && (!(base = slurp(base_path, &base_size)) || base_size != size)) {
		fprintf(stderr, "%s: cannot read, or not %zu bytes\n", base_path, size);
		return 1;
	}
	for (; a < argc; a++, logs++)
		if (read_log(argv[a], logs, &l) < 0)
			return 1;
	nsec = size / SECTOR;
	need = calloc(nsec, sizeof(*need));
	if (!need)
		return 1;
	for (size_t i = 0; i < l.n; i++) {
		struct wr *w = &l.w[i];

		if (w->off % SECTOR || w->len % SECTOR || w->off + w->len > size) {
			fprintf(stderr, "write %" PRIu64 " at %" PRIu64 "+%u is outside the disk\n", w->seq,
				w->off, w->len);
			return 1;
		}
		acked += w->acked;
		if (acked_durable && w->acked)
			w->durable = true;
		if (!w->durable)
			continue;
		durable++;
		for (uint64_t s = w->off / SECTOR; s < (w->off + w->len) / SECTOR; s++)
			if (w->sent_pos + 1 > need[s])
				need[s] = w->sent_pos + 1;
	}
	if (hi > size)
		hi = size;
	for (size_t s = lo / SECTOR; s < hi / SECTOR && bad < 10; s++) {
		const uint8_t *d = disk + s * SECTOR;
		uint64_t seq, off;
		struct wr *w;
		const char *why = NULL;

		if (!memcmp(d, "NBDCRASH", 8)) {
			memcpy(&seq, d + 8, 8);
			memcpy(&off, d + 16, 8);
			w = find(&l, seq);
			make_sector(expect, seq, off);
			if (off != s * SECTOR)
				why = "a sector written for another offset";
			else if (!w || off < w->off || off >= w->off + w->len)
				why = "a sector of a write that never covered it";
			else if (memcmp(d, expect, SECTOR))
				why = "a torn or damaged written sector";
			else if (need[s] && w->done_pos < need[s] - 1)
				why = "a write that a later durable write superseded (a durable write was lost)";
		} else {
			const uint8_t *init = base ? base + s * SECTOR : NULL;
			bool is_init = init ? !memcmp(d, init, SECTOR)
					    : (d[0] == 0 && !memcmp(d, d + 1, SECTOR - 1));

			if (!is_init)
				why = "neither initial content nor a written sector (garbage)";
			else if (need[s])
				why = "initial content although a durable write covered it (write lost)";
		}
		if (why) {
			fprintf(stderr, "sector %zu (byte %zu): %s; last durable write covering it sent "
				"at log %" PRIu64 " line %" PRIu64 "\n", s, s * SECTOR, why,
				need[s] ? (need[s] - 1) >> 40 : 0, need[s] ? (need[s] - 1) & 0xffffffffff : 0);
			bad++;
		}
	}
	printf("verify: %zu writes logged in %u logs, %zu acknowledged, %zu durable; %s\n", l.n, logs,
	       acked, durable, bad ? "FAILED" : "every durable write is there, no garbage");
	free(need);
	free(disk);
	free(base);
	free(l.w);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc >= 7 && !strcmp(argv[1], "write"))
		return do_write(argc, argv);
	if (argc >= 3 && !strcmp(argv[1], "verify"))
		return do_verify(argc, argv);
	fprintf(stderr, "usage: nbd_crash_writer write SOCKET EXPORT LOG SEQBASE SEED "
			"[CONNS [SECONDS [START END]]]\n"
			"       nbd_crash_writer verify RAW [--base BASE] [--range START END] "
			"[--acked-durable] LOG...\n");
	return 2;
}
