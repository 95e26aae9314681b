/* vhdtool compare (qemu-img compare). */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static const char compare_help[] =
	"Usage: vhdtool compare [OPTIONS] A B\n"
	"\n"
	"Compare the contents of two disks of any kind (raw files, VHDs, differencing\n"
	"chains, in any mix), like qemu-img compare.  Unallocated ranges are compared\n"
	"without reading.  If the sizes differ, the longer disk must read as zeros\n"
	"beyond the shorter one (unless --strict).\n"
	"\n"
	"  -f, --a-format=FMT   format of A: raw, vhd or auto (default)\n"
	"  -F, --b-format=FMT   format of B: raw, vhd or auto (default)\n"
	"  -s, --strict         different sizes make the disks different\n"
	"  -p, --progress       show progress on a terminal\n"
	"  -q, --quiet          print nothing; use the exit status\n"
	"  --output=json        {\"identical\": ..., \"first-difference\": ...}\n"
	"  -U, --force-share    open without the image locks\n"
	"\n"
	"Exit status: 0 identical, 1 different (the first differing offset is\n"
	"printed), 2 error.\n";

int cmd_compare(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"a-format", required_argument, NULL, 'f'},
		{"b-format", required_argument, NULL, 'F'},
		{"strict", no_argument, NULL, 's'},
		{"progress", no_argument, NULL, 'p'},
		{"quiet", no_argument, NULL, 'q'},
		{"output", required_argument, NULL, 'O' + 256},
		{"parent-dir", required_argument, NULL, 'P' + 256},
		{"force-share", no_argument, NULL, 'U'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	enum vhd_format fa = VHD_FMT_AUTO, fb = VHD_FMT_AUTO;
	struct vhd_disk *a = NULL, *b = NULL;
	struct cli_common c = {0};
	struct cli_progress prog;
	struct vhd_open_opts o;
	struct vhd_err err;
	bool strict = false, progress = false;
	uint64_t diff = 0;
	int opt, ret, status = 2;

	while ((opt = getopt_long(argc, argv, "f:F:spqUh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
		case 'F':
			if (!vhd_format_parse(optarg, opt == 'f' ? &fa : &fb)) {
				cli_error("compare: -%c: \"%s\" is not raw, vhd or auto", opt, optarg);
				return 2;
			}
			break;
		case 's':
			strict = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			c.quiet = true;
			break;
		case 'h':
			fputs(compare_help, stdout);
			return 0;
		default:
			ret = cli_common_opt(&c, opt, optarg);
			if (ret <= 0)
				return 2;
		}
	}
	if (argc - optind != 2) {
		cli_error("compare: expected two disks (see vhdtool compare --help)");
		return 2;
	}
	cli_open_opts(&c, &o, false);
	if (vhd_disk_open(argv[optind], fa, &o, &a, &err) < 0 ||
	    vhd_disk_open(argv[optind + 1], fb, &o, &b, &err) < 0) {
		cli_error("compare: %s", err.msg);
		goto out;
	}
	cli_progress_init(&prog, progress, "compare");
	ret = vhd_compare(a, b, strict, &diff, cli_progress_cb, &prog, &err);
	cli_progress_end(&prog);
	if (ret < 0) {
		cli_error("compare: %s", err.msg);
		goto out;
	}
	status = ret ? 1 : 0;
	if (c.quiet)
		goto out;
	if (c.json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "identical", json_object_new_boolean(!ret));
		if (ret)
			json_object_object_add(j, "first-difference", json_object_new_uint64(diff));
		json_object_object_add(j, "size-a", json_object_new_uint64(vhd_disk_size(a)));
		json_object_object_add(j, "size-b", json_object_new_uint64(vhd_disk_size(b)));
		cli_print_json(j);
		json_object_put(j);
	} else if (ret) {
		if (strict && vhd_disk_size(a) != vhd_disk_size(b) && diff == (vhd_disk_size(a) < vhd_disk_size(b) ? vhd_disk_size(a) : vhd_disk_size(b)))
			printf("Image size mismatch: %llu != %llu\n",
			       (unsigned long long)vhd_disk_size(a), (unsigned long long)vhd_disk_size(b));
		else
			printf("Content mismatch at offset %llu!\n", (unsigned long long)diff);
	} else {
		printf("Images are identical.\n");
	}
out:
	vhd_disk_close(a);
	vhd_disk_close(b);
	return status;
}
