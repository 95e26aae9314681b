#!/usr/bin/env bash
# nbd_torture: several clients at once on one vhd-vspd with two exports, a
# fresh dynamic VHD ("dyn", 512 KiB blocks: allocation races) and a
# differencing child over a parent full of data ("child"):
#   - fio (ioengine=nbd, 2 jobs, iodepth 32, random writes of 4-64 KiB,
#     verify=crc32c with a verify backlog) on each export, twice: into new
#     blocks, then over allocated ones;
#   - meanwhile nbdcopy and qemu-io read the regions fio does not touch,
#     over and over, and compare them with what they must hold (data of the
#     parent, through the child, while its blocks are being allocated);
# then: SIGTERM stops the server (exit 0), both images check clean, the
# parent is unchanged, and the data is verified independently of the server:
# fio verify_only over the raw disk read by vhdtool (not through NBD), and,
# after a restart, fio verify_only through NBD and nbdcopy == vhdtool read.
# SEED=<n> replays a run; KEEP_TMP=1 keeps the files.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd_lib.sh"
require fio nbdcopy qemu-io
nbd_setup
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio was built without the nbd engine"

SIZE=$((128 << 20))
FIO_SPAN=$((96 << 20))      # fio's jobs: [0, 96M), 48 MiB each
TAIL=$((96 << 20))          # random data [96M, 112M), pattern 0xa5 [112M, 128M)
PAT=$((112 << 20))

# images --------------------------------------------------------------------------------
"$V" create -b 512K dyn.vhd 128M >/dev/null
"$V" create -b 512K parent.vhd 128M >/dev/null
head -c $((PAT - TAIL)) /dev/urandom >tail.bin
python3 -c "import sys; sys.stdout.buffer.write(b'\xa5' * ($SIZE - $PAT))" >pat.bin
for img in dyn parent; do
	"$V" write "$img.vhd" --offset $TAIL tail.bin >/dev/null
	"$V" write "$img.vhd" --offset $PAT pat.bin >/dev/null
done
# the parent holds data under fio's range too, so the child's writes land
# over parent data and its reads fall through to the parent
head -c $((32 << 20)) /dev/urandom >p1.bin
"$V" write parent.vhd --offset $((8 << 20)) p1.bin >/dev/null
"$V" write parent.vhd --offset $((60 << 20)) p1.bin >/dev/null
"$V" create -p parent.vhd child.vhd >/dev/null
hp=$(sha256_of parent.vhd)

# fio job: ENGINE (nbd/psync), TARGET (uri=... or filename=...), FIOSEED,
# VERIFY_ONLY (0/1), from the environment
cat >job.fio <<'EOF'
[global]
ioengine=${ENGINE}
${TARGET}
rw=randwrite
bsrange=4k-64k
iodepth=32
size=48m
offset_increment=48m
numjobs=2
verify=crc32c
verify_fatal=1
verify_backlog=512
verify_only=${VERIFY_ONLY}
randseed=${FIOSEED}
group_reporting=1
[torture]
EOF

# run_fio ENGINE TARGET SEED VERIFY_ONLY OUT: one fio run, its output in OUT
run_fio() {
	local target
	if [ "$1" = nbd ]; then target="uri=$2"; else target="filename=$2"; fi
	TARGET=$target ENGINE=$1 FIOSEED=$3 VERIFY_ONLY=$4 fio job.fio --output="$5" >"$5.err" 2>&1 ||
		return 1
	grep -q 'err= 0' "$5"
}

# reader_nbdcopy EXPORT TAG: copies the whole export again and again until
# the stop file appears; the untouched regions must read as they should.
reader_nbdcopy() {
	local export=$1 tag=$2 n=0
	while [ ! -e stop ]; do
		nbdcopy "$(uri_of "$export")" "r-$tag.raw" || { echo "nbdcopy failed" >"bad-$tag"; return 1; }
		cmp -s -i $TAIL:0 -n $((PAT - TAIL)) "r-$tag.raw" tail.bin ||
			{ echo "random region differs in pass $n" >"bad-$tag"; return 1; }
		cmp -s -i $PAT:0 -n $((SIZE - PAT)) "r-$tag.raw" pat.bin ||
			{ echo "pattern region differs in pass $n" >"bad-$tag"; return 1; }
		n=$((n + 1))
		echo "$n" >"passes-$tag"
	done
}

