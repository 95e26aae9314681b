/* hvctl - the command line of the partition manager (hv/). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hv.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char main_help[] =
	"Usage: hvctl [GLOBAL OPTIONS] COMMAND [ARGS]\n"
	"\n"
	"Runs child partitions: QEMU virtual machines whose disks (VHD chains) are\n"
	"served by the block VSP, vhd-vspd.  A synthetic disk is a vhost-user-blk\n"
	"device (virtqueues in guest memory shared with the VSP: the VMBus-like path);\n"
	"an emulated disk is QEMU's IDE (machine pc) or AHCI (q35) whose backend is\n"
	"the VSP's NBD export, for guests without virtio drivers.\n"
	"\n"
	"Commands:\n"
	"  create CONFIG.json        define a partition from a config file\n"
	"  create --name NAME ...    define one from options (hvctl create --help)\n"
	"  start NAME                start the VSP and the VM (a worker process)\n"
	"  stop NAME                 ACPI power button, then forced after --timeout\n"
	"  pause NAME, resume NAME   stop/continue the vCPUs (QMP stop/cont)\n"
	"  status NAME               state, pids, uptime, disks, QMP status\n"
	"  list                      every partition and its state\n"
	"  console NAME              print the serial console log (-f: follow)\n"
	"  delete NAME               remove a stopped partition (never its disks)\n"
	"\n"
	"Global options:\n"
	"  --state-dir DIR   where partitions live (default: $HV_STATE_DIR, else\n"
	"                    $XDG_STATE_HOME/vhdstack, else ~/.local/state/vhdstack)\n"
	"  --vspd PATH       the vhd-vspd binary (default: $HV_VSPD, beside hvctl,\n"
	"                    the build tree, PATH)\n"
	"  --qemu PATH       the QEMU binary (default: $HV_QEMU, qemu-system-x86_64)\n"
	"  -h, --help        this help; COMMAND --help for each command\n"
	"\n"
	"State: STATE_DIR/NAME/ holds config.json, state.json (defined, starting,\n"
	"running, paused, stopping, stopped; written atomically), worker.log,\n"
	"qemu.log, vspd.log, serial.log and run/ (QMP and VSP sockets).  hvctl keeps\n"
	"nothing in memory: it can be restarted at any time, and status finds\n"
	"processes that died (pid and start time are checked).\n"
	"\n"
	"Exit status: 0 success, 1 the operation failed, 2 bad arguments.\n"
	"\n"
	"Example:\n"
	"  hvctl create vm1.json && hvctl start vm1 && hvctl console -f vm1\n"
	"  hvctl status --output=json vm1; hvctl stop vm1; hvctl delete vm1\n";

static const char create_help[] =
	"Usage: hvctl create CONFIG.json\n"
	"       hvctl create --name NAME [--memory MB] [--vcpus N] [--machine pc|q35]\n"
	"                    (--kernel FILE [--initrd FILE] [--cmdline TEXT] | --boot-disk N)\n"
	"                    [--disk PATH[,bus=synthetic|emulated][,ro][,queues=N]]...\n"
	"                    [--serial-log FILE] [--on-reboot restart|poweroff]\n"
	"\n"
	"Defines a partition.  CONFIG.json (relative paths are relative to the file):\n"
	"  {\n"
	"    \"name\": \"vm1\", \"memory_mb\": 256, \"vcpus\": 2, \"machine\": \"pc\",\n"
	"    \"boot\": {\"kernel\": \"vmlinuz\", \"initrd\": \"initrd.img\",\n"
	"             \"cmdline\": \"console=ttyS0\"},      (or {\"disk\": 0})\n"
	"    \"disks\": [{\"path\": \"disk.vhd\", \"bus\": \"synthetic\", \"read_only\": false,\n"
	"               \"num_queues\": 2}],\n"
	"    \"serial_log\": \"vm1.log\", \"on_reboot\": \"restart\"\n"
	"  }\n"
	"Defaults: memory_mb 256, vcpus 1, machine pc, bus synthetic, num_queues =\n"
	"vcpus, on_reboot restart, serial_log STATE_DIR/NAME/serial.log.  Each disk\n"
	"must open as a VHD (fixed, dynamic or the leaf of a differencing chain).\n"
	"Emulated disks cannot be read-only (QEMU's ide-hd refuses that); machine pc\n"
	"has room for 4, q35 for 6.  Unknown fields are errors.\n";

static const char start_help[] =
	"Usage: hvctl start [--accel tcg|kvm] [--timeout SECONDS] NAME\n"
	"\n"
	"Forks the partition's worker, which starts vhd-vspd for the disks (NBD\n"
	"socket for emulated ones, a vhost-user socket per synthetic one), waits until\n"
	"it listens, starts QEMU (-nodefaults, no display, serial to the log, memory\n"
	"in a shared memfd, QMP on run/qmp.sock), and lets the guest run.  Returns\n"
	"once the guest runs, or with the reason the start failed.\n"
	"  --accel tcg|kvm    tcg (default) emulates; kvm needs a usable /dev/kvm\n"
	"  --timeout SECONDS  wait this long for the worker (default 60)\n";

static const char stop_help[] =
	"Usage: hvctl stop [--timeout SECONDS] [--force] [--output=json] NAME\n"
	"\n"
	"Graceful: presses the ACPI power button (QMP system_powerdown; a paused\n"
	"guest is resumed first) and waits --timeout seconds (default 30) for the\n"
	"guest to power off; then forced: QMP quit, or SIGKILL of QEMU.  Either way\n"
	"the worker then stops vhd-vspd with SIGTERM, which flushes and closes the\n"
	"images, and hvctl returns when that is done.\n"
	"  --force            skip the graceful phase\n";

static const char pause_help[] =
	"Usage: hvctl pause NAME | hvctl resume NAME\n"
	"\nStops or continues the guest's vCPUs (QMP stop / cont); the disks stay served.\n";

static const char status_help[] =
	"Usage: hvctl status [--output=human|json] [--no-qmp] NAME\n"
	"\n"
	"State as recorded and as found (a partition whose worker died is reported\n"
	"stopped, with a note and the processes it left), pids, uptime, disks and\n"
	"their sockets, how the last run ended, I/O errors QEMU reported, VSP\n"
	"restarts, and QEMU's own query-status over QMP (unless --no-qmp).\n";

static const char list_help[] =
	"Usage: hvctl list [--output=human|json] [--no-qmp]\n"
	"\nEvery partition in the state directory; --output=json gives an array of\n"
	"the objects hvctl status --output=json prints.\n";

static const char console_help[] =
	"Usage: hvctl console [-f|--follow] NAME\n"
	"\nPrints the serial console log of the current (or last) run; with --follow\n"
	"keeps printing what the guest writes until the partition stops.\n";

static const char delete_help[] =
	"Usage: hvctl delete [--force] NAME\n"
	"\nRemoves the partition's directory (config, state, logs); its disks are never\n"
	"touched.  A running partition is refused unless --force (then stopped forced).\n";

__attribute__((format(printf, 1, 2)))
static void error(const char *fmt, ...)
{
	va_list ap;

	fputs("hvctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int parse_seconds(const char *s, const char *opt, int *ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v <= 0 || v > 86400) {
		error("%s: \"%s\" is not a number of seconds (0..86400]", opt, s);
		return -1;
	}
	*ms = (int)(v * 1000);
	return 0;
}

static int parse_output(const char *s, bool *json)
{
	if (!strcmp(s, "json"))
		*json = true;
	else if (!strcmp(s, "human"))
		*json = false;
	else {
		error("--output: \"%s\" is not human or json", s);
		return -1;
	}
	return 0;
}

static void print_json(struct json_object *j)
{
	puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
}

/* --disk PATH[,bus=synthetic|emulated][,ro][,queues=N] */
static int parse_disk_opt(const char *arg, struct hv_disk_config *d)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	int ret = -1;

	if (!copy)
		return -1;
	tok = strtok_r(copy, ",", &save);
	if (!tok) {
		error("--disk: empty");
		goto out;
	}
	d->path = strdup(tok);
	while ((tok = strtok_r(NULL, ",", &save))) {
		if (!strcmp(tok, "ro") || !strcmp(tok, "read-only")) {
			d->read_only = true;
		} else if (!strcmp(tok, "bus=synthetic")) {
			d->bus = HV_BUS_SYNTHETIC;
		} else if (!strcmp(tok, "bus=emulated")) {
			d->bus = HV_BUS_EMULATED;
		} else if (!strncmp(tok, "queues=", 7)) {
			char *end;
			long q = strtol(tok + 7, &end, 10);

			if (*end || end == tok + 7 || q < 1 || q > HV_MAX_QUEUES) {
				error("--disk %s: queues=%s is not 1..%d", arg, tok + 7, HV_MAX_QUEUES);
				goto out;
			}
			d->num_queues = (unsigned)q;
		} else {
			error("--disk %s: unknown option \"%s\" (bus=synthetic|emulated, ro, queues=N)",
			      arg, tok);
			goto out;
		}
	}
	ret = d->path ? 0 : -1;
