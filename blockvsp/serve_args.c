/* serve_args.c - the command line shared by vhd-vspd and `vhdtool serve`. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vsp.h"

static void usage(FILE *out, const char *prog)
{
	fprintf(out,
		"Usage: %s [OPTIONS] IMAGE...\n"
		"       %s [OPTIONS] -e NAME=IMAGE[,ro] ...\n"
		"\n"
		"Serves VHD images (fixed, dynamic, differencing chains) over the NBD protocol\n"
		"with an io_uring engine.  Each IMAGE is one export, named after the file\n"
		"without .vhd; the first export is also the default (empty) export name.\n"
		"Clients: qemu-img, qemu-io, qemu (-drive driver=nbd), nbdinfo, nbdcopy,\n"
		"nbdfuse, fio (ioengine=nbd), the Linux nbd driver.  Writes go to the leaf of\n"
		"a chain only; parents are opened read-only.\n"
		"\n"
		"Options:\n"
		"  -e, --export NAME=IMAGE[,ro]  export IMAGE under NAME (repeatable); \",ro\"\n"
		"                          makes that export read-only\n"
		"  -r, --read-only         serve every export read-only (images open shared)\n"
		"  -s, --socket PATH       listen on this Unix socket (default: %s)\n"
		"  -t, --tcp [HOST:]PORT   listen on TCP instead; HOST defaults to 127.0.0.1\n"
		"                          (there is no TLS: expose TCP only to trusted networks)\n"
		"  --cache=none|writeback  none (default): O_DIRECT on every file, the page\n"
		"                          cache is bypassed; writeback: through the page cache\n"
		"  --workers N             engine threads, each with its own io_uring\n"
		"                          (default: one per CPU)\n"
		"  --max-connections N     clients served at once (default 64)\n"
		"  --parent-dir DIR        look for parents of differencing disks only under DIR\n"
		"  --vhost-user [NAME=]SOCKET  also serve export NAME (default: the first) as a\n"
		"                          vhost-user-blk device on the Unix socket SOCKET, for\n"
		"                          QEMU's -device vhost-user-blk-pci (guest RAM must be\n"
		"                          shared: memory-backend-memfd,share=on); repeatable.\n"
		"                          With only --vhost-user, no NBD socket is opened\n"
		"                          unless -s or --tcp asks for one\n"
		"  --num-queues N          virtqueues per vhost-user device (default: one per\n"
		"                          worker; at most 16)\n"
		"  --run CMD               captive mode: serve, run CMD with sh -c and the URI of\n"
		"                          the first export in $uri, stop when CMD ends; the exit\n"
		"                          status is CMD's\n"
		"  --pid-file FILE         write the server's pid there once it listens\n"
		"  -v, --verbose           also log each connection and every refused request\n"
		"  -q, --quiet             log errors only\n"
		"  -h, --help              this help\n"
		"\n"
		"Protocol: fixed newstyle handshake; NBD_OPT_GO, INFO, LIST, EXPORT_NAME,\n"
		"ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT (base:allocation, so\n"
		"qemu-img convert and nbdcopy skip holes); READ, WRITE, FLUSH, FUA, TRIM\n"
		"(accepted, a no-op: blocks are not given back while served; use vhdtool\n"
		"compact), WRITE_ZEROES (never allocates a block that already reads as\n"
		"zero), BLOCK_STATUS.  Block sizes advertised: minimum 512, preferred 4096,\n"
		"maximum 32 MiB.  Multi-conn is advertised: a FLUSH on any connection makes\n"
		"every acknowledged write durable.\n"
		"\n"
		"Durability: a write is acknowledged once readable; it survives a crash once\n"
		"a FLUSH (or its FUA) was acknowledged.  Blocks are published (BAT entry,\n"
		"bitmap bits) only after their data is durable, so a crash never exposes\n"
		"garbage.\n"
		"\n"
		"vhost-user-blk: features VERSION_1, INDIRECT_DESC, EVENT_IDX, MQ, SEG_MAX,\n"
		"BLK_SIZE (512), TOPOLOGY (4 KiB physical), FLUSH, DISCARD (a no-op, like\n"
		"TRIM), WRITE_ZEROES, RO for read-only exports; GET_ID returns the first 20\n"
		"hex digits of the VHD unique id.  Protocol features MQ, REPLY_ACK, CONFIG,\n"
		"INFLIGHT_SHMFD (a restarted server resubmits what its predecessor had taken).\n"
		"A front end that goes away (even kill -9) has its requests in flight\n"
		"answered; the device then waits for the next connection.\n"
		"\n"
		"Stopping: SIGTERM or SIGINT stops accepting, answers every request in\n"
		"flight, flushes and closes the images.\n"
		"\n"
		"Examples:\n"
		"  %s disk.vhd                              serve on the default socket\n"
		"  %s --run 'qemu-img info \"$uri\"' disk.vhd   captive one-shot\n"
		"  %s -e sys=os.vhd -e data=data.vhd,ro -s /run/vsp.sock\n"
		"  nbdinfo 'nbd+unix:///disk?socket=/tmp/vsp.sock'\n",
		prog, prog, "$XDG_RUNTIME_DIR/vhd-vspd.sock, else /tmp/vhd-vspd-UID.sock", prog,
		prog, prog);
}

static int add_export(struct vsp_serve_args *a, const char *name, const char *path, bool ro)
{
	struct vsp_export_spec *n = realloc(a->opts.exports, (a->opts.nr_exports + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	a->opts.exports = n;
	n[a->opts.nr_exports++] = (struct vsp_export_spec){.name = name, .path = path, .read_only = ro};
	return 0;
}

/* "NAME=IMAGE[,ro]": NAME and IMAGE point into a copy kept in a->strings. */
static int parse_export(struct vsp_serve_args *a, const char *spec, const char *prog)
{
	char *copy = strdup(spec), *eq, *comma;
	char **n;
	bool ro = false;

	if (!copy)
		return -ENOMEM;
	n = realloc(a->strings, (a->nr_strings + 1) * sizeof(*n));
	if (!n) {
		free(copy);
		return -ENOMEM;
	}
	a->strings = n;
	a->strings[a->nr_strings++] = copy;
	eq = strchr(copy, '=');
	if (!eq || eq == copy || !eq[1]) {
		fprintf(stderr, "%s: --export wants NAME=IMAGE, got \"%s\"\n", prog, spec);
		return -EINVAL;
	}
	*eq = '\0';
	comma = strrchr(eq + 1, ',');
	if (comma && !strcmp(comma, ",ro")) {
		*comma = '\0';
		ro = true;
	}
	return add_export(a, copy, eq + 1, ro);
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int vsp_serve_parse_args(int argc, char **argv, const char *prog, struct vsp_serve_args *a)
{
	enum { OPT_CACHE = 256, OPT_WORKERS, OPT_MAXCONN, OPT_PARENT_DIR, OPT_RUN, OPT_PID,
	       OPT_VHOST, OPT_QUEUES };
	static const struct option longopts[] = {
		{"export", required_argument, NULL, 'e'},
		{"read-only", no_argument, NULL, 'r'},
		{"socket", required_argument, NULL, 's'},
		{"tcp", required_argument, NULL, 't'},
		{"cache", required_argument, NULL, OPT_CACHE},
		{"workers", required_argument, NULL, OPT_WORKERS},
		{"max-connections", required_argument, NULL, OPT_MAXCONN},
		{"parent-dir", required_argument, NULL, OPT_PARENT_DIR},
		{"run", required_argument, NULL, OPT_RUN},
		{"pid-file", required_argument, NULL, OPT_PID},
		{"vhost-user", required_argument, NULL, OPT_VHOST},
		{"num-queues", required_argument, NULL, OPT_QUEUES},
		{"verbose", no_argument, NULL, 'v'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	bool all_ro = false;
	int opt, ret = 0;

	memset(a, 0, sizeof(*a));
	a->opts.engine.log_level = VSP_LOG_INFO;
	a->opts.cache = VSP_CACHE_NONE;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "e:rs:t:vqh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'e':
			ret = parse_export(a, optarg, prog);
			break;
		case 'r':
			all_ro = true;
			break;
		case 's':
			a->opts.nbd.unix_path = optarg;
			break;
		case 't': {
			char *colon = strrchr(optarg, ':');

			if (colon) {
				*colon = '\0';
				a->opts.nbd.tcp_host = optarg;
				a->opts.nbd.tcp_port = colon + 1;
			} else {
				a->opts.nbd.tcp_host = "";
				a->opts.nbd.tcp_port = optarg;
			}
			break;
		}
		case OPT_CACHE:
			if (!strcmp(optarg, "none") || !strcmp(optarg, "direct"))
				a->opts.cache = VSP_CACHE_NONE;
			else if (!strcmp(optarg, "writeback"))
				a->opts.cache = VSP_CACHE_WRITEBACK;
			else {
				fprintf(stderr, "%s: --cache takes none or writeback, not \"%s\"\n", prog,
					optarg);
				ret = -EINVAL;
			}
			break;
		case OPT_WORKERS:
			if (parse_uint(optarg, 1, 64, &a->opts.engine.workers) < 0) {
				fprintf(stderr, "%s: --workers takes 1..64, not \"%s\"\n", prog, optarg);
				ret = -EINVAL;
			}
			break;
		case OPT_MAXCONN:
			if (parse_uint(optarg, 1, 4096, &a->opts.nbd.max_connections) < 0) {
				fprintf(stderr, "%s: --max-connections takes 1..4096, not \"%s\"\n", prog,
					optarg);
				ret = -EINVAL;
			}
			break;
		case OPT_PARENT_DIR:
			a->opts.parent_dir = optarg;
			break;
		case OPT_RUN:
			a->opts.run = optarg;
			break;
		case OPT_PID:
			a->opts.pid_file = optarg;
			break;
		case OPT_VHOST: {
			struct vsp_vhost_spec *n = realloc(a->opts.vhost,
							   (a->opts.nr_vhost + 1) * sizeof(*n));
			char *eq = strchr(optarg, '=');

			if (!n)
				return -1;
			a->opts.vhost = n;
			if (eq) {
				*eq = '\0';
				n[a->opts.nr_vhost++] = (struct vsp_vhost_spec){optarg, eq + 1};
			} else {
				n[a->opts.nr_vhost++] = (struct vsp_vhost_spec){NULL, optarg};
			}
			break;
		}
		case OPT_QUEUES:
			if (parse_uint(optarg, 1, 16, &a->opts.num_queues) < 0) {
				fprintf(stderr, "%s: --num-queues takes 1..16, not \"%s\"\n", prog, optarg);
				ret = -EINVAL;
			}
			break;
		case 'v':
			if (a->opts.engine.log_level < VSP_LOG_DEBUG)
				a->opts.engine.log_level++;
			break;
		case 'q':
			a->opts.engine.log_level = VSP_LOG_ERROR;
			a->opts.quiet = true;
			break;
		case 'h':
			usage(stdout, prog);
			return 1;
		default:
			fprintf(stderr, "Try '%s --help'.\n", prog);
			return -1;
		}
		if (ret < 0)
			return -1;
	}
	for (int i = optind; i < argc; i++)
		if (add_export(a, NULL, argv[i], false) < 0)
			return -1;
	if (!a->opts.nr_exports) {
		fprintf(stderr, "%s: no image to serve\nTry '%s --help'.\n", prog, prog);
		return -1;
	}
	for (unsigned i = 0; i < a->opts.nr_exports; i++)
		a->opts.exports[i].read_only |= all_ro;
	/* vhost-user devices alone: no NBD socket unless one was asked for. */
	a->opts.nbd_off = a->opts.nr_vhost && !a->opts.nbd.tcp_host && !a->opts.nbd.unix_path;
	if (a->opts.nbd_off && a->opts.run) {
		fprintf(stderr, "%s: --run needs an NBD socket (-s or --tcp) beside --vhost-user\n", prog);
		return -1;
	}
	if (!a->opts.nbd_off && !a->opts.nbd.tcp_host && !a->opts.nbd.unix_path) {
		const char *rt = getenv("XDG_RUNTIME_DIR");

		if (a->opts.run) {
			/* Captive: a private socket nobody else can reach. */
			char tmpl[] = "/tmp/vhd-serve.XXXXXX";

			if (!mkdtemp(tmpl)) {
				fprintf(stderr, "%s: cannot make a socket directory: %s\n", prog,
					strerror(errno));
				return -1;
			}
			a->tmpdir = strdup(tmpl);
			if (!a->tmpdir || asprintf(&a->socket_path, "%s/nbd.sock", tmpl) < 0)
				return -1;
		} else if (rt && *rt) {
			if (asprintf(&a->socket_path, "%s/vhd-vspd.sock", rt) < 0)
				return -1;
		} else if (asprintf(&a->socket_path, "/tmp/vhd-vspd-%u.sock", (unsigned)getuid()) < 0) {
			return -1;
		}
		a->opts.nbd.unix_path = a->socket_path;
	}
	return 0;
}

void vsp_serve_args_free(struct vsp_serve_args *a)
{
	if (a->tmpdir) {
		if (a->socket_path)
			unlink(a->socket_path);
		rmdir(a->tmpdir);
	}
	for (size_t i = 0; i < a->nr_strings; i++)
		free(a->strings[i]);
	free(a->strings);
	free(a->opts.exports);
	free(a->opts.vhost);
	free(a->socket_path);
	free(a->tmpdir);
}
