/* disk.h - the image-driver interface behind struct vhd_disk.
 *
 * One format = one drv_*.c file with a const ops table, listed in the
 * explicit registry in disk.c (no constructors).  Later formats (VHDX,
 * qcow2, VMDK, VDI) plug in here. */
#ifndef VHD_DISK_H
#define VHD_DISK_H

#include "vhd.h"

struct disk_driver {
	const char *name;
	enum vhd_format format;
	/* True when the open file looks like this format (auto-detection). */
	bool (*probe)(int fd, uint64_t file_size);
	int (*open)(const char *path, const struct vhd_open_opts *opts, void **priv,
		    uint64_t *size, struct vhd_err *err);
	int (*close)(void *priv);
	int (*map)(void *priv, uint64_t off, uint64_t len, struct vhd_extent *ext);
	int (*pread)(void *priv, void *buf, uint64_t len, uint64_t off);
	int (*pwrite)(void *priv, const void *buf, uint64_t len, uint64_t off);
	int (*flush)(void *priv);
	/* Start writing dirty data back without waiting (may be NULL). */
	void (*start_writeback)(void *priv);
	struct vhd_image *(*image)(void *priv);
};

extern const struct disk_driver vhd_raw_driver;
extern const struct disk_driver vhd_vhd_driver;

#endif
