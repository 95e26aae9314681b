/* virtq.c - split virtqueues of a vhost-user-blk device, on an engine worker.
 *
 * Guest memory and descriptors are hostile: every address and length is
 * checked against the mapped regions before use; a chain that loops, leaves
 * guest memory, nests indirect tables or puts device-readable buffers after
 * device-writable ones fails that request (returned to the guest with no
 * bytes written); a ring whose indices make no sense stops the queue.
 * Neither ever harms the daemon or other queues.
 *
 * A request's buffers are handed to the engine as iovecs into guest memory
 * (no copy), unless O_DIRECT alignment is not met, then through a bounce
 * buffer.  Completions are published in the used ring as they come; the
 * guest is notified once per batch of completions (EVENT_IDX honoured).
 */
#include <errno.h>
#include <linux/virtio_blk.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vhost_user.h"

struct vu_req {
	struct vsp_req vreq;       /* first: the engine hands it back */
	struct vu_vq *vq;
	uint16_t head;
	uint32_t type;
	uint8_t *status;
	uint32_t written;          /* bytes written into guest buffers */
	struct iovec *data;        /* guest data buffers */
	unsigned nr_data;
	void *bounce;              /* when the guest buffers are not aligned */
	uint64_t bounce_len;
	struct iovec bounce_iov;
	unsigned niov_r, niov_w;
	struct iovec iov[];        /* readable, then writable */
};

