/* io.c - the mount's data path over the vhd library.
 *
 * Many FUSE threads call in at once.  The image handle is not internally
 * locked (vhd.h), so vhd_map, vhd_write_prepare and vhd_write_commit run
 * under io->meta; the data moves with pread/pwrite to the returned extents
 * outside it, so reads and writes of different threads overlap.
 *
 * Writes follow the library's protocol: prepare (a new block is allocated,
 * its BAT entry not yet published), write the data, and when the plan needs
 * a commit, make the data durable before publishing the metadata.  Commits
 * are grouped: each writer queues its plans and takes a ticket; one thread
 * at a time runs a single fdatasync for every ticket taken before it started
 * and then commits all the queued plans (a ticket taken during that sync
 * waits for the next one, since the sync may have started before its data
 * was written).  A write is acknowledged only after its commit, so a read
 * that follows the acknowledgement sees it.  Writes into blocks that already
 * hold their sectors need no commit and never sync; fsync takes a ticket
 * without plans, which makes every acknowledged write durable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define SECTOR VHD_SECTOR_SIZE
/* Extents mapped per hold of the meta lock: bounds the hold time while
 * letting a large read of a fragmented differencing disk make progress. */
#define MAP_BATCH 32
/* Zeroing writes go out in pieces of this size from a constant buffer. */
#define ZERO_CHUNK (64u << 10)

static const uint8_t zero_chunk[ZERO_CHUNK];

/* Direct blocks are remembered for disks of up to this many blocks (32 MiB
 * of offsets; 2 MiB blocks up to 8 TiB, beyond any VHD). */
#define MAX_DIRECT_BLOCKS (4u << 20)

int vfs_io_init(struct vfs_io *io, struct vhd_image *img, bool no_sync)
{
	struct vhd_info info;

	memset(io, 0, sizeof(*io));
	io->img = img;
	io->size = vhd_virtual_size(img);
	io->writable = vhd_is_writable(img);
	io->no_sync = no_sync;
	io->queue_tail = &io->queue;
	io->leaf_fd = vhd_fd(img);
	vhd_get_info(img, &info);
	io->fixed = info.type == VHD_TYPE_FIXED;
	if (!io->fixed && info.block_size) {
		io->block_size = info.block_size;
		io->nr_blocks = (io->size + info.block_size - 1) / info.block_size;
		if (io->nr_blocks <= MAX_DIRECT_BLOCKS)
			io->full = calloc(io->nr_blocks, sizeof(*io->full));
		/* without the table every access simply takes the slow path */
	}
	if (pthread_mutex_init(&io->meta, NULL) || pthread_mutex_init(&io->range_lock, NULL) ||
	    pthread_cond_init(&io->range_cond, NULL) || pthread_mutex_init(&io->sync_lock, NULL) ||
	    pthread_cond_init(&io->sync_cond, NULL) || pthread_mutex_init(&io->fp_lock, NULL))
		return -ENOMEM;
	return 0;
}

void vfs_io_destroy(struct vfs_io *io)
{
	pthread_mutex_destroy(&io->meta);
	pthread_mutex_destroy(&io->range_lock);
	pthread_cond_destroy(&io->range_cond);
	pthread_mutex_destroy(&io->sync_lock);
	pthread_cond_destroy(&io->sync_cond);
	pthread_mutex_destroy(&io->fp_lock);
	free(io->fp);
	io->fp = NULL;
	free((void *)io->full);
	io->full = NULL;
}

/* The leaf file offset of virtual offset off when it lies in a direct
 * block (fixed disk, or a leaf block known to be full); *run is how far the
 * contiguous run goes from off. */
static bool direct_lookup(struct vfs_io *io, uint64_t off, uint64_t *file_off, uint64_t *run)
{
	uint64_t b, v;

	if (io->fixed) {
		*file_off = off;
		*run = io->size - off;
		return true;
	}
	if (!io->full)
		return false;
	b = off / io->block_size;
	v = atomic_load_explicit(&io->full[b], memory_order_acquire);
	if (!v)
		return false;
	*file_off = v - 1 + off % io->block_size;
	*run = (b + 1) * io->block_size - off;
	if (*run > io->size - off)
		*run = io->size - off;
	return true;
}

/* Under the meta lock: is the block of off all in the leaf?  Remember it. */
static void direct_learn_locked(struct vfs_io *io, uint64_t off)
{
	uint64_t b, start, len;
	struct vhd_extent e;

	if (!io->full)
		return;
	b = off / io->block_size;
	start = b * io->block_size;
	len = io->size - start < io->block_size ? io->size - start : io->block_size;
	if (atomic_load_explicit(&io->full[b], memory_order_relaxed))
		return;
	if (vhd_map(io->img, start, len, VHD_MAP_RESOLVE, &e) == 0 && e.kind == VHD_EXT_DATA &&
	    e.depth == 0 && e.length == len && e.fd == io->leaf_fd)
		atomic_store_explicit(&io->full[b], e.file_offset + 1, memory_order_release);
}

