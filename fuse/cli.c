/* cli.c - the command line of `vhdtool mount|unmount` and `vhdmount`. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vhdfuse.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

static const char mount_help[] =
	"Usage: %s [OPTIONS] IMAGE MOUNTPOINT\n"
	"\n"
	"Mount a VHD (fixed, dynamic or differencing, with its parents) through FUSE.\n"
	"MOUNTPOINT then holds:\n"
	"  disk        the whole virtual disk as a raw file of exactly its virtual size\n"
	"  p1, p2 ...  one file per partition libblkid finds (MBR with extended and\n"
	"              logical partitions, GPT, BSD labels), each exactly its extent;\n"
	"              the numbers are the kernel's (logical partitions from p5)\n"
	"  info.json   the image and its chain, the mount, and the partition table\n"
	"              with each partition's type, start, size, filesystem and label\n"
	"The files work with losetup and real filesystems (`losetup -f --show MNT/p1`,\n"
	"then mount the loop device).  The partition files follow the table: after\n"
	"writing a new table on `disk` (sfdisk, parted), the new p<N> appear.\n"
	"\n"
	"  -r, --read-only      never write the image\n"
	"      --snapshot       writes go to a temporary differencing child that is\n"
	"                       discarded at unmount: the image never changes\n"
	"      --snapshot-dir=DIR  where the temporary child lives (default $TMPDIR,\n"
	"                       else /tmp); it is deleted as soon as it is open\n"
	"      --allow-other    let other users access the mount (FUSE allow_other;\n"
	"                       needs user_allow_other in /etc/fuse.conf for non-root)\n"
	"  -f, --foreground     stay in the foreground and log to stderr\n"
	"  -d, --debug          libfuse's request trace on stderr (implies -f)\n"
	"  -v, --verbose        log more (repeat for debug messages)\n"
	"      --log=FILE       the daemon's log (default: none once it detaches)\n"
	"      --threads=N      FUSE worker threads (default 16)\n"
	"      --direct-io      no kernel page cache on a read-only mount either (a\n"
	"                       read-write mount never uses it: see below)\n"
	"  -U, --force-share    open without the image lock (implies --read-only)\n"
	"      --parent-dir=DIR look for parents of differencing disks only under DIR\n"
	"      --format=vhd     the image format (only vhd; \"vpc\" is accepted)\n"
	"      --output=json    print info.json instead of the summary once mounted\n"
	"  -h, --help           this help\n"
	"\n"
	"Writable leaf images are mounted read-write; images that cannot be written\n"
	"(file mode, read-only file system, damaged footer, pending merge) are mounted\n"
	"read-only automatically, and info.json says why.  Reads of a differencing disk\n"
	"fall through to its parents; writes go to the leaf only.  Writes beyond the end\n"
	"fail (ENOSPC), the disk never grows, truncation is refused, O_TRUNC is ignored.\n"
	"fsync, fdatasync and close after writing make the data durable in the image.\n"
	"A read-write mount uses direct I/O (disk and p<N> alias the same bytes, a\n"
	"page cache per file would go stale); a read-only one lets the kernel cache.\n"
	"\n"
	"The image is locked like every vhdstack user does (flock): a mount refuses an\n"
	"image that another process has open for writing, and a read-write mount refuses\n"
	"one that anybody else has open, so two writers can never corrupt it.\n"
	"\n"
	"Without -f the command returns once the mount is up (exit 0) and a daemon\n"
	"serves it.  Unmount with `vhdtool unmount MOUNTPOINT` (waits until the image is\n"
	"flushed and closed) or `fusermount3 -u MOUNTPOINT`; SIGTERM, SIGINT and SIGHUP\n"
	"to the daemon unmount too.  Acknowledged writes are never lost.\n"
	"\n"
	"Examples:\n"
	"  %s disk.vhd /mnt/vhd && losetup -f --show /mnt/vhd/p1\n"
	"  %s --snapshot --output=json base.vhd /mnt/vhd\n";

static const char unmount_help[] =
	"Usage: %s [OPTIONS] MOUNTPOINT\n"
	"\n"
	"Unmount a VHD mounted with `vhdtool mount` or `vhdmount` (fusermount3 -u\n"
	"underneath) and wait until its daemon has flushed and closed the image, so that\n"
	"the image is clean and unlocked when this returns.  A mount with open files\n"
	"(for instance a loop device over p1) is busy: detach them first.\n"
	"\n"
	"  -z, --lazy           detach now; the daemon ends when the last file closes\n"
	"      --timeout=SECS   how long to wait for the daemon (default 60)\n"
	"  -h, --help           this help\n";

struct ready_ctx {
	bool json;
};

static void human_size(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	unsigned u = 0;
	double d = (double)v;

	while (d >= 1024 && u < 4) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)v);
	else
		snprintf(buf, len, "%.*f %s", d < 10 && d != (double)(uint64_t)d ? 1 : 0, d,
			 units[u]);
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v)
		       : "";
}

static uint64_t jnum(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? (uint64_t)json_object_get_int64(v) : 0;
}

static void print_fs(struct json_object *f)
{
	if (!f || !json_object_is_type(f, json_type_object))
		return;
	printf("  %s", jstr(f, "type"));
	if (*jstr(f, "label"))
		printf(" \"%s\"", jstr(f, "label"));
}

static void on_ready(void *arg, const char *info)
{
	struct ready_ctx *rc = arg;
	struct json_object *j, *m, *pt, *parts, *f;
	char b[32];

	if (rc->json) {
		fputs(info, stdout);
		fflush(stdout);
		return;
	}
	j = json_tokener_parse(info);
	if (!j) {
		printf("Mounted.\n");
		return;
	}
	json_object_object_get_ex(j, "mount", &m);
	printf("Mounted %s at %s (%s, daemon pid %d)\n", jstr(j, "image"), jstr(m, "mountpoint"),
	       jstr(j, "mode"), (int)jnum(m, "pid"));
	if (*jstr(j, "read-only-reason"))
		printf("  read-only because: %s\n", jstr(j, "read-only-reason"));
	human_size(jnum(j, "virtual-size"), b, sizeof(b));
	printf("  disk   %10s", b);
	if (json_object_object_get_ex(j, "filesystem", &f))
		print_fs(f);
	printf("\n");
	if (json_object_object_get_ex(j, "partition-table", &pt) && pt &&
	    json_object_object_get_ex(pt, "partitions", &parts)) {
		for (size_t i = 0; i < json_object_array_length(parts); i++) {
			struct json_object *p = json_object_array_get_idx(parts, i), *ext;

			human_size(jnum(p, "size"), b, sizeof(b));
			printf("  %-6s %10s  %s", jstr(p, "file"), b, jstr(p, "type"));
			if (json_object_object_get_ex(p, "extended", &ext) &&
			    json_object_get_boolean(ext))
				printf(" (extended)");
			if (json_object_object_get_ex(p, "filesystem", &f))
				print_fs(f);
			printf("\n");
		}
	}
	fflush(stdout);
	json_object_put(j);
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max || *s == '-')
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int vhdfuse_cli_mount(int argc, char **argv, const char *prog)
{
	static const struct option longopts[] = {
		{"read-only", no_argument, NULL, 'r'},
		{"snapshot", no_argument, NULL, 's' + 256},
		{"snapshot-dir", required_argument, NULL, 'S' + 256},
		{"allow-other", no_argument, NULL, 'a' + 256},
		{"foreground", no_argument, NULL, 'f'},
		{"debug", no_argument, NULL, 'd'},
		{"verbose", no_argument, NULL, 'v'},
		{"log", required_argument, NULL, 'l' + 256},
		{"threads", required_argument, NULL, 't' + 256},
		{"direct-io", no_argument, NULL, 'D' + 256},
		{"force-share", no_argument, NULL, 'U'},
		{"parent-dir", required_argument, NULL, 'P' + 256},
		{"format", required_argument, NULL, 'F' + 256},
		{"output", required_argument, NULL, 'O' + 256},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct vhdfuse_opts o = {0};
	struct ready_ctx rc = {0};
	struct vhd_err err;
	int opt, ret;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "rfdvUh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'r':
			o.read_only = true;
			break;
		case 's' + 256:
			o.snapshot = true;
			break;
		case 'S' + 256:
			o.snapshot_dir = optarg;
			break;
		case 'a' + 256:
			o.allow_other = true;
			break;
		case 'f':
			o.foreground = true;
			break;
		case 'd':
			o.debug = true;
			o.foreground = true;
			break;
		case 'v':
			o.verbose++;
			break;
		case 'l' + 256:
			o.log_file = optarg;
			break;
		case 't' + 256:
			if (parse_uint(optarg, 1024, &o.max_threads) < 0 || o.max_threads < 2) {
				fprintf(stderr, "%s: --threads: \"%s\" is not a number from 2 to 1024\n",
					prog, optarg);
				return CLI_USAGE;
			}
			break;
		case 'D' + 256:
			o.direct_io = true;
			break;
		case 'U':
			o.no_lock = true;
			break;
		case 'P' + 256:
			o.parent_dir = optarg;
			break;
		case 'F' + 256:
			if (strcasecmp(optarg, "vhd") && strcasecmp(optarg, "vpc")) {
				fprintf(stderr, "%s: --format: \"%s\" is not supported (only vhd)\n",
					prog, optarg);
				return CLI_USAGE;
			}
			break;
		case 'O' + 256:
			if (strcmp(optarg, "json") && strcmp(optarg, "human")) {
				fprintf(stderr, "%s: --output: \"%s\" is not human or json\n", prog,
					optarg);
				return CLI_USAGE;
			}
			rc.json = !strcmp(optarg, "json");
			break;
		case 'h':
			printf(mount_help, prog, prog, prog);
			return CLI_OK;
		default:
			fprintf(stderr, "%s: see --help\n", prog);
			return CLI_USAGE;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "%s: expected IMAGE and MOUNTPOINT (see --help)\n", prog);
		return CLI_USAGE;
	}
	if (o.snapshot && o.read_only) {
		fprintf(stderr, "%s: --snapshot and --read-only exclude each other\n", prog);
		return CLI_USAGE;
	}
	o.image = argv[optind];
	o.mountpoint = argv[optind + 1];
	ret = vhdfuse_mount(&o, on_ready, &rc, &err);
	if (ret < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg[0] ? err.msg : strerror(-ret));
		return CLI_FAIL;
	}
	return CLI_OK;
}

int vhdfuse_cli_unmount(int argc, char **argv, const char *prog)
{
	static const struct option longopts[] = {
		{"lazy", no_argument, NULL, 'z'},
		{"timeout", required_argument, NULL, 't' + 256},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	unsigned timeout = 60;
	bool lazy = false;
	struct vhd_err err;
	int opt, ret;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "zuh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'z':
			lazy = true;
			break;
		case 'u': /* vhdmount -u */
			break;
		case 't' + 256:
			if (parse_uint(optarg, 86400, &timeout) < 0) {
				fprintf(stderr, "%s: --timeout: \"%s\" is not a number of seconds\n",
					prog, optarg);
				return CLI_USAGE;
			}
			break;
		case 'h':
			printf(unmount_help, prog);
			return CLI_OK;
		default:
			fprintf(stderr, "%s: see --help\n", prog);
			return CLI_USAGE;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, "%s: expected one MOUNTPOINT (see --help)\n", prog);
		return CLI_USAGE;
	}
	ret = vhdfuse_unmount(argv[optind], lazy, timeout * 1000u, &err);
	if (ret < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg[0] ? err.msg : strerror(-ret));
		return CLI_FAIL;
	}
	return CLI_OK;
}
