/* fuzz_vhost.c - libFuzzer target: the vhost-user-blk virtqueue code
 * (blockvsp/virtq.c) fed descriptor tables, indirect tables, request
 * headers and ring indices written by a hostile guest.
 *
 * Once per process an in-process server is started with the vsp API (one
 * engine worker, a 4 MiB dynamic VHD in 64 KiB blocks, a vhost-user device
 * with 2 queues on a Unix socket in a temp dir), and the fake front end of
 * tests/vhost_user_fake.c connects to it, negotiates and maps guest memory:
 * regions A and B adjacent in guest physical space (B with an mmap offset),
 * C far above (rings, header slots, indirect tables).  Queue 1 is a
 * well-behaved witness; queue 0 is the fuzzed one.
 *
 * An input is a program (see the OP_* list below): ops write descriptors,
 * indirect table entries, headers, bytes and ring indices into guest
 * memory; OP_RUN starts queue 0 (SET_VRING_BASE + SET_VRING_KICK: the
 * daemon processes the ring at once) and stops it (GET_VRING_BASE answers
 * only when every request taken is answered), so a run is deterministic.
 * After each run a reference model of the split ring and of virtio-blk
 * predicts, for every request the daemon took:
 *   - whether the chain is malformed (loops, buffers outside memory,
 *     readable after writable, nested or chained indirect tables, a table
 *     length not a multiple of 16, no header, no status byte): then the used
 *     entry must have length 0 and nothing may be written;
 *   - otherwise the status (OK, IOERR, UNSUPP) and the used length exactly,
 *     the bytes a read returns (a byte model of the disk follows every write
 *     and WRITE_ZEROES the daemon acknowledged), GET_ID's serial;
 * and that no byte of guest memory outside the writable buffers of the
 * requests taken, and the used ring, changed.  The number of requests
 * taken and answered must match the ring indices (a head >= the queue size
 * or an avail index more than the queue size ahead stops the queue).
 * Requests whose buffers overlap each other are only held to "no crash, no
 * stray writes" (their bytes race by design).
 *
 * Every HEALTH_EVERY inputs (and at exit) the witness queue writes and reads
 * back; at exit the server is stopped and the image must check clean and
 * equal the model.  Built as fuzz_vhost with -DFUZZ=ON;
 * test_vhost_fuzz_replay links the same code and replays
 * fixtures/fuzz/vhost-seed/ in every build (fuzz_vhost_make_seeds writes
 * the structured seeds there).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhd.h"
#include "vhost_user_fake.h"
#include "vsp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_vhost_finish(void);
int fuzz_vhost_make_seeds(const char *dir);

#define DISK_SIZE (4u << 20)
#define SECTOR 512u
#define HEALTH_EVERY 128
#define MAX_NUM 128u           /* queue 0: 4 .. 128 entries */
#define MAX_TABLE 1024u        /* the daemon's indirect table limit */
#define MAX_IOV 1026u          /* the daemon's iovecs per request */

/* guest memory */
#define REG_A 0x30000ull
#define REG_B 0x70000ull       /* = A + A's size: adjacent */
#define REG_AB_SIZE 0x40000ull
#define REG_C 0x40000000ull
#define REG_C_SIZE 0x10000ull
#define AB_END (REG_B + REG_AB_SIZE)
#define GAP 0x10000000ull
#define Q0_DESC (REG_C + 0x0)
#define Q0_AVAIL (REG_C + 0x800)
#define Q0_USED (REG_C + 0x1000)
#define Q0_USED_LEN (4 + 8 * MAX_NUM + 2)
#define Q1_DESC (REG_C + 0x2000)
#define Q1_AVAIL (REG_C + 0x2800)
#define Q1_USED (REG_C + 0x3000)
#define Q1_NUM 16u
#define TABLES (REG_C + 0x4000) /* 16 KiB: 1024 descriptors */
#define HDRS (REG_C + 0x8000)   /* 64 header slots of 32 bytes */
#define SCRATCH (REG_C + 0x9000)
#define WITNESS_BUF (REG_B + 0x3e000)

#define N_FLAG VRING_DESC_F_NEXT
#define W_FLAG VRING_DESC_F_WRITE
#define I_FLAG VRING_DESC_F_INDIRECT

#define INVARIANT(cond, ...)                                                         \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "fuzz_vhost: invariant failed: %s: ", #cond);  \
			fprintf(stderr, __VA_ARGS__);                                \
			fputc('\n', stderr);                                         \
			abort();                                                     \
		}                                                                    \
	} while (0)

/* The server and front end of this process (one per fuzzing process, like
 * libFuzzer's own state). */
static struct {
	bool up;
	char dir[PATH_MAX];
	char sock[PATH_MAX + 16];
	char image[PATH_MAX + 16];
	struct vsp_engine *engine;
	struct vsp_disk *disk;
	struct vsp_vhost *vhost;
	struct vuf_mem mem;
	struct vuf fe;
	char serial[21];
	uint8_t model[DISK_SIZE];
	bool event_idx;
	unsigned long inputs;
	uint8_t *before;                     /* guest memory before a run */
	/* what the oracle checked (printed at exit) */
	unsigned long runs, exact, reads, refused, racy, unsure, resyncs;
} F;

/* ---- guest memory views --------------------------------------------------------- */

/* Offsets into the snapshot (A, B, C back to back). */
static bool snap_off(uint64_t gpa, uint64_t len, uint64_t *off)
{
	if (gpa >= REG_A && gpa < AB_END && len <= AB_END - gpa) {
		*off = gpa - REG_A;
		return true;
	}
	if (gpa >= REG_C && gpa < REG_C + REG_C_SIZE && len <= REG_C + REG_C_SIZE - gpa) {
		*off = 2 * REG_AB_SIZE + (gpa - REG_C);
		return true;
	}
	return false;
}

#define SNAP_SIZE (2 * REG_AB_SIZE + REG_C_SIZE)

static void snapshot(uint8_t *buf)
{
	INVARIANT(vuf_mem_read(&F.mem, REG_A, buf, 2 * REG_AB_SIZE), "snapshot A+B");
	INVARIANT(vuf_mem_read(&F.mem, REG_C, buf + 2 * REG_AB_SIZE, REG_C_SIZE), "snapshot C");
}

/* Which regions a guest range touches: pieces of host memory it maps to in
 * the daemon (A and B are separate mappings), 0 when outside memory. */
static unsigned pieces_of(uint64_t gpa, uint64_t len)
{
	uint64_t off;

	if (!snap_off(gpa, len, &off))
		return 0;
	if (gpa < REG_B && gpa + len > REG_B)
		return 2;
	return 1;
}

/* ---- the server -------------------------------------------------------------------- */

