#!/usr/bin/env bash
# fuse_modes: what a mount allows and refuses.
#
# readonly      -r: writes fail with EROFS (write, truncate, fallocate), the
#               image file's sha256 is unchanged after reading everything
# snapshot      --snapshot: writes are read back while mounted, the child is
#               already deleted, the image never changes (sha256), also over a
#               differencing chain; after unmount the image reads as before
# auto-ro       an image on a read-only file system, and one with a damaged
#               footer, mount read-only by themselves and info.json says why
# lock          a read-write mount refuses a second mount (rw or -r) and
#               vhdtool write, naming the lock; two -r mounts share; after
#               vhdtool unmount the lock is free at once
# bounds        sizes exact; a write at the end is ENOSPC, one across it is
#               short; truncate refused (EFBIG growing, EPERM shrinking);
#               O_TRUNC ignored (dd without conv=notrunc); a write at a partition's end never touches
#               the next partition; info.json is read-only
# zero-seek     punch hole / zero range read back as zeros and allocate
#               nothing where the disk already reads zeros; SEEK_DATA and
#               SEEK_HOLE follow the allocation
# durable       after fsync the data and its metadata are in the image file
#               (read with vhdtool -U while mounted); close after writing too
# unaligned     random writes of odd offsets and lengths through disk and a
#               partition, mirrored into a model: the disk equals the model,
#               also read by qemu-img after unmount
# cli           vhdmount binary mount/-u, -f in the foreground stopped by
#               SIGTERM, --output=json, errors (not a mount point, mounted
#               twice, missing image), no allow_other unless asked
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse_lib.sh"
require_fuse
require sfdisk qemu-img flock
pick_seed
fuse_tmpdir

# pyio SCRIPT ARGS...: small I/O probes; SCRIPT is Python with argv in A.
pyio() {
	local code=$1
	shift
	python3 -c "import os, sys, errno; A = sys.argv[1:]
$code" "$@"
}

# expect_errno ERRNAME PYTHON: the statement must raise OSError ERRNAME.
expect_errno() {
	pyio "
try:
    $2
except OSError as e:
    sys.exit(0 if errno.errorcode.get(e.errno) == '$1' else 'got ' + errno.errorcode.get(e.errno, str(e.errno)))
sys.exit('no error')" || die "expected $1 from: $2"
}

# An image with content: a GPT with two partitions and a pattern.
make_image() {
	local img=$1 mnt=$TMP/mk
	"$VHDTOOL" create --type dynamic --size 64M "$img" >/dev/null
	vmount "$img" "$mnt"
	printf 'label: gpt\nsize=24MiB\nsize=24MiB\n' | sfdisk -q "$mnt/disk" >/dev/null
	head -c 3M /dev/urandom | dd of="$mnt/p1" bs=1M conv=notrunc status=none
	vunmount "$mnt"
}

case_readonly() {
	local img=$TMP/ro.vhd mnt=$TMP/m-ro sum
	make_image "$img"
	sum=$(sha256_of "$img")
	vmount -r "$img" "$mnt"
	[ "$(info_get "$mnt" 'd["mode"]')" = read-only ] || die "mode is not read-only"
	cat "$mnt/disk" "$mnt/p1" "$mnt/p2" "$mnt/info.json" >/dev/null
	expect_errno EROFS "os.open('$mnt/disk', os.O_WRONLY)"
	expect_errno EROFS "os.truncate('$mnt/p1', 0)"
	[ "$(stat -c %a "$mnt/disk")" = 444 ] || die "disk mode is not 0444 read-only"
	vunmount "$mnt"
	[ "$(sha256_of "$img")" = "$sum" ] || die "a read-only mount changed the image"
}

