/* vhost_user.c - the vhost-user-blk front door: one device per Unix socket,
 * one front end (QEMU) at a time, the control plane on its own thread.
 *
 * The front end maps the guest's RAM into our address space (SET_MEM_TABLE
 * with memfds), points us at the rings (SET_VRING_*), and kicks eventfds;
 * the queues then run on the engine's workers (virtq.c).  When the front end
 * goes away (QEMU exits or is killed), every queue is stopped after the
 * requests in flight are answered into memory we still have mapped, the
 * memory is unmapped, and the socket waits for the next connection: the
 * daemon and the image are unharmed, and a restarted QEMU reconnects.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vhost_user.h"

struct vu_msg {
	struct vu_hdr hdr;
	union {
		uint64_t u64;
		struct {
			uint32_t index, num;
		} state;
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} addr;
		struct {
			uint32_t nregions, padding;
			struct {
				uint64_t gpa, size, uva, mmap_offset;
			} r[VU_MAX_REGIONS];
		} mem;
		struct {
			uint32_t offset, size, flags;
			uint8_t payload[VU_MAX_PAYLOAD - 12];
		} config;
		struct {
			uint64_t mmap_size, mmap_offset;
			uint16_t num_queues, queue_size;
		} inflight;
		uint8_t raw[VU_MAX_PAYLOAD];
	} u;
	int fds[VU_MAX_FDS];
	unsigned nfds;
};

static uint64_t offered_features(const struct vu_dev *d)
{
	uint64_t f = (1ull << VIRTIO_F_VERSION_1_BIT) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
		     (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VU_F_PROTOCOL_FEATURES) |
		     (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_SIZE_MAX) |
		     (1ull << VIRTIO_BLK_F_BLK_SIZE) |
		     (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_TOPOLOGY) |
		     (1ull << VIRTIO_BLK_F_MQ) | (1ull << VIRTIO_BLK_F_DISCARD) |
		     (1ull << VIRTIO_BLK_F_WRITE_ZEROES);

	if (vsp_disk_read_only(d->disk))
		f |= 1ull << VIRTIO_BLK_F_RO;
	return f;
}

#define OFFERED_PROTOCOL_FEATURES                                                         \
	((1ull << VU_PROTOCOL_F_MQ) | (1ull << VU_PROTOCOL_F_REPLY_ACK) |                  \
	 (1ull << VU_PROTOCOL_F_CONFIG) | (1ull << VU_PROTOCOL_F_INFLIGHT_SHMFD))

static void build_config(struct vu_dev *d)
{
	struct virtio_blk_config c;
	uint8_t uuid[16];

	memset(&c, 0, sizeof(c));
	c.capacity = vsp_disk_size(d->disk) / VHD_SECTOR_SIZE;
	c.seg_max = 126;              /* fits the smallest queue QEMU uses (128) */
	c.size_max = 256u << 10;      /* 126 x 256 KiB stays under VSP_MAX_REQUEST */
	c.blk_size = VHD_SECTOR_SIZE;
	c.physical_block_exp = 3;     /* 4 KiB: block data is 4 KiB aligned in our VHDs */
	c.min_io_size = 8;
	c.opt_io_size = 4096;         /* 2 MiB: one VHD block, in sectors */
	c.num_queues = (uint16_t)d->num_queues;
	c.max_discard_sectors = VSP_MAX_REQUEST / VHD_SECTOR_SIZE;
	c.max_discard_seg = 1;
	c.discard_sector_alignment = 8;
	c.max_write_zeroes_sectors = VSP_MAX_REQUEST / VHD_SECTOR_SIZE;
	c.max_write_zeroes_seg = 1;
	d->config_len = sizeof(c) < sizeof(d->config) ? sizeof(c) : sizeof(d->config);
	memcpy(d->config, &c, d->config_len);
	vsp_disk_uuid(d->disk, uuid);
	for (int i = 0; i < 10; i++)
		snprintf(d->serial + 2 * i, 3, "%02x", uuid[i]);
}

/* ---- messages ---------------------------------------------------------------------- */

