/* internal.h - private declarations of hv/ (not installed). */
#ifndef HV_INTERNAL_H
#define HV_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include "hv.h"

/* Unix socket paths must fit sockaddr_un.sun_path (with its NUL). */
#define HV_SUN_PATH_MAX 107

__attribute__((format(printf, 2, 3)))
void hv_err_set(struct hv_err *err, const char *fmt, ...);
/* A malloc'd printf; NULL when out of memory. */
__attribute__((format(printf, 1, 2)))
char *hv_strf(const char *fmt, ...);
double hv_now(void);          /* CLOCK_REALTIME in seconds */
double hv_mono(void);         /* CLOCK_MONOTONIC in seconds */
void hv_sleep_ms(int ms);

/* Reads a whole file (at most max bytes; -EFBIG beyond), NUL-terminated. */
int hv_read_file(const char *path, size_t max, char **out, struct hv_err *err);
/* Writes a file atomically: DIR/.NAME.tmp, fsync, rename, fsync DIR. */
int hv_write_file_atomic(const char *path, const char *data, size_t len, struct hv_err *err);
int hv_mkdir_p(const char *path, struct hv_err *err);
/* The last lines of a log (at most max bytes), for error messages. */
char *hv_log_tail(const char *path, size_t max);

int hv_argv_add(struct hv_argv *a, const char *s);
__attribute__((format(printf, 2, 3)))
int hv_argv_addf(struct hv_argv *a, const char *fmt, ...);

/* A stored (already normalised) config, without checking that its files
 * still exist: for status and console. */
int hv_config_load_stored(const char *path, struct hv_config **out, struct hv_err *err);

/* ---- the context and a partition's files ------------------------------- */

struct hv_ctx {
	char *state_dir;
	char *vspd;
	char *qemu;
};

/* Files of partition NAME under the state directory. */
struct hv_part {
	char *dir;          /* STATE_DIR/NAME */
	char *config;       /* config.json */
	char *state;        /* state.json */
	char *lock;         /* lock (flock by commands that change the partition) */
	char *run_dir;      /* run/: sockets and the VSP's pid file */
	char *qmp;          /* run/qmp.sock: commands (hvctl) */
	char *qmp_worker;   /* run/qmp-worker.sock: the worker's events */
	char *vspd_pid;     /* run/vspd.pid */
	char *worker_log, *qemu_log, *vspd_log;
};

int hv_part_init(const struct hv_ctx *ctx, const char *name, struct hv_part *p,
		 struct hv_err *err);
void hv_part_fini(struct hv_part *p);
/* flock(LOCK_EX) on the partition's lock file; returns the fd or -errno. */
int hv_part_lock(const struct hv_part *p, struct hv_err *err);

/* ---- state.json --------------------------------------------------------- */

struct hv_runstate {
	enum hv_state state;
	unsigned generation;          /* number of starts */
	struct hv_proc worker, qemu, vspd;
	char accel[16];
	char vspd_bin[512], qemu_bin[512];
	double started_at, stopped_at, updated_at;
	char last_exit[512];          /* how the last run ended, one line */
	char shutdown_reason[64];     /* the SHUTDOWN event's reason */
	bool shutdown_by_guest;
	unsigned vsp_restarts;
	char vsp_exit[256];           /* how the VSP last died under a running guest */
	unsigned io_errors;           /* BLOCK_IO_ERROR events seen */
	char last_io_error[256];
	char error[HV_ERR_LEN];       /* why the last start failed */
};

int hv_rs_read(const struct hv_part *p, struct hv_runstate *rs, struct hv_err *err);
int hv_rs_write(const struct hv_part *p, struct hv_runstate *rs, struct hv_err *err);
enum hv_state hv_state_from_name(const char *s, bool *ok);

/* Is the partition up (its worker alive)?  Fills rs. */
bool hv_rs_active(const struct hv_runstate *rs);

/* ---- the worker ---------------------------------------------------------- */

/* Runs in the forked worker process; never returns.  report_fd receives
 * "ok\n" once the guest runs, or "error: ...\n", then is closed. */
__attribute__((noreturn))
void hv_worker_main(const struct hv_ctx *ctx, const char *name, const char *accel,
		    int report_fd);

#endif
