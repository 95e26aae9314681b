/* disk.c - a served VHD chain: requests split into pieces along VHD blocks,
 * each mapped by vhd/ and submitted to io_uring, plus the group commit.
 *
 * Locking: vhd_map/vhd_write_prepare/vhd_write_commit mutate the image
 * (bitmap cache, pending allocations, BAT) and run under disk->lock; data I/O
 * to the extents they return runs on the rings without it.
 *
 * Group commit, per (disk, worker):
 *   - a write whose pieces need metadata (new block, new bitmap bits) waits
 *     in `commit` until an fdatasync issued after its data completed returns;
 *     then its metadata is written (vhd_write_commit) and it completes;
 *   - a FLUSH, and a FUA write whose metadata is in place, wait in `sync`
 *     for an fdatasync issued after they arrived.
 * One fdatasync is in flight at a time per (disk, worker); whatever queued
 * while it ran goes with the next one, so under load one sync covers many
 * writes.  Writes are acknowledged only after their commit, so a FLUSH on any
 * connection covers every acknowledged write (multi-conn is safe).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"

struct disk_wstate {
	struct vsp_disk *disk;
	struct vsp_worker *worker;
	struct vsp_req *commit_head, *commit_tail; /* waiting for sync, then commit */
	struct vsp_req *sync_head, *sync_tail;     /* waiting for sync only */
	struct vsp_req *batch_commit, *batch_sync; /* riding the sync in flight */
	bool syncing;
	struct vsp_io sync_io;
};

struct vsp_disk {
	struct vsp_engine *engine;
	struct vhd_image *img;
	int fd;                     /* the leaf's file */
	bool read_only;
	uint64_t size;
	pthread_mutex_t lock;       /* the image's metadata */
	pthread_mutex_t slow_lock;  /* unaligned requests, one at a time */
	struct disk_wstate *ws;     /* one per worker */
};

/* ---- opening -------------------------------------------------------------- */

static void warn_cb(void *ctx, const char *msg)
{
	vsp_log(ctx, VSP_LOG_WARN, "%s", msg);
}

int vsp_disk_open(struct vsp_engine *e, const char *path, const struct vsp_disk_opts *opts,
		  struct vsp_disk **out, struct vhd_err *err)
{
	struct vsp_disk *d = calloc(1, sizeof(*d));
	struct vhd_open_opts o = {0};
	int ret = -ENOMEM;

	if (!d) {
		snprintf(err->msg, sizeof(err->msg), "%s: out of memory", path);
		goto fail;
	}
	d->engine = e;
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->slow_lock, NULL);
	d->ws = calloc(e->nr_workers, sizeof(*d->ws));
	if (!d->ws) {
		snprintf(err->msg, sizeof(err->msg), "%s: out of memory", path);
		goto fail;
	}
	d->read_only = opts && opts->read_only;
	o.flags = d->read_only ? 0 : VHD_OPEN_RDWR;
	if (!opts || opts->cache == VSP_CACHE_NONE)
		o.flags |= VHD_OPEN_DIRECT;
	o.parent_dir = opts ? opts->parent_dir : NULL;
	o.warn = warn_cb;
	o.warn_ctx = e;
	/* A server killed a moment ago may still hold the lock while the kernel
	 * tears down its io_uring: wait up to 5 s for it to go. */
	for (int tries = 0;; tries++) {
		ret = vhd_open(path, &o, &d->img, err);
		if (ret != -EBUSY || tries == 50)
			break;
		usleep(100 * 1000);
	}
	if (ret < 0)
		goto fail;
	d->fd = vhd_fd(d->img);
	d->size = vhd_virtual_size(d->img);
	for (unsigned i = 0; i < e->nr_workers; i++) {
		d->ws[i].disk = d;
		d->ws[i].worker = &e->workers[i];
	}
	*out = d;
	return 0;
fail:
	if (d) {
		pthread_mutex_destroy(&d->lock);
		pthread_mutex_destroy(&d->slow_lock);
		free(d->ws);
		free(d);
	}
	return ret;
}

