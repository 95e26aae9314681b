/* vhost_user_fake.c - a fake vhost-user front end (see vhost_user_fake.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vhost_user_fake.h"

__attribute__((format(printf, 3, 4))) static int err(struct vuf *f, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->err, sizeof(f->err), fmt, ap);
	va_end(ap);
	return ret;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- guest memory ---------------------------------------------------------- */

int vuf_mem_add(struct vuf_mem *m, uint64_t gpa, uint64_t size, uint64_t uva,
		uint64_t mmap_offset, uint64_t file_size)
{
	struct vuf_region *r;
	uint64_t flen = file_size ? file_size : mmap_offset + size;
	int ret = 0;

	if (m->n >= VUF_MAX_REGIONS)
		return -ENOSPC;
	r = &m->r[m->n];
	memset(r, 0, sizeof(*r));
	r->fd = memfd_create("vuf-guest", MFD_CLOEXEC);
	if (r->fd < 0)
		return -errno;
	if (ftruncate(r->fd, (off_t)flen) < 0) {
		ret = -errno;
		goto out;
	}
	/* Only what the file holds is ours to touch (a hostile region may
	 * claim more). */
	r->map_len = (size_t)(flen < mmap_offset + size ? flen : mmap_offset + size);
	r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (r->map == MAP_FAILED) {
		ret = -errno;
		r->map = NULL;
		goto out;
	}
	r->gpa = gpa;
	r->size = size;
	r->uva = uva;
	r->mmap_offset = mmap_offset;
	r->host = (uint8_t *)r->map + mmap_offset;
	m->n++;
out:
	if (ret < 0)
		close(r->fd);
	return ret;
}

void vuf_mem_free(struct vuf_mem *m)
{
	for (unsigned i = 0; i < m->n; i++) {
		munmap(m->r[i].map, m->r[i].map_len);
		close(m->r[i].fd);
	}
	m->n = 0;
}

/* The region holding gpa, if any (what the fake may touch of it). */
static const struct vuf_region *region_of(const struct vuf_mem *m, uint64_t gpa, uint64_t *avail)
{
	for (unsigned i = 0; i < m->n; i++) {
		const struct vuf_region *r = &m->r[i];
		uint64_t mapped = r->map_len - r->mmap_offset;

		if (gpa >= r->gpa && gpa - r->gpa < mapped) {
			*avail = mapped - (gpa - r->gpa);
			return r;
		}
	}
	return NULL;
}

void *vuf_gpa(const struct vuf_mem *m, uint64_t gpa, uint64_t len)
{
	uint64_t avail;
	const struct vuf_region *r = region_of(m, gpa, &avail);

	return r && len <= avail ? r->host + (gpa - r->gpa) : NULL;
}

uint64_t vuf_uva(const struct vuf_mem *m, uint64_t gpa)
{
	uint64_t avail;
	const struct vuf_region *r = region_of(m, gpa, &avail);

	return r ? r->uva + (gpa - r->gpa) : 0;
}

static bool mem_copy(const struct vuf_mem *m, uint64_t gpa, uint8_t *buf, uint64_t len, bool to_guest)
{
	while (len) {
		uint64_t avail;
		const struct vuf_region *r = region_of(m, gpa, &avail);
		uint64_t n = len < avail ? len : avail;

		if (!r)
			return false;
		if (to_guest)
			memcpy(r->host + (gpa - r->gpa), buf, n);
		else
			memcpy(buf, r->host + (gpa - r->gpa), n);
		gpa += n;
		buf += n;
		len -= n;
	}
	return true;
}

bool vuf_mem_write(const struct vuf_mem *m, uint64_t gpa, const void *buf, uint64_t len)
{
	return mem_copy(m, gpa, (uint8_t *)(uintptr_t)buf, len, true);
}

bool vuf_mem_read(const struct vuf_mem *m, uint64_t gpa, void *buf, uint64_t len)
{
	return mem_copy(m, gpa, buf, len, false);
}

/* ---- the socket --------------------------------------------------------------- */

void vuf_init(struct vuf *f, struct vuf_mem *mem)
{
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->mem = mem;
	for (unsigned q = 0; q < VUF_MAX_QUEUES; q++)
		f->vq[q].kick_fd = f->vq[q].call_fd = -1;
}

