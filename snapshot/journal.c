/* journal.c - how an operation on a set stays atomic across a crash.
 *
 * Every operation that touches more than set.json runs as a plan:
 *
 *   1. journal.json is written (temp file, fsync, rename, directory fsync):
 *      the operation, the generation it starts from and the one it makes,
 *      the files it creates, merges, re-points and removes, and the complete
 *      metadata it leads to ("target").
 *   2. The steps before the commit: new differencing files are created
 *      (create, apply), disks are moved or copied in (init), or each disk of
 *      a deleted checkpoint's single dependent is merged into the deleted
 *      checkpoint's file and the dependent's children re-pointed (collapse).
 *   3. Commit: set.json is replaced by the target (temp, fsync, rename, fsync
 *      dir).  This is the single instant the operation takes effect.
 *   4. Clean-up: files nobody references any more are removed, modes fixed
 *      (checkpoint files read-only, Now writable).
 *   5. journal.json is removed.
 *
 * Recovery (at every open): with a journal whose target generation is the
 * committed one, only steps 4-5 are left and they are redone.  Otherwise the
 * commit did not happen: init, create, apply and drop have changed nothing
 * that the committed metadata references, so their new files are removed and
 * the journal dropped (the operation never happened).  A collapse may already
 * have written into the deleted checkpoint's file, so it is rolled forward:
 * each merge resumes through vhd_merge's own intent record or is skipped when
 * the dependent's file no longer holds blocks (the merge finished), the
 * re-points are repeated (idempotent), and the target is committed.
 *
 * Throughout, every surviving checkpoint and Now read the same content: new
 * files are empty children, a merge never writes a file that anyone but the
 * merged child reads (see ops.c), and a merged child reads through to a
 * target that already holds its data.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static const char *const op_names[] = {
	[PLAN_INIT] = "init",
	[PLAN_CREATE] = "create",
	[PLAN_APPLY] = "apply",
	[PLAN_DROP] = "drop",
	[PLAN_COLLAPSE] = "collapse",
};

/* The same, in the words of the commands, for messages. */
static const char *const op_words[] = {
	[PLAN_INIT] = "init",
	[PLAN_CREATE] = "checkpoint create",
	[PLAN_APPLY] = "apply",
	[PLAN_DROP] = "delete",
	[PLAN_COLLAPSE] = "delete (merge)",
};

void snap_plan_free(struct plan *p)
{
	snap_meta_free(&p->target);
	free(p->news);
	free(p->removes);
	free(p->moves);
	for (size_t i = 0; i < p->nr_merges; i++)
		free(p->merges[i].repoint);
	free(p->merges);
	memset(p, 0, sizeof(*p));
}