static void close_fds(struct vu_msg *m)
{
	for (unsigned i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	m->nfds = 0;
}

static int recv_msg(int fd, struct vu_msg *m)
{
	char control[CMSG_SPACE(VU_MAX_FDS * sizeof(int))];
	struct iovec iov = {&m->hdr, sizeof(m->hdr)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			    .msg_controllen = sizeof(control)};
	ssize_t n;

	m->nfds = 0;
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
	if (n <= 0)
		return n < 0 ? -errno : -ECONNRESET;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			unsigned k = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (unsigned i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (m->nfds < VU_MAX_FDS)
					m->fds[m->nfds++] = f;
				else
					close(f);
			}
		}
	if ((size_t)n != sizeof(m->hdr) || (mh.msg_flags & MSG_CTRUNC)) {
		close_fds(m);
		return -EPROTO;
	}
	if (m->hdr.size > VU_MAX_PAYLOAD) {
		close_fds(m);
		return -EMSGSIZE;
	}
	if (m->hdr.size) {
		n = recv(fd, m->u.raw, m->hdr.size, MSG_WAITALL);
		if (n != (ssize_t)m->hdr.size) {
			close_fds(m);
			return n < 0 ? -errno : -ECONNRESET;
		}
	}
	return 0;
}

/* A reply, with one descriptor attached when send_fd >= 0. */
static int send_reply_fd(int fd, struct vu_msg *m, uint32_t size, int send_fd)
{
	struct iovec iov[2] = {{&m->hdr, sizeof(m->hdr)}, {m->u.raw, size}};
	char control[CMSG_SPACE(sizeof(int))];
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	ssize_t n;

	m->hdr.flags = VU_VERSION | VU_FLAG_REPLY;
	m->hdr.size = size;
	if (send_fd >= 0) {
		struct cmsghdr *c;

		memset(control, 0, sizeof(control));
		mh.msg_control = control;
		mh.msg_controllen = sizeof(control);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &send_fd, sizeof(int));
	}
	n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	return n == (ssize_t)(sizeof(m->hdr) + size) ? 0 : -EPIPE;
}

static int send_reply(int fd, struct vu_msg *m, uint32_t size)
{
	return send_reply_fd(fd, m, size, -1);
}

/* ---- queues from the control thread ------------------------------------------------ */

static void wait_init(struct vu_wait *w)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->done = false;
}

/* Stops vq on its worker and waits until every request in flight is answered. */
static void queue_stop(struct vu_dev *d, struct vu_vq *vq, bool *was_started)
{
	struct vu_wait w;

	*was_started = false;
	if (!vq->ctl_started)
		return;
	wait_init(&w);
	vq->stop_wait = &w;
	if (vsp_worker_call(vq->w, vu_vq_stop, vq) == 0) {
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.lock);
		pthread_mutex_unlock(&w.lock);
	} else {
		vsp_log(d->engine, VSP_LOG_ERROR, "%s: cannot stop queue %u", d->name, vq->index);
	}
	pthread_mutex_destroy(&w.lock);
	pthread_cond_destroy(&w.cond);
	vq->ctl_started = false;
	*was_started = true;
}

static void queue_maybe_start(struct vu_dev *d, struct vu_vq *vq)
{
	bool enabled = vq->enabled || !(d->features & (1ull << VU_F_PROTOCOL_FEATURES));

	if (vq->ctl_started || vq->kick_fd < 0 || !vq->addr_set || !vq->num || !enabled ||
	    !d->nr_regions)
		return;
	if (vsp_worker_call(vq->w, vu_vq_start, vq) == 0)
		vq->ctl_started = true;
}

static void unmap_memory(struct vu_dev *d)
{
	for (unsigned i = 0; i < d->nr_regions; i++)
		munmap(d->regions[i].map, d->regions[i].map_len);
	d->nr_regions = 0;
}

/* Front end gone, or reset: every queue stopped and forgotten. */
static void reset_device(struct vu_dev *d)
{
	for (unsigned i = 0; i < d->num_queues; i++) {
		struct vu_vq *vq = &d->vqs[i];
		bool was;

		queue_stop(d, vq, &was);
		if (vq->kick_fd >= 0)
			close(vq->kick_fd);
		if (vq->call_fd >= 0)
			close(vq->call_fd);
		vu_vq_reset_config(vq);
	}
	unmap_memory(d);
	if (d->inflight_map)
		munmap(d->inflight_map, d->inflight_len);
	d->inflight_map = NULL;
	d->features = 0;
	d->protocol_features = 0;
}

