# shellcheck shell=bash
# nbd_lib.sh - helpers of the NBD shell tests (nbd_*.sh).  Source it after
# lib.sh:
#
#   set -euo pipefail
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/nbd_lib.sh"
#   nbd_setup            # tmpdir, seed, cleanup of every server we start
#
# Environment from tests/nbd.cmake: VSPD (the vhd-vspd daemon) besides
# lib.sh's VHDTOOL, TEST_BIN_DIR, TEST_SRC_DIR.

# nbd_setup: checks the tools, makes $TMP (cd there) and arranges that every
# server started with start_vspd is killed when the script ends, whatever
# the way it ends (run_case subshells included: the pids live in a file).
nbd_setup() {
	require_vhdtool
	[ -n "${VSPD:-}" ] || die "VSPD is not set (run through ctest)"
	[ -x "$VSPD" ] || die "VSPD=$VSPD is not executable"
	require python3
	make_tmpdir
	pick_seed
	RANDOM=$((SEED % 32768))
	: >"$TMP/.server-pids"
	trap nbd_cleanup EXIT
	cd "$TMP" || exit 1
	V=$VHDTOOL
}

nbd_cleanup() {
	local pid
	if [ -f "$TMP/.server-pids" ]; then
		while read -r pid; do
			kill -9 "$pid" 2>/dev/null || true
		done <"$TMP/.server-pids"
	fi
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		log "kept $TMP"
	else
		rm -rf "$TMP"
	fi
}

# start_vspd TAG ARGS...: starts vhd-vspd in the background on the Unix
# socket $TMP/TAG.sock (unless ARGS has --tcp), its log in $TMP/TAG.log, and
# waits until it listens (the pid file appears only then).  Sets SRV_PID,
# SRV_SOCK and SRV_LOG.
start_vspd() {
	local tag=$1 i
	shift
	SRV_SOCK=$TMP/$tag.sock
	SRV_LOG=$TMP/$tag.log
	local pidfile=$TMP/$tag.pid
	local -a sock=(-s "$SRV_SOCK")
	case " $* " in *" --tcp "* | *" -t "*) sock=() ;; esac
	rm -f "$pidfile"
	"$VSPD" "${sock[@]}" --pid-file "$pidfile" "$@" 2>"$SRV_LOG" &
	SRV_PID=$!
	echo "$SRV_PID" >>"$TMP/.server-pids"
	for ((i = 0; i < 2000; i++)); do
		[ -s "$pidfile" ] && return 0
		kill -0 "$SRV_PID" 2>/dev/null || {
			cat "$SRV_LOG" >&2
			die "vhd-vspd $* exited before listening"
		}
		sleep 0.01
	done
	die "vhd-vspd $* did not listen within 20 s"
}

# stop_vspd [PID [LOG]]: SIGTERM; the server must exit 0 within 10 s.
stop_vspd() {
	local pid=${1:-$SRV_PID} logf=${2:-$SRV_LOG} i rc=0
	kill -TERM "$pid" 2>/dev/null || die "server $pid is not running"
	for ((i = 0; i < 1000; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.01
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null || true
		tail -n 20 "$logf" >&2 || true
		die "server $pid did not exit within 10 s of SIGTERM"
	fi
	wait "$pid" || rc=$?
	if [ "$rc" != 0 ]; then
		tail -n 20 "$logf" >&2 || true
		die "server $pid exited $rc after SIGTERM, expected 0"
	fi
}

# uri_of NAME [SOCK]: the NBD URI of export NAME on a Unix socket.
uri_of() {
	printf 'nbd+unix:///%s?socket=%s' "$1" "${2:-$SRV_SOCK}"
}

# raw_of IMG OUT: the virtual disk's bytes, read by vhdtool (not through NBD).
raw_of() {
	rm -f "$2"
	"$V" convert -O raw "$1" "$2" >/dev/null || die "vhdtool convert -O raw $1 failed"
}

# rand_writes IMG MODEL N [MAXLEN]: N random writes (random data at random
# byte offsets) into IMG with vhdtool write, mirrored into the raw MODEL.
rand_writes() {
	local img=$1 model=$2 n=$3 maxlen=${4:-400000} size i off len
	size=$(stat -c %s "$model")
	for ((i = 0; i < n; i++)); do
		len=$(((RANDOM * 32768 + RANDOM) % maxlen + 1))
		off=$(((RANDOM * 32768 + RANDOM) * 8 % (size - len)))
		head -c "$len" /dev/urandom >"$TMP/chunk"
		"$V" write "$img" --offset "$off" "$TMP/chunk" >/dev/null ||
			die "vhdtool write $img --offset $off failed"
		dd if="$TMP/chunk" of="$model" bs=1M oflag=seek_bytes seek="$off" conv=notrunc \
			status=none
	done
}

# runs_of_vhd IMG: allocation as "START LENGTH data|hole" lines, adjacent runs
# of one kind merged (vhdtool map --output=json, through the whole chain).
runs_of_vhd() {
	"$V" map --output=json "$1" | python3 -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    kind = "data" if e["data"] else "hole"
    if runs and runs[-1][2] == kind and runs[-1][0] + runs[-1][1] == e["start"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"], kind])
for r in runs:
    print(r[0], r[1], r[2])
'
}

# runs_of_nbd JSON: the same from the output of nbdinfo --map --json
# (base:allocation): type 0 is data, type 3 (hole,zero) a hole; any other
# type is printed as it is, so that it shows in a diff.
runs_of_nbd() {
	python3 - "$1" <<'EOF'
import json, sys
runs = []
for e in json.load(open(sys.argv[1])):
    kind = {0: "data", 3: "hole"}.get(e["type"], "type%d" % e["type"])
    if runs and runs[-1][2] == kind and runs[-1][0] + runs[-1][1] == e["offset"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["offset"], e["length"], kind])
for r in runs:
    print(r[0], r[1], r[2])
EOF
}

# write_qio_script: $TMP/qio.sh URI PLAN replays a qemu-io plan (one
# command per line) on URI in one qemu-io run; its output goes to qio.out
# and must be empty.  A script, so that captive commands can run it.
write_qio_script() {
	cat >"$TMP/qio.sh" <<'EOF'
uri=$1
args=()
while IFS= read -r line; do
	args+=(-c "$line")
done <"$2"
qemu-io -f raw "${args[@]}" "$uri" >qio.out 2>&1 || exit 1
[ ! -s qio.out ]
EOF
}
