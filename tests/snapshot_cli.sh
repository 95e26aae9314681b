#!/usr/bin/env bash
# vhdtool checkpoint end to end: init, create, write, list (human and JSON),
# apply (with and without --checkpoint-first), delete (leaf, merge into the
# single dependent, hidden shared node, subtree), rename, export, current,
# repair; every checkpoint's content checked against raw references saved
# when it was taken.  Then the lock, bad usage, and bad metadata: damaged
# JSON, missing disks, loops, links that disagree with the disks, hostile
# file names, a damaged journal, a foreign merge record: each refused with a
# message naming the problem, and nothing changed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_vhdtool
require python3
make_tmpdir
cd "$TMP"
V=$VHDTOOL

# checkpoint references: ref/<id>.<disk> holds the raw content at creation
mkdir ref
snap_refs() { # SET ID: record Now's content as checkpoint ID's reference
	local d
	for d in os data; do
		"$V" read "$("$V" checkpoint current "$1" "$d")" "ref/$2.$d"
	done
}
check_all() { # SET: every visible checkpoint and Now read as their references
	local set=$1 id d
	"$V" checkpoint list "$set" --output=json >list.json
	for id in $(python3 -c 'import json; print(" ".join(str(c["id"]) for c in json.load(open("list.json"))["checkpoints"] if not c["hidden"]))'); do
		for d in os data; do
			f=$(python3 -c 'import json,sys; print([c for c in json.load(open("list.json"))["checkpoints"] if c["id"] == int(sys.argv[1])][0]["files"][sys.argv[2]])' "$id" "$d")
			"$V" read "$f" | cmp -s - "ref/$id.$d" || die "checkpoint $id disk $d differs from its reference"
		done
	done
	for d in os data; do
		"$V" read "$("$V" checkpoint current "$set" "$d")" | cmp -s - "ref/now.$d" ||
			die "Now disk $d differs from its reference"
	done
}
write_now() { # SET DISK OFFSET TEXT: write into Now and the Now reference
	local f
	f=$("$V" checkpoint current "$1" "$2")
	printf '%s' "$4" | "$V" write "$f" --offset "$3"
	printf '%s' "$4" | dd of="ref/now.$2" bs=1 seek="$3" conv=notrunc status=none
}
state() { # SET: everything about the files of a set, to prove nothing changed
	(cd "$1" && find . -type f -printf '%p %m %s\n' | sort && find . -type f -exec sha256sum {} + | sort)
}
expect_fail() { # MESSAGE-REGEX COMMAND...: must fail (exit 1) naming the problem
	local re=$1 rc=0
	shift
	"$@" >out.txt 2>err.txt || rc=$?
	[ "$rc" = 1 ] || die "'$*' exited $rc, expected 1: $(cat out.txt err.txt)"
	grep -Eq "$re" err.txt || die "'$*': message does not match /$re/: $(cat err.txt)"
}

