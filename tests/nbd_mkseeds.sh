#!/usr/bin/env bash
# nbd_mkseeds.sh [DIR]: (re)writes the seed sessions of the NBD fuzz target
# (tests/fuzz/fuzz_nbd.c) into DIR (default fixtures/fuzz/nbd-seed).  Each
# file is the byte stream one client sends, from its client flags on; the
# sessions are valid ones (so that mutations reach deep) plus the hostile
# shapes test_nbd_protocol covers.  Not a test: run it by hand after
# changing the list, and commit the files.
set -euo pipefail
dir=${1:-$(dirname "$0")/../fixtures/fuzz/nbd-seed}
mkdir -p "$dir"
python3 - "$dir" <<'PY'
import os, struct, sys

d = sys.argv[1]
OPT = 0x49484156454f5054
REQ = 0x25609513

def flags(f=3):
    return struct.pack(">I", f)

def opt(o, data=b""):
    return struct.pack(">QII", OPT, o, len(data)) + data

def go(name=b"main", infos=(3,), o=7):
    return opt(o, struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) +
               b"".join(struct.pack(">H", i) for i in infos))

def meta(o, name=b"main", queries=(b"base:allocation",)):
    q = b"".join(struct.pack(">I", len(x)) + x for x in queries)
    return opt(o, struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries)) + q)

def req(t, off=0, ln=0, f=0, h=1, payload=b""):
    return struct.pack(">IHHQQI", REQ, f, t, h, off, ln) + payload

READ, WRITE, DISC, FLUSH, TRIM, CACHE, WZ, BS = 0, 1, 2, 3, 4, 5, 6, 7
FUA, NO_HOLE, DF, REQ_ONE = 1, 2, 4, 8

def pat(n, seed=1):
    return bytes((i * 13 + seed) & 0xff for i in range(n))

seeds = {
    "go-read": flags() + go() + req(READ, 0, 4096) + req(READ, 200000, 8192, h=2) + req(DISC),
    "structured-meta-status": flags() + opt(8) + meta(10) + go() +
        req(BS, 0, 4 << 20, h=3) + req(BS, 65536, 1 << 20, REQ_ONE, h=4) +
        req(READ, 4096, 4096, DF, h=5) + req(DISC),
    "write-flush-zero-trim": flags() + go() + req(WRITE, 65536, 4096, payload=pat(4096)) +
        req(FLUSH, h=2) + req(WRITE, 131072, 8192, FUA, 3, pat(8192, 5)) +
        req(WZ, 262144, 65536, h=4) + req(WZ, 0, 4096, NO_HOLE, 5) +
        req(TRIM, 327680, 65536, h=6) + req(DISC),
    "export-name-zeroes": flags(1) + opt(1, b"main") + req(READ, 512, 512) + req(DISC),
    "export-name-default": flags() + opt(1, b"") + req(WRITE, 1024, 512, payload=pat(512)) + req(DISC),
    "list-info-abort": flags() + opt(3) + go(b"ro", (0, 1, 2, 3), o=6) + meta(9, b"main", (b"base:",)) +
        meta(9, b"main", ()) + opt(2),
    "read-only-writes": flags() + go(b"ro") + req(WRITE, 0, 4096, payload=pat(4096)) +
        req(WZ, 0, 4096, h=2) + req(TRIM, 0, 4096, h=3) + req(FLUSH, h=4) + req(READ, 0, 4096, h=5) +
        req(DISC),
    "unaligned": flags() + opt(8) + go() + req(WRITE, 12345, 1000, payload=pat(1000, 9)) +
        req(READ, 100001, 777, h=2) + req(WZ, 3, 513, h=3) + req(WRITE, 65535, 2, FUA, 4, b"ab") +
        req(DISC),
    "errors": flags() + go() + req(99, 0, 4096) + req(CACHE, 0, 4096, h=2) +
        req(READ, 4 << 20, 512, h=3) + req(READ, (4 << 20) - 512, 1024, h=4) +
        req(READ, 0xffffffffffffff00, 512, h=5) + req(BS, 0, 4096, h=6) + req(READ, 0, 0, h=7) +
        req(READ, 0, 512, 0x8000, 8) + req(READ, 0, 512, DF, 9) + req(DISC),
    "pipelined-no-disc": flags() + opt(8) + go() + b"".join(
        req(WRITE, i * 8192, 1024, FUA if i % 7 == 0 else 0, i, pat(1024, i)) if i % 2 else
        req(READ, (i * 12288) % ((4 << 20) - 8192), 8192, h=i) for i in range(32)) + req(FLUSH, h=99),
    "bad-request-magic": flags() + go() + req(READ, 0, 512) + b"\x11" * 28,
    "tls-unknown-options": flags() + opt(5) + opt(0x4242, b"xyz") + opt(8, b"x") + opt(3, b"y") +
        meta(10) + go(b"nosuch") + go(b"") + req(READ, 0, 512) + req(DISC),
    "lying-lengths": flags() + opt(7, struct.pack(">I", 100) + b"main" + b"\0\0") +
        opt(6, struct.pack(">I", 4) + b"main" + struct.pack(">H", 9) + b"\0\3") +
        opt(10, struct.pack(">II", 4, 0)) + go() + req(DISC),
    "oversize-write": flags() + go() + req(READ, 0, (32 << 20) + 512) + req(WRITE, 0, 33 << 20),
    "regress-truncated-write-payload": flags() + go() + req(WRITE, 0, 1 << 20) + pat(100),
    "huge-option": flags() + struct.pack(">QII", OPT, 7, 0xffffffff),
    "unknown-client-flags": flags(0x83) + go(),
}
for name, data in seeds.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
print("%d seeds in %s" % (len(seeds), d))
PY
