#!/usr/bin/env bash
# nbd_clients: real NBD clients against vhd-vspd / vhdtool serve.
#
#   - qemu-img convert and nbdcopy from the export equal the disk (fixed,
#     dynamic, and the leaf of a depth-3 differencing chain, with random data
#     at random offsets in every layer);
#   - nbdinfo --map shows the allocation vhdtool map shows (data vs
#     hole,zero), through the chain too;
#   - qemu-io writes (patterns, files, write zeroes, FUA, flush, discard;
#     aligned and not, small and over several blocks) through the export
#     land in the VHD: vhdtool read and qemu-img -f vpc agree with a model;
#     through a chain they land in the leaf only (parents byte-identical),
#     and parent data still shows where the leaf has none;
#   - read-only exports (-r and NAME=IMAGE,ro): clients see read-only,
#     qemu-io's write is refused, the file never changes;
#   - several exports, NBD_OPT_LIST (nbdinfo --list), the default export;
#   - TCP on 127.0.0.1 with an ephemeral port, captive and daemon.
# SEED=<n> replays a run; KEEP_TMP=1 keeps the files.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd_lib.sh"
require qemu-img qemu-io nbdinfo nbdcopy
nbd_setup
write_qio_script

# ---- images -------------------------------------------------------------------
# fixed.vhd 24 MiB, dyn.vhd 40 MiB in 512 KiB blocks (random writes leave
# holes between them), base <- mid <- leaf 32 MiB in 1 MiB blocks; *.model
# hold what each should read as.
make_images() {
	"$V" create -t fixed fixed.vhd 24M >/dev/null
	truncate -s 24M fixed.model
	rand_writes fixed.vhd fixed.model 10
	"$V" create -b 512K dyn.vhd 40M >/dev/null
	truncate -s 40M dyn.model
	rand_writes dyn.vhd dyn.model 12
	"$V" create -b 1M base.vhd 32M >/dev/null
	truncate -s 32M leaf.model
	rand_writes base.vhd leaf.model 8
	"$V" create -p base.vhd mid.vhd >/dev/null
	rand_writes mid.vhd leaf.model 8 200000
	"$V" create -p mid.vhd leaf.vhd >/dev/null
	rand_writes leaf.vhd leaf.model 8 100000
	local i
	for i in fixed dyn leaf; do
		raw_of "$i.vhd" "$i.check"
		cmp_files "$i.check" "$i.model" "vhdtool's own view of $i.vhd (test setup)"
	done
}
make_images

# ---- 1. reading: qemu-img convert and nbdcopy equal the disk ---------------------
case_read() {
	local img=$1
	rm -f q.raw c.raw
	"$V" serve -q "$img.vhd" --run 'qemu-img convert -f raw -O raw "$uri" q.raw &&
		nbdcopy "$uri" c.raw' || die "clients failed on $img.vhd"
	cmp_files q.raw "$img.model" "qemu-img convert from the $img export"
	cmp_files c.raw "$img.model" "nbdcopy from the $img export"
}
for i in fixed dyn leaf; do
	run_case "read $i" case_read "$i"
done

# ---- 2. nbdinfo --map vs vhdtool map ---------------------------------------------
case_map() {
	local img=$1
	runs_of_vhd "$img.vhd" >vhd.runs
	"$V" serve -q "$img.vhd" --run 'nbdinfo --map --json "$uri" >nbd.json' ||
		die "nbdinfo --map on $img failed"
	runs_of_nbd nbd.json >nbd.runs
	diff -u vhd.runs nbd.runs >map.diff || die "nbdinfo --map differs from vhdtool map for $img:
$(head -40 map.diff)"
	# a fixed disk is all data; the others must show holes, or the test is weak
	if [ "$img" = fixed ]; then
		[ "$(wc -l <nbd.runs)" = 1 ] && grep -q ' data$' nbd.runs ||
			die "fixed disk map is not one data run: $(cat nbd.runs)"
	else
		grep -q ' hole$' nbd.runs && grep -q ' data$' nbd.runs ||
			die "$img map lacks holes or data: $(cat nbd.runs)"
	fi
}
for i in fixed dyn leaf; do
	run_case "map $i" case_map "$i"
done

