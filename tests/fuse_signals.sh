#!/usr/bin/env bash
# fuse_signals: stopping the daemon while writes are in flight loses nothing
# that was acknowledged.
#
# Four writer processes write 64 KiB records into their own quarter of a
# fresh dynamic disk (new blocks all the time: the commit path) and log each
# record once its write() returned.  Then, mid-run:
#   term, int    SIGTERM / SIGINT to the daemon: it stops serving, finishes
#                what it was doing, closes the image and exits 0
#   kill9        SIGKILL to the daemon (a crash of the server, not of the
#                machine): the dead mount is cleaned up by vhdtool unmount
#   lazy         fusermount3 -u -z: the writers finish through their open
#                files, then the daemon closes the image by itself
#   busy         vhdtool unmount while files are open is refused (busy) and
#                changes nothing; after the writers close it unmounts
#   diff-term    SIGTERM with the writers in a differencing child
#   probing      SIGTERM while partition probes run all the time (a client
#                rewrites sector 0 and reads info.json in a loop): the probe
#                reads the mount itself, and the daemon must still exit
# Afterwards: vhdtool check exits 0 (leaked space allowed after SIGKILL) and
# every logged record reads back exactly (qemu-img's reading for the dynamic
# disks, the flattened chain for the child).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse_lib.sh"
require_fuse
require qemu-img
pick_seed
fuse_tmpdir

REC=65536
WRITERS=4
SIZE=$((64 << 20))

# start_writers MNT DIR MAXREC: background writers; their pids in WPIDS.
start_writers() {
	local mnt=$1 dir=$2 max=$3 w
	WPIDS=()
	for w in $(seq 0 $((WRITERS - 1))); do
		python3 - "$mnt/disk" "$dir/ack.$w" "$w" "$max" "$SEED" "$REC" "$SIZE" "$WRITERS" <<'EOF' &
import os, random, sys
disk, log, w, maxrec, seed, rec, size, nw = sys.argv[1:9]
w, maxrec, rec, size, nw = int(w), int(maxrec), int(rec), int(size), int(nw)
per = size // nw // rec
fd = os.open(disk, os.O_WRONLY)
ack = open(log, "w", buffering=1)
for i in range(1, min(per, maxrec + 1)):   # record 0 of a quarter is left out
    idx = w * per + i
    data = random.Random("%s-%d" % (seed, idx)).randbytes(rec)
    try:
        os.pwrite(fd, data, idx * rec)
    except OSError:
        break
    ack.write("%d\n" % idx)
EOF
		WPIDS+=($!)
	done
}

# wait_acks DIR N: until every writer has N records acknowledged.
wait_acks() {
	local i w ok
	for i in $(seq 300); do
		ok=1
		for w in $(seq 0 $((WRITERS - 1))); do
			[ "$(cat "$1/ack.$w" 2>/dev/null | wc -l)" -ge "$2" ] || ok=0
		done
		[ "$ok" = 1 ] && return 0
		sleep 0.05
	done
	die "the writers did not get $2 records each written"
}

# verify_acks RAW DIR: every acknowledged record is in RAW.
verify_acks() {
	python3 - "$1" "$2" "$SEED" "$REC" <<'EOF' || die "acknowledged records lost"
import glob, random, sys
raw, d, seed, rec = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
f = open(raw, "rb")
n = 0
for log in glob.glob(d + "/ack.*"):
    for line in open(log):
        idx = int(line)
        f.seek(idx * rec)
        if f.read(rec) != random.Random("%s-%d" % (seed, idx)).randbytes(rec):
            sys.exit("record %d (acknowledged) is not in the image" % idx)
        n += 1
print("%d acknowledged records all present" % n)
EOF
}

daemon_pid() { info_get "$1" 'd["mount"]["pid"]'; }

# wait_gone PID: the daemon exited (it is not our child: poll).
wait_gone() {
	local i
	for i in $(seq 300); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.05
	done
	die "daemon $1 did not exit"
}

