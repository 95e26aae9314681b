/* merge_release.c - a merge gives back the space of what it already copied.
 *
 * Why it is safe: the images above the target (m1 just above it, ..., mN the
 * child) shadow it.  Once the target durably holds the chain's content for
 * every sector below a virtual offset L (its data synced, then its BAT
 * synced), the blocks of m1..mN wholly below L are redundant.  They are
 * dropped from the bottom up: m1 first, then m2, ... mN.  When mK drops a
 * block, every image below it has already dropped that range, so a sector mK
 * held is now read from the images above mK (which shadowed mK anyway) or
 * from the target, which holds exactly what mK showed.  Each image's BAT
 * change is synced before the next image changes, and a block's file space
 * is punched out only after the BAT entry that pointed at it is durable.
 * A crash at any point leaves the chain's content unchanged (leaked space
 * at worst); a resumed merge simply finds less to copy.
 *
 * Why it is worth it: a merge needs room for one batch instead of a second
 * copy of the child, and freeing the child's space (on file systems that
 * discard freed space synchronously, as expensive as writing it) overlaps
 * the copy instead of following it.
 *
 * L is rounded down to the largest block size of the images involved; when
 * their block sizes do not all divide it (never seen outside hostile
 * images), nothing is released early and the merge works as before.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct member {
	struct vhd_image *img;  /* opened read-write on its own, no parent */
	uint32_t next;          /* first block not released yet */
	bool no_punch;          /* the file system cannot punch holes */
};

struct releaser {
	struct member m[VHD_MAX_CHAIN_DEPTH]; /* m[0] just above the target */
	unsigned n;
	uint64_t align;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	uint64_t want, done;
	bool stop;
	int ret;
	uint64_t released;
};

/* Rewrites the BAT sectors holding entries first..last from memory (read,
 * patch, write: bytes around the entries are kept). */
static int write_bat_range(struct vhd_image *img, uint32_t first, uint32_t last)
{
	uint64_t pos = img->hdr.table_offset + 4ull * first;
	uint64_t end = img->hdr.table_offset + 4ull * (last + 1);
	uint64_t start = pos / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
	size_t len = round_up(end, VHD_SECTOR_SIZE) - start;
	uint8_t *buf = malloc(len);
	int ret;

	if (!buf)
		return -ENOMEM;
	if (start + len > img->footer_pos)
		len = img->footer_pos - start; /* never past the data (unaligned BAT) */
	ret = pread_full(img->fd, buf, len, start);
	for (uint32_t b = first; ret == 0 && b <= last; b++)
		vhd_put_be32(buf + (img->hdr.table_offset + 4ull * b - start), img->bat[b]);
	if (ret == 0)
		ret = pwrite_full(img->fd, buf, len, start);
	free(buf);
	return ret;
}

/* Drops m's blocks wholly below `upto`; returns the bytes given back. */
static int release_member(struct member *m, uint64_t upto, uint64_t *released)
{
	struct vhd_image *img = m->img;
	uint32_t last = upto / img->block_size < img->nr_blocks ? (uint32_t)(upto / img->block_size)
								  : img->nr_blocks;
	uint32_t first_changed = UINT32_MAX, last_changed = 0;
	uint64_t *offs = NULL;
	uint32_t *blocks = NULL;
	struct stat before, after;
	size_t n = 0;
	int ret = 0;

	if (last <= m->next)
		return 0;
	offs = malloc((last - m->next) * sizeof(*offs));
	blocks = malloc((last - m->next) * sizeof(*blocks));
	if (!offs || !blocks) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t b = m->next; b < last; b++) {
		if (img->bat[b] == VHD_BAT_UNUSED)
			continue;
		blocks[n] = b;
		offs[n++] = block_file_offset(img, b);
		img->bat[b] = VHD_BAT_UNUSED;
		first_changed = first_changed < b ? first_changed : b;
		last_changed = b;
	}
	if (n) {
		ret = write_bat_range(img, first_changed, last_changed);
		if (ret == 0 && fdatasync(img->fd) < 0)
			ret = -errno;
	}
	/* what the file system gave back, not the spans (they may hold holes) */
	if (n && fstat(img->fd, &before) < 0)
		ret = -errno;
	for (size_t i = 0; i < n && ret == 0 && !m->no_punch; i++) {
		uint64_t span = block_span(img, blocks[i], offs[i]);

		if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offs[i],
			      (off_t)span) < 0) {
			if (errno != EOPNOTSUPP)
				ret = -errno;
			m->no_punch = true; /* the blocks stay dropped; only the space is kept */
			break;
		}
	}
	if (n && ret == 0 && fstat(img->fd, &after) == 0 && after.st_blocks < before.st_blocks)
		*released += (uint64_t)(before.st_blocks - after.st_blocks) * 512;
	m->next = last;
out:
	free(offs);
	free(blocks);
	return ret;
}

static void *release_thread(void *arg)
{
	struct releaser *r = arg;
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		uint64_t upto, released = 0;

		while (r->want / r->align * r->align <= r->done && !r->stop)
			pthread_cond_wait(&r->changed, &r->lock);
		upto = r->want / r->align * r->align;
		if (upto <= r->done)
			break; /* stopped, and caught up */
		pthread_mutex_unlock(&r->lock);
		for (unsigned i = 0; i < r->n && ret == 0; i++) /* bottom up */
			ret = release_member(&r->m[i], upto, &released);
		pthread_mutex_lock(&r->lock);
		r->done = upto;
		r->released += released;
		if (ret < 0) {
			r->ret = ret;
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static void close_members(struct releaser *r)
{
	for (unsigned i = 0; i < r->n; i++)
		vhd_close(r->m[i].img);
}

int releaser_start(struct releaser **out, struct vhd_image *child, unsigned tdepth,
		   struct vhd_err *err)
{
	struct vhd_open_opts oo = {.flags = VHD_OPEN_RDWR | VHD_OPEN_NO_PARENT | VHD_OPEN_NO_LOCK};
	struct vhd_image *chain[VHD_MAX_CHAIN_DEPTH];
	struct releaser *r;
	struct vhd_image *c = child;
	unsigned n = 0;
	int ret;

	*out = NULL;
	for (; n < tdepth && c; c = c->parent)
		chain[n++] = c;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		struct vhd_image *img = chain[n - 1 - i];

		ret = vhd_open(img->path, &oo, &r->m[r->n].img, err);
		if (ret < 0)
			goto fail;
		r->n++;
		if (r->m[i].img->block_size > r->align)
			r->align = r->m[i].img->block_size;
	}
	for (unsigned i = 0; i < r->n; i++)
		if (!r->align || r->align % r->m[i].img->block_size)
			r->align = UINT64_MAX; /* nothing is ever below a multiple of it */
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->changed, NULL);
	if (pthread_create(&r->thread, NULL, release_thread, r)) {
		pthread_cond_destroy(&r->changed);
		pthread_mutex_destroy(&r->lock);
		ret = -EAGAIN;
		goto fail;
	}
	*out = r;
	return 0;
fail:
	close_members(r);
	free(r);
	return ret;
}

void releaser_advance(struct releaser *r, uint64_t durable)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	if (durable > r->want)
		r->want = durable;
	pthread_cond_broadcast(&r->changed);
	pthread_mutex_unlock(&r->lock);
}

int releaser_finish(struct releaser *r, uint64_t *released)
{
	int ret;

	if (!r)
		return 0;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_broadcast(&r->changed);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	ret = r->ret;
	if (released)
		*released = r->released;
	close_members(r);
	pthread_cond_destroy(&r->changed);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret;
}