int vuf_connect(struct vuf *f, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int64_t deadline = mono_ms() + 5000;

	if (strlen(path) >= sizeof(sa.sun_path))
		return err(f, -ENAMETOOLONG, "%s: socket path too long", path);
	strcpy(sa.sun_path, path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), e;

		if (fd < 0)
			return err(f, -errno, "socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			f->fd = fd;
			return 0;
		}
		e = errno;
		close(fd);
		/* The listener may be between two front ends. */
		if ((e != ECONNREFUSED && e != ENOENT && e != EAGAIN) || mono_ms() > deadline)
			return err(f, -e, "connect %s: %s", path, strerror(e));
		usleep(10000);
	}
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

void vuf_close(struct vuf *f)
{
	close_fd(&f->fd);
	for (unsigned q = 0; q < VUF_MAX_QUEUES; q++) {
		close_fd(&f->vq[q].kick_fd);
		close_fd(&f->vq[q].call_fd);
	}
}

/* Waits up to the deadline for events on fd. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int64_t left = deadline - mono_ms();
		int n;

		if (left < 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

int vuf_send_raw(struct vuf *f, uint32_t request, uint32_t flags, const void *payload,
		 uint32_t size, const int *fds, unsigned nfds)
{
	struct vuf_hdr h = {request, flags, size};
	uint8_t *buf = malloc(sizeof(h) + size);
	char control[CMSG_SPACE(VUF_MAX_REGIONS * sizeof(int))] = {0};
	int64_t deadline = mono_ms() + VUF_TIMEOUT_MS;
	size_t total = sizeof(h) + size, done = 0;
	int ret = 0;

	if (!buf)
		return err(f, -ENOMEM, "out of memory");
	if (nfds > VUF_MAX_REGIONS) {
		ret = err(f, -EINVAL, "%u fds: at most %u", nfds, VUF_MAX_REGIONS);
		goto out;
	}
	memcpy(buf, &h, sizeof(h));
	if (size)
		memcpy(buf + sizeof(h), payload, size);
	while (done < total) {
		struct iovec iov = {buf + done, total - done};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (done == 0 && nfds) {
			struct cmsghdr *c;

			mh.msg_control = control;
			mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
			memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
		}
		n = sendmsg(f->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			ret = err(f, -errno, "send request %u: %s", request, strerror(errno));
			goto out;
		}
		ret = wait_fd(f->fd, POLLOUT, deadline);
		if (ret < 0) {
			err(f, ret, "send request %u: the back end does not read (%s)", request,
			    strerror(-ret));
			goto out;
		}
	}
out:
	free(buf);
	return ret;
}

/* Reads exactly len bytes before the deadline. */
static int recv_all(struct vuf *f, void *buf, size_t len, int64_t deadline)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = recv(f->fd, (char *)buf + done, len - done, MSG_DONTWAIT);
		int ret;

		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		ret = wait_fd(f->fd, POLLIN, deadline);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int vuf_recv_reply(struct vuf *f, uint32_t request, void *payload, uint32_t max, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;
	struct vuf_hdr h;
	uint8_t sink[VUF_MAX_PAYLOAD];
	int ret = recv_all(f, &h, sizeof(h), deadline);

	if (ret < 0)
		return err(f, ret, "no reply to request %u: %s", request, strerror(-ret));
	if (h.size > VUF_MAX_PAYLOAD)
		return err(f, -EPROTO, "reply to request %u: payload size %u", request, h.size);
	ret = recv_all(f, h.size <= max ? payload : sink, h.size, deadline);
	if (ret < 0)
		return err(f, ret, "reply to request %u: payload: %s", request, strerror(-ret));
	if (h.request != request || (h.flags & 3u) != VUF_VERSION || !(h.flags & VUF_FLAG_REPLY))
		return err(f, -EPROTO, "expected a reply to request %u, got request %u flags %#x",
			   request, h.request, h.flags);
	if (h.size > max)
		return err(f, -EMSGSIZE, "reply to request %u: %u bytes, expected at most %u",
			   request, h.size, max);
	return (int)h.size;
}

