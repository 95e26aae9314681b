/* fs.c - the libfuse low-level operations and the node table.
 *
 * One flat directory: disk (inode 2), info.json (inode 3) and one inode per
 * partition extent.  When the partition table changes, a partition whose
 * extent changed gets a new inode and its name (p<N>) points there; an open
 * file of the old extent keeps working on the old extent, as a partition
 * device the kernel cannot re-read while it is in use.  Nodes are never
 * freed while mounted (FORGET is ignored): there are few of them.
 *
 * On a writable mount every data file is opened with direct I/O: disk and
 * p<N> alias the same bytes, so a page cache per file would serve stale data
 * after a write through the other name, and a filesystem on a loop device
 * over p<N> has its own cache already.  The open reply also allows parallel
 * direct writes, which libfuse 3.14 has no field for (see reply_open_direct).
 * A read-only mount lets the kernel cache: nothing can change the bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Names that never change meaning are cached by the kernel for a day;
 * partition names are looked up every time (entry timeout 0), since a write
 * to the partition table may move them. */
#define STABLE_TIMEOUT 86400.0
/* How long a lookup waits for a re-probe before answering from the last
 * table (a probe whose own path lookups block behind a directory lock held
 * by the caller would otherwise wait for ever). */
#define LOOKUP_PROBE_WAIT_MS 5000

/* From the kernel's FUSE ABI (linux/fuse.h, protocol 7.36 and later). */
#define VFS_FOPEN_DIRECT_IO (1u << 0)
#define VFS_FOPEN_KEEP_CACHE (1u << 1)
#define VFS_FOPEN_PARALLEL_DIRECT_WRITES (1u << 6)
struct vfs_open_out {
	uint64_t fh;
	uint32_t open_flags;
	uint32_t padding;
};

struct vfs_handle {
	enum vfs_kind kind;
	uint64_t start, size;   /* disk and partitions */
	bool probe;             /* opened by the prober: record what it reads */
	atomic_bool wrote;      /* written since the last flush */
	char *text;             /* info.json content, or the directory listing */
	size_t text_len;
};

static struct vfs_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ---- node table ------------------------------------------------------------- */

static struct vfs_node *node_add_locked(struct vfs_fs *fs, enum vfs_kind kind, unsigned number,
					uint64_t start, uint64_t size)
{
	struct vfs_node *n;

	if (fs->nr_nodes == fs->cap_nodes) {
		size_t cap = fs->cap_nodes ? fs->cap_nodes * 2 : 16;
		struct vfs_node **nn = realloc(fs->nodes, cap * sizeof(*nn));

		if (!nn)
			return NULL;
		fs->nodes = nn;
		fs->cap_nodes = cap;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->ino = fs->nr_nodes + 1;
	n->kind = kind;
	n->number = number;
	n->start = start;
	n->size = size;
	fs->nodes[fs->nr_nodes++] = n;
	return n;
}

/* Copy of the node for ino, or false when there is none. */
static bool node_get(struct vfs_fs *fs, fuse_ino_t ino, struct vfs_node *out)
{
	bool found = false;

	pthread_mutex_lock(&fs->tbl_lock);
	if (ino >= 1 && ino <= fs->nr_nodes) {
		*out = *fs->nodes[ino - 1];
		found = true;
	}
	pthread_mutex_unlock(&fs->tbl_lock);
	return found;
}

/* The node of partition p<number> in the current table (created when its
 * extent is new). */
static bool part_node(struct vfs_fs *fs, unsigned number, struct vfs_node *out)
{
	const struct vfs_part *p = NULL;
	struct vfs_node *n = NULL;

	pthread_mutex_lock(&fs->tbl_lock);
	for (size_t i = 0; i < fs->table.n && !p; i++)
		if (fs->table.parts[i].number == number)
			p = &fs->table.parts[i];
	if (!p)
		goto out;
	for (size_t i = 0; i < fs->nr_nodes && !n; i++) {
		struct vfs_node *c = fs->nodes[i];

		if (c->kind == VFS_PART && c->number == number && c->start == p->start &&
		    c->size == p->size)
			n = c;
	}
	if (!n)
		n = node_add_locked(fs, VFS_PART, number, p->start, p->size);
	if (n)
		*out = *n;
out:
	pthread_mutex_unlock(&fs->tbl_lock);
	return n != NULL;
}

int vfs_fs_init(struct vfs_fs *fs)
{
	pthread_condattr_t ca;
	int ret = 0;

	if (pthread_mutex_init(&fs->tbl_lock, NULL))
		return -ENOMEM;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_cond_init(&fs->probe_cond, &ca))
		ret = -ENOMEM;
	pthread_condattr_destroy(&ca);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&fs->tbl_lock);
	if (!node_add_locked(fs, VFS_ROOT, 0, 0, 0) ||
	    !node_add_locked(fs, VFS_DISK, 0, 0, fs->io.size) ||
	    !node_add_locked(fs, VFS_INFO, 0, 0, 0))
		ret = -ENOMEM;
	pthread_mutex_unlock(&fs->tbl_lock);
	return ret;
}

