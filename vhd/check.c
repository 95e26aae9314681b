/* check.c - full structural validation of an image and its chain.
 *
 * Each file of the chain is parsed in "report everything" mode (the same
 * validator open uses), then the parent is located the way open does it. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int check_one(const char *path, const struct vhd_open_opts *opts,
		     struct vhd_check_report *r, struct vhd_image **out, struct vhd_err *err)
{
	struct vhd_diag d = {.file = path, .report = r, .opts = opts};
	struct vhd_image *img = calloc(1, sizeof(*img));
	struct stat st;
	int ret;

	*out = NULL;
	if (!img)
		return -ENOMEM;
	img->path = strdup(path);
	for (int i = 0; i < VHD_BITMAP_CACHE_SLOTS; i++)
		img->cache[i].block = VHD_BAT_UNUSED;
	img->data_fd = -1;
	img->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (!img->path || img->fd < 0) {
		ret = img->path ? -errno : -ENOMEM;
		vhd_err_set(err, "%s: %s", path, strerror(-ret));
		image_free(img);
		return ret;
	}
	if (fstat(img->fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		vhd_err_set(err, "%s: not a regular file", path);
		image_free(img);
		return -EINVAL;
	}
	ret = image_load(img, &d);
	if (ret < 0 && ret != -EINVAL) {
		vhd_err_set(err, "%s: read failed: %s", path, strerror(-ret));
		image_free(img);
		return ret;
	}
	if (ret == 0)
		*out = img;
	else
		image_free(img);
	return 0;
}

int vhd_check(const char *path, const struct vhd_open_opts *opts,
	      struct vhd_check_report *r, struct vhd_err *err)
{
	struct vhd_image *img = NULL;
	char *cur = strdup(path);
	dev_t devs[VHD_MAX_CHAIN_DEPTH];
	ino_t inos[VHD_MAX_CHAIN_DEPTH];
	int ret = 0;

	memset(r, 0, sizeof(*r));
	if (err)
		err->msg[0] = 0;
	if (!cur)
		return -ENOMEM;
	/* The chain is walked one file at a time: each file checked in full,
	 * then its parent found with the opener's rules. */
	for (unsigned depth = 0;; depth++) {
		struct vhd_diag d = {.file = cur, .report = r, .opts = opts};
		struct vhd_open_opts po = opts ? *opts : (struct vhd_open_opts){0};

		ret = check_one(cur, opts, r, &img, err);
		if (ret < 0 && depth == 0)
			goto out;
		ret = 0;
		r->chain_depth = depth + 1;
		if (img) {
			for (unsigned i = 0; i < depth; i++)
				if (devs[i] == img->dev && inos[i] == img->ino) {
					diag_report(&d, VHD_SEV_ERROR, "parent",
						    "parent loop: %s is already in the chain", cur);
					goto out;
				}
			devs[depth] = img->dev;
			inos[depth] = img->ino;
		}
		if (!img || img->footer.disk_type != VHD_TYPE_DIFF ||
		    (opts && (opts->flags & VHD_OPEN_NO_PARENT)))
			break;
		if (depth + 1 >= VHD_MAX_CHAIN_DEPTH) {
			diag_report(&d, VHD_SEV_ERROR, "parent", "chain deeper than %d images",
				    VHD_MAX_CHAIN_DEPTH);
			break;
		}
		/* Find the parent with the opener's rules, then check it in full
		 * on the next round. */
		po.flags = (po.flags & ~VHD_OPEN_RDWR) | VHD_OPEN_NO_LOCK | VHD_OPEN_NO_PARENT;
		img->depth = depth;
		if (image_open_parent(img, &po, &d) < 0 || !img->parent)
			break;
		free(cur);
		cur = strdup(img->parent->path);
		image_free(img);
		img = NULL;
		if (!cur) {
			ret = -ENOMEM;
			goto out;
		}
	}
out:
	image_free(img);
	free(cur);
	return ret;
}