static inline uint16_t load_acquire16(const uint16_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* [addr, addr+len) inside one region, by guest physical or front-end
 * virtual address. */
static void *to_host(const struct vu_dev *d, uint64_t addr, uint64_t len, bool by_uva)
{
	for (unsigned i = 0; i < d->nr_regions; i++) {
		const struct vu_region *r = &d->regions[i];
		uint64_t start = by_uva ? r->uva : r->gpa;

		if (addr >= start && addr - start < r->size && len <= r->size - (addr - start))
			return r->host + (addr - start);
	}
	return NULL;
}

void *vu_gpa_to_host(const struct vu_dev *d, uint64_t gpa, uint64_t len)
{
	return to_host(d, gpa, len, false);
}

void *vu_uva_to_host(const struct vu_dev *d, uint64_t uva, uint64_t len)
{
	return to_host(d, uva, len, true);
}

/* Appends [gpa, gpa+len) as host iovecs (a buffer may span regions that are
 * adjacent in guest memory). */
static int map_buffer(const struct vu_dev *d, uint64_t gpa, uint32_t len, struct iovec *iov,
		      unsigned *n, unsigned max)
{
	while (len) {
		const struct vu_region *r = NULL;
		uint64_t take;

		for (unsigned i = 0; i < d->nr_regions; i++)
			if (gpa >= d->regions[i].gpa && gpa - d->regions[i].gpa < d->regions[i].size) {
				r = &d->regions[i];
				break;
			}
		if (!r || *n >= max)
			return -EFAULT;
		take = r->size - (gpa - r->gpa);
		if (take > len)
			take = len;
		iov[*n].iov_base = r->host + (gpa - r->gpa);
		iov[*n].iov_len = take;
		(*n)++;
		gpa += take;
		len -= (uint32_t)take;
	}
	return 0;
}

/* Walks the chain at head into iov (readable first, then writable). */
static int walk_chain(struct vu_vq *vq, uint16_t head, struct iovec *iov, unsigned *nr,
		      unsigned *nw)
{
	const struct vring_desc *table = vq->desc;
	unsigned max = vq->num, idx = head, seen = 0, n = 0;
	bool indirect = false, writable = false;

	*nr = *nw = 0;
	for (;;) {
		struct vring_desc dsc;

		if (idx >= max || ++seen > max)
			return -ELOOP;
		/* copied out: an indirect table may sit at any guest address */
		memcpy(&dsc, (const uint8_t *)table + (size_t)idx * sizeof(dsc), sizeof(dsc));
		if (dsc.flags & VRING_DESC_F_INDIRECT) {
			if (indirect || (dsc.flags & VRING_DESC_F_NEXT) || dsc.len == 0 ||
			    dsc.len % sizeof(struct vring_desc) ||
			    dsc.len / sizeof(struct vring_desc) > VU_MAX_QUEUE_SIZE)
				return -EINVAL;
			table = vu_gpa_to_host(vq->dev, dsc.addr, dsc.len);
			if (!table)
				return -EFAULT;
			max = dsc.len / sizeof(struct vring_desc);
			idx = 0;
			seen = 0;
			indirect = true;
			continue;
		}
		if (dsc.flags & VRING_DESC_F_WRITE)
			writable = true;
		else if (writable)
			return -EINVAL; /* readable after writable */
		if (dsc.len) {
			unsigned before = n;
			int ret = map_buffer(vq->dev, dsc.addr, dsc.len, iov, &n, VU_MAX_IOV);

			if (ret < 0)
				return ret;
			if (writable)
				*nw += n - before;
			else
				*nr += n - before;
		}
		if (!(dsc.flags & VRING_DESC_F_NEXT))
			return 0;
		idx = dsc.next;
	}
}

/* Copies up to len bytes from the start of iov, skipping skip bytes. */
static size_t iov_read(const struct iovec *iov, unsigned n, size_t skip, void *out, size_t len)
{
	size_t done = 0;

	for (unsigned i = 0; i < n && done < len; i++) {
		size_t l = iov[i].iov_len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		l -= skip;
		if (l > len - done)
			l = len - done;
		memcpy((char *)out + done, (char *)iov[i].iov_base + skip, l);
		done += l;
		skip = 0;
	}
	return done;
}

static size_t iov_write(const struct iovec *iov, unsigned n, const void *in, size_t len)
{
	size_t done = 0;

	for (unsigned i = 0; i < n && done < len; i++) {
		size_t l = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;

		memcpy(iov[i].iov_base, (const char *)in + done, l);
		done += l;
	}
	return done;
}

static uint64_t iov_total(const struct iovec *iov, unsigned n)
{
	uint64_t t = 0;

	for (unsigned i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

/* ---- used ring and notifications ---------------------------------------------- */

static void notify_guest(struct vsp_deferred *df)
{
	struct vu_vq *vq = (struct vu_vq *)((char *)df - offsetof(struct vu_vq, notify));
	bool signal;

	if (!vq->need_notify || !vq->used)
		return;
	vq->need_notify = false;
	/* The used index must be visible before we read what the guest wants. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (vq->dev->features & (1ull << VIRTIO_RING_F_EVENT_IDX)) {
		uint16_t used_event = load_acquire16(&vq->avail->ring[vq->num]);
		uint16_t old = vq->signalled_used;

		signal = !vq->signalled_valid || vring_need_event(used_event, vq->used_idx, old);
		vq->signalled_used = vq->used_idx;
		vq->signalled_valid = true;
	} else {
		signal = !(load_acquire16(&vq->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
	}
	if (signal && vq->call_fd >= 0) {
		uint64_t one = 1;

		if (write(vq->call_fd, &one, sizeof(one)) < 0) {
			/* the front end closed it: nothing to wake */
		}
	}
}

static void push_used(struct vu_vq *vq, uint16_t head, uint32_t written)
{
	struct vring_used_elem *e = &vq->used->ring[vq->used_idx % vq->num];

	/* Inflight order: name the head, publish, then clear it; a successor
	 * that finds used_idx behind the ring clears last_batch_head itself. */
	if (vq->ifl)
		vq->ifl->last_batch_head = head;
	e->id = head;
	e->len = written;
	vq->used_idx++;
	__atomic_store_n(&vq->used->idx, vq->used_idx, __ATOMIC_RELEASE);
	if (vq->ifl) {
		__atomic_store_n(&vq->ifl->desc[head].inflight, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&vq->ifl->used_idx, vq->used_idx, __ATOMIC_RELEASE);
	}
	vq->need_notify = true;
	vsp_worker_defer(vq->w, &vq->notify);
}

static void vq_maybe_stopped(struct vu_vq *vq);

static void req_complete(struct vu_req *r, uint8_t status)
{
	struct vu_vq *vq = r->vq;

	if (r->status)
		*r->status = status;
	push_used(vq, r->head, r->written);
	vq->inflight--;
	free(r->bounce);
	free(r);
	vq_maybe_stopped(vq);
}

static void engine_done(struct vsp_req *vr, int result)
{
	struct vu_req *r = (struct vu_req *)vr;

	if (result == 0 && r->bounce && r->type == VIRTIO_BLK_T_IN)
		iov_write(r->data, r->nr_data, r->bounce, r->bounce_len);
	if (result < 0)
		r->written = r->type == VIRTIO_BLK_T_IN ? 1 : r->written;
	req_complete(r, result == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR);
}

/* ---- requests ---------------------------------------------------------------------- */

static bool aligned_for_direct(const struct iovec *iov, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) % VHD_SECTOR_SIZE)
			return false;
	return true;
}

