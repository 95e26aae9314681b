#!/usr/bin/env bash
# kill -9 at random moments of `vhdtool checkpoint create/apply/delete` on a
# set whose checkpoints hold megabytes (so merges take a while), then either
# `checkpoint repair` or simply the next command (recovery on open).  After
# every round: every visible checkpoint reads exactly as when it was taken
# (sha256 recorded then), Now reads as its raw mirror (or, after an apply
# that went through, as the applied checkpoint), each Now disk checks clean,
# and the set keeps working.  test_snapshot crash kills at every step and
# chosen syscalls; this one uses real timing on bigger disks.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_vhdtool
require python3
make_tmpdir
pick_seed
cd "$TMP"
V=$VHDTOOL
RANDOM=$((SEED % 32768))
DISKS="os data"
mkdir ref

sha_of_disk() { "$V" read "$1" | sha256sum | cut -d' ' -f1; }
now_file() { "$V" checkpoint current s "$1"; }
# visible checkpoint ids, and FILE of ID DISK, from list.json
list() { "$V" checkpoint list s --output=json >list.json; }
ids() { python3 -c 'import json; print(" ".join(str(c["id"]) for c in json.load(open("list.json"))["checkpoints"] if not c["hidden"]))'; }
file_of() { python3 -c 'import json,sys; print([c for c in json.load(open("list.json"))["checkpoints"] if c["id"] == int(sys.argv[1])][0]["files"][sys.argv[2]])' "$1" "$2"; }
now_parent() { python3 -c 'import json; print(json.load(open("list.json"))["now"]["parent"])'; }
mirror_sha() { cat "ref/now.$1" | sha256sum | cut -d' ' -f1; }

write_rand() { # a few writes into Now, mirrored
	local d f size len off i
	for d in $DISKS; do
		f=$(now_file "$d")
		size=$(stat -c %s "ref/now.$d")
		for ((i = 0; i < RANDOM % 3 + 1; i++)); do
			len=$(((RANDOM * 32768 + RANDOM) % (6 << 20) + 1))
			off=$((((RANDOM << 15) | RANDOM) % (size - len)))
			head -c "$len" /dev/urandom >chunk
			"$V" write "$f" --offset "$off" chunk
			dd if=chunk of="ref/now.$d" bs=1M oflag=seek_bytes seek="$off" conv=notrunc status=none
		done
	done
}

"$V" create os.vhd 24M >/dev/null
"$V" create -b 512K data.vhd 12M >/dev/null
truncate -s 24M ref/now.os
truncate -s 12M ref/now.data
"$V" checkpoint init s os.vhd data.vhd >/dev/null

rounds=${SNAP_KILL_ROUNDS:-20}
interrupted=0 repaired=0 done_ops=0
for ((r = 0; r < rounds; r++)); do
	write_rand
	list
	vis=($(ids))
	op=create
	pick=$((RANDOM % 100))
	if [ ${#vis[@]} -ge 2 ]; then
		if [ ${#vis[@]} -gt 7 ] || [ $pick -lt 45 ]; then op=delete
		elif [ $pick -lt 70 ]; then op=apply
		fi
	fi
	target=${vis[RANDOM % (${#vis[@]} > 0 ? ${#vis[@]} : 1)]:-}
	args=()
	case $op in
	create) args=(create s --name "round $r") ;;
	apply) args=(apply s "$target"); [ $((RANDOM % 3)) = 0 ] && args+=(--checkpoint-first) ;;
	delete) args=(delete s "$target"); [ $((RANDOM % 6)) = 0 ] && args+=(--subtree) ;;
	esac
	before_ids=" ${vis[*]} "
	declare -A before_now=()
	for d in $DISKS; do before_now[$d]=$(mirror_sha "$d"); done
	# the operation, killed after 0-60 ms
	"$V" checkpoint "${args[@]}" >/dev/null 2>&1 &
	pid=$!
	sleep "$(printf '0.%03d' $((RANDOM % 61)))"
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null && done_ops=$((done_ops + 1)) || true
	[ -e s/journal.json ] && interrupted=$((interrupted + 1))
	# recovery: explicitly, or by the next command
	if [ $((RANDOM % 2)) = 0 ]; then
		"$V" checkpoint repair s >/dev/null || die "round $r (${args[*]}): repair failed"
		repaired=$((repaired + 1))
	fi
	list || die "round $r (${args[*]}): the set does not open after the kill"
	[ ! -e s/journal.json ] || die "round $r: the journal survived recovery"
	# every visible checkpoint: its reference; a new one: the old Now
	for id in $(ids); do
		for d in $DISKS; do
			got=$(sha_of_disk "$(file_of "$id" "$d")")
			if [ -f "ref/$id.$d" ]; then
				[ "$got" = "$(cat "ref/$id.$d")" ] ||
					die "round $r (${args[*]}): checkpoint $id disk $d lost its content"
			else
				[ "$op" != delete ] && [[ $before_ids != *" $id "* ]] ||
					die "round $r: checkpoint $id appeared from nowhere"
				[ "$got" = "${before_now[$d]}" ] ||
					die "round $r (${args[*]}): new checkpoint $id disk $d is not the old Now"
				echo "$got" >"ref/$id.$d"
			fi
		done
	done
	# Now: unchanged, or (apply went through) the applied checkpoint
	applied=false
	if [ "$op" = apply ] && [ "$(now_parent)" = "$target" ] &&
		[ "$(sha_of_disk "$(now_file os)")" != "${before_now[os]}" -o "$(sha_of_disk "$(now_file data)")" != "${before_now[data]}" ]; then
		applied=true
	fi
	for d in $DISKS; do
		f=$(now_file "$d")
		if $applied; then
			[ "$(sha_of_disk "$f")" = "$(cat "ref/$target.$d")" ] ||
				die "round $r (${args[*]}): Now is neither the old state nor checkpoint $target"
			"$V" read "$f" "ref/now.$d"
		else
			"$V" read "$f" | cmp -s - "ref/now.$d" ||
				die "round $r (${args[*]}): Now disk $d lost its content"
		fi
		expect_check_clean "$f"
	done
done
list
log "$rounds rounds: $done_ops finished before the kill, $interrupted interrupted mid-way" \
	"(journal left), $repaired recovered by repair, the rest by the next command;" \
	"$(ids | wc -w) checkpoints at the end"
[ "$interrupted" -gt 0 ] || die "no kill landed inside an operation (timing); rerun with SEED=$SEED"
"$V" checkpoint repair s >/dev/null
log ok