static void make_image(void)
{
	struct vhd_create_opts o = {.type = VHD_TYPE_DYNAMIC, .size = DISK_SIZE, .block_size = 64 << 10};
	struct vhd_open_opts oo = {0};
	struct vhd_image *img;
	struct vhd_info info;
	struct vhd_err err;

	INVARIANT(vhd_create(F.image, &o, &err) == 0, "create %s: %s", F.image, err.msg);
	INVARIANT(vhd_open(F.image, &oo, &img, &err) == 0, "open %s: %s", F.image, err.msg);
	vhd_get_info(img, &info);
	for (int i = 0; i < 10; i++)
		snprintf(F.serial + 2 * i, 3, "%02x", info.uuid[i]);
	vhd_close(img);
}

static void must(int ret, const char *what)
{
	INVARIANT(ret == 0, "%s: %s", what, ret > 0 ? "refused" : F.fe.err);
}

static void set_features(bool event_idx)
{
	uint64_t v = F.fe.offered & ~(event_idx ? 0 : 1ull << VIRTIO_RING_F_EVENT_IDX);

	must(vuf_request(&F.fe, VUF_SET_FEATURES, &v, 8, NULL, 0, NULL, 0), "SET_FEATURES");
	F.fe.features = v;
	F.event_idx = event_idx;
}

static void start_server(void)
{
	const char *tmp = getenv("TMPDIR");
	struct vsp_engine_opts eo = {.workers = 1, .log_level = VSP_LOG_ERROR};
	struct vsp_disk_opts dopts = {.cache = VSP_CACHE_WRITEBACK};
	struct vsp_vhost_opts vo = {.num_queues = 2};
	struct vhd_err err = {{0}};

	if (F.up)
		return;
	signal(SIGPIPE, SIG_IGN);
	snprintf(F.dir, sizeof(F.dir), "%s/fuzz-vhost.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	INVARIANT(mkdtemp(F.dir), "mkdtemp %s: %s", F.dir, strerror(errno));
	snprintf(F.sock, sizeof(F.sock), "%s/s", F.dir);
	snprintf(F.image, sizeof(F.image), "%s/disk.vhd", F.dir);
	make_image();
	F.before = malloc(SNAP_SIZE);
	INVARIANT(F.before, "out of memory");
	vo.socket_path = F.sock;
	INVARIANT(vsp_engine_new(&eo, &F.engine) == 0, "engine");
	INVARIANT(vsp_disk_open(F.engine, F.image, &dopts, &F.disk, &err) == 0, "%s", err.msg);
	INVARIANT(vsp_vhost_new(F.engine, F.disk, "fuzz", &vo, &F.vhost, &err) == 0, "%s", err.msg);
	INVARIANT(vsp_vhost_start(F.vhost, &err) == 0, "%s", err.msg);
	INVARIANT(vuf_mem_add(&F.mem, REG_A, REG_AB_SIZE, 0x7e0000000000ull, 0, 0) == 0 &&
		  vuf_mem_add(&F.mem, REG_B, REG_AB_SIZE, 0x7e0100000000ull, 4096, 0) == 0 &&
		  vuf_mem_add(&F.mem, REG_C, REG_C_SIZE, 0x7e0200000000ull, 0, 0) == 0,
		  "guest memory: %s", strerror(errno));
	vuf_init(&F.fe, &F.mem);
	must(vuf_connect(&F.fe, F.sock), "connect");
	must(vuf_negotiate(&F.fe, 0, true), "negotiation");
	F.event_idx = true;
	must(vuf_set_mem_table(&F.fe), "SET_MEM_TABLE");
	must(vuf_vq_layout(&F.fe, 1, Q1_NUM, Q1_DESC, Q1_AVAIL, Q1_USED), "queue 1 layout");
	must(vuf_vq_start(&F.fe, 1, 0), "queue 1 start");
	must(vuf_vq_layout(&F.fe, 0, MAX_NUM, Q0_DESC, Q0_AVAIL, Q0_USED), "queue 0 layout");
	must(vuf_vq_start(&F.fe, 0, 0), "queue 0 start");
	{
		uint32_t base;

		must(vuf_get_vring_base(&F.fe, 0, &base), "GET_VRING_BASE");
	}
	F.up = true;
	atexit(fuzz_vhost_finish);
}

/* The witness queue writes a few sectors and reads them back. */
static void health_check(void)
{
	static uint8_t pattern[4096];
	uint8_t got[4096];
	uint64_t sector = (F.inputs * 8) % (DISK_SIZE / SECTOR - 8);
	struct virtio_blk_outhdr h = {VIRTIO_BLK_T_OUT, 0, sector};
	struct vuf_seg segs[3] = {{HDRS, 16, false}, {WITNESS_BUF, 4096, false}, {HDRS + 20, 1, true}};
	uint32_t id, len;
	uint8_t st = 0xee;

	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 13 + F.inputs);
	for (int pass = 0; pass < 2; pass++) {
		h.type = pass ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
		segs[1].write = pass;
		INVARIANT(vuf_mem_write(&F.mem, HDRS, &h, sizeof(h)), "header");
		INVARIANT(vuf_mem_write(&F.mem, HDRS + 20, &st, 1), "status");
		INVARIANT(vuf_mem_write(&F.mem, WITNESS_BUF, pass ? got : pattern, 4096), "buffer");
		INVARIANT(vuf_chain(&F.fe, 1, 0, segs, 3, 0) == 0, "chain: %s", F.fe.err);
		vuf_avail_push(&F.fe, 1, 0);
		vuf_kick(&F.fe, 1);
		INVARIANT(vuf_used_next(&F.fe, 1, VUF_TIMEOUT_MS, &id, &len) == 0,
			  "the witness queue got no answer: %s", F.fe.err);
		INVARIANT(vuf_mem_read(&F.mem, HDRS + 20, &st, 1), "status");
		INVARIANT(st == VIRTIO_BLK_S_OK && len == (pass ? 4097u : 1u),
			  "witness %s: status %u length %u", pass ? "read" : "write", st, len);
	}
	INVARIANT(vuf_mem_read(&F.mem, WITNESS_BUF, got, 4096), "buffer");
	INVARIANT(!memcmp(got, pattern, 4096), "the witness reads back other bytes than it wrote");
	memcpy(F.model + sector * SECTOR, pattern, 4096);
}

/* After a run whose writes raced (their data, or even their headers, were
 * being overwritten by other requests), the model takes the disk as the
 * witness queue reads it.  Guest memory is put back as the input left it
 * (but for queue 1's rings, which moved on). */
