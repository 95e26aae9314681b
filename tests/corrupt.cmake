# Corrupted images and fuzzing (DESIGN.md rule 5, STYLE.md 6 and 12).
#
# test_corrupt           hand-made defects: open refuses or warns naming the
#                        file and the field, check reports it, nothing written.
# test_fuzz_regressions  replays fixtures/fuzz/ (seeds and every input that
#                        once crashed) through the fuzz target's own code, in
#                        every build, fuzzing or not.
# fuzz_open              the libFuzzer target (-DFUZZ=ON, clang); see
#                        docs/fuzzing.md.

vhd_c_test(test_corrupt)
vhd_c_test(test_fuzz_regressions fuzz/fuzz_open.c)
target_include_directories(test_fuzz_regressions PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)

if(FUZZ)
  add_executable(fuzz_open fuzz/fuzz_open.c)
  target_link_libraries(fuzz_open PRIVATE vhd)
  target_include_directories(fuzz_open PRIVATE ${CMAKE_SOURCE_DIR}/vhd)
  target_compile_definitions(fuzz_open PRIVATE VHD_FUZZ_MUTATOR)
  target_link_options(fuzz_open PRIVATE -fsanitize=fuzzer)
endif()
