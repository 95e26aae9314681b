/* serve.c - running an NBD server process: vhd-vspd and `vhdtool serve`.
 *
 * Signals: SIGTERM, SIGINT (and SIGCHLD in captive mode) are blocked before
 * any thread starts, so every thread inherits the mask, and the calling
 * thread takes them with sigwaitinfo.  That is the one place this library
 * touches process-wide state, and only inside vsp_serve().
 *
 * Shutdown order: stop accepting, let every connection answer what it has
 * read, close the connections, then close the disks (which flushes them).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vsp.h"

static char *default_export_name(const char *path)
{
	const char *base = strrchr(path, '/');
	char *name;
	size_t len;

	base = base ? base + 1 : path;
	name = strdup(base);
	if (!name)
		return NULL;
	len = strlen(name);
	if (len > 4 && !strcasecmp(name + len - 4, ".vhd"))
		name[len - 4] = '\0';
	return name;
}

static int write_pid_file(const char *path)
{
	char tmp[4096];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return -errno;
	return 0;
}

/* Starts the captive command with $uri set; returns its pid or -errno. */
static pid_t run_captive(const char *cmd, const char *uri, const sigset_t *mask)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		sigprocmask(SIG_UNBLOCK, mask, NULL);
		setenv("uri", uri, 1);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

