/* nbd_conn.c - the NBD transmission phase, run entirely on one engine worker.
 *
 * Receive: one recv at a time into a 64 KiB buffer; every complete request
 * header in it is checked at the edge (magic, command, flags, range, length)
 * and turned into an engine request; a WRITE's payload that did not arrive
 * with its header is received straight into the request's own buffer.
 * Requests run concurrently; replies go out in completion order through one
 * sendmsg at a time that carries every reply queued so far.
 *
 * A client that breaks the protocol in a way that leaves the stream
 * unparseable (bad magic, a write payload over the maximum) is hung up on;
 * anything else gets an error reply and the connection goes on.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "nbd_proto.h"

#define RBUF_SIZE (64u << 10)
#define MAX_INFLIGHT 256       /* requests per connection before we stop reading */
/* Bytes of request buffers one connection may hold: beyond it, headers wait
 * unparsed in the receive buffer (and then in the socket), so a client that
 * pipelines large reads and never reads the replies cannot grow us. */
#define MAX_HELD_BYTES (64u << 20)
#define SEND_IOV_MAX 64
#define MAX_STATUS_EXTENTS 1024

struct nbd_req {
	struct vsp_req vreq;
	struct nbd_conn *c;
	uint64_t handle;
	uint64_t offset;
	uint32_t length;
	uint16_t type, flags;
	void *buf;                 /* READ/WRITE data */
	struct iovec data_iov;
	/* reply */
	struct nbd_req *next_reply;
	uint8_t hdr[32];
	struct iovec riov[3];
	unsigned riovcnt;
	void *extra;               /* block status descriptors, error text */
};

struct nbd_conn {
	struct vsp_nbd_server *srv;
	struct vsp_worker *w;
	int fd;
	const struct nbd_export *export;
	struct vsp_disk *disk;
	uint64_t size;
	bool structured, meta_alloc, read_only;
	struct nbd_conn *next;     /* server list */

	/* receiving */
	struct vsp_io recv_io;
	uint8_t *rbuf;
	size_t rlen;
	bool recv_inflight;
	struct nbd_req *rx_write;  /* a WRITE whose payload is still arriving */
	uint32_t rx_got;
	bool closing;              /* no more requests: DISC, error, or stop */

	/* sending */
	struct vsp_io send_io;
	struct nbd_req *sq_head, *sq_tail;
	size_t sent_of_head;       /* bytes of the head reply already sent */
	bool send_inflight;
	struct msghdr msg;
	struct iovec siov[SEND_IOV_MAX];
	bool dead;                 /* the socket failed: replies are dropped */

	unsigned inflight;         /* requests received and not yet fully replied */
	uint64_t held_bytes;       /* their READ/WRITE buffers */
	bool freed_check;
};

static void conn_maybe_close(struct nbd_conn *c);
static void recv_arm(struct nbd_conn *c);
static bool parse_requests(struct nbd_conn *c);

static void req_free(struct nbd_req *r)
{
	if (r->buf)
		r->c->held_bytes -= r->length;
	vsp_buf_put(r->c->w, r->buf, r->length);
	free(r->extra);
	free(r);
}

/* ---- replies ------------------------------------------------------------------ */

