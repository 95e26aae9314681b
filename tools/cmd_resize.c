/* vhdtool resize (Resize-VHD; qemu-img resize). */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char resize_help[] =
	"Usage: vhdtool resize [OPTIONS] IMAGE SIZE\n"
	"\n"
	"Grow or shrink the virtual disk of a fixed, dynamic or differencing VHD\n"
	"(Hyper-V: Resize-VHD; qemu: qemu-img resize).  Only the disk changes, not the\n"
	"partitions or file systems on it: grow those afterwards (growpart, resize2fs,\n"
	"diskpart extend), and shrink them before shrinking the disk.\n"
	"\n"
	"SIZE is the new size in bytes, or relative to the current size with a leading\n"
	"+ or - (\"+10G\", \"-512M\"; a leading - needs no \"--\").  Suffixes K, M, G, T\n"
	"are powers of 1024 (\"KiB\"/\"KB\" mean the same).  The size is rounded up to a\n"
	"whole 512-byte sector; the maximum is 2040 GiB (the VHD format's limit).  Disks\n"
	"whose size readers take from the CHS geometry (made by Virtual PC or by qemu\n"
	"without force_size) get the smallest geometry that covers SIZE, as qemu-img\n"
	"create does; the size actually made is printed.\n"
	"\n"
	"Growing: the new range reads as zeros.  A fixed disk's data grows and its\n"
	"footer moves to the new end (the file stays sparse unless it was fully\n"
	"allocated, then the new range is allocated too).  A dynamic or differencing\n"
	"disk gets the new size in both footer copies and a block allocation table\n"
	"(BAT) with one entry per block: extended in place when the space after it\n"
	"allows, otherwise written anew at the end of the file (the old table becomes\n"
	"leaked space, which check reports as info).  A differencing disk may grow past\n"
	"its parent (the part beyond the parent reads as zeros); growing one that is\n"
	"smaller than its parent is refused when the parent holds data in the range\n"
	"that would show.\n"
	"\n"
	"Shrinking: refused when anything between the new and the old end reads as\n"
	"non-zero (for a differencing disk: in the disk or in its parents); the message\n"
	"names the first such offset.  With --discard the data there is dropped:\n"
	"blocks of a dynamic or differencing disk wholly beyond the new end are\n"
	"released (the file shrinks when they were at its end), a fixed disk's file is\n"
	"cut.  A parent keeps its data.  Differencing disks whose parent is IMAGE read\n"
	"through to it: after a --discard shrink of IMAGE they read zeros where the\n"
	"dropped data was.\n"
	"\n"
	"Refused: a disk whose footer says \"saved state\" (a virtual machine was saved\n"
	"with it attached), a disk with an interrupted merge, a damaged disk that does\n"
	"not open read-write (run vhdtool repair), a disk another process has open, a\n"
	"differencing disk whose parent cannot be found (what a shrink cuts and a grow\n"
	"uncovers is judged on what the disk shows through its chain; the parents are\n"
	"only read).\n"
	"\n"
	"Crash safety: every step is either a write into space no reader looks at or\n"
	"one sector that switches between two valid states, each made durable first.\n"
	"After a crash the disk opens with either the old size and content or the new\n"
	"size and content.  An interrupted resize may leave one warning for check: a\n"
	"dynamic disk's footer copy at offset 0 differing from the trailing footer, or\n"
	"a fixed disk's footer sitting beyond its data (\"extra bytes\").  Run the same\n"
	"resize again to finish it; that clears the warning.\n"
	"\n"
	"  --discard          allow shrinking over data: drop what lies beyond the new end\n"
	"  --output=json      print {\"filename\", \"type\", \"old-size\", \"new-size\"}; a\n"
	"                     refused shrink prints \"first-allocated-beyond\" too\n"
	"  --parent-dir=DIR   look for parents of a differencing disk only under DIR\n"
	"  -U, --force-share  do not take the lock (dangerous: only when you know nobody\n"
	"                     else has the disk open)\n"
	"\n"
	"Exit status: 0 resized (or already that size), 1 refused or failed (nothing\n"
	"was changed when refused), 2 bad usage.\n"
	"\n"
	"Examples:\n"
	"  vhdtool resize disk.vhd 100G\n"
	"  vhdtool resize disk.vhd +10G\n"
	"  vhdtool resize disk.vhd -1G               # refused if data lies there\n"
	"  vhdtool resize --discard disk.vhd 20G\n";

static uint64_t round_up_sector(uint64_t v)
{
	return (v + VHD_SECTOR_SIZE - 1) / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
}

/* "+10G", "-512M", "64M": sign (+1, -1 or 0) and magnitude. */
static int parse_size_arg(const char *s, int *sign, uint64_t *v)
{
	*sign = 0;
	if (*s == '+' || *s == '-') {
		*sign = *s == '+' ? 1 : -1;
		s++;
	}
	return cli_parse_size(s, v);
}