void vfs_fs_destroy(struct vfs_fs *fs)
{
	for (size_t i = 0; i < fs->nr_nodes; i++)
		free(fs->nodes[i]);
	free(fs->nodes);
	fs->nodes = NULL;
	fs->nr_nodes = fs->cap_nodes = 0;
	vfs_table_free(&fs->table);
	pthread_cond_destroy(&fs->probe_cond);
	pthread_mutex_destroy(&fs->tbl_lock);
}

/* ---- the prober ------------------------------------------------------------------ */

static int run_probe(struct vfs_fs *fs)
{
	struct vfs_table t;
	char err[300] = "";
	int ret;

	vfs_fp_begin(&fs->io);
	if (fs->probe_broken) {
		ret = -EPIPE;
		goto fail;
	}
	ret = vfs_prober_probe(fs->probe_sock, &t, err, sizeof(err));
	if (ret < 0) {
		vfs_log(&fs->io, VFS_LOG_WARN, "partition probe of %s failed: %s", fs->image, err);
		if (ret == -EPIPE || ret == -ECONNRESET || ret == -ENOMEM || ret == -EPROTO)
			fs->probe_broken = true; /* out of step or dead: stop asking */
		goto fail;
	}
	pthread_mutex_lock(&fs->tbl_lock);
	vfs_table_free(&fs->table);
	fs->table = t;
	pthread_mutex_unlock(&fs->tbl_lock);
	vfs_log(&fs->io, VFS_LOG_DEBUG, "partition probe: table \"%s\", %zu partitions", t.type, t.n);
	return 0;
fail:
	vfs_fp_set_dirty(&fs->io); /* try again on the next lookup */
	return ret;
}

static void *probe_thread(void *arg)
{
	struct vfs_fs *fs = arg;

	pthread_mutex_lock(&fs->tbl_lock);
	while (!fs->probe_stop) {
		uint64_t end;
		int ret;

		if (fs->probe_done >= fs->probe_req) {
			pthread_cond_wait(&fs->probe_cond, &fs->tbl_lock);
			continue;
		}
		end = fs->probe_req;
		pthread_mutex_unlock(&fs->tbl_lock);
		ret = run_probe(fs);
		pthread_mutex_lock(&fs->tbl_lock);
		fs->probe_err = ret;
		fs->probe_done = end;
		pthread_cond_broadcast(&fs->probe_cond);
	}
	pthread_mutex_unlock(&fs->tbl_lock);
	return NULL;
}

int vfs_start_prober(struct vfs_fs *fs)
{
	int ret = vfs_thread_start(&fs->prober, probe_thread, fs);

	if (ret < 0)
		return ret;
	fs->prober_started = true;
	return 0;
}

void vfs_stop_prober(struct vfs_fs *fs)
{
	if (!fs->prober_started)
		return;
	pthread_mutex_lock(&fs->tbl_lock);
	fs->probe_stop = true;
	pthread_cond_broadcast(&fs->probe_cond);
	pthread_mutex_unlock(&fs->tbl_lock);
	pthread_join(fs->prober, NULL);
	fs->prober_started = false;
}

