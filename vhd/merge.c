/* merge.c - merge a differencing disk into its parent or a deeper ancestor
 * (Hyper-V Merge-VHD).
 *
 * Crash safety, and how a merge resumes:
 *   1. An intent record CHILD.merge-intent is written (temp file, fsync,
 *      rename, directory fsync) naming the source, the target, the images in
 *      between, their unique ids, --keep, and the state "copying".
 *   2. Every range the images above the target hold is copied into the target
 *      with the crash-safe write path (data, fdatasync, then BAT/bitmap).
 *      Throughout, the chain seen from CHILD is unchanged: the images above
 *      the target still hold the same data and shadow the target's ranges
 *      being rewritten.  Re-copying is idempotent, so a crash here is resumed
 *      by copying again from the start.
 *   3. The target is flushed; the record moves to "copied".
 *   4. The images above the target are removed (or, with --keep, CHILD's BAT
 *      is cleared so it reads straight through to the target, which now holds
 *      everything).  Each step is safe in any order because the target
 *      already holds the content.
 *   5. The record is removed.
 * `vhdtool merge` with the same CHILD, or `vhdtool repair CHILD`, finds the
 * record and rolls the merge forward from where it stopped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Data written per fdatasync: large batches keep the sync count low (the
 * metadata of a batch is published only after its data is durable); after
 * each, the space of what was merged is given back (merge_release.c). */
#define BATCH_BYTES (1ull << 30)
#define BATCH_PLANS 16384
#define COPY_CHUNK (4u << 20)
#define COPY_WRITERS 4
#define MAX_MEMBERS VHD_MAX_CHAIN_DEPTH

struct intent {
	char source[PATH_MAX];
	char target[PATH_MAX];
	char members[MAX_MEMBERS][PATH_MAX]; /* removed at the end (source first) */
	unsigned nr_members;
	bool keep;
	bool copied;
};

static void intent_path(const char *child, char *out, size_t len)
{
	snprintf(out, len, "%s.merge-intent", child);
}

static int intent_write(const char *child, const struct intent *in)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	FILE *f;
	int ret = 0;

	intent_path(child, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "vhdstack-merge 1\nsource=%s\ntarget=%s\nkeep=%d\nstate=%s\n", in->source,
		in->target, in->keep, in->copied ? "copied" : "copying");
	for (unsigned i = 0; i < in->nr_members; i++)
		fprintf(f, "member=%s\n", in->members[i]);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0)
		ret = -errno;
	if (fclose(f) != 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret == 0)
		ret = vhd_fsync_dir_of(path);
	if (ret < 0)
		unlink(tmp);
	return ret;
}

/* Returns 1 when a record exists (parsed into in), 0 when none, <0 when it
 * cannot be read or makes no sense. */
static int intent_read(const char *child, struct intent *in, struct vhd_err *err)
{
	char path[PATH_MAX], line[PATH_MAX + 32];
	FILE *f;
	int ret = 1;

	memset(in, 0, sizeof(*in));
	intent_path(child, path, sizeof(path));
	f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	if (!fgets(line, sizeof(line), f) || strcmp(line, "vhdstack-merge 1\n")) {
		vhd_err_set(err, "%s: not a merge intent record this version understands", path);
		ret = -EINVAL;
		goto out;
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "source=", 7))
			snprintf(in->source, sizeof(in->source), "%s", line + 7);
		else if (!strncmp(line, "target=", 7))
			snprintf(in->target, sizeof(in->target), "%s", line + 7);
		else if (!strncmp(line, "keep=", 5))
			in->keep = line[5] == '1';
		else if (!strncmp(line, "state=", 6))
			in->copied = !strcmp(line + 6, "copied");
		else if (!strncmp(line, "member=", 7) && in->nr_members < MAX_MEMBERS)
			snprintf(in->members[in->nr_members++], PATH_MAX, "%s", line + 7);
	}
	if (!in->source[0] || !in->target[0] || !in->nr_members) {
		vhd_err_set(err, "%s: incomplete merge intent record", path);
		ret = -EINVAL;
	}
out:
	fclose(f);
	return ret;
}

static int intent_remove(const char *child)
{
	char path[PATH_MAX];

	intent_path(child, path, sizeof(path));
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return vhd_fsync_dir_of(path);
}

/* ---- dependents ---------------------------------------------------------- */

/* Reads the parent unique id a differencing VHD records (no full open: a
 * quick look at files that may be anything). */
