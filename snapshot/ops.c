/* ops.c - the operations on a set: init, create, apply, delete (with merge
 * into a single dependent, hidden shared nodes, subtrees), rename, export,
 * repair.  Each builds the metadata it leads to and a plan, and journal.c
 * runs the plan atomically.
 *
 * The disk picture follows the tree exactly: for every disk, a checkpoint's
 * file is a differencing child of its parent checkpoint's file, Now's file is
 * a child of the file of the checkpoint Now hangs under, and the root
 * checkpoint's files are the set's base disks.  So "the dependents of a
 * checkpoint" are the same for every disk: its child checkpoints, plus Now
 * when Now hangs directly under it.
 *
 * Which file survives a delete: vhd_merge copies a child into its parent.
 * Deleting checkpoint C whose single dependent is X therefore merges X's
 * file into C's file (C's content is given up, nobody else reads it), and X
 * takes over C's file in the metadata; X's own children, which pointed at
 * X's old file, are re-pointed at C's file, which now shows exactly what X's
 * old file showed; X's old file is removed.  No file that a surviving
 * checkpoint reads is written, except the parent link in the headers of X's
 * children (vhd_set_parent, crash-safe), which keeps their content.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Checks that nobody has file open for writing (exclusive: for anything at
 * all) with the locks vhd_open takes; the shared form also makes what was
 * written to it durable, before it becomes a read-only parent. */
static int not_in_use(const struct snap_set *s, const char *file, bool exclusive,
		      struct vhd_err *err)
{
	char path[PATH_MAX];
	int fd, ret = 0;

	snap_path(s, file, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snap_err_set(err, "%s: %s", path, strerror(-ret));
		return ret;
	}
	/* the same locks vhd_open takes: a writer holds LOCK_EX */
	if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
		snap_err_set(err, "%s: is in use by another process (lock conflict); stop it first",
			     path);
		ret = -EBUSY;
	} else if (!exclusive && fsync(fd) < 0) {
		ret = -errno;
		snap_err_set(err, "%s: fsync: %s", path, strerror(-ret));
	}
	close(fd);
	return ret;
}

static void default_name(const struct snap_set *s, const char *fmt_extra, char *out)
{
	const char *base = strrchr(s->dir, '/');
	time_t t = time(NULL);
	struct tm tm;
	char when[32];

	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(out, SNAP_NAME_MAX, "%s - (%s UTC)%s", base ? base + 1 : s->dir, when,
		 fmt_extra ? fmt_extra : "");
}

static int check_name(const struct snap_set *s, const char *name, struct vhd_err *err)
{
	size_t digits = strspn(name, "0123456789");

	if (!snap_valid_checkpoint_name(name)) {
		snap_err_set(err, "%s: checkpoint name \"%s\" is empty, longer than %d bytes or has "
				  "control characters", s->dir, name, SNAP_NAME_MAX - 1);
		return -EINVAL;
	}
	/* commands take an id or a name: a name must not read as either */
	if (!strcasecmp(name, "now") || (digits && !name[digits])) {
		snap_err_set(err, "%s: checkpoint name \"%s\" would read as %s; choose another",
			     s->dir, name, digits ? "a checkpoint id" : "the current state");
		return -EINVAL;
	}
	return 0;
}

static int file_size_sum(const struct snap_set *s, uint64_t *total)
{
	const struct meta *m = &s->meta;

	*total = 0;
	for (size_t i = 0; i <= m->nr; i++) {
		const struct node *n = i < m->nr ? &m->nodes[i] : &m->now;

		for (size_t k = 0; k < m->nr_disks; k++) {
			char path[PATH_MAX];
			struct stat st;

			snap_path(s, n->files[k], path, sizeof(path));
			if (stat(path, &st) == 0)
				*total += (uint64_t)st.st_size;
		}
	}
	return 0;
}

/* ---- create ------------------------------------------------------------------ */

/* Adds checkpoint files = Now's files under Now's parent; returns it. */
static struct node *add_checkpoint(struct meta *t, const char *name)
{
	struct node *q = snap_meta_add(t);

	if (!q)
		return NULL;
	q->id = t->next_id++;
	q->parent = t->now.parent;
	q->created = (int64_t)time(NULL);
	snprintf(q->name, sizeof(q->name), "%s", name);
	memcpy(q->files, t->now.files, t->nr_disks * sizeof(snap_file_t));
	return q;
}

