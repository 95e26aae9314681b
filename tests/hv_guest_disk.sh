#!/usr/bin/env bash
# hv_guest_disk.sh BUS - a partition whose disk is a dynamic VHD on bus BUS
# (synthetic: vhost-user-blk served by vhd-vspd; emulated: IDE whose backend
# is vhd-vspd's NBD export, guest driver ata_piix).
#
# The guest (fixtures/guest/) writes a known pattern with dd (O_DIRECT,
# fsync), makes an ext4 with files, reads both back, runs the verifying
# writer (several threads: several virtqueues on the synthetic disk), and
# powers off.  The host then checks the image: vhdtool check clean, the
# pattern through vhdtool read, the filesystem (e2fsck -fn, every file by
# debugfs) on the raw conversion, the stress region free of garbage, and
# qemu-img's reading of the VHD equal to ours.
set -euo pipefail
BUS=${1:?usage: hv_guest_disk.sh synthetic|emulated}
TEST_NAME=hv_guest_$BUS
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hv_lib.sh"
hv_setup

case $BUS in
synthetic) vcpus=2 disk=disk.vhd:synthetic:2 ;;
emulated) vcpus=1 disk=disk.vhd:emulated ;;
*) die "bus $BUS is not synthetic or emulated" ;;
esac

"$VHDTOOL" create --type dynamic --size 64M disk.vhd >/dev/null
hv_config vm.json "g$BUS" "$vcpus" \
	"vhdtest=write-pattern,mkfs-files,verify,stress vhdtest_seed=7 vhdtest_stress_off=52 vhdtest_stress_len=8 vhdtest_secs=4 vhdtest_threads=$vcpus" \
	"$disk"
"${hv[@]}" create vm.json >/dev/null
hv_boot "g$BUS" 150
logf=$STATE/g$BUS/serial.log
grep -q "^VHDTEST: stress: done after" "$logf" || die "the stress step did not finish"
grep -q "^VHDTEST: verify-files: 6 files ok" "$logf" || die "the guest did not verify its files"

expect_check_clean disk.vhd
hv_check_pattern_vhd disk.vhd 7 40 8
hv_raw disk.vhd disk.raw
hv_check_fs disk.raw 7
"$HVLOAD" stress-check disk.raw --offset $((52 << 20)) --length $((8 << 20)) >/dev/null ||
	die "the stress region holds garbage"
if command -v qemu-img >/dev/null; then
	qemu-img convert -f vpc -O raw disk.vhd qemu.raw
	cmp_files disk.raw qemu.raw "vhdtool and qemu-img read the guest's disk differently"
fi
log PASS
