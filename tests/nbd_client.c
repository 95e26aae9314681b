/* nbd_client.c - the tests' raw NBD client (see nbd_client.h). */
#include "nbd_client.h"

#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void put16(uint8_t *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int64_t left = deadline - now_ms();
		int n;

		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n > 0)
			return 0;
	}
}

int nbdc_connect_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

int nbdc_send(int fd, const void *buf, size_t len, int timeout_ms)
{
	const char *p = buf;
	int64_t deadline = now_ms() + timeout_ms;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			int ret = wait_fd(fd, POLLOUT, deadline);

			if (ret < 0)
				return ret;
			continue;
		}
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int nbdc_recv(int fd, void *buf, size_t len, int timeout_ms)
{
	char *p = buf;
	int64_t deadline = now_ms() + timeout_ms;

	while (len) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			int ret = wait_fd(fd, POLLIN, deadline);

			if (ret < 0)
				return ret;
			continue;
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int nbdc_wait_eof(int fd, int timeout_ms, size_t *got)
{
	char buf[65536];
	int64_t deadline = now_ms() + timeout_ms;

	if (got)
		*got = 0;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == 0)
			return 0;
		if (n < 0 && errno == ECONNRESET)
			return 0; /* a hang-up with unread data in the server's queue */
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			int ret = wait_fd(fd, POLLIN, deadline);

			if (ret < 0)
				return ret;
			continue;
		}
		if (n < 0)
			return -errno;
		if (got)
			*got += (size_t)n;
	}
}

/* ---- handshake ------------------------------------------------------------- */

void nbdc_init(struct nbdc *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->timeout_ms = NBDC_TIMEOUT_MS;
	c->next_handle = 1;
}

int nbdc_greeting(struct nbdc *c, uint32_t cflags)
{
	uint8_t g[18], f[4];
	int ret = nbdc_recv(c->fd, g, sizeof(g), c->timeout_ms);

	if (ret < 0)
		return ret;
	if (get64(g) != NBDC_INIT_MAGIC || get64(g + 8) != NBDC_OPTS_MAGIC)
		return -EPROTO;
	c->hflags = get16(g + 16);
	put32(f, cflags);
	return nbdc_send(c->fd, f, 4, c->timeout_ms);
}

int nbdc_opt_send(struct nbdc *c, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];
	int ret;

	put64(h, NBDC_OPTS_MAGIC);
	put32(h + 8, opt);
	put32(h + 12, len);
	ret = nbdc_send(c->fd, h, sizeof(h), c->timeout_ms);
	if (ret == 0 && len)
		ret = nbdc_send(c->fd, data, len, c->timeout_ms);
	return ret;
}

int nbdc_opt_reply(struct nbdc *c, uint32_t *opt, uint32_t *type, void *buf, uint32_t cap,
		   uint32_t *len)
{
	uint8_t h[20], sink[4096];
	uint32_t l, keep;
	int ret = nbdc_recv(c->fd, h, sizeof(h), c->timeout_ms);

	if (ret < 0)
		return ret;
	if (get64(h) != NBDC_REP_MAGIC)
		return -EPROTO;
	*opt = get32(h + 8);
	*type = get32(h + 12);
	l = get32(h + 16);
	if (len)
		*len = l;
	keep = l < cap ? l : cap;
	if (keep) {
		ret = nbdc_recv(c->fd, buf, keep, c->timeout_ms);
		if (ret < 0)
			return ret;
	}
	for (l -= keep; l && ret == 0;) {
		uint32_t n = l < sizeof(sink) ? l : (uint32_t)sizeof(sink);

		ret = nbdc_recv(c->fd, sink, n, c->timeout_ms);
		l -= n;
	}
	return ret;
}

int nbdc_opt_simple(struct nbdc *c, uint32_t opt)
{
	for (;;) {
		uint32_t o, type;
		int ret = nbdc_opt_reply(c, &o, &type, NULL, 0, NULL);

		if (ret < 0)
			return ret;
		if (o != opt)
			return -EPROTO;
		if (type == NBDC_REP_ACK)
			return 0;
		if (type & NBDC_REP_ERR_BIT)
			return NBDC_OPTERR(type);
	}
}