out:
	free(copy);
	return ret;
}

static int parse_uint_opt(const char *s, const char *opt, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > 0xffffffffUL) {
		error("%s: \"%s\" is not a number", opt, s);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

/* ---- commands ------------------------------------------------------------
 * Every command is a row of cmds[] below; run_cmd() does what they share:
 * options (--help included), operands, the error message of a failed libhv
 * call, the exit status and the "Started partition NAME" line. */

/* What a command's options and operands set; each command reads its own. */
struct call {
	const char *name;           /* the partition NAME (OPERANDS_NAME) */
	int argc;                   /* the operands (OPERANDS_ANY) */
	char **argv;
	const char *accel;          /* --accel */
	int timeout_ms;             /* --timeout */
	bool json;                  /* --output=json */
	bool no_qmp;                /* --no-qmp */
	bool dash_f;                /* -f: --force, or --follow for console */
	struct hv_config *config;   /* create: built from the options */
	bool from_opts;             /* create: an option other than --help given */
};

/* Returned by a command's run when its libhv call failed: run_cmd prints
 * "hvctl: COMMAND: " and the message in err, and exits 1. */
#define CMD_FAILED (-1)

enum cmd_operands {
	OPERANDS_NAME,              /* exactly one partition NAME (the default) */
	OPERANDS_NONE,
	OPERANDS_ANY,               /* the command checks them */
};

struct cmd {
	const char *name;
	const char *help;           /* --help prints it */
	const char *shortopts;      /* for getopt_long */
	const struct option *opts;  /* ends with OPTS_END */
	/* Sets up a call before the options (create): an exit status. */
	int (*init)(struct call *c);
	/* One option other than --help: 0, or -1 when it is bad (said). */
	int (*opt)(struct call *c, int opt, const char *arg);
	enum cmd_operands operands;
	/* The work: an exit status (with anything wrong already said), or
	 * CMD_FAILED. */
	int (*run)(struct hv_ctx *ctx, struct call *c, struct hv_err *err);
	/* If set, success prints "DONE partition NAME". */
	const char *done;
};

/* The end of every command's long options. */
#define OPTS_END {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}

/* The options of every command but create. */
static int take_opt(struct call *c, int opt, const char *arg)
{
	switch (opt) {
	case 'a':
		c->accel = arg;
		return 0;
	case 't':
		return parse_seconds(arg, "--timeout", &c->timeout_ms);
	case 'O':
		return parse_output(arg, &c->json);
	case 'n':
		c->no_qmp = true;
		return 0;
	case 'f':
		c->dash_f = true;
		return 0;
	default:
		return -1;
	}
}

static const struct option create_opts[] = {
	{"name", required_argument, NULL, 'n'},
	{"memory", required_argument, NULL, 'm'},
	{"vcpus", required_argument, NULL, 'c'},
	{"machine", required_argument, NULL, 'M'},
	{"kernel", required_argument, NULL, 'k'},
	{"initrd", required_argument, NULL, 'i'},
	{"cmdline", required_argument, NULL, 'a'},
	{"boot-disk", required_argument, NULL, 'b'},
	{"disk", required_argument, NULL, 'd'},
	{"serial-log", required_argument, NULL, 's'},
	{"on-reboot", required_argument, NULL, 'r'},
	OPTS_END,
};

static int create_init(struct call *c)
{
	c->config = calloc(1, sizeof(*c->config));
	if (!c->config)
		return EXIT_FAIL;
	c->config->memory_mb = 256;
	c->config->vcpus = 1;
	c->config->boot_disk = -1;
	return EXIT_OK;
}

static int create_opt(struct call *call, int opt, const char *arg)
{
	struct hv_config *c = call->config;
	char **dst = NULL;

	call->from_opts = true;
	switch (opt) {
	case 'n': dst = &c->name; break;
	case 'M': dst = &c->machine; break;
	case 'k': dst = &c->kernel; break;
	case 'i': dst = &c->initrd; break;
	case 'a': dst = &c->cmdline; break;
	case 's': dst = &c->serial_log; break;
	case 'm':
		return parse_uint_opt(arg, "--memory", &c->memory_mb);
	case 'c':
		return parse_uint_opt(arg, "--vcpus", &c->vcpus);
	case 'b': {
		unsigned b;

		if (parse_uint_opt(arg, "--boot-disk", &b) < 0)
			return -1;
		c->boot_disk = b < HV_MAX_DISKS ? (int)b : HV_MAX_DISKS;
		return 0;
	}
	case 'r':
		if (!strcmp(arg, "poweroff"))
			c->reboot_poweroff = true;
		else if (strcmp(arg, "restart")) {
			error("--on-reboot: \"%s\" is not restart or poweroff", arg);
			return -1;
		}
		return 0;
	case 'd':
		if (c->nr_disks == HV_MAX_DISKS) {
			error("--disk: at most %d disks", HV_MAX_DISKS);
			return -1;
		}
		if (parse_disk_opt(arg, &c->disks[c->nr_disks]) < 0) {
			free(c->disks[c->nr_disks].path);
			c->disks[c->nr_disks].path = NULL;
			return -1;
		}
		c->nr_disks++;
		return 0;
	default:
		return -1;
	}
	free(*dst);
	*dst = strdup(arg);
	return 0;
}

static int create_run(struct hv_ctx *ctx, struct call *call, struct hv_err *err)
{
	const struct hv_config *c;

	if (call->from_opts) {
		if (call->argc) {
			error("create: give either CONFIG.json or --name and options, not both");
			return EXIT_USAGE;
		}
		if (!call->config->name) {
			error("create: --name is required without a CONFIG file");
			return EXIT_USAGE;
		}
		if (hv_config_check(call->config, "hvctl create", err) < 0) {
			error("%s", err->msg);
			return EXIT_FAIL;
		}
	} else {
		if (call->argc != 1) {
			error("create: expected CONFIG.json (see hvctl create --help)");
			return EXIT_USAGE;
		}
		hv_config_free(call->config);
		call->config = NULL;
		if (hv_config_load(call->argv[0], &call->config, err) < 0) {
			error("%s", err->msg);
			return EXIT_FAIL;
		}
	}
	c = call->config;
	if (hv_create(ctx, c, err) < 0)
		return CMD_FAILED;
	printf("Created partition %s: %u MiB, %u vCPU%s, machine %s, %u disk%s\n", c->name,
	       c->memory_mb, c->vcpus, c->vcpus == 1 ? "" : "s", c->machine, c->nr_disks,
	       c->nr_disks == 1 ? "" : "s");
	for (unsigned i = 0; i < c->nr_disks; i++)
		printf("  disk %u: %s (%s%s)\n", i, c->disks[i].path, hv_bus_name(c->disks[i].bus),
		       c->disks[i].read_only ? ", read-only" : "");
	return EXIT_OK;
}

static const struct option start_opts[] = {
	{"accel", required_argument, NULL, 'a'},
	{"timeout", required_argument, NULL, 't'},
	OPTS_END,
};

static int start_run(struct hv_ctx *ctx, struct call *c, struct hv_err *err)
{
	struct hv_start_opts so = {.accel = c->accel, .timeout_ms = c->timeout_ms};

	if (so.accel && strcmp(so.accel, "tcg") && strcmp(so.accel, "kvm")) {
		error("--accel: \"%s\" is not tcg or kvm", so.accel);
		return EXIT_USAGE;
	}
	return hv_start(ctx, c->name, &so, err) < 0 ? CMD_FAILED : EXIT_OK;
}

static const struct option stop_opts[] = {
	{"timeout", required_argument, NULL, 't'},
	{"force", no_argument, NULL, 'f'},
	{"output", required_argument, NULL, 'O'},
	OPTS_END,
};

static int stop_run(struct hv_ctx *ctx, struct call *c, struct hv_err *err)
{
	struct hv_stop_opts so = {.timeout_ms = c->timeout_ms, .force = c->dash_f};
	struct hv_stop_result res;

	if (hv_stop(ctx, c->name, &so, &res, err) < 0)
		return CMD_FAILED;
	if (c->json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "name", json_object_new_string(c->name));
		json_object_object_add(j, "was_running", json_object_new_boolean(res.was_running));
		json_object_object_add(j, "graceful", json_object_new_boolean(res.graceful));
		json_object_object_add(j, "seconds", json_object_new_double(res.seconds));
		json_object_object_add(j, "how", json_object_new_string(res.how));
		print_json(j);
		json_object_put(j);
	} else if (res.was_running) {
		printf("Stopped partition %s in %.1f s: %s\n", c->name, res.seconds, res.how);
	} else {
		printf("Partition %s %s\n", c->name, res.how);
	}
	return EXIT_OK;
}

