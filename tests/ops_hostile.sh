#!/usr/bin/env bash
# Every image operation on damaged and hostile images: a clear error that
# names the file, a failing exit status, and not one byte of any input changed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_vhdtool
require python3
make_tmpdir
cd "$TMP"
V=$VHDTOOL

# good material
"$V" create -b 64K good.vhd 8M >/dev/null
head -c 1M /dev/urandom | "$V" write good.vhd --offset 1M
"$V" create --parent good.vhd goodchild.vhd >/dev/null
printf 'child' | "$V" write goodchild.vhd --offset 100

# the damaged set
cp good.vhd truncated.vhd && truncate -s 100000 truncated.vhd
cp good.vhd nocookie.vhd
python3 - nocookie.vhd <<'PY'
import os, sys
p = sys.argv[1]; f = open(p, "r+b"); n = os.path.getsize(p)
f.seek(0); f.write(b"XXXXXXXX"); f.seek(n - 512); f.write(b"XXXXXXXX")
PY
cp good.vhd batbeyond.vhd
python3 - batbeyond.vhd <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); f.seek(1536); f.write(struct.pack(">I", 0x00FFFFF0))
PY
cp good.vhd badblock.vhd
python3 - badblock.vhd <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); f.seek(512); h = bytearray(f.read(1024))
h[32:36] = struct.pack(">I", 3 * 65536 // 2)
h[36:40] = b"\0\0\0\0"; h[36:40] = struct.pack(">I", ~sum(h) & 0xffffffff)
f.seek(512); f.write(h)
PY
mkdir orphan # a child whose parent is gone
"$V" create orphan/gone.vhd 8M >/dev/null
"$V" create --parent orphan/gone.vhd orphan/orphan.vhd >/dev/null
rm orphan/gone.vhd
head -c 70000 /dev/urandom >junk.vhd

bad=(truncated.vhd nocookie.vhd batbeyond.vhd badblock.vhd orphan/orphan.vhd junk.vhd)
sums() { sha256sum good.vhd goodchild.vhd "${bad[@]}"; }
before=$(sums)

expect_fail() { # WHAT FILE CMD...: CMD must fail and name FILE
	local what=$1 file=$2 rc=0
	shift 2
	"$@" >out.txt 2>err.txt || rc=$?
	[ "$rc" != 0 ] || die "$what on $file succeeded: $(cat out.txt)"
	grep -qF -- "$(basename "$file")" err.txt ||
		die "$what on $file: the error does not name the file: $(cat err.txt)"
	rm -f out.vhd out.raw
}
n=0
for f in "${bad[@]}"; do
	expect_fail convert "$f" "$V" convert -f vhd "$f" out.vhd
	expect_fail convert-raw "$f" "$V" convert -f vhd -O raw "$f" out.raw
	expect_fail merge "$f" "$V" merge "$f"
	expect_fail resize "$f" "$V" resize "$f" 16M
	# (compacting a child needs no parent: allowed on the orphan)
	[ "$f" = orphan/orphan.vhd ] || expect_fail compact "$f" "$V" compact "$f"
	expect_fail set-parent "$f" "$V" set-parent "$f" good.vhd
	expect_fail rebase "$f" "$V" rebase "$f" good.vhd
	expect_fail compare "$f" "$V" compare -f vhd "$f" good.vhd
	# (info describes an orphan and says its parent is missing: allowed)
	[ "$f" = orphan/orphan.vhd ] || expect_fail info "$f" "$V" info "$f"
	expect_fail read "$f" "$V" read "$f" --length 512
	expect_fail write "$f" sh -c "printf x | '$V' write '$f'"
	# a damaged parent or new parent is refused too
	expect_fail set-parent-to "$f" "$V" set-parent --force goodchild.vhd "$f"
	expect_fail rebase-onto "$f" "$V" rebase goodchild.vhd "$f"
	n=$((n + 13))
	[ ! -e out.vhd ] && [ ! -e out.raw ] || die "a failed convert left an output"
	ls ./*.part-* >/dev/null 2>&1 && die "a failed convert left a partial file"
done
# repair refuses what it cannot fix without guessing (and changes nothing)
for f in truncated.vhd batbeyond.vhd badblock.vhd junk.vhd; do
	expect_fail repair "$f" "$V" repair "$f"
	n=$((n + 1))
done
[ "$before" = "$(sums)" ] || die "an operation changed an input:"$'\n'"$(diff <(echo "$before") <(sums))"
log "ok: $n refusals, no input changed"