/* Bytes of one queue's inflight region for a queue of size num. */
static size_t inflight_queue_bytes(unsigned num)
{
	size_t n = sizeof(struct vu_inflight_region) + num * sizeof(struct vu_inflight_desc);

	return (n + 63) / 64 * 64;
}

/* GET_INFLIGHT_FD: a fresh, zeroed memfd for every queue; the front end
 * keeps it and hands it back (SET_INFLIGHT_FD), also to our successor. */
static int get_inflight_fd(struct vu_dev *d, struct vu_msg *m, int *out_fd)
{
	unsigned nq = m->u.inflight.num_queues, qs = m->u.inflight.queue_size;
	size_t size;
	int fd;

	if (m->hdr.size < sizeof(m->u.inflight) || nq == 0 || nq > VU_MAX_QUEUES || qs == 0 ||
	    qs > VU_MAX_QUEUE_SIZE)
		return -EINVAL;
	size = inflight_queue_bytes(qs) * nq;
	fd = memfd_create("vhd-vspd-inflight", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	m->u.inflight.mmap_size = size;
	m->u.inflight.mmap_offset = 0;
	*out_fd = fd;
	(void)d;
	return (int)sizeof(m->u.inflight);
}

/* SET_INFLIGHT_FD: map the regions; queues started later use them. */
static int set_inflight_fd(struct vu_dev *d, struct vu_msg *m)
{
	unsigned nq = m->u.inflight.num_queues, qs = m->u.inflight.queue_size;
	uint64_t size = m->u.inflight.mmap_size, off = m->u.inflight.mmap_offset;
	bool was[VU_MAX_QUEUES];
	void *p;

	if (m->hdr.size < sizeof(m->u.inflight) || m->nfds != 1 || nq == 0 ||
	    nq > VU_MAX_QUEUES || qs == 0 || qs > VU_MAX_QUEUE_SIZE ||
	    size < inflight_queue_bytes(qs) * nq || off > UINT64_MAX - size || size > (1u << 30))
		return -EINVAL;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fds[0], (off_t)off);
	if (p == MAP_FAILED)
		return -errno;
	for (unsigned i = 0; i < d->num_queues; i++)
		queue_stop(d, &d->vqs[i], &was[i]);
	if (d->inflight_map)
		munmap(d->inflight_map, d->inflight_len);
	d->inflight_map = p;
	d->inflight_len = size;
	d->inflight_queue_size = inflight_queue_bytes(qs);
	for (unsigned i = 0; i < d->num_queues; i++) {
		d->vqs[i].ifl = i < nq ? (struct vu_inflight_region *)((uint8_t *)p +
									    i * d->inflight_queue_size)
					    : NULL;
		if (was[i])
			queue_maybe_start(d, &d->vqs[i]);
	}
	return 0;
}

static struct vu_vq *msg_queue(struct vu_dev *d, uint32_t index)
{
	return index < d->num_queues ? &d->vqs[index] : NULL;
}

static int set_mem_table(struct vu_dev *d, struct vu_msg *m)
{
	bool was[VU_MAX_QUEUES];
	uint32_t n = m->u.mem.nregions;
	int ret = 0;

	if (n == 0 || n > VU_MAX_REGIONS || n != m->nfds ||
	    m->hdr.size < 8 + n * sizeof(m->u.mem.r[0])) {
		vsp_log(d->engine, VSP_LOG_ERROR, "%s: memory table with %u regions and %u fds",
			d->name, n, m->nfds);
		return -EINVAL;
	}
	/* Refused before anything changes: the current table stays in use. */
	for (uint32_t i = 0; i < n; i++) {
		uint64_t size = m->u.mem.r[i].size, off = m->u.mem.r[i].mmap_offset;
		struct stat st;

		if (size == 0 || off > UINT64_MAX - size) {
			vsp_log(d->engine, VSP_LOG_ERROR, "%s: guest memory region %u: size %llu "
				"at offset %llu", d->name, i, (unsigned long long)size,
				(unsigned long long)off);
			return -EINVAL;
		}
		/* Beyond the file's end an access would be SIGBUS, not an error. */
		if (fstat(m->fds[i], &st) < 0 || (uint64_t)st.st_size < off + size) {
			vsp_log(d->engine, VSP_LOG_ERROR,
				"%s: guest memory region %u (%llu bytes at offset %llu) is larger than "
				"its file",
				d->name, i, (unsigned long long)size, (unsigned long long)off);
			return -EINVAL;
		}
	}
	/* The rings move with the memory: stop, remap, restart. */
	for (unsigned i = 0; i < d->num_queues; i++)
		queue_stop(d, &d->vqs[i], &was[i]);
	unmap_memory(d);
	for (uint32_t i = 0; i < n; i++) {
		struct vu_region *r = &d->regions[i];
		uint64_t size = m->u.mem.r[i].size, off = m->u.mem.r[i].mmap_offset;
		void *p;

		p = mmap(NULL, size + off, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
			 m->fds[i], 0);
		if (p == MAP_FAILED) {
			ret = -errno;
			vsp_log(d->engine, VSP_LOG_ERROR, "%s: cannot map guest memory region %u: %s",
				d->name, i, strerror(-ret));
			break;
		}
		r->gpa = m->u.mem.r[i].gpa;
		r->size = size;
		r->uva = m->u.mem.r[i].uva;
		r->mmap_offset = off;
		r->map = p;
		r->map_len = size + off;
		r->host = (uint8_t *)p + off;
		d->nr_regions = i + 1;
	}
	if (ret < 0)
		unmap_memory(d);
	for (unsigned i = 0; i < d->num_queues; i++)
		if (was[i])
			queue_maybe_start(d, &d->vqs[i]);
	return ret;
}

