/* vhdtool set-parent (Set-VHD -ParentPath, qemu-img rebase -u) and rebase
 * (qemu-img rebase). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"

static const char set_parent_help[] =
	"Usage: vhdtool set-parent [OPTIONS] CHILD NEWPARENT\n"
	"\n"
	"Repoint the differencing disk CHILD at NEWPARENT (Hyper-V: Set-VHD -ParentPath;\n"
	"qemu: qemu-img rebase -u).  The use case: the parent was moved, renamed or\n"
	"copied elsewhere, and CHILD no longer finds it (opening it fails with \"cannot\n"
	"find the parent with unique id ...\").  CHILD's parent locators (W2ru relative\n"
	"path, W2ku absolute path, MacX file URL), its parent name (NEWPARENT's base\n"
	"name) and the parent timestamp are rewritten; nothing else in CHILD changes.\n"
	"CHILD does not need to open before (its current parent may be missing).\n"
	"\n"
	"NEWPARENT must be a VHD (fixed, dynamic or differencing) whose whole chain\n"
	"opens, and its unique id must be the one CHILD records for its parent: it is\n"
	"the same disk, so CHILD's content stays what it was.  Refused: a CHILD that is\n"
	"not a differencing disk, NEWPARENT == CHILD, a NEWPARENT whose chain contains\n"
	"CHILD (a loop), a CHILD with an unfinished merge, a CHILD another process has\n"
	"open.\n"
	"\n"
	"  --force           also accept a NEWPARENT with another unique id: CHILD's\n"
	"                    recorded parent id becomes NEWPARENT's.  The sectors\n"
	"                    CHILD does not hold then read from NEWPARENT, so the\n"
	"                    content CHILD shows changes unless NEWPARENT has the same\n"
	"                    content (a warning says so; refused for a disk in saved\n"
	"                    state).  To change the parent and keep the content, use\n"
	"                    rebase.\n"
	"  --output=json     print a JSON summary: child, new-parent, parent-name,\n"
	"                    old-parent-unique-id, parent-unique-id, unique-id-changed,\n"
	"                    file sizes and allocated blocks before and after\n"
	"  -U, --force-share open NEWPARENT's chain without taking its shared locks\n"
	"                    (CHILD is always locked exclusively)\n"
	"  --parent-dir=DIR  look for the parents in NEWPARENT's chain only under DIR\n"
	"\n"
	"Crash safety: the new locator data is written to free space first, then the\n"
	"header moves through states that each keep a locator to the disk whose unique\n"
	"id it records (old locators and new ones side by side, then the new id, then\n"
	"the new locators in the old locators' space), every step synced.  Killed at\n"
	"any point, CHILD opens over its old or its new parent; run the command again\n"
	"to finish.  After a power loss the header may carry a checksum warning, which\n"
	"`vhdtool repair` fixes.\n"
	"\n"
	"Exit status: 0 done, 1 refused or failed (CHILD unchanged or still consistent),\n"
	"2 bad usage.\n"
	"\n"
	"Examples:\n"
	"  mv base.vhd /store/base-2024.vhd\n"
	"  vhdtool set-parent child.vhd /store/base-2024.vhd\n"
	"  vhdtool set-parent --force child.vhd other-base.vhd   # content may change\n";

static const char rebase_help[] =
	"Usage: vhdtool rebase [OPTIONS] CHILD NEWPARENT\n"
	"       vhdtool rebase [OPTIONS] -b NEWPARENT CHILD\n"
	"\n"
	"Change the parent of the differencing disk CHILD to NEWPARENT while keeping the\n"
	"content CHILD shows (qemu: qemu-img rebase, safe mode).  Every range CHILD does\n"
	"not hold itself where the current chain and NEWPARENT's chain read differently\n"
	"is first copied from the current chain into CHILD; then CHILD is repointed at\n"
	"NEWPARENT (locators, parent name, timestamp and unique id, as set-parent\n"
	"--force).  Ranges the two chains share (the same file at the same place, or\n"
	"zeros in both) are not even read.  Typical uses: move a child onto a copy of\n"
	"its base with other content, onto the base below its parent (drop a middle\n"
	"layer without merging it), or onto an unrelated disk.\n"
	"\n"
	"NEWPARENT may have another size: beyond NEWPARENT's end CHILD reads zeros\n"
	"where it holds nothing, so it then holds what the old chain had there.\n"
	"The current parent must open (the content has to come from somewhere); if it\n"
	"was only moved, use set-parent.  Refused: a CHILD that is not a differencing\n"
	"disk, NEWPARENT == CHILD, a NEWPARENT whose chain contains CHILD, a CHILD in\n"
	"saved state, with an unfinished merge, or open in another process.  Neither\n"
	"parent is ever written.\n"
	"\n"
	"  -b, --backing=NEWPARENT  the new parent (qemu-img's spelling)\n"
	"  -F, --backing-format=vhd accepted for qemu-img parity (only vhd, alias vpc)\n"
	"  -u, --unsafe             do not copy anything: only repoint (= set-parent\n"
	"                           --force); CHILD's content changes unless NEWPARENT\n"
	"                           reads the same as the current parent, which does not\n"
	"                           need to open\n"
	"  -p, --progress           show progress on a terminal\n"
	"  --output=json            print a JSON summary (as set-parent's, plus mode\n"
	"                           \"safe\" or \"unsafe\" and old-parent, the path the\n"
	"                           current parent was found at)\n"
	"  -U, --force-share        open the parents without their shared locks (CHILD\n"
	"                           is always locked exclusively)\n"
	"  --parent-dir=DIR         look for parents only under DIR\n"
	"\n"
	"Crash safety: copied sectors go through the crash-safe write path (data\n"
	"synced before the block table and bitmap publish it) and equal what the old\n"
	"parent shows, so an interrupted copy leaves CHILD's content unchanged over its\n"
	"old parent; run the command again (what was copied is skipped).  The repoint\n"
	"comes only after everything copied is synced, and is itself crash-safe (see\n"
	"vhdtool set-parent --help): CHILD opens over the old or the new parent, with\n"
	"the same content either way.\n"
	"\n"
	"Exit status: 0 done, 1 refused or failed (CHILD's content unchanged), 2 bad\n"
	"usage.\n"
	"\n"
	"Examples:\n"
	"  vhdtool rebase -p child.vhd other-base.vhd\n"
	"  vhdtool rebase -b base.vhd snap2.vhd     # skip snap1.vhd between them\n"
	"  vhdtool rebase -u child.vhd moved.vhd    # only repoint\n";

/* What the child records, read without its parent and without a lock, for
 * the summary.  False when it cannot be read (the operation will say why). */
