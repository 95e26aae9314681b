#!/usr/bin/env bash
# fuse_e2e: the mount end to end with the kernel.
#
# dynamic      a new dynamic VHD is mounted; sfdisk writes a GPT with two
#              partitions on `disk`; p1 and p2 appear and go on loop devices;
#              mkfs.ext4 and mkfs.vfat; a tree of files is copied into both
#              (vfat through the kernel when it has vfat, else with mtools on
#              the loop device); everything is unmounted, the FUSE mount last.
#              Then: vhdtool check clean; remounted read-only, e2fsck -fn and
#              fsck.vfat -n pass and the files compare byte for byte; and the
#              same again independently of our code: qemu-img converts the VHD
#              to raw and the partitions, attached at their offsets, pass fsck
#              and hold the same files.
# differencing a child of that image is mounted: the GPT and both filesystems
#              are read through from the parent, a second tree is copied into
#              each, everything unmounted; the parent's sha256 is unchanged,
#              the child shows both trees (ours and qemu's view), the parent
#              only the first, and check is clean on both.  (qemu 7.2 does not
#              follow VHD parents, so the child's second, independent reading
#              is vhdtool convert's flattening, not the mount's code.)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse_lib.sh"
require_fuse
require_loop
require sfdisk mkfs.ext4 e2fsck mkfs.vfat fsck.vfat qemu-img partx
have_kernel_vfat || require mcopy
pick_seed
fuse_tmpdir

make_tree "$TMP/tree1" "$SEED-1"
make_tree "$TMP/tree2" "$SEED-2"

# copy_into_vfat DEV TREE NAME: TREE into /NAME of the vfat on DEV.
copy_into_vfat() {
	if have_kernel_vfat; then
		kmount "$1" "$TMP/kv"
		cp -r "$2" "$TMP/kv/$3"
		kumount "$TMP/kv"
	else
		MTOOLS_SKIP_CHECK=1 mcopy -s -Q -i "$1" "$2" "::/$3" 2>"$TMP/mcopy.err" ||
			die "mcopy into $1 failed: $(cat "$TMP/mcopy.err")"
	fi
}

# check_vfat DEV TREE NAME: fsck.vfat -n clean and /NAME equals TREE.
check_vfat() {
	local out
	out=$(fsck.vfat -n "$1" 2>&1) || die "fsck.vfat -n $1 failed: $out"
	rm -rf "$TMP/vout"
	if have_kernel_vfat; then
		kmount "$1" "$TMP/kv" -o ro
		cp -r "$TMP/kv/$3" "$TMP/vout"
		kumount "$TMP/kv"
	else
		MTOOLS_SKIP_CHECK=1 mcopy -s -Q -i "$1" "::/$3" "$TMP/vout" 2>"$TMP/mcopy.err" ||
			die "mcopy out of $1 failed: $(cat "$TMP/mcopy.err")"
	fi
	diff -r "$2" "$TMP/vout" >"$TMP/diff.out" 2>&1 ||
		die "vfat /$3 differs from $2: $(head -5 "$TMP/diff.out")"
}

# check_ext4 DEV TREE... : e2fsck -fn clean and every TREE in / with its name.
check_ext4() {
	local dev=$1 t out
	shift
	out=$(e2fsck -fn "$dev" 2>&1) || die "e2fsck -fn $dev failed: $out"
	kmount "$dev" "$TMP/ke" -o ro
	for t in "$@"; do
		diff -r "$t" "$TMP/ke/$(basename "$t")" >"$TMP/diff.out" 2>&1 ||
			die "ext4 /$(basename "$t") differs: $(head -5 "$TMP/diff.out")"
	done
	[ "$#" -eq 2 ] || [ ! -e "$TMP/ke/tree2" ] || die "the parent shows the child's tree2"
	kumount "$TMP/ke"
}

# verify IMG READER TREES...: through our read-only mount, then through a raw
# copy made by READER (qemu-img or vhdtool).
verify() {
	local img=$1 reader=$2 mnt=$TMP/mnt-v l1 l2 raw start size
	shift 2
	expect_check_clean "$img"
	vmount -r "$img" "$mnt"
	[ "$(info_get "$mnt" 'd["mode"]')" = read-only ] || die "-r mount is not read-only"
	l1=$(loop_attach "$mnt/p1" -r)
	l2=$(loop_attach "$mnt/p2" -r)
	check_ext4 "$l1" "$@"
	for t in "$@"; do check_vfat "$l2" "$t" "$(basename "$t")"; done
	loop_detach "$l1"
	loop_detach "$l2"
	vunmount "$mnt"

	# another reader, and the partition offsets from the raw's own table
	raw=$TMP/check.raw
	if [ "$reader" = qemu-img ]; then
		qemu-img convert -f vpc -O raw "$img" "$raw"
	else
		"$VHDTOOL" convert -O raw "$img" "$raw" >/dev/null
	fi
	read -r start size < <(partx -b -g -n 1 -o START,SECTORS "$raw")
	l1=$(loop_attach "$raw" -r -o $((start * 512)) --sizelimit $((size * 512)))
	read -r start size < <(partx -b -g -n 2 -o START,SECTORS "$raw")
	l2=$(loop_attach "$raw" -r -o $((start * 512)) --sizelimit $((size * 512)))
	check_ext4 "$l1" "$@"
	for t in "$@"; do check_vfat "$l2" "$t" "$(basename "$t")"; done
	loop_detach "$l1"
	loop_detach "$l2"
	rm -f "$raw"
}

