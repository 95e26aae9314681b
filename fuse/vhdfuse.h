/* vhdfuse.h - mount a VHD (and its differencing chain) through FUSE.
 *
 * The mount point holds:
 *   disk       the whole virtual disk, exactly the virtual size;
 *   p1, p2 ... one file per partition libblkid finds (MBR with extended and
 *              logical partitions, GPT, nested BSD labels), exactly its extent;
 *   info.json  the image, its chain, the mount and the partition table with
 *              each partition's filesystem type and label.
 * Read-write for a writable leaf (writes go to the leaf, reads fall through
 * the chain), read-only on request or when the image cannot be written, or
 * a throwaway snapshot (writes go to a temporary differencing child deleted
 * at unmount).  libfuse 3 low-level API, multi-threaded.  See docs/fuse.md.
 */
#ifndef VHDFUSE_VHDFUSE_H
#define VHDFUSE_VHDFUSE_H

#include <stdbool.h>
#include <stddef.h>

#include "vhd.h"

struct vhdfuse_opts {
	const char *image;
	const char *mountpoint;
	bool read_only;
	bool snapshot;             /* writes go to a temporary child */
	const char *snapshot_dir;  /* where the child lives; NULL: $TMPDIR or /tmp */
	bool no_lock;              /* -U: no image lock (forces read_only) */
	const char *parent_dir;    /* look for parents only under this directory */
	bool allow_other;          /* FUSE allow_other: other users may access */
	bool foreground;           /* do not daemonise */
	bool debug;                /* libfuse's request trace on stderr (foreground) */
	int verbose;               /* daemon log detail: 0 warnings, 1 info, 2 debug */
	const char *log_file;      /* the daemon's log; NULL: stderr in the
				    * foreground, nowhere once daemonised */
	unsigned max_threads;      /* FUSE worker threads; 0: 16 */
	bool direct_io;            /* read-only mounts too: no kernel page cache */
};

/* Called once when the mount is up, with the text of info.json at that time
 * (in daemon mode: in the parent, just before vhdfuse_mount returns 0). */
typedef void (*vhdfuse_ready_fn)(void *ctx, const char *info_json);

/* Opens the image, mounts it and serves it.
 *   Daemon mode (default): forks; the daemon detaches once the mount is up
 *   and the parent returns 0 then (after calling ready), or a negative errno
 *   with err set when the daemon could not mount.  The daemon never returns.
 *   Foreground: returns after the file system was unmounted (fusermount3 -u,
 *   vhdtool unmount, SIGTERM/SIGINT/SIGHUP) and the image closed cleanly.
 */
int vhdfuse_mount(const struct vhdfuse_opts *opts, vhdfuse_ready_fn ready, void *ready_ctx,
		  struct vhd_err *err);

/* Unmounts MOUNTPOINT (fusermount3 -u underneath) and waits up to
 * timeout_ms for the daemon to flush and close the image (its lock is
 * released then).  A mount that is busy (open files, loop devices) is
 * retried briefly, then reported as -EBUSY. */
int vhdfuse_unmount(const char *mountpoint, bool lazy, unsigned timeout_ms, struct vhd_err *err);

/* Command-line front ends shared by `vhdtool mount|unmount` and `vhdmount`:
 * parse options, print help, run.  Return the process exit status
 * (0 success, 1 failure, 2 bad usage). */
int vhdfuse_cli_mount(int argc, char **argv, const char *prog);
int vhdfuse_cli_unmount(int argc, char **argv, const char *prog);

#endif
