/* internal.h - runtime state of an open VHD and helpers shared inside vhd/. */
#ifndef VHD_INTERNAL_H
#define VHD_INTERNAL_H

#include <stdarg.h>
#include <sys/types.h>

#include "format.h"
#include "vhd.h"

/* Bitmaps of allocated blocks are cached in a direct-mapped table so that
 * memory does not grow with disk size (2 TiB disk: BAT 4 MiB + at most 1024
 * bitmaps, 512 KiB with 2 MiB blocks).  1024 slots keep a server's random
 * reads over a few GiB of a chain off the disk for metadata. */
#define VHD_BITMAP_CACHE_SLOTS 1024

struct bitmap_slot {
	uint32_t block;  /* VHD_BAT_UNUSED = empty slot */
	uint8_t *bits;   /* bitmap_size bytes */
};

struct pending_alloc {
	uint32_t block;
	uint64_t bitmap_offset;
};

struct vhd_image {
	char *path;
	int fd;                     /* metadata (and data without O_DIRECT) */
	int data_fd;                /* -1, or a second O_DIRECT descriptor for data */
	bool writable;
	bool locked;
	bool no_sync;               /* VHD_OPEN_NO_SYNC */
	dev_t dev;
	ino_t ino;
	uint64_t file_size;
	uint64_t footer_pos;        /* where the trailing footer lives */
	struct vhd_footer footer;
	bool footer_checksum_ok;
	bool used_head_footer;
	uint64_t virtual_size;
	const char *size_source;

	/* dynamic and differencing only */
	struct vhd_dynhdr hdr;
	uint32_t *bat;              /* host order, hdr.max_table_entries */
	uint32_t nr_blocks;         /* blocks the virtual size needs */
	uint32_t block_size;
	uint32_t sectors_per_block;
	uint32_t bitmap_size;       /* bytes on disk, whole sectors */
	uint64_t data_end;          /* end of the last structure or block */
	uint32_t nr_allocated;      /* BAT entries in use */
	uint64_t leaked_bytes;      /* unused whole pages between structures */
	struct bitmap_slot cache[VHD_BITMAP_CACHE_SLOTS];
	/* Blocks allocated by vhd_write_prepare whose BAT entry is not yet
	 * published; later prepares of the same block join the allocation. */
	struct pending_alloc *pending;
	size_t nr_pending, cap_pending;

	struct vhd_image *parent;   /* differencing: the next image down */
	const struct vhd_image *child; /* the image above (not owned) */
	unsigned depth;             /* 0 = leaf */
};

/* Collects problems found while parsing.  open stops at the first error and
 * returns its sentence; check keeps all of them. */
struct vhd_diag {
	const char *file;
	struct vhd_check_report *report; /* check mode when set */
	struct vhd_err *err;             /* first error (open mode) */
	const struct vhd_open_opts *opts;
	unsigned errors;
};

__attribute__((format(printf, 4, 5)))
void diag_report(struct vhd_diag *d, enum vhd_severity sev, const char *field,
		 const char *fmt, ...);
__attribute__((format(printf, 2, 3)))
void vhd_err_set(struct vhd_err *err, const char *fmt, ...);

/* Parses and validates footer, header, BAT and locators of one file (no
 * parent).  In check mode it keeps going after errors as long as it can;
 * returns -EINVAL when d->errors grew, a negative errno on I/O failure. */
int image_load(struct vhd_image *img, struct vhd_diag *d);
/* Finds and opens the parent of a differencing image into img->parent. */
int image_open_parent(struct vhd_image *img, const struct vhd_open_opts *opts,
		      struct vhd_diag *d);
void image_free(struct vhd_image *img);

/* Candidate parent paths from the locators and the unicode name, best first.
 * Returns how many were stored (each malloc'd, caller frees). */
size_t locator_candidates(const struct vhd_image *img, char **out, size_t max);
/* Encodes a parent path for each platform we write. */
int locator_encode_path(uint32_t code, const char *child_path,
			const char *parent_path, uint8_t *buf, size_t size);

/* Bitmap of an allocated block (cached).  Returns a pointer valid until the
 * next call on this image. */
int bitmap_get(struct vhd_image *img, uint32_t block, uint8_t **bits);
void bitmap_cache_drop(struct vhd_image *img);

/* The library's own short names for vhd_pread_full()/vhd_pwrite_full(). */
static inline int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	return vhd_pread_full(fd, buf, len, off);
}

static inline int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	return vhd_pwrite_full(fd, buf, len, off);
}

static inline uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* Data goes through data_fd when the image was opened with O_DIRECT;
 * metadata always through fd and the page cache, so that allocating a block
 * costs no synchronous device write: the fdatasync that orders data before
 * the BAT entry flushes both. */
static inline int image_data_fd(const struct vhd_image *img)
{
	return img->data_fd >= 0 ? img->data_fd : img->fd;
}

static inline uint64_t block_file_offset(const struct vhd_image *img, uint32_t block)
{
	return (uint64_t)img->bat[block] * VHD_SECTOR_SIZE;
}

