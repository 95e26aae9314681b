#!/usr/bin/env bash
# vhdtool's interface: help for every command, exit codes, sizes and their
# limits, JSON output, clear errors, locking, read-only never writing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_vhdtool
require python3
make_tmpdir
cd "$TMP"
V=$VHDTOOL

expect_exit() { # CODE CMD...: run CMD, its exit status must be CODE
	local want=$1 got=0
	shift
	"$@" >out.txt 2>err.txt || got=$?
	[ "$got" = "$want" ] || { cat out.txt err.txt; die "'$*' exited $got, expected $want"; }
}
expect_err() { # TEXT: the last command's stderr contains TEXT
	grep -qF -- "$1" err.txt || { cat err.txt; die "stderr lacks \"$1\""; }
}
jq_py() { python3 -c "import json,sys; d=json.load(open('$1')); print($2)"; }

# help: the tool and every command
expect_exit 0 "$V" --help
grep -q "Commands:" out.txt || die "--help lists no commands"
for c in create info check map read write; do
	expect_exit 0 "$V" "$c" --help
	grep -q "^Usage: vhdtool $c" out.txt || die "$c --help has no usage line"
	expect_exit 0 "$V" help "$c"
done
expect_exit 0 "$V" --version
expect_exit 2 "$V" frobnicate
expect_err "unknown command"
expect_exit 2 "$V"

# create: sizes, suffixes, limits
expect_exit 0 "$V" create a.vhd 64M
expect_exit 1 "$V" create a.vhd 64M
expect_err "already exists"
expect_exit 0 "$V" create --force a.vhd 32M
expect_exit 2 "$V" create b.vhd
expect_err "missing SIZE"
expect_exit 2 "$V" create b.vhd 12Q
expect_exit 1 "$V" create --size 2041G big.vhd
expect_err "2040 GiB"
[ ! -e big.vhd ] || die "refused create left a file"
expect_exit 0 "$V" create --size 2040G --output=json max.vhd
[ "$(jq_py out.txt "d['virtual-size']")" = $((2040 << 30)) ] || die "2040G not exact"
if command -v qemu-img >/dev/null; then
	qemu-img info -f vpc --output=json max.vhd >q.json
	[ "$(jq_py q.json "d['virtual-size']")" = $((2040 << 30)) ] || die "qemu-img disagrees on 2040G"
fi
expect_exit 0 "$V" create odd.vhd 1000
grep -q "rounded up from 1000" out.txt || die "rounding not reported"
expect_exit 1 "$V" create --block-size 3M bs.vhd 10M
expect_err "block size"
expect_exit 0 "$V" create --block-size 512K bs.vhd 10M
expect_exit 1 "$V" create --parent missing.vhd c.vhd
expect_err "missing.vhd"
expect_exit 2 "$V" create --parent a.vhd c.vhd 10M
expect_exit 0 "$V" create --type fixed f.vhd 3M
[ "$(stat -c %s f.vhd)" = $((3 * 1024 * 1024 + 512)) ] || die "fixed file size wrong"

# info JSON
expect_exit 0 "$V" info --output=json a.vhd
[ "$(jq_py out.txt "d['type']")" = dynamic ] || die "info type"
[ "$(jq_py out.txt "d['virtual-size']")" = $((32 << 20)) ] || die "info size"
[ "$(jq_py out.txt "d['creator-application']")" = "win " ] || die "creator"
[ "$(jq_py out.txt "d['geometry']")" = "963/4/17" ] || die "geometry $(jq_py out.txt "d['geometry']")"
expect_exit 0 "$V" create --parent a.vhd c.vhd
expect_exit 0 "$V" info --output=json c.vhd
[ "$(jq_py out.txt "len(d['chain'])")" = 2 ] || die "chain length"
[ "$(jq_py out.txt "d['chain'][1]['type']")" = dynamic ] || die "chain parent type"

# write/read, bounds
printf 'abc' >abc
expect_exit 0 "$V" write a.vhd --offset $((32 * 1024 * 1024 - 3)) abc
expect_exit 1 "$V" write a.vhd --offset $((32 * 1024 * 1024 - 2)) abc
expect_err "would pass the end"
expect_exit 1 "$V" read a.vhd --offset $((32 << 20)) --length 1
expect_err "beyond the virtual size"
"$V" read a.vhd --offset $((32 * 1024 * 1024 - 3)) --length 3 | cmp - abc || die "read back"

# check exit codes: clean 0, garbage 1, missing 2
expect_exit 0 "$V" check a.vhd
expect_exit 0 "$V" check --output=json c.vhd
[ "$(jq_py out.txt "d['check-errors']")" = 0 ] || die "check json"
head -c 100000 /dev/urandom >junk.vhd
expect_exit 1 "$V" check junk.vhd
grep -q "footer cookie" out.txt || die "junk: no footer-cookie problem named"
expect_exit 2 "$V" check nope.vhd

# read-only commands never write
sum=$(sha256sum a.vhd c.vhd)
"$V" info a.vhd >/dev/null; "$V" check c.vhd >/dev/null; "$V" map c.vhd >/dev/null
"$V" read c.vhd >/dev/null
[ "$sum" = "$(sha256sum a.vhd c.vhd)" ] || die "a read-only command changed an image"

# locking: a writer is refused while another process holds the image
if command -v flock >/dev/null; then
	flock -s c.vhd sleep 3 &
	sleep 0.5
	expect_exit 1 "$V" write c.vhd abc
	expect_err "in use"
	expect_exit 0 "$V" read c.vhd --length 3 # readers share
	wait
	# the parent of an open child is share-locked too: no writer may change it
	expect_exit 0 "$V" write c.vhd abc
fi

# map JSON covers the whole disk without gaps
expect_exit 0 "$V" map --output=json c.vhd
python3 - out.txt $((32 << 20)) <<'PY'
import json, sys
ext = json.load(open(sys.argv[1])); pos = 0
for e in ext:
    assert e["start"] == pos, (e, pos); pos += e["length"]
assert pos == int(sys.argv[2]), pos
PY
log "ok"