/* Handles one message.  Returns the payload size of a reply to send (>= 0),
 * -1 for no reply of its own, or a negative errno < -1 on failure. */
static int handle(struct vu_dev *d, struct vu_msg *m)
{
	struct vu_vq *vq;
	bool was;

	switch (m->hdr.request) {
	case VU_GET_FEATURES:
		m->u.u64 = offered_features(d);
		return 8;
	case VU_SET_FEATURES:
		if (m->hdr.size < 8 || (m->u.u64 & ~offered_features(d)))
			return -EINVAL;
		d->features = m->u.u64;
		return -1;
	case VU_GET_PROTOCOL_FEATURES:
		m->u.u64 = OFFERED_PROTOCOL_FEATURES;
		return 8;
	case VU_SET_PROTOCOL_FEATURES:
		if (m->hdr.size < 8 || (m->u.u64 & ~OFFERED_PROTOCOL_FEATURES))
			return -EINVAL;
		d->protocol_features = m->u.u64;
		return -1;
	case VU_SET_OWNER:
		return -1;
	case VU_RESET_OWNER:
		reset_device(d);
		return -1;
	case VU_GET_QUEUE_NUM:
		m->u.u64 = d->num_queues;
		return 8;
	case VU_SET_MEM_TABLE:
		return set_mem_table(d, m) < 0 ? -EINVAL : -1;
	case VU_SET_VRING_NUM:
		vq = msg_queue(d, m->u.state.index);
		if (!vq || m->u.state.num == 0 || m->u.state.num > VU_MAX_QUEUE_SIZE ||
		    (m->u.state.num & (m->u.state.num - 1)))
			return -EINVAL;
		queue_stop(d, vq, &was);
		vq->num = m->u.state.num;
		if (was)
			queue_maybe_start(d, vq);
		return -1;
	case VU_SET_VRING_ADDR:
		vq = msg_queue(d, m->u.addr.index);
		if (!vq)
			return -EINVAL;
		queue_stop(d, vq, &was);
		vq->desc_uva = m->u.addr.desc;
		vq->avail_uva = m->u.addr.avail;
		vq->used_uva = m->u.addr.used;
		vq->addr_set = true;
		queue_maybe_start(d, vq);
		return -1;
	case VU_SET_VRING_BASE:
		vq = msg_queue(d, m->u.state.index);
		if (!vq || m->u.state.num > UINT16_MAX)
			return -EINVAL;
		queue_stop(d, vq, &was);
		vq->base = (uint16_t)m->u.state.num;
		if (was)
			queue_maybe_start(d, vq);
		return -1;
	case VU_GET_VRING_BASE:
		vq = msg_queue(d, m->u.state.index);
		if (!vq)
			return -EINVAL;
		queue_stop(d, vq, &was);
		m->u.state.num = vq->base;
		/* The ring stays stopped until a new kick fd arrives. */
		if (vq->kick_fd >= 0)
			close(vq->kick_fd);
		vq->kick_fd = -1;
		return 8;
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR: {
		bool nofd = m->u.u64 & VU_VRING_NOFD_MASK;
		int fd = -1;

		vq = msg_queue(d, (uint32_t)(m->u.u64 & VU_VRING_INDEX_MASK));
		if (!vq || (!nofd && m->nfds != 1))
			return -EINVAL;
		if (!nofd) {
			fd = m->fds[0];
			m->fds[0] = -1;
		}
		if (m->hdr.request == VU_SET_VRING_ERR) {
			if (fd >= 0)
				close(fd);
			return -1;
		}
		queue_stop(d, vq, &was);
		if (m->hdr.request == VU_SET_VRING_KICK) {
			if (vq->kick_fd >= 0)
				close(vq->kick_fd);
			vq->kick_fd = fd; /* no fd: polling, which we do not offer */
			queue_maybe_start(d, vq);
		} else {
			if (vq->call_fd >= 0)
				close(vq->call_fd);
			vq->call_fd = fd;
			if (was)
				queue_maybe_start(d, vq);
		}
		return -1;
	}
	case VU_SET_VRING_ENABLE:
		vq = msg_queue(d, m->u.state.index);
		if (!vq)
			return -EINVAL;
		vq->enabled = m->u.state.num != 0;
		if (vq->enabled)
			queue_maybe_start(d, vq);
		else
			queue_stop(d, vq, &was);
		return -1;
	case VU_GET_CONFIG: {
		uint32_t off = m->u.config.offset, size = m->u.config.size;

		if (m->hdr.size < 12 || size > sizeof(m->u.config.payload))
			return -EINVAL;
		memset(m->u.config.payload, 0, size);
		if (off < d->config_len)
			memcpy(m->u.config.payload, d->config + off,
			       size < d->config_len - off ? size : d->config_len - off);
		return (int)(12 + size);
	}
	case VU_SET_CONFIG:
		return -1; /* nothing in our config space is writable (no WCE) */
	case VU_SET_INFLIGHT_FD: {
		int ret = set_inflight_fd(d, m);

		return ret < 0 ? ret : -1;
	}
	case VU_SET_BACKEND_REQ_FD:
	case VU_SET_LOG_FD:
		return -1; /* not offered: the fd is closed below */
	default:
		vsp_log(d->engine, VSP_LOG_WARN, "%s: unsupported vhost-user request %u", d->name,
			m->hdr.request);
		return -ENOTSUP;
	}
}

