/* vhdtool convert (Convert-VHD, qemu-img convert). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char convert_help[] =
	"Usage: vhdtool convert [OPTIONS] SOURCE DESTINATION\n"
	"\n"
	"Copy a disk into a new image (Hyper-V: Convert-VHD; qemu: qemu-img convert):\n"
	"raw -> VHD fixed or dynamic, VHD -> raw, fixed <-> dynamic, and any\n"
	"differencing chain -> one standalone image (flattened).  The source is opened\n"
	"read-only.  Conversion is sparse-aware: unallocated ranges (VHD BAT and\n"
	"bitmaps, holes of raw files) are not read, all-zero 4 KiB pieces are not\n"
	"written, so the output stays small.  The output is written beside DESTINATION\n"
	"and renamed into place when complete: an interrupted convert leaves no\n"
	"half-written DESTINATION.\n"
	"\n"
	"  -f, --source-format=FMT  raw, vhd or auto (default: auto; a file with a VHD\n"
	"                           footer is a VHD, anything else raw)\n"
	"  -O, --output-format=FMT  raw or vhd (default vhd)\n"
	"  -t, --type=TYPE          VHD output: dynamic (default) or fixed\n"
	"  -b, --block-size=SIZE    dynamic output block size (default 2 MiB)\n"
	"  --azure                  a VHD Azure accepts: fixed, virtual size rounded up\n"
	"                           to a whole MiB (the rounding is reported), exact BAT\n"
	"                           and footer; qemu-img users trip over this constantly\n"
	"  --preallocate            fixed/raw output written densely (Windows refuses\n"
	"                           sparse fixed VHDs); default sparse\n"
	"  --force                  replace DESTINATION if it exists\n"
	"  --no-sync                do not fsync the output before renaming it into\n"
	"                           place (qemu-img's default): faster, but a crash soon\n"
	"                           after may leave DESTINATION with missing data\n"
	"  -p, --progress           show progress on a terminal\n"
	"  --output=json            print a JSON summary\n"
	"  --parent-dir=DIR         look for the source's parents only under DIR\n"
	"\n"
	"Examples:\n"
	"  vhdtool convert -O vhd disk.raw disk.vhd\n"
	"  vhdtool convert -O raw child.vhd flat.raw        # flatten a chain\n"
	"  vhdtool convert --azure disk.raw upload.vhd\n";

int cmd_convert(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"source-format", required_argument, NULL, 'f'},
		{"output-format", required_argument, NULL, 'O'},
		{"type", required_argument, NULL, 't'},
		{"block-size", required_argument, NULL, 'b'},
		{"azure", no_argument, NULL, 'a' + 256},
		{"preallocate", no_argument, NULL, 'P' + 512},
		{"force", no_argument, NULL, 'F' + 256},
		{"no-sync", no_argument, NULL, 'n' + 256},
		{"progress", no_argument, NULL, 'p'},
		{"output", required_argument, NULL, 'O' + 256},
		{"parent-dir", required_argument, NULL, 'P' + 256},
		{"force-share", no_argument, NULL, 'U'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct vhd_convert_opts o = {.src_format = VHD_FMT_AUTO, .out_format = VHD_FMT_VHD};
	struct vhd_convert_stats st;
	struct cli_common c = {0};
	struct cli_progress prog;
	struct vhd_open_opts so;
	struct vhd_err err;
	bool progress = false;
	uint64_t bs = 0;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "f:O:t:b:pUh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
		case 'O':
			if (!vhd_format_parse(optarg, opt == 'f' ? &o.src_format : &o.out_format) ||
			    (opt == 'O' && o.out_format == VHD_FMT_AUTO)) {
				cli_error("convert: -%c: \"%s\" is not a format (raw, vhd%s)", opt, optarg,
					  opt == 'f' ? ", auto" : "");
				return EXIT_USAGE;
			}
			break;
		case 't':
			if (!strcmp(optarg, "fixed"))
				o.out_type = VHD_TYPE_FIXED;
			else if (!strcmp(optarg, "dynamic"))
				o.out_type = VHD_TYPE_DYNAMIC;
			else {
				cli_error("convert: --type: \"%s\" is not fixed or dynamic", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			if (cli_parse_size(optarg, &bs) < 0 || bs > UINT32_MAX) {
				cli_error("convert: --block-size: \"%s\" is not a size", optarg);
				return EXIT_USAGE;
			}
			o.block_size = (uint32_t)bs;
			break;
		case 'a' + 256:
			o.azure = true;
			break;
		case 'P' + 512:
			o.preallocate = true;
			break;
		case 'F' + 256:
			o.overwrite = true;
			break;
		case 'n' + 256:
			o.no_sync = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'h':
			fputs(convert_help, stdout);
			return EXIT_OK;
		default:
			ret = cli_common_opt(&c, opt, optarg);
			if (ret <= 0)
				return EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		cli_error("convert: expected SOURCE and DESTINATION (see vhdtool convert --help)");
		return EXIT_USAGE;
	}
	if (o.azure && o.out_format != VHD_FMT_VHD) {
		cli_error("convert: --azure makes a VHD; drop -O raw");
		return EXIT_USAGE;
	}
	if (o.azure && o.out_type == VHD_TYPE_DYNAMIC) {
		cli_error("convert: Azure accepts only fixed VHDs; drop --type dynamic");
		return EXIT_USAGE;
	}
	cli_open_opts(&c, &so, false);
	cli_progress_init(&prog, progress, "convert");
	o.progress = cli_progress_cb;
	o.progress_ctx = &prog;
	ret = vhd_convert(argv[optind], &so, argv[optind + 1], &o, &st, &err);
	cli_progress_end(&prog);
	if (ret < 0) {
		cli_error("convert: %s", err.msg);
		return EXIT_FAIL;
	}
	if (c.json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "source", json_object_new_string(argv[optind]));
		json_object_object_add(j, "destination", json_object_new_string(argv[optind + 1]));
		json_object_object_add(j, "virtual-size", json_object_new_uint64(st.virtual_size));
		json_object_object_add(j, "source-size", json_object_new_uint64(st.source_size));
		json_object_object_add(j, "bytes-read", json_object_new_uint64(st.bytes_read));
		json_object_object_add(j, "bytes-written", json_object_new_uint64(st.bytes_written));
		json_object_object_add(j, "bytes-skipped", json_object_new_uint64(st.bytes_skipped));
		json_object_object_add(j, "output-allocated", json_object_new_uint64(st.output_file_size));
		cli_print_json(j);
		json_object_put(j);
	} else {
		char a[32], b[32], s[32];

		cli_human_size(st.bytes_written, a, sizeof(a));
		cli_human_size(st.bytes_skipped, b, sizeof(b));
		cli_human_size(st.virtual_size, s, sizeof(s));
		printf("Converted %s -> %s: %s disk, %s written, %s skipped (unallocated or zero)\n",
		       argv[optind], argv[optind + 1], s, a, b);
		if (st.virtual_size != st.source_size)
			printf("Note: virtual size rounded up from %llu to %llu bytes (Azure needs a whole MiB)\n",
			       (unsigned long long)st.source_size, (unsigned long long)st.virtual_size);
	}
	return EXIT_OK;
}
