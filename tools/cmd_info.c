/* vhdtool info (Get-VHD). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char info_help[] =
	"Usage: vhdtool info [OPTIONS] FILE\n"
	"\n"
	"Describe a VHD image (Hyper-V: Get-VHD; qemu: qemu-img info): type, virtual\n"
	"size and where it comes from, the footer's current and original size, the CHS\n"
	"geometry and the size it covers, creator application/version/host OS, unique\n"
	"id, timestamp, block size, allocated blocks and bytes, file size, and for a\n"
	"differencing disk its parent (unique id, recorded name) and the whole chain\n"
	"with each member's path and type.\n"
	"\n"
	"  --output=json     machine-readable output\n"
	"  -U, --force-share open without the image lock\n"
	"  --parent-dir=DIR  look for parents only under DIR\n"
	"\n"
	"Which size is the disk's size?  Hyper-V, VirtualBox, libvhdi and qemu >= 10 use\n"
	"the footer's current size; Virtual PC and images made by qemu without\n"
	"force_size (creator \"vpc \" or \"qemu\") use the CHS geometry.  vhdtool follows\n"
	"the same rule and prints which one applied (\"size source\").\n"
	"\n"
	"If the parent of a differencing disk cannot be found, info still describes the\n"
	"file itself and says why the parent was not accepted.\n";

static void uuid_str(const uint8_t u[16], char *buf)
{
	vhd_uuid_format(u, buf);
}

static void time_str(uint32_t vhd_ts, char *buf, size_t len)
{
	time_t t = (time_t)vhd_ts + 946684800;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static struct json_object *info_json(struct vhd_image *img, const char *parent_error)
{
	struct json_object *j = json_object_new_object(), *chain;
	struct vhd_info i;
	char u[37], ts[64], geo[32];

	vhd_get_info(img, &i);
	uuid_str(i.uuid, u);
	time_str(i.timestamp, ts, sizeof(ts));
	snprintf(geo, sizeof(geo), "%u/%u/%u", i.geometry.cylinders, i.geometry.heads,
		 i.geometry.sectors);
	json_object_object_add(j, "filename", json_object_new_string(vhd_path(img)));
	json_object_object_add(j, "format", json_object_new_string("vhd"));
	json_object_object_add(j, "type", json_object_new_string(vhd_type_name(i.type)));
	json_object_object_add(j, "virtual-size", json_object_new_uint64(i.virtual_size));
	json_object_object_add(j, "size-source", json_object_new_string(i.size_source));
	json_object_object_add(j, "current-size", json_object_new_uint64(i.current_size));
	json_object_object_add(j, "original-size", json_object_new_uint64(i.original_size));
	json_object_object_add(j, "geometry", json_object_new_string(geo));
	json_object_object_add(j, "cylinders", json_object_new_int(i.geometry.cylinders));
	json_object_object_add(j, "heads", json_object_new_int(i.geometry.heads));
	json_object_object_add(j, "sectors-per-track", json_object_new_int(i.geometry.sectors));
	json_object_object_add(j, "chs-size", json_object_new_uint64(i.chs_size));
	json_object_object_add(j, "creator-application", json_object_new_string(i.creator_app));
	json_object_object_add(j, "creator-version", json_object_new_uint64(i.creator_version));
	json_object_object_add(j, "creator-host-os", json_object_new_string(i.creator_os));
	json_object_object_add(j, "unique-id", json_object_new_string(u));
	json_object_object_add(j, "timestamp", json_object_new_string(ts));
	json_object_object_add(j, "saved-state", json_object_new_boolean(i.saved_state));
	json_object_object_add(j, "footer-checksum-ok", json_object_new_boolean(i.footer_checksum_ok));
	json_object_object_add(j, "file-size", json_object_new_uint64(i.file_size));
	if (i.type != VHD_TYPE_FIXED) {
		json_object_object_add(j, "block-size", json_object_new_uint64(i.block_size));
		json_object_object_add(j, "max-table-entries", json_object_new_uint64(i.max_table_entries));
		json_object_object_add(j, "table-offset", json_object_new_uint64(i.table_offset));
		json_object_object_add(j, "allocated-blocks", json_object_new_uint64(i.allocated_blocks));
		json_object_object_add(j, "allocated-bytes",
				       json_object_new_uint64((uint64_t)i.allocated_blocks * i.block_size));
	}
	if (i.type == VHD_TYPE_DIFF) {
		uuid_str(i.parent_uuid, u);
		json_object_object_add(j, "parent-unique-id", json_object_new_string(u));
		json_object_object_add(j, "parent-name", json_object_new_string(i.parent_name));
		if (vhd_parent(img))
			json_object_object_add(j, "parent", json_object_new_string(vhd_path(vhd_parent(img))));
		if (parent_error)
			json_object_object_add(j, "parent-error", json_object_new_string(parent_error));
	}
	chain = json_object_new_array();
	for (struct vhd_image *m = img; m; m = vhd_parent(m)) {
		struct json_object *e = json_object_new_object();
		struct vhd_info mi;

		vhd_get_info(m, &mi);
		json_object_object_add(e, "filename", json_object_new_string(vhd_path(m)));
		json_object_object_add(e, "type", json_object_new_string(vhd_type_name(mi.type)));
		json_object_object_add(e, "virtual-size", json_object_new_uint64(mi.virtual_size));
		json_object_array_add(chain, e);
	}
	json_object_object_add(j, "chain", chain);
	return j;
}

static void info_human(struct vhd_image *img, const char *parent_error)
{
	struct vhd_info i;
	char u[37], ts[64], hs[32];
	unsigned depth = 0;

	vhd_get_info(img, &i);
	uuid_str(i.uuid, u);
	time_str(i.timestamp, ts, sizeof(ts));
	cli_human_size(i.virtual_size, hs, sizeof(hs));
	printf("image: %s\n", vhd_path(img));
	printf("file format: vhd\n");
	printf("type: %s\n", vhd_type_name(i.type));
	printf("virtual size: %s (%llu bytes)\n", hs, (unsigned long long)i.virtual_size);
	printf("size source: %s\n", i.size_source);
	printf("current size: %llu\n", (unsigned long long)i.current_size);
	printf("original size: %llu\n", (unsigned long long)i.original_size);
	printf("geometry (C/H/S): %u/%u/%u (%llu bytes)\n", i.geometry.cylinders, i.geometry.heads,
	       i.geometry.sectors, (unsigned long long)i.chs_size);
	printf("creator: \"%s\" version %u.%u on \"%s\"\n", i.creator_app, i.creator_version >> 16,
	       i.creator_version & 0xFFFF, i.creator_os);
	printf("unique id: %s\n", u);
	printf("timestamp: %s\n", ts);
	printf("saved state: %s\n", i.saved_state ? "yes" : "no");
	if (!i.footer_checksum_ok)
		printf("footer checksum: BAD (no sound copy; read-only)\n");
	else if (i.used_head_footer)
		printf("footer: trailing copy damaged, using the copy at offset 0\n");
	cli_human_size(i.file_size, hs, sizeof(hs));
	printf("file size: %s (%llu bytes)\n", hs, (unsigned long long)i.file_size);
	if (i.type != VHD_TYPE_FIXED) {
		cli_human_size(i.block_size, hs, sizeof(hs));
		printf("block size: %s\n", hs);
		cli_human_size((uint64_t)i.allocated_blocks * i.block_size, hs, sizeof(hs));
		printf("allocated blocks: %u of %u (%s)\n", i.allocated_blocks, i.max_table_entries, hs);
	}
	if (i.type == VHD_TYPE_DIFF) {
		uuid_str(i.parent_uuid, u);
		printf("parent unique id: %s\n", u);
		printf("parent name: %s\n", i.parent_name);
		if (parent_error)
			printf("parent: NOT FOUND: %s\n", parent_error);
	}
	printf("chain:\n");
	for (struct vhd_image *m = img; m; m = vhd_parent(m), depth++) {
		struct vhd_info mi;

		vhd_get_info(m, &mi);
		printf("  %u: %s (%s)\n", depth, vhd_path(m), vhd_type_name(mi.type));
	}
}

int cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	struct cli_common c = {0};
	struct vhd_open_opts o;
	struct vhd_image *img = NULL;
	struct vhd_err err, perr;
	const char *parent_error = NULL;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "f:Uh", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(info_help, stdout);
			return EXIT_OK;
		}
		ret = cli_common_opt(&c, opt, optarg);
		if (ret <= 0)
			return EXIT_USAGE;
	}
	if (optind + 1 != argc) {
		cli_error("info: expected one FILE (see vhdtool info --help)");
		return EXIT_USAGE;
	}
	cli_open_opts(&c, &o, false);
	ret = vhd_open(argv[optind], &o, &img, &err);
	if (ret < 0) {
		/* Maybe only the parent is missing: describe the file itself. */
		o.flags |= VHD_OPEN_NO_PARENT;
		perr = err;
		if (vhd_open(argv[optind], &o, &img, &err) < 0) {
			cli_error("info: %s", perr.msg);
			return EXIT_FAIL;
		}
		parent_error = perr.msg;
	}
	if (c.json) {
		struct json_object *j = info_json(img, parent_error);

		cli_print_json(j);
		json_object_put(j);
	} else {
		info_human(img, parent_error);
	}
	vhd_close(img);
	return EXIT_OK;
}
