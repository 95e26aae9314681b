#!/bin/bash
# fixtures_public: vhdtool on third-party VHD files ($VHDSTACK_SHARED/fixtures/public,
# described in its README.md).  Fixtures are never modified: what needs
# changing is copied into a temp dir, and every fixture file is hashed before
# and after (the dfvfs files also against the sha256 the README documents).
#
# dfvfs/ext2.vhd               info (== qemu's size), check clean, read == qemu-img
#                              convert, e2fsck -fn on the read output
# dfvfs/image.vhd              footer checksum bad in both copies: info works and
#                              says so, check exits 1 naming "footer checksum",
#                              read works and equals qemu's read of a copy with the
#                              checksum repaired; e2fsck -fn passes; a write to
#                              a copy is refused and changes nothing
# dfvfs/image-differential.vhd both checksums bad; parent image.vhd found by the
#                              parent name in the same directory (in place and in
#                              a copy); data == image.vhd's; without the parent
#                              read fails
# dfvfs/fat-differential.vhd   parent fat-parent.vhd missing: read fails naming
#                              the parent and its unique id; info exits 0 and
#                              says the parent is missing; check exits 1; a
#                              write to a copy is refused.  In a copy: a decoy
#                              fat-parent.vhd with another unique id is refused;
#                              one carrying the right id is found (Windows
#                              locators / parent name) and the child reads as
#                              parent + the 18 sectors its bitmap marks present
# mkimg/*.vhd, *.vhdf          rebuilt with unhexdump.py: info and check clean,
#                              size as documented, read == qemu-img convert with
#                              force_size_calc=current_size; mbr groups: the raw
#                              image is a prefix, the rest zero
# other/gwacl footer           appended to 20 MiB of zeros: a vbox fixed VHD whose
#                              current size (not CHS) is the size
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_vhdtool
require python3 cmp
# Without qemu-img the comparisons with qemu are left out (and said so).
if command -v qemu-img >/dev/null 2>&1; then HAVE_QEMU=1; else HAVE_QEMU=0; fi
[ -n "${VHDSTACK_SHARED:-}" ] || skip "VHDSTACK_SHARED is not set"
PUB="$VHDSTACK_SHARED/fixtures/public"
[ -d "$PUB" ] || skip "no public fixtures at $PUB"
make_tmpdir

DF="$PUB/dfvfs" MK="$PUB/mkimg"
READ_NOTE="read == qemu"
[ "$HAVE_QEMU" = 1 ] || { READ_NOTE="read ok (qemu-img missing: not compared)"; log "qemu-img not installed: comparisons with qemu left out"; }
IMAGE_UUID=d49c5c80-350a-4a89-898a-5ad6d10f6578
FAT_PARENT_UUID=5fa21a55-f394-aa4d-9958-1951a67d5540

# sha256 documented in fixtures/public/README.md
declare -A DOC_SHA=(
	[ext2.vhd]=225f16a8d65ba442fbd9958606b60bb6001b33be024b90661baffd67f3210230
	[image.vhd]=6438e92bda74f4f2f190cc665ffa5179174a8d614a2e6a38d5eb3a794642a8a8
	[image-differential.vhd]=cde4d1356f5c47d697633ed3f5364f53d99ef1bc16867b903d86bdb7637eb7db
	[fat-differential.vhd]=17032553d22ecc1fbde8dbac6f21b320c73d09eb2b118e7cf8d3624ce7b7eed4
)

# Every fixture file, hashed now and compared at the end.
declare -A SHA_BEFORE=()
while IFS= read -r -d '' f; do
	SHA_BEFORE[$f]=$(sha256_of "$f")
done < <(find "$PUB" -type f -print0)

summary() { printf '%s: %-28s %s\n' "$TEST_NAME" "$1" "$2"; }

# run_tool OUT ERR CMD...: run vhdtool, status in $RC (never trips errexit).
run_tool() {
	local out=$1 err=$2
	shift 2
	RC=0
	"$VHDTOOL" "$@" >"$out" 2>"$err" || RC=$?
}

# unchanged FILE: the fixture still hashes as at the start.
unchanged() {
	[ "$(sha256_of "$1")" = "${SHA_BEFORE[$1]}" ] || die "$1 was modified"
}

