# hv_lib.sh - helpers of the partition tests (hv_*.sh).  Source after lib.sh:
#
#   set -euo pipefail
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/hv_lib.sh"
#   hv_setup             # tools, tmpdir, the guest (built or cached), cleanup
#
# Environment from tests/hv.cmake: HVCTL, VSPD, HV_GUEST_DIR (where
# fixtures/guest/build-guest.sh builds and caches the guest) besides lib.sh's.
# The guest runs under TCG unless HV_ACCEL=kvm.

# hv_setup: skips (77) without qemu-system-x86_64 or when the guest kernel
# cannot be fetched; makes $TMP, $STATE, the hv array (hvctl with the state
# directory) and $GUEST (vmlinuz, initrd.img, hvload).
hv_setup() {
	require_vhdtool
	[ -n "${HVCTL:-}" ] && [ -x "$HVCTL" ] || die "HVCTL is not set (run through ctest)"
	[ -n "${VSPD:-}" ] && [ -x "$VSPD" ] || die "VSPD is not set (run through ctest)"
	require python3
	command -v qemu-system-x86_64 >/dev/null 2>&1 ||
		skip "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)"
	require e2fsck debugfs
	make_tmpdir
	trap hv_cleanup EXIT
	STATE=$TMP/st
	hv=("$HVCTL" --state-dir "$STATE" --vspd "$VSPD")
	local rc=0 dir=${HV_GUEST_DIR:-$TMP/guest}
	GUEST_BUILD_LOG=$TMP/build-guest.log
	bash "$TEST_SRC_DIR/../fixtures/guest/build-guest.sh" "$dir" >"$GUEST_BUILD_LOG" 2>&1 ||
		rc=$?
	case $rc in
	0) ;;
	3) skip "the guest kernel could not be fetched: $(tail -n 1 "$GUEST_BUILD_LOG")" ;;
	*)
		cat "$GUEST_BUILD_LOG" >&2
		die "fixtures/guest/build-guest.sh failed ($rc)"
		;;
	esac
	GUEST=$dir
	HVLOAD=$GUEST/hvload
	ACCEL=${HV_ACCEL:-tcg}
	cd "$TMP"
}

# hv_sanitizer_check: the worker and vhd-vspd run detached, so a sanitizer
# report lands in their logs, not in the test's output: fail on one.
hv_sanitizer_check() {
	local f bad=0
	for f in "$STATE"/*/worker.log "$STATE"/*/vspd.log; do
		[ -f "$f" ] || continue
		if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$f"; then
			printf '%s: FAIL: sanitizer report in %s:\n' "$TEST_NAME" "$f" >&2
			grep -A30 -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$f" >&2
			bad=1
		fi
	done
	return $bad
}

# Every partition still up is stopped (forced) and its processes checked
# gone, whatever way the script ends.
hv_cleanup() {
	local n rc=$? f
	if [ -d "${STATE:-/nonexistent}" ]; then
		for n in $(ls "$STATE" 2>/dev/null); do
			[ -f "$STATE/$n/state.json" ] || continue
			"${hv[@]}" stop --force --timeout 1 "$n" >/dev/null 2>&1 || true
		done
		hv_sanitizer_check || rc=1
	fi
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		log "kept $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}

# hv_config FILE NAME VCPUS CMDLINE DISK... : a partition config; each DISK
# is PATH:BUS[:ro][:QUEUES].
hv_config() {
	python3 - "$@" "$GUEST" <<'EOF'
import json, sys
out, name, vcpus, cmdline = sys.argv[1:5]
disks_spec, guest = sys.argv[5:-1], sys.argv[-1]
disks = []
for spec in disks_spec:
    parts = spec.split(":")
    d = {"path": parts[0], "bus": parts[1]}
    for p in parts[2:]:
        if p == "ro":
            d["read_only"] = True
        else:
            d["num_queues"] = int(p)
    disks.append(d)
cfg = {"name": name, "memory_mb": 256, "vcpus": int(vcpus), "on_reboot": "poweroff",
       "boot": {"kernel": guest + "/vmlinuz", "initrd": guest + "/initrd.img",
                "cmdline": "console=ttyS0 quiet panic=-1 " + cmdline},
       "disks": disks}
with open(out, "w") as f:
    json.dump(cfg, f, indent=2)
EOF
}

# hv_status_field NAME EXPR: a field of hvctl status --output=json, as a
# Python expression on d (e.g. 'd["pids"]["qemu"]["pid"]').
hv_status_field() {
	"${hv[@]}" status --no-qmp --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1])
print(json.dumps(v) if isinstance(v, (dict, list)) else
      ("true" if v is True else "false" if v is False else v))' "$2"
}

