/* nbd_server.c - the NBD listener and the fixed newstyle handshake.
 *
 * One thread accepts.  Each new client gets a short-lived thread for its
 * handshake (blocking I/O with a timeout), so a client that sends garbage
 * slowly, or nothing, stalls only itself.  Once NBD_OPT_GO or
 * NBD_OPT_EXPORT_NAME succeeds the socket moves to an engine worker for the
 * transmission phase (nbd_conn.c).
 */
#include <endian.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine.h"
#include "nbd_proto.h"

#define HANDSHAKE_TIMEOUT_S 30

/* ---- blocking helpers for the handshake ------------------------------------ */

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int opt_reply(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
	uint8_t hdr[20];
	uint64_t magic = htobe64(NBD_REP_MAGIC);
	uint32_t v;
	int ret;

	memcpy(hdr, &magic, 8);
	v = htobe32(opt);
	memcpy(hdr + 8, &v, 4);
	v = htobe32(type);
	memcpy(hdr + 12, &v, 4);
	v = htobe32(len);
	memcpy(hdr + 16, &v, 4);
	ret = send_all(fd, hdr, sizeof(hdr));
	if (ret == 0 && len)
		ret = send_all(fd, data, len);
	return ret;
}

static int opt_error(int fd, uint32_t opt, uint32_t type, const char *msg)
{
	return opt_reply(fd, opt, type, msg, (uint32_t)strlen(msg));
}

static const struct nbd_export *find_export(const struct vsp_nbd_server *s, const char *name,
					    size_t len)
{
	if (len == 0 && s->nr_exports)
		return &s->exports[0]; /* the default export */
	for (unsigned i = 0; i < s->nr_exports; i++)
		if (strlen(s->exports[i].name) == len && !memcmp(s->exports[i].name, name, len))
			return &s->exports[i];
	return NULL;
}

uint16_t nbd_transmission_flags(const struct nbd_export *e, bool structured)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
		     NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_TRIM |
		     /* A flush syncs the file, and writes are acknowledged only once
		      * their metadata is written: any connection's flush covers
		      * every connection's acknowledged writes. */
		     NBD_FLAG_CAN_MULTI_CONN;

	if (vsp_disk_read_only(e->disk))
		f |= NBD_FLAG_READ_ONLY;
	if (structured)
		f |= NBD_FLAG_SEND_DF; /* reads are always one chunk */
	return f;
}

/* ---- option handlers --------------------------------------------------------- */

struct hs {
	struct vsp_nbd_server *srv;
	int fd;
	bool no_zeroes;
	bool structured;
	bool meta_alloc;
	const struct nbd_export *export; /* chosen by GO / EXPORT_NAME */
};

static int send_info(struct hs *h, uint32_t opt, const struct nbd_export *e, const uint16_t *req,
		     unsigned nr_req)
{
	uint8_t buf[12 + 4096];
	uint16_t t;
	uint64_t size = htobe64(vsp_disk_size(e->disk));
	uint16_t flags = htobe16(nbd_transmission_flags(e, h->structured));
	int ret;

	t = htobe16(NBD_INFO_EXPORT);
	memcpy(buf, &t, 2);
	memcpy(buf + 2, &size, 8);
	memcpy(buf + 10, &flags, 2);
	ret = opt_reply(h->fd, opt, NBD_REP_INFO, buf, 12);
	for (unsigned i = 0; i < nr_req && ret == 0; i++) {
		const char *text = NULL;
		size_t len;

		switch (req[i]) {
		case NBD_INFO_NAME:
			text = e->name;
			break;
		case NBD_INFO_DESCRIPTION:
			text = e->description;
			break;
		case NBD_INFO_BLOCK_SIZE: {
			uint32_t v[3] = {htobe32(NBD_MIN_BLOCK), htobe32(NBD_PREF_BLOCK),
					 htobe32(VSP_MAX_REQUEST)};

			t = htobe16(NBD_INFO_BLOCK_SIZE);
			memcpy(buf, &t, 2);
			memcpy(buf + 2, v, 12);
			ret = opt_reply(h->fd, opt, NBD_REP_INFO, buf, 14);
			continue;
		}
		default:
			continue; /* unknown requests are ignored, as the spec says */
		}
		if (!text)
			continue;
		len = strlen(text) < 4096 ? strlen(text) : 4096;
		t = htobe16(req[i]);
		memcpy(buf, &t, 2);
		memcpy(buf + 2, text, len);
		ret = opt_reply(h->fd, opt, NBD_REP_INFO, buf, (uint32_t)(len + 2));
	}
	return ret;
}