int snap_create(struct snap_set *s, const char *name, uint64_t *id, struct vhd_err *err)
{
	struct plan p = {.op = PLAN_CREATE};
	char defname[SNAP_NAME_MAX];
	struct node *q;
	int ret;

	if (!name) {
		default_name(s, NULL, defname);
		name = defname;
	}
	ret = check_name(s, name, err);
	if (ret < 0)
		return ret;
	if (snap_meta_depth(&s->meta, s->meta.now.parent) + 1 > SNAP_MAX_DEPTH) {
		snap_err_set(err, "%s: Now already lies %d checkpoints deep, the most a chain holds "
				  "here; delete some first", s->dir, SNAP_MAX_DEPTH);
		return -EMLINK;
	}
	if (s->meta.nr >= SNAP_MAX_NODES) {
		snap_err_set(err, "%s: the set holds %d checkpoints already", s->dir, SNAP_MAX_NODES);
		return -EMLINK;
	}
	/* the current leaves become read-only parents: what was written to them
	 * must be durable first, and nobody may be writing them */
	for (size_t k = 0; k < s->meta.nr_disks; k++) {
		ret = not_in_use(s, s->meta.now.files[k], false, err);
		if (ret < 0)
			return ret;
	}
	ret = snap_meta_copy(&p.target, &s->meta);
	if (ret < 0)
		goto out;
	q = add_checkpoint(&p.target, name);
	if (!q) {
		ret = -ENOMEM;
		goto out;
	}
	*id = q->id;
	p.target.now.parent = q->id;
	for (size_t k = 0; k < s->meta.nr_disks; k++) {
		snap_meta_new_file(&p.target, k, p.target.now.files[k]);
		ret = snap_plan_add_new(&p, p.target.now.files[k], s->meta.now.files[k]);
		if (ret < 0)
			goto out;
	}
	ret = snap_plan_run(s, &p, err);
out:
	snap_plan_free(&p);
	return ret;
}

/* ---- delete --------------------------------------------------------------- */

/* Files nobody but the set may depend on: a disk outside the metadata whose
 * parent is one of ours would be broken by a merge or a removal. */
static int foreign_dependents(struct snap_set *s, const char *const *files, size_t n,
			      struct vhd_err *err)
{
	struct vhd_open_opts oo = {.flags = VHD_OPEN_NO_PARENT | VHD_OPEN_NO_LOCK};
	uint8_t (*ids)[16] = calloc(n ? n : 1, 16);
	const struct meta *m = &s->meta;
	DIR *d = NULL;
	struct dirent *de;
	int ret = 0;

	if (!ids)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct vhd_image *img;
		struct vhd_info info;
		char path[PATH_MAX];

		snap_path(s, files[i], path, sizeof(path));
		ret = vhd_open(path, &oo, &img, err);
		if (ret < 0)
			goto out;
		vhd_get_info(img, &info);
		memcpy(ids[i], info.uuid, 16);
		vhd_close(img);
	}
	d = opendir(s->dir);
	if (!d) {
		ret = -errno;
		snap_err_set(err, "%s: %s", s->dir, strerror(-ret));
		goto out;
	}
	while ((de = readdir(d))) {
		struct vhd_image *img;
		struct vhd_info info;
		struct vhd_err ignored;
		char path[PATH_MAX];
		bool known = false;
		struct stat st;

		for (size_t i = 0; i <= m->nr && !known; i++) {
			const struct node *nd = i < m->nr ? &m->nodes[i] : &m->now;

			for (size_t k = 0; k < m->nr_disks && !known; k++)
				known = !strcmp(nd->files[k], de->d_name);
		}
		snap_path(s, de->d_name, path, sizeof(path));
		if (known || lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 2048)
			continue;
		if (vhd_open(path, &oo, &img, &ignored) < 0)
			continue;
		vhd_get_info(img, &info);
		vhd_close(img);
		for (size_t i = 0; i < n; i++)
			if (info.type == VHD_TYPE_DIFF && !memcmp(info.parent_uuid, ids[i], 16)) {
				snap_err_set(err, "%s: %s is not part of the set but is a differencing "
						  "child of %s, which this delete changes or removes; move "
						  "it away first", s->dir, de->d_name, files[i]);
				ret = -EBUSY;
				goto out;
			}
	}
