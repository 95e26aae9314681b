#!/bin/bash
# convert_qemu: vhdtool convert checked against qemu-img 7.x and an independent
# raw reference (the raw source itself, or a chain's overlay computed with dd).
#
# A  raw -> VHD: sparse raw files with seeded random data extents (the first
#    and last bytes, block-straddling, explicit zeros over holes), sizes that are
#    not whole blocks / MiB / sectors; -> dynamic (-b 512K, -b 2M) and fixed.
#    qemu-img compare -f raw -F vpc says identical; qemu-img, vhdtool info and
#    the JSON summary agree on the virtual size (the source rounded up to a
#    sector); the type and block size are the ones asked; check is clean; the
#    VHD converted back to raw by vhdtool == by qemu-img convert == the source
#    (zero-padded to the sector); bytes-written is exactly the source's
#    non-zero 4 KiB grains; fixed file size = virtual size + 512.
# B  VHD -> raw: images made by qemu-img (fixed/dynamic, force_size on/off):
#    vhdtool convert -O raw == qemu-img convert -O raw, byte for byte and size.
# C  fixed <-> dynamic, both makers: the content and the virtual size (as qemu
#    sees it) are preserved; round trips come back identical.
# D  differencing chains of depth 1..3 (vhdtool base and a qemu-made base),
#    written with vhdtool write: flattened to raw and to a standalone dynamic
#    VHD, equal to an overlay computed with dd; no chain file changes.
# E  --azure: fixed VHD, virtual size = source rounded up to a whole MiB, file
#    size = that + 512, the rounding reported, qemu-img info with
#    force_size_calc=current_size agrees, JSON summary fields; usage errors.
# F  sparse awareness: a 4 GiB raw holding 1 MiB of data -> small VHD (file and
#    allocated bytes), bytes-read small; fixed and raw outputs stay sparse.
# G  the source is never modified (sha256 of its content before/after every
#    convert here; sparse-aware, see sums()).
# H  an existing destination is refused without --force, replaced with it.
# I  kill -9 of a convert of a large data-heavy input midway: the destination
#    is absent (or complete and right); a leftover is never named like the
#    destination and does not block the next convert.
# J  hostile inputs (truncated VHDs, footer cookies destroyed, a missing
#    parent) -> exit 1, a clear message, no destination, no leftover, source
#    unchanged.  Also with auto-detection: a dynamic VHD whose two footer
#    copies are both destroyed must not silently convert as a raw disk.
# K  -p prints nothing when stderr is not a terminal (and does on a pty).
# L  --no-sync issues no fsync/fdatasync of the output; the default does.
# M  refusals (bad block size, missing directory or source, > 2040 GiB) exit
#    1, name the user's file (not the temporary one), leave nothing.
# Replay a failure with SEED=<n>; keep the files with KEEP_TMP=1; PARTS="A J"
# runs only those parts.  About 50 s (also under ASan); needs ~2 GiB free in TMPDIR.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_vhdtool
require qemu-img python3 cmp dd truncate
make_tmpdir
pick_seed

# The test starts python a few hundred times; a pyenv shim on PATH costs
# ~0.1 s each, so call the interpreter it resolves to directly.
PYTHON3=$(command python3 -c 'import sys; print(sys.executable)')
python3() { "$PYTHON3" "$@"; }

# defer MESSAGE: a failure that should not stop the rest of the case's checks;
# the case fails at its end (deferred_check) with every such message.
defer() {
	printf '%s: FAIL: %s\n' "$TEST_NAME" "$*" >&2
	printf '%s\n' "$*" >>"$TMP/deferred"
}
deferred_check() {
	if [ -s "$TMP/deferred" ]; then
		local m
		m=$(wc -l <"$TMP/deferred")
		rm -f "$TMP/deferred"
		die "$m failed check(s), printed above"
	fi
}

M=$((1024 * 1024)) G=$((1024 * 1024 * 1024))
V=$VHDTOOL

round_up() { echo $((($1 + $2 - 1) / $2 * $2)); }
alloc_bytes() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
jget() { json_get "$@"; }

# gen_raw PATH SIZE SEED [N]: a sparse raw file: holes, ~N random extents of
# random data (1 byte .. 1.5 MiB, odd offsets, straddling 512K/2M/4M
# boundaries), pattern runs, explicit zeros written over holes and data, the
# first bytes and the very last byte.
gen_raw() {
	python3 - "$@" <<'PYEOF'
import os, random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 14
r = random.Random(seed)
with open(path, "wb") as f:
    f.truncate(size)
    def put(off, data):
        off = max(0, min(off, size - 1))
        data = data[:size - off]
        f.seek(off)
        f.write(data)
    put(0, r.randbytes(r.randrange(1, 3000)))
    tail = r.randrange(1, 200 << 10)
    put(size - tail, r.randbytes(tail))
    for _ in range(n):
        k = r.random()
        ln = r.choice([1, 3, 511, 513, 4096, r.randrange(1, 64 << 10), r.randrange(1, 1536 << 10)])
        if k < 0.3:   # straddle a block / chunk boundary
            b = r.choice([512 << 10, 2 << 20, 4 << 20])
            if size > b:
                base = r.randrange(1, size // b + 1) * b
                off = base - r.randrange(1, min(ln, 64 << 10) + 1)
            else:
                off = r.randrange(0, size)
        else:
            off = r.randrange(0, size)
        if k < 0.75:
            put(off, r.randbytes(ln))
        elif k < 0.88:
            put(off, bytes([r.randrange(1, 256)]) * ln)
        else:
            put(off, bytes(ln))      # explicit zeros: allocated, reads as 0
    put(size - 1, bytes([r.randrange(1, 256)]))
PYEOF
}

# nonzero_grains FILE: bytes in the 4 KiB grains (file-aligned) holding a
# non-zero byte: what a sparse-aware convert of a raw file must write.
nonzero_grains() {
	python3 - "$1" <<'PYEOF'
import sys
n = 0
z = bytes(4096)
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(4 << 20)
        if not b:
            break
        for i in range(0, len(b), 4096):
            g = b[i:i + 4096]
            if g != z[:len(g)]:
                n += len(g)
print(n)
PYEOF
}

# padded_ref SRC OUT LEN: SRC copied (sparsely) and zero-extended to LEN.
padded_ref() {
	cp --sparse=always "$1" "$2"
	truncate -s "$3" "$2"
}

# qemu_same A FA B FB WHAT: qemu-img compare says identical.
qemu_same() {
	local out
	out=$(qemu-img compare -U -f "$2" -F "$4" "$1" "$3" 2>&1) || die "$5: qemu-img compare $2 $4: $out"
	case $out in
	*"Images are identical"*) ;;
	*) die "$5: qemu-img compare said: $out" ;;
	esac
}