/* NBD_OPT_INFO / NBD_OPT_GO.  Returns 1 when GO entered transmission. */
static int opt_info_go(struct hs *h, uint32_t opt, const uint8_t *d, uint32_t len)
{
	uint32_t name_len;
	uint16_t nr, req[64];
	const struct nbd_export *e;
	int ret;

	if (len < 6)
		return opt_error(h->fd, opt, NBD_REP_ERR_INVALID, "option too short");
	memcpy(&name_len, d, 4);
	name_len = be32toh(name_len);
	if (name_len > len - 6)
		return opt_error(h->fd, opt, NBD_REP_ERR_INVALID, "export name length beyond the option");
	memcpy(&nr, d + 4 + name_len, 2);
	nr = be16toh(nr);
	if (6ull + name_len + 2ull * nr != len)
		return opt_error(h->fd, opt, NBD_REP_ERR_INVALID,
				 "number of information requests does not match the option length");
	for (unsigned i = 0; i < nr && i < 64; i++) {
		memcpy(&req[i], d + 6 + name_len + 2 * i, 2);
		req[i] = be16toh(req[i]);
	}
	e = find_export(h->srv, (const char *)d + 4, name_len);
	if (!e)
		return opt_error(h->fd, opt, NBD_REP_ERR_UNKNOWN, "no such export");
	ret = send_info(h, opt, e, req, nr < 64 ? nr : 64);
	if (ret == 0)
		ret = opt_reply(h->fd, opt, NBD_REP_ACK, NULL, 0);
	if (ret == 0 && opt == NBD_OPT_GO) {
		h->export = e;
		return 1;
	}
	return ret;
}