static void resync(void)
{
	uint8_t *save = malloc(SNAP_SIZE);
	const uint64_t chunk = 128 << 10;

	INVARIANT(save, "out of memory");
	snapshot(save);
	for (uint64_t off = 0; off < DISK_SIZE; off += chunk) {
		struct virtio_blk_outhdr h = {VIRTIO_BLK_T_IN, 0, off / SECTOR};
		struct vuf_seg segs[3] = {{HDRS, 16, false}, {REG_A, (uint32_t)chunk, true},
					  {HDRS + 20, 1, true}};
		uint32_t id, len;
		uint8_t st = 0xee;

		INVARIANT(vuf_mem_write(&F.mem, HDRS, &h, sizeof(h)), "header");
		INVARIANT(vuf_mem_write(&F.mem, HDRS + 20, &st, 1), "status");
		INVARIANT(vuf_chain(&F.fe, 1, 0, segs, 3, 0) == 0, "chain: %s", F.fe.err);
		vuf_avail_push(&F.fe, 1, 0);
		vuf_kick(&F.fe, 1);
		INVARIANT(vuf_used_next(&F.fe, 1, VUF_TIMEOUT_MS, &id, &len) == 0,
			  "the witness queue got no answer: %s", F.fe.err);
		INVARIANT(vuf_mem_read(&F.mem, HDRS + 20, &st, 1) && st == VIRTIO_BLK_S_OK,
			  "witness read: status %u", st);
		INVARIANT(vuf_mem_read(&F.mem, REG_A, F.model + off, chunk), "buffer");
	}
	INVARIANT(vuf_mem_write(&F.mem, REG_A, save, 2 * REG_AB_SIZE), "restore A+B");
	INVARIANT(vuf_mem_write(&F.mem, REG_C, save + 2 * REG_AB_SIZE, Q1_DESC - REG_C), "restore C");
	INVARIANT(vuf_mem_write(&F.mem, TABLES, save + 2 * REG_AB_SIZE + (TABLES - REG_C),
				REG_C + REG_C_SIZE - TABLES), "restore C");
	free(save);
}

