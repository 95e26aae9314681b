/* test_snapshot.c - checkpoint sets (snapshot/): random trees and crashes.
 *
 * Mode "tree": a set of 3 disks (different sizes and block sizes) goes
 * through a long random sequence of writes into Now, creates, applies (some
 * saving the current state first, so branches form), renames, deletes of
 * leaves, of checkpoints with one dependent (merge) and with several (hidden
 * shared nodes, merged away later), subtree deletes, reopenings and exports.
 * A reference hash of every disk is recorded when each checkpoint is taken
 * and Now is mirrored in memory; after every step each visible checkpoint
 * must read (through its chain) exactly its reference, Now must equal the
 * mirror, and the visible checkpoints must be exactly the expected ones.
 *
 * Mode "crash": a base tree with every shape (leaf, one dependent with and
 * without children, two dependents, a hidden node, Now under a hidden node)
 * is built once; then for each of 11 operations (create, apply, apply
 * --checkpoint-first, the delete kinds, subtree delete, an apply whose tidy
 * merges a hidden node away) the operation runs in a child process that is
 * killed (SIGKILL) at the Nth durable step of the library
 * (VHDSTACK_SNAP_CRASH_AFTER=N, every N) and, when ptrace is allowed, at the
 * entry of its Nth modifying system call (write, pwrite, fsync, rename,
 * unlink, chmod, ftruncate, open with O_CREAT...), so also inside vhd_create,
 * vhd_merge and vhd_set_parent.  After each kill: the set opens (recovery),
 * it is exactly the state before or after the operation (for a subtree:
 * in between), every visible checkpoint and Now hold their reference content,
 * `repair` finds the images clean, and running the operation again completes
 * it with the expected result.
 *
 * TEST_SEED replays; TEST_KEEP=1 keeps the directory; TREE_STEPS (default
 * 160) and CRASH_POINTS (ptrace kill points per operation, default 40).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "randtest.h"
#include "ptrace_probe.h"
#include "snap.h"

#define NDISK 3
#define MAXID 4096

static const char *const disk_names[NDISK] = {"os", "data", "swap"};
static const uint64_t disk_size[NDISK] = {192 * KiB, 512 * KiB, 1 * MiB};
static const uint32_t disk_block[NDISK] = {16 * KiB, 64 * KiB, 128 * KiB};

/* ---- the expected state ---------------------------------------------------- */

struct world {
	char dir[4096];
	uint8_t *now[NDISK];          /* the mirror of Now */
	uint64_t ref[MAXID][NDISK];   /* content hash of each checkpoint */
	bool live[MAXID];             /* visible checkpoints */
};

