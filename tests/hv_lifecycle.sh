#!/usr/bin/env bash
# hv_lifecycle.sh - hvctl's commands on real partitions (idle guests).
#
# create (file and options; refusals), start, status --output=json (state,
# pids alive, uptime, disks, QMP query-status), pause/resume (QEMU and the
# recorded state agree), console, list, stop graceful (ACPI: the guest powers
# off), stop forced, stop of a guest that ignores the power button (the
# timeout, then forced), a worker killed with SIGKILL (its QEMU and VSP go
# too; status reports the stale state; start works again), delete.  Every
# hvctl call is a new process: nothing survives in memory between them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/hv_lib.sh"
hv_setup

json() { # json EXPR: evaluate on the JSON document in $out
	python3 -c '
import json, sys
d = json.loads(sys.argv[1])
v = eval(sys.argv[2])
print(json.dumps(v) if isinstance(v, (dict, list)) else
      ("true" if v is True else "false" if v is False else v))' "$out" "$1"
}

# expect_fail WHAT REGEX CMD...: CMD exits 1 and its stderr matches REGEX.
expect_fail() {
	local what=$1 re=$2 rc=0 err
	shift 2
	err=$("$@" 2>&1 >/dev/null) || rc=$?
	[ "$rc" = 1 ] || die "$what: exit $rc, expected 1 ($err)"
	echo "$err" | grep -qE "$re" || die "$what: message \"$err\" does not match /$re/"
}

"$VHDTOOL" create --type dynamic --size 64M a.vhd >/dev/null
"$VHDTOOL" create --type dynamic --size 64M b.vhd >/dev/null

create_cases() {
	hv_config a.json la 1 "vhdtest=idle" a.vhd:emulated
	out=$("${hv[@]}" create a.json) || die "create a.json failed"
	echo "$out" | grep -q "Created partition la" || die "create said: $out"
	# The same by options: synthetic disk, 2 queues.
	"${hv[@]}" create --name lb --memory 256 --vcpus 2 --kernel "$GUEST/vmlinuz" \
		--initrd "$GUEST/initrd.img" --on-reboot poweroff \
		--cmdline "console=ttyS0 quiet panic=-1 vhdtest=idle vhdtest_nopower=1" \
		--disk b.vhd,bus=synthetic,queues=2 >/dev/null || die "create --name lb failed"
	out=$("${hv[@]}" status --output=json lb)
	[ "$(json 'd["state"]')" = defined ] || die "lb: state $(json 'd["state"]'), want defined"
	[ "$(json 'd["disks"][0]["num_queues"]')" = 2 ] || die "lb: num_queues not stored"
	[ "$(json 'd["disks"][0]["path"]')" = "$TMP/b.vhd" ] || die "lb: disk path not absolute"
	expect_fail "duplicate name" "already exists" "${hv[@]}" create a.json
	echo '{"name": "lc", "memroy_mb": 1}' >bad.json
	expect_fail "unknown field" 'unknown field "memroy_mb"' "${hv[@]}" create bad.json
	echo 'not a vhd' >junk.vhd
	expect_fail "not a VHD" "disks\[0\]:.*junk.vhd" "${hv[@]}" create --name lc \
		--kernel "$GUEST/vmlinuz" --disk junk.vhd
	expect_fail "unknown partition" "partition nosuch does not exist" "${hv[@]}" start nosuch
	expect_fail "unknown partition status" "does not exist" "${hv[@]}" status nosuch
	local rc=0
	"${hv[@]}" start --accel hax la >/dev/null 2>&1 || rc=$?
	[ "$rc" = 2 ] || die "--accel hax: exit $rc, expected 2"
}

