#!/usr/bin/env bash
# nbd_crash: kill -9 of vhd-vspd in the middle of a write workload, many
# rounds, on a dynamic disk and on a differencing child (O_DIRECT and
# writeback alternating).  The client (nbd_crash_writer: two connections,
# eight writes in flight on each, FUA on some, FLUSH now and then on either
# connection) logs what was acknowledged and which FLUSHes completed.  After
# every kill: `vhdtool check` exits 0 (leaked space is allowed), and every
# sector read back by vhdtool is either the initial content or a sector some
# write put there - never garbage - and every write acknowledged before a
# completed FLUSH (or with FUA) is there unless a later write replaced it.
# NBD_CRASH_ROUNDS=<n> (default 20), SEED=<n> replays, KEEP_TMP=1 keeps files.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd_lib.sh"
nbd_setup
W=$TEST_BIN_DIR/nbd_crash_writer
[ -x "$W" ] || die "$W is not built"
ROUNDS=${NBD_CRASH_ROUNDS:-20}

"$V" create -b 256K dyn.vhd 48M >/dev/null
"$V" create -b 256K parent.vhd 48M >/dev/null
truncate -s 48M parent.model
rand_writes parent.vhd parent.model 12 1000000
"$V" create -p parent.vhd child.vhd >/dev/null
raw_of parent.vhd base.raw
cmp_files base.raw parent.model "parent content (setup)"
hp=$(sha256_of parent.vhd)

# wait_unlocked IMG: until nobody holds IMG's lock (at most 10 s).
wait_unlocked() {
	local i
	for ((i = 0; i < 1000; i++)); do
		flock -n -x "$1" true 2>/dev/null && return 0
		sleep 0.01
	done
	die "$1 is still locked 10 s after its server was killed"
}

declare -A logs=([dyn]="" [child]="")
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then img=dyn; else img=child; fi
	cache=none
	((r % 4 < 2)) || cache=writeback
	start_vspd "crash$r" --cache="$cache" -q "$img.vhd"
	log_r=$TMP/$img.$r.log
	"$W" write "$SRV_SOCK" "" "$log_r" $((r * 100000000 + 1)) $((SEED + r)) 2 60 \
		2>"$TMP/writer.$r.err" &
	wp=$!
	# let it run from a fraction of a second (allocations) to a couple
	sleep "$(python3 -c "import random; r = random.Random($SEED + $r); print(round(r.uniform(0.2, 2.0), 2))")"
	kill -9 "$SRV_PID"
	st=0
	wait "$SRV_PID" 2>/dev/null || st=$?
	# 137: our SIGKILL; anything else means it died on its own before
	[ "$st" = 137 ] || die "round $r: the server ended with status $st before the kill: $(tail -20 "$SRV_LOG")"
	wait "$wp" || die "round $r: the writer failed: $(cat "$TMP/writer.$r.err")"
	logs[$img]+=" $log_r"
	# The kernel drops a killed process's files (and so its image lock) only
	# when its io_uring is torn down, which happens asynchronously.
	wait_unlocked "$img.vhd"
	out=$("$V" check "$img.vhd" 2>&1) || die "round $r ($img, cache=$cache): check after kill -9:
$out"
	"$V" read "$img.vhd" after.raw
	base=()
	[ "$img" = dyn ] || base=(--base base.raw)
	# shellcheck disable=SC2086
	res=$("$W" verify after.raw "${base[@]}" ${logs[$img]} 2>&1) ||
		die "round $r ($img, cache=$cache): $res"
	log "round $r ($img, cache=$cache): $(grep -o '[0-9]* replies' "$TMP/writer.$r.err" || true); $res"
done
[ "$(sha256_of parent.vhd)" = "$hp" ] || die "the parent changed"

# The verifier itself must catch damage: one byte changed inside a written
# sector, and a disk where every write is gone.
python3 - after.raw <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
i = d.find(b"NBDCRASH")
assert i >= 0 and i % 512 == 0, "no written sector to damage"
d[i + 300] ^= 0x40
open("damaged.raw", "wb").write(d)
PY
if [ "$img" = dyn ]; then
	truncate -s 48M lost.raw
else
	cp base.raw lost.raw
fi
# shellcheck disable=SC2086
if "$W" verify damaged.raw "${base[@]}" ${logs[$img]} >/dev/null 2>&1; then
	die "the verifier accepted a damaged sector"
fi
# shellcheck disable=SC2086
if "$W" verify lost.raw "${base[@]}" ${logs[$img]} >/dev/null 2>&1; then
	die "the verifier accepted a disk that lost every write"
fi
log PASS
