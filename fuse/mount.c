/* mount.c - opening the image, the FUSE session, daemonising, unmounting.
 *
 * Order of a mount:
 *   1. open the image (read-write, read-only, or a temporary differencing
 *      child for --snapshot) with the library's lock;
 *   2. mount the session and start the multi-threaded loop;
 *   3. a starter thread probes the partitions through the mount itself
 *      (probe.c) and only then reports the mount ready: in daemon mode the
 *      parent process exits 0 at that moment, so a script that runs
 *      `vhdtool mount` can use the files at once;
 *   4. the loop ends on unmount (fusermount3 -u, vhdtool unmount) or on
 *      SIGTERM/SIGINT/SIGHUP; requests being served finish first (libfuse
 *      runs them with cancellation disabled), every acknowledged write is
 *      already committed, and vhd_close makes it durable and drops the lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* The first probe runs before the mount is reported ready. */
#define FIRST_PROBE_WAIT_MS 60000

/* ---- logging -------------------------------------------------------------- */

void vfs_log(const struct vfs_io *io, enum vfs_level level, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warning", "info", "debug"};
	char msg[2048], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if (io && (int)level > VFS_LOG_WARN + io->verbose)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	/* One write per line so that threads do not interleave. */
	dprintf(STDERR_FILENO, "%s.%03ld vhdmount[%d]: %s: %s\n", stamp, ts.tv_nsec / 1000000,
		(int)getpid(), names[level], msg);
}

