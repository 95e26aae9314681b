/* disk.c - struct vhd_disk: one handle over any supported format. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk.h"
#include "internal.h"

/* Probed in order: the first that recognises the file wins; raw last. */
static const struct disk_driver *const drivers[] = {
	&vhd_vhd_driver,
	&vhd_raw_driver,
};

struct vhd_disk {
	const struct disk_driver *drv;
	void *priv;
	uint64_t size;
};

bool vhd_format_parse(const char *name, enum vhd_format *fmt)
{
	if (!strcasecmp(name, "vhd") || !strcasecmp(name, "vpc"))
		*fmt = VHD_FMT_VHD;
	else if (!strcasecmp(name, "raw"))
		*fmt = VHD_FMT_RAW;
	else if (!strcasecmp(name, "auto"))
		*fmt = VHD_FMT_AUTO;
	else
		return false;
	return true;
}

static const struct disk_driver *probe(const char *path, struct vhd_err *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	const struct disk_driver *found = NULL;

	if (fd < 0) {
		vhd_err_set(err, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == 0) {
		for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]) && !found; i++)
			if (drivers[i]->probe(fd, (uint64_t)st.st_size))
				found = drivers[i];
	}
	close(fd);
	return found;
}

int vhd_disk_open(const char *path, enum vhd_format fmt, const struct vhd_open_opts *opts,
		  struct vhd_disk **out, struct vhd_err *err)
{
	const struct disk_driver *drv = NULL;
	struct vhd_disk *d;
	int ret;

	*out = NULL;
	if (fmt == VHD_FMT_AUTO) {
		drv = probe(path, err);
		if (!drv)
			return -ENOENT;
	} else {
		for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
			if (drivers[i]->format == fmt)
				drv = drivers[i];
	}
	if (!drv)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->drv = drv;
	ret = drv->open(path, opts, &d->priv, &d->size, err);
	if (ret < 0) {
		free(d);
		return ret;
	}
	*out = d;
	return 0;
}

int vhd_disk_close(struct vhd_disk *d)
{
	int ret;

	if (!d)
		return 0;
	ret = d->drv->close(d->priv);
	free(d);
	return ret;
}

uint64_t vhd_disk_size(const struct vhd_disk *d)
{
	return d->size;
}

const char *vhd_disk_format_name(const struct vhd_disk *d)
{
	return d->drv->name;
}

struct vhd_image *vhd_disk_image(struct vhd_disk *d)
{
	return d->drv->image ? d->drv->image(d->priv) : NULL;
}

int vhd_disk_map(struct vhd_disk *d, uint64_t off, uint64_t len, struct vhd_extent *ext)
{
	if (len == 0 || off > d->size || d->size - off < len)
		return -EINVAL;
	return d->drv->map(d->priv, off, len, ext);
}

int vhd_disk_pread(struct vhd_disk *d, void *buf, uint64_t len, uint64_t off)
{
	if (off > d->size || d->size - off < len)
		return -EINVAL;
	return d->drv->pread(d->priv, buf, len, off);
}

int vhd_disk_pwrite(struct vhd_disk *d, const void *buf, uint64_t len, uint64_t off)
{
	if (off > d->size || d->size - off < len)
		return -ENOSPC;
	return d->drv->pwrite(d->priv, buf, len, off);
}

int vhd_disk_flush(struct vhd_disk *d)
{
	return d->drv->flush(d->priv);
}

void vhd_disk_start_writeback(struct vhd_disk *d)
{
	if (d->drv->start_writeback)
		d->drv->start_writeback(d->priv);
}