int vfs_reprobe(struct vfs_fs *fs, unsigned timeout_ms)
{
	struct timespec dl;
	uint64_t ticket;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&fs->tbl_lock);
	ticket = ++fs->probe_req;
	pthread_cond_broadcast(&fs->probe_cond);
	while (fs->probe_done < ticket && !fs->probe_stop) {
		if (pthread_cond_timedwait(&fs->probe_cond, &fs->tbl_lock, &dl) == ETIMEDOUT) {
			ret = -ETIMEDOUT;
			break;
		}
	}
	if (ret == 0)
		ret = fs->probe_stop ? -ESHUTDOWN : fs->probe_err;
	pthread_mutex_unlock(&fs->tbl_lock);
	return ret;
}

/* Before answering from the partition table: probe again if a write
 * touched what the last probe read. */
static void refresh_table(struct vfs_fs *fs, const char *why)
{
	int ret;

	if (!vfs_fp_dirty(&fs->io))
		return;
	vfs_log(&fs->io, VFS_LOG_DEBUG, "probing the partitions again (%s after a write to "
					"what the last probe read)", why);
	ret = vfs_reprobe(fs, LOOKUP_PROBE_WAIT_MS);
	if (ret == -ETIMEDOUT)
		vfs_log(&fs->io, VFS_LOG_WARN, "partition probe did not finish in %u ms; answering from the "
				  "previous table", LOOKUP_PROBE_WAIT_MS);
}

/* ---- attributes ---------------------------------------------------------------- */

static void fill_attr(struct vfs_fs *fs, const struct vfs_node *n, struct stat *st)
{
	bool ro = !fs->io.writable;

	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mount_time;
	st->st_blksize = 4096;
	switch (n->kind) {
	case VFS_ROOT:
		st->st_mode = S_IFDIR | (ro ? 0555 : 0755);
		st->st_nlink = 2;
		break;
	case VFS_DISK:
	case VFS_PART:
		st->st_mode = S_IFREG | (ro ? 0444 : 0644);
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		st->st_blocks = (blkcnt_t)(n->size / 512);
		break;
	case VFS_INFO: {
		size_t len = 0;
		char *text = vfs_info_json(fs, &len);

		free(text);
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)len;
		st->st_blocks = (blkcnt_t)((len + 511) / 512);
		break;
	}
	}
}

static void reply_entry(fuse_req_t req, struct vfs_fs *fs, const struct vfs_node *n)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = n->ino;
	e.generation = 1;
	fill_attr(fs, n, &e.attr);
	e.entry_timeout = n->kind == VFS_PART ? 0.0 : STABLE_TIMEOUT;
	e.attr_timeout = n->kind == VFS_INFO ? 0.0 : STABLE_TIMEOUT;
	fuse_reply_entry(req, &e);
}

/* "p12" -> 12; 0 for anything else. */
static unsigned part_number(const char *name)
{
	unsigned long v;
	char *end;

	if (name[0] != 'p' || name[1] < '1' || name[1] > '9')
		return 0;
	v = strtoul(name + 1, &end, 10);
	return *end || v > 1000000 ? 0 : (unsigned)v;
}

