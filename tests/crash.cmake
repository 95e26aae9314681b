vhd_c_test(test_crash)
