/* vhost_user_fake.h - a fake vhost-user front end (what QEMU does for a
 * vhost-user-blk-pci device), for tests and the fuzz target: the control
 * messages over the Unix socket, "guest memory" in memfds, split virtqueues
 * laid out in that memory, and virtio-blk requests written as descriptor
 * chains.
 *
 * Nothing here trusts the back end: every read of the socket has a timeout,
 * and the rings are read as the guest would read them.  Functions return
 * 0 or a negative errno and leave a sentence in f->err; vuf_request returns
 * 1 when the back end refused a message (a REPLY_ACK with a nonzero value).
 *
 * Addresses: a region has a guest physical address (descriptors use it) and
 * a front-end virtual address, uva (SET_VRING_ADDR uses it).  The fake
 * makes them differ so that a back end mixing them up fails.
 */
#ifndef VHOST_USER_FAKE_H
#define VHOST_USER_FAKE_H

#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* vhost-user requests (docs/interop/vhost-user.rst in QEMU) */
enum {
	VUF_GET_FEATURES = 1,
	VUF_SET_FEATURES = 2,
	VUF_SET_OWNER = 3,
	VUF_RESET_OWNER = 4,
	VUF_SET_MEM_TABLE = 5,
	VUF_SET_LOG_BASE = 6,
	VUF_SET_LOG_FD = 7,
	VUF_SET_VRING_NUM = 8,
	VUF_SET_VRING_ADDR = 9,
	VUF_SET_VRING_BASE = 10,
	VUF_GET_VRING_BASE = 11,
	VUF_SET_VRING_KICK = 12,
	VUF_SET_VRING_CALL = 13,
	VUF_SET_VRING_ERR = 14,
	VUF_GET_PROTOCOL_FEATURES = 15,
	VUF_SET_PROTOCOL_FEATURES = 16,
	VUF_GET_QUEUE_NUM = 17,
	VUF_SET_VRING_ENABLE = 18,
	VUF_GET_CONFIG = 24,
	VUF_SET_CONFIG = 25,
};

#define VUF_VERSION 1u
#define VUF_FLAG_REPLY (1u << 2)
#define VUF_FLAG_NEED_REPLY (1u << 3)
#define VUF_F_PROTOCOL_FEATURES 30
#define VUF_F_VERSION_1 32
#define VUF_PROTOCOL_F_MQ 0
#define VUF_PROTOCOL_F_REPLY_ACK 3
#define VUF_PROTOCOL_F_CONFIG 9
#define VUF_VRING_NOFD (1u << 8)
#define VUF_MAX_PAYLOAD 4096
#define VUF_MAX_REGIONS 8
#define VUF_MAX_QUEUES 16
#define VUF_TIMEOUT_MS 10000   /* replies; generous for sanitized back ends */

struct vuf_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
} __attribute__((packed));

struct vuf_region {
	uint64_t gpa, size, uva, mmap_offset;
	int fd;
	void *map;          /* our mapping of the whole memfd */
	size_t map_len;
	uint8_t *host;      /* gpa maps to host + (gpa - region gpa) */
};

struct vuf_mem {
	unsigned n;
	struct vuf_region r[VUF_MAX_REGIONS];
};

/* Adds a region backed by a new memfd of mmap_offset + size bytes, or of
 * file_size bytes when nonzero (a region larger than its file is hostile). */
int vuf_mem_add(struct vuf_mem *m, uint64_t gpa, uint64_t size, uint64_t uva,
		uint64_t mmap_offset, uint64_t file_size);
void vuf_mem_free(struct vuf_mem *m);
/* Our pointer to [gpa, gpa+len) when it lies inside one region, else NULL. */
void *vuf_gpa(const struct vuf_mem *m, uint64_t gpa, uint64_t len);
/* The front-end virtual address of gpa (0 outside every region). */
uint64_t vuf_uva(const struct vuf_mem *m, uint64_t gpa);
/* Copies between our buffer and guest memory that may span adjacent regions;
 * false when some byte lies outside every region. */
bool vuf_mem_write(const struct vuf_mem *m, uint64_t gpa, const void *buf, uint64_t len);
bool vuf_mem_read(const struct vuf_mem *m, uint64_t gpa, void *buf, uint64_t len);

