/* vhd.h - the VHD image library: fixed, dynamic and differencing VHDs.
 *
 * vhd/ knows bytes on disk, nothing about I/O scheduling.  It parses and
 * writes footers, headers, BATs, bitmaps and parent locators, resolves
 * differencing chains, and answers two questions for whoever moves data:
 *
 *   vhd_map()            where does virtual range X live (one extent at a time:
 *                        data at (fd, file offset), zeros, or "in the parent");
 *   vhd_write_prepare()  make range X writable: returns where the data goes and
 *                        what metadata must be published after the data is
 *                        durable (vhd_write_commit()).
 *
 * vhd_pread()/vhd_pwrite()/vhd_flush() are the simple synchronous path built on
 * those two, for tools.  The io_uring engine in blockvsp/ uses the same calls.
 *
 * Errors: functions return 0 or a negative errno.  Functions that parse (open,
 * create, check) also fill a caller-supplied struct vhd_err with a sentence that
 * names the file, the field and the value.
 *
 * Threading: an image handle is not internally locked.  Callers serialise
 * vhd_map/vhd_write_prepare/vhd_write_commit on one image (the engine does its
 * metadata work on one thread; data I/O to returned extents may run anywhere).
 */
#ifndef VHD_VHD_H
#define VHD_VHD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHD_SECTOR_SIZE 512u
#define VHD_FOOTER_SIZE 512u
#define VHD_DYNHDR_SIZE 1024u
/* 0xFF000000 sectors: BAT entries are 32-bit sector numbers, so block data
 * cannot live beyond 2 TiB in the file; 2040 GiB leaves room for metadata.
 * Same limit as Hyper-V and qemu. */
#define VHD_MAX_SIZE (2040ull << 30)
#define VHD_DEFAULT_BLOCK_SIZE (2u << 20)
#define VHD_MIN_BLOCK_SIZE (512u)
#define VHD_MAX_BLOCK_SIZE (256u << 20)
/* Deeper chains are refused: Hyper-V itself caps checkpoints at 50. */
#define VHD_MAX_CHAIN_DEPTH 128
#define VHD_ERR_LEN 1024

enum vhd_type {
	VHD_TYPE_NONE = 0,
	VHD_TYPE_FIXED = 2,
	VHD_TYPE_DYNAMIC = 3,
	VHD_TYPE_DIFF = 4,
};

struct vhd_err {
	char msg[VHD_ERR_LEN];
};

struct vhd_image;

/* ---- opening ---------------------------------------------------------- */

enum vhd_open_flags {
	VHD_OPEN_RDWR = 1u << 0,     /* leaf writable; parents are always read-only */
	VHD_OPEN_NO_LOCK = 1u << 1,  /* do not take the flock (like qemu -U)       */
	VHD_OPEN_NO_PARENT = 1u << 2, /* do not resolve the parent of a diff disk:
				       * reads of parent ranges fail with -ENOLINK */
	VHD_OPEN_DIRECT = 1u << 3,   /* O_DIRECT on every file of the chain        */
	VHD_OPEN_NO_SYNC = 1u << 4,  /* no fdatasync between data and metadata,
				      * nor on close (only vhd_flush syncs): for
				      * files nobody can see yet (a convert's
				      * output before its rename) */
};

struct vhd_open_opts {
	unsigned flags;            /* enum vhd_open_flags */
	/* If set, parents are only looked up under this directory (after
	 * realpath); a locator pointing elsewhere is ignored. */
	const char *parent_dir;
	/* Warnings (e.g. "tail footer bad, used the copy at offset 0") go here
	 * when set; otherwise they are dropped. */
	void (*warn)(void *ctx, const char *msg);
	void *warn_ctx;
};

int vhd_open(const char *path, const struct vhd_open_opts *opts,
	     struct vhd_image **out, struct vhd_err *err);
/* Flushes a writable image, releases the lock, frees the chain. */
int vhd_close(struct vhd_image *img);

/* ---- creating --------------------------------------------------------- */

struct vhd_create_opts {
	enum vhd_type type;
	uint64_t size;           /* bytes; ignored for differencing (parent's size) */
	uint32_t block_size;     /* 0 = default (2 MiB, or the parent's) */
	const char *parent;      /* differencing: path of the parent */
	bool overwrite;          /* replace an existing file */
	bool preallocate;        /* fixed: allocate the data blocks (dense file) */
};