__attribute__((format(printf, 2, 3)))
static void seterr(struct vhd_err *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

static void warn_cb(void *ctx, const char *msg)
{
	vfs_log(ctx, VFS_LOG_WARN, "%s", msg);
}

/* ---- opening the image ------------------------------------------------------- */

/* Writes go to a differencing child of the image in a fresh temporary
 * directory; the child is unlinked as soon as it is open, so it vanishes
 * at unmount and even after kill -9, and the image is only ever read. */
static int open_snapshot(struct vfs_fs *fs, const struct vhd_open_opts *base,
			 struct vhd_image **img, struct vhd_err *err)
{
	const char *dir = fs->opts->snapshot_dir;
	struct vhd_create_opts co = {.type = VHD_TYPE_DIFF, .parent = fs->image};
	struct vhd_open_opts oo = *base;
	char tmpl[PATH_MAX], child[PATH_MAX + 64], name[PATH_MAX];
	int ret;

	if (!dir)
		dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	snprintf(tmpl, sizeof(tmpl), "%s/vhdmount-snapshot.XXXXXX", dir);
	if (!mkdtemp(tmpl)) {
		ret = -errno;
		seterr(err, "--snapshot: cannot create a directory in %s: %s", dir,
				strerror(-ret));
		return ret;
	}
	snprintf(name, sizeof(name), "%s", fs->image);
	snprintf(child, sizeof(child), "%s/%s.snapshot.vhd", tmpl, basename(name));
	ret = vhd_create(child, &co, err);
	if (ret < 0)
		goto out;
	oo.flags |= VHD_OPEN_RDWR | VHD_OPEN_NO_SYNC;
	ret = vhd_open(child, &oo, img, err);
	if (ret == 0)
		snprintf(fs->snapshot_child, sizeof(fs->snapshot_child), "%s (deleted)", child);
out:
	unlink(child);
	rmdir(tmpl);
	return ret;
}

static int open_image(struct vfs_fs *fs, struct vhd_image **img, struct vhd_err *err)
{
	const struct vhdfuse_opts *o = fs->opts;
	struct vhd_open_opts oo = {
		.parent_dir = o->parent_dir,
		.warn = warn_cb,
		.warn_ctx = &fs->io,
	};
	struct vhd_err e2;
	int ret;

	if (o->no_lock)
		oo.flags |= VHD_OPEN_NO_LOCK;
	if (o->snapshot) {
		snprintf(fs->mode, sizeof(fs->mode), "snapshot");
		return open_snapshot(fs, &oo, img, err);
	}
	if (o->read_only || o->no_lock) {
		snprintf(fs->mode, sizeof(fs->mode), "read-only");
		if (o->no_lock && !o->read_only)
			snprintf(fs->ro_reason, sizeof(fs->ro_reason),
				 "opened without the image lock (-U): writing is not safe then");
		return vhd_open(fs->image, &oo, img, err);
	}
	if (vhd_merge_pending(fs->image)) {
		snprintf(fs->mode, sizeof(fs->mode), "read-only");
		snprintf(fs->ro_reason, sizeof(fs->ro_reason),
			 "an interrupted merge is pending (finish it with vhdtool merge or "
			 "vhdtool repair first)");
		return vhd_open(fs->image, &oo, img, err);
	}
	oo.flags |= VHD_OPEN_RDWR;
	ret = vhd_open(fs->image, &oo, img, err);
	if (ret == -EACCES || ret == -EROFS || ret == -EPERM) {
		/* The image cannot be written (file mode, read-only file system,
		 * damaged footer): serve it read-only and say why. */
		snprintf(fs->ro_reason, sizeof(fs->ro_reason), "%s", err->msg);
		oo.flags &= ~(unsigned)VHD_OPEN_RDWR;
		ret = vhd_open(fs->image, &oo, img, &e2);
		if (ret < 0) {
			*err = e2;
			return ret;
		}
		vfs_log(&fs->io, VFS_LOG_WARN, "mounting read-only: %s", fs->ro_reason);
		snprintf(fs->mode, sizeof(fs->mode), "read-only");
		return 0;
	}
	if (ret == -EBUSY) {
		char msg[VHD_ERR_LEN];

		snprintf(msg, sizeof(msg), "%s", err->msg);
		seterr(err, "%s (refusing to mount it read-write: two writers would "
				     "corrupt it; --read-only shares it with other readers only)",
				msg);
		return ret;
	}
	snprintf(fs->mode, sizeof(fs->mode), "read-write");
	return ret;
}

/* ---- the session --------------------------------------------------------------- */

/* fsname goes into a comma-separated option string: escape commas and
 * backslashes as libfuse's option parser expects. */
static void escape_opt(char *dst, size_t len, const char *src)
{
	size_t j = 0;

	for (size_t i = 0; src[i] && j + 3 < len; i++) {
		if (src[i] == ',' || src[i] == '\\')
			dst[j++] = '\\';
		dst[j++] = src[i];
	}
	dst[j] = 0;
}

struct starter {
	struct vfs_fs *fs;
	int notify_fd;             /* daemon mode: pipe to the waiting parent */
	vhdfuse_ready_fn ready;
	void *ready_ctx;
	int err;                   /* the first probe failed */
	char msg[VHD_ERR_LEN];
	bool redirect_stdio;
	const char *log_file;
};

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Once the mount is up, the daemon's stdin/stdout go to /dev/null and its
 * stderr to the log, so that a caller capturing `vhdtool mount`'s output is
 * not held open by the daemon. */
static void detach_stdio(const char *log_file)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	int log = log_file ? open(log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;

	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(log >= 0 ? log : null, STDERR_FILENO);
		close(null);
	}
	if (log >= 0)
		close(log);
}

static bool is_our_mount(const char *path);
static int run_unmount(const char *mnt, bool lazy, char *msg, size_t msglen);
static unsigned mount_minor(const char *path);

/* A cached (read-only) mount reads ahead through the kernel, which offers
 * FUSE only its default 128 KiB window; 1 MiB requests halve the cost of a
 * sequential read.  Root can say so in sysfs, like blockdev --setra; for
 * others this quietly stays as it is. */
static void raise_readahead(struct vfs_fs *fs)
{
	unsigned minor = mount_minor(fs->mountpoint);
	char path[64];
	int fd;

	if (!minor)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/0:%u/read_ahead_kb", minor);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, "1024", 4) != 4)
		vfs_log(&fs->io, VFS_LOG_DEBUG, "%s: cannot raise the read-ahead", path);
	close(fd);
}

