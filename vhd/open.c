/* open.c - opening a VHD and the differencing chain below it. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MAX_CANDIDATES 24

void vhd_random_uuid(uint8_t uuid[16])
{
	size_t got = 0;

	while (got < 16) {
		ssize_t n = getrandom(uuid + got, 16 - got, 0);

		if (n > 0)
			got += (size_t)n;
	}
	uuid[6] = (uint8_t)((uuid[6] & 0x0F) | 0x40); /* version 4 */
	uuid[8] = (uint8_t)((uuid[8] & 0x3F) | 0x80); /* RFC 4122 variant */
}

uint32_t vhd_now(void)
{
	time_t t = time(NULL);

	return t > VHD_EPOCH_OFFSET ? (uint32_t)(t - VHD_EPOCH_OFFSET) : 0;
}

void image_free(struct vhd_image *img)
{
	if (!img)
		return;
	image_free(img->parent);
	bitmap_cache_drop(img);
	if (img->data_fd >= 0)
		close(img->data_fd);
	if (img->fd >= 0)
		close(img->fd); /* also releases the flock */
	free(img->bat);
	free(img->pending);
	free(img->path);
	free(img);
}

static struct vhd_image *image_new(const char *path)
{
	struct vhd_image *img = calloc(1, sizeof(*img));

	if (!img)
		return NULL;
	img->fd = -1;
	img->data_fd = -1;
	img->path = strdup(path);
	if (!img->path) {
		free(img);
		return NULL;
	}
	for (int i = 0; i < VHD_BITMAP_CACHE_SLOTS; i++)
		img->cache[i].block = VHD_BAT_UNUSED;
	return img;
}

/* Opens one file of the chain.  O_NONBLOCK so that a FIFO named by a hostile
 * locator cannot hang us before fstat tells it is not a regular file. */
static int image_open_file(struct vhd_image *img, bool writable, const struct vhd_open_opts *opts,
			   struct vhd_diag *d)
{
	int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
	struct stat st;
	int ret;

