/* vhdtool merge (Merge-VHD). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static const char merge_help[] =
	"Usage: vhdtool merge [OPTIONS] CHILD\n"
	"\n"
	"Merge a differencing disk into its parent (Hyper-V: Merge-VHD): the parent then\n"
	"holds the combined content and CHILD is removed.  With --into, the whole run of\n"
	"the chain from CHILD down to ANCESTOR is merged into ANCESTOR and the images\n"
	"above it are removed.\n"
	"\n"
	"  --into=ANCESTOR   merge into this deeper ancestor instead of the direct parent\n"
	"  --keep            keep CHILD as an empty differencing disk over its parent\n"
	"                    (which then holds everything): its content is unchanged\n"
	"                    (direct parent only)\n"
	"  --sibling=FILE    another disk that may depend on an image the merge changes\n"
	"                    (repeatable); disks in the chain's directories are found\n"
	"                    automatically\n"
	"  --force           merge even if other disks depend on the target or on an\n"
	"                    image that goes away (their content changes or breaks)\n"
	"  --batch-size=SIZE data copied between syncs (default 1G).  After each batch\n"
	"                    the merged blocks of the images above the target are\n"
	"                    dropped and their space given back, so the merge needs\n"
	"                    about SIZE of free space, not a second copy of the child\n"
	"  -p, --progress    show progress on a terminal\n"
	"  --output=json     print a JSON summary\n"
	"  --parent-dir=DIR  look for parents only under DIR\n"
	"\n"
	"Merging into a parent changes that parent, so it is refused while other disks\n"
	"depend on it.  The merge is crash-safe: an intent record CHILD.merge-intent\n"
	"(fsynced) names the source, the target and the progress state; while the data\n"
	"is copied the chain seen from CHILD keeps its content.  After a crash or kill,\n"
	"run the same command again (or `vhdtool repair CHILD`) to finish the merge.\n"
	"\n"
	"Exit status: 0 merged, 1 failed (the chain reads as before; see the message),\n"
	"2 usage error.\n"
	"\n"
	"Examples:\n"
	"  vhdtool merge child.vhd\n"
	"  vhdtool merge --into base.vhd snap3.vhd\n";

int cmd_merge(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"into", required_argument, NULL, 'i' + 256},
		{"keep", no_argument, NULL, 'k' + 256},
		{"sibling", required_argument, NULL, 's' + 256},
		{"force", no_argument, NULL, 'F' + 256},
		{"batch-size", required_argument, NULL, 'b' + 256},
		{"progress", no_argument, NULL, 'p'},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct vhd_merge_opts o = {0};
	struct vhd_merge_stats st;
	struct cli_common c = {0};
	struct cli_progress prog;
	struct vhd_open_opts oo;
	struct vhd_err err;
	const char **sib = calloc((size_t)argc, sizeof(*sib));
	bool progress = false;
	int opt, ret, status = EXIT_USAGE;

	if (!sib)
		return EXIT_FAIL;
	while ((opt = getopt_long(argc, argv, "pf:Uh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'i' + 256:
			o.into = optarg;
			break;
		case 'k' + 256:
			o.keep = true;
			break;
		case 's' + 256:
			sib[o.nr_siblings++] = optarg;
			break;
		case 'F' + 256:
			o.force = true;
			break;
		case 'b' + 256:
			if (cli_parse_size(optarg, &o.batch_bytes) < 0 || o.batch_bytes < (1u << 20)) {
				cli_error("merge: --batch-size: '%s' is not a size of at least 1M",
					  optarg);
				goto out;
			}
			break;
		case 'p':
			progress = true;
			break;
		case 'h':
			fputs(merge_help, stdout);
			status = EXIT_OK;
			goto out;
		default:
			if (cli_common_opt(&c, opt, optarg) <= 0)
				goto out;
		}
	}
	if (argc - optind != 1) {
		cli_error("merge: expected one CHILD (see vhdtool merge --help)");
		goto out;
	}
	o.siblings = sib;
	cli_open_opts(&c, &oo, false);
	cli_progress_init(&prog, progress, "merge");
	o.progress = cli_progress_cb;
	o.progress_ctx = &prog;
	ret = vhd_merge(argv[optind], &oo, &o, &st, &err);
	cli_progress_end(&prog);
	if (ret < 0) {
		cli_error("merge: %s", err.msg);
		status = EXIT_FAIL;
		goto out;
	}
	if (c.json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "source", json_object_new_string(argv[optind]));
		json_object_object_add(j, "target", json_object_new_string(st.target));
		json_object_object_add(j, "merged-images", json_object_new_uint64(st.merged_images));
		json_object_object_add(j, "bytes-copied", json_object_new_uint64(st.bytes_copied));
		json_object_object_add(j, "bytes-released-early",
				       json_object_new_uint64(st.bytes_released));
		json_object_object_add(j, "resumed", json_object_new_boolean(st.resumed));
		json_object_object_add(j, "kept", json_object_new_boolean(o.keep));
		cli_print_json(j);
		json_object_put(j);
	} else {
		char b[32];

		cli_human_size(st.bytes_copied, b, sizeof(b));
		printf("%s %s into %s (%s copied)%s\n", st.resumed ? "Finished merging" : "Merged",
		       argv[optind], st.target, b,
		       o.keep ? "; the child is kept, empty" : "");
	}
	status = EXIT_OK;
out:
	free(sib);
	return status;
}
