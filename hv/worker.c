/* worker.c - the per-partition worker process (Hyper-V's VM worker process).
 *
 * Forked by hv_start, detached (own session), it owns the partition while
 * it runs: starts vhd-vspd for the disks, then QEMU (paused), connects to
 * QEMU's second QMP monitor for events, lets the guest run, and records
 * every state change in state.json.  It is the only writer of state.json
 * while it lives.  Children die with it: QEMU by SIGKILL, vhd-vspd by
 * SIGTERM (which flushes and closes the images), through PR_SET_PDEATHSIG.
 *
 * When QEMU exits (guest poweroff, QMP quit, a signal, a crash), the worker
 * SIGTERMs vhd-vspd, waits for it to drain and close, records how both
 * ended, removes the sockets and exits.  If vhd-vspd dies while the guest
 * runs, the worker records it and restarts it (at most MAX_VSP_RESTARTS
 * times): emulated disks see I/O errors until QEMU's NBD client reconnects;
 * synthetic disks reconnect through the chardev's reconnect=1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MAX_VSP_RESTARTS 3
#define VSPD_READY_TIMEOUT 30.0   /* seconds for vhd-vspd to listen */
#define QEMU_QMP_TIMEOUT 30.0     /* seconds for QEMU's QMP socket */
#define VSPD_STOP_TIMEOUT 60.0    /* seconds for vhd-vspd to flush and exit */
#define QUIT_KILL_TIMEOUT 10.0    /* after a forced quit, SIGKILL */

struct worker {
	const struct hv_ctx *ctx;
	struct hv_part part;
	struct hv_config *cfg;
	struct hv_runstate rs;
	struct hv_paths paths;
	char *serial_log;
	const char *accel;
	int sfd;                  /* signalfd: SIGCHLD, SIGTERM, SIGINT, SIGHUP */
	pid_t qemu, vspd;         /* 0 once reaped */
	int qemu_status, vspd_status;
	bool qemu_exited;
	struct hv_qmp *qmp;
	sigset_t oldmask;
	double quit_at;           /* forced stop requested at (monotonic), 0 none */
	bool term_requested;      /* SIGTERM/SIGINT/SIGHUP arrived */
	bool dirty;               /* state changed, write at the next tick */
	double last_write;
};

__attribute__((format(printf, 1, 2)))
static void wlog(const char *fmt, ...)
{
	char ts[32];
	double now = hv_now();
	time_t t = (time_t)now;
	struct tm tm;
	va_list ap;

	localtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "%s.%03d hv-worker[%d]: ", ts, (int)((now - (double)t) * 1000),
		(int)getpid());
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static void describe_status(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st),
			 strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "ended (wait status 0x%x)", (unsigned)st);
}

static void save(struct worker *w)
{
	struct hv_err err;

	if (hv_rs_write(&w->part, &w->rs, &err) < 0)
		wlog("cannot record the state: %s", err.msg);
	w->dirty = false;
	w->last_write = hv_mono();
}

/* fork + exec with the worker's signal mask undone, stdout/stderr to log,
 * and a parent-death signal so that nothing outlives the worker. */
static pid_t spawn(struct worker *w, char *const argv[], const char *log, int deathsig)
{
	pid_t parent = getpid(), pid;

	fflush(NULL);
	pid = fork();
	if (pid != 0)
		return pid;
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	prctl(PR_SET_PDEATHSIG, deathsig);
	if (getppid() != parent)  /* the worker died before prctl */
		_exit(127);
	sigprocmask(SIG_SETMASK, &w->oldmask, NULL);
	if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		_exit(127);
	execv(argv[0], argv);
	dprintf(2, "hv-worker: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Reaps every exited child; records QEMU's and vhd-vspd's statuses. */
static void reap(struct worker *w, bool *vspd_died)
{
	int st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		char how[128];

		describe_status(st, how, sizeof(how));
		if (pid == w->qemu) {
			wlog("QEMU (pid %d) %s", (int)pid, how);
			w->qemu = 0;
			w->qemu_status = st;
			w->qemu_exited = true;
		} else if (pid == w->vspd) {
			wlog("vhd-vspd (pid %d) %s", (int)pid, how);
			w->vspd = 0;
			w->vspd_status = st;
			if (vspd_died)
				*vspd_died = true;
		}
	}
}

/* Waits for a signal on the signalfd for up to ms; handles SIGCHLD by
 * reaping; returns the last signal number seen (0 none). */
static int wait_signal(struct worker *w, int ms, bool *vspd_died)
{
	struct pollfd p = {.fd = w->sfd, .events = POLLIN};
	struct signalfd_siginfo si;
	int sig = 0;

	if (poll(&p, 1, ms) > 0) {
		while (read(w->sfd, &si, sizeof(si)) == sizeof(si)) {
			sig = (int)si.ssi_signo;
			if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP)
				w->term_requested = true;
		}
	}
	reap(w, vspd_died);
	return sig;
}

