#!/usr/bin/env bash
# vhdtool resize on the command line: fixed, dynamic (BAT in place and
# relocated) and differencing disks, absolute and relative sizes, refusals
# with their exit codes and JSON, --discard; after every resize the content
# equals a raw reference (cut, or extended with zeros), vhdtool check is
# clean, and qemu-img agrees on the size and (fixed/dynamic) the content --
# also for images qemu itself created (CHS-sized "qemu", force_size "qem2"),
# and qemu can keep writing into a resized image.
# SEED=<n> replays a run; KEEP_TMP=1 keeps its files.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_vhdtool
require python3
make_tmpdir
pick_seed
cd "$TMP"
V=$VHDTOOL
RANDOM=$((SEED % 32768))
HAVE_QEMU=0
if command -v qemu-img >/dev/null && command -v qemu-io >/dev/null; then
	HAVE_QEMU=1
else
	log "qemu-img/qemu-io not installed: the qemu cross-checks are skipped"
fi
M=$((1024 * 1024))

# write_rand IMG REF N [LO [HI]]: N random writes into IMG within [LO, HI),
# mirrored into the raw REF.
write_rand() {
	local img=$1 ref=$2 n=$3 lo=${4:-0} hi=${5:-} i off len
	[ -n "$hi" ] || hi=$(stat -c %s "$ref")
	for ((i = 0; i < n; i++)); do
		len=$(((RANDOM * 37 + RANDOM) % 200000 + 1))
		[ "$len" -lt $((hi - lo)) ] || len=$((hi - lo))
		off=$((lo + (((RANDOM << 15) | RANDOM) % (hi - lo - len + 1))))
		head -c "$len" /dev/urandom >chunk
		"$V" write "$img" --offset "$off" chunk
		dd if=chunk of="$ref" bs=1M oflag=seek_bytes seek="$off" conv=notrunc status=none
	done
}
# same IMG REF: content, size (vhdtool and qemu), check
same() {
	local img=$1 ref=$2 size
	size=$(stat -c %s "$ref")
	[ "$(vhd_vsize "$img")" = "$size" ] || die "$img: vhdtool says $(vhd_vsize "$img") bytes, expected $size"
	"$V" read "$img" | cmp - "$ref" >/dev/null || die "$img does not read as $ref"
	expect_check_clean "$img"
}
same_qemu() {
	local img=$1 ref=$2 size
	same "$img" "$ref"
	[ "$HAVE_QEMU" = 1 ] || return 0
	size=$(stat -c %s "$ref")
	[ "$(qemu_vsize "$img" -f vpc)" = "$size" ] ||
		die "$img: qemu-img says $(qemu_vsize "$img" -f vpc) bytes, expected $size"
	qemu-img compare -q -U -f vpc -F raw "$img" "$ref" || die "qemu-img compare: $img differs from $ref"
}
# resize_ref REF SIZE: the reference after a resize (cut, or zeros appended)
resize_ref() { truncate -s "$2" "$1"; }
# expect_fail RC CMD...: CMD must exit RC
expect_rc() {
	local want=$1 rc=0
	shift
	"$@" >out.txt 2>err.txt || rc=$?
	[ "$rc" = "$want" ] || die "$* exited $rc, expected $want: $(cat err.txt out.txt)"
}

case_usage() {
	"$V" resize --help >help.txt
	grep -q -- "--discard" help.txt && grep -q "saved state" help.txt && grep -q "Exit status" help.txt ||
		die "resize --help is incomplete"
	"$V" create d.vhd 8M >/dev/null
	expect_rc 2 "$V" resize d.vhd
	expect_rc 2 "$V" resize d.vhd 12Q
	expect_rc 2 "$V" resize d.vhd -8M
	expect_rc 2 "$V" resize --bogus d.vhd 8M
	expect_rc 1 "$V" resize missing.vhd 8M
	expect_rc 1 "$V" resize d.vhd 2041G
	grep -q "2040 GiB" err.txt || die "no 2040 GiB in: $(cat err.txt)"
	expect_rc 1 "$V" resize d.vhd +2040G
	"$V" resize d.vhd 2040G >/dev/null
	expect_check_clean d.vhd
}