out:
	if (d)
		closedir(d);
	free(ids);
	return ret;
}

static uint64_t only_dependent(const struct meta *m, uint64_t id)
{
	for (size_t i = 0; i < m->nr; i++)
		if (m->nodes[i].parent == id)
			return m->nodes[i].id;
	return SNAP_NOW;
}

/* C (id) goes away; its single dependent X takes over C's files. */
static int collapse(struct snap_set *s, uint64_t id, struct vhd_err *err)
{
	const struct meta *m = &s->meta;
	const struct node *c = snap_meta_cnode(m, id);
	uint64_t xid = only_dependent(m, id);
	const struct node *x = snap_meta_cnode(m, xid);
	uint64_t *kids = calloc(m->nr + 1, sizeof(*kids));
	const char **check = calloc(2 * m->nr_disks, sizeof(*check));
	struct plan p = {.op = PLAN_COLLAPSE};
	size_t nk;
	struct node *tx;
	int ret = -ENOMEM;

	if (!kids || !check)
		goto out;
	nk = snap_meta_children(m, xid, kids);
	if (xid == SNAP_NOW)
		nk = 0;
	for (size_t k = 0; k < m->nr_disks; k++) {
		check[2 * k] = c->files[k];
		check[2 * k + 1] = x->files[k];
	}
	ret = foreign_dependents(s, check, 2 * m->nr_disks, err);
	if (ret < 0)
		goto out;
	/* once the journal is written the merge must go through, so whatever
	 * would stop it is checked first: every file it writes or re-points is
	 * free (no VM or tool has it open) */
	for (size_t k = 0; k < m->nr_disks && ret == 0; k++) {
		ret = not_in_use(s, c->files[k], true, err);
		if (ret == 0)
			ret = not_in_use(s, x->files[k], true, err);
		for (size_t i = 0; i < nk && ret == 0; i++)
			ret = not_in_use(s, snap_meta_cnode(m, kids[i])->files[k], true, err);
	}
	if (ret < 0)
		goto out;
	ret = snap_meta_copy(&p.target, m);
	if (ret < 0)
		goto out;
	p.merges = calloc(m->nr_disks, sizeof(*p.merges));
	if (!p.merges) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < m->nr_disks; k++) {
		struct plan_merge *pm = &p.merges[k];

		p.nr_merges++;
		snprintf(pm->child, sizeof(pm->child), "%s", x->files[k]);
		snprintf(pm->into, sizeof(pm->into), "%s", c->files[k]);
		pm->repoint = calloc(nk ? nk : 1, sizeof(snap_file_t));
		if (!pm->repoint) {
			ret = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < nk; i++)
			snprintf(pm->repoint[pm->nr_repoint++], SNAP_FILE_MAX, "%s",
				 snap_meta_cnode(m, kids[i])->files[k]);
		ret = snap_plan_add_remove(&p, x->files[k]);
		if (ret < 0)
			goto out;
	}
	if (c->attachment[0]) {
		ret = snap_plan_add_remove(&p, c->attachment);
		if (ret < 0)
			goto out;
	}
	tx = snap_meta_node(&p.target, xid);
	memcpy(tx->files, c->files, m->nr_disks * sizeof(snap_file_t));
	tx->parent = c->parent;
	snap_meta_remove(&p.target, id);
	ret = snap_plan_run(s, &p, err);
out:
	snap_plan_free(&p);
	free(kids);
	free(check);
	return ret;
}

/* A node nobody depends on: its files go after the commit. */
static int drop(struct snap_set *s, uint64_t id, struct vhd_err *err)
{
	const struct node *c = snap_meta_cnode(&s->meta, id);
	struct plan p = {.op = PLAN_DROP};
	int ret = snap_meta_copy(&p.target, &s->meta);

	for (size_t k = 0; k < s->meta.nr_disks && ret == 0; k++)
		ret = snap_plan_add_remove(&p, c->files[k]);
	if (ret == 0 && c->attachment[0])
		ret = snap_plan_add_remove(&p, c->attachment);
	if (ret == 0) {
		snap_meta_remove(&p.target, id);
		ret = snap_plan_run(s, &p, err);
	}
	snap_plan_free(&p);
	return ret;
}

