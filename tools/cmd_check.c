/* vhdtool check (Test-VHD). */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static const char check_help[] =
	"Usage: vhdtool check [OPTIONS] FILE\n"
	"\n"
	"Validate the structure of a VHD image and of every parent in its chain\n"
	"(Hyper-V: Test-VHD; qemu: qemu-img check).  Never writes to any file.\n"
	"\n"
	"Checked: both footer copies (cookie, checksum, agreement), version, disk type,\n"
	"sizes against the file and the 2040 GiB limit; the dynamic header (cookie,\n"
	"checksum, version, block size a power of two, BAT entry count against the\n"
	"disk size, BAT inside the file); every BAT entry (inside the file, not\n"
	"overlapping the header, the BAT, locator data or another block); parent\n"
	"locators (platform codes, data space in bytes or sectors, data inside the\n"
	"file); for differencing disks that the parent is found, is a regular VHD with\n"
	"the recorded unique id, and that the chain has no loop and is not absurdly deep.\n"
	"\n"
	"Each problem names the file, the field and the value.  Severities: error\n"
	"(corruption), warning (readable, but something is off, e.g. a bad checksum with\n"
	"a sound copy), info (harmless, e.g. leaked space left by an interrupted\n"
	"allocation).\n"
	"\n"
	"  --output=json     list every problem as JSON\n"
	"  -q, --quiet       print nothing; use the exit status\n"
	"  --parent-dir=DIR  look for parents only under DIR\n"
	"\n"
	"Exit status: 0 no errors or warnings (leaked space allowed), 1 problems found,\n"
	"2 the image could not be read at all (missing, permission, I/O error).\n";

int cmd_check(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"quiet", no_argument, NULL, 'q'},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct cli_common c = {0};
	struct vhd_check_report r;
	struct vhd_open_opts o;
	struct vhd_err err;
	size_t bad;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "qf:Uh", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(check_help, stdout);
			return EXIT_OK;
		}
		if (opt == 'q') {
			c.quiet = true;
			continue;
		}
		ret = cli_common_opt(&c, opt, optarg);
		if (ret <= 0)
			return EXIT_USAGE;
	}
	if (optind + 1 != argc) {
		cli_error("check: expected one FILE (see vhdtool check --help)");
		return EXIT_USAGE;
	}
	cli_open_opts(&c, &o, false);
	o.warn = NULL; /* warnings are part of the report */
	ret = vhd_check(argv[optind], &o, &r, &err);
	if (ret < 0) {
		if (!c.quiet)
			cli_error("check: %s", err.msg);
		return 2;
	}
	bad = vhd_check_count(&r, VHD_SEV_WARNING);
	if (c.json) {
		struct json_object *j = json_object_new_object(), *list = json_object_new_array();

		json_object_object_add(j, "filename", json_object_new_string(argv[optind]));
		json_object_object_add(j, "check-errors", json_object_new_uint64(vhd_check_count(&r, VHD_SEV_ERROR)));
		json_object_object_add(j, "warnings",
				       json_object_new_uint64(bad - vhd_check_count(&r, VHD_SEV_ERROR)));
		json_object_object_add(j, "leaked-bytes", json_object_new_uint64(r.leaked_bytes));
		json_object_object_add(j, "chain-depth", json_object_new_uint64(r.chain_depth));
		json_object_object_add(j, "problems-not-listed", json_object_new_uint64(r.suppressed));
		for (size_t i = 0; i < r.count; i++) {
			struct json_object *p = json_object_new_object();

			json_object_object_add(p, "severity",
					       json_object_new_string(vhd_severity_name(r.problems[i].severity)));
			json_object_object_add(p, "file", json_object_new_string(r.problems[i].file));
			json_object_object_add(p, "field", json_object_new_string(r.problems[i].field));
			json_object_object_add(p, "message", json_object_new_string(r.problems[i].msg));
			json_object_array_add(list, p);
		}
		json_object_object_add(j, "problems", list);
		if (!c.quiet)
			cli_print_json(j);
		json_object_put(j);
	} else if (!c.quiet) {
		for (size_t i = 0; i < r.count; i++)
			printf("%s: %s: %s: %s\n", vhd_severity_name(r.problems[i].severity),
			       r.problems[i].file, r.problems[i].field, r.problems[i].msg);
		if (r.suppressed)
			printf("... and %zu more problems not listed\n", r.suppressed);
		if (r.leaked_bytes)
			printf("%llu bytes of leaked space (unreferenced, harmless; compact reclaims it)\n",
			       (unsigned long long)r.leaked_bytes);
		if (!bad)
			printf("No errors were found on the image (chain of %u file%s).\n", r.chain_depth,
			       r.chain_depth == 1 ? "" : "s");
		else
			printf("%zu problem%s found.\n", bad, bad == 1 ? "" : "s");
	}
	vhd_check_report_free(&r);
	return bad ? EXIT_FAIL : EXIT_OK;
}
