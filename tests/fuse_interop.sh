#!/usr/bin/env bash
# fuse_interop: partitions of images written by others.
#
# qemu-mbr     a raw disk with an MBR (two primaries, an extended partition
#              with three logical ones), each partition filled with its own
#              random data, converted to a dynamic VHD by qemu-img: the mount
#              shows p1 p2 p3 (extended) p5 p6 p7 with the extents partx reads
#              from the raw, and every p<N> equals the range qemu-img dd
#              extracts from the VHD.  Writes through p5 and p7 land where
#              qemu-img reads them.
# qemu-gpt     the same with a GPT (a partition up to the last usable LBA)
#              and a fixed VHD written by qemu-img
# mkimg        the FreeBSD mkimg fixtures (dynamic and fixed VHD, MBR with a
#              BSD label inside a slice, GPT with freebsd-ufs and -swap):
#              the partitions libblkid's partx finds on the raw variant, with
#              the same content; fixtures never change
# dfvfs        ext2.vhd: no table, the whole-disk ext2 named by info.json;
#              image.vhd (bad footer checksum) mounts read-only by itself and
#              says why; image-differential.vhd reads through to it
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse_lib.sh"
require_fuse
require qemu-img sfdisk partx cmp
pick_seed
fuse_tmpdir

# fill_partitions RAW: each partition of RAW's table gets seeded random data.
fill_partitions() {
	python3 - "$1" "$SEED" <<'EOF'
import random, subprocess, sys
raw, r = sys.argv[1], random.Random(sys.argv[2])
out = subprocess.run(["partx", "-b", "-g", "-o", "NR,START,SECTORS,TYPE", raw],
                     capture_output=True, text=True, check=True).stdout
with open(raw, "r+b") as f:
    for line in out.splitlines():
        nr, start, sectors, typ = line.split()[:4]
        if typ in ("0x5", "0xf", "0x85"):
            continue   # the extended container holds the EBR chain
        # leave the first sector of each logical alone?  no: only EBRs sit
        # before the partitions, the partitions themselves are free to fill
        f.seek(int(start) * 512)
        f.write(r.randbytes(int(sectors) * 512))
EOF
}

# expect_parts MNT RAW: the mount's partitions are partx's partitions of RAW
# (number, start, size), and each p<N> file has exactly that size.
expect_parts() {
	local mnt=$1 raw=$2 want got
	want=$(partx -b -g -o NR,START,SECTORS "$raw" | awk '{printf "%s:%s:%s ", $1, $2 * 512, $3 * 512}')
	got=$(info_get "$mnt" '" ".join("%d:%d:%d" % (p["number"], p["start"], p["size"]) for p in d["partition-table"]["partitions"])')
	[ "${want% }" = "$got" ] || die "partitions: partx says '$want', the mount '$got'"
	for p in $got; do
		[ "$(stat -c %s "$mnt/p${p%%:*}")" = "${p##*:}" ] || die "p${p%%:*} has the wrong size"
	done
}

# expect_content MNT IMG FMT: every p<N> equals qemu-img dd's extract.
# (qemu-img 7.2's dd counts count= from the start of the input, skipped
# blocks included: the end block is skip + length.)
expect_content() {
	local mnt=$1 img=$2 fmt=$3 nr start size bs
	while read -r nr start size; do
		rm -f "$TMP/extract"
		# qemu-img dd is slow in small blocks: the largest that fits (<= 1 MiB)
		bs=1048576
		while [ $((start % bs)) != 0 ] || [ $((size % bs)) != 0 ]; do bs=$((bs / 2)); done
		qemu-img dd -f "$fmt" -O raw bs=$bs skip=$((start / bs)) count=$(((start + size) / bs)) \
			if="$img" of="$TMP/extract" 2>/dev/null || die "qemu-img dd of p$nr failed"
		[ "$(stat -c %s "$TMP/extract")" = "$size" ] || die "qemu-img dd extracted $(stat -c %s "$TMP/extract") bytes of p$nr, not $size"
		cmp "$mnt/p$nr" "$TMP/extract" || die "p$nr differs from qemu-img dd's extract"
	done < <(info_get "$mnt" '"\n".join("%d %d %d" % (p["number"], p["start"], p["size"]) for p in d["partition-table"]["partitions"])')
}

