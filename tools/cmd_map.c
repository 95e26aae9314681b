/* vhdtool map: where each range of the virtual disk lives. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char map_help[] =
	"Usage: vhdtool map [OPTIONS] FILE\n"
	"\n"
	"List the extents of the virtual disk like qemu-img map: for each run, whether\n"
	"it holds data (and in which file of the chain, at which file offset), reads as\n"
	"zeros (unallocated in a dynamic disk, or beyond a smaller parent), or lies in\n"
	"a parent that was not opened.  Adjacent runs of the same kind in the same file\n"
	"with contiguous offsets are merged.\n"
	"\n"
	"  --output=json     one object per extent: start, length, depth (0 = FILE,\n"
	"                    1 = its parent, ...), data, zero, offset, filename\n"
	"  --no-parent       do not follow the parent: show which runs FILE itself holds\n"
	"                    and which come from the parent (\"parent\" extents)\n"
	"  -U, --force-share open without the image lock\n"
	"\n"
	"Human output lists data extents (Offset, Length, Mapped to, File) like\n"
	"qemu-img map; zero and parent runs are listed with --output=json.\n";

struct run {
	struct vhd_extent e;
	bool open;
};

static bool can_merge(const struct run *r, const struct vhd_extent *e)
{
	if (!r->open || r->e.kind != e->kind || r->e.owner != e->owner || r->e.depth != e->depth)
		return false;
	return e->kind != VHD_EXT_DATA || r->e.file_offset + r->e.length == e->file_offset;
}

static void emit(const struct run *r, struct json_object *list)
{
	const struct vhd_extent *e = &r->e;

	if (list) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "start", json_object_new_uint64(e->offset));
		json_object_object_add(o, "length", json_object_new_uint64(e->length));
		json_object_object_add(o, "depth", json_object_new_uint64(e->depth));
		json_object_object_add(o, "present", json_object_new_boolean(e->kind != VHD_EXT_PARENT));
		json_object_object_add(o, "data", json_object_new_boolean(e->kind == VHD_EXT_DATA));
		json_object_object_add(o, "zero", json_object_new_boolean(e->kind == VHD_EXT_ZERO));
		if (e->kind == VHD_EXT_DATA) {
			json_object_object_add(o, "offset", json_object_new_uint64(e->file_offset));
			json_object_object_add(o, "filename", json_object_new_string(vhd_path(e->owner)));
		}
		json_object_array_add(list, o);
	} else if (e->kind == VHD_EXT_DATA) {
		printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)e->offset,
		       (unsigned long long)e->length, (unsigned long long)e->file_offset,
		       vhd_path(e->owner));
	}
}

int cmd_map(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"no-parent", no_argument, NULL, 'n' + 256},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct cli_common c = {0};
	struct json_object *list = NULL;
	struct vhd_open_opts o;
	struct vhd_image *img;
	struct vhd_err err;
	struct run run = {.open = false};
	bool no_parent = false;
	uint64_t off = 0, size;
	int opt, ret, status = EXIT_OK;

	while ((opt = getopt_long(argc, argv, "f:Uh", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(map_help, stdout);
			return EXIT_OK;
		}
		if (opt == 'n' + 256) {
			no_parent = true;
			continue;
		}
		ret = cli_common_opt(&c, opt, optarg);
		if (ret <= 0)
			return EXIT_USAGE;
	}
	if (optind + 1 != argc) {
		cli_error("map: expected one FILE (see vhdtool map --help)");
		return EXIT_USAGE;
	}
	cli_open_opts(&c, &o, false);
	if (no_parent)
		o.flags |= VHD_OPEN_NO_PARENT;
	if (vhd_open(argv[optind], &o, &img, &err) < 0) {
		cli_error("map: %s", err.msg);
		return EXIT_FAIL;
	}
	size = vhd_virtual_size(img);
	if (c.json)
		list = json_object_new_array();
	else
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	while (off < size) {
		struct vhd_extent e;

		ret = vhd_map(img, off, size - off, no_parent ? 0 : VHD_MAP_RESOLVE, &e);
		if (ret < 0) {
			cli_error("map: %s: at offset %llu: %s", argv[optind], (unsigned long long)off,
				  strerror(-ret));
			status = EXIT_FAIL;
			break;
		}
		if (can_merge(&run, &e)) {
			run.e.length += e.length;
		} else {
			if (run.open)
				emit(&run, list);
			run.e = e;
			run.open = true;
		}
		off += e.length;
	}
	if (run.open)
		emit(&run, list);
	if (list) {
		cli_print_json(list);
		json_object_put(list);
	}
	vhd_close(img);
	return status;
}
