#!/usr/bin/env bash
# hv_guest_crash.sh - processes killed under a writing guest.
#
# qemu_kill: the guest runs the verifying writer (2 threads, O_DIRECT) on a
#   synthetic disk; QEMU is killed with SIGKILL mid-run.  The worker sees it,
#   stops vhd-vspd (SIGTERM: drain, flush, close), records how QEMU ended;
#   the image checks clean and every sector of the written region is either
#   zero or a whole sector the guest wrote there (never garbage).
# vspd_kill: the same on an emulated (IDE over NBD) disk, but vhd-vspd is
#   killed with SIGKILL.  QEMU must report it cleanly (BLOCK_IO_ERROR events,
#   no crash), the worker restarts vhd-vspd, and the guest either sees an
#   I/O error and says so or recovers; it must never read wrong data, and it
#   powers off by itself.  The image checks clean afterwards.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hv_lib.sh"
hv_setup

qemu_kill() {
	local pid logf
	"$VHDTOOL" create --type dynamic --size 64M q.vhd >/dev/null
	hv_config q.json cq 2 \
		"vhdtest=stress vhdtest_seed=5 vhdtest_stress_len=32 vhdtest_secs=0 vhdtest_threads=2" \
		q.vhd:synthetic
	"${hv[@]}" create q.json >/dev/null
	"${hv[@]}" start --accel "$ACCEL" cq >/dev/null || { hv_dump cq; die "start failed"; }
	hv_wait_serial cq '^VHDTEST: stress: t=4s' 90
	pid=$(hv_status_field cq 'd["pids"]["qemu"]["pid"]')
	kill -9 "$pid"
	hv_wait_stopped cq 60
	logf=$(hv_status_field cq 'd["last_exit"]')
	case $logf in
	"qemu killed by signal 9"*"vhd-vspd exited with status 0") ;;
	*) hv_dump cq; die "unexpected end after kill -9 of QEMU: $logf" ;;
	esac
	expect_check_clean q.vhd
	hv_raw q.vhd q.raw
	"$HVLOAD" stress-check q.raw --offset 0 --length $((32 << 20)) ||
		die "garbage in the image after kill -9 of QEMU"
	log "qemu_kill: $(grep -c . "$STATE/cq/serial.log") console lines, image clean"
}

vspd_kill() { # BUS: emulated (QEMU reports I/O errors) or synthetic (the restarted
	# VSP resubmits what was in flight from the inflight region QEMU keeps)
	local bus=${1:-emulated} pid logf ioerr restarts
	rm -rf "$STATE/cv" v.vhd v.raw
	"$VHDTOOL" create --type dynamic --size 64M v.vhd >/dev/null
	hv_config v.json cv 1 \
		"vhdtest=stress vhdtest_seed=6 vhdtest_stress_len=16 vhdtest_secs=12 vhdtest_threads=2" \
		"v.vhd:$bus"
	"${hv[@]}" create v.json >/dev/null
	"${hv[@]}" start --accel "$ACCEL" cv >/dev/null || { hv_dump cv; die "start failed"; }
	hv_wait_serial cv '^VHDTEST: stress: t=4s' 90
	pid=$(hv_status_field cv 'd["pids"]["vspd"]["pid"]')
	kill -9 "$pid"
	hv_wait_stopped cv 150
	logf=$STATE/cv/serial.log
	grep -q '^VHDTEST-RESULT: ' "$logf" || { hv_dump cv; die "the guest reached no result"; }
	if grep -q 'DATA MISMATCH' "$logf"; then
		hv_dump cv
		die "the guest read wrong data after the VSP was killed"
	fi
	if grep -q '^VHDTEST-RESULT: FAIL' "$logf"; then
		grep -q '^VHDTEST: stress: I/O error' "$logf" ||
			{ hv_dump cv; die "the guest failed without a clean I/O error"; }
		log "vspd_kill: the guest saw: $(grep -m1 '^VHDTEST: stress: I/O error' "$logf")"
	else
		log "vspd_kill: the guest recovered: $(grep 'stress: done' "$logf")"
	fi
	ioerr=$(hv_status_field cv 'd["io_errors"]')
	restarts=$(hv_status_field cv 'd["vsp_restarts"]')
	[ "$restarts" = 1 ] || { hv_dump cv; die "vsp_restarts is $restarts, expected 1"; }
	hv_status_field cv 'd["vsp_exit"]' | grep -q 'killed by signal 9.*restarted' ||
		die "vsp_exit does not tell the kill: $(hv_status_field cv 'd.get("vsp_exit")')"
	if [ "$bus" = emulated ]; then
		[ "$ioerr" -gt 0 ] || { hv_dump cv; die "QEMU reported no I/O error (BLOCK_IO_ERROR)"; }
		log "vspd_kill: QEMU reported $ioerr I/O error(s), last: $(hv_status_field cv 'd["last_io_error"]')"
	elif grep -q 'not a head' "$logf"; then
		hv_dump cv
		die "the guest got a completion for a request it never had in flight"
	fi
	hv_expect_clean_exit cv
	expect_check_clean v.vhd
	hv_raw v.vhd v.raw
	"$HVLOAD" stress-check v.raw --offset 0 --length $((16 << 20)) ||
		die "garbage in the image after kill -9 of vhd-vspd"
}

run_case qemu_kill qemu_kill
run_case vspd_kill vspd_kill emulated
run_case vspd_kill_synthetic vspd_kill synthetic
finish
