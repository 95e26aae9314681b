/* store.c - the state directory: a partition's files and its state.json. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "internal.h"

static const char *const state_names[] = {
	[HV_STATE_DEFINED] = "defined", [HV_STATE_STARTING] = "starting",
	[HV_STATE_RUNNING] = "running", [HV_STATE_PAUSED] = "paused",
	[HV_STATE_STOPPING] = "stopping", [HV_STATE_STOPPED] = "stopped",
};

const char *hv_state_name(enum hv_state s)
{
	return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "?";
}

enum hv_state hv_state_from_name(const char *s, bool *ok)
{
	for (unsigned i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++) {
		if (s && !strcmp(s, state_names[i])) {
			*ok = true;
			return (enum hv_state)i;
		}
	}
	*ok = false;
	return HV_STATE_STOPPED;
}

void hv_part_fini(struct hv_part *p)
{
	free(p->dir);
	free(p->config);
	free(p->state);
	free(p->lock);
	free(p->run_dir);
	free(p->qmp);
	free(p->qmp_worker);
	free(p->vspd_pid);
	free(p->worker_log);
	free(p->qemu_log);
	free(p->vspd_log);
	memset(p, 0, sizeof(*p));
}

int hv_part_init(const struct hv_ctx *ctx, const char *name, struct hv_part *p,
		 struct hv_err *err)
{
	memset(p, 0, sizeof(*p));
	if (!hv_name_valid(name)) {
		hv_err_set(err, "\"%s\" is not a valid partition name", name ? name : "");
		return -EINVAL;
	}
	p->dir = hv_strf("%s/%s", ctx->state_dir, name);
	p->config = hv_strf("%s/config.json", p->dir);
	p->state = hv_strf("%s/state.json", p->dir);
	p->lock = hv_strf("%s/lock", p->dir);
	p->run_dir = hv_strf("%s/run", p->dir);
	p->qmp = hv_strf("%s/run/qmp.sock", p->dir);
	p->qmp_worker = hv_strf("%s/run/qmp-worker.sock", p->dir);
	p->vspd_pid = hv_strf("%s/run/vspd.pid", p->dir);
	p->worker_log = hv_strf("%s/worker.log", p->dir);
	p->qemu_log = hv_strf("%s/qemu.log", p->dir);
	p->vspd_log = hv_strf("%s/vspd.log", p->dir);
	if (!p->dir || !p->config || !p->state || !p->lock || !p->run_dir || !p->qmp ||
	    !p->qmp_worker || !p->vspd_pid || !p->worker_log || !p->qemu_log || !p->vspd_log) {
		hv_part_fini(p);
		hv_err_set(err, "out of memory");
		return -ENOMEM;
	}
	/* The longest socket is run/vuN.sock or run/qmp-worker.sock. */
	if (strlen(p->qmp_worker) > HV_SUN_PATH_MAX) {
		hv_err_set(err, "the socket path %s is %zu bytes, over the %d a Unix socket "
			   "allows: use a shorter --state-dir", p->qmp_worker,
			   strlen(p->qmp_worker), HV_SUN_PATH_MAX);
		hv_part_fini(p);
		return -ENAMETOOLONG;
	}
	return 0;
}

int hv_part_lock(const struct hv_part *p, struct hv_err *err)
{
	int fd = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0) {
		int e = errno;

		if (e == ENOENT)
			hv_err_set(err, "partition %s does not exist (no %s)", strrchr(p->dir, '/') + 1,
				   p->dir);
		else
			hv_err_set(err, "%s: %s", p->lock, strerror(e));
		return -e;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int e = errno;

			hv_err_set(err, "flock %s: %s", p->lock, strerror(e));
			close(fd);
			return -e;
		}
	}
	return fd;
}

bool hv_rs_active(const struct hv_runstate *rs)
{
	switch (rs->state) {
	case HV_STATE_STARTING:
	case HV_STATE_RUNNING:
	case HV_STATE_PAUSED:
	case HV_STATE_STOPPING:
		return hv_proc_alive(&rs->worker);
	default:
		return false;
	}
}

static struct json_object *proc_json(const struct hv_proc *p)
{
	struct json_object *j = json_object_new_object();

	json_object_object_add(j, "pid", json_object_new_int64(p->pid));
	json_object_object_add(j, "start_time", json_object_new_uint64(p->start_time));
	return j;
}

static void proc_from_json(struct json_object *j, const char *key, struct hv_proc *p)
{
	struct json_object *o, *v;

	memset(p, 0, sizeof(*p));
	if (!json_object_object_get_ex(j, key, &o) || !json_object_is_type(o, json_type_object))
		return;
	if (json_object_object_get_ex(o, "pid", &v))
		p->pid = (pid_t)json_object_get_int64(v);
	if (json_object_object_get_ex(o, "start_time", &v))
		p->start_time = json_object_get_uint64(v);
}

static void str_from_json(struct json_object *j, const char *key, char *dst, size_t len)
{
	struct json_object *v;

	dst[0] = 0;
	if (json_object_object_get_ex(j, key, &v) && json_object_is_type(v, json_type_string))
		snprintf(dst, len, "%s", json_object_get_string(v));
}