static uint32_t nbd_errno(int err)
{
	switch (err) {
	case 0:
		return 0;
	case -EPERM:
	case -EROFS:
		return NBD_EPERM;
	case -ENOMEM:
		return NBD_ENOMEM;
	case -EINVAL:
		return NBD_EINVAL;
	case -ENOSPC:
	case -EFBIG:
		return NBD_ENOSPC;
	case -EOVERFLOW:
		return NBD_EOVERFLOW;
	case -ENOTSUP:
		return NBD_ENOTSUP;
	case -ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

static void send_pump(struct nbd_conn *c);

static void reply_queue(struct nbd_conn *c, struct nbd_req *r)
{
	if (c->dead) {
		req_free(r);
		c->inflight--;
		conn_maybe_close(c);
		return;
	}
	r->next_reply = NULL;
	if (c->sq_tail)
		c->sq_tail->next_reply = r;
	else
		c->sq_head = r;
	c->sq_tail = r;
	send_pump(c);
}

static void put16(uint8_t *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }

/* Structured chunk header (20 bytes) into r->hdr. */
static void chunk_header(struct nbd_req *r, uint16_t flags, uint16_t type, uint32_t len)
{
	put32(r->hdr, NBD_STRUCTURED_REPLY_MAGIC);
	put16(r->hdr + 4, flags);
	put16(r->hdr + 6, type);
	put64(r->hdr + 8, r->handle);
	put32(r->hdr + 16, len);
}

/* A reply carrying no data: success, or an error. */
static void reply_status(struct nbd_conn *c, struct nbd_req *r, int err)
{
	uint32_t code = nbd_errno(err);

	if (!c->structured || code == 0) {
		put32(r->hdr, NBD_SIMPLE_REPLY_MAGIC);
		put32(r->hdr + 4, code);
		put64(r->hdr + 8, r->handle);
		r->riov[0] = (struct iovec){r->hdr, 16};
		r->riovcnt = 1;
		if (c->structured) { /* a NONE chunk with DONE is the structured "ok" */
			chunk_header(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
			r->riov[0].iov_len = 20;
		}
	} else {
		/* ERROR chunk: error, message length 0 */
		chunk_header(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6);
		put32(r->hdr + 20, code);
		put16(r->hdr + 24, 0);
		r->riov[0] = (struct iovec){r->hdr, 26};
		r->riovcnt = 1;
	}
	reply_queue(c, r);
}

static void reply_read(struct nbd_conn *c, struct nbd_req *r)
{
	if (c->structured) {
		chunk_header(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 8 + r->length);
		put64(r->hdr + 20, r->offset);
		r->riov[0] = (struct iovec){r->hdr, 28};
	} else {
		put32(r->hdr, NBD_SIMPLE_REPLY_MAGIC);
		put32(r->hdr + 4, 0);
		put64(r->hdr + 8, r->handle);
		r->riov[0] = (struct iovec){r->hdr, 16};
	}
	r->riov[1] = (struct iovec){r->buf, r->length};
	r->riovcnt = 2;
	reply_queue(c, r);
}

static size_t reply_bytes(const struct nbd_req *r)
{
	size_t n = 0;

	for (unsigned i = 0; i < r->riovcnt; i++)
		n += r->riov[i].iov_len;
	return n;
}

static void send_done(struct vsp_io *io, int res)
{
	struct nbd_conn *c = (struct nbd_conn *)((char *)io - offsetof(struct nbd_conn, send_io));
	size_t left = res > 0 ? (size_t)res : 0;

	c->send_inflight = false;
	if (res <= 0) {
		if (res < 0 && res != -EPIPE && res != -ECONNRESET)
			vsp_log(c->srv->engine, VSP_LOG_INFO, "client send failed: %s", strerror(-res));
		c->dead = true;
		c->closing = true;
	}
	while (c->sq_head && (c->dead || left)) {
		struct nbd_req *r = c->sq_head;
		size_t rest = reply_bytes(r) - c->sent_of_head;

		if (!c->dead && left < rest) {
			c->sent_of_head += left;
			left = 0;
			break;
		}
		if (!c->dead)
			left -= rest;
		c->sent_of_head = 0;
		c->sq_head = r->next_reply;
		if (!c->sq_head)
			c->sq_tail = NULL;
		req_free(r);
		c->inflight--;
	}
	/* Headers left unparsed at a limit are taken up as replies leave. */
	if (!c->rx_write && !c->closing && !c->dead && !parse_requests(c))
		c->closing = true;
	send_pump(c);
	recv_arm(c);
	conn_maybe_close(c);
}

static void send_pump(struct nbd_conn *c)
{
	struct io_uring_sqe *sqe;
	unsigned n = 0;
	size_t skip = c->sent_of_head;

	if (c->send_inflight || !c->sq_head || c->dead)
		return;
	for (struct nbd_req *r = c->sq_head; r && n < SEND_IOV_MAX; r = r->next_reply)
		for (unsigned i = 0; i < r->riovcnt && n < SEND_IOV_MAX; i++) {
			struct iovec v = r->riov[i];

			if (skip >= v.iov_len) {
				skip -= v.iov_len;
				continue;
			}
			v.iov_base = (char *)v.iov_base + skip;
			v.iov_len -= skip;
			skip = 0;
			if (v.iov_len)
				c->siov[n++] = v;
		}
	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->siov;
	c->msg.msg_iovlen = n;
	c->send_inflight = true;
	sqe = vsp_worker_sqe(c->w);
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, &c->send_io);
}

/* ---- commands ------------------------------------------------------------------ */

static void engine_done(struct vsp_req *vr, int result)
{
	struct nbd_req *r = (struct nbd_req *)vr;

	if (r->type == NBD_CMD_READ && result == 0)
		reply_read(r->c, r);
	else
		reply_status(r->c, r, result);
}

static void block_status(struct nbd_conn *c, struct nbd_req *r)
{
	unsigned max = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_STATUS_EXTENTS;
	uint8_t *d = malloc(4 + 8ull * max);
	uint64_t pos = r->offset, end = r->offset + r->length;
	unsigned n = 0;
	int ret = 0;

	if (!d) {
		reply_status(c, r, -ENOMEM);
		return;
	}
	while (pos < end && n < max) {
		uint64_t run;
		bool zero;
		uint32_t flags;

		ret = vsp_disk_status(c->disk, pos, end - pos, &run, &zero);
		if (ret < 0)
			break;
		flags = zero ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
		/* Neighbouring runs of one kind (data in two files, say) merge. */
		if (n && be32toh(*(uint32_t *)(d + 4 + 8 * (n - 1) + 4)) == flags) {
			uint8_t *last = d + 4 + 8 * (n - 1);

			put32(last, be32toh(*(uint32_t *)last) + (uint32_t)run);
		} else {
			put32(d + 4 + 8 * n, (uint32_t)run);
			put32(d + 4 + 8 * n + 4, flags);
			n++;
		}
		pos += run;
	}
	if (ret < 0) {
		free(d);
		reply_status(c, r, ret);
		return;
	}
	put32(d, NBD_META_ID_BASE_ALLOCATION);
	r->extra = d;
	chunk_header(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + 8 * n);
	r->riov[0] = (struct iovec){r->hdr, 20};
	r->riov[1] = (struct iovec){d, 4 + 8ull * n};
	r->riovcnt = 2;
	reply_queue(c, r);
}

/* Checks a request at the edge.  0, or the errno to answer with. */
static int validate(const struct nbd_conn *c, const struct nbd_req *r)
{
	uint16_t allowed = NBD_CMD_FLAG_FUA;

	switch (r->type) {
	case NBD_CMD_READ:
		allowed |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed |= NBD_CMD_FLAG_NO_HOLE;
		break;
	case NBD_CMD_BLOCK_STATUS:
		allowed |= NBD_CMD_FLAG_REQ_ONE;
		if (!c->meta_alloc)
			return -EINVAL; /* no context negotiated */
		break;
	case NBD_CMD_WRITE:
	case NBD_CMD_TRIM:
	case NBD_CMD_FLUSH:
		break;
	default:
		return -EINVAL; /* CACHE is not advertised; RESIZE and unknown ones neither */
	}
	if (r->flags & ~allowed)
		return -EINVAL;
	if ((r->flags & NBD_CMD_FLAG_DF) && !c->structured)
		return -EINVAL;
	if (r->type == NBD_CMD_FLUSH)
		return 0; /* offset and length are reserved */
	if (r->offset > c->size || c->size - r->offset < r->length)
		return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES ? -ENOSPC : -EINVAL;
	if (r->length == 0)
		return -EINVAL;
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) && r->length > VSP_MAX_REQUEST)
		return -EOVERFLOW;
	if (c->read_only &&
	    (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES || r->type == NBD_CMD_TRIM))
		return -EPERM;
	return 0;
}

