/* internal.h - private to snapshot/: the in-memory metadata, the journal's
 * plan, and the helpers the source files share. */
#ifndef SNAP_INTERNAL_H
#define SNAP_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "snap.h"

#define SNAP_META_FILE "set.json"
#define SNAP_JOURNAL_FILE "journal.json"
#define SNAP_LOCK_FILE "lock"
#define SNAP_META_FORMAT "vhdstack-checkpoint-set"
#define SNAP_JOURNAL_FORMAT "vhdstack-checkpoint-journal"
#define SNAP_VERSION 1
/* set.json larger than this is refused before parsing (4096 nodes * 64
 * disks of file names fit easily). */
#define SNAP_META_MAX_BYTES (64u << 20)

typedef char snap_file_t[SNAP_FILE_MAX];

/* A checkpoint, or Now (id 0, no name). */
struct node {
	uint64_t id, parent;          /* parent 0 = none */
	char name[SNAP_NAME_MAX];
	bool hidden;
	int64_t created;
	char attachment[SNAP_FILE_MAX];
	snap_file_t *files;           /* one per disk, names inside the set */
};

struct meta {
	uint64_t generation, next_id, next_file;
	size_t nr_disks;
	char disks[SNAP_MAX_DISKS][SNAP_DISK_NAME_MAX + 1];
	size_t nr;                    /* checkpoints, kept in id order */
	struct node *nodes;
	struct node now;
};

/* ---- meta.c ---------------------------------------------------------- */
void snap_meta_free(struct meta *m);
int snap_meta_copy(struct meta *dst, const struct meta *src);
/* New node appended (id order is kept by the callers: ids only grow). */
struct node *snap_meta_add(struct meta *m);
void snap_meta_remove(struct meta *m, uint64_t id);
/* NULL when unknown; id 0 = Now. */
struct node *snap_meta_node(struct meta *m, uint64_t id);
const struct node *snap_meta_cnode(const struct meta *m, uint64_t id);
unsigned snap_meta_dependents(const struct meta *m, uint64_t id);
/* Children of id (checkpoints and Now) into out (size nr + 1). */
size_t snap_meta_children(const struct meta *m, uint64_t id, uint64_t *out);
/* Number of checkpoints from the root down to (and including) id. */
unsigned snap_meta_depth(const struct meta *m, uint64_t id);
/* "<disk>_<n>.avhd" with n = next_file++. */
void snap_meta_new_file(struct meta *m, size_t disk, char *out);

struct json_object;
struct json_object *snap_meta_to_json(const struct meta *m);
/* Parses and checks the document on its own (types, names, uniqueness,
 * references, loops); what names the problem is where (a path). */
int snap_meta_from_json(struct json_object *j, const char *where, struct meta *m,
		   struct vhd_err *err);
bool snap_valid_file_name(const char *s);
bool snap_valid_disk_name(const char *s);
bool snap_valid_checkpoint_name(const char *s);

/* ---- util.c ---------------------------------------------------------- */
void snap_err_set(struct vhd_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int snap_fsync_dir(const char *dir);
/* temp file, fsync, rename, fsync dir. */
int snap_write_atomic(const char *dir, const char *name, const char *data, size_t len);
/* Reads a whole small file (NUL-terminated); -EFBIG beyond max. */
int snap_read_file(const char *path, size_t max, char **out, size_t *len);
int snap_unlink(const char *dir, const char *name);
void snap_path(const struct snap_set *s, const char *name, char *out, size_t len);
void snap_note(const struct snap_set *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Test-only crash point: SIGKILL after the Nth step when
 * VHDSTACK_SNAP_CRASH_AFTER=N (see docs/snapshot.md). */
void snap_step(struct snap_set *s);
/* Adds (writable) or removes (!writable) the write bits, when needed. */
int snap_set_writable(struct snap_set *s, const char *name, bool writable,
		      struct vhd_err *err);

/* ---- journal.c ---------------------------------------------------------- */
enum plan_op {
	PLAN_INIT,      /* moves/copies the disks in; rolls back */
	PLAN_CREATE,    /* creates children; rolls back */
	PLAN_APPLY,     /* creates children, removes the old Now; rolls back */
	PLAN_DROP,      /* removes files of nodes nobody needs; rolls back */
	PLAN_COLLAPSE,  /* merges into a node's single dependent; rolls forward */
};

struct plan_new {               /* a differencing file to create */
	char file[SNAP_FILE_MAX], parent[SNAP_FILE_MAX];
};

struct plan_move {              /* init: a disk brought into the set */
	char source[PATH_MAX];
	char file[SNAP_FILE_MAX];
	bool copy;
};

struct plan_merge {             /* collapse, per disk */
	char child[SNAP_FILE_MAX];  /* the dependent's file, merged and removed */
	char into[SNAP_FILE_MAX];   /* the deleted node's file, which survives */
	size_t nr_repoint;
	snap_file_t *repoint;       /* the child's children, re-pointed at into */
};

struct plan {
	enum plan_op op;
	struct meta target;         /* the metadata after the operation */
	size_t nr_new, nr_remove, nr_moves, nr_merges;
	struct plan_new *news;
	snap_file_t *removes;
	struct plan_move *moves;
	struct plan_merge *merges;
};

void snap_plan_free(struct plan *p);
int snap_plan_add_new(struct plan *p, const char *file, const char *parent);
int snap_plan_add_remove(struct plan *p, const char *file);
/* Runs a plan: journal, steps, commit of p->target, clean-up. */
int snap_plan_run(struct snap_set *s, struct plan *p, struct vhd_err *err);
/* Looks for journal.json and finishes or undoes what it describes. */
int snap_journal_recover(struct snap_set *s, struct vhd_err *err);
/* Writes m as set.json (generation must be the current one + 1) and makes it
 * the set's metadata. */
int snap_meta_commit(struct snap_set *s, struct meta *m, struct vhd_err *err);

/* ---- set.c --------------------------------------------------------------- */
struct snap_set {
	char dir[PATH_MAX];
	int lock_fd;
	bool have_meta;
	struct meta meta;
	struct snap_opts opts;
	unsigned long crash_after, steps;   /* test-only crash points */
};

int snap_lock_dir(const char *dir, int *fd, struct vhd_err *err);
/* Files, types and parent links against the metadata. */
int snap_validate_disks(struct snap_set *s, struct vhd_err *err);

/* ---- ops.c -------------------------------------------------------------- */
/* Merges away hidden nodes with at most one dependent. */
int snap_tidy(struct snap_set *s, struct snap_delete_stats *st, struct vhd_err *err);

#endif