/* Two or more dependents: the files stay as they are, the node is hidden;
 * its saved state (if any) is no longer needed. */
static int hide(struct snap_set *s, uint64_t id, struct vhd_err *err)
{
	const struct node *c = snap_meta_cnode(&s->meta, id);
	struct plan p = {.op = PLAN_DROP};
	int ret = snap_meta_copy(&p.target, &s->meta);

	if (ret == 0 && c->attachment[0])
		ret = snap_plan_add_remove(&p, c->attachment);
	if (ret == 0) {
		struct node *t = snap_meta_node(&p.target, id);

		t->hidden = true;
		t->attachment[0] = 0;
		ret = snap_plan_run(s, &p, err);
	}
	snap_plan_free(&p);
	return ret;
}

static int delete_one(struct snap_set *s, uint64_t id, struct snap_delete_stats *st,
		      struct vhd_err *err)
{
	unsigned deps = snap_meta_dependents(&s->meta, id);
	bool was_hidden = snap_meta_cnode(&s->meta, id)->hidden;
	int ret;

	if (deps == 0) {
		ret = drop(s, id, err);
	} else if (deps == 1) {
		ret = collapse(s, id, err);
		st->merged += ret == 0;
	} else {
		if (was_hidden)
			return 0;
		ret = hide(s, id, err);
		st->hidden += ret == 0;
	}
	if (ret == 0 && !was_hidden)
		st->removed++;
	return ret;
}

int snap_tidy(struct snap_set *s, struct snap_delete_stats *st, struct vhd_err *err)
{
	struct snap_delete_stats ignored = {0};
	bool again = true;
	int ret = 0;

	if (!st)
		st = &ignored;
	while (again && ret == 0) {
		again = false;
		for (size_t i = 0; i < s->meta.nr; i++) {
			const struct node *n = &s->meta.nodes[i];
			uint64_t nid = n->id;

			if (n->hidden && snap_meta_dependents(&s->meta, nid) < 2) {
				snap_note(s, "merging away deleted checkpoint %" PRIu64 ", which %s",
					  nid, snap_meta_dependents(&s->meta, nid) ? "has a single dependent left"
					  : "nobody needs any more");
				ret = delete_one(s, nid, st, err);
				again = true;
				break;
			}
		}
	}
	return ret;
}

/* Checkpoint children (not Now) of id that are still in the tree. */
static bool has_checkpoint_children(const struct meta *m, uint64_t id)
{
	for (size_t i = 0; i < m->nr; i++)
		if (m->nodes[i].parent == id)
			return true;
	return false;
}

static bool below(const struct meta *m, uint64_t id, uint64_t top)
{
	for (const struct node *n = snap_meta_cnode(m, id); n; n = n->parent ? snap_meta_cnode(m, n->parent) : NULL)
		if (n->id == top)
			return true;
	return false;
}

int snap_delete(struct snap_set *s, uint64_t id, bool subtree, struct snap_delete_stats *st,
		struct vhd_err *err)
{
	struct snap_delete_stats local;
	const struct node *n;
	uint64_t before, after;
	int ret;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	file_size_sum(s, &before);
	/* a hidden node left with one dependent by an earlier crash goes first,
	 * so that what follows sees the tree the user sees */
	ret = snap_tidy(s, NULL, err);
	if (ret < 0)
		return ret;
	n = id ? snap_meta_cnode(&s->meta, id) : NULL;
	if (!n) {
		snap_err_set(err, "%s: there is no checkpoint %" PRIu64 "%s", s->dir, id,
			     id ? "" : " (Now cannot be deleted)");
		return -ENOENT;
	}
	if (n->hidden && !subtree) {
		snap_err_set(err, "%s: checkpoint %" PRIu64 " is already deleted; it stays only as "
				  "the shared parent of %u others", s->dir, id,
			     snap_meta_dependents(&s->meta, id));
		return -ENOENT;
	}
	if (!subtree) {
		ret = delete_one(s, id, st, err);
	} else {
		/* leaves of the subtree first; Now, if it is below, keeps its
		 * content: the checkpoints above it collapse into it */
		while (ret == 0 && snap_meta_cnode(&s->meta, id)) {
			uint64_t pick = 0;

			for (size_t i = 0; i < s->meta.nr && !pick; i++) {
				const struct node *c = &s->meta.nodes[i];

				if (below(&s->meta, c->id, id) && !has_checkpoint_children(&s->meta, c->id))
					pick = c->id;
			}
			if (!pick)
				break;
			ret = delete_one(s, pick, st, err);
		}
	}
	if (ret == 0)
		ret = snap_tidy(s, st, err);
	file_size_sum(s, &after);
	st->bytes_freed = before > after ? before - after : 0;
	return ret;
}

