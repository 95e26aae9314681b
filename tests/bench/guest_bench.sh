#!/usr/bin/env bash
# guest_bench.sh - disk throughput inside a guest, three ways, same image.
#
#   VHDTOOL=build/tools/vhdtool HVCTL=build/hv/hvctl VSPD=build/blockvsp/vhd-vspd \
#       tests/bench/guest_bench.sh
#
# The test guest (fixtures/guest/, built or cached in $HV_GUEST_DIR) runs
# hvload bench: O_DIRECT I/O from BENCH_JOBS threads (queue depth = jobs),
# BENCH_SECS seconds each: 1 MiB sequential write, 1 MiB sequential read,
# 4 KiB random write, 4 KiB random read, over the first BENCH_MB MiB of the
# disk.  The disk is a copy of one dynamic VHD whose bench region is already
# allocated (so every configuration measures overwrites, not allocation):
#
#   ours-synthetic  hvctl partition, vhost-user-blk served by vhd-vspd
#   qsd-synthetic   the same QEMU options, vhost-user-blk served by
#                   qemu-storage-daemon (vpc driver, O_DIRECT, same queues)
#   ours-emulated   hvctl partition, IDE (PIIX, ata_piix) over vhd-vspd's NBD
#
# The three take turns round by round (BENCH_ROUNDS, default 3), so drift
# on a shared machine hits them alike; the table shows the median of the
# rounds and, below it, the min..max.
#
# Environment: HV_GUEST_DIR (default /var/tmp/vhdstack-guest), BENCH_SECS
# (6), BENCH_JOBS (4), BENCH_MB (64), BENCH_VCPUS (2), BENCH_ACCEL (tcg),
# BENCH_DIR (a new directory under /var/tmp), BENCH_KEEP (0).  Under TCG the
# guest's CPU is emulated, so the figures measure per-request cost through
# each path more than the host's storage; the configuration is printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${VHDTOOL:?set VHDTOOL}" "${HVCTL:?set HVCTL}" "${VSPD:?set VSPD}"
secs=${BENCH_SECS:-6} rounds=${BENCH_ROUNDS:-3} jobs=${BENCH_JOBS:-4} mb=${BENCH_MB:-64}
vcpus=${BENCH_VCPUS:-2} accel=${BENCH_ACCEL:-tcg}
guest=${HV_GUEST_DIR:-/var/tmp/vhdstack-guest}
mkdir -p "$guest"
guest=$(cd "$guest" && pwd)
dir=${BENCH_DIR:-$(mktemp -d /var/tmp/guest_bench.XXXXXX)}
mkdir -p "$dir"
qsd_pid=
cleanup() {
	[ -n "$qsd_pid" ] && kill "$qsd_pid" 2>/dev/null
	local n
	for n in $(ls "$dir/st" 2>/dev/null); do
		"$HVCTL" --state-dir "$dir/st" stop --force "$n" >/dev/null 2>&1 || true
	done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
hv=("$HVCTL" --state-dir "$dir/st" --vspd "$VSPD")

bash "$here/../../fixtures/guest/build-guest.sh" "$guest" >/dev/null
cmdline="console=ttyS0 quiet panic=-1 vhdtest=bench vhdtest_bench_secs=$secs vhdtest_bench_jobs=$jobs vhdtest_bench_mb=$mb"

# The template: the bench region allocated, written once with a pattern
# (zeros could leave blocks unallocated).
"$VHDTOOL" create --type dynamic --size $((mb * 2))M "$dir/template.vhd" >/dev/null
"$guest/hvload" pattern --seed 9 --offset 0 --length $((mb << 20)) |
	"$VHDTOOL" write "$dir/template.vhd" --offset 0 >/dev/null

config() { # config NAME BUS IMG
	local q=""
	[ "$2" = synthetic ] && q=", \"num_queues\": $vcpus"
	cat >"$dir/$1.json" <<EOF
{"name": "$1", "memory_mb": 256, "vcpus": $vcpus, "on_reboot": "poweroff",
 "boot": {"kernel": "$guest/vmlinuz", "initrd": "$guest/initrd.img", "cmdline": "$cmdline"},
 "disks": [{"path": "$3", "bus": "$2"$q}]}
EOF
}

run_hv() { # run_hv NAME BUS OUT
	local img=$dir/$1.vhd
	cp "$dir/template.vhd" "$img"
	config "$1" "$2" "$img"
	"${hv[@]}" create "$dir/$1.json" >/dev/null
	"${hv[@]}" start --accel "$accel" "$1" >/dev/null
	while [ "$("${hv[@]}" status --no-qmp --output=json "$1" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" != stopped ]; do
		sleep 1
	done
	cp "$dir/st/$1/serial.log" "$3"
	"${hv[@]}" delete "$1" >/dev/null
	"$VHDTOOL" check "$img" >/dev/null || { echo "$img does not check clean" >&2; exit 1; }
}

run_qsd() { # run_qsd OUT
	local img=$dir/qsd.vhd sock=$dir/qsd.sock
	rm -f "$1"
	cp "$dir/template.vhd" "$img"
	qemu-storage-daemon \
		--blockdev driver=file,node-name=file0,filename="$img",cache.direct=on,aio=io_uring \
		--blockdev driver=vpc,node-name=disk0,file=file0 \
		--export type=vhost-user-blk,id=e0,node-name=disk0,addr.type=unix,addr.path="$sock",writable=on,num-queues=$vcpus \
		2>"$dir/qsd.log" &
	qsd_pid=$!
	for ((i = 0; i < 100; i++)); do [ -S "$sock" ] && break; sleep 0.1; done
	# The options hvctl gives QEMU (see the worker.log of a partition).
	qemu-system-x86_64 -nodefaults -no-user-config -display none \
		-machine pc,memory-backend=hv-mem -accel "$accel" -cpu max -m 256M \
		-object memory-backend-memfd,id=hv-mem,size=256M,share=on -smp "$vcpus" \
		-serial file:"$1" -no-reboot \
		-kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "$cmdline" \
		-chardev socket,id=vu0,path="$sock" \
		-device vhost-user-blk-pci,chardev=vu0,num-queues="$vcpus" 2>"$dir/qemu-qsd.log"
	kill "$qsd_pid"
	wait "$qsd_pid" || true
	qsd_pid=
}

echo "== guest_bench: accel $accel, $vcpus vCPUs (-cpu max), 256 MiB, guest kernel" \
	"$(sed -n 's/^kernel: //p' "$guest/info")"
echo "== hvload bench: O_DIRECT, $jobs threads (QD $jobs), $secs s per run, region $mb MiB" \
	"of a dynamic VHD (2 MiB blocks, allocated beforehand); host: $(nproc) CPUs"
for ((r = 1; r <= rounds; r++)); do
	run_hv bsyn synthetic "$dir/syn.$r.out"
	run_qsd "$dir/qsd.$r.out"
	run_hv bemu emulated "$dir/emu.$r.out"
	echo "== round $r of $rounds done"
done

python3 - "$dir" "$rounds" <<'EOF'
import re, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
configs = [("syn", "ours-synthetic"), ("qsd", "qsd-synthetic"), ("emu", "ours-emulated")]
keys = [("write", 1 << 20), ("read", 1 << 20), ("randwrite", 4096), ("randread", 4096)]
res = {}
for c, _ in configs:
    for r in range(1, rounds + 1):
        for line in open("%s/%s.%d.out" % (d, c, r), errors="replace"):
            m = re.match(r"VHDTEST-BENCH: rw=(\S+) bs=(\d+) jobs=\d+ seconds=\S+ ops=\d+ iops=(\d+) mibps=(\S+)", line)
            if m:
                res.setdefault((c, m.group(1), int(m.group(2))), []).append(
                    (int(m.group(3)), float(m.group(4))))
print("median of %d rounds (min..max below)" % rounds)
print("%-14s" % "workload" + "".join("%24s" % n for _, n in configs))
for rw, bs in keys:
    row = "%-14s" % ("%s %s" % (rw, "1M" if bs > 4096 else "4k"))
    spread = "%-14s" % ""
    for c, _ in configs:
        v = res.get((c, rw, bs), [])
        if not v:
            row += "%24s" % "(missing)"
            spread += "%24s" % ""
            continue
        if bs > 4096:
            vals = [m for _, m in v]
            row += "%24s" % ("%.1f MiB/s" % statistics.median(vals))
            spread += "%24s" % ("%.0f..%.0f" % (min(vals), max(vals)))
        else:
            vals = [i for i, _ in v]
            row += "%24s" % ("%d IOPS" % statistics.median(vals))
            spread += "%24s" % ("%d..%d" % (min(vals), max(vals)))
    print(row)
    print(spread)
EOF
