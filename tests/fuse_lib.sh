# fuse_lib.sh - helpers of the FUSE mount tests (tests/fuse_*.sh).  Source it
# after lib.sh:
#
#   set -euo pipefail
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/fuse_lib.sh"
#   require_fuse
#   fuse_tmpdir
#
# Everything a test mounts or attaches is recorded in $TMP/.cleanup (a file,
# so that run_case's subshells register too) and undone in reverse order when
# the script exits, whatever happened: kernel mounts, loop devices, our FUSE
# mounts (their daemons are waited for), tmpfs mounts.

# require_fuse: skip unless this machine can mount FUSE file systems.
require_fuse() {
	require_vhdtool
	[ -c /dev/fuse ] || skip "/dev/fuse is missing (no FUSE here)"
	require fusermount3 python3
	grep -qw fuse /proc/filesystems || skip "the kernel has no fuse file system"
}

# require_loop: skip unless loop devices can be attached (root, a free one).
require_loop() {
	[ "$(id -u)" = 0 ] || skip "loop devices need root"
	require losetup
	losetup -f >/dev/null 2>&1 || skip "no free loop device (losetup -f failed)"
}

# fuse_force_unmount MNT: vhdtool unmount; a daemon that does not go away
# (a test failed because it hung) is killed, and if it still hangs in a
# request of its own connection, that connection is aborted (fusectl).
fuse_force_unmount() {
	local mnt=$1 conn pid
	conn=$(awk -v m="$mnt" '$5 == m && $0 ~ / - fuse.vhdmount / {split($3, a, ":"); print a[2]}' /proc/self/mountinfo)
	pid=$(timeout 5 python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.vhdmount.pid").decode())' "$mnt" 2>/dev/null) || pid=
	timeout 30 "$VHDTOOL" unmount --timeout 10 "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	log "cleanup: daemon $pid of $mnt did not exit; killing it"
	kill -9 "$pid" 2>/dev/null || true
	sleep 1
	kill -0 "$pid" 2>/dev/null || return 0
	if [ -n "$conn" ] && [ -w "/sys/fs/fuse/connections/$conn/abort" ]; then
		log "cleanup: aborting FUSE connection $conn"
		echo 1 >"/sys/fs/fuse/connections/$conn/abort"
	fi
}

fuse_cleanup() {
	local kind what
	[ -f "$TMP/.cleanup" ] || return 0
	# newest first
	tac "$TMP/.cleanup" | while read -r kind what; do
		case $kind in
		kmount) umount "$what" 2>/dev/null || umount -l "$what" 2>/dev/null || true ;;
		loop) losetup -d "$what" 2>/dev/null || true ;;
		fuse)
			grep -qs " $what fuse.vhdmount " /proc/self/mounts || continue
			fuse_force_unmount "$what"
			;;
		pid) kill "$what" 2>/dev/null || true ;;
		esac
	done
	rm -f "$TMP/.cleanup"
}

# fuse_tmpdir: TMP as make_tmpdir, with fuse_cleanup run before it goes.
# The daemons of vmount log to $TMP/daemon.log; a sanitizer report found
# there fails the test (a daemon's stderr is nowhere once it detaches).
fuse_tmpdir() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/${TEST_NAME}.XXXXXX")
	trap fuse_exit EXIT
	trap 'exit 130' INT TERM
}

fuse_exit() {
	local rc=$?
	fuse_cleanup
	if grep -qs -e "Sanitizer" -e "runtime error" "$TMP/daemon.log"; then
		printf '%s: FAIL: a mount daemon reported:\n' "$TEST_NAME" >&2
		grep -A20 -e "Sanitizer" -e "runtime error" "$TMP/daemon.log" | head -60 >&2
		rc=1
	fi
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		log "kept $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}

register() { echo "$1 $2" >>"$TMP/.cleanup"; }

# vmount [OPTIONS...] IMG MNT: vhdtool mount, registered for cleanup.
vmount() {
	local mnt=${*: -1}
	mkdir -p "$mnt"
	register fuse "$(realpath "$mnt")"
	"$VHDTOOL" mount --log "$TMP/daemon.log" "$@" >"$TMP/.mount.out" 2>&1 ||
		die "vhdtool mount $* failed: $(cat "$TMP/.mount.out")"
}

# vunmount MNT: vhdtool unmount (waits until the image is closed).
vunmount() {
	local out
	out=$("$VHDTOOL" unmount "$1" 2>&1) || die "vhdtool unmount $1 failed: $out"
	! grep -qs " $(realpath "$1") fuse.vhdmount " /proc/self/mounts ||
		die "$1 is still mounted after vhdtool unmount"
}

# loop_attach FILE [losetup options...]: prints the loop device.
loop_attach() {
	local f=$1 dev
	shift
	dev=$(losetup -f --show "$@" "$f") || die "losetup $* $f failed"
	register loop "$dev"
	echo "$dev"
}

loop_detach() { losetup -d "$1" || die "losetup -d $1 failed"; }

# kmount DEV DIR [mount options...]
kmount() {
	local dev=$1 dir=$2
	shift 2
	mkdir -p "$dir"
	mount "$@" "$dev" "$dir" || die "mount $* $dev $dir failed"
	register kmount "$dir"
}

kumount() { umount "$1" || die "umount $1 failed"; }

# info_get MNT PYTHON-EXPR: evaluate an expression over info.json (as d).
info_get() {
	python3 - "$1/info.json" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(json.dumps(v) if isinstance(v, (dict, list)) else
      ("true" if v is True else "false" if v is False else "null" if v is None else v))
EOF
}

# make_tree DIR SEED: a tree of files of awkward sizes (0 B to 3 MiB) with
# seeded random content, nested directories, names with blanks.
make_tree() {
	python3 - "$1" "$2" <<'EOF'
import os, random, sys
root, r = sys.argv[1], random.Random(sys.argv[2])
sizes = [0, 1, 511, 512, 4095, 4096, 65537, 300000, 1 << 20, 3 * (1 << 20) + 7]
for d in ["", "a", "a/b", "a/b/c", "dir with blanks", "z"]:
    os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(r.randrange(3, 8)):
        n = r.choice(sizes) if r.random() < 0.7 else r.randrange(0, 200000)
        with open(os.path.join(root, d, "f%d_%d.bin" % (i, n)), "wb") as f:
            f.write(r.randbytes(n))
EOF
}

# have_kernel_vfat: the kernel mounts vfat (else the tests fill it with mtools).
have_kernel_vfat() { grep -qw vfat /proc/filesystems; }
