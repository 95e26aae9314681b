/* create.c - new fixed, dynamic and differencing VHDs.
 *
 * Creator application: we write "win " (version 10.0, host "Wi2k"), the tag
 * Windows/Hyper-V itself writes.  Reason: the requested size must read back
 * exactly everywhere, and the footer's current size is usually larger than
 * the CHS product.  qemu < 10 (Debian 12's 7.2) trusts current size only for
 * "win ", "qem2", "d2v ", "CTXS", "tap\0" or a maximal CHS geometry; qemu >= 10,
 * Hyper-V, VirtualBox and libvhdi trust it for anything but "vpc "/"qemu".
 * "win " is the one tag every reader treats as current-size-based without
 * writing the 65535/16/255 geometry (which blktap's vhd-util rejects on
 * small disks) and without pretending to be qemu or blktap.
 *
 * Layout of dynamic/differencing files we create (all offsets 512-aligned):
 *   0      footer copy
 *   512    dynamic header (1024)
 *   1536   BAT, padded with 0xFF to a sector
 *   ...    parent locator data (W2ru, W2ku, MacX), each in >= 4 KiB of space
 *          so that set-parent can usually rewrite it in place
 *   ...    blocks, data 4 KiB aligned (bitmap in the 512 bytes before)
 *   end    footer
 * The file is built beside its final name, fsynced, renamed, and the
 * directory fsynced, so a crash never leaves a half-made image.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define BAT_OFFSET 1536u
#define LOCATOR_MIN_SPACE 4096u
#define LOCATOR_BUF 65536u

static void footer_init(struct vhd_footer *f, enum vhd_type type, uint64_t size)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->cookie, VHD_COOKIE, 8);
	f->features = VHD_FEATURES_RESERVED;
	f->version = VHD_VERSION;
	f->data_offset = type == VHD_TYPE_FIXED ? VHD_NO_OFFSET : VHD_FOOTER_SIZE;
	f->timestamp = vhd_now();
	memcpy(f->creator_app, "win ", 4);
	f->creator_version = 0x000A0000u;
	f->creator_os = VHD_OS_WINDOWS;
	f->original_size = size;
	f->current_size = size;
	vhd_chs_for_size(size, &f->geometry);
	f->disk_type = (uint32_t)type;
	vhd_random_uuid(f->uuid);
}

struct parent_ref {
	uint8_t uuid[16];
	uint32_t mtime;
	uint64_t size;
	uint32_t block_size;
	const char *path;
};

/* Fills locator slots and their data for a differencing child.  `meta` is
 * the buffer of the file's first bytes; returns the new end of metadata. */
static int add_locators(struct vhd_dynhdr *h, const char *child, const struct parent_ref *p,
			uint8_t **meta, uint64_t *end, struct vhd_err *err)
{
	static const uint32_t codes[] = {VHD_PLAT_W2RU, VHD_PLAT_W2KU, VHD_PLAT_MACX};
	uint8_t *data = malloc(LOCATOR_BUF);
	char name[PATH_MAX];
	const char *base;
	int ret = 0;

	if (!data)
		return -ENOMEM;
	base = strrchr(p->path, '/');
	snprintf(name, sizeof(name), "%s", base ? base + 1 : p->path);
	ret = vhd_utf8_to_utf16(name, true, h->parent_name, VHD_PARENT_NAME_BYTES);
	if (ret < 0) {
		vhd_err_set(err, "%s: parent name: \"%s\" is longer than the 256 UTF-16 units the header holds",
			    child, name);
		goto out;
	}
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		uint64_t space;
		uint8_t *grown;
		char pn[5];

		ret = locator_encode_path(codes[i], child, p->path, data, LOCATOR_BUF);
		if (ret < 0) {
			vhd_err_set(err, "%s: parent locator %s: cannot encode the path of %s: %s",
				    child, vhd_platform_name(codes[i], pn), p->path, strerror(-ret));
			goto out;
		}
		space = round_up((uint64_t)ret, VHD_SECTOR_SIZE);
		if (space < LOCATOR_MIN_SPACE)
			space = LOCATOR_MIN_SPACE;
		grown = realloc(*meta, *end + space);
		if (!grown) {
			ret = -ENOMEM;
			goto out;
		}
		*meta = grown;
		memset(*meta + *end, 0, space);
		memcpy(*meta + *end, data, (size_t)ret);
		h->loc[i].code = codes[i];
		h->loc[i].data_space = (uint32_t)space; /* bytes, as Hyper-V writes */
		h->loc[i].data_length = (uint32_t)ret;
		h->loc[i].data_offset = *end;
		*end += space;
	}
	ret = 0;
out:
	free(data);
	return ret;
}