# sums FILE...: a sha256 of each file's content, one line.  Sparse-aware (the
# size, then each data extent's offset and bytes; holes are not read) and
# hashed by python's OpenSSL sha256: coreutils' sha256sum takes 20 s on a
# 4 GiB sparse file here.
sums() {
	python3 - "$@" <<'PYEOF'
import hashlib, os, sys
out = []
for p in sys.argv[1:]:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        h.update(b"size %d;" % size)
        off = 0
        while off < size:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break                      # only a hole is left
            try:
                hole = os.lseek(fd, data, os.SEEK_HOLE)
            except OSError:
                hole = size
            h.update(b"extent %d;" % data)
            f.seek(data)
            left = hole - data
            while left:
                b = f.read(min(left, 8 << 20))
                if not b:
                    break
                h.update(b)
                left -= len(b)
            off = hole
    out.append(h.hexdigest())
print(" ".join(out))
PYEOF
}
sha256_of() { sums "$1"; }

# part X: true when part X is to run (PARTS="A D J" in the environment runs
# only those; default all).
part() { [ -z "${PARTS:-}" ] || [[ " $PARTS " == *" $1 "* ]]; }

# conv WHAT SRCLIST -- ARGS...: vhdtool convert ARGS must exit 0 and leave
# every file in SRCLIST (space separated) bit-for-bit unchanged.  stdout in
# $CONV_OUT, stderr in $CONV_ERR.
CONV_OUT="" CONV_ERR=""
conv() {
	local what=$1 srcs=$2 before rc=0
	shift 3
	# shellcheck disable=SC2086
	before=$(sums $srcs)
	CONV_OUT=$("$V" convert "$@" 2>"$TMP/conv.err") || rc=$?
	CONV_ERR=$(cat "$TMP/conv.err")
	[ "$rc" = 0 ] || die "$what: vhdtool convert $* exited $rc: $CONV_ERR"
	# shellcheck disable=SC2086
	[ "$(sums $srcs)" = "$before" ] || die "$what: vhdtool convert $* modified its source"
}

# json_checks WHAT JSONFILE SRC DST SRCSIZE OUTVSIZE: the summary's fields.
# A wrong virtual-size is deferred (the other checks still run).
json_checks() {
	local out rc=0
	out=$(python3 - "$@" "$(alloc_bytes "$4")" <<'PYEOF'
import json, sys
what, j, src, dst, ssize, vsize, alloc = sys.argv[1:]
try:
    d = json.load(open(j))
except Exception as e:
    print("%s: the summary is not JSON (%s): %r" % (what, e, open(j).read()))
    sys.exit(1)
keys = ["source", "destination", "virtual-size", "source-size", "bytes-read",
        "bytes-written", "bytes-skipped", "output-allocated"]
miss = [k for k in keys if k not in d]
if miss:
    print("%s: JSON summary lacks %s: %s" % (what, miss, d)); sys.exit(1)
errs = []
if d["source"] != src: errs.append("JSON source is %r, expected %r" % (d["source"], src))
if d["destination"] != dst: errs.append("JSON destination is %r, expected %r" % (d["destination"], dst))
if d["source-size"] != int(ssize): errs.append("JSON source-size %d, expected %s" % (d["source-size"], ssize))
r, w, s, a = d["bytes-read"], d["bytes-written"], d["bytes-skipped"], d["output-allocated"]
if w > r: errs.append("bytes-written %d > bytes-read %d" % (w, r))
if w + s != d["virtual-size"]:
    errs.append("bytes-written %d + bytes-skipped %d != JSON virtual-size %d" % (w, s, d["virtual-size"]))
if a != int(alloc): errs.append("output-allocated %d, but the file has %s bytes allocated" % (a, alloc))
if errs:
    print("%s: %s" % (what, "; ".join(errs))); sys.exit(1)
if d["virtual-size"] != int(vsize):
    print("%s: JSON virtual-size %d, but the output's virtual size is %s (source %s bytes)"
          % (what, d["virtual-size"], vsize, ssize))
    sys.exit(2)
PYEOF
) || rc=$?
	case $rc in
	0) ;;
	2) defer "$out" ;;
	*) die "$out" ;;
	esac
}

# vinfo IMG KEY...: fields of vhdtool info --output=json, one per line (the
# whole document stays in $TMP/info.json).
vinfo() {
	"$V" info --output=json "$1" >"$TMP/info.json" || die "vhdtool info $1 failed"
	shift
	python3 - "$TMP/info.json" "$@" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v = d[k]
    print(json.dumps(v) if isinstance(v, (dict, list)) else
          ("true" if v is True else "false" if v is False else v))
PYEOF
}

# to_raw_both IMG WHAT REF: vhdtool convert -O raw == qemu-img convert -O raw
# (== REF when given).
to_raw_both() {
	local img=$1 what=$2 ref=${3:-} d
	d=$(dirname "$img")
	rm -f "$d/v.raw" "$d/q.raw"
	conv "$what (-> raw)" "$img" -- -O raw "$img" "$d/v.raw"
	qemu-img convert -U -f vpc -O raw "$img" "$d/q.raw"
	[ "$(stat -c %s "$d/v.raw")" = "$(stat -c %s "$d/q.raw")" ] ||
		die "$what: vhdtool -O raw gave $(stat -c %s "$d/v.raw") bytes, qemu-img $(stat -c %s "$d/q.raw")"
	cmp_files "$d/v.raw" "$d/q.raw" "$what: vhdtool convert -O raw differs from qemu-img convert -O raw"
	[ -z "$ref" ] || cmp_files "$d/v.raw" "$ref" "$what: vhdtool convert -O raw differs from the reference"
	rm -f "$d/v.raw" "$d/q.raw"
}

FS_BLOCK=$(stat -f -c %S "$TMP")