static void dispatch(struct nbd_conn *c, struct nbd_req *r)
{
	int err = validate(c, r);
	struct vsp_req *v = &r->vreq;

	if (err) {
		vsp_log(c->srv->engine, VSP_LOG_DEBUG,
			"refused command %u flags %#x at %llu+%u: %s", r->type, r->flags,
			(unsigned long long)r->offset, r->length, strerror(-err));
		reply_status(c, r, err);
		return;
	}
	if (r->type == NBD_CMD_BLOCK_STATUS) {
		block_status(c, r);
		return;
	}
	v->flags = (r->flags & NBD_CMD_FLAG_FUA) ? VSP_REQ_FUA : 0;
	v->offset = r->offset;
	v->length = r->length;
	v->done = engine_done;
	v->iov = NULL;
	v->iovcnt = 0;
	switch (r->type) {
	case NBD_CMD_READ:
		r->buf = vsp_buf_get(c->w, r->length);
		if (!r->buf) {
			reply_status(c, r, -ENOMEM);
			return;
		}
		c->held_bytes += r->length;
		v->op = VSP_OP_READ;
		break;
	case NBD_CMD_WRITE:
		v->op = VSP_OP_WRITE;
		break;
	case NBD_CMD_WRITE_ZEROES:
		v->op = VSP_OP_WRITE_ZEROES;
		break;
	case NBD_CMD_TRIM:
		v->op = VSP_OP_TRIM;
		break;
	default:
		v->op = VSP_OP_FLUSH;
		break;
	}
	if (r->buf) {
		r->data_iov = (struct iovec){r->buf, r->length};
		v->iov = &r->data_iov;
		v->iovcnt = 1;
	}
	vsp_submit(c->w, c->disk, v);
}

