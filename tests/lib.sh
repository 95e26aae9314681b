# lib.sh - helpers shared by the shell tests.  Source it first thing:
#
#   set -euo pipefail
#   . "$(dirname "$0")/lib.sh"
#
# Conventions: exit 0 pass, 77 skip (the reason printed), anything else fail.
# Environment from tests/CMakeLists.txt: VHDTOOL, TEST_BIN_DIR, TEST_SRC_DIR,
# VHDSTACK_SHARED.

# The name of the running test, for messages.
TEST_NAME=${TEST_NAME:-$(basename "${0%.sh}")}

log() { printf '%s: %s\n' "$TEST_NAME" "$*"; }

# die MESSAGE...: the test failed.
die() {
	printf '%s: FAIL: %s\n' "$TEST_NAME" "$*" >&2
	exit 1
}

# skip MESSAGE...: the test cannot run here.
skip() {
	printf '%s: SKIP: %s\n' "$TEST_NAME" "$*"
	exit 77
}

# require TOOL...: skip unless every TOOL is on PATH.
require() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || skip "required tool '$t' is not installed"
	done
}

# require_vhdtool: VHDTOOL must name an executable.
require_vhdtool() {
	[ -n "${VHDTOOL:-}" ] || die "VHDTOOL is not set (run through ctest)"
	[ -x "$VHDTOOL" ] || die "VHDTOOL=$VHDTOOL is not executable"
}

# make_tmpdir: sets TMP to a fresh directory removed when the script exits.
# Set KEEP_TMP=1 to keep it for a post-mortem (its path is printed).
make_tmpdir() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/${TEST_NAME}.XXXXXX")
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		trap 'log "kept $TMP"' EXIT
	else
		trap 'rm -rf "$TMP"' EXIT
	fi
	trap 'exit 130' INT TERM
}

# pick_seed: SEED from the environment or a random one; always printed so a
# failure can be replayed with SEED=<n>.
pick_seed() {
	SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
	log "seed $SEED (replay with SEED=$SEED)"
}

# json_get FILE KEY: print a top-level key of a JSON document (python3).
json_get() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
v = d[sys.argv[2]]
print(json.dumps(v) if isinstance(v, (dict, list)) else
      ("true" if v is True else "false" if v is False else v))
EOF
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# qemu_vsize IMG [qemu-img info options...]: virtual size as qemu sees it.
qemu_vsize() {
	local img=$1
	shift
	qemu-img info -U --output=json "$@" "$img" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

# vhd_vsize IMG: virtual size as vhdtool sees it.
vhd_vsize() {
	"$VHDTOOL" info --output=json "$1" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

# expect_check_clean IMG: vhdtool check must exit 0.
expect_check_clean() {
	local out rc=0
	out=$("$VHDTOOL" check "$1" 2>&1) || rc=$?
	[ "$rc" = 0 ] || die "vhdtool check $1 exited $rc, expected 0:"$'\n'"$out"
}

# cmp_files A B WHAT: byte-for-byte equality, naming the first difference.
cmp_files() {
	local out
	out=$(cmp -- "$1" "$2" 2>&1) || die "$3: $out"
}