int nbdc_info_go(struct nbdc *c, uint32_t opt, const char *name)
{
	size_t nl = strlen(name);
	uint8_t *d = malloc(4 + nl + 2 + 2);
	uint8_t r[4096 + 16];
	int ret;
	bool got_export = false;

	if (!d)
		return -ENOMEM;
	put32(d, (uint32_t)nl);
	memcpy(d + 4, name, nl);
	put16(d + 4 + nl, 1);
	put16(d + 6 + nl, NBDC_INFO_BLOCK_SIZE);
	ret = nbdc_opt_send(c, opt, d, (uint32_t)(nl + 8));
	free(d);
	while (ret == 0) {
		uint32_t o, type, len;

		ret = nbdc_opt_reply(c, &o, &type, r, sizeof(r), &len);
		if (ret < 0)
			break;
		if (o != opt) {
			ret = -EPROTO;
			break;
		}
		if (type == NBDC_REP_ACK) {
			ret = got_export ? 0 : -EPROTO; /* INFO_EXPORT is mandatory */
			break;
		}
		if (type & NBDC_REP_ERR_BIT) {
			ret = NBDC_OPTERR(type);
			break;
		}
		if (type != NBDC_REP_INFO || len < 2) {
			ret = -EPROTO;
			break;
		}
		switch (get16(r)) {
		case NBDC_INFO_EXPORT:
			if (len != 12) {
				ret = -EPROTO;
				break;
			}
			c->size = get64(r + 2);
			c->eflags = get16(r + 10);
			got_export = true;
			break;
		case NBDC_INFO_BLOCK_SIZE:
			if (len != 14) {
				ret = -EPROTO;
				break;
			}
			c->min_block = get32(r + 2);
			c->pref_block = get32(r + 6);
			c->max_block = get32(r + 10);
			break;
		default:
			break;
		}
	}
	return ret;
}

int nbdc_meta(struct nbdc *c, uint32_t opt, const char *name, const char *const *queries,
	      unsigned nr, unsigned *nr_contexts)
{
	size_t nl = strlen(name), len = 4 + nl + 4;
	uint8_t *d, *p;
	uint8_t r[512];
	int ret;

	for (unsigned i = 0; i < nr; i++)
		len += 4 + strlen(queries[i]);
	d = malloc(len);
	if (!d)
		return -ENOMEM;
	put32(d, (uint32_t)nl);
	memcpy(d + 4, name, nl);
	put32(d + 4 + nl, nr);
	p = d + 8 + nl;
	for (unsigned i = 0; i < nr; i++) {
		size_t ql = strlen(queries[i]);

		put32(p, (uint32_t)ql);
		memcpy(p + 4, queries[i], ql);
		p += 4 + ql;
	}
	ret = nbdc_opt_send(c, opt, d, (uint32_t)len);
	free(d);
	if (nr_contexts)
		*nr_contexts = 0;
	while (ret == 0) {
		uint32_t o, type, rl;

		ret = nbdc_opt_reply(c, &o, &type, r, sizeof(r) - 1, &rl);
		if (ret < 0)
			break;
		if (o != opt) {
			ret = -EPROTO;
			break;
		}
		if (type == NBDC_REP_ACK)
			break;
		if (type & NBDC_REP_ERR_BIT) {
			ret = NBDC_OPTERR(type);
			break;
		}
		if (type != NBDC_REP_META_CONTEXT || rl < 4 || rl >= sizeof(r)) {
			ret = -EPROTO;
			break;
		}
		r[rl] = 0;
		if (nr_contexts)
			(*nr_contexts)++;
		if (!strcmp((char *)r + 4, "base:allocation") && opt == NBDC_OPT_SET_META_CONTEXT) {
			c->meta = true;
			c->meta_id = get32(r);
		}
	}
	return ret;
}

int nbdc_open(struct nbdc *c, const char *socket_path, const char *name, unsigned want)
{
	int fd = nbdc_connect_unix(socket_path), ret;

	if (fd < 0)
		return fd;
	nbdc_init(c, fd);
	ret = nbdc_greeting(c, NBDC_FLAG_FIXED_NEWSTYLE |
				       ((want & NBDC_WANT_ZEROES) ? 0 : NBDC_FLAG_NO_ZEROES));
	if (ret == 0 && (want & (NBDC_WANT_STRUCTURED | NBDC_WANT_META))) {
		ret = nbdc_opt_send(c, NBDC_OPT_STRUCTURED_REPLY, NULL, 0);
		if (ret == 0)
			ret = nbdc_opt_simple(c, NBDC_OPT_STRUCTURED_REPLY);
		if (ret == 0)
			c->structured = true;
	}
	if (ret == 0 && (want & NBDC_WANT_META)) {
		static const char *const q[] = {"base:allocation"};

		ret = nbdc_meta(c, NBDC_OPT_SET_META_CONTEXT, name, q, 1, NULL);
		if (ret == 0 && !c->meta)
			ret = -EPROTO;
	}
	if (ret == 0 && (want & NBDC_WANT_EXPORT_NAME)) {
		uint8_t x[134];
		size_t xl = (want & NBDC_WANT_ZEROES) ? 134 : 10;

		ret = nbdc_opt_send(c, NBDC_OPT_EXPORT_NAME, name, (uint32_t)strlen(name));
		if (ret == 0)
			ret = nbdc_recv(c->fd, x, xl, c->timeout_ms);
		if (ret == 0) {
			c->size = get64(x);
			c->eflags = get16(x + 8);
		}
	} else if (ret == 0) {
		ret = nbdc_info_go(c, NBDC_OPT_GO, name);
	}
	if (ret != 0) {
		close(c->fd);
		c->fd = -1;
	}
	return ret;
}