/* pause and resume take no options but --help. */
static const struct option help_opts[] = {
	OPTS_END,
};

static int pause_run(struct hv_ctx *ctx, struct call *c, struct hv_err *err)
{
	return hv_pause(ctx, c->name, err) < 0 ? CMD_FAILED : EXIT_OK;
}

static int resume_run(struct hv_ctx *ctx, struct call *c, struct hv_err *err)
{
	return hv_resume(ctx, c->name, err) < 0 ? CMD_FAILED : EXIT_OK;
}

static const char *jstr(struct json_object *j, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(j, key, &v) ? json_object_get_string(v) : NULL;
}

static void human_duration(double s, char *buf, size_t len)
{
	if (s < 120)
		snprintf(buf, len, "%.1f s", s);
	else if (s < 7200)
		snprintf(buf, len, "%ld min %02ld s", (long)s / 60, (long)s % 60);
	else
		snprintf(buf, len, "%.1f h", s / 3600);
}

static void print_status_human(struct json_object *j)
{
	struct json_object *v, *disks, *pids;
	const char *s;
	char dur[64];

	printf("name:        %s\n", jstr(j, "name"));
	printf("state:       %s", jstr(j, "state"));
	s = jstr(j, "accel");
	if (json_object_object_get_ex(j, "generation", &v) && json_object_get_int(v))
		printf(" (start #%d%s%s)", json_object_get_int(v), s ? ", accel " : "", s ? s : "");
	putchar('\n');
	if ((s = jstr(j, "note")))
		printf("note:        %s\n", s);
	if ((s = jstr(j, "config_error")))
		printf("config:      %s\n", s);
	if (json_object_object_get_ex(j, "uptime_seconds", &v)) {
		human_duration(json_object_get_double(v), dur, sizeof(dur));
		printf("uptime:      %s\n", dur);
	}
	if (json_object_object_get_ex(j, "pids", &pids) && json_object_object_length(pids)) {
		const char *names[] = {"worker", "qemu", "vspd"};

		printf("pids:       ");
		for (unsigned i = 0; i < 3; i++) {
			struct json_object *p, *pid, *alive;

			if (!json_object_object_get_ex(pids, names[i], &p) || !p)
				continue;
			json_object_object_get_ex(p, "pid", &pid);
			json_object_object_get_ex(p, "alive", &alive);
			printf(" %s %d%s", names[i], json_object_get_int(pid),
			       json_object_get_boolean(alive) ? "" : " (dead)");
		}
		putchar('\n');
	}
	if (json_object_object_get_ex(j, "memory_mb", &v)) {
		struct json_object *c;

		json_object_object_get_ex(j, "vcpus", &c);
		printf("resources:   %d MiB, %d vCPU%s, machine %s\n", json_object_get_int(v),
		       json_object_get_int(c), json_object_get_int(c) == 1 ? "" : "s",
		       jstr(j, "machine"));
	}
	if (json_object_object_get_ex(j, "disks", &disks)) {
		for (size_t i = 0; i < json_object_array_length(disks); i++) {
			struct json_object *d = json_object_array_get_idx(disks, i), *q, *ro;

			json_object_object_get_ex(d, "read_only", &ro);
			printf("disk %zu:      %s (%s, %s", i, jstr(d, "path"), jstr(d, "bus"),
			       jstr(d, "device"));
			if (json_object_object_get_ex(d, "num_queues", &q))
				printf(", %d queue%s", json_object_get_int(q),
				       json_object_get_int(q) == 1 ? "" : "s");
			printf(", %s)\n", json_object_get_boolean(ro) ? "read-only" : "read-write");
		}
	}
	if (json_object_object_get_ex(j, "qmp_status", &v))
		printf("qmp:         %s\n", jstr(v, "status"));
	if ((s = jstr(j, "qmp_error")))
		printf("qmp:         %s\n", s);
	if (json_object_object_get_ex(j, "io_errors", &v) && json_object_get_int(v))
		printf("I/O errors:  %d (last: %s)\n", json_object_get_int(v), jstr(j, "last_io_error"));
	if ((s = jstr(j, "vsp_exit")))
		printf("VSP:         %s\n", s);
	if ((s = jstr(j, "last_exit")))
		printf("last exit:   %s\n", s);
	if ((s = jstr(j, "error")))
		printf("error:       %s\n", s);
	if ((s = jstr(j, "serial_log")))
		printf("serial log:  %s\n", s);
}

