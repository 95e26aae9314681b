/* engine.h - the engine's workers, for the front doors inside blockvsp/.
 *
 * A worker is a thread with one io_uring.  Everything a connection does
 * (socket I/O, engine requests, replies) runs on the worker it was handed
 * to, so no request crosses threads.  Completions carry a struct vsp_io *
 * as user_data; the worker calls io->complete(io, res).
 */
#ifndef VSP_ENGINE_H
#define VSP_ENGINE_H

#include <liburing.h>
#include <pthread.h>

#include "vsp.h"

struct vsp_call;

/* Request buffers are recycled per worker by power-of-two size class
 * (4 KiB .. 32 MiB): a fresh large allocation is an mmap whose pages the
 * kernel zeroes and faults in on every request, which cost a third of the
 * CPU of 1 MiB reads before the pool. */
#define VSP_POOL_CLASSES 14
#define VSP_POOL_MAX_BYTES (64u << 20)  /* kept per worker, beyond that freed */

/* Work run once at the end of the current batch of completions (e.g. one
 * guest notification for many completed requests). */
struct vsp_deferred {
	void (*fn)(struct vsp_deferred *d);
	struct vsp_deferred *next;
	bool queued;
};

struct vsp_worker {
	struct vsp_engine *engine;
	unsigned id;
	pthread_t thread;
	bool started;
	struct io_uring ring;
	/* Mailbox: other threads post calls; the eventfd wakes the ring. */
	int efd;
	uint64_t efd_value;
	struct vsp_io efd_io;
	pthread_mutex_t mbox_lock;
	struct vsp_call *mbox_head, *mbox_tail;
	bool stop;
	struct vsp_deferred *deferred;   /* run after the current completion batch */
	void *pool[VSP_POOL_CLASSES];    /* free buffers, linked through their first word */
	size_t pool_bytes;
};

struct vsp_engine {
	struct vsp_engine_opts opts;
	unsigned nr_workers;
	struct vsp_worker *workers;
	unsigned next_worker;      /* round robin (atomic) */
	void *zeros;               /* VSP_ZERO_BUF bytes of zeros, 4 KiB aligned */
};

#define VSP_ZERO_BUF (1u << 20)

/* A free submission entry on w's ring (submits what is queued when the ring
 * is full).  Worker thread only. */
struct io_uring_sqe *vsp_worker_sqe(struct vsp_worker *w);
/* Cancels the operation whose user_data is io (it then completes with
 * -ECANCELED, or normally if it was already done).  Worker thread only. */
void vsp_worker_cancel(struct vsp_worker *w, struct vsp_io *io);
/* A listening Unix stream socket at path; a stale socket file there is
 * replaced, anything else is refused.  err names the path. */
int vsp_listen_unix(const char *path, int backlog, struct vhd_err *err);
/* Runs fn(arg) on w's thread soon.  Any thread. */
int vsp_worker_call(struct vsp_worker *w, void (*fn)(void *arg), void *arg);
/* Queues d to run after the completions being handled now (once, however
 * often it is queued meanwhile).  Worker thread only. */
void vsp_worker_defer(struct vsp_worker *w, struct vsp_deferred *d);
/* A 4 KiB-aligned buffer of at least len bytes (len <= VSP_MAX_REQUEST), and
 * giving it back.  Worker thread only; put on the worker that got it. */
void *vsp_buf_get(struct vsp_worker *w, size_t len);
void vsp_buf_put(struct vsp_worker *w, void *buf, size_t len);
/* The next worker for a new connection.  Any thread. */
struct vsp_worker *vsp_engine_pick_worker(struct vsp_engine *e);

#endif