static void *starter_thread(void *arg)
{
	struct starter *s = arg;
	struct vfs_fs *fs = s->fs;
	char *json = NULL, msg[256];
	size_t len = 0;
	int ret;

	ret = vfs_reprobe(fs, FIRST_PROBE_WAIT_MS);
	if (ret == 0) {
		json = vfs_info_json(fs, &len);
		if (!json)
			ret = -ENOMEM;
	}
	if (ret < 0) {
		s->err = ret;
		snprintf(s->msg, sizeof(s->msg),
			 "%s: the mount did not answer its own partition probe: %s", fs->mountpoint,
			 strerror(-ret));
		if (s->notify_fd >= 0) {
			dprintf(s->notify_fd, "ERR %d\n%s", -ret, s->msg);
			close(s->notify_fd);
			s->notify_fd = -1;
		}
		/* End the loop the way an external unmount does: the kernel drops
		 * the connection, the workers see it and the loop returns.  (A
		 * signal could arrive after the main thread removed libfuse's
		 * handlers and kill the process before the image is closed.) */
		if (is_our_mount(fs->mountpoint))
			run_unmount(fs->mountpoint, true, msg, sizeof(msg));
		return NULL;
	}
	if (fs->cached)
		raise_readahead(fs);
	if (s->ready)
		s->ready(s->ready_ctx, json);
	if (s->redirect_stdio)
		detach_stdio(s->log_file);
	vfs_log(&fs->io, VFS_LOG_INFO, "mounted %s at %s (%s)", fs->image, fs->mountpoint, fs->mode);
	if (s->notify_fd >= 0) {
		if (write_all(s->notify_fd, "OK\n", 3) == 0)
			write_all(s->notify_fd, json, len);
		close(s->notify_fd);
		s->notify_fd = -1;
	}
	free(json);
	return NULL;
}

/* Helper threads must not take the termination signals: libfuse's handler
 * has to interrupt the loop's main thread. */
int vfs_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t set, old;
	int ret;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	ret = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -ret;
}

static bool is_mount_point(const char *path)
{
	char parent[PATH_MAX + 4];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s/..", path);
	if (stat(path, &a) < 0 || stat(parent, &b) < 0)
		return false;
	return a.st_dev != b.st_dev || a.st_ino == b.st_ino;
}

/* Everything between opening the image and closing it; returns the exit
 * status of the serving process (0 clean). */
static int serve(struct vfs_fs *fs, int notify_fd, vhdfuse_ready_fn ready, void *ready_ctx,
		 bool daemon, struct vhd_err *err)
{
	const struct vhdfuse_opts *o = fs->opts;
	struct starter st = {
		.fs = fs,
		.notify_fd = notify_fd,
		.ready = daemon ? NULL : ready,
		.ready_ctx = ready_ctx,
		.redirect_stdio = daemon,
		.log_file = o->log_file,
	};
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *cfg = NULL;
	struct vhd_image *img = NULL;
	pthread_t starter;
	bool starter_up = false, mounted = false, signals = false, fs_up = false;
	char esc[8192], optstr[9000];
	int ret, loop_ret = 0;

	ret = open_image(fs, &img, err);
	if (ret < 0)
		goto out;
	ret = vfs_io_init(&fs->io, img, o->snapshot);
	if (ret < 0)
		goto out;
	fs->io.verbose = o->verbose;
	fs->cached = !fs->io.writable && !o->direct_io;
	ret = vfs_fs_init(fs);
	if (ret < 0)
		goto out;
	fs_up = true;
	/* Before any thread exists (fork copies only the calling thread). */
	ret = vfs_prober_spawn(fs->mountpoint, fs->io.size, &fs->probe_pid, &fs->probe_sock);
	if (ret < 0) {
		seterr(err, "cannot start the prober process: %s", strerror(-ret));
		goto out;
	}

	escape_opt(esc, sizeof(esc), fs->image);
	snprintf(optstr, sizeof(optstr), "fsname=%s,subtype=vhdmount,default_permissions%s%s", esc,
		 fs->io.writable ? "" : ",ro", o->allow_other ? ",allow_other" : "");
	if (fuse_opt_add_arg(&args, "vhdmount") || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, optstr) || (o->debug && fuse_opt_add_arg(&args, "-d"))) {
		ret = -ENOMEM;
		goto out;
	}
	fs->se = fuse_session_new(&args, &vfs_ops, sizeof(vfs_ops), fs);
	if (!fs->se) {
		ret = -EINVAL;
		seterr(err, "%s: cannot create the FUSE session (see the message above)",
		       fs->mountpoint);
		goto out;
	}
	if (fuse_set_signal_handlers(fs->se) < 0) {
		ret = -EINVAL;
		seterr(err, "cannot install the signal handlers");
		goto out;
	}
	signals = true;
	if (fuse_session_mount(fs->se, fs->mountpoint) != 0) {
		ret = -EPERM;
		seterr(err, "%s: the FUSE mount failed (is /dev/fuse there, and fusermount3 "
			    "installed and allowed for this user?)", fs->mountpoint);
		goto out;
	}
	mounted = true;
	ret = vfs_start_prober(fs);
	if (ret < 0) {
		seterr(err, "cannot start the probe thread: %s", strerror(-ret));
		goto out;
	}
	ret = vfs_thread_start(&starter, starter_thread, &st);
	if (ret < 0) {
		seterr(err, "cannot start a thread: %s", strerror(-ret));
		goto out;
	}
	starter_up = true;

	cfg = fuse_loop_cfg_create();
	if (!cfg) {
		ret = -ENOMEM;
		goto out;
	}
	fuse_loop_cfg_set_max_threads(cfg, o->max_threads ? o->max_threads : 16);
	loop_ret = fuse_session_loop_mt(fs->se, cfg);
	if (loop_ret > 0) /* libfuse's signal handler stores the signal */
		vfs_log(&fs->io, VFS_LOG_INFO, "signal %d: unmounting %s", loop_ret, fs->mountpoint);
	else if (loop_ret < 0)
		vfs_log(&fs->io, VFS_LOG_ERR, "the FUSE loop failed: %s", strerror(-loop_ret));
	ret = 0;
