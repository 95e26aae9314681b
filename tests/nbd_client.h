/* nbd_client.h - a small raw NBD client for the tests (and the NBD fuzz
 * target): the fixed newstyle handshake, simple and structured replies, and
 * every I/O bounded by a poll timeout so that a server that stops answering
 * fails a test instead of hanging it.
 *
 * It deliberately lets a caller send anything - raw bytes, any option with
 * any payload, request headers with any field - so a hostile session is as
 * short to write as a good one.
 *
 * Return convention: negative = transport or protocol failure (-errno;
 * -ETIMEDOUT when the server said nothing in time, -ECONNRESET at EOF,
 * -EPROTO when the server broke the protocol); 0 = success; positive = the
 * error the server answered (an NBD errno in transmission, an NBD_REP_ERR_*
 * value in the handshake).
 */
#ifndef NBD_CLIENT_H
#define NBD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wire constants, written from doc/proto.md of the NBD project (the server's
 * own copies are private to blockvsp/, and a test should not borrow them). */
#define NBDC_INIT_MAGIC 0x4e42444d41474943ull
#define NBDC_OPTS_MAGIC 0x49484156454f5054ull
#define NBDC_REP_MAGIC 0x0003e889045565a9ull
#define NBDC_REQUEST_MAGIC 0x25609513u
#define NBDC_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBDC_STRUCTURED_REPLY_MAGIC 0x668e33efu

#define NBDC_FLAG_FIXED_NEWSTYLE 1u
#define NBDC_FLAG_NO_ZEROES 2u

#define NBDC_FLAG_HAS_FLAGS (1u << 0)
#define NBDC_FLAG_READ_ONLY (1u << 1)
#define NBDC_FLAG_SEND_FLUSH (1u << 2)
#define NBDC_FLAG_SEND_FUA (1u << 3)
#define NBDC_FLAG_SEND_TRIM (1u << 5)
#define NBDC_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBDC_FLAG_SEND_DF (1u << 7)
#define NBDC_FLAG_CAN_MULTI_CONN (1u << 8)

#define NBDC_OPT_EXPORT_NAME 1u
#define NBDC_OPT_ABORT 2u
#define NBDC_OPT_LIST 3u
#define NBDC_OPT_STARTTLS 5u
#define NBDC_OPT_INFO 6u
#define NBDC_OPT_GO 7u
#define NBDC_OPT_STRUCTURED_REPLY 8u
#define NBDC_OPT_LIST_META_CONTEXT 9u
#define NBDC_OPT_SET_META_CONTEXT 10u

#define NBDC_REP_ACK 1u
#define NBDC_REP_SERVER 2u
#define NBDC_REP_INFO 3u
#define NBDC_REP_META_CONTEXT 4u
#define NBDC_REP_ERR_BIT 0x80000000u
#define NBDC_REP_ERR_UNSUP (NBDC_REP_ERR_BIT + 1)
#define NBDC_REP_ERR_POLICY (NBDC_REP_ERR_BIT + 2)
#define NBDC_REP_ERR_INVALID (NBDC_REP_ERR_BIT + 3)
#define NBDC_REP_ERR_UNKNOWN (NBDC_REP_ERR_BIT + 6)
/* What the nbdc_* calls return (positive) for an option error reply. */
#define NBDC_OPTERR(t) ((int)(((uint32_t)(t) & 0x7fffffffu) | 0x40000000u))

#define NBDC_INFO_EXPORT 0
#define NBDC_INFO_NAME 1
#define NBDC_INFO_DESCRIPTION 2
#define NBDC_INFO_BLOCK_SIZE 3

#define NBDC_CMD_READ 0
#define NBDC_CMD_WRITE 1
#define NBDC_CMD_DISC 2
#define NBDC_CMD_FLUSH 3
#define NBDC_CMD_TRIM 4
#define NBDC_CMD_CACHE 5
#define NBDC_CMD_WRITE_ZEROES 6
#define NBDC_CMD_BLOCK_STATUS 7

#define NBDC_CMD_FLAG_FUA (1u << 0)
#define NBDC_CMD_FLAG_NO_HOLE (1u << 1)
#define NBDC_CMD_FLAG_DF (1u << 2)
#define NBDC_CMD_FLAG_REQ_ONE (1u << 3)
#define NBDC_CMD_FLAG_FAST_ZERO (1u << 4)

#define NBDC_REPLY_FLAG_DONE 1u
#define NBDC_REPLY_TYPE_NONE 0
#define NBDC_REPLY_TYPE_OFFSET_DATA 1
#define NBDC_REPLY_TYPE_OFFSET_HOLE 2
#define NBDC_REPLY_TYPE_BLOCK_STATUS 5
#define NBDC_REPLY_TYPE_ERROR 0x8001
#define NBDC_REPLY_TYPE_ERROR_OFFSET 0x8002

#define NBDC_EPERM 1
#define NBDC_EIO 5
#define NBDC_ENOMEM 12
#define NBDC_EINVAL 22
#define NBDC_ENOSPC 28
#define NBDC_EOVERFLOW 75
#define NBDC_ENOTSUP 95
#define NBDC_ESHUTDOWN 108