/* ---- reading -------------------------------------------------------------- */

int vfs_io_read(struct vfs_io *io, void *buf, uint64_t len, uint64_t off)
{
	struct vhd_extent ext[MAP_BATCH];
	uint8_t *p = buf;
	int ret = 0;

	while (len) {
		uint64_t o = off, l = len, foff, run;
		size_t n = 0;

		if (direct_lookup(io, off, &foff, &run)) {
			if (run > len)
				run = len;
			ret = vhd_pread_full(io->leaf_fd, p, run, foff);
			if (ret < 0)
				return ret;
			p += run;
			off += run;
			len -= run;
			continue;
		}
		pthread_mutex_lock(&io->meta);
		direct_learn_locked(io, off);
		while (n < MAP_BATCH && l) {
			ret = vhd_map(io->img, o, l, VHD_MAP_RESOLVE, &ext[n]);
			if (ret < 0)
				break;
			o += ext[n].length;
			l -= ext[n].length;
			n++;
		}
		pthread_mutex_unlock(&io->meta);
		if (ret < 0)
			return ret;
		for (size_t i = 0; i < n; i++) {
			switch (ext[i].kind) {
			case VHD_EXT_DATA:
				ret = vhd_pread_full(ext[i].fd, p, ext[i].length,
						     ext[i].file_offset);
				if (ret < 0)
					return ret;
				break;
			case VHD_EXT_ZERO:
				memset(p, 0, ext[i].length);
				break;
			case VHD_EXT_PARENT:
				return -EIO; /* chains are always opened with their parents */
			}
			p += ext[i].length;
		}
		off = o;
		len = l;
	}
	return 0;
}

/* ---- range locks ------------------------------------------------------------ */

static void range_lock(struct vfs_io *io, struct vfs_range *r, uint64_t start, uint64_t end)
{
	r->start = start;
	r->end = end;
	pthread_mutex_lock(&io->range_lock);
retry:
	for (struct vfs_range *b = io->busy; b; b = b->next) {
		if (b->start < end && start < b->end) {
			pthread_cond_wait(&io->range_cond, &io->range_lock);
			goto retry;
		}
	}
	r->next = io->busy;
	io->busy = r;
	pthread_mutex_unlock(&io->range_lock);
}

