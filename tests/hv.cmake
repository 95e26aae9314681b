# Partitions (hv/, hvctl; docs/hv.md).  The guest tests boot a small Linux
# guest (fixtures/guest/build-guest.sh builds it into ${CMAKE_BINARY_DIR}/guest
# on first use: a Debian kernel package fetched with apt-get download, cached)
# under QEMU TCG; they skip (77) without qemu-system-x86_64 or when the
# kernel cannot be fetched.
#
# test_hv              C unit: configs, command lines, state files, the QMP
#                      client against a scripted fake QEMU, process identity
# hv_guest_synthetic   guest on a vhost-user-blk disk (dynamic VHD): pattern,
#                      ext4 + files, verifying writer; host checks the image
# hv_guest_emulated    the same on an IDE disk backed by the NBD export
# hv_guest_diff        a differencing child over a base the guest filled;
#                      the parent's bytes are unchanged afterwards
# hv_guest_crash       kill -9 of QEMU mid-write; kill -9 of vhd-vspd
#                      mid-write: clean errors, images check clean
# hv_lifecycle         hvctl create/start/status/pause/resume/stop (graceful,
#                      forced, timeout)/list/console/delete, a killed worker

set(HV_TEST_ENV ${TEST_ENV}
  "HVCTL=$<TARGET_FILE:hvctl>"
  "VSPD=$<TARGET_FILE:vhd-vspd>"
  "HV_GUEST_DIR=${CMAKE_BINARY_DIR}/guest")

add_executable(test_hv test_hv.c)
target_link_libraries(test_hv PRIVATE hv Threads::Threads)
target_include_directories(test_hv PRIVATE ${CMAKE_SOURCE_DIR}/hv ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME test_hv COMMAND test_hv)
set_tests_properties(test_hv PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "${HV_TEST_ENV}"
                     TIMEOUT 120)

function(hv_guest_test name script)
  add_test(NAME ${name} COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/${script} ${ARGN})
  # RESOURCE_LOCK: guests are CPU-bound under TCG; two at once on a 2-core
  # machine would only make each slower and the timeouts tighter.
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "${HV_TEST_ENV}"
                       TIMEOUT 600 RESOURCE_LOCK hv_guest)
endfunction()

hv_guest_test(hv_guest_synthetic hv_guest_disk.sh synthetic)
hv_guest_test(hv_guest_emulated hv_guest_disk.sh emulated)
hv_guest_test(hv_guest_diff hv_guest_diff.sh)
hv_guest_test(hv_guest_crash hv_guest_crash.sh)
hv_guest_test(hv_lifecycle hv_lifecycle.sh)
add_dependencies(hvctl vhd-vspd vhdtool)
