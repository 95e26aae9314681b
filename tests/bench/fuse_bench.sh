#!/usr/bin/env bash
# fuse_bench.sh - the FUSE mount against qemu-storage-daemon's FUSE export and
# libvhdi's vhdimount on one 1 GiB fully written dynamic VHD.  Not a test:
# run it by hand on a quiet machine (about 5 minutes) and read the table.
#
#   tests/bench/fuse_bench.sh [BUILD_DIR]      (default: build)
#
# Environment: SIZE (default 1G), RUNTIME (fio seconds per run, default 20),
# TMPDIR (where the image goes; it needs SIZE free, on a real disk).
#
# For every server and every measurement the image is mounted afresh, after
# its file was read once so that the host page cache holds it for everybody
# alike: the figures are those of the FUSE servers, not of the disk.
#   seq read    dd if=FILE of=/dev/null bs=1M (one pass over the whole disk)
#   rand read   fio 4 KiB random reads, psync, direct=0, 1 job and 4 jobs
#   rand write  the same for writes (vhdimount is read-only: left out)
# direct=0 means fio goes through the kernel's normal read/write path.  Our
# read-write mount opens its files with direct I/O (no FUSE page cache: every
# request reaches the daemon; disk and p<N> alias each other), our read-only
# mount (-r, "ours-ro", reads only) and qemu-storage-daemon's export let the
# kernel cache.  fio drops the file's cache when it starts.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
VHDTOOL=$build/tools/vhdtool
SIZE=${SIZE:-1G}
RUNTIME=${RUNTIME:-20}
for t in "$VHDTOOL" qemu-storage-daemon vhdimount fio fusermount fusermount3 python3; do
	command -v "$t" >/dev/null || { echo "fuse_bench: $t is missing" >&2; exit 1; }
done

W=$(mktemp -d "${TMPDIR:-/var/tmp}/fuse_bench.XXXXXX")
QSD_PID=
cleanup() {
	set +e
	[ -n "$QSD_PID" ] && kill "$QSD_PID" 2>/dev/null && wait "$QSD_PID" 2>/dev/null
	grep -qs " $W/ours " /proc/self/mounts && "$VHDTOOL" unmount "$W/ours"
	grep -qs " $W/vhdi " /proc/self/mounts && fusermount -u "$W/vhdi"
	rm -rf "$W"
}
trap cleanup EXIT

IMG=$W/bench.vhd
echo "fuse_bench: writing a $SIZE dynamic VHD full of random data in $W" >&2
head -c "$SIZE" /dev/urandom >"$W/src.raw"
"$VHDTOOL" convert -O vhd "$W/src.raw" "$IMG" >/dev/null
rm -f "$W/src.raw"
BYTES=$("$VHDTOOL" info --output=json "$IMG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')

# mount_TARGET: mounts, sets FILE; umount_TARGET undoes it.
mount_ours() {
	mkdir -p "$W/ours"
	"$VHDTOOL" mount "$IMG" "$W/ours" >/dev/null
	FILE=$W/ours/disk
}
umount_ours() { "$VHDTOOL" unmount "$W/ours"; }
mount_ours_ro() {
	mkdir -p "$W/ours"
	"$VHDTOOL" mount -r "$IMG" "$W/ours" >/dev/null
	FILE=$W/ours/disk
}
umount_ours_ro() { umount_ours; }

mount_qsd() {
	touch "$W/qsd.raw"
	qemu-storage-daemon \
		--blockdev driver=file,node-name=file0,filename="$IMG" \
		--blockdev driver=vpc,node-name=disk0,file=file0 \
		--export type=fuse,id=exp0,node-name=disk0,mountpoint="$W/qsd.raw",writable=on \
		>"$W/qsd.log" 2>&1 &
	QSD_PID=$!
	for _ in $(seq 100); do
		grep -qs " $W/qsd.raw " /proc/self/mounts && break
		sleep 0.1
	done
	grep -qs " $W/qsd.raw " /proc/self/mounts || { cat "$W/qsd.log" >&2; exit 1; }
	FILE=$W/qsd.raw
}
umount_qsd() {
	kill "$QSD_PID"
	wait "$QSD_PID" || true
	QSD_PID=
}

mount_vhdimount() {
	mkdir -p "$W/vhdi"
	vhdimount "$IMG" "$W/vhdi" >/dev/null
	for _ in $(seq 100); do [ -e "$W/vhdi/vhdi1" ] && break; sleep 0.1; done
	FILE=$W/vhdi/vhdi1
}
umount_vhdimount() {
	fusermount -u "$W/vhdi"
	while pgrep -f "vhdimount $IMG" >/dev/null; do sleep 0.1; done
}

# seq_read: MiB/s of one dd pass.
seq_read() {
	local t0 t1
	t0=$(date +%s.%N)
	dd if="$FILE" of=/dev/null bs=1M status=none
	t1=$(date +%s.%N)
	python3 -c "print('%.0f' % ($BYTES / 1048576 / ($t1 - $t0)))"
}

# rand RW JOBS: IOPS of fio 4 KiB random RW with JOBS jobs.
rand() {
	fio --name=b --filename="$FILE" --rw="$1" --bs=4k --ioengine=psync --direct=0 \
		--numjobs="$2" --group_reporting --runtime="$RUNTIME" --time_based \
		--size="$BYTES" --output-format=json 2>/dev/null |
		python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print('%.0f' % j['${1#rand}']['iops'])"
}

declare -A R
measure() { # TARGET NAME COMMAND...
	local target=$1 name=$2
	shift 2
	cat "$IMG" >/dev/null # the host page cache holds the image for everybody
	"mount_$target"
	R[$target,$name]=$("$@")
	"umount_$target"
	echo "fuse_bench: $target $name ${R[$target,$name]}" >&2
}

for target in ours ours_ro qsd vhdimount; do
	measure "$target" seq seq_read
	measure "$target" rr1 rand randread 1
	measure "$target" rr4 rand randread 4
	if [ "$target" = ours ] || [ "$target" = qsd ]; then
		measure "$target" rw1 rand randwrite 1
		measure "$target" rw4 rand randwrite 4
	fi
done
"$VHDTOOL" check "$IMG" >/dev/null || { echo "fuse_bench: the image is not clean afterwards" >&2; exit 1; }

ratio() { python3 -c "print('%.1fx' % ($1 / $2) if $2 else '-')"; }
printf '\n%s dynamic VHD, host cache warm\n' "$SIZE"
printf '%-24s %11s %11s %11s %11s %9s %9s %9s\n' "" "ours rw" "ours -r" "qsd FUSE" "vhdimount" \
	"rw/qsd" "-r/qsd" "-r/vhdi"
row() { # LABEL KEY UNIT
	local o=${R[ours,$2]:-} r=${R[ours_ro,$2]:-} q=${R[qsd,$2]:-} v=${R[vhdimount,$2]:-}
	printf '%-24s %11s %11s %11s %11s %9s %9s %9s\n' "$1" "$o" "${r:--}" "$q" "${v:--}" \
		"$(ratio "$o" "$q")" "$([ -n "$r" ] && ratio "$r" "$q" || echo -)" \
		"$([ -n "$v" ] && ratio "$r" "$v" || echo -)"
}
row "seq read MiB/s" seq
row "4K randread IOPS, 1 job" rr1
row "4K randread IOPS, 4 jobs" rr4
row "4K randwrite IOPS, 1 job" rw1
row "4K randwrite IOPS, 4 jobs" rw4
echo "(dd bs=1M; fio psync, direct=0, ${RUNTIME} s per run; $(nproc) CPUs; $(uname -r))"