static void handle_request(struct vu_vq *vq, uint16_t head)
{
	struct vu_dev *d = vq->dev;
	struct vu_req *r = calloc(1, sizeof(*r) + VU_MAX_IOV * sizeof(struct iovec));
	struct virtio_blk_outhdr hdr;
	struct iovec *wr;
	uint64_t rtotal, wtotal, capacity = vsp_disk_size(d->disk), len;
	struct vsp_req *v;

	if (!r) {
		vsp_log(d->engine, VSP_LOG_ERROR, "%s: out of memory for a request", d->name);
		push_used(vq, head, 0);
		return;
	}
	r->vq = vq;
	r->head = head;
	vq->inflight++;
	if (walk_chain(vq, head, r->iov, &r->niov_r, &r->niov_w) < 0) {
		vsp_log(d->engine, VSP_LOG_WARN, "%s: queue %u: bad descriptor chain at head %u",
			d->name, vq->index, head);
		req_complete(r, 0); /* r->status is NULL: nothing written */
		return;
	}
	wr = r->iov + r->niov_r;
	rtotal = iov_total(r->iov, r->niov_r);
	wtotal = iov_total(wr, r->niov_w);
	if (rtotal < sizeof(hdr) || wtotal < 1) {
		vsp_log(d->engine, VSP_LOG_WARN, "%s: queue %u: request without header or status",
			d->name, vq->index);
		req_complete(r, 0);
		return;
	}
	iov_read(r->iov, r->niov_r, 0, &hdr, sizeof(hdr));
	r->type = hdr.type;
	/* The status byte is the last writable byte. */
	{
		struct iovec *last = &wr[r->niov_w - 1];

		while (last->iov_len == 0)
			last--; /* cannot pass wr[0]: wtotal >= 1 */
		r->status = (uint8_t *)last->iov_base + last->iov_len - 1;
		last->iov_len--;
	}
	r->written = 1;
	v = &r->vreq;
	v->done = engine_done;
	v->flags = 0;
	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT: {
		bool in = hdr.type == VIRTIO_BLK_T_IN;

		len = in ? wtotal - 1 : rtotal - sizeof(hdr);
		if (len % VHD_SECTOR_SIZE || len > VSP_MAX_REQUEST ||
		    hdr.sector > capacity / VHD_SECTOR_SIZE ||
		    len > capacity - hdr.sector * VHD_SECTOR_SIZE) {
			req_complete(r, VIRTIO_BLK_S_IOERR);
			return;
		}
		if (in) {
			r->data = wr;
			r->nr_data = r->niov_w;
			/* a status byte in its own buffer leaves an empty one behind */
			while (r->nr_data && r->data[r->nr_data - 1].iov_len == 0)
				r->nr_data--;
		} else {
			/* skip the header: the data may start inside the first buffer */
			size_t skip = sizeof(hdr);
			unsigned i = 0;

			while (i < r->niov_r && skip >= r->iov[i].iov_len)
				skip -= r->iov[i++].iov_len;
			if (i < r->niov_r) {
				r->iov[i].iov_base = (char *)r->iov[i].iov_base + skip;
				r->iov[i].iov_len -= skip;
			}
			r->data = r->iov + i;
			r->nr_data = r->niov_r - i;
		}
		if (in)
			r->written = (uint32_t)(len + 1);
		if (len == 0) {
			req_complete(r, VIRTIO_BLK_S_OK);
			return;
		}
		v->op = in ? VSP_OP_READ : VSP_OP_WRITE;
		v->offset = hdr.sector * VHD_SECTOR_SIZE;
		v->length = len;
		if (aligned_for_direct(r->data, r->nr_data)) {
			v->iov = r->data;
			v->iovcnt = r->nr_data;
		} else {
			if (posix_memalign(&r->bounce, 4096, len)) {
				r->bounce = NULL;
				req_complete(r, VIRTIO_BLK_S_IOERR);
				return;
			}
			r->bounce_len = len;
			if (!in)
				iov_read(r->data, r->nr_data, 0, r->bounce, len);
			r->bounce_iov = (struct iovec){r->bounce, len};
			v->iov = &r->bounce_iov;
			v->iovcnt = 1;
		}
		break;
	}
	case VIRTIO_BLK_T_FLUSH:
		v->op = VSP_OP_FLUSH;
		break;
	case VIRTIO_BLK_T_GET_ID:
		r->written = 1 + (uint32_t)iov_write(wr, r->niov_w, d->serial,
						     strlen(d->serial) < 20 ? strlen(d->serial) + 1 : 20);
		req_complete(r, VIRTIO_BLK_S_OK);
		return;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		struct virtio_blk_discard_write_zeroes seg;

		/* max_discard_seg and max_write_zeroes_seg are 1 */
		if (rtotal - sizeof(hdr) != sizeof(seg)) {
			req_complete(r, VIRTIO_BLK_S_UNSUPP);
			return;
		}
		iov_read(r->iov, r->niov_r, sizeof(hdr), &seg, sizeof(seg));
		if (seg.sector > capacity / VHD_SECTOR_SIZE ||
		    (uint64_t)seg.num_sectors * VHD_SECTOR_SIZE > capacity - seg.sector * VHD_SECTOR_SIZE) {
			req_complete(r, VIRTIO_BLK_S_IOERR);
			return;
		}
		v->op = hdr.type == VIRTIO_BLK_T_DISCARD ? VSP_OP_TRIM : VSP_OP_WRITE_ZEROES;
		v->offset = seg.sector * VHD_SECTOR_SIZE;
		v->length = (uint64_t)seg.num_sectors * VHD_SECTOR_SIZE;
		break;
	}
	default:
		req_complete(r, VIRTIO_BLK_S_UNSUPP);
		return;
	}
	vsp_submit(vq->w, d->disk, v);
}

