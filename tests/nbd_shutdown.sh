#!/usr/bin/env bash
# nbd_shutdown: SIGTERM (and SIGINT) in the middle of a write workload.
# Each round starts vhd-vspd on a dynamic disk, runs fio (ioengine=nbd,
# time_based, 2 jobs, iodepth 32, random writes 4-256 KiB: payloads often in
# flight) on the first 96 MiB and nbd_crash_writer (two connections, logging
# every acknowledgement) on the last 32 MiB, then signals the server: it must
# exit 0 within 10 s, remove its socket and pid file, and leave an image
# that checks clean and holds every write it acknowledged (a clean stop
# drains and flushes: no FLUSH needed).
# NBD_SHUTDOWN_ROUNDS=<n> (default 6), SEED=<n>, KEEP_TMP=1 as usual.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd_lib.sh"
require fio
nbd_setup
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio was built without the nbd engine"
W=$TEST_BIN_DIR/nbd_crash_writer
[ -x "$W" ] || die "$W is not built"
ROUNDS=${NBD_SHUTDOWN_ROUNDS:-6}
WLO=$((96 << 20))
WHI=$((128 << 20))

"$V" create -b 512K dyn.vhd 128M >/dev/null
cat >job.fio <<'EOF'
[global]
ioengine=nbd
uri=${URI}
rw=randwrite
bsrange=4k-256k
iodepth=32
size=48m
offset_increment=48m
numjobs=2
time_based=1
runtime=60
[load]
EOF

logs=()
for ((r = 1; r <= ROUNDS; r++)); do
	sig=TERM
	((r % 3)) || sig=INT
	cache=none
	((r % 2)) || cache=writeback
	start_vspd "sd$r" --cache=$cache -e dyn=dyn.vhd
	URI=$(uri_of dyn) fio job.fio >fio.$r.out 2>&1 &
	fp=$!
	"$W" write "$SRV_SOCK" dyn "$TMP/w.$r.log" $((r * 100000000 + 1)) $((SEED + r)) 2 60 \
		$WLO $WHI 2>"$TMP/w.$r.err" &
	wp=$!
	logs+=("$TMP/w.$r.log")
	sleep "$(python3 -c "import random; r = random.Random($SEED + $r); print(round(r.uniform(0.8, 2.5), 2))")"
	grep -q '^A ' "$TMP/w.$r.log" || die "round $r: the writer got no acknowledgement yet"
	t0=$(date +%s%N)
	kill -"$sig" "$SRV_PID"
	stop_rc=0
	for ((i = 0; i < 1000; i++)); do
		kill -0 "$SRV_PID" 2>/dev/null || break
		sleep 0.01
	done
	t1=$(date +%s%N)
	if kill -0 "$SRV_PID" 2>/dev/null; then
		kill -9 "$SRV_PID"
		tail -5 "$SRV_LOG" >&2
		die "round $r: the server did not exit within 10 s of SIG$sig (cache=$cache)"
	fi
	wait "$SRV_PID" || stop_rc=$?
	[ "$stop_rc" = 0 ] || die "round $r: the server exited $stop_rc after SIG$sig: $(tail -5 "$SRV_LOG")"
	wait "$fp" || true # fio loses its server: an error is expected
	wait "$wp" || die "round $r: the writer failed: $(cat "$TMP/w.$r.err")"
	[ ! -e "$SRV_SOCK" ] || die "round $r: the socket is left behind"
	[ ! -e "$TMP/sd$r.pid" ] || die "round $r: the pid file is left behind"
	grep -q 'stopping' "$SRV_LOG" || die "round $r: the server did not log its stop"
	expect_check_clean dyn.vhd
	"$V" read dyn.vhd after.raw
	res=$("$W" verify after.raw --range $WLO $WHI --acked-durable "${logs[@]}" 2>&1) ||
		die "round $r (SIG$sig, cache=$cache): acknowledged writes lost: $res"
	log "round $r: SIG$sig (cache=$cache) -> exit 0 in $(((t1 - t0) / 1000000)) ms;" \
		"$(grep -o '[0-9]* replies' "$TMP/w.$r.err" || true); $res"
done
log PASS
