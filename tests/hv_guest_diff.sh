#!/usr/bin/env bash
# hv_guest_diff.sh - a differencing child under a running guest.
#
# Boot 1 (emulated IDE disk): the guest fills a dynamic base VHD with a
# pattern (seed 3 at 40 MiB) and an ext4 with files.  Then a differencing
# child is made over the base and boot 2 (synthetic disk on the child)
# verifies the base's content through the chain, writes a second pattern
# (seed 4 at 48 MiB) over the parent's zeros and runs the verifying writer.
# Afterwards the parent's bytes are unchanged (sha256 of the file), both
# files check clean, and the child reads as base + the guest's writes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hv_lib.sh"
hv_setup

"$VHDTOOL" create --type dynamic --size 64M base.vhd >/dev/null
hv_config base.json dbase 1 "vhdtest=write-pattern,mkfs-files vhdtest_seed=3" base.vhd:emulated
"${hv[@]}" create base.json >/dev/null
hv_boot dbase 120
expect_check_clean base.vhd
hv_sanitizer_check || die "sanitizer report (see above)"
"${hv[@]}" delete dbase >/dev/null

base_sum=$(sha256_of base.vhd)
"$VHDTOOL" create --parent base.vhd child.vhd >/dev/null
hv_config child.json dchild 2 \
	"vhdtest=verify,set:SEED=4,set:PAT_OFF=48,write-pattern,stress vhdtest_seed=3 vhdtest_stress_off=56 vhdtest_stress_len=8 vhdtest_secs=3" \
	child.vhd:synthetic
"${hv[@]}" create child.json >/dev/null
hv_boot dchild 150
grep -q "^pattern ok: /dev/vda" "$STATE/dchild/serial.log" ||
	die "the guest did not verify the base's pattern through the child"

[ "$(sha256_of base.vhd)" = "$base_sum" ] || die "the parent base.vhd changed under the child"
expect_check_clean base.vhd
expect_check_clean child.vhd
hv_check_pattern_vhd child.vhd 3 40 8
hv_check_pattern_vhd child.vhd 4 48 8
hv_raw child.vhd child.raw
hv_check_fs child.raw 3
"$HVLOAD" stress-check child.raw --offset $((56 << 20)) --length $((8 << 20)) >/dev/null ||
	die "the child's stress region holds garbage"
# Under the child's writes the parent still reads zeros.
hv_raw base.vhd base.raw
cmp -s -n $((16 << 20)) -i $((48 << 20)):0 base.raw /dev/zero ||
	die "the parent holds data at 48..64 MiB that only the child was given"
log PASS