int snap_plan_add_new(struct plan *p, const char *file, const char *parent)
{
	struct plan_new *n = realloc(p->news, (p->nr_new + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	p->news = n;
	snprintf(n[p->nr_new].file, SNAP_FILE_MAX, "%s", file);
	snprintf(n[p->nr_new].parent, SNAP_FILE_MAX, "%s", parent);
	p->nr_new++;
	return 0;
}

int snap_plan_add_remove(struct plan *p, const char *file)
{
	snap_file_t *r = realloc(p->removes, (p->nr_remove + 1) * sizeof(*r));

	if (!r)
		return -ENOMEM;
	p->removes = r;
	snprintf(r[p->nr_remove++], SNAP_FILE_MAX, "%s", file);
	return 0;
}

/* ---- journal.json ------------------------------------------------------ */

static struct json_object *strings_json(const snap_file_t *a, size_t n)
{
	struct json_object *j = json_object_new_array();

	for (size_t i = 0; i < n; i++)
		json_object_array_add(j, json_object_new_string(a[i]));
	return j;
}

static struct json_object *plan_to_json(const struct plan *p, uint64_t from)
{
	struct json_object *j = json_object_new_object(), *a;

	json_object_object_add(j, "format", json_object_new_string(SNAP_JOURNAL_FORMAT));
	json_object_object_add(j, "version", json_object_new_int(SNAP_VERSION));
	json_object_object_add(j, "op", json_object_new_string(op_names[p->op]));
	json_object_object_add(j, "from", json_object_new_uint64(from));
	json_object_object_add(j, "to", json_object_new_uint64(p->target.generation));
	a = json_object_new_array();
	for (size_t i = 0; i < p->nr_new; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "file", json_object_new_string(p->news[i].file));
		json_object_object_add(o, "parent", json_object_new_string(p->news[i].parent));
		json_object_array_add(a, o);
	}
	json_object_object_add(j, "new", a);
	json_object_object_add(j, "remove", strings_json(p->removes, p->nr_remove));
	a = json_object_new_array();
	for (size_t i = 0; i < p->nr_moves; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "source", json_object_new_string(p->moves[i].source));
		json_object_object_add(o, "file", json_object_new_string(p->moves[i].file));
		json_object_object_add(o, "copy", json_object_new_boolean(p->moves[i].copy));
		json_object_array_add(a, o);
	}
	json_object_object_add(j, "moves", a);
	a = json_object_new_array();
	for (size_t i = 0; i < p->nr_merges; i++) {
		const struct plan_merge *m = &p->merges[i];
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "child", json_object_new_string(m->child));
		json_object_object_add(o, "into", json_object_new_string(m->into));
		json_object_object_add(o, "repoint", strings_json(m->repoint, m->nr_repoint));
		json_object_array_add(a, o);
	}
	json_object_object_add(j, "merges", a);
	json_object_object_add(j, "target", snap_meta_to_json(&p->target));
	return j;
}

/* A string member that must be a plain file name of the set. */
static int jfile(struct json_object *o, const char *key, char *out, const char *where,
		 struct vhd_err *err)
{
	struct json_object *v;
	const char *s;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string) ||
	    !snap_valid_file_name(s = json_object_get_string(v))) {
		snap_err_set(err, "%s: \"%s\" is missing or not a plain file name of the set", where, key);
		return -EINVAL;
	}
	snprintf(out, SNAP_FILE_MAX, "%s", s);
	return 0;
}

static struct json_object *jarray(struct json_object *o, const char *key, const char *where,
				  struct vhd_err *err)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_array)) {
		snap_err_set(err, "%s: \"%s\" is missing or not an array", where, key);
		return NULL;
	}
	return v;
}

static int jfiles(struct json_object *a, snap_file_t **out, size_t *n, const char *where,
		  const char *what, struct vhd_err *err)
{
	size_t len = json_object_array_length(a);

	*out = calloc(len ? len : 1, sizeof(snap_file_t));
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		struct json_object *v = json_object_array_get_idx(a, i);

		if (!json_object_is_type(v, json_type_string) ||
		    !snap_valid_file_name(json_object_get_string(v))) {
			snap_err_set(err, "%s: %s[%zu] is not a plain file name of the set", where, what, i);
			return -EINVAL;
		}
		snprintf((*out)[i], SNAP_FILE_MAX, "%s", json_object_get_string(v));
	}
	*n = len;
	return 0;
}