/* ---- receiving ---------------------------------------------------------------- */

static void recv_done(struct vsp_io *io, int res);

/* Parses what the buffer holds.  Returns false when the stream is broken. */
static bool parse_requests(struct nbd_conn *c)
{
	size_t pos = 0;
	bool ok = true;

	while (!c->closing && c->rlen - pos >= NBD_REQUEST_SIZE && c->inflight < MAX_INFLIGHT &&
	       c->held_bytes < MAX_HELD_BYTES) {
		const uint8_t *h = c->rbuf + pos;
		uint32_t magic, len;
		uint16_t flags, type;
		uint64_t handle, off;
		struct nbd_req *r;

		memcpy(&magic, h, 4);
		memcpy(&flags, h + 4, 2);
		memcpy(&type, h + 6, 2);
		memcpy(&handle, h + 8, 8);
		memcpy(&off, h + 16, 8);
		memcpy(&len, h + 24, 4);
		if (be32toh(magic) != NBD_REQUEST_MAGIC) {
			vsp_log(c->srv->engine, VSP_LOG_WARN,
				"client sent a request with bad magic %#x: hanging up", be32toh(magic));
			ok = false;
			break;
		}
		pos += NBD_REQUEST_SIZE;
		type = be16toh(type);
		if (type == NBD_CMD_DISC) {
			c->closing = true;
			break;
		}
		r = calloc(1, sizeof(*r));
		if (!r) {
			ok = false;
			break;
		}
		r->c = c;
		r->handle = be64toh(handle); /* opaque: echoed as received */
		r->offset = be64toh(off);
		r->length = be32toh(len);
		r->type = type;
		r->flags = be16toh(flags);
		c->inflight++;
		if (type != NBD_CMD_WRITE) {
			dispatch(c, r);
			continue;
		}
		if (r->length > VSP_MAX_REQUEST) {
			/* The payload cannot be skipped safely: the stream is lost. */
			vsp_log(c->srv->engine, VSP_LOG_WARN,
				"client sent a %u-byte write (maximum %u): hanging up", r->length,
				VSP_MAX_REQUEST);
			c->inflight--;
			req_free(r);
			ok = false;
			break;
		}
		r->buf = vsp_buf_get(c->w, r->length);
		if (r->buf)
			c->held_bytes += r->length;
		if (!r->buf) {
			c->inflight--;
			req_free(r);
			ok = false;
			break;
		}
		{
			size_t have = c->rlen - pos < r->length ? c->rlen - pos : r->length;

			memcpy(r->buf, c->rbuf + pos, have);
			pos += have;
			if (have < r->length) {
				c->rx_write = r;
				c->rx_got = (uint32_t)have;
				break;
			}
		}
		dispatch(c, r);
	}
	memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
	c->rlen -= pos;
	return ok;
}

static void recv_arm(struct nbd_conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_inflight || c->closing || c->inflight >= MAX_INFLIGHT ||
	    (!c->rx_write && c->rlen == RBUF_SIZE))
		return;
	sqe = vsp_worker_sqe(c->w);
	if (c->rx_write)
		io_uring_prep_recv(sqe, c->fd, (char *)c->rx_write->buf + c->rx_got,
				   c->rx_write->length - c->rx_got, 0);
	else
		io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen, 0);
	io_uring_sqe_set_data(sqe, &c->recv_io);
	c->recv_inflight = true;
}