void nbdc_close(struct nbdc *c)
{
	if (c->fd < 0)
		return;
	nbdc_request(c, 0, NBDC_CMD_DISC, 0, 0, 0, NULL, 0);
	close(c->fd);
	c->fd = -1;
}

/* ---- transmission ------------------------------------------------------------ */

int nbdc_request(struct nbdc *c, uint16_t flags, uint16_t type, uint64_t handle, uint64_t offset,
		 uint32_t length, const void *payload, size_t payload_len)
{
	uint8_t h[28];
	int ret;

	put32(h, NBDC_REQUEST_MAGIC);
	put16(h + 4, flags);
	put16(h + 6, type);
	put64(h + 8, handle);
	put64(h + 16, offset);
	put32(h + 24, length);
	ret = nbdc_send(c->fd, h, sizeof(h), c->timeout_ms);
	if (ret == 0 && payload_len)
		ret = nbdc_send(c->fd, payload, payload_len, c->timeout_ms);
	return ret;
}

static int read_chunk(struct nbdc *c, struct nbdc_reply *r, const uint8_t *h, void *buf,
		      uint64_t buf_off, size_t buf_len)
{
	uint16_t type = get16(h + 6);
	uint32_t len = get32(h + 16);
	uint8_t small[64];
	int ret = 0;

	switch (type) {
	case NBDC_REPLY_TYPE_NONE:
		return len ? -EPROTO : 0;
	case NBDC_REPLY_TYPE_OFFSET_DATA: {
		uint64_t off;

		if (len < 8 || (ret = nbdc_recv(c->fd, small, 8, c->timeout_ms)) < 0)
			return ret < 0 ? ret : -EPROTO;
		off = get64(small);
		len -= 8;
		if (!buf || off < buf_off || off - buf_off > buf_len || len > buf_len - (off - buf_off))
			return -EPROTO;
		ret = nbdc_recv(c->fd, (char *)buf + (off - buf_off), len, c->timeout_ms);
		r->data_bytes += len;
		return ret;
	}
	case NBDC_REPLY_TYPE_OFFSET_HOLE: {
		uint64_t off;
		uint32_t hl;

		if (len != 12 || (ret = nbdc_recv(c->fd, small, 12, c->timeout_ms)) < 0)
			return ret < 0 ? ret : -EPROTO;
		off = get64(small);
		hl = get32(small + 8);
		if (!buf || off < buf_off || off - buf_off > buf_len || hl > buf_len - (off - buf_off))
			return -EPROTO;
		memset((char *)buf + (off - buf_off), 0, hl);
		r->data_bytes += hl;
		return 0;
	}
	case NBDC_REPLY_TYPE_BLOCK_STATUS: {
		if (len < 4 || (len - 4) % 8)
			return -EPROTO;
		if ((ret = nbdc_recv(c->fd, small, 4, c->timeout_ms)) < 0)
			return ret;
		r->ext_id = get32(small);
		for (len -= 4; len; len -= 8) {
			if ((ret = nbdc_recv(c->fd, small, 8, c->timeout_ms)) < 0)
				return ret;
			if (r->nr_ext < r->ext_cap) {
				r->ext[r->nr_ext].length = get32(small);
				r->ext[r->nr_ext].flags = get32(small + 4);
			}
			r->nr_ext++;
		}
		return 0;
	}
	case NBDC_REPLY_TYPE_ERROR:
	case NBDC_REPLY_TYPE_ERROR_OFFSET: {
		uint8_t *e;
		uint16_t ml;

		if (len < 6 || len > (1u << 20))
			return -EPROTO;
		e = malloc(len);
		if (!e)
			return -ENOMEM;
		ret = nbdc_recv(c->fd, e, len, c->timeout_ms);
		if (ret == 0) {
			r->error = get32(e);
			ml = get16(e + 4);
			if (r->error == 0 || 6u + ml + (type == NBDC_REPLY_TYPE_ERROR_OFFSET ? 8u : 0u) != len)
				ret = -EPROTO;
		}
		free(e);
		return ret;
	}
	default:
		return -EPROTO; /* an unknown chunk type we did not negotiate */
	}
}

