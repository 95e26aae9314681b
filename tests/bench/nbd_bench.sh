#!/usr/bin/env bash
# nbd_bench.sh - the block VSP (vhd-vspd) against qemu-storage-daemon's NBD
# export of the same VHD files, and both against the physical limit (fio with
# io_uring and O_DIRECT on a raw file of the same size), in one run.
#
#   tests/bench/nbd_bench.sh [BUILD_DIR]
#
# Environment: SIZE (default 2G), RUNTIME seconds per run (default 15),
# WORKDIR (default a fresh directory under /var/tmp; must not be tmpfs:
# both servers use O_DIRECT), WORKLOADS (default: all, by name below).
# Client for both servers: fio ioengine=nbd over a Unix socket, 2 jobs,
# iodepth 32 (one NBD connection per job).  Not a pass/fail test.
set -euo pipefail

build=${1:-$(dirname "$0")/../../build}
build=$(cd "$build" && pwd)
vhdtool=$build/tools/vhdtool
vspd=$build/blockvsp/vhd-vspd
size=${SIZE:-2G}
runtime=${RUNTIME:-15}
jobs=2
depth=32
workloads=${WORKLOADS:-"randread randwrite seqread seqwrite alloc chainread"}

for t in fio qemu-storage-daemon python3 "$vhdtool" "$vspd"; do
	command -v "$t" >/dev/null || { echo "nbd_bench: needs $t" >&2; exit 2; }
done

work=${WORKDIR:-$(mktemp -d /var/tmp/nbd-bench.XXXXXX)}
mkdir -p "$work"
sock=$work/nbd.sock
server_pid=
cleanup() {
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	[ -z "${KEEP:-}" ] && rm -rf "$work"
	return 0
}
trap cleanup EXIT

bytes=$(python3 -c "import sys;s='$size';m={'K':1<<10,'M':1<<20,'G':1<<30}
print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))")

echo "== preparing images in $work (size $size)"
# A raw file full of random data; full.vhd holds the same, every block allocated.
fio --name=fill --filename="$work/raw.img" --size="$bytes" --rw=write --bs=1M \
	--ioengine=psync --refill_buffers --output=/dev/null
"$vhdtool" convert -O vhd "$work/raw.img" "$work/full.vhd" >/dev/null
# A depth-3 chain: base (all data), then two children that each rewrote a
# third of the disk in 64 KiB pieces (every read walks bitmaps of 3 files).
cp --sparse=always "$work/full.vhd" "$work/base.vhd"
"$vhdtool" create --parent "$work/base.vhd" "$work/mid.vhd" >/dev/null
"$vhdtool" create --parent "$work/mid.vhd" "$work/leaf.vhd" >/dev/null
for img in mid.vhd leaf.vhd; do
	# fio writes the listed 64 KiB pieces through a captive server: the
	# same write path the benchmark measures, and fast.
	"$vhdtool" serve -q --cache=writeback --run "fio --name=fill --ioengine=nbd --uri=\"\$uri\" \
		--rw=randwrite --bs=64k --percentage_random=100 --number_ios=$((bytes / 65536 / 3)) \
		--randseed=$([ $img = mid.vhd ] && echo 11 || echo 12) --norandommap \
		--refill_buffers --output=/dev/null" "$work/$img"
done

# results[workload,peer] = "IOPS BW_MiB/s"
declare -A result

fio_json() { # NAME ARGS...: prints "iops bw_mib"
	local name=$1
	shift
	fio --name="$name" --numjobs=$jobs --iodepth=$depth --group_reporting \
		--output-format=json "$@" > "$work/fio-$name.json"
	python3 -c '
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]  # the nbd engine chats first
iops = j["read"]["iops"] + j["write"]["iops"]
bw = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1048576
print("%.0f %.1f" % (iops, bw))' "$work/fio-$name.json"
}

wait_socket() {
	for _ in $(seq 200); do
		[ -S "$sock" ] && return 0
		sleep 0.05
	done
	echo "nbd_bench: server did not start" >&2
	exit 1
}

