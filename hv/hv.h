/* hv.h - the partition manager: child partitions are QEMU virtual machines
 * whose disks the block VSP (vhd-vspd) serves.
 *
 * A partition is defined by a config (JSON, see docs/hv.md) and lives in a
 * state directory: STATE_DIR/NAME/ holds the config copy, state.json
 * (written atomically: temp file, fsync, rename, directory fsync), the pids
 * with their start times, the QMP and VSP sockets and the logs.  Everything
 * a command needs is on disk, so hvctl can be restarted at any time; a
 * process recorded as running is checked by pid *and* start time, so a dead
 * worker (or a recycled pid) is detected and reported.
 *
 * Starting a partition forks a worker process (the VM worker): it starts
 * one vhd-vspd for the partition's disks (NBD socket for emulated disks,
 * vhost-user-blk sockets for synthetic ones), waits for its sockets, starts
 * QEMU (paused), connects to QMP, lets the guest run and then watches both
 * processes, recording state changes (QMP events STOP/RESUME/SHUTDOWN,
 * BLOCK_IO_ERROR) in state.json.  When QEMU exits, the worker SIGTERMs
 * vhd-vspd and waits for it: the images are flushed and closed.  If the
 * worker dies, QEMU is killed (PR_SET_PDEATHSIG) and vhd-vspd gets SIGTERM.
 *
 * Errors: functions return 0 or -errno and fill struct hv_err with a
 * sentence naming the partition, file, field or value.
 */
#ifndef HV_HV_H
#define HV_HV_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define HV_ERR_LEN 768
#define HV_MAX_DISKS 8
#define HV_MAX_VCPUS 64
#define HV_MAX_QUEUES 16

struct hv_err {
	char msg[HV_ERR_LEN];
};

/* ---- partition configs ------------------------------------------------- */

enum hv_bus {
	HV_BUS_SYNTHETIC,  /* vhost-user-blk served by vhd-vspd: the VMBus-like path */
	HV_BUS_EMULATED,   /* QEMU IDE (pc) / AHCI (q35) whose backend is our NBD export */
};

struct hv_disk_config {
	char *path;           /* the VHD (leaf of a chain); absolute once normalised */
	enum hv_bus bus;
	bool read_only;
	unsigned num_queues;  /* synthetic only; 0 = one per vCPU */
};

struct hv_config {
	char *name;
	unsigned memory_mb;
	unsigned vcpus;
	char *machine;        /* "pc" (i440fx, PIIX IDE) or "q35" (ICH9 AHCI) */
	char *kernel, *initrd, *cmdline;  /* direct kernel boot (kernel may be NULL) */
	int boot_disk;        /* index of the disk to boot from (firmware), or -1 */
	bool reboot_poweroff; /* on_reboot "poweroff": a guest reboot ends the VM */
	char *serial_log;     /* NULL: STATE_DIR/NAME/serial.log */
	struct hv_disk_config disks[HV_MAX_DISKS];
	unsigned nr_disks;
};

/* Parses and validates a config document.  Relative paths are taken
 * relative to base_dir (NULL: the current directory) and made absolute;
 * defaults are filled in.  origin names the document in messages. */
int hv_config_parse(const char *text, const char *origin, const char *base_dir,
		    struct hv_config **out, struct hv_err *err);
int hv_config_load(const char *path, struct hv_config **out, struct hv_err *err);
/* Validates a config built in memory (by hvctl create --name ...) and
 * normalises it the same way. */
int hv_config_check(struct hv_config *c, const char *origin, struct hv_err *err);
/* The normalised config as JSON (what hv_config_parse reads back). */
struct json_object *hv_config_to_json(const struct hv_config *c);
void hv_config_free(struct hv_config *c);
bool hv_name_valid(const char *name);
const char *hv_bus_name(enum hv_bus bus);

/* ---- command lines ------------------------------------------------------ */

struct hv_argv {
	char **v;       /* NULL-terminated */
	unsigned n, cap;
};

struct hv_paths {
	const char *run_dir;     /* sockets: qmp.sock, qmp-worker.sock, nbd.sock, vuN.sock */
	const char *serial_log;
	const char *vspd_pid;
};

/* The vhd-vspd command line for a partition's disks: every disk is export
 * dN; synthetic disks are also served over vhost-user on run_dir/vuN.sock. */
int hv_vspd_argv(const struct hv_config *c, const char *vspd, const struct hv_paths *p,
		 struct hv_argv *out, struct hv_err *err);
/* The QEMU command line: -nodefaults, -display none, memfd memory shared
 * with the VSP, serial to the log, two QMP monitors (one for commands, one
 * for the worker's events), started paused (-S).  accel: "tcg" or "kvm". */
int hv_qemu_argv(const struct hv_config *c, const char *qemu, const char *accel,
		 const struct hv_paths *p, struct hv_argv *out, struct hv_err *err);
void hv_argv_free(struct hv_argv *a);

/* ---- processes ---------------------------------------------------------- */

struct hv_proc {
	pid_t pid;
	uint64_t start_time;  /* field 22 of /proc/PID/stat (clock ticks after boot) */
};