int vuf_request(struct vuf *f, uint32_t request, const void *payload, uint32_t size,
		const int *fds, unsigned nfds, void *reply, uint32_t reply_size)
{
	bool ack = !reply && (f->protocol_features & (1ull << VUF_PROTOCOL_F_REPLY_ACK));
	uint64_t v = 0;
	int ret = vuf_send_raw(f, request, VUF_VERSION | (ack ? VUF_FLAG_NEED_REPLY : 0), payload,
			       size, fds, nfds);

	if (ret < 0)
		return ret;
	if (reply) {
		ret = vuf_recv_reply(f, request, reply, reply_size, VUF_TIMEOUT_MS);
		if (ret >= 0 && (uint32_t)ret != reply_size)
			return err(f, -EPROTO, "reply to request %u: %d bytes, expected %u", request,
				   ret, reply_size);
		return ret < 0 ? ret : 0;
	}
	if (!ack)
		return 0;
	ret = vuf_recv_reply(f, request, &v, sizeof(v), VUF_TIMEOUT_MS);
	if (ret >= 0 && ret != (int)sizeof(v))
		return err(f, -EPROTO, "REPLY_ACK to request %u: %d bytes", request, ret);
	if (ret < 0)
		return ret;
	if (v)
		err(f, 1, "request %u refused (REPLY_ACK %llu)", request, (unsigned long long)v);
	return v ? 1 : 0;
}

int vuf_get_u64(struct vuf *f, uint32_t request, uint64_t *out)
{
	return vuf_request(f, request, NULL, 0, NULL, 0, out, sizeof(*out));
}

int vuf_sync(struct vuf *f)
{
	uint64_t v;

	return vuf_get_u64(f, VUF_GET_FEATURES, &v);
}