void fuzz_vhost_finish(void)
{
	struct vhd_check_report rep = {0};
	struct vhd_open_opts oo = {0};
	struct vhd_image *img;
	struct vhd_err err;
	uint8_t *buf;

	if (!F.up)
		return;
	health_check();
	fprintf(stderr, "fuzz_vhost: %lu inputs, %lu runs; %lu requests checked exactly (%lu reads "
		"compared), %lu malformed chains refused, %lu racing, %lu beyond the spec's rules; "
		"%lu resyncs\n", F.inputs, F.runs, F.exact, F.reads, F.refused, F.racy, F.unsure,
		F.resyncs);
	vuf_close(&F.fe);
	vsp_vhost_free(F.vhost);
	INVARIANT(vsp_disk_close(F.disk) == 0, "close the disk");
	vsp_engine_free(F.engine);
	vuf_mem_free(&F.mem);
	F.up = false;
	INVARIANT(vhd_check(F.image, NULL, &rep, &err) == 0, "check: %s", err.msg);
	for (size_t i = 0; i < rep.count; i++)
		fprintf(stderr, "  %s: %s\n", rep.problems[i].field, rep.problems[i].msg);
	INVARIANT(vhd_check_count(&rep, VHD_SEV_WARNING) == 0, "the served image is damaged");
	vhd_check_report_free(&rep);
	buf = malloc(DISK_SIZE);
	INVARIANT(buf, "out of memory");
	INVARIANT(vhd_open(F.image, &oo, &img, &err) == 0, "open: %s", err.msg);
	INVARIANT(vhd_pread(img, buf, DISK_SIZE, 0) == 0, "read the image");
	vhd_close(img);
	for (uint64_t s = 0; s < DISK_SIZE / SECTOR; s++)
		INVARIANT(!memcmp(buf + s * SECTOR, F.model + s * SECTOR, SECTOR),
			  "sector %llu of the image differs from what the daemon acknowledged",
			  (unsigned long long)s);
	free(buf);
	free(F.before);
	F.before = NULL;
	unlink(F.image);
	unlink(F.sock);
	rmdir(F.dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	start_server();
	return 0;
}

/* ---- the reference model -------------------------------------------------------- */

enum verdict { GOOD, BAD, UNSURE };

struct range {
	uint64_t gpa, len;
};

#define MAX_RANGES 1100

struct chain {
	enum verdict v;
	struct range rd[MAX_RANGES], wr[MAX_RANGES];
	unsigned nrd, nwr;
	uint64_t rtotal, wtotal;
};

static bool desc_at(uint64_t gpa, struct vring_desc *d)
{
	uint64_t off;

	if (!snap_off(gpa, sizeof(*d), &off))
		return false;
	memcpy(d, F.before + off, sizeof(*d));
	return true;
}

/* The chain at head as the spec (and the daemon's stated limits) read it,
 * from the guest memory as it was before the run. */
static void walk(uint16_t head, unsigned num, struct chain *c)
{
	uint64_t table = Q0_DESC;
	unsigned max = num, idx = head, seen = 0, iovs = 0;
	bool indirect = false, writable = false;

	c->v = GOOD;
	c->nrd = c->nwr = 0;
	c->rtotal = c->wtotal = 0;
	for (;;) {
		struct vring_desc d;

		if (idx >= max || ++seen > max) {
			c->v = BAD; /* a loop, or next beyond the table */
			return;
		}
		INVARIANT(desc_at(table + idx * sizeof(d), &d), "descriptor %u", idx);
		if (d.flags & VRING_DESC_F_INDIRECT) {
			if (indirect || (d.flags & VRING_DESC_F_NEXT) || d.len == 0 || d.len % 16) {
				c->v = BAD;
				return;
			}
			if (d.len / 16 > MAX_TABLE) {
				c->v = UNSURE; /* the spec sets no limit; the daemon does */
				return;
			}
			if (pieces_of(d.addr, d.len) != 1) {
				/* outside memory: bad; across A and B: the daemon
				 * wants one region, the spec does not say */
				c->v = pieces_of(d.addr, d.len) ? UNSURE : BAD;
				return;
			}
			table = d.addr;
			max = d.len / 16;
			idx = 0;
			seen = 0;
			indirect = true;
			continue;
		}
		if (d.flags & VRING_DESC_F_WRITE)
			writable = true;
		else if (writable) {
			c->v = BAD;
			return;
		}
		if (d.len) {
			unsigned p = pieces_of(d.addr, d.len);

			if (!p) {
				c->v = BAD;
				return;
			}
			iovs += p;
			if (iovs > MAX_IOV) {
				c->v = UNSURE;
				return;
			}
			if (writable) {
				c->wr[c->nwr++] = (struct range){d.addr, d.len};
				c->wtotal += d.len;
			} else {
				c->rd[c->nrd++] = (struct range){d.addr, d.len};
				c->rtotal += d.len;
			}
		}
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		idx = d.next;
	}
	if (c->rtotal < 16 || c->wtotal < 1)
		c->v = BAD; /* no header or no status byte */
}

/* Copies bytes at position pos of a range list, from buf (a snapshot). */
static void gather(const uint8_t *snap, const struct range *r, unsigned n, uint64_t pos, void *out,
		   uint64_t len)
{
	uint8_t *o = out;

	for (unsigned i = 0; i < n && len; i++) {
		uint64_t l = r[i].len, off;

		if (pos >= l) {
			pos -= l;
			continue;
		}
		l = l - pos < len ? l - pos : len;
		INVARIANT(snap_off(r[i].gpa + pos, l, &off), "gather");
		memcpy(o, snap + off, l);
		o += l;
		len -= l;
		pos = 0;
	}
}

/* The guest address of byte pos of a range list. */
static uint64_t addr_at(const struct range *r, unsigned n, uint64_t pos)
{
	for (unsigned i = 0; i < n; i++) {
		if (pos < r[i].len)
			return r[i].gpa + pos;
		pos -= r[i].len;
	}
	return 0;
}

static bool overlap(uint64_t a, uint64_t al, uint64_t b, uint64_t bl)
{
	return a < b + bl && b < a + al;
}

/* ---- one run of queue 0 ------------------------------------------------------------- */

struct run {
	unsigned num;
	uint16_t base;          /* SET_VRING_BASE */
	bool features_change;
};

#define MAX_TAKEN MAX_NUM

static struct chain chains[MAX_TAKEN];
static uint8_t after[SNAP_SIZE];

struct taken {
	uint16_t head;
	bool answered;
	bool racy;             /* its buffers overlap another request's */
	struct virtio_blk_outhdr hdr;
};

static bool ranges_overlap(const struct range *a, unsigned na, const struct range *b, unsigned nb)
{
	for (unsigned i = 0; i < na; i++)
		for (unsigned k = 0; k < nb; k++)
			if (overlap(a[i].gpa, a[i].len, b[k].gpa, b[k].len))
				return true;
	return false;
}

/* a write whose bytes raced: the disk model needs a resync after the run */
static bool need_resync;

/* Checks one answered request of a good chain against the model; applies
 * its effect on the disk to the model. */
static void check_request(const struct chain *c, const struct taken *t, uint32_t used_len)
{
	const uint64_t cap = DISK_SIZE;
	uint64_t status_gpa = addr_at(c->wr, c->nwr, c->wtotal - 1), off;
	uint8_t status;
	uint32_t want_len = 1;
	uint8_t want = VIRTIO_BLK_S_OK;
	uint64_t len;

	INVARIANT(snap_off(status_gpa, 1, &off), "status address");
	status = after[off];
	switch (t->hdr.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		len = t->hdr.type == VIRTIO_BLK_T_IN ? c->wtotal - 1 : c->rtotal - 16;
		if (len % SECTOR || t->hdr.sector > cap / SECTOR || len > cap - t->hdr.sector * SECTOR)
			want = VIRTIO_BLK_S_IOERR;
		else if (t->hdr.type == VIRTIO_BLK_T_IN)
			want_len = (uint32_t)len + 1;
		break;
	case VIRTIO_BLK_T_FLUSH:
		break;
	case VIRTIO_BLK_T_GET_ID:
		want_len = 1 + (uint32_t)(c->wtotal - 1 < 20 ? c->wtotal - 1 : 20);
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		struct virtio_blk_discard_write_zeroes seg;

		if (c->rtotal - 16 != sizeof(seg)) {
			want = VIRTIO_BLK_S_UNSUPP;
			break;
		}
		gather(F.before, c->rd, c->nrd, 16, &seg, sizeof(seg));
		if (seg.sector > cap / SECTOR ||
		    (uint64_t)seg.num_sectors * SECTOR > cap - seg.sector * SECTOR)
			want = VIRTIO_BLK_S_IOERR;
		break;
	}
	default:
		want = VIRTIO_BLK_S_UNSUPP;
		break;
	}
	if (t->racy) {
		/* its bytes race with another request's (even its header may
		 * have changed under it): no exact answer to expect */
		need_resync = true;
		F.racy++;
		return;
	}
	F.exact++;
	INVARIANT(status == want && used_len == want_len,
		  "head %u type %u sector %llu (%llu readable, %llu writable bytes): status %u used "
		  "length %u, expected status %u length %u",
		  t->head, t->hdr.type, (unsigned long long)t->hdr.sector,
		  (unsigned long long)c->rtotal, (unsigned long long)c->wtotal, status, used_len, want,
		  want_len);
	if (want != VIRTIO_BLK_S_OK)
		return;
	if (t->hdr.type == VIRTIO_BLK_T_OUT) {
		len = c->rtotal - 16;
		gather(F.before, c->rd, c->nrd, 16, F.model + t->hdr.sector * SECTOR, len);
	} else if (t->hdr.type == VIRTIO_BLK_T_IN) {
		uint8_t *got = malloc(c->wtotal);

		INVARIANT(got, "out of memory");
		len = c->wtotal - 1;
		F.reads++;
		gather(after, c->wr, c->nwr, 0, got, len);
		for (uint64_t i = 0; i < len; i++) {
			uint64_t b = t->hdr.sector * SECTOR + i;

			INVARIANT(got[i] == F.model[b],
				  "read at sector %llu: byte %llu of the disk reads %#x, expected %#x",
				  (unsigned long long)t->hdr.sector, (unsigned long long)b, got[i],
				  F.model[b]);
		}
		free(got);
	} else if (t->hdr.type == VIRTIO_BLK_T_GET_ID) {
		char got[20];

		gather(after, c->wr, c->nwr, 0, got, want_len - 1);
		INVARIANT(!memcmp(got, F.serial, want_len - 1), "GET_ID returned %.*s, expected %.*s",
			  (int)(want_len - 1), got, (int)(want_len - 1), F.serial);
	} else if (t->hdr.type == VIRTIO_BLK_T_WRITE_ZEROES) {
		struct virtio_blk_discard_write_zeroes seg;

		gather(F.before, c->rd, c->nrd, 16, &seg, sizeof(seg));
		memset(F.model + seg.sector * SECTOR, 0, (uint64_t)seg.num_sectors * SECTOR);
	}
}

/* Disk ranges a request touches (writes and zeroes; reads for conflicts). */
static bool disk_range(const struct chain *c, const struct taken *t, uint64_t *off, uint64_t *len)
{
	struct virtio_blk_discard_write_zeroes seg;

	if (c->v != GOOD)
		return false;
	switch (t->hdr.type) {
	case VIRTIO_BLK_T_IN:
		*len = c->wtotal - 1;
		break;
	case VIRTIO_BLK_T_OUT:
		*len = c->rtotal - 16;
		break;
	case VIRTIO_BLK_T_WRITE_ZEROES:
		if (c->rtotal - 16 != sizeof(seg))
			return false;
		gather(F.before, c->rd, c->nrd, 16, &seg, sizeof(seg));
		*off = seg.sector * SECTOR;
		*len = (uint64_t)seg.num_sectors * SECTOR;
		return *off < DISK_SIZE;
	default:
		return false;
	}
	*off = t->hdr.sector * SECTOR;
	return t->hdr.sector < DISK_SIZE / SECTOR;
}

