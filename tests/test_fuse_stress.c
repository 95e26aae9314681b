/* test_fuse_stress - concurrent readers and writers on a mounted disk file,
 * every read checked against a model of what was acknowledged.
 *
 *   test_fuse_stress DISK MODEL SECONDS SEED [THREADS]
 *
 * MODEL is a raw file with the disk's content at the start (same size); at
 * the end it receives the content the disk must have, for the caller to
 * compare with the image after unmount.  The disk is cut into slots, each
 * with a reader-writer lock: a writer holds its slot while it writes and
 * updates the model, readers of the slot check what they read against the
 * model, so every read must return exactly the last acknowledged write
 * (read-after-write across threads and descriptors).  The first 4 KiB are
 * 256-byte slots, two to a sector: writers of neighbouring slots run at the
 * same time and both read-modify-write one sector, which must lose nothing.
 * The rest are 64 KiB slots (new blocks are allocated concurrently there).
 * Writes have odd offsets and lengths as well as aligned ones; some threads
 * fsync now and then.  Exit 0 pass, 1 fail (the first mismatch printed).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SMALL_REGION (4u << 10)
#define SMALL_SLOT 256u
#define BIG_SLOT (64u << 10)

struct slot {
	uint64_t off, len;
	pthread_rwlock_t lock;
};

struct shared {
	const char *disk;
	uint8_t *model;
	uint64_t size;
	struct slot *slots;
	size_t nr_small, nr_slots;
	double deadline;
	atomic_bool failed;
	atomic_uint_fast64_t reads, writes, syncs, bytes_written;
	uint64_t seed;
};

struct worker {
	struct shared *sh;
	unsigned id;
	pthread_t t;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
	/* xorshift64*: each thread its own stream */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static int pread_all(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pread(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static void fail(struct shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct shared *sh, const char *fmt, ...)
{
	va_list ap;

	if (atomic_exchange(&sh->failed, true))
		return; /* the first failure is the interesting one */
	va_start(ap, fmt);
	fprintf(stderr, "test_fuse_stress: FAIL: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* A random sub-range of a slot: odd or sector-aligned. */
static void pick_range(uint64_t *s, const struct slot *sl, uint64_t *off, uint64_t *len)
{
	uint64_t o, n;

	if (rnd(s) % 3 == 0 && sl->len >= 512) {
		o = rnd(s) % (sl->len / 512) * 512;
		n = (1 + rnd(s) % ((sl->len - o) / 512)) * 512;
	} else {
		o = rnd(s) % sl->len;
		n = 1 + rnd(s) % (sl->len - o);
	}
	*off = sl->off + o;
	*len = n;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	uint64_t s = sh->seed * 0x9E3779B97F4A7C15ull + w->id + 1;
	uint8_t *buf = malloc(BIG_SLOT);
	int fd = open(sh->disk, O_RDWR);

	if (!buf || fd < 0) {
		fail(sh, "worker %u: cannot open %s: %s", w->id, sh->disk, strerror(errno));
		goto out;
	}
	while (!atomic_load(&sh->failed) && now() < sh->deadline) {
		uint64_t r = rnd(&s) % 100, off, len;
		/* a third of the operations on the shared-sector region */
		size_t i = rnd(&s) % 3 == 0 ? rnd(&s) % sh->nr_small
					    : sh->nr_small + rnd(&s) % (sh->nr_slots - sh->nr_small);
		struct slot *sl = &sh->slots[i];

		if (r < 50) {
			pthread_rwlock_wrlock(&sl->lock);
			pick_range(&s, sl, &off, &len);
			for (uint64_t k = 0; k < len; k += 8) {
				uint64_t v = rnd(&s);

				memcpy(buf + k, &v, len - k < 8 ? len - k : 8);
			}
			ssize_t n = pwrite(fd, buf, len, (off_t)off);

			if (n != (ssize_t)len)
				fail(sh, "pwrite of %" PRIu64 " at %" PRIu64 " returned %zd (%s)", len,
				     off, n, n < 0 ? strerror(errno) : "short");
			else
				memcpy(sh->model + off, buf, len);
			pthread_rwlock_unlock(&sl->lock);
			atomic_fetch_add(&sh->writes, 1);
			atomic_fetch_add(&sh->bytes_written, len);
		} else if (r < 97) {
			pthread_rwlock_rdlock(&sl->lock);
			pick_range(&s, sl, &off, &len);
			int ret = pread_all(fd, buf, len, off);

			if (ret < 0) {
				fail(sh, "pread of %" PRIu64 " at %" PRIu64 ": %s", len, off,
				     strerror(-ret));
			} else if (memcmp(buf, sh->model + off, len)) {
				uint64_t k = 0;

				while (buf[k] == sh->model[off + k])
					k++;
				fail(sh, "read at %" PRIu64 " (+%" PRIu64 " of %" PRIu64
					 ") returned 0x%02x, the last acknowledged write says 0x%02x",
				     off, k, len, buf[k], sh->model[off + k]);
			}
			pthread_rwlock_unlock(&sl->lock);
			atomic_fetch_add(&sh->reads, 1);
		} else {
			if (fdatasync(fd) < 0)
				fail(sh, "fdatasync: %s", strerror(errno));
			atomic_fetch_add(&sh->syncs, 1);
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	struct shared sh = {0};
	struct worker *ws = NULL;
	unsigned nthreads = argc > 5 ? (unsigned)atoi(argv[5]) : 8;
	struct stat st;
	uint8_t *check = NULL;
	int fd = -1, mfd = -1, status = 1;

	if (argc < 5 || nthreads < 1 || nthreads > 64) {
		fprintf(stderr, "usage: %s DISK MODEL SECONDS SEED [THREADS]\n", argv[0]);
		return 2;
	}
	sh.disk = argv[1];
	sh.seed = strtoull(argv[4], NULL, 10);
	if (stat(sh.disk, &st) < 0 || st.st_size < (off_t)(SMALL_REGION + BIG_SLOT)) {
		fprintf(stderr, "test_fuse_stress: %s: missing or too small\n", sh.disk);
		return 1;
	}
	sh.size = (uint64_t)st.st_size;
	mfd = open(argv[2], O_RDWR);
	sh.model = malloc(sh.size);
	check = malloc(sh.size);
	if (mfd < 0 || !sh.model || !check || pread_all(mfd, sh.model, sh.size, 0) < 0) {
		fprintf(stderr, "test_fuse_stress: cannot load the model %s\n", argv[2]);
		goto out;
	}
	sh.nr_small = SMALL_REGION / SMALL_SLOT;
	sh.nr_slots = sh.nr_small + (sh.size - SMALL_REGION + BIG_SLOT - 1) / BIG_SLOT;
	sh.slots = calloc(sh.nr_slots, sizeof(*sh.slots));
	ws = calloc(nthreads, sizeof(*ws));
	if (!sh.slots || !ws)
		goto out;
	for (size_t i = 0; i < sh.nr_slots; i++) {
		struct slot *sl = &sh.slots[i];

		sl->off = i < sh.nr_small ? i * SMALL_SLOT
					  : SMALL_REGION + (i - sh.nr_small) * (uint64_t)BIG_SLOT;
		sl->len = i < sh.nr_small ? SMALL_SLOT
					  : (sh.size - sl->off < BIG_SLOT ? sh.size - sl->off : BIG_SLOT);
		pthread_rwlock_init(&sl->lock, NULL);
	}
	/* The disk must start as the model says. */
	fd = open(sh.disk, O_RDONLY);
	if (fd < 0 || pread_all(fd, check, sh.size, 0) < 0 || memcmp(check, sh.model, sh.size)) {
		fprintf(stderr, "test_fuse_stress: FAIL: %s does not start as the model\n", sh.disk);
		goto out;
	}
	sh.deadline = now() + atof(argv[3]);
	for (unsigned i = 0; i < nthreads; i++) {
		ws[i].sh = &sh;
		ws[i].id = i;
		pthread_create(&ws[i].t, NULL, work, &ws[i]);
	}
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(ws[i].t, NULL);
	if (atomic_load(&sh.failed))
		goto out;
	/* Everything, once more, in one piece. */
	if (pread_all(fd, check, sh.size, 0) < 0 || memcmp(check, sh.model, sh.size)) {
		uint64_t k = 0;

		while (k < sh.size && check[k] == sh.model[k])
			k++;
		fprintf(stderr, "test_fuse_stress: FAIL: final content differs at %" PRIu64 "\n", k);
		goto out;
	}
	if (pwrite(mfd, sh.model, sh.size, 0) != (ssize_t)sh.size) {
		fprintf(stderr, "test_fuse_stress: cannot write the model back\n");
		goto out;
	}
	printf("test_fuse_stress: %u threads: %" PRIuFAST64 " writes (%" PRIuFAST64
	       " bytes), %" PRIuFAST64 " verified reads, %" PRIuFAST64 " fdatasyncs\n",
	       nthreads, atomic_load(&sh.writes), atomic_load(&sh.bytes_written),
	       atomic_load(&sh.reads), atomic_load(&sh.syncs));
	status = 0;
out:
	if (fd >= 0)
		close(fd);
	if (mfd >= 0)
		close(mfd);
	if (sh.slots)
		for (size_t i = 0; i < sh.nr_slots; i++)
			pthread_rwlock_destroy(&sh.slots[i].lock);
	free(sh.slots);
	free(ws);
	free(sh.model);
	free(check);
	return status;
}