out:
	/* The session goes first: closing /dev/fuse fails any request our own
	 * prober still waits for (it reads the mount like any client), so the
	 * helper threads can always be joined. */
	if (mounted)
		fuse_session_unmount(fs->se);
	if (signals)
		fuse_remove_signal_handlers(fs->se);
	if (fs->se)
		fuse_session_destroy(fs->se);
	if (fs->probe_pid > 0)
		shutdown(fs->probe_sock, SHUT_RDWR); /* a probe in progress ends now */
	vfs_stop_prober(fs); /* a starter waiting for its probe gives up then */
	if (fs->probe_pid > 0) {
		close(fs->probe_sock);
		while (waitpid(fs->probe_pid, NULL, 0) < 0 && errno == EINTR)
			;
		fs->probe_pid = 0;
	}
	if (starter_up) {
		pthread_join(starter, NULL);
		if (st.err && ret == 0) {
			ret = st.err;
			seterr(err, "%s", st.msg);
		}
	}
	fuse_loop_cfg_destroy(cfg);
	fuse_opt_free_args(&args);
	if (img) {
		int cret = vhd_close(img);

		if (cret < 0) {
			vfs_log(&fs->io, VFS_LOG_ERR, "%s: closing failed: %s", fs->image, strerror(-cret));
			if (ret == 0) {
				ret = cret;
				seterr(err, "%s: closing failed: %s", fs->image, strerror(-cret));
			}
		} else if (mounted) {
			vfs_log(&fs->io, VFS_LOG_INFO, "%s closed cleanly", fs->image);
		}
	}
	if (fs_up)
		vfs_fs_destroy(fs);
	if (img)
		vfs_io_destroy(&fs->io);
	if (st.notify_fd >= 0 && ret < 0) {
		dprintf(st.notify_fd, "ERR %d\n%s", -ret, err->msg);
		close(st.notify_fd);
	} else if (st.notify_fd >= 0) {
		close(st.notify_fd);
	}
	return ret;
}

/* ---- mount ------------------------------------------------------------------------ */

int vhdfuse_mount(const struct vhdfuse_opts *o, vhdfuse_ready_fn ready, void *ready_ctx,
		  struct vhd_err *err)
{
	struct vfs_fs *fs = NULL;
	char *reply = NULL;
	size_t len = 0, cap = 0;
	struct stat st;
	int p[2] = {-1, -1}, ret;
	pid_t pid;