# ---- 3. qemu-io writes through the export ----------------------------------------
# make_plan MODEL DIR N: a qemu-io plan (lib.sh's gen_writes: patterns, file
# contents and zeroes over block boundaries, the first and last sectors,
# unaligned offsets, multi-block runs) with FUA on some writes, flushes and
# discards mixed in.  Discard is documented as a no-op on VHD exports
# (vhd-vspd --help), so the model does not change for it.
make_plan() {
	local model=$1 dir=$2 n=$3 size block=$4
	size=$(stat -c %s "$model")
	mkdir -p "$dir"
	gen_writes qemu "$SEED$n" "$size" "$block" "$model" "$dir" "$n"
	python3 - "$dir/plan" "$SEED" "$size" <<'EOF'
import random, sys
plan, seed, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = random.Random(seed)
out = []
for line in open(plan):
    line = line.rstrip("\n")
    if line.startswith("write -q") and r.random() < 0.3:
        line = line.replace("write -q", "write -q -f", 1)
    out.append(line)
    k = r.random()
    if k < 0.2:
        out.append("flush")
    elif k < 0.3:
        off = r.randrange(0, size // 4096) * 4096
        out.append("discard -q %d %d" % (off, min(r.choice([4096, 65536, 1 << 20]), size - off)))
out.append("flush")
open(plan, "w").write("\n".join(out) + "\n")
EOF
}

# io_through_nbd IMG PLAN: replays the plan with qemu-io on the export.
io_through_nbd() {
	"$V" serve -q "$1" --run "bash ./qio.sh \"\$uri\" $2" ||
		die "qemu-io through the $1 export failed or complained: $(head -20 qio.out)"
}

case_write() {
	local img=$1 block=$2
	make_plan "$img.model" "plan-$img" 24 "$block"
	grep -q -- '-z' "plan-$img/plan" && grep -q -- '-f' "plan-$img/plan" &&
		grep -q '^discard' "plan-$img/plan" || log "note: plan for $img lacks some kinds"
	io_through_nbd "$img.vhd" "plan-$img/plan"
	expect_check_clean "$img.vhd"
	raw_of "$img.vhd" after.raw
	cmp_files after.raw "$img.model" "$img.vhd after qemu-io writes through NBD (vhdtool)"
	if [ "$img" != leaf ]; then
		qemu-img convert -U -f vpc -O raw "$img.vhd" qemu.raw
		cmp_files qemu.raw "$img.model" "$img.vhd after qemu-io writes (qemu-img -f vpc)"
	fi
}

case_write_chain() {
	local hb hm
	parent_data_runs leaf.vhd
	hb=$(sha256_of base.vhd)
	hm=$(sha256_of mid.vhd)
	case_write leaf 1048576
	[ "$(sha256_of base.vhd)" = "$hb" ] || die "base.vhd changed by writes to the leaf export"
	[ "$(sha256_of mid.vhd)" = "$hm" ] || die "mid.vhd changed by writes to the leaf export"
	# through NBD too: parent data where the leaf has none, new data on top
	"$V" serve -q leaf.vhd --run 'nbdcopy "$uri" c.raw' || die "nbdcopy leaf"
	cmp_files c.raw leaf.model "leaf export after writes (nbdcopy)"
	# and parts of what the leaf shows still come from its parents
	parent_data_runs leaf.vhd
}

# parent_data_runs IMG: IMG shows data that lives in a parent (else the
# fall-through is not exercised by this test).
parent_data_runs() {
	"$V" map --output=json "$1" | python3 -c '
import json, sys
sys.exit(0 if any(e["data"] and e["depth"] > 0 for e in json.load(sys.stdin)) else 1)
' || die "$1 shows no data from its parents"
}

run_case "write fixed" case_write fixed 2097152
run_case "write dyn" case_write dyn 524288
run_case "write chain leaf" case_write_chain

# ---- 4. read-only exports ---------------------------------------------------------
case_read_only() {
	local mode=$1 h
	h=$(sha256_of dyn.vhd)
	local -a spec
	if [ "$mode" = -r ]; then
		spec=(-r dyn.vhd)
	else
		spec=(-e "dyn=dyn.vhd,ro")
	fi
	"$V" serve -q "${spec[@]}" --run '
		nbdinfo --is read-only "$uri" || { echo "not read-only"; exit 3; }
		qemu-io -f raw -c "write -P 0x55 0 4096" "$uri" >qio.out 2>&1 && exit 4
		nbdcopy "$uri" c.raw' >ro.out 2>&1 || die "read-only export ($mode): $(cat ro.out qio.out)"
	grep -qi 'permission denied\|read-only\|operation not permitted' qio.out ||
		die "qemu-io on a read-only export ($mode) did not report EPERM: $(cat qio.out)"
	cmp_files c.raw dyn.model "read-only export ($mode) content"
	[ "$(sha256_of dyn.vhd)" = "$h" ] || die "dyn.vhd changed while served read-only ($mode)"
}
run_case "read-only -r" case_read_only -r
run_case "read-only ,ro" case_read_only ,ro

# ---- 5. several exports, NBD_OPT_LIST, the daemon ---------------------------------
case_exports() {
	start_vspd multi -e "a=dyn.vhd" -e "b=fixed.vhd,ro" -e "c=leaf.vhd"
	nbdinfo --list --json "$(uri_of a)" >list.json
	python3 - list.json <<'EOF' || die "nbdinfo --list: $(cat list.json)"
import json, sys
d = json.load(open(sys.argv[1]))
names = sorted(e["export-name"] for e in d["exports"])
assert names == ["a", "b", "c"], names
ro = {e["export-name"]: e["is_read_only"] for e in d["exports"]}
assert ro == {"a": False, "b": True, "c": False}, ro
EOF
	nbdcopy "$(uri_of a)" a.raw
	nbdcopy "$(uri_of b)" b.raw
	qemu-img convert -f raw -O raw "$(uri_of c)" c.raw
	cmp_files a.raw dyn.model "export a"
	cmp_files b.raw fixed.model "export b"
	cmp_files c.raw leaf.model "export c"
	# the empty name is the first export
	[ "$(nbdinfo --size "$(uri_of '')")" = "$(stat -c %s dyn.model)" ] ||
		die "the default export is not the first one"
	if nbdinfo --size "$(uri_of nosuch)" >/dev/null 2>&1; then
		die "an unknown export name was accepted"
	fi
	# clients on two exports at once
	nbdcopy "$(uri_of a)" a2.raw &
	local p=$!
	nbdcopy "$(uri_of c)" c2.raw
	wait "$p" || die "concurrent nbdcopy failed"
	cmp_files a2.raw dyn.model "export a, concurrent"
	cmp_files c2.raw leaf.model "export c, concurrent"
	stop_vspd
	[ ! -e "$SRV_SOCK" ] || die "the socket is left after the daemon stopped"
	[ ! -e "$TMP/multi.pid" ] || die "the pid file is left after the daemon stopped"
	expect_check_clean dyn.vhd
	expect_check_clean leaf.vhd
}
run_case "several exports" case_exports

# ---- 6. TCP -------------------------------------------------------------------------
# listening_on_loopback PORT: /proc/net/tcp has a listener on 127.0.0.1:PORT
listening_on_loopback() {
	python3 - "$1" <<'EOF'
import sys
port = int(sys.argv[1])
for line in open("/proc/net/tcp").readlines()[1:]:
    f = line.split()
    ip, p = f[1].split(":")
    if int(p, 16) == port and f[3] == "0A":
        sys.exit(0 if ip == "0100007F" else 2)
sys.exit(1)
EOF
}

case_tcp() {
	local uri port
	# captive, ephemeral port
	"$V" serve -q --tcp 127.0.0.1:0 dyn.vhd --run 'echo "$uri" >uri.txt &&
		nbdcopy "$uri" c.raw && qemu-img convert -f raw -O raw "$uri" q.raw' ||
		die "clients over TCP failed"
	uri=$(cat uri.txt)
	case $uri in nbd://127.0.0.1:[1-9]*/dyn) ;; *) die "unexpected TCP URI $uri" ;; esac
	cmp_files c.raw dyn.model "nbdcopy over TCP"
	cmp_files q.raw dyn.model "qemu-img over TCP"
	# the daemon, port only: loopback by default
	start_vspd tcp --tcp 0 dyn.vhd
	port=$(sed -n 's|.* at nbd://127\.0\.0\.1:\([0-9]*\)/dyn.*|\1|p' "$SRV_LOG" | head -1)
	[ -n "$port" ] && [ "$port" != 0 ] || die "no port in the daemon's log: $(cat "$SRV_LOG")"
	listening_on_loopback "$port" || die "port $port is not bound to 127.0.0.1 only"
	make_plan dyn.model plan-tcp 10 524288
	bash ./qio.sh "nbd://127.0.0.1:$port/dyn" plan-tcp/plan ||
		die "qemu-io over TCP: $(head -20 qio.out)"
	nbdcopy "nbd://127.0.0.1:$port/dyn" c.raw
	cmp_files c.raw dyn.model "after qemu-io over TCP"
	stop_vspd
	expect_check_clean dyn.vhd
	raw_of dyn.vhd after.raw
	cmp_files after.raw dyn.model "dyn.vhd after writes over TCP"
}
run_case "tcp" case_tcp

finish