# ---- A: raw -> VHD ------------------------------------------------------------
A_SIZES=(7000001 $((37 * M + 3 * 512)) $((65 * M + 7 * 512 + 100)) $((3 * M + 512)))
a_case() {
	local n=$1 size=$2 d src vsize grains spec type bs dst what j q
	rm -f "$TMP/deferred"
	d="$TMP/a$n"
	mkdir "$d"
	src="$d/src.raw"
	gen_raw "$src" "$size" "$SEED.a$n" 16
	vsize=$(round_up "$size" 512)
	padded_ref "$src" "$d/ref.raw" "$vsize"
	grains=$(nonzero_grains "$src")
	for spec in "dynamic 512K" "dynamic 2M" "fixed -"; do
		read -r type bs <<<"$spec"
		dst="$d/out-$type-$bs.vhd"
		what="A$n: raw $size -> $type${bs#-}"
		if [ "$type" = dynamic ]; then
			conv "$what" "$src" -- --output=json -t dynamic -b "$bs" "$src" "$dst"
		else
			conv "$what" "$src" -- --output=json -t fixed "$src" "$dst"
		fi
		[ -z "$CONV_ERR" ] || die "$what: unexpected stderr: $CONV_ERR"
		j="$d/sum.json"
		printf '%s\n' "$CONV_OUT" >"$j"
		qemu_same "$src" raw "$dst" vpc "$what"
		q=$(qemu_vsize "$dst" -f vpc)
		[ "$q" = "$vsize" ] || die "$what: qemu-img virtual size $q, expected $vsize"
		[ "$(qemu_vsize "$src" -f raw)" = "$q" ] || die "$what: qemu-img sizes of source and output differ"
		local got
		got=$(vinfo "$dst" virtual-size type | tr '\n' ' ')
		[ "$got" = "$vsize $type " ] || die "$what: vhdtool info says (virtual size, type) $got, expected $vsize $type"
		if [ "$type" = dynamic ]; then
			got=$(jget "$TMP/info.json" block-size)
			[ "$got" = $(($(echo "$bs" | sed 's/K/*1024/;s/M/*1048576/'))) ] ||
				die "$what: block size $got, expected $bs"
		else
			[ "$(stat -c %s "$dst")" = $((vsize + 512)) ] ||
				die "$what: fixed file size $(stat -c %s "$dst"), expected $((vsize + 512))"
		fi
		expect_check_clean "$dst"
		json_checks "$what" "$j" "$src" "$dst" "$size" "$vsize"
		if [ "$FS_BLOCK" = 4096 ]; then
			[ "$(jget "$j" bytes-written)" = "$grains" ] ||
				die "$what: bytes-written $(jget "$j" bytes-written), but the source has $grains bytes in non-zero 4 KiB grains"
		fi
		to_raw_both "$dst" "$what" "$d/ref.raw"
		log "ok $what: qemu agrees, $(jget "$j" bytes-written) bytes written"
	done
	rm -rf "$d"
	deferred_check
}
if part A; then
	n=0
	for s in "${A_SIZES[@]}"; do
		n=$((n + 1))
		run_case "A$n (raw $s -> dynamic 512K/2M, fixed)" a_case "$n" "$s"
	done
fi

# ---- B: qemu-made VHD -> raw, C: fixed <-> dynamic ---------------------------
# maker: qemu-img convert from a raw (subformat, force_size) or vhdtool.
BC_CASES=(
	"qemu dynamic off $((21 * M + 5 * 512))"
	"qemu dynamic on $((21 * M + 5 * 512))"
	"qemu fixed off $((9 * M + 512))"
	"qemu fixed on 7000001"
	"vhdtool dynamic - $((13 * M + 3 * 512))"
	"vhdtool fixed - $((9 * M + 3 * 512))"
)
bc_case() {
	local n=$1 maker=$2 sub=$3 force=$4 size=$5 d src img what qv other back j
	rm -f "$TMP/deferred"
	d="$TMP/bc$n"
	mkdir "$d"
	src="$d/src.raw" img="$d/img.vhd"
	gen_raw "$src" "$size" "$SEED.bc$n" 12
	what="B/C$n: $maker $sub${force#-} $size"
	if [ "$maker" = qemu ]; then
		qemu-img convert -f raw -O vpc -o "subformat=$sub,force_size=$force" "$src" "$img"
		what="$what (qemu-img convert -o subformat=$sub,force_size=$force)"
	else
		conv "$what" "$src" -- -t "$sub" "$src" "$img"
	fi
	qv=$(qemu_vsize "$img" -f vpc)
	[ "$(vinfo "$img" virtual-size)" = "$qv" ] ||
		die "$what: vhdtool sees $(vinfo "$img" virtual-size) bytes, qemu-img $qv"
	# B: -> raw, against qemu-img convert
	to_raw_both "$img" "$what"
	qemu-img convert -U -f vpc -O raw "$img" "$d/ref.raw"
	# C: to the other type and back
	other=$([ "$sub" = fixed ] && echo dynamic || echo fixed)
	conv "$what -> $other" "$img" -- --output=json -t "$other" "$img" "$d/other.vhd"
	j="$d/sum.json"
	printf '%s\n' "$CONV_OUT" >"$j"
	[ "$(vinfo "$d/other.vhd" type)" = "$other" ] || die "$what -> $other: type $(vinfo "$d/other.vhd" type)"
	[ "$(qemu_vsize "$d/other.vhd" -f vpc)" = "$qv" ] ||
		die "$what -> $other: qemu-img sees $(qemu_vsize "$d/other.vhd" -f vpc) bytes, the source had $qv"
	expect_check_clean "$d/other.vhd"
	json_checks "$what -> $other" "$j" "$img" "$d/other.vhd" "$qv" "$qv"
	qemu_same "$img" vpc "$d/other.vhd" vpc "$what -> $other"
	to_raw_both "$d/other.vhd" "$what -> $other" "$d/ref.raw"
	back=$([ "$other" = fixed ] && echo dynamic || echo fixed)
	if [ "$back" = dynamic ]; then
		conv "$what -> $other -> $back" "$d/other.vhd" -- -t dynamic -b 512K "$d/other.vhd" "$d/back.vhd"
	else
		conv "$what -> $other -> $back" "$d/other.vhd" -- -t fixed "$d/other.vhd" "$d/back.vhd"
	fi
	[ "$(vinfo "$d/back.vhd" type)" = "$back" ] || die "$what: round trip type $(vinfo "$d/back.vhd" type)"
	[ "$(qemu_vsize "$d/back.vhd" -f vpc)" = "$qv" ] || die "$what: round trip changed the virtual size"
	expect_check_clean "$d/back.vhd"
	to_raw_both "$d/back.vhd" "$what -> $other -> $back" "$d/ref.raw"
	log "ok $what: -> raw == qemu-img, -> $other -> $back preserved"
	rm -rf "$d"
	deferred_check
}
if part B; then
	n=0
	for c in "${BC_CASES[@]}"; do
		n=$((n + 1))
		read -r maker sub force size <<<"$c"
		run_case "B/C$n ($maker $sub force_size=$force $size)" bc_case "$n" "$maker" "$sub" "$force" "$size"
	done
