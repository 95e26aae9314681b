/* engine.c - worker threads, each running one io_uring event loop.
 *
 * The loop submits what callbacks queued, waits for at least one completion,
 * then copies a batch of completions out of the ring before calling their
 * handlers, so a handler may queue new entries (and even submit) freely.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

struct vsp_call {
	void (*fn)(void *arg);
	void *arg;
	struct vsp_call *next;
};

void vsp_log(const struct vsp_engine *e, enum vsp_log_level level, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warning", "info", "debug"};
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if (e && level > e->opts.log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line so lines of several threads never interleave. */
	fprintf(stderr, "%02d:%02d:%02d.%03ld vspd %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
		ts.tv_nsec / 1000000, names[level], line);
}

struct io_uring_sqe *vsp_worker_sqe(struct vsp_worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	while (!sqe) {
		int ret = io_uring_submit(&w->ring);

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			vsp_log(w->engine, VSP_LOG_ERROR, "worker %u: io_uring_submit: %s", w->id,
				strerror(-ret));
		sqe = io_uring_get_sqe(&w->ring);
	}
	return sqe;
}

void vsp_worker_cancel(struct vsp_worker *w, struct vsp_io *io)
{
	struct io_uring_sqe *sqe = vsp_worker_sqe(w);

	io_uring_prep_cancel(sqe, io, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

int vsp_listen_unix(const char *path, int backlog, struct vhd_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err->msg, sizeof(err->msg), "%s: socket path too long (at most %zu bytes)",
			 path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	/* A stale socket from a killed server is replaced; anything else is not. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err->msg, sizeof(err->msg), "%s exists and is not a socket", path);
			return -EEXIST;
		}
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0) {
		ret = -errno;
		snprintf(err->msg, sizeof(err->msg), "%s: cannot listen: %s", path, strerror(-ret));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	return fd;
}

int vsp_worker_call(struct vsp_worker *w, void (*fn)(void *arg), void *arg)
{
	struct vsp_call *c = malloc(sizeof(*c));
	uint64_t one = 1;

	if (!c)
		return -ENOMEM;
	c->fn = fn;
	c->arg = arg;
	c->next = NULL;
	pthread_mutex_lock(&w->mbox_lock);
	if (w->mbox_tail)
		w->mbox_tail->next = c;
	else
		w->mbox_head = c;
	w->mbox_tail = c;
	pthread_mutex_unlock(&w->mbox_lock);
	if (write(w->efd, &one, sizeof(one)) < 0)
		return -errno; /* cannot happen short of a full counter */
	return 0;
}

void vsp_worker_defer(struct vsp_worker *w, struct vsp_deferred *d)
{
	if (d->queued)
		return;
	d->queued = true;
	d->next = w->deferred;
	w->deferred = d;
}

static void run_deferred(struct vsp_worker *w)
{
	while (w->deferred) {
		struct vsp_deferred *d = w->deferred;

		w->deferred = d->next;
		d->queued = false;
		d->fn(d);
	}
}

static unsigned pool_class(size_t len)
{
	unsigned c = 0;

	while (((size_t)4096 << c) < len)
		c++;
	return c;
}

void *vsp_buf_get(struct vsp_worker *w, size_t len)
{
	unsigned c = pool_class(len);
	void *p = NULL;

	if (c >= VSP_POOL_CLASSES)
		return NULL;
	if (w->pool[c]) {
		p = w->pool[c];
		memcpy(&w->pool[c], p, sizeof(void *));
		w->pool_bytes -= (size_t)4096 << c;
		return p;
	}
	return posix_memalign(&p, 4096, (size_t)4096 << c) ? NULL : p;
}

void vsp_buf_put(struct vsp_worker *w, void *buf, size_t len)
{
	unsigned c = pool_class(len);

	if (!buf)
		return;
	if (w->pool_bytes + ((size_t)4096 << c) > VSP_POOL_MAX_BYTES) {
		free(buf);
		return;
	}
	memcpy(buf, &w->pool[c], sizeof(void *));
	w->pool[c] = buf;
	w->pool_bytes += (size_t)4096 << c;
}

static void pool_drain(struct vsp_worker *w)
{
	for (unsigned c = 0; c < VSP_POOL_CLASSES; c++)
		while (w->pool[c]) {
			void *p = w->pool[c];

			memcpy(&w->pool[c], p, sizeof(void *));
			free(p);
		}
	w->pool_bytes = 0;
}

struct vsp_worker *vsp_engine_pick_worker(struct vsp_engine *e)
{
	/* Handshake threads hand connections over concurrently. */
	return &e->workers[__atomic_fetch_add(&e->next_worker, 1, __ATOMIC_RELAXED) % e->nr_workers];
}

static void arm_mailbox(struct vsp_worker *w)
{
	struct io_uring_sqe *sqe = vsp_worker_sqe(w);

	io_uring_prep_read(sqe, w->efd, &w->efd_value, sizeof(w->efd_value), 0);
	io_uring_sqe_set_data(sqe, &w->efd_io);
}

static void mailbox_ready(struct vsp_io *io, int res)
{
	struct vsp_worker *w = (struct vsp_worker *)((char *)io - offsetof(struct vsp_worker, efd_io));
	struct vsp_call *c, *next;

	if (res < 0 && res != -EINTR && res != -EAGAIN)
		vsp_log(w->engine, VSP_LOG_ERROR, "worker %u: mailbox: %s", w->id, strerror(-res));
	pthread_mutex_lock(&w->mbox_lock);
	c = w->mbox_head;
	w->mbox_head = w->mbox_tail = NULL;
	pthread_mutex_unlock(&w->mbox_lock);
	for (; c; c = next) {
		next = c->next;
		c->fn(c->arg);
		free(c);
	}
	if (!w->stop)
		arm_mailbox(w);
}

#define CQE_BATCH 64

static void *worker_main(void *arg)
{
	struct vsp_worker *w = arg;
	struct io_uring_cqe *cqes[CQE_BATCH];
	struct {
		struct vsp_io *io;
		int res;
	} done[CQE_BATCH];

	arm_mailbox(w);
	while (!w->stop) {
		unsigned n;
		int ret = io_uring_submit_and_wait(&w->ring, 1);

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			vsp_log(w->engine, VSP_LOG_ERROR, "worker %u: io_uring wait: %s", w->id,
				strerror(-ret));
			continue;
		}
		while ((n = io_uring_peek_batch_cqe(&w->ring, cqes, CQE_BATCH)) > 0) {
			for (unsigned i = 0; i < n; i++) {
				done[i].io = io_uring_cqe_get_data(cqes[i]);
				done[i].res = cqes[i]->res;
			}
			io_uring_cq_advance(&w->ring, n);
			for (unsigned i = 0; i < n; i++)
				if (done[i].io) /* cancellations carry no handler */
					done[i].io->complete(done[i].io, done[i].res);
		}
		run_deferred(w);
	}
	return NULL;
}

static void worker_stop(void *arg)
{
	struct vsp_worker *w = arg;

	w->stop = true;
}

static void worker_destroy(struct vsp_worker *w)
{
	if (w->started) {
		vsp_worker_call(w, worker_stop, w);
		pthread_join(w->thread, NULL);
	}
	if (w->ring.ring_fd > 0)
		io_uring_queue_exit(&w->ring);
	if (w->efd >= 0)
		close(w->efd);
	pool_drain(w);
	pthread_mutex_destroy(&w->mbox_lock);
	while (w->mbox_head) {
		struct vsp_call *c = w->mbox_head;

		w->mbox_head = c->next;
		free(c);
	}
}

static int worker_init(struct vsp_engine *e, struct vsp_worker *w, unsigned id)
{
	int ret;

	w->engine = e;
	w->id = id;
	w->efd = -1;
	w->efd_io.complete = mailbox_ready;
	pthread_mutex_init(&w->mbox_lock, NULL);
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0)
		return -errno;
	ret = io_uring_queue_init(e->opts.ring_entries, &w->ring, 0);
	if (ret < 0) {
		w->ring.ring_fd = -1;
		return ret;
	}
	ret = -pthread_create(&w->thread, NULL, worker_main, w);
	if (ret == 0)
		w->started = true;
	return ret;
}