start_vspd() { # IMAGE
	rm -f "$sock"
	"$vspd" -q -s "$sock" -e "disk=$1" &
	server_pid=$!
	wait_socket
}

start_qsd() { # IMAGE
	rm -f "$sock"
	qemu-storage-daemon \
		--blockdev "driver=file,node-name=file,filename=$1,aio=io_uring,cache.direct=on" \
		--blockdev driver=vpc,node-name=disk,file=file,cache.direct=on \
		--nbd-server "addr.type=unix,addr.path=$sock" \
		--export type=nbd,id=exp,node-name=disk,name=disk,writable=on &
	server_pid=$!
	wait_socket
}

stop_server() {
	kill "$server_pid"
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}

nbd_uri="nbd+unix:///disk?socket=$sock"

# workload -> fio arguments and the image it runs on
declare -A args image
args[randread]="--rw=randread --bs=4k"
args[randwrite]="--rw=randwrite --bs=4k"
args[seqread]="--rw=read --bs=1M"
args[seqwrite]="--rw=write --bs=1M"
args[alloc]="--rw=randwrite --bs=4k"
args[chainread]="--rw=randread --bs=4k"
image[randread]=full.vhd
image[randwrite]=full.vhd
image[seqread]=full.vhd
image[seqwrite]=full.vhd
image[alloc]=empty.vhd
image[chainread]=leaf.vhd

# The allocation workload needs a disk with more blocks than a run can fill:
# 64 GiB (32768 blocks of 2 MiB); the file stays sparse.
alloc_size=64G

run_peer() { # WORKLOAD PEER
	local w=$1 peer=$2 img=${image[$1]} timing
	timing="--time_based --runtime=$runtime --ramp_time=2"
	if [ "$w" = alloc ]; then
		rm -f "$work/empty.vhd"
		"$vhdtool" create --type dynamic --size $alloc_size "$work/empty.vhd" >/dev/null
	fi
	case $peer in
	vspd) start_vspd "$work/$img" ;;
	qsd) start_qsd "$work/$img" ;;
	esac
	# shellcheck disable=SC2086
	result[$w,$peer]=$(fio_json "$w-$peer" --ioengine=nbd --uri="$nbd_uri" ${args[$w]} $timing)
	stop_server
}

run_raw() { # WORKLOAD
	local w=$1 file=$work/raw.img
	if [ "$w" = alloc ]; then
		file=$work/sparse.img
		rm -f "$file"
		truncate -s $alloc_size "$file"
	fi
	# shellcheck disable=SC2086
	result[$w,raw]=$(fio_json "$w-raw" --ioengine=io_uring --direct=1 --filename="$file" \
		${args[$w]} --time_based --runtime="$runtime" --ramp_time=2)
}

for w in $workloads; do
	echo "== $w"
	run_raw "$w"
	run_peer "$w" vspd
	run_peer "$w" qsd
	echo "   raw ${result[$w,raw]}  vspd ${result[$w,vspd]}  qsd ${result[$w,qsd]}"
done

echo
echo "== results: $(nproc) CPUs, size $size, ${runtime}s runs, fio ioengine=nbd $jobs jobs x iodepth $depth"
printf '%-10s %12s %12s %12s %10s %10s %10s\n' workload "vspd IOPS" "qsd IOPS" "raw IOPS" "vspd/qsd" "vspd/raw" "qsd/raw"
for w in $workloads; do
	read -r vi vb <<<"${result[$w,vspd]}"
	read -r qi qb <<<"${result[$w,qsd]}"
	read -r ri rb <<<"${result[$w,raw]}"
	python3 -c "
vi, qi, ri, vb, qb, rb = $vi, $qi, $ri, $vb, $qb, $rb
w = '$w'
def r(a, b): return '%.2f' % (a / b) if b else 'n/a'
unit = '(MiB/s)' if w.startswith('seq') else ''
a, b, c = (vb, qb, rb) if unit else (vi, qi, ri)
print('%-10s %12s %12s %12s %10s %10s %10s %s' % (w, '%.0f' % a, '%.0f' % b, '%.0f' % c,
      r(a, b), r(a, c), r(b, c), unit))"
done
