vhd_sh_test(merge_repair)