static int write_dynamic(int fd, const char *path, struct vhd_footer *f, uint32_t block_size,
			 const struct parent_ref *parent, struct vhd_err *err)
{
	uint32_t entries = (uint32_t)((f->current_size + block_size - 1) / block_size);
	uint64_t bat_bytes = round_up(entries ? 4ull * entries : 1, VHD_SECTOR_SIZE);
	uint64_t end = BAT_OFFSET + bat_bytes;
	uint8_t *meta = malloc(end);
	uint8_t tail[VHD_FOOTER_SIZE];
	struct vhd_dynhdr h;
	int ret;

	if (!meta)
		return -ENOMEM;
	memset(meta, 0, BAT_OFFSET);
	memset(meta + BAT_OFFSET, 0xFF, bat_bytes);
	memset(&h, 0, sizeof(h));
	memcpy(h.cookie, VHD_DYN_COOKIE, 8);
	h.data_offset = VHD_NO_OFFSET;
	h.table_offset = BAT_OFFSET;
	h.version = VHD_VERSION;
	h.max_table_entries = entries;
	h.block_size = block_size;
	if (parent) {
		memcpy(h.parent_uuid, parent->uuid, 16);
		h.parent_timestamp = parent->mtime;
		ret = add_locators(&h, path, parent, &meta, &end, err);
		if (ret < 0)
			goto out;
	}
	vhd_footer_encode(f, meta);
	vhd_dynhdr_encode(&h, meta + VHD_FOOTER_SIZE);
	ret = pwrite_full(fd, meta, end, 0);
	if (ret == 0) {
		memcpy(tail, meta, VHD_FOOTER_SIZE);
		ret = pwrite_full(fd, tail, VHD_FOOTER_SIZE, end);
	}
out:
	free(meta);
	return ret;
}

static int write_fixed(int fd, struct vhd_footer *f, bool preallocate)
{
	uint8_t buf[VHD_FOOTER_SIZE];

	if (preallocate && f->current_size) {
		int r = posix_fallocate(fd, 0, (off_t)f->current_size);

		if (r)
			return -r;
	} else if (ftruncate(fd, (off_t)f->current_size) < 0) {
		return -errno;
	}
	vhd_footer_encode(f, buf);
	return pwrite_full(fd, buf, sizeof(buf), f->current_size);
}

static int load_parent(const char *path, struct parent_ref *p,
		       struct vhd_err *err)
{
	struct vhd_open_opts o = {.flags = 0};
	struct vhd_image *img = NULL;
	struct stat st;
	int ret;

	ret = vhd_open(path, &o, &img, err);
	if (ret < 0)
		return ret;
	memcpy(p->uuid, img->footer.uuid, 16);
	p->size = img->virtual_size;
	p->block_size = img->block_size;
	p->path = path;
	p->mtime = fstat(img->fd, &st) == 0 && st.st_mtime > VHD_EPOCH_OFFSET
			   ? (uint32_t)(st.st_mtime - VHD_EPOCH_OFFSET)
			   : 0;
	vhd_close(img);
	return 0;
}

int vhd_fsync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, ret = 0;

	if (slash)
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	else
		snprintf(dir, sizeof(dir), ".");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

int vhd_create(const char *path, const struct vhd_create_opts *opts, struct vhd_err *err)
{
	struct parent_ref parent = {0};
	struct vhd_footer f;
	char tmp[PATH_MAX];
	uint64_t size = round_up(opts->size, VHD_SECTOR_SIZE);
	uint32_t bs = opts->block_size;
	struct stat st;
	int fd = -1, ret;

	if (err)
		err->msg[0] = 0;
	if (opts->type != VHD_TYPE_FIXED && opts->type != VHD_TYPE_DYNAMIC &&
	    opts->type != VHD_TYPE_DIFF) {
		vhd_err_set(err, "%s: type: %d is not fixed, dynamic or differencing", path, opts->type);
		return -EINVAL;
	}
	if (!opts->overwrite && lstat(path, &st) == 0) {
		vhd_err_set(err, "%s: already exists (pass --force to replace it)", path);
		return -EEXIST;
	}
	if (opts->type == VHD_TYPE_DIFF) {
		if (!opts->parent) {
			vhd_err_set(err, "%s: a differencing disk needs a parent", path);
			return -EINVAL;
		}
		ret = load_parent(opts->parent, &parent, err);
		if (ret < 0)
			return ret;
		size = parent.size;
		if (!bs)
			bs = parent.block_size ? parent.block_size : VHD_DEFAULT_BLOCK_SIZE;
	} else if (opts->parent) {
		vhd_err_set(err, "%s: only differencing disks have a parent", path);
		return -EINVAL;
	}
	if (size == 0) {
		vhd_err_set(err, "%s: size: a disk needs at least one sector", path);
		return -EINVAL;
	}
	if (size > VHD_MAX_SIZE) {
		vhd_err_set(err, "%s: size: %" PRIu64 " bytes exceeds the VHD maximum of 2040 GiB (%llu bytes)",
			    path, size, VHD_MAX_SIZE);
		return -EFBIG;
	}
	if (!bs)
		bs = VHD_DEFAULT_BLOCK_SIZE;
	if (opts->type != VHD_TYPE_FIXED &&
	    (bs < VHD_MIN_BLOCK_SIZE || bs > VHD_MAX_BLOCK_SIZE || (bs & (bs - 1)))) {
		vhd_err_set(err, "%s: block size: %u is not a power of two between 512 bytes and 256 MiB",
			    path, bs);
		return -EINVAL;
	}

	snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		vhd_err_set(err, "%s: cannot create a file beside it: %s", path, strerror(errno));
		return ret;
	}
	fchmod(fd, 0644);
	footer_init(&f, opts->type, size);
	if (opts->type == VHD_TYPE_FIXED)
		ret = write_fixed(fd, &f, opts->preallocate);
	else
		ret = write_dynamic(fd, path, &f, bs, opts->type == VHD_TYPE_DIFF ? &parent : NULL, err);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret == 0)
		ret = vhd_fsync_dir_of(path);
	if (ret < 0 && err && !err->msg[0])
		vhd_err_set(err, "%s: %s", path, strerror(-ret));
	close(fd);
	if (ret < 0)
		unlink(tmp);
	return ret;
}