bool vuf_wait_hangup(struct vuf *f, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;
	char sink[4096];

	for (;;) {
		ssize_t n = recv(f->fd, sink, sizeof(sink), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return true;
		if (n < 0 && wait_fd(f->fd, POLLIN, deadline) == -ETIMEDOUT)
			return false;
	}
}

/* ---- negotiation and memory ----------------------------------------------------- */

int vuf_negotiate(struct vuf *f, uint64_t drop, bool protocol)
{
	uint64_t v;
	int ret = vuf_get_u64(f, VUF_GET_FEATURES, &f->offered);

	if (ret < 0)
		return ret;
	if (!(f->offered & (1ull << VUF_F_PROTOCOL_FEATURES)))
		protocol = false;
	ret = vuf_request(f, VUF_SET_OWNER, NULL, 0, NULL, 0, NULL, 0);
	if (ret != 0)
		return ret;
	if (protocol) {
		ret = vuf_get_u64(f, VUF_GET_PROTOCOL_FEATURES, &f->protocol_offered);
		if (ret < 0)
			return ret;
		v = f->protocol_offered & ((1ull << VUF_PROTOCOL_F_MQ) |
					   (1ull << VUF_PROTOCOL_F_REPLY_ACK) |
					   (1ull << VUF_PROTOCOL_F_CONFIG));
		/* REPLY_ACK is not in force for the message that turns it on. */
		ret = vuf_request(f, VUF_SET_PROTOCOL_FEATURES, &v, sizeof(v), NULL, 0, NULL, 0);
		if (ret != 0)
			return ret;
		f->protocol_features = v;
	} else {
		drop |= 1ull << VUF_F_PROTOCOL_FEATURES;
	}
	ret = vuf_get_u64(f, VUF_GET_QUEUE_NUM, &v);
	if (ret < 0)
		return ret;
	f->queues = (unsigned)v;
	v = f->offered & ~drop;
	ret = vuf_request(f, VUF_SET_FEATURES, &v, sizeof(v), NULL, 0, NULL, 0);
	if (ret != 0)
		return ret;
	f->features = v;
	return vuf_sync(f);
}

int vuf_get_config(struct vuf *f, uint32_t offset, void *buf, uint32_t size)
{
	struct {
		uint32_t offset, size, flags;
		uint8_t payload[256];
	} __attribute__((packed)) m = {offset, size, 0, {0}};
	int ret;

	if (size > sizeof(m.payload))
		return err(f, -EINVAL, "config size %u", size);
	ret = vuf_request(f, VUF_GET_CONFIG, &m, 12 + size, NULL, 0, &m, 12 + size);
	if (ret == 0)
		memcpy(buf, m.payload, size);
	return ret;
}

int vuf_set_mem_table(struct vuf *f)
{
	struct {
		uint32_t nregions, padding;
		struct {
			uint64_t gpa, size, uva, mmap_offset;
		} r[VUF_MAX_REGIONS];
	} m = {f->mem->n, 0, {{0}}};
	int fds[VUF_MAX_REGIONS];
	int ret;

	for (unsigned i = 0; i < f->mem->n; i++) {
		const struct vuf_region *r = &f->mem->r[i];

		m.r[i].gpa = r->gpa;
		m.r[i].size = r->size;
		m.r[i].uva = r->uva;
		m.r[i].mmap_offset = r->mmap_offset;
		fds[i] = r->fd;
	}
	ret = vuf_request(f, VUF_SET_MEM_TABLE, &m, 8 + f->mem->n * sizeof(m.r[0]), fds,
			  f->mem->n, NULL, 0);
	return ret;
}

/* ---- queues ------------------------------------------------------------------- */

int vuf_vq_layout(struct vuf *f, unsigned q, unsigned num, uint64_t desc_gpa,
		  uint64_t avail_gpa, uint64_t used_gpa)
{
	struct vuf_vq *vq = &f->vq[q];
	size_t dlen = num * sizeof(struct vring_desc);
	size_t alen = sizeof(struct vring_avail) + (num + 1) * sizeof(uint16_t);
	size_t ulen = sizeof(struct vring_used) + num * sizeof(struct vring_used_elem) + 2;

	if (q >= VUF_MAX_QUEUES || !num)
		return err(f, -EINVAL, "queue %u of size %u", q, num);
	vq->desc = vuf_gpa(f->mem, desc_gpa, dlen);
	vq->avail = vuf_gpa(f->mem, avail_gpa, alen);
	vq->used = vuf_gpa(f->mem, used_gpa, ulen);
	if (!vq->desc || !vq->avail || !vq->used)
		return err(f, -EFAULT, "queue %u: rings outside the guest memory", q);
	memset(vq->desc, 0, dlen);
	memset(vq->avail, 0, alen);
	memset(vq->used, 0, ulen);
	vq->num = num;
	vq->desc_gpa = desc_gpa;
	vq->avail_gpa = avail_gpa;
	vq->used_gpa = used_gpa;
	vq->avail_idx = vq->last_used = 0;
	return 0;
}

static int new_efd(struct vuf *f, int *fd)
{
	close_fd(fd);
	/* QEMU's event notifiers are non-blocking eventfds: so are ours. */
	*fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return *fd < 0 ? err(f, -errno, "eventfd: %s", strerror(errno)) : 0;
}

int vuf_vq_rekick(struct vuf *f, unsigned q)
{
	uint64_t v = q;
	int ret = new_efd(f, &f->vq[q].kick_fd);

	if (ret == 0)
		ret = vuf_request(f, VUF_SET_VRING_KICK, &v, sizeof(v), &f->vq[q].kick_fd, 1, NULL, 0);
	return ret;
}

int vuf_vq_start(struct vuf *f, unsigned q, uint16_t base)
{
	struct vuf_vq *vq = &f->vq[q];
	struct {
		uint32_t index, num;
	} st = {q, vq->num};
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} addr = {q, 0, vuf_uva(f->mem, vq->desc_gpa), vuf_uva(f->mem, vq->used_gpa),
		  vuf_uva(f->mem, vq->avail_gpa), 0};
	uint64_t v = q;
	int ret;

	ret = vuf_request(f, VUF_SET_VRING_NUM, &st, sizeof(st), NULL, 0, NULL, 0);
	st.num = base;
	if (ret == 0)
		ret = vuf_request(f, VUF_SET_VRING_BASE, &st, sizeof(st), NULL, 0, NULL, 0);
	if (ret == 0)
		ret = vuf_request(f, VUF_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0, NULL, 0);
	if (ret == 0)
		ret = new_efd(f, &vq->call_fd);
	if (ret == 0)
		ret = vuf_request(f, VUF_SET_VRING_CALL, &v, sizeof(v), &vq->call_fd, 1, NULL, 0);
	if (ret == 0)
		ret = vuf_vq_rekick(f, q);
	if (ret == 0 && (f->features & (1ull << VUF_F_PROTOCOL_FEATURES))) {
		st.num = 1;
		ret = vuf_request(f, VUF_SET_VRING_ENABLE, &st, sizeof(st), NULL, 0, NULL, 0);
	}
	vq->avail_idx = vq->last_used = base;
	return ret;
}

