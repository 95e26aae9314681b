/* vhdtool - inspect, create and modify VHD images (qemu-img habits,
 * Hyper-V names).  Each command lives in its own cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define VHDSTACK_VERSION "0.1.0"

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{"create", cmd_create, "create a fixed, dynamic or differencing VHD"},
	{"info", cmd_info, "describe an image and its parent chain"},
	{"check", cmd_check, "validate an image and its chain (Test-VHD)"},
	{"map", cmd_map, "show where each range of the disk lives"},
	{"read", cmd_read, "copy bytes from the virtual disk to stdout or a file"},
	{"write", cmd_write, "copy bytes from stdin or a file into the virtual disk"},
	{"convert", cmd_convert, "copy a disk into a new raw or VHD image (Convert-VHD)"},
	{"compare", cmd_compare, "compare the contents of two disks"},
	{"merge", cmd_merge, "merge a differencing disk into its parent (Merge-VHD)"},
	{"resize", cmd_resize, "grow or shrink a disk (Resize-VHD)"},
	{"compact", cmd_compact, "give back space of zero blocks (Optimize-VHD)"},
	{"set-parent", cmd_set_parent, "repoint a differencing disk at its moved parent"},
	{"rebase", cmd_rebase, "change a differencing disk's parent keeping its content"},
	{"repair", cmd_repair, "fix what can be fixed without losing data"},
	{"checkpoint", cmd_checkpoint, "checkpoint trees of a set of disks (create, list, apply, ...)"},
	{"serve", cmd_serve, "serve disks over NBD (one-off, or captive with --run)"},
	{"mount", cmd_mount, "mount a disk and its partitions as files through FUSE"},
	{"unmount", cmd_unmount, "unmount what vhdtool mount mounted"},
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: vhdtool COMMAND [OPTIONS] ...\n"
		"       vhdtool COMMAND --help\n"
		"       vhdtool --version\n"
		"\n"
		"vhdtool works on Microsoft Virtual Hard Disk (VHD) images: fixed, dynamic\n"
		"and differencing disks, to the VHD 1.0 specification, readable by Hyper-V,\n"
		"qemu (-f vpc), VirtualBox and libvhdi.\n"
		"\n"
		"Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out,
		"\n"
		"Options every command accepts:\n"
		"  -f, --format=vhd        image format (only vhd; \"vpc\" is accepted as qemu's name)\n"
		"  --output=human|json     output style (default human)\n"
		"  -U, --force-share       open without taking the image lock (reading an image\n"
		"                          that another process is writing may show torn state)\n"
		"  --parent-dir=DIR        look for parents of differencing disks only under DIR\n"
		"  -h, --help              help for the command\n"
		"\n"
		"Sizes take K, M, G, T suffixes (powers of 1024; \"KiB\" and \"KB\" mean the same).\n"
		"\n"
		"Exit status:\n"
		"  0  success (check: no problems)\n"
		"  1  the operation failed (check: problems were found)\n"
		"  2  bad usage (check: the image could not be opened at all)\n"
		"\n"
		"Parents of differencing disks are found through the child's parent locators\n"
		"(W2ru relative path, MacX file URL, W2ku absolute path, the deprecated Wi2r/Wi2k)\n"
		"and finally the base name of the parent name in the child's directory.  A\n"
		"candidate is accepted only if it is a regular file that parses as a VHD and\n"
		"carries the unique id the child records.\n"
		"\n"
		"Images opened for writing are locked (flock, exclusive); images opened for\n"
		"reading take a shared lock, so a writer and another user never overlap.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		if (argc > 2 && strcmp(argv[1], "help") == 0) {
			char *help_argv[] = {argv[2], "--help", NULL};

			for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
				if (!strcmp(commands[i].name, argv[2]))
					return commands[i].run(2, help_argv);
		}
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("vhdtool (vhdstack) %s\n", VHDSTACK_VERSION);
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, argv[1]))
			return commands[i].run(argc - 1, argv + 1);
	cli_error("unknown command \"%s\" (see vhdtool --help)", argv[1]);
	return EXIT_USAGE;
}