struct child_view {
	bool ok;
	struct vhd_info info;
	char parent_path[4096];
};

static void view(const char *child, const struct cli_common *c, bool with_parent,
		 struct child_view *v)
{
	struct vhd_open_opts o = {.flags = VHD_OPEN_NO_LOCK | (with_parent ? 0 : VHD_OPEN_NO_PARENT),
				  .parent_dir = c->parent_dir};
	struct vhd_image *img;
	struct vhd_err err;

	memset(v, 0, sizeof(*v));
	if (vhd_open(child, &o, &img, &err) < 0) {
		if (!with_parent)
			return;
		o.flags |= VHD_OPEN_NO_PARENT;
		if (vhd_open(child, &o, &img, &err) < 0)
			return;
	}
	vhd_get_info(img, &v->info);
	if (vhd_parent(img))
		snprintf(v->parent_path, sizeof(v->parent_path), "%s", vhd_path(vhd_parent(img)));
	v->ok = true;
	vhd_close(img);
}

static void add_uuid(struct json_object *j, const char *key, const uint8_t u[16])
{
	char s[37];

	vhd_uuid_format(u, s);
	json_object_object_add(j, key, json_object_new_string(s));
}

static void report(const struct cli_common *c, const char *cmd, const char *child,
		   const char *np, const struct child_view *before, const struct child_view *after,
		   const char *mode)
{
	char u[37];
	bool changed = before->ok && after->ok &&
		       memcmp(before->info.parent_uuid, after->info.parent_uuid, 16);

	if (c->json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "child", json_object_new_string(child));
		json_object_object_add(j, "new-parent", json_object_new_string(np));
		if (mode)
			json_object_object_add(j, "mode", json_object_new_string(mode));
		if (before->parent_path[0])
			json_object_object_add(j, "old-parent", json_object_new_string(before->parent_path));
		if (before->ok)
			add_uuid(j, "old-parent-unique-id", before->info.parent_uuid);
		if (after->ok) {
			add_uuid(j, "parent-unique-id", after->info.parent_uuid);
			json_object_object_add(j, "parent-name",
					       json_object_new_string(after->info.parent_name));
		}
		json_object_object_add(j, "unique-id-changed", json_object_new_boolean(changed));
		if (before->ok && after->ok) {
			json_object_object_add(j, "file-size-before",
					       json_object_new_uint64(before->info.file_size));
			json_object_object_add(j, "file-size-after",
					       json_object_new_uint64(after->info.file_size));
			json_object_object_add(j, "allocated-blocks-before",
					       json_object_new_uint64(before->info.allocated_blocks));
			json_object_object_add(j, "allocated-blocks-after",
					       json_object_new_uint64(after->info.allocated_blocks));
		}
		cli_print_json(j);
		json_object_put(j);
		return;
	}
	if (c->quiet)
		return;
	if (after->ok)
		vhd_uuid_format(after->info.parent_uuid, u);
	if (!strcmp(cmd, "rebase") && mode && !strcmp(mode, "safe")) {
		char a[32], b[32];

		cli_human_size(before->info.file_size, a, sizeof(a));
		cli_human_size(after->info.file_size, b, sizeof(b));
		printf("Rebased %s onto %s (parent unique id %s); its content is unchanged.\n", child,
		       np, after->ok ? u : "?");
		if (before->ok && after->ok)
			printf("Allocated blocks %u -> %u, file size %s -> %s.\n",
			       before->info.allocated_blocks, after->info.allocated_blocks, a, b);
	} else {
		printf("%s now has %s as its parent (unique id %s%s).\n", child, np,
		       after->ok ? u : "?", changed ? ", changed" : ", unchanged");
	}
}