case_qemu_mbr() {
	local raw=$TMP/mbr.raw img=$TMP/mbr.vhd mnt=$TMP/m-mbr s5 s7
	truncate -s 48M "$raw"
	printf 'label: dos\nsize=8MiB, type=83\nsize=6MiB, type=c\ntype=5\nsize=10MiB, type=83\nsize=3MiB, type=82\ntype=83\n' |
		sfdisk -q "$raw" >/dev/null
	fill_partitions "$raw"
	qemu-img convert -f raw -O vpc -o subformat=dynamic "$raw" "$img"
	vmount -r "$img" "$mnt"
	[ "$(info_get "$mnt" 'd["partition-table"]["type"]')" = dos ] || die "not an MBR"
	expect_parts "$mnt" "$raw"
	[ "$(info_get "$mnt" '[p["number"] for p in d["partition-table"]["partitions"] if p["logical"]]')" = "[5, 6, 7]" ] ||
		die "logical partitions: $(info_get "$mnt" 'd["partition-table"]')"
	[ "$(info_get "$mnt" '[p["number"] for p in d["partition-table"]["partitions"] if p["extended"]]')" = "[3]" ] ||
		die "extended partition is not p3"
	expect_content "$mnt" "$img" vpc
	vunmount "$mnt"
	# writes through logical partitions land where qemu reads them
	vmount "$img" "$mnt"
	head -c 1000000 /dev/urandom >"$TMP/w5"
	dd if="$TMP/w5" of="$mnt/p5" bs=1000000 seek=2 conv=notrunc status=none
	dd if="$TMP/w5" of="$mnt/p7" bs=1000000 seek=$(($(stat -c %s "$mnt/p7") - 1000000)) oflag=seek_bytes conv=notrunc status=none
	s5=$(info_get "$mnt" '[p["start"] for p in d["partition-table"]["partitions"] if p["number"] == 5][0]')
	s7=$(info_get "$mnt" '[p["start"] + p["size"] for p in d["partition-table"]["partitions"] if p["number"] == 7][0]')
	vunmount "$mnt"
	python3 - "$img" "$s5" "$s7" "$TMP/w5" <<'EOF' || die "writes through p5/p7 not where qemu reads them"
import subprocess, sys
img, s5, s7, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), open(sys.argv[4], "rb").read()
raw = img + ".raw"
subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", img, raw], check=True)
d = open(raw, "rb").read()
assert d[s5 + 2000000:s5 + 3000000] == w, "p5"
assert d[s7 - 1000000:s7] == w, "p7"
EOF
	expect_check_clean "$img"
}

case_qemu_gpt() {
	local raw=$TMP/gpt.raw img=$TMP/gpt.vhd mnt=$TMP/m-gpt
	truncate -s 40M "$raw"
	printf 'label: gpt\nsize=5MiB\nsize=7MiB, name="second one"\ntype=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n' |
		sfdisk -q "$raw" >/dev/null
	fill_partitions "$raw"
	qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$raw" "$img"
	vmount -r "$img" "$mnt"
	[ "$(info_get "$mnt" 'd["partition-table"]["type"]')" = gpt ] || die "not a GPT"
	[ "$(info_get "$mnt" 'd["chain"][0]["type"]')" = fixed ] || die "not a fixed VHD"
	expect_parts "$mnt" "$raw"
	[ "$(info_get "$mnt" 'd["partition-table"]["partitions"][1]["name"]')" = "second one" ] ||
		die "GPT partition name lost"
	expect_content "$mnt" "$img" vpc
	cmp "$mnt/disk" "$raw" || die "disk differs from the raw qemu converted"
	vunmount "$mnt"
}