static int plan_from_json(struct json_object *j, const char *where, struct plan *p,
			  uint64_t *from, struct vhd_err *err)
{
	struct json_object *v, *a;
	int ret = -EINVAL;
	int64_t f, t;

	memset(p, 0, sizeof(*p));
	if (!json_object_is_type(j, json_type_object) ||
	    !json_object_object_get_ex(j, "format", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), SNAP_JOURNAL_FORMAT) ||
	    !json_object_object_get_ex(j, "version", &v) || json_object_get_int64(v) != SNAP_VERSION) {
		snap_err_set(err, "%s: not a journal this program understands (format %s version %d)",
			     where, SNAP_JOURNAL_FORMAT, SNAP_VERSION);
		goto out;
	}
	if (!json_object_object_get_ex(j, "op", &v) || !json_object_is_type(v, json_type_string)) {
		snap_err_set(err, "%s: \"op\" is missing", where);
		goto out;
	}
	for (p->op = 0; p->op < sizeof(op_names) / sizeof(op_names[0]); p->op++)
		if (!strcmp(op_names[p->op], json_object_get_string(v)))
			break;
	if (p->op == sizeof(op_names) / sizeof(op_names[0])) {
		snap_err_set(err, "%s: unknown operation \"%s\"", where, json_object_get_string(v));
		goto out;
	}
	if (!json_object_object_get_ex(j, "from", &v) || !json_object_is_type(v, json_type_int) ||
	    (f = json_object_get_int64(v)) < 0 || !json_object_object_get_ex(j, "to", &v) ||
	    !json_object_is_type(v, json_type_int) || (t = json_object_get_int64(v)) != f + 1) {
		snap_err_set(err, "%s: \"from\"/\"to\" generations are missing or not consecutive", where);
		goto out;
	}
	*from = (uint64_t)f;
	if (!json_object_object_get_ex(j, "target", &v)) {
		snap_err_set(err, "%s: \"target\" is missing", where);
		goto out;
	}
	{
		char w[PATH_MAX + 16];

		snprintf(w, sizeof(w), "%s: target", where);
		ret = snap_meta_from_json(v, w, &p->target, err);
		if (ret < 0)
			goto out;
		ret = -EINVAL;
	}
	if (p->target.generation != (uint64_t)t) {
		snap_err_set(err, "%s: target generation %" PRIu64 " is not \"to\" %" PRId64, where,
			     p->target.generation, t);
		goto out;
	}
	if (!(a = jarray(j, "new", where, err)))
		goto out;
	p->news = calloc(json_object_array_length(a) + 1, sizeof(*p->news));
	if (!p->news) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *o = json_object_array_get_idx(a, i);

		if (jfile(o, "file", p->news[i].file, where, err) < 0 ||
		    jfile(o, "parent", p->news[i].parent, where, err) < 0)
			goto out;
		p->nr_new++;
	}
	if (!(a = jarray(j, "remove", where, err)))
		goto out;
	ret = jfiles(a, &p->removes, &p->nr_remove, where, "remove", err);
	if (ret < 0)
		goto out;
	ret = -EINVAL;
	if (!(a = jarray(j, "moves", where, err)))
		goto out;
	p->moves = calloc(json_object_array_length(a) + 1, sizeof(*p->moves));
	if (!p->moves) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *o = json_object_array_get_idx(a, i), *x;
		struct plan_move *m = &p->moves[i];

		if (jfile(o, "file", m->file, where, err) < 0)
			goto out;
		if (!json_object_object_get_ex(o, "source", &x) || !json_object_is_type(x, json_type_string) ||
		    json_object_get_string(x)[0] != '/' ||
		    strlen(json_object_get_string(x)) >= sizeof(m->source)) {
			snap_err_set(err, "%s: moves[%zu]: \"source\" is not an absolute path", where, i);
			goto out;
		}
		snprintf(m->source, sizeof(m->source), "%s", json_object_get_string(x));
		m->copy = json_object_object_get_ex(o, "copy", &x) && json_object_get_boolean(x);
		p->nr_moves++;
	}
	if (!(a = jarray(j, "merges", where, err)))
		goto out;
	p->merges = calloc(json_object_array_length(a) + 1, sizeof(*p->merges));
	if (!p->merges) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *o = json_object_array_get_idx(a, i), *r;
		struct plan_merge *m = &p->merges[i];

		p->nr_merges++;
		if (jfile(o, "child", m->child, where, err) < 0 ||
		    jfile(o, "into", m->into, where, err) < 0 ||
		    !(r = jarray(o, "repoint", where, err)))
			goto out;
		ret = jfiles(r, &m->repoint, &m->nr_repoint, where, "repoint", err);
		if (ret < 0)
			goto out;
		ret = -EINVAL;
	}
	ret = 0;
out:
	if (ret < 0)
		snap_plan_free(p);
	return ret;
}

