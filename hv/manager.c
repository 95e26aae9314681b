/* manager.c - the partition manager's operations (what hvctl calls):
 * create, start, stop, pause, resume, status, list, delete.
 *
 * Commands that change a partition hold its lock file (flock) for their
 * duration; the worker never takes it (it is the only writer of state.json
 * while it lives, and a command writes state.json only when the worker is
 * found dead: reconcile()). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "vhd.h"

#define START_TIMEOUT_MS 60000
#define STOP_TIMEOUT_MS 30000
#define WORKER_EXIT_TIMEOUT 75.0   /* the worker's own VSP stop timeout + margin */

/* ---- the context ---------------------------------------------------------- */

static char *search_path(const char *prog)
{
	const char *path = getenv("PATH");
	char *copy, *save = NULL, *found = NULL;

	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	copy = strdup(path);
	for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
		char *f = hv_strf("%s/%s", *d ? d : ".", prog);

		if (f && access(f, X_OK) == 0) {
			found = realpath(f, NULL);
			free(f);
			break;
		}
		free(f);
	}
	free(copy);
	return found;
}

static char *abs_exe(const char *path)
{
	if (strchr(path, '/'))
		return access(path, X_OK) == 0 ? realpath(path, NULL) : NULL;
	return search_path(path);
}

/* vhd-vspd beside this program (installed side by side), or in the build
 * tree (hv/../blockvsp/), or on PATH. */
static char *find_vspd(void)
{
	char self[PATH_MAX], *slash, *f;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		self[n] = 0;
		slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			f = hv_strf("%s/vhd-vspd", self);
			if (f && access(f, X_OK) == 0)
				return f;
			free(f);
			f = hv_strf("%s/../blockvsp/vhd-vspd", self);
			if (f && access(f, X_OK) == 0) {
				char *r = realpath(f, NULL);

				free(f);
				return r;
			}
			free(f);
		}
	}
	return search_path("vhd-vspd");
}

int hv_ctx_new(const struct hv_ctx_opts *o, struct hv_ctx **out, struct hv_err *err)
{
	struct hv_ctx *ctx = calloc(1, sizeof(*ctx));
	const char *env;
	int ret = -ENOMEM;

	*out = NULL;
	if (!ctx)
		goto fail;
	if (o && o->state_dir)
		ctx->state_dir = strdup(o->state_dir);
	else if ((env = getenv("HV_STATE_DIR")) && *env)
		ctx->state_dir = strdup(env);
	else if ((env = getenv("XDG_STATE_HOME")) && *env == '/')
		ctx->state_dir = hv_strf("%s/vhdstack", env);
	else if ((env = getenv("HOME")) && *env)
		ctx->state_dir = hv_strf("%s/.local/state/vhdstack", env);
	else {
		hv_err_set(err, "no state directory: set --state-dir, HV_STATE_DIR or HOME");
		ret = -EINVAL;
		goto fail;
	}
	if (!ctx->state_dir)
		goto fail;
	if (ctx->state_dir[0] != '/') {
		char cwd[PATH_MAX];
		char *abs = getcwd(cwd, sizeof(cwd)) ? hv_strf("%s/%s", cwd, ctx->state_dir) : NULL;

		if (!abs)
			goto fail;
		free(ctx->state_dir);
		ctx->state_dir = abs;
	}
	/* The binaries are looked up now but only required by start. */
	if (o && o->vspd)
		ctx->vspd = abs_exe(o->vspd);
	else if ((env = getenv("HV_VSPD")) && *env)
		ctx->vspd = abs_exe(env);
	else
		ctx->vspd = find_vspd();
	if (o && o->qemu)
		ctx->qemu = abs_exe(o->qemu);
	else if ((env = getenv("HV_QEMU")) && *env)
		ctx->qemu = abs_exe(env);
	else
		ctx->qemu = search_path("qemu-system-x86_64");
	*out = ctx;
	return 0;
fail:
	if (ret == -ENOMEM)
		hv_err_set(err, "out of memory");
	hv_ctx_free(ctx);
	return ret;
}

