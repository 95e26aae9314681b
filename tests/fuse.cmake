# FUSE mount tests (fuse/, docs/fuse.md).  Each needs /dev/fuse and
# fusermount3 and skips (77) saying why when the machine has none; the
# kernel end-to-end tests also need root for loop devices.  SEED=<n>
# replays a run; KEEP_TMP=1 keeps its files.
vhd_sh_test(fuse_e2e)
vhd_sh_test(fuse_modes)
set_property(TEST fuse_modes APPEND PROPERTY ENVIRONMENT "VHDMOUNT=$<TARGET_FILE:vhdmount>")
add_executable(test_fuse_stress test_fuse_stress.c)
target_link_libraries(test_fuse_stress PRIVATE Threads::Threads)
vhd_sh_test(fuse_stress)
vhd_sh_test(fuse_interop)
vhd_sh_test(fuse_signals)
