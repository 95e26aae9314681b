#!/bin/bash
# interop_qemu_read: vhdtool reads what qemu writes.
#
# qemu-img creates vpc images (fixed and dynamic, with and without
# force_size=on, sizes that are and are not CHS products or whole sectors),
# qemu-io writes seeded random patterns into them (block-straddling, the first
# and last sectors, unaligned bytes, explicit zeroes over data).  Then:
#   - vhdtool read IMG out.raw (to stdout for disks over 256 MiB) ==
#     qemu-img convert -O raw == a model of the writes kept by this script
#     (so a qemu-io that silently wrote nothing cannot make the test pass);
#   - a few ranged reads (--offset/--length, unaligned) == the same bytes of ref;
#   - vhdtool info virtual-size == qemu-img info virtual-size (without
#     force_size qemu rounds the size up to a CHS product; we must agree);
#   - vhdtool check exits 0; the image file is not modified by read/info/check.
# Replay a failure with SEED=<n>; keep the files with KEEP_TMP=1.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_vhdtool
require qemu-img qemu-io python3 cmp dd
make_tmpdir
pick_seed

M=$((1024 * 1024)) G=$((1024 * 1024 * 1024))

# subformat force_size size: fixed images stay small (they are sparse anyway),
# the big sizes are dynamic.
CASES=(
	"fixed off $M"
	"fixed on $M"
	"fixed off $((5 * M + 512))"
	"fixed on $((5 * M + 512))"
	"fixed on $((M + 100))"
	"fixed off $((64 * M))"
	"fixed on $((100 * M + 3 * 512))"
	"fixed off $((100 * M + 3 * 512))"
	"fixed off $G"
	"dynamic off $M"
	"dynamic on $M"
	"dynamic on $((M + 100))"
	"dynamic off $((5 * M + 512))"
	"dynamic on $((5 * M + 512))"
	"dynamic off $((64 * M))"
	"dynamic on $((64 * M))"
	"dynamic off $((100 * M + 3 * 512))"
	"dynamic on $((100 * M + 3 * 512))"
	"dynamic off $G"
	"dynamic on $G"
	"dynamic off $((3 * G + 7 * 512))"
	"dynamic on $((3 * G + 7 * 512))"
)

# read_case N SUBFORMAT FORCE_SIZE SIZE
read_case() {
	local n=$1 sub=$2 force=$3 size=$4 d img what qsize sum_before json vsize i off len out
	d="$TMP/c$n"
	mkdir "$d"
	img="$d/img.vhd"
	what="case $n: qemu-img create -f vpc -o subformat=$sub,force_size=$force $size"

	qemu-img create -q -f vpc -o "subformat=$sub,force_size=$force" "$img" "$size" ||
		die "$what: qemu-img create failed"
	qsize=$(qemu_vsize "$img" -f vpc)
	truncate -s "$qsize" "$d/model.raw"
	gen_writes qemu "$SEED.$n" "$qsize" $((2 * M)) "$d/model.raw" "$d"
	run_qemu_io_plan "$img" "$d/plan"
	rm -f "$d"/chunk*

	qemu-img convert -f vpc -O raw "$img" "$d/ref.raw"
	cmp_files "$d/ref.raw" "$d/model.raw" "$what: qemu's own view differs from the writes made (test bug?)"
	rm -f "$d/model.raw"

	sum_before=$(sha256_of "$img")
	json=$("$VHDTOOL" info --output=json "$img") || die "$what: vhdtool info failed"
	vsize=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["virtual-size"])' "$json")
	[ "$vsize" = "$qsize" ] ||
		die "$what: vhdtool virtual-size $vsize, qemu-img says $qsize ($json)"
	expect_check_clean "$img"

	if [ "$qsize" -le $((256 * M)) ]; then
		"$VHDTOOL" read "$img" "$d/out.raw" || die "$what: vhdtool read failed"
		cmp_files "$d/out.raw" "$d/ref.raw" "$what: vhdtool read differs from qemu-img convert"
		rm -f "$d/out.raw"
	else
		# Big disks: through standard output, no dense copy on disk.
		out=$("$VHDTOOL" read "$img" | cmp - "$d/ref.raw" 2>&1) ||
			die "$what: vhdtool read (to stdout) failed or differs from qemu-img convert: $out"
	fi

	# Ranged reads at seeded, mostly unaligned offsets (one ends at the end).
	for i in 1 2 3; do
		read -r off len < <(python3 -c '
import random, sys
r = random.Random(sys.argv[1]); v = int(sys.argv[2])
if sys.argv[3] == "3":
    ln = r.randrange(1, min(v, 3 << 20)); print(v - ln, ln)
else:
    off = r.randrange(0, v); print(off, r.randrange(0, min(v - off, 3 << 20) + 1))
' "$SEED.$n.$i" "$qsize" "$i")
		"$VHDTOOL" read "$img" --offset "$off" --length "$len" >"$d/part" ||
			die "$what: vhdtool read --offset $off --length $len failed"
		dd if="$d/ref.raw" of="$d/part.ref" bs=1M iflag=skip_bytes,count_bytes \
			skip="$off" count="$len" status=none
		cmp_files "$d/part" "$d/part.ref" "$what: vhdtool read --offset $off --length $len"
	done
	[ "$(sha256_of "$img")" = "$sum_before" ] || die "$what: read/info/check modified the image"

	log "ok $what -> virtual size $qsize, $(wc -l <"$d/plan") writes"
	rm -rf "$d"
}

n=0
for c in "${CASES[@]}"; do
	n=$((n + 1))
	read -r sub force size <<<"$c"
	run_case "case $n ($sub, force_size=$force, $size)" read_case "$n" "$sub" "$force" "$size"
done
finish