void hv_ctx_free(struct hv_ctx *ctx)
{
	if (!ctx)
		return;
	free(ctx->state_dir);
	free(ctx->vspd);
	free(ctx->qemu);
	free(ctx);
}

const char *hv_ctx_state_dir(const struct hv_ctx *ctx)
{
	return ctx->state_dir;
}

/* ---- helpers -------------------------------------------------------------- */

static void remove_run_dir_files(const struct hv_part *p)
{
	DIR *d = opendir(p->run_dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		char *f;

		if (e->d_name[0] == '.')
			continue;
		f = hv_strf("%s/%s", p->run_dir, e->d_name);
		if (f)
			unlink(f);
		free(f);
	}
	if (d)
		closedir(d);
}

/* Waits until the recorded process is gone (polling: it is not our child). */
static bool wait_gone(const struct hv_proc *proc, double seconds)
{
	double deadline = hv_mono() + seconds;

	while (hv_proc_alive(proc)) {
		if (hv_mono() > deadline)
			return false;
		hv_sleep_ms(50);
	}
	return true;
}

/* Under the lock: a partition recorded as up whose worker is dead is
 * stopped; processes it left behind are ended (QEMU killed, vhd-vspd
 * SIGTERMed so that it still flushes and closes the images). */
static int reconcile(const struct hv_part *p, struct hv_runstate *rs, struct hv_err *err)
{
	char orphans[160] = "";

	if (rs->state == HV_STATE_DEFINED || rs->state == HV_STATE_STOPPED ||
	    hv_proc_alive(&rs->worker))
		return 0;
	if (hv_proc_alive(&rs->qemu)) {
		kill(rs->qemu.pid, SIGKILL);
		wait_gone(&rs->qemu, 10);
		snprintf(orphans, sizeof(orphans), "; killed its QEMU (pid %d)", (int)rs->qemu.pid);
	}
	if (hv_proc_alive(&rs->vspd)) {
		size_t n = strlen(orphans);

		kill(rs->vspd.pid, SIGTERM);
		if (!wait_gone(&rs->vspd, 60)) {
			kill(rs->vspd.pid, SIGKILL);
			wait_gone(&rs->vspd, 10);
		}
		snprintf(orphans + n, sizeof(orphans) - n, "; stopped its vhd-vspd (pid %d)",
			 (int)rs->vspd.pid);
	}
	snprintf(rs->last_exit, sizeof(rs->last_exit),
		 "the worker (pid %d) died while the partition was %s%s", (int)rs->worker.pid,
		 hv_state_name(rs->state), orphans);
	rs->state = HV_STATE_STOPPED;
	rs->stopped_at = hv_now();
	rs->worker = rs->qemu = rs->vspd = (struct hv_proc){0};
	remove_run_dir_files(p);
	return hv_rs_write(p, rs, err);
}

/* Opens the partition, takes its lock, reads and reconciles its state. */
static int open_locked(struct hv_ctx *ctx, const char *name, struct hv_part *p,
		       struct hv_runstate *rs, struct hv_err *err)
{
	struct stat st;
	int fd, ret;

	ret = hv_part_init(ctx, name, p, err);
	if (ret < 0)
		return ret;
	if (stat(p->state, &st) < 0) {
		hv_err_set(err, "partition %s does not exist (no %s)", name, p->state);
		hv_part_fini(p);
		return -ENOENT;
	}
	fd = hv_part_lock(p, err);
	if (fd < 0) {
		hv_part_fini(p);
		return fd;
	}
	ret = hv_rs_read(p, rs, err);
	if (ret == 0)
		ret = reconcile(p, rs, err);
	if (ret < 0) {
		close(fd);
		hv_part_fini(p);
		return ret;
	}
	return fd;
}

/* ---- create ----------------------------------------------------------------- */

