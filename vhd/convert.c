/* convert.c - any disk -> raw or VHD (fixed/dynamic), sparse-aware.
 *
 * Unallocated ranges of the source (VHD BAT/bitmaps, SEEK_HOLE on raw files)
 * are skipped without reading; data is read in large chunks and all-zero
 * 4 KiB pieces are not written, so a mostly-empty disk converts in a fraction
 * of the time and the output stays sparse.  The output is a new file, written
 * beside its final name without per-block syncs (nobody can see it yet), then
 * synced once and renamed: a crash never leaves a half-written image under
 * the destination name. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <libgen.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define CHUNK (4u << 20)
#define ZERO_GRAIN 4096u
#define MAP_WINDOW (1ull << 30)
/* Writeback is started every so often so that it overlaps the copy and
 * the final fsync (which makes the output durable before it is renamed
 * into place) does not stall on the whole output at once. */
#define WRITEBACK_EVERY (32u << 20)

bool vhd_buf_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* check a prefix, then compare the buffer with itself shifted */
	for (size_t i = 0; i < len && i < 16; i++)
		if (p[i])
			return false;
	return len <= 16 || !memcmp(p, p + 16, len - 16);
}

/* Writes the non-zero ZERO_GRAIN pieces of buf (one write per run). */
static int write_nonzero(struct vhd_disk *out, const uint8_t *buf, size_t len, uint64_t off,
			 uint64_t *written)
{
	size_t i = 0;
	int ret;

	while (i < len) {
		size_t start, n;

		while (i < len && vhd_buf_is_zero(buf + i, len - i < ZERO_GRAIN ? len - i : ZERO_GRAIN))
			i += len - i < ZERO_GRAIN ? len - i : ZERO_GRAIN;
		start = i;
		while (i < len && !vhd_buf_is_zero(buf + i, len - i < ZERO_GRAIN ? len - i : ZERO_GRAIN))
			i += len - i < ZERO_GRAIN ? len - i : ZERO_GRAIN;
		n = i - start;
		if (!n)
			break;
		ret = vhd_disk_pwrite(out, buf + start, n, off + start);
		if (ret < 0)
			return ret;
		*written += n;
	}
	return 0;
}

static int make_output(const char *tmp, const struct vhd_convert_opts *o, uint64_t size,
		       struct vhd_err *err)
{
	if (o->out_format == VHD_FMT_VHD) {
		struct vhd_create_opts co = {
			.type = o->azure ? VHD_TYPE_FIXED : (o->out_type ? o->out_type : VHD_TYPE_DYNAMIC),
			.size = size,
			.block_size = o->block_size,
			.overwrite = true,
			.preallocate = o->preallocate,
		};
		return vhd_create(tmp, &co, err);
	} else {
		int fd = open(tmp, O_WRONLY | O_CLOEXEC), ret = 0;

		if (fd < 0)
			return -errno;
		if (o->preallocate)
			ret = -posix_fallocate(fd, 0, (off_t)size);
		else if (ftruncate(fd, (off_t)size) < 0)
			ret = -errno;
		close(fd);
		if (ret < 0)
			vhd_err_set(err, "%s: cannot size the output: %s", tmp, strerror(-ret));
		return ret;
	}
}

/* The reader thread's view of the source: a run of zeros is passed on
 * unread; data is read up to the next chunk boundary, so writes stay
 * aligned; the data ahead is announced to the kernel (ra_prefetch). */
struct convert_src {
	struct vhd_disk *in;
	uint64_t prefetched;    /* announced up to here */
	const char *what;       /* what failed, for the message */
};

static int map_source(void *ctx, uint64_t off, uint64_t len, struct vhd_extent *e)
{
	return vhd_disk_map(((struct convert_src *)ctx)->in, off, len, e);
}