fi

# ---- D: differencing chains flattened ----------------------------------------
# base maker, base size, block sizes of the children (one per level).
D_CASES=(
	"vhdtool $((24 * M + 3 * 512)) 2M 512K - 64K"
	"qemu $((11 * M + 512)) 2M 2M 512K"
)
d_case() {
	local n=$1 maker=$2 size=$3 bbs=$4 d base vsize parent child level cbs unit off len file what all
	rm -f "$TMP/deferred"
	shift 4
	d="$TMP/d$n"
	mkdir "$d"
	base="$d/base.vhd"
	gen_raw "$d/base-src.raw" "$size" "$SEED.d$n" 10
	if [ "$maker" = qemu ]; then
		qemu-img convert -f raw -O vpc -o subformat=dynamic "$d/base-src.raw" "$base"
	else
		conv "D$n base" "$d/base-src.raw" -- -b "$bbs" "$d/base-src.raw" "$base"
	fi
	vsize=$(vinfo "$base" virtual-size)
	qemu-img convert -U -f vpc -O raw "$base" "$d/overlay.raw"
	[ "$(stat -c %s "$d/overlay.raw")" = "$vsize" ] || die "D$n: qemu and vhdtool disagree on the base size"
	parent=$base all=$base level=0
	for cbs in "$@"; do
		level=$((level + 1))
		child="$d/child$level.vhd"
		what="D$n: $maker base + $level level(s)"
		if [ "$cbs" = - ]; then
			"$V" create --parent "$parent" "$child" >/dev/null || die "$what: create child failed"
			unit=$(vinfo "$parent" block-size)
		else
			"$V" create --parent "$parent" -b "$cbs" "$child" >/dev/null || die "$what: create child failed"
			unit=$(vinfo "$child" block-size)
		fi
		# The expected content: the previous overlay plus this level's
		# writes, applied with dd.
		truncate -s "$vsize" "$d/scratch.raw"
		gen_writes vhd "$SEED.d$n.$level" "$vsize" "$unit" "$d/scratch.raw" "$d" 12
		while read -r off len file; do
			dd if="$file" of="$d/overlay.raw" bs=64K oflag=seek_bytes seek="$off" \
				conv=notrunc status=none
		done <"$d/plan"
		run_vhd_plan "$child" "$d/plan"
		rm -f "$d"/chunk* "$d/scratch.raw"
		all="$all $child"
		parent=$child

		conv "$what -> raw" "$all" -- -O raw "$child" "$d/flat.raw"
		[ "$(stat -c %s "$d/flat.raw")" = "$vsize" ] || die "$what: flattened raw has $(stat -c %s "$d/flat.raw") bytes, expected $vsize"
		cmp_files "$d/flat.raw" "$d/overlay.raw" "$what: flattened to raw differs from the dd overlay"
		conv "$what -> dynamic" "$all" -- --output=json -O vhd "$child" "$d/flat.vhd"
		printf '%s\n' "$CONV_OUT" >"$d/sum.json"
		[ "$(vinfo "$d/flat.vhd" type)" = dynamic ] || die "$what: flattened VHD is $(vinfo "$d/flat.vhd" type)"
		[ "$(jget "$TMP/info.json" chain | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] ||
			die "$what: the flattened VHD still has a parent"
		[ "$(qemu_vsize "$d/flat.vhd" -f vpc)" = "$vsize" ] || die "$what: qemu sees another size for the flattened VHD"
		qemu_same "$d/flat.vhd" vpc "$d/overlay.raw" raw "$what -> dynamic"
		expect_check_clean "$d/flat.vhd"
		json_checks "$what -> dynamic" "$d/sum.json" "$child" "$d/flat.vhd" "$vsize" "$vsize"
		# the flattened VHD stands alone: move the chain away
		mkdir "$d/away"
		mv "$d/flat.vhd" "$d/away/"
		"$V" convert -O raw "$d/away/flat.vhd" "$d/away/flat.raw" >/dev/null 2>&1 ||
			die "$what: the flattened VHD cannot be read on its own"
		cmp_files "$d/away/flat.raw" "$d/overlay.raw" "$what: flattened VHD read alone"
		conv "$what -> fixed" "$all" -- -t fixed "$child" "$d/flat-fixed.vhd"
		qemu_same "$d/flat-fixed.vhd" vpc "$d/overlay.raw" raw "$what -> fixed"
		rm -rf "$d/away" "$d/flat.raw" "$d/flat-fixed.vhd"
		log "ok $what: flattened to raw, dynamic and fixed == dd overlay"
	done
	rm -rf "$d"
	deferred_check
}
if part D; then
	n=0
	for c in "${D_CASES[@]}"; do
		n=$((n + 1))
		# shellcheck disable=SC2086
		run_case "D$n (chain: $c)" d_case "$n" $c
	done
fi

# ---- E: --azure ---------------------------------------------------------------
E_SIZES=($((5 * M + 1000)) $((5 * M + 512)) $((6 * M)) 7000001)
e_case() {
	local n=$1 size=$2 d src dst want what q
	rm -f "$TMP/deferred"
	d="$TMP/e$n"
	mkdir "$d"
	src="$d/src.raw"
	gen_raw "$src" "$size" "$SEED.e$n" 8
	if [ "$n" = 4 ]; then # a dynamic VHD source (7000064 bytes, not a whole MiB)
		conv "E$n source" "$src" -- "$src" "$d/src.vhd"
		padded_ref "$src" "$d/src-padded.raw" "$(round_up "$size" 512)"
		src="$d/src.vhd"
		size=$(round_up "$size" 512)
	fi
	want=$(round_up "$size" $M)
	dst="$d/azure.vhd"
	what="E$n: --azure $(basename "$src") ($size bytes)"
	conv "$what" "$src" -- --azure "$src" "$dst"
	if [ "$want" != "$size" ]; then
		case $CONV_OUT in
		*"rounded up from $size to $want"*) ;;
		*) die "$what: the rounding to $want is not reported: $CONV_OUT" ;;
		esac
	else
		case $CONV_OUT in
		*rounded*) die "$what: a whole-MiB source reported as rounded: $CONV_OUT" ;;
		esac
	fi
	q=$(vinfo "$dst" type virtual-size current-size original-size footer-checksum-ok | tr '\n' ' ')
	[ "$q" = "fixed $want $want $want true " ] ||
		die "$what: vhdtool info (type, virtual, current, original size, footer checksum ok) = $q, expected fixed $want $want $want true"
	[ "$(stat -c %s "$dst")" = $((want + 512)) ] || die "$what: file size $(stat -c %s "$dst"), expected $((want + 512))"
	q=$(qemu-img info -U --output=json --image-opts "driver=vpc,force_size_calc=current_size,file.filename=$dst" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
	[ "$q" = "$want" ] || die "$what: qemu-img (force_size_calc=current_size) says $q, expected $want"
	[ "$(qemu_vsize "$dst" -f vpc)" = "$want" ] || die "$what: qemu-img (default) says $(qemu_vsize "$dst" -f vpc)"
	expect_check_clean "$dst"
	if [ "$n" = 4 ]; then
		qemu_same "$src" vpc "$dst" vpc "$what"
		padded_ref "$d/src-padded.raw" "$d/ref.raw" "$want"
	else
		qemu_same "$src" raw "$dst" vpc "$what"
		padded_ref "$src" "$d/ref.raw" "$want"
	fi
	to_raw_both "$dst" "$what" "$d/ref.raw"
	# JSON summary
	conv "$what --output=json" "$src" -- --azure --output=json "$src" "$d/azure2.vhd"
	printf '%s\n' "$CONV_OUT" >"$d/sum.json"
	python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$d/sum.json" ||
		die "$what: --output=json printed something else than JSON: $CONV_OUT"
	json_checks "$what --output=json" "$d/sum.json" "$src" "$d/azure2.vhd" "$size" "$want"
	qemu_same "$dst" vpc "$d/azure2.vhd" vpc "$what: two --azure runs"
	log "ok $what: fixed, $want bytes, file $((want + 512)), qemu agrees"
	rm -rf "$d"
	deferred_check
}
if part E; then
	n=0
	for s in "${E_SIZES[@]}"; do
		n=$((n + 1))
		run_case "E$n (--azure, $s bytes)" e_case "$n" "$s"
	done
