/* util.c - small file helpers of snapshot/: durable metadata writes, paths,
 * notes, modes and the test-only crash points. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

void snap_err_set(struct vhd_err *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

int snap_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static int write_full(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The rename is the commit: readers see the old file or the complete new one,
 * and the directory fsync makes the new name survive power loss. */
int snap_write_atomic(const char *dir, const char *name, const char *data, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	ret = write_full(fd, data, len);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret == 0)
		ret = snap_fsync_dir(dir);
	if (ret < 0)
		unlink(tmp);
	return ret;
}

int snap_read_file(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int ret = 0;

	*out = NULL;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		ret = -EFBIG;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = 0;
	*out = buf;
	*len = got;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return ret;
}

int snap_unlink(const char *dir, const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

void snap_path(const struct snap_set *s, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", s->dir, name);
}

void snap_note(const struct snap_set *s, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!s->opts.note)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->opts.note(s->opts.note_ctx, msg);
}

/* The crash tests set VHDSTACK_SNAP_CRASH_AFTER=N and the process dies with
 * SIGKILL right after its Nth durable step (a file created, merged,
 * re-pointed, removed, a mode changed, the journal or the metadata written),
 * as if the machine had stopped there. */
void snap_step(struct snap_set *s)
{
	s->steps++;
	if (s->crash_after && s->steps >= s->crash_after)
		raise(SIGKILL);
}

/* Checkpoint files are read-only so that a stray `vhdtool write` cannot
 * change what a checkpoint holds; the set lifts this only to merge into or
 * re-point a file. */
int snap_set_writable(struct snap_set *s, const char *name, bool writable,
		      struct vhd_err *err)
{
	char path[PATH_MAX];
	struct stat st;
	mode_t mode;

	snap_path(s, name, path, sizeof(path));
	if (stat(path, &st) < 0) {
		int e = errno;

		snap_err_set(err, "%s: %s", path, strerror(e));
		return -e;
	}
	mode = writable ? (st.st_mode | S_IWUSR) : (st.st_mode & ~(mode_t)(S_IWUSR | S_IWGRP | S_IWOTH));
	if ((mode & 07777) == (st.st_mode & 07777))
		return 0;
	if (chmod(path, mode & 07777) < 0) {
		int e = errno;

		snap_err_set(err, "%s: cannot make it %s: %s", path,
			     writable ? "writable" : "read-only", strerror(e));
		return -e;
	}
	snap_step(s);
	return 0;
}