static bool peek_parent_uuid(const char *path, uint8_t uuid[16])
{
	uint8_t f[VHD_FOOTER_SIZE], h[VHD_DYNHDR_SIZE];
	struct stat st;
	bool ok = false;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

	if (fd < 0)
		return false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 2048 &&
	    pread_full(fd, f, sizeof(f), 0) == 0 && !memcmp(f, VHD_COOKIE, 8) &&
	    vhd_be32(f + 60) == VHD_TYPE_DIFF && vhd_be64(f + 16) < (uint64_t)st.st_size - 1024 &&
	    pread_full(fd, h, sizeof(h), vhd_be64(f + 16)) == 0 && !memcmp(h, VHD_DYN_COOKIE, 8)) {
		memcpy(uuid, h + 40, 16);
		ok = true;
	}
	close(fd);
	return ok;
}

/* Is `path` (not one of the chain's own images) a child of an image whose
 * unique id is one of ids[]? */
static bool depends_on(const char *path, const uint8_t (*ids)[16], unsigned n)
{
	uint8_t pid[16];

	if (!peek_parent_uuid(path, pid))
		return false;
	for (unsigned i = 0; i < n; i++)
		if (!memcmp(pid, ids[i], 16))
			return true;
	return false;
}

/* The target may be opened apart from the chain: compare files, not handles. */
static bool same_file(const struct vhd_image *a, const struct vhd_image *b)
{
	return a->dev == b->dev && a->ino == b->ino;
}

/* Looks in the directories of the chain for other disks that depend on the
 * target or on an image about to be removed. */
static int check_dependents(struct vhd_image *child, struct vhd_image *target,
			    const struct vhd_merge_opts *o, struct vhd_err *err)
{
	uint8_t ids[MAX_MEMBERS + 1][16];
	unsigned n = 0;
	char dir[PATH_MAX];

	for (struct vhd_image *m = child->parent; m; m = m->parent) {
		memcpy(ids[n++], m->footer.uuid, 16);
		if (same_file(m, target))
			break;
	}
	for (size_t i = 0; i < o->nr_siblings; i++)
		if (depends_on(o->siblings[i], (const uint8_t(*)[16])ids, n)) {
			vhd_err_set(err, "%s: depends on an image this merge changes or removes; "
					 "merging would change its content (pass --force to merge anyway)",
				    o->siblings[i]);
			return -EBUSY;
		}
	for (struct vhd_image *m = child; m; m = same_file(m, target) ? NULL : m->parent) {
		const char *slash = strrchr(m->path, '/');
		DIR *d;
		struct dirent *de;

		snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - m->path) : 1,
			 slash ? m->path : ".");
		if (!dir[0])
			snprintf(dir, sizeof(dir), "/");
		d = opendir(dir);
		if (!d)
			continue;
		while ((de = readdir(d))) {
			char p[PATH_MAX * 2];
			struct stat st;
			bool ours = false;

			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			if (stat(p, &st) < 0 || !S_ISREG(st.st_mode))
				continue;
			for (struct vhd_image *c = child; c; c = c->parent)
				ours |= c->dev == st.st_dev && c->ino == st.st_ino;
			if (!ours && depends_on(p, (const uint8_t(*)[16])ids, n)) {
				vhd_err_set(err, "%s: depends on an image this merge changes or removes; "
						 "merging would change its content (pass --force to merge anyway)",
					    p);
				closedir(d);
				return -EBUSY;
			}
		}
		closedir(d);
	}
	return 0;
}

/* ---- copying ------------------------------------------------------------- */

/* The reader thread's view of the chain: what the images above the target
 * hold is read (up to the next chunk boundary, so the writes stay aligned);
 * what the target or its parents hold is skipped unread. */
struct above_target {
	struct vhd_image *child;
	unsigned tdepth;
	uint64_t prefetched;    /* ra_prefetch: announced up to here */
};

/* What the images above the target hold (the rest is not announced). */
static int map_above(void *ctx, uint64_t off, uint64_t len, struct vhd_extent *e)
{
	struct above_target *a = ctx;
	int ret = vhd_map(a->child, off, len, VHD_MAP_RESOLVE, e);

	if (ret == 0 && e->depth >= a->tdepth)
		e->fd = -1;
	return ret;
}