static int fill_from_source(void *ctx, struct ra_slot *sl, uint64_t left)
{
	struct convert_src *src = ctx;
	struct vhd_extent e;
	int ret;

	ret = vhd_disk_map(src->in, sl->off, left < MAP_WINDOW ? left : MAP_WINDOW, &e);
	if (ret < 0) {
		src->what = "mapping";
		return ret;
	}
	sl->data = e.kind != VHD_EXT_ZERO;
	if (!sl->data) {
		sl->len = e.length;
		return 0;
	}
	sl->len = CHUNK - sl->off % CHUNK < e.length ? CHUNK - sl->off % CHUNK : e.length;
	ra_prefetch(&src->prefetched, sl->off, sl->off + left, map_source, src);
	ret = vhd_disk_pread(src->in, sl->buf, sl->len, sl->off);
	if (ret < 0)
		src->what = "reading";
	return ret;
}

static int copy_data(struct vhd_disk *in, struct vhd_disk *out, const struct vhd_convert_opts *o,
		     struct vhd_convert_stats *st, const char *src, struct vhd_err *err)
{
	struct convert_src cs = {.in = in, .what = "reading"};
	uint64_t since_kick = 0, size = vhd_disk_size(in), err_off = 0;
	struct readahead *ra = NULL;
	struct ra_slot *sl;
	int ret, rret;

	ret = ra_start(&ra, size, CHUNK, fill_from_source, &cs);
	if (ret < 0)
		return ret;
	while ((sl = ra_next(ra))) {
		uint64_t written = 0;

		if (sl->data) {
			st->bytes_read += sl->len;
			ret = write_nonzero(out, sl->buf, sl->len, sl->off, &written);
			if (ret < 0) {
				vhd_err_set(err, "writing output offset %" PRIu64 ": %s", sl->off,
					    strerror(-ret));
				break;
			}
			st->bytes_written += written;
			since_kick += written;
			if (since_kick >= WRITEBACK_EVERY && !o->no_sync) {
				vhd_disk_start_writeback(out);
				since_kick = 0;
			}
		}
		st->bytes_skipped += sl->len - written;
		if (o->progress)
			o->progress(o->progress_ctx, sl->off + sl->len, size);
		ra_release(ra, sl);
	}
	rret = ra_finish(ra, &err_off);
	if (ret == 0 && rret < 0) {
		ret = rret;
		vhd_err_set(err, "%s: %s offset %" PRIu64 ": %s", src, cs.what, err_off,
			    strerror(-ret));
	}
	return ret;
}

/* Takes an OFD write lock on the first byte of a part file for as long as
 * the convert runs (OFD locks do not conflict with the flock the library
 * takes on the same file), so that another convert can tell a live part
 * file from one a killed convert left behind. */
static int part_lock(int fd)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Removes DST.part-XXXXXX files beside dst that no running convert holds:
 * leftovers of a convert that was killed before it could rename or unlink. */
static void remove_stale_parts(const char *dst)
{
	char dcopy[PATH_MAX], bcopy[PATH_MAX], path[PATH_MAX];
	const char *dir, *base;
	size_t blen;
	struct dirent *de;
	DIR *d;

	if (snprintf(dcopy, sizeof(dcopy), "%s", dst) >= (int)sizeof(dcopy) ||
	    snprintf(bcopy, sizeof(bcopy), "%s", dst) >= (int)sizeof(bcopy))
		return;
	dir = dirname(dcopy);
	base = basename(bcopy);
	blen = strlen(base);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		int fd;

		if (strncmp(de->d_name, base, blen) || strncmp(de->d_name + blen, ".part-", 6) ||
		    strlen(de->d_name + blen + 6) != 6)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
			continue;
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (fd < 0)
			continue;
		{
			struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_len = 1};
			struct stat sb;

			/* Unlocked (its convert is gone) and a regular file: stale. */
			if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
			    fcntl(fd, F_OFD_SETLK, &fl) == 0)
				unlink(path);
		}
		close(fd);
	}
	closedir(d);
}