/* One split virtqueue as the driver sees it. */
struct vuf_vq {
	unsigned num;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	int kick_fd, call_fd;
	uint16_t avail_idx;  /* the next index the driver publishes */
	uint16_t last_used;  /* used entries the driver consumed */
};

struct vuf {
	int fd;
	struct vuf_mem *mem;
	uint64_t offered, features;                    /* device features: offered, acked */
	uint64_t protocol_offered, protocol_features;
	unsigned queues;                               /* GET_QUEUE_NUM */
	struct vuf_vq vq[VUF_MAX_QUEUES];
	char err[512];
};

/* Prepares f (no connection, no queues) over mem. */
void vuf_init(struct vuf *f, struct vuf_mem *mem);
int vuf_connect(struct vuf *f, const char *path);
/* Closes the socket and every queue's eventfds; the memory stays. */
void vuf_close(struct vuf *f);

/* Sends one message as it is (flags untouched: tests send bad ones). */
int vuf_send_raw(struct vuf *f, uint32_t request, uint32_t flags, const void *payload,
		 uint32_t size, const int *fds, unsigned nfds);
/* Receives one reply to request into payload (at most max bytes); returns
 * its payload size. */
int vuf_recv_reply(struct vuf *f, uint32_t request, void *payload, uint32_t max, int timeout_ms);
/* Sends request with version 1.  With reply: waits for the back end's own
 * reply (reply_size bytes).  Without: asks for REPLY_ACK when negotiated and
 * returns 1 when the back end refused, else 0 once it processed it. */
int vuf_request(struct vuf *f, uint32_t request, const void *payload, uint32_t size,
		const int *fds, unsigned nfds, void *reply, uint32_t reply_size);
int vuf_get_u64(struct vuf *f, uint32_t request, uint64_t *out);
/* Every message sent so far was processed (a GET_FEATURES round trip). */
int vuf_sync(struct vuf *f);
/* True when the back end closed the connection within timeout_ms (what it
 * sends meanwhile is discarded). */
bool vuf_wait_hangup(struct vuf *f, int timeout_ms);

/* GET_FEATURES, SET_OWNER, protocol features (MQ, REPLY_ACK, CONFIG when
 * protocol is true), GET_QUEUE_NUM, SET_FEATURES with everything offered
 * except drop. */
int vuf_negotiate(struct vuf *f, uint64_t drop, bool protocol);
int vuf_get_config(struct vuf *f, uint32_t offset, void *buf, uint32_t size);
int vuf_set_mem_table(struct vuf *f);

/* Places queue q's rings at these guest addresses and clears them. */
int vuf_vq_layout(struct vuf *f, unsigned q, unsigned num, uint64_t desc_gpa,
		  uint64_t avail_gpa, uint64_t used_gpa);
/* NUM, BASE, ADDR, KICK and CALL (fresh eventfds), ENABLE.  The driver's
 * indices both start at base. */
int vuf_vq_start(struct vuf *f, unsigned q, uint16_t base);
/* SET_VRING_KICK with a fresh eventfd (restarts a queue GET_VRING_BASE
 * stopped). */
int vuf_vq_rekick(struct vuf *f, unsigned q);
int vuf_get_vring_base(struct vuf *f, unsigned q, uint32_t *base);

void vuf_desc(struct vuf *f, unsigned q, unsigned idx, uint64_t addr, uint32_t len,
	      uint16_t flags, uint16_t next);
/* Publishes head in the avail ring (and the new avail index). */
void vuf_avail_push(struct vuf *f, unsigned q, uint16_t head);
void vuf_kick(struct vuf *f, unsigned q);
/* The next used entry: waits on the call eventfd up to timeout_ms.
 * -ETIMEDOUT when none came. */
int vuf_used_next(struct vuf *f, unsigned q, int timeout_ms, uint32_t *id, uint32_t *len);
/* Used entries published and not consumed yet. */
unsigned vuf_used_pending(const struct vuf *f, unsigned q);

/* A buffer of a request: guest address, length, device-writable or not. */
struct vuf_seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* Writes segs as one chain: direct descriptors at desc[first..first+n), or,
 * with table_gpa, an indirect table there referenced by desc[first].
 * Returns the head index. */
int vuf_chain(struct vuf *f, unsigned q, unsigned first, const struct vuf_seg *segs,
	      unsigned n, uint64_t table_gpa);

#endif