int vsp_engine_new(const struct vsp_engine_opts *opts, struct vsp_engine **out)
{
	struct vsp_engine *e = calloc(1, sizeof(*e));
	int ret = -ENOMEM;

	if (!e)
		goto fail;
	if (opts)
		e->opts = *opts;
	if (!e->opts.workers) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		e->opts.workers = n < 1 ? 1 : n > 16 ? 16 : (unsigned)n;
	}
	if (!e->opts.ring_entries)
		e->opts.ring_entries = 256;
	if (posix_memalign(&e->zeros, 4096, VSP_ZERO_BUF)) {
		e->zeros = NULL;
		goto fail;
	}
	memset(e->zeros, 0, VSP_ZERO_BUF);
	e->workers = calloc(e->opts.workers, sizeof(*e->workers));
	if (!e->workers)
		goto fail;
	for (unsigned i = 0; i < e->opts.workers; i++) {
		e->workers[i].efd = -1;
		e->workers[i].ring.ring_fd = -1;
	}
	for (unsigned i = 0; i < e->opts.workers; i++) {
		e->nr_workers = i + 1;
		ret = worker_init(e, &e->workers[i], i);
		if (ret < 0) {
			vsp_log(e, VSP_LOG_ERROR, "cannot start worker %u: %s", i, strerror(-ret));
			goto fail;
		}
	}
	*out = e;
	return 0;
fail:
	vsp_engine_free(e);
	return ret;
}

void vsp_engine_free(struct vsp_engine *e)
{
	if (!e)
		return;
	for (unsigned i = 0; i < e->nr_workers; i++)
		worker_destroy(&e->workers[i]);
	free(e->workers);
	free(e->zeros);
	free(e);
}

unsigned vsp_engine_workers(const struct vsp_engine *e)
{
	return e->nr_workers;
}