	img->fd = open(img->path, flags);
	if (img->fd < 0) {
		ret = -errno;
		vhd_err_set(d->err, "%s: %s", img->path, strerror(-ret));
		return ret;
	}
	if (fstat(img->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		diag_report(d, VHD_SEV_ERROR, "file type", "not a regular file");
		return -EINVAL;
	}
	/* back to blocking mode for real files (no effect on them, but tidy) */
	fcntl(img->fd, F_SETFL, fcntl(img->fd, F_GETFL) & ~O_NONBLOCK);
	img->writable = writable;
	img->no_sync = opts && (opts->flags & VHD_OPEN_NO_SYNC);
	if (!(opts && (opts->flags & VHD_OPEN_NO_LOCK))) {
		if (flock(img->fd, (writable ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
			ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
			vhd_err_set(d->err,
				    "%s: is in use: another process holds it %s (lock conflict); "
				    "close that user first, or open read-only without locking",
				    img->path, writable ? "open" : "open for writing");
			return ret;
		}
		img->locked = true;
	}
	return 0;
}

/* With VHD_OPEN_DIRECT, data goes through a second descriptor opened with
 * O_DIRECT; metadata (parsed at any alignment, and small) stays on the first
 * one and in the page cache.  The second open must reach the same file. */
static int image_go_direct(struct vhd_image *img, const struct vhd_open_opts *opts,
			   struct vhd_diag *d)
{
	struct stat a, b;
	int ret;

	if (!opts || !(opts->flags & VHD_OPEN_DIRECT))
		return 0;
	img->data_fd = open(img->path, (img->writable ? O_RDWR : O_RDONLY) | O_DIRECT |
					       O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (img->data_fd < 0) {
		ret = -errno;
		vhd_err_set(d->err, "%s: cannot use O_DIRECT (%s); the file system may not "
				    "support it: use the page cache instead",
			    img->path, strerror(-ret));
		return ret;
	}
	if (fstat(img->fd, &a) < 0 || fstat(img->data_fd, &b) < 0 || a.st_dev != b.st_dev ||
	    a.st_ino != b.st_ino) {
		vhd_err_set(d->err, "%s: the file was replaced while it was being opened", img->path);
		return -ESTALE;
	}
	return 0;
}

static bool under_dir(const char *real, const char *dir)
{
	size_t n = strlen(dir);

	return !strncmp(real, dir, n) && (real[n] == '/' || (n == 1 && dir[0] == '/'));
}

static int open_chain(struct vhd_image *img, const struct vhd_open_opts *opts,
		      struct vhd_diag *d);

/* True when path is img or one of the images above it. */
static bool in_chain(const struct vhd_image *img, const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return false;
	for (; img; img = img->child)
		if (img->dev == st.st_dev && img->ino == st.st_ino)
			return true;
	return false;
}

/* Tries each candidate path; the first regular file that parses and carries
 * the expected unique id becomes the parent. */
int image_open_parent(struct vhd_image *img, const struct vhd_open_opts *opts,
		      struct vhd_diag *d)
{
	char *cand[MAX_CANDIDATES];
	char tried[2048] = "", want[37], got[37], real[PATH_MAX], pdir[PATH_MAX];
	size_t n, tlen = 0;
	int ret = -ENOENT;

	vhd_uuid_format(img->hdr.parent_uuid, want);
	if (img->depth + 1 >= VHD_MAX_CHAIN_DEPTH) {
		diag_report(d, VHD_SEV_ERROR, "parent",
			    "chain deeper than %d images; refusing to follow it further",
			    VHD_MAX_CHAIN_DEPTH);
		return -ELOOP;
	}
	if (opts && opts->parent_dir && !realpath(opts->parent_dir, pdir)) {
		ret = -errno;
		diag_report(d, VHD_SEV_ERROR, "parent",
			    "the parent directory %s cannot be used: %s", opts->parent_dir,
			    strerror(-ret));
		return ret;
	}
	n = locator_candidates(img, cand, MAX_CANDIDATES);
	if (opts && opts->parent_dir) {
		/* Also the base names of the candidates, inside the allowed dir. */
		size_t base_n = n;

		for (size_t i = 0; i < base_n && n < MAX_CANDIDATES; i++) {
			const char *b = strrchr(cand[i], '/');
			char buf[PATH_MAX * 2];

			snprintf(buf, sizeof(buf), "%s/%s", pdir, b ? b + 1 : cand[i]);
			cand[n] = strdup(buf);
			if (cand[n])
				n++;
		}
	}
	for (size_t i = 0; i < n && !img->parent; i++) {
		struct vhd_image *p = NULL;
		struct vhd_err perr = {{0}};
		struct vhd_diag pd = {.file = cand[i], .err = &perr, .opts = opts};
		const char *why = NULL;
		char whybuf[VHD_ERR_LEN];

		if (!realpath(cand[i], real))
			continue; /* not there: not worth listing */
		if (opts && opts->parent_dir && !under_dir(real, pdir)) {
			why = "outside the allowed parent directory";
			goto next;
		}
		if (in_chain(img, real)) {
			diag_report(d, VHD_SEV_ERROR, "parent",
				    "parent loop: %s names %s, which is already in the chain",
				    img->path, real);
			ret = -ELOOP;
			goto out;
		}
		p = image_new(real);
		if (!p) {
			ret = -ENOMEM;
			break;
		}
		p->depth = img->depth + 1;
		p->child = img;
		if (image_open_file(p, false, opts, &pd) < 0 || image_load(p, &pd) < 0 ||
		    image_go_direct(p, opts, &pd) < 0) {
			snprintf(whybuf, sizeof(whybuf), "%s", perr.msg[0] ? perr.msg : "unreadable");
			why = whybuf;
			goto next;
		}
		if (memcmp(p->footer.uuid, img->hdr.parent_uuid, 16)) {
			vhd_uuid_format(p->footer.uuid, got);
			snprintf(whybuf, sizeof(whybuf), "unique id %s does not match", got);
			why = whybuf;
			goto next;
		}
		img->parent = p;
		p = NULL;
		ret = open_chain(img->parent, opts, d);
		if (ret < 0)
			goto out;
next:
		if (why && tlen < sizeof(tried) - 1)
			tlen += (size_t)snprintf(tried + tlen, sizeof(tried) - tlen, "%s%s (%s)",
						 tlen ? "; " : "", cand[i], why);
		image_free(p);
	}
	if (!img->parent) {
		diag_report(d, VHD_SEV_ERROR, "parent",
			    "cannot find the parent with unique id %s%s%s", want,
			    tlen ? "; rejected: " : " (no locator or parent name names an existing file)",
			    tried);
		ret = -ENOENT;
		goto out;
	}
	ret = 0;
out:
	for (size_t i = 0; i < n; i++)
		free(cand[i]);
	return ret;
}

/* Opens the parent of img (if differencing), and so on down the chain. */
static int open_chain(struct vhd_image *img, const struct vhd_open_opts *opts,
		      struct vhd_diag *d)
{
	if (img->footer.disk_type != VHD_TYPE_DIFF)
		return 0;
	if (opts && (opts->flags & VHD_OPEN_NO_PARENT))
		return 0;
	return image_open_parent(img, opts, d);
}

int vhd_open(const char *path, const struct vhd_open_opts *opts, struct vhd_image **out,
	     struct vhd_err *err)
{
	bool writable = opts && (opts->flags & VHD_OPEN_RDWR);
	struct vhd_diag d = {.file = path, .err = err, .opts = opts};
	struct vhd_image *img = image_new(path);
	int ret;

	*out = NULL;
	if (err)
		err->msg[0] = 0;
	if (!img)
		return -ENOMEM;
	ret = image_open_file(img, writable, opts, &d);
	if (ret < 0)
		goto fail;
	ret = image_load(img, &d);
	if (ret < 0)
		goto fail;
	ret = image_go_direct(img, opts, &d);
	if (ret < 0)
		goto fail;
	if (writable && (!img->footer_checksum_ok || img->used_head_footer)) {
		vhd_err_set(err, "%s: footer: the trailing footer is damaged; refusing to write "
				 "(open read-only, or repair the image first)", path);
		ret = -EROFS;
		goto fail;
	}
	ret = open_chain(img, opts, &d);
	if (ret < 0)
		goto fail;
	*out = img;
	return 0;
fail:
	if (err && !err->msg[0])
		vhd_err_set(err, "%s: %s", path, strerror(-ret));
	image_free(img);
	return ret;
}

int vhd_close(struct vhd_image *img)
{
	int ret = 0;

	if (!img)
		return 0;
	if (img->writable && !img->no_sync)
		ret = vhd_flush(img);
	image_free(img);
	return ret;
}

void vhd_get_info(const struct vhd_image *img, struct vhd_info *info)
{
	const struct vhd_footer *f = &img->footer;

	memset(info, 0, sizeof(*info));
	info->type = (enum vhd_type)f->disk_type;
	info->virtual_size = img->virtual_size;
	info->current_size = f->current_size;
	info->original_size = f->original_size;
	info->geometry = f->geometry;
	info->chs_size = vhd_chs_bytes(&f->geometry);
	info->size_source = img->size_source;
	vhd_fourcc_text(f->creator_app, info->creator_app);
	info->creator_version = f->creator_version;
	{
		uint8_t os[4];

		vhd_put_be32(os, f->creator_os);
		vhd_fourcc_text(os, info->creator_os);
	}
	info->timestamp = f->timestamp;
	memcpy(info->uuid, f->uuid, 16);
	info->saved_state = f->saved_state != 0;
	info->file_size = img->file_size;
	info->footer_checksum_ok = img->footer_checksum_ok;
	info->used_head_footer = img->used_head_footer;
	if (f->disk_type == VHD_TYPE_FIXED)
		return;
	info->block_size = img->block_size;
	info->max_table_entries = img->hdr.max_table_entries;
	info->table_offset = img->hdr.table_offset;
	info->allocated_blocks = img->nr_allocated;
	if (f->disk_type == VHD_TYPE_DIFF) {
		memcpy(info->parent_uuid, img->hdr.parent_uuid, 16);
		vhd_utf16_to_utf8(img->hdr.parent_name, VHD_PARENT_NAME_BYTES, true,
				  info->parent_name, sizeof(info->parent_name));
	}
}

const char *vhd_path(const struct vhd_image *img)
{
	return img->path;
}

uint64_t vhd_virtual_size(const struct vhd_image *img)
{
	return img->virtual_size;
}

bool vhd_is_writable(const struct vhd_image *img)
{
	return img->writable;
}

int vhd_fd(const struct vhd_image *img)
{
	return image_data_fd(img);
}

struct vhd_image *vhd_parent(const struct vhd_image *img)
{
	return img->parent;
}
