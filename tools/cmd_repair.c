/* vhdtool repair. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static const char repair_help[] =
	"Usage: vhdtool repair [OPTIONS] IMAGE\n"
	"\n"
	"Fix what can be fixed in a VHD without losing data, and say exactly what was\n"
	"changed:\n"
	"  - finish an interrupted merge (the record IMAGE.merge-intent);\n"
	"  - rewrite a damaged trailing footer from the sound copy at offset 0, or a\n"
	"    missing/different copy at offset 0 from the trailing footer;\n"
	"  - recompute footer and dynamic-header checksums when every field validates;\n"
	"  - give back leaked space after the last structure (the file shrinks).\n"
	"Each step keeps the image openable if it is interrupted.  Damage that would\n"
	"need guessing (a BAT entry pointing past the end of a truncated file,\n"
	"overlapping blocks) is reported and left alone: convert the readable content\n"
	"to a new image instead.\n"
	"\n"
	"  -n, --dry-run     show what would be changed, change nothing\n"
	"  --output=json     {\"actions\": [...]}\n"
	"\n"
	"Exit status: 0 repaired (or nothing to do), 1 not repairable, 2 bad usage.\n";

int cmd_repair(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"dry-run", no_argument, NULL, 'n'},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct cli_common c = {0};
	struct vhd_repair_report r;
	struct vhd_open_opts o;
	struct vhd_err err;
	bool dry = false;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "nf:Uh", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(repair_help, stdout);
			return EXIT_OK;
		}
		if (opt == 'n') {
			dry = true;
			continue;
		}
		if (cli_common_opt(&c, opt, optarg) <= 0)
			return EXIT_USAGE;
	}
	if (argc - optind != 1) {
		cli_error("repair: expected one IMAGE (see vhdtool repair --help)");
		return EXIT_USAGE;
	}
	cli_open_opts(&c, &o, false);
	ret = vhd_repair(argv[optind], &o, dry, &r, &err);
	if (c.json) {
		struct json_object *j = json_object_new_object(), *a = json_object_new_array();

		json_object_object_add(j, "filename", json_object_new_string(argv[optind]));
		json_object_object_add(j, "dry-run", json_object_new_boolean(dry));
		for (unsigned i = 0; i < r.count; i++)
			json_object_array_add(a, json_object_new_string(r.actions[i]));
		json_object_object_add(j, "actions", a);
		if (ret < 0)
			json_object_object_add(j, "error", json_object_new_string(err.msg));
		cli_print_json(j);
		json_object_put(j);
	} else {
		for (unsigned i = 0; i < r.count; i++)
			printf("%s%s\n", dry ? "would " : "", r.actions[i]);
		if (ret == 0 && r.count == 0)
			printf("Nothing to repair.\n");
	}
	if (ret < 0) {
		cli_error("repair: %s", err.msg);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}
