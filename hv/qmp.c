/* qmp.c - a small QMP client: JSON over a Unix socket (QEMU's
 * docs/interop/qmp-spec.rst).  The server sends a greeting, the client
 * negotiates capabilities, then sends {"execute", "arguments", "id"} and
 * gets {"return"|"error", "id"}; events {"event", "data", "timestamp"} may
 * arrive at any time, also between a command and its reply.  QEMU ends
 * every message with CRLF and never puts a raw newline inside one, so the
 * stream is split into lines and each line parsed on its own. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

/* A line larger than this is not QMP (query replies of a small VM are a few
 * KiB); the connection is dropped rather than growing without bound. */
#define QMP_MAX_LINE (8u << 20)
#define QMP_MAX_QUEUED 1024

struct hv_qmp {
	int fd;
	char *path;
	char *buf;
	size_t len, cap;
	struct json_object **events;  /* queued events, oldest first */
	unsigned nev;
	unsigned next_id;
	bool eof;
};

int hv_qmp_fd(const struct hv_qmp *q)
{
	return q->fd;
}

void hv_qmp_close(struct hv_qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	for (unsigned i = 0; i < q->nev; i++)
		json_object_put(q->events[i]);
	free(q->events);
	free(q->buf);
	free(q->path);
	free(q);
}

static int wait_fd(int fd, short events, double deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		double left = deadline - hv_mono();
		int ms = left <= 0 ? 0 : (int)(left * 1000) + 1, r;

		r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		return 0;
	}
}

/* Reads what is available (waiting until deadline for something). */
static int fill(struct hv_qmp *q, double deadline, struct hv_err *err)
{
	ssize_t r;
	int ret;

	if (q->eof)
		return -EPIPE;
	ret = wait_fd(q->fd, POLLIN, deadline);
	if (ret < 0) {
		if (ret == -ETIMEDOUT)
			hv_err_set(err, "QMP %s: no answer in time", q->path);
		else
			hv_err_set(err, "QMP %s: poll: %s", q->path, strerror(-ret));
		return ret;
	}
	if (q->cap - q->len < 4096) {
		size_t cap = q->cap ? q->cap * 2 : 16384;
		char *nb;

		if (cap > QMP_MAX_LINE + 16384) {
			hv_err_set(err, "QMP %s: a message longer than %u bytes", q->path,
				   QMP_MAX_LINE);
			return -EPROTO;
		}
		nb = realloc(q->buf, cap);
		if (!nb)
			return -ENOMEM;
		q->buf = nb;
		q->cap = cap;
	}
	r = recv(q->fd, q->buf + q->len, q->cap - q->len - 1, MSG_DONTWAIT);
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		ret = -errno;
		hv_err_set(err, "QMP %s: recv: %s", q->path, strerror(errno));
		return ret;
	}
	if (r == 0) {
		q->eof = true;
		hv_err_set(err, "QMP %s: QEMU closed the connection", q->path);
		return -EPIPE;
	}
	q->len += (size_t)r;
	return 0;
}

/* Takes one complete line off the buffer and parses it: 1 and *msg set, 0
 * if no complete line is buffered, <0 on a message that is not a JSON
 * object. */
static int take_line(struct hv_qmp *q, struct json_object **msg, struct hv_err *err)
{
	char *nl;
	size_t n;

	for (;;) {
		nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
		if (!nl)
			return 0;
		n = (size_t)(nl - q->buf);
		*nl = 0;
		if (n && q->buf[n - 1] == '\r')
			q->buf[n - 1] = 0;
		if (q->buf[strspn(q->buf, " \t\r")]) /* skip blank lines */
			break;
		memmove(q->buf, nl + 1, q->len - n - 1);
		q->len -= n + 1;
	}
	{
		enum json_tokener_error jerr;
		struct json_object *j = json_tokener_parse_verbose(q->buf, &jerr);

		if (!j || !json_object_is_type(j, json_type_object)) {
			hv_err_set(err, "QMP %s: not a JSON object: \"%.80s\"", q->path, q->buf);
			json_object_put(j);
			return -EPROTO;
		}
		*msg = j;
	}
	memmove(q->buf, nl + 1, q->len - n - 1);
	q->len -= n + 1;
	return 1;
}

/* The next message, waiting until deadline. */
static int next_msg(struct hv_qmp *q, double deadline, struct json_object **msg,
		    struct hv_err *err)
{
	int ret;

	for (;;) {
		ret = take_line(q, msg, err);
		if (ret)
			return ret < 0 ? ret : 0;
		if (q->len > QMP_MAX_LINE) {
			hv_err_set(err, "QMP %s: a message longer than %u bytes", q->path,
				   QMP_MAX_LINE);
			return -EPROTO;
		}
		ret = fill(q, deadline, err);
		if (ret < 0)
			return ret;
	}
}

static int queue_event(struct hv_qmp *q, struct json_object *ev)
{
	struct json_object **ne;

	if (q->nev >= QMP_MAX_QUEUED) {
		/* Nobody reads events on this connection: keep the newest. */
		json_object_put(q->events[0]);
		memmove(q->events, q->events + 1, (q->nev - 1) * sizeof(*q->events));
		q->nev--;
	}
	ne = realloc(q->events, (q->nev + 1) * sizeof(*ne));
	if (!ne) {
		json_object_put(ev);
		return -ENOMEM;
	}
	q->events = ne;
	q->events[q->nev++] = ev;
	return 0;
}

static int send_all(struct hv_qmp *q, const char *s, struct hv_err *err)
{
	size_t len = strlen(s), done = 0;

	while (done < len) {
		ssize_t w = send(q->fd, s + done, len - done, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			hv_err_set(err, "QMP %s: send: %s", q->path, strerror(errno));
			return -errno;
		}
		done += (size_t)w;
	}
	return 0;
}

