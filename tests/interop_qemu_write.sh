#!/bin/bash
# interop_qemu_write: qemu reads what vhdtool writes, and the reverse.
#
# Part A - vhdtool creates fixed and dynamic images (sizes that are not CHS
#   products, not whole MiB, not even whole sectors; dynamic block sizes 4K,
#   64K, 512K, 2M) and writes seeded random data with `vhdtool write --offset`
#   (odd byte offsets and lengths, block-straddling, whole blocks, runs longer
#   than the 1 MiB copy chunk, the last bytes of the disk), mirrored into a raw
#   reference file.  Then qemu-img compare -f vpc -F raw says identical,
#   qemu-img info reports exactly the requested size rounded up to 512,
#   vhdtool read equals the reference and vhdtool check exits 0.  Dynamic:
#   check reports no leaked space after these uninterrupted writes.
# Part B - mixed writers on one vhdtool-created image: vhdtool writes, then
#   qemu-io writes (qemu allocates blocks in our layout), then vhdtool writes
#   again.  vhdtool read == qemu-img convert == the model; check stays clean.
# Part C - a differencing child made by vhdtool over a dynamic parent (same,
#   smaller and larger block size; also over a qemu-made and a fixed parent):
#   child writes, including partial sectors whose rest comes from the parent;
#   vhdtool read child == parent raw + the writes applied with dd; the parent
#   file is bit-for-bit unchanged; check clean.
# Part D - a fixed disk (made by vhdtool or qemu-img) whose guest data holds
#   VHD metadata (its own footer, or a dynamic disk's footer + header) at
#   sector 0, at 1 MiB and in the last sector: check clean, read returns it.
# Part E - vhdtool writes into images qemu created (qemu's layout and
#   CHS-rounded sizes), between qemu-io writes; both readers agree.
# Replay a failure with SEED=<n>; keep the files with KEEP_TMP=1.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_vhdtool
require qemu-img qemu-io python3 cmp dd
make_tmpdir
pick_seed

K=1024 M=$((1024 * 1024)) G=$((1024 * 1024 * 1024))

# bytes_of 64K|2M|N
bytes_of() {
	case $1 in
	*K) echo $((${1%K} * K)) ;;
	*M) echo $((${1%M} * M)) ;;
	*) echo "$1" ;;
	esac
}

# create_and_check NAME TYPE SIZE [BLOCK]: vhdtool create, then the sizes that
# vhdtool and qemu report must both be SIZE rounded up to a sector.
create_and_check() {
	local img=$1 type=$2 size=$3 bs=${4:-} want q v
	if [ -n "$bs" ]; then
		"$VHDTOOL" create -t "$type" -b "$bs" "$img" "$size" >/dev/null ||
			die "vhdtool create -t $type -b $bs $img $size failed"
	else
		"$VHDTOOL" create -t "$type" "$img" "$size" >/dev/null ||
			die "vhdtool create -t $type $img $size failed"
	fi
	want=$(((size + 511) / 512 * 512))
	q=$(qemu_vsize "$img" -f vpc)
	[ "$q" = "$want" ] || die "$img ($type $size): qemu-img virtual size $q, expected $want"
	v=$(vhd_vsize "$img")
	[ "$v" = "$want" ] || die "$img ($type $size): vhdtool virtual size $v, expected $want"
}

# qemu_identical IMG RAW WHAT
qemu_identical() {
	local out
	out=$(qemu-img compare -U -f vpc -F raw "$1" "$2" 2>&1) ||
		die "$3: qemu-img compare: $out"
	case $out in
	*"Images are identical"*) ;;
	*) die "$3: qemu-img compare said: $out" ;;
	esac
}

