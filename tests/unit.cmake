vhd_c_test(test_format)
vhd_c_test(test_locator)