case_fixed() {
	"$V" create -t fixed f.vhd 24M >/dev/null
	truncate -s 24M ref.raw
	write_rand f.vhd ref.raw 10
	"$V" write f.vhd --offset $((24 * M - 512)) <<<"last sector" # right before the footer
	printf 'last sector\n' | dd of=ref.raw bs=1 seek=$((24 * M - 512)) conv=notrunc status=none
	"$V" resize f.vhd +8M >/dev/null
	resize_ref ref.raw 32M
	same_qemu f.vhd ref.raw # the old footer reads as zeros
	[ "$(stat -c %s f.vhd)" = $((32 * M + 512)) ] || die "fixed file size after grow"
	# shrink over data refused, with the offset, exit 1, nothing changed
	sum=$(sha256_of f.vhd)
	expect_rc 1 "$V" resize f.vhd 10M
	grep -q "non-zero data at offset" err.txt || die "refusal without offset: $(cat err.txt)"
	[ "$sum" = "$(sha256_of f.vhd)" ] || die "a refused shrink changed the file"
	"$V" resize --discard f.vhd -- -22M >/dev/null
	resize_ref ref.raw 10M
	same_qemu f.vhd ref.raw
	[ "$(stat -c %s f.vhd)" = $((10 * M + 512)) ] || die "fixed file size after shrink"
	# odd size: rounded up to a sector
	"$V" resize --output=json f.vhd 12345678 >out.json
	[ "$(json_get out.json new-size)" = 12345856 ] || die "rounding: $(cat out.json)"
	resize_ref ref.raw 12345856
	same_qemu f.vhd ref.raw
}

case_dynamic() {
	local bs=$1 size=$2 grow=$3
	rm -f d.vhd ref.raw
	"$V" create -b "$bs" d.vhd "$size" >/dev/null
	truncate -s "$size" ref.raw
	write_rand d.vhd ref.raw 12
	"$V" info --output=json d.vhd >i0.json
	"$V" resize --output=json d.vhd "$grow" >out.json
	[ "$(json_get out.json old-size)" = "$(numfmt --from=iec "$size")" ] || die "old-size: $(cat out.json)"
	[ "$(json_get out.json type)" = dynamic ] || die "type: $(cat out.json)"
	resize_ref ref.raw "$grow"
	same_qemu d.vhd ref.raw
	"$V" info --output=json d.vhd >i1.json
	[ "$(json_get i1.json max-table-entries)" = $(($(stat -c %s ref.raw) / $(numfmt --from=iec "$bs"))) ] ||
		die "max-table-entries $(json_get i1.json max-table-entries) after growing to $grow"
	# qemu writes into the grown disk (past the old end), we read it back
	if [ "$HAVE_QEMU" = 1 ]; then
		local off=$(($(stat -c %s ref.raw) - 3 * M - 4096))
		qemu-io -f vpc -c "write -q -P 0x5a $off 1M" d.vhd >/dev/null
		python3 - "$off" <<'EOF'
import sys
off = int(sys.argv[1])
with open("ref.raw", "r+b") as f:
    f.seek(off)
    f.write(b"\x5a" * (1 << 20))
EOF
		same_qemu d.vhd ref.raw
	fi
	# shrink refused over data (JSON names the offset), then --discard
	expect_rc 1 "$V" resize --output=json d.vhd "$size"
	python3 -c 'import json,sys; d=json.load(open("out.txt")); assert d["first-allocated-beyond"] >= int(sys.argv[1]), d' \
		"$(numfmt --from=iec "$size")" || die "JSON of a refused shrink: $(cat out.txt)"
	"$V" resize --discard d.vhd "$size" >/dev/null
	resize_ref ref.raw "$size"
	same_qemu d.vhd ref.raw
	# same size again: nothing to do
	"$V" resize d.vhd "$size" >out.txt
	grep -q "already" out.txt || die "same-size resize said: $(cat out.txt)"
	same_qemu d.vhd ref.raw
}