static double num_from_json(struct json_object *j, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(j, key, &v) ? json_object_get_double(v) : 0;
}

int hv_rs_read(const struct hv_part *p, struct hv_runstate *rs, struct hv_err *err)
{
	struct json_object *j = NULL, *v;
	char *text = NULL, st[32];
	bool ok;
	int ret;

	memset(rs, 0, sizeof(*rs));
	ret = hv_read_file(p->state, 1 << 20, &text, err);
	if (ret < 0) {
		if (ret == -ENOENT)
			hv_err_set(err, "partition %s does not exist (no %s)",
				   strrchr(p->dir, '/') + 1, p->state);
		goto out;
	}
	j = json_tokener_parse(text);
	if (!j || !json_object_is_type(j, json_type_object)) {
		hv_err_set(err, "%s: not a JSON object", p->state);
		ret = -EINVAL;
		goto out;
	}
	str_from_json(j, "state", st, sizeof(st));
	rs->state = hv_state_from_name(st, &ok);
	if (!ok) {
		hv_err_set(err, "%s: state \"%s\" is not one of defined, starting, running, "
			   "paused, stopping, stopped", p->state, st);
		ret = -EINVAL;
		goto out;
	}
	if (json_object_object_get_ex(j, "generation", &v))
		rs->generation = (unsigned)json_object_get_int64(v);
	proc_from_json(j, "worker", &rs->worker);
	proc_from_json(j, "qemu", &rs->qemu);
	proc_from_json(j, "vspd", &rs->vspd);
	str_from_json(j, "accel", rs->accel, sizeof(rs->accel));
	str_from_json(j, "vspd_binary", rs->vspd_bin, sizeof(rs->vspd_bin));
	str_from_json(j, "qemu_binary", rs->qemu_bin, sizeof(rs->qemu_bin));
	rs->started_at = num_from_json(j, "started_at");
	rs->stopped_at = num_from_json(j, "stopped_at");
	rs->updated_at = num_from_json(j, "updated_at");
	str_from_json(j, "last_exit", rs->last_exit, sizeof(rs->last_exit));
	str_from_json(j, "shutdown_reason", rs->shutdown_reason, sizeof(rs->shutdown_reason));
	if (json_object_object_get_ex(j, "shutdown_by_guest", &v))
		rs->shutdown_by_guest = json_object_get_boolean(v);
	if (json_object_object_get_ex(j, "vsp_restarts", &v))
		rs->vsp_restarts = (unsigned)json_object_get_int64(v);
	str_from_json(j, "vsp_exit", rs->vsp_exit, sizeof(rs->vsp_exit));
	if (json_object_object_get_ex(j, "io_errors", &v))
		rs->io_errors = (unsigned)json_object_get_int64(v);
	str_from_json(j, "last_io_error", rs->last_io_error, sizeof(rs->last_io_error));
	str_from_json(j, "error", rs->error, sizeof(rs->error));
	ret = 0;
out:
	json_object_put(j);
	free(text);
	return ret;
}

int hv_rs_write(const struct hv_part *p, struct hv_runstate *rs, struct hv_err *err)
{
	struct json_object *j = json_object_new_object();
	const char *text;
	int ret;

	rs->updated_at = hv_now();
	json_object_object_add(j, "state", json_object_new_string(hv_state_name(rs->state)));
	json_object_object_add(j, "generation", json_object_new_int64(rs->generation));
	json_object_object_add(j, "worker", proc_json(&rs->worker));
	json_object_object_add(j, "qemu", proc_json(&rs->qemu));
	json_object_object_add(j, "vspd", proc_json(&rs->vspd));
	json_object_object_add(j, "accel", json_object_new_string(rs->accel));
	json_object_object_add(j, "vspd_binary", json_object_new_string(rs->vspd_bin));
	json_object_object_add(j, "qemu_binary", json_object_new_string(rs->qemu_bin));
	json_object_object_add(j, "started_at", json_object_new_double(rs->started_at));
	json_object_object_add(j, "stopped_at", json_object_new_double(rs->stopped_at));
	json_object_object_add(j, "updated_at", json_object_new_double(rs->updated_at));
	json_object_object_add(j, "last_exit", json_object_new_string(rs->last_exit));
	json_object_object_add(j, "shutdown_reason", json_object_new_string(rs->shutdown_reason));
	json_object_object_add(j, "shutdown_by_guest",
			       json_object_new_boolean(rs->shutdown_by_guest));
	json_object_object_add(j, "vsp_restarts", json_object_new_int64(rs->vsp_restarts));
	json_object_object_add(j, "vsp_exit", json_object_new_string(rs->vsp_exit));
	json_object_object_add(j, "io_errors", json_object_new_int64(rs->io_errors));
	json_object_object_add(j, "last_io_error", json_object_new_string(rs->last_io_error));
	json_object_object_add(j, "error", json_object_new_string(rs->error));
	text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	ret = hv_write_file_atomic(p->state, text, strlen(text), err);
	json_object_put(j);
	return ret;
}