/* Rounds size up to a whole sector.  The file appears atomically (written
 * beside it, fsynced, renamed, directory fsynced). */
int vhd_create(const char *path, const struct vhd_create_opts *opts,
	       struct vhd_err *err);

/* ---- describing ------------------------------------------------------- */

struct vhd_geometry {
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors;
};

struct vhd_info {
	enum vhd_type type;
	uint64_t virtual_size;     /* the size we expose (see size_source) */
	uint64_t current_size;     /* footer current size */
	uint64_t original_size;
	struct vhd_geometry geometry;
	uint64_t chs_size;         /* C*H*S*512 */
	const char *size_source;   /* "current-size" or "chs" */
	char creator_app[5];       /* printable, NUL-terminated */
	uint32_t creator_version;
	char creator_os[5];
	uint32_t timestamp;        /* seconds since 2000-01-01 UTC */
	uint8_t uuid[16];
	bool saved_state;
	uint32_t block_size;       /* 0 for fixed */
	uint32_t max_table_entries;
	uint64_t table_offset;
	uint32_t allocated_blocks;
	uint64_t file_size;
	uint8_t parent_uuid[16];   /* differencing */
	char parent_name[1024];    /* differencing: UTF-8 of the unicode name */
	bool footer_checksum_ok;
	bool used_head_footer;     /* the tail footer was bad */
};

void vhd_get_info(const struct vhd_image *img, struct vhd_info *info);
const char *vhd_path(const struct vhd_image *img);
uint64_t vhd_virtual_size(const struct vhd_image *img);
bool vhd_is_writable(const struct vhd_image *img);
/* The descriptor of this image's own file, for engines that submit I/O to
 * extents and fdatasync the leaf themselves.  Owned by img: do not close. */
int vhd_fd(const struct vhd_image *img);
/* The parent image of a differencing disk (NULL for the base or when opened
 * with VHD_OPEN_NO_PARENT); owned by img. */
struct vhd_image *vhd_parent(const struct vhd_image *img);
const char *vhd_type_name(enum vhd_type type);
/* "01234567-89ab-..." into buf (>= 37 bytes). */
void vhd_uuid_format(const uint8_t uuid[16], char *buf);

/* ---- mapping ------------------------------------------------------------ */

enum vhd_extent_kind {
	VHD_EXT_DATA,    /* bytes at (fd, file_offset) */
	VHD_EXT_ZERO,    /* reads as zeros */
	VHD_EXT_PARENT,  /* not in this image: ask the parent (only without
			  * VHD_MAP_RESOLVE, or when the parent is missing) */
};

struct vhd_extent {
	uint64_t offset;   /* virtual */
	uint64_t length;
	enum vhd_extent_kind kind;
	int fd;            /* DATA: file holding the bytes */
	uint64_t file_offset;
	unsigned depth;    /* 0 = the image asked, 1 = its parent, ... */
	const struct vhd_image *owner; /* the chain member that answered */
};

enum vhd_map_flags {
	VHD_MAP_RESOLVE = 1u << 0, /* follow parents: never return VHD_EXT_PARENT
				    * unless the parent was not opened */
};

/* Describes the longest run starting at offset (at most length bytes) that
 * has one kind and, for data, contiguous file offsets.  Call again from
 * offset + ext->length for the rest.  Range must lie inside the disk. */
int vhd_map(struct vhd_image *img, uint64_t offset, uint64_t length,
	    unsigned flags, struct vhd_extent *ext);

/* ---- writing -------------------------------------------------------------
 *
 * Offsets and lengths are whole sectors here (vhd_pwrite handles the rest by
 * read-modify-write).  Protocol for one piece (never crosses a block boundary):
 *   1. vhd_write_prepare(img, off, len, &plan): the library allocates the block
 *      if needed (new footer at the new end of file, bitmap written; no BAT
 *      entry yet), and says where the data goes: (plan.fd, plan.file_offset).
 *   2. The caller writes len bytes there.
 *   3. If plan.needs_commit: the caller makes the data durable (fdatasync on
 *      plan.fd; one sync may cover many plans) and calls vhd_write_commit(),
 *      which publishes the metadata (the BAT entry of a new block, bitmap
 *      bits of a differencing disk).  Until then readers of the image still
 *      see the old content.
 * Several plans may be in flight on one block, also a new one: a prepare
 * joins a pending allocation, and every plan's commit publishes what it
 * needs.  A plan whose data write failed is simply never committed.
 * A crash anywhere leaves an openable, check-clean image (leaked space only).
 */