static void range_unlock(struct vfs_io *io, struct vfs_range *r)
{
	pthread_mutex_lock(&io->range_lock);
	for (struct vfs_range **pp = &io->busy; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	pthread_cond_broadcast(&io->range_cond);
	pthread_mutex_unlock(&io->range_lock);
}

/* ---- durability --------------------------------------------------------------- */

/* Commits the queued plans of one round (data already durable). */
static void commit_round(struct vfs_io *io, struct vfs_commit *q, int sync_ret)
{
	pthread_mutex_lock(&io->meta);
	for (; q; q = q->next) {
		q->status = sync_ret;
		for (size_t i = 0; i < q->n && q->status == 0; i++)
			q->status = vhd_write_commit(io->img, &q->plans[i]);
	}
	pthread_mutex_unlock(&io->meta);
}

/* Takes a ticket (queuing c's plans when c is set) and returns once a sync
 * that started after the ticket was taken has completed and c is committed. */
static int sync_wait(struct vfs_io *io, struct vfs_commit *c)
{
	uint64_t ticket;
	int ret;

	pthread_mutex_lock(&io->sync_lock);
	if (io->failed) {
		ret = io->failed;
		goto out;
	}
	if (c) {
		c->status = -EINPROGRESS;
		c->next = NULL;
		*io->queue_tail = c;
		io->queue_tail = &c->next;
	}
	ticket = ++io->sync_req;
	while (io->sync_done < ticket) {
		struct vfs_commit *q;
		uint64_t end;
		int sret;

		if (io->syncing) {
			pthread_cond_wait(&io->sync_cond, &io->sync_lock);
			continue;
		}
		/* Lead one round for every ticket taken so far. */
		io->syncing = true;
		end = io->sync_req;
		q = io->queue;
		io->queue = NULL;
		io->queue_tail = &io->queue;
		pthread_mutex_unlock(&io->sync_lock);

		sret = vhd_flush(io->img);
		commit_round(io, q, sret);

		pthread_mutex_lock(&io->sync_lock);
		io->nr_syncs++;
		if (sret < 0 && !io->failed) {
			/* After a failed fdatasync the page cache no longer tells
			 * what reached the disk: refuse everything from now on. */
			io->failed = -EIO;
			vfs_log(io, VFS_LOG_ERR, "%s: fdatasync failed: %s; refusing further writes",
				vhd_path(io->img), strerror(-sret));
		}
		io->sync_done = end;
		io->syncing = false;
		pthread_cond_broadcast(&io->sync_cond);
	}
	ret = c ? c->status : io->failed;
out:
	pthread_mutex_unlock(&io->sync_lock);
	return ret;
}

static int commit_plans(struct vfs_io *io, struct vhd_write_plan *plans, size_t n)
{
	struct vfs_commit c = {.plans = plans, .n = n};
	int ret = 0;

	if (!io->no_sync)
		return sync_wait(io, &c);
	/* A throwaway child: nothing to make durable, publish at once. */
	pthread_mutex_lock(&io->meta);
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = vhd_write_commit(io->img, &plans[i]);
	pthread_mutex_unlock(&io->meta);
	return ret;
}

int vfs_io_sync(struct vfs_io *io)
{
	if (!io->writable || io->no_sync)
		return 0;
	return sync_wait(io, NULL);
}

/* ---- writing ------------------------------------------------------------------- */

/* Whole sectors; the caller holds the range. */
static int write_aligned(struct vfs_io *io, const uint8_t *buf, uint64_t len, uint64_t off)
{
	struct vhd_write_plan local[4], *plans = local;
	size_t n = 0, cap = 4;
	int ret = 0;

	while (len) {
		struct vhd_write_plan plan;
		uint64_t foff, run;

		/* A full leaf block needs no preparing and no commit: the same
		 * place vhd_write_prepare would name. */
		if (direct_lookup(io, off, &foff, &run)) {
			if (run > len)
				run = len;
			ret = vhd_pwrite_full(io->leaf_fd, buf, run, foff);
			if (ret < 0)
				goto out;
			buf += run;
			off += run;
			len -= run;
			continue;
		}
		pthread_mutex_lock(&io->meta);
		ret = vhd_write_prepare(io->img, off, len, &plan);
		if (ret == 0 && !plan.needs_commit)
			direct_learn_locked(io, off);
		pthread_mutex_unlock(&io->meta);
		if (ret < 0)
			goto out;
		ret = vhd_pwrite_full(plan.fd, buf, plan.length, plan.file_offset);
		if (ret < 0)
			goto out; /* never committed: the old content stays visible */
		if (plan.needs_commit) {
			if (n == cap) {
				struct vhd_write_plan *np = malloc(2 * cap * sizeof(*np));

				if (!np) {
					ret = -ENOMEM;
					goto out;
				}
				memcpy(np, plans, n * sizeof(*np));
				if (plans != local)
					free(plans);
				plans = np;
				cap *= 2;
			}
			plans[n++] = plan;
		}
		buf += plan.length;
		off += plan.length;
		len -= plan.length;
	}
	if (n)
		ret = commit_plans(io, plans, n);
out:
	if (plans != local)
		free(plans);
	return ret;
}

/* Any alignment; partial sectors at either end are read, merged and written
 * whole.  The caller holds the range (rounded out to sectors). */
static int write_locked(struct vfs_io *io, const void *buf, uint64_t len, uint64_t off)
{
	uint64_t start = off / SECTOR * SECTOR;
	uint64_t end = (off + len + SECTOR - 1) / SECTOR * SECTOR;
	uint8_t *bounce;
	int ret = 0;

	if (start == off && end == off + len)
		return write_aligned(io, buf, len, off);
	bounce = malloc(end - start);
	if (!bounce)
		return -ENOMEM;
	if (off != start)
		ret = vfs_io_read(io, bounce, SECTOR, start);
	if (ret == 0 && (off + len) % SECTOR && !(end - SECTOR == start && off != start))
		ret = vfs_io_read(io, bounce + (end - start - SECTOR), SECTOR, end - SECTOR);
	if (ret == 0) {
		memcpy(bounce + (off - start), buf, len);
		ret = write_aligned(io, bounce, end - start, start);
	}
	free(bounce);
	return ret;
}

static void fp_check(struct vfs_io *io, uint64_t off, uint64_t len);

int vfs_io_write(struct vfs_io *io, const void *buf, uint64_t len, uint64_t off)
{
	struct vfs_range r;
	int ret;

	if (!io->writable)
		return -EROFS;
	if (off > io->size || io->size - off < len)
		return -ENOSPC;
	if (len == 0)
		return 0;
	range_lock(io, &r, off / SECTOR * SECTOR, (off + len + SECTOR - 1) / SECTOR * SECTOR);
	ret = write_locked(io, buf, len, off);
	/* Checked after the data is in place: a probe that read these bytes
	 * before now saw the old ones and must run again. */
	if (ret == 0)
		fp_check(io, off, len);
	range_unlock(io, &r);
	return ret;
}

int vfs_io_zero(struct vfs_io *io, uint64_t off, uint64_t len)
{
	struct vfs_range r;
	uint64_t end = off + len;
	int ret = 0;

	if (!io->writable)
		return -EROFS;
	if (off > io->size || io->size - off < len)
		return -ENOSPC;
	if (len == 0)
		return 0;
	range_lock(io, &r, off / SECTOR * SECTOR, (end + SECTOR - 1) / SECTOR * SECTOR);
	while (off < end && ret == 0) {
		struct vhd_extent e;
		uint64_t stop;

		pthread_mutex_lock(&io->meta);
		ret = vhd_map(io->img, off, end - off, VHD_MAP_RESOLVE, &e);
		pthread_mutex_unlock(&io->meta);
		if (ret < 0)
			break;
		stop = off + e.length;
		/* Ranges that already read as zeros stay unallocated. */
		while (e.kind != VHD_EXT_ZERO && off < stop && ret == 0) {
			uint64_t n = stop - off < ZERO_CHUNK ? stop - off : ZERO_CHUNK;

			ret = write_locked(io, zero_chunk, n, off);
			off += n;
		}
		off = stop;
	}
	if (ret == 0)
		fp_check(io, end - len, len);
	range_unlock(io, &r);
	return ret;
}

int vfs_io_seek(struct vfs_io *io, uint64_t off, uint64_t end, int whence, uint64_t *out)
{
	bool want_data = whence == SEEK_DATA;

	while (off < end) {
		struct vhd_extent e;
		int ret;

		pthread_mutex_lock(&io->meta);
		ret = vhd_map(io->img, off, end - off, VHD_MAP_RESOLVE, &e);
		pthread_mutex_unlock(&io->meta);
		if (ret < 0)
			return ret;
		if ((e.kind != VHD_EXT_ZERO) == want_data) {
			*out = off;
			return 0;
		}
		off += e.length;
	}
	if (!want_data) { /* the end of the file is a hole */
		*out = end;
		return 0;
	}
	return -ENXIO;
}

/* ---- the probe's footprint ---------------------------------------------------- */

void vfs_fp_begin(struct vfs_io *io)
{
	pthread_mutex_lock(&io->fp_lock);
	io->fp_n = 0;
	io->fp_dirty = false;
	pthread_mutex_unlock(&io->fp_lock);
}

/* Index of the first span whose end is beyond off. */
static size_t fp_search(const struct vfs_io *io, uint64_t off)
{
	size_t lo = 0, hi = io->fp_n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (io->fp[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void vfs_fp_add(struct vfs_io *io, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	size_t i, j;

	if (len == 0)
		return;
	pthread_mutex_lock(&io->fp_lock);
	/* Spans i..j-1 touch [off, end) (adjacent counts) and merge with it. */
	i = off ? fp_search(io, off - 1) : 0;
	for (j = i; j < io->fp_n && io->fp[j].start <= end; j++) {
		if (io->fp[j].start < off)
			off = io->fp[j].start;
		if (io->fp[j].end > end)
			end = io->fp[j].end;
	}
	if (j == i) { /* no merge: insert at i */
		if (io->fp_n == io->fp_cap) {
			size_t cap = io->fp_cap ? io->fp_cap * 2 : 64;
			struct vfs_span *n = realloc(io->fp, cap * sizeof(*n));

			if (!n) {
				/* Cannot remember what was read: assume the worst. */
				io->fp_dirty = true;
				goto out;
			}
			io->fp = n;
			io->fp_cap = cap;
		}
		memmove(&io->fp[i + 1], &io->fp[i], (io->fp_n - i) * sizeof(*io->fp));
		io->fp_n++;
	} else if (j > i + 1) {
		memmove(&io->fp[i + 1], &io->fp[j], (io->fp_n - j) * sizeof(*io->fp));
		io->fp_n -= j - i - 1;
	}
	io->fp[i].start = off;
	io->fp[i].end = end;
out:
	pthread_mutex_unlock(&io->fp_lock);
}

static void fp_check(struct vfs_io *io, uint64_t off, uint64_t len)
{
	size_t i;

	pthread_mutex_lock(&io->fp_lock);
	i = fp_search(io, off);
	if (i < io->fp_n && io->fp[i].start < off + len)
		io->fp_dirty = true;
	pthread_mutex_unlock(&io->fp_lock);
}

bool vfs_fp_dirty(struct vfs_io *io)
{
	bool d;

	pthread_mutex_lock(&io->fp_lock);
	d = io->fp_dirty;
	pthread_mutex_unlock(&io->fp_lock);
	return d;
}

void vfs_fp_set_dirty(struct vfs_io *io)
{
	pthread_mutex_lock(&io->fp_lock);
	io->fp_dirty = true;
	pthread_mutex_unlock(&io->fp_lock);
}