static int opt_list(struct hs *h, uint32_t len)
{
	int ret = 0;

	if (len)
		return opt_error(h->fd, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
	for (unsigned i = 0; i < h->srv->nr_exports && ret == 0; i++) {
		const struct nbd_export *e = &h->srv->exports[i];
		size_t nl = strlen(e->name), dl = e->description ? strlen(e->description) : 0;
		uint8_t *buf = malloc(4 + nl + dl);
		uint32_t v = htobe32((uint32_t)nl);

		if (!buf)
			return -ENOMEM;
		memcpy(buf, &v, 4);
		memcpy(buf + 4, e->name, nl);
		if (dl)
			memcpy(buf + 4 + nl, e->description, dl);
		ret = opt_reply(h->fd, NBD_OPT_LIST, NBD_REP_SERVER, buf, (uint32_t)(4 + nl + dl));
		free(buf);
	}
	return ret ? ret : opt_reply(h->fd, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int send_meta_context(struct hs *h, uint32_t opt)
{
	static const char name[] = "base:allocation";
	uint8_t buf[4 + sizeof(name)];
	uint32_t id = htobe32(NBD_META_ID_BASE_ALLOCATION);

	memcpy(buf, &id, 4);
	memcpy(buf + 4, name, sizeof(name) - 1);
	return opt_reply(h->fd, opt, NBD_REP_META_CONTEXT, buf, 4 + sizeof(name) - 1);
}

/* NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: we know one context,
 * base:allocation. */
static int opt_meta(struct hs *h, uint32_t opt, const uint8_t *d, uint32_t len)
{
	uint32_t name_len, nr, pos;
	bool want_alloc = false;
	int ret;

	if (opt == NBD_OPT_SET_META_CONTEXT && !h->structured)
		return opt_error(h->fd, opt, NBD_REP_ERR_INVALID,
				 "structured replies must be negotiated first");
	if (len < 8)
		return opt_error(h->fd, opt, NBD_REP_ERR_INVALID, "option too short");
	memcpy(&name_len, d, 4);
	name_len = be32toh(name_len);
	if (name_len > len - 8)
		return opt_error(h->fd, opt, NBD_REP_ERR_INVALID, "export name length beyond the option");
	if (!find_export(h->srv, (const char *)d + 4, name_len))
		return opt_error(h->fd, opt, NBD_REP_ERR_UNKNOWN, "no such export");
	memcpy(&nr, d + 4 + name_len, 4);
	nr = be32toh(nr);
	pos = 8 + name_len;
	for (uint32_t i = 0; i < nr; i++) {
		uint32_t ql;
		const char *q;

		if (len - pos < 4)
			return opt_error(h->fd, opt, NBD_REP_ERR_INVALID, "query list beyond the option");
		memcpy(&ql, d + pos, 4);
		ql = be32toh(ql);
		pos += 4;
		if (ql > len - pos)
			return opt_error(h->fd, opt, NBD_REP_ERR_INVALID, "query beyond the option");
		q = (const char *)d + pos;
		if ((ql == 15 && !memcmp(q, "base:allocation", 15)) ||
		    (opt == NBD_OPT_LIST_META_CONTEXT && ql == 5 && !memcmp(q, "base:", 5)))
			want_alloc = true;
		pos += ql;
	}
	if (pos != len)
		return opt_error(h->fd, opt, NBD_REP_ERR_INVALID, "trailing bytes after the queries");
	if (opt == NBD_OPT_LIST_META_CONTEXT && nr == 0)
		want_alloc = true; /* an empty list asks for everything */
	if (opt == NBD_OPT_SET_META_CONTEXT)
		h->meta_alloc = want_alloc;
	ret = want_alloc ? send_meta_context(h, opt) : 0;
	return ret ? ret : opt_reply(h->fd, opt, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_EXPORT_NAME: no option reply; the export data, or we hang up. */
static int opt_export_name(struct hs *h, const uint8_t *d, uint32_t len)
{
	const struct nbd_export *e = find_export(h->srv, (const char *)d, len);
	uint8_t buf[10 + 124] = {0};
	uint64_t size;
	uint16_t flags;

	if (!e)
		return -ENOENT;
	size = htobe64(vsp_disk_size(e->disk));
	flags = htobe16(nbd_transmission_flags(e, h->structured));
	memcpy(buf, &size, 8);
	memcpy(buf + 8, &flags, 2);
	h->export = e;
	return send_all(h->fd, buf, h->no_zeroes ? 10 : sizeof(buf));
}

/* Runs the whole handshake.  Returns 1 when transmission may start, 0 when
 * the client went away cleanly (ABORT), negative on a protocol error. */
static int handshake(struct hs *h)
{
	uint8_t greet[18];
	uint64_t v64;
	uint16_t v16 = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	uint32_t cflags;
	uint8_t *data = NULL;
	int ret;

	v64 = htobe64(NBD_INIT_MAGIC);
	memcpy(greet, &v64, 8);
	v64 = htobe64(NBD_OPTS_MAGIC);
	memcpy(greet + 8, &v64, 8);
	memcpy(greet + 16, &v16, 2);
	ret = send_all(h->fd, greet, sizeof(greet));
	if (ret == 0)
		ret = recv_all(h->fd, &cflags, 4);
	if (ret < 0)
		goto out;
	cflags = be32toh(cflags);
	if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
		ret = -EPROTO; /* unknown client flags: the spec says hang up */
		goto out;
	}
	h->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
	for (;;) {
		uint8_t oh[16];
		uint32_t opt, len;

		ret = recv_all(h->fd, oh, sizeof(oh));
		if (ret < 0)
			goto out;
		memcpy(&v64, oh, 8);
		memcpy(&opt, oh + 8, 4);
		memcpy(&len, oh + 12, 4);
		opt = be32toh(opt);
		len = be32toh(len);
		if (be64toh(v64) != NBD_OPTS_MAGIC || len > NBD_MAX_OPTION_LEN) {
			ret = -EPROTO;
			goto out;
		}
		free(data);
		data = malloc(len + 1);
		if (!data) {
			ret = -ENOMEM;
			goto out;
		}
		ret = recv_all(h->fd, data, len);
		if (ret < 0)
			goto out;
		switch (opt) {
		case NBD_OPT_EXPORT_NAME:
			ret = opt_export_name(h, data, len);
			if (ret == 0)
				ret = 1;
			goto out;
		case NBD_OPT_ABORT:
			opt_reply(h->fd, opt, NBD_REP_ACK, NULL, 0); /* the client may be gone */
			ret = 0;
			goto out;
		case NBD_OPT_LIST:
			ret = opt_list(h, len);
			break;
		case NBD_OPT_INFO:
		case NBD_OPT_GO:
			ret = opt_info_go(h, opt, data, len);
			if (ret == 1)
				goto out;
			break;
		case NBD_OPT_STRUCTURED_REPLY:
			if (len) {
				ret = opt_error(h->fd, opt, NBD_REP_ERR_INVALID, "option takes no data");
				break;
			}
			h->structured = true;
			ret = opt_reply(h->fd, opt, NBD_REP_ACK, NULL, 0);
			break;
		case NBD_OPT_LIST_META_CONTEXT:
		case NBD_OPT_SET_META_CONTEXT:
			ret = opt_meta(h, opt, data, len);
			break;
		case NBD_OPT_STARTTLS:
			ret = opt_error(h->fd, opt, NBD_REP_ERR_UNSUP, "TLS is not supported");
			break;
		default:
			ret = opt_error(h->fd, opt, NBD_REP_ERR_UNSUP, "unknown option");
			break;
		}
		if (ret < 0)
			goto out;
	}
out:
	free(data);
	return ret;
}

/* ---- threads ------------------------------------------------------------------ */

struct hs_arg {
	struct vsp_nbd_server *srv;
	int fd;
	int slot;
};

static void *handshake_main(void *arg)
{
	struct hs_arg *a = arg;
	struct vsp_nbd_server *s = a->srv;
	struct hs h = {.srv = s, .fd = a->fd};
	struct timeval tv = {.tv_sec = HANDSHAKE_TIMEOUT_S};
	int ret;

	setsockopt(h.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(h.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	ret = handshake(&h);
	pthread_mutex_lock(&s->lock);
	s->handshake_fds[a->slot] = -1;
	if (ret == 1 && s->stopping)
		ret = -ESHUTDOWN;
	if (ret == 1) {
		struct nbd_session sess = {
			.fd = h.fd, .export = h.export, .structured = h.structured,
			.meta_alloc = h.meta_alloc,
		};

		tv.tv_sec = 0;
		setsockopt(h.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(h.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		ret = nbd_conn_start(s, &sess); /* registers under s->lock */
		if (ret == 0)
			h.fd = -1;
	}
	if (ret < 0 && ret != -ECONNRESET)
		vsp_log(s->engine, VSP_LOG_INFO, "client dropped during the handshake: %s",
			strerror(-ret));
	s->nr_handshakes--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	if (h.fd >= 0)
		close(h.fd);
	free(a);
	return NULL;
}

static void accept_one(struct vsp_nbd_server *s)
{
	int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	struct hs_arg *a = NULL;
	pthread_attr_t attr;
	pthread_t t;
	int slot = -1;

	if (fd < 0)
		return;
	pthread_mutex_lock(&s->lock);
	if (!s->stopping && s->nr_handshakes + s->nr_conns < s->max_connections)
		for (unsigned i = 0; i < s->max_connections; i++)
			if (s->handshake_fds[i] < 0) {
				slot = (int)i;
				break;
			}
	if (slot >= 0) {
		a = malloc(sizeof(*a));
		if (a) {
			*a = (struct hs_arg){s, fd, slot};
			s->handshake_fds[slot] = fd;
			s->nr_handshakes++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (!a) {
		vsp_log(s->engine, VSP_LOG_WARN, "refused a client: %u connections already",
			s->max_connections);
		close(fd);
		return;
	}
	if (s->tcp_host) {
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, handshake_main, a) != 0) {
		pthread_mutex_lock(&s->lock);
		s->handshake_fds[slot] = -1;
		s->nr_handshakes--;
		pthread_mutex_unlock(&s->lock);
		close(fd);
		free(a);
	}
	pthread_attr_destroy(&attr);
}

static void *accept_main(void *arg)
{
	struct vsp_nbd_server *s = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN},
				      {.fd = s->wake[0], .events = POLLIN}};

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (p[0].revents & POLLIN)
			accept_one(s);
	}
	return NULL;
}

/* ---- the server object ------------------------------------------------------ */

int vsp_nbd_server_new(struct vsp_engine *e, const struct vsp_nbd_opts *opts,
		       struct vsp_nbd_server **out, struct vhd_err *err)
{
	struct vsp_nbd_server *s = calloc(1, sizeof(*s));

	if (!s)
		goto nomem;
	s->engine = e;
	s->listen_fd = -1;
	s->wake[0] = s->wake[1] = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->max_connections = opts->max_connections ? opts->max_connections : 64;
	s->handshake_fds = malloc(s->max_connections * sizeof(int));
	if (!s->handshake_fds)
		goto nomem;
	for (unsigned i = 0; i < s->max_connections; i++)
		s->handshake_fds[i] = -1;
	if (opts->tcp_host) {
		s->tcp_host = strdup(*opts->tcp_host ? opts->tcp_host : "127.0.0.1");
		s->tcp_port = strdup(opts->tcp_port ? opts->tcp_port : "10809");
		if (!s->tcp_host || !s->tcp_port)
			goto nomem;
	} else {
		if (!opts->unix_path) {
			snprintf(err->msg, sizeof(err->msg), "no socket path given");
			vsp_nbd_server_free(s);
			return -EINVAL;
		}
		s->unix_path = strdup(opts->unix_path);
		if (!s->unix_path)
			goto nomem;
	}
	*out = s;
	return 0;
nomem:
	snprintf(err->msg, sizeof(err->msg), "out of memory");
	vsp_nbd_server_free(s);
	return -ENOMEM;
}

int vsp_nbd_add_export(struct vsp_nbd_server *s, const char *name, const char *description,
		       struct vsp_disk *disk)
{
	struct nbd_export *n;

	if (strlen(name) > 4096 || (*name == '\0' && s->nr_exports))
		return -EINVAL;
	for (unsigned i = 0; i < s->nr_exports; i++)
		if (!strcmp(s->exports[i].name, name))
			return -EEXIST;
	n = realloc(s->exports, (s->nr_exports + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	s->exports = n;
	n = &s->exports[s->nr_exports];
	n->name = strdup(name);
	n->description = description ? strdup(description) : NULL;
	n->disk = disk;
	if (!n->name || (description && !n->description)) {
		free(n->name);
		free(n->description);
		return -ENOMEM;
	}
	s->nr_exports++;
	return 0;
}

static int listen_unix(struct vsp_nbd_server *s, struct vhd_err *err)
{
	int fd = vsp_listen_unix(s->unix_path, 64, err);

	if (fd < 0)
		return fd;
	s->listen_fd = fd;
	return 0;
}

static int listen_tcp(struct vsp_nbd_server *s, struct vhd_err *err)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int one = 1, ret;

	ret = getaddrinfo(s->tcp_host, s->tcp_port, &hints, &res);
	if (ret) {
		snprintf(err->msg, sizeof(err->msg), "%s:%s: %s", s->tcp_host, s->tcp_port,
			 gai_strerror(ret));
		return -EINVAL;
	}
	s->listen_fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->listen_fd >= 0)
		setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s->listen_fd < 0 || bind(s->listen_fd, res->ai_addr, res->ai_addrlen) < 0 ||
	    listen(s->listen_fd, 64) < 0) {
		ret = -errno;
		snprintf(err->msg, sizeof(err->msg), "%s:%s: cannot listen: %s", s->tcp_host,
			 s->tcp_port, strerror(-ret));
		freeaddrinfo(res);
		return ret;
	}
	freeaddrinfo(res);
	if (getsockname(s->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
		snprintf(s->bound_port, sizeof(s->bound_port), "%u",
			 ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							: ((struct sockaddr_in *)&ss)->sin_port));
	return 0;
}

int vsp_nbd_server_start(struct vsp_nbd_server *s, struct vhd_err *err)
{
	int ret;

	if (!s->nr_exports) {
		snprintf(err->msg, sizeof(err->msg), "nothing to serve: no exports");
		return -EINVAL;
	}
	ret = s->tcp_host ? listen_tcp(s, err) : listen_unix(s, err);
	if (ret < 0)
		return ret;
	if (pipe2(s->wake, O_CLOEXEC) < 0) {
		ret = -errno;
		snprintf(err->msg, sizeof(err->msg), "pipe: %s", strerror(-ret));
		return ret;
	}
	ret = -pthread_create(&s->accept_thread, NULL, accept_main, s);
	if (ret < 0) {
		snprintf(err->msg, sizeof(err->msg), "cannot start the accept thread: %s", strerror(-ret));
		return ret;
	}
	s->accepting = true;
	return 0;
}

void vsp_nbd_uri(const struct vsp_nbd_server *s, const char *name, char *buf, size_t len)
{
	if (s->tcp_host)
		snprintf(buf, len, "nbd://%s:%s/%s", s->tcp_host,
			 *s->bound_port ? s->bound_port : s->tcp_port, name);
	else
		snprintf(buf, len, "nbd+unix:///%s?socket=%s", name, s->unix_path);
}

void vsp_nbd_server_stop(struct vsp_nbd_server *s)
{
	if (s->accepting) {
		if (write(s->wake[1], "x", 1) < 0) {
			/* cannot fail on a fresh pipe */
		}
		pthread_join(s->accept_thread, NULL);
		s->accepting = false;
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
		if (s->unix_path)
			unlink(s->unix_path);
	}
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	/* Clients still negotiating are hung up on; their threads then finish. */
	for (unsigned i = 0; i < s->max_connections; i++)
		if (s->handshake_fds[i] >= 0)
			shutdown(s->handshake_fds[i], SHUT_RDWR);
	while (s->nr_handshakes)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	nbd_conn_stop_all(s);
	pthread_mutex_lock(&s->lock);
	while (s->nr_conns || s->stop_calls)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

void vsp_nbd_server_free(struct vsp_nbd_server *s)
{
	if (!s)
		return;
	vsp_nbd_server_stop(s);
	for (int i = 0; i < 2; i++)
		if (s->wake[i] >= 0)
			close(s->wake[i]);
	for (unsigned i = 0; i < s->nr_exports; i++) {
		free(s->exports[i].name);
		free(s->exports[i].description);
	}
	free(s->exports);
	free(s->handshake_fds);
	free(s->unix_path);
	free(s->tcp_host);
	free(s->tcp_port);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}