running_cases() {
	local t0 pid_q pid_v pid_w
	t0=$(date +%s.%N)
	"${hv[@]}" start --accel "$ACCEL" la >/dev/null || { hv_dump la; die "start la failed"; }
	log "start returned in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s"
	expect_fail "second start" "already running" "${hv[@]}" start la
	hv_wait_serial la '^VHDTEST: idle' 90
	out=$("${hv[@]}" status --output=json la)
	[ "$(json 'd["state"]')" = running ] || die "state $(json 'd["state"]')"
	[ "$(json 'd["qmp_status"]["status"]')" = running ] || die "QMP status not running"
	for p in worker qemu vspd; do
		[ "$(json "d[\"pids\"][\"$p\"][\"alive\"]")" = true ] || die "$p not alive"
	done
	[ "$(json 'd["uptime_seconds"] > 0')" = true ] || die "no uptime"
	[ "$(json 'd["disks"][0]["bus"]')" = emulated ] || die "disk bus"
	[ -S "$(json 'd["disks"][0]["socket"]')" ] || die "the NBD socket is not there"
	[ "$(json 'd["accel"]')" = "$ACCEL" ] || die "accel"

	"${hv[@]}" pause la >/dev/null || die "pause failed"
	out=$("${hv[@]}" status --output=json la)
	[ "$(json 'd["state"]')" = paused ] || die "after pause: $(json 'd["state"]')"
	[ "$(json 'd["qmp_status"]["status"]')" = paused ] || die "QEMU is not paused"
	"${hv[@]}" resume la >/dev/null || die "resume failed"
	out=$("${hv[@]}" status --output=json la)
	[ "$(json 'd["state"]')" = running ] || die "after resume: $(json 'd["state"]')"
	[ "$(json 'd["qmp_status"]["running"]')" = true ] || die "QEMU is not running"

	"${hv[@]}" console la | grep -q '^VHDTEST: idle' || die "console does not show the guest"
	expect_fail "delete running" "stop it first" "${hv[@]}" delete la

	# Graceful: the guest's power-button watcher powers it off.
	out=$("${hv[@]}" stop --output=json la) || die "stop la failed"
	[ "$(json 'd["graceful"]')" = true ] || die "stop was not graceful: $(json 'd["how"]')"
	log "graceful stop: $(json 'd["seconds"]') s: $(json 'd["how"]')"
	grep -q 'ACPI power button' "$STATE/la/serial.log" || die "the guest saw no power button"
	out=$("${hv[@]}" status --output=json la)
	[ "$(json 'd["state"]')" = stopped ] || die "after stop: $(json 'd["state"]')"
	[ "$(json 'd["shutdown_reason"]')" = guest-shutdown ] || die "reason $(json 'd["shutdown_reason"]')"
	hv_expect_clean_exit la
	expect_check_clean a.vhd
	out=$("${hv[@]}" stop la) || die "stop of a stopped partition failed"
	echo "$out" | grep -q "was not running" || die "stop of a stopped partition said: $out"

	# Forced.
	"${hv[@]}" start --accel "$ACCEL" la >/dev/null || die "restart of la failed"
	hv_wait_serial la '^VHDTEST: idle' 90
	out=$("${hv[@]}" stop --force --output=json la) || die "stop --force failed"
	[ "$(json 'd["graceful"]')" = false ] || die "--force was graceful"
	out=$("${hv[@]}" status --output=json la)
	[ "$(json 'd["shutdown_reason"]')" = host-qmp-quit ] || die "forced: reason $(json 'd["shutdown_reason"]')"
	[ "$(json 'd["generation"]')" = 2 ] || die "generation $(json 'd["generation"]')"
	expect_check_clean a.vhd

	# A guest that ignores the power button: the timeout, then forced.
	"${hv[@]}" start --accel "$ACCEL" lb >/dev/null || { hv_dump lb; die "start lb failed"; }
	hv_wait_serial lb '^VHDTEST: idle' 90
	out=$("${hv[@]}" list --output=json)
	[ "$(json '[p["name"] + ":" + p["state"] for p in d]')" = '["la:stopped", "lb:running"]' ] ||
		die "list: $(json '[p["name"] + ":" + p["state"] for p in d]')"
	"${hv[@]}" list | grep -qE '^lb +running .*b.vhd\(synthetic\)' || die "list (human)"
	out=$("${hv[@]}" stop --timeout 3 --output=json lb) || die "stop lb failed"
	[ "$(json 'd["graceful"]')" = false ] || die "a guest ignoring ACPI stopped gracefully?"
	json 'd["how"]' | grep -q "did not power off within 3 s; forced" || die "how: $(json 'd["how"]')"
	expect_check_clean b.vhd

	# The worker killed: QEMU and vhd-vspd follow, status reports it.
	"${hv[@]}" start --accel "$ACCEL" lb >/dev/null || die "restart of lb failed"
	out=$("${hv[@]}" status --output=json lb)
	pid_w=$(json 'd["pids"]["worker"]["pid"]')
	pid_q=$(json 'd["pids"]["qemu"]["pid"]')
	pid_v=$(json 'd["pids"]["vspd"]["pid"]')
	kill -9 "$pid_w"
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid_q" 2>/dev/null || kill -0 "$pid_v" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid_q" 2>/dev/null && die "QEMU $pid_q outlived its worker"
	kill -0 "$pid_v" 2>/dev/null && die "vhd-vspd $pid_v outlived its worker"
	out=$("${hv[@]}" status --output=json lb)
	[ "$(json 'd["state"]')" = stopped ] || die "dead worker: state $(json 'd["state"]')"
	[ "$(json 'd["stale"]')" = true ] || die "dead worker: not reported stale"
	[ "$(json 'd["recorded_state"]')" = running ] || die "recorded $(json 'd["recorded_state"]')"
	json 'd["note"]' | grep -q "worker (pid $pid_w) is gone" || die "note: $(json 'd.get("note")')"
	"${hv[@]}" status lb | grep -q "^note: .*is gone" || die "human status has no note"
	# vhd-vspd got SIGTERM from the worker's death: it closed the image.
	expect_check_clean b.vhd
	"${hv[@]}" start --accel "$ACCEL" lb >/dev/null || die "start after a dead worker failed"
	out=$("${hv[@]}" status --output=json lb)
	[ "$(json 'd["state"]')" = running ] && [ "$(json 'd["stale"]')" = false ] ||
		die "after restart: $(json 'd["state"]')"
	"${hv[@]}" stop --force lb >/dev/null || die "stop lb failed"
	out=$("${hv[@]}" status --output=json lb)
	[ "$(json 'd["state"]')" = stopped ] || die "lb not stopped"

	hv_sanitizer_check || die "sanitizer report (see above)"
	"${hv[@]}" delete la >/dev/null || die "delete la failed"
	"${hv[@]}" delete lb >/dev/null || die "delete lb failed"
	[ -z "$(ls "$STATE")" ] || die "state directory not empty: $(ls "$STATE")"
	[ -f a.vhd ] && [ -f b.vhd ] || die "delete removed a disk"
	out=$("${hv[@]}" list --output=json)
	[ "$(json 'len(d)')" = 0 ] || die "list after delete: $out"
}

run_case create create_cases
run_case lifecycle running_cases
finish
