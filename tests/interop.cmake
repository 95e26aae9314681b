# Interoperability tests: qemu-img/qemu-io (qemu-utils) against vhdtool, and
# third-party fixture images from ../shared/fixtures/public.  Each skips (77)
# with the reason printed when qemu-img/qemu-io or the fixtures are missing.
# SEED=<n> in the environment replays a run; KEEP_TMP=1 keeps its files.
vhd_sh_test(interop_qemu_read)
vhd_sh_test(interop_qemu_write)
vhd_sh_test(fixtures_public)