static void run_queue(const struct run *r)
{
	struct vuf_vq *vq = &F.fe.vq[0];
	struct vstate {
		uint32_t index, num;
	} st = {0, r->num};
	static struct taken taken[MAX_TAKEN];
	uint16_t start, avail, used0, used1;
	uint32_t end;
	unsigned ntaken, nused;

	if (r->features_change)
		set_features(!F.event_idx);
	snapshot(F.before);
	start = vq->used->idx; /* the daemon resumes from the used index */
	avail = vq->avail->idx;
	used0 = start;
	must(vuf_request(&F.fe, VUF_SET_VRING_NUM, &st, 8, NULL, 0, NULL, 0), "SET_VRING_NUM");
	st.num = r->base;
	must(vuf_request(&F.fe, VUF_SET_VRING_BASE, &st, 8, NULL, 0, NULL, 0), "SET_VRING_BASE");
	must(vuf_vq_rekick(&F.fe, 0), "SET_VRING_KICK");
	must(vuf_get_vring_base(&F.fe, 0, &end), "GET_VRING_BASE");
	snapshot(after);
	used1 = vq->used->idx;

	/* how many it took */
	ntaken = (uint16_t)(end - start);
	if ((uint16_t)(avail - start) > r->num)
		INVARIANT(ntaken == 0, "avail index %u is %u ahead of %u (queue of %u) yet %u taken",
			  avail, (uint16_t)(avail - start), start, r->num, ntaken);
	else
		INVARIANT(ntaken <= (uint16_t)(avail - start), "%u taken of %u available", ntaken,
			  (uint16_t)(avail - start));
	nused = (uint16_t)(used1 - used0);
	for (unsigned i = 0; i < ntaken; i++) {
		uint64_t off;
		uint16_t head;

		INVARIANT(snap_off(Q0_AVAIL + 4 + ((start + i) % r->num) * 2, 2, &off), "avail");
		memcpy(&head, F.before + off, 2);
		taken[i] = (struct taken){.head = head};
		if (head >= r->num) {
			INVARIANT(i == ntaken - 1, "took entries after head %u >= queue size %u", head,
				  r->num);
			ntaken--;
			break;
		}
		walk(head, r->num, &chains[i]);
		if (chains[i].v == GOOD)
			gather(F.before, chains[i].rd, chains[i].nrd, 0, &taken[i].hdr, 16);
	}
	INVARIANT(nused == ntaken, "%u requests taken, %u answered", ntaken, nused);

	/* requests whose buffers (or disk ranges) overlap another's race */
	for (unsigned i = 0; i < ntaken; i++)
		for (unsigned k = i + 1; k < ntaken; k++) {
			struct chain *a = &chains[i], *b = &chains[k];
			uint64_t ao, al, bo, bl;

			if (a->v == BAD || b->v == BAD)
				continue;
			if (ranges_overlap(a->wr, a->nwr, b->wr, b->nwr) ||
			    ranges_overlap(a->wr, a->nwr, b->rd, b->nrd) ||
			    ranges_overlap(a->rd, a->nrd, b->wr, b->nwr) ||
			    (disk_range(a, &taken[i], &ao, &al) && disk_range(b, &taken[k], &bo, &bl) &&
			     overlap(ao, al, bo, bl) &&
			     (taken[i].hdr.type != VIRTIO_BLK_T_IN || taken[k].hdr.type != VIRTIO_BLK_T_IN)))
				taken[i].racy = taken[k].racy = true;
		}
	for (unsigned i = 0; i < ntaken; i++) {
		struct chain *c = &chains[i];

		/* a chain whose writable buffers overlap its own buffers */
		if (c->v == GOOD)
			for (unsigned a = 0; a < c->nwr && !taken[i].racy; a++)
				for (unsigned b = 0; b < c->nwr + c->nrd; b++) {
					const struct range *o = b < c->nwr ? &c->wr[b] : &c->rd[b - c->nwr];

					if (b != a && overlap(c->wr[a].gpa, c->wr[a].len, o->gpa, o->len)) {
						taken[i].racy = true;
						break;
					}
				}
	}

	/* every used entry belongs to a request taken, once */
	for (unsigned u = 0; u < nused; u++) {
		struct vring_used_elem e;
		uint64_t off;
		unsigned i;

		INVARIANT(snap_off(Q0_USED + 4 + ((used0 + u) % r->num) * 8, 8, &off), "used");
		memcpy(&e, after + off, sizeof(e));
		for (i = 0; i < ntaken; i++)
			if (!taken[i].answered && taken[i].head == e.id)
				break;
		INVARIANT(i < ntaken, "used entry for head %u, which was not taken (or twice)", e.id);
		taken[i].answered = true;
		if (chains[i].v == BAD) {
			INVARIANT(e.len == 0, "malformed chain at head %u answered with length %u", e.id,
				  e.len);
			F.refused++;
		} else if (chains[i].v == GOOD) {
			check_request(&chains[i], &taken[i], e.len);
		} else {
			F.unsure++;
			INVARIANT(e.len <= chains[i].wtotal, "head %u: used length %u > %llu writable",
				  e.id, e.len, (unsigned long long)chains[i].wtotal);
		}
	}

	/* an UNSURE chain the daemon served may have written to the disk */
	for (unsigned i = 0; i < ntaken; i++)
		if (chains[i].v == UNSURE && taken[i].answered)
			need_resync = true;

	/* no stray writes: what changed lies in the used ring or in writable
	 * buffers of requests that could write */
	for (uint64_t p = 0; p < SNAP_SIZE; p += 4096) {
		if (!memcmp(F.before + p, after + p, 4096))
			continue;
		for (uint64_t b = p; b < p + 4096; b++) {
			uint64_t gpa = b < 2 * REG_AB_SIZE ? REG_A + b : REG_C + (b - 2 * REG_AB_SIZE);
			bool ok = false;

			if (F.before[b] == after[b])
				continue;
			if (gpa >= Q0_USED && gpa < Q0_USED + Q0_USED_LEN)
				continue;
			for (unsigned i = 0; i < ntaken && !ok; i++)
				if (chains[i].v != BAD)
					for (unsigned k = 0; k < chains[i].nwr && !ok; k++)
						ok = gpa >= chains[i].wr[k].gpa &&
						     gpa - chains[i].wr[k].gpa < chains[i].wr[k].len;
			INVARIANT(ok, "guest byte %#llx changed (%#x -> %#x) outside every writable "
				  "buffer", (unsigned long long)gpa, F.before[b], after[b]);
		}
	}
	if (need_resync) {
		resync();
		F.resyncs++;
		need_resync = false;
	}
	F.runs++;
}

/* ---- the input program -------------------------------------------------------------- */

