/* vhdtool serve - one-off NBD server for images (same engine and options as
 * vhd-vspd), with a captive mode for scripts and tests. */
#include "cli.h"
#include "vsp.h"

int cmd_serve(int argc, char **argv)
{
	struct vsp_serve_args a;
	int ret = vsp_serve_parse_args(argc, argv, "vhdtool serve", &a);

	if (ret == 0)
		ret = vsp_serve(&a.opts);
	else
		ret = ret > 0 ? EXIT_OK : EXIT_USAGE;
	vsp_serve_args_free(&a);
	return ret;
}