static uint64_t hash_buf(const uint8_t *p, size_t n)
{
	uint64_t h = 0x84222325cbf29ce4ull ^ n;

	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	for (size_t i = n & ~(size_t)7; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h ^ (h >> 32);
}

static void print_note(void *c, const char *msg)
{
	(void)c;
	if (getenv("TEST_VERBOSE"))
		printf("    note: %s\n", msg);
}

static struct snap_set *open_set(const char *dir)
{
	struct snap_opts o = {.note = print_note};
	struct snap_set *s;
	struct vhd_err err;
	int ret = snap_open(dir, &o, &s, &err);

	if (ret < 0)
		fail("snap_open %s: %s (%d)", dir, err.msg, ret);
	return s;
}

static void read_node(struct snap_set *s, uint64_t id, size_t k, uint8_t *buf)
{
	struct vhd_open_opts oo = {0};
	struct vhd_image *img;
	struct vhd_err err;
	char path[4096];
	int ret;

	CHECK(snap_node_file(s, id, k, path, sizeof(path)) == 0);
	ret = vhd_open(path, &oo, &img, &err);
	if (ret < 0)
		fail("open %s (node %" PRIu64 "): %s", path, id, err.msg);
	CHECK(vhd_virtual_size(img) == disk_size[k]);
	ret = vhd_pread(img, buf, disk_size[k], 0);
	if (ret < 0)
		fail("read %s: %d", path, ret);
	vhd_close(img);
}

static uint64_t node_hash(struct snap_set *s, uint64_t id, size_t k)
{
	uint8_t *buf = malloc(disk_size[k]);
	uint64_t h;

	CHECK(buf);
	read_node(s, id, k, buf);
	h = hash_buf(buf, disk_size[k]);
	free(buf);
	return h;
}

/* A few writes into Now: random bytes, a fill, zeros; odd offsets and
 * lengths, sometimes across block boundaries. */
static void write_now(struct snap_set *s, struct world *w)
{
	for (size_t k = 0; k < NDISK; k++) {
		struct vhd_open_opts oo = {.flags = VHD_OPEN_RDWR};
		unsigned n = (unsigned)rnd_in(0, 3);
		struct vhd_image *img;
		struct vhd_err err;
		char path[4096];
		uint8_t *buf;
		int ret;

		if (n == 0)
			continue;
		CHECK(snap_node_file(s, SNAP_NOW, k, path, sizeof(path)) == 0);
		ret = vhd_open(path, &oo, &img, &err);
		if (ret < 0)
			fail("open Now %s for writing: %s", path, err.msg);
		buf = malloc(disk_size[k]);
		CHECK(buf);
		for (unsigned i = 0; i < n; i++) {
			uint64_t len = rnd(4) == 0 ? rnd_in(1, 3 * disk_block[k]) : rnd_in(1, 9000);
			uint64_t off;
			unsigned kind = (unsigned)rnd(3);

			if (len > disk_size[k])
				len = disk_size[k];
			off = rnd(disk_size[k] - len + 1);
			for (uint64_t b = 0; b < len; b++)
				buf[b] = kind == 0 ? (uint8_t)rnd64() : kind == 1 ? (uint8_t)(i + 0x41) : 0;
			ret = vhd_pwrite(img, buf, len, off);
			if (ret < 0)
				fail("write Now %s: %d", path, ret);
			memcpy(w->now[k] + off, buf, len);
		}
		free(buf);
		CHECK(vhd_close(img) == 0);
	}
}

static unsigned visible(struct snap_set *s, uint64_t *ids)
{
	unsigned n = 0;

	for (size_t i = 0; i < snap_nr_checkpoints(s); i++) {
		struct snap_node nd;

		CHECK(snap_node_get(s, snap_checkpoint_id(s, i), &nd) == 0);
		if (!nd.hidden)
			ids[n++] = nd.id;
	}
	return n;
}

/* Every visible checkpoint reads as its reference, Now as the mirror, and
 * the visible set is the expected one. */
static void verify(struct snap_set *s, const struct world *w)
{
	uint64_t *ids = calloc(MAXID, sizeof(*ids));
	unsigned n, live = 0;
	uint8_t *buf = malloc(1 * MiB);

	CHECK(ids && buf);
	n = visible(s, ids);
	for (uint64_t id = 1; id < MAXID; id++)
		live += w->live[id];
	for (unsigned i = 0; i < n; i++) {
		if (ids[i] >= MAXID || !w->live[ids[i]])
			fail("checkpoint %" PRIu64 " is visible but should not exist", ids[i]);
		for (size_t k = 0; k < NDISK; k++)
			if (node_hash(s, ids[i], k) != w->ref[ids[i]][k])
				fail("checkpoint %" PRIu64 " disk %s does not hold its reference content",
				     ids[i], disk_names[k]);
	}
	if (n != live)
		fail("%u checkpoints visible, %u expected", n, live);
	for (size_t k = 0; k < NDISK; k++) {
		read_node(s, SNAP_NOW, k, buf);
		for (uint64_t b = 0; b < disk_size[k]; b++)
			if (buf[b] != w->now[k][b])
				fail("Now disk %s differs from the mirror at byte %" PRIu64, disk_names[k], b);
	}
	free(ids);
	free(buf);
}

static void die_op(const char *what, int ret, const struct vhd_err *err)
{
	if (ret < 0)
		fail("%s: %s (%d)", what, err->msg, ret);
}

static uint64_t w_create(struct snap_set *s, struct world *w, const char *name)
{
	struct vhd_err err;
	uint64_t id = 0;

	die_op("create", snap_create(s, name, &id, &err), &err);
	CHECK(id > 0 && id < MAXID && !w->live[id]);
	w->live[id] = true;
	for (size_t k = 0; k < NDISK; k++)
		w->ref[id][k] = hash_buf(w->now[k], disk_size[k]);
	return id;
}

static void w_apply(struct snap_set *s, struct world *w, uint64_t id, bool first)
{
	struct vhd_err err;
	uint64_t saved = 0;

	die_op("apply", snap_apply(s, id, first, NULL, &saved, &err), &err);
	if (first) {
		CHECK(saved > 0 && saved < MAXID && !w->live[saved]);
		w->live[saved] = true;
		for (size_t k = 0; k < NDISK; k++)
			w->ref[saved][k] = hash_buf(w->now[k], disk_size[k]);
	}
	for (size_t k = 0; k < NDISK; k++) {
		read_node(s, SNAP_NOW, k, w->now[k]);
		if (hash_buf(w->now[k], disk_size[k]) != w->ref[id][k])
			fail("after applying %" PRIu64 ", Now disk %s is not that checkpoint's content",
			     id, disk_names[k]);
	}
}

static bool is_below(struct snap_set *s, uint64_t id, uint64_t top)
{
	struct snap_node n;

	while (id) {
		if (id == top)
			return true;
		CHECK(snap_node_get(s, id, &n) == 0);
		id = n.parent;
	}
	return false;
}

static void w_delete(struct snap_set *s, struct world *w, uint64_t id, bool subtree,
		     struct snap_delete_stats *st)
{
	struct vhd_err err;

	if (subtree) {
		for (size_t i = 0; i < snap_nr_checkpoints(s); i++) {
			uint64_t c = snap_checkpoint_id(s, i);

			if (is_below(s, c, id))
				w->live[c] = false;
		}
	}
	w->live[id] = false;
	die_op("delete", snap_delete(s, id, subtree, st, &err), &err);
}

/* ---- files ---------------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb;
	(void)flag;
	(void)f;
	return remove(p);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void copy_tree(const char *src, const char *dst)
{
	DIR *d = opendir(src);
	struct dirent *de;
	static char buf[1 << 16];

	CHECK(d);
	rm_tree(dst);
	CHECK(mkdir(dst, 0755) == 0);
	while ((de = readdir(d))) {
		char a[8192], b[8192];
		struct stat st;
		int in, out;
		ssize_t n;

		snprintf(a, sizeof(a), "%s/%s", src, de->d_name);
		snprintf(b, sizeof(b), "%s/%s", dst, de->d_name);
		if (lstat(a, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		in = open(a, O_RDONLY);
		out = open(b, O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 07777);
		CHECK(in >= 0 && out >= 0);
		while ((n = read(in, buf, sizeof(buf))) > 0)
			CHECK(write(out, buf, (size_t)n) == n);
		close(in);
		close(out);
	}
	closedir(d);
}

static void new_set(struct world *w, const char *dir)
{
	struct snap_opts o = {.note = print_note};
	const char *disks[NDISK];
	char paths[NDISK][4096];
	struct vhd_err err;

	snprintf(w->dir, sizeof(w->dir), "%s", dir);
	for (size_t k = 0; k < NDISK; k++) {
		struct vhd_create_opts co = {.type = VHD_TYPE_DYNAMIC, .size = disk_size[k],
					     .block_size = disk_block[k]};

		snprintf(paths[k], sizeof(paths[k]), "%s/%s.vhd", tmpdir, disk_names[k]);
		die_op("create disk", vhd_create(paths[k], &co, &err), &err);
		disks[k] = paths[k];
		w->now[k] = calloc(1, disk_size[k]);
		CHECK(w->now[k]);
	}
	die_op("init", snap_init(dir, disks, NDISK, NULL, &o, &err), &err);
}

/* ---- mode tree -------------------------------------------------------------- */

static uint64_t pick_visible(struct snap_set *s)
{
	uint64_t ids[MAXID];
	unsigned n = visible(s, ids);

	return n ? ids[rnd(n)] : 0;
}

static int tree_mode(void)
{
	struct world *w = calloc(1, sizeof(*w));
	unsigned steps = getenv("TREE_STEPS") ? (unsigned)atoi(getenv("TREE_STEPS")) : 160;
	unsigned nd0 = 0, nd1 = 0, nd2 = 0, nsub = 0, napply = 0, nfirst = 0, ncreate = 0;
	unsigned nexport = 0, merges = 0, hidden = 0, maxvis = 0;
	char dir[8192], out[8192];
	struct snap_set *s;

	CHECK(w);
	snprintf(dir, sizeof(dir), "%s/set", tmpdir);
	new_set(w, dir);
	s = open_set(dir);
	verify(s, w);
	for (unsigned step = 0; step < steps; step++) {
		uint64_t ids[MAXID];
		unsigned nvis = visible(s, ids), r = (unsigned)rnd(100);

		if (nvis > maxvis)
			maxvis = nvis;
		snprintf(ctx, sizeof(ctx), "tree step %u", step);
		write_now(s, w);
		/* grows to a few dozen checkpoints, then deletes catch up */
		if (nvis < 3 || r < (nvis > 36 ? 15 : 50)) {
			char name[64];

			snprintf(name, sizeof(name), "step %u", step);
			w_create(s, w, rnd(4) ? name : NULL);
			ncreate++;
		} else if (r < 66) {
			bool first = rnd(3) == 0;

			w_apply(s, w, pick_visible(s), first);
			napply++;
			nfirst += first;
		} else if (r < 90 || step % 20 == 19) {
			uint64_t id = pick_visible(s);
			struct snap_node n;
			struct snap_delete_stats st;
			bool subtree = rnd(8) == 0 || step % 40 == 39;

			/* now and then a shared node on purpose, so that every kind
			 * of delete happens in every run */
			for (unsigned i = 0; i < nvis && step % 20 == 19 && !subtree; i++) {
				CHECK(snap_node_get(s, ids[i], &n) == 0);
				if (n.dependents >= 2)
					id = ids[i];
			}

			CHECK(snap_node_get(s, id, &n) == 0);
			if (subtree)
				nsub++;
			else if (n.dependents == 0)
				nd0++;
			else if (n.dependents == 1)
				nd1++;
			else
				nd2++;
			w_delete(s, w, id, subtree, &st);
			merges += st.merged;
			hidden += st.hidden;
		} else if (r < 94) {
			struct vhd_err err;
			uint64_t id = pick_visible(s);

			die_op("rename", snap_rename(s, id, "renamed", &err), &err);
		} else if (r < 97) {
			/* export: standalone dynamic VHDs with the reference content */
			struct snap_export_opts eo = {.overwrite = true};
			uint64_t id = rnd(3) ? pick_visible(s) : SNAP_NOW;
			struct vhd_err err;

			snprintf(out, sizeof(out), "%s/export", tmpdir);
			die_op("export", snap_export(s, id, out, &eo, &err), &err);
			for (size_t k = 0; k < NDISK; k++) {
				struct vhd_open_opts oo = {0};
				struct vhd_image *img;
				struct vhd_info info;
				char p[8300];
				uint8_t *buf = malloc(disk_size[k]);
				uint64_t want = id ? w->ref[id][k] : hash_buf(w->now[k], disk_size[k]);

				snprintf(p, sizeof(p), "%s/%s.vhd", out, disk_names[k]);
				die_op("open export", vhd_open(p, &oo, &img, &err), &err);
				vhd_get_info(img, &info);
				CHECK(info.type == VHD_TYPE_DYNAMIC && !vhd_parent(img));
				CHECK(buf && vhd_pread(img, buf, disk_size[k], 0) == 0);
				if (hash_buf(buf, disk_size[k]) != want)
					fail("export of %" PRIu64 " disk %s differs from the reference", id,
					     disk_names[k]);
				free(buf);
				vhd_close(img);
			}
			nexport++;
		} else {
			/* reopen: load and check everything from disk again */
			snap_close(s);
			s = open_set(dir);
		}
		verify(s, w);
	}
	/* the end: delete everything, Now keeps its content */
	snprintf(ctx, sizeof(ctx), "final subtree delete");
	{
		uint64_t root = 0;
		struct snap_node n;

		for (size_t i = 0; i < snap_nr_checkpoints(s); i++) {
			CHECK(snap_node_get(s, snap_checkpoint_id(s, i), &n) == 0);
			if (!n.parent)
				root = n.id;
		}
		if (root) {
			struct vhd_err err;
			struct snap_delete_stats st;

			for (uint64_t id = 1; id < MAXID; id++)
				w->live[id] = false;
			die_op("delete root subtree", snap_delete(s, root, true, &st, &err), &err);
			CHECK(snap_nr_checkpoints(s) == 0);
		}
		verify(s, w);
	}
	snap_close(s);
	printf("tree: %u steps, up to %u visible checkpoints: %u creates, %u applies (%u saving the "
	       "current state), deletes: %u leaves, %u with one dependent, %u with several, %u "
	       "subtrees; %u merges, %u hidden nodes, %u exports checked\n", steps, maxvis, ncreate,
	       napply, nfirst, nd0, nd1, nd2, nsub, merges, hidden, nexport);
	CHECK(nd0 && nd1 && nd2 && nsub && nfirst && merges && hidden);
	for (size_t k = 0; k < NDISK; k++)
		free(w->now[k]);
	free(w);
	return 0;
}

/* ---- mode crash ---------------------------------------------------------- */

enum op_kind { OP_CREATE, OP_APPLY, OP_APPLY_FIRST, OP_DELETE, OP_DELETE_SUBTREE, OP_INIT };

struct scenario {
	const char *what;
	enum op_kind op;
	uint64_t id;
	/* run (without crashes) on the base before the operation */
	void (*prep)(struct snap_set *s, struct world *w);
};

struct state {
	uint64_t ids[MAXID];
	unsigned n;
	uint64_t now_parent;
	uint64_t nowh[NDISK];
};

static int run_op(struct snap_set *s, const struct scenario *sc, struct vhd_err *err)
{
	uint64_t id = 0;

	switch (sc->op) {
	case OP_CREATE:
		return snap_create(s, "crash", &id, err);
	case OP_APPLY:
		return snap_apply(s, sc->id, false, NULL, &id, err);
	case OP_APPLY_FIRST:
		return snap_apply(s, sc->id, true, "saved", &id, err);
	case OP_DELETE:
		return snap_delete(s, sc->id, false, NULL, err);
	case OP_DELETE_SUBTREE:
		return snap_delete(s, sc->id, true, NULL, err);
	case OP_INIT:
		break;
	}
	return -EINVAL;
}

static void get_state(struct snap_set *s, struct state *st)
{
	struct snap_node n;

	st->n = visible(s, st->ids);
	CHECK(snap_node_get(s, SNAP_NOW, &n) == 0);
	st->now_parent = n.parent;
	for (size_t k = 0; k < NDISK; k++)
		st->nowh[k] = node_hash(s, SNAP_NOW, k);
}

static bool same_ids(const struct state *a, const struct state *b)
{
	return a->n == b->n && !memcmp(a->ids, b->ids, a->n * sizeof(a->ids[0]));
}

static bool same_state(const struct state *a, const struct state *b)
{
	return same_ids(a, b) && a->now_parent == b->now_parent &&
	       !memcmp(a->nowh, b->nowh, sizeof(a->nowh));
}

static bool has_id(const struct state *a, uint64_t id)
{
	for (unsigned i = 0; i < a->n; i++)
		if (a->ids[i] == id)
			return true;
	return false;
}

/* Opened after a kill: before, after, or (subtree) in between, with every
 * checkpoint's content intact. */
static void check_recovered(struct snap_set *s, const struct world *w, const struct state *before,
			    const struct state *after, const struct scenario *sc)
{
	struct state now;

	get_state(s, &now);
	for (unsigned i = 0; i < now.n; i++) {
		uint64_t id = now.ids[i];

		if (!has_id(before, id) && !has_id(after, id))
			fail("checkpoint %" PRIu64 " appeared from nowhere", id);
		for (size_t k = 0; k < NDISK; k++)
			if (node_hash(s, id, k) != w->ref[id][k])
				fail("checkpoint %" PRIu64 " disk %s lost its content", id, disk_names[k]);
	}
	if (sc->op == OP_DELETE_SUBTREE) {
		for (unsigned i = 0; i < after->n; i++)
			if (!has_id(&now, after->ids[i]))
				fail("checkpoint %" PRIu64 " outside the subtree vanished", after->ids[i]);
	} else if (!same_ids(&now, before) && !same_ids(&now, after)) {
		fail("the visible checkpoints are neither those before nor those after the operation");
	}
	if (!memcmp(before->nowh, after->nowh, sizeof(now.nowh))) {
		if (memcmp(now.nowh, before->nowh, sizeof(now.nowh)))
			fail("Now lost its content");
	} else if (!(now.now_parent == before->now_parent && !memcmp(now.nowh, before->nowh, sizeof(now.nowh))) &&
		   !(now.now_parent == after->now_parent && !memcmp(now.nowh, after->nowh, sizeof(now.nowh)))) {
		fail("Now (under %" PRIu64 ") holds neither the old nor the new current state",
		     now.now_parent);
	}
}

/* vhd_check of every chain the set holds: no warning, no error. */
static void check_images(struct snap_set *s)
{
	for (size_t i = 0; i <= snap_nr_checkpoints(s); i++) {
		uint64_t id = i < snap_nr_checkpoints(s) ? snap_checkpoint_id(s, i) : SNAP_NOW;

		for (size_t k = 0; k < NDISK; k++) {
			struct vhd_check_report rep = {0};
			struct vhd_err err;
			char path[4096];

			CHECK(snap_node_file(s, id, k, path, sizeof(path)) == 0);
			die_op("check", vhd_check(path, NULL, &rep, &err), &err);
			if (vhd_check_count(&rep, VHD_SEV_WARNING))
				fail("vhd_check %s: %s: %s", path, rep.problems[0].field, rep.problems[0].msg);
			vhd_check_report_free(&rep);
		}
	}
}

/* The child: open the set (with the crash point from the environment) and
 * run the operation.  _exit keeps LeakSanitizer (which needs ptrace) out. */
static void init_sources(char (*paths)[4096], const char **disks)
{
	for (size_t k = 0; k < NDISK; k++) {
		snprintf(paths[k], sizeof(paths[k]), "%s/src/%s.vhd", tmpdir, disk_names[k]);
		disks[k] = paths[k];
	}
}

static void child_run(const char *dir, const struct scenario *sc)
{
	struct snap_set *s;
	struct vhd_err err;

	if (sc->op == OP_INIT) {
		char paths[NDISK][4096];
		const char *disks[NDISK];

		init_sources(paths, disks);
		_exit(snap_init(dir, disks, NDISK, NULL, NULL, &err) < 0 ? 4 : 0);
	}
	if (snap_open(dir, NULL, &s, &err) < 0)
		_exit(3);
	if (run_op(s, sc, &err) < 0) {
		fprintf(stderr, "child: %s\n", err.msg);
		_exit(4);
	}
	snap_close(s);
	_exit(0);
}

static bool modifying(const struct __ptrace_syscall_info *in)
{
	switch (in->entry.nr) {
	case SYS_write: case SYS_pwrite64: case SYS_pwritev: case SYS_writev:
	case SYS_fsync: case SYS_fdatasync: case SYS_rename: case SYS_renameat:
	case SYS_renameat2: case SYS_unlink: case SYS_unlinkat: case SYS_ftruncate:
	case SYS_truncate: case SYS_fallocate: case SYS_chmod: case SYS_fchmod:
	case SYS_fchmodat: case SYS_mkdir: case SYS_mkdirat: case SYS_link: case SYS_linkat:
		return true;
	case SYS_openat:
		return (in->entry.args[2] & O_CREAT) != 0;
	case SYS_open:
		return (in->entry.args[1] & O_CREAT) != 0;
	default:
		return false;
	}
}

/* Runs the operation in a child; kills it at the entry of its target-th
 * modifying syscall (ptrace) or at its target-th step (failpoint); target 0
 * = never.  Returns true if it was killed; *count gets the syscalls seen. */
static bool run_child(const char *dir, const struct scenario *sc, bool traced, unsigned target,
		      unsigned *count)
{
	int status;
	pid_t pid;
	unsigned seen = 0;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char n[32];

		if (!traced && target) {
			snprintf(n, sizeof(n), "%u", target);
			setenv("VHDSTACK_SNAP_CRASH_AFTER", n, 1);
		} else {
			unsetenv("VHDSTACK_SNAP_CRASH_AFTER");
		}
		if (traced) {
			if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
				_exit(5);
			raise(SIGSTOP);
		}
		child_run(dir, sc);
	}
	if (!traced) {
		CHECK(waitpid(pid, &status, 0) == pid);
	} else {
		CHECK(waitpid(pid, &status, 0) == pid && WIFSTOPPED(status));
		CHECK(ptrace(PTRACE_SETOPTIONS, pid, NULL,
			     (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) == 0);
		for (;;) {
			struct __ptrace_syscall_info info;
			int sig = 0;

			CHECK(ptrace(PTRACE_SYSCALL, pid, NULL, (void *)(long)sig) == 0);
			CHECK(waitpid(pid, &status, 0) == pid);
			if (WIFEXITED(status) || WIFSIGNALED(status))
				break;
			if (!WIFSTOPPED(status) || WSTOPSIG(status) != (SIGTRAP | 0x80))
				continue;
			if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof(info), &info) <= 0 ||
			    info.op != PTRACE_SYSCALL_INFO_ENTRY || !modifying(&info))
				continue;
			if (++seen == target) {
				kill(pid, SIGKILL);
				CHECK(waitpid(pid, &status, 0) == pid);
				break;
			}
		}
	}
	if (count)
		*count = seen;
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
		return true;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("the operation failed in the child (status 0x%x)", status);
	return false;
}

