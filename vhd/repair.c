/* repair.c - fix what can be fixed without losing data.
 *
 * Each repair keeps the image openable at every moment:
 *  - an interrupted merge is rolled forward (merge.c);
 *  - a damaged trailing footer is rewritten from the sound copy at offset 0,
 *    a missing or different copy at offset 0 from the trailing footer;
 *  - footer and dynamic-header checksums are recomputed when every field
 *    otherwise validates (the bytes are kept, only the sum changes);
 *  - leaked space after the last structure is given back: the footer is
 *    written at the new end inside the leaked (unreferenced) space first,
 *    then the file is truncated right after it, so either the old or the new
 *    trailing footer is the one an opener finds.
 * Nothing else is changed: errors that would need guessing (a BAT entry
 * beyond the end of the file, overlapping blocks) are reported, not
 * "fixed". */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "internal.h"

__attribute__((format(printf, 2, 3)))
static void action(struct vhd_repair_report *r, const char *fmt, ...)
{
	va_list ap;

	if (r->count >= VHD_REPAIR_MAX_ACTIONS)
		return;
	va_start(ap, fmt);
	vsnprintf(r->actions[r->count++], sizeof(r->actions[0]), fmt, ap);
	va_end(ap);
}

static int write_footer(struct vhd_image *img, uint64_t pos)
{
	uint8_t buf[VHD_FOOTER_SIZE];

	vhd_footer_encode(&img->footer, buf);
	return pwrite_full(img->fd, buf, sizeof(buf), pos);
}

static int sync_fd(int fd)
{
	return fdatasync(fd) < 0 ? -errno : 0;
}

/* Trailing footer and the copy at offset 0. */
static int repair_footers(struct vhd_image *img, bool dry, struct vhd_repair_report *r)
{
	uint8_t head[VHD_FOOTER_SIZE], tail[VHD_FOOTER_SIZE], want[VHD_FOOTER_SIZE];
	bool dynamic = img->footer.disk_type != VHD_TYPE_FIXED;
	int ret;

	if (!img->footer_checksum_ok) {
		/* cookie right, checksum wrong in every copy: keep the fields */
		action(r, "recompute the footer checksum (stored 0x%08x)", img->footer.checksum);
	}
	vhd_footer_encode(&img->footer, want);
	ret = pread_full(img->fd, tail, sizeof(tail), img->footer_pos);
	if (ret < 0)
		return ret;
	if (memcmp(tail, want, sizeof(want))) {
		if (img->footer_checksum_ok)
			action(r, "rewrite the trailing footer at offset %" PRIu64 " from the copy at offset 0",
			       img->footer_pos);
		if (!dry) {
			ret = write_footer(img, img->footer_pos);
			if (ret == 0)
				ret = sync_fd(img->fd);
			if (ret < 0)
				return ret;
		}
	}
	if (!dynamic)
		return 0;
	ret = pread_full(img->fd, head, sizeof(head), 0);
	if (ret < 0)
		return ret;
	if (memcmp(head, want, sizeof(want))) {
		if (img->footer_checksum_ok)
			action(r, "rewrite the footer copy at offset 0 from the trailing footer");
		if (!dry) {
			ret = write_footer(img, 0);
			if (ret == 0)
				ret = sync_fd(img->fd);
		}
	}
	return ret;
}

static int repair_header(struct vhd_image *img, bool dry, struct vhd_repair_report *r)
{
	uint8_t buf[VHD_DYNHDR_SIZE];
	int ret;

	if (img->footer.disk_type == VHD_TYPE_FIXED)
		return 0;
	ret = pread_full(img->fd, buf, sizeof(buf), img->footer.data_offset);
	if (ret < 0 || vhd_dynhdr_checksum_ok(buf))
		return ret;
	action(r, "recompute the dynamic header checksum (stored 0x%08x, computed 0x%08x)",
	       vhd_be32(buf + 36), vhd_checksum(buf, VHD_DYNHDR_SIZE, 36));
	if (dry)
		return 0;
	vhd_put_be32(buf + 36, vhd_checksum(buf, VHD_DYNHDR_SIZE, 36));
	ret = pwrite_full(img->fd, buf + 36, 4, img->footer.data_offset + 36); /* the sum only */
	return ret < 0 ? ret : sync_fd(img->fd);
}