# fix_checksums FILE: recompute the footer checksum(s) (head copy at 0 if it is a
# footer, and the tail) and the dynamic header checksum of a scratch copy.
fix_checksums() {
	python3 - "$1" <<'EOF'
import struct, sys
def csum(b, at):
    b = bytearray(b); b[at:at + 4] = b"\0\0\0\0"
    return (~sum(b)) & 0xFFFFFFFF
with open(sys.argv[1], "r+b") as f:
    f.seek(0, 2); size = f.tell()
    f.seek(size - 512); foot = bytearray(f.read(512))
    foot[64:68] = struct.pack(">I", csum(foot, 64))
    f.seek(size - 512); f.write(foot)
    f.seek(0)
    if f.read(8) == b"conectix":
        f.seek(0); f.write(foot)
    off = struct.unpack(">Q", foot[16:24])[0]
    if off != 0xFFFFFFFFFFFFFFFF:
        f.seek(off); h = bytearray(f.read(1024))
        h[36:40] = struct.pack(">I", csum(h, 36))
        f.seek(off); f.write(h)
EOF
}

# ---- dfvfs ------------------------------------------------------------------

check_documented_sha() {
	local f
	for f in "${!DOC_SHA[@]}"; do
		[ -f "$DF/$f" ] || skip "$DF/$f is missing"
		[ "${SHA_BEFORE[$DF/$f]}" = "${DOC_SHA[$f]}" ] ||
			die "$DF/$f has sha256 ${SHA_BEFORE[$DF/$f]}, the README documents ${DOC_SHA[$f]}"
	done
	summary "dfvfs sha256" "all 4 files as documented"
}

fx_ext2() {
	local img="$DF/ext2.vhd" d="$TMP/ext2" v q fsck="e2fsck not installed"
	mkdir "$d"
	run_tool "$d/info" "$d/err" info --output=json "$img"
	[ "$RC" = 0 ] || die "ext2.vhd: vhdtool info exited $RC: $(cat "$d/err")"
	v=$(json_get "$d/info" virtual-size)
	if [ "$HAVE_QEMU" = 1 ]; then
		q=$(qemu_vsize "$img" -f vpc)
		[ "$v" = "$q" ] || die "ext2.vhd: vhdtool virtual size $v, qemu-img $q"
	fi
	[ "$v" = 4212736 ] || die "ext2.vhd: virtual size $v, expected 4212736 (CHS 121/4/17)"
	[ "$(json_get "$d/info" type)" = dynamic ] || die "ext2.vhd: type is not dynamic"
	expect_check_clean "$img"
	run_tool "$d/out" "$d/err" read "$img" "$d/ext2.raw"
	[ "$RC" = 0 ] || die "ext2.vhd: vhdtool read exited $RC: $(cat "$d/err")"
	[ "$(stat -c %s "$d/ext2.raw")" = "$v" ] || die "ext2.vhd: read returned a wrong length"
	if [ "$HAVE_QEMU" = 1 ]; then
		qemu-img convert -U -f vpc -O raw "$img" "$d/ref.raw"
		cmp_files "$d/ext2.raw" "$d/ref.raw" "ext2.vhd: vhdtool read differs from qemu-img convert"
	fi
	if command -v e2fsck >/dev/null; then
		e2fsck -fn "$d/ext2.raw" >"$d/fsck" 2>&1 ||
			die "ext2.vhd: e2fsck -fn on the read data failed: $(cat "$d/fsck")"
		fsck="e2fsck clean"
	fi
	unchanged "$img"
	summary ext2.vhd "ok: dynamic $v bytes, check clean, $READ_NOTE, $fsck"
}