fi
e_usage() {
	local d="$TMP/eu" rc
	mkdir "$d"
	truncate -s $((3 * M + 5)) "$d/src.raw"
	rc=0
	"$V" convert --azure -t dynamic "$d/src.raw" "$d/x.vhd" >/dev/null 2>"$d/err" || rc=$?
	[ "$rc" = 2 ] || die "--azure -t dynamic exited $rc, expected 2 (usage)"
	grep -qi fixed "$d/err" || die "--azure -t dynamic: the message does not say why: $(cat "$d/err")"
	rc=0
	"$V" convert --azure -O raw "$d/src.raw" "$d/x.raw" >/dev/null 2>"$d/err" || rc=$?
	[ "$rc" = 2 ] || die "--azure -O raw exited $rc, expected 2 (usage)"
	[ ! -e "$d/x.vhd" ] && [ ! -e "$d/x.raw" ] || die "a refused --azure left an output"
	conv "--azure -t fixed" "$d/src.raw" -- --azure -t fixed "$d/src.raw" "$d/y.vhd"
	[ "$(stat -c %s "$d/y.vhd")" = $((4 * M + 512)) ] || die "--azure -t fixed: file size $(stat -c %s "$d/y.vhd")"
	log "ok E-usage: --azure with -t dynamic / -O raw refused, -t fixed accepted"
}
if part E; then
	run_case "E-usage (--azure option conflicts)" e_usage
fi

# ---- F: sparse awareness -----------------------------------------------------
f_case() {
	local d="$TMP/f" src t0 t1 r a
	mkdir "$d"
	src="$d/big.raw"
	# 4 GiB, 1 MiB of data in four 256 KiB extents (start, two middles, end)
	python3 - "$src" <<'PYEOF'
import os, sys
G = 1 << 30
with open(sys.argv[1], "wb") as f:
    f.truncate(4 * G)
    for off in (0, 1 * G + 123 * 4096, 3 * G - 4096 * 7, 4 * G - (256 << 10)):
        f.seek(off)
        f.write(os.urandom(256 << 10))
PYEOF
	t0=$(date +%s%N)
	conv "F: 4 GiB raw (1 MiB data) -> dynamic" "$src" -- --output=json "$src" "$d/out.vhd"
	t1=$(date +%s%N)
	t1=$(((t1 - t0) / 1000000)) # ms, including the source hashing (1 MiB)
	printf '%s\n' "$CONV_OUT" >"$d/sum.json"
	r=$(jget "$d/sum.json" bytes-read)
	[ "$r" -le $((2 * M)) ] || die "F: bytes-read $r for a source holding 1 MiB of data"
	[ "$(jget "$d/sum.json" bytes-written)" = $M ] || die "F: bytes-written $(jget "$d/sum.json" bytes-written), expected 1 MiB"
	[ "$(stat -c %s "$d/out.vhd")" -le $((16 * M)) ] || die "F: dynamic VHD file is $(stat -c %s "$d/out.vhd") bytes"
	a=$(alloc_bytes "$d/out.vhd")
	[ "$a" -le $((16 * M)) ] || die "F: dynamic VHD allocates $a bytes"
	[ "$t1" -le 20000 ] || die "F: converting 1 MiB of data took $t1 ms"
	qemu_same "$src" raw "$d/out.vhd" vpc "F: 4 GiB -> dynamic"
	[ "$(qemu_vsize "$d/out.vhd" -f vpc)" = $((4 * G)) ] || die "F: qemu sees $(qemu_vsize "$d/out.vhd" -f vpc) bytes"

	conv "F: -> fixed" "$src" -- --output=json -t fixed "$src" "$d/fixed.vhd"
	[ "$(stat -c %s "$d/fixed.vhd")" = $((4 * G + 512)) ] || die "F: fixed file size $(stat -c %s "$d/fixed.vhd")"
	a=$(alloc_bytes "$d/fixed.vhd")
	[ "$a" -le $((16 * M)) ] || die "F: sparse fixed VHD allocates $a bytes"
	printf '%s\n' "$CONV_OUT" >"$d/sum.json"
	[ "$(jget "$d/sum.json" bytes-read)" -le $((2 * M)) ] || die "F: -> fixed read $(jget "$d/sum.json" bytes-read) bytes"

	conv "F: dynamic -> raw" "$d/out.vhd" -- --output=json -O raw "$d/out.vhd" "$d/back.raw"
	printf '%s\n' "$CONV_OUT" >"$d/sum.json"
	[ "$(stat -c %s "$d/back.raw")" = $((4 * G)) ] || die "F: raw output size $(stat -c %s "$d/back.raw")"
	a=$(alloc_bytes "$d/back.raw")
	[ "$a" -le $((16 * M)) ] || die "F: raw output allocates $a bytes"
	[ "$(jget "$d/sum.json" bytes-read)" -le $((16 * M)) ] || die "F: dynamic -> raw read $(jget "$d/sum.json" bytes-read) bytes"
	qemu_same "$d/back.raw" raw "$src" raw "F: 4 GiB round trip"
	[ "$(sums "$d/back.raw")" = "$(sums "$src")" ] || die "F: the round trip's data extents differ from the source's"
	conv "F: fixed -> dynamic" "$d/fixed.vhd" -- --output=json "$d/fixed.vhd" "$d/dyn2.vhd"
	printf '%s\n' "$CONV_OUT" >"$d/sum.json"
	# Not promised by the help (it names BAT/bitmaps and raw holes), so only
	# reported: a sparse fixed VHD is read in full.
	[ "$(jget "$d/sum.json" bytes-read)" -le $((16 * M)) ] ||
		log "NOTE F: a sparse fixed VHD (4 GiB, 1 MiB data) -> dynamic read $(jget "$d/sum.json" bytes-read) bytes (holes not skipped)"
	[ "$(stat -c %s "$d/dyn2.vhd")" -le $((16 * M)) ] || die "F: fixed -> dynamic file is $(stat -c %s "$d/dyn2.vhd") bytes"
	log "ok F: 4 GiB / 1 MiB data: read $r bytes, VHD $(stat -c %s "$d/out.vhd") bytes, $t1 ms"
	rm -rf "$d"
}
if part F; then
	run_case "F (sparse awareness, 4 GiB with 1 MiB of data)" f_case