int hv_create(struct hv_ctx *ctx, const struct hv_config *c, struct hv_err *err)
{
	struct json_object *j = NULL;
	struct hv_runstate rs = {.state = HV_STATE_DEFINED};
	struct hv_part p = {0};
	bool made = false;
	const char *text;
	int ret;

	ret = hv_part_init(ctx, c->name, &p, err);
	if (ret < 0)
		goto out;
	/* Every disk must open as a VHD now, not at start. */
	for (unsigned i = 0; i < c->nr_disks; i++) {
		struct vhd_open_opts oo = {.flags = VHD_OPEN_NO_LOCK};
		struct vhd_image *img;
		struct vhd_err verr;

		ret = vhd_open(c->disks[i].path, &oo, &img, &verr);
		if (ret < 0) {
			hv_err_set(err, "disks[%u]: %s", i, verr.msg);
			goto out;
		}
		vhd_close(img);
	}
	ret = hv_mkdir_p(ctx->state_dir, err);
	if (ret < 0)
		goto out;
	if (mkdir(p.dir, 0755) < 0) {
		ret = -errno;
		if (errno == EEXIST)
			hv_err_set(err, "partition %s already exists (%s)", c->name, p.dir);
		else
			hv_err_set(err, "mkdir %s: %s", p.dir, strerror(errno));
		goto out;
	}
	made = true;
	j = hv_config_to_json(c);
	text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	ret = hv_write_file_atomic(p.config, text, strlen(text), err);
	if (ret < 0)
		goto out;
	ret = hv_rs_write(&p, &rs, err);
out:
	if (ret < 0 && made) {
		unlink(p.config);
		unlink(p.state);
		rmdir(p.dir);
	}
	json_object_put(j);
	hv_part_fini(&p);
	return ret;
}

/* ---- start ------------------------------------------------------------------ */

static int read_report(int fd, int timeout_ms, char *buf, size_t len)
{
	double deadline = hv_mono() + timeout_ms / 1000.0;
	size_t got = 0;

	buf[0] = 0;
	for (;;) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		double left = deadline - hv_mono();
		ssize_t r;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		r = read(fd, buf + got, len - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
		buf[got] = 0;
		if (got == len - 1 || strchr(buf, '\n'))
			break;
	}
	return 0;
}

int hv_start(struct hv_ctx *ctx, const char *name, const struct hv_start_opts *o,
	     struct hv_err *err)
{
	const char *accel = o && o->accel ? o->accel : "tcg";
	int timeout = o && o->timeout_ms > 0 ? o->timeout_ms : START_TIMEOUT_MS;
	struct hv_config *cfg = NULL;
	struct hv_runstate rs;
	struct hv_part p = {0};
	int lock, pfd[2] = {-1, -1}, ret, st;
	char msg[HV_ERR_LEN + 16];
	pid_t pid;

