#!/usr/bin/env bash
# Merge benchmark (not a pass/fail test).  One run, same machine, same data:
#   vhdtool merge          a child holding CHANGED bytes (random, in 64 KiB..4 MiB
#                          extents) merged into its dynamic parent; the child is
#                          removed at the end, as Merge-VHD does
#   vhdtool merge --keep   the same, the child kept (emptied): no file removal
#   vhdtool merge --batch-size 256M
#                          the child's space given back every 256 MiB, so the
#                          merge needs little free space
#   qemu-img commit        the same change in a qcow2 child over a qcow2 base
#                          (qemu cannot merge VHDs; commit empties the child)
#   plain copy             dd of the changed bytes into a fresh file with fsync,
#                          through the page cache and with O_DIRECT: the faster
#                          of the two is the floor for writing that much data
#   removal                rm of that copy: what deleting a file of that size
#                          costs on this file system (merge pays it for the child)
# Prints the median of RUNS wall times and the ratios.
# Env: SIZE (default 4G), CHANGED (default 1G), RUNS (default 5), DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
V=${VHDTOOL:-$here/../../build/tools/vhdtool}
SIZE=${SIZE:-4G}
CHANGED=${CHANGED:-1G}
RUNS=${RUNS:-5}
dir=$(mktemp -d "${DIR:-/var/tmp}/merge-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }

bytes() { numfmt --from=iec "$1"; }
size=$(bytes "$SIZE")
changed=$(bytes "$CHANGED")

# the change: extents of 64 KiB..4 MiB at random 64 KiB-aligned offsets until
# CHANGED bytes; one file per extent list, replayed identically everywhere
python3 - "$size" "$changed" >plan.txt <<'PY'
import random, sys
size, want = int(sys.argv[1]), int(sys.argv[2])
random.seed(7); done = 0; used = set()
while done < want:
    l = random.randint(1, 64) * 65536
    o = random.randrange(0, (size - l) // 65536) * 65536
    if any(b in used for b in range(o // 65536, (o + l) // 65536)): continue
    used.update(range(o // 65536, (o + l) // 65536)); done += l
    print(o, l)
PY
head -c "$changed" /dev/urandom >data.bin

apply_vhd() { # IMG: write the plan into IMG
	local pos=0 o l
	while read -r o l; do
		dd if=data.bin bs=64K skip=$((pos / 65536)) count=$((l / 65536)) status=none |
			"$V" write "$1" --offset "$o"
		pos=$((pos + l))
	done <plan.txt
}
apply_qcow2() {
	local pos=0 o l cmds=()
	while read -r o l; do
		dd if=data.bin of=ext.bin bs=64K skip=$((pos / 65536)) count=$((l / 65536)) status=none
		qemu-io -f qcow2 -c "write -q -s ext.bin $o $l" "$1" >/dev/null
		pos=$((pos + l))
	done <plan.txt
}
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -a tv tk tb tq tc td trm
for ((r = 0; r < RUNS; r++)); do
	rm -f ./*.vhd ./*.qcow2 copy.bin
	"$V" create base.vhd "$SIZE" >/dev/null
	"$V" create --parent base.vhd child.vhd >/dev/null
	apply_vhd child.vhd
	mkdir -p pristine
	cp --sparse=always base.vhd child.vhd pristine/
	qemu-img create -q -f qcow2 base.qcow2 "$SIZE"
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 child.qcow2
	apply_qcow2 child.qcow2
	sync
	# both merges start from the same copy of the pair, in the same state
	cp --sparse=always pristine/base.vhd pristine/child.vhd . && sync
	tv+=("$(t "$V" merge child.vhd)")
	cp --sparse=always pristine/base.vhd pristine/child.vhd . && sync
	tk+=("$(t "$V" merge --keep child.vhd)")
	cp --sparse=always pristine/base.vhd pristine/child.vhd . && sync
	tb+=("$(t "$V" merge --batch-size 256M child.vhd)")
	tq+=("$(t sh -c 'qemu-img commit -q child.qcow2 && sync base.qcow2')")
	tc+=("$(t dd if=data.bin of=copy.bin bs=4M conv=fsync status=none)")
	rm -f copy.bin && sync
	td+=("$(t dd if=data.bin of=copy.bin bs=4M oflag=direct conv=fsync status=none)")
	trm+=("$(t rm copy.bin)")
done
med() { printf '%s\n' "$@" | median; }
mv=$(med "${tv[@]}")
mk=$(med "${tk[@]}")
mb=$(med "${tb[@]}")
mq=$(med "${tq[@]}")
mc=$(med "${tc[@]}")
md=$(med "${td[@]}")
mr=$(med "${trm[@]}")
floor=$(echo "if ($mc < $md) $mc else $md" | bc -l)
printf '%-40s %8.2f s\n' "vhdtool merge (durable, child removed)" "$mv" \
	"vhdtool merge --keep (child emptied)" "$mk" \
	"vhdtool merge --batch-size 256M" "$mb" \
	"qemu-img commit qcow2 + sync" "$mq" \
	"plain copy, page cache (dd, fsync)" "$mc" \
	"plain copy, O_DIRECT (dd, fsync)" "$md" \
	"removal of a file that size (rm)" "$mr"
printf 'ratio vhdtool merge / qemu-img commit:         %.2f\n' "$(echo "$mv / $mq" | bc -l)"
printf 'ratio vhdtool merge / plain copy:              %.2f (target <= 1.2)\n' \
	"$(echo "$mv / $floor" | bc -l)"
printf 'ratio vhdtool merge --keep / plain copy:       %.2f\n' "$(echo "$mk / $floor" | bc -l)"
printf 'ratio vhdtool merge --batch-size 256M / plain copy + removal: %.2f\n' \
	"$(echo "$mb / ($floor + $mr)" | bc -l)"
printf 'ratio vhdtool merge / (plain copy + removal):  %.2f\n' \
	"$(echo "$mv / ($floor + $mr)" | bc -l)"
