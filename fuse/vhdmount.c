/* vhdmount - mount a VHD through FUSE (the same as `vhdtool mount`).
 *   vhdmount [OPTIONS] IMAGE MOUNTPOINT
 *   vhdmount -u [-z] MOUNTPOINT           (the same as `vhdtool unmount`) */
#include <string.h>

#include "vhdfuse.h"

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "-u") || !strcmp(argv[i], "--unmount") ||
		    !strcmp(argv[i], "-uz") || !strcmp(argv[i], "-zu")) {
			if (!strcmp(argv[i], "--unmount"))
				argv[i] = "-u";
			return vhdfuse_cli_unmount(argc, argv, "vhdmount -u");
		}
	}
	return vhdfuse_cli_mount(argc, argv, "vhdmount");
}