int vhd_convert(const char *src, const struct vhd_open_opts *src_opts, const char *dst,
		const struct vhd_convert_opts *o, struct vhd_convert_stats *st, struct vhd_err *err)
{
	struct vhd_open_opts in_opts = src_opts ? *src_opts : (struct vhd_open_opts){0};
	struct vhd_open_opts out_opts = {.flags = VHD_OPEN_RDWR | VHD_OPEN_NO_SYNC};
	struct vhd_disk *in = NULL, *out = NULL;
	char tmp[PATH_MAX];
	struct stat sb;
	uint64_t size;
	int fd = -1, ret;

	memset(st, 0, sizeof(*st));
	if (err)
		err->msg[0] = 0;
	if (o->out_format != VHD_FMT_RAW && o->out_format != VHD_FMT_VHD) {
		vhd_err_set(err, "%s: output format must be raw or vhd", dst);
		return -EINVAL;
	}
	if (!o->overwrite && lstat(dst, &sb) == 0) {
		vhd_err_set(err, "%s: already exists (pass --force to replace it)", dst);
		return -EEXIST;
	}
	if (o->out_format == VHD_FMT_VHD && o->block_size &&
	    (o->block_size < VHD_MIN_BLOCK_SIZE || o->block_size > VHD_MAX_BLOCK_SIZE ||
	     (o->block_size & (o->block_size - 1)))) {
		vhd_err_set(err, "%s: block size: %u is not a power of two between 512 bytes and 256 MiB",
			    dst, o->block_size);
		return -EINVAL;
	}
	in_opts.flags &= ~(unsigned)VHD_OPEN_RDWR;
	ret = vhd_disk_open(src, o->src_format, &in_opts, &in, err);
	if (ret < 0)
		return ret;
	st->source_size = size = vhd_disk_size(in);
	if (o->azure)
		size = round_up(size, 1u << 20); /* Azure: whole MiB, fixed VHD */
	st->virtual_size = size;
	if (o->out_format == VHD_FMT_VHD && size > VHD_MAX_SIZE) {
		vhd_err_set(err, "%s: a %" PRIu64 "-byte disk exceeds the VHD maximum of 2040 GiB", src, size);
		ret = -EFBIG;
		goto out;
	}

	if (snprintf(tmp, sizeof(tmp), "%s.part-XXXXXX", dst) >= (int)sizeof(tmp)) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	remove_stale_parts(dst);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		vhd_err_set(err, "%s: cannot create a file beside it: %s", dst, strerror(-ret));
		goto out;
	}
	ret = part_lock(fd); /* held until fd is closed at the end */
	if (ret < 0) {
		vhd_err_set(err, "%s: cannot lock %s: %s", dst, tmp, strerror(-ret));
		goto fail;
	}
	ret = make_output(tmp, o, size, err);
	if (ret < 0)
		goto fail;
	ret = vhd_disk_open(tmp, o->out_format, &out_opts, &out, err);
	if (ret < 0)
		goto fail;
	st->virtual_size = vhd_disk_size(out); /* a VHD rounds up to a sector */
	ret = copy_data(in, out, o, st, src, err);
	if (ret < 0)
		goto fail;
	st->bytes_skipped += st->virtual_size - st->source_size; /* padding to a MiB or sector */
	ret = o->no_sync ? 0 : vhd_disk_flush(out);
	if (ret == 0)
		ret = vhd_disk_close(out);
	else
		vhd_disk_close(out);
	out = NULL;
	if (ret == 0 && rename(tmp, dst) < 0)
		ret = -errno;
	if (ret == 0)
		ret = vhd_fsync_dir_of(dst);
	if (ret < 0) {
		if (!err || !err->msg[0])
			vhd_err_set(err, "%s: %s", dst, strerror(-ret));
		goto fail;
	}
	if (stat(dst, &sb) == 0)
		st->output_file_size = (uint64_t)sb.st_blocks * 512;
	goto out;
fail:
	vhd_disk_close(out);
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	vhd_disk_close(in);
	return ret;
}
