# snapshot/: checkpoint sets (random trees, crashes, the CLI, bad input).
vhd_c_test(test_snapshot)
target_link_libraries(test_snapshot PRIVATE snap)
add_test(NAME test_snapshot_crash COMMAND test_snapshot crash)
set_tests_properties(test_snapshot_crash PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "${TEST_ENV}"
                     TIMEOUT 900)
vhd_sh_test(snapshot_cli)
vhd_sh_test(snapshot_kill)
