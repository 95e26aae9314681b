vhd_sh_test(merge_repair)
vhd_sh_test(compact)