static int fill_from_above(void *ctx, struct ra_slot *sl, uint64_t left)
{
	struct above_target *a = ctx;
	struct vhd_extent e;
	int ret = vhd_map(a->child, sl->off, left, VHD_MAP_RESOLVE, &e);

	if (ret < 0)
		return ret;
	if (e.depth >= a->tdepth) {
		sl->len = e.length;
		return 0;
	}
	if (e.kind != VHD_EXT_DATA)
		return -ENOSPC; /* zeros above the target: a child larger than its parent */
	sl->len = COPY_CHUNK - sl->off % COPY_CHUNK < e.length ? COPY_CHUNK - sl->off % COPY_CHUNK
							      : e.length;
	sl->data = true;
	ra_prefetch(&a->prefetched, sl->off, sl->off + left, map_above, a);
	ret = pread_full(e.fd, sl->buf, sl->len, e.file_offset);
	/* Each byte is read once, from a file the merge then removes or
	 * empties: its cache is dropped here, beside the writes, rather than
	 * all at once when the file goes away. */
	if (ret == 0)
		posix_fadvise(e.fd, (off_t)e.file_offset, (off_t)sl->len, POSIX_FADV_DONTNEED);
	return ret;
}

/* Copies every range the images above the target hold into the target.  A
 * reader thread reads the chain ahead; this thread plans each slot's writes
 * (block allocation: all metadata stays here) and writer threads write the
 * data, several requests in flight.  Before each batch is published, every
 * write of it has finished and one fdatasync made it durable. */
static int copy_above(struct vhd_image *child, unsigned tdepth, struct vhd_image *target,
		      const struct vhd_merge_opts *o, struct vhd_merge_stats *st, struct vhd_err *err)
{
	struct above_target src = {child, tdepth, 0};
	uint64_t size = child->virtual_size, off = 0, err_off = 0;
	/* a chunk spans at most this many blocks, so this many plans */
	size_t pieces = target->block_size ? COPY_CHUNK / target->block_size + 2 : 1;
	struct write_batch batch, *b = &batch;
	struct readahead *ra = NULL;
	struct write_pool *wp = NULL;
	struct releaser *rel = NULL;
	struct ra_slot *sl;
	int ret, rret;

	ret = batch_init(b, target, BATCH_PLANS, o->batch_bytes ? o->batch_bytes : BATCH_BYTES);
	if (ret == 0)
		ret = ra_start(&ra, size, COPY_CHUNK, fill_from_above, &src);
	if (ret == 0)
		ret = wpool_start(&wp, b, ra, COPY_WRITERS);
	if (ret == 0)
		ret = releaser_start(&rel, child, tdepth, err);
	if (ret < 0)
		goto out;
	while ((sl = ra_next(ra))) {
		size_t first;

		off = sl->off;
		if (sl->data && batch_full(b, pieces)) {
			ret = wpool_drain(wp, &off);
			if (ret == 0)
				ret = batch_flush(b);
			if (ret == 0)
				ret = vhd_flush(target); /* the BAT entries too: see merge_release.c */
			if (ret == 0)
				releaser_advance(rel, sl->off);
		}
		if (sl->data && ret == 0)
			ret = batch_plan(b, sl->len, sl->off, &first);
		if (!sl->data || ret < 0) {
			ra_release(ra, sl);
		} else {
			ret = wpool_submit(wp, sl, first, b->n - first); /* gives sl back */
			batch_written(b, sl->len);
			st->bytes_copied += sl->len;
		}
		if (ret < 0)
			break;
		off = sl->off + sl->len;
		if (o->progress)
			o->progress(o->progress_ctx, off, size);
	}
	rret = wpool_finish(wp, &err_off);
	wp = NULL;
	if (ret == 0 && rret < 0) {
		ret = rret;
		off = err_off;
	}
	rret = releaser_finish(rel, &st->bytes_released);
	rel = NULL;
	if (ret == 0 && rret < 0) {
		vhd_err_set(err, "%s: giving back the space of merged blocks: %s", child->path,
			    strerror(-rret));
		ret = rret;
		goto out;
	}
	rret = ra_finish(ra, &err_off);
	ra = NULL;
	if (ret == 0 && rret == -ENOSPC) {
		vhd_err_set(err, "%s: offset %" PRIu64 " lies beyond %s's size; resize it first",
			    child->path, err_off, target->path);
		ret = rret;
		goto out;
	}
	if (ret == 0 && rret < 0) {
		ret = rret;
		off = err_off;
	}
	if (ret == 0)
		ret = batch_flush(b);
	if (ret == 0)
		ret = vhd_flush(target);
	if (ret < 0)
		vhd_err_set(err, "%s: merging offset %" PRIu64 " into %s: %s", child->path, off,
			    target->path, strerror(-ret));
out:
	wpool_finish(wp, NULL);
	releaser_finish(rel, NULL);
	ra_finish(ra, NULL);
	batch_free(b);
	return ret;
}