static void recv_done(struct vsp_io *io, int res)
{
	struct nbd_conn *c = (struct nbd_conn *)((char *)io - offsetof(struct nbd_conn, recv_io));

	c->recv_inflight = false;
	if (res <= 0) {
		if (res < 0 && res != -ECANCELED && res != -ECONNRESET)
			vsp_log(c->srv->engine, VSP_LOG_INFO, "client receive failed: %s",
				strerror(-res));
		c->closing = true; /* EOF, error or cancelled by stop */
		conn_maybe_close(c);
		return;
	}
	if (c->rx_write) {
		c->rx_got += (uint32_t)res;
		if (c->rx_got == c->rx_write->length) {
			struct nbd_req *r = c->rx_write;

			c->rx_write = NULL;
			dispatch(c, r);
		}
	} else {
		c->rlen += (size_t)res;
	}
	if (!c->rx_write && !parse_requests(c))
		c->closing = true;
	recv_arm(c);
	conn_maybe_close(c);
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void conn_maybe_close(struct nbd_conn *c)
{
	struct vsp_nbd_server *s = c->srv;

	/* A write still receiving its payload counts in inflight but will never
	 * be answered once the connection is closing. */
	if (!c->closing || c->recv_inflight || c->send_inflight ||
	    c->inflight > (c->rx_write ? 1u : 0u) || c->freed_check)
		return;
	c->freed_check = true;
	if (c->rx_write) {
		/* A write whose payload never fully arrived was never answered. */
		req_free(c->rx_write);
		c->rx_write = NULL;
		c->inflight--;
	}
	close(c->fd);
	pthread_mutex_lock(&s->lock);
	for (struct nbd_conn **p = &s->conns; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	s->nr_conns--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	free(c->rbuf);
	free(c);
}

static void conn_begin(void *arg)
{
	struct nbd_conn *c = arg;

	recv_arm(c);
	conn_maybe_close(c); /* stopped before it began */
}

int nbd_conn_start(struct vsp_nbd_server *srv, const struct nbd_session *s)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	c->rbuf = malloc(RBUF_SIZE);
	if (!c->rbuf) {
		free(c);
		return -ENOMEM;
	}
	c->srv = srv;
	c->fd = s->fd;
	c->export = s->export;
	c->disk = s->export->disk;
	c->size = vsp_disk_size(c->disk);
	c->read_only = vsp_disk_read_only(c->disk);
	c->structured = s->structured;
	c->meta_alloc = s->meta_alloc;
	c->recv_io.complete = recv_done;
	c->send_io.complete = send_done;
	c->w = vsp_engine_pick_worker(srv->engine);
	/* Registered before the worker sees it; the caller holds srv->lock. */
	c->next = srv->conns;
	srv->conns = c;
	srv->nr_conns++;
	ret = vsp_worker_call(c->w, conn_begin, c);
	if (ret < 0) {
		srv->conns = c->next;
		srv->nr_conns--;
		free(c->rbuf);
		free(c);
	}
	return ret;
}

static void conn_stop(struct nbd_conn *c)
{
	c->closing = true;
	if (c->recv_inflight) {
		/* The recv completes with -ECANCELED and closes the connection
		 * once every request in flight is answered. */
		vsp_worker_cancel(c->w, &c->recv_io);
	}
	conn_maybe_close(c);
}

struct stop_call {
	struct vsp_nbd_server *srv;
	struct vsp_worker *w;
};

/* On worker w: stops w's connections.  Connections are freed only on their
 * own worker, so none of them can go away while this runs. */
static void stop_worker_conns(void *arg)
{
	struct stop_call *sc = arg;
	struct vsp_nbd_server *srv = sc->srv;
	struct nbd_conn **mine = NULL;
	unsigned n = 0;

	pthread_mutex_lock(&srv->lock);
	mine = malloc((srv->nr_conns + 1) * sizeof(*mine));
	for (struct nbd_conn *c = srv->conns; c && mine; c = c->next)
		if (c->w == sc->w)
			mine[n++] = c;
	pthread_mutex_unlock(&srv->lock);
	for (unsigned i = 0; i < n; i++)
		conn_stop(mine[i]);
	if (!mine)
		vsp_log(srv->engine, VSP_LOG_ERROR, "out of memory stopping connections");
	free(mine);
	free(sc);
	/* The server may be freed once the last of these calls is done. */
	pthread_mutex_lock(&srv->lock);
	srv->stop_calls--;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

void nbd_conn_stop_all(struct vsp_nbd_server *srv)
{
	struct vsp_engine *e = srv->engine;

	for (unsigned i = 0; i < e->nr_workers; i++) {
		struct stop_call *sc = malloc(sizeof(*sc));

		if (sc) {
			sc->srv = srv;
			sc->w = &e->workers[i];
		}
		pthread_mutex_lock(&srv->lock);
		srv->stop_calls++;
		pthread_mutex_unlock(&srv->lock);
		if (!sc || vsp_worker_call(&e->workers[i], stop_worker_conns, sc) < 0) {
			vsp_log(e, VSP_LOG_ERROR, "cannot stop the connections of worker %u", i);
			free(sc);
			pthread_mutex_lock(&srv->lock);
			srv->stop_calls--;
			pthread_mutex_unlock(&srv->lock);
		}
	}
}
