#!/bin/bash
# compare_basic: vhdtool compare, checked against a reference first-difference
# computed here (python over raw files, VHDs flattened by qemu-img convert) and
# cross-checked with qemu-img compare wherever qemu can read both disks.
#
# 1  identical disks (raw, vhdtool/qemu-made dynamic and fixed, chains): exit 0,
#    "Images are identical.", JSON {"identical": true} without
#    first-difference, -q silent.
# 2  one differing byte at 0, 511, 512, around the 4 MiB compare chunk, in a
#    hole of one side, in the middle, and in the last byte; two differences
#    (the first one wins); both argument orders; in every raw/VHD mix: exit 1,
#    the exact offset in the text and in JSON (qemu-img reports it rounded
#    down to its 512-byte sector; exit statuses agree).
# 3  chains: a two-level chain vs its dd overlay and its flattening; two equal
#    chains; a byte changed inside the base (under both children) or inside
#    the middle image of one chain: the first difference is that byte.
# 4  sizes: a longer disk whose tail is a hole or explicit zeros is identical
#    (qemu agrees), a non-zero byte in the tail is the first difference,
#    --strict makes any size difference a difference at the shorter size
#    ("Image size mismatch", qemu -s agrees); non-sector raw sizes vs the
#    sector-rounded VHD made from them.
# 5  errors exit 2 with a message: missing files, a missing parent, a
#    truncated VHD, -f vhd on a raw file, a directory, bad options.
# 6  a 4 GiB sparse raw vs its dynamic VHD compares without reading the holes.
# Replay a failure with SEED=<n>; keep the files with KEEP_TMP=1.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_vhdtool
require python3 truncate dd
make_tmpdir
pick_seed

# A pyenv shim on PATH costs ~0.1 s per python start; call the interpreter
# it resolves to directly.
PYTHON3=$(command python3 -c 'import sys; print(sys.executable)')
python3() { "$PYTHON3" "$@"; }

HAVE_QEMU=1
command -v qemu-img >/dev/null 2>&1 || {
	HAVE_QEMU=0
	log "qemu-img missing: the qemu cross-checks and qemu-made images are skipped"
}

M=$((1024 * 1024)) G=$((1024 * 1024 * 1024))
V=$VHDTOOL

# gen_raw PATH SIZE SEED: sparse, random data extents, pattern runs, a hole
# around 3 MiB (so that a difference can be put in a hole), data at the end.
gen_raw() {
	python3 - "$@" <<'PYEOF'
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = random.Random(seed)
M = 1 << 20
with open(path, "wb") as f:
    f.truncate(size)
    def put(off, data):
        if off >= size:
            return
        f.seek(off)
        f.write(data[:size - off])
    put(0, r.randbytes(5000))
    for _ in range(12):
        off = r.randrange(4 * M, size)
        put(off, r.randbytes(r.randrange(1, 700 << 10)) if r.random() < 0.7
            else bytes([r.randrange(1, 256)]) * r.randrange(1, 300 << 10))
    put(4 * M - 70000, r.randbytes(140000))        # across the 4 MiB chunk
    put(size - 100000, r.randbytes(100000))
PYEOF
}

# setbyte FILE OFFSET [VALUE]: write one byte (default: the current one XOR
# 0x5a, so it always changes) into a raw file.
setbyte() {
	python3 - "$@" <<'PYEOF'
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off)
    cur = f.read(1)
    cur = cur[0] if cur else 0
    v = int(sys.argv[3], 0) if len(sys.argv) > 3 else cur ^ 0x5a
    f.seek(off)
    f.write(bytes([v]))
PYEOF
}