/* Reads and answers one message; negative when the connection must end. */
static int serve_one(struct vu_dev *d)
{
	struct vu_msg *m = calloc(1, sizeof(*m));
	bool own_reply;
	int ret;

	if (!m)
		return -ENOMEM;
	ret = recv_msg(d->conn_fd, m);
	if (ret < 0)
		goto out;
	if ((m->hdr.flags & 3u) != VU_VERSION) {
		vsp_log(d->engine, VSP_LOG_ERROR, "%s: vhost-user version %u, not %u: closing",
			d->name, m->hdr.flags & 3u, VU_VERSION);
		ret = -EPROTO;
		goto out;
	}
	if (m->hdr.request == VU_GET_INFLIGHT_FD) {
		int mfd = -1;

		ret = get_inflight_fd(d, m, &mfd);
		if (ret >= 0) {
			ret = send_reply_fd(d->conn_fd, m, (uint32_t)ret, mfd);
			close(mfd);
			goto out;
		}
		vsp_log(d->engine, VSP_LOG_WARN, "%s: GET_INFLIGHT_FD refused: %s", d->name,
			strerror(-ret));
		goto out;
	}
	ret = handle(d, m);
	own_reply = ret >= 0;
	if (ret < -1)
		vsp_log(d->engine, VSP_LOG_WARN, "%s: vhost-user request %u refused: %s", d->name,
			m->hdr.request, strerror(-ret));
	if (own_reply) {
		ret = send_reply(d->conn_fd, m, (uint32_t)ret);
	} else if ((m->hdr.flags & VU_FLAG_NEED_REPLY) &&
		   (d->protocol_features & (1ull << VU_PROTOCOL_F_REPLY_ACK))) {
		m->u.u64 = ret < -1 ? 1 : 0;
		ret = send_reply(d->conn_fd, m, 8);
	} else {
		ret = 0; /* a refused request without a reply channel: carry on */
	}
out:
	close_fds(m);
	free(m);
	return ret;
}