case_snapshot() {
	local img=$TMP/snap.vhd child=$TMP/snapc.vhd mnt=$TMP/m-snap sum csum child_path
	make_image "$img"
	"$VHDTOOL" read "$img" --offset 0 --length 8M >"$TMP/snap.before"
	sum=$(sha256_of "$img")
	vmount --snapshot "$img" "$mnt"
	[ "$(info_get "$mnt" 'd["mode"]')" = snapshot ] || die "mode is not snapshot"
	child_path=$(info_get "$mnt" 'd["mount"]["snapshot-child"]')
	case $child_path in *" (deleted)") ;; *) die "snapshot child not marked deleted: $child_path" ;; esac
	[ ! -e "${child_path% (deleted)}" ] || die "the snapshot child file still exists"
	head -c 5M /dev/urandom >"$TMP/snap.data"
	dd if="$TMP/snap.data" of="$mnt/disk" bs=1M seek=1 conv=notrunc,fsync status=none
	cmp <(dd if="$mnt/disk" bs=1M skip=1 count=5 status=none) "$TMP/snap.data" ||
		die "snapshot writes do not read back"
	# no second writer while the snapshot reads the image
	! "$VHDTOOL" write "$img" --offset 0 </dev/null 2>/dev/null || die "image writable during --snapshot"
	vunmount "$mnt"
	[ "$(sha256_of "$img")" = "$sum" ] || die "--snapshot changed the image"
	"$VHDTOOL" read "$img" --offset 0 --length 8M | cmp - "$TMP/snap.before" ||
		die "image content changed after --snapshot"
	# over a differencing chain: neither member changes
	"$VHDTOOL" create --parent "$img" "$child" >/dev/null
	csum=$(sha256_of "$child")
	vmount --snapshot "$child" "$mnt"
	[ "$(info_get "$mnt" 'len(d["chain"])')" = 3 ] || die "snapshot of a child: chain is not 3 deep"
	dd if="$TMP/snap.data" of="$mnt/p2" bs=1M conv=notrunc status=none
	vunmount "$mnt"
	[ "$(sha256_of "$child")" = "$csum" ] && [ "$(sha256_of "$img")" = "$sum" ] ||
		die "--snapshot of a child changed the chain"
}

case_auto_ro() {
	local ro=$TMP/rofs mnt=$TMP/m-auto img=$TMP/bad.vhd sum
	mkdir -p "$ro"
	if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=80m tmpfs "$ro" 2>/dev/null; then
		register kmount "$ro"
		make_image "$ro/i.vhd"
		mount -o remount,ro "$ro" || die "remount ro failed"
		vmount "$ro/i.vhd" "$mnt"
		[ "$(info_get "$mnt" 'd["mode"]')" = read-only ] || die "image on a read-only fs not mounted read-only"
		info_get "$mnt" 'd["read-only-reason"]' | grep -q "Read-only file system" ||
			die "read-only reason: $(info_get "$mnt" 'd.get("read-only-reason")')"
		grep -q "read-only" "$TMP/.mount.out" || die "mount did not say it went read-only: $(cat "$TMP/.mount.out")"
		vunmount "$mnt"
	else
		log "auto-ro: no tmpfs mount here; the read-only file system part is left out"
	fi
	# a damaged trailing footer: the library refuses to write, we serve it read-only
	make_image "$img"
	printf 'X' | dd of="$img" bs=1 seek=$(($(stat -c %s "$img") - 512 + 70)) conv=notrunc status=none
	sum=$(sha256_of "$img")
	vmount "$img" "$mnt"
	[ "$(info_get "$mnt" 'd["mode"]')" = read-only ] || die "damaged footer not mounted read-only"
	info_get "$mnt" 'd["read-only-reason"]' | grep -qi footer || die "reason does not name the footer"
	[ -f "$mnt/p1" ] || die "partitions not found on the damaged-footer image"
	vunmount "$mnt"
	[ "$(sha256_of "$img")" = "$sum" ] || die "the damaged image changed"
}

case_lock() {
	local img=$TMP/lock.vhd mnt=$TMP/m-lock out
	make_image "$img"
	mkdir -p "$TMP/m-lock2" "$TMP/m-lock3"
	vmount "$img" "$mnt"
	out=$("$VHDTOOL" mount "$img" "$TMP/m-lock2" 2>&1) && die "a second read-write mount succeeded"
	grep -q "in use" <<<"$out" || die "second mount: no lock message: $out"
	grep -q "two writers" <<<"$out" || die "second mount does not say why: $out"
	out=$("$VHDTOOL" mount -r "$img" "$TMP/m-lock2" 2>&1) && die "a read-only mount beside a writer succeeded"
	out=$(echo x | "$VHDTOOL" write "$img" --offset 0 2>&1) && die "vhdtool write beside a mount succeeded"
	vunmount "$mnt"
	# the lock is free as soon as unmount returns
	flock -n -x "$img" true || die "the image is still locked after vhdtool unmount"
	vmount -r "$img" "$mnt"
	vmount -r "$img" "$TMP/m-lock2"
	out=$("$VHDTOOL" mount "$img" "$TMP/m-lock3" 2>&1) && die "read-write mount beside readers succeeded"
	vunmount "$TMP/m-lock2"
	vunmount "$mnt"
}