/* ---- the ring ---------------------------------------------------------------------- */

static void kick_arm(struct vu_vq *vq);

static void process_ring(struct vu_vq *vq)
{
	bool event_idx = vq->dev->features & (1ull << VIRTIO_RING_F_EVENT_IDX);
	unsigned taken = 0;

	while (vq->running && !vq->stopping && !vq->broken) {
		uint16_t avail = load_acquire16(&vq->avail->idx);

		if ((uint16_t)(avail - vq->last_avail) > vq->num) {
			vsp_log(vq->dev->engine, VSP_LOG_ERROR,
				"%s: queue %u: the guest's available index %u is %u entries ahead of "
				"%u (queue size %u): queue stopped",
				vq->dev->name, vq->index, avail, (uint16_t)(avail - vq->last_avail),
				vq->last_avail, vq->num);
			vq->broken = true;
			return;
		}
		while (vq->last_avail != avail && !vq->broken) {
			if (taken++ == vq->num) {
				/* Fair to the other queues of this worker: come back
				 * through the ring after what is queued now. */
				uint64_t one = 1;

				if (write(vq->kick_fd, &one, sizeof(one)) < 0)
					vsp_log(vq->dev->engine, VSP_LOG_WARN,
						"%s: queue %u: cannot re-kick: %s", vq->dev->name,
						vq->index, strerror(errno));
				return;
			}
			uint16_t head = load_acquire16(&vq->avail->ring[vq->last_avail % vq->num]);

			if (head >= vq->num) {
				vsp_log(vq->dev->engine, VSP_LOG_ERROR,
					"%s: queue %u: head index %u beyond the queue size %u: queue stopped",
					vq->dev->name, vq->index, head, vq->num);
				vq->broken = true;
				return;
			}
			if (vq->ifl) { /* marked before anything is done with it */
				vq->ifl->desc[head].counter = ++vq->counter;
				__atomic_store_n(&vq->ifl->desc[head].inflight, 1, __ATOMIC_RELEASE);
			}
			vq->last_avail++;
			handle_request(vq, head);
		}
		if (!event_idx)
			return;
		/* Ask for a kick past what we took, then look again: the guest may
		 * have added requests before it saw the new event index. */
		__atomic_store_n((uint16_t *)&vq->used->ring[vq->num], vq->last_avail, __ATOMIC_RELEASE);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (load_acquire16(&vq->avail->idx) == vq->last_avail)
			return;
	}
}