# ---- Part A: vhdtool writes, qemu reads --------------------------------------
# type size block(dynamic)
A_CASES=(
	"fixed $M"
	"fixed $((5 * M + 512))"
	"fixed 1000000"
	"fixed $((64 * M + 3 * 512))"
	"fixed $((100 * M))"
	"dynamic $M 2M"
	"dynamic $((5 * M + 512)) 2M"
	"dynamic 7000001 2M"
	"dynamic $((100 * M + 3 * 512)) 2M"
	"dynamic $((G + 7 * 512)) 2M"
	"dynamic $((3 * M + 512)) 512K"
	"dynamic $((64 * M + 3 * 512)) 512K"
	"dynamic 1000000 512K"
	"dynamic $((3 * M + 512)) 64K"
	"dynamic 7000001 64K"
	"dynamic $((20 * M)) 64K"
	"dynamic $((M + 1536)) 4K"
)

# a_case N TYPE SIZE [BLOCK]
a_case() {
	local n=$1 type=$2 size=$3 bs=${4:-} d img what vsize unit q leaked
	d="$TMP/a$n"
	mkdir "$d"
	img="$d/img.vhd"
	what="A$n: vhdtool create -t $type${bs:+ -b $bs} $size"
	create_and_check "$img" "$type" "$size" "$bs"
	vsize=$(((size + 511) / 512 * 512))
	unit=$(bytes_of "${bs:-2M}") # fixed: still straddle 2 MiB boundaries
	truncate -s "$vsize" "$d/ref.raw"
	gen_writes vhd "$SEED.a$n" "$vsize" "$unit" "$d/ref.raw" "$d" 14
	run_vhd_plan "$img" "$d/plan"
	rm -f "$d"/chunk*

	expect_check_clean "$img"
	qemu_identical "$img" "$d/ref.raw" "$what"
	q=$(qemu_vsize "$img" -f vpc)
	[ "$q" = "$vsize" ] || die "$what: after writes qemu-img virtual size $q, expected $vsize"
	"$VHDTOOL" read "$img" "$d/out.raw" || die "$what: vhdtool read failed"
	cmp_files "$d/out.raw" "$d/ref.raw" "$what: vhdtool read differs from the writes made"
	if [ "$type" = dynamic ]; then
		# Every write completed: nothing may be reported as leaked.
		leaked=$("$VHDTOOL" check --output=json "$img" | python3 -c \
			'import json,sys; print(json.load(sys.stdin)["leaked-bytes"])')
		[ "$leaked" = 0 ] || die "$what: vhdtool check reports $leaked bytes of leaked space" \
			"after vhdtool's own, uninterrupted writes (file size $(stat -c %s "$img"))"
	fi
	log "ok $what: $(wc -l <"$d/plan") writes, qemu agrees"
	rm -rf "$d"
}
n=0
for c in "${A_CASES[@]}"; do
	n=$((n + 1))
	read -r type size bs <<<"$c"
	run_case "A$n ($type $size${bs:+ block $bs})" a_case "$n" "$type" "$size" "$bs"
done

