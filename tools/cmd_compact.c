/* vhdtool compact (Optimize-VHD). */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static const char compact_help[] =
	"Usage: vhdtool compact [OPTIONS] IMAGE\n"
	"\n"
	"Give back the space of blocks that hold nothing (Hyper-V: Optimize-VHD): in a\n"
	"dynamic disk, blocks that read as all zeros; in a differencing disk, blocks\n"
	"with no sector of their own, and with --against-parent also the sectors that\n"
	"are identical to the parent's.  The remaining blocks are packed towards the\n"
	"start and the file shrinks.  The disk's content never changes, and every step\n"
	"is crash-safe: an interrupted compact leaves leaked space at worst (run it\n"
	"again).  Fixed disks and disks in saved state are refused.\n"
	"\n"
	"Zeroed space inside a guest filesystem becomes reclaimable only once the\n"
	"guest wrote zeros there (e.g. fstrim through a discarding device, or zerofree).\n"
	"\n"
	"  --against-parent   differencing: also drop sectors equal to the parent's\n"
	"  --output=json      print a JSON summary\n"
	"  --parent-dir=DIR   look for parents only under DIR\n";

int cmd_compact(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"against-parent", no_argument, NULL, 'a' + 256},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct cli_common c = {0};
	struct vhd_compact_stats st;
	struct vhd_open_opts o;
	struct vhd_err err;
	bool against = false;
	int opt;

	while ((opt = getopt_long(argc, argv, "f:Uh", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(compact_help, stdout);
			return EXIT_OK;
		}
		if (opt == 'a' + 256) {
			against = true;
			continue;
		}
		if (cli_common_opt(&c, opt, optarg) <= 0)
			return EXIT_USAGE;
	}
	if (argc - optind != 1) {
		cli_error("compact: expected one IMAGE (see vhdtool compact --help)");
		return EXIT_USAGE;
	}
	cli_open_opts(&c, &o, true);
	if (vhd_compact(argv[optind], against, &o, &st, &err) < 0) {
		cli_error("compact: %s", err.msg);
		return EXIT_FAIL;
	}
	if (c.json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "filename", json_object_new_string(argv[optind]));
		json_object_object_add(j, "old-file-size", json_object_new_uint64(st.old_file_size));
		json_object_object_add(j, "new-file-size", json_object_new_uint64(st.new_file_size));
		json_object_object_add(j, "bytes-reclaimed",
				       json_object_new_uint64(st.old_file_size - st.new_file_size));
		json_object_object_add(j, "blocks-dropped", json_object_new_uint64(st.blocks_dropped));
		json_object_object_add(j, "blocks-moved", json_object_new_uint64(st.blocks_moved));
		json_object_object_add(j, "sectors-cleared", json_object_new_uint64(st.sectors_cleared));
		cli_print_json(j);
		json_object_put(j);
	} else {
		char a[32];

		cli_human_size(st.old_file_size - st.new_file_size, a, sizeof(a));
		printf("Compacted %s: %s reclaimed (%llu -> %llu bytes), %u blocks dropped, %u moved\n",
		       argv[optind], a, (unsigned long long)st.old_file_size,
		       (unsigned long long)st.new_file_size, st.blocks_dropped, st.blocks_moved);
	}
	return EXIT_OK;
}