case_dynamic() {
	local img=$TMP/base.vhd mnt=$TMP/mnt l1 l2
	"$VHDTOOL" create --type dynamic --size 192M "$img" >/dev/null
	vmount "$img" "$mnt"
	[ "$(info_get "$mnt" 'd["mode"]')" = read-write ] || die "not mounted read-write"
	[ "$(stat -c %s "$mnt/disk")" = $((192 << 20)) ] || die "disk is not 192 MiB"
	[ ! -e "$mnt/p1" ] || die "p1 exists before there is a partition table"
	printf 'label: gpt\nsize=96MiB, type=linux, name=root\ntype=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=data\n' |
		sfdisk -q "$mnt/disk" >/dev/null || die "sfdisk on $mnt/disk failed"
	[ -f "$mnt/p1" ] && [ -f "$mnt/p2" ] || die "p1/p2 did not appear after sfdisk: $(ls "$mnt")"
	[ "$(stat -c %s "$mnt/p1")" = $((96 << 20)) ] || die "p1 is $(stat -c %s "$mnt/p1") bytes, not 96 MiB"
	[ "$(info_get "$mnt" 'd["partition-table"]["type"]')" = gpt ] || die "info.json: not gpt"
	l1=$(loop_attach "$mnt/p1")
	l2=$(loop_attach "$mnt/p2")
	mkfs.ext4 -q -L e2e-root "$l1" || die "mkfs.ext4 on $l1 (p1) failed"
	mkfs.vfat -n E2EDATA "$l2" >/dev/null || die "mkfs.vfat on $l2 (p2) failed"
	kmount "$l1" "$TMP/ke"
	cp -r "$TMP/tree1" "$TMP/ke/"
	kumount "$TMP/ke"
	copy_into_vfat "$l2" "$TMP/tree1" tree1
	loop_detach "$l1"
	loop_detach "$l2"
	# libblkid saw the new filesystems through the mount
	[ "$(info_get "$mnt" '[p["filesystem"]["type"] + ":" + p["filesystem"]["label"] for p in d["partition-table"]["partitions"]]')" = '["ext4:e2e-root", "vfat:E2EDATA"]' ] ||
		die "info.json filesystems: $(info_get "$mnt" 'd["partition-table"]')"
	vunmount "$mnt"
	verify "$img" qemu-img "$TMP/tree1"
	cp "$img" "$TMP/base.keep" # for the differencing case
}

case_differencing() {
	local base=$TMP/base.keep child=$TMP/child.vhd mnt=$TMP/mnt l1 l2 before
	[ -f "$base" ] || skip "the dynamic case did not leave its image"
	before=$(sha256_of "$base")
	"$VHDTOOL" create --parent "$base" "$child" >/dev/null
	vmount "$child" "$mnt"
	[ "$(info_get "$mnt" 'len(d["chain"])')" = 2 ] || die "info.json chain is not 2 deep"
	[ -f "$mnt/p1" ] && [ -f "$mnt/p2" ] || die "p1/p2 not seen through the child"
	l1=$(loop_attach "$mnt/p1")
	l2=$(loop_attach "$mnt/p2")
	kmount "$l1" "$TMP/ke"
	[ -d "$TMP/ke/tree1" ] || die "tree1 not visible through the child"
	cp -r "$TMP/tree2" "$TMP/ke/"
	kumount "$TMP/ke"
	copy_into_vfat "$l2" "$TMP/tree2" tree2
	loop_detach "$l1"
	loop_detach "$l2"
	vunmount "$mnt"
	[ "$(sha256_of "$base")" = "$before" ] || die "the parent changed"
	verify "$child" vhdtool "$TMP/tree1" "$TMP/tree2"
	verify "$base" qemu-img "$TMP/tree1"
	[ "$(sha256_of "$base")" = "$before" ] || die "the parent changed while verifying"
}

run_case dynamic case_dynamic
run_case differencing case_differencing
finish
