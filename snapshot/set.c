/* set.c - opening a checkpoint set: lock, load, recover, check against the
 * disks; and the read-only view of the tree. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

int snap_lock_dir(const char *dir, int *fd, struct vhd_err *err)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_LOCK_FILE);
	*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	/* a set on read-only media can still be listed and exported */
	if (*fd < 0 && (errno == EROFS || errno == EACCES))
		*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (*fd < 0) {
		int e = errno;

		snap_err_set(err, "%s: cannot open the lock file: %s", path, strerror(e));
		return -e;
	}
	if (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		if (e == EWOULDBLOCK)
			snap_err_set(err, "%s: another command is working on this checkpoint set (%s is "
					  "locked); try again when it has finished", dir, path);
		else
			snap_err_set(err, "%s: cannot lock: %s", path, strerror(e));
		close(*fd);
		*fd = -1;
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	return 0;
}

static int load_meta(struct snap_set *s, struct vhd_err *err)
{
	char path[PATH_MAX], *txt = NULL;
	enum json_tokener_error jerr;
	struct json_object *j = NULL;
	size_t len;
	int ret;

	snap_path(s, SNAP_META_FILE, path, sizeof(path));
	ret = snap_read_file(path, SNAP_META_MAX_BYTES, &txt, &len);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0) {
		snap_err_set(err, "%s: cannot read: %s", path, ret == -EFBIG ? "larger than any set"
			     : ret == -EINVAL ? "not a regular file" : strerror(-ret));
		goto out;
	}
	j = json_tokener_parse_verbose(txt, &jerr);
	if (!j || strlen(txt) != len) {
		snap_err_set(err, "%s: damaged, not JSON (%s)", path,
			     j ? "a NUL byte inside" : json_tokener_error_desc(jerr));
		ret = -EINVAL;
		goto out;
	}
	ret = snap_meta_from_json(j, path, &s->meta, err);
	s->have_meta = ret == 0;
out:
	if (j)
		json_object_put(j);
	free(txt);
	return ret;
}

static void describe(const struct meta *m, const struct node *n, size_t k, char *buf, size_t len)
{
	if (n->id)
		snprintf(buf, len, "checkpoint %" PRIu64 " (\"%s\") disk \"%s\"", n->id, n->name,
			 m->disks[k]);
	else
		snprintf(buf, len, "Now disk \"%s\"", m->disks[k]);
}

struct file_facts {
	uint8_t uuid[16], parent_uuid[16];
	enum vhd_type type;
	uint64_t size;
};

/* Everything set.json says about the files must hold on disk: they exist,
 * open as VHDs, and each differencing link matches the tree (by the unique
 * id the child records, which is what vhd_open follows). */
