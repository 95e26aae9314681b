/* argv.c - the command lines of a partition's processes: vhd-vspd (its
 * disks) and QEMU (the virtual machine). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* QEMU's option parser splits at commas; a literal comma is doubled. */
static char *qemu_escape(const char *s)
{
	size_t n = 0;
	char *out, *o;

	for (const char *p = s; *p; p++)
		n += *p == ',' ? 2 : 1;
	out = malloc(n + 1);
	if (!out)
		return NULL;
	o = out;
	for (const char *p = s; *p; p++) {
		*o++ = *p;
		if (*p == ',')
			*o++ = ',';
	}
	*o = 0;
	return out;
}

static int sock_path(const struct hv_paths *p, const char *leaf, char *buf, size_t len,
		     struct hv_err *err)
{
	int n = snprintf(buf, len, "%s/%s", p->run_dir, leaf);

	if (n < 0 || (size_t)n >= len || n > HV_SUN_PATH_MAX) {
		hv_err_set(err, "the socket path %s/%s is too long for a Unix socket (%d bytes "
			   "at most): use a shorter --state-dir", p->run_dir, leaf, HV_SUN_PATH_MAX);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* The leaf name of synthetic disk I's vhost-user socket. */
#define VU_LEAF_LEN 32
static const char *vu_leaf(unsigned i, char leaf[VU_LEAF_LEN])
{
	snprintf(leaf, VU_LEAF_LEN, "vu%u.sock", i);
	return leaf;
}

/* run_dir/LEAF escaped for a QEMU option, malloc'd: 0, -ENAMETOOLONG (err
 * says why) or -ENOMEM. */
static int qemu_sock(const struct hv_paths *p, const char *leaf, char **out,
		     struct hv_err *err)
{
	char sock[256];
	int ret = sock_path(p, leaf, sock, sizeof(sock), err);

	*out = NULL;
	if (ret < 0)
		return ret;
	*out = qemu_escape(sock);
	return *out ? 0 : -ENOMEM;
}

/* A QMP monitor on run_dir/LEAF, its chardev named ID. */
static int add_qmp_monitor(struct hv_argv *a, const struct hv_paths *p, const char *leaf,
			   const char *id, struct hv_err *err)
{
	char *e;
	int ret = qemu_sock(p, leaf, &e, err);

	if (ret == 0 && (hv_argv_add(a, "-chardev") ||
			 hv_argv_addf(a, "socket,id=%s,path=%s,server=on,wait=off", id, e) ||
			 hv_argv_add(a, "-mon") ||
			 hv_argv_addf(a, "chardev=%s,mode=control", id)))
		ret = -ENOMEM;
	free(e);
	return ret;
}

/* The end of building a command line: on success a moves to out; an
 * -ENOMEM gets its message. */
static int argv_finish(struct hv_argv *a, int ret, struct hv_argv *out, struct hv_err *err)
{
	if (ret == 0) {
		*out = *a;
		*a = (struct hv_argv){0};
	} else if (ret == -ENOMEM) {
		hv_err_set(err, "out of memory");
	}
	hv_argv_free(a);
	return ret;
}

int hv_vspd_argv(const struct hv_config *c, const char *vspd, const struct hv_paths *p,
		 struct hv_argv *out, struct hv_err *err)
{
	struct hv_argv a = {0};
	char sock[256], leaf[VU_LEAF_LEN];
	unsigned queues = 0;
	int ret = -ENOMEM;

	*out = (struct hv_argv){0};
	/* The NBD socket always exists (private to the partition), so that
	 * vhd-vspd never falls back to its shared default socket. */
	if ((ret = sock_path(p, "nbd.sock", sock, sizeof(sock), err)) < 0)
		goto out;
	ret = -ENOMEM;
	if (hv_argv_add(&a, vspd) || hv_argv_add(&a, "-s") || hv_argv_add(&a, sock) ||
	    hv_argv_add(&a, "--pid-file") || hv_argv_add(&a, p->vspd_pid))
		goto out;
	for (unsigned i = 0; i < c->nr_disks; i++) {
		const struct hv_disk_config *d = &c->disks[i];

		if (hv_argv_add(&a, "-e") ||
		    hv_argv_addf(&a, "d%u=%s%s", i, d->path, d->read_only ? ",ro" : ""))
			goto out;
	}
	/* vhd-vspd's --num-queues is per daemon: the most any synthetic disk
	 * wants (QEMU's num-queues per device may be lower). */
	for (unsigned i = 0; i < c->nr_disks; i++)
		if (c->disks[i].bus == HV_BUS_SYNTHETIC && c->disks[i].num_queues > queues)
			queues = c->disks[i].num_queues;
	if (queues && (hv_argv_add(&a, "--num-queues") || hv_argv_addf(&a, "%u", queues)))
		goto out;
	for (unsigned i = 0; i < c->nr_disks; i++) {
		if (c->disks[i].bus != HV_BUS_SYNTHETIC)
			continue;
		if ((ret = sock_path(p, vu_leaf(i, leaf), sock, sizeof(sock), err)) < 0)
			goto out;
		ret = -ENOMEM;
		if (hv_argv_add(&a, "--vhost-user") || hv_argv_addf(&a, "d%u=%s", i, sock))
			goto out;
	}
	ret = 0;
out:
	return argv_finish(&a, ret, out, err);
}

int hv_qemu_argv(const struct hv_config *c, const char *qemu, const char *accel,
		 const struct hv_paths *p, struct hv_argv *out, struct hv_err *err)
{
	struct hv_argv a = {0};
	char *e = NULL;
	bool kvm;
	int ret = -ENOMEM;

	*out = (struct hv_argv){0};
	accel = accel ? accel : "tcg";
	if (strcmp(accel, "tcg") && strcmp(accel, "kvm")) {
		hv_err_set(err, "accelerator \"%s\" is not tcg or kvm", accel);
		return -EINVAL;
	}
	kvm = !strcmp(accel, "kvm");
	if (hv_argv_add(&a, qemu) || hv_argv_add(&a, "-name") ||
	    hv_argv_addf(&a, "guest=%s,debug-threads=on", c->name) ||
	    hv_argv_add(&a, "-nodefaults") || hv_argv_add(&a, "-no-user-config") ||
	    hv_argv_add(&a, "-display") || hv_argv_add(&a, "none") ||
	    hv_argv_add(&a, "-machine") ||
	    hv_argv_addf(&a, "%s,memory-backend=hv-mem", c->machine ? c->machine : "pc") ||
	    hv_argv_add(&a, "-accel") || hv_argv_add(&a, accel) ||
	    hv_argv_add(&a, "-cpu") || hv_argv_add(&a, kvm ? "host" : "max") ||
	    hv_argv_add(&a, "-m") || hv_argv_addf(&a, "%uM", c->memory_mb) ||
	    /* Guest RAM in a memfd shared with the VSP: vhost-user-blk maps it
	     * to reach the virtqueues and the buffers they point to. */
	    hv_argv_add(&a, "-object") ||
	    hv_argv_addf(&a, "memory-backend-memfd,id=hv-mem,size=%uM,share=on", c->memory_mb) ||
	    hv_argv_add(&a, "-smp") || hv_argv_addf(&a, "%u", c->vcpus))
		goto out;
	e = qemu_escape(p->serial_log);
	if (!e)
		goto out;
	if (hv_argv_add(&a, "-chardev") ||
	    hv_argv_addf(&a, "file,id=hv-serial,path=%s,append=on", e) ||
	    hv_argv_add(&a, "-serial") || hv_argv_add(&a, "chardev:hv-serial"))
		goto out;
	if ((ret = add_qmp_monitor(&a, p, "qmp.sock", "hv-qmp", err)) < 0 ||
	    (ret = add_qmp_monitor(&a, p, "qmp-worker.sock", "hv-qmpw", err)) < 0)
		goto out;
	ret = -ENOMEM;
	/* Paused until the worker listens for events and says cont. */
	if (hv_argv_add(&a, "-S") || (c->reboot_poweroff && hv_argv_add(&a, "-no-reboot")))
		goto out;
	if (c->kernel) {
		if (hv_argv_add(&a, "-kernel") || hv_argv_add(&a, c->kernel))
			goto out;
		if (c->initrd && (hv_argv_add(&a, "-initrd") || hv_argv_add(&a, c->initrd)))
			goto out;
		if (c->cmdline && (hv_argv_add(&a, "-append") || hv_argv_add(&a, c->cmdline)))
			goto out;
	}
	for (unsigned i = 0; i < c->nr_disks; i++) {
		const struct hv_disk_config *d = &c->disks[i];
		bool vu = d->bus == HV_BUS_SYNTHETIC;
		char boot[32] = "", leaf[VU_LEAF_LEN];

		if (c->boot_disk == (int)i)
			snprintf(boot, sizeof(boot), ",bootindex=1");
		free(e);
		if ((ret = qemu_sock(p, vu ? vu_leaf(i, leaf) : "nbd.sock", &e, err)) < 0)
			goto out;
		ret = -ENOMEM;
		if (vu) {
			/* reconnect=1: if the VSP restarts, QEMU reconnects to it. */
			if (hv_argv_add(&a, "-chardev") ||
			    hv_argv_addf(&a, "socket,id=hv-vu%u,path=%s,reconnect=1", i, e) ||
			    hv_argv_add(&a, "-device") ||
			    hv_argv_addf(&a, "vhost-user-blk-pci,id=hv-disk%u,chardev=hv-vu%u,"
					 "num-queues=%u%s", i, i, d->num_queues, boot))
				goto out;
		} else if (hv_argv_add(&a, "-blockdev") ||
			   hv_argv_addf(&a, "driver=nbd,node-name=hv-nbd%u,server.type=unix,"
					"server.path=%s,export=d%u", i, e, i) ||
			   hv_argv_add(&a, "-device") ||
			   hv_argv_addf(&a, "ide-hd,id=hv-disk%u,drive=hv-nbd%u%s", i, i, boot)) {
			goto out;
		}
	}
	ret = 0;
out:
	free(e);
	return argv_finish(&a, ret, out, err);
}