/* ---- apply -------------------------------------------------------------- */

int snap_apply(struct snap_set *s, uint64_t id, bool checkpoint_first, const char *name,
	       uint64_t *saved, struct vhd_err *err)
{
	const struct node *c = id ? snap_meta_cnode(&s->meta, id) : NULL;
	struct plan p = {.op = PLAN_APPLY};
	char defname[SNAP_NAME_MAX];
	int ret;

	if (saved)
		*saved = 0;
	if (!c || c->hidden) {
		snap_err_set(err, "%s: there is no checkpoint %" PRIu64 " to apply%s", s->dir, id,
			     c ? " (it was deleted)" : "");
		return -ENOENT;
	}
	if (checkpoint_first) {
		if (!name) {
			char extra[SNAP_NAME_MAX];

			snprintf(extra, sizeof(extra), " before applying %" PRIu64, id);
			default_name(s, extra, defname);
			name = defname;
		}
		ret = check_name(s, name, err);
		if (ret < 0)
			return ret;
		if (snap_meta_depth(&s->meta, s->meta.now.parent) + 1 > SNAP_MAX_DEPTH) {
			snap_err_set(err, "%s: Now already lies %d checkpoints deep; delete some first",
				     s->dir, SNAP_MAX_DEPTH);
			return -EMLINK;
		}
	}
	for (size_t k = 0; k < s->meta.nr_disks; k++) {
		ret = not_in_use(s, s->meta.now.files[k], !checkpoint_first, err);
		if (ret < 0)
			return ret;
	}
	ret = snap_meta_copy(&p.target, &s->meta);
	if (ret < 0)
		goto out;
	if (checkpoint_first) {
		struct node *q = add_checkpoint(&p.target, name);

		if (!q) {
			ret = -ENOMEM;
			goto out;
		}
		if (saved)
			*saved = q->id;
	} else {
		for (size_t k = 0; k < s->meta.nr_disks && ret == 0; k++)
			ret = snap_plan_add_remove(&p, s->meta.now.files[k]);
		if (ret < 0)
			goto out;
	}
	c = snap_meta_cnode(&p.target, id);
	p.target.now.parent = id;
	for (size_t k = 0; k < s->meta.nr_disks; k++) {
		snap_meta_new_file(&p.target, k, p.target.now.files[k]);
		ret = snap_plan_add_new(&p, p.target.now.files[k], c->files[k]);
		if (ret < 0)
			goto out;
	}
	ret = snap_plan_run(s, &p, err);
	/* the old Now's parent may be a hidden node with one dependent left */
	if (ret == 0)
		ret = snap_tidy(s, NULL, err);
out:
	snap_plan_free(&p);
	return ret;
}

/* ---- rename, export -------------------------------------------------------- */

int snap_rename(struct snap_set *s, uint64_t id, const char *name, struct vhd_err *err)
{
	const struct node *c = id ? snap_meta_cnode(&s->meta, id) : NULL;
	struct meta t;
	int ret;

	if (!c || c->hidden) {
		snap_err_set(err, "%s: there is no checkpoint %" PRIu64 " to rename", s->dir, id);
		return -ENOENT;
	}
	ret = check_name(s, name, err);
	if (ret < 0)
		return ret;
	ret = snap_meta_copy(&t, &s->meta);
	if (ret < 0)
		return ret;
	snprintf(snap_meta_node(&t, id)->name, SNAP_NAME_MAX, "%s", name);
	t.generation++;
	ret = snap_meta_commit(s, &t, err);
	snap_meta_free(&t);
	return ret;
}