int vsp_disk_close(struct vsp_disk *d)
{
	int ret;

	if (!d)
		return 0;
	ret = vhd_close(d->img);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->slow_lock);
	free(d->ws);
	free(d);
	return ret;
}

uint64_t vsp_disk_size(const struct vsp_disk *d)
{
	return d->size;
}

bool vsp_disk_read_only(const struct vsp_disk *d)
{
	return d->read_only;
}

const char *vsp_disk_path(const struct vsp_disk *d)
{
	return vhd_path(d->img);
}

void vsp_disk_uuid(const struct vsp_disk *d, uint8_t uuid[16])
{
	struct vhd_info info;

	vhd_get_info(d->img, &info);
	memcpy(uuid, info.uuid, 16);
}

int vsp_disk_status(struct vsp_disk *d, uint64_t offset, uint64_t length, uint64_t *run,
		    bool *zero)
{
	struct vhd_extent e;
	int ret;

	pthread_mutex_lock(&d->lock);
	ret = vhd_map(d->img, offset, length, VHD_MAP_RESOLVE, &e);
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return ret;
	*run = e.length;
	/* A parent that is missing cannot happen here (opened with parents). */
	*zero = e.kind != VHD_EXT_DATA;
	return 0;
}

/* ---- completion ------------------------------------------------------------ */

static void pieces_free_iovs(struct vsp_req *r)
{
	for (unsigned i = 0; i < r->nr_pieces; i++)
		free(r->pieces[i].iov);
}

static void req_finish(struct vsp_req *r, int result)
{
	pieces_free_iovs(r);
	if (r->pieces != r->inline_pieces)
		free(r->pieces);
	r->pieces = NULL;
	r->done(r, result);
}

static void list_push(struct vsp_req **head, struct vsp_req **tail, struct vsp_req *r)
{
	r->next = NULL;
	if (*tail)
		(*tail)->next = r;
	else
		*head = r;
	*tail = r;
}

static void sync_kick(struct disk_wstate *ws);

static void sync_done(struct vsp_io *io, int res)
{
	struct disk_wstate *ws = (struct disk_wstate *)((char *)io - offsetof(struct disk_wstate, sync_io));
	struct vsp_disk *d = ws->disk;
	struct vsp_req *r, *next;

	ws->syncing = false;
	if (res < 0)
		vsp_log(d->engine, VSP_LOG_ERROR, "%s: fdatasync: %s", vhd_path(d->img), strerror(-res));
	if (ws->batch_commit && res == 0) {
		/* The data of every write here is durable: publish its metadata. */
		pthread_mutex_lock(&d->lock);
		for (r = ws->batch_commit; r; r = r->next)
			for (unsigned i = 0; i < r->nr_pieces && r->error == 0; i++) {
				int ret = vhd_write_commit(d->img, &r->pieces[i].plan);

				if (ret < 0) {
					vsp_log(d->engine, VSP_LOG_ERROR, "%s: metadata of %llu+%llu: %s",
						vhd_path(d->img),
						(unsigned long long)r->pieces[i].plan.offset,
						(unsigned long long)r->pieces[i].plan.length, strerror(-ret));
					r->error = ret;
				}
			}
		pthread_mutex_unlock(&d->lock);
	}
	for (r = ws->batch_commit; r; r = next) {
		next = r->next;
		if (res < 0)
			req_finish(r, -EIO);
		else if (r->error)
			req_finish(r, r->error);
		else if (r->flags & VSP_REQ_FUA)
			list_push(&ws->sync_head, &ws->sync_tail, r); /* metadata durable too */
		else
			req_finish(r, 0);
	}
	for (r = ws->batch_sync; r; r = next) {
		next = r->next;
		req_finish(r, res < 0 ? -EIO : 0);
	}
	ws->batch_commit = ws->batch_sync = NULL;
	sync_kick(ws);
}