/* status and list take the same options. */
static const struct option status_opts[] = {
	{"output", required_argument, NULL, 'O'},
	{"no-qmp", no_argument, NULL, 'n'},
	OPTS_END,
};

static int status_run(struct hv_ctx *ctx, struct call *c, struct hv_err *err)
{
	struct json_object *j;

	if (hv_status(ctx, c->name, !c->no_qmp, &j, err) < 0)
		return CMD_FAILED;
	if (c->json)
		print_json(j);
	else
		print_status_human(j);
	json_object_put(j);
	return EXIT_OK;
}

static int list_run(struct hv_ctx *ctx, struct call *c, struct hv_err *err)
{
	struct json_object *arr;
	char **names;
	unsigned n;

	if (hv_list(ctx, &names, &n, err) < 0)
		return CMD_FAILED;
	arr = json_object_new_array();
	if (!c->json)
		printf("%-20s %-10s %-12s %s\n", "NAME", "STATE", "UPTIME", "DISKS");
	for (unsigned i = 0; i < n; i++) {
		struct json_object *j, *v, *disks;
		char dur[64] = "-", dl[256] = "";

		/* A partition removed meanwhile is skipped, not an error. */
		if (hv_status(ctx, names[i], !c->no_qmp, &j, err) < 0) {
			if (!c->json)
				error("list: %s", err->msg);
			continue;
		}
		if (c->json) {
			json_object_array_add(arr, j);
			continue;
		}
		if (json_object_object_get_ex(j, "uptime_seconds", &v))
			human_duration(json_object_get_double(v), dur, sizeof(dur));
		if (json_object_object_get_ex(j, "disks", &disks)) {
			for (size_t k = 0; k < json_object_array_length(disks); k++) {
				struct json_object *d = json_object_array_get_idx(disks, k);
				const char *p = jstr(d, "path"), *b = strrchr(p, '/');
				size_t len = strlen(dl);

				snprintf(dl + len, sizeof(dl) - len, "%s%s(%s)", k ? " " : "",
					 b ? b + 1 : p, jstr(d, "bus"));
			}
		}
		printf("%-20s %-10s %-12s %s\n", names[i], jstr(j, "state"), dur, dl);
		json_object_put(j);
	}
	if (c->json)
		print_json(arr);
	json_object_put(arr);
	hv_names_free(names, n);
	return EXIT_OK;
}