#define NBDC_STATE_HOLE 1u
#define NBDC_STATE_ZERO 2u

#define NBDC_TIMEOUT_MS 20000

/* What nbdc_open negotiates. */
enum nbdc_want {
	NBDC_WANT_STRUCTURED = 1u << 0, /* NBD_OPT_STRUCTURED_REPLY */
	NBDC_WANT_META = 1u << 1,       /* and base:allocation */
	NBDC_WANT_EXPORT_NAME = 1u << 2, /* old NBD_OPT_EXPORT_NAME instead of GO */
	NBDC_WANT_ZEROES = 1u << 3,     /* do not ask for NO_ZEROES */
};

struct nbdc {
	int fd;
	int timeout_ms;
	uint16_t hflags;        /* handshake flags of the greeting */
	uint64_t size;          /* from NBD_INFO_EXPORT */
	uint16_t eflags;        /* transmission flags */
	bool structured;
	bool meta;              /* base:allocation agreed */
	uint32_t meta_id;
	uint32_t min_block, pref_block, max_block; /* 0 when not sent */
	uint64_t next_handle;
};

struct nbdc_extent {
	uint32_t length;
	uint32_t flags;         /* NBDC_STATE_* */
};

/* A reply to one request.  For reads, data lands in the caller's buffer;
 * for block status, descriptors in ext. */
struct nbdc_reply {
	uint64_t handle;
	uint32_t error;         /* NBD errno, 0 = success */
	bool structured;
	unsigned chunks;
	uint64_t data_bytes;    /* bytes of OFFSET_DATA / OFFSET_HOLE received */
	struct nbdc_extent *ext;
	unsigned ext_cap, nr_ext;
	uint32_t ext_id;
};

/* ---- raw I/O ------------------------------------------------------------- */

int nbdc_connect_unix(const char *path);
int nbdc_send(int fd, const void *buf, size_t len, int timeout_ms);
int nbdc_recv(int fd, void *buf, size_t len, int timeout_ms);
/* Reads and discards until EOF: 0 at EOF, -ETIMEDOUT when the server kept
 * the connection open.  *got (may be NULL) counts the bytes discarded. */
int nbdc_wait_eof(int fd, int timeout_ms, size_t *got);

/* ---- handshake ------------------------------------------------------------- */

void nbdc_init(struct nbdc *c, int fd);
/* Reads the greeting (checks both magics) and sends the client flags. */
int nbdc_greeting(struct nbdc *c, uint32_t cflags);
int nbdc_opt_send(struct nbdc *c, uint32_t opt, const void *data, uint32_t len);
/* One option reply.  Data beyond cap is read and dropped; *len says how
 * much the server sent. */
int nbdc_opt_reply(struct nbdc *c, uint32_t *opt, uint32_t *type, void *buf, uint32_t cap,
		   uint32_t *len);
/* Reads replies to opt until ACK (0) or an error reply (its type, > 0). */
int nbdc_opt_simple(struct nbdc *c, uint32_t opt);
/* NBD_OPT_INFO or NBD_OPT_GO for name, asking for the block size: fills
 * size, eflags, block sizes.  0 on ACK, the NBD_REP_ERR_* type otherwise. */
int nbdc_info_go(struct nbdc *c, uint32_t opt, const char *name);
/* SET (or LIST) META CONTEXT for name with the given queries; counts the
 * contexts returned and remembers the id of base:allocation. */
int nbdc_meta(struct nbdc *c, uint32_t opt, const char *name, const char *const *queries,
	      unsigned nr, unsigned *nr_contexts);
/* Connect + greeting + options + GO (or EXPORT_NAME).  0, or negative/positive
 * as above; the fd is closed on failure. */
int nbdc_open(struct nbdc *c, const char *socket_path, const char *name, unsigned want);
/* NBD_CMD_DISC (best effort) and close. */
void nbdc_close(struct nbdc *c);

/* ---- transmission ------------------------------------------------------------ */

int nbdc_request(struct nbdc *c, uint16_t flags, uint16_t type, uint64_t handle, uint64_t offset,
		 uint32_t length, const void *payload, size_t payload_len);
/* Reads one whole reply (all chunks up to DONE for structured replies).
 * buf/buf_off/buf_len: where OFFSET_DATA of a read goes (buf_off is the
 * read's disk offset); chunks outside it are a protocol error. */
int nbdc_reply(struct nbdc *c, struct nbdc_reply *r, void *buf, uint64_t buf_off, size_t buf_len);

/* One request, one reply (handles checked). */
int nbdc_pread(struct nbdc *c, void *buf, uint32_t len, uint64_t off, uint16_t flags);
int nbdc_pwrite(struct nbdc *c, const void *buf, uint32_t len, uint64_t off, uint16_t flags);
int nbdc_cmd(struct nbdc *c, uint16_t type, uint16_t flags, uint64_t off, uint32_t len);
int nbdc_block_status(struct nbdc *c, uint64_t off, uint32_t len, uint16_t flags,
		      struct nbdc_extent *ext, unsigned cap, unsigned *n);

const char *nbdc_strerror(int ret);

#endif