/* Where a new block's bitmap goes so its data is 4 KiB aligned and it sits
 * after everything the file holds (metadata, locators, batmaps, blocks and
 * the trailing footer). */
uint64_t next_block_offset(const struct vhd_image *img);
/* Bytes block `block` (bitmap at file offset off) takes in the file: a
 * short last block may end early. */
uint64_t block_span(const struct vhd_image *img, uint32_t block, uint64_t off);

/* Batched writes through the prepare/commit protocol (batch.c): the data of
 * many pieces, one fdatasync, then every piece's metadata.  A batch flushes
 * itself when max_plans pieces or max_bytes are pending. */
struct write_batch {
	struct vhd_image *img;
	struct vhd_write_plan *plans;
	size_t n, cap;
	uint64_t bytes, max_bytes, since_kick;
	bool commit;
};

int batch_init(struct write_batch *b, struct vhd_image *img, size_t max_plans, uint64_t max_bytes);
int batch_write(struct write_batch *b, const void *buf, uint64_t len, uint64_t off);
/* The same in two steps, for callers that write the data themselves (on
 * other threads): batch_plan prepares the pieces of a range and appends
 * their plans from b->plans[*first] on; each is then written with
 * batch_write_plan, and all of them before batch_flush.  batch_full says
 * whether `pieces` more plans fit (flush first when it says no). */
bool batch_full(const struct write_batch *b, size_t pieces);
int batch_plan(struct write_batch *b, uint64_t len, uint64_t off, size_t *first);
int batch_write_plan(struct write_batch *b, const struct vhd_write_plan *p, const void *buf);
/* Counts written bytes; starts writeback now and then when they went
 * through the page cache, so that the flush finds little left to do. */
void batch_written(struct write_batch *b, uint64_t len);
int batch_flush(struct write_batch *b);
void batch_free(struct write_batch *b);

/* Reading ahead on a thread (readahead.c).  The fill function runs on the
 * reader thread: given slot->off and the bytes left, it sets slot->len
 * (> 0) and either reads that much into slot->buf (slot->data = true) or
 * leaves the run unread (a hole, or a range the caller skips). */
struct ra_slot {
	uint64_t off, len;
	bool data;
	uint8_t *buf;           /* 4096-aligned, `chunk` bytes */
};
typedef int (*ra_fill_fn)(void *ctx, struct ra_slot *slot, uint64_t left);
struct readahead;
int ra_start(struct readahead **ra, uint64_t size, size_t chunk, ra_fill_fn fill, void *ctx);
/* The next filled slot in source order, or NULL at the end or on an error.
 * Several may be held at once; each is given back with ra_release. */
struct ra_slot *ra_next(struct readahead *ra);
void ra_release(struct readahead *ra, struct ra_slot *slot);
/* Stops and joins the reader; returns its error and where it happened. */
int ra_finish(struct readahead *ra, uint64_t *err_off);
/* The reader reads one chunk at a time; announcing the data of the next
 * RA_PREFETCH bytes to the kernel (POSIX_FADV_WILLNEED) keeps many reads in
 * flight, so a cold source made of small extents is not read at queue depth
 * one.  map gives the extents; DATA extents with an fd are announced.
 * *announced remembers how far; call it before each read at `off`. */
#define RA_PREFETCH (64u << 20)
typedef int (*ra_map_fn)(void *ctx, uint64_t off, uint64_t len, struct vhd_extent *e);
void ra_prefetch(uint64_t *announced, uint64_t off, uint64_t end, ra_map_fn map, void *ctx);

/* Writer threads for the pieces of read-ahead slots (write_pool.c).  A
 * submitted slot is given back to the read-ahead ring once written; the
 * first write error comes back from any later call. */
struct write_pool;
int wpool_start(struct write_pool **wp, struct write_batch *b, struct readahead *ra,
		unsigned nthreads);
int wpool_submit(struct write_pool *wp, struct ra_slot *slot, size_t first, size_t count);
/* Waits until every submitted write is done (before batch_flush). */
int wpool_drain(struct write_pool *wp, uint64_t *err_off);
int wpool_finish(struct write_pool *wp, uint64_t *err_off);

/* A merge gives the space of what it already copied back as it goes
 * (merge_release.c): once the target durably holds everything below a
 * virtual offset, the images above it drop their blocks that lie wholly
 * below it, and those blocks' file space is freed, on a thread of its own. */
struct releaser;
int releaser_start(struct releaser **r, struct vhd_image *child, unsigned tdepth,
		   struct vhd_err *err);
/* The target holds everything below `durable` (data and BAT on disk). */
void releaser_advance(struct releaser *r, uint64_t durable);
/* Waits for the thread; returns its error and the bytes given back. */
int releaser_finish(struct releaser *r, uint64_t *released);

void vhd_random_uuid(uint8_t uuid[16]);
/* fsync of the directory holding path (after a rename into it). */
int vhd_fsync_dir_of(const char *path);
bool vhd_buf_is_zero(const void *buf, size_t len);
uint32_t vhd_now(void);

#endif