case_differencing() {
	rm -f base.vhd child.vhd ref.raw
	"$V" create -b 512K base.vhd 20M >/dev/null
	truncate -s 20M ref.raw
	write_rand base.vhd ref.raw 8
	"$V" create --parent base.vhd child.vhd >/dev/null
	write_rand child.vhd ref.raw 8
	psum=$(sha256_of base.vhd)
	"$V" resize child.vhd +44M >/dev/null
	resize_ref ref.raw 64M
	same child.vhd ref.raw
	write_rand child.vhd ref.raw 6 $((20 * M - 100000)) $((64 * M))
	same child.vhd ref.raw
	expect_rc 1 "$V" resize child.vhd 10M # the parent's data lies beyond
	"$V" resize --discard child.vhd 10M >/dev/null
	resize_ref ref.raw 10M
	same child.vhd ref.raw
	[ "$psum" = "$(sha256_of base.vhd)" ] || die "the parent changed"
}

# Images qemu made: "qemu" (size from CHS: the nearest geometry above is
# made and reported) and "qem2" (force_size: exact).
case_qemu_images() {
	[ "$HAVE_QEMU" = 1 ] || exit 77
	local sub fs want got
	for sub in dynamic fixed; do
		for fs in off on; do
			rm -f q.vhd ref.raw
			qemu-img create -q -f vpc -o subformat=$sub,force_size=$fs q.vhd 30M
			size=$(qemu_vsize q.vhd -f vpc)
			truncate -s "$size" ref.raw
			qemu-io -f vpc -c "write -q -P 0x33 $((size - 70000)) 70000" -c "write -q -P 0x44 4096 100000" q.vhd >/dev/null
			python3 - "$size" <<'EOF'
import sys
size = int(sys.argv[1])
with open("ref.raw", "r+b") as f:
    f.seek(size - 70000); f.write(b"\x33" * 70000)
    f.seek(4096); f.write(b"\x44" * 100000)
EOF
			"$V" resize --output=json q.vhd 100M >out.json
			got=$(json_get out.json new-size)
			want=$((100 * M))
			if [ "$fs" = on ]; then
				[ "$got" = "$want" ] || die "qem2 $sub: new size $got, expected $want"
			else
				[ "$got" -ge "$want" ] && [ "$got" -lt $((want + 4080 * 512)) ] ||
					die "qemu $sub: new size $got not just above $want"
			fi
			resize_ref ref.raw "$got"
			same_qemu q.vhd ref.raw
			log "qemu-made $sub force_size=$fs: 30M -> 100M gives $got bytes"
		done
	done
}

case_saved_state() {
	"$V" create ss.vhd 8M >/dev/null
	python3 - <<'EOF'
import os, struct
def patch(buf):
    b = bytearray(buf)
    b[84] = 1
    b[64:68] = b"\0\0\0\0"
    struct.pack_into(">I", b, 64, (~sum(b)) & 0xffffffff)
    return bytes(b)
with open("ss.vhd", "r+b") as f:
    size = os.fstat(f.fileno()).st_size
    f.seek(size - 512); tail = patch(f.read(512))
    f.seek(size - 512); f.write(tail)
    f.seek(0); f.write(tail)
EOF
	sum=$(sha256_of ss.vhd)
	expect_rc 1 "$V" resize ss.vhd 16M
	grep -q "saved state" err.txt || die "saved state refusal: $(cat err.txt)"
	[ "$sum" = "$(sha256_of ss.vhd)" ] || die "a refused resize changed the file"
}

run_case usage case_usage
run_case fixed case_fixed
run_case "dynamic 2M 64M->512M (BAT in place)" case_dynamic 2M 64M 512M
run_case "dynamic 2M 64M->2G (BAT relocated)" case_dynamic 2M 64M 2G
run_case "dynamic 64K 20M->300M" case_dynamic 64K 20M 300M
run_case "dynamic 4K 6M->40M" case_dynamic 4K 6M 40M
run_case differencing case_differencing
run_case "qemu-made images" case_qemu_images
run_case "saved state" case_saved_state
finish
