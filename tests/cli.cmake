vhd_sh_test(cli_basic)
