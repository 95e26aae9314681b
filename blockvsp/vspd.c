/* vhd-vspd - the block VSP daemon: serves VHD chains over NBD until SIGTERM. */
#include "vsp.h"

int main(int argc, char **argv)
{
	struct vsp_serve_args a;
	int ret = vsp_serve_parse_args(argc, argv, "vhd-vspd", &a);

	if (ret == 0)
		ret = vsp_serve(&a.opts);
	else
		ret = ret > 0 ? 0 : 2;
	vsp_serve_args_free(&a);
	return ret;
}
