#!/bin/bash
# convert_bench.sh - wall time of vhdtool convert vs qemu-img convert, side by
# side on the same files in one run.  Not a test (no pass/fail); see README.md.
#
#   (a) raw (BENCH_SIZE, BENCH_DATA_PCT % random data in 64 KiB..4 MiB extents,
#       holes between) -> dynamic VHD (2 MiB blocks)
#         vhdtool convert SRC DST              (fsyncs before the rename: durable)
#         vhdtool convert --no-sync SRC DST    (no fsync)
#         qemu-img convert -f raw -O vpc       (cache=unsafe, qemu-img's default)
#         qemu-img convert ... ; sync DST      (made durable afterwards)
#   (b) that dynamic VHD -> raw, the same four ways (-O raw / -f vpc -O raw).
#
# Each measurement: the previous output removed, `sync`, the page cache
# dropped (echo 3 > /proc/sys/vm/drop_caches; root only - otherwise the runs
# are warm and the table says so), then the command timed alone.  The modes
# are interleaved round by round so that drift hits all of them alike; the
# table shows the median (and min/max) of BENCH_RUNS runs.
#
# Environment:
#   VHDTOOL          vhdtool binary (default: ../../build/tools/vhdtool)
#   BENCH_DIR        where the files go (default: a new dir under /var/tmp);
#                    needs ~2.5 x the data size free, on the disk to measure
#   BENCH_SIZE       source size (default 4G; K/M/G suffixes)
#   BENCH_DATA_PCT   percent of the source holding data (default 25)
#   BENCH_RUNS       runs per mode (default 5; 3..5 is sensible)
#   BENCH_DROP       1 (default) drop caches before each run, 0 run warm
#   BENCH_SEED       extent layout seed (default 1)
#   BENCH_KEEP       1 keeps BENCH_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
VHDTOOL=${VHDTOOL:-$here/../../build/tools/vhdtool}
SIZE_S=${BENCH_SIZE:-4G}
PCT=${BENCH_DATA_PCT:-25}
RUNS=${BENCH_RUNS:-5}
DROP=${BENCH_DROP:-1}
SEED=${BENCH_SEED:-1}

[ -x "$VHDTOOL" ] || { echo "VHDTOOL=$VHDTOOL is not executable (build first, or set VHDTOOL)" >&2; exit 2; }
command -v qemu-img >/dev/null || { echo "qemu-img is not installed" >&2; exit 2; }
PY=$(command python3 -c 'import sys; print(sys.executable)')

to_bytes() {
	case $1 in
	*[kK]) echo $((${1%?} << 10)) ;;
	*[mM]) echo $((${1%?} << 20)) ;;
	*[gG]) echo $((${1%?} << 30)) ;;
	*) echo "$1" ;;
	esac
}
SIZE=$(to_bytes "$SIZE_S")

if [ -n "${BENCH_DIR:-}" ]; then
	D=$BENCH_DIR
	mkdir -p "$D"
else
	D=$(mktemp -d /var/tmp/convert_bench.XXXXXX)