int snap_validate_disks(struct snap_set *s, struct vhd_err *err)
{
	const struct meta *m = &s->meta;
	size_t nodes = m->nr + 1;
	struct file_facts *ff = calloc(nodes * m->nr_disks, sizeof(*ff));
	struct vhd_open_opts oo = {.flags = VHD_OPEN_NO_PARENT | VHD_OPEN_NO_LOCK};
	char what[SNAP_NAME_MAX + 128];
	int ret = 0;

	if (!ff)
		return -ENOMEM;
	for (size_t i = 0; i < nodes; i++) {
		const struct node *n = i < m->nr ? &m->nodes[i] : &m->now;

		for (size_t k = 0; k < m->nr_disks; k++) {
			struct file_facts *f = &ff[i * m->nr_disks + k];
			struct vhd_image *img;
			struct vhd_info info;
			struct vhd_err inner;
			char path[PATH_MAX];
			struct stat st;

			describe(m, n, k, what, sizeof(what));
			snap_path(s, n->files[k], path, sizeof(path));
			if (lstat(path, &st) < 0) {
				int e = errno;

				snap_err_set(err, "%s: %s: file %s is %s", s->dir, what, n->files[k],
					     e == ENOENT ? "missing" : strerror(e));
				ret = -ENOENT;
				goto out;
			}
			if (!S_ISREG(st.st_mode)) {
				snap_err_set(err, "%s: %s: %s is not a regular file", s->dir, what,
					     n->files[k]);
				ret = -EINVAL;
				goto out;
			}
			ret = vhd_open(path, &oo, &img, &inner);
			if (ret < 0) {
				snap_err_set(err, "%s: %s: %s", s->dir, what, inner.msg);
				goto out;
			}
			vhd_get_info(img, &info);
			vhd_close(img);
			memcpy(f->uuid, info.uuid, 16);
			memcpy(f->parent_uuid, info.parent_uuid, 16);
			f->type = info.type;
			f->size = info.virtual_size;
			if (vhd_merge_pending(path)) {
				snap_err_set(err, "%s: %s: %s has an unfinished merge that this set did not "
						  "start (%s.merge-intent); finish it with `vhdtool repair %s` "
						  "or remove the record", s->dir, what, n->files[k], path, path);
				ret = -EBUSY;
				goto out;
			}
		}
	}
	for (size_t i = 0; i < nodes; i++) {
		const struct node *n = i < m->nr ? &m->nodes[i] : &m->now;
		const struct node *p = n->parent ? snap_meta_cnode(m, n->parent) : NULL;
		size_t pi = p ? (size_t)(p - m->nodes) : 0;

		for (size_t k = 0; k < m->nr_disks; k++) {
			const struct file_facts *f = &ff[i * m->nr_disks + k];
			char a[37], b[37];

			describe(m, n, k, what, sizeof(what));
			if (!p && f->type == VHD_TYPE_DIFF) {
				snap_err_set(err, "%s: %s: %s is a differencing disk, but the tree says it "
						  "is a base disk with no parent in the set", s->dir, what,
					     n->files[k]);
				ret = -EINVAL;
				goto out;
			}
			if (!p)
				continue;
			if (f->type != VHD_TYPE_DIFF) {
				snap_err_set(err, "%s: %s: %s is a %s disk, but the tree says it is a "
						  "differencing child of %s", s->dir, what, n->files[k],
					     vhd_type_name(f->type), p->files[k]);
				ret = -EINVAL;
				goto out;
			}
			if (memcmp(f->parent_uuid, ff[pi * m->nr_disks + k].uuid, 16)) {
				vhd_uuid_format(f->parent_uuid, a);
				vhd_uuid_format(ff[pi * m->nr_disks + k].uuid, b);
				snap_err_set(err, "%s: %s: %s's parent link (unique id %s) does not lead to "
						  "%s (unique id %s), its parent in the tree", s->dir, what,
					     n->files[k], a, p->files[k], b);
				ret = -EINVAL;
				goto out;
			}
			if (f->size != ff[pi * m->nr_disks + k].size) {
				snap_err_set(err, "%s: %s: %s is %" PRIu64 " bytes but its parent %s is %"
						  PRIu64, s->dir, what, n->files[k], f->size, p->files[k],
					     ff[pi * m->nr_disks + k].size);
				ret = -EINVAL;
				goto out;
			}
		}
	}
out:
	free(ff);
	return ret;
}