struct vhd_write_plan {
	uint64_t offset;        /* virtual start of this piece */
	uint64_t length;        /* may be shorter than asked: stops at a block end */
	int fd;
	uint64_t file_offset;
	bool needs_commit;      /* metadata to publish after the data is durable */
	/* private to the library */
	uint32_t block;
	bool new_block;
	uint64_t bitmap_offset;
	uint32_t first_sector;  /* sectors within the block that this piece covers */
	uint32_t nr_sectors;
};

int vhd_write_prepare(struct vhd_image *img, uint64_t offset, uint64_t length,
		      struct vhd_write_plan *plan);
int vhd_write_commit(struct vhd_image *img, const struct vhd_write_plan *plan);

/* ---- synchronous I/O -------------------------------------------------- */

int vhd_pread(struct vhd_image *img, void *buf, uint64_t length, uint64_t offset);
/* Byte granularity.  When it returns the data is readable and the metadata
 * that describes it published; it survives a crash only after vhd_flush(). */
int vhd_pwrite(struct vhd_image *img, const void *buf, uint64_t length,
	       uint64_t offset);
int vhd_flush(struct vhd_image *img);

/* pread()/pwrite() of exactly len bytes at off on a plain descriptor, looping
 * over short transfers and retrying EINTR.  Return 0 or a negative errno.
 * vhd_pread_full() treats end of file before len bytes as an error (-EIO):
 * callers read only what they know is there (checked sizes, mapped extents).
 * For front ends that move data to the extents vhd_map()/vhd_write_prepare()
 * return. */
int vhd_pread_full(int fd, void *buf, size_t len, uint64_t off);
int vhd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* ---- checking ----------------------------------------------------------- */

enum vhd_severity {
	VHD_SEV_INFO,     /* e.g. leaked space: harmless */
	VHD_SEV_WARNING,  /* readable, but something is off (bad checksum with a good copy) */
	VHD_SEV_ERROR,    /* corruption */
};

struct vhd_problem {
	enum vhd_severity severity;
	char file[512];
	char field[64];
	char msg[VHD_ERR_LEN];
};

#define VHD_CHECK_MAX_PROBLEMS 1000

struct vhd_check_report {
	struct vhd_problem *problems;
	size_t count, cap;
	size_t suppressed;         /* problems beyond VHD_CHECK_MAX_PROBLEMS */
	uint64_t leaked_bytes;
	unsigned chain_depth;
};

/* Full structural validation of the image and its chain.  Returns 0 when the
 * check ran (look at the report), negative errno when the file could not be
 * read at all (err says why). */
int vhd_check(const char *path, const struct vhd_open_opts *opts,
	      struct vhd_check_report *report, struct vhd_err *err);
/* Number of problems at or above severity. */
size_t vhd_check_count(const struct vhd_check_report *report,
		       enum vhd_severity at_least);
void vhd_check_report_free(struct vhd_check_report *report);
const char *vhd_severity_name(enum vhd_severity sev);

/* ---- any disk: raw file or VHD chain (convert, compare) ----------------- */

enum vhd_format {
	VHD_FMT_AUTO,  /* a VHD footer at the end (or a dynamic copy at 0): vhd; else raw */
	VHD_FMT_RAW,
	VHD_FMT_VHD,
};

struct vhd_disk;

int vhd_disk_open(const char *path, enum vhd_format fmt, const struct vhd_open_opts *opts,
		  struct vhd_disk **out, struct vhd_err *err);
int vhd_disk_close(struct vhd_disk *d);
uint64_t vhd_disk_size(const struct vhd_disk *d);
const char *vhd_disk_format_name(const struct vhd_disk *d);
/* The VHD behind a disk, or NULL for raw. */
struct vhd_image *vhd_disk_image(struct vhd_disk *d);
/* Like vhd_map with VHD_MAP_RESOLVE: DATA or ZERO runs (raw files use
 * SEEK_DATA/SEEK_HOLE; a DATA run may still hold zeros). */
