/* internal.h - private state of the FUSE mount (fuse/).
 *
 * One part per file:
 *   io.c     the data path over the vhd library: reads, writes, zeroing and
 *            durability (group commit), safe for many FUSE threads at once;
 *   probe.c  libblkid: partition table and filesystems, read through the
 *            mount's own `disk` file by a prober process, and info.json;
 *   fs.c     the libfuse low-level operations and the node table;
 *   mount.c  opening the image, the session, daemonising, signals, unmount.
 */
#ifndef VHDFUSE_INTERNAL_H
#define VHDFUSE_INTERNAL_H

#define FUSE_USE_VERSION 35

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vhd.h"
#include "vhdfuse.h"

/* ---- logging ------------------------------------------------------------ */

enum vfs_level { VFS_LOG_ERR, VFS_LOG_WARN, VFS_LOG_INFO, VFS_LOG_DEBUG };

struct vfs_io;
/* Errors and warnings always; info with -v, debug with -vv (io->verbose).
 * To stderr, which the daemon points at its log. */
__attribute__((format(printf, 3, 4)))
void vfs_log(const struct vfs_io *io, enum vfs_level level, const char *fmt, ...);
/* pthread_create with SIGTERM/SIGINT/SIGHUP blocked: libfuse's handler must
 * interrupt the loop's main thread, not a helper. */
int vfs_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* ---- data path (io.c) --------------------------------------------------- */

/* A write in flight holds its sector range so that read-modify-write of
 * partial sectors and overlapping writes never interleave. */
struct vfs_range {
	uint64_t start, end;
	struct vfs_range *next;
};

/* A writer's plans waiting for the group fdatasync and their commit. */
struct vfs_commit {
	struct vhd_write_plan *plans;
	size_t n;
	int status;
	struct vfs_commit *next;
};

/* Disk ranges the partition probe read (sorted, merged). */
struct vfs_span {
	uint64_t start, end;
};

struct vfs_io {
	struct vhd_image *img;     /* the leaf: writes go here */
	uint64_t size;             /* virtual size */
	bool writable;
	bool no_sync;              /* throwaway snapshot child: never fdatasync */
	int verbose;               /* log detail (vfs_log) */

	/* vhd_map / vhd_write_prepare / vhd_write_commit: the handle is not
	 * internally locked (vhd.h); data I/O runs outside this lock. */
	pthread_mutex_t meta;

	/* Where I/O can go without the library (io.c, "direct blocks"): a
	 * fixed leaf maps linearly; a block of a dynamic or differencing leaf
	 * that holds every one of its sectors keeps its file offset for the
	 * rest of the mount (blocks never move and bits are never cleared
	 * while we hold the lock), so it is remembered here and read and
	 * written without the meta lock.  full[b] = data offset + 1, 0 unknown. */
	bool fixed;
	int leaf_fd;
	uint32_t block_size;
	uint64_t nr_blocks;
	_Atomic uint64_t *full;

	pthread_mutex_t range_lock;
	pthread_cond_t range_cond;
	struct vfs_range *busy;

	/* Group commit: every sync request takes a ticket; one thread at a time
	 * runs fdatasync for all tickets taken before it started, then commits
	 * the queued plans.  sync_done counts tickets served. */
	pthread_mutex_t sync_lock;
	pthread_cond_t sync_cond;
	uint64_t sync_req, sync_done;
	bool syncing;
	int failed;                /* sticky: a failed fdatasync poisons the image */
	struct vfs_commit *queue, **queue_tail;
	uint64_t nr_syncs;         /* fdatasyncs issued (info.json, tests) */

	/* What the last partition probe read: a write that overlaps it may have
	 * changed the table or a filesystem label, so the next lookup probes
	 * again (see probe.c). */
	pthread_mutex_t fp_lock;
	struct vfs_span *fp;
	size_t fp_n, fp_cap;
	bool fp_dirty;
};

int vfs_io_init(struct vfs_io *io, struct vhd_image *img, bool no_sync);
void vfs_io_destroy(struct vfs_io *io);
/* Offsets are disk offsets; the range must lie inside the disk. */
int vfs_io_read(struct vfs_io *io, void *buf, uint64_t len, uint64_t off);
int vfs_io_write(struct vfs_io *io, const void *buf, uint64_t len, uint64_t off);
/* Makes [off, off+len) read as zeros, writing only where it does not yet. */
int vfs_io_zero(struct vfs_io *io, uint64_t off, uint64_t len);
/* Every write acknowledged before the call is durable when it returns. */
int vfs_io_sync(struct vfs_io *io);
/* SEEK_DATA / SEEK_HOLE over [off, end): -ENXIO when there is no such
 * offset before end. */
