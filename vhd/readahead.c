/* readahead.c - reading and writing overlap for the bulk copies (convert,
 * merge): a reader thread walks the source and fills a small ring of chunk
 * buffers, in source order, while the caller's thread writes them out
 * (qemu-img keeps several requests in flight for the same reason).  What a
 * slot holds is decided by the caller's fill function, which runs on the
 * reader thread and must touch only handles no other thread uses. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

/* Enough slots for every writer to hold one while the reader fills more. */
#define RA_SLOTS 8

struct readahead {
	ra_fill_fn fill;
	void *ctx;
	uint64_t size;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct ra_slot slots[RA_SLOTS];
	unsigned head, count;   /* filled slots: head .. head+count-1 */
	unsigned taken;         /* of those, handed out by ra_next (from head) */
	bool released[RA_SLOTS]; /* handed out and given back, maybe out of order */
	bool done, stop;
	int ret;                /* the fill function's error */
	uint64_t err_off;
};

static void *reader(void *arg)
{
	struct readahead *ra = arg;
	uint64_t off = 0;
	int ret = 0;

	while (off < ra->size) {
		struct ra_slot *sl;
		bool stop;

		pthread_mutex_lock(&ra->lock);
		while (ra->count == RA_SLOTS && !ra->stop)
			pthread_cond_wait(&ra->changed, &ra->lock);
		sl = &ra->slots[(ra->head + ra->count) % RA_SLOTS];
		stop = ra->stop;
		pthread_mutex_unlock(&ra->lock);
		if (stop)
			break;
		sl->off = off;
		sl->len = 0;
		sl->data = false;
		ret = ra->fill(ra->ctx, sl, ra->size - off);
		if (ret == 0 && (sl->len == 0 || sl->len > ra->size - off))
			ret = -EIO; /* a fill that does not advance would spin forever */
		if (ret < 0)
			break;
		off += sl->len;
		pthread_mutex_lock(&ra->lock);
		ra->count++;
		pthread_cond_broadcast(&ra->changed);
		pthread_mutex_unlock(&ra->lock);
	}
	pthread_mutex_lock(&ra->lock);
	ra->ret = ret;
	ra->err_off = off;
	ra->done = true;
	pthread_cond_broadcast(&ra->changed);
	pthread_mutex_unlock(&ra->lock);
	return NULL;
}

int ra_start(struct readahead **out, uint64_t size, size_t chunk, ra_fill_fn fill, void *ctx)
{
	struct readahead *ra = calloc(1, sizeof(*ra));
	int ret = -ENOMEM;

	*out = NULL;
	if (!ra)
		return -ENOMEM;
	ra->fill = fill;
	ra->ctx = ctx;
	ra->size = size;
	for (int i = 0; i < RA_SLOTS; i++)
		if (posix_memalign((void **)&ra->slots[i].buf, 4096, chunk))
			goto fail;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->changed, NULL);
	if (pthread_create(&ra->thread, NULL, reader, ra)) {
		ret = -EAGAIN;
		pthread_cond_destroy(&ra->changed);
		pthread_mutex_destroy(&ra->lock);
		goto fail;
	}
	*out = ra;
	return 0;
fail:
	for (int i = 0; i < RA_SLOTS; i++)
		free(ra->slots[i].buf);
	free(ra);
	return ret;
}

struct ra_slot *ra_next(struct readahead *ra)
{
	struct ra_slot *sl = NULL;

	pthread_mutex_lock(&ra->lock);
	while (ra->taken == ra->count && !ra->done)
		pthread_cond_wait(&ra->changed, &ra->lock);
	if (ra->taken < ra->count)
		sl = &ra->slots[(ra->head + ra->taken++) % RA_SLOTS];
	pthread_mutex_unlock(&ra->lock);
	return sl;
}

/* Slots may come back in any order; they are refilled in source order. */
void ra_release(struct readahead *ra, struct ra_slot *sl)
{
	pthread_mutex_lock(&ra->lock);
	ra->released[sl - ra->slots] = true;
	while (ra->count && ra->released[ra->head]) {
		ra->released[ra->head] = false;
		ra->head = (ra->head + 1) % RA_SLOTS;
		ra->count--;
		ra->taken--;
	}
	pthread_cond_broadcast(&ra->changed);
	pthread_mutex_unlock(&ra->lock);
}

int ra_finish(struct readahead *ra, uint64_t *err_off)
{
	int ret;

	if (!ra)
		return 0;
	pthread_mutex_lock(&ra->lock);
	ra->stop = true;
	pthread_cond_broadcast(&ra->changed);
	pthread_mutex_unlock(&ra->lock);
	pthread_join(ra->thread, NULL);
	ret = ra->ret;
	if (err_off)
		*err_off = ra->err_off;
	pthread_cond_destroy(&ra->changed);
	pthread_mutex_destroy(&ra->lock);
	for (int i = 0; i < RA_SLOTS; i++)
		free(ra->slots[i].buf);
	free(ra);
	return ret;
}

void ra_prefetch(uint64_t *announced, uint64_t off, uint64_t end, ra_map_fn map, void *ctx)
{
	uint64_t p = *announced > off ? *announced : off;

	if (p >= end || p >= off + RA_PREFETCH / 2)
		return; /* announced far enough ahead */
	end = end - off < RA_PREFETCH ? end : off + RA_PREFETCH;
	while (p < end) {
		struct vhd_extent e;

		if (map(ctx, p, end - p, &e) < 0 || !e.length)
			break;
		if (e.kind == VHD_EXT_DATA && e.fd >= 0)
			posix_fadvise(e.fd, (off_t)e.file_offset, (off_t)e.length, POSIX_FADV_WILLNEED);
		p += e.length;
	}
	*announced = p;
}