# ref_diff RAWA RAWB STRICT: the expected verdict from two raw files
# ("identical" or the first differing offset), with qemu-img compare's rules:
# the shorter reads as zeros beyond its end unless STRICT (then any size
# difference differs at the shorter size, unless the content differs before).
ref_diff() {
	python3 - "$@" <<'PYEOF'
import sys
a, b, strict = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
fa, fb = open(a, "rb"), open(b, "rb")
import os
sa, sb = os.fstat(fa.fileno()).st_size, os.fstat(fb.fileno()).st_size
if strict and sa != sb:
    print(min(sa, sb)); sys.exit()
off = 0
C = 8 << 20
while True:
    x, y = fa.read(C), fb.read(C)
    if not x and not y:
        print("identical"); sys.exit()
    n = max(len(x), len(y))
    x, y = x.ljust(n, b"\0"), y.ljust(n, b"\0")
    if x != y:
        i = next(i for i in range(n) if x[i] != y[i])
        print(off + i); sys.exit()
    off += n
PYEOF
}

# to_ref IMG RAWOUT: the content of IMG as a raw file, by qemu-img (raw
# files are their own reference).
to_ref() {
	case $1 in
	*.raw) cp --sparse=always "$1" "$2" ;;
	*) qemu-img convert -U -f vpc -O raw "$1" "$2" ;;
	esac
}

# fmt_of FILE: qemu's format name.
fmt_of() { case $1 in *.raw) echo raw ;; *) echo vpc ;; esac; }

# expect_compare WHAT A B WANT [--strict]: vhdtool compare A B must answer
# WANT ("identical" or an offset): the exit status, the text and the JSON.
# Both argument orders.  qemu-img compare agrees when QEMU_OK=1.
QEMU_OK=1
expect_compare() {
	local what=$1 a=$2 b=$3 want=$4 strict=${5:-} x y rc out j sa sb qrc qout qwant
	for order in ab ba; do
		if [ $order = ab ]; then x=$a y=$b; else x=$b y=$a; fi
		rc=0
		out=$("$V" compare $strict "$x" "$y" 2>&1) || rc=$?
		if [ "$want" = identical ]; then
			[ "$rc" = 0 ] || die "$what: vhdtool compare $strict $x $y exited $rc, expected 0: $out"
			[ "$out" = "Images are identical." ] || die "$what: vhdtool compare said: $out"
		else
			[ "$rc" = 1 ] || die "$what: vhdtool compare $strict $x $y exited $rc, expected 1 (at $want): $out"
			sa=0 sb=0
			if [ -n "$strict" ]; then
				sa=$("$V" compare --output=json "$x" "$x" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size-a"])')
				sb=$("$V" compare --output=json "$y" "$y" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size-a"])')
			fi
			if [ -n "$strict" ] && [ "$sa" != "$sb" ] && [ "$want" = $((sa < sb ? sa : sb)) ]; then
				[ "$out" = "Image size mismatch: $sa != $sb" ] || die "$what: vhdtool compare -s said: $out"
			else
				[ "$out" = "Content mismatch at offset $want!" ] ||
					die "$what: vhdtool compare $strict $x $y said \"$out\", expected the first difference at $want"
			fi
		fi
		# JSON
		rc=0
		"$V" compare $strict --output=json "$x" "$y" >"$TMP/cmp.json" 2>"$TMP/cmp.err" || rc=$?
		python3 - "$TMP/cmp.json" "$want" "$rc" "$what ($x $y)" <<'PYEOF' || die "JSON check failed"
import json, sys
j, want, rc, what = sys.argv[1:]
try:
    d = json.load(open(j))
except Exception as e:
    sys.exit("%s: --output=json printed no JSON (%s): %r" % (what, e, open(j).read()))
for k in ("identical", "size-a", "size-b"):
    if k not in d:
        sys.exit("%s: JSON lacks %s: %s" % (what, k, d))
if not isinstance(d["size-a"], int) or not isinstance(d["size-b"], int):
    sys.exit("%s: JSON sizes are not integers: %s" % (what, d))
if want == "identical":
    if rc != "0" or d["identical"] is not True or "first-difference" in d:
        sys.exit("%s: JSON (exit %s) %s, expected identical" % (what, rc, d))
else:
    if rc != "1" or d["identical"] is not False or d.get("first-difference") != int(want):
        sys.exit("%s: JSON (exit %s) %s, expected first-difference %s" % (what, rc, d, want))
PYEOF
		# -q: nothing printed, same status
		rc=0
		out=$("$V" compare -q $strict "$x" "$y" 2>&1) || rc=$?
		[ -z "$out" ] || die "$what: compare -q printed: $out"
		[ "$rc" = "$([ "$want" = identical ] && echo 0 || echo 1)" ] || die "$what: compare -q exited $rc"
		# qemu-img compare
		# (qemu's -s also compares allocation, "block status mismatch":
		# not a content verdict, so -s is cross-checked only on sizes.)
		if [ "$HAVE_QEMU" = 1 ] && [ "$QEMU_OK" = 1 ] && { [ -z "$strict" ] || [ "$want" != identical ]; }; then
			qrc=0
			qout=$(qemu-img compare -U ${strict:+-s} -f "$(fmt_of "$x")" -F "$(fmt_of "$y")" "$x" "$y" 2>&1) || qrc=$?
			if [ "$want" = identical ]; then
				[ "$qrc" = 0 ] || die "$what: qemu-img compare disagrees (exit $qrc): $qout"
			else
				[ "$qrc" = 1 ] || die "$what: qemu-img compare disagrees (exit $qrc, we say different at $want): $qout"
				case $qout in
				*"Strict mode: Image size mismatch"*) [ -n "$strict" ] || die "$what: qemu-img: $qout" ;;
				*"Content mismatch at offset "*)
					qwant=$((want / 512 * 512))
					[[ "$qout" == *"Content mismatch at offset $qwant!"* ]] ||
						die "$what: qemu-img says \"$qout\"; vhdtool's $want is in another sector"
					;;
				*) die "$what: qemu-img compare said: $qout" ;;
				esac
			fi
		fi
	done
}