	lock = open_locked(ctx, name, &p, &rs, err);
	if (lock < 0)
		return lock;
	if (hv_rs_active(&rs)) {
		hv_err_set(err, "partition %s is already %s (worker pid %d)", name,
			   hv_state_name(rs.state), (int)rs.worker.pid);
		ret = -EALREADY;
		goto out;
	}
	if (strcmp(accel, "tcg") && strcmp(accel, "kvm")) {
		hv_err_set(err, "--accel %s: not tcg or kvm", accel);
		ret = -EINVAL;
		goto out;
	}
	/* The stored config is checked again: its kernel or disks may have
	 * gone since create. */
	ret = hv_config_load(p.config, &cfg, err);
	if (ret < 0)
		goto out;
	if (!ctx->vspd) {
		hv_err_set(err, "vhd-vspd not found (beside hvctl, in the build tree or on PATH): "
			   "give --vspd or HV_VSPD");
		ret = -ENOENT;
		goto out;
	}
	if (!ctx->qemu) {
		hv_err_set(err, "qemu-system-x86_64 not found on PATH: give --qemu or HV_QEMU");
		ret = -ENOENT;
		goto out;
	}
	snprintf(rs.vspd_bin, sizeof(rs.vspd_bin), "%s", ctx->vspd);
	snprintf(rs.qemu_bin, sizeof(rs.qemu_bin), "%s", ctx->qemu);
	ret = hv_rs_write(&p, &rs, err);
	if (ret < 0)
		goto out;
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		ret = -errno;
		hv_err_set(err, "pipe: %s", strerror(errno));
		goto out;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		hv_err_set(err, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		/* Detach: a new session, and a second fork so that the worker
		 * is nobody's child here and survives hvctl. */
		setsid();
		pid = fork();
		if (pid != 0)
			_exit(pid < 0 ? 1 : 0);
		/* dup3 keeps close-on-exec: QEMU and vhd-vspd must not hold
		 * the report pipe open (hvctl waits for its end). */
		if (pfd[1] != 3)
			dup3(pfd[1], 3, O_CLOEXEC);
		/* Nothing of hvctl's stays open in the worker (its lock fd
		 * above all: the lock would live as long as the worker). */
		close_range(4, ~0U, 0);
		hv_worker_main(ctx, name, accel, 3);
	}
	close(pfd[1]);
	pfd[1] = -1;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	ret = read_report(pfd[0], timeout, msg, sizeof(msg));
	if (ret < 0) {
		hv_err_set(err, "partition %s: the worker did not report within %d s (see %s)", name,
			   timeout / 1000, p.worker_log);
		goto out;
	}
	if (!strncmp(msg, "ok", 2)) {
		ret = 0;
	} else if (!strncmp(msg, "error: ", 7)) {
		msg[strcspn(msg, "\n")] = 0;
		hv_err_set(err, "partition %s: %s", name, msg + 7);
		ret = -EIO;
	} else {
		hv_err_set(err, "partition %s: the worker died while starting (see %s)", name,
			   p.worker_log);
		ret = -EIO;
	}
out:
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	hv_config_free(cfg);
	close(lock);
	hv_part_fini(&p);
	return ret;
}

/* ---- stop, pause, resume ----------------------------------------------------- */

static int stop_locked(const struct hv_part *p, struct hv_runstate *rs,
		       const struct hv_stop_opts *o, struct hv_stop_result *res, struct hv_err *err)
{
	int timeout = o && o->timeout_ms > 0 ? o->timeout_ms : STOP_TIMEOUT_MS;
	double t0 = hv_mono();
	struct hv_proc worker = rs->worker;
	struct hv_qmp *q = NULL;
	struct hv_err qerr;
	int ret;

	memset(res, 0, sizeof(*res));
	if (!hv_rs_active(rs)) {
		snprintf(res->how, sizeof(res->how), "was not running (%s)", hv_state_name(rs->state));
		return 0;
	}
	res->was_running = true;
	if (!(o && o->force)) {
		struct json_object *st = NULL, *running = NULL;

		if (hv_qmp_connect(p->qmp, 10000, &q, &qerr) < 0) {
			snprintf(res->how, sizeof(res->how), "no QMP for a graceful stop (%.100s); ",
				 qerr.msg);
		} else {
			/* A paused guest cannot see the power button. */
			if (hv_qmp_execute(q, "query-status", NULL, &st, 10000, &qerr) == 0 &&
			    json_object_object_get_ex(st, "running", &running) &&
			    !json_object_get_boolean(running))
				hv_qmp_execute(q, "cont", NULL, NULL, 10000, &qerr);
			json_object_put(st);
			ret = hv_qmp_execute(q, "system_powerdown", NULL, NULL, 10000, &qerr);
			/* Leave the monitor free for others while we wait. */
			hv_qmp_close(q);
			q = NULL;
			if (ret == 0 && wait_gone(&worker, timeout / 1000.0)) {
				res->graceful = true;
				snprintf(res->how, sizeof(res->how),
					 "the guest powered off after the ACPI power button");
			} else if (ret == 0) {
				snprintf(res->how, sizeof(res->how),
					 "the guest did not power off within %d s; ", timeout / 1000);
			} else {
				snprintf(res->how, sizeof(res->how), "%.100s; ", qerr.msg);
			}
		}
	}
	if (!res->graceful) {
		size_t n = strlen(res->how);

		if (hv_qmp_connect(p->qmp, 5000, &q, &qerr) == 0 &&
		    hv_qmp_execute(q, "quit", NULL, NULL, 5000, &qerr) == 0) {
			snprintf(res->how + n, sizeof(res->how) - n, "forced: QMP quit");
		} else if (hv_proc_alive(&worker)) {
			/* No QMP (still starting, or QEMU hung): the worker aborts a
			 * start, or quits QEMU itself (SIGTERM, then SIGKILL). */
			kill(worker.pid, SIGTERM);
			snprintf(res->how + n, sizeof(res->how) - n,
				 "forced: the worker was told to stop (%.60s)", qerr.msg);
		} else {
			snprintf(res->how + n, sizeof(res->how) - n, "forced");
		}
		hv_qmp_close(q);
		q = NULL;
		if (!wait_gone(&worker, WORKER_EXIT_TIMEOUT)) {
			/* Its children follow it (parent-death signals). */
			kill(worker.pid, SIGKILL);
			wait_gone(&worker, 10);
		}
	}
	res->seconds = hv_mono() - t0;
	ret = hv_rs_read(p, rs, err);
	if (ret == 0)
		ret = reconcile(p, rs, err);
	return ret;
}