int vhd_disk_map(struct vhd_disk *d, uint64_t offset, uint64_t length, struct vhd_extent *ext);
int vhd_disk_pread(struct vhd_disk *d, void *buf, uint64_t length, uint64_t offset);
int vhd_disk_pwrite(struct vhd_disk *d, const void *buf, uint64_t length, uint64_t offset);
int vhd_disk_flush(struct vhd_disk *d);
/* Kick off writeback of what was written so far, without waiting, so that a
 * long copy's final flush finds little left to do. */
void vhd_disk_start_writeback(struct vhd_disk *d);
bool vhd_format_parse(const char *name, enum vhd_format *fmt);

/* Progress of long operations: bytes of the virtual disk done so far. */
typedef void (*vhd_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* ---- convert (Convert-VHD, qemu-img convert) --------------------------- */

struct vhd_convert_opts {
	enum vhd_format src_format;
	enum vhd_format out_format;   /* VHD_FMT_RAW or VHD_FMT_VHD */
	enum vhd_type out_type;       /* VHD output: fixed or dynamic (default) */
	uint32_t block_size;          /* dynamic output; 0 = 2 MiB */
	bool azure;                   /* fixed VHD, size rounded up to a whole MiB */
	bool preallocate;             /* fixed/raw output written densely */
	bool overwrite;
	bool no_sync;                 /* skip the fsync before the rename (qemu-img's
				       * default cache=unsafe): faster, not crash-proof */
	vhd_progress_fn progress;
	void *progress_ctx;
};

struct vhd_convert_stats {
	uint64_t virtual_size;        /* of the output */
	uint64_t source_size;
	uint64_t bytes_read;          /* data actually read from the source */
	uint64_t bytes_written;       /* data written to the output */
	uint64_t bytes_skipped;       /* unallocated or all-zero, not written */
	uint64_t output_file_size;
};

/* The output appears atomically (written beside dst, synced, renamed).  A
 * differencing source is flattened: the output stands alone. */
int vhd_convert(const char *src, const struct vhd_open_opts *src_opts, const char *dst,
		const struct vhd_convert_opts *opts, struct vhd_convert_stats *stats,
		struct vhd_err *err);

/* ---- compare ---------------------------------------------------------------
 * Returns 0 identical, 1 different (*first_diff set), negative errno on
 * error.  A size difference counts only if the longer one holds non-zero
 * bytes beyond the shorter (like qemu-img compare without -s), or always
 * with strict. */
int vhd_compare(struct vhd_disk *a, struct vhd_disk *b, bool strict, uint64_t *first_diff,
		vhd_progress_fn progress, void *progress_ctx, struct vhd_err *err);

/* ---- merge (Merge-VHD) ----------------------------------------------------
 * Merges CHILD into its parent (or, with into, into a deeper ancestor): the
 * target then holds the combined content; the images above it are removed,
 * or with keep (direct parent only) CHILD stays as an empty child of it.
 * Refused (-EBUSY) when another disk depends on an image the merge changes or
 * removes (found in the chain's directories, or listed in siblings) unless
 * force.  Crash-safe and resumable through CHILD.merge-intent: calling
 * vhd_merge again on CHILD (or repair) finishes an interrupted merge. */
struct vhd_merge_opts {
	const char *into;            /* ancestor path; NULL = the direct parent */
	bool keep;
	bool force;
	const char *const *siblings;  /* extra disks to treat as possible dependents */
	size_t nr_siblings;
	uint64_t batch_bytes;        /* copied per sync; 0 = 1 GiB.  After each
	                              * batch, merged blocks of the images above
	                              * the target are dropped and their space
	                              * given back: smaller batches need less
	                              * free space, larger ones fewer syncs */
	vhd_progress_fn progress;
	void *progress_ctx;
};

struct vhd_merge_stats {
	char target[4096];
	unsigned merged_images;       /* images whose content went into the target */
	uint64_t bytes_copied;
	uint64_t bytes_released;      /* given back while merging (merged blocks
	                               * dropped from the images above the target) */
	bool resumed;                 /* an interrupted merge was finished */
};

int vhd_merge(const char *child, const struct vhd_open_opts *opts,
	      const struct vhd_merge_opts *o, struct vhd_merge_stats *stats,
	      struct vhd_err *err);
/* True when an interrupted merge of image waits to be finished. */
bool vhd_merge_pending(const char *image);

/* ---- compact (Optimize-VHD) --------------------------------------------
 * Drops blocks that read as all zeros (dynamic) or hold no sector of their own
 * (differencing; with against_parent, sectors identical to the parent are
 * given up first), packs the remaining blocks and shrinks the file, every
 * step crash-safe (the content never changes; an interruption leaks space at
 * worst).  Refused on fixed disks and on disks in saved state. */
struct vhd_compact_stats {
	uint64_t old_file_size, new_file_size;
	uint32_t blocks_dropped, blocks_moved;
	uint64_t sectors_cleared;     /* against_parent: sectors given back to the parent */
};

int vhd_compact(const char *path, bool against_parent, const struct vhd_open_opts *opts,
		struct vhd_compact_stats *stats, struct vhd_err *err);

/* ---- repair ----------------------------------------------------------------
 * Fixes what can be fixed without losing data: finishes an interrupted merge,
 * restores a damaged trailing footer from the copy at offset 0 (or the copy
 * from the trailing footer), recomputes footer/header checksums whose fields
 * validate, gives back leaked space after the last structure.  Reports each
 * action (dry_run: reports without writing).  Errors that would need
 * guessing are returned, not fixed. */
#define VHD_REPAIR_MAX_ACTIONS 16

struct vhd_repair_report {
	char actions[VHD_REPAIR_MAX_ACTIONS][512];
	unsigned count;
};

int vhd_repair(const char *path, const struct vhd_open_opts *opts, bool dry_run,
	       struct vhd_repair_report *report, struct vhd_err *err);

/* ---- set-parent and rebase (Set-VHD -ParentPath, qemu-img rebase) ----------
 * set-parent repoints CHILD's locators, parent name, unique id and timestamp
 * at NEWPARENT.  Without force, NEWPARENT must carry the unique id CHILD
 * records (the parent was moved or copied); with force it may be another
 * disk and the child's visible content may change (said through opts->warn).
 * CHILD's current parent need not open.  rebase keeps the child's visible
 * content while changing its parent: every sector where the old and the new
 * chain differ and the child does not hold data is copied into the child
 * first (the old parent must open).  Both refuse a non-differencing CHILD,
 * NEWPARENT == CHILD and a NEWPARENT whose chain contains CHILD (-ELOOP).
 * CHILD is always locked exclusively; VHD_OPEN_NO_LOCK and parent_dir in
 * opts apply to the parents.  Crash-safe: CHILD opens over its old or its
 * new parent at any point, and calling again finishes (see setparent.c). */
int vhd_set_parent(const char *child, const char *new_parent, bool force,
		   const struct vhd_open_opts *opts, struct vhd_err *err);
int vhd_rebase(const char *child, const char *new_parent, const struct vhd_open_opts *opts,
	       vhd_progress_fn progress, void *progress_ctx, struct vhd_err *err);

/* ---- resize (Resize-VHD) -------------------------------------------------
 * Grows fixed, dynamic and differencing disks (the BAT grows, in place or
 * relocated to the end of the file, crash-safely); the new range reads as
 * zeros.  new_size is rounded up to a sector (at most VHD_MAX_SIZE; disks
 * sized by CHS, creators "vpc "/"qemu", get the nearest geometry above).
 * Shrinks only when everything between the new and the old end reads as
 * zeros through the chain (else -ENOTEMPTY, res->first_allocated_beyond =
 * the first non-zero sector, named in err), unless discard: then blocks
 * wholly beyond the new end are dropped.  A differencing disk may grow past
 * its parent; growing one over a larger parent's data is -ENOTEMPTY.
 * Refused (-EBUSY): footer says "saved state", a merge is pending, the image
 * is in use; images that do not open read-write are refused by vhd_open.
 * Opens the chain (VHD_OPEN_NO_PARENT and VHD_OPEN_DIRECT are ignored).
 * A crash leaves the old or the new size with matching content; at most a
 * warning (footer copy / fixed-disk slack) that calling again with the same
 * size clears (see resize.c). */
struct vhd_resize_result {
	uint64_t old_size, new_size;      /* visible sizes before and after */
	uint64_t first_allocated_beyond;  /* when a shrink is refused */
};
int vhd_resize(const char *path, uint64_t new_size, bool discard,
	       const struct vhd_open_opts *opts, struct vhd_resize_result *res,
	       struct vhd_err *err);

#endif
