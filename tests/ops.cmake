vhd_sh_test(merge_repair)
vhd_sh_test(compact)
vhd_sh_test(ops_hostile)