fx_image() {
	local img="$DF/image.vhd" d="$TMP/image" v
	mkdir "$d"
	run_tool "$d/info" "$d/err" info "$img"
	[ "$RC" = 0 ] || die "image.vhd: vhdtool info exited $RC: $(cat "$d/err")"
	grep -qi "checksum" "$d/info" "$d/err" ||
		die "image.vhd: vhdtool info does not mention the bad footer checksum: $(cat "$d/info" "$d/err")"
	run_tool "$d/info.json" "$d/err" info --output=json "$img"
	[ "$RC" = 0 ] || die "image.vhd: vhdtool info --output=json exited $RC"
	[ "$(json_get "$d/info.json" footer-checksum-ok)" = false ] ||
		die "image.vhd: info says footer-checksum-ok is not false"
	v=$(json_get "$d/info.json" virtual-size)
	[ "$v" = 104448 ] || die "image.vhd: virtual size $v, expected 104448 (CHS 3/4/17)"
	[ "$(json_get "$d/info.json" unique-id)" = "$IMAGE_UUID" ] ||
		die "image.vhd: unique id is not $IMAGE_UUID"

	run_tool "$d/check" "$d/err" check "$img"
	[ "$RC" = 1 ] || die "image.vhd: vhdtool check exited $RC, expected 1: $(cat "$d/check" "$d/err")"
	grep -q "footer checksum" "$d/check" ||
		die "image.vhd: check output does not name the footer checksum: $(cat "$d/check")"

	run_tool "$d/out" "$d/err" read "$img" "$d/image.raw"
	[ "$RC" = 0 ] || die "image.vhd: vhdtool read exited $RC: $(cat "$d/err")"
	[ "$(stat -c %s "$d/image.raw")" = 104448 ] || die "image.vhd: read returned a wrong length"
	# qemu refuses the bad checksum; it reads a repaired copy.
	cp "$img" "$d/repaired.vhd"
	fix_checksums "$d/repaired.vhd"
	if [ "$HAVE_QEMU" = 1 ]; then
		qemu-img convert -f vpc -O raw "$d/repaired.vhd" "$d/ref.raw"
		cmp_files "$d/image.raw" "$d/ref.raw" "image.vhd: vhdtool read differs from qemu's read of the repaired copy"
	fi
	if command -v e2fsck >/dev/null; then
		e2fsck -fn "$d/image.raw" >"$d/fsck" 2>&1 ||
			die "image.vhd: e2fsck -fn on the read data failed: $(cat "$d/fsck")"
	fi
	expect_check_clean "$d/repaired.vhd"
	# No sound footer copy: documented as read-only; a write must be refused
	# and leave the (copied) file as it was.
	cp "$img" "$d/copy.vhd"
	printf 'x' >"$d/x"
	run_tool "$d/out" "$d/err" write "$d/copy.vhd" --offset 0 "$d/x"
	[ "$RC" != 0 ] || die "image.vhd (copy): vhdtool write succeeded on an image with no sound footer"
	cmp_files "$d/copy.vhd" "$img" "image.vhd (copy): a refused write changed the file"
	unchanged "$img"
	summary image.vhd "ok: bad footer checksum reported (info, check=1), $READ_NOTE (repaired copy), write refused"
}

# diff_reads_as_parent DIR WHAT: image-differential.vhd in DIR resolves image.vhd
# in DIR and reads as image.vhd.
diff_reads_as_parent() {
	local dir=$1 what=$2 d="$TMP/imgdiff.$3" p
	mkdir "$d"
	run_tool "$d/info" "$d/err" info --output=json "$dir/image-differential.vhd"
	[ "$RC" = 0 ] || die "$what: vhdtool info exited $RC: $(cat "$d/err")"
	[ "$(json_get "$d/info" type)" = differencing ] || die "$what: type is not differencing"
	[ "$(json_get "$d/info" parent-unique-id)" = "$IMAGE_UUID" ] || die "$what: parent unique id"
	p=$(python3 -c 'import json,os,sys; c=json.load(open(sys.argv[1]))["chain"]; print(len(c), os.path.realpath(c[-1]["filename"]))' "$d/info")
	[ "$p" = "2 $(realpath "$dir/image.vhd")" ] ||
		die "$what: chain is '$p', expected 2 members ending in $dir/image.vhd"
	run_tool "$d/out" "$d/err" read "$dir/image-differential.vhd" "$d/diff.raw"
	[ "$RC" = 0 ] || die "$what: vhdtool read exited $RC: $(cat "$d/err")"
	run_tool "$d/out" "$d/err" read "$dir/image.vhd" "$d/parent.raw"
	[ "$RC" = 0 ] || die "$what: vhdtool read image.vhd exited $RC: $(cat "$d/err")"
	cmp_files "$d/diff.raw" "$d/parent.raw" "$what: the child does not read as image.vhd"
	run_tool "$d/check" "$d/err" check "$dir/image-differential.vhd"
	[ "$RC" = 1 ] || die "$what: check exited $RC, expected 1 (bad checksums): $(cat "$d/check" "$d/err")"
	grep -q "footer checksum" "$d/check" || die "$what: check does not name the footer checksum"
	grep -q "header checksum" "$d/check" || die "$what: check does not name the header checksum"
}