/* Copies what was appended to path since *off to stdout. */
static int copy_new(const char *path, off_t *off)
{
	char buf[65536];
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	/* A new run truncates the log: start again from its beginning. */
	if (fstat(fd, &st) == 0 && st.st_size < *off)
		*off = 0;
	while ((r = pread(fd, buf, sizeof(buf), *off)) > 0) {
		fwrite(buf, 1, (size_t)r, stdout);
		*off += r;
	}
	fflush(stdout);
	close(fd);
	return 0;
}

static const struct option console_opts[] = {
	{"follow", no_argument, NULL, 'f'},
	OPTS_END,
};

static int console_run(struct hv_ctx *ctx, struct call *c, struct hv_err *err)
{
	char *path = NULL;
	bool follow = c->dash_f;
	off_t off = 0;
	int ret;

	if (hv_console_path(ctx, c->name, &path, err) < 0)
		return CMD_FAILED;
	ret = copy_new(path, &off);
	while (ret == 0 && follow && hv_is_active(ctx, c->name)) {
		struct timespec ts = {.tv_nsec = 200000000L};

		nanosleep(&ts, NULL);
		ret = copy_new(path, &off);
	}
	if (ret == 0 && follow)
		ret = copy_new(path, &off);
	if (ret < 0)
		error("console: %s: %s", path, strerror(-ret));
	free(path);
	return ret < 0 ? EXIT_FAIL : EXIT_OK;
}