/* After a kill: recover, check, repair, finish the operation. */
static void after_kill(const char *dir, const struct world *w, const struct state *before,
		       const struct state *after, const struct scenario *sc)
{
	struct snap_set *s = open_set(dir);
	struct snap_repair_stats rs;
	struct state now;
	struct vhd_err err;

	check_recovered(s, w, before, after, sc);
	die_op("repair", snap_repair(s, &rs, &err), &err);
	check_images(s);
	get_state(s, &now);
	if (!same_state(&now, after)) {
		/* undone (or a subtree half done): doing it again completes it */
		struct scenario again = *sc;

		if (sc->op == OP_DELETE_SUBTREE && !has_id(&now, sc->id))
			fail("subtree delete: the top is gone but the state is not the final one");
		die_op("operation after recovery", run_op(s, &again, &err), &err);
		get_state(s, &now);
		if (!same_state(&now, after))
			fail("running the operation again after recovery did not give the expected state");
	}
	snap_close(s);
}

/* base tree:  1 root
 *             |-- 2 a
 *             |   |-- 3 b
 *             |   `-- 4 c
 *             |       `-- Now
 *             `-- 5 d (hidden: deleted, shared by 6 and 7)
 *                 |-- 6 e
 *                 `-- 7 f                                                   */
static void build_base(struct snap_set *s, struct world *w)
{
	struct snap_delete_stats st;

	write_now(s, w);
	CHECK(w_create(s, w, "root") == 1);
	write_now(s, w);
	CHECK(w_create(s, w, "a") == 2);
	write_now(s, w);
	CHECK(w_create(s, w, "b") == 3);
	w_apply(s, w, 2, false);
	write_now(s, w);
	CHECK(w_create(s, w, "c") == 4);
	w_apply(s, w, 1, false);
	write_now(s, w);
	CHECK(w_create(s, w, "d") == 5);
	write_now(s, w);
	CHECK(w_create(s, w, "e") == 6);
	w_apply(s, w, 5, false);
	write_now(s, w);
	CHECK(w_create(s, w, "f") == 7);
	w_apply(s, w, 4, false);
	write_now(s, w);
	w_delete(s, w, 5, false, &st);
	CHECK(st.hidden == 1);
	verify(s, w);
}

