# vhd_fuzz_replay_test(<test> <definition> <timeout> <source>...): the C test
# <test>: fuzz/fuzz_replay_main.c compiled with <definition>, which names the
# fuzz target, and linked with that target's sources, so that every build
# replays the target's seeds through its code (nbd.cmake, vhost.cmake).
include_guard(GLOBAL)

function(vhd_fuzz_replay_test name definition timeout)
  add_executable(${name} fuzz/fuzz_replay_main.c ${ARGN})
  target_compile_definitions(${name} PRIVATE ${definition})
  target_link_libraries(${name} PRIVATE vsp vhd)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/vhd ${CMAKE_CURRENT_SOURCE_DIR})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "${TEST_ENV}"
                       TIMEOUT ${timeout})
endfunction()