static void json_out(const char *path, const char *type, const struct vhd_resize_result *res,
		     bool refused)
{
	struct json_object *j = json_object_new_object();

	json_object_object_add(j, "filename", json_object_new_string(path));
	if (type)
		json_object_object_add(j, "type", json_object_new_string(type));
	json_object_object_add(j, "old-size", json_object_new_uint64(res->old_size));
	if (refused)
		json_object_object_add(j, "first-allocated-beyond",
				       json_object_new_uint64(res->first_allocated_beyond));
	else
		json_object_object_add(j, "new-size", json_object_new_uint64(res->new_size));
	cli_print_json(j);
	json_object_put(j);
}

int cmd_resize(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"discard", no_argument, NULL, 'd' + 256},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct cli_common c = {0};
	struct vhd_resize_result res;
	struct vhd_open_opts o;
	struct vhd_err err;
	struct vhd_info info;
	struct vhd_image *img = NULL;
	const char *size_arg = NULL, *path, *type = NULL;
	char **args = calloc((size_t)argc + 1, sizeof(*args));
	bool discard = false;
	uint64_t v, target;
	int nargs = 0, opt, ret, sign, status = EXIT_USAGE;

	if (!args)
		return EXIT_FAIL;
	/* A relative shrink ("-1G") looks like an option to getopt: take it out. */
	for (int i = 0; i < argc; i++) {
		if (i > 0 && !size_arg && argv[i][0] == '-' && isdigit((unsigned char)argv[i][1]))
			size_arg = argv[i];
		else
			args[nargs++] = argv[i];
	}
	while ((opt = getopt_long(nargs, args, "f:Uh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd' + 256:
			discard = true;
			break;
		case 'h':
			fputs(resize_help, stdout);
			status = EXIT_OK;
			goto out;
		default:
			if (cli_common_opt(&c, opt, optarg) <= 0)
				goto out;
		}
	}
	if (nargs - optind != (size_arg ? 1 : 2)) {
		cli_error("resize: expected IMAGE and SIZE (see vhdtool resize --help)");
		goto out;
	}
	path = args[optind];
	if (!size_arg)
		size_arg = args[optind + 1];
	if (parse_size_arg(size_arg, &sign, &v) < 0) {
		cli_error("resize: SIZE: \"%s\" is not a size (like 64G, +10G or -512M)", size_arg);
		goto out;
	}
	cli_open_opts(&c, &o, false);
	/* The current size (for a relative SIZE and for the output). */
	{
		struct vhd_open_opts ro = o;

		ro.flags |= VHD_OPEN_NO_PARENT;
		ro.warn = NULL; /* the resize's own open says it */
		ret = vhd_open(path, &ro, &img, &err);
		if (ret < 0) {
			cli_error("resize: %s", err.msg);
			status = EXIT_FAIL;
			goto out;
		}
		vhd_get_info(img, &info);
		type = vhd_type_name(info.type);
		vhd_close(img);
	}
	if (sign > 0) {
		if (v > VHD_MAX_SIZE || info.virtual_size + v > VHD_MAX_SIZE) {
			cli_error("resize: %s: %" PRIu64 " + %" PRIu64 " bytes exceeds the VHD maximum of 2040 GiB",
				  path, info.virtual_size, v);
			status = EXIT_FAIL;
			goto out;
		}
		target = info.virtual_size + v;
	} else if (sign < 0) {
		if (v >= info.virtual_size) {
			cli_error("resize: %s: cannot shrink a disk of %" PRIu64 " bytes by %" PRIu64 " bytes",
				  path, info.virtual_size, v);
			goto out;
		}
		target = info.virtual_size - v;
	} else {
		target = v;
	}
	if (target == 0) {
		cli_error("resize: SIZE: a disk needs at least one sector");
		goto out;
	}
	cli_open_opts(&c, &o, true);
	ret = vhd_resize(path, target, discard, &o, &res, &err);
	if (ret < 0) {
		cli_error("resize: %s", err.msg);
		if (c.json && ret == -ENOTEMPTY)
			json_out(path, type, &res, true);
		status = EXIT_FAIL;
		goto out;
	}
	if (c.json) {
		json_out(path, type, &res, false);
	} else {
		char a[32], b[32];

		cli_human_size(res.old_size, a, sizeof(a));
		cli_human_size(res.new_size, b, sizeof(b));
		if (res.new_size == res.old_size)
			printf("%s is already %s (%" PRIu64 " bytes)\n", path, b,
			       res.new_size);
		else
			printf("Resized %s (%s): %s -> %s (%" PRIu64 " bytes)\n", path, type, a, b,
			       res.new_size);
		if (res.new_size != round_up_sector(target))
			printf("Note: the size readers of this disk use comes from its CHS geometry: "
			       "%" PRIu64 " bytes is the nearest geometry above %" PRIu64 "\n",
			       res.new_size, target);
	}
	status = EXIT_OK;
out:
	free(args);
	return status;
}
