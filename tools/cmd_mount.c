/* vhdtool mount / unmount: the FUSE mount of fuse/ (see vhdfuse.h). */
#include "cli.h"
#include "vhdfuse.h"

int cmd_mount(int argc, char **argv)
{
	return vhdfuse_cli_mount(argc, argv, "vhdtool mount");
}

int cmd_unmount(int argc, char **argv)
{
	return vhdfuse_cli_unmount(argc, argv, "vhdtool unmount");
}