# ---- the walk-through ------------------------------------------------------
"$V" create -b 512K os.vhd 16M >/dev/null
"$V" create data.vhd 8M >/dev/null
truncate -s 16M ref/now.os
truncate -s 8M ref/now.data
"$V" checkpoint init vm os.vhd data.vhd >out.txt
grep -q "Started checkpoint set vm with disks os, data (moved in)" out.txt || die "init: $(cat out.txt)"
[ ! -e os.vhd ] && [ -f vm/os.vhd ] || die "init did not move the disks"
write_now vm os 0 "installed system"
write_now vm data 4096 "user data v1"
"$V" checkpoint create vm --name installed >out.txt
grep -q 'Created checkpoint 1 "installed"' out.txt || die "create: $(cat out.txt)"
snap_refs vm 1
[ ! -w vm/os.vhd ] || [ "$(id -u)" = 0 ] || die "a checkpoint's file stayed writable"
[ "$(stat -c %a vm/os.vhd)" = 444 ] || die "checkpoint file mode $(stat -c %a vm/os.vhd), expected 444"
write_now vm os 1M "update 1"
"$V" checkpoint create vm --name "before update" --output=json >out.json
[ "$(json_get out.json id)" = 2 ] || die "create --output=json: $(cat out.json)"
snap_refs vm 2
write_now vm os 2M "update 2 (broken)"
"$V" checkpoint list vm >list.txt
cat list.txt
grep -Eq '^2 +`-- before update' list.txt || die "list: no tree line for 2: $(cat list.txt)"
grep -Eq '^- +`-- Now +\(current state\)' list.txt || die "list: Now not under 2"
# apply discards the current state
"$V" checkpoint apply vm "before update" >out.txt
grep -q "the previous state was discarded" out.txt || die "apply: $(cat out.txt)"
cp ref/2.os ref/now.os
cp ref/2.data ref/now.data
check_all vm
# a branch: apply 1 saving the current state first
write_now vm data 0 "scratch"
"$V" checkpoint apply vm 1 --checkpoint-first --name scratch --output=json >out.json
[ "$(json_get out.json saved)" = 3 ] || die "apply --checkpoint-first: $(cat out.json)"
cp ref/now.os ref/3.os
cp ref/now.data ref/3.data
cp ref/1.os ref/now.os
cp ref/1.data ref/now.data
write_now vm os 3M "experiment"
"$V" checkpoint create vm --name experiment >/dev/null
snap_refs vm 4
check_all vm
"$V" checkpoint list vm --output=json >list.json
python3 - <<'EOF' || die "list JSON: $(cat list.json)"
import json
d = json.load(open("list.json"))
cps = {c["id"]: c for c in d["checkpoints"]}
assert d["disks"] == ["os", "data"]
assert sorted(cps) == [1, 2, 3, 4]
assert cps[1]["parent"] is None and cps[1]["children"] == [2, 4]
assert cps[2]["children"] == [3] and cps[3]["parent"] == 2
assert d["now"]["parent"] == 4 and cps[4]["children"] == [] and cps[4]["now-below"]
assert not cps[1]["now-below"] and cps[1]["dependents"] == 2
assert all(c["bytes"] > 0 for c in cps.values()) and cps[1]["created"].endswith("Z")
EOF
# delete a checkpoint with one dependent (2 -> 3): merged, 3 takes 2's files
"$V" checkpoint delete vm 2 >out.txt
grep -q "1 merge" out.txt || die "delete 2: $(cat out.txt)"
check_all vm
# delete the root with two dependents: hidden
"$V" checkpoint delete vm installed --output=json >out.json
[ "$(json_get out.json hidden)" = 1 ] || die "delete 1: $(cat out.json)"
"$V" checkpoint list vm >list.txt
grep -q "(deleted; shared by 2)" list.txt || die "hidden node not shown: $(cat list.txt)"
expect_fail "was deleted" "$V" checkpoint apply vm 1
check_all vm
# rename, export (dynamic and fixed), current
"$V" checkpoint rename vm 4 "experiment v2" >/dev/null
"$V" checkpoint list vm | grep -q "experiment v2" || die "rename"
"$V" checkpoint export vm "experiment v2" exp >/dev/null
"$V" read exp/os.vhd | cmp -s - ref/4.os || die "export of 4: os differs"
"$V" read exp/data.vhd | cmp -s - ref/4.data || die "export of 4: data differs"
"$V" info --output=json exp/os.vhd >info.json
[ "$(json_get info.json type)" = dynamic ] || die "export is not dynamic: $(cat info.json)"
expect_fail "exists already" "$V" checkpoint export vm 4 exp
"$V" checkpoint export vm now exp --force --type fixed >/dev/null
"$V" read exp/data.vhd | cmp -s - ref/now.data || die "export of Now differs"
"$V" info --output=json exp/data.vhd >info.json
[ "$(json_get info.json type)" = fixed ] || die "export --type fixed: $(cat info.json)"
# delete the leaf 3: the hidden root has one dependent left and is merged away
"$V" checkpoint delete vm 3 >out.txt
grep -q "1 merge" out.txt || die "hidden node not merged away: $(cat out.txt)"
check_all vm
"$V" checkpoint list vm --output=json >list.json
python3 -c 'import json; d=json.load(open("list.json")); assert [c["id"] for c in d["checkpoints"]] == [4], d' ||
	die "tree after merging the hidden node: $(cat list.json)"
# subtree delete of everything: Now keeps its content, only base disks remain
"$V" checkpoint create vm --name last >/dev/null
snap_refs vm 5
"$V" checkpoint delete vm 4 --subtree >out.txt
grep -q "2 checkpoints removed" out.txt || die "subtree: $(cat out.txt)"
check_all vm
[ "$(ls vm | sort | tr '\n' ' ')" = "data.vhd lock os.vhd set.json " ] || die "files left: $(ls vm)"
"$V" checkpoint repair vm | grep -q "Nothing to repair" || die "repair of a clean set did something"
expect_check_clean vm/os.vhd
log "walk-through ok"

# ---- the lock ----------------------------------------------------------------
"$V" checkpoint create vm --name locked >/dev/null
python3 - vm/lock "$V" <<'EOF' || die "lock not enforced"
import fcntl, subprocess, sys
with open(sys.argv[1]) as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    r = subprocess.run([sys.argv[2], "checkpoint", "delete", "vm", "locked"], capture_output=True, text=True)
    assert r.returncode == 1 and "another command is working on this checkpoint set" in r.stderr, r
EOF
"$V" checkpoint list vm | grep -q locked || die "the refused delete changed the set"

