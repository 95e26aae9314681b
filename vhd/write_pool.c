/* write_pool.c - several data writes in flight for the bulk copies.  A
 * single synchronous O_DIRECT write at a time leaves the device idle between
 * requests; a few threads each write one read-ahead slot's pieces, planned
 * beforehand by the caller's thread (all metadata stays on that thread), and
 * give the slot back when done.  The caller drains the pool before every
 * batch_flush, so metadata is still published only after its data. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

#define WP_MAX_THREADS 8
#define WP_QUEUE 16

struct wp_job {
	struct ra_slot *slot;
	size_t first, count;    /* plans in the batch */
};

struct write_pool {
	struct write_batch *b;
	struct readahead *ra;
	pthread_t threads[WP_MAX_THREADS];
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct wp_job queue[WP_QUEUE];
	unsigned qhead, qcount;
	unsigned busy;          /* jobs taken off the queue, not finished */
	bool stop;
	int ret;                /* the first write error */
	uint64_t err_off;
};

static void *writer(void *arg)
{
	struct write_pool *wp = arg;

	for (;;) {
		struct wp_job job;
		const uint8_t *buf;
		uint64_t bad_off = 0;
		bool failed;
		int ret = 0;

		pthread_mutex_lock(&wp->lock);
		while (!wp->qcount && !wp->stop)
			pthread_cond_wait(&wp->changed, &wp->lock);
		if (!wp->qcount) {
			pthread_mutex_unlock(&wp->lock);
			return NULL;
		}
		job = wp->queue[wp->qhead];
		wp->qhead = (wp->qhead + 1) % WP_QUEUE;
		wp->qcount--;
		wp->busy++;
		failed = wp->ret < 0;
		pthread_mutex_unlock(&wp->lock);

		buf = job.slot->buf;
		for (size_t i = job.first; i < job.first + job.count && !failed && ret == 0; i++) {
			const struct vhd_write_plan *p = &wp->b->plans[i];

			ret = batch_write_plan(wp->b, p, buf);
			bad_off = p->offset;
			buf += p->length;
		}
		ra_release(wp->ra, job.slot);

		pthread_mutex_lock(&wp->lock);
		wp->busy--;
		if (ret < 0 && wp->ret == 0) {
			wp->ret = ret;
			wp->err_off = bad_off;
		}
		pthread_cond_broadcast(&wp->changed);
		pthread_mutex_unlock(&wp->lock);
	}
}

int wpool_start(struct write_pool **out, struct write_batch *b, struct readahead *ra,
		unsigned nthreads)
{
	struct write_pool *wp = calloc(1, sizeof(*wp));

	*out = NULL;
	if (!wp)
		return -ENOMEM;
	wp->b = b;
	wp->ra = ra;
	pthread_mutex_init(&wp->lock, NULL);
	pthread_cond_init(&wp->changed, NULL);
	if (nthreads > WP_MAX_THREADS)
		nthreads = WP_MAX_THREADS;
	for (; wp->nthreads < nthreads; wp->nthreads++)
		if (pthread_create(&wp->threads[wp->nthreads], NULL, writer, wp))
			break;
	if (!wp->nthreads) {
		pthread_cond_destroy(&wp->changed);
		pthread_mutex_destroy(&wp->lock);
		free(wp);
		return -EAGAIN;
	}
	*out = wp;
	return 0;
}

int wpool_submit(struct write_pool *wp, struct ra_slot *slot, size_t first, size_t count)
{
	int ret;

	pthread_mutex_lock(&wp->lock);
	while (wp->qcount == WP_QUEUE)
		pthread_cond_wait(&wp->changed, &wp->lock);
	wp->queue[(wp->qhead + wp->qcount++) % WP_QUEUE] = (struct wp_job){slot, first, count};
	pthread_cond_broadcast(&wp->changed);
	ret = wp->ret;
	pthread_mutex_unlock(&wp->lock);
	return ret;
}

int wpool_drain(struct write_pool *wp, uint64_t *err_off)
{
	int ret;

	pthread_mutex_lock(&wp->lock);
	while (wp->qcount || wp->busy)
		pthread_cond_wait(&wp->changed, &wp->lock);
	ret = wp->ret;
	if (err_off)
		*err_off = wp->err_off;
	pthread_mutex_unlock(&wp->lock);
	return ret;
}

int wpool_finish(struct write_pool *wp, uint64_t *err_off)
{
	int ret;

	if (!wp)
		return 0;
	ret = wpool_drain(wp, err_off);
	pthread_mutex_lock(&wp->lock);
	wp->stop = true;
	pthread_cond_broadcast(&wp->changed);
	pthread_mutex_unlock(&wp->lock);
	for (unsigned i = 0; i < wp->nthreads; i++)
		pthread_join(wp->threads[i], NULL);
	pthread_cond_destroy(&wp->changed);
	pthread_mutex_destroy(&wp->lock);
	free(wp);
	return ret;
}