static int journal_write(struct snap_set *s, const struct plan *p, struct vhd_err *err)
{
	struct json_object *j = plan_to_json(p, s->have_meta ? s->meta.generation : 0);
	const char *txt = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
							 JSON_C_TO_STRING_NOSLASHESCAPE);
	int ret = snap_write_atomic(s->dir, SNAP_JOURNAL_FILE, txt, strlen(txt));

	json_object_put(j);
	if (ret < 0) {
		snap_err_set(err, "%s/%s: cannot write the journal: %s", s->dir, SNAP_JOURNAL_FILE,
			     strerror(-ret));
		return ret;
	}
	snap_step(s);
	return 0;
}

static int journal_remove(struct snap_set *s, struct vhd_err *err)
{
	int ret = snap_unlink(s->dir, SNAP_JOURNAL_FILE);

	if (ret == 0)
		ret = snap_fsync_dir(s->dir);
	if (ret < 0) {
		snap_err_set(err, "%s/%s: cannot remove the journal: %s", s->dir, SNAP_JOURNAL_FILE,
			     strerror(-ret));
		return ret;
	}
	snap_step(s);
	return 0;
}

int snap_meta_commit(struct snap_set *s, struct meta *m, struct vhd_err *err)
{
	uint64_t want = s->have_meta ? s->meta.generation + 1 : 1;
	struct json_object *j;
	const char *txt;
	int ret;

	if (m->generation != want) {
		snap_err_set(err, "%s: internal error: committing generation %" PRIu64 " over %" PRIu64,
			     s->dir, m->generation, want - 1);
		return -EINVAL;
	}
	j = snap_meta_to_json(m);
	txt = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					     JSON_C_TO_STRING_NOSLASHESCAPE);
	ret = snap_write_atomic(s->dir, SNAP_META_FILE, txt, strlen(txt));
	json_object_put(j);
	if (ret < 0) {
		snap_err_set(err, "%s/%s: cannot write the metadata: %s", s->dir, SNAP_META_FILE,
			     strerror(-ret));
		return ret;
	}
	snap_step(s);
	if (s->have_meta)
		snap_meta_free(&s->meta);
	s->meta = *m;
	s->have_meta = true;
	memset(m, 0, sizeof(*m));
	return 0;
}

/* ---- steps ---------------------------------------------------------------- */

/* What vhd_create (".tmp-") and vhd_convert (".part-") leave beside a file
 * they were making when the process died. */
static void remove_leftovers(struct snap_set *s, const char *file)
{
	size_t n = strlen(file);
	DIR *d = opendir(s->dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, file, n) &&
		    (!strncmp(de->d_name + n, ".tmp-", 5) || !strncmp(de->d_name + n, ".part-", 6))) {
			snap_unlink(s->dir, de->d_name);
			snap_note(s, "removed %s/%s, left over by an interrupted operation", s->dir,
				  de->d_name);
		}
	closedir(d);
}

static int do_news(struct snap_set *s, const struct plan *p, struct vhd_err *err)
{
	for (size_t i = 0; i < p->nr_new; i++) {
		struct vhd_create_opts co = {.type = VHD_TYPE_DIFF};
		char path[PATH_MAX], parent[PATH_MAX];
		int ret;

		snap_path(s, p->news[i].file, path, sizeof(path));
		snap_path(s, p->news[i].parent, parent, sizeof(parent));
		co.parent = parent;
		ret = vhd_create(path, &co, err);
		if (ret < 0)
			return ret;
		snap_step(s);
	}
	return 0;
}

