#!/usr/bin/env bash
# vhdtool set-parent and rebase from the command line: help texts, exit codes
# (0 done, 1 refused/failed, 2 usage), JSON summaries, the --force warning,
# qemu-img's spellings (-b, -u, -F), content kept byte for byte (against
# `vhdtool read` before), parents never written, and kill -9 of
# `vhdtool rebase` at random moments: the child keeps its content and check
# stays clean; running the rebase again finishes it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_vhdtool
require python3
make_tmpdir
pick_seed
cd "$TMP"
V=$VHDTOOL
RANDOM=$((SEED % 32768))

# write_rand IMG N: N random writes of random bytes
write_rand() {
	local img=$1 n=$2 size i off len
	size=$(vhd_vsize "$img")
	for ((i = 0; i < n; i++)); do
		len=$(((RANDOM * 37 + RANDOM) % 400000 + 1))
		off=$((((RANDOM << 15) | RANDOM) % (size - len)))
		head -c "$len" /dev/urandom >chunk
		"$V" write "$img" --offset "$off" chunk
	done
}
expect_rc() { # WANT CMD...: run, expect exit status WANT (stderr to err.txt)
	local want=$1 rc=0
	shift
	"$@" >out.txt 2>err.txt || rc=$?
	[ "$rc" = "$want" ] || die "'$*' exited $rc, expected $want: $(cat err.txt)"
}
uuid_of() { "$V" info --output=json -U "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["unique-id"])'; }
parent_id_of() { "$V" info --output=json -U "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["parent-unique-id"])'; }

# ---- help and usage ----------------------------------------------------------
expect_rc 0 "$V" set-parent --help
for w in --force NEWPARENT "Exit status" "Crash safety" --output=json; do
	grep -q -- "$w" out.txt || die "set-parent --help lacks '$w'"
done
expect_rc 0 "$V" rebase --help
for w in --unsafe -b --backing --progress "Exit status" "Crash safety" "another size"; do
	grep -q -- "$w" out.txt || die "rebase --help lacks '$w'"
done
expect_rc 0 "$V" help rebase
expect_rc 2 "$V" set-parent
expect_rc 2 "$V" set-parent only-one.vhd
expect_rc 2 "$V" set-parent a.vhd b.vhd c.vhd
expect_rc 2 "$V" set-parent --bogus a.vhd b.vhd
expect_rc 2 "$V" rebase a.vhd
expect_rc 2 "$V" rebase -b b.vhd
expect_rc 2 "$V" rebase -F qcow2 a.vhd b.vhd
expect_rc 2 "$V" rebase a.vhd ""
expect_rc 2 "$V" rebase --output=xml a.vhd b.vhd
log "help and usage ok"

# ---- set-parent after a move ---------------------------------------------------
"$V" create -b 512K base.vhd 24M >/dev/null
write_rand base.vhd 6
"$V" create --parent base.vhd child.vhd >/dev/null
write_rand child.vhd 6
"$V" read child.vhd >ref.raw
size_before=$(stat -c %s child.vhd)
mkdir -p "store/with space"
mv base.vhd "store/with space/base-moved.vhd"
base_sum=$(sha256_of "store/with space/base-moved.vhd")
expect_rc 1 "$V" check child.vhd
expect_rc 0 "$V" set-parent child.vhd "store/with space/base-moved.vhd" --output=json
cp out.txt sp.json
[ "$(json_get sp.json unique-id-changed)" = false ] || die "unique-id-changed after a move"
[ "$(json_get sp.json parent-name)" = base-moved.vhd ] || die "parent-name $(json_get sp.json parent-name)"
[ "$(json_get sp.json old-parent-unique-id)" = "$(json_get sp.json parent-unique-id)" ] ||
	die "the unique id changed"
[ ! -s err.txt ] || die "set-parent printed on stderr: $(cat err.txt)"
"$V" read child.vhd | cmp - ref.raw >/dev/null || die "content changed by set-parent"
expect_check_clean child.vhd
[ "$(stat -c %s child.vhd)" = "$size_before" ] || die "set-parent changed the child's size"
[ "$base_sum" = "$(sha256_of "store/with space/base-moved.vhd")" ] || die "the parent was written"
# human output
mv "store/with space/base-moved.vhd" store/base2.vhd
expect_rc 0 "$V" set-parent child.vhd store/base2.vhd
grep -q "unchanged" out.txt || die "human output: $(cat out.txt)"
"$V" read child.vhd | cmp - ref.raw >/dev/null || die "content changed by the 2nd set-parent"
log "set-parent after a move ok"

# ---- another disk: refused, then --force with a warning --------------------------
"$V" create -b 512K other.vhd 24M >/dev/null
write_rand other.vhd 3
child_sum=$(sha256_of child.vhd)
expect_rc 1 "$V" set-parent child.vhd other.vhd
grep -q -- "--force" err.txt || die "refusal does not mention --force: $(cat err.txt)"
[ "$child_sum" = "$(sha256_of child.vhd)" ] || die "a refused set-parent wrote the child"
expect_rc 0 "$V" set-parent --force child.vhd other.vhd --output=json
grep -q "warning" err.txt && grep -q "content may change" err.txt ||
	die "no warning with --force: $(cat err.txt)"
[ "$(json_get out.txt unique-id-changed)" = true ] || die "unique-id-changed false with --force"
[ "$(parent_id_of child.vhd)" = "$(uuid_of other.vhd)" ] || die "parent id is not other.vhd's"
expect_check_clean child.vhd
# and back (the content is the reference again: nothing was written meanwhile)
expect_rc 0 "$V" set-parent --force child.vhd store/base2.vhd
"$V" read child.vhd | cmp - ref.raw >/dev/null || die "content after --force back"
log "set-parent --force ok"

# ---- refusals ----------------------------------------------------------------------
"$V" create --parent child.vhd grand.vhd >/dev/null
expect_rc 1 "$V" set-parent child.vhd grand.vhd
grep -q loop err.txt || die "loop not reported: $(cat err.txt)"
expect_rc 1 "$V" set-parent child.vhd child.vhd
expect_rc 1 "$V" rebase child.vhd grand.vhd
grep -q loop err.txt || die "rebase loop not reported: $(cat err.txt)"
expect_rc 1 "$V" set-parent other.vhd store/base2.vhd
grep -q differencing err.txt || die "non-differencing child: $(cat err.txt)"
expect_rc 1 "$V" rebase other.vhd store/base2.vhd
expect_rc 1 "$V" set-parent child.vhd missing.vhd
head -c 1M /dev/zero >raw.img
expect_rc 1 "$V" set-parent --force child.vhd raw.img
"$V" read child.vhd | cmp - ref.raw >/dev/null || die "a refusal changed the content"
expect_check_clean child.vhd
log "refusals ok"

# ---- rebase (safe), both spellings, and --unsafe -------------------------------------
a_sum=$(sha256_of store/base2.vhd)
o_sum=$(sha256_of other.vhd)
expect_rc 0 "$V" rebase -p child.vhd other.vhd --output=json
[ "$(json_get out.txt mode)" = safe ] || die "mode"
[ "$(json_get out.txt parent-unique-id)" = "$(uuid_of other.vhd)" ] || die "rebase: parent id"
"$V" read child.vhd | cmp - ref.raw >/dev/null || die "rebase changed the content"
expect_check_clean child.vhd
[ "$a_sum" = "$(sha256_of store/base2.vhd)" ] && [ "$o_sum" = "$(sha256_of other.vhd)" ] ||
	die "rebase wrote a parent"
# onto a smaller and a larger disk, qemu-img's -b spelling
"$V" create small.vhd 10M >/dev/null
write_rand small.vhd 2
expect_rc 0 "$V" rebase -F vpc -b small.vhd child.vhd
grep -q "content is unchanged" out.txt || die "human output: $(cat out.txt)"
"$V" read child.vhd | cmp - ref.raw >/dev/null || die "rebase onto a smaller disk changed the content"
expect_check_clean child.vhd
"$V" create large.vhd 40M >/dev/null
write_rand large.vhd 3
expect_rc 0 "$V" rebase child.vhd large.vhd
"$V" read child.vhd | cmp - ref.raw >/dev/null || die "rebase onto a larger disk changed the content"
expect_check_clean child.vhd
# --unsafe = set-parent --force: a warning, the id changes, no copy
before=$(stat -c %s child.vhd)
expect_rc 0 "$V" rebase -u child.vhd other.vhd --output=json
[ "$(json_get out.txt mode)" = unsafe ] || die "mode unsafe"
grep -q "content may change" err.txt || die "no warning with --unsafe"
[ "$(stat -c %s child.vhd)" = "$before" ] || die "--unsafe copied data"
expect_check_clean child.vhd
# the old parent missing: safe rebase refused with advice
mv other.vhd other.gone
expect_rc 1 "$V" rebase child.vhd large.vhd
grep -q "set-parent" err.txt || die "missing old parent: $(cat err.txt)"
mv other.gone other.vhd
log "rebase ok"

# ---- kill -9 during rebase ---------------------------------------------------------------
"$V" create -b 256K ka.vhd 96M >/dev/null
head -c 56M /dev/urandom >big
"$V" write ka.vhd --offset 4096000 big
rm big
write_rand ka.vhd 10
"$V" create -b 64K --parent ka.vhd kc.vhd >/dev/null
write_rand kc.vhd 10
"$V" create -b 2M kb.vhd 48M >/dev/null
write_rand kb.vhd 10
"$V" read kc.vhd >kref.raw
cp kc.vhd kc.bak
ka_sum=$(sha256_of ka.vhd)
kb_sum=$(sha256_of kb.vhd)
t0=$(date +%s%N)
"$V" rebase kc.vhd kb.vhd >/dev/null
full_ms=$((($(date +%s%N) - t0) / 1000000 + 1))
log "an uninterrupted rebase takes ${full_ms} ms"
rounds=${SETPARENT_KILL_ROUNDS:-12}
killed=0
for ((r = 0; r < rounds; r++)); do
	cp kc.bak kc.vhd
	delay_ms=$((RANDOM % (full_ms + 5)))
	"$V" rebase kc.vhd kb.vhd >/dev/null 2>&1 &
	pid=$!
	sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
	kill -9 "$pid" 2>/dev/null || true
	rc=0
	wait "$pid" 2>/dev/null || rc=$?
	[ "$rc" = 137 ] && killed=$((killed + 1))
	[ "$rc" = 137 ] || [ "$rc" = 0 ] || die "round $r: the rebase failed on its own (exit $rc)"
	"$V" read kc.vhd | cmp - kref.raw >/dev/null ||
		die "round $r (${delay_ms} ms): content changed after kill -9"
	"$V" check kc.vhd >check.txt || die "round $r: check not clean after kill: $(cat check.txt)"
	"$V" rebase kc.vhd kb.vhd >/dev/null || die "round $r: re-running the rebase failed"
	"$V" read kc.vhd | cmp - kref.raw >/dev/null || die "round $r: content after the re-run"
	expect_check_clean kc.vhd
	[ "$(parent_id_of kc.vhd)" = "$(uuid_of kb.vhd)" ] || die "round $r: parent after the re-run"
	[ "$ka_sum" = "$(sha256_of ka.vhd)" ] && [ "$kb_sum" = "$(sha256_of kb.vhd)" ] ||
		die "round $r: a parent was written"
done
log "kill -9 during rebase ok ($killed of $rounds rounds killed mid-run)"
log PASS