static void remove_run_files(struct worker *w)
{
	DIR *d = opendir(w->part.run_dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char *f = hv_strf("%s/%s", w->part.run_dir, e->d_name);

		if (f)
			unlink(f);
		free(f);
	}
	if (d)
		closedir(d);
}

static bool is_socket(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Starts vhd-vspd and waits until it listens: its pid file names it (it is
 * written only once every listener is up) and every socket exists. */
static int start_vspd(struct worker *w, struct hv_err *err)
{
	struct hv_argv a = {0};
	double deadline;
	int ret;

	unlink(w->part.vspd_pid);
	ret = hv_vspd_argv(w->cfg, w->rs.vspd_bin, &w->paths, &a, err);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i + 1 < a.n; i++)
		if (!strcmp(a.v[i], "--vhost-user"))
			unlink(strchr(a.v[i + 1], '=') + 1);
	w->vspd = spawn(w, a.v, w->part.vspd_log, SIGTERM);
	if (w->vspd < 0) {
		ret = -errno;
		hv_err_set(err, "fork: %s", strerror(errno));
		w->vspd = 0;
		goto out;
	}
	hv_proc_get(w->vspd, &w->rs.vspd);
	wlog("started vhd-vspd (pid %d) for %u disk(s)", (int)w->vspd, w->cfg->nr_disks);
	deadline = hv_mono() + VSPD_READY_TIMEOUT;
	for (;;) {
		char *txt = NULL;
		bool ready = false;

		if (hv_read_file(w->part.vspd_pid, 64, &txt, NULL) == 0 &&
		    atoi(txt) == (int)w->vspd) {
			ready = true;
			for (unsigned i = 0; i < a.n; i++)
				if (!strcmp(a.v[i], "--vhost-user") && i + 1 < a.n &&
				    !is_socket(strchr(a.v[i + 1], '=') + 1))
					ready = false;
		}
		free(txt);
		if (ready)
			break;
		wait_signal(w, 20, NULL);
		if (w->term_requested) {
			hv_err_set(err, "stop requested while vhd-vspd was starting");
			ret = -EINTR;
			goto out;
		}
		if (!w->vspd) {
			char *tail = hv_log_tail(w->part.vspd_log, 600);
			char how[128];

			describe_status(w->vspd_status, how, sizeof(how));
			hv_err_set(err, "vhd-vspd %s before it listened: %s", how,
				   tail && *tail ? tail : "(its log is empty)");
			free(tail);
			ret = -EIO;
			goto out;
		}
		if (hv_mono() > deadline) {
			hv_err_set(err, "vhd-vspd (pid %d) did not listen within %.0f s (see %s)",
				   (int)w->vspd, VSPD_READY_TIMEOUT, w->part.vspd_log);
			ret = -ETIMEDOUT;
			goto out;
		}
	}
	ret = 0;
out:
	hv_argv_free(&a);
	return ret;
}

static void stop_vspd(struct worker *w)
{
	double deadline = hv_mono() + VSPD_STOP_TIMEOUT;

	if (!w->vspd)
		return;
	kill(w->vspd, SIGTERM);
	while (w->vspd && hv_mono() < deadline)
		wait_signal(w, 100, NULL);
	if (w->vspd) {
		wlog("vhd-vspd (pid %d) did not exit %.0f s after SIGTERM: SIGKILL", (int)w->vspd,
		     VSPD_STOP_TIMEOUT);
		kill(w->vspd, SIGKILL);
		while (w->vspd)
			wait_signal(w, 100, NULL);
	}
}