# hv_wait_stopped NAME SECONDS: until the partition's state is stopped.
hv_wait_stopped() {
	local i st
	for ((i = 0; i < $2 * 5; i++)); do
		st=$(hv_status_field "$1" 'd["state"]')
		[ "$st" = stopped ] && return 0
		sleep 0.2
	done
	hv_dump "$1"
	die "partition $1 did not stop within $2 s (state $st)"
}

# hv_wait_serial NAME REGEX SECONDS: until the serial log matches.
hv_wait_serial() {
	local i logf
	logf=$(hv_status_field "$1" 'd["serial_log"]')
	for ((i = 0; i < $3 * 5; i++)); do
		grep -qE "$2" "$logf" 2>/dev/null && return 0
		sleep 0.2
	done
	hv_dump "$1"
	die "partition $1: no \"$2\" on the serial console within $3 s"
}

# hv_dump NAME: logs of a partition, for a failure.
hv_dump() {
	local d=$STATE/$1 f
	for f in serial.log worker.log vspd.log qemu.log; do
		[ -s "$d/$f" ] || continue
		printf '%s: ---- %s (last 30 lines) ----\n' "$TEST_NAME" "$f" >&2
		tail -n 30 "$d/$f" >&2
	done
}

# hv_boot NAME SECONDS: start, wait until the guest powered off by itself,
# and require its PASS line; the boot time is logged.
hv_boot() {
	local t0 t1 logf
	t0=$(date +%s.%N)
	"${hv[@]}" start --accel "$ACCEL" "$1" >/dev/null || { hv_dump "$1"; die "hvctl start $1 failed"; }
	hv_wait_stopped "$1" "$2"
	t1=$(date +%s.%N)
	logf=$(hv_status_field "$1" 'd["serial_log"]')
	grep -q '^VHDTEST-RESULT: PASS' "$logf" || { hv_dump "$1"; die "partition $1: the guest did not PASS"; }
	log "$1: guest ran in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (init at uptime" \
		"$(sed -n 's/^VHDTEST: init started at uptime \([0-9.]*\).*/\1/p' "$logf") s)," \
		"$(grep '^VHDTEST-RESULT' "$logf")"
	hv_expect_clean_exit "$1"
}

# hv_expect_clean_exit NAME: QEMU and vhd-vspd both exited 0.
hv_expect_clean_exit() {
	local le
	le=$(hv_status_field "$1" 'd.get("last_exit", "")')
	case $le in
	"qemu exited with status 0"*"vhd-vspd exited with status 0") ;;
	*) hv_dump "$1"; die "partition $1 ended badly: $le" ;;
	esac
}

# hv_check_pattern_vhd IMG SEED OFF_MIB LEN_MIB: vhdtool read of the range
# equals the guest's pattern.
hv_check_pattern_vhd() {
	"$VHDTOOL" read "$1" --offset "$(($3 << 20))" --length "$(($4 << 20))" >"$TMP/pat.bin" ||
		die "vhdtool read $1 failed"
	"$HVLOAD" check-pattern "$TMP/pat.bin" --seed "$2" --offset "$(($3 << 20))" \
		--length "$(($4 << 20))" --at 0 >/dev/null ||
		die "$1: the pattern of seed $2 at $3 MiB differs (vhdtool read)"
}

# hv_check_fs RAW SEED [NFILES]: e2fsck -fn is clean and every file the
# guest's mkfs-files made reads back (debugfs dump) as its pattern.
hv_check_fs() {
	local raw=$1 seed=$2 nfiles=${3:-6} n=0 size out
	out=$(e2fsck -fn "$raw" 2>&1) || die "e2fsck -fn on $raw: $out"
	for size in 1 4096 100000 1048583 3145728 12345; do
		n=$((n + 1))
		[ $n -le "$nfiles" ] || break
		rm -f "$TMP/dump"
		debugfs -R "dump /data/file$n $TMP/dump" "$raw" >/dev/null 2>&1
		[ -f "$TMP/dump" ] || die "$raw: debugfs cannot dump /data/file$n"
		"$HVLOAD" pattern --seed $((seed * 100 + n)) --offset 0 --length "$size" |
			cmp -s - "$TMP/dump" || die "$raw: /data/file$n differs from its pattern"
	done
	debugfs -R "cat /hello.txt" "$raw" 2>/dev/null | grep -q "hello from the vhdstack guest" ||
		die "$raw: /hello.txt differs"
}

# hv_raw IMG OUT: the virtual disk as a raw file (vhdtool convert).
hv_raw() {
	rm -f "$2"
	"$VHDTOOL" convert -O raw "$1" "$2" >/dev/null || die "vhdtool convert -O raw $1 failed"
}
