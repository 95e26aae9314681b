# resize (Resize-VHD): tests/test_resize.c (content against a reference,
# refusals, kill -9 at every write of a resize) and tests/resize_qemu.sh
# (vhdtool resize on the command line, qemu-img agreeing on size and content).
vhd_c_test(test_resize)
vhd_sh_test(resize_qemu)