	err->msg[0] = 0;
	if (!o->image || !o->mountpoint) {
		seterr(err, "an IMAGE and a MOUNTPOINT are needed");
		return -EINVAL;
	}
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->opts = o;
	fs->uid = getuid();
	fs->gid = getgid();
	clock_gettime(CLOCK_REALTIME, &fs->mount_time);
	/* Absolute paths: the daemon changes to / and the probe opens
	 * MOUNTPOINT/disk from another thread. */
	if (!realpath(o->image, fs->image)) {
		ret = -errno;
		seterr(err, "%s: %s", o->image, strerror(-ret));
		goto out;
	}
	if (!realpath(o->mountpoint, fs->mountpoint) || stat(fs->mountpoint, &st) < 0) {
		ret = -errno;
		seterr(err, "mount point %s: %s", o->mountpoint, strerror(-ret));
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		ret = -ENOTDIR;
		seterr(err, "mount point %s is not a directory", o->mountpoint);
		goto out;
	}
	if (is_mount_point(fs->mountpoint)) {
		ret = -EBUSY;
		seterr(err, "%s is already a mount point (unmount it first)", fs->mountpoint);
		goto out;
	}
	if (o->foreground || o->debug) {
		fs->pid = getpid();
		ret = serve(fs, -1, ready, ready_ctx, false, err);
		goto out;
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		ret = -errno;
		seterr(err, "pipe: %s", strerror(-ret));
		goto out;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		seterr(err, "fork: %s", strerror(-ret));
		goto out;
	}
	if (pid == 0) {
		close(p[0]);
		setsid();
		if (chdir("/") < 0)
			_exit(1);
		fs->pid = getpid();
		ret = serve(fs, p[1], NULL, NULL, true, err);
		free(fs);
		_exit(ret < 0 ? 1 : 0);
	}
	close(p[1]);
	p[1] = -1;
	/* The daemon answers "OK\n<info.json>" or "ERR <errno>\n<message>",
	 * then closes its end. */
	for (;;) {
		ssize_t n;

		if (len + 4096 + 1 > cap) {
			char *nr = realloc(reply, cap = cap ? cap * 2 : 16384);

			if (!nr) {
				ret = -ENOMEM;
				goto out;
			}
			reply = nr;
		}
		n = read(p[0], reply + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (!reply) {
		ret = -EIO;
		goto died;
	}
	reply[len] = 0;
	if (!strncmp(reply, "OK\n", 3)) {
		if (ready)
			ready(ready_ctx, reply + 3);
		ret = 0; /* the daemon lives on */
		goto out;
	}
	if (!strncmp(reply, "ERR ", 4)) {
		char *nl = strchr(reply, '\n');

		ret = -atoi(reply + 4);
		if (ret >= 0)
			ret = -EIO;
		seterr(err, "%s", nl ? nl + 1 : "the mount failed");
		waitpid(pid, NULL, 0);
		goto out;
	}
	ret = -EIO;
died:
	seterr(err, "the mount daemon (pid %d) ended before the mount was ready", (int)pid);
	waitpid(pid, NULL, 0);
out:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	free(reply);
	free(fs);
	return ret;
}

/* ---- unmount ---------------------------------------------------------------------- */

/* mountinfo escapes blanks and backslashes as \ooo. */
static void unescape_octal(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = 0;
}

/* The device minor of our mount at path (fuse.vhdmount), 0 when there is
 * none; read from mountinfo, never by touching the mount itself. */
static unsigned mount_minor(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	unsigned minor = 0;

	if (!f)
		return 0;
	while (!minor && getline(&line, &cap, f) > 0) {
		char *fields[6], *save = NULL, *tok, *sep = strstr(line, " - "), *colon;
		int n = 0;

		if (!sep || strncmp(sep + 3, "fuse.vhdmount ", 14))
			continue;
		for (tok = strtok_r(line, " ", &save); tok && n < 6; tok = strtok_r(NULL, " ", &save))
			fields[n++] = tok;
		if (n < 5)
			continue;
		unescape_octal(fields[4]);
		colon = strchr(fields[2], ':');
		if (strcmp(fields[4], path) || !colon)
			continue;
		minor = (unsigned)strtoul(colon + 1, NULL, 10);
	}
	free(line);
	fclose(f);
	return minor;
}

/* True when path is a mount point of type fuse.vhdmount (ours). */
static bool is_our_mount(const char *path)
{
	return mount_minor(path) != 0;
}

/* The daemon's pid (an attribute of the mount's root, fs.c); 0 when it
 * cannot be read (a daemon that died leaves a mount that answers ENOTCONN). */
static pid_t daemon_pid(const char *mnt)
{
	char v[24];
	ssize_t n = getxattr(mnt, "user.vhdmount.pid", v, sizeof(v) - 1);

	if (n <= 0)
		return 0;
	v[n] = 0;
	return (pid_t)atoi(v);
}

/* Runs fusermount3 -u [-z] (or umount2 as root without fusermount3);
 * 0, or -errno with the tool's message in msg. */
static int run_unmount(const char *mnt, bool lazy, char *msg, size_t msglen)
{
	int p[2], status, ret = 0;
	size_t len = 0;
	pid_t pid;

	msg[0] = 0;
	if (access("/usr/bin/fusermount3", X_OK) < 0 && access("/bin/fusermount3", X_OK) < 0 &&
	    geteuid() == 0) {
		if (umount2(mnt, lazy ? MNT_DETACH : 0) == 0)
			return 0;
		ret = -errno;
		snprintf(msg, msglen, "umount %s: %s", mnt, strerror(-ret));
		return ret;
	}
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		close(p[0]);
		close(p[1]);
		return ret;
	}
	if (pid == 0) {
		dup2(p[1], STDERR_FILENO);
		dup2(p[1], STDOUT_FILENO);
		execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", "--", mnt, (char *)NULL);
		dprintf(STDERR_FILENO, "cannot run fusermount3: %s", strerror(errno));
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		ssize_t n = read(p[0], msg + len, msglen - len - 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len + 1 >= msglen)
			break;
	}
	msg[len] = 0;
	while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
		msg[--len] = 0;
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	return strstr(msg, "busy") ? -EBUSY : -EIO;
}

int vhdfuse_unmount(const char *mountpoint, bool lazy, unsigned timeout_ms, struct vhd_err *err)
{
	char dir[PATH_MAX], base[PATH_MAX], rdir[PATH_MAX], mnt[PATH_MAX * 2 + 2];
	char msg[VHD_ERR_LEN];
	struct timespec t0, now;
	int pidfd = -1, ret;
	pid_t pid;

	err->msg[0] = 0;
	/* realpath of the mount point itself fails once its daemon died
	 * (ENOTCONN); resolve its directory instead. */
	snprintf(dir, sizeof(dir), "%s", mountpoint);
	snprintf(base, sizeof(base), "%s", mountpoint);
	if (!realpath(dirname(dir), rdir)) {
		ret = -errno;
		seterr(err, "%s: %s", mountpoint, strerror(-ret));
		return ret;
	}
	snprintf(mnt, sizeof(mnt), "%s/%s", strcmp(rdir, "/") ? rdir : "", basename(base));
	if (!is_our_mount(mnt)) {
		/* A path given through a symlink: try the full realpath too. */
		char full[PATH_MAX];

		if (!realpath(mountpoint, full) || !is_our_mount(full)) {
			seterr(err, "%s is not a vhdmount mount point", mountpoint);
			return -EINVAL;
		}
		snprintf(mnt, sizeof(mnt), "%s", full);
	}
	pid = daemon_pid(mnt);
	if (pid > 0)
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		ret = run_unmount(mnt, lazy, msg, sizeof(msg));
		if (ret != -EBUSY)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		/* A partition probe may hold the disk open for a moment. */
		if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > 3000)
			break;
		usleep(100000);
	}
	if (ret == -EBUSY) {
		seterr(err, "%s is busy: a file on it is still open (a loop device? detach it "
			    "with losetup -d; or use --lazy)", mnt);
		goto out;
	}
	if (ret < 0) {
		seterr(err, "unmounting %s failed: %s", mnt, msg[0] ? msg : strerror(-ret));
		goto out;
	}
	if (pidfd >= 0) {
		/* The lock is released when the daemon has flushed and closed. */
		struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
		int r;

		do
			r = poll(&pfd, 1, (int)timeout_ms);
		while (r < 0 && errno == EINTR);
		if (r == 0) {
			ret = -ETIMEDOUT;
			seterr(err, "%s is unmounted, but its daemon (pid %d) is still closing the "
				    "image after %u ms", mnt, (int)pid, timeout_ms);
		}
	}
out:
	if (pidfd >= 0)
		close(pidfd);
	return ret;
}
