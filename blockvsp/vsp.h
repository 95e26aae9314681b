/* vsp.h - the block VSP: an io_uring engine that serves VHD chains, and its
 * front doors (NBD today; vhost-user-blk later).
 *
 * The engine owns worker threads, each with its own io_uring.  A disk is an
 * open VHD chain; requests against it are split along VHD blocks, each piece
 * mapped by vhd/ (data at a file offset / zeros / parent) and submitted as
 * real I/O on the ring of the worker that received the request.  Front doors
 * translate protocol requests into struct vsp_req and never touch images.
 *
 * Ordering (DESIGN.md rule 3): a write whose metadata must change (a new block,
 * new bitmap bits of a differencing disk) is acknowledged only after its data
 * was made durable (one fdatasync through io_uring covers every such write
 * completed on that worker so far: a group commit) and the metadata was
 * written.  FLUSH then makes every acknowledged write durable; FUA is a write
 * followed by that flush.  Reads never see half-allocated blocks: a block's
 * BAT entry is published only at commit.
 *
 * Threading: vsp_engine_new/free, vsp_disk_open/close and the server calls
 * are made from one control thread (the daemon's main).  Requests are
 * submitted on worker threads by the front doors (see engine.h).
 */
#ifndef VSP_VSP_H
#define VSP_VSP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vhd.h"

/* Largest request the engine accepts (also advertised as the NBD maximum
 * block size). */
#define VSP_MAX_REQUEST (32u << 20)

enum vsp_log_level { VSP_LOG_ERROR, VSP_LOG_WARN, VSP_LOG_INFO, VSP_LOG_DEBUG };

struct vsp_engine;
struct vsp_disk;
struct vsp_worker;

struct vsp_engine_opts {
	unsigned workers;        /* 0 = one per online CPU (at most 16) */
	unsigned ring_entries;   /* 0 = 256 */
	enum vsp_log_level log_level; /* messages at or below this go to stderr */
};

int vsp_engine_new(const struct vsp_engine_opts *opts, struct vsp_engine **out);
/* Stops the workers (after every disk is closed and every connection gone). */
void vsp_engine_free(struct vsp_engine *e);
unsigned vsp_engine_workers(const struct vsp_engine *e);

__attribute__((format(printf, 3, 4)))
void vsp_log(const struct vsp_engine *e, enum vsp_log_level level, const char *fmt, ...);

/* ---- disks -------------------------------------------------------------- */

enum vsp_cache_mode {
	VSP_CACHE_NONE,       /* O_DIRECT on every file of the chain (default) */
	VSP_CACHE_WRITEBACK,  /* through the page cache */
};

struct vsp_disk_opts {
	bool read_only;
	enum vsp_cache_mode cache;
	const char *parent_dir;  /* see vhd_open_opts */
};

/* Opens the chain whose leaf is path (locked: exclusive when writable). */
int vsp_disk_open(struct vsp_engine *e, const char *path, const struct vsp_disk_opts *opts,
		  struct vsp_disk **out, struct vhd_err *err);
/* Flushes and closes.  No request may be in flight. */
int vsp_disk_close(struct vsp_disk *d);
uint64_t vsp_disk_size(const struct vsp_disk *d);
bool vsp_disk_read_only(const struct vsp_disk *d);
const char *vsp_disk_path(const struct vsp_disk *d);
/* The VHD unique id of the leaf (a serial number for GET_ID). */
void vsp_disk_uuid(const struct vsp_disk *d, uint8_t uuid[16]);

/* Allocation status of [offset, offset+length): the first run of one kind
 * (data, or zero/unallocated anywhere in the chain).  Thread-safe. */
int vsp_disk_status(struct vsp_disk *d, uint64_t offset, uint64_t length, uint64_t *run,
		    bool *zero);

/* ---- requests ----------------------------------------------------------- */

enum vsp_op {
	VSP_OP_READ,
	VSP_OP_WRITE,
	VSP_OP_FLUSH,
	VSP_OP_WRITE_ZEROES, /* does not allocate blocks that already read as zero */
	VSP_OP_TRIM,         /* accepted, a no-op: VHD blocks are not given back while served */
};

enum vsp_req_flags {
	VSP_REQ_FUA = 1u << 0, /* durable when completed */
};

struct vsp_req;
typedef void (*vsp_done_fn)(struct vsp_req *req, int result);

/* One completion on a worker's ring: user_data of an SQE points at one. */
struct vsp_io {
	void (*complete)(struct vsp_io *io, int res);
};

/* One piece of a request: a single I/O to one file (engine private). */
struct vsp_piece {
	struct vsp_io io;
	struct vsp_req *req;
	struct vhd_write_plan plan;
	struct iovec *iov;         /* NULL: the one vector is iov1 */
	unsigned iovcnt;
	struct iovec iov1;
	uint64_t length;
};

#define VSP_REQ_INLINE_PIECES 2

struct vsp_req {
	/* set by the front door */
	enum vsp_op op;
	unsigned flags;            /* enum vsp_req_flags */
	uint64_t offset, length;   /* bytes; inside the disk (the front door checks) */
	struct iovec *iov;         /* READ: filled; WRITE: the data */
	unsigned iovcnt;
	vsp_done_fn done;          /* called on the submitting worker; result 0 or -errno */
	void *ctx;