static int start_qemu(struct worker *w, struct hv_err *err)
{
	struct hv_argv a = {0};
	double deadline;
	char *cmd = NULL;
	size_t len = 0;
	int ret;

	ret = hv_qemu_argv(w->cfg, w->rs.qemu_bin, w->accel, &w->paths, &a, err);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < a.n; i++)
		len += strlen(a.v[i]) + 1;
	cmd = calloc(1, len + 1);
	for (unsigned i = 0; cmd && i < a.n; i++) {
		strcat(cmd, a.v[i]);
		strcat(cmd, " ");
	}
	wlog("starting %s", cmd ? cmd : a.v[0]);
	/* The serial log holds the current run. */
	{
		int fd = open(w->serial_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (fd < 0) {
			ret = -errno;
			hv_err_set(err, "serial log %s: %s", w->serial_log, strerror(errno));
			goto out;
		}
		close(fd);
	}
	w->qemu = spawn(w, a.v, w->part.qemu_log, SIGKILL);
	if (w->qemu < 0) {
		ret = -errno;
		hv_err_set(err, "fork: %s", strerror(errno));
		w->qemu = 0;
		goto out;
	}
	hv_proc_get(w->qemu, &w->rs.qemu);
	deadline = hv_mono() + QEMU_QMP_TIMEOUT;
	for (;;) {
		struct hv_err qerr;

		if (is_socket(w->part.qmp_worker) &&
		    hv_qmp_connect(w->part.qmp_worker, 10000, &w->qmp, &qerr) == 0)
			break;
		wait_signal(w, 20, NULL);
		if (w->term_requested) {
			hv_err_set(err, "stop requested while QEMU was starting");
			ret = -EINTR;
			goto out;
		}
		if (!w->qemu) {
			char *tail = hv_log_tail(w->part.qemu_log, 600);
			char how[128];

			describe_status(w->qemu_status, how, sizeof(how));
			hv_err_set(err, "QEMU %s at start: %s", how,
				   tail && *tail ? tail : "(its log is empty)");
			free(tail);
			ret = -EIO;
			goto out;
		}
		if (hv_mono() > deadline) {
			hv_err_set(err, "QEMU (pid %d) did not open its QMP socket %s within %.0f s",
				   (int)w->qemu, w->part.qmp_worker, QEMU_QMP_TIMEOUT);
			ret = -ETIMEDOUT;
			goto out;
		}
	}
	ret = hv_qmp_execute(w->qmp, "cont", NULL, NULL, 10000, err);
out:
	free(cmd);
	hv_argv_free(&a);
	return ret;
}

static void handle_event(struct worker *w, struct json_object *ev)
{
	struct json_object *name = NULL, *data = NULL, *v;
	const char *n;

	json_object_object_get_ex(ev, "event", &name);
	json_object_object_get_ex(ev, "data", &data);
	n = json_object_get_string(name);
	if (!n)
		return;
	if (!strcmp(n, "STOP")) {
		if (w->rs.state == HV_STATE_RUNNING) {
			w->rs.state = HV_STATE_PAUSED;
			wlog("guest paused");
			save(w);
		}
	} else if (!strcmp(n, "RESUME")) {
		if (w->rs.state == HV_STATE_PAUSED) {
			w->rs.state = HV_STATE_RUNNING;
			wlog("guest resumed");
			save(w);
		}
	} else if (!strcmp(n, "SHUTDOWN")) {
		w->rs.shutdown_by_guest = json_object_object_get_ex(data, "guest", &v) &&
					  json_object_get_boolean(v);
		snprintf(w->rs.shutdown_reason, sizeof(w->rs.shutdown_reason), "%s",
			 json_object_object_get_ex(data, "reason", &v) ? json_object_get_string(v)
								       : "unknown");
		wlog("shutdown: %s (%s)", w->rs.shutdown_reason,
		     w->rs.shutdown_by_guest ? "by the guest" : "by the host");
		w->dirty = true;
	} else if (!strcmp(n, "POWERDOWN")) {
		wlog("ACPI power button pressed");
	} else if (!strcmp(n, "BLOCK_IO_ERROR")) {
		const char *dev = "", *op = "", *reason = "", *action = "";

		if (json_object_object_get_ex(data, "device", &v) && json_object_get_string(v) &&
		    *json_object_get_string(v))
			dev = json_object_get_string(v);
		else if (json_object_object_get_ex(data, "node-name", &v))
			dev = json_object_get_string(v);
		if (json_object_object_get_ex(data, "operation", &v))
			op = json_object_get_string(v);
		if (json_object_object_get_ex(data, "reason", &v))
			reason = json_object_get_string(v);
		if (json_object_object_get_ex(data, "action", &v))
			action = json_object_get_string(v);
		w->rs.io_errors++;
		snprintf(w->rs.last_io_error, sizeof(w->rs.last_io_error), "%s: %s: %s (action %s)",
			 dev, op, reason, action);
		if (w->rs.io_errors <= 10 || w->rs.io_errors % 100 == 0)
			wlog("I/O error #%u: %s", w->rs.io_errors, w->rs.last_io_error);
		w->dirty = true;
	}
}