fi

# ---- H: existing destination -----------------------------------------------
h_case() {
	local d="$TMP/h" rc before
	mkdir "$d"
	gen_raw "$d/src.raw" $((5 * M + 512)) "$SEED.h" 6
	for dst in "$d/dst.vhd" "$d/dst.raw"; do
		printf 'precious, not an image\n' >"$dst"
		before=$(sha256_of "$dst")
		rc=0
		"$V" convert -O "${dst##*.}" "$d/src.raw" "$dst" >"$TMP/h.out" 2>"$TMP/h.err" || rc=$?
		[ "$rc" = 1 ] || die "H: convert onto an existing $dst exited $rc, expected 1"
		grep -q "already exists" "$TMP/h.err" || die "H: message does not say the destination exists: $(cat "$TMP/h.err")"
		grep -q -- "--force" "$TMP/h.err" || die "H: message does not mention --force: $(cat "$TMP/h.err")"
		[ "$(sha256_of "$dst")" = "$before" ] || die "H: a refused convert modified $dst"
		ls "$d" | grep -q part && die "H: a refused convert left $(ls "$d" | grep part)"
		conv "H: --force onto $dst" "$d/src.raw" -- --force -O "${dst##*.}" "$d/src.raw" "$dst"
		if [ "${dst##*.}" = vhd ]; then
			qemu_same "$d/src.raw" raw "$dst" vpc "H: --force replaced"
		else
			cmp_files "$dst" "$d/src.raw" "H: --force replaced (raw)"
		fi
		# and again over the image just made
		conv "H: --force over an image" "$d/src.raw" -- --force -t fixed -O "${dst##*.}" "$d/src.raw" "$dst"
	done
	[ "$(ls "$d" | wc -l)" = 3 ] || die "H: leftover files: $(ls "$d")"
	log "ok H: existing destination refused without --force, replaced with it"
	rm -rf "$d"
}
if part H; then
	run_case "H (existing destination, --force)" h_case
fi

# ---- I: kill -9 midway -----------------------------------------------------
# A 1 GiB raw with ~700 MiB of non-zero data in 1..8 MiB extents: long enough
# to be caught midway (a few seconds), sparse between the extents.
i_gen() {
	python3 - "$1" "$SEED" <<'PYEOF'
import os, random, sys
r = random.Random(sys.argv[2])
M = 1 << 20
buf = os.urandom(8 * M)
with open(sys.argv[1], "wb") as f:
    f.truncate(1 << 30)
    off = 0
    while off < (1 << 30):
        ln = min(r.randrange(1, 9) * M, (1 << 30) - off)
        if r.random() < 0.7:
            f.seek(off)
            f.write(buf[:ln])
        off += ln
PYEOF
}
i_case() {
	local d="$TMP/i" src mode delay args dst pid part before left sz f
	mkdir "$d"
	src="$d/src.raw"
	i_gen "$src"
	before=$(sha256_of "$src")
	for mode in "vhd 0.05" "vhd 0.2" "raw 0.1" "fixed 0.3" "vhd 1.5"; do
		read -r mode delay <<<"$mode"
		case $mode in
		vhd) dst="$d/dst.vhd" args=(-O vhd) ;;
		fixed) dst="$d/dst-fixed.vhd" args=(-t fixed) ;;
		raw) dst="$d/dst.img" args=(-O raw) ;;
		esac
		"$V" convert "${args[@]}" "$src" "$dst" >/dev/null 2>&1 &
		pid=$!
		# wait until the output is being written, then a little more
		for _ in $(seq 1 200); do
			part=$(ls "$d" | grep -F "$(basename "$dst")" | head -1 || true)
			[ -n "$part" ] && break
			sleep 0.02
		done
		sleep "$delay"
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		if [ -e "$dst" ]; then
			# finished before the kill: it must then be complete and right
			log "I ($mode, ${delay}s): the convert finished before kill -9; checking it"
			if [ "$mode" = raw ]; then
				cmp_files "$dst" "$src" "I: completed raw output"
			else
				qemu_same "$src" raw "$dst" vpc "I: completed $mode output"
			fi
		else
			left=$(ls "$d" | grep -vxF src.raw | grep -v '^dst' || true)
			[ -z "$left" ] || die "I: unexpected files after kill -9: $left"
			for f in $(ls "$d" | grep -vxF src.raw); do
				case $f in
				*.vhd | *.img | *.raw | "$(basename "$dst")") die "I ($mode): leftover '$f' is named like an image" ;;
				esac
				sz=$(alloc_bytes "$d/$f")
				log "I ($mode, killed after ${delay}s): leftover $f ($sz bytes allocated) - not named like the destination"
			done
		fi
		[ "$(sha256_of "$src")" = "$before" ] || die "I: the source changed"
		# the leftover does not stand in the way of the next convert (checked
		# once: each such convert writes the whole 700 MiB again)
		if [ "$mode $delay" = "vhd 0.2" ] && [ ! -e "$dst" ]; then
			stale=$(ls "$d" | grep -F "$(basename "$dst").part-" || true)
			[ -n "$stale" ] || die "I: expected a leftover part file after kill -9"
			conv "I: convert after a killed one" "$src" -- --no-sync "${args[@]}" "$src" "$dst"
			qemu_same "$src" raw "$dst" vpc "I: convert after a killed one"
			# the killed convert's part file is gone: nobody held its lock
			for f in $stale; do
				[ ! -e "$d/$f" ] || die "I: the next convert left the stale $f in place"
			done
			# a part file some live convert holds (a POSIX lock conflicts
			# with the OFD lock probe) is left alone
			: >"$d/$(basename "$dst").part-live01"
			python3 -c '