case_bounds() {
	local img=$TMP/b.vhd mnt=$TMP/m-b s1 s2 p2first
	make_image "$img"
	vmount "$img" "$mnt"
	[ "$(stat -c %s "$mnt/disk")" = $((64 << 20)) ] || die "disk size"
	s1=$(info_get "$mnt" 'd["partition-table"]["partitions"][0]["size"]')
	[ "$(stat -c %s "$mnt/p1" 2>&1)" = "$s1" ] ||
		die "p1 size $(stat -c %s "$mnt/p1" 2>&1) != table $s1; listing: $(ls "$mnt" 2>&1)"
	expect_errno ENOSPC "fd = os.open('$mnt/disk', os.O_WRONLY); os.pwrite(fd, b'x', $((64 << 20)))"
	pyio "fd = os.open(A[0], os.O_WRONLY); n = os.pwrite(fd, b'y' * 4096, int(A[1]) - 100)
sys.exit(0 if n == 100 else 'short write returned %d' % n)" "$mnt/disk" $((64 << 20)) ||
		die "a write across the end is not cut short"
	expect_errno EFBIG "os.truncate('$mnt/disk', $((65 << 20)))"
	expect_errno EPERM "os.truncate('$mnt/disk', 4096)"
	pyio "os.truncate(A[0], int(A[1]))" "$mnt/disk" $((64 << 20)) || die "truncate to the same size refused"
	# O_TRUNC ignored: dd without conv=notrunc keeps size and the rest
	head -c 1M /dev/urandom >"$TMP/b.1m"
	dd if="$mnt/disk" of="$TMP/b.tail" bs=1M skip=40 count=1 status=none
	dd if="$TMP/b.1m" of="$mnt/p1" bs=1M status=none || die "dd without conv=notrunc failed"
	[ "$(stat -c %s "$mnt/p1")" = "$s1" ] || die "O_TRUNC changed the size"
	cmp <(head -c 1M "$mnt/p1") "$TMP/b.1m" || die "dd's data not in p1"
	cmp <(dd if="$mnt/disk" bs=1M skip=40 count=1 status=none) "$TMP/b.tail" || die "O_TRUNC lost data"
	# partition end: ENOSPC, and p2 untouched
	p2first=$(dd if="$mnt/p2" bs=512 count=1 status=none | sha256sum)
	expect_errno ENOSPC "fd = os.open('$mnt/p1', os.O_WRONLY); os.pwrite(fd, b'z' * 512, $s1)"
	pyio "fd = os.open(A[0], os.O_WRONLY); n = os.pwrite(fd, b'z' * 1024, int(A[1]) - 512)
sys.exit(0 if n == 512 else 'got %d' % n)" "$mnt/p1" "$s1" || die "write across p1's end not cut"
	[ "$(dd if="$mnt/p2" bs=512 count=1 status=none | sha256sum)" = "$p2first" ] || die "a p1 write reached p2"
	s2=$(info_get "$mnt" 'd["partition-table"]["partitions"][1]["start"]')
	cmp <(dd if="$mnt/disk" bs=512 skip=$((s2 / 512 - 1)) count=1 status=none) \
		<(head -c 512 /dev/zero | tr '\0' z) || die "p1's last sector not written through disk"
	expect_errno EACCES "os.open('$mnt/info.json', os.O_WRONLY)"
	expect_errno ENOENT "os.stat('$mnt/p3')"
	expect_errno ENOENT "os.stat('$mnt/nothing')"
	vunmount "$mnt"
	expect_check_clean "$img"
}