int hv_stop(struct hv_ctx *ctx, const char *name, const struct hv_stop_opts *o,
	    struct hv_stop_result *res, struct hv_err *err)
{
	struct hv_runstate rs;
	struct hv_part p;
	int lock, ret;

	memset(res, 0, sizeof(*res));
	lock = open_locked(ctx, name, &p, &rs, err);
	if (lock < 0)
		return lock;
	ret = stop_locked(&p, &rs, o, res, err);
	close(lock);
	hv_part_fini(&p);
	return ret;
}

/* QMP stop/cont, then wait for the worker to record the STOP/RESUME event. */
static int pause_resume(struct hv_ctx *ctx, const char *name, bool pause, struct hv_err *err)
{
	enum hv_state want = pause ? HV_STATE_PAUSED : HV_STATE_RUNNING;
	struct hv_runstate rs;
	struct hv_qmp *q = NULL;
	struct hv_part p;
	double deadline;
	int ret;

	ret = hv_part_init(ctx, name, &p, err);
	if (ret < 0)
		return ret;
	ret = hv_rs_read(&p, &rs, err);
	if (ret < 0)
		goto out;
	if (!hv_rs_active(&rs) || (rs.state != HV_STATE_RUNNING && rs.state != HV_STATE_PAUSED)) {
		hv_err_set(err, "partition %s is not running (%s%s)", name, hv_state_name(rs.state),
			   hv_rs_active(&rs) || rs.state == HV_STATE_DEFINED ||
			   rs.state == HV_STATE_STOPPED ? "" : ", its worker is gone");
		ret = -EINVAL;
		goto out;
	}
	if (rs.state == want)
		goto out;
	ret = hv_qmp_connect(p.qmp, 10000, &q, err);
	if (ret < 0)
		goto out;
	ret = hv_qmp_execute(q, pause ? "stop" : "cont", NULL, NULL, 10000, err);
	if (ret < 0)
		goto out;
	deadline = hv_mono() + 10;
	for (;;) {
		ret = hv_rs_read(&p, &rs, err);
		if (ret < 0 || rs.state == want)
			break;
		if (!hv_rs_active(&rs) || hv_mono() > deadline) {
			hv_err_set(err, "partition %s: QEMU accepted %s but the state is %s", name,
				   pause ? "stop" : "cont", hv_state_name(rs.state));
			ret = -EIO;
			break;
		}
		hv_sleep_ms(20);
	}
out:
	hv_qmp_close(q);
	hv_part_fini(&p);
	return ret;
}