int vuf_get_vring_base(struct vuf *f, unsigned q, uint32_t *base)
{
	struct {
		uint32_t index, num;
	} st = {q, 0};
	int ret = vuf_request(f, VUF_GET_VRING_BASE, &st, sizeof(st), NULL, 0, &st, sizeof(st));

	if (ret == 0 && st.index != q)
		return err(f, -EPROTO, "GET_VRING_BASE %u answered for queue %u", q, st.index);
	*base = st.num;
	return ret;
}

void vuf_desc(struct vuf *f, unsigned q, unsigned idx, uint64_t addr, uint32_t len,
	      uint16_t flags, uint16_t next)
{
	struct vuf_vq *vq = &f->vq[q];

	if (idx < vq->num)
		vq->desc[idx] = (struct vring_desc){addr, len, flags, next};
}

void vuf_avail_push(struct vuf *f, unsigned q, uint16_t head)
{
	struct vuf_vq *vq = &f->vq[q];

	vq->avail->ring[vq->avail_idx % vq->num] = head;
	vq->avail_idx++;
	__atomic_store_n(&vq->avail->idx, vq->avail_idx, __ATOMIC_RELEASE);
}

void vuf_kick(struct vuf *f, unsigned q)
{
	uint64_t one = 1;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (write(f->vq[q].kick_fd, &one, sizeof(one)) < 0) {
		/* a full counter still wakes the back end */
	}
}

unsigned vuf_used_pending(const struct vuf *f, unsigned q)
{
	const struct vuf_vq *vq = &f->vq[q];

	return (uint16_t)(__atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE) - vq->last_used);
}

int vuf_used_next(struct vuf *f, unsigned q, int timeout_ms, uint32_t *id, uint32_t *len)
{
	struct vuf_vq *vq = &f->vq[q];
	int64_t deadline = mono_ms() + timeout_ms;
	bool event_idx = f->features & (1ull << VIRTIO_RING_F_EVENT_IDX);

	for (;;) {
		uint64_t cnt;
		int ret;

		if (vuf_used_pending(f, q)) {
			struct vring_used_elem e = vq->used->ring[vq->last_used % vq->num];

			vq->last_used++;
			*id = e.id;
			*len = e.len;
			return 0;
		}
		/* Ask for a call at the next used entry, then look again: it may
		 * have come before the back end saw the request. */
		if (event_idx)
			__atomic_store_n(&vq->avail->ring[vq->num], vq->last_used, __ATOMIC_RELEASE);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (vuf_used_pending(f, q))
			continue;
		ret = wait_fd(vq->call_fd, POLLIN, deadline);
		if (ret < 0)
			return ret;
		if (read(vq->call_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
			return err(f, -errno, "call eventfd of queue %u: %s", q, strerror(errno));
	}
}

int vuf_chain(struct vuf *f, unsigned q, unsigned first, const struct vuf_seg *segs,
	      unsigned n, uint64_t table_gpa)
{
	struct vuf_vq *vq = &f->vq[q];

	if (!n)
		return err(f, -EINVAL, "an empty chain");
	if (table_gpa) {
		/* byte copies: tests put tables at odd addresses on purpose */
		uint8_t *t = vuf_gpa(f->mem, table_gpa, n * sizeof(struct vring_desc));

		if (!t || first >= vq->num)
			return err(f, -EINVAL, "indirect table at %#llx for %u segments",
				   (unsigned long long)table_gpa, n);
		for (unsigned i = 0; i < n; i++) {
			struct vring_desc d = {segs[i].gpa, segs[i].len,
					       (uint16_t)((segs[i].write ? VRING_DESC_F_WRITE : 0) |
							  (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
					       (uint16_t)(i + 1)};

			memcpy(t + i * sizeof(d), &d, sizeof(d));
		}
		vq->desc[first] = (struct vring_desc){table_gpa,
						      (uint32_t)(n * sizeof(struct vring_desc)),
						      VRING_DESC_F_INDIRECT, 0};
		return (int)first;
	}
	if (first + n > vq->num)
		return err(f, -EINVAL, "%u descriptors from %u in a queue of %u", n, first, vq->num);
	for (unsigned i = 0; i < n; i++)
		vq->desc[first + i] = (struct vring_desc){
			segs[i].gpa, segs[i].len,
			(uint16_t)((segs[i].write ? VRING_DESC_F_WRITE : 0) |
				   (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
			(uint16_t)(first + i + 1)};
	return (int)first;
}
