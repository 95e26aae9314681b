/* meta.c - the set's metadata in memory and as JSON (set.json, and the target
 * state inside journal.json).
 *
 * The document is untrusted input: every field is type-checked, names and
 * file names are restricted to what the set itself writes (plain names inside
 * the set directory, so a damaged or hostile file cannot point anywhere
 * else), ids are unique, every parent exists and the parent links form one
 * tree without loops.  Checks against the disks themselves are in set.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- names ----------------------------------------------------------------- */

bool snap_valid_disk_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > SNAP_DISK_NAME_MAX || s[0] == '.')
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.'))
			return false;
	return true;
}

/* Files the metadata may name: plain names in the set, never the set's own
 * bookkeeping files. */
bool snap_valid_file_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= SNAP_FILE_MAX || s[0] == '.')
		return false;
	if (!strcmp(s, SNAP_META_FILE) || !strcmp(s, SNAP_JOURNAL_FILE) ||
	    !strcmp(s, SNAP_LOCK_FILE))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.'))
			return false;
	return true;
}

bool snap_valid_checkpoint_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= SNAP_NAME_MAX)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* ---- the tree ------------------------------------------------------------- */

static void node_free(struct node *n)
{
	free(n->files);
	n->files = NULL;
}

void snap_meta_free(struct meta *m)
{
	for (size_t i = 0; i < m->nr; i++)
		node_free(&m->nodes[i]);
	free(m->nodes);
	node_free(&m->now);
	memset(m, 0, sizeof(*m));
}

static int node_copy(struct node *dst, const struct node *src, size_t nr_disks)
{
	*dst = *src;
	dst->files = calloc(nr_disks ? nr_disks : 1, sizeof(snap_file_t));
	if (!dst->files)
		return -ENOMEM;
	if (src->files)
		memcpy(dst->files, src->files, nr_disks * sizeof(snap_file_t));
	return 0;
}

int snap_meta_copy(struct meta *dst, const struct meta *src)
{
	int ret = 0;

	*dst = *src;
	dst->nodes = NULL;
	dst->now.files = NULL;
	dst->nr = 0;
	if (src->nr) {
		dst->nodes = calloc(src->nr, sizeof(*dst->nodes));
		if (!dst->nodes) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < src->nr; i++) {
		ret = node_copy(&dst->nodes[i], &src->nodes[i], src->nr_disks);
		if (ret < 0)
			goto out;
		dst->nr++;
	}
	ret = node_copy(&dst->now, &src->now, src->nr_disks);
out:
	if (ret < 0)
		snap_meta_free(dst);
	return ret;
}

struct node *snap_meta_add(struct meta *m)
{
	struct node *nodes = realloc(m->nodes, (m->nr + 1) * sizeof(*nodes));
	struct node *n;

	if (!nodes)
		return NULL;
	m->nodes = nodes;
	n = &m->nodes[m->nr];
	memset(n, 0, sizeof(*n));
	n->files = calloc(m->nr_disks ? m->nr_disks : 1, sizeof(snap_file_t));
	if (!n->files)
		return NULL;
	m->nr++;
	return n;
}

void snap_meta_remove(struct meta *m, uint64_t id)
{
	for (size_t i = 0; i < m->nr; i++)
		if (m->nodes[i].id == id) {
			node_free(&m->nodes[i]);
			memmove(&m->nodes[i], &m->nodes[i + 1], (m->nr - i - 1) * sizeof(*m->nodes));
			m->nr--;
			return;
		}
}

/* Nodes are kept in id order (ids only grow; parsing sorts). */
struct node *snap_meta_node(struct meta *m, uint64_t id)
{
	size_t lo = 0, hi = m->nr;