/* Clears a differencing disk's BAT so it reads straight through to its
 * parent (every sector it held is already there).  The caller holds the
 * exclusive lock. */
static int clear_bat(const char *path, struct vhd_err *err)
{
	struct vhd_open_opts oo = {.flags = VHD_OPEN_RDWR | VHD_OPEN_NO_PARENT | VHD_OPEN_NO_LOCK};
	struct vhd_image *img;
	uint8_t *ff = NULL;
	uint64_t len;
	int ret = vhd_open(path, &oo, &img, err);

	if (ret < 0)
		return ret;
	len = 4ull * img->hdr.max_table_entries;
	ff = malloc(len ? len : 1);
	if (!ff) {
		ret = -ENOMEM;
		goto out;
	}
	memset(ff, 0xFF, len);
	ret = pwrite_full(img->fd, ff, len, img->hdr.table_offset);
	if (ret == 0 && fdatasync(img->fd) < 0)
		ret = -errno;
	if (ret < 0)
		vhd_err_set(err, "%s: clearing the BAT: %s", path, strerror(-ret));
out:
	free(ff);
	vhd_close(img);
	return ret;
}

/* Step 4 and 5: remove (or empty) what was merged, drop the record. */
static int finish(const char *child, const struct intent *in, struct vhd_err *err)
{
	int ret = 0;

	if (in->keep) {
		/* The source stays as an empty child of the target; only a direct
		 * parent can be kept this way (checked before the merge). */
		if (access(in->source, F_OK) == 0)
			ret = clear_bat(in->source, err);
	} else {
		for (unsigned i = 0; i < in->nr_members && ret == 0; i++)
			if (unlink(in->members[i]) < 0 && errno != ENOENT) {
				ret = -errno;
				vhd_err_set(err, "%s: cannot remove: %s", in->members[i], strerror(errno));
			} else {
				ret = vhd_fsync_dir_of(in->members[i]);
			}
	}
	if (ret == 0)
		ret = intent_remove(child);
	return ret;
}

static int abs_path(const char *p, char *out)
{
	return realpath(p, out) ? 0 : -errno;
}

/* Opens CHILD's chain for reading and the target for writing.  The images
 * that change or go away are locked exclusively for the whole merge. */
static int open_for_merge(const char *child, const char *into, const struct vhd_open_opts *opts,
			  struct vhd_image **chain, struct vhd_image **tgt, unsigned *tdepth,
			  int *locks, unsigned *nr_locks, struct vhd_err *err)
{
	struct vhd_open_opts ro = opts ? *opts : (struct vhd_open_opts){0};
	struct vhd_open_opts rw = ro;
	struct vhd_image *t = NULL, *m;
	char want[PATH_MAX];
	unsigned depth = 0;
	int ret;

	ro.flags = (ro.flags & ~VHD_OPEN_RDWR) | VHD_OPEN_NO_LOCK;
	ret = vhd_open(child, &ro, chain, err);
	if (ret < 0)
		return ret;
	if ((*chain)->footer.disk_type != VHD_TYPE_DIFF) {
		vhd_err_set(err, "%s: is a %s disk: only differencing disks merge into a parent",
			    child, vhd_type_name((*chain)->footer.disk_type));
		return -EINVAL;
	}
	if (into && abs_path(into, want) < 0) {
		vhd_err_set(err, "%s: %s", into, strerror(errno));
		return -ENOENT;
	}
	for (m = (*chain)->parent, depth = 1; m; m = m->parent, depth++) {
		char real[PATH_MAX];

		if (!into || (abs_path(m->path, real) == 0 && !strcmp(real, want)))
			break;
	}
	if (!m) {
		vhd_err_set(err, "%s: %s is not in this disk's chain", child, into);
		return -EINVAL;
	}
	*tdepth = depth;
	/* exclusive locks on everything above the target: nobody may use them */
	for (struct vhd_image *a = *chain; a != m; a = a->parent) {
		int fd = open(a->path, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
			vhd_err_set(err, "%s: is in use by another process (lock conflict)", a->path);
			if (fd >= 0)
				close(fd);
			return -EBUSY;
		}
		locks[(*nr_locks)++] = fd;
	}
	/* The target's data bypasses the page cache: a merge writes each byte
	 * once, and filling fresh cache pages cost twice the copy itself.  A file
	 * system without O_DIRECT gets the page cache. */
	rw.flags = (rw.flags | VHD_OPEN_RDWR | VHD_OPEN_DIRECT) & ~VHD_OPEN_NO_LOCK;
	ret = vhd_open(m->path, &rw, &t, err);
	if (ret == -EINVAL) {
		rw.flags &= ~VHD_OPEN_DIRECT;
		ret = vhd_open(m->path, &rw, &t, err);
	}
	if (ret < 0)
		return ret;
	if (memcmp(t->footer.uuid, m->footer.uuid, 16)) {
		vhd_err_set(err, "%s: changed while the merge was starting", m->path);
		vhd_close(t);
		return -EAGAIN;
	}
	*tgt = t;
	return 0;
}