static void prep_drop_b(struct snap_set *s, struct world *w)
{
	struct snap_delete_stats st;

	w_delete(s, w, 3, false, &st);
}

/* Root left with one dependent (a). */
static void prep_drop_d(struct snap_set *s, struct world *w)
{
	struct snap_delete_stats st;

	w_delete(s, w, 5, true, &st);
	CHECK(st.removed == 2);
}

/* Now directly under the hidden node 5 (next to 6). */
static void prep_now_under_hidden(struct snap_set *s, struct world *w)
{
	struct snap_delete_stats st;

	w_apply(s, w, 7, false);
	write_now(s, w);
	w_delete(s, w, 7, false, &st);
	CHECK(st.merged == 1);
}

static const struct scenario scenarios[] = {
	{"create", OP_CREATE, 0, NULL},
	{"apply 3 (discard Now)", OP_APPLY, 3, NULL},
	{"apply 6 --checkpoint-first", OP_APPLY_FIRST, 6, NULL},
	{"delete leaf 3", OP_DELETE, 3, NULL},
	{"delete 4 (one dependent: Now)", OP_DELETE, 4, NULL},
	{"delete 2 (two dependents: hidden)", OP_DELETE, 2, NULL},
	{"delete 6 (hidden parent merged away)", OP_DELETE, 6, NULL},
	{"delete 2 (one dependent with a child: re-point)", OP_DELETE, 2, prep_drop_b},
	{"delete root 1 (one dependent: merge, 2 re-points)", OP_DELETE, 1, prep_drop_d},
	{"delete subtree 2 (Now inside)", OP_DELETE_SUBTREE, 2, NULL},
	{"apply 3 (tidy merges hidden 5 away)", OP_APPLY, 3, prep_now_under_hidden},
};