static void drain_events(struct worker *w)
{
	struct json_object *ev;
	struct hv_err err;
	int r;

	while (w->qmp && (r = hv_qmp_next_event(w->qmp, &ev, 0, &err)) != 0) {
		if (r < 0) {
			/* QEMU is going away (or broke the protocol): stop listening;
			 * its exit arrives as SIGCHLD. */
			if (r != -EPIPE)
				wlog("QMP: %s", err.msg);
			hv_qmp_close(w->qmp);
			w->qmp = NULL;
			break;
		}
		handle_event(w, ev);
		json_object_put(ev);
	}
}

static void forced_quit(struct worker *w)
{
	struct hv_err err;

	if (w->quit_at)
		return;
	w->quit_at = hv_mono();
	wlog("stop requested: quitting QEMU");
	if (!w->qmp || hv_qmp_execute(w->qmp, "quit", NULL, NULL, 5000, &err) < 0) {
		/* QEMU treats SIGTERM as a clean host shutdown too. */
		if (w->qemu)
			kill(w->qemu, SIGTERM);
	}
}

static void vspd_lost(struct worker *w)
{
	char how[128];
	struct hv_err err;

	describe_status(w->vspd_status, how, sizeof(how));
	w->rs.vspd = (struct hv_proc){0};
	if (w->rs.vsp_restarts >= MAX_VSP_RESTARTS) {
		snprintf(w->rs.vsp_exit, sizeof(w->rs.vsp_exit),
			 "vhd-vspd %s while the guest ran; not restarted (%u restarts already)", how,
			 w->rs.vsp_restarts);
		wlog("%s", w->rs.vsp_exit);
		save(w);
		return;
	}
	w->rs.vsp_restarts++;
	if (start_vspd(w, &err) < 0) {
		snprintf(w->rs.vsp_exit, sizeof(w->rs.vsp_exit),
			 "vhd-vspd %s while the guest ran; the restart failed: %.100s", how, err.msg);
		if (w->vspd) {
			kill(w->vspd, SIGKILL);
			while (w->vspd)
				wait_signal(w, 100, NULL);
		}
		w->rs.vspd = (struct hv_proc){0};
	} else {
		snprintf(w->rs.vsp_exit, sizeof(w->rs.vsp_exit),
			 "vhd-vspd %s while the guest ran; restarted (pid %d)", how, (int)w->vspd);
	}
	wlog("%s", w->rs.vsp_exit);
	save(w);
}

/* Runs until QEMU exits. */
static void run(struct worker *w)
{
	while (!w->qemu_exited) {
		struct pollfd p[2] = {{.fd = w->sfd, .events = POLLIN},
				      {.fd = w->qmp ? hv_qmp_fd(w->qmp) : -1, .events = POLLIN}};
		bool vspd_died = false;
		int r;

		drain_events(w);
		if (w->term_requested)
			forced_quit(w);
		r = poll(p, 2, 500);
		if (r > 0 && (p[0].revents & POLLIN)) {
			struct signalfd_siginfo si;

			while (read(w->sfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT ||
				    si.ssi_signo == SIGHUP)
					w->term_requested = true;
			}
			if (w->term_requested)
				forced_quit(w);
		}
		reap(w, &vspd_died);
		if (vspd_died && !w->qemu_exited)
			vspd_lost(w);
		if (w->quit_at && !w->qemu_exited && w->qemu &&
		    hv_mono() - w->quit_at > QUIT_KILL_TIMEOUT) {
			wlog("QEMU did not quit within %.0f s: SIGKILL", QUIT_KILL_TIMEOUT);
			kill(w->qemu, SIGKILL);
			w->quit_at = hv_mono();
		}
		if (w->dirty && hv_mono() - w->last_write > 0.5)
			save(w);
	}
	drain_events(w);
}

static void finish(struct worker *w)
{
	char q[128], v[128] = "not running";

	w->rs.state = HV_STATE_STOPPING;
	w->rs.qemu = (struct hv_proc){0};
	save(w);
	hv_qmp_close(w->qmp);
	w->qmp = NULL;
	if (w->vspd) {
		stop_vspd(w);
		describe_status(w->vspd_status, v, sizeof(v));
	} else if (w->rs.vsp_exit[0]) {
		snprintf(v, sizeof(v), "had died (%s)", w->rs.vsp_exit);
	}
	describe_status(w->qemu_status, q, sizeof(q));
	snprintf(w->rs.last_exit, sizeof(w->rs.last_exit), "qemu %s%s%s; vhd-vspd %s", q,
		 w->rs.shutdown_reason[0] ? ", shutdown reason " : "", w->rs.shutdown_reason, v);
	w->rs.state = HV_STATE_STOPPED;
	w->rs.stopped_at = hv_now();
	w->rs.vspd = (struct hv_proc){0};
	w->rs.worker = (struct hv_proc){0};
	remove_run_files(w);
	save(w);
	wlog("partition stopped: %s", w->rs.last_exit);
}