/* Space after the last structure: footer into the leaked space, then cut. */
static int reclaim_tail(struct vhd_image *img, bool dry, struct vhd_repair_report *r)
{
	uint64_t end = round_up(img->data_end, VHD_SECTOR_SIZE);
	int ret;

	if (img->footer.disk_type == VHD_TYPE_FIXED || end >= img->footer_pos)
		return 0;
	action(r, "give back %" PRIu64 " leaked bytes at the end (file %" PRIu64 " -> %" PRIu64 " bytes)",
	       img->footer_pos - end, img->file_size, end + VHD_FOOTER_SIZE);
	if (dry)
		return 0;
	ret = write_footer(img, end);
	if (ret == 0)
		ret = sync_fd(img->fd);
	if (ret == 0 && ftruncate(img->fd, (off_t)(end + VHD_FOOTER_SIZE)) < 0)
		ret = -errno;
	if (ret == 0)
		ret = fsync(img->fd) < 0 ? -errno : 0;
	return ret;
}

int vhd_repair(const char *path, const struct vhd_open_opts *opts, bool dry_run,
	       struct vhd_repair_report *r, struct vhd_err *err)
{
	struct vhd_check_report cr = {0};
	struct vhd_diag d = {.file = path, .report = &cr, .opts = opts};
	struct vhd_image *img = NULL;
	int ret;

	memset(r, 0, sizeof(*r));
	if (err)
		err->msg[0] = 0;
	if (vhd_merge_pending(path)) {
		struct vhd_merge_opts mo = {0};
		struct vhd_merge_stats ms;

		action(r, "finish the interrupted merge of %s", path);
		if (!dry_run) {
			ret = vhd_merge(path, opts, &mo, &ms, err);
			if (ret < 0)
				goto out;
			snprintf(r->actions[r->count - 1], sizeof(r->actions[0]),
				 "finished the interrupted merge of %s into %s", path, ms.target);
		}
		if (access(path, F_OK) != 0) {
			ret = 0; /* the image itself was merged away */
			goto out;
		}
	}
	img = calloc(1, sizeof(*img));
	if (!img) {
		ret = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < VHD_BITMAP_CACHE_SLOTS; i++)
		img->cache[i].block = VHD_BAT_UNUSED;
	img->data_fd = -1;
	img->path = strdup(path);
	img->fd = open(path, (dry_run ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (!img->path || img->fd < 0) {
		ret = img->path ? -errno : -ENOMEM;
		vhd_err_set(err, "%s: %s", path, strerror(-ret));
		goto out;
	}
	if (!(opts && (opts->flags & VHD_OPEN_NO_LOCK)) &&
	    flock(img->fd, (dry_run ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		ret = -EBUSY;
		vhd_err_set(err, "%s: is in use by another process (lock conflict)", path);
		goto out;
	}
	ret = image_load(img, &d);
	if (ret < 0) {
		/* what cannot be parsed cannot be repaired without guessing */
		for (size_t i = 0; i < cr.count; i++)
			if (cr.problems[i].severity == VHD_SEV_ERROR) {
				vhd_err_set(err, "%s: %s: %s (not repairable without guessing)", path,
					    cr.problems[i].field, cr.problems[i].msg);
				break;
			}
		if (!err || !err->msg[0])
			vhd_err_set(err, "%s: %s", path, strerror(-ret));
		goto out;
	}
	ret = repair_footers(img, dry_run, r);
	if (ret == 0)
		ret = repair_header(img, dry_run, r);
	if (ret == 0)
		ret = reclaim_tail(img, dry_run, r);
	if (ret < 0)
		vhd_err_set(err, "%s: repair: %s", path, strerror(-ret));
out:
	vhd_check_report_free(&cr);
	image_free(img);
	return ret;
}