# reader_qemu EXPORT TAG: qemu-io reads of the pattern region, many small
# reads per run, each checked by qemu-io itself (read -P).
reader_qemu() {
	local export=$1 tag=$2 n=0 i
	local -a args=()
	for ((i = 0; i < 64; i++)); do
		args+=(-c "read -q -P 0xa5 $((PAT + ((RANDOM * 32768 + RANDOM) % ((SIZE - PAT) / 4096 - 16)) * 4096)) 64k")
	done
	while [ ! -e stop ]; do
		qemu-io -r -f raw "${args[@]}" "$(uri_of "$export")" >"q-$tag.out" 2>&1 &&
			[ ! -s "q-$tag.out" ] || { cat "q-$tag.out" >"bad-$tag"; return 1; }
		n=$((n + 1))
		echo "$n" >"passes-$tag"
	done
}

start_vspd torture -e dyn=dyn.vhd -e child=child.vhd
srv=$SRV_PID
for pass in 1 2; do
	rm -f stop bad-* passes-*
	seed_p=$((SEED % 1000000 + pass))
	reader_nbdcopy dyn cd & r1=$!
	reader_nbdcopy child cc & r2=$!
	reader_qemu child qc & r3=$!
	reader_qemu dyn qd & r4=$!
	t0=$(date +%s.%N)
	run_fio nbd "$(uri_of dyn)" $seed_p 0 fio-dyn-$pass.out & f1=$!
	run_fio nbd "$(uri_of child)" $seed_p 0 fio-child-$pass.out & f2=$!
	rc1=0 rc2=0
	wait $f1 || rc1=$?
	wait $f2 || rc2=$?
	t1=$(date +%s.%N)
	touch stop
	for r in $r1 $r2 $r3 $r4; do
		wait "$r" || true
	done
	[ "$rc1" = 0 ] || die "pass $pass: fio on dyn failed: $(cat fio-dyn-$pass.out.err; grep -iE 'err|verify' fio-dyn-$pass.out | head)"
	[ "$rc2" = 0 ] || die "pass $pass: fio on child failed: $(cat fio-child-$pass.out.err; grep -iE 'err|verify' fio-child-$pass.out | head)"
	for t in cd cc qc qd; do
		[ ! -e "bad-$t" ] || die "pass $pass: concurrent reader $t: $(cat "bad-$t")"
		[ -s "passes-$t" ] || die "pass $pass: concurrent reader $t never finished a pass"
	done
	log "pass $pass: fio write+verify on both exports in $(python3 -c "print(round($t1 - $t0, 1))") s;" \
		"reader passes: nbdcopy $(cat passes-cd)+$(cat passes-cc), qemu-io $(cat passes-qc)+$(cat passes-qd);" \
		"$(grep -o 'WRITE: bw=[^,]*' fio-dyn-$pass.out) (dyn)"
	kill -0 "$srv" || die "the server died"
done
stop_vspd "$srv"
expect_check_clean dyn.vhd
expect_check_clean child.vhd
[ "$(sha256_of parent.vhd)" = "$hp" ] || die "the parent changed"

# independent verification: the disks as vhdtool reads them
for img in dyn child; do
	raw_of "$img.vhd" "$img.raw"
	run_fio psync "$img.raw" $((SEED % 1000000 + 2)) 1 "verify-$img.out" ||
		die "fio verify_only of $img as read by vhdtool: $(grep -iE 'err|verify' "verify-$img.out" | head)"
	cmp -s -i $TAIL:0 -n $((PAT - TAIL)) "$img.raw" tail.bin || die "$img: random region changed"
	cmp -s -i $PAT:0 -n $((SIZE - PAT)) "$img.raw" pat.bin || die "$img: pattern region changed"
done
# the parent's data still shows through the child where fio never wrote
"$V" read parent.vhd --offset $FIO_SPAN >p.tail
"$V" read child.vhd --offset $FIO_SPAN | cmp -s - p.tail || die "child's tail is not the parent's"

# and through a restarted server
start_vspd again -r -e dyn=dyn.vhd -e child=child.vhd
for img in dyn child; do
	run_fio nbd "$(uri_of $img)" $((SEED % 1000000 + 2)) 1 "verify-nbd-$img.out" ||
		die "fio verify_only of $img through NBD: $(grep -iE 'err|verify' "verify-nbd-$img.out" | head)"
	nbdcopy "$(uri_of $img)" "n-$img.raw"
	cmp_files "n-$img.raw" "$img.raw" "$img through NBD vs vhdtool"
done
stop_vspd
log PASS
