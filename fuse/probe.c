/* probe.c - partitions and filesystems (libblkid), and the info.json text.
 *
 * libblkid reads from a file descriptor, and the bytes it must see are the
 * virtual disk's, which exist only behind our read path.  The probe
 * therefore opens the mount's own `disk` file and hands that descriptor to
 * libblkid: every read goes through the kernel to another FUSE worker of
 * this process and back through vfs_io_read, exactly what a user sees.  The
 * alternatives were worse: copying guessed ranges into a sparse temporary
 * file misses whatever libblkid looks at beyond the guess (EBR chains, GPT
 * entry arrays placed anywhere, superblocks at the end of a partition), and
 * loop or NBD devices need privileges.  The cost is that the mount must be
 * up before the first probe (mount.c starts the session first) and that a
 * probe holds a file of the mount open for a few milliseconds.
 *
 * The probe runs in a separate process, forked before the daemon has any
 * thread.  A thread of the daemon itself must never wait for a request of
 * its own mount: once the kernel has handed such a request to a worker, the
 * wait cannot be interrupted, so a daemon that died (or crashed) at that
 * moment could never finish exiting and close /dev/fuse, and the mount
 * would hang for good.  A separate prober just sees its request fail when
 * the daemon's connection goes away.  It also keeps libblkid's parsing of
 * untrusted tables out of the daemon's address space.
 *
 * Reads made by the probe are recorded (fs.c marks its handle); a later
 * write that overlaps them may have changed the result, and only then does
 * the next lookup probe again (io.c fp_*).  The result of a probe depends on
 * nothing but the bytes it read, so no other write can change it.
 */
#include <blkid/blkid.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

static void copy_str(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src ? src : "");
}

static void probe_fs(int fd, uint64_t off, uint64_t len, struct vfs_fsinfo *fs)
{
	blkid_probe pr = blkid_new_probe();
	const char *v;

	memset(fs, 0, sizeof(*fs));
	if (!pr)
		return;
	if (blkid_probe_set_device(pr, fd, (blkid_loff_t)off, (blkid_loff_t)len) < 0)
		goto out;
	blkid_probe_enable_partitions(pr, 0);
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID |
					      BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
	if (blkid_do_safeprobe(pr) != 0)
		goto out; /* nothing, or two signatures that contradict each other */
	if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0)
		copy_str(fs->type, sizeof(fs->type), v);
	if (blkid_probe_lookup_value(pr, "LABEL", &v, NULL) == 0)
		copy_str(fs->label, sizeof(fs->label), v);
	if (blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0)
		copy_str(fs->uuid, sizeof(fs->uuid), v);
	if (blkid_probe_lookup_value(pr, "USAGE", &v, NULL) == 0)
		copy_str(fs->usage, sizeof(fs->usage), v);
out:
	blkid_free_probe(pr);
}

static int part_cmp(const void *a, const void *b)
{
	const struct vfs_part *x = a, *y = b;

	return x->number < y->number ? -1 : x->number > y->number;
}

void vfs_table_free(struct vfs_table *t)
{
	free(t->parts);
	memset(t, 0, sizeof(*t));
}

