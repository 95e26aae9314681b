/* vhdtool create (New-VHD). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char create_help[] =
	"Usage: vhdtool create [OPTIONS] FILE [SIZE]\n"
	"\n"
	"Create a new VHD image (Hyper-V: New-VHD; qemu: qemu-img create -f vpc).\n"
	"\n"
	"  -t, --type=TYPE         fixed, dynamic (default) or differencing\n"
	"  -s, --size=SIZE         virtual size; K/M/G/T suffixes; rounded up to a\n"
	"                          whole 512-byte sector; at most 2040 GiB\n"
	"  -b, --block-size=SIZE   dynamic/differencing block size, a power of two from\n"
	"                          512 bytes to 256 MiB (default 2 MiB; a differencing\n"
	"                          disk defaults to its parent's block size)\n"
	"  -p, --parent=FILE       parent of a differencing disk (implies\n"
	"                          --type=differencing); the child takes the parent's\n"
	"                          virtual size and records its unique id, its name and\n"
	"                          three locators: W2ru (relative), W2ku (absolute) and\n"
	"                          MacX (file URL)\n"
	"  --preallocate           fixed: allocate the data area (a dense file, which\n"
	"                          Windows requires of fixed VHDs); default sparse\n"
	"  --force                 replace FILE if it exists\n"
	"  --output=json           print a JSON summary\n"
	"\n"
	"The requested size is exact: the footer's current size is the size, and the\n"
	"CHS geometry is computed with the specification's algorithm (it usually\n"
	"covers slightly less).  The creator application is \"win \", which qemu\n"
	"(also 7.2), Hyper-V, VirtualBox and libvhdi all read as \"current size is\n"
	"authoritative\", so every reader sees the size you asked for.\n"
	"\n"
	"The file appears atomically: it is written beside FILE, synced, renamed.\n"
	"\n"
	"Examples:\n"
	"  vhdtool create disk.vhd 10G\n"
	"  vhdtool create --type fixed --size 512M --preallocate azure.vhd\n"
	"  vhdtool create --parent base.vhd child.vhd\n";

int cmd_create(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"type", required_argument, NULL, 't'},
		{"size", required_argument, NULL, 's'},
		{"block-size", required_argument, NULL, 'b'},
		{"parent", required_argument, NULL, 'p'},
		{"preallocate", no_argument, NULL, 'a' + 256},
		{"force", no_argument, NULL, 'F' + 256},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	struct vhd_create_opts o = {.type = VHD_TYPE_NONE};
	struct cli_common c = {0};
	const char *size_arg = NULL, *path;
	struct vhd_err err;
	uint64_t bs = 0;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "t:s:b:p:f:Uh", longopts, NULL)) != -1) {
		switch (opt) {
		case 't':
			if (!strcmp(optarg, "fixed"))
				o.type = VHD_TYPE_FIXED;
			else if (!strcmp(optarg, "dynamic"))
				o.type = VHD_TYPE_DYNAMIC;
			else if (!strcmp(optarg, "differencing") || !strcmp(optarg, "diff"))
				o.type = VHD_TYPE_DIFF;
			else {
				cli_error("create: --type: \"%s\" is not fixed, dynamic or differencing", optarg);
				return EXIT_USAGE;
			}
			break;
		case 's':
			size_arg = optarg;
			break;
		case 'b':
			if (cli_parse_size(optarg, &bs) < 0 || bs > UINT32_MAX) {
				cli_error("create: --block-size: \"%s\" is not a size", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'p':
			o.parent = optarg;
			break;
		case 'a' + 256:
			o.preallocate = true;
			break;
		case 'F' + 256:
			o.overwrite = true;
			break;
		case 'h':
			fputs(create_help, stdout);
			return EXIT_OK;
		default:
			ret = cli_common_opt(&c, opt, optarg);
			if (ret <= 0) {
				if (ret == 0)
					fputs("see vhdtool create --help\n", stderr);
				return EXIT_USAGE;
			}
		}
	}
	if (optind >= argc) {
		cli_error("create: missing FILE (see vhdtool create --help)");
		return EXIT_USAGE;
	}
	path = argv[optind++];
	if (optind < argc)
		size_arg = argv[optind++];
	if (optind < argc) {
		cli_error("create: unexpected argument \"%s\"", argv[optind]);
		return EXIT_USAGE;
	}
	if (o.type == VHD_TYPE_NONE)
		o.type = o.parent ? VHD_TYPE_DIFF : VHD_TYPE_DYNAMIC;
	if (o.type != VHD_TYPE_DIFF) {
		if (!size_arg) {
			cli_error("create: missing SIZE for a %s disk", vhd_type_name(o.type));
			return EXIT_USAGE;
		}
		if (cli_parse_size(size_arg, &o.size) < 0) {
			cli_error("create: size: \"%s\" is not a size (e.g. 512, 64M, 10G)", size_arg);
			return EXIT_USAGE;
		}
	} else if (size_arg) {
		cli_error("create: a differencing disk takes its parent's size; drop \"%s\"", size_arg);
		return EXIT_USAGE;
	}
	o.block_size = (uint32_t)bs;
	ret = vhd_create(path, &o, &err);
	if (ret < 0) {
		cli_error("create: %s", err.msg);
		return EXIT_FAIL;
	}
	{
		struct vhd_open_opts oo;
		struct vhd_image *img;
		struct vhd_info info;
		char hs[32];

		cli_open_opts(&c, &oo, false);
		oo.flags |= VHD_OPEN_NO_LOCK;
		if (vhd_open(path, &oo, &img, &err) < 0) {
			cli_error("create: created %s but cannot reopen it: %s", path, err.msg);
			return EXIT_FAIL;
		}
		vhd_get_info(img, &info);
		vhd_close(img);
		if (c.json) {
			struct json_object *j = json_object_new_object();

			json_object_object_add(j, "filename", json_object_new_string(path));
			json_object_object_add(j, "type", json_object_new_string(vhd_type_name(info.type)));
			json_object_object_add(j, "virtual-size", json_object_new_uint64(info.virtual_size));
			json_object_object_add(j, "block-size", json_object_new_uint64(info.block_size));
			if (o.size && info.virtual_size != o.size && o.type != VHD_TYPE_DIFF)
				json_object_object_add(j, "rounded-from", json_object_new_uint64(o.size));
			cli_print_json(j);
			json_object_put(j);
		} else {
			cli_human_size(info.virtual_size, hs, sizeof(hs));
			printf("Created %s: %s, %s (%llu bytes)", path, vhd_type_name(info.type), hs,
			       (unsigned long long)info.virtual_size);
			if (info.block_size) {
				cli_human_size(info.block_size, hs, sizeof(hs));
				printf(", block size %s", hs);
			}
			if (o.parent)
				printf(", parent %s", o.parent);
			putchar('\n');
			if (o.type != VHD_TYPE_DIFF && info.virtual_size != o.size)
				printf("Note: size rounded up from %llu to a whole sector\n",
				       (unsigned long long)o.size);
		}
	}
	return EXIT_OK;
}
