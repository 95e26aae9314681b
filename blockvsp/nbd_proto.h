/* nbd_proto.h - NBD wire constants (doc/proto.md of the NBD project) and the
 * private interface between the handshake (nbd_server.c) and transmission
 * (nbd_conn.c).  All integers on the wire are big-endian. */
#ifndef VSP_NBD_PROTO_H
#define VSP_NBD_PROTO_H

#include <pthread.h>
#include <stdint.h>

#include "vsp.h"

#define NBD_INIT_MAGIC 0x4e42444d41474943ull      /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC 0x49484156454f5054ull      /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x0003e889045565a9ull
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* handshake flags (server) and client flags */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* transmission flags */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)

/* options */
#define NBD_OPT_EXPORT_NAME 1
#define NBD_OPT_ABORT 2
#define NBD_OPT_LIST 3
#define NBD_OPT_STARTTLS 5
#define NBD_OPT_INFO 6
#define NBD_OPT_GO 7
#define NBD_OPT_STRUCTURED_REPLY 8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT 10

/* option replies */
#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_ERR_UNSUP (0x80000000u + 1)
#define NBD_REP_ERR_POLICY (0x80000000u + 2)
#define NBD_REP_ERR_INVALID (0x80000000u + 3)
#define NBD_REP_ERR_UNKNOWN (0x80000000u + 6)
#define NBD_REP_ERR_SHUTDOWN (0x80000000u + 7)
#define NBD_REP_ERR_TOO_BIG (0x80000000u + 9)

/* NBD_REP_INFO types */
#define NBD_INFO_EXPORT 0
#define NBD_INFO_NAME 1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE 3

/* commands and their flags */
#define NBD_CMD_READ 0
#define NBD_CMD_WRITE 1
#define NBD_CMD_DISC 2
#define NBD_CMD_FLUSH 3
#define NBD_CMD_TRIM 4
#define NBD_CMD_CACHE 5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7
#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* structured reply chunks */
#define NBD_REPLY_FLAG_DONE (1u << 0)
#define NBD_REPLY_TYPE_NONE 0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR 0x8001

/* errors on the wire */
#define NBD_EPERM 1
#define NBD_EIO 5
#define NBD_ENOMEM 12
#define NBD_EINVAL 22
#define NBD_ENOSPC 28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP 95
#define NBD_ESHUTDOWN 108

/* base:allocation */
#define NBD_META_ID_BASE_ALLOCATION 1
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

#define NBD_REQUEST_SIZE 28
#define NBD_MIN_BLOCK 512u
#define NBD_PREF_BLOCK 4096u
/* Options longer than this are hostile: the longest real one carries a
 * 4 KiB export name and a few meta context queries. */
#define NBD_MAX_OPTION_LEN (64u << 10)

struct nbd_export {
	char *name;
	char *description;
	struct vsp_disk *disk;
};

struct nbd_conn;

struct vsp_nbd_server {
	struct vsp_engine *engine;
	char *unix_path;
	char *tcp_host, *tcp_port;
	unsigned max_connections;
	struct nbd_export *exports;
	unsigned nr_exports;
	int listen_fd;
	int wake[2];                /* wakes the accept thread at stop */
	pthread_t accept_thread;
	bool accepting;
	char bound_port[16];        /* TCP: the port actually bound */

	pthread_mutex_t lock;       /* everything below */
	pthread_cond_t cond;
	bool stopping;
	unsigned nr_handshakes;
	int *handshake_fds;         /* max_connections slots, -1 = free */
	struct nbd_conn *conns;     /* in transmission */
	unsigned nr_conns;
	unsigned stop_calls;        /* stop calls posted to workers, not yet run */
};

/* What the handshake agreed, handed to a worker. */
struct nbd_session {
	int fd;
	const struct nbd_export *export;
	bool structured;
	bool meta_alloc;
};

/* Starts transmission on a worker (takes the fd; frees nothing of s). */
int nbd_conn_start(struct vsp_nbd_server *srv, const struct nbd_session *s);
/* Asks every connection to stop reading, answer what it has, and close. */
void nbd_conn_stop_all(struct vsp_nbd_server *srv);
uint16_t nbd_transmission_flags(const struct nbd_export *e, bool structured);

#endif