int vfs_probe(int fd, uint64_t size, struct vfs_table *out, char *err, size_t errlen)
{
	blkid_probe pr = blkid_new_probe();
	blkid_partlist ls;
	int ret = 0, n;

	memset(out, 0, sizeof(*out));
	if (!pr) {
		snprintf(err, errlen, "libblkid: cannot create a probe");
		return -ENOMEM;
	}
	if (blkid_probe_set_device(pr, fd, 0, (blkid_loff_t)size) < 0) {
		snprintf(err, errlen, "libblkid: cannot use the disk file");
		ret = -EIO;
		goto out;
	}
	blkid_probe_enable_superblocks(pr, 0);
	blkid_probe_enable_partitions(pr, 1);
	blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
	ls = blkid_probe_get_partitions(pr);
	n = ls ? blkid_partlist_numof_partitions(ls) : 0;
	if (ls && blkid_partlist_get_table(ls)) {
		blkid_parttable tab = blkid_partlist_get_table(ls);

		copy_str(out->type, sizeof(out->type), blkid_parttable_get_type(tab));
		copy_str(out->id, sizeof(out->id), blkid_parttable_get_id(tab));
	}
	if (n > 0) {
		out->parts = calloc((size_t)n, sizeof(*out->parts));
		if (!out->parts) {
			snprintf(err, errlen, "out of memory");
			ret = -ENOMEM;
			goto out;
		}
	}
	for (int i = 0; i < n; i++) {
		blkid_partition par = blkid_partlist_get_partition(ls, i);
		struct vfs_part *p = &out->parts[out->n];
		blkid_loff_t start, len;
		const char *ts;

		if (!par)
			continue;
		start = blkid_partition_get_start(par);
		len = blkid_partition_get_size(par);
		/* Hostile tables: negative, overflowing or outside the disk. */
		if (start < 0 || len <= 0 || blkid_partition_get_partno(par) <= 0 ||
		    (uint64_t)start > size / VHD_SECTOR_SIZE)
			continue;
		p->number = (unsigned)blkid_partition_get_partno(par);
		p->start = (uint64_t)start * VHD_SECTOR_SIZE;
		if (p->start >= size)
			continue;
		p->size = (uint64_t)len > (size - p->start) / VHD_SECTOR_SIZE
				  ? size - p->start
				  : (uint64_t)len * VHD_SECTOR_SIZE;
		p->truncated = p->size != (uint64_t)len * VHD_SECTOR_SIZE;
		ts = blkid_partition_get_type_string(par);
		if (ts)
			copy_str(p->type, sizeof(p->type), ts);
		else
			snprintf(p->type, sizeof(p->type), "0x%02x",
				 (unsigned)blkid_partition_get_type(par));
		copy_str(p->uuid, sizeof(p->uuid), blkid_partition_get_uuid(par));
		copy_str(p->name, sizeof(p->name), blkid_partition_get_name(par));
		p->flags = blkid_partition_get_flags(par);
		p->extended = blkid_partition_is_extended(par);
		p->logical = blkid_partition_is_logical(par);
		out->n++;
	}
	if (out->n)
		qsort(out->parts, out->n, sizeof(*out->parts), part_cmp);
	/* Two entries with one number (a hostile table): keep the first. */
	for (size_t i = 1; i < out->n; i++) {
		if (out->parts[i].number == out->parts[i - 1].number) {
			memmove(&out->parts[i], &out->parts[i + 1],
				(out->n - i - 1) * sizeof(*out->parts));
			out->n--;
			i--;
		}
	}
	/* Filesystems: on each partition (an extended partition only holds the
	 * EBR chain), or on the whole disk when it has no table. */
	for (size_t i = 0; i < out->n; i++)
		if (!out->parts[i].extended)
			probe_fs(fd, out->parts[i].start, out->parts[i].size, &out->parts[i].fs);
	if (!out->type[0])
		probe_fs(fd, 0, size, &out->disk_fs);
out:
	blkid_free_probe(pr);
	if (ret < 0)
		vfs_table_free(out);
	return ret;
}

/* ---- the prober process ------------------------------------------------------ */

/* One answer: status, message, the table without its array, then the
 * partitions.  Both ends are the same binary, so raw structs do. */
struct probe_reply {
	int32_t status;
	char err[256];
	struct vfs_table table;
};

static int read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void prober_main(int sock, const char *mountpoint, uint64_t size)
{
	char path[4200], c;

	snprintf(path, sizeof(path), "%s/disk", mountpoint);
	while (read_full(sock, &c, 1) == 0) {
		struct probe_reply r;
		int fd;

		memset(&r, 0, sizeof(r));
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			r.status = -errno;
			snprintf(r.err, sizeof(r.err), "cannot open %s: %s", path, strerror(errno));
		} else {
			r.status = vfs_probe(fd, size, &r.table, r.err, sizeof(r.err));
			close(fd);
		}
		if (write_full(sock, &r, sizeof(r)) < 0 ||
		    (r.table.n && write_full(sock, r.table.parts, r.table.n * sizeof(*r.table.parts)) < 0))
			break;
		vfs_table_free(&r.table);
	}
	_exit(0);
}