fi
cleanup() { [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$D/src.raw" "$D/src.vhd" "$D"/out.* "$D"/times; rmdir "$D" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() {
	sync
	if [ "$DROP" = 1 ]; then
		if ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
			echo "note: cannot drop caches (not root?): running warm" >&2
			DROP=0
		fi
	fi
}

echo "== source: $SIZE bytes, $PCT % random data in 64 KiB..4 MiB extents (seed $SEED) in $D"
t0=$(date +%s)
"$PY" - "$D/src.raw" "$SIZE" "$PCT" "$SEED" <<'PYEOF'
import os, random, sys
path, size, pct, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = random.Random(seed)
K = 1024
data = 0
with open(path, "wb") as f:
    f.truncate(size)
    off = 0
    while off < size:
        ln = min(r.randrange(16, 1025) * 4 * K, size - off)       # 64 KiB .. 4 MiB
        f.seek(off)
        f.write(os.urandom(ln))
        data += ln
        # a hole sized so that data/total averages pct
        gap = int(ln * (100 - pct) / pct * r.uniform(0.5, 1.5)) // (4 * K) * (4 * K)
        off += ln + gap
print("   %d bytes of data (%.1f %%) written" % (data, 100.0 * data / size))
PYEOF
sync
echo "   generated in $(($(date +%s) - t0)) s"

# The (b) source: made once, by vhdtool (qemu reads it as well).
"$VHDTOOL" convert --no-sync "$D/src.raw" "$D/src.vhd" >/dev/null
qemu-img compare -q -f raw -F vpc "$D/src.raw" "$D/src.vhd" ||
	{ echo "the source VHD does not match the raw source" >&2; exit 1; }
sync

# name|command (OUT is the output path)
MODES_A=(
	"vhdtool (fsync)|\"\$VHDTOOL\" convert -O vhd \"\$D/src.raw\" \"\$OUT\""
	"vhdtool --no-sync|\"\$VHDTOOL\" convert --no-sync -O vhd \"\$D/src.raw\" \"\$OUT\""
	"qemu-img|qemu-img convert -f raw -O vpc \"\$D/src.raw\" \"\$OUT\""
	"qemu-img + sync|qemu-img convert -f raw -O vpc \"\$D/src.raw\" \"\$OUT\" && sync \"\$OUT\""
)
MODES_B=(
	"vhdtool (fsync)|\"\$VHDTOOL\" convert -O raw \"\$D/src.vhd\" \"\$OUT\""
	"vhdtool --no-sync|\"\$VHDTOOL\" convert --no-sync -O raw \"\$D/src.vhd\" \"\$OUT\""
	"qemu-img|qemu-img convert -f vpc -O raw \"\$D/src.vhd\" \"\$OUT\""
	"qemu-img + sync|qemu-img convert -f vpc -O raw \"\$D/src.vhd\" \"\$OUT\" && sync \"\$OUT\""
)

: >"$D/times"
# run_one BENCH MODE_INDEX NAME CMD ROUND
run_one() {
	local bench=$1 i=$2 name=$3 cmd=$4 round=$5 t1 t2 OUT
	OUT="$D/out.$bench.$i"
	rm -f "$OUT"
	drop_caches
	t1=$(date +%s%N)
	eval "$cmd" >/dev/null
	t2=$(date +%s%N)
	echo "$bench|$i|$name|$round|$(((t2 - t1) / 1000))" >>"$D/times"
	# check the output once
	if [ "$round" = 1 ]; then
		if [ "$bench" = a ]; then
			qemu-img compare -q -f raw -F vpc "$D/src.raw" "$OUT" || { echo "($bench) $name: wrong output" >&2; exit 1; }
		else
			cmp -s "$D/src.raw" "$OUT" || { echo "($bench) $name: wrong output" >&2; exit 1; }
		fi
	fi
	rm -f "$OUT"
}

tstart=$(date +%s)
for bench in a b; do
	if [ $bench = a ]; then modes=("${MODES_A[@]}"); else modes=("${MODES_B[@]}"); fi
	echo "== ($bench) $([ $bench = a ] && echo "raw -> dynamic VHD" || echo "dynamic VHD -> raw"): $RUNS runs x ${#modes[@]} modes"
	for round in $(seq 1 "$RUNS"); do
		for i in "${!modes[@]}"; do
			run_one "$bench" "$i" "${modes[i]%%|*}" "${modes[i]#*|}" "$round"
		done
		printf '   round %d done (%d s so far)\n' "$round" $(($(date +%s) - tstart))
	done
done

echo
echo "== results ($(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; caches $([ "$DROP" = 1 ] && echo "dropped before each run" || echo "warm"))"
"$PY" - "$D/times" "$SIZE" "$PCT" "$RUNS" <<'PYEOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    b, i, name, rnd, us = line.rstrip("\n").split("|")
    rows.setdefault((b, int(i), name), []).append(int(us) / 1e6)
size, pct, runs = int(sys.argv[2]), sys.argv[3], sys.argv[4]
title = {"a": "(a) raw -> dynamic VHD", "b": "(b) dynamic VHD -> raw"}
med = {k: statistics.median(v) for k, v in rows.items()}
print("source: %.2f GiB raw, %s %% data; median of %s runs, seconds" % (size / 2**30, pct, runs))
print()
print("| benchmark | mode | median s | min s | max s |")
print("|---|---|---:|---:|---:|")
for k in sorted(rows):
    v = rows[k]
    print("| %s | %s | %.2f | %.2f | %.2f |" % (title[k[0]], k[2], med[k], min(v), max(v)))
print()
print("| benchmark | ratio | vhdtool / qemu-img |")
print("|---|---|---:|")
for b in "ab":
    m = {k[2]: med[k] for k in med if k[0] == b}
    pairs = [("durable: vhdtool (fsync) / qemu-img + sync", "vhdtool (fsync)", "qemu-img + sync"),
             ("no sync: vhdtool --no-sync / qemu-img", "vhdtool --no-sync", "qemu-img"),
             ("defaults: vhdtool (fsync) / qemu-img", "vhdtool (fsync)", "qemu-img")]
    for label, x, y in pairs:
        if x in m and y in m and m[y] > 0:
            print("| %s | %s | %.2f |" % (title[b], label, m[x] / m[y]))
PYEOF
echo
echo "total bench time: $(($(date +%s) - t0)) s"