case_zero_seek() {
	local img=$TMP/z.vhd mnt=$TMP/m-z before after
	"$VHDTOOL" create --type dynamic --size 32M --block-size 1M "$img" >/dev/null
	vmount "$img" "$mnt"
	head -c 3M /dev/urandom | dd of="$mnt/disk" bs=1M seek=4 conv=notrunc status=none
	pyio "fd = os.open(A[0], os.O_RDONLY)
assert os.lseek(fd, 0, os.SEEK_DATA) == 4 << 20, 'SEEK_DATA 0'
assert os.lseek(fd, 4 << 20, os.SEEK_HOLE) == 7 << 20, 'SEEK_HOLE'
assert os.lseek(fd, 8 << 20, os.SEEK_HOLE) == 8 << 20, 'SEEK_HOLE in a hole'
try:
    os.lseek(fd, 8 << 20, os.SEEK_DATA); sys.exit('SEEK_DATA past the data')
except OSError as e:
    assert e.errno == errno.ENXIO" "$mnt/disk" || die "SEEK_DATA/SEEK_HOLE wrong"
	before=$(info_get "$mnt" 'd["chain"][0]["allocated-blocks"]')
	fallocate -p -o $(((4 << 20) + 1000)) -l 5000 "$mnt/disk" || die "punch hole failed"
	fallocate -z -o $((20 << 20)) -l $((6 << 20)) "$mnt/disk" || die "zero range failed"
	after=$(info_get "$mnt" 'd["chain"][0]["allocated-blocks"]')
	[ "$before" = "$after" ] || die "zeroing an unallocated range allocated blocks ($before -> $after)"
	cmp <(dd if="$mnt/disk" bs=1 skip=$(((4 << 20) + 1000)) count=5000 status=none) <(head -c 5000 /dev/zero) ||
		die "punched range does not read as zeros"
	! fallocate -l 1M "$mnt/disk" 2>/dev/null || die "plain fallocate should be refused (EOPNOTSUPP)"
	vunmount "$mnt"
	expect_check_clean "$img"
	cmp <("$VHDTOOL" read "$img" --offset $(((4 << 20) + 1000)) --length 5000) <(head -c 5000 /dev/zero) ||
		die "punched range not zero in the image"
}

case_durable() {
	local img=$TMP/d.vhd mnt=$TMP/m-d
	"$VHDTOOL" create --type dynamic --size 32M "$img" >/dev/null
	vmount "$img" "$mnt"
	head -c 300000 /dev/urandom >"$TMP/d.data"
	pyio "fd = os.open(A[0], os.O_WRONLY); os.pwrite(fd, open(A[1], 'rb').read(), 5 << 20); os.fsync(fd)
os.close(fd)" "$mnt/disk" "$TMP/d.data"
	# read the image file directly (no lock) while still mounted
	"$VHDTOOL" read -U "$img" --offset $((5 << 20)) --length 300000 | cmp - "$TMP/d.data" ||
		die "fsynced data not in the image file"
	dd if="$TMP/d.data" of="$mnt/disk" bs=300000 seek=50 conv=notrunc status=none
	"$VHDTOOL" read -U "$img" --offset $((50 * 300000)) --length 300000 | cmp - "$TMP/d.data" ||
		die "data written and closed not in the image file"
	[ "$(info_get "$mnt" 'd["mount"]["syncs"]')" -ge 2 ] || die "no fdatasync counted"
	vunmount "$mnt"
	expect_check_clean "$img"
}

case_unaligned() {
	local img=$TMP/u.vhd mnt=$TMP/m-u
	"$VHDTOOL" create --type dynamic --size 16M --block-size 64K "$img" >/dev/null
	vmount "$img" "$mnt"
	printf 'label: dos\nstart=2048, size=8MiB\n' | sfdisk -q "$mnt/disk" >/dev/null
	[ -f "$mnt/p1" ] || die "p1 missing"
	qemu-img create -q -f raw "$TMP/u.model" 16M
	python3 - "$mnt" "$TMP/u.model" "$SEED" <<'EOF' || die "unaligned writes did not read back"
import os, random, sys
mnt, model, r = sys.argv[1], sys.argv[2], random.Random(sys.argv[3])
m = open(model, "r+b")
m.write(open(mnt + "/disk", "rb").read(1 << 20)); m.flush()  # the MBR sfdisk wrote
size, pstart, psize = 16 << 20, 2048 * 512, 8 << 20
fds = {"disk": os.open(mnt + "/disk", os.O_RDWR), "p1": os.open(mnt + "/p1", os.O_RDWR)}
for i in range(400):
    name = r.choice(["disk", "p1"])
    base, lim = (0, size) if name == "disk" else (pstart, psize)
    off = r.randrange(0 if name == "p1" else 1 << 20, lim)  # keep the MBR
    n = min(r.choice([1, 3, 511, 513, 4097, r.randrange(1, 200000)]), lim - off)
    data = r.randbytes(n)
    assert os.pwrite(fds[name], data, off) == n
    m.seek(base + off); m.write(data)
    if i % 50 == 0:
        os.fsync(fds[name])
m.flush()
want = open(model, "rb").read()
got = os.pread(fds["disk"], size, 0)
while len(got) < size:
    got += os.pread(fds["disk"], size - len(got), len(got))
if got != want:
    bad = next(i for i in range(size) if got[i] != want[i])
    sys.exit("disk differs from the model at %d" % bad)
EOF
	vunmount "$mnt"
	expect_check_clean "$img"
	qemu-img compare -q -f vpc -F raw "$img" "$TMP/u.model" || die "qemu-img sees other content"
}