int cmd_set_parent(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"force", no_argument, NULL, 'F' + 256},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct child_view before, after;
	struct cli_common c = {0};
	struct vhd_open_opts o;
	struct vhd_err err;
	bool force = false;
	int opt;

	while ((opt = getopt_long(argc, argv, "f:Uh", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(set_parent_help, stdout);
			return EXIT_OK;
		}
		if (opt == 'F' + 256) {
			force = true;
			continue;
		}
		if (cli_common_opt(&c, opt, optarg) <= 0)
			return EXIT_USAGE;
	}
	if (argc - optind != 2) {
		cli_error("set-parent: expected CHILD and NEWPARENT (see vhdtool set-parent --help)");
		return EXIT_USAGE;
	}
	cli_open_opts(&c, &o, false);
	view(argv[optind], &c, false, &before);
	if (vhd_set_parent(argv[optind], argv[optind + 1], force, &o, &err) < 0) {
		cli_error("set-parent: %s", err.msg);
		return EXIT_FAIL;
	}
	view(argv[optind], &c, false, &after);
	report(&c, "set-parent", argv[optind], argv[optind + 1], &before, &after, NULL);
	return EXIT_OK;
}

int cmd_rebase(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"backing", required_argument, NULL, 'b'},
		{"backing-format", required_argument, NULL, 'F'},
		{"unsafe", no_argument, NULL, 'u'},
		{"progress", no_argument, NULL, 'p'},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct child_view before, after;
	struct cli_common c = {0};
	struct cli_progress prog;
	struct vhd_open_opts o;
	struct vhd_err err;
	const char *child, *np = NULL;
	bool unsafe = false, progress = false;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "b:F:upf:Uh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			fputs(rebase_help, stdout);
			return EXIT_OK;
		case 'b':
			np = optarg;
			break;
		case 'F':
			if (strcasecmp(optarg, "vhd") && strcasecmp(optarg, "vpc")) {
				cli_error("rebase: -F: format \"%s\" is not supported (only vhd, alias vpc)",
					  optarg);
				return EXIT_USAGE;
			}
			break;
		case 'u':
			unsafe = true;
			break;
		case 'p':
			progress = true;
			break;
		default:
			if (cli_common_opt(&c, opt, optarg) <= 0)
				return EXIT_USAGE;
		}
	}
	if (np ? argc - optind != 1 : argc - optind != 2) {
		cli_error("rebase: expected CHILD and NEWPARENT, or -b NEWPARENT CHILD "
			  "(see vhdtool rebase --help)");
		return EXIT_USAGE;
	}
	child = argv[optind];
	if (!np)
		np = argv[optind + 1];
	if (!np[0]) {
		cli_error("rebase: an empty NEWPARENT (qemu-img's \"make it standalone\") is not "
			  "supported; use vhdtool convert to flatten a chain");
		return EXIT_USAGE;
	}
	cli_open_opts(&c, &o, false);
	view(child, &c, !unsafe, &before);
	if (unsafe) {
		ret = vhd_set_parent(child, np, true, &o, &err);
	} else {
		cli_progress_init(&prog, progress, "rebase");
		ret = vhd_rebase(child, np, &o, cli_progress_cb, &prog, &err);
		cli_progress_end(&prog);
	}
	if (ret < 0) {
		cli_error("rebase: %s", err.msg);
		return EXIT_FAIL;
	}
	view(child, &c, false, &after);
	report(&c, "rebase", child, np, &before, &after, unsafe ? "unsafe" : "safe");
	return EXIT_OK;
}
