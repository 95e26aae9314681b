/* util.c - small helpers of hv/: messages, files written atomically, argv
 * vectors, process identity. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

void hv_err_set(struct hv_err *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

char *hv_strf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

double hv_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double hv_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void hv_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int hv_read_file(const char *path, size_t max, char **out, struct hv_err *err)
{
	char *buf = NULL;
	size_t len = 0, cap = 4096;
	int fd, ret;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		hv_err_set(err, "%s: %s", path, strerror(errno));
		return ret;
	}
	for (;;) {
		ssize_t r;

		if (len + 1 >= cap || !buf) {
			char *nb;

			if (buf)
				cap *= 2;
			nb = realloc(buf, cap);
			if (!nb) {
				ret = -ENOMEM;
				hv_err_set(err, "%s: out of memory", path);
				goto out;
			}
			buf = nb;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			hv_err_set(err, "%s: read: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > max) {
			ret = -EFBIG;
			hv_err_set(err, "%s: larger than %zu bytes", path, max);
			goto out;
		}
	}
	buf[len] = 0;
	*out = buf;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	close(fd);
	return ret;
}

static int fsync_dir_of(const char *path)
{
	char *d = strdup(path), *slash;
	int fd, ret = 0;

	if (!d)
		return -ENOMEM;
	slash = strrchr(d, '/');
	if (slash == d)
		slash[1] = 0;
	else if (slash)
		*slash = 0;
	else
		strcpy(d, ".");
	fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	free(d);
	return ret;
}

int hv_write_file_atomic(const char *path, const char *data, size_t len, struct hv_err *err)
{
	const char *base = strrchr(path, '/');
	char *tmp;
	size_t done = 0;
	int fd = -1, ret;

	/* The temp name carries the pid: the worker and an hvctl reconciling a
	 * dead worker never share a temp file. */
	tmp = base ? hv_strf("%.*s/.%s.%d.tmp", (int)(base - path), path, base + 1, (int)getpid())
		   : hv_strf(".%s.%d.tmp", path, (int)getpid());
	if (!tmp) {
		hv_err_set(err, "%s: out of memory", path);
		return -ENOMEM;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		hv_err_set(err, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	while (done < len) {
		ssize_t w = write(fd, data + done, len - done);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			hv_err_set(err, "%s: write: %s", tmp, strerror(errno));
			goto out;
		}
		done += (size_t)w;
	}
	if (fsync(fd) < 0) {
		ret = -errno;
		hv_err_set(err, "%s: fsync: %s", tmp, strerror(errno));
		goto out;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, path) < 0) {
		ret = -errno;
		hv_err_set(err, "rename %s -> %s: %s", tmp, path, strerror(errno));
		goto out;
	}
	ret = fsync_dir_of(path);
	if (ret < 0)
		hv_err_set(err, "fsync of the directory of %s: %s", path, strerror(-ret));
out:
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		unlink(tmp);
	free(tmp);
	return ret;
}

int hv_mkdir_p(const char *path, struct hv_err *err)
{
	char *p = strdup(path);
	int ret = 0;

	if (!p) {
		hv_err_set(err, "%s: out of memory", path);
		return -ENOMEM;
	}
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s)
			continue;
		char c = *s;

		*s = 0;
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			ret = -errno;
			hv_err_set(err, "mkdir %s: %s", p, strerror(errno));
			goto out;
		}
		*s = c;
		if (!c)
			break;
	}
out:
	free(p);
	return ret;
}

char *hv_log_tail(const char *path, size_t max)
{
	struct stat st;
	char *buf = NULL, *start;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r;
	off_t off;

	if (fd < 0 || fstat(fd, &st) < 0)
		goto out;
	buf = malloc(max + 1);
	if (!buf)
		goto out;
	off = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
	r = pread(fd, buf, max, off);
	if (r < 0)
		r = 0;
	buf[r] = 0;
	while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == '\r'))
		buf[--r] = 0;
	start = buf;
	/* Start at a line boundary when the tail was cut. */
	if (off > 0 && (start = strchr(buf, '\n')))
		start++;
	else
		start = buf;
	memmove(buf, start, strlen(start) + 1);
out:
	if (fd >= 0)
		close(fd);
	return buf;
}

int hv_argv_add(struct hv_argv *a, const char *s)
{
	if (a->n + 2 > a->cap) {
		unsigned cap = a->cap ? a->cap * 2 : 32;
		char **nv = realloc(a->v, cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		a->v = nv;
		a->cap = cap;
	}
	a->v[a->n] = strdup(s);
	if (!a->v[a->n])
		return -ENOMEM;
	a->n++;
	a->v[a->n] = NULL;
	return 0;
}

int hv_argv_addf(struct hv_argv *a, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n, ret;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	ret = hv_argv_add(a, s);
	free(s);
	return ret;
}

void hv_argv_free(struct hv_argv *a)
{
	for (unsigned i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	*a = (struct hv_argv){0};
}

int hv_proc_get(pid_t pid, struct hv_proc *p)
{
	char path[64], buf[1024], *rp;
	unsigned long long start;
	ssize_t r;
	char state;
	int fd;

	if (pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ESRCH;
	r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return -ESRCH;
	buf[r] = 0;
	/* comm may hold spaces and parentheses: parse after the last ')'. */
	rp = strrchr(buf, ')');
	if (!rp || sscanf(rp + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
			  "%*d %*d %*d %*d %llu", &state, &start) != 2)
		return -EINVAL;
	if (state == 'Z' || state == 'X')
		return -ESRCH;
	p->pid = pid;
	p->start_time = start;
	return 0;
}

bool hv_proc_alive(const struct hv_proc *p)
{
	struct hv_proc now;

	if (!p || p->pid <= 0)
		return false;
	if (hv_proc_get(p->pid, &now) < 0)
		return false;
	return now.start_time == p->start_time;
}