# ---- 1 and 2: identical and single-byte differences across formats ----------
SIZE=$((21 * M + 3 * 512))
base_setup() {
	local d="$TMP/base"
	mkdir -p "$d"
	gen_raw "$d/a.raw" "$SIZE" "$SEED.a"
	"$V" convert -b 512K "$d/a.raw" "$d/a-dyn.vhd" >/dev/null
	"$V" convert -t fixed "$d/a.raw" "$d/a-fixed.vhd" >/dev/null
	if [ "$HAVE_QEMU" = 1 ]; then
		qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$d/a.raw" "$d/a-qdyn.vhd"
		qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$d/a.raw" "$d/a-qfixed.vhd"
	fi
}
run_case "setup" base_setup
B="$TMP/base"
A_FORMS=(a.raw a-dyn.vhd a-fixed.vhd)
[ "$HAVE_QEMU" = 0 ] || A_FORMS+=(a-qdyn.vhd a-qfixed.vhd)

identical_case() {
	local i j
	for ((i = 0; i < ${#A_FORMS[@]}; i++)); do
		for ((j = i; j < ${#A_FORMS[@]}; j++)); do
			expect_compare "identical ${A_FORMS[i]} ${A_FORMS[j]}" "$B/${A_FORMS[i]}" "$B/${A_FORMS[j]}" identical
		done
	done
	# -p: nothing on a non-terminal stderr
	"$V" compare -p "$B/a.raw" "$B/a-dyn.vhd" >/dev/null 2>"$TMP/p.err"
	[ ! -s "$TMP/p.err" ] || die "compare -p printed to a non-terminal: $(cat "$TMP/p.err")"
	log "ok 1: identical in every mix of ${A_FORMS[*]}"
}
run_case "1 (identical, all mixes)" identical_case

# diff_case NAME OFFSETS...: b = a with those bytes changed; the first one is
# the expected difference (checked against ref_diff too).
diff_case() {
	local name=$1 d="$TMP/diff.$1" off want got
	shift
	mkdir "$d"
	cp --sparse=always "$B/a.raw" "$d/b.raw"
	for off in "$@"; do
		setbyte "$d/b.raw" "$off"
	done
	want=$1
	for off in "$@"; do [ "$off" -lt "$want" ] && want=$off; done
	got=$(ref_diff "$B/a.raw" "$d/b.raw" 0)
	[ "$got" = "$want" ] || die "test bug: reference says $got, expected $want"
	"$V" convert -t fixed "$d/b.raw" "$d/b-fixed.vhd" >/dev/null
	"$V" convert -b 2M "$d/b.raw" "$d/b-dyn.vhd" >/dev/null
	expect_compare "diff $name raw/raw" "$B/a.raw" "$d/b.raw" "$want"
	expect_compare "diff $name dynamic/fixed" "$B/a-dyn.vhd" "$d/b-fixed.vhd" "$want"
	expect_compare "diff $name raw/dynamic" "$B/a.raw" "$d/b-dyn.vhd" "$want"
	expect_compare "diff $name fixed/raw" "$B/a-fixed.vhd" "$d/b.raw" "$want"
	if [ "$HAVE_QEMU" = 1 ]; then
		expect_compare "diff $name qemu-dynamic/vhdtool-dynamic" "$B/a-qdyn.vhd" "$d/b-dyn.vhd" "$want"
		expect_compare "diff $name qemu-fixed/raw" "$B/a-qfixed.vhd" "$d/b.raw" "$want"
	fi
	log "ok 2 $name: first difference at $want in every mix"
	rm -rf "$d"
}
hole=$((3 * M + 12345)) # gen_raw leaves [5000, 4M - 70000) a hole
C4=$((4 * M))
r=$(od -An -N4 -tu4 <<<"$SEED" | tr -d ' ')
mid=$((5 * M + r % (SIZE - 6 * M)))
run_case "2 (byte 0)" diff_case first 0
run_case "2 (byte 511)" diff_case b511 511
run_case "2 (byte 512)" diff_case b512 512
run_case "2 (4 MiB - 1)" diff_case c4m1 $((C4 - 1))
run_case "2 (4 MiB)" diff_case c4 $C4
run_case "2 (4 MiB + 1)" diff_case c4p1 $((C4 + 1))
run_case "2 (in a hole of one side)" diff_case hole "$hole"
run_case "2 (middle, $mid)" diff_case mid "$mid"
run_case "2 (the last byte)" diff_case last $((SIZE - 1))
run_case "2 (two differences)" diff_case two $((SIZE - 1)) "$mid" $((C4 + 777))

# a VHD read as raw is not the same disk
asraw_case() {
	local want rc out
	want=$(ref_diff "$B/a-dyn.vhd" "$B/a.raw" 0)
	rc=0
	out=$("$V" compare -f raw -F raw "$B/a-dyn.vhd" "$B/a.raw") || rc=$?
	[ "$rc" = 1 ] && [ "$out" = "Content mismatch at offset $want!" ] ||
		die "compare -f raw -F raw a-dyn.vhd a.raw: exit $rc, \"$out\", expected 1 at $want"
	rc=0
	out=$("$V" compare -f vhd -F raw "$B/a-dyn.vhd" "$B/a.raw") || rc=$?
	[ "$rc" = 0 ] || die "compare -f vhd -F raw: exit $rc: $out"
	log "ok 2: -f raw on a VHD compares its file bytes (first difference $want)"
}
run_case "2 (-f raw on a VHD)" asraw_case

# ---- 3: chains --------------------------------------------------------------
# Two identical chains base <- mid <- top in c1/ and c2/ (c2 starts as copies
# of c1's files before the children are made, so each child names its own
# parent), the writes recorded to find bytes no child covers.
chain_setup() {
	local d="$TMP/chain" c lvl bs
	mkdir -p "$d/c1" "$d/c2"
	cp "$B/a-dyn.vhd" "$d/c1/base.vhd"
	cp "$B/a-dyn.vhd" "$d/c2/base.vhd"
	cp --sparse=always "$B/a.raw" "$d/overlay.raw"
	: >"$d/covered"
	for lvl in mid top; do
		bs=$([ $lvl = mid ] && echo 2M || echo 64K)
		for c in c1 c2; do
			"$V" create --parent "$d/$c/$([ $lvl = mid ] && echo base || echo mid).vhd" -b "$bs" \
				"$d/$c/$lvl.vhd" >/dev/null
		done
		truncate -s "$SIZE" "$d/scratch.raw"
		gen_writes vhd "$SEED.chain.$lvl" "$SIZE" $((64 * 1024)) "$d/scratch.raw" "$d" 10
		while read -r off len file; do
			dd if="$file" of="$d/overlay.raw" bs=64K oflag=seek_bytes seek="$off" conv=notrunc status=none
			echo "$lvl $off $len" >>"$d/covered"
		done <"$d/plan"
		run_vhd_plan "$d/c1/$lvl.vhd" "$d/plan"
		run_vhd_plan "$d/c2/$lvl.vhd" "$d/plan"
		rm -f "$d"/chunk* "$d/scratch.raw"
	done
	"$V" convert "$d/c1/top.vhd" "$d/flat.vhd" >/dev/null
}
# uncovered LEVELS...: an offset (with data in a.raw, away from partial
# sectors) that no write of the given levels touched.
uncovered() {
	python3 - "$TMP/chain/covered" "$SIZE" "$SEED" "$@" <<'PYEOF'
import random, sys
cov, size, seed, levels = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
rs = []
for line in open(cov):
    lvl, off, ln = line.split()
    if lvl in levels:
        off, ln = int(off), int(ln)
        rs.append((off // 512 * 512, (off + ln + 511) // 512 * 512))
r = random.Random(seed + "".join(levels))
for _ in range(100000):
    x = r.randrange(0, size)
    if all(not (a <= x < b) for a, b in rs):
        print(x); break
else:
    sys.exit("no uncovered offset")
PYEOF
}
chain_case() {
	local d="$TMP/chain" x y
	QEMU_OK=0 # qemu's vpc driver does not read differencing disks
	expect_compare "chain vs its dd overlay" "$d/c1/top.vhd" "$d/overlay.raw" identical
	expect_compare "chain vs its flattening" "$d/c1/top.vhd" "$d/flat.vhd" identical
	expect_compare "two equal chains" "$d/c1/top.vhd" "$d/c2/top.vhd" identical
	expect_compare "mid of a chain vs the other's" "$d/c1/mid.vhd" "$d/c2/mid.vhd" identical
	# a byte in c2's base that neither child covers
	x=$(uncovered mid top)
	setbyte "$d/overlay.raw" "$x"
	dd if="$d/overlay.raw" of="$TMP/byte" bs=1 skip="$x" count=1 status=none
	"$V" write "$d/c2/base.vhd" --offset "$x" <"$TMP/byte" || die "vhdtool write into the base failed"
	expect_compare "a byte changed in the base, under two children" "$d/c1/top.vhd" "$d/c2/top.vhd" "$x"
	expect_compare "the same, chain vs overlay" "$d/c2/top.vhd" "$d/overlay.raw" identical
	expect_compare "the same, vs the unchanged chain's flattening" "$d/flat.vhd" "$d/c2/top.vhd" "$x"
	# and one in c2's middle image, before x when possible
	y=$(uncovered top)
	setbyte "$d/overlay.raw" "$y"
	dd if="$d/overlay.raw" of="$TMP/byte" bs=1 skip="$y" count=1 status=none
	"$V" write "$d/c2/mid.vhd" --offset "$y" <"$TMP/byte" || die "vhdtool write into the middle image failed"
	expect_compare "bytes changed in the base and the middle" "$d/c1/top.vhd" "$d/c2/top.vhd" $((x < y ? x : y))
	expect_compare "chain with changed parents vs overlay" "$d/c2/top.vhd" "$d/overlay.raw" identical
	log "ok 3: chains: differences at $x (base) and $y (middle) found exactly"
}
run_case "3 setup (chains)" chain_setup
[ -e "$TMP/chain/flat.vhd" ] && run_case "3 (chains)" chain_case

# ---- 4: sizes -------------------------------------------------------------
size_case() {
	local d="$TMP/size" n=$SIZE
	mkdir "$d"
	cp --sparse=always "$B/a.raw" "$d/hole.raw"
	truncate -s $((n + 3 * M)) "$d/hole.raw"            # zero tail: a hole
	cp --sparse=always "$B/a.raw" "$d/zeros.raw"
	head -c $((2 * M + 512)) /dev/zero >>"$d/zeros.raw" # zero tail: written zeros
	cp --sparse=always "$d/hole.raw" "$d/tail.raw"
	setbyte "$d/tail.raw" $((n + 2 * M + 77)) 0x01      # a non-zero byte in the tail
	"$V" convert -b 512K "$d/tail.raw" "$d/tail.vhd" >/dev/null
	"$V" convert "$d/hole.raw" "$d/hole.vhd" >/dev/null
	cp --sparse=always "$d/tail.raw" "$d/both.raw"
	setbyte "$d/both.raw" $((C4 + 3))                  # and one inside the common part

	expect_compare "zero tail (hole)" "$B/a.raw" "$d/hole.raw" identical
	expect_compare "zero tail (written zeros)" "$B/a.raw" "$d/zeros.raw" identical
	expect_compare "zero tail, VHD vs raw" "$B/a-dyn.vhd" "$d/hole.vhd" identical
	expect_compare "non-zero tail" "$B/a.raw" "$d/tail.raw" $((n + 2 * M + 77))
	expect_compare "non-zero tail, VHD" "$B/a-fixed.vhd" "$d/tail.vhd" $((n + 2 * M + 77))
	expect_compare "a difference before a non-zero tail" "$B/a.raw" "$d/both.raw" $((C4 + 3))
	expect_compare "--strict, zero tail" "$B/a.raw" "$d/hole.raw" "$n" -s
	expect_compare "--strict, written zeros" "$B/a-dyn.vhd" "$d/zeros.raw" "$n" -s
	expect_compare "--strict, same size" "$B/a.raw" "$B/a-dyn.vhd" identical -s
	QEMU_OK=0 # qemu rounds a raw file's size up to a sector: -s would disagree
	# a raw file that is not whole sectors vs the VHD made from it (rounded up)
	head -c 7000001 "$B/a.raw" >"$d/odd.raw"
	"$V" convert "$d/odd.raw" "$d/odd.vhd" >/dev/null
	expect_compare "7000001-byte raw vs its 7000064-byte VHD" "$d/odd.raw" "$d/odd.vhd" identical
	expect_compare "7000001-byte raw vs its VHD, --strict" "$d/odd.raw" "$d/odd.vhd" 7000001 -s
	log "ok 4: sizes: zero tails identical, non-zero tail and --strict different"
	rm -rf "$d"
}
run_case "4 (size mismatches)" size_case

# ---- 5: errors --------------------------------------------------------------
# expect_err2 WHAT KEYWORD ARGS...: vhdtool compare ARGS exits 2, says KEYWORD.
expect_err2() {
	local what=$1 kw=$2 rc=0
	shift 2
	"$V" compare "$@" >"$TMP/e.out" 2>"$TMP/e.err" || rc=$?
	[ "$rc" = 2 ] || die "$what: vhdtool compare $* exited $rc, expected 2: $(cat "$TMP/e.out" "$TMP/e.err")"
	grep -qiE -- "$kw" "$TMP/e.err" || die "$what: the message does not say \"$kw\": $(cat "$TMP/e.err")"
	! grep -q "identical\|mismatch" "$TMP/e.out" || die "$what: a verdict was printed: $(cat "$TMP/e.out")"
}
error_case() {
	local d="$TMP/err" sz
	mkdir "$d"
	expect_err2 "missing A" "nope.raw" "$d/nope.raw" "$B/a.raw"
	expect_err2 "missing B" "nope.vhd" "$B/a.raw" "$d/nope.vhd"
	expect_err2 "missing B, JSON" "nope.vhd" --output=json "$B/a.raw" "$d/nope.vhd"
	expect_err2 "one argument" "expected two" "$B/a.raw"
	expect_err2 "three arguments" "expected two" "$B/a.raw" "$B/a.raw" "$B/a.raw"
	expect_err2 "bad format" "qcow2" -f qcow2 "$B/a.raw" "$B/a.raw"
	expect_err2 "unknown option" "" --frobnicate "$B/a.raw" "$B/a.raw"
	expect_err2 "-f vhd on a raw file" "footer|cookie" -f vhd "$B/a.raw" "$B/a.raw"
	expect_err2 "a directory" "regular file|directory" "$d" "$B/a.raw"
	# a differencing disk whose parent is gone
	cp "$B/a-dyn.vhd" "$d/p.vhd"
	"$V" create --parent "$d/p.vhd" "$d/c.vhd" >/dev/null
	mv "$d/p.vhd" "$d/p.gone"
	expect_err2 "missing parent" "parent" "$d/c.vhd" "$B/a.raw"
	expect_err2 "missing parent (as B)" "parent" -q "$B/a.raw" "$d/c.vhd"
	# a dynamic VHD cut in the middle of its data
	cp "$B/a-dyn.vhd" "$d/t.vhd"
	sz=$(stat -c %s "$d/t.vhd")
	truncate -s $((sz / 2)) "$d/t.vhd"
	expect_err2 "truncated dynamic VHD" "outside|beyond|truncat" "$d/t.vhd" "$B/a.raw"
	log "ok 5: errors exit 2 with a message"
	rm -rf "$d"
}
run_case "5 (errors)" error_case

# ---- 6: sparse 4 GiB ---------------------------------------------------------
big_case() {
	local d="$TMP/big" t0 t1 rc
	mkdir "$d"
	python3 - "$d/big.raw" <<'PYEOF'
import os, sys
G = 1 << 30
with open(sys.argv[1], "wb") as f:
    f.truncate(4 * G)
    for off in (0, 2 * G + 4096 * 33, 4 * G - 8192):
        f.seek(off)
        f.write(os.urandom(8192))
PYEOF
	"$V" convert "$d/big.raw" "$d/big.vhd" >/dev/null
	t0=$(date +%s%N)
	"$V" compare "$d/big.raw" "$d/big.vhd" >/dev/null || die "4 GiB sparse raw vs its VHD: not identical"
	setbyte "$d/big.raw" $((3 * G + 5))
	rc=0
	"$V" compare -q "$d/big.vhd" "$d/big.raw" || rc=$?
	t1=$(date +%s%N)
	[ "$rc" = 1 ] || die "4 GiB: a byte written into a hole at 3 GiB + 5 not found (exit $rc)"
	[ "$("$V" compare --output=json "$d/big.vhd" "$d/big.raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)["first-difference"])')" = $((3 * G + 5)) ] ||
		die "4 GiB: first difference not at 3 GiB + 5"
	[ $(((t1 - t0) / 1000000)) -le 15000 ] || die "4 GiB mostly-sparse compares took $(((t1 - t0) / 1000000)) ms"
	log "ok 6: 4 GiB sparse compares in $(((t1 - t0) / 1000000)) ms"
	rm -rf "$d"
}
run_case "6 (4 GiB sparse)" big_case

finish