# ---- Part B: vhdtool, then qemu-io, then vhdtool again on one image -----------
B_CASES=(
	"fixed $((5 * M + 512))"
	"fixed 1000000"
	"dynamic $((24 * M + 512)) 2M"
	"dynamic 7000001 2M"
	"dynamic $((9 * M + 3 * 512)) 512K"
	"dynamic $((3 * M + 512)) 64K"
	"dynamic $((M + 1536)) 4K"
)
# b_case N TYPE SIZE [BLOCK]
b_case() {
	local n=$1 type=$2 size=$3 bs=${4:-} d img what vsize unit
	d="$TMP/b$n"
	mkdir "$d"
	img="$d/img.vhd"
	what="B$n: vhdtool create -t $type${bs:+ -b $bs} $size"
	create_and_check "$img" "$type" "$size" "$bs"
	vsize=$(((size + 511) / 512 * 512))
	unit=$(bytes_of "${bs:-2M}")
	truncate -s "$vsize" "$d/model.raw"

	gen_writes vhd "$SEED.b$n.1" "$vsize" "$unit" "$d/model.raw" "$d" 8
	run_vhd_plan "$img" "$d/plan"
	rm -f "$d"/chunk*
	expect_check_clean "$img"

	gen_writes qemu "$SEED.b$n.2" "$vsize" "$unit" "$d/model.raw" "$d" 10
	run_qemu_io_plan "$img" "$d/plan"
	rm -f "$d"/chunk*
	expect_check_clean "$img"
	qemu-img convert -U -f vpc -O raw "$img" "$d/ref.raw"
	cmp_files "$d/ref.raw" "$d/model.raw" "$what: after qemu-io writes, qemu-img convert differs from the model"
	"$VHDTOOL" read "$img" "$d/out.raw" || die "$what: vhdtool read failed"
	cmp_files "$d/out.raw" "$d/ref.raw" "$what: after qemu-io writes, vhdtool read differs from qemu-img convert"

	gen_writes vhd "$SEED.b$n.3" "$vsize" "$unit" "$d/model.raw" "$d" 8
	run_vhd_plan "$img" "$d/plan"
	rm -f "$d"/chunk*
	expect_check_clean "$img"
	qemu_identical "$img" "$d/model.raw" "$what: after vhdtool writes over qemu's"
	"$VHDTOOL" read "$img" "$d/out.raw" || die "$what: vhdtool read failed"
	cmp_files "$d/out.raw" "$d/model.raw" "$what: after vhdtool writes over qemu's, vhdtool read"
	[ "$(qemu_vsize "$img" -f vpc)" = "$vsize" ] || die "$what: qemu virtual size changed"
	log "ok $what: vhdtool/qemu-io/vhdtool writes agree"
	rm -rf "$d"
}
n=0
for c in "${B_CASES[@]}"; do
	n=$((n + 1))
	read -r type size bs <<<"$c"
	run_case "B$n ($type $size${bs:+ block $bs})" b_case "$n" "$type" "$size" "$bs"
done