enum {
	OP_DESC = 0,   /* idx, A, L, flags, next */
	OP_TDESC = 1,  /* entry(2), A, L, flags, next(2): indirect table area */
	OP_AVAIL = 2,  /* head(1; arg bit 0: +256) */
	OP_AIDX = 3,   /* delta(2): the avail index jumps */
	OP_HDR = 4,    /* slot, type, sector(2) [type bit 7: 8 raw bytes instead] */
	OP_DATA = 5,   /* A, n, n bytes */
	OP_USED = 6,   /* used index(2) */
	OP_BASE = 7,   /* SET_VRING_BASE value(2) */
	OP_RUN = 8,
	OP_FILL = 9,   /* A, len(2), byte */
	OP_CHAIN = 10, /* first, type, sector(2), sectors, pieces, shape: a good request */
	OP_FEAT = 11,  /* toggle EVENT_IDX before the next run */
};

struct input {
	const uint8_t *p;
	size_t left;
};

static uint64_t take(struct input *in, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++) {
		v |= (uint64_t)(in->left ? *in->p : 0) << (8 * i);
		if (in->left) {
			in->p++;
			in->left--;
		}
	}
	return v;
}

/* An address: a selector byte, then an offset; aimed at the places where
 * mistakes hide (region edges, the A/B seam, tables, headers). */
static uint64_t take_addr(struct input *in)
{
	unsigned sel = (unsigned)take(in, 1);
	uint64_t off;

	if ((sel >> 5) == 7)
		return take(in, 8);
	off = ((uint64_t)(sel & 0x1f) << 16) | take(in, 2);
	switch (sel >> 5) {
	case 0:
		return REG_A + off % (2 * REG_AB_SIZE);
	case 1:
		return REG_B + off % REG_AB_SIZE;
	case 2:
		return REG_B - 1 - off % 0x2000; /* just below the seam */
	case 3:
		return SCRATCH + off % (REG_C + REG_C_SIZE - SCRATCH);
	case 4:
		return TABLES + off % 0x4000;
	case 5:
		return HDRS + off % 0x1000;
	default:
		return AB_END - 0x100 + off % 0x200; /* across the end of B */
	}
}

static uint32_t take_len(struct input *in)
{
	uint32_t l = (uint32_t)take(in, 2);

	return l == 0xffff ? (uint32_t)take(in, 4) : l;
}

static const uint32_t types[] = {VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH,
				 VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD,
				 VIRTIO_BLK_T_WRITE_ZEROES};

/* A well-formed request (the fuzzer's shortcut to deep states). */
static void op_chain(struct input *in, unsigned num)
{
	unsigned first = (unsigned)take(in, 1) % num;
	uint32_t type = types[take(in, 1) % 6];
	uint64_t sector = take(in, 2) % (DISK_SIZE / SECTOR + 16);
	uint32_t len = (uint32_t)(take(in, 1) % 65) * SECTOR;
	unsigned pieces = 1 + (unsigned)(take(in, 1) % 8), shape = (unsigned)take(in, 1);
	uint64_t hdr = HDRS + first * 32, status = hdr + 16, buf;
	struct virtio_blk_outhdr h = {type, 0, sector};
	struct vuf_seg segs[12];
	unsigned n = 0;
	uint64_t pos = 0;
	uint8_t zero = 0xee;

	/* data in A or B, at an odd address with shape bit 0 (bounce path) */
	buf = REG_A + ((shape >> 3) % 12) * 0x8000 + (shape & 1 ? 1 + (shape >> 4) : 0);
	if (type == VIRTIO_BLK_T_DISCARD || type == VIRTIO_BLK_T_WRITE_ZEROES) {
		struct virtio_blk_discard_write_zeroes seg = {sector, len / SECTOR, 0};

		h.sector = 0;
		INVARIANT(vuf_mem_write(&F.mem, buf, &seg, sizeof(seg)), "segment");
		len = sizeof(seg);
		pieces = 1;
	} else if (type == VIRTIO_BLK_T_FLUSH) {
		len = 0;
	} else if (type == VIRTIO_BLK_T_GET_ID) {
		len = 20;
	}
	INVARIANT(vuf_mem_write(&F.mem, hdr, &h, sizeof(h)), "header");
	INVARIANT(vuf_mem_write(&F.mem, status, &zero, 1), "status");
	segs[n++] = (struct vuf_seg){hdr, 16, false};
	if (pieces > len)
		pieces = len ? len : 0;
	for (unsigned i = 0; i < pieces; i++) {
		uint32_t l = i + 1 == pieces ? (uint32_t)(len - pos) : (uint32_t)((len - pos) / (pieces - i));

		segs[n++] = (struct vuf_seg){buf + pos, l,
					     type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID};
		pos += l;
	}
	segs[n++] = (struct vuf_seg){status, 1, true};
	if ((shape & 2) || first + n > num)
		INVARIANT(vuf_chain(&F.fe, 0, first, segs, n, TABLES + (first % 16) * 0x400) >= 0,
			  "chain: %s", F.fe.err);
	else
		INVARIANT(vuf_chain(&F.fe, 0, first, segs, n, 0) >= 0, "chain: %s", F.fe.err);
	vuf_avail_push(&F.fe, 0, (uint16_t)first);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, size};
	struct vuf_vq *vq;
	struct run r = {0};
	unsigned cfg, runs = 0;
	bool pending = false;

	start_server();
	vq = &F.fe.vq[0];
	cfg = (unsigned)take(&in, 1);
	r.num = 4u << (cfg % 6);
	/* a clean slate: queue 0's rings, tables, headers, data */
	must(vuf_vq_layout(&F.fe, 0, r.num, Q0_DESC, Q0_AVAIL, Q0_USED), "queue 0 layout");
	memset(vuf_gpa(&F.mem, TABLES, REG_C + REG_C_SIZE - TABLES), 0, REG_C + REG_C_SIZE - TABLES);
	memset(vuf_gpa(&F.mem, REG_A, REG_AB_SIZE), 0, REG_AB_SIZE);
	memset(vuf_gpa(&F.mem, REG_B, REG_AB_SIZE), 0, REG_AB_SIZE);
	r.features_change = ((cfg >> 3) & 1) == F.event_idx; /* bit 3 set: EVENT_IDX off */
	while (in.left && runs < 16) {
		unsigned op = (unsigned)take(&in, 1), arg = op >> 4;

		pending = true;
		switch (op & 15) {
		case OP_DESC: {
			unsigned idx = (unsigned)take(&in, 1) % r.num;
			uint64_t a = take_addr(&in);
			uint32_t l = take_len(&in);
			uint16_t fl = (uint16_t)take(&in, 1);

			vuf_desc(&F.fe, 0, idx, a, l, fl, (uint16_t)(take(&in, 1) | (arg & 1) << 8));
			break;
		}
		case OP_TDESC: {
			unsigned e = (unsigned)take(&in, 2) % 1024;
			struct vring_desc d;

			d.addr = take_addr(&in);
			d.len = take_len(&in);
			d.flags = (uint16_t)take(&in, 1);
			d.next = (uint16_t)take(&in, 2);
			INVARIANT(vuf_mem_write(&F.mem, TABLES + e * 16, &d, sizeof(d)), "table");
			break;
		}
		case OP_AVAIL:
			vuf_avail_push(&F.fe, 0, (uint16_t)(take(&in, 1) | (arg & 1) << 8));
			break;
		case OP_AIDX:
			vq->avail_idx = (uint16_t)(vq->avail_idx + take(&in, 2));
			__atomic_store_n(&vq->avail->idx, vq->avail_idx, __ATOMIC_RELEASE);
			break;
		case OP_HDR: {
			unsigned slot = (unsigned)take(&in, 1) % 64;
			unsigned t = (unsigned)take(&in, 1);
			struct virtio_blk_outhdr h = {t & 0x40 ? (uint32_t)take(&in, 4) : types[t % 6], 0, 0};

			h.sector = t & 0x80 ? take(&in, 8) : take(&in, 2);
			INVARIANT(vuf_mem_write(&F.mem, HDRS + slot * 32, &h, sizeof(h)), "header");
			break;
		}
		case OP_DATA: {
			uint64_t a = take_addr(&in);
			unsigned n = (unsigned)take(&in, 1);
			uint8_t buf[256];

			for (unsigned i = 0; i < n; i++)
				buf[i] = (uint8_t)take(&in, 1);
			vuf_mem_write(&F.mem, a, buf, n); /* outside memory: ignored */
			break;
		}
		case OP_USED:
			vq->used->idx = (uint16_t)take(&in, 2);
			vq->last_used = vq->used->idx;
			break;
		case OP_BASE:
			r.base = (uint16_t)take(&in, 2);
			break;
		case OP_FILL: {
			uint64_t a = take_addr(&in);
			uint32_t l = (uint32_t)take(&in, 2);
			uint8_t *p = vuf_gpa(&F.mem, a, l);

			if (p)
				memset(p, (int)take(&in, 1), l);
			break;
		}
		case OP_CHAIN:
			op_chain(&in, r.num);
			break;
		case OP_FEAT:
			r.features_change = !r.features_change;
			break;
		case OP_RUN:
			run_queue(&r);
			r.features_change = false;
			r.base = vq->used->idx;
			runs++;
			pending = false;
			break;
		default:
			break;
		}
	}
	if (pending || runs == 0)
		run_queue(&r);
	if (++F.inputs % HEALTH_EVERY == 0)
		health_check();
	return 0;
}

