/* vhost_user.h - the vhost-user-blk front door's private interface: wire
 * constants (QEMU's docs/interop/vhost-user.rst), the device, its guest
 * memory table and its virtqueues.
 *
 * Split of work: the device's control thread reads vhost-user messages from
 * the front end (QEMU) and owns the configuration; each virtqueue runs on one
 * engine worker, which alone touches the ring while it runs.  The control
 * thread starts and stops a queue through a call on that worker and waits
 * for a stop to finish (every request in flight answered).  The memory table
 * changes only while every queue is stopped. */
#ifndef VSP_VHOST_USER_H
#define VSP_VHOST_USER_H

#include <linux/virtio_ring.h>
#include <pthread.h>
#include <stdint.h>

#include "engine.h"

enum {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_SET_BACKEND_REQ_FD = 21,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_GET_INFLIGHT_FD = 31,
	VU_SET_INFLIGHT_FD = 32,
};

#define VU_VERSION 1u
#define VU_FLAG_REPLY (1u << 2)
#define VU_FLAG_NEED_REPLY (1u << 3)
#define VU_F_PROTOCOL_FEATURES 30
#define VU_PROTOCOL_F_MQ 0
#define VU_PROTOCOL_F_REPLY_ACK 3
#define VU_PROTOCOL_F_CONFIG 9
#define VU_PROTOCOL_F_INFLIGHT_SHMFD 12
#define VU_VRING_INDEX_MASK 0xffu
#define VU_VRING_NOFD_MASK (1u << 8)
#define VU_MAX_REGIONS 8
#define VU_MAX_FDS 8
#define VU_MAX_PAYLOAD 4096
#define VU_MAX_QUEUES 16
#define VU_MAX_QUEUE_SIZE 1024
#define VU_MAX_IOV 1026        /* queue size + header and status */
#define VIRTIO_F_VERSION_1_BIT 32

struct vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
} __attribute__((packed));

struct vu_region {
	uint64_t gpa, size, uva, mmap_offset;
	void *map;           /* what mmap returned */
	size_t map_len;
	uint8_t *host;       /* gpa maps to host + (gpa - region gpa) */
};

/* Inflight tracking (INFLIGHT_SHMFD): a memfd the front end keeps across our
 * restarts, one region per queue.  A head is marked in flight when taken
 * from the available ring and cleared after its completion is published,
 * so a restarted VSP resubmits exactly the requests its predecessor took
 * and never answered, in the order they were taken.  The layout is ours
 * (QEMU only stores the fd and hands it back); it follows the shape of the
 * vhost-user specification's split-queue region. */
struct vu_inflight_desc {
	uint8_t inflight;
	uint8_t padding[5];
	uint16_t next;
	uint64_t counter;       /* order of submission */
};

struct vu_inflight_region {
	uint64_t features;
	uint16_t version;       /* 1 */
	uint16_t desc_num;      /* queue size */
	uint16_t last_batch_head;  /* the head whose completion was published last */
	uint16_t used_idx;      /* used->idx once that head was cleared */
	struct vu_inflight_desc desc[];
};

struct vu_dev;

/* A stop waited for by the control thread. */
struct vu_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

struct vu_vq {
	struct vu_dev *dev;
	unsigned index;
	struct vsp_worker *w;

	/* configuration: written by the control thread while the queue is
	 * stopped, read by the worker when it starts */
	unsigned num;
	uint64_t desc_uva, avail_uva, used_uva;
	uint16_t base;
	bool addr_set, enabled;
	int kick_fd, call_fd;
	bool ctl_started;           /* the control thread's view: start was posted */

	/* runtime: the worker's only */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t last_avail, used_idx, signalled_used;
	bool signalled_valid;
	bool running, stopping, broken;
	unsigned inflight;
	bool kick_armed;
	uint64_t kick_value;
	struct vsp_io kick_io;
	struct vsp_deferred notify;
	bool need_notify;
	struct vu_wait *stop_wait;  /* set while a stop waits */
	struct vu_inflight_region *ifl; /* inflight region; NULL without INFLIGHT_SHMFD */
	uint64_t counter;
};

struct vu_dev {
	struct vsp_engine *engine;
	struct vsp_disk *disk;
	char *name;                 /* the export's name, for messages */
	char *socket_path;
	unsigned num_queues;
	int listen_fd, conn_fd;
	int wake[2];                /* stops the control thread */
	pthread_t thread;
	bool started;

	uint64_t features;          /* acked by the front end */
	uint64_t protocol_features;
	unsigned nr_regions;
	struct vu_region regions[VU_MAX_REGIONS];
	struct vu_vq vqs[VU_MAX_QUEUES];
	uint8_t config[64];         /* virtio-blk config space */
	size_t config_len;
	char serial[21];            /* GET_ID: from the VHD unique id */
	void *inflight_map;         /* the front end's inflight memfd, mapped */
	size_t inflight_len;
	size_t inflight_queue_size; /* bytes per queue region */
};

/* Guest physical -> host pointer for [gpa, gpa+len) inside one region, or
 * NULL.  Front-end virtual (ring addresses) likewise. */
void *vu_gpa_to_host(const struct vu_dev *d, uint64_t gpa, uint64_t len);
void *vu_uva_to_host(const struct vu_dev *d, uint64_t uva, uint64_t len);

/* virtq.c: run on the queue's worker through vsp_worker_call. */
void vu_vq_start(void *vq);
void vu_vq_stop(void *vq);     /* completes vq->stop_wait when drained */
void vu_vq_init(struct vu_vq *vq, struct vu_dev *d, unsigned index, struct vsp_worker *w);
/* Forgets the front end's configuration of a stopped queue (control thread). */
void vu_vq_reset_config(struct vu_vq *vq);

#endif