int vfs_prober_spawn(const char *mountpoint, uint64_t size, pid_t *pid, int *sock)
{
	int sv[2];
	pid_t p;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	p = fork();
	if (p < 0) {
		int ret = -errno;

		close(sv[0]);
		close(sv[1]);
		return ret;
	}
	if (p == 0) {
		/* Nothing of the daemon's may stay open here: an image
		 * descriptor would keep its lock after unmount, the daemon's
		 * pipe to its parent would keep that parent waiting. */
		if (dup2(sv[1], 3) < 0)
			_exit(1);
		close_range(4, ~0u, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Ctrl-C on a foreground mount is the daemon's to handle; the
		 * prober ends when its socket closes. */
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		prober_main(3, mountpoint, size);
	}
	close(sv[1]);
	*pid = p;
	*sock = sv[0];
	return 0;
}

int vfs_prober_probe(int sock, struct vfs_table *out, char *err, size_t errlen)
{
	struct probe_reply r;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = write_full(sock, "P", 1);
	if (ret == 0)
		ret = read_full(sock, &r, sizeof(r));
	if (ret < 0) {
		snprintf(err, errlen, "the prober process is gone (%s)", strerror(-ret));
		return ret;
	}
	r.err[sizeof(r.err) - 1] = 0;
	if (r.status < 0) {
		snprintf(err, errlen, "%s", r.err);
		return r.status;
	}
	if (r.table.n > 100000) { /* our own child: cannot happen, but bound it */
		snprintf(err, errlen, "the prober answered %zu partitions", r.table.n);
		return -EPROTO;
	}
	*out = r.table;
	out->parts = NULL;
	if (out->n) {
		out->parts = calloc(out->n, sizeof(*out->parts));
		if (!out->parts)
			return -ENOMEM; /* the stream is out of step now: the caller stops */
		ret = read_full(sock, out->parts, out->n * sizeof(*out->parts));
		if (ret < 0) {
			vfs_table_free(out);
			snprintf(err, errlen, "the prober process is gone (%s)", strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/* ---- info.json ------------------------------------------------------------ */

static struct json_object *fs_json(const struct vfs_fsinfo *fs)
{
	struct json_object *o;

	if (!fs->type[0])
		return NULL;
	o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string(fs->type));
	json_object_object_add(o, "label", json_object_new_string(fs->label));
	json_object_object_add(o, "uuid", json_object_new_string(fs->uuid));
	json_object_object_add(o, "usage", json_object_new_string(fs->usage));
	return o;
}

static struct json_object *image_json(struct vhd_image *img, unsigned depth)
{
	struct json_object *o = json_object_new_object();
	struct vhd_info info;
	char uuid[40];

	vhd_get_info(img, &info);
	vhd_uuid_format(info.uuid, uuid);
	json_object_object_add(o, "file", json_object_new_string(vhd_path(img)));
	json_object_object_add(o, "depth", json_object_new_int((int)depth));
	json_object_object_add(o, "type", json_object_new_string(vhd_type_name(info.type)));
	json_object_object_add(o, "virtual-size", json_object_new_uint64(info.virtual_size));
	json_object_object_add(o, "uuid", json_object_new_string(uuid));
	json_object_object_add(o, "writable", json_object_new_boolean(vhd_is_writable(img)));
	if (info.type != VHD_TYPE_FIXED) {
		json_object_object_add(o, "block-size", json_object_new_uint64(info.block_size));
		json_object_object_add(o, "allocated-blocks",
				       json_object_new_uint64(info.allocated_blocks));
	}
	if (info.type == VHD_TYPE_DIFF) {
		vhd_uuid_format(info.parent_uuid, uuid);
		json_object_object_add(o, "parent-uuid", json_object_new_string(uuid));
	}
	return o;
}

char *vfs_info_json(struct vfs_fs *fs, size_t *len)
{
	struct json_object *root = json_object_new_object(), *chain, *mnt, *pt, *parts;
	const char *text;
	char *out = NULL;
	unsigned depth = 0;

	if (!root)
		return NULL;
	json_object_object_add(root, "image", json_object_new_string(fs->image));
	json_object_object_add(root, "format", json_object_new_string("vhd"));
	json_object_object_add(root, "virtual-size", json_object_new_uint64(fs->io.size));
	json_object_object_add(root, "mode", json_object_new_string(fs->mode));
	if (fs->ro_reason[0])
		json_object_object_add(root, "read-only-reason",
				       json_object_new_string(fs->ro_reason));

	/* The chain: leaf first.  The meta lock keeps the counters still. */
	chain = json_object_new_array();
	pthread_mutex_lock(&fs->io.meta);
	for (struct vhd_image *i = fs->io.img; i; i = vhd_parent(i)) {
		struct json_object *j = image_json(i, depth);

		if (depth == 0 && fs->snapshot_child[0])
			json_object_object_add(j, "temporary", json_object_new_boolean(true));
		json_object_array_add(chain, j);
		depth++;
	}
	pthread_mutex_unlock(&fs->io.meta);
	json_object_object_add(root, "chain", chain);

	mnt = json_object_new_object();
	json_object_object_add(mnt, "mountpoint", json_object_new_string(fs->mountpoint));
	json_object_object_add(mnt, "pid", json_object_new_int((int)fs->pid));
	json_object_object_add(mnt, "allow-other",
			       json_object_new_boolean(fs->opts->allow_other));
	if (fs->snapshot_child[0])
		json_object_object_add(mnt, "snapshot-child",
				       json_object_new_string(fs->snapshot_child));
	pthread_mutex_lock(&fs->io.sync_lock);
	json_object_object_add(mnt, "syncs", json_object_new_uint64(fs->io.nr_syncs));
	pthread_mutex_unlock(&fs->io.sync_lock);
	json_object_object_add(root, "mount", mnt);

	pthread_mutex_lock(&fs->tbl_lock);
	if (fs->table.type[0]) {
		pt = json_object_new_object();
		json_object_object_add(pt, "type", json_object_new_string(fs->table.type));
		json_object_object_add(pt, "id", json_object_new_string(fs->table.id));
		parts = json_object_new_array();
		for (size_t i = 0; i < fs->table.n; i++) {
			const struct vfs_part *p = &fs->table.parts[i];
			struct json_object *j = json_object_new_object(), *f;
			char name[24];

			snprintf(name, sizeof(name), "p%u", p->number);
			json_object_object_add(j, "number", json_object_new_int((int)p->number));
			json_object_object_add(j, "file", json_object_new_string(name));
			json_object_object_add(j, "start", json_object_new_uint64(p->start));
			json_object_object_add(j, "size", json_object_new_uint64(p->size));
			json_object_object_add(j, "type", json_object_new_string(p->type));
			if (p->uuid[0])
				json_object_object_add(j, "uuid", json_object_new_string(p->uuid));
			if (p->name[0])
				json_object_object_add(j, "name", json_object_new_string(p->name));
			json_object_object_add(j, "flags", json_object_new_uint64(p->flags));
			json_object_object_add(j, "extended", json_object_new_boolean(p->extended));
			json_object_object_add(j, "logical", json_object_new_boolean(p->logical));
			if (p->truncated)
				json_object_object_add(j, "truncated", json_object_new_boolean(true));
			f = fs_json(&p->fs);
			json_object_object_add(j, "filesystem", f ? f : NULL);
			json_object_array_add(parts, j);
		}
		json_object_object_add(pt, "partitions", parts);
		json_object_object_add(root, "partition-table", pt);
	} else {
		json_object_object_add(root, "partition-table", NULL);
	}
	json_object_object_add(root, "filesystem", fs_json(&fs->table.disk_fs));
	pthread_mutex_unlock(&fs->tbl_lock);

	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
							  JSON_C_TO_STRING_NOSLASHESCAPE);
	if (text) {
		size_t n = strlen(text);

		out = malloc(n + 2);
		if (out) {
			memcpy(out, text, n);
			out[n] = '\n';
			out[n + 1] = 0;
			*len = n + 1;
		}
	}
	json_object_put(root);
	return out;
}
