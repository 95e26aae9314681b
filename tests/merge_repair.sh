#!/usr/bin/env bash
# merge and repair: content of the chain kept exactly (vs a raw reference
# built from the same writes), dependents refused, --into, --keep, and
# kill -9 at random moments of a merge: the chain seen from the child keeps
# its content, and re-running the merge (or repair) finishes it cleanly.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_vhdtool
require python3
make_tmpdir
pick_seed
cd "$TMP"
V=$VHDTOOL
RANDOM=$((SEED % 32768))

# write_rand IMG REF N: N random writes into IMG, mirrored into REF
write_rand() {
	local img=$1 ref=$2 n=$3 size i off len
	size=$(stat -c %s "$ref")
	for ((i = 0; i < n; i++)); do
		len=$(((RANDOM * 37 + RANDOM) % 300000 + 1))
		off=$((((RANDOM << 15) | RANDOM) % (size - len)))
		head -c "$len" /dev/urandom >chunk
		"$V" write "$img" --offset "$off" chunk
		dd if=chunk of="$ref" bs=1M oflag=seek_bytes seek="$off" conv=notrunc status=none
	done
}
# chain N SIZE: base.vhd <- c1.vhd <- ... <- cN.vhd with random writes, ref.raw
chain() {
	local n=$1 size=$2 prev=base.vhd i
	rm -f ./*.vhd ./*.merge-intent ref.raw
	"$V" create -b 512K base.vhd "$size" >/dev/null
	truncate -s "$size" ref.raw
	write_rand base.vhd ref.raw 6
	for ((i = 1; i <= n; i++)); do
		"$V" create --parent "$prev" "c$i.vhd" >/dev/null
		write_rand "c$i.vhd" ref.raw 6
		prev=c$i.vhd
	done
}
same() { # IMG: reads as ref.raw
	"$V" read "$1" | cmp - ref.raw >/dev/null || die "$1 does not read as the reference"
}

# 1. merge into the direct parent; the child goes away
chain 2 24M
"$V" merge c2.vhd >out.txt
[ ! -e c2.vhd ] || die "c2.vhd still exists after merge"
same c1.vhd
expect_check_clean c1.vhd

# 2. --into the base: everything above goes
chain 3 24M
"$V" merge --into base.vhd c3.vhd --output=json >out.json
[ "$(json_get out.json merged-images)" = 3 ] || die "merged-images"
[ ! -e c1.vhd ] && [ ! -e c2.vhd ] && [ ! -e c3.vhd ] || die "intermediates left"
same base.vhd
expect_check_clean base.vhd
if command -v qemu-img >/dev/null; then
	qemu-img compare -q -f vpc -F raw base.vhd ref.raw || die "qemu-img disagrees after merge"
fi

# 2b. the same with small batches: merged blocks of every image above the
# target are dropped (bottom up) and their space given back as it goes
chain 3 24M
"$V" merge --batch-size 1M --into base.vhd c3.vhd --output=json >out.json
[ "$(json_get out.json bytes-released-early)" -gt 0 ] || die "nothing released early: $(cat out.json)"
[ ! -e c1.vhd ] && [ ! -e c2.vhd ] && [ ! -e c3.vhd ] || die "intermediates left"
same base.vhd
expect_check_clean base.vhd

# 3. --keep: the child stays, empty, same content
chain 1 24M
"$V" merge --keep c1.vhd >/dev/null
same c1.vhd
"$V" info --output=json c1.vhd >info.json
[ "$(json_get info.json allocated-blocks)" = 0 ] || die "--keep left blocks in the child"
expect_check_clean c1.vhd

# 4. another child of the parent: refused (nothing changes), then --force
chain 1 24M
"$V" create --parent base.vhd other.vhd >/dev/null
sum=$(sha256sum base.vhd c1.vhd)
if "$V" merge c1.vhd 2>err.txt; then die "merge with a dependent sibling was not refused"; fi
grep -q "other.vhd" err.txt || die "refusal does not name the dependent: $(cat err.txt)"
[ "$sum" = "$(sha256sum base.vhd c1.vhd)" ] || die "a refused merge changed files"
"$V" merge --force c1.vhd >/dev/null
same base.vhd

# 4b. another child of a deeper ancestor is no dependent of a merge that
# stops above that ancestor: base <- c1 <- c2 and base <- other; c2 into c1
chain 2 24M
"$V" create --parent base.vhd other.vhd >/dev/null
"$V" merge c2.vhd >/dev/null 2>err.txt || die "merge refused for a sibling of an untouched ancestor: $(cat err.txt)"
same c1.vhd
expect_check_clean other.vhd
rm -f other.vhd

# 4c. the target's file system fills up mid-merge (data written by the
# writer threads fails): a clear error, the chain reads as before, and the
# same command finishes once there is room
if [ "$(id -u)" = 0 ] && mkdir -p full && mount -t tmpfs -o size=40m tmpfs full 2>/dev/null; then
	set +e # the tmpfs is unmounted whatever happens inside
	(
		set -e
		cd full
		"$V" create -b 512K base.vhd 64M >/dev/null
		"$V" create --parent base.vhd c1.vhd >/dev/null
		# the reference and the data live outside the small file system
		head -c 24M /dev/urandom >../big
		"$V" write c1.vhd --offset 4M ../big
		rm -f ../ref.raw && truncate -s 64M ../ref.raw
		dd if=../big of=../ref.raw bs=1M seek=4 conv=notrunc status=none
		ln -s ../ref.raw ref.raw
		if "$V" merge c1.vhd 2>../err.txt; then die "merge into a full file system succeeded"; fi
		grep -q "No space left" ../err.txt || die "unclear error on a full disk: $(cat ../err.txt)"
		grep -q "c1.vhd" ../err.txt || die "the error does not name the image: $(cat ../err.txt)"
		same c1.vhd
		[ -e c1.vhd.merge-intent ] || die "the intent record is gone after a failed merge"
		mount -o remount,size=120m "$TMP/full"
		"$V" merge c1.vhd >/dev/null
		[ ! -e c1.vhd ] || die "c1.vhd left after the resumed merge"
		same base.vhd
		expect_check_clean base.vhd

		# small batches give the child's space back as they go: the same
		# merge fits in a file system that cannot hold two copies
		mount -o remount,size=40m "$TMP/full"
		rm -f base.vhd
		"$V" create -b 512K base.vhd 64M >/dev/null
		"$V" create --parent base.vhd c1.vhd >/dev/null
		"$V" write c1.vhd --offset 4M ../big
		"$V" merge --batch-size 4M --output=json c1.vhd >../out.json 2>../err.txt ||
			die "a merge with small batches did not fit: $(cat ../err.txt)"
		[ "$(json_get ../out.json bytes-released-early)" -gt $((8 << 20)) ] ||
			die "small batches gave back too little: $(cat ../out.json)"
		same base.vhd
		expect_check_clean base.vhd
	)
	rc=$?
	set -e
	umount "$TMP/full"
	[ "$rc" = 0 ] || die "the full-file-system case failed"
	log "merge on a full file system: refused cleanly, finished after growing it; fits with --batch-size"
else
	log "not root or no tmpfs: the full-file-system case is left out"
fi

# 5. not a differencing disk; missing parent
if "$V" merge base.vhd 2>err.txt; then die "merging a dynamic disk was not refused"; fi
grep -q "differencing" err.txt || die "unclear error: $(cat err.txt)"

# 6. kill -9 during merges: content kept, re-run finishes
rounds=${MERGE_KILL_ROUNDS:-16}
interrupted=0
for ((r = 0; r < rounds; r++)); do
	chain 2 96M
	head -c 40M /dev/urandom >big
	"$V" write c2.vhd --offset 8M big
	dd if=big of=ref.raw bs=1M seek=8 conv=notrunc status=none
	# odd rounds: small batches, so kills land while blocks are released
	"$V" merge --into base.vhd $([ $((r % 2)) = 1 ] && echo --batch-size 1M) c2.vhd >/dev/null 2>&1 &
	pid=$!
	sleep "$(printf "0.%03d" $((RANDOM % 150)))"
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	[ -e c2.vhd.merge-intent ] && interrupted=$((interrupted + 1))
	if [ -e c2.vhd ]; then
		same c2.vhd # the chain seen from the child is unchanged
		if [ $((r % 2)) = 0 ]; then
			"$V" merge --into base.vhd c2.vhd >/dev/null
		else
			"$V" repair c2.vhd >/dev/null
			[ ! -e c2.vhd.merge-intent ] || die "repair left the intent record"
		fi
	elif [ -e c2.vhd.merge-intent ]; then
		"$V" repair c2.vhd >/dev/null # child already removed: finish the clean-up
	fi
	[ ! -e c2.vhd ] || [ ! -e c2.vhd.merge-intent ] || die "merge did not finish"
	if [ ! -e c2.vhd ]; then
		[ ! -e c1.vhd ] || die "round $r: c1.vhd left behind"
		same base.vhd
		expect_check_clean base.vhd
	fi
done
log "merge: $rounds kill -9 rounds, $interrupted interrupted mid-merge, all finished cleanly"

# 7. repair: damaged tail footer, damaged head copy, bad checksums, leaked tail
chain 0 8M
cp base.vhd good.vhd
size=$(stat -c %s base.vhd)
printf 'XXXXXXXX' | dd of=base.vhd bs=1 seek=$((size - 512)) conv=notrunc status=none
if "$V" check base.vhd >/dev/null; then die "check missed a damaged tail footer"; fi
"$V" repair --dry-run base.vhd >out.txt
grep -q "^would rewrite the trailing footer" out.txt || die "dry run: $(cat out.txt)"
if "$V" check base.vhd >/dev/null; then die "--dry-run wrote"; fi
"$V" repair base.vhd >/dev/null
expect_check_clean base.vhd
cmp base.vhd good.vhd || die "repaired tail differs from the original"
printf 'ZZZZ' | dd of=base.vhd bs=1 seek=0 conv=notrunc status=none
"$V" repair base.vhd >/dev/null
cmp base.vhd good.vhd || die "repaired head copy differs from the original"
# checksum of the header
python3 - base.vhd <<'PY'
import sys
f = open(sys.argv[1], "r+b"); f.seek(512 + 36); f.write(b"\x12\x34\x56\x78")
PY
"$V" repair base.vhd | grep -q "dynamic header checksum" || die "header checksum not repaired"
cmp base.vhd good.vhd || die "header repair changed more than the checksum"
# a leaked tail (as an interrupted allocation leaves it)
python3 - base.vhd <<'PY'
import sys, os
p = sys.argv[1]; f = open(p, "r+b"); f.seek(-512, 2); foot = f.read(512)
end = os.path.getsize(p); f.truncate(end + 4 * 1024 * 1024 - 512); f.seek(0, 2); f.write(foot)
PY
"$V" check base.vhd | grep -q "leaked" || die "leak not reported"
"$V" repair base.vhd | grep -q "give back" || die "leak not given back"
cmp base.vhd good.vhd || die "leak repair differs from the original"
"$V" repair base.vhd | grep -q "Nothing to repair" || die "second repair did something"
log "ok"
