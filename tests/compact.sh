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