int hv_pause(struct hv_ctx *ctx, const char *name, struct hv_err *err)
{
	return pause_resume(ctx, name, true, err);
}

int hv_resume(struct hv_ctx *ctx, const char *name, struct hv_err *err)
{
	return pause_resume(ctx, name, false, err);
}

/* ---- status, list ------------------------------------------------------------- */

static struct json_object *proc_status(const struct hv_proc *p)
{
	struct json_object *j;

	if (p->pid <= 0)
		return NULL;
	j = json_object_new_object();
	json_object_object_add(j, "pid", json_object_new_int64(p->pid));
	json_object_object_add(j, "alive", json_object_new_boolean(hv_proc_alive(p)));
	return j;
}

static char *serial_log_of(const struct hv_part *p, const struct hv_config *c)
{
	return c && c->serial_log ? strdup(c->serial_log) : hv_strf("%s/serial.log", p->dir);
}

int hv_status(struct hv_ctx *ctx, const char *name, bool query_qmp, struct json_object **out,
	      struct hv_err *err)
{
	struct json_object *j = NULL, *pids, *disks;
	struct hv_config *cfg = NULL;
	struct hv_runstate rs;
	struct hv_part p;
	enum hv_state eff;
	char *serial = NULL, note[300] = "";
	bool active, up;
	int ret;