stop_case() {
	local how=$1 kind=${2:-dynamic} d=$TMP/$1 img mnt pid raw base out
	mkdir -p "$d"
	mnt=$d/mnt
	img=$d/disk.vhd
	if [ "$kind" = diff ]; then
		base=$d/base.vhd
		"$VHDTOOL" create --type dynamic --size $SIZE --block-size 512K "$base" >/dev/null
		"$VHDTOOL" create --parent "$base" "$img" >/dev/null
	else
		"$VHDTOOL" create --type dynamic --size $SIZE --block-size 512K "$img" >/dev/null
	fi
	vmount "$img" "$mnt"
	pid=$(daemon_pid "$mnt")
	start_writers "$mnt" "$d" 100000
	if [ "$how" = probing ]; then
		python3 - "$mnt" <<'EOF' &
import os, sys
fd = os.open(sys.argv[1] + "/disk", os.O_WRONLY)
try:
    while True:
        os.pwrite(fd, os.urandom(512), 0)   # what every probe reads
        open(sys.argv[1] + "/info.json").read()
except OSError:
    pass
EOF
		WPIDS+=($!)
		sleep 0.3
	fi
	wait_acks "$d" 10
	case $how in
	term* | probing) kill -TERM "$pid" ;;
	int) kill -INT "$pid" ;;
	kill9) kill -KILL "$pid" ;;
	esac
	wait_gone "$pid"
	for p in "${WPIDS[@]}"; do wait "$p" || true; done
	if [ "$how" = kill9 ]; then
		grep -qs " $mnt fuse.vhdmount " /proc/self/mounts || die "the dead mount vanished by itself"
		"$VHDTOOL" unmount "$mnt" || die "vhdtool unmount of a dead mount failed"
	fi
	! grep -qs " $mnt fuse.vhdmount " /proc/self/mounts || die "still mounted after $how"
	expect_check_clean "$img"
	raw=$d/check.raw
	if [ "$kind" = diff ]; then
		"$VHDTOOL" convert -O raw "$img" "$raw" >/dev/null
	else
		qemu-img convert -f vpc -O raw "$img" "$raw"
	fi
	out=$(verify_acks "$raw" "$d") || exit 1
	log "$how: $out"
}

case_lazy() {
	local d=$TMP/lazy img mnt pid out
	mkdir -p "$d"
	mnt=$d/mnt
	img=$d/disk.vhd
	"$VHDTOOL" create --type dynamic --size $SIZE --block-size 512K "$img" >/dev/null
	vmount "$img" "$mnt"
	pid=$(daemon_pid "$mnt")
	start_writers "$mnt" "$d" 120
	wait_acks "$d" 5
	fusermount3 -u -z "$mnt" || die "fusermount3 -u -z failed"
	for p in "${WPIDS[@]}"; do wait "$p" || die "a writer failed after the lazy unmount"; done
	wait_gone "$pid"
	[ "$(cat "$d"/ack.* | wc -l)" = $((WRITERS * 120)) ] || die "writers did not finish through the lazy unmount"
	expect_check_clean "$img"
	qemu-img convert -f vpc -O raw "$img" "$d/check.raw"
	out=$(verify_acks "$d/check.raw" "$d") || exit 1
	log "lazy: $out"
}

case_busy() {
	local d=$TMP/busy img mnt out
	mkdir -p "$d"
	mnt=$d/mnt
	img=$d/disk.vhd
	"$VHDTOOL" create --type dynamic --size $SIZE --block-size 512K "$img" >/dev/null
	vmount "$img" "$mnt"
	exec 7<"$mnt/disk" # an open file makes the mount busy
	out=$("$VHDTOOL" unmount "$mnt" 2>&1) && die "unmount of a busy mount succeeded"
	grep -q busy <<<"$out" || die "no busy message: $out"
	start_writers "$mnt" "$d" 60
	for p in "${WPIDS[@]}"; do wait "$p" || die "a writer failed"; done
	exec 7<&-
	vunmount "$mnt"
	expect_check_clean "$img"
	qemu-img convert -f vpc -O raw "$img" "$d/check.raw"
	out=$(verify_acks "$d/check.raw" "$d") || exit 1
	log "busy: $out"
}

run_case term stop_case term
run_case int stop_case int
run_case kill9 stop_case kill9
run_case lazy case_lazy
run_case busy case_busy
run_case diff-term stop_case term-diff diff
run_case probing stop_case probing
finish
