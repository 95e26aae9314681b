# The vhost-user-blk front door of the block VSP (blockvsp/vhost_user.c,
# virtq.c), driven by a fake front end (vhost_user_fake.c: what QEMU and a
# guest driver do, over the Unix socket and memfd guest memory).
#
# test_vhost_user         vhd-vspd --vhost-user against well-formed and hostile
#                         front ends and guests (C, starts the daemon itself)
# test_vhost_fuzz_replay  fixtures/fuzz/vhost-seed/ through the fuzz target's
#                         code (an in-process server), in every build
# fuzz_vhost              the libFuzzer target (-DFUZZ=ON, clang)

set(VHOST_TEST_ENV "${TEST_ENV};VSPD=$<TARGET_FILE:vhd-vspd>")

vhd_c_test(test_vhost_user vhost_user_fake.c)
target_link_libraries(test_vhost_user PRIVATE Threads::Threads)
set_tests_properties(test_vhost_user PROPERTIES ENVIRONMENT "${VHOST_TEST_ENV}" TIMEOUT 300)
add_dependencies(test_vhost_user vhd-vspd)

include(fuzz/replay.cmake)
vhd_fuzz_replay_test(test_vhost_fuzz_replay FUZZ_REPLAY_VHOST 300 fuzz/fuzz_vhost.c
                     vhost_user_fake.c)

if(FUZZ)
  add_executable(fuzz_vhost fuzz/fuzz_vhost.c vhost_user_fake.c)
  target_link_libraries(fuzz_vhost PRIVATE vsp vhd)
  target_include_directories(fuzz_vhost PRIVATE ${CMAKE_SOURCE_DIR}/vhd ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_options(fuzz_vhost PRIVATE -fsanitize=fuzzer)
endif()