int vsp_serve(const struct vsp_serve_opts *o)
{
	struct vsp_engine *e = NULL;
	struct vsp_nbd_server *srv = NULL;
	struct vsp_disk **disks = calloc(o->nr_exports ? o->nr_exports : 1, sizeof(*disks));
	struct vsp_vhost **vhosts = calloc(o->nr_vhost ? o->nr_vhost : 1, sizeof(*vhosts));
	char **names = calloc(o->nr_exports ? o->nr_exports : 1, sizeof(*names));
	struct vhd_err err = {{0}};
	sigset_t mask, old;
	struct sigaction old_pipe;
	pid_t child = -1;
	int status = 1, ret;
	char uri[4200];

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &mask, &old);
	/* A peer's closed pipe or socket is an error to handle, not a death:
	 * a guest may even hand us a pipe as its call fd. */
	sigaction(SIGPIPE, &(struct sigaction){.sa_handler = SIG_IGN}, &old_pipe);
	if (!disks || !vhosts || !names) {
		fprintf(stderr, "vhd-vspd: out of memory\n");
		goto out;
	}
	for (unsigned i = 0; i < o->nr_exports; i++) {
		names[i] = o->exports[i].name ? strdup(o->exports[i].name)
					      : default_export_name(o->exports[i].path);
		if (!names[i]) {
			fprintf(stderr, "vhd-vspd: out of memory\n");
			goto out;
		}
	}
	ret = vsp_engine_new(&o->engine, &e);
	if (ret < 0) {
		fprintf(stderr, "vhd-vspd: cannot start the engine: %s\n", strerror(-ret));
		goto out;
	}
	if (!o->nbd_off) {
		ret = vsp_nbd_server_new(e, &o->nbd, &srv, &err);
		if (ret < 0) {
			fprintf(stderr, "vhd-vspd: %s\n", err.msg);
			goto out;
		}
	}
	for (unsigned i = 0; i < o->nr_exports; i++) {
		const struct vsp_export_spec *x = &o->exports[i];
		struct vsp_disk_opts dopts = {
			.read_only = x->read_only, .cache = o->cache, .parent_dir = o->parent_dir,
		};

		ret = vsp_disk_open(e, x->path, &dopts, &disks[i], &err);
		if (ret < 0) {
			fprintf(stderr, "vhd-vspd: cannot serve %s: %s\n", x->path, err.msg);
			goto out;
		}
		ret = srv ? vsp_nbd_add_export(srv, names[i], x->path, disks[i]) : 0;
		if (ret < 0) {
			fprintf(stderr, "vhd-vspd: cannot export %s as \"%s\": %s\n", x->path, names[i],
				ret == -EEXIST ? "that export name is taken (use NAME=IMAGE)"
					       : strerror(-ret));
			goto out;
		}
	}
	for (unsigned i = 0; i < o->nr_vhost; i++) {
		struct vsp_vhost_opts vo = {.socket_path = o->vhost[i].socket_path,
					    .num_queues = o->num_queues};
		unsigned x = 0;

		if (o->vhost[i].export)
			for (x = 0; x < o->nr_exports && strcmp(names[x], o->vhost[i].export); x++)
				;
		if (x == o->nr_exports) {
			fprintf(stderr, "vhd-vspd: --vhost-user %s=%s: no export of that name\n",
				o->vhost[i].export, o->vhost[i].socket_path);
			goto out;
		}
		ret = vsp_vhost_new(e, disks[x], names[x], &vo, &vhosts[i], &err);
		if (ret == 0)
			ret = vsp_vhost_start(vhosts[i], &err);
		if (ret < 0) {
			fprintf(stderr, "vhd-vspd: vhost-user-blk for %s: %s\n", names[x], err.msg);
			goto out;
		}
		vsp_log(e, VSP_LOG_INFO, "serving %s (%" PRIu64 " bytes, %s) as vhost-user-blk on %s",
			o->exports[x].path, vsp_disk_size(disks[x]),
			vsp_disk_read_only(disks[x]) ? "read-only" : "read-write",
			o->vhost[i].socket_path);
	}
	ret = srv ? vsp_nbd_server_start(srv, &err) : 0;
	if (ret < 0) {
		fprintf(stderr, "vhd-vspd: %s\n", err.msg);
		goto out;
	}
	for (unsigned i = 0; srv && i < o->nr_exports; i++) {
		vsp_nbd_uri(srv, names[i], uri, sizeof(uri));
		vsp_log(e, VSP_LOG_INFO, "serving %s (%" PRIu64 " bytes, %s) at %s",
			o->exports[i].path, vsp_disk_size(disks[i]),
			vsp_disk_read_only(disks[i]) ? "read-only" : "read-write", uri);
	}
	if (o->pid_file) {
		ret = write_pid_file(o->pid_file);
		if (ret < 0)
			vsp_log(e, VSP_LOG_WARN, "cannot write %s: %s", o->pid_file, strerror(-ret));
	}
	if (o->run && srv) {
		vsp_nbd_uri(srv, names[0], uri, sizeof(uri));
		child = run_captive(o->run, uri, &mask);
		if (child < 0) {
			fprintf(stderr, "vhd-vspd: cannot run \"%s\": %s\n", o->run, strerror(-child));
			goto out;
		}
	}
	status = 0;
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&mask, &si);

		if (sig < 0)
			continue; /* EINTR */
		if (sig == SIGCHLD) {
			int ws;

			if (child > 0 && waitpid(child, &ws, WNOHANG) == child) {
				status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
				child = -1;
				break;
			}
			continue;
		}
		vsp_log(e, VSP_LOG_INFO, "%s: stopping (answering requests in flight, flushing)",
			strsignal(sig));
		if (child > 0) {
			int ws;

			kill(child, SIGTERM);
			waitpid(child, &ws, 0);
			child = -1;
		}
		break;
	}
out:
	if (srv)
		vsp_nbd_server_stop(srv);
	for (unsigned i = 0; vhosts && i < o->nr_vhost; i++)
		vsp_vhost_free(vhosts[i]); /* queues drained and stopped */
	for (unsigned i = 0; disks && i < o->nr_exports; i++) {
		ret = vsp_disk_close(disks[i]);
		if (ret < 0) {
			fprintf(stderr, "vhd-vspd: flushing %s: %s\n", o->exports[i].path,
				strerror(-ret));
			status = 1;
		}
	}
	vsp_nbd_server_free(srv);
	vsp_engine_free(e);
	free(disks);
	free(vhosts);
	for (unsigned i = 0; names && i < o->nr_exports; i++)
		free(names[i]);
	free(names);
	if (o->pid_file)
		unlink(o->pid_file);
	sigaction(SIGPIPE, &old_pipe, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return status;
}