	/* engine private */
	struct vsp_disk *disk;
	struct vsp_worker *worker;
	struct vsp_req *next;      /* group-commit lists */
	unsigned outstanding;      /* pieces in flight */
	int error;
	bool needs_commit;
	struct vsp_piece *pieces;  /* inline_pieces, or allocated */
	unsigned nr_pieces, cap_pieces;
	struct vsp_piece inline_pieces[VSP_REQ_INLINE_PIECES];
};

/* Submits req on worker w; must be called on w's thread (front doors run
 * there).  req->done is called exactly once, possibly before this returns. */
void vsp_submit(struct vsp_worker *w, struct vsp_disk *d, struct vsp_req *req);

/* ---- the NBD front door --------------------------------------------------- */

struct vsp_nbd_server;

struct vsp_nbd_opts {
	const char *unix_path;     /* listen here (default when no tcp) */
	const char *tcp_host;      /* NULL = no TCP; "" = 127.0.0.1 */
	const char *tcp_port;
	unsigned max_connections;  /* 0 = 64 */
};

int vsp_nbd_server_new(struct vsp_engine *e, const struct vsp_nbd_opts *opts,
		       struct vsp_nbd_server **out, struct vhd_err *err);
/* Exports disk under name (the first export added is also the default ""
 * export).  The server does not own the disk.  Before start only. */
int vsp_nbd_add_export(struct vsp_nbd_server *s, const char *name, const char *description,
		       struct vsp_disk *disk);
/* Starts listening (a thread accepts; handshakes run on their own threads;
 * transmission runs on the engine's workers). */
int vsp_nbd_server_start(struct vsp_nbd_server *s, struct vhd_err *err);
/* The URI a client uses for export name (nbd+unix:///name?socket=... or
 * nbd://host:port/name). */
void vsp_nbd_uri(const struct vsp_nbd_server *s, const char *name, char *buf, size_t len);
/* Stops accepting, tells every connection to stop reading, waits until all
 * in-flight requests are answered and connections closed. */
void vsp_nbd_server_stop(struct vsp_nbd_server *s);
void vsp_nbd_server_free(struct vsp_nbd_server *s);

/* ---- the vhost-user-blk front door ----------------------------------------
 * One device per Unix socket, one front end (QEMU's vhost-user-blk-pci) at a
 * time; when it goes away the device waits for the next one.  The guest's
 * virtqueues run on the engine's workers (queue i on worker i mod N). */

struct vsp_vhost;

struct vsp_vhost_opts {
	const char *socket_path;
	unsigned num_queues;       /* 0 = one per worker; at most 16 */
};

int vsp_vhost_new(struct vsp_engine *e, struct vsp_disk *disk, const char *name,
		  const struct vsp_vhost_opts *o, struct vsp_vhost **out, struct vhd_err *err);
int vsp_vhost_start(struct vsp_vhost *v, struct vhd_err *err);
/* Stops listening; the connected front end's queues are drained and stopped. */
void vsp_vhost_stop(struct vsp_vhost *v);
void vsp_vhost_free(struct vsp_vhost *v);

/* ---- running a server (vhd-vspd, vhdtool serve) -------------------------- */

struct vsp_vhost_spec {
	const char *export;      /* NULL = the first export */
	const char *socket_path;
};

struct vsp_export_spec {
	const char *name;        /* NULL = the image's base name without .vhd */
	const char *path;
	bool read_only;
};

struct vsp_serve_opts {
	struct vsp_export_spec *exports;
	unsigned nr_exports;
	struct vsp_nbd_opts nbd;
	bool nbd_off;            /* only vhost-user devices were asked for */
	struct vsp_vhost_spec *vhost;
	unsigned nr_vhost;
	unsigned num_queues;     /* per vhost-user device */
	struct vsp_engine_opts engine;
	enum vsp_cache_mode cache;
	const char *parent_dir;
	const char *run;         /* captive: run this shell command with $uri set, then stop */
	const char *pid_file;    /* written once the server listens */
	bool quiet;              /* no "listening on" line */
};

/* The command line of vhd-vspd and `vhdtool serve` (see --help).  Returns 0
 * to serve, 1 when --help was printed, -1 on bad usage (message printed).
 * Captive mode without --socket gets a private socket in a temporary
 * directory, removed by vsp_serve_args_free. */
struct vsp_serve_args {
	struct vsp_serve_opts opts;
	char **strings;
	size_t nr_strings;
	char *socket_path;
	char *tmpdir;
};

int vsp_serve_parse_args(int argc, char **argv, const char *prog, struct vsp_serve_args *a);
void vsp_serve_args_free(struct vsp_serve_args *a);

/* Opens the exports, serves until SIGTERM/SIGINT (or until the captive
 * command ends), then drains, flushes and closes.  Returns an exit status
 * (the captive command's status with run). */
int vsp_serve(const struct vsp_serve_opts *opts);

#endif