static void kick_done(struct vsp_io *io, int res)
{
	struct vu_vq *vq = (struct vu_vq *)((char *)io - offsetof(struct vu_vq, kick_io));

	vq->kick_armed = false;
	if (res < 0 && res != -ECANCELED && res != -EAGAIN && res != -EINTR)
		vsp_log(vq->dev->engine, VSP_LOG_ERROR, "%s: queue %u: kick: %s", vq->dev->name,
			vq->index, strerror(-res));
	if (res == -ECANCELED || vq->stopping) {
		vq_maybe_stopped(vq);
		return;
	}
	if (res >= 0 && res != (int)sizeof(vq->kick_value)) {
		/* not an eventfd (a file at its end reads 0 bytes at once) */
		vsp_log(vq->dev->engine, VSP_LOG_ERROR,
			"%s: queue %u: the kick descriptor is not an eventfd: queue stopped",
			vq->dev->name, vq->index);
		vq->broken = true;
		return;
	}
	process_ring(vq);
	kick_arm(vq);
}

static void kick_arm(struct vu_vq *vq)
{
	struct io_uring_sqe *sqe;

	if (vq->kick_armed || vq->stopping || vq->broken || vq->kick_fd < 0)
		return;
	sqe = vsp_worker_sqe(vq->w);
	io_uring_prep_read(sqe, vq->kick_fd, &vq->kick_value, sizeof(vq->kick_value), 0);
	io_uring_sqe_set_data(sqe, &vq->kick_io);
	vq->kick_armed = true;
}

void vu_vq_reset_config(struct vu_vq *vq)
{
	/* The worker's own fields (notify may still be queued on it, kick_io)
	 * are left alone: the queue is stopped, they are idle. */
	vq->num = 0;
	vq->desc_uva = vq->avail_uva = vq->used_uva = 0;
	vq->base = 0;
	vq->addr_set = vq->enabled = false;
	vq->kick_fd = vq->call_fd = -1;
	vq->ctl_started = false;
	vq->ifl = NULL;
}

void vu_vq_init(struct vu_vq *vq, struct vu_dev *d, unsigned index, struct vsp_worker *w)
{
	memset(vq, 0, sizeof(*vq));
	vq->dev = d;
	vq->index = index;
	vq->w = w;
	vq->kick_fd = vq->call_fd = -1;
	vq->kick_io.complete = kick_done;
	vq->notify.fn = notify_guest;
}

static int by_counter(const void *a, const void *b, void *arg)
{
	const struct vu_inflight_region *r = arg;
	uint64_t x = r->desc[*(const uint16_t *)a].counter, y = r->desc[*(const uint16_t *)b].counter;

	return x < y ? -1 : x > y;
}

/* Picks up where a predecessor (killed, or stopped cleanly) left the queue:
 * every head it took and never answered is submitted again, oldest first,
 * and taking resumes after them. */
static void resume_inflight(struct vu_vq *vq)
{
	struct vu_inflight_region *r = vq->ifl;
	uint16_t heads[VU_MAX_QUEUE_SIZE];
	unsigned n = 0;

	if (r->version != 1 || r->desc_num != vq->num) {
		/* fresh (all zero), or from a queue of another size: start over */
		memset(r, 0, sizeof(*r) + vq->num * sizeof(r->desc[0]));
		r->version = 1;
		r->desc_num = (uint16_t)vq->num;
		r->features = vq->dev->features;
		r->used_idx = vq->used_idx;
		vq->counter = 0;
		return;
	}
	if (r->used_idx != vq->used_idx) {
		/* killed between publishing a completion and clearing its head */
		r->desc[r->last_batch_head].inflight = 0;
		r->used_idx = vq->used_idx;
	}
	vq->counter = 0;
	for (unsigned i = 0; i < vq->num; i++) {
		if (r->desc[i].counter > vq->counter)
			vq->counter = r->desc[i].counter;
		if (r->desc[i].inflight)
			heads[n++] = (uint16_t)i;
	}
	qsort_r(heads, n, sizeof(heads[0]), by_counter, r);
	vq->last_avail = (uint16_t)(vq->used_idx + n);
	if (n)
		vsp_log(vq->dev->engine, VSP_LOG_INFO,
			"%s: queue %u: resubmitting %u request%s a previous server took and never "
			"answered",
			vq->dev->name, vq->index, n, n == 1 ? "" : "s");
	for (unsigned i = 0; i < n; i++)
		handle_request(vq, heads[i]);
}