static void *control_main(void *arg)
{
	struct vu_dev *d = arg;

	for (;;) {
		int fd = d->conn_fd >= 0 ? d->conn_fd : d->listen_fd;
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = d->wake[0], .events = POLLIN}};

		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		if (d->conn_fd < 0) {
			int cfd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			struct timeval tv = {.tv_sec = 10};

			/* A message that stops halfway, or a peer that stops reading
			 * our replies, ends the connection rather than hanging us. */
			if (cfd >= 0) {
				setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
				setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
			}
			__atomic_store_n(&d->conn_fd, cfd, __ATOMIC_RELEASE);
			if (d->conn_fd >= 0)
				vsp_log(d->engine, VSP_LOG_INFO, "%s: front end connected on %s", d->name,
					d->socket_path);
			continue;
		}
		if (serve_one(d) < 0) {
			vsp_log(d->engine, VSP_LOG_INFO,
				"%s: front end disconnected: answering requests in flight, waiting "
				"for the next one",
				d->name);
			reset_device(d);
			close(d->conn_fd);
			d->conn_fd = -1;
		}
	}
	reset_device(d);
	if (d->conn_fd >= 0)
		close(d->conn_fd);
	d->conn_fd = -1;
	return NULL;
}

/* ---- public ------------------------------------------------------------------------ */

int vsp_vhost_new(struct vsp_engine *e, struct vsp_disk *disk, const char *name,
		  const struct vsp_vhost_opts *o, struct vsp_vhost **out, struct vhd_err *err)
{
	struct vu_dev *d = calloc(1, sizeof(*d));

	if (!d || !(d->name = strdup(name)) || !(d->socket_path = strdup(o->socket_path))) {
		snprintf(err->msg, sizeof(err->msg), "out of memory");
		if (d)
			free(d->name);
		free(d);
		return -ENOMEM;
	}
	d->engine = e;
	d->disk = disk;
	d->listen_fd = d->conn_fd = -1;
	d->wake[0] = d->wake[1] = -1;
	d->num_queues = o->num_queues ? o->num_queues : e->nr_workers;
	if (d->num_queues > VU_MAX_QUEUES)
		d->num_queues = VU_MAX_QUEUES;
	for (unsigned i = 0; i < d->num_queues; i++)
		vu_vq_init(&d->vqs[i], d, i, &e->workers[i % e->nr_workers]);
	build_config(d);
	*out = (struct vsp_vhost *)d;
	return 0;
}

int vsp_vhost_start(struct vsp_vhost *v, struct vhd_err *err)
{
	struct vu_dev *d = (struct vu_dev *)v;
	int ret = vsp_listen_unix(d->socket_path, 4, err);

	if (ret < 0)
		return ret;
	d->listen_fd = ret;
	if (pipe2(d->wake, O_CLOEXEC) < 0) {
		ret = -errno;
		snprintf(err->msg, sizeof(err->msg), "pipe: %s", strerror(-ret));
		return ret;
	}
	ret = -pthread_create(&d->thread, NULL, control_main, d);
	if (ret < 0) {
		snprintf(err->msg, sizeof(err->msg), "%s: cannot start: %s", d->socket_path,
			 strerror(-ret));
		return ret;
	}
	d->started = true;
	return 0;
}

void vsp_vhost_stop(struct vsp_vhost *v)
{
	struct vu_dev *d = (struct vu_dev *)v;

	if (!d || !d->started)
		return;
	if (write(d->wake[1], "x", 1) < 0) {
		/* a fresh pipe cannot be full */
	}
	{
		/* wakes the control thread if it waits inside a message */
		int cfd = __atomic_load_n(&d->conn_fd, __ATOMIC_ACQUIRE);

		if (cfd >= 0)
			shutdown(cfd, SHUT_RDWR);
	}
	pthread_join(d->thread, NULL);
	d->started = false;
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		d->listen_fd = -1;
		unlink(d->socket_path);
	}
}

void vsp_vhost_free(struct vsp_vhost *v)
{
	struct vu_dev *d = (struct vu_dev *)v;

	if (!d)
		return;
	vsp_vhost_stop(v);
	if (d->listen_fd >= 0)
		close(d->listen_fd);
	for (int i = 0; i < 2; i++)
		if (d->wake[i] >= 0)
			close(d->wake[i]);
	free(d->name);
	free(d->socket_path);
	free(d);
}