static void report(int *fd, const char *msg)
{
	if (*fd < 0)
		return;
	if (write(*fd, msg, strlen(msg)) < 0) {
		/* hvctl went away; the worker goes on. */
	}
	close(*fd);
	*fd = -1;
}

void hv_worker_main(const struct hv_ctx *ctx, const char *name, const char *accel,
		    int report_fd)
{
	struct worker w = {.ctx = ctx, .accel = accel ? accel : "tcg", .sfd = -1};
	struct hv_err err = {{0}};
	sigset_t mask;
	int null, logfd, status = 1;

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, &w.oldmask);
	w.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);
	if (hv_part_init(ctx, name, &w.part, &err) < 0 || w.sfd < 0)
		goto fail;
	null = open("/dev/null", O_RDWR);
	logfd = open(w.part.worker_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (null >= 0 && logfd >= 0) {
		dup2(null, 0);
		dup2(logfd, 1);
		dup2(logfd, 2);
	}
	if (null > 2)
		close(null);
	if (logfd > 2)
		close(logfd);
	if (hv_rs_read(&w.part, &w.rs, &err) < 0 || hv_config_load(w.part.config, &w.cfg, &err) < 0)
		goto fail;
	w.serial_log = w.cfg->serial_log ? strdup(w.cfg->serial_log)
					 : hv_strf("%s/serial.log", w.part.dir);
	if (!w.serial_log)
		goto fail;
	w.paths = (struct hv_paths){.run_dir = w.part.run_dir, .serial_log = w.serial_log,
				    .vspd_pid = w.part.vspd_pid};
	/* hv_start put the binaries into the state before forking. */
	w.rs.state = HV_STATE_STARTING;
	w.rs.generation++;
	hv_proc_get(getpid(), &w.rs.worker);
	w.rs.qemu = w.rs.vspd = (struct hv_proc){0};
	snprintf(w.rs.accel, sizeof(w.rs.accel), "%s", w.accel);
	w.rs.error[0] = w.rs.last_exit[0] = w.rs.shutdown_reason[0] = 0;
	w.rs.last_io_error[0] = w.rs.vsp_exit[0] = 0;
	w.rs.shutdown_by_guest = false;
	w.rs.io_errors = w.rs.vsp_restarts = 0;
	w.rs.started_at = hv_now();
	w.rs.stopped_at = 0;
	save(&w);
	wlog("starting partition %s (generation %u, accel %s)", name, w.rs.generation, w.accel);
	if (hv_mkdir_p(w.part.run_dir, &err) < 0)
		goto fail;
	remove_run_files(&w);
	if (start_vspd(&w, &err) < 0 || start_qemu(&w, &err) < 0)
		goto fail;
	w.rs.state = HV_STATE_RUNNING;
	w.rs.started_at = hv_now();
	save(&w);
	wlog("guest running: qemu pid %d, vhd-vspd pid %d", (int)w.qemu, (int)w.vspd);
	report(&report_fd, "ok\n");
	run(&w);
	finish(&w);
	status = 0;
	goto out;
fail:
	wlog("start failed: %s", err.msg);
	if (w.qemu) {
		kill(w.qemu, SIGKILL);
		while (w.qemu)
			wait_signal(&w, 100, NULL);
	}
	stop_vspd(&w);
	if (w.part.dir) {
		snprintf(w.rs.error, sizeof(w.rs.error), "%s", err.msg);
		w.rs.state = HV_STATE_STOPPED;
		w.rs.stopped_at = hv_now();
		w.rs.worker = w.rs.qemu = w.rs.vspd = (struct hv_proc){0};
		snprintf(w.rs.last_exit, sizeof(w.rs.last_exit), "start failed");
		remove_run_files(&w);
		save(&w);
	}
	{
		char *msg = hv_strf("error: %s\n", err.msg);

		report(&report_fd, msg ? msg : "error: out of memory\n");
		free(msg);
	}
out:
	hv_qmp_close(w.qmp);
	hv_config_free(w.cfg);
	free(w.serial_log);
	hv_part_fini(&w.part);
	if (w.sfd >= 0)
		close(w.sfd);
	/* exit, not _exit: under -DSANITIZE the leak checker runs here too
	 * (hv_start flushed stdio before forking, so nothing is written twice). */
	exit(status);
}