import fcntl, os, subprocess, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL)' \
				"$d/$(basename "$dst").part-live01" "$V" convert --force --no-sync \
				"${args[@]}" "$src" "$dst" || die "I: convert beside a live part file failed"
			[ -e "$d/$(basename "$dst").part-live01" ] || die "I: a live part file was removed"
			rm -f "$d/$(basename "$dst").part-live01"
		fi
		rm -f "$d"/dst*
	done
	log "ok I: kill -9 never left a destination"
	rm -rf "$d"
}
if part I; then
	run_case "I (kill -9 during convert)" i_case
fi

# ---- J: hostile inputs -----------------------------------------------------
# flip FILE OFFSET: invert one byte (negative OFFSET: from the end).
flip() {
	python3 - "$@" <<'PYEOF'
import sys
with open(sys.argv[1], "r+b") as f:
    o = int(sys.argv[2])
    if o < 0:
        f.seek(0, 2)
        o += f.tell()
    f.seek(o)
    b = f.read(1)
    f.seek(o)
    f.write(bytes([b[0] ^ 0xff]))
PYEOF
}
J_DIR="$TMP/j"
j_setup() {
	mkdir -p "$J_DIR"
	local d=$J_DIR sz
	gen_raw "$d/src.raw" $((20 * M)) "$SEED.j" 12
	"$V" convert -b 512K "$d/src.raw" "$d/dyn.vhd" >/dev/null
	"$V" convert -t fixed "$d/src.raw" "$d/fixed.vhd" >/dev/null
	sz=$(stat -c %s "$d/dyn.vhd")
	# dynamic truncated in the middle of its data (the head copy survives)
	cp "$d/dyn.vhd" "$d/trunc-mid.vhd"
	truncate -s $((sz / 2 + 1234)) "$d/trunc-mid.vhd"
	# dynamic missing its tail footer (and the end of its last block)
	cp "$d/dyn.vhd" "$d/trunc-footer.vhd"
	truncate -s $((sz - 512)) "$d/trunc-footer.vhd"
	# fixed truncated (no footer left at all)
	cp "$d/fixed.vhd" "$d/trunc-fixed.vhd"
	truncate -s $((7 * M + 100)) "$d/trunc-fixed.vhd"
	# dynamic with both footer cookies destroyed (no good head copy)
	cp "$d/dyn.vhd" "$d/nocookie.vhd"
	flip "$d/nocookie.vhd" -512
	flip "$d/nocookie.vhd" 0
	# a differencing disk whose parent is gone
	mkdir "$d/orphan"
	cp "$d/dyn.vhd" "$d/orphan/parent.vhd"
	"$V" create --parent "$d/orphan/parent.vhd" "$d/orphan/child.vhd" >/dev/null
	printf 'child data' | "$V" write "$d/orphan/child.vhd" --offset 5000
	mv "$d/orphan/parent.vhd" "$d/orphan/parent.vhd.moved"
}
# j_case IMAGE FORMAT(auto|vhd) KEYWORD
j_case() {
	local img="$J_DIR/$1" fmt=$2 kw=$3 before out rc dst
	before=$(sha256_of "$img")
	for out in raw vhd; do
		dst="$J_DIR/out-$(basename "$img").$out"
		rc=0
		"$V" convert -f "$fmt" -O "$out" "$img" "$dst" >"$J_DIR/stdout" 2>"$J_DIR/stderr" || rc=$?
		[ "$rc" = 1 ] || die "J: vhdtool convert -f $fmt -O $out $1 exited $rc, expected 1 (stdout: $(cat "$J_DIR/stdout"); stderr: $(cat "$J_DIR/stderr"))"
		grep -q "convert: " "$J_DIR/stderr" || die "J: $1 -> $out: no error message: $(cat "$J_DIR/stderr")"
		grep -qF "$(basename "$img")" "$J_DIR/stderr" || die "J: $1 -> $out: the message does not name the file: $(cat "$J_DIR/stderr")"
		grep -qiE "$kw" "$J_DIR/stderr" || die "J: $1 -> $out: the message does not say what is wrong ($kw): $(cat "$J_DIR/stderr")"
		[ ! -e "$dst" ] || die "J: $1 -> $out: a failed convert left $dst"
		! ls "$J_DIR" | grep -q '\.part' || die "J: $1 -> $out: a failed convert left $(ls "$J_DIR" | grep '\.part')"
		[ "$(sha256_of "$img")" = "$before" ] || die "J: convert modified $1"
	done
	log "ok J: $1 (-f $fmt): exit 1, $(tail -1 "$J_DIR/stderr" | cut -c1-150)"
}
part J && run_case "J setup" j_setup
if part J && [ -e "$J_DIR/orphan" ]; then
	run_case "J1 (dynamic truncated mid-data, auto)" j_case trunc-mid.vhd auto "outside|beyond|truncat|end of"
	run_case "J2 (dynamic truncated mid-data, -f vhd)" j_case trunc-mid.vhd vhd "outside|beyond|truncat|end of"
	run_case "J3 (dynamic without its tail footer)" j_case trunc-footer.vhd auto "outside|beyond|truncat|end of"
	run_case "J4 (fixed truncated, -f vhd)" j_case trunc-fixed.vhd vhd "footer|cookie"
	run_case "J5 (dynamic, both footer cookies flipped, -f vhd)" j_case nocookie.vhd vhd "footer|cookie"
	# Auto-detection sees no footer and would take the file as a raw disk;
	# the damaged VHD (its dynamic header "cxsparse" is intact at 512) must
	# not be silently converted as raw.
	run_case "J6 (dynamic, both footer cookies flipped, auto-detected)" j_case nocookie.vhd auto "footer|cookie|vhd"
	run_case "J7 (differencing disk, parent missing)" j_case orphan/child.vhd auto "parent"
fi