static const struct option delete_opts[] = {
	{"force", no_argument, NULL, 'f'},
	OPTS_END,
};

static int delete_run(struct hv_ctx *ctx, struct call *c, struct hv_err *err)
{
	return hv_delete(ctx, c->name, c->dash_f, err) < 0 ? CMD_FAILED : EXIT_OK;
}

static const struct cmd cmds[] = {
	{.name = "create", .help = create_help, .shortopts = "h", .opts = create_opts,
	 .init = create_init, .opt = create_opt, .operands = OPERANDS_ANY, .run = create_run},
	{.name = "start", .help = start_help, .shortopts = "h", .opts = start_opts,
	 .opt = take_opt, .run = start_run, .done = "Started"},
	{.name = "stop", .help = stop_help, .shortopts = "fh", .opts = stop_opts,
	 .opt = take_opt, .run = stop_run},
	{.name = "pause", .help = pause_help, .shortopts = "h", .opts = help_opts,
	 .run = pause_run, .done = "Paused"},
	{.name = "resume", .help = pause_help, .shortopts = "h", .opts = help_opts,
	 .run = resume_run, .done = "Resumed"},
	{.name = "status", .help = status_help, .shortopts = "h", .opts = status_opts,
	 .opt = take_opt, .run = status_run},
	{.name = "list", .help = list_help, .shortopts = "h", .opts = status_opts,
	 .opt = take_opt, .operands = OPERANDS_NONE, .run = list_run},
	{.name = "console", .help = console_help, .shortopts = "fh", .opts = console_opts,
	 .opt = take_opt, .run = console_run},
	{.name = "delete", .help = delete_help, .shortopts = "fh", .opts = delete_opts,
	 .opt = take_opt, .run = delete_run, .done = "Deleted"},
};

