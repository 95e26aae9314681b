# vhdtool convert and compare, checked against qemu-img (qemu-utils) and raw
# references computed by the scripts.  Each skips (77) with the reason printed
# when qemu-img or python3 is missing.  SEED=<n> in the environment replays a
# run; KEEP_TMP=1 keeps its files; convert_qemu.sh also takes PARTS="A D J"
# to run only some parts.  tests/bench/ holds a benchmark (not a test).
vhd_sh_test(convert_qemu)
vhd_sh_test(compare_basic)