/* The set made by init holds the sources' content, and the sources are gone
 * (moved in). */
static void check_init_result(const char *dir, const uint64_t *src_hash)
{
	struct snap_set *s = open_set(dir);
	char paths[NDISK][4096];
	const char *disks[NDISK];

	init_sources(paths, disks);
	CHECK(snap_nr_checkpoints(s) == 0 && snap_nr_disks(s) == NDISK);
	for (size_t k = 0; k < NDISK; k++) {
		if (node_hash(s, SNAP_NOW, k) != src_hash[k])
			fail("init: disk %s does not hold the source's content", disk_names[k]);
		if (access(paths[k], F_OK) == 0)
			fail("init: %s is still there after moving it in", paths[k]);
	}
	snap_close(s);
}

/* init killed at each step / syscall: afterwards either the set exists with
 * the disks in it, or (rolled back by the next init or open) the sources are
 * back where they were; init again completes it. */
static unsigned crash_init(bool traced, unsigned points)
{
	static const struct scenario sc = {"init", OP_INIT, 0, NULL};
	char src[8192], srcp[8192], dir[8192], paths[NDISK][4096];
	const char *disks[NDISK];
	uint64_t src_hash[NDISK];
	unsigned kills = 0, total = 0;
	struct world w = {0};

	snprintf(ctx, sizeof(ctx), "init");
	snprintf(src, sizeof(src), "%s/src", tmpdir);
	snprintf(srcp, sizeof(srcp), "%s/src-pristine", tmpdir);
	snprintf(dir, sizeof(dir), "%s/initset", tmpdir);
	/* sources with content: a set's Now, exported as plain files */
	rm_tree(dir);
	rm_tree(srcp);
	new_set(&w, dir);
	{
		struct snap_set *s = open_set(dir);
		struct snap_export_opts eo = {0};
		struct vhd_err err;

		write_now(s, &w);
		for (size_t k = 0; k < NDISK; k++)
			src_hash[k] = node_hash(s, SNAP_NOW, k);
		die_op("export sources", snap_export(s, SNAP_NOW, srcp, &eo, &err), &err);
		snap_close(s);
	}
	for (size_t k = 0; k < NDISK; k++)
		free(w.now[k]);
	init_sources(paths, disks);
	for (unsigned n = 1, j = 0;; n++) {
		bool killed;
		unsigned target = n;

		if (traced && n == 1) {
			rm_tree(dir);
			copy_tree(srcp, src);
			CHECK(!run_child(dir, &sc, true, 0, &total));
		}
		rm_tree(dir);
		copy_tree(srcp, src);
		if (traced) {
			if (j >= total || j >= points)
				break;
			target = total <= points ? j + 1 : (unsigned)(1 + (uint64_t)j * total / points);
			j++;
		}
		killed = run_child(dir, &sc, traced, target, NULL);
		if (!killed) {
			CHECK(!traced);
			check_init_result(dir, src_hash);
			break;
		}
		kills++;
		if (access(dir, F_OK) == 0 && rnd(2)) {
			/* opening says "not a set" after undoing it, or opens the set */
			struct snap_set *s;
			struct vhd_err err;
			char meta[8300];

			snprintf(meta, sizeof(meta), "%s/set.json", dir);
			if (snap_open(dir, NULL, &s, &err) == 0) {
				snap_close(s);
				check_init_result(dir, src_hash);
				continue;
			}
			if (access(meta, F_OK) == 0)
				fail("init: a set with set.json does not open: %s", err.msg);
			for (size_t k = 0; k < NDISK; k++)
				if (access(paths[k], F_OK) != 0)
					fail("init undone, but %s is not back", paths[k]);
		}
		{
			char meta[8300];
			struct vhd_err err;

			snprintf(meta, sizeof(meta), "%s/set.json", dir);
			if (access(meta, F_OK) != 0)
				die_op("init again", snap_init(dir, disks, NDISK, NULL, NULL, &err), &err);
		}
		check_init_result(dir, src_hash);
	}
	printf("crash: %-48s %3u kills at %s\n", "init (disks moved in)", kills,
	       traced ? "syscalls" : "library steps");
	return kills;
}