	if (id == SNAP_NOW)
		return &m->now;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->nodes[mid].id == id)
			return &m->nodes[mid];
		if (m->nodes[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct node *snap_meta_cnode(const struct meta *m, uint64_t id)
{
	return snap_meta_node((struct meta *)m, id);
}

size_t snap_meta_children(const struct meta *m, uint64_t id, uint64_t *out)
{
	size_t n = 0;

	for (size_t i = 0; i < m->nr; i++)
		if (m->nodes[i].parent == id)
			out[n++] = m->nodes[i].id;
	if (m->now.parent == id)
		out[n++] = SNAP_NOW;
	return n;
}

unsigned snap_meta_dependents(const struct meta *m, uint64_t id)
{
	unsigned n = m->now.parent == id;

	for (size_t i = 0; i < m->nr; i++)
		n += m->nodes[i].parent == id;
	return n;
}

unsigned snap_meta_depth(const struct meta *m, uint64_t id)
{
	unsigned d = 0;

	for (const struct node *n = snap_meta_cnode(m, id); n && id; n = snap_meta_cnode(m, id = n->parent))
		d++;
	return d;
}

static bool file_used(const struct meta *m, const char *name)
{
	for (size_t k = 0; k < m->nr_disks; k++) {
		if (!strcmp(m->now.files[k], name))
			return true;
		for (size_t i = 0; i < m->nr; i++)
			if (!strcmp(m->nodes[i].files[k], name))
				return true;
	}
	return false;
}

void snap_meta_new_file(struct meta *m, size_t disk, char *out)
{
	char name[SNAP_FILE_MAX];

	/* out may be the slot being replaced (Now's file): build the name aside */
	do
		snprintf(name, sizeof(name), "%s_%" PRIu64 ".avhd", m->disks[disk], m->next_file++);
	while (file_used(m, name));
	memcpy(out, name, SNAP_FILE_MAX);
}

/* ---- to JSON ------------------------------------------------------------- */

static struct json_object *files_json(const struct meta *m, const struct node *n)
{
	struct json_object *a = json_object_new_array();

	for (size_t k = 0; k < m->nr_disks; k++)
		json_object_array_add(a, json_object_new_string(n->files[k]));
	return a;
}

static struct json_object *id_or_null(uint64_t id)
{
	return id ? json_object_new_uint64(id) : NULL;
}

struct json_object *snap_meta_to_json(const struct meta *m)
{
	struct json_object *j = json_object_new_object(), *disks = json_object_new_array();
	struct json_object *now = json_object_new_object(), *cps = json_object_new_array();

	json_object_object_add(j, "format", json_object_new_string(SNAP_META_FORMAT));
	json_object_object_add(j, "version", json_object_new_int(SNAP_VERSION));
	json_object_object_add(j, "generation", json_object_new_uint64(m->generation));
	json_object_object_add(j, "next-id", json_object_new_uint64(m->next_id));
	json_object_object_add(j, "next-file", json_object_new_uint64(m->next_file));
	for (size_t k = 0; k < m->nr_disks; k++)
		json_object_array_add(disks, json_object_new_string(m->disks[k]));
	json_object_object_add(j, "disks", disks);
	json_object_object_add(now, "parent", id_or_null(m->now.parent));
	json_object_object_add(now, "files", files_json(m, &m->now));
	json_object_object_add(j, "now", now);
	for (size_t i = 0; i < m->nr; i++) {
		const struct node *n = &m->nodes[i];
		struct json_object *c = json_object_new_object();

		json_object_object_add(c, "id", json_object_new_uint64(n->id));
		json_object_object_add(c, "name", json_object_new_string(n->name));
		json_object_object_add(c, "parent", id_or_null(n->parent));
		json_object_object_add(c, "created", json_object_new_int64(n->created));
		json_object_object_add(c, "hidden", json_object_new_boolean(n->hidden));
		json_object_object_add(c, "files", files_json(m, n));
		json_object_object_add(c, "attachment",
				       n->attachment[0] ? json_object_new_string(n->attachment) : NULL);
		json_object_array_add(cps, c);
	}
	json_object_object_add(j, "checkpoints", cps);
	return j;
}

/* ---- from JSON -------------------------------------------------------------- */

/* A value as it stands in the file, for messages. */
static const char *jtxt(struct json_object *v)
{
	return json_object_to_json_string_ext(v, JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* Required member of a given type; absent or wrong type is an error. */
static struct json_object *member(struct json_object *o, const char *key, enum json_type t,
				  bool nullable, const char *where, const char *ctx,
				  struct vhd_err *err, int *ret)
{
	struct json_object *v = NULL;

	if (!json_object_object_get_ex(o, key, &v)) {
		snap_err_set(err, "%s: %s: \"%s\" is missing", where, ctx, key);
		*ret = -EINVAL;
		return NULL;
	}
	if (v == NULL && nullable)
		return NULL;
	if (!json_object_is_type(v, t)) {
		snap_err_set(err, "%s: %s: \"%s\" should be %s%s, not %s", where, ctx, key,
			    t == json_type_int ? "an integer" : t == json_type_string ? "a string"
			    : t == json_type_array ? "an array" : t == json_type_boolean ? "true or false"
			    : "an object", nullable ? " or null" : "", jtxt(v));
		*ret = -EINVAL;
		return NULL;
	}
	return v;
}

static int get_uint(struct json_object *o, const char *key, bool nullable, uint64_t min,
		    uint64_t *out, const char *where, const char *ctx, struct vhd_err *err)
{
	int ret = 0;
	struct json_object *v = member(o, key, json_type_int, nullable, where, ctx, err, &ret);
	int64_t x;

	*out = 0;
	if (ret < 0 || !v)
		return ret;
	x = json_object_get_int64(v);
	/* json-c saturates big values at INT64_MAX; ids never get near that */
	if (x < 0 || (uint64_t)x < min || x == INT64_MAX) {
		snap_err_set(err, "%s: %s: \"%s\" is %s, out of range", where, ctx, key,
			    jtxt(v));
		return -EINVAL;
	}
	*out = (uint64_t)x;
	return 0;
}

static int get_files(struct json_object *o, const struct meta *m, struct node *n,
		     const char *where, const char *ctx, struct vhd_err *err)
{
	int ret = 0;
	struct json_object *a = member(o, "files", json_type_array, false, where, ctx, err, &ret);

	if (ret < 0)
		return ret;
	if (json_object_array_length(a) != m->nr_disks) {
		snap_err_set(err, "%s: %s: \"files\" names %zu files for %zu disks", where, ctx,
			    json_object_array_length(a), m->nr_disks);
		return -EINVAL;
	}
	for (size_t k = 0; k < m->nr_disks; k++) {
		struct json_object *f = json_object_array_get_idx(a, k);
		const char *s = json_object_is_type(f, json_type_string) ? json_object_get_string(f) : NULL;

		if (!s || !snap_valid_file_name(s)) {
			snap_err_set(err, "%s: %s: file of disk \"%s\" is %s: not a plain file name "
					 "inside the set", where, ctx, m->disks[k],
				    f ? jtxt(f) : "null");
			return -EINVAL;
		}
		snprintf(n->files[k], SNAP_FILE_MAX, "%s", s);
	}
	return 0;
}

static int cmp_nodes(const void *a, const void *b)
{
	const struct node *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

struct file_ref {
	const char *name;
	const struct node *node;
	size_t disk;   /* SIZE_MAX: the node's attachment */
};

static int cmp_refs(const void *a, const void *b)
{
	return strcmp(((const struct file_ref *)a)->name, ((const struct file_ref *)b)->name);
}

static void describe_ref(const struct meta *m, const struct file_ref *r, char *buf, size_t len)
{
	if (r->disk == SIZE_MAX)
		snprintf(buf, len, "the attachment of checkpoint %" PRIu64, r->node->id);
	else if (r->node->id)
		snprintf(buf, len, "checkpoint %" PRIu64 " disk \"%s\"", r->node->id, m->disks[r->disk]);
	else
		snprintf(buf, len, "now disk \"%s\"", m->disks[r->disk]);
}

/* Every file belongs to one node and one disk only (sorted, so that big sets
 * stay quick). */
static int check_files(const struct meta *m, const char *where, struct vhd_err *err)
{
	size_t n = 0, cap = (m->nr + 1) * (m->nr_disks + 1);
	struct file_ref *refs = calloc(cap, sizeof(*refs));
	int ret = 0;

	if (!refs)
		return -ENOMEM;
	for (size_t i = 0; i <= m->nr; i++) {
		const struct node *nd = i < m->nr ? &m->nodes[i] : &m->now;

		for (size_t k = 0; k < m->nr_disks; k++)
			refs[n++] = (struct file_ref){nd->files[k], nd, k};
		if (nd->attachment[0])
			refs[n++] = (struct file_ref){nd->attachment, nd, SIZE_MAX};
	}
	qsort(refs, n, sizeof(*refs), cmp_refs);
	for (size_t i = 1; i < n; i++)
		if (!strcmp(refs[i - 1].name, refs[i].name)) {
			char a[128], b[128];

			describe_ref(m, &refs[i - 1], a, sizeof(a));
			describe_ref(m, &refs[i], b, sizeof(b));
			snap_err_set(err, "%s: file %s is used twice (%s and %s)", where, refs[i].name, a, b);
			ret = -EINVAL;
			break;
		}
	free(refs);
	return ret;
}

/* Everything that can be said about the tree without the disks. */
static int check_tree(const struct meta *m, const char *where, struct vhd_err *err)
{
	size_t roots = 0;

	for (size_t i = 0; i < m->nr; i++) {
		const struct node *n = &m->nodes[i];

		if (i && m->nodes[i - 1].id == n->id) {
			snap_err_set(err, "%s: checkpoint id %" PRIu64 " appears twice", where, n->id);
			return -EINVAL;
		}
		if (n->id >= m->next_id) {
			snap_err_set(err, "%s: checkpoint %" PRIu64 ": id is not below next-id %" PRIu64,
				     where, n->id, m->next_id);
			return -EINVAL;
		}
		if (n->parent && !snap_meta_cnode(m, n->parent)) {
			snap_err_set(err, "%s: checkpoint %" PRIu64 ": parent %" PRIu64 " does not exist",
				     where, n->id, n->parent);
			return -EINVAL;
		}
		roots += n->parent == 0;
	}
	for (size_t i = 0; i < m->nr; i++) {
		uint64_t id = m->nodes[i].id;
		size_t steps = 0;

		/* no path from the root is deeper than SNAP_MAX_DEPTH; a walk that
		 * goes on longer is in a loop, or the tree is too deep */
		while (id && steps <= SNAP_MAX_DEPTH) {
			id = snap_meta_cnode(m, id)->parent;
			steps++;
		}
		if (id) {
			while (id && steps <= m->nr) {
				id = snap_meta_cnode(m, id)->parent;
				steps++;
			}
			if (id) {
				snap_err_set(err, "%s: checkpoint %" PRIu64 ": its parent links form a loop",
					     where, m->nodes[i].id);
				return -ELOOP;
			}
			snap_err_set(err, "%s: checkpoint %" PRIu64 " lies more than %d checkpoints deep",
				     where, m->nodes[i].id, SNAP_MAX_DEPTH);
			return -EINVAL;
		}
	}
	if (m->now.parent && !snap_meta_cnode(m, m->now.parent)) {
		snap_err_set(err, "%s: now: parent %" PRIu64 " does not exist", where, m->now.parent);
		return -EINVAL;
	}
	if (m->nr && (roots != 1 || !m->now.parent)) {
		snap_err_set(err, "%s: the checkpoints form %zu trees%s; a set has one tree with Now "
				  "in it", where, roots, m->now.parent ? "" : " and Now hangs under none");
		return -EINVAL;
	}
	return check_files(m, where, err);
}

int snap_meta_from_json(struct json_object *j, const char *where, struct meta *m,
		   struct vhd_err *err)
{
	struct json_object *v, *disks, *now, *cps;
	char ctx[64];
	int ret = 0;

	memset(m, 0, sizeof(*m));
	if (!json_object_is_type(j, json_type_object)) {
		snap_err_set(err, "%s: not a JSON object", where);
		return -EINVAL;
	}
	v = member(j, "format", json_type_string, false, where, "set", err, &ret);
	if (ret < 0)
		return ret;
	if (strcmp(json_object_get_string(v), SNAP_META_FORMAT)) {
		snap_err_set(err, "%s: \"format\" is \"%s\", not \"%s\"", where,
			    json_object_get_string(v), SNAP_META_FORMAT);
		return -EINVAL;
	}
	v = member(j, "version", json_type_int, false, where, "set", err, &ret);
	if (ret < 0)
		return ret;
	if (json_object_get_int64(v) != SNAP_VERSION) {
		snap_err_set(err, "%s: version %s is not one this program understands (%d)", where,
			    jtxt(v), SNAP_VERSION);
		return -EINVAL;
	}
	ret = get_uint(j, "generation", false, 1, &m->generation, where, "set", err);
	if (ret == 0)
		ret = get_uint(j, "next-id", false, 1, &m->next_id, where, "set", err);
	if (ret == 0)
		ret = get_uint(j, "next-file", false, 1, &m->next_file, where, "set", err);
	if (ret < 0)
		goto out;
	disks = member(j, "disks", json_type_array, false, where, "set", err, &ret);
	if (ret < 0)
		goto out;
	m->nr_disks = json_object_array_length(disks);
	if (m->nr_disks == 0 || m->nr_disks > SNAP_MAX_DISKS) {
		snap_err_set(err, "%s: \"disks\" lists %zu disks (1 to %d)", where, m->nr_disks,
			    SNAP_MAX_DISKS);
		ret = -EINVAL;
		goto out;
	}
	for (size_t k = 0; k < m->nr_disks; k++) {
		struct json_object *d = json_object_array_get_idx(disks, k);
		const char *s = json_object_is_type(d, json_type_string) ? json_object_get_string(d) : NULL;

		if (!s || !snap_valid_disk_name(s)) {
			snap_err_set(err, "%s: disks[%zu] is %s: not a disk name ([A-Za-z0-9_.-], at "
					 "most %d)", where, k, d ? jtxt(d) : "null",
				    SNAP_DISK_NAME_MAX);
			ret = -EINVAL;
			goto out;
		}
		for (size_t l = 0; l < k; l++)
			if (!strcmp(m->disks[l], s)) {
				snap_err_set(err, "%s: disk \"%s\" is listed twice", where, s);
				ret = -EINVAL;
				goto out;
			}
		snprintf(m->disks[k], sizeof(m->disks[k]), "%s", s);
	}
	now = member(j, "now", json_type_object, false, where, "set", err, &ret);
	if (ret < 0)
		goto out;
	m->now.files = calloc(m->nr_disks, sizeof(snap_file_t));
	if (!m->now.files) {
		ret = -ENOMEM;
		goto out;
	}
	ret = get_uint(now, "parent", true, 1, &m->now.parent, where, "now", err);
	if (ret == 0)
		ret = get_files(now, m, &m->now, where, "now", err);
	if (ret < 0)
		goto out;
	cps = member(j, "checkpoints", json_type_array, false, where, "set", err, &ret);
	if (ret < 0)
		goto out;
	if (json_object_array_length(cps) > SNAP_MAX_NODES) {
		snap_err_set(err, "%s: %zu checkpoints (at most %d)", where,
			    json_object_array_length(cps), SNAP_MAX_NODES);
		ret = -EINVAL;
		goto out;
	}
	for (size_t i = 0; i < json_object_array_length(cps); i++) {
		struct json_object *c = json_object_array_get_idx(cps, i), *x;
		struct node *n;

		snprintf(ctx, sizeof(ctx), "checkpoints[%zu]", i);
		if (!json_object_is_type(c, json_type_object)) {
			snap_err_set(err, "%s: %s is not an object", where, ctx);
			ret = -EINVAL;
			goto out;
		}
		n = snap_meta_add(m);
		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		ret = get_uint(c, "id", false, 1, &n->id, where, ctx, err);
		if (ret < 0)
			goto out;
		snprintf(ctx, sizeof(ctx), "checkpoint %" PRIu64, n->id);
		ret = get_uint(c, "parent", true, 1, &n->parent, where, ctx, err);
		if (ret < 0)
			goto out;
		x = member(c, "name", json_type_string, false, where, ctx, err, &ret);
		if (ret < 0)
			goto out;
		if (!snap_valid_checkpoint_name(json_object_get_string(x))) {
			snap_err_set(err, "%s: %s: name %s is empty, too long or has control "
					 "characters", where, ctx, jtxt(x));
			ret = -EINVAL;
			goto out;
		}
		snprintf(n->name, sizeof(n->name), "%s", json_object_get_string(x));
		x = member(c, "created", json_type_int, false, where, ctx, err, &ret);
		if (ret < 0)
			goto out;
		n->created = json_object_get_int64(x);
		x = member(c, "hidden", json_type_boolean, false, where, ctx, err, &ret);
		if (ret < 0)
			goto out;
		n->hidden = json_object_get_boolean(x);
		x = member(c, "attachment", json_type_string, true, where, ctx, err, &ret);
		if (ret < 0)
			goto out;
		if (x && !snap_valid_file_name(json_object_get_string(x))) {
			snap_err_set(err, "%s: %s: attachment %s is not a plain file name inside the "
					 "set", where, ctx, jtxt(x));
			ret = -EINVAL;
			goto out;
		}
		if (x)
			snprintf(n->attachment, sizeof(n->attachment), "%s", json_object_get_string(x));
		ret = get_files(c, m, n, where, ctx, err);
		if (ret < 0)
			goto out;
	}
	if (m->nr)
		qsort(m->nodes, m->nr, sizeof(*m->nodes), cmp_nodes);
	ret = check_tree(m, where, err);
out:
	if (ret < 0)
		snap_meta_free(m);
	return ret;
}