	*out = NULL;
	ret = hv_part_init(ctx, name, &p, err);
	if (ret < 0)
		return ret;
	ret = hv_rs_read(&p, &rs, err);
	if (ret < 0)
		goto out;
	/* The config is reported as stored; a broken one (a kernel gone)
	 * is not an error for status. */
	{
		struct hv_err cerr;

		if (hv_config_load_stored(p.config, &cfg, &cerr) < 0)
			snprintf(note, sizeof(note), "%s", cerr.msg);
	}
	active = hv_rs_active(&rs);
	if (note[0]) {
		j = json_object_new_object();
		json_object_object_add(j, "config_error", json_object_new_string(note));
		note[0] = 0;
	}
	up = rs.state == HV_STATE_STARTING || rs.state == HV_STATE_RUNNING ||
	     rs.state == HV_STATE_PAUSED || rs.state == HV_STATE_STOPPING;
	eff = rs.state;
	if (up && !active) {
		eff = HV_STATE_STOPPED;
		snprintf(note, sizeof(note), "the worker (pid %d) is gone: the partition is not "
			 "running (state.json still says %s)%s%s", (int)rs.worker.pid,
			 hv_state_name(rs.state),
			 hv_proc_alive(&rs.qemu) ? "; its QEMU is still alive" : "",
			 hv_proc_alive(&rs.vspd) ? "; its vhd-vspd is still alive" : "");
	}
	if (!j)
		j = json_object_new_object();
	json_object_object_add(j, "name", json_object_new_string(name));
	json_object_object_add(j, "state", json_object_new_string(hv_state_name(eff)));
	json_object_object_add(j, "recorded_state", json_object_new_string(hv_state_name(rs.state)));
	json_object_object_add(j, "stale", json_object_new_boolean(up && !active));
	if (note[0])
		json_object_object_add(j, "note", json_object_new_string(note));
	json_object_object_add(j, "generation", json_object_new_int64(rs.generation));
	if (rs.accel[0])
		json_object_object_add(j, "accel", json_object_new_string(rs.accel));
	pids = json_object_new_object();
	if (active) {
		json_object_object_add(pids, "worker", proc_status(&rs.worker));
		json_object_object_add(pids, "qemu", proc_status(&rs.qemu));
		json_object_object_add(pids, "vspd", proc_status(&rs.vspd));
	} else if (up) {
		/* What the dead worker left: reported so that it can be seen. */
		json_object_object_add(pids, "worker", proc_status(&rs.worker));
		json_object_object_add(pids, "qemu", proc_status(&rs.qemu));
		json_object_object_add(pids, "vspd", proc_status(&rs.vspd));
	}
	json_object_object_add(j, "pids", pids);
	if (rs.started_at > 0)
		json_object_object_add(j, "started_at", json_object_new_double(rs.started_at));
	if (active && rs.state != HV_STATE_STARTING)
		json_object_object_add(j, "uptime_seconds",
				       json_object_new_double(hv_now() - rs.started_at));
	if (rs.stopped_at > 0 && !active)
		json_object_object_add(j, "stopped_at", json_object_new_double(rs.stopped_at));
	if (rs.last_exit[0] && !active)
		json_object_object_add(j, "last_exit", json_object_new_string(rs.last_exit));
	if (rs.shutdown_reason[0])
		json_object_object_add(j, "shutdown_reason",
				       json_object_new_string(rs.shutdown_reason));
	if (rs.error[0])
		json_object_object_add(j, "error", json_object_new_string(rs.error));
	json_object_object_add(j, "vsp_restarts", json_object_new_int64(rs.vsp_restarts));
	if (rs.vsp_exit[0])
		json_object_object_add(j, "vsp_exit", json_object_new_string(rs.vsp_exit));
	json_object_object_add(j, "io_errors", json_object_new_int64(rs.io_errors));
	if (rs.last_io_error[0])
		json_object_object_add(j, "last_io_error", json_object_new_string(rs.last_io_error));
	if (cfg) {
		json_object_object_add(j, "memory_mb", json_object_new_int64(cfg->memory_mb));
		json_object_object_add(j, "vcpus", json_object_new_int64(cfg->vcpus));
		json_object_object_add(j, "machine", json_object_new_string(cfg->machine));
	}
	disks = json_object_new_array();
	for (unsigned i = 0; cfg && i < cfg->nr_disks; i++) {
		const struct hv_disk_config *d = &cfg->disks[i];
		struct json_object *jd = json_object_new_object();
		char *sock = d->bus == HV_BUS_SYNTHETIC ? hv_strf("%s/vu%u.sock", p.run_dir, i)
							: hv_strf("%s/nbd.sock", p.run_dir);

		json_object_object_add(jd, "index", json_object_new_int64(i));
		json_object_object_add(jd, "path", json_object_new_string(d->path));
		json_object_object_add(jd, "bus", json_object_new_string(hv_bus_name(d->bus)));
		json_object_object_add(jd, "device",
				       json_object_new_string(d->bus == HV_BUS_SYNTHETIC
							      ? "vhost-user-blk-pci"
							      : (strcmp(cfg->machine, "q35")
								 ? "ide-hd (PIIX IDE)"
								 : "ide-hd (ICH9 AHCI)")));
		json_object_object_add(jd, "read_only", json_object_new_boolean(d->read_only));
		if (d->bus == HV_BUS_SYNTHETIC)
			json_object_object_add(jd, "num_queues", json_object_new_int64(d->num_queues));
		{
			char ex[16];

			snprintf(ex, sizeof(ex), "d%u", i);
			json_object_object_add(jd, "export", json_object_new_string(ex));
		}
		if (active && sock)
			json_object_object_add(jd, "socket", json_object_new_string(sock));
		free(sock);
		json_object_array_add(disks, jd);
	}
	json_object_object_add(j, "disks", disks);
	serial = serial_log_of(&p, cfg);
	if (serial)
		json_object_object_add(j, "serial_log", json_object_new_string(serial));
	json_object_object_add(j, "directory", json_object_new_string(p.dir));
	if (query_qmp && active && (rs.state == HV_STATE_RUNNING || rs.state == HV_STATE_PAUSED)) {
		struct json_object *st = NULL;
		struct hv_qmp *q = NULL;
		struct hv_err qerr;

		if (hv_qmp_connect(p.qmp, 3000, &q, &qerr) == 0 &&
		    hv_qmp_execute(q, "query-status", NULL, &st, 3000, &qerr) == 0)
			json_object_object_add(j, "qmp_status", st);
		else
			json_object_object_add(j, "qmp_error", json_object_new_string(qerr.msg));
		hv_qmp_close(q);
	}
	*out = j;
	j = NULL;
out:
	json_object_put(j);
	free(serial);
	hv_config_free(cfg);
	hv_part_fini(&p);
	return ret;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void hv_names_free(char **names, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int hv_list(struct hv_ctx *ctx, char ***names, unsigned *n, struct hv_err *err)
{
	DIR *d = opendir(ctx->state_dir);
	struct dirent *e;
	char **v = NULL;
	unsigned cnt = 0;
	int ret = 0;

	*names = NULL;
	*n = 0;
	if (!d) {
		if (errno == ENOENT)
			return 0;  /* nothing created yet */
		ret = -errno;
		hv_err_set(err, "%s: %s", ctx->state_dir, strerror(errno));
		return ret;
	}
	while ((e = readdir(d))) {
		char *st;
		struct stat sb;
		char **nv;

		if (!hv_name_valid(e->d_name))
			continue;
		st = hv_strf("%s/%s/state.json", ctx->state_dir, e->d_name);
		if (!st || stat(st, &sb) < 0) {
			free(st);
			continue;
		}
		free(st);
		nv = realloc(v, (cnt + 1) * sizeof(*v));
		if (!nv || !(nv[cnt] = strdup(e->d_name))) {
			v = nv ? nv : v;
			ret = -ENOMEM;
			hv_err_set(err, "out of memory");
			break;
		}
		v = nv;
		cnt++;
	}
	closedir(d);
	if (ret < 0) {
		hv_names_free(v, cnt);
		return ret;
	}
	if (cnt)
		qsort(v, cnt, sizeof(*v), cmp_names);
	*names = v;
	*n = cnt;
	return 0;
}

/* ---- delete, console -------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 ? -1 : 0;
}

int hv_delete(struct hv_ctx *ctx, const char *name, bool force, struct hv_err *err)
{
	struct hv_stop_result res;
	struct hv_stop_opts so = {.force = true};
	struct hv_runstate rs;
	struct hv_part p;
	int lock, ret;

	lock = open_locked(ctx, name, &p, &rs, err);
	if (lock < 0)
		return lock;
	if (hv_rs_active(&rs)) {
		if (!force) {
			hv_err_set(err, "partition %s is %s: stop it first (or delete --force)", name,
				   hv_state_name(rs.state));
			ret = -EBUSY;
			goto out;
		}
		ret = stop_locked(&p, &rs, &so, &res, err);
		if (ret < 0)
			goto out;
	}
	if (nftw(p.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0) {
		ret = -errno;
		hv_err_set(err, "removing %s: %s", p.dir, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	close(lock);
	hv_part_fini(&p);
	return ret;
}

int hv_console_path(struct hv_ctx *ctx, const char *name, char **path, struct hv_err *err)
{
	struct hv_config *cfg = NULL;
	struct hv_part p;
	int ret;

	*path = NULL;
	ret = hv_part_init(ctx, name, &p, err);
	if (ret < 0)
		return ret;
	ret = hv_config_load_stored(p.config, &cfg, err);
	if (ret == 0) {
		*path = serial_log_of(&p, cfg);
		if (!*path)
			ret = -ENOMEM;
	}
	hv_config_free(cfg);
	hv_part_fini(&p);
	return ret;
}

bool hv_is_active(struct hv_ctx *ctx, const char *name)
{
	struct hv_runstate rs;
	struct hv_part p;
	bool up = false;

	if (hv_part_init(ctx, name, &p, NULL) < 0)
		return false;
	if (hv_rs_read(&p, &rs, NULL) == 0)
		up = hv_rs_active(&rs);
	hv_part_fini(&p);
	return up;
}
