# The NBD front door of the block VSP (blockvsp/), driven by real clients
# (qemu-img, qemu-io, nbdinfo, nbdcopy, fio's nbd engine) and by the raw C
# client of nbd_client.c.  Every test starts its own servers on Unix sockets
# in a temp dir and stops (or kills) them itself; VSPD names the daemon.
#
# test_nbd_protocol     handshake and transmission garbage, limits, 100
#                       clients with half stalled, SIGTERM with hostile
#                       clients connected (C, raw client)
# nbd_clients           qemu-img/nbdcopy/nbdinfo/qemu-io on fixed, dynamic and
#                       differencing exports; read-only; several exports; TCP
# nbd_torture           fio (nbd engine, verify=crc32c) plus concurrent readers
# nbd_crash             kill -9 of vhd-vspd during writes, 20 rounds
# nbd_shutdown          SIGTERM/SIGINT during fio and logged writes
# test_nbd_fuzz_replay  fixtures/fuzz/nbd-seed/ through the fuzz target's code
# fuzz_nbd              the libFuzzer target (-DFUZZ=ON, clang)
#
# Shell helpers: nbd_lib.sh; seeds: nbd_mkseeds.sh (run by hand).

set(NBD_TEST_ENV "${TEST_ENV};VSPD=$<TARGET_FILE:vhd-vspd>")

vhd_c_test(test_nbd_protocol nbd_client.c)
set_tests_properties(test_nbd_protocol PROPERTIES ENVIRONMENT "${NBD_TEST_ENV}")
add_dependencies(test_nbd_protocol vhd-vspd)

# The client of nbd_crash.sh and nbd_shutdown.sh: writes self-describing
# sectors, logs acknowledgements and flushes, and verifies a disk against
# the logs.
vhd_test_helper(nbd_crash_writer nbd_client.c)

foreach(t nbd_clients nbd_torture nbd_crash nbd_shutdown)
  vhd_sh_test(${t})
  set_tests_properties(${t} PROPERTIES ENVIRONMENT "${NBD_TEST_ENV}")
endforeach()

include(fuzz/replay.cmake)
vhd_fuzz_replay_test(test_nbd_fuzz_replay FUZZ_REPLAY_NBD 900 fuzz/fuzz_nbd.c nbd_client.c)

if(FUZZ)
  add_executable(fuzz_nbd fuzz/fuzz_nbd.c nbd_client.c)
  target_link_libraries(fuzz_nbd PRIVATE vsp vhd)
  target_include_directories(fuzz_nbd PRIVATE ${CMAKE_SOURCE_DIR}/vhd ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_options(fuzz_nbd PRIVATE -fsanitize=fuzzer)
endif()