static void sync_kick(struct disk_wstate *ws)
{
	struct io_uring_sqe *sqe;

	if (ws->syncing || (!ws->commit_head && !ws->sync_head))
		return;
	ws->batch_commit = ws->commit_head;
	ws->batch_sync = ws->sync_head;
	ws->commit_head = ws->commit_tail = ws->sync_head = ws->sync_tail = NULL;
	ws->syncing = true;
	ws->sync_io.complete = sync_done;
	sqe = vsp_worker_sqe(ws->worker);
	io_uring_prep_fsync(sqe, ws->disk->fd, IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data(sqe, &ws->sync_io);
}

/* All pieces of a request finished. */
static void req_pieces_done(struct vsp_req *r)
{
	struct disk_wstate *ws = &r->disk->ws[r->worker->id];

	if (r->error) {
		req_finish(r, r->error);
		return;
	}
	if (r->needs_commit)
		list_push(&ws->commit_head, &ws->commit_tail, r);
	else if ((r->flags & VSP_REQ_FUA) || r->op == VSP_OP_FLUSH)
		list_push(&ws->sync_head, &ws->sync_tail, r);
	else {
		req_finish(r, 0);
		return;
	}
	sync_kick(ws);
}

static void piece_done(struct vsp_io *io, int res)
{
	struct vsp_piece *p = (struct vsp_piece *)io;
	struct vsp_req *r = p->req;

	if (res >= 0 && (uint64_t)res != p->length)
		res = r->op == VSP_OP_READ ? -EIO : -ENOSPC; /* short: past EOF / disk full */
	if (res < 0 && !r->error) {
		vsp_log(r->disk->engine, VSP_LOG_ERROR, "%s: %s of %llu bytes at %llu: %s",
			vhd_path(r->disk->img), r->op == VSP_OP_READ ? "read" : "write",
			(unsigned long long)r->length, (unsigned long long)r->offset, strerror(-res));
		r->error = res;
	}
	if (--r->outstanding == 0)
		req_pieces_done(r);
}

/* ---- building pieces ------------------------------------------------------- */

static struct vsp_piece *piece_new(struct vsp_req *r)
{
	struct vsp_piece *p;

	if (r->nr_pieces == r->cap_pieces) {
		unsigned cap = r->cap_pieces * 2;
		struct vsp_piece *n = malloc(cap * sizeof(*n));

		if (!n)
			return NULL;
		memcpy(n, r->pieces, r->nr_pieces * sizeof(*n));
		if (r->pieces != r->inline_pieces)
			free(r->pieces);
		r->pieces = n;
		r->cap_pieces = cap;
	}
	p = &r->pieces[r->nr_pieces++];
	memset(p, 0, sizeof(*p));
	p->req = r;
	p->io.complete = piece_done;
	return p;
}

/* Points p at bytes [pos, pos+len) of the request's buffers: one vector in
 * p->iov1 (p->iov stays NULL, so the piece array may still move), or an
 * allocated array in p->iov, freed when the request finishes. */
static int piece_slice(struct vsp_req *r, struct vsp_piece *p, uint64_t pos, uint64_t len)
{
	unsigned i = 0, first, n = 0;
	uint64_t skip = pos, left = len;

	while (i < r->iovcnt && skip >= r->iov[i].iov_len)
		skip -= r->iov[i++].iov_len;
	first = i;
	if (i < r->iovcnt && r->iov[i].iov_len - skip >= len) {
		p->iov1.iov_base = (char *)r->iov[i].iov_base + skip;
		p->iov1.iov_len = len;
		p->iovcnt = 1;
		return 0;
	}
	for (uint64_t l = left, s = skip; i < r->iovcnt && l; i++, n++) {
		uint64_t take = r->iov[i].iov_len - s < l ? r->iov[i].iov_len - s : l;

		l -= take;
		s = 0;
	}
	p->iov = malloc(n * sizeof(*p->iov));
	if (!p->iov)
		return -ENOMEM;
	p->iovcnt = n;
	for (unsigned k = 0, j = first; k < n; k++, j++) {
		uint64_t take = r->iov[j].iov_len - skip < left ? r->iov[j].iov_len - skip : left;

		p->iov[k].iov_base = (char *)r->iov[j].iov_base + skip;
		p->iov[k].iov_len = take;
		left -= take;
		skip = 0;
	}
	return 0;
}

static void zero_slice(struct vsp_req *r, uint64_t pos, uint64_t len)
{
	for (unsigned i = 0; i < r->iovcnt && len; i++) {
		uint64_t l = r->iov[i].iov_len;

		if (pos >= l) {
			pos -= l;
			continue;
		}
		l = l - pos < len ? l - pos : len;
		memset((char *)r->iov[i].iov_base + pos, 0, l);
		len -= l;
		pos = 0;
	}
}

static void piece_submit(struct vsp_worker *w, struct vsp_piece *p, int fd, uint64_t off, bool write)
{
	struct io_uring_sqe *sqe = vsp_worker_sqe(w);

	if (!p->iov) {
		if (write)
			io_uring_prep_write(sqe, fd, p->iov1.iov_base, (unsigned)p->length, off);
		else
			io_uring_prep_read(sqe, fd, p->iov1.iov_base, (unsigned)p->length, off);
	} else if (write) {
		io_uring_prep_writev(sqe, fd, p->iov, p->iovcnt, off);
	} else {
		io_uring_prep_readv(sqe, fd, p->iov, p->iovcnt, off);
	}
	io_uring_sqe_set_data(sqe, &p->io);
}

/* Maps the whole read under the lock, then submits the data pieces. */
static int read_plan(struct vsp_req *r)
{
	struct vsp_disk *d = r->disk;
	uint64_t pos = 0;
	int ret = 0;

	pthread_mutex_lock(&d->lock);
	while (pos < r->length) {
		struct vhd_extent e;
		struct vsp_piece *p;

		ret = vhd_map(d->img, r->offset + pos, r->length - pos, VHD_MAP_RESOLVE, &e);
		if (ret < 0)
			break;
		if (e.kind == VHD_EXT_ZERO) {
			zero_slice(r, pos, e.length);
		} else if (e.kind == VHD_EXT_PARENT) {
			ret = -EIO;
			break;
		} else {
			p = piece_new(r);
			if (!p) {
				ret = -ENOMEM;
				break;
			}
			p->length = e.length;
			/* The extent's fd and offset ride in the plan fields. */
			p->plan.fd = e.fd;
			p->plan.file_offset = e.file_offset;
			ret = piece_slice(r, p, pos, e.length);
			if (ret < 0) {
				r->nr_pieces--;
				break;
			}
		}
		pos += e.length;
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/* Prepares every piece of a write (allocating blocks) under the lock. */
static int write_plan(struct vsp_req *r, bool zeroes)
{
	struct vsp_disk *d = r->disk;
	uint64_t pos = 0;
	int ret = 0;

	pthread_mutex_lock(&d->lock);
	while (pos < r->length) {
		struct vsp_piece *p;
		uint64_t len = r->length - pos;

		if (zeroes) {
			struct vhd_extent e;

			/* Ranges that already read as zero stay as they are. */
			ret = vhd_map(d->img, r->offset + pos, len, VHD_MAP_RESOLVE, &e);
			if (ret < 0)
				break;
			if (e.kind == VHD_EXT_ZERO) {
				pos += e.length;
				continue;
			}
			len = e.length < VSP_ZERO_BUF ? e.length : VSP_ZERO_BUF;
		}
		p = piece_new(r);
		if (!p) {
			ret = -ENOMEM;
			break;
		}
		ret = vhd_write_prepare(d->img, r->offset + pos, len, &p->plan);
		if (ret < 0) {
			r->nr_pieces--;
			break;
		}
		p->length = p->plan.length;
		if (zeroes) {
			p->iov1.iov_base = d->engine->zeros;
			p->iov1.iov_len = p->length;
			p->iovcnt = 1;
		} else {
			ret = piece_slice(r, p, pos, p->length);
			if (ret < 0) {
				r->nr_pieces--;
				break;
			}
		}
		if (p->plan.needs_commit)
			r->needs_commit = true;
		pos += p->length;
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/* Requests not aligned to sectors (clients that ignored the advertised
 * block size): done synchronously through the library, which reads and
 * rewrites the partial sectors.  Bounced through an aligned buffer because
 * the files may be open with O_DIRECT; one at a time per disk so that two
 * such writes sharing a sector cannot lose each other's bytes. */
static int slow_rw(struct vsp_req *r)
{
	struct vsp_disk *d = r->disk;
	uint64_t start = r->offset / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
	uint64_t end = (r->offset + r->length + VHD_SECTOR_SIZE - 1) / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
	uint64_t head = r->offset - start;
	void *bounce = NULL;
	int ret;

	if (posix_memalign(&bounce, 4096, end - start))
		return -ENOMEM;
	pthread_mutex_lock(&d->slow_lock);
	pthread_mutex_lock(&d->lock);
	ret = vhd_pread(d->img, bounce, end - start, start);
	if (ret == 0 && r->op == VSP_OP_WRITE_ZEROES) {
		memset((char *)bounce + head, 0, r->length); /* no buffers to copy from */
	} else if (ret == 0) {
		uint64_t pos = 0;

		for (unsigned i = 0; i < r->iovcnt && pos < r->length; i++) {
			uint64_t l = r->iov[i].iov_len < r->length - pos ? r->iov[i].iov_len : r->length - pos;

			if (r->op == VSP_OP_READ)
				memcpy(r->iov[i].iov_base, (char *)bounce + head + pos, l);
			else
				memcpy((char *)bounce + head + pos, r->iov[i].iov_base, l);
			pos += l;
		}
	}
	if (ret == 0 && r->op != VSP_OP_READ)
		ret = vhd_pwrite(d->img, bounce, end - start, start);
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_unlock(&d->slow_lock);
	free(bounce);
	return ret;
}

void vsp_submit(struct vsp_worker *w, struct vsp_disk *d, struct vsp_req *r)
{
	bool write = r->op == VSP_OP_WRITE || r->op == VSP_OP_WRITE_ZEROES;
	int ret = 0;

	r->disk = d;
	r->worker = w;
	r->next = NULL;
	r->error = 0;
	r->needs_commit = false;
	r->pieces = r->inline_pieces;
	r->nr_pieces = 0;
	r->cap_pieces = VSP_REQ_INLINE_PIECES;
	r->outstanding = 0;

	if (write && d->read_only) {
		req_finish(r, -EROFS);
		return;
	}
	switch (r->op) {
	case VSP_OP_TRIM:
		/* Giving back blocks while they are served would need the
		 * compaction machinery; TRIM is a hint, so it is accepted. */
		req_finish(r, 0);
		return;
	case VSP_OP_FLUSH:
		if (d->read_only) {
			req_finish(r, 0);
			return;
		}
		req_pieces_done(r);
		return;
	case VSP_OP_READ:
	case VSP_OP_WRITE:
	case VSP_OP_WRITE_ZEROES:
		break;
	}
	if (r->length == 0) {
		req_pieces_done(r);
		return;
	}
	if ((r->offset | r->length) % VHD_SECTOR_SIZE) {
		ret = slow_rw(r);
		if (ret < 0)
			req_finish(r, ret);
		else if (write && (r->flags & VSP_REQ_FUA))
			req_pieces_done(r);
		else
			req_finish(r, 0);
		return;
	}
	ret = r->op == VSP_OP_READ ? read_plan(r) : write_plan(r, r->op == VSP_OP_WRITE_ZEROES);
	if (ret < 0) {
		/* Prepared allocations that never commit only leak space. */
		req_finish(r, ret);
		return;
	}
	if (r->nr_pieces == 0) { /* all zeros: nothing to read or write */
		req_pieces_done(r);
		return;
	}
	r->outstanding = r->nr_pieces;
	for (unsigned i = 0; i < r->nr_pieces; i++) {
		struct vsp_piece *p = &r->pieces[i];

		piece_submit(w, p, p->plan.fd, p->plan.file_offset, write);
	}
}