int snap_export(struct snap_set *s, uint64_t id, const char *dir,
		const struct snap_export_opts *eo, struct vhd_err *err)
{
	const struct node *c = snap_meta_cnode(&s->meta, id);
	enum vhd_type type = eo && eo->type ? eo->type : VHD_TYPE_DYNAMIC;
	bool overwrite = eo && eo->overwrite;
	char dst[PATH_MAX];
	struct stat st;
	int ret;

	if (!c || c->hidden) {
		snap_err_set(err, "%s: there is no checkpoint %" PRIu64 " to export", s->dir, id);
		return -ENOENT;
	}
	if (type != VHD_TYPE_DYNAMIC && type != VHD_TYPE_FIXED) {
		snap_err_set(err, "%s: exports are dynamic or fixed disks", s->dir);
		return -EINVAL;
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		ret = -errno;
		snap_err_set(err, "%s: cannot create: %s", dir, strerror(-ret));
		return ret;
	}
	{
		/* <disk>.vhd in the set itself would be a base disk */
		char a[PATH_MAX], b[PATH_MAX];

		if (realpath(dir, a) && realpath(s->dir, b) && !strcmp(a, b)) {
			snap_err_set(err, "%s: is the set's own directory; export somewhere else", dir);
			return -EINVAL;
		}
	}
	/* all or nothing as far as we can tell up front */
	for (size_t k = 0; k < s->meta.nr_disks && !overwrite; k++) {
		snprintf(dst, sizeof(dst), "%s/%s.vhd", dir, s->meta.disks[k]);
		if (lstat(dst, &st) == 0) {
			snap_err_set(err, "%s: exists already (pass --force to overwrite)", dst);
			return -EEXIST;
		}
	}
	for (size_t k = 0; k < s->meta.nr_disks; k++) {
		struct vhd_convert_opts co = {.src_format = VHD_FMT_VHD, .out_format = VHD_FMT_VHD,
					      .out_type = type, .overwrite = overwrite,
					      .progress = s->opts.progress,
					      .progress_ctx = s->opts.progress_ctx};
		struct vhd_convert_stats cs;
		char src[PATH_MAX];

		snap_path(s, c->files[k], src, sizeof(src));
		snprintf(dst, sizeof(dst), "%s/%s.vhd", dir, s->meta.disks[k]);
		ret = vhd_convert(src, NULL, dst, &co, &cs, err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- init ------------------------------------------------------------------- */

static int disk_name_of(const char *path, char *out, struct vhd_err *err)
{
	const char *base = strrchr(path, '/');
	const char *dot;
	size_t n;

	base = base ? base + 1 : path;
	dot = strrchr(base, '.');
	n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
	if (n == 0 || n > SNAP_DISK_NAME_MAX) {
		snap_err_set(err, "%s: cannot name a disk after this file (1 to %d characters before "
				  "the extension)", path, SNAP_DISK_NAME_MAX);
		return -EINVAL;
	}
	snprintf(out, SNAP_DISK_NAME_MAX + 1, "%.*s", (int)n, base);
	if (!snap_valid_disk_name(out)) {
		snap_err_set(err, "%s: disk name \"%s\" (from the file name) may only hold letters, "
				  "digits, '_', '-' and '.'; rename the file", path, out);
		return -EINVAL;
	}
	return 0;
}

/* Empty but for what an interrupted init leaves after its roll-back. */
static bool dir_is_empty(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool empty = true;

	if (!d)
		return false;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    strcmp(de->d_name, SNAP_LOCK_FILE) && strcmp(de->d_name, SNAP_JOURNAL_FILE ".tmp") &&
		    strcmp(de->d_name, SNAP_META_FILE ".tmp"))
			empty = false;
	closedir(d);
	return empty;
}

int snap_init(const char *dir, const char *const *disks, size_t nr_disks,
	      const struct snap_init_opts *io, const struct snap_opts *o, struct vhd_err *err)
{
	struct snap_set *s = calloc(1, sizeof(*s));
	struct plan p = {.op = PLAN_INIT};
	bool copy = io && io->copy;
	const char *env = getenv("VHDSTACK_SNAP_CRASH_AFTER");
	struct meta *t = &p.target;
	bool exists = false;
	struct stat st;
	int ret = 0;

	if (!s)
		return -ENOMEM;
	s->lock_fd = -1;
	if (o)
		s->opts = *o;
	if (env && *env)
		s->crash_after = strtoul(env, NULL, 10);
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	for (size_t len = strlen(s->dir); len > 1 && s->dir[len - 1] == '/'; len--)
		s->dir[len - 1] = 0;
	if (nr_disks == 0 || nr_disks > SNAP_MAX_DISKS) {
		snap_err_set(err, "%s: a set holds 1 to %d disks, not %zu", dir, SNAP_MAX_DISKS, nr_disks);
		ret = -EINVAL;
		goto out;
	}
	/* an init that was interrupted here is undone first (the disks go back
	 * where they came from), so that it can simply be run again */
	if (lstat(s->dir, &st) == 0) {
		char path[PATH_MAX];

		if (!S_ISDIR(st.st_mode)) {
			snap_err_set(err, "%s: exists and is not a directory", s->dir);
			ret = -EEXIST;
			goto out;
		}
		snap_path(s, SNAP_JOURNAL_FILE, path, sizeof(path));
		if (lstat(path, &st) == 0) {
			ret = snap_lock_dir(s->dir, &s->lock_fd, err);
			if (ret == 0)
				ret = snap_journal_recover(s, err);
			if (ret < 0)
				goto out;
		}
		if (!dir_is_empty(s->dir)) {
			snap_err_set(err, "%s: exists and is not an empty directory", s->dir);
			ret = -EEXIST;
			goto out;
		}
		exists = true;
	}
	t->generation = 1;
	t->next_id = 1;
	t->next_file = 1;
	t->nr_disks = nr_disks;
	t->now.files = calloc(nr_disks, sizeof(snap_file_t));
	p.moves = calloc(nr_disks, sizeof(*p.moves));
	if (!t->now.files || !p.moves) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < nr_disks; k++) {
		struct vhd_open_opts oo = {.flags = copy ? 0 : VHD_OPEN_RDWR};
		struct plan_move *mv = &p.moves[k];
		struct vhd_image *img;
		struct vhd_info info;

		ret = disk_name_of(disks[k], t->disks[k], err);
		if (ret < 0)
			goto out;
		for (size_t l = 0; l < k; l++)
			if (!strcmp(t->disks[l], t->disks[k])) {
				snap_err_set(err, "%s and %s would both be disk \"%s\"; rename one", disks[l],
					     disks[k], t->disks[k]);
				ret = -EINVAL;
				goto out;
			}
		if (!realpath(disks[k], mv->source)) {
			ret = -errno;
			snap_err_set(err, "%s: %s", disks[k], strerror(-ret));
			goto out;
		}
		/* opened whole (chain included): it must be a usable disk, and
		 * when it moves, nobody may be using it */
		ret = vhd_open(disks[k], &oo, &img, err);
		if (ret < 0)
			goto out;
		vhd_get_info(img, &info);
		vhd_close(img);
		if (info.type == VHD_TYPE_DIFF && !copy) {
			snap_err_set(err, "%s: is a differencing disk; a set starts from standalone disks "
					  "(--copy makes a flattened copy)", disks[k]);
			ret = -EINVAL;
			goto out;
		}
		snprintf(mv->file, sizeof(mv->file), "%s.vhd", t->disks[k]);
		snprintf(t->now.files[k], SNAP_FILE_MAX, "%s", mv->file);
		mv->copy = copy;
		p.nr_moves++;
	}
	if (!exists) {
		char parent[PATH_MAX];
		const char *slash = strrchr(s->dir, '/');

		if (mkdir(s->dir, 0755) < 0) {
			ret = -errno;
			snap_err_set(err, "%s: %s", s->dir, strerror(-ret));
			goto out;
		}
		snprintf(parent, sizeof(parent), "%.*s",
			 slash ? (slash == s->dir ? 1 : (int)(slash - s->dir)) : 1, slash ? s->dir : ".");
		snap_fsync_dir(parent);
	}
	if (s->lock_fd < 0)
		ret = snap_lock_dir(s->dir, &s->lock_fd, err);
	if (ret == 0)
		ret = snap_plan_run(s, &p, err);
out:
	snap_plan_free(&p);
	snap_close(s);
	return ret;
}

/* ---- repair ------------------------------------------------------------------- */

static bool is_set_file(const struct meta *m, const char *name)
{
	for (size_t i = 0; i <= m->nr; i++) {
		const struct node *n = i < m->nr ? &m->nodes[i] : &m->now;

		if (n->attachment[0] && !strcmp(n->attachment, name))
			return true;
		for (size_t k = 0; k < m->nr_disks; k++)
			if (!strcmp(n->files[k], name))
				return true;
	}
	return !strcmp(name, SNAP_META_FILE) || !strcmp(name, SNAP_LOCK_FILE) ||
	       !strcmp(name, ".") || !strcmp(name, "..");
}

/* "<set file>.tmp-XXXXXX" (vhd_create), "<set file>.part-XXXXXX" (convert),
 * "set.json.tmp", "journal.json.tmp" (ours). */
static bool is_leftover(const struct meta *m, const char *name)
{
	const char *dot;

	if (!strcmp(name, SNAP_META_FILE ".tmp") || !strcmp(name, SNAP_JOURNAL_FILE ".tmp"))
		return true;
	for (dot = strchr(name, '.'); dot; dot = strchr(dot + 1, '.')) {
		char base[SNAP_FILE_MAX];

		if (strncmp(dot, ".tmp-", 5) && strncmp(dot, ".part-", 6))
			continue;
		if ((size_t)(dot - name) >= sizeof(base))
			return false;
		snprintf(base, sizeof(base), "%.*s", (int)(dot - name), name);
		/* ours when it is named after a file of the set or one the set
		 * would create ("<disk>_<n>.avhd", "<disk>.vhd") */
		if (is_set_file(m, base))
			return true;
		for (size_t k = 0; k < m->nr_disks; k++) {
			size_t l = strlen(m->disks[k]);
			const char *p = base + l + 1;

			if (strncmp(base, m->disks[k], l))
				continue;
			if (!strcmp(base + l, ".vhd"))
				return true;
			if (base[l] != '_' || *p < '0' || *p > '9')
				continue;
			while (*p >= '0' && *p <= '9')
				p++;
			if (!strcmp(p, ".avhd"))
				return true;
		}
	}
	return false;
}

static int repair_file(struct snap_set *s, const char *file, bool checkpoint,
		       struct snap_repair_stats *st, struct vhd_err *err)
{
	struct vhd_repair_report r;
	char path[PATH_MAX];
	int ret;

	snap_path(s, file, path, sizeof(path));
	ret = vhd_repair(path, NULL, true, &r, err);
	if (ret < 0 || r.count == 0)
		return ret;
	ret = snap_set_writable(s, file, true, err);
	if (ret == 0)
		ret = vhd_repair(path, NULL, false, &r, err);
	if (ret == 0 && checkpoint)
		ret = snap_set_writable(s, file, false, err);
	for (unsigned i = 0; i < r.count; i++) {
		snap_note(s, "%s", r.actions[i]);
		st->actions++;
	}
	return ret;
}

int snap_repair(struct snap_set *s, struct snap_repair_stats *st, struct vhd_err *err)
{
	struct snap_repair_stats local;
	struct snap_delete_stats ds = {0};
	const struct meta *m = &s->meta;
	DIR *d;
	struct dirent *de;
	int ret;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	ret = snap_tidy(s, &ds, err);
	if (ret < 0)
		return ret;
	st->actions += ds.merged + ds.removed;
	d = opendir(s->dir);
	if (!d) {
		ret = -errno;
		snap_err_set(err, "%s: %s", s->dir, strerror(-ret));
		return ret;
	}
	while ((de = readdir(d))) {
		if (is_set_file(m, de->d_name))
			continue;
		if (is_leftover(m, de->d_name)) {
			ret = snap_unlink(s->dir, de->d_name);
			if (ret < 0)
				break;
			snap_note(s, "removed %s/%s, left over by an interrupted operation", s->dir,
				  de->d_name);
			st->actions++;
		} else {
			snap_note(s, "%s/%s is not part of the set (left alone)", s->dir, de->d_name);
			st->unknown++;
		}
	}
	closedir(d);
	if (ret < 0) {
		snap_err_set(err, "%s: %s", s->dir, strerror(-ret));
		return ret;
	}
	for (size_t i = 0; i <= m->nr && ret == 0; i++) {
		const struct node *n = i < m->nr ? &m->nodes[i] : &m->now;

		for (size_t k = 0; k < m->nr_disks && ret == 0; k++)
			ret = repair_file(s, n->files[k], i < m->nr, st, err);
	}
	if (ret == 0)
		ret = snap_fsync_dir(s->dir);
	if (ret == 0)
		ret = snap_validate_disks(s, err);
	return ret;
}
