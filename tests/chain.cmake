# Differencing chains against a raw reference (tests/test_chain.c).
vhd_c_test(test_chain)
# The write_prepare/commit protocol with two plans in flight on one new block.
add_test(NAME test_chain_inflight COMMAND test_chain --inflight)
set_tests_properties(test_chain_inflight PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "${TEST_ENV}"
                     TIMEOUT 900)