static int crash_mode(void)
{
	struct world *w = calloc(1, sizeof(*w)), *wb = calloc(1, sizeof(*w));
	unsigned points = getenv("CRASH_POINTS") ? (unsigned)atoi(getenv("CRASH_POINTS")) : 40;
	bool traced = ptrace_available();
	unsigned total_kills = 0, total_fp = 0, total_pt = 0;
	char base[8192], pristine[8192], work[8192];
	struct snap_set *s;

	CHECK(w && wb);
	if (!traced)
		printf("crash: ptrace is not available here: kills at library steps only\n");
	snprintf(base, sizeof(base), "%s/base", tmpdir);
	snprintf(pristine, sizeof(pristine), "%s/pristine", tmpdir);
	snprintf(work, sizeof(work), "%s/work", tmpdir);
	snprintf(ctx, sizeof(ctx), "building the base tree");
	new_set(w, base);
	s = open_set(base);
	build_base(s, w);
	snap_close(s);
	for (size_t k = 0; k < NDISK; k++) {
		wb->now[k] = malloc(disk_size[k]);
		CHECK(wb->now[k]);
	}
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		const struct scenario *sc = &scenarios[i];
		struct state before, after;
		struct vhd_err err;
		unsigned fp = 0, pt = 0, n, total = 0;

		snprintf(ctx, sizeof(ctx), "%s", sc->what);
		/* the world of this scenario: the base plus its preparation */
		memcpy(wb->ref, w->ref, sizeof(w->ref));
		memcpy(wb->live, w->live, sizeof(w->live));
		for (size_t k = 0; k < NDISK; k++)
			memcpy(wb->now[k], w->now[k], disk_size[k]);
		copy_tree(base, pristine);
		s = open_set(pristine);
		if (sc->prep)
			sc->prep(s, wb);
		get_state(s, &before);
		snap_close(s);
		/* the expected result, and the reference of a checkpoint it makes */
		copy_tree(pristine, work);
		s = open_set(work);
		die_op(sc->what, run_op(s, sc, &err), &err);
		get_state(s, &after);
		for (unsigned j = 0; j < after.n; j++)
			if (!has_id(&before, after.ids[j]))
				for (size_t k = 0; k < NDISK; k++)
					wb->ref[after.ids[j]][k] = before.nowh[k];
		check_images(s);
		snap_close(s);
		/* kills at every library step */
		for (n = 1;; n++) {
			copy_tree(pristine, work);
			if (!run_child(work, sc, false, n, NULL))
				break;
			after_kill(work, wb, &before, &after, sc);
			fp++;
		}
		/* kills at modifying syscalls: all of them, or `points` spread out */
		if (traced) {
			copy_tree(pristine, work);
			CHECK(!run_child(work, sc, true, 0, &total));
			for (unsigned j = 0; j < total && j < points; j++) {
				unsigned target = total <= points ? j + 1
					: (unsigned)(1 + (uint64_t)j * total / points + rnd(total / points));

				if (target > total)
					target = total;
				copy_tree(pristine, work);
				if (!run_child(work, sc, true, target, NULL))
					fail("syscall %u of %u: the operation finished", target, total);
				after_kill(work, wb, &before, &after, sc);
				pt++;
			}
		}
		printf("crash: %-48s %3u kills at library steps, %3u at syscalls (of %u)\n", sc->what,
		       fp, pt, total);
		CHECK(fp > 0);
		total_fp += fp;
		total_pt += pt;
		total_kills += fp + pt;
	}
	total_fp += crash_init(false, points);
	if (traced)
		total_pt += crash_init(true, points);
	total_kills = total_fp + total_pt;
	printf("crash: %u kills (%u at library steps, %u at syscalls), every one recovered\n",
	       total_kills, total_fp, total_pt);
	for (size_t k = 0; k < NDISK; k++) {
		free(w->now[k]);
		free(wb->now[k]);
	}
	free(w);
	free(wb);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "tree";
	const char *env = getenv("TEST_SEED");
	int ret;

	seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
	rng = seed;
	printf("seed %" PRIu64 " (replay with TEST_SEED=%" PRIu64 ")\n", seed, seed);
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_snapshot.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	if (!strcmp(mode, "tree"))
		ret = tree_mode();
	else if (!strcmp(mode, "crash"))
		ret = crash_mode();
	else {
		fprintf(stderr, "usage: test_snapshot [tree|crash]\n");
		return 2;
	}
	if (ret == 0 && !getenv("TEST_KEEP"))
		rm_tree(tmpdir);
	return ret;
}