# ---- bad usage -----------------------------------------------------------------
rc=0; "$V" checkpoint create 2>/dev/null || rc=$?
[ "$rc" = 2 ] || die "missing SET: exit $rc"
rc=0; "$V" checkpoint frobnicate vm 2>/dev/null || rc=$?
[ "$rc" = 2 ] || die "unknown subcommand: exit $rc"
rc=0; "$V" checkpoint list vm --subtree 2>/dev/null || rc=$?
[ "$rc" = 2 ] || die "stray option: exit $rc"
expect_fail "no checkpoint is named or numbered" "$V" checkpoint delete vm nosuch
expect_fail "there is no checkpoint 99" "$V" checkpoint apply vm 99
expect_fail "control characters" "$V" checkpoint rename vm locked $'bad\nname'
expect_fail "would read as a checkpoint id" "$V" checkpoint create vm --name 42
expect_fail "would read as the current state" "$V" checkpoint rename vm locked NOW
"$V" checkpoint create vm --name twin >/dev/null
"$V" checkpoint create vm --name twin >/dev/null
expect_fail '2 checkpoints are named "twin"; give the id' "$V" checkpoint apply vm twin
expect_fail "no checkpoint set here" "$V" checkpoint list nowhere
mkdir notaset
expect_fail "not a checkpoint set" "$V" checkpoint list notaset
"$V" create d1.vhd 1M >/dev/null
"$V" create --parent d1.vhd d2.vhd >/dev/null
expect_fail "differencing disk" "$V" checkpoint init s2 d2.vhd
expect_fail "not an empty directory" "$V" checkpoint init vm d1.vhd
mkdir sub && "$V" create sub/d1.vhd 1M >/dev/null
expect_fail "would both be disk" "$V" checkpoint init s3 d1.vhd sub/d1.vhd
[ -f d1.vhd ] && [ -f sub/d1.vhd ] && [ ! -e s3/set.json ] || die "a refused init moved files"
"$V" checkpoint init s4 --copy d2.vhd >/dev/null
[ -f d2.vhd ] || die "--copy moved the source"
"$V" checkpoint list s4 >/dev/null

# ---- bad metadata: refused, named, nothing changed -----------------------------
"$V" checkpoint create vm --name two >/dev/null
"$V" checkpoint create vm --name three >/dev/null
bad() { # NAME REGEX PYTHON-EDIT: a copy of vm edited, then every command refused
	local name=$1 re=$2 edit=$3 before
	rm -rf "bad-$name"
	cp -a vm "bad-$name"
	python3 -c "$edit" "bad-$name"
	before=$(state "bad-$name")
	expect_fail "$re" "$V" checkpoint list "bad-$name"
	expect_fail "$re" "$V" checkpoint create "bad-$name"
	expect_fail "$re" "$V" checkpoint delete "bad-$name" 2
	expect_fail "$re" "$V" checkpoint repair "bad-$name"
	[ "$before" = "$(state "bad-$name")" ] || die "$name: a refused command changed files"
}
J='import json,sys; p=sys.argv[1]+"/set.json"; d=json.load(open(p));'
W='; json.dump(d, open(p, "w"))'
bad truncated "set.json: damaged, not JSON" 'import sys; p=sys.argv[1]+"/set.json"; s=open(p).read(); open(p,"w").write(s[:len(s)//2])'
bad version "version 7 is not one" "$J d[\"version\"]=7 $W"
bad type 'checkpoint [0-9]+: "created" should be an integer' "$J d[\"checkpoints\"][0][\"created\"]=\"yesterday\" $W"
bad traversal 'is "\.\./\.\./etc/passwd": not a plain file name' "$J d[\"checkpoints\"][0][\"files\"][0]=\"../../etc/passwd\" $W"
bad missing-parent "parent 77 does not exist" "$J d[\"checkpoints\"][1][\"parent\"]=77 $W"
bad loop "parent links form a loop" "$J c=d[\"checkpoints\"]; c[0][\"parent\"]=c[1][\"id\"]; c[1][\"parent\"]=c[0][\"id\"] $W"
bad twice "file [^ ]+ is used twice" "$J d[\"checkpoints\"][1][\"files\"][0]=d[\"checkpoints\"][0][\"files\"][0] $W"
bad missing-disk 'file [^ ]+ is missing' "import os,json,sys; d=json.load(open(sys.argv[1]+'/set.json')); os.unlink(sys.argv[1]+'/'+d['checkpoints'][1]['files'][1])"
bad link "parent link \(unique id [0-9a-f-]+\) does not lead to" "$J c=d[\"checkpoints\"]; c[1][\"files\"], c[2][\"files\"] = c[2][\"files\"], c[1][\"files\"] $W"
bad not-vhd "Now disk \"os\".*(cookie|footer|VHD)" "import json,sys; d=json.load(open(sys.argv[1]+'/set.json')); open(sys.argv[1]+'/'+d['now']['files'][0],'w').write('garbage'*100)"
bad journal "journal.json: damaged, not JSON" 'import sys; open(sys.argv[1]+"/journal.json","w").write("{\"op\": ")'
bad journal-gen "describes generation 1 -> 2 but set.json is at generation" "$J j={\"format\":\"vhdstack-checkpoint-journal\",\"version\":1,\"op\":\"create\",\"from\":1,\"to\":2,\"new\":[],\"remove\":[],\"moves\":[],\"merges\":[],\"target\":dict(d, generation=2)}; json.dump(j, open(sys.argv[1]+\"/journal.json\",\"w\"))"
bad foreign-merge "unfinished merge that this set did not start" "import json,sys; d=json.load(open(sys.argv[1]+'/set.json')); open(sys.argv[1]+'/'+d['now']['files'][0]+'.merge-intent','w').write('vhdstack-merge 1\n')"
log "bad metadata ok"