int hv_qmp_execute(struct hv_qmp *q, const char *cmd, struct json_object *args,
		   struct json_object **ret_out, int timeout_ms, struct hv_err *err)
{
	struct json_object *req = json_object_new_object(), *msg = NULL, *v;
	double deadline = hv_mono() + timeout_ms / 1000.0;
	unsigned id = ++q->next_id;
	char *line = NULL;
	int ret;

	if (ret_out)
		*ret_out = NULL;
	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(req, "arguments", json_object_get(args));
	json_object_object_add(req, "id", json_object_new_int64(id));
	line = hv_strf("%s\r\n", json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN));
	if (!line) {
		ret = -ENOMEM;
		goto out;
	}
	ret = send_all(q, line, err);
	if (ret < 0)
		goto out;
	for (;;) {
		ret = next_msg(q, deadline, &msg, err);
		if (ret < 0) {
			if (ret == -ETIMEDOUT)
				hv_err_set(err, "QMP %s: no reply to %s within %d ms", q->path, cmd,
					   timeout_ms);
			goto out;
		}
		if (json_object_object_get_ex(msg, "event", NULL)) {
			ret = queue_event(q, msg);
			msg = NULL;
			if (ret < 0)
				goto out;
			continue;
		}
		/* A reply without our id belongs to nobody here (we send one
		 * command at a time); skip it. */
		if (!json_object_object_get_ex(msg, "id", &v) ||
		    json_object_get_int64(v) != (int64_t)id) {
			json_object_put(msg);
			msg = NULL;
			continue;
		}
		break;
	}
	if (json_object_object_get_ex(msg, "error", &v)) {
		struct json_object *cls = NULL, *desc = NULL;

		json_object_object_get_ex(v, "class", &cls);
		json_object_object_get_ex(v, "desc", &desc);
		hv_err_set(err, "QMP %s failed: %s: %s", cmd,
			   cls ? json_object_get_string(cls) : "?",
			   desc ? json_object_get_string(desc) : "(no description)");
		ret = -EREMOTEIO;
		goto out;
	}
	if (!json_object_object_get_ex(msg, "return", &v)) {
		hv_err_set(err, "QMP %s: reply to %s has neither return nor error", q->path, cmd);
		ret = -EPROTO;
		goto out;
	}
	if (ret_out)
		*ret_out = json_object_get(v);
	ret = 0;
out:
	json_object_put(msg);
	json_object_put(req);
	free(line);
	return ret;
}

int hv_qmp_next_event(struct hv_qmp *q, struct json_object **ev, int timeout_ms,
		      struct hv_err *err)
{
	double deadline = hv_mono() + timeout_ms / 1000.0;
	struct json_object *msg = NULL;
	int ret;

	*ev = NULL;
	for (;;) {
		if (q->nev) {
			*ev = q->events[0];
			memmove(q->events, q->events + 1, (q->nev - 1) * sizeof(*q->events));
			q->nev--;
			return 1;
		}
		ret = take_line(q, &msg, err);
		if (ret < 0)
			return ret;
		if (ret == 0) {
			if (q->len > QMP_MAX_LINE) {
				hv_err_set(err, "QMP %s: a message longer than %u bytes", q->path,
					   QMP_MAX_LINE);
				return -EPROTO;
			}
			ret = fill(q, deadline, err);
			if (ret == -ETIMEDOUT)
				return 0;
			if (ret < 0)
				return ret;
			continue;
		}
		if (json_object_object_get_ex(msg, "event", NULL)) {
			*ev = msg;
			return 1;
		}
		json_object_put(msg);  /* a stray reply */
		msg = NULL;
	}
}

int hv_qmp_connect(const char *path, int timeout_ms, struct hv_qmp **out, struct hv_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	double deadline = hv_mono() + timeout_ms / 1000.0;
	struct hv_qmp *q = calloc(1, sizeof(*q));
	struct json_object *greet = NULL;
	int ret;

	*out = NULL;
	if (!q)
		return -ENOMEM;
	q->fd = -1;
	q->path = strdup(path);
	if (!q->path) {
		ret = -ENOMEM;
		goto out;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		hv_err_set(err, "QMP socket path %s is longer than %zu bytes", path,
			   sizeof(sa.sun_path) - 1);
		ret = -ENAMETOOLONG;
		goto out;
	}
	strcpy(sa.sun_path, path);
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (q->fd < 0) {
		ret = -errno;
		hv_err_set(err, "socket: %s", strerror(errno));
		goto out;
	}
	if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		hv_err_set(err, "QMP %s: connect: %s", path, strerror(errno));
		goto out;
	}
	/* QEMU serves one client per monitor; a second one waits in the
	 * listen queue without a greeting until the first leaves. */
	ret = next_msg(q, deadline, &greet, err);
	if (ret < 0) {
		if (ret == -ETIMEDOUT)
			hv_err_set(err, "QMP %s: no greeting within %d ms (another client "
				   "connected?)", path, timeout_ms);
		goto out;
	}
	if (!json_object_object_get_ex(greet, "QMP", NULL)) {
		hv_err_set(err, "QMP %s: the first message is not a QMP greeting: %.100s", path,
			   json_object_to_json_string(greet));
		ret = -EPROTO;
		goto out;
	}
	{
		double left = deadline - hv_mono();

		ret = hv_qmp_execute(q, "qmp_capabilities", NULL, NULL,
				     left > 0.001 ? (int)(left * 1000) : 1, err);
	}
	if (ret < 0)
		goto out;
	*out = q;
	q = NULL;
out:
	json_object_put(greet);
	hv_qmp_close(q);
	return ret;
}