# ---- Part C: differencing child over a parent -------------------------------
# parent-maker parent-size parent-block child-block(-: inherit).  Parents:
# vhdtool dynamic (the brief's case), qemu-img dynamic (creator "qemu", size
# rounded to CHS, qemu's layout), vhdtool fixed.
C_CASES=(
	"vhdtool $((10 * M + 512)) 2M -"
	"vhdtool $((6 * M + 3 * 512)) 512K 64K"
	"vhdtool 7000001 64K 2M"
	"qemu $((5 * M + 512)) 2M -"
	"fixed $((6 * M + 512)) 2M 512K"
)
# c_case N MAKER PARENT_SIZE PARENT_BLOCK CHILD_BLOCK|-
c_case() {
	local n=$1 maker=$2 size=$3 pbs=$4 cbs=$5 d parent child what vsize punit cunit psum off len file
	d="$TMP/c$n"
	mkdir "$d"
	parent="$d/parent.vhd" child="$d/child.vhd"
	what="C$n: parent $maker $size -b $pbs, child -b $cbs"
	punit=$(bytes_of "$pbs")
	case $maker in
	vhdtool) create_and_check "$parent" dynamic "$size" "$pbs" ;;
	fixed) create_and_check "$parent" fixed "$size" ;;
	qemu) qemu-img create -q -f vpc -o subformat=dynamic "$parent" "$size" ;;
	esac
	vsize=$(vhd_vsize "$parent")
	truncate -s "$vsize" "$d/parent.raw"
	if [ "$maker" = qemu ]; then
		gen_writes qemu "$SEED.c$n.p" "$vsize" "$punit" "$d/parent.raw" "$d" 10
		run_qemu_io_plan "$parent" "$d/plan"
	else
		gen_writes vhd "$SEED.c$n.p" "$vsize" "$punit" "$d/parent.raw" "$d" 10
		run_vhd_plan "$parent" "$d/plan"
	fi
	rm -f "$d"/chunk*

	if [ "$cbs" = - ]; then
		"$VHDTOOL" create --parent "$parent" "$child" >/dev/null || die "$what: create child failed"
		cunit=$punit
	else
		"$VHDTOOL" create --parent "$parent" -b "$cbs" "$child" >/dev/null ||
			die "$what: create child failed"
		cunit=$(bytes_of "$cbs")
	fi
	psum=$(sha256_of "$parent")
	[ "$(vhd_vsize "$child")" = "$vsize" ] || die "$what: child virtual size is not the parent's"

	# A fresh child reads as its parent.
	"$VHDTOOL" read "$child" "$d/out.raw" || die "$what: vhdtool read child failed"
	cmp_files "$d/out.raw" "$d/parent.raw" "$what: fresh child does not read as the parent"

	# Child writes: the expected overlay is the parent's raw plus the writes,
	# applied here with dd (independently of gen_writes' own model).
	cp "$d/parent.raw" "$d/overlay.raw"
	truncate -s "$vsize" "$d/scratch.raw"
	gen_writes vhd "$SEED.c$n.c" "$vsize" "$cunit" "$d/scratch.raw" "$d" 14
	while read -r off len file; do
		dd if="$file" of="$d/overlay.raw" bs=64K oflag=seek_bytes seek="$off" \
			conv=notrunc status=none
	done <"$d/plan"
	run_vhd_plan "$child" "$d/plan"
	rm -f "$d"/chunk* "$d/scratch.raw"

	[ "$(sha256_of "$parent")" = "$psum" ] || die "$what: writes to the child modified the parent"
	expect_check_clean "$child"
	expect_check_clean "$parent"
	"$VHDTOOL" read "$child" "$d/out.raw" || die "$what: vhdtool read child failed"
	cmp_files "$d/out.raw" "$d/overlay.raw" "$what: child read differs from parent + child writes"
	"$VHDTOOL" read "$parent" "$d/out.raw" || die "$what: vhdtool read parent failed"
	cmp_files "$d/out.raw" "$d/parent.raw" "$what: parent read differs after child writes"
	[ "$(sha256_of "$parent")" = "$psum" ] || die "$what: reading/checking modified the parent"
	log "ok $what: $(wc -l <"$d/plan") child writes over the parent"
	rm -rf "$d"
}
n=0
for c in "${C_CASES[@]}"; do
	n=$((n + 1))
	read -r maker size pbs cbs <<<"$c"
	run_case "C$n ($maker parent $size block $pbs, child block $cbs)" c_case "$n" "$maker" "$size" "$pbs" "$cbs"
done

# ---- Part D: guest data that looks like a VHD footer -------------------------
# A fixed disk's first sector is guest data; a guest may well store a VHD there
# (nested images, a VHD file at the start of a partition).  Whatever is there,
# check stays clean and read returns it.  qemu is no oracle here: its vpc
# driver takes a footer found at offset 0 as the image's own, so the expected
# content is a raw model.  The fixed disk comes from vhdtool or qemu-img; the
# planted sectors are its own footer, or a dynamic disk's footer + header.
d_case() {
	local maker=$1 src=$2 d="$TMP/d.$1.$2" img size spec off f
	mkdir "$d"
	img="$d/img.vhd"
	case $maker in
	vhdtool) "$VHDTOOL" create -t fixed "$img" $((4 * M + 512)) >/dev/null ;;
	qemu) qemu-img create -q -f vpc -o subformat=fixed "$img" $((4 * M)) ;;
	esac
	size=$(vhd_vsize "$img")
	truncate -s "$size" "$d/model.raw"
	if [ "$src" = own ]; then
		tail -c 512 "$img" >"$d/plant"
	else
		"$VHDTOOL" create -t dynamic "$d/other.vhd" $((4 * M)) >/dev/null
		head -c 1536 "$d/other.vhd" >"$d/plant" # footer copy + dynamic header
	fi
	printf 'conectix-ish guest bytes' >"$d/odd"
	head -c 512 "$d/plant" >"$d/plant512"
	for spec in "0 plant" "$M plant" "$((size - 512)) plant512" "3 odd"; do
		read -r off f <<<"$spec"
		f="$d/$f"
		"$VHDTOOL" write "$img" --offset "$off" <"$f" ||
			die "D($maker/$src): vhdtool write at $off failed"
		dd if="$f" of="$d/model.raw" bs=512 oflag=seek_bytes seek="$off" conv=notrunc status=none
		expect_check_clean "$img"
		"$VHDTOOL" read "$img" "$d/out.raw" || die "D($maker/$src): vhdtool read failed"
		cmp_files "$d/out.raw" "$d/model.raw" "D($maker/$src): read after planting $f at $off"
	done
	[ "$(vhd_vsize "$img")" = "$size" ] || die "D($maker/$src): the virtual size changed"
	log "ok D($maker/$src): fixed disk with VHD metadata as guest data at 0, 1M and the last sector"
	rm -rf "$d"
}
for maker in vhdtool qemu; do
	for src in own dynamic; do
		run_case "D ($maker fixed disk, $src footer as guest data)" d_case "$maker" "$src"
	done