static int do_moves(struct snap_set *s, const struct plan *p, struct vhd_err *err)
{
	for (size_t i = 0; i < p->nr_moves; i++) {
		const struct plan_move *m = &p->moves[i];
		char path[PATH_MAX];
		int ret = 0;

		snap_path(s, m->file, path, sizeof(path));
		if (m->copy) {
			struct vhd_convert_opts co = {.src_format = VHD_FMT_VHD, .out_format = VHD_FMT_VHD,
						      .out_type = VHD_TYPE_DYNAMIC,
						      .progress = s->opts.progress,
						      .progress_ctx = s->opts.progress_ctx};
			struct vhd_convert_stats cs;

			ret = vhd_convert(m->source, NULL, path, &co, &cs, err);
			if (ret < 0)
				return ret;
		} else {
			char dir[PATH_MAX];
			const char *slash = strrchr(m->source, '/');

			if (rename(m->source, path) < 0) {
				ret = -errno;
				snap_err_set(err, "%s: cannot move it to %s: %s%s", m->source, path,
					     strerror(-ret), ret == -EXDEV ? " (use --copy)" : "");
				return ret;
			}
			snprintf(dir, sizeof(dir), "%.*s", slash == m->source ? 1 : (int)(slash - m->source),
				 m->source);
			ret = snap_fsync_dir(s->dir);
			if (ret == 0)
				ret = snap_fsync_dir(dir);
			if (ret < 0) {
				snap_err_set(err, "%s: fsync: %s", dir, strerror(-ret));
				return ret;
			}
		}
		snap_step(s);
	}
	return 0;
}

static int allocated_blocks(struct snap_set *s, const char *file, uint32_t *blocks,
			    struct vhd_err *err)
{
	struct vhd_open_opts oo = {.flags = VHD_OPEN_NO_PARENT | VHD_OPEN_NO_LOCK};
	struct vhd_image *img;
	struct vhd_info info;
	char path[PATH_MAX];
	int ret;

	snap_path(s, file, path, sizeof(path));
	ret = vhd_open(path, &oo, &img, err);
	if (ret < 0)
		return ret;
	vhd_get_info(img, &info);
	*blocks = info.allocated_blocks;
	vhd_close(img);
	return 0;
}

/* Collapse, before the commit.  Per disk: the dependent's file (child) is
 * merged into the deleted node's file (into) and kept as an empty child that
 * reads through, so that everything above it keeps opening; then the child's
 * children are re-pointed at into, which now holds exactly what the child
 * showed.  Every call is safe to repeat. */
static int do_merges(struct snap_set *s, const struct plan *p, struct vhd_err *err)
{
	struct vhd_open_opts oo = {0};

	for (size_t i = 0; i < p->nr_merges; i++) {
		const struct plan_merge *m = &p->merges[i];
		char child[PATH_MAX], into[PATH_MAX];
		uint32_t blocks = 0;
		int ret;

		snap_path(s, m->child, child, sizeof(child));
		snap_path(s, m->into, into, sizeof(into));
		ret = snap_set_writable(s, m->into, true, err);
		if (ret == 0)
			ret = snap_set_writable(s, m->child, true, err);
		if (ret < 0)
			return ret;
		/* A child without blocks and without a pending intent has been
		 * merged (or never held data): merging again is not needed, and
		 * would be refused once its children point at into. */
		if (!vhd_merge_pending(child)) {
			ret = allocated_blocks(s, m->child, &blocks, err);
			if (ret < 0)
				return ret;
		}
		if (vhd_merge_pending(child) || blocks) {
			/* force: the set has made sure that nobody but child depends on
			 * into (the tree, and ops.c's look at foreign files); vhd_merge's
			 * own scan also refuses when an ancestor of into has other
			 * children, which is every branch of a checkpoint tree */
			struct vhd_merge_opts mo = {.keep = true, .force = true,
						    .progress = s->opts.progress,
						    .progress_ctx = s->opts.progress_ctx};
			struct vhd_merge_stats ms;

			ret = vhd_merge(child, &oo, &mo, &ms, err);
			if (ret < 0)
				return ret;
			snap_step(s);
		}
		for (size_t r = 0; r < m->nr_repoint; r++) {
			char rp[PATH_MAX];

			snap_path(s, m->repoint[r], rp, sizeof(rp));
			ret = snap_set_writable(s, m->repoint[r], true, err);
			if (ret == 0)
				ret = vhd_set_parent(rp, into, true, &oo, err);
			if (ret < 0)
				return ret;
			snap_step(s);
		}
	}
	return 0;
}