# ---- K: -p without a terminal ----------------------------------------------
k_case() {
	local d="$TMP/k"
	mkdir "$d"
	gen_raw "$d/src.raw" $((30 * M)) "$SEED.k" 8
	conv "K: -p, stderr a file" "$d/src.raw" -- -p "$d/src.raw" "$d/a.vhd"
	[ -z "$CONV_ERR" ] || die "K: -p printed to a non-terminal stderr: $(printf '%q' "$CONV_ERR")"
	conv "K: -p --output=json" "$d/src.raw" -- -p --output=json "$d/src.raw" "$d/b.vhd"
	[ -z "$CONV_ERR" ] || die "K: -p --output=json printed to stderr: $CONV_ERR"
	printf '%s\n' "$CONV_OUT" | python3 -c 'import json,sys; json.load(sys.stdin)' ||
		die "K: -p --output=json: stdout is not JSON: $CONV_OUT"
	"$V" convert -p -O raw "$d/a.vhd" "$d/c.raw" >/dev/null 2>"$d/err" </dev/null
	[ ! -s "$d/err" ] || die "K: -p (VHD -> raw) printed to a non-terminal stderr"
	if command -v script >/dev/null 2>&1; then
		# on a pseudo-terminal, -p does show progress
		script -qec "$V convert -p $d/src.raw $d/tty.vhd" /dev/null >"$d/tty.out" 2>&1 </dev/null ||
			die "K: convert -p on a pty failed: $(cat "$d/tty.out")"
		grep -q "convert: .*%" "$d/tty.out" || die "K: -p on a pty showed no progress: $(cat "$d/tty.out")"
	fi
	log "ok K: -p silent without a terminal"
	rm -rf "$d"
}
if part K; then
	run_case "K (-p without a terminal)" k_case
fi

# ---- L: --no-sync does not sync the output ------------------------------------
# "--no-sync: do not fsync the output before renaming it into place
# (qemu-img's default)".  Traced with strace -y: no fsync/fdatasync of the
# output file (the temporary name .part-XXXXXX) may happen; the default mode
# must sync it (exactly what makes it durable).  Syncing the directory and
# the empty file vhd_create makes are cheap and allowed.
l_case() {
	local d="$TMP/l" out mode n
	command -v strace >/dev/null 2>&1 || skip "strace is not installed"
	mkdir "$d"
	gen_raw "$d/src.raw" $((40 * M)) "$SEED.l" 20
	for out in vhd raw; do
		for mode in default no-sync; do
			rm -f "$d/dst.$out"
			# shellcheck disable=SC2046 # no word when default
			# LeakSanitizer cannot run under ptrace: off for this traced run
			ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
			strace -f -y -e trace=fsync,fdatasync,msync,syncfs,sync -o "$d/trace" \
				"$V" convert $([ $mode = no-sync ] && echo --no-sync) -O "$out" "$d/src.raw" "$d/dst.$out" >/dev/null ||
				die "L: convert -O $out ($mode) under strace failed"
			n=$(grep -cE '(fsync|fdatasync)\([0-9]+<[^>]*\.part-[A-Za-z0-9]{6}>\)' "$d/trace" || true)
			if [ $mode = no-sync ]; then
				[ "$n" = 0 ] || defer "L: vhdtool convert --no-sync -O $out synced the output $n time(s): $(grep -E '\.part-[A-Za-z0-9]{6}>' "$d/trace" | tr '\n' ';')"
			else
				[ "$n" -ge 1 ] || defer "L: vhdtool convert -O $out (default) never synced the output before the rename"
			fi
		done
	done
	deferred_check
	log "ok L: --no-sync skips the output's fsync, the default does it"
}
if part L; then
	rm -f "$TMP/deferred"
	run_case "L (--no-sync really skips the sync)" l_case
fi

# ---- M: refusals before any copying ------------------------------------------
# Each exits 1 with a message about the user's files (never the temporary
# .part-XXXXXX name, a file the user never sees) and leaves nothing behind.
m_refused() { # WHAT KEYWORD ARGS...
	local what=$1 kw=$2 rc=0
	shift 2
	"$V" convert "$@" >"$TMP/m.out" 2>"$TMP/m.err" || rc=$?
	[ "$rc" = 1 ] || die "M $what: vhdtool convert $* exited $rc, expected 1: $(cat "$TMP/m.err")"
	grep -qiE -- "$kw" "$TMP/m.err" || die "M $what: the message does not say \"$kw\": $(cat "$TMP/m.err")"
	if grep -q '\.part-' "$TMP/m.err"; then
		defer "M $what: the message names the temporary file instead of the destination: $(cat "$TMP/m.err")"
	fi
	[ -z "$(find "$TMP/m" -name 'dst*')" ] || die "M $what: left $(find "$TMP/m" -name 'dst*')"
}
m_case() {
	local d="$TMP/m"
	rm -f "$TMP/deferred"
	mkdir "$d"
	gen_raw "$d/src.raw" $((3 * M + 512)) "$SEED.m" 4
	m_refused "block size 3M" "block size" -b 3M "$d/src.raw" "$d/dst.vhd"
	m_refused "block size 1M+512" "block size" -b $((M + 512)) "$d/src.raw" "$d/dst.vhd"
	m_refused "missing directory" "nodir" "$d/src.raw" "$d/nodir/dst.vhd"
	m_refused "missing source" "nope.raw" "$d/nope.raw" "$d/dst.vhd"
	truncate -s 2041G "$d/huge.raw"
	m_refused "2041 GiB to VHD" "2040 GiB" "$d/huge.raw" "$d/dst.vhd"
	m_refused "2041 GiB to VHD, --azure" "2040 GiB" --azure "$d/huge.raw" "$d/dst.vhd"
	truncate -s 2040G "$d/huge.raw"
	conv "M: 2040 GiB sparse raw -> dynamic" "$d/huge.raw" -- "$d/huge.raw" "$d/dst-huge.vhd"
	[ "$(qemu_vsize "$d/dst-huge.vhd" -f vpc)" = $((2040 * G)) ] || die "M: qemu sees $(qemu_vsize "$d/dst-huge.vhd" -f vpc) bytes for 2040 GiB"
	[ "$(stat -c %s "$d/dst-huge.vhd")" -le $((16 * M)) ] || die "M: empty 2040 GiB dynamic VHD is $(stat -c %s "$d/dst-huge.vhd") bytes"
	deferred_check
	log "ok M: refusals exit 1, leave nothing; 2040 GiB converts"
	rm -rf "$d"
}
if part M; then
	run_case "M (refusals: block size, directory, 2040 GiB limit)" m_case
fi

finish
