/* snap.h - checkpoint sets: trees of checkpoints over differencing VHDs.
 *
 * A set is a directory holding the disks of one machine (e.g. "os", "data"),
 * the metadata set.json and, while an operation runs, journal.json.  A
 * checkpoint freezes every disk of the set at one instant: each current leaf
 * becomes a read-only parent and gets a new, empty differencing child, which
 * becomes the current state ("Now").  Checkpoints form a tree: applying an
 * older checkpoint starts a new branch and the others stay.
 *
 * Deleting a checkpoint keeps its content for whoever depends on it:
 *   - no dependent: its files are removed;
 *   - one dependent (a child checkpoint or Now): the dependent's differencing
 *     disk is merged into the checkpoint's disk (vhd_merge), the dependent
 *     takes over that file and the dependent's children are re-pointed at it;
 *   - two or more: the files stay unchanged and the checkpoint stays in the
 *     tree as a hidden node until at most one dependent is left.
 * A disk that a surviving checkpoint reads is never written.
 *
 * Every operation is atomic or resumable: it is written to journal.json
 * first; opening the set after a crash rolls an unfinished create/apply back
 * (nothing happened) and rolls an unfinished delete forward (merges resume).
 * The layout and the journal are described in docs/snapshot.md.
 *
 * Errors: functions return 0 or a negative errno and fill err with a sentence
 * naming the set, the checkpoint, the disk or the file concerned.
 *
 * Concurrency: a set handle holds an exclusive flock on SET/lock for its whole
 * life; a second opener gets -EBUSY with a message.  Handles are not
 * thread-safe.
 */
#ifndef SNAP_SNAP_H
#define SNAP_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhd.h"

/* The id that names the current state in the calls below. */
#define SNAP_NOW 0
#define SNAP_NAME_MAX 256       /* checkpoint names: 1..255 bytes, no control characters */
#define SNAP_FILE_MAX 128       /* file names inside the set */
#define SNAP_DISK_NAME_MAX 64   /* disk names: [A-Za-z0-9_.-], not starting with '.' */
#define SNAP_MAX_DISKS 64
#define SNAP_MAX_NODES 4096     /* checkpoints in one set, hidden ones included */
/* Checkpoints on one path from the root: each adds a link to the chain, and
 * vhd/ opens at most VHD_MAX_CHAIN_DEPTH images. */
#define SNAP_MAX_DEPTH 100

struct snap_set;

struct snap_opts {
	/* What recovery, tidying and repair did, one sentence per call. */
	void (*note)(void *ctx, const char *msg);
	void *note_ctx;
	/* Progress of merges and exports (bytes of one disk). */
	vhd_progress_fn progress;
	void *progress_ctx;
};

/* ---- starting and opening a set ------------------------------------------ */

struct snap_init_opts {
	/* Copy each disk into the set (flattened into a dynamic VHD; the source
	 * stays untouched) instead of moving it there with rename(2).  A
	 * differencing disk can only be copied. */
	bool copy;
};

/* Makes dir (which must not exist, or be empty) a set whose disks are the
 * given standalone VHDs, named after their file names without extension.
 * Now is the disks themselves; there is no checkpoint yet. */
int snap_init(const char *dir, const char *const *disks, size_t nr_disks,
	      const struct snap_init_opts *io, const struct snap_opts *o, struct vhd_err *err);

/* Locks the set, finishes or rolls back an interrupted operation (said
 * through o->note), then checks the metadata against the disks: every file
 * exists and opens, each checkpoint's files are differencing children of its
 * parent checkpoint's files (by unique id), the tree has no loop.  Anything
 * wrong is an error that names it, and nothing is changed. */
int snap_open(const char *dir, const struct snap_opts *o, struct snap_set **out,
	      struct vhd_err *err);
void snap_close(struct snap_set *s);

/* ---- reading the tree ---------------------------------------------------- */

struct snap_node {
	uint64_t id;                 /* SNAP_NOW for the current state */
	uint64_t parent;             /* checkpoint it hangs under; 0 = none */
	char name[SNAP_NAME_MAX];    /* "" for Now */
	bool hidden;                 /* deleted, kept as the shared parent of others */
	int64_t created;             /* unix time; 0 for Now */
	char attachment[SNAP_FILE_MAX]; /* saved VM state file in the set, "" = none */
	uint64_t bytes;              /* size of this node's files (all disks) */
	unsigned dependents;         /* child checkpoints, plus one if Now is directly below */
};

const char *snap_dir(const struct snap_set *s);
uint64_t snap_generation(const struct snap_set *s);
size_t snap_nr_disks(const struct snap_set *s);
const char *snap_disk_name(const struct snap_set *s, size_t disk);
/* Checkpoints (hidden ones included) in id order. */
size_t snap_nr_checkpoints(const struct snap_set *s);
uint64_t snap_checkpoint_id(const struct snap_set *s, size_t i);
/* -ENOENT for an unknown id. */
int snap_node_get(const struct snap_set *s, uint64_t id, struct snap_node *out);
/* Path of the node's file for one disk (the leaf of that disk's chain). */
int snap_node_file(const struct snap_set *s, uint64_t id, size_t disk, char *buf, size_t len);
/* A checkpoint given as its id ("7") or its name, or "now"/"Now" when
 * allow_now.  Hidden checkpoints are refused. */
int snap_resolve(const struct snap_set *s, const char *spec, bool allow_now, uint64_t *id,
		 struct vhd_err *err);

/* ---- operations -------------------------------------------------------- */

/* Checkpoint of every disk; name NULL = "SET - (date time)".  *id gets the
 * new checkpoint's id. */
int snap_create(struct snap_set *s, const char *name, uint64_t *id, struct vhd_err *err);

/* Discards the current state and continues from checkpoint id (new empty
 * children of its files).  With checkpoint_first the current state is saved
 * as a new checkpoint (named name, or "... before applying ...") in the same
 * atomic step; *saved gets its id (0 otherwise). */
int snap_apply(struct snap_set *s, uint64_t id, bool checkpoint_first, const char *name,
	       uint64_t *saved, struct vhd_err *err);

struct snap_delete_stats {
	unsigned removed;    /* checkpoints gone from the tree */
	unsigned merged;     /* merges into a single dependent */
	unsigned hidden;     /* kept as hidden shared nodes */
	uint64_t bytes_freed;
};

/* Deletes checkpoint id (see the top of this file), or with subtree the
 * checkpoint and everything below it; the current state always keeps its
 * content (checkpoints above it are merged into it). */
int snap_delete(struct snap_set *s, uint64_t id, bool subtree, struct snap_delete_stats *st,
		struct vhd_err *err);

int snap_rename(struct snap_set *s, uint64_t id, const char *name, struct vhd_err *err);

struct snap_export_opts {
	enum vhd_type type;  /* VHD_TYPE_DYNAMIC (default when 0) or VHD_TYPE_FIXED */
	bool overwrite;
};

/* Writes DIR/<disk>.vhd for every disk: standalone (flattened) copies of the
 * node's content (id may be SNAP_NOW).  dir is created if missing. */
int snap_export(struct snap_set *s, uint64_t id, const char *dir,
		const struct snap_export_opts *eo, struct vhd_err *err);

struct snap_repair_stats {
	unsigned actions;    /* things fixed (each said through o->note) */
	unsigned unknown;    /* files in the set that are not part of it (left alone) */
};

/* What opening does, plus: hidden nodes left with one dependent are merged,
 * leftover temporary files are removed, and every image gets vhd_repair
 * (footers, checksums, leaked space). */
int snap_repair(struct snap_set *s, struct snap_repair_stats *st, struct vhd_err *err);

#endif