/* After the commit: files nobody references go, modes follow the roles. */
static int do_cleanup(struct snap_set *s, const struct plan *p, struct vhd_err *err)
{
	const struct meta *m = &s->meta;
	int ret;

	for (size_t i = 0; i < p->nr_remove; i++) {
		ret = snap_unlink(s->dir, p->removes[i]);
		if (ret < 0) {
			snap_err_set(err, "%s/%s: cannot remove: %s", s->dir, p->removes[i], strerror(-ret));
			return ret;
		}
		snap_step(s);
	}
	ret = snap_fsync_dir(s->dir);
	if (ret < 0) {
		snap_err_set(err, "%s: fsync: %s", s->dir, strerror(-ret));
		return ret;
	}
	for (size_t k = 0; k < m->nr_disks; k++) {
		ret = snap_set_writable(s, m->now.files[k], true, err);
		for (size_t i = 0; i < m->nr && ret == 0; i++)
			ret = snap_set_writable(s, m->nodes[i].files[k], false, err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Undo of a plan that did not commit and never wrote a referenced file. */
static int do_rollback(struct snap_set *s, const struct plan *p, struct vhd_err *err)
{
	int ret = 0;

	for (size_t i = 0; i < p->nr_new && ret == 0; i++) {
		ret = snap_unlink(s->dir, p->news[i].file);
		remove_leftovers(s, p->news[i].file);
		if (ret == 0)
			snap_step(s);
	}
	for (size_t i = p->nr_moves; i-- > 0 && ret == 0;) {
		const struct plan_move *m = &p->moves[i];
		char path[PATH_MAX];

		snap_path(s, m->file, path, sizeof(path));
		if (m->copy) {
			ret = snap_unlink(s->dir, m->file);
		} else if (access(path, F_OK) == 0 && access(m->source, F_OK) != 0) {
			if (rename(path, m->source) < 0)
				ret = -errno;
		}
		remove_leftovers(s, m->file);
		if (ret == 0)
			snap_step(s);
	}
	/* a commit that was being written when the process died */
	if (ret == 0)
		ret = snap_unlink(s->dir, SNAP_META_FILE ".tmp");
	if (ret == 0)
		ret = snap_fsync_dir(s->dir);
	if (ret < 0) {
		snap_err_set(err, "%s: undoing the interrupted %s: %s", s->dir, op_words[p->op],
			     strerror(-ret));
		return ret;
	}
	return journal_remove(s, err);
}

int snap_plan_run(struct snap_set *s, struct plan *p, struct vhd_err *err)
{
	struct vhd_err e2;
	int ret;

	p->target.generation = (s->have_meta ? s->meta.generation : 0) + 1;
	ret = journal_write(s, p, err);
	if (ret < 0)
		return ret;
	switch (p->op) {
	case PLAN_INIT:
		ret = do_moves(s, p, err);
		break;
	case PLAN_CREATE:
	case PLAN_APPLY:
		ret = do_news(s, p, err);
		break;
	case PLAN_COLLAPSE:
		ret = do_merges(s, p, err);
		break;
	case PLAN_DROP:
		break;
	}
	if (ret < 0) {
		/* a collapse cannot be undone once a merge may have begun: the
		 * journal stays and the next open finishes it */
		if (p->op != PLAN_COLLAPSE && do_rollback(s, p, &e2) < 0)
			snap_note(s, "%s", e2.msg);
		if (p->op == PLAN_COLLAPSE)
			snap_note(s, "the interrupted delete stays in %s/%s and is finished by the next "
				     "command on the set once the cause is fixed", s->dir, SNAP_JOURNAL_FILE);
		return ret;
	}
	ret = snap_meta_commit(s, &p->target, err);
	if (ret < 0) {
		if (p->op != PLAN_COLLAPSE && do_rollback(s, p, &e2) < 0)
			snap_note(s, "%s", e2.msg);
		return ret;
	}
	ret = do_cleanup(s, p, err);
	if (ret == 0)
		ret = journal_remove(s, err);
	return ret;
}

/* ---- recovery --------------------------------------------------------------- */

static bool meta_uses(const struct meta *m, const char *file)
{
	for (size_t i = 0; i <= m->nr; i++) {
		const struct node *n = i < m->nr ? &m->nodes[i] : &m->now;

		if (n->attachment[0] && !strcmp(n->attachment, file))
			return true;
		for (size_t k = 0; k < m->nr_disks; k++)
			if (!strcmp(n->files[k], file))
				return true;
	}
	return false;
}

int snap_journal_recover(struct snap_set *s, struct vhd_err *err)
{
	char path[PATH_MAX], *txt = NULL;
	struct json_object *j = NULL;
	enum json_tokener_error jerr;
	struct plan p = {0};
	uint64_t from = 0, cur = s->have_meta ? s->meta.generation : 0;
	size_t len;
	int ret;

	snap_path(s, SNAP_JOURNAL_FILE, path, sizeof(path));
	ret = snap_read_file(path, SNAP_META_MAX_BYTES * 2, &txt, &len);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0) {
		snap_err_set(err, "%s: cannot read: %s", path, strerror(-ret));
		goto out;
	}
	j = json_tokener_parse_verbose(txt, &jerr);
	if (!j) {
		snap_err_set(err, "%s: damaged, not JSON (%s); nothing was changed",
			     path, json_tokener_error_desc(jerr));
		ret = -EINVAL;
		goto out;
	}
	ret = plan_from_json(j, path, &p, &from, err);
	if (ret < 0)
		goto out;
	ret = -EINVAL;
	if (p.op == PLAN_INIT ? cur > 1 : !s->have_meta) {
		snap_err_set(err, "%s: a %s journal %s set.json", path, op_names[p.op],
			     s->have_meta ? "beside an established" : "without");
		goto out;
	}
	if (cur == p.target.generation) {
		/* committed: the clean-up is left; nothing to remove may still
		 * be referenced */
		for (size_t i = 0; i < p.nr_remove; i++)
			if (meta_uses(&s->meta, p.removes[i])) {
				snap_err_set(err, "%s: would remove %s, which %s still uses", path,
					     p.removes[i], SNAP_META_FILE);
				goto out;
			}
		snap_note(s, "finished the clean-up of an interrupted %s", op_words[p.op]);
		ret = do_cleanup(s, &p, err);
		if (ret == 0)
			ret = journal_remove(s, err);
		goto out;
	}
	if (cur != from) {
		snap_err_set(err, "%s: describes generation %" PRIu64 " -> %" PRIu64 " but %s is at "
				  "generation %" PRIu64 "; nothing was changed", path, from,
			     p.target.generation, SNAP_META_FILE, cur);
		goto out;
	}
	if (p.op == PLAN_COLLAPSE) {
		for (size_t i = 0; i < p.nr_merges; i++)
			if (!meta_uses(&s->meta, p.merges[i].child) || !meta_uses(&s->meta, p.merges[i].into)) {
				snap_err_set(err, "%s: merges %s into %s, which %s does not both list", path,
					     p.merges[i].child, p.merges[i].into, SNAP_META_FILE);
				goto out;
			}
		snap_note(s, "finishing an interrupted delete (merging %zu disk%s)", p.nr_merges,
			  p.nr_merges == 1 ? "" : "s");
		ret = do_merges(s, &p, err);
		if (ret == 0)
			ret = snap_meta_commit(s, &p.target, err);
		if (ret == 0)
			ret = do_cleanup(s, &p, err);
		if (ret == 0)
			ret = journal_remove(s, err);
		goto out;
	}
	for (size_t i = 0; i < p.nr_new; i++)
		if (s->have_meta && meta_uses(&s->meta, p.news[i].file)) {
			snap_err_set(err, "%s: would remove %s, which %s uses", path, p.news[i].file,
				     SNAP_META_FILE);
			goto out;
		}
	snap_note(s, "rolled back an interrupted %s (it never happened)", op_words[p.op]);
	ret = do_rollback(s, &p, err);
out:
	if (j)
		json_object_put(j);
	free(txt);
	snap_plan_free(&p);
	return ret;
}