/* ---- seeds ---------------------------------------------------------------------------- */

struct seed {
	uint8_t b[4096];
	size_t n;
};

static void put(struct seed *s, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes && s->n < sizeof(s->b); i++)
		s->b[s->n++] = (uint8_t)(v >> (8 * i));
}

/* An address in the selector encoding of take_addr. */
static void put_addr(struct seed *s, unsigned sel, uint32_t off)
{
	put(s, (sel << 5) | ((off >> 16) & 0x1f), 1);
	put(s, off & 0xffff, 2);
}

static void put_desc(struct seed *s, unsigned idx, unsigned sel, uint32_t off, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	put(s, OP_DESC | (next >> 8 ? 0x10 : 0), 1);
	put(s, idx, 1);
	put_addr(s, sel, off);
	if (len >= 0xffff) {
		put(s, 0xffff, 2);
		put(s, len, 4);
	} else {
		put(s, len, 2);
	}
	put(s, flags, 1);
	put(s, next & 0xff, 1);
}

static void put_tdesc(struct seed *s, unsigned e, unsigned sel, uint32_t off, uint32_t len,
		      uint16_t flags, uint16_t next)
{
	put(s, OP_TDESC, 1);
	put(s, e, 2);
	put_addr(s, sel, off);
	put(s, len, 2);
	put(s, flags, 1);
	put(s, next, 2);
}

static void put_hdr(struct seed *s, unsigned slot, unsigned type_index, uint16_t sector)
{
	put(s, OP_HDR, 1);
	put(s, slot, 1);
	put(s, type_index, 1);
	put(s, sector, 2);
}

static void put_chain(struct seed *s, unsigned first, unsigned type_index, uint16_t sector,
		      unsigned sectors, unsigned pieces, unsigned shape)
{
	put(s, OP_CHAIN, 1);
	put(s, first, 1);
	put(s, type_index, 1);
	put(s, sector, 2);
	put(s, sectors, 1);
	put(s, pieces, 1);
	put(s, shape, 1);
}

static int write_seed(const char *dir, const char *name, const struct seed *s)
{
	char path[PATH_MAX];
	FILE *f;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return -errno;
	if (fwrite(s->b, 1, s->n, f) != s->n)
		ret = -EIO;
	if (fclose(f) != 0 && ret == 0)
		ret = -errno;
	return ret;
}

/* Header slot 0 (HDRS) as a 16-byte readable descriptor, a status byte in
 * slot 0 + 16: the pieces of hand-made chains. */
#define SEL_HDR 5
#define SEL_A 0
#define SEL_TABLE 4
#define SEL_EDGE 6