int snap_open(const char *dir, const struct snap_opts *o, struct snap_set **out,
	      struct vhd_err *err)
{
	struct snap_set *s = calloc(1, sizeof(*s));
	const char *env = getenv("VHDSTACK_SNAP_CRASH_AFTER");
	struct stat st;
	size_t len;
	int ret;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->lock_fd = -1;
	if (o)
		s->opts = *o;
	if (env && *env)
		s->crash_after = strtoul(env, NULL, 10);
	len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (len == 0 || len >= sizeof(s->dir) - SNAP_FILE_MAX - 32) {
		snap_err_set(err, "%s: not a usable set path", dir);
		ret = -EINVAL;
		goto fail;
	}
	snprintf(s->dir, sizeof(s->dir), "%.*s", (int)len, dir);
	if (stat(s->dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snap_err_set(err, "%s: no checkpoint set here (%s)", s->dir,
			     errno == ENOENT ? "no such directory" : "not a directory");
		ret = -ENOENT;
		goto fail;
	}
	ret = snap_lock_dir(s->dir, &s->lock_fd, err);
	if (ret < 0)
		goto fail;
	ret = load_meta(s, err);
	if (ret < 0)
		goto fail;
	ret = snap_journal_recover(s, err);
	if (ret < 0)
		goto fail;
	if (!s->have_meta) {
		snap_err_set(err, "%s: not a checkpoint set (no %s; start one with `vhdtool "
				  "checkpoint init`)", s->dir, SNAP_META_FILE);
		ret = -ENOENT;
		goto fail;
	}
	ret = snap_validate_disks(s, err);
	if (ret < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	snap_close(s);
	return ret;
}

void snap_close(struct snap_set *s)
{
	if (!s)
		return;
	snap_meta_free(&s->meta);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s);
}

/* ---- the view ----------------------------------------------------------------- */

const char *snap_dir(const struct snap_set *s)
{
	return s->dir;
}

uint64_t snap_generation(const struct snap_set *s)
{
	return s->meta.generation;
}

size_t snap_nr_disks(const struct snap_set *s)
{
	return s->meta.nr_disks;
}

const char *snap_disk_name(const struct snap_set *s, size_t disk)
{
	return disk < s->meta.nr_disks ? s->meta.disks[disk] : NULL;
}

size_t snap_nr_checkpoints(const struct snap_set *s)
{
	return s->meta.nr;
}

uint64_t snap_checkpoint_id(const struct snap_set *s, size_t i)
{
	return i < s->meta.nr ? s->meta.nodes[i].id : 0;
}

int snap_node_get(const struct snap_set *s, uint64_t id, struct snap_node *out)
{
	const struct node *n = snap_meta_cnode(&s->meta, id);

	memset(out, 0, sizeof(*out));
	if (!n)
		return -ENOENT;
	out->id = n->id;
	out->parent = n->parent;
	snprintf(out->name, sizeof(out->name), "%s", n->name);
	out->hidden = n->hidden;
	out->created = n->created;
	snprintf(out->attachment, sizeof(out->attachment), "%s", n->attachment);
	out->dependents = id ? snap_meta_dependents(&s->meta, id) : 0;
	for (size_t k = 0; k < s->meta.nr_disks; k++) {
		char path[PATH_MAX];
		struct stat st;

		snap_path(s, n->files[k], path, sizeof(path));
		if (stat(path, &st) == 0)
			out->bytes += (uint64_t)st.st_size;
	}
	return 0;
}

int snap_node_file(const struct snap_set *s, uint64_t id, size_t disk, char *buf, size_t len)
{
	const struct node *n = snap_meta_cnode(&s->meta, id);

	if (!n || disk >= s->meta.nr_disks)
		return -ENOENT;
	snap_path(s, n->files[disk], buf, len);
	return 0;
}

int snap_resolve(const struct snap_set *s, const char *spec, bool allow_now, uint64_t *id,
		 struct vhd_err *err)
{
	const struct meta *m = &s->meta;
	const struct node *n = NULL;
	size_t matches = 0;
	char *end;

	if (!strcasecmp(spec, "now")) {
		if (!allow_now) {
			snap_err_set(err, "%s: \"%s\" is the current state, not a checkpoint", s->dir, spec);
			return -EINVAL;
		}
		*id = SNAP_NOW;
		return 0;
	}
	if (spec[0] >= '0' && spec[0] <= '9') {
		unsigned long long v = strtoull(spec, &end, 10);

		if (!*end) {
			n = v ? snap_meta_cnode(m, v) : NULL;
			if (!n) {
				snap_err_set(err, "%s: there is no checkpoint %s", s->dir, spec);
				return -ENOENT;
			}
		}
	}
	if (!n)
		for (size_t i = 0; i < m->nr; i++)
			if (!m->nodes[i].hidden && !strcmp(m->nodes[i].name, spec)) {
				if (matches++ == 0)
					n = &m->nodes[i];
			}
	if (matches > 1) {
		snap_err_set(err, "%s: %zu checkpoints are named \"%s\"; give the id instead", s->dir,
			     matches, spec);
		return -EINVAL;
	}
	if (!n) {
		snap_err_set(err, "%s: no checkpoint is named or numbered \"%s\"", s->dir, spec);
		return -ENOENT;
	}
	if (n->hidden) {
		snap_err_set(err, "%s: checkpoint %" PRIu64 " was deleted; it stays only as the shared "
				  "parent of %u others", s->dir, n->id, snap_meta_dependents(m, n->id));
		return -ENOENT;
	}
	*id = n->id;
	return 0;
}