fx_image_diff() {
	local c="$TMP/imgdiff-copy" d="$TMP/imgdiff-alone"
	diff_reads_as_parent "$DF" "image-differential.vhd (in place)" inplace
	mkdir "$c" "$d"
	cp "$DF/image-differential.vhd" "$DF/image.vhd" "$c/"
	diff_reads_as_parent "$c" "image-differential.vhd (copy)" copy
	# The child alone: its parent cannot be found.
	cp "$DF/image-differential.vhd" "$d/"
	run_tool "$d/out" "$d/err" read "$d/image-differential.vhd" "$d/x.raw"
	[ "$RC" = 1 ] || die "image-differential.vhd without image.vhd: read exited $RC, expected 1"
	grep -q parent "$d/err" || die "image-differential.vhd alone: read error does not mention the parent: $(cat "$d/err")"
	unchanged "$DF/image-differential.vhd"
	unchanged "$DF/image.vhd"
	summary image-differential.vhd "ok: parent found by name (in place and copied), reads as image.vhd"
}

fx_fat_diff() {
	local img="$DF/fat-differential.vhd" d="$TMP/fat"
	mkdir "$d"
	run_tool "$d/out" "$d/err" read "$img" "$d/x.raw"
	[ "$RC" = 1 ] || die "fat-differential.vhd: read exited $RC, expected 1: $(cat "$d/err")"
	if ! grep -q parent "$d/err" || ! grep -qi "$FAT_PARENT_UUID" "$d/err"; then
		die "fat-differential.vhd: read error must name the parent and $FAT_PARENT_UUID: $(cat "$d/err")"
	fi
	run_tool "$d/info" "$d/err" info "$img"
	[ "$RC" = 0 ] || die "fat-differential.vhd: info exited $RC, expected 0: $(cat "$d/err")"
	grep -qi "not found" "$d/info" ||
		die "fat-differential.vhd: info does not report the parent as not found: $(cat "$d/info")"
	grep -qi "$FAT_PARENT_UUID" "$d/info" || die "fat-differential.vhd: info does not show the parent id"
	run_tool "$d/info.json" "$d/err" info --output=json "$img"
	[ "$RC" = 0 ] || die "fat-differential.vhd: info --output=json exited $RC"
	[ "$(json_get "$d/info.json" parent-unique-id)" = "$FAT_PARENT_UUID" ] ||
		die "fat-differential.vhd: parent-unique-id in JSON"
	json_get "$d/info.json" parent-error >/dev/null 2>&1 ||
		die "fat-differential.vhd: JSON info has no parent-error"
	[ "$(json_get "$d/info.json" virtual-size)" = 4194304 ] ||
		die "fat-differential.vhd: virtual size is not the current size 4194304"
	run_tool "$d/check" "$d/err" check "$img"
	[ "$RC" = 1 ] || die "fat-differential.vhd: check exited $RC, expected 1: $(cat "$d/check" "$d/err")"
	grep -q parent "$d/check" || die "fat-differential.vhd: check does not mention the parent"
	unchanged "$img"
	# Writing needs the parent too (partial sectors, reads of the rest): refused,
	# the (copied) file unchanged.
	mkdir "$d/alone"
	cp "$img" "$d/alone/"
	printf 'x' >"$d/x"
	run_tool "$d/out" "$d/err" write "$d/alone/fat-differential.vhd" --offset 1 "$d/x"
	[ "$RC" != 0 ] || die "fat-differential.vhd (copy): vhdtool write succeeded without the parent"
	cmp_files "$d/alone/fat-differential.vhd" "$img" "fat-differential.vhd (copy): a refused write changed the file"

	# A decoy parent with another unique id must be refused.
	cp "$img" "$d/"
	"$VHDTOOL" create -t dynamic "$d/fat-parent.vhd" 4194304 >/dev/null
	run_tool "$d/out" "$d/err" read "$d/fat-differential.vhd" "$d/x.raw"
	[ "$RC" = 1 ] || die "fat-differential.vhd: a decoy parent with the wrong unique id was accepted"
	grep -qi "$FAT_PARENT_UUID" "$d/err" || die "fat-differential.vhd (decoy): error lacks the parent id"

	# A parent carrying the right unique id (patched into a vhdtool image) is found
	# through the Windows locators, and the child overlays it sector by sector.
	rm -f "$d/fat-parent.vhd"
	"$VHDTOOL" create -t dynamic "$d/fat-parent.vhd" 4194304 >/dev/null
	python3 -c 'import sys; sys.stdout.buffer.write(bytes([0x5A]) * 4194304)' >"$d/parent.raw"
	"$VHDTOOL" write "$d/fat-parent.vhd" <"$d/parent.raw"
	python3 - "$d/fat-parent.vhd" "$FAT_PARENT_UUID" <<'EOF'
import sys, uuid
with open(sys.argv[1], "r+b") as f:
    f.seek(0, 2); size = f.tell()
    for at in (0, size - 512):
        f.seek(at + 68); f.write(uuid.UUID(sys.argv[2]).bytes)
EOF
	fix_checksums "$d/fat-parent.vhd"
	expect_check_clean "$d/fat-parent.vhd"
	# Expected: the parent's bytes, except the sectors the child's bitmap marks.
	python3 - "$d/fat-differential.vhd" "$d/parent.raw" "$d/expected.raw" <<'EOF'
import struct, sys
child, parent, out = sys.argv[1:4]
data = bytearray(open(parent, "rb").read())
with open(child, "rb") as f:
    f.seek(0, 2); f.seek(f.tell() - 512); foot = f.read(512)
    hdr_off = struct.unpack(">Q", foot[16:24])[0]
    f.seek(hdr_off); h = f.read(1024)
    table = struct.unpack(">Q", h[16:24])[0]
    entries, bs = struct.unpack(">II", h[28:36])
    f.seek(table); bat = struct.unpack(">%dI" % entries, f.read(4 * entries))
    bm_size = ((bs // 512 + 7) // 8 + 511) // 512 * 512
    present = 0
    for i, e in enumerate(bat):
        if e == 0xFFFFFFFF:
            continue
        f.seek(e * 512); bm = f.read(bm_size)
        for s in range(bs // 512):
            v = i * bs + s * 512
            if v < len(data) and bm[s >> 3] & (0x80 >> (s & 7)):
                f.seek(e * 512 + bm_size + s * 512)
                data[v:v + 512] = f.read(512)
                present += 1
open(out, "wb").write(data)
if present == 0:
    sys.exit("the child's bitmap marks no sector present (the README says 18)")
EOF
	run_tool "$d/info2" "$d/err" info --output=json "$d/fat-differential.vhd"
	[ "$RC" = 0 ] || die "fat-differential.vhd (right parent): info exited $RC: $(cat "$d/err")"
	[ "$(realpath "$(json_get "$d/info2" parent)")" = "$(realpath "$d/fat-parent.vhd")" ] ||
		die "fat-differential.vhd: parent resolved to $(json_get "$d/info2" parent)"
	run_tool "$d/out" "$d/err" read "$d/fat-differential.vhd" "$d/child.raw"
	[ "$RC" = 0 ] || die "fat-differential.vhd (right parent): read exited $RC: $(cat "$d/err")"
	cmp_files "$d/child.raw" "$d/expected.raw" \
		"fat-differential.vhd over a parent of 0x5a: not parent + the child's present sectors"
	expect_check_clean "$d/fat-differential.vhd"
	summary fat-differential.vhd "ok: missing parent reported (read=1, info=0, check=1); decoy refused; right id found and overlaid"
}

# ---- mkimg ------------------------------------------------------------------

# expected virtual sizes from the README (vhd: CHS product = current size;
# vhdf: the current size, larger than CHS)
declare -A MK_SIZE=(
	[img-1x1-512-gpt.vhd]=4352000 [img-1x1-512-mbr.vhd]=4352000
	[img-63x255-4096-gpt.vhd]=8225280 [img-63x255-4096-mbr.vhd]=16450560
	[img-1x1-512-gpt.vhdf]=5242880 [img-1x1-512-mbr.vhdf]=5242880
	[img-63x255-4096-gpt.vhdf]=8388608 [img-63x255-4096-mbr.vhdf]=16777216
)

fx_mkimg_one() {
	local name=$1 d="$TMP/mkimg" img v rawlen extra=""
	img="$d/$name"
	python3 "$MK/unhexdump.py" "$MK/$name.gz" "$img"
	run_tool "$img.info" "$img.err" info --output=json "$img"
	[ "$RC" = 0 ] || die "$name: vhdtool info exited $RC: $(cat "$img.err")"
	v=$(json_get "$img.info" virtual-size)
	[ "$v" = "${MK_SIZE[$name]}" ] || die "$name: virtual size $v, the README says ${MK_SIZE[$name]}"
	expect_check_clean "$img"
	run_tool "$img.out" "$img.err" read "$img" "$img.raw"
	[ "$RC" = 0 ] || die "$name: vhdtool read exited $RC: $(cat "$img.err")"
	[ "$(stat -c %s "$img.raw")" = "$v" ] || die "$name: read returned a wrong length"
	if [ "$HAVE_QEMU" = 1 ]; then
		qemu-img convert --image-opts "driver=vpc,force_size_calc=current_size,file.filename=$img" \
			-O raw "$img.ref"
		cmp_files "$img.raw" "$img.ref" "$name: vhdtool read differs from qemu-img convert (current_size)"
	fi
	case $name in
	*-mbr.*)
		local raw="$d/${name%.*}.raw"
		[ -f "$raw" ] || python3 "$MK/unhexdump.py" "$MK/${name%.*}.raw.gz" "$raw"
		rawlen=$(stat -c %s "$raw")
		cmp -n "$rawlen" "$img.raw" "$raw" >/dev/null ||
			die "$name: the first $rawlen bytes differ from ${name%.*}.raw: $(cmp -n "$rawlen" "$img.raw" "$raw" 2>&1)"
		cmp -i "$rawlen:0" -n $((v - rawlen)) "$img.raw" /dev/zero >/dev/null 2>&1 ||
			die "$name: bytes after the raw image's $rawlen are not all zero"
		extra=", raw prefix + zeros"
		;;
	esac
	rm -f "$img.raw" "$img.ref"
	summary "$name" "ok: $(json_get "$img.info" type) $v bytes ($(json_get "$img.info" size-source)), check clean, $READ_NOTE$extra"
}

# ---- other ------------------------------------------------------------------

fx_gwacl() {
	local foot="$PUB/other/gwacl-vbox-fixed-20MiB-footer.bin" d="$TMP/gwacl" img v
	[ -f "$foot" ] || skip "$foot is missing"
	mkdir "$d"
	img="$d/vbox-fixed.vhd"
	truncate -s 20971520 "$img"
	cat "$foot" >>"$img"
	run_tool "$d/info" "$d/err" info --output=json "$img"
	[ "$RC" = 0 ] || die "gwacl footer: info exited $RC: $(cat "$d/err")"
	v=$(json_get "$d/info" virtual-size)
	[ "$v" = 20971520 ] || die "gwacl footer (vbox): virtual size $v, expected the current size 20971520"
	[ "$(json_get "$d/info" type)" = fixed ] || die "gwacl footer: not fixed"
	expect_check_clean "$img"
	run_tool "$d/out" "$d/err" read "$img" "$d/out.raw"
	[ "$RC" = 0 ] || die "gwacl footer: read exited $RC: $(cat "$d/err")"
	if [ "$(stat -c %s "$d/out.raw")" != 20971520 ] || ! cmp -n 20971520 "$d/out.raw" /dev/zero >/dev/null 2>&1; then
		die "gwacl footer: read is not 20971520 zero bytes"
	fi
	if [ "$HAVE_QEMU" = 1 ]; then
		qemu-img convert --image-opts "driver=vpc,force_size_calc=current_size,file.filename=$img" \
			-O raw "$d/ref.raw"
		cmp_files "$d/out.raw" "$d/ref.raw" "gwacl footer: read differs from qemu-img convert (current_size)"
	fi
	unchanged "$foot"
	summary gwacl-vbox-fixed-footer "ok: vbox fixed, current size 20971520 (qemu 7.2 default says CHS 20959232)"
}

fx_unchanged() {
	local f n=0
	for f in "${!SHA_BEFORE[@]}"; do
		unchanged "$f"
		n=$((n + 1))
	done
	summary "fixtures unchanged" "$n files hash as before"
}

run_case "dfvfs documented sha256" check_documented_sha
run_case ext2.vhd fx_ext2
run_case image.vhd fx_image
run_case image-differential.vhd fx_image_diff
run_case fat-differential.vhd fx_fat_diff
mkdir "$TMP/mkimg"
for f in "$MK"/*.vhd.gz "$MK"/*.vhdf.gz; do
	name=$(basename "$f" .gz)
	run_case "mkimg/$name" fx_mkimg_one "$name"
done
run_case other/gwacl fx_gwacl
run_case "fixtures unchanged" fx_unchanged
finish