int vhd_merge(const char *child, const struct vhd_open_opts *opts, const struct vhd_merge_opts *o,
	      struct vhd_merge_stats *st, struct vhd_err *err)
{
	struct vhd_image *chain = NULL, *target = NULL;
	int locks[MAX_MEMBERS];
	unsigned nr_locks = 0, tdepth = 0;
	struct intent in, prev;
	int ret;

	memset(st, 0, sizeof(*st));
	if (err)
		err->msg[0] = 0;
	ret = intent_read(child, &prev, err);
	if (ret < 0)
		return ret;
	if (ret == 1 && (prev.copied || access(child, F_OK) != 0)) {
		/* the copy finished before the interruption: only clean-up left */
		int fd = open(child, O_RDONLY | O_CLOEXEC);

		if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
			vhd_err_set(err, "%s: is in use by another process (lock conflict)", child);
			close(fd);
			return -EBUSY;
		}
		st->resumed = true;
		snprintf(st->target, sizeof(st->target), "%s", prev.target);
		ret = finish(child, &prev, err);
		if (fd >= 0)
			close(fd);
		return ret;
	}
	ret = open_for_merge(child, ret == 1 ? prev.target : o->into, opts, &chain, &target,
			     &tdepth, locks, &nr_locks, err);
	if (ret < 0)
		goto out;
	st->resumed = prev.source[0] != 0;
	if (o->keep && tdepth != 1) {
		vhd_err_set(err, "%s: --keep works when merging into the direct parent only", child);
		ret = -EINVAL;
		goto out;
	}
	if (!o->force && !st->resumed) {
		ret = check_dependents(chain, target, o, err);
		if (ret < 0)
			goto out;
	}

	memset(&in, 0, sizeof(in));
	if (abs_path(child, in.source) < 0 || abs_path(target->path, in.target) < 0) {
		ret = -errno;
		goto out;
	}
	in.keep = o->keep;
	{
		struct vhd_image *m = chain;

		for (unsigned d = 0; d < tdepth; d++, m = m->parent)
			if (abs_path(m->path, in.members[in.nr_members]) == 0)
				in.nr_members++;
	}
	ret = intent_write(child, &in);
	if (ret < 0) {
		vhd_err_set(err, "%s: cannot write the merge intent record: %s", child, strerror(-ret));
		goto out;
	}
	snprintf(st->target, sizeof(st->target), "%s", in.target);
	st->merged_images = tdepth;
	ret = copy_above(chain, tdepth, target, o, st, err);
	if (ret < 0)
		goto out;
	in.copied = true;
	ret = intent_write(child, &in);
	if (ret < 0)
		goto out;
	vhd_close(chain);
	chain = NULL;
	ret = vhd_close(target);
	target = NULL;
	if (ret == 0)
		ret = finish(child, &in, err);
out:
	if (ret < 0 && err && !err->msg[0])
		vhd_err_set(err, "%s: merge failed: %s", child, strerror(-ret));
	vhd_close(target);
	vhd_close(chain);
	for (unsigned i = 0; i < nr_locks; i++)
		close(locks[i]);
	return ret;
}

bool vhd_merge_pending(const char *image)
{
	char path[PATH_MAX];

	intent_path(image, path, sizeof(path));
	return access(path, F_OK) == 0;
}
