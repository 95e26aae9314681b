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

# run_case NAME COMMAND...: run one case in a subshell with errexit, so that a
# failing case (die, or any failing command) is recorded and the next case
# still runs.  Exit 77 from a case records a skip.  finish reports and exits.
PASSED=() FAILED=() SKIPPED=()
run_case() {
	local name=$1 rc
	shift
	set +e
	(
		set -e
		"$@"
	)
	rc=$?
	set -e
	case $rc in
	0) PASSED+=("$name") ;;
	77) SKIPPED+=("$name") ;;
	*)
		FAILED+=("$name")
		printf '%s: FAILED case: %s\n' "$TEST_NAME" "$name" >&2
		;;
	esac
}

# finish: summary line; exit 1 if any case failed, 77 if all were skipped.
finish() {
	local f
	log "${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
	if [ ${#FAILED[@]} -gt 0 ]; then
		for f in "${FAILED[@]}"; do
			printf '%s: FAILED: %s\n' "$TEST_NAME" "$f" >&2
		done
		exit 1
	fi
	[ ${#PASSED[@]} -gt 0 ] || skip "every case was skipped"
	log PASS
	exit 0
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

# gen_writes MODE SEED VSIZE BLOCK MODEL DIR [N]: make a seeded list of about N
# (default 12) writes into a disk of VSIZE bytes whose allocation unit is
# BLOCK bytes, apply them to the raw file MODEL (which must exist; it becomes
# the expected content) and write DIR/plan:
#   MODE qemu: one qemu-io command per line (write -P / -z / -s FILE);
#   MODE vhd:  "OFFSET LENGTH FILE" per line, FILE holding exactly the bytes.
# The writes cover the first and last sectors, the last bytes and the last
# byte, block boundaries (straddled, sector-aligned or not), runs over several
# blocks (some longer than vhdtool's 1 MiB copy chunk), small writes anywhere
# with odd offsets and lengths, zeroes over earlier data and overlapping
# rewrites.  qemu mode sometimes aligns to sectors; vhd mode mostly does not.
gen_writes() {
	python3 - "$@" <<'PYEOF'
import os, random, sys
mode, seed, vsize, B, model, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
n = int(sys.argv[7]) if len(sys.argv) > 7 else 12
r = random.Random(seed)
writes = []          # (off, len, kind, arg)

def add(off, ln, aligned=False):
    if aligned:
        off -= off % 512
        ln = max(512, ln - ln % 512)
    off = max(0, min(off, vsize - 1))
    ln = max(1, min(ln, vsize - off))
    k = r.random()
    if k < 0.12:
        writes.append((off, ln, "zero", None))
    elif k < 0.5 and ln <= (6 << 20):
        writes.append((off, ln, "random", r.randbytes(ln)))
    else:
        writes.append((off, ln, "pattern", r.randrange(1, 256)))

def maybe_align():
    return mode == "qemu" and r.random() < 0.5

add(0, 512)
add(vsize - 512, 512)
add(vsize - r.randrange(1, 5000), 5000)
add(vsize - 1, 1)
nblocks = (vsize + B - 1) // B
for _ in range(max(2, n // 3)):
    if nblocks < 2:
        break
    b = r.randrange(1, nblocks) * B
    add(b - r.randrange(1, min(B, 64 << 10) + 1), r.randrange(2, 2 * min(B, 64 << 10)), aligned=maybe_align())
if nblocks >= 2:     # exactly one whole block
    add(r.randrange(0, nblocks - 1) * B, B)
if vsize > 3 * B:    # a run over several blocks, longer than 1 MiB when possible
    ln = r.randrange(B + 1, max(B + 2, min(vsize // 2, 5 << 20)))
    add(r.randrange(0, vsize - ln), ln)
for _ in range(n // 2):
    add(r.randrange(0, vsize), r.choice([1, 3, 511, 513, r.randrange(1, 300 << 10)]), aligned=maybe_align())
# Overlapping rewrites and zeroes over earlier data.
for _ in range(2):
    off, ln, _, _ = writes[r.randrange(len(writes))]
    add(off + r.randrange(0, ln), r.randrange(1, ln + 1024))
off, ln, _, _ = writes[r.randrange(len(writes))]
writes.append((off, ln, "zero", None))

with open(os.path.join(d, "plan"), "w") as p, open(model, "r+b") as m:
    for i, (off, ln, kind, arg) in enumerate(writes):
        data = bytes(ln) if kind == "zero" else arg if kind == "random" else bytes([arg]) * ln
        if mode == "qemu":
            if kind == "zero":
                p.write("write -q -z %d %d\n" % (off, ln))
            elif kind == "pattern":
                p.write("write -q -P 0x%02x %d %d\n" % (arg, off, ln))
            else:
                name = os.path.join(d, "chunk%d" % i)
                with open(name, "wb") as f:
                    f.write(data)
                p.write("write -q -s %s %d %d\n" % (name, off, ln))
        else:
            name = os.path.join(d, "chunk%d" % i)
            with open(name, "wb") as f:
                f.write(data)
            p.write("%d %d %s\n" % (off, ln, name))
        m.seek(off)
        m.write(data)
PYEOF
}

# run_qemu_io_plan IMG PLAN: replay a qemu-mode plan with one qemu-io.
run_qemu_io_plan() {
	local line out
	local -a args=()
	while IFS= read -r line; do
		args+=(-c "$line")
	done <"$2"
	out=$(qemu-io -f vpc "${args[@]}" "$1" 2>&1) || die "qemu-io on $1 failed: $out"
	[ -z "$out" ] || die "qemu-io on $1 complained: $out"
}

# run_vhd_plan IMG PLAN: replay a vhd-mode plan with vhdtool write.
run_vhd_plan() {
	local off len file
	while read -r off len file; do
		"$VHDTOOL" write "$1" --offset "$off" <"$file" ||
			die "vhdtool write $1 --offset $off <$len bytes> failed"
	done <"$2"
}