void vu_vq_start(void *arg)
{
	struct vu_vq *vq = arg;
	struct vu_dev *d = vq->dev;
	size_t n = vq->num;

	if (vq->running)
		return;
	if (vq->desc_uva % 16 || vq->avail_uva % 2 || vq->used_uva % 4) {
		vsp_log(d->engine, VSP_LOG_ERROR,
			"%s: queue %u: misaligned ring addresses (descriptors %#llx, available %#llx, "
			"used %#llx): not started",
			d->name, vq->index, (unsigned long long)vq->desc_uva,
			(unsigned long long)vq->avail_uva, (unsigned long long)vq->used_uva);
		return;
	}
	vq->desc = vu_uva_to_host(d, vq->desc_uva, n * sizeof(struct vring_desc));
	vq->avail = vu_uva_to_host(d, vq->avail_uva, sizeof(struct vring_avail) + (n + 1) * 2);
	vq->used = vu_uva_to_host(d, vq->used_uva,
				  sizeof(struct vring_used) + n * sizeof(struct vring_used_elem) + 2);
	if (!vq->desc || !vq->avail || !vq->used) {
		vsp_log(d->engine, VSP_LOG_ERROR,
			"%s: queue %u: ring addresses outside the guest memory: not started", d->name,
			vq->index);
		vq->desc = NULL;
		vq->avail = NULL;
		vq->used = NULL;
		return;
	}
	vq->last_avail = vq->base;
	vq->used_idx = load_acquire16(&vq->used->idx);
	vq->signalled_valid = false;
	vq->broken = false;
	vq->stopping = false;
	vq->running = true;
	if (vq->ifl && sizeof(*vq->ifl) + vq->num * sizeof(vq->ifl->desc[0]) > d->inflight_queue_size) {
		vsp_log(d->engine, VSP_LOG_WARN,
			"%s: queue %u: size %u does not fit the inflight region: not tracked", d->name,
			vq->index, vq->num);
		vq->ifl = NULL;
	}
	if (vq->ifl) {
		resume_inflight(vq);
	} else if (vq->used_idx != vq->last_avail) {
		/* Without inflight tracking, requests a previous back end took and
		 * never answered are lost with it; resume after what the used ring
		 * says was answered. */
		vq->last_avail = vq->used_idx;
	}
	vsp_log(d->engine, VSP_LOG_DEBUG, "%s: queue %u started (size %u, worker %u)", d->name,
		vq->index, vq->num, vq->w->id);
	process_ring(vq);
	kick_arm(vq);
}

static void wake_waiter(struct vu_vq *vq)
{
	struct vu_wait *wt = vq->stop_wait;

	vq->stop_wait = NULL;
	if (!wt)
		return;
	pthread_mutex_lock(&wt->lock);
	wt->done = true;
	pthread_cond_broadcast(&wt->cond);
	pthread_mutex_unlock(&wt->lock);
}

static void vq_maybe_stopped(struct vu_vq *vq)
{
	if (!vq->stopping || vq->inflight || vq->kick_armed)
		return;
	notify_guest(&vq->notify); /* answers still owed a notification */
	vq->running = false;
	vq->stopping = false;
	vq->base = vq->last_avail;
	wake_waiter(vq);
}

/* Stops taking requests, cancels the kick wait, and once every request in
 * flight is answered, records the ring position and wakes the waiter. */
void vu_vq_stop(void *arg)
{
	struct vu_vq *vq = arg;

	if (!vq->running) {
		wake_waiter(vq);
		return;
	}
	vq->stopping = true;
	if (vq->kick_armed)
		vsp_worker_cancel(vq->w, &vq->kick_io);
	vq_maybe_stopped(vq);
}