/* Fills p for a live pid; -ESRCH if it is gone (or a zombie). */
int hv_proc_get(pid_t pid, struct hv_proc *p);
/* True if the process recorded in p still runs (same pid, same start time). */
bool hv_proc_alive(const struct hv_proc *p);

/* ---- QMP client --------------------------------------------------------- */

struct hv_qmp;

/* Connects to a QMP Unix socket, reads the greeting and negotiates
 * capabilities (qmp_capabilities), within timeout_ms. */
int hv_qmp_connect(const char *path, int timeout_ms, struct hv_qmp **out, struct hv_err *err);
/* Runs one command (args may be NULL; not consumed) and waits for its reply
 * (events arriving meanwhile are queued).  On success *ret (if ret is not
 * NULL) holds the "return" value (caller puts it); a QMP error reply gives
 * -EREMOTEIO with its class and description in err. */
int hv_qmp_execute(struct hv_qmp *q, const char *cmd, struct json_object *args,
		   struct json_object **ret, int timeout_ms, struct hv_err *err);
/* The next event (queued or arriving within timeout_ms; 0 = do not wait):
 * 1 and *ev set, 0 none, -EPIPE when QEMU closed the connection. */
int hv_qmp_next_event(struct hv_qmp *q, struct json_object **ev, int timeout_ms,
		      struct hv_err *err);
int hv_qmp_fd(const struct hv_qmp *q);
void hv_qmp_close(struct hv_qmp *q);

/* ---- the manager -------------------------------------------------------- */

enum hv_state {
	HV_STATE_DEFINED,   /* created, never started */
	HV_STATE_STARTING,  /* the worker is bringing up the VSP and QEMU */
	HV_STATE_RUNNING,
	HV_STATE_PAUSED,
	HV_STATE_STOPPING,  /* QEMU exited; the VSP is flushing and closing */
	HV_STATE_STOPPED,
};
const char *hv_state_name(enum hv_state s);

struct hv_ctx_opts {
	const char *state_dir;  /* NULL: $HV_STATE_DIR, $XDG_STATE_HOME/vhdstack,
				 * ~/.local/state/vhdstack */
	const char *vspd;       /* NULL: $HV_VSPD, beside this program, PATH */
	const char *qemu;       /* NULL: $HV_QEMU, qemu-system-x86_64 on PATH */
};

struct hv_ctx;

int hv_ctx_new(const struct hv_ctx_opts *o, struct hv_ctx **out, struct hv_err *err);
void hv_ctx_free(struct hv_ctx *ctx);
const char *hv_ctx_state_dir(const struct hv_ctx *ctx);

/* Stores a new partition (its config normalised); -EEXIST if the name is taken. */
int hv_create(struct hv_ctx *ctx, const struct hv_config *c, struct hv_err *err);

struct hv_start_opts {
	const char *accel;   /* NULL: "tcg" */
	int timeout_ms;      /* to wait for the worker's report; 0: 60 s */
};
/* Forks the worker and returns when the guest runs (or the start failed,
 * with the reason from the worker, the VSP or QEMU log in err). */
int hv_start(struct hv_ctx *ctx, const char *name, const struct hv_start_opts *o,
	     struct hv_err *err);

struct hv_stop_opts {
	int timeout_ms;      /* graceful phase; 0: 30 s */
	bool force;          /* skip the graceful phase */
};
struct hv_stop_result {
	bool was_running;
	bool graceful;       /* the guest powered off by itself after the ACPI request */
	double seconds;
	char how[160];       /* what happened, one line */
};
/* Graceful: ACPI power button (QMP system_powerdown; a paused guest is
 * resumed first), wait up to timeout; then forced: QMP quit, else SIGKILL.
 * Returns after the worker finished (the VSP flushed and closed the disks). */
int hv_stop(struct hv_ctx *ctx, const char *name, const struct hv_stop_opts *o,
	    struct hv_stop_result *res, struct hv_err *err);
int hv_pause(struct hv_ctx *ctx, const char *name, struct hv_err *err);
int hv_resume(struct hv_ctx *ctx, const char *name, struct hv_err *err);
/* Status as JSON: config, state (as recorded and as found: dead processes
 * are reported), pids, uptime, disks, last exit, and with query_qmp the
 * live QMP query-status of a running partition. */
int hv_status(struct hv_ctx *ctx, const char *name, bool query_qmp, struct json_object **out,
	      struct hv_err *err);
/* Names of all partitions, sorted; free with hv_names_free. */
int hv_list(struct hv_ctx *ctx, char ***names, unsigned *n, struct hv_err *err);
void hv_names_free(char **names, unsigned n);
/* Removes a stopped partition's directory (never its disks); with force a
 * running one is stopped (forced) first. */
int hv_delete(struct hv_ctx *ctx, const char *name, bool force, struct hv_err *err);
/* The serial console log of a partition, and whether the partition is
 * still up (its worker lives), for `hvctl console --follow`. */
int hv_console_path(struct hv_ctx *ctx, const char *name, char **path, struct hv_err *err);
bool hv_is_active(struct hv_ctx *ctx, const char *name);

#endif