/* ---- operations ------------------------------------------------------------------ */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* O_TRUNC arrives as an open flag and is ignored, as a block device
	 * does: `dd of=disk` without conv=notrunc must not try to shrink it. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_node n;
	unsigned num;

	if (parent != VFS_INO_ROOT) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (!strcmp(name, "disk") && node_get(fs, VFS_INO_DISK, &n)) {
		reply_entry(req, fs, &n);
		return;
	}
	if (!strcmp(name, "info.json") && node_get(fs, VFS_INO_INFO, &n)) {
		refresh_table(fs, "lookup info.json");
		reply_entry(req, fs, &n);
		return;
	}
	num = part_number(name);
	if (num) {
		refresh_table(fs, "lookup p<N>");
		if (part_node(fs, num, &n)) {
			reply_entry(req, fs, &n);
			return;
		}
	}
	fuse_reply_err(req, ENOENT);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_node n;
	struct stat st;

	(void)fi;
	if (!node_get(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(fs, &n, &st);
	fuse_reply_attr(req, &st, n.kind == VFS_INFO ? 0.0 : STABLE_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_node n;
	struct stat st;

	(void)fi;
	if (!node_get(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		/* The disk never changes size here (vhdtool resize does that). */
		if ((n.kind != VFS_DISK && n.kind != VFS_PART) || !fs->io.writable) {
			fuse_reply_err(req, n.kind == VFS_INFO ? EACCES : EROFS);
			return;
		}
		if ((uint64_t)attr->st_size != n.size) {
			fuse_reply_err(req, (uint64_t)attr->st_size > n.size ? EFBIG : EPERM);
			return;
		}
	}
	/* Time stamps: accepted and ignored (touch, cp -p). */
	fill_attr(fs, &n, &st);
	fuse_reply_attr(req, &st, n.kind == VFS_INFO ? 0.0 : STABLE_TIMEOUT);
}

static int add_dirent(fuse_req_t req, char **buf, size_t *len, size_t *cap, const char *name,
		      fuse_ino_t ino, mode_t mode)
{
	struct stat st = {.st_ino = ino, .st_mode = mode};
	size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);

	if (*len + need > *cap) {
		size_t ncap = (*cap + need) * 2;
		char *nb = realloc(*buf, ncap);

		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*cap = ncap;
	}
	fuse_add_direntry(req, *buf + *len, need, name, &st, (off_t)(*len + need));
	*len += need;
	return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_handle *h;
	size_t len = 0, cap = 0;
	char *buf = NULL;
	unsigned *nums = NULL;
	size_t nr = 0;
	int ret = 0;

	if (ino != VFS_INO_ROOT) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	refresh_table(fs, "readdir");
	pthread_mutex_lock(&fs->tbl_lock);
	nums = calloc(fs->table.n + 1, sizeof(*nums));
	if (nums)
		for (; nr < fs->table.n; nr++)
			nums[nr] = fs->table.parts[nr].number;
	pthread_mutex_unlock(&fs->tbl_lock);
	h = calloc(1, sizeof(*h));
	if (!nums || !h) {
		ret = -ENOMEM;
		goto out;
	}
	/* Partition inode numbers in a listing are only hints; the kernel
	 * looks each name up before using it. */
	ret = add_dirent(req, &buf, &len, &cap, ".", VFS_INO_ROOT, S_IFDIR);
	if (!ret)
		ret = add_dirent(req, &buf, &len, &cap, "..", VFS_INO_ROOT, S_IFDIR);
	if (!ret)
		ret = add_dirent(req, &buf, &len, &cap, "disk", VFS_INO_DISK, S_IFREG);
	if (!ret)
		ret = add_dirent(req, &buf, &len, &cap, "info.json", VFS_INO_INFO, S_IFREG);
	for (size_t i = 0; i < nr && !ret; i++) {
		char name[24];

		snprintf(name, sizeof(name), "p%u", nums[i]);
		ret = add_dirent(req, &buf, &len, &cap, name, 0xffffffff, S_IFREG);
	}
	if (ret < 0)
		goto out;
	h->kind = VFS_ROOT;
	h->text = buf;
	h->text_len = len;
	buf = NULL;
	fi->fh = (uintptr_t)h;
	h = NULL;
	fuse_reply_open(req, fi);
out:
	free(nums);
	free(buf);
	free(h);
	if (ret < 0)
		fuse_reply_err(req, -ret);
}

/* Replies with a slice of h->text from a copy: the kernel may complete the
 * caller's read as soon as the reply is written, and a close, then RELEASE
 * on another worker, may free h while this thread is still returning from
 * writev (harmless for the kernel's copy, but nothing may touch h after the
 * reply is sent, and sanitizers check writev's buffer after the call). */
static void reply_text(fuse_req_t req, const struct vfs_handle *h, off_t off, size_t size)
{
	size_t n;
	char *copy;

	if (off < 0 || (size_t)off >= h->text_len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	n = h->text_len - (size_t)off < size ? h->text_len - (size_t)off : size;
	copy = malloc(n);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, h->text + off, n);
	fuse_reply_buf(req, copy, n);
	free(copy);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;

	(void)ino;
	/* A cut entry at the end is dropped by the kernel and asked again
	 * from its offset. */
	reply_text(req, h, off, size);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;

	(void)ino;
	free(h->text);
	free(h);
	fuse_reply_err(req, 0);
}

/* fuse_reply_open cannot set FOPEN_PARALLEL_DIRECT_WRITES in libfuse 3.14;
 * without it the kernel takes the inode lock exclusively around every
 * direct write, one write per file at a time.  The open reply is a plain
 * struct, so send it whole. */
static void reply_open_direct(fuse_req_t req, struct vfs_handle *h, bool cached)
{
	struct vfs_open_out out = {
		.fh = (uintptr_t)h,
		.open_flags = cached ? VFS_FOPEN_KEEP_CACHE
				     : VFS_FOPEN_DIRECT_IO | VFS_FOPEN_PARALLEL_DIRECT_WRITES,
	};
	struct iovec iov = {.iov_base = &out, .iov_len = sizeof(out)};

	if (fuse_reply_iov(req, &iov, 1) == -ENOENT) {
		/* The open was interrupted: nobody will release this handle. */
		free(h->text);
		free(h);
	}
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	bool wr = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct vfs_handle *h;
	struct vfs_node n;

	if (!node_get(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n.kind == VFS_ROOT) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (wr && (n.kind == VFS_INFO || !fs->io.writable)) {
		fuse_reply_err(req, n.kind == VFS_INFO ? EACCES : EROFS);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->kind = n.kind;
	h->start = n.start;
	h->size = n.size;
	atomic_init(&h->wrote, false);
	if (n.kind == VFS_INFO) {
		refresh_table(fs, "open info.json");
		h->text = vfs_info_json(fs, &h->text_len);
		if (!h->text) {
			free(h);
			fuse_reply_err(req, ENOMEM);
			return;
		}
	} else {
		pthread_mutex_lock(&fs->tbl_lock);
		h->probe = fs->probe_pid > 0 && (pid_t)ctx->pid == fs->probe_pid;
		pthread_mutex_unlock(&fs->tbl_lock);
	}
	/* A read-only mount changes nothing, so the kernel may cache the data
	 * files and keep the cache across opens; the prober must see what is
	 * there, and its reads must reach us to be recorded. */
	reply_open_direct(req, h, fs->cached && n.kind != VFS_INFO && !h->probe);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;
	uint64_t o = (uint64_t)off, len;
	char *buf;
	int ret;

	(void)ino;
	if (h->kind == VFS_INFO) {
		reply_text(req, h, off, size);
		return;
	}
	if (off < 0 || o >= h->size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	len = h->size - o < size ? h->size - o : size;
	buf = malloc(len);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = vfs_io_read(&fs->io, buf, len, h->start + o);
	if (ret < 0) {
		vfs_log(&fs->io, VFS_LOG_ERR, "read of %" PRIu64 " bytes at %" PRIu64 " failed: %s", len,
			h->start + o, strerror(-ret));
		fuse_reply_err(req, -ret);
	} else {
		if (h->probe)
			vfs_fp_add(&fs->io, h->start + o, len);
		fuse_reply_buf(req, buf, len);
	}
	free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;
	uint64_t o = (uint64_t)off, len;
	int ret;

	(void)ino;
	if (h->kind != VFS_DISK && h->kind != VFS_PART) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (!fs->io.writable) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* Like a block device: a write starting at or beyond the end has no
	 * space, one that crosses it is cut short. */
	if (size == 0) {
		fuse_reply_write(req, 0);
		return;
	}
	if (off < 0 || o >= h->size) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	len = h->size - o < size ? h->size - o : size;
	atomic_store(&h->wrote, true);
	ret = vfs_io_write(&fs->io, buf, len, h->start + o);
	if (ret < 0) {
		vfs_log(&fs->io, VFS_LOG_ERR, "write of %" PRIu64 " bytes at %" PRIu64 " failed: %s", len,
			h->start + o, strerror(-ret));
		fuse_reply_err(req, -ret);
		return;
	}
	fuse_reply_write(req, len);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;
	int ret = 0;

	(void)ino;
	/* close() after writing makes the data durable (close-to-open). */
	if (atomic_exchange(&h->wrote, false))
		ret = vfs_io_sync(&fs->io);
	fuse_reply_err(req, -ret);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;
	int ret = 0;

	(void)ino;
	(void)datasync;
	if (h->kind == VFS_DISK || h->kind == VFS_PART) {
		atomic_store(&h->wrote, false);
		ret = vfs_io_sync(&fs->io);
	}
	fuse_reply_err(req, -ret);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;

	(void)ino;
	free(h->text);
	free(h);
	fuse_reply_err(req, 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t length,
			 struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;
	int zeroing = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
	uint64_t o = (uint64_t)off, len = (uint64_t)length;
	int ret;

	(void)ino;
	if (h->kind != VFS_DISK && h->kind != VFS_PART) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (!fs->io.writable) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* Punching a hole (a loop device's discard) and zeroing a range both
	 * mean "reads return zeros from now on".  Plain allocation cannot be
	 * promised by a sparse image, and nothing else fits a fixed-size disk. */
	if (!zeroing || (mode & ~(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE |
				  FALLOC_FL_KEEP_SIZE))) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (off < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (o >= h->size || h->size - o < len) {
		if (!(mode & FALLOC_FL_KEEP_SIZE)) {
			fuse_reply_err(req, EFBIG);
			return;
		}
		if (o >= h->size) {
			fuse_reply_err(req, 0);
			return;
		}
		len = h->size - o;
	}
	ret = vfs_io_zero(&fs->io, h->start + o, len);
	if (ret == 0)
		atomic_store(&h->wrote, true);
	fuse_reply_err(req, -ret);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct vfs_fs *fs = fs_of(req);
	struct vfs_handle *h = (struct vfs_handle *)(uintptr_t)fi->fh;
	uint64_t out;
	int ret;

	(void)ino;
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (h->kind != VFS_DISK && h->kind != VFS_PART) {
		/* info.json: all data */
		if (off < 0 || (uint64_t)off >= h->text_len)
			fuse_reply_err(req, ENXIO);
		else
			fuse_reply_lseek(req, whence == SEEK_DATA ? off : (off_t)h->text_len);
		return;
	}
	if (off < 0 || (uint64_t)off >= h->size) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	ret = vfs_io_seek(&fs->io, h->start + (uint64_t)off, h->start + h->size, whence, &out);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_lseek(req, (off_t)(out - h->start));
}

/* The daemon's pid as an extended attribute of the root: vhdtool unmount
 * reads it to wait for the daemon without opening a file on the mount (which
 * would make it busy, and info.json may trigger a probe). */
#define PID_XATTR "user.vhdmount.pid"

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct vfs_fs *fs = fs_of(req);
	char v[24];
	int n;

	if (ino != VFS_INO_ROOT || strcmp(name, PID_XATTR)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	n = snprintf(v, sizeof(v), "%d", (int)fs->pid);
	if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else if (size < (size_t)n)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, v, (size_t)n);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char names[] = PID_XATTR; /* with its NUL: the list format */

	if (ino != VFS_INO_ROOT)
		fuse_reply_xattr(req, 0);
	else if (size == 0)
		fuse_reply_xattr(req, sizeof(names));
	else if (size < sizeof(names))
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, names, sizeof(names));
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct vfs_fs *fs = fs_of(req);
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = fs->io.size / 4096;
	pthread_mutex_lock(&fs->tbl_lock);
	sv.f_files = fs->table.n + 3;
	pthread_mutex_unlock(&fs->tbl_lock);
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops vfs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.fsync = op_fsync,
	.release = op_release,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
};