int vfs_io_seek(struct vfs_io *io, uint64_t off, uint64_t end, int whence, uint64_t *out);

void vfs_fp_begin(struct vfs_io *io);
void vfs_fp_add(struct vfs_io *io, uint64_t off, uint64_t len);
/* True when a write overlapped the footprint since vfs_fp_begin. */
bool vfs_fp_dirty(struct vfs_io *io);
void vfs_fp_set_dirty(struct vfs_io *io);

/* ---- partitions (probe.c) ----------------------------------------------- */

struct vfs_fsinfo {
	char type[32];             /* "" when nothing was recognised */
	char label[256];
	char uuid[64];
	char usage[32];            /* "filesystem", "raid", "crypto", "other" */
};

struct vfs_part {
	unsigned number;           /* libblkid's partno: the file is p<number> */
	uint64_t start, size;      /* bytes */
	bool truncated;            /* the table said more than the disk has */
	char type[48];             /* "0x83" (MBR) or the GPT type GUID */
	char uuid[64];
	char name[128];
	unsigned long long flags;
	bool extended, logical;
	struct vfs_fsinfo fs;
};

struct vfs_table {
	char type[16];             /* "dos", "gpt", ... or "" (no table) */
	char id[64];
	struct vfs_part *parts;
	size_t n;
	struct vfs_fsinfo disk_fs; /* a filesystem on the whole disk */
};

/* Probes the disk behind fd (a file of the mount itself, so every byte
 * comes through the same read path as anybody else's).  Fills *out; the
 * caller frees it with vfs_table_free. */
int vfs_probe(int fd, uint64_t size, struct vfs_table *out, char *err, size_t errlen);
void vfs_table_free(struct vfs_table *t);
/* The probe runs in a child process (see probe.c): spawned before the daemon
 * starts any thread; each vfs_prober_probe asks it for one probe. */
int vfs_prober_spawn(const char *mountpoint, uint64_t size, pid_t *pid, int *sock);
int vfs_prober_probe(int sock, struct vfs_table *out, char *err, size_t errlen);

/* ---- the mounted filesystem (fs.c) -------------------------------------- */

enum vfs_kind { VFS_ROOT, VFS_DISK, VFS_INFO, VFS_PART };

#define VFS_INO_ROOT FUSE_ROOT_ID
#define VFS_INO_DISK 2
#define VFS_INO_INFO 3

struct vfs_node {
	fuse_ino_t ino;
	enum vfs_kind kind;
	unsigned number;           /* partitions */
	uint64_t start, size;
};

struct vfs_fs {
	struct vfs_io io;
	struct fuse_session *se;
	const struct vhdfuse_opts *opts;
	char image[4096];          /* absolute */
	char mountpoint[4096];     /* absolute */
	char mode[16];             /* "read-write", "read-only", "snapshot" */
	bool cached;               /* data files use the kernel page cache (fs.c) */
	char ro_reason[512];
	char snapshot_child[4096]; /* deleted at once; named in info.json */
	uid_t uid;
	gid_t gid;
	struct timespec mount_time;
	pid_t pid;

	/* Node table and the partition table it was built from. */
	pthread_mutex_t tbl_lock;
	struct vfs_node **nodes;   /* nodes[ino - 1]; never freed while mounted */
	size_t nr_nodes, cap_nodes;
	struct vfs_table table;

	/* The prober process and the thread that talks to it (fs.c). */
	pid_t probe_pid;
	int probe_sock;
	bool probe_broken;         /* the prober process died: no more probes */
	pthread_t prober;
	bool prober_started;
	pthread_cond_t probe_cond;
	uint64_t probe_req, probe_done;
	bool probe_stop;
	int probe_err;
};

extern const struct fuse_lowlevel_ops vfs_ops;

int vfs_fs_init(struct vfs_fs *fs);
void vfs_fs_destroy(struct vfs_fs *fs);
int vfs_start_prober(struct vfs_fs *fs);
void vfs_stop_prober(struct vfs_fs *fs);
/* Runs a probe now (through the prober thread) and waits up to timeout_ms. */
int vfs_reprobe(struct vfs_fs *fs, unsigned timeout_ms);
/* info.json: the image, its chain, the mount and the partition table. */
char *vfs_info_json(struct vfs_fs *fs, size_t *len);

#endif