int fuzz_vhost_make_seeds(const char *dir)
{
	struct seed s;
	int ret = 0;

#define SEED(name_, ...)                                                             \
	do {                                                                         \
		memset(&s, 0, sizeof(s));                                            \
		__VA_ARGS__;                                                         \
		if (ret == 0)                                                        \
			ret = write_seed(dir, name_, &s);                            \
	} while (0)

	/* well-formed traffic: writes, reads back, every type and shape */
	SEED("good-write-read", put(&s, 5, 1), put_chain(&s, 0, 1, 8, 8, 2, 0), put(&s, OP_RUN, 1),
	     put_chain(&s, 0, 0, 8, 8, 3, 0), put(&s, OP_RUN, 1));
	SEED("good-bounce-indirect", put(&s, 5, 1), put_chain(&s, 3, 1, 100, 16, 5, 0x13),
	     put_chain(&s, 40, 0, 200, 4, 2, 0x22), put(&s, OP_RUN, 1),
	     put_chain(&s, 5, 0, 100, 16, 7, 0x51), put(&s, OP_RUN, 1));
	SEED("good-types", put(&s, 4, 1), put_chain(&s, 0, 2, 0, 0, 1, 0),
	     put_chain(&s, 4, 3, 0, 0, 2, 0), put_chain(&s, 8, 5, 64, 32, 1, 0),
	     put_chain(&s, 12, 4, 64, 8, 1, 0), put(&s, OP_RUN, 1), put_chain(&s, 0, 0, 64, 32, 4, 2),
	     put(&s, OP_RUN, 1));
	SEED("good-many", put(&s, 5, 1), put_chain(&s, 0, 1, 0, 64, 8, 0x8),
	     put_chain(&s, 10, 1, 128, 64, 8, 0x19), put_chain(&s, 20, 1, 256, 1, 1, 0x20),
	     put_chain(&s, 30, 0, 512, 64, 3, 0x33), put_chain(&s, 40, 3, 0, 0, 2, 0x40),
	     put_chain(&s, 50, 0, 8000, 8, 2, 0x52), put(&s, OP_RUN, 1));
	SEED("good-no-event-idx", put(&s, 8 | 3, 1), put_chain(&s, 0, 1, 16, 8, 2, 0),
	     put(&s, OP_RUN, 1), put_chain(&s, 1, 0, 16, 8, 1, 0), put(&s, OP_RUN, 1));
	SEED("seam-span", put(&s, 5, 1), put_hdr(&s, 0, 1, 300), put_desc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1),
	     put_desc(&s, 1, 2, 0x7ff, 0x1000, N_FLAG, 2), put_desc(&s, 2, SEL_HDR, 16, 1, W_FLAG, 0),
	     put(&s, OP_AVAIL, 1), put(&s, 0, 1), put(&s, OP_RUN, 1));
	/* hostile chains */
	SEED("loop", put(&s, 5, 1), put_hdr(&s, 0, 0, 0), put_desc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1),
	     put_desc(&s, 1, SEL_A, 0, 512, N_FLAG | W_FLAG, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put_chain(&s, 10, 0, 0, 1, 1, 0), put(&s, OP_RUN, 1));
	SEED("outside", put(&s, 5, 1), put_hdr(&s, 0, 0, 0), put_desc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1),
	     put_desc(&s, 1, SEL_EDGE, 0x80, 0x200, N_FLAG | W_FLAG, 2),
	     put_desc(&s, 2, SEL_HDR, 16, 1, W_FLAG, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("huge-len", put(&s, 5, 1), put_hdr(&s, 0, 0, 0), put_desc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1),
	     put_desc(&s, 1, SEL_A, 0, 0xfffffe00u, N_FLAG | W_FLAG, 2),
	     put_desc(&s, 2, SEL_HDR, 16, 1, W_FLAG, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("read-after-write", put(&s, 5, 1), put_hdr(&s, 0, 0, 0),
	     put_desc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1), put_desc(&s, 1, SEL_HDR, 16, 1, N_FLAG | W_FLAG, 2),
	     put_desc(&s, 2, SEL_A, 0, 512, 0, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("no-status", put(&s, 5, 1), put_hdr(&s, 0, 1, 0), put_desc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1),
	     put_desc(&s, 1, SEL_A, 0, 512, 0, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("indirect-nested", put(&s, 5, 1), put_hdr(&s, 0, 0, 0),
	     put_tdesc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1), put_tdesc(&s, 1, SEL_TABLE, 0x400, 32, I_FLAG, 0),
	     put_tdesc(&s, 64, SEL_A, 0, 512, N_FLAG | W_FLAG, 1), put_tdesc(&s, 65, SEL_HDR, 16, 1, W_FLAG, 0),
	     put_desc(&s, 0, SEL_TABLE, 0, 32, I_FLAG, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("indirect-next", put(&s, 5, 1), put_hdr(&s, 0, 0, 0),
	     put_tdesc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1), put_tdesc(&s, 1, SEL_A, 0, 512, N_FLAG | W_FLAG, 2),
	     put_tdesc(&s, 2, SEL_HDR, 16, 1, W_FLAG, 0), put_desc(&s, 0, SEL_TABLE, 0, 48, I_FLAG | N_FLAG, 1),
	     put_desc(&s, 1, SEL_HDR, 17, 1, W_FLAG, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("indirect-odd-len", put(&s, 5, 1), put_hdr(&s, 0, 0, 0),
	     put_tdesc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1), put_tdesc(&s, 1, SEL_HDR, 16, 1, W_FLAG, 0),
	     put_desc(&s, 0, SEL_TABLE, 0, 40, I_FLAG, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("indirect-loop", put(&s, 5, 1), put_hdr(&s, 0, 0, 0),
	     put_tdesc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1), put_tdesc(&s, 1, SEL_A, 0, 512, N_FLAG | W_FLAG, 0),
	     put_desc(&s, 0, SEL_TABLE, 0, 32, I_FLAG, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("head-too-big", put(&s, 2, 1), put_chain(&s, 0, 3, 0, 0, 1, 0), put(&s, OP_AVAIL, 1),
	     put(&s, 200, 1), put_chain(&s, 1, 3, 0, 0, 1, 0), put(&s, OP_RUN, 1));
	SEED("avail-jump", put(&s, 3, 1), put_chain(&s, 0, 3, 0, 0, 1, 0), put(&s, OP_AIDX, 1),
	     put(&s, 40, 2), put(&s, OP_RUN, 1), put(&s, OP_AIDX, 1), put(&s, 0xffd0, 2),
	     put(&s, OP_RUN, 1));
	SEED("used-idx-moved", put(&s, 4, 1), put(&s, OP_USED, 1), put(&s, 0xfff0, 2),
	     put(&s, OP_AIDX, 1), put(&s, 0xfff0, 2), put_chain(&s, 0, 1, 32, 4, 1, 0),
	     put_chain(&s, 8, 0, 32, 4, 1, 0), put(&s, OP_RUN, 1));
	SEED("same-head-twice", put(&s, 5, 1), put_chain(&s, 0, 0, 8, 8, 2, 0), put(&s, OP_AVAIL, 1),
	     put(&s, 0, 1), put(&s, OP_AVAIL, 1), put(&s, 0, 1), put(&s, OP_RUN, 1));
	SEED("unknown-type", put(&s, 5, 1), put(&s, OP_HDR, 1), put(&s, 0, 1), put(&s, 0x40, 1),
	     put(&s, 99, 4), put(&s, 0, 2), put_desc(&s, 0, SEL_HDR, 0, 16, N_FLAG, 1),
	     put_desc(&s, 1, SEL_HDR, 16, 1, W_FLAG, 0), put(&s, OP_AVAIL, 1), put(&s, 0, 1),
	     put(&s, OP_RUN, 1));
	SEED("beyond-capacity", put(&s, 5, 1), put_chain(&s, 0, 0, 8190, 4, 1, 0),
	     put_chain(&s, 10, 1, 8191, 2, 1, 0), put_chain(&s, 20, 5, 8000, 64, 1, 0), put(&s, OP_RUN, 1));
	SEED("toggle-event-idx", put(&s, 5, 1), put(&s, OP_FEAT, 1), put_chain(&s, 0, 1, 40, 8, 2, 0),
	     put(&s, OP_RUN, 1), put(&s, OP_FEAT, 1), put_chain(&s, 1, 0, 40, 8, 2, 0), put(&s, OP_RUN, 1));
	return ret;
}