case_cli() {
	local img=$TMP/c.vhd mnt=$TMP/m-c out pid i
	make_image "$img"
	[ -n "${VHDMOUNT:-}" ] || die "VHDMOUNT is not set (run through ctest)"
	mkdir -p "$mnt"
	"$VHDMOUNT" "$img" "$mnt" >/dev/null || die "vhdmount failed"
	register fuse "$mnt"
	[ -f "$mnt/p2" ] || die "vhdmount: p2 missing"
	! grep " $mnt " /proc/self/mountinfo | grep -q allow_other || die "allow_other without asking"
	out=$("$VHDTOOL" mount "$img" "$mnt" 2>&1) && die "mounting on a mount point succeeded"
	grep -q "already a mount point" <<<"$out" || die "no clear error: $out"
	"$VHDMOUNT" -u "$mnt" || die "vhdmount -u failed"
	out=$("$VHDTOOL" unmount "$mnt" 2>&1) && die "unmounting a non-mount succeeded"
	grep -q "not a vhdmount mount point" <<<"$out" || die "unmount error unclear: $out"
	out=$("$VHDTOOL" mount "$TMP/missing.vhd" "$mnt" 2>&1) && die "mounting a missing image succeeded"
	grep -q "missing.vhd" <<<"$out" || die "error does not name the image: $out"
	"$VHDTOOL" mount --output=json "$img" "$mnt" >"$TMP/c.json" || die "mount --output=json failed"
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["partition-table"]["type"]=="gpt"' \
		"$TMP/c.json" || die "--output=json is not info.json"
	vunmount "$mnt"
	"$VHDTOOL" mount --allow-other "$img" "$mnt" >/dev/null || die "--allow-other mount failed"
	grep " $mnt " /proc/self/mountinfo | grep -q allow_other || die "--allow-other not passed"
	vunmount "$mnt"
	# foreground: serves until SIGTERM, then exits 0 with the image closed
	"$VHDTOOL" mount -f "$img" "$mnt" 2>"$TMP/fg.log" &
	pid=$!
	register pid "$pid"
	for i in $(seq 100); do [ -f "$mnt/p1" ] && break; sleep 0.1; done
	[ -f "$mnt/p1" ] || die "foreground mount did not come up: $(cat "$TMP/fg.log")"
	kill -TERM "$pid"
	wait "$pid" || die "foreground mount exited $? after SIGTERM: $(cat "$TMP/fg.log")"
	! grep -qs " $mnt fuse.vhdmount " /proc/self/mounts || die "still mounted after SIGTERM"
	flock -n -x "$img" true || die "image still locked after the foreground mount ended"
	expect_check_clean "$img"
	"$VHDTOOL" mount --help | grep -q "MOUNTPOINT" || die "mount --help"
	"$VHDTOOL" unmount --help | grep -q "MOUNTPOINT" || die "unmount --help"
	out=$("$VHDTOOL" mount "$img" 2>&1) && die "mount without a mount point succeeded"
	[ "$("$VHDTOOL" mount --snapshot -r "$img" "$mnt" >/dev/null 2>&1; echo $?)" = 2 ] ||
		die "--snapshot with -r is not a usage error"
}

run_case readonly case_readonly
run_case snapshot case_snapshot
run_case auto-ro case_auto_ro
run_case lock case_lock
run_case bounds case_bounds
run_case zero-seek case_zero_seek
run_case durable case_durable
run_case unaligned case_unaligned
run_case cli case_cli
finish