/* argv[0] is the command's name; optind is 1. */
static int run_cmd(const struct cmd *cmd, struct hv_ctx *ctx, int argc, char **argv)
{
	struct call c = {0};
	struct hv_err err;
	int opt, status;

	if (cmd->init && (status = cmd->init(&c)) != EXIT_OK)
		goto out;
	status = EXIT_USAGE;
	while ((opt = getopt_long(argc, argv, cmd->shortopts, cmd->opts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(cmd->help, stdout);
			status = EXIT_OK;
			goto out;
		}
		if (opt == '?' || !cmd->opt || cmd->opt(&c, opt, optarg) < 0)
			goto out;
	}
	switch (cmd->operands) {
	case OPERANDS_NAME:
		if (argc - optind != 1) {
			error("%s: expected one partition NAME (see hvctl %s --help)", cmd->name,
			      cmd->name);
			goto out;
		}
		c.name = argv[optind];
		break;
	case OPERANDS_NONE:
		if (optind != argc) {
			error("%s: takes no arguments", cmd->name);
			goto out;
		}
		break;
	case OPERANDS_ANY:
		c.argc = argc - optind;
		c.argv = argv + optind;
		break;
	}
	status = cmd->run(ctx, &c, &err);
	if (status == CMD_FAILED) {
		error("%s: %s", cmd->name, err.msg);
		status = EXIT_FAIL;
	} else if (status == EXIT_OK && cmd->done) {
		printf("%s partition %s\n", cmd->done, c.name);
	}
out:
	hv_config_free(c.config);
	return status;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"state-dir", required_argument, NULL, 's'},
		{"vspd", required_argument, NULL, 'v'},
		{"qemu", required_argument, NULL, 'q'},
		OPTS_END,
	};
	struct hv_ctx_opts co = {0};
	struct hv_ctx *ctx = NULL;
	struct hv_err err;
	const char *cmd;
	int opt, status = EXIT_USAGE;

	/* "+": options after the command belong to the command. */
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case 's': co.state_dir = optarg; break;
		case 'v': co.vspd = optarg; break;
		case 'q': co.qemu = optarg; break;
		case 'h':
			fputs(main_help, stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fputs(main_help, stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	optind = 1;
	if (hv_ctx_new(&co, &ctx, &err) < 0) {
		error("%s", err.msg);
		return EXIT_FAIL;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(cmd, cmds[i].name)) {
			status = run_cmd(&cmds[i], ctx, argc, argv);
			goto out;
		}
	}
	if (!strcmp(cmd, "help")) {
		fputs(main_help, stdout);
		status = EXIT_OK;
		goto out;
	}
	error("unknown command \"%s\" (see hvctl --help)", cmd);
out:
	hv_ctx_free(ctx);
	return status;
}