case_mkimg() {
	local mk=$VHDSTACK_SHARED/fixtures/public/mkimg g f img raw mnt=$TMP/m-mk sum
	[ -d "$mk" ] || skip "no mkimg fixtures at $mk"
	for g in img-1x1-512-gpt img-1x1-512-mbr img-63x255-4096-gpt img-63x255-4096-mbr; do
		raw=$TMP/$g.raw
		python3 "$mk/unhexdump.py" "$mk/$g.raw.gz" "$raw"
		for f in vhd vhdf; do
			img=$TMP/$g.$f
			python3 "$mk/unhexdump.py" "$mk/$g.$f.gz" "$img"
			sum=$(sha256_of "$img")
			vmount -r "$img" "$mnt"
			case $g in
			*gpt) [ "$(info_get "$mnt" 'd["partition-table"]["type"]')" = gpt ] || die "$g.$f: not gpt"
			      [ "$(info_get "$mnt" '[p["type"] for p in d["partition-table"]["partitions"]]')" = \
			        '["516e7cb6-6ecf-11d6-8ff8-00022d09712b", "516e7cb5-6ecf-11d6-8ff8-00022d09712b"]' ] ||
				      die "$g.$f: not freebsd-ufs + freebsd-swap" ;;
			*mbr) [ "$(info_get "$mnt" 'd["partition-table"]["partitions"][0]["type"]')" = 0xa5 ] ||
				      die "$g.$f: p1 is not a FreeBSD slice" ;;
			esac
			expect_parts "$mnt" "$raw"
			# the partition contents are the raw fixture's
			while read -r nr start size; do
				cmp "$mnt/p$nr" <(dd if="$raw" bs=512 skip=$((start / 512)) count=$((size / 512)) status=none) ||
					die "$g.$f: p$nr differs from the raw fixture"
			done < <(info_get "$mnt" '"\n".join("%d %d %d" % (p["number"], p["start"], p["size"]) for p in d["partition-table"]["partitions"])')
			vunmount "$mnt"
			[ "$(sha256_of "$img")" = "$sum" ] || die "$g.$f changed"
			log "mkimg $g.$f: $(partx -b -g -o NR "$raw" | tr -s ' \n' ' ')partitions as partx"
		done
	done
}

case_dfvfs() {
	local df=$VHDSTACK_SHARED/fixtures/public/dfvfs mnt=$TMP/m-df
	[ -d "$df" ] || skip "no dfvfs fixtures at $df"
	cp "$df/ext2.vhd" "$df/image.vhd" "$df/image-differential.vhd" "$TMP/"
	vmount -r "$TMP/ext2.vhd" "$mnt"
	[ "$(info_get "$mnt" 'd["partition-table"]')" = null ] || die "ext2.vhd: a partition table?"
	[ "$(info_get "$mnt" 'd["filesystem"]["type"] + ":" + d["filesystem"]["label"]')" = ext2:ext2_test ] ||
		die "ext2.vhd: filesystem $(info_get "$mnt" 'd["filesystem"]')"
	vunmount "$mnt"
	vmount "$TMP/image.vhd" "$mnt"
	[ "$(info_get "$mnt" 'd["mode"]')" = read-only ] || die "image.vhd (bad footer) not read-only"
	info_get "$mnt" 'd["read-only-reason"]' | grep -qi footer || die "image.vhd: reason does not name the footer"
	[ "$(info_get "$mnt" 'd["filesystem"]["type"]')" = ext2 ] || die "image.vhd: no ext2 seen"
	cp "$mnt/disk" "$TMP/image.raw"
	vunmount "$mnt"
	vmount -r "$TMP/image-differential.vhd" "$mnt"
	cmp "$mnt/disk" "$TMP/image.raw" || die "image-differential.vhd does not read as image.vhd"
	vunmount "$mnt"
	cmp "$TMP/ext2.vhd" "$df/ext2.vhd" && cmp "$TMP/image.vhd" "$df/image.vhd" || die "a dfvfs copy changed"
}

run_case qemu-mbr case_qemu_mbr
run_case qemu-gpt case_qemu_gpt
run_case mkimg case_mkimg
run_case dfvfs case_dfvfs
finish