done

# ---- Part E: vhdtool writes into images qemu made ----------------------------
# qemu's layout (BAT at 0x600, unaligned block data at 0xA00, sizes rounded to
# CHS without force_size) must be extended correctly by our allocator.
E_CASES=(
	"dynamic off $((5 * M + 512))"
	"dynamic on $((5 * M + 512))"
	"dynamic off $((64 * M))"
	"fixed off $((3 * M + 512))"
	"fixed on 1000000"
)
e_case() {
	local n=$1 sub=$2 force=$3 size=$4 d img what q
	d="$TMP/e$n"
	mkdir "$d"
	img="$d/img.vhd"
	what="E$n: qemu-img create -o subformat=$sub,force_size=$force $size, then vhdtool write"
	qemu-img create -q -f vpc -o "subformat=$sub,force_size=$force" "$img" "$size"
	q=$(qemu_vsize "$img" -f vpc)
	[ "$(vhd_vsize "$img")" = "$q" ] || die "$what: vhdtool and qemu disagree on the size"
	truncate -s "$q" "$d/model.raw"
	gen_writes qemu "$SEED.e$n.1" "$q" $((2 * M)) "$d/model.raw" "$d" 6
	run_qemu_io_plan "$img" "$d/plan"
	rm -f "$d"/chunk*
	gen_writes vhd "$SEED.e$n.2" "$q" $((2 * M)) "$d/model.raw" "$d" 12
	run_vhd_plan "$img" "$d/plan"
	rm -f "$d"/chunk*
	expect_check_clean "$img"
	qemu_identical "$img" "$d/model.raw" "$what"
	"$VHDTOOL" read "$img" "$d/out.raw" || die "$what: vhdtool read failed"
	cmp_files "$d/out.raw" "$d/model.raw" "$what: vhdtool read"
	[ "$(qemu_vsize "$img" -f vpc)" = "$q" ] || die "$what: qemu's virtual size changed"
	# qemu keeps writing after us.
	gen_writes qemu "$SEED.e$n.3" "$q" $((2 * M)) "$d/model.raw" "$d" 6
	run_qemu_io_plan "$img" "$d/plan"
	rm -f "$d"/chunk*
	expect_check_clean "$img"
	"$VHDTOOL" read "$img" "$d/out.raw" || die "$what: vhdtool read failed"
	cmp_files "$d/out.raw" "$d/model.raw" "$what: vhdtool read after more qemu writes"
	log "ok $what"
	rm -rf "$d"
}
n=0
for c in "${E_CASES[@]}"; do
	n=$((n + 1))
	read -r sub force size <<<"$c"
	run_case "E$n ($sub force_size=$force $size)" e_case "$n" "$sub" "$force" "$size"
done
finish
