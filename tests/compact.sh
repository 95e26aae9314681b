#!/usr/bin/env bash
# compact: zero blocks dropped, file shrinks, content unchanged (vs a raw
# reference and qemu-img), differencing --against-parent, refusals, and
# kill -9 at random moments: content unchanged, check clean, re-run finishes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_vhdtool
make_tmpdir
pick_seed
cd "$TMP"
V=$VHDTOOL
RANDOM=$((SEED % 32768))

# dynamic: random data, then zeros over a third of it
mk() {
	rm -f d.vhd ref.raw
	"$V" create -b "$1" d.vhd 48M >/dev/null
	head -c 48M /dev/urandom >ref.raw
	"$V" write d.vhd ref.raw
	for ((i = 0; i < 6; i++)); do
		off=$((RANDOM % 44))
		len=$((RANDOM % 4 + 1))
		dd if=/dev/zero of=ref.raw bs=1M seek=$off count=$len conv=notrunc status=none
		head -c $((len << 20)) /dev/zero | "$V" write d.vhd --offset $((off << 20))
	done
}
for bs in 64K 2M; do
	mk $bs
	before=$(stat -c %s d.vhd)
	"$V" compact --output=json d.vhd >out.json
	after=$(stat -c %s d.vhd)
	[ "$after" -lt "$before" ] || die "compact ($bs) did not shrink the file ($before -> $after)"
	[ "$(json_get out.json new-file-size)" = "$after" ] || die "reported size"
	"$V" read d.vhd | cmp - ref.raw >/dev/null || die "content changed by compact ($bs)"
	expect_check_clean d.vhd
	if command -v qemu-img >/dev/null; then
		qemu-img compare -q -f vpc -F raw d.vhd ref.raw || die "qemu-img disagrees after compact"
	fi
	log "block size $bs: $before -> $after bytes"
done

# differencing: sectors equal to the parent given back with --against-parent
rm -f p.vhd c.vhd
"$V" create p.vhd 16M >/dev/null
head -c 16M /dev/urandom >ref.raw
"$V" write p.vhd ref.raw
"$V" create --parent p.vhd c.vhd >/dev/null
dd if=ref.raw bs=1M skip=3 count=5 status=none | "$V" write c.vhd --offset 3M # same bytes
printf 'changed' | "$V" write c.vhd --offset 9M
printf 'changed' | dd of=ref.raw bs=1 seek=$((9 << 20)) conv=notrunc status=none
psum=$(sha256sum p.vhd)
"$V" compact c.vhd >/dev/null # without --against-parent: nothing to drop
"$V" compact --against-parent --output=json c.vhd >out.json
[ "$(json_get out.json sectors-cleared)" -ge 10240 ] || die "sectors equal to the parent kept"
"$V" read c.vhd | cmp - ref.raw >/dev/null || die "content changed by compact --against-parent"
[ "$psum" = "$(sha256sum p.vhd)" ] || die "the parent changed"
"$V" info --output=json c.vhd >info.json
[ "$(json_get info.json allocated-blocks)" = 1 ] || die "blocks left: $(json_get info.json allocated-blocks)"
expect_check_clean c.vhd

# locator data after the blocks (set-parent had to put a long path at the
# end of a child whose locator spaces are one sector): compact must neither
# overwrite nor cut it off
rm -f p.vhd c.vhd
long=$(printf 'y%.0s' {1..200})
mkdir -p "$long/$long"
"$V" create -b 64K p.vhd 4M >/dev/null
head -c 1M /dev/urandom >ref.raw && truncate -s 4M ref.raw
"$V" write p.vhd ref.raw
"$V" create --parent p.vhd c.vhd >/dev/null
head -c 300K /dev/urandom >chunk
"$V" write c.vhd --offset 100000 chunk
dd if=chunk of=ref.raw bs=1 seek=100000 conv=notrunc status=none
python3 - c.vhd <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); f.seek(512); h = bytearray(f.read(1024))
for i in range(8):
    o = 576 + 24 * i
    if struct.unpack(">I", h[o:o+4])[0]:
        h[o+4:o+8] = struct.pack(">I", 1)          # one sector of space
h[36:40] = b"\0\0\0\0"
h[36:40] = struct.pack(">I", ~sum(h) & 0xffffffff)
f.seek(512); f.write(h)
PY
mv p.vhd "$long/$long/p.vhd"
"$V" set-parent c.vhd "$long/$long/p.vhd" >/dev/null
expect_check_clean c.vhd
"$V" compact c.vhd >/dev/null
expect_check_clean c.vhd
"$V" read c.vhd | cmp - ref.raw >/dev/null || die "compact broke a child with locators after its blocks"

# refusals
"$V" create -t fixed f.vhd 1M >/dev/null
if "$V" compact f.vhd 2>err.txt; then die "compact of a fixed disk not refused"; fi
grep -q "fixed" err.txt || die "unclear: $(cat err.txt)"
if "$V" compact --against-parent p.vhd 2>err.txt; then die "--against-parent on dynamic not refused"; fi

# kill -9 during compact
rounds=${COMPACT_KILL_ROUNDS:-12}
for ((r = 0; r < rounds; r++)); do
	mk 64K
	"$V" compact d.vhd >/dev/null 2>&1 &
	pid=$!
	sleep "$(printf "0.%03d" $((RANDOM % 120)))"
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	"$V" read d.vhd | cmp - ref.raw >/dev/null || die "round $r: content changed by an interrupted compact"
	"$V" check d.vhd >/dev/null || die "round $r: check not clean after kill: $("$V" check d.vhd)"
	"$V" compact d.vhd >/dev/null
	"$V" read d.vhd | cmp - ref.raw >/dev/null || die "round $r: content changed by the re-run"
	expect_check_clean d.vhd
done
log "ok ($rounds kill -9 rounds)"
