#!/usr/bin/env bash
# fuse_stress: many threads read and write one mounted disk at once
# (test_fuse_stress): every read must return the last acknowledged write,
# neighbouring writes inside one sector must both survive, and after unmount
# the image must hold exactly the model and check clean.
#
# dynamic       a new dynamic disk with 64 KiB blocks: blocks are allocated
#               by several threads at once (group commit), compared with
#               qemu-img after unmount
# differencing  a child over a parent half full of random data: partial-sector
#               writes read the parent's bytes; the flattened child equals
#               the model, the parent is unchanged
# fixed         a fixed disk, compared with qemu-img
# snapshot      --snapshot over the dynamic result: the image is unchanged
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse_lib.sh"
require_fuse
require qemu-img
STRESS=$TEST_BIN_DIR/test_fuse_stress
[ -x "$STRESS" ] || die "$STRESS is not built"
SECS=${STRESS_SECONDS:-6}
pick_seed
fuse_tmpdir

# stress [MOUNT OPTIONS] IMG MNT: mount, run the program on MODEL, unmount.
stress() {
	local mnt=${*: -1} out
	vmount "$@"
	out=$("$STRESS" "$mnt/disk" "$MODEL" "$SECS" "$SEED" 8 2>&1) || die "$out"
	log "$out; $(info_get "$mnt" 'd["mount"]["syncs"]') group fdatasyncs"
	vunmount "$mnt"
}

case_dynamic() {
	local img=$TMP/dyn.vhd
	MODEL=$TMP/dyn.model
	"$VHDTOOL" create --type dynamic --size 24M --block-size 64K "$img" >/dev/null
	truncate -s 24M "$MODEL"
	stress "$img" "$TMP/mnt-dyn"
	expect_check_clean "$img"
	qemu-img compare -q -f vpc -F raw "$img" "$MODEL" || die "qemu-img: the image differs from the model"
}

case_differencing() {
	local base=$TMP/base.vhd child=$TMP/child.vhd sum
	MODEL=$TMP/diff.model
	"$VHDTOOL" create --type dynamic --size 24M --block-size 256K "$base" >/dev/null
	python3 - "$TMP/fill" "$SEED" <<'PY'
import random, sys
r = random.Random(sys.argv[2])
with open(sys.argv[1], "wb") as f:
    for i in range(96):   # every other 256 KiB block holds data
        f.write(r.randbytes(256 << 10) if i % 2 else bytes(256 << 10))
PY
	"$VHDTOOL" write "$base" --offset 0 <"$TMP/fill"
	qemu-img convert -f vpc -O raw "$base" "$MODEL"
	sum=$(sha256_of "$base")
	"$VHDTOOL" create --parent "$base" "$child" >/dev/null
	stress "$child" "$TMP/mnt-diff"
	expect_check_clean "$child"
	[ "$(sha256_of "$base")" = "$sum" ] || die "the parent changed"
	"$VHDTOOL" convert -O raw "$child" "$TMP/flat.raw" >/dev/null
	cmp "$TMP/flat.raw" "$MODEL" || die "the flattened child differs from the model"
}

case_fixed() {
	local img=$TMP/fixed.vhd
	MODEL=$TMP/fixed.model
	"$VHDTOOL" create --type fixed --size 16M "$img" >/dev/null
	truncate -s 16M "$MODEL"
	stress "$img" "$TMP/mnt-fixed"
	expect_check_clean "$img"
	qemu-img compare -q -f vpc -F raw "$img" "$MODEL" || die "qemu-img: the image differs from the model"
}

case_snapshot() {
	local img=$TMP/dyn.vhd sum
	[ -f "$img" ] || skip "the dynamic case left no image"
	MODEL=$TMP/snap.model
	qemu-img convert -f vpc -O raw "$img" "$MODEL"
	sum=$(sha256_of "$img")
	stress --snapshot "$img" "$TMP/mnt-snap"
	[ "$(sha256_of "$img")" = "$sum" ] || die "--snapshot changed the image"
}

run_case dynamic case_dynamic
run_case differencing case_differencing
run_case fixed case_fixed
run_case snapshot case_snapshot
finish