int nbdc_reply(struct nbdc *c, struct nbdc_reply *r, void *buf, uint64_t buf_off, size_t buf_len)
{
	uint8_t h[20];
	int ret;
	bool first = true;

	r->error = 0;
	r->chunks = 0;
	r->data_bytes = 0;
	r->nr_ext = 0;
	r->structured = false;
	for (;;) {
		uint32_t magic;

		ret = nbdc_recv(c->fd, h, 4, c->timeout_ms);
		if (ret < 0)
			return ret;
		magic = get32(h);
		if (magic == NBDC_SIMPLE_REPLY_MAGIC && first) {
			ret = nbdc_recv(c->fd, h + 4, 12, c->timeout_ms);
			if (ret < 0)
				return ret;
			r->error = get32(h + 4);
			r->handle = get64(h + 8);
			r->chunks = 1;
			return 0; /* a simple read reply's data is the caller's to read */
		}
		if (magic != NBDC_STRUCTURED_REPLY_MAGIC || !c->structured)
			return -EPROTO;
		ret = nbdc_recv(c->fd, h + 4, 16, c->timeout_ms);
		if (ret < 0)
			return ret;
		if (!first && get64(h + 8) != r->handle)
			return -EPROTO; /* chunks of one request are not interleaved here */
		r->handle = get64(h + 8);
		r->structured = true;
		first = false;
		r->chunks++;
		ret = read_chunk(c, r, h, buf, buf_off, buf_len);
		if (ret < 0)
			return ret;
		if (get16(h + 4) & NBDC_REPLY_FLAG_DONE)
			return 0;
	}
}

static int one(struct nbdc *c, uint16_t flags, uint16_t type, uint64_t off, uint32_t len,
	       const void *payload, size_t payload_len, void *buf, struct nbdc_reply *r)
{
	uint64_t handle = c->next_handle++;
	int ret = nbdc_request(c, flags, type, handle, off, len, payload, payload_len);

	if (ret == 0)
		ret = nbdc_reply(c, r, buf, off, buf ? len : 0);
	if (ret == 0 && r->handle != handle)
		ret = -EPROTO;
	if (ret == 0 && !r->structured && buf && r->error == 0)
		ret = nbdc_recv(c->fd, buf, len, c->timeout_ms);
	return ret < 0 ? ret : (int)r->error;
}

int nbdc_pread(struct nbdc *c, void *buf, uint32_t len, uint64_t off, uint16_t flags)
{
	struct nbdc_reply r = {0};
	int ret = one(c, flags, NBDC_CMD_READ, off, len, NULL, 0, buf, &r);

	/* A structured read must carry every byte asked for. */
	if (ret == 0 && r.structured && r.data_bytes != len)
		ret = -EPROTO;
	return ret;
}

int nbdc_pwrite(struct nbdc *c, const void *buf, uint32_t len, uint64_t off, uint16_t flags)
{
	struct nbdc_reply r = {0};

	return one(c, flags, NBDC_CMD_WRITE, off, len, buf, len, NULL, &r);
}

int nbdc_cmd(struct nbdc *c, uint16_t type, uint16_t flags, uint64_t off, uint32_t len)
{
	struct nbdc_reply r = {0};

	return one(c, flags, type, off, len, NULL, 0, NULL, &r);
}

int nbdc_block_status(struct nbdc *c, uint64_t off, uint32_t len, uint16_t flags,
		      struct nbdc_extent *ext, unsigned cap, unsigned *n)
{
	struct nbdc_reply r = {.ext = ext, .ext_cap = cap};
	int ret = one(c, flags, NBDC_CMD_BLOCK_STATUS, off, len, NULL, 0, NULL, &r);

	if (ret == 0 && (r.nr_ext > cap || r.nr_ext == 0 || r.ext_id != c->meta_id))
		ret = -EPROTO;
	*n = r.nr_ext;
	return ret;
}

const char *nbdc_strerror(int ret)
{
	static const struct {
		int v;
		const char *s;
	} names[] = {
		{NBDC_EPERM, "NBD_EPERM"}, {NBDC_EIO, "NBD_EIO"}, {NBDC_ENOMEM, "NBD_ENOMEM"},
		{NBDC_EINVAL, "NBD_EINVAL"}, {NBDC_ENOSPC, "NBD_ENOSPC"},
		{NBDC_EOVERFLOW, "NBD_EOVERFLOW"}, {NBDC_ENOTSUP, "NBD_ENOTSUP"},
		{NBDC_ESHUTDOWN, "NBD_ESHUTDOWN"},
	};
	static __thread char buf[64];

	if (ret < 0)
		return strerror(-ret);
	if (ret == 0)
		return "success";
	if (ret & 0x40000000) {
		snprintf(buf, sizeof(buf), "option error reply %#x",
			 (unsigned)(ret & ~0x40000000) | NBDC_REP_ERR_BIT);
		return buf;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].v == ret)
			return names[i].s;
	snprintf(buf, sizeof(buf), "NBD error %d", ret);
	return buf;
}
