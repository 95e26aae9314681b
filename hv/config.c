/* config.c - partition configs: JSON in, validated and normalised (absolute
 * paths, defaults filled in), JSON out.  Unknown keys are refused so that a
 * misspelt field does not silently fall back to a default. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MAX_CONFIG_BYTES (1u << 20)

bool hv_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

const char *hv_bus_name(enum hv_bus bus)
{
	return bus == HV_BUS_EMULATED ? "emulated" : "synthetic";
}

void hv_config_free(struct hv_config *c)
{
	if (!c)
		return;
	free(c->name);
	free(c->machine);
	free(c->kernel);
	free(c->initrd);
	free(c->cmdline);
	free(c->serial_log);
	for (unsigned i = 0; i < c->nr_disks; i++)
		free(c->disks[i].path);
	free(c);
}

/* path made absolute against base (NULL: cwd); the file need not exist. */
static int absolutize(char **path, const char *base, const char *what, const char *origin,
		      struct hv_err *err)
{
	char cwd[PATH_MAX], *abs;

	if (!*path || (*path)[0] == '/')
		return 0;
	if (!(*path)[0]) {
		hv_err_set(err, "%s: %s is empty", origin, what);
		return -EINVAL;
	}
	if (!base) {
		if (!getcwd(cwd, sizeof(cwd))) {
			hv_err_set(err, "%s: getcwd: %s", origin, strerror(errno));
			return -errno;
		}
		base = cwd;
	}
	abs = hv_strf("%s/%s", base, *path);
	if (!abs) {
		hv_err_set(err, "%s: out of memory", origin);
		return -ENOMEM;
	}
	free(*path);
	*path = abs;
	return 0;
}

static int need_file(const char *path, const char *what, const char *origin, struct hv_err *err)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		hv_err_set(err, "%s: %s \"%s\": %s", origin, what, path, strerror(errno));
		return -ENOENT;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		hv_err_set(err, "%s: %s \"%s\" is not a regular file", origin, what, path);
		return -EINVAL;
	}
	return 0;
}

static int check_config(struct hv_config *c, const char *origin, const char *base,
			bool check_files, struct hv_err *err)
{
	unsigned emulated = 0, max_emulated;
	int ret;

	if (!hv_name_valid(c->name)) {
		hv_err_set(err, "%s: name \"%s\" is not valid (1-64 of A-Z a-z 0-9 . _ -, not "
			   "starting with . or -)", origin, c->name ? c->name : "");
		return -EINVAL;
	}
	if (c->memory_mb < 16 || c->memory_mb > (1u << 20)) {
		hv_err_set(err, "%s: memory_mb %u is out of range (16..1048576)", origin,
			   c->memory_mb);
		return -EINVAL;
	}
	if (c->vcpus < 1 || c->vcpus > HV_MAX_VCPUS) {
		hv_err_set(err, "%s: vcpus %u is out of range (1..%d)", origin, c->vcpus,
			   HV_MAX_VCPUS);
		return -EINVAL;
	}
	if (!c->machine && !(c->machine = strdup("pc")))
		return -ENOMEM;
	if (strcmp(c->machine, "pc") && strcmp(c->machine, "q35")) {
		hv_err_set(err, "%s: machine \"%s\" is not pc or q35", origin, c->machine);
		return -EINVAL;
	}
	max_emulated = strcmp(c->machine, "pc") ? 6 : 4;
	if ((ret = absolutize(&c->kernel, base, "boot.kernel", origin, err)) < 0 ||
	    (ret = absolutize(&c->initrd, base, "boot.initrd", origin, err)) < 0 ||
	    (ret = absolutize(&c->serial_log, base, "serial_log", origin, err)) < 0)
		return ret;
	if (check_files && c->kernel &&
	    (ret = need_file(c->kernel, "boot.kernel", origin, err)) < 0)
		return ret;
	if (check_files && c->initrd &&
	    (ret = need_file(c->initrd, "boot.initrd", origin, err)) < 0)
		return ret;
	if ((c->initrd || c->cmdline) && !c->kernel) {
		hv_err_set(err, "%s: boot.initrd and boot.cmdline need boot.kernel", origin);
		return -EINVAL;
	}
	if (c->kernel && c->boot_disk >= 0) {
		hv_err_set(err, "%s: boot has both kernel and disk; choose one", origin);
		return -EINVAL;
	}
	if (!c->kernel && c->boot_disk < 0) {
		hv_err_set(err, "%s: nothing to boot: give boot.kernel or boot.disk", origin);
		return -EINVAL;
	}
	if (c->boot_disk >= (int)c->nr_disks) {
		hv_err_set(err, "%s: boot.disk %d: there are only %u disks", origin, c->boot_disk,
			   c->nr_disks);
		return -EINVAL;
	}
	for (unsigned i = 0; i < c->nr_disks; i++) {
		struct hv_disk_config *d = &c->disks[i];
		char what[32];

		snprintf(what, sizeof(what), "disks[%u].path", i);
		if (!d->path) {
			hv_err_set(err, "%s: disks[%u] has no path", origin, i);
			return -EINVAL;
		}
		if ((ret = absolutize(&d->path, base, what, origin, err)) < 0 ||
		    (check_files && (ret = need_file(d->path, what, origin, err)) < 0))
			return ret;
		if (d->bus == HV_BUS_EMULATED) {
			emulated++;
			/* QEMU's ide-hd refuses a read-only drive. */
			if (d->read_only) {
				hv_err_set(err, "%s: disks[%u]: an emulated (IDE/AHCI) disk cannot "
					   "be read_only; use bus \"synthetic\"", origin, i);
				return -EINVAL;
			}
			if (d->num_queues > 1) {
				hv_err_set(err, "%s: disks[%u]: num_queues %u: an emulated disk has "
					   "one queue", origin, i, d->num_queues);
				return -EINVAL;
			}
		} else if (d->num_queues > HV_MAX_QUEUES) {
			hv_err_set(err, "%s: disks[%u]: num_queues %u is out of range (1..%d)",
				   origin, i, d->num_queues, HV_MAX_QUEUES);
			return -EINVAL;
		} else if (d->num_queues == 0) {
			/* One virtqueue per vCPU, as the guest's blk-mq would use. */
			d->num_queues = c->vcpus < HV_MAX_QUEUES ? c->vcpus : HV_MAX_QUEUES;
		}
		for (unsigned j = 0; j < i; j++) {
			if (!strcmp(c->disks[j].path, d->path)) {
				hv_err_set(err, "%s: disks[%u] and disks[%u] are the same file %s",
					   origin, j, i, d->path);
				return -EINVAL;
			}
		}
	}
	if (emulated > max_emulated) {
		hv_err_set(err, "%s: %u emulated disks; machine %s has room for %u", origin,
			   emulated, c->machine, max_emulated);
		return -EINVAL;
	}
	return 0;
}

int hv_config_check(struct hv_config *c, const char *origin, struct hv_err *err)
{
	return check_config(c, origin, NULL, true, err);
}

/* Typed getters: each names the field and the value it refuses. */
static int get_string(struct json_object *v, const char *field, const char *origin, char **out,
		      struct hv_err *err)
{
	if (!json_object_is_type(v, json_type_string)) {
		hv_err_set(err, "%s: %s must be a string, not %s", origin, field,
			   json_object_to_json_string(v));
		return -EINVAL;
	}
	free(*out);
	*out = strdup(json_object_get_string(v));
	return *out ? 0 : -ENOMEM;
}

static int get_uint(struct json_object *v, const char *field, const char *origin, uint64_t max,
		    unsigned *out, struct hv_err *err)
{
	int64_t x;

	if (!json_object_is_type(v, json_type_int)) {
		hv_err_set(err, "%s: %s must be an integer, not %s", origin, field,
			   json_object_to_json_string(v));
		return -EINVAL;
	}
	x = json_object_get_int64(v);
	if (x < 0 || (uint64_t)x > max) {
		hv_err_set(err, "%s: %s %lld is out of range (0..%llu)", origin, field,
			   (long long)x, (unsigned long long)max);
		return -EINVAL;
	}
	*out = (unsigned)x;
	return 0;
}

static int get_bool(struct json_object *v, const char *field, const char *origin, bool *out,
		    struct hv_err *err)
{
	if (!json_object_is_type(v, json_type_boolean)) {
		hv_err_set(err, "%s: %s must be true or false, not %s", origin, field,
			   json_object_to_json_string(v));
		return -EINVAL;
	}
	*out = json_object_get_boolean(v);
	return 0;
}

static int parse_disk(struct json_object *jd, unsigned i, const char *origin,
		      struct hv_disk_config *d, struct hv_err *err)
{
	char field[64];
	int ret;

	if (!json_object_is_type(jd, json_type_object)) {
		hv_err_set(err, "%s: disks[%u] must be an object, not %s", origin, i,
			   json_object_to_json_string(jd));
		return -EINVAL;
	}
	json_object_object_foreach(jd, key, v) {
		snprintf(field, sizeof(field), "disks[%u].%s", i, key);
		if (!strcmp(key, "path")) {
			ret = get_string(v, field, origin, &d->path, err);
		} else if (!strcmp(key, "bus")) {
			const char *b = json_object_get_string(v);

			ret = 0;
			if (json_object_is_type(v, json_type_string) && !strcmp(b, "synthetic"))
				d->bus = HV_BUS_SYNTHETIC;
			else if (json_object_is_type(v, json_type_string) && !strcmp(b, "emulated"))
				d->bus = HV_BUS_EMULATED;
			else {
				hv_err_set(err, "%s: %s %s is not \"synthetic\" (vhost-user-blk) or "
					   "\"emulated\" (IDE/AHCI over NBD)", origin, field,
					   json_object_to_json_string(v));
				ret = -EINVAL;
			}
		} else if (!strcmp(key, "read_only")) {
			ret = get_bool(v, field, origin, &d->read_only, err);
		} else if (!strcmp(key, "num_queues")) {
			ret = get_uint(v, field, origin, HV_MAX_QUEUES, &d->num_queues, err);
		} else {
			hv_err_set(err, "%s: unknown field %s", origin, field);
			ret = -EINVAL;
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int parse_boot(struct json_object *jb, const char *origin, struct hv_config *c,
		      struct hv_err *err)
{
	int ret;

	if (!json_object_is_type(jb, json_type_object)) {
		hv_err_set(err, "%s: boot must be an object, not %s", origin,
			   json_object_to_json_string(jb));
		return -EINVAL;
	}
	json_object_object_foreach(jb, key, v) {
		if (!strcmp(key, "kernel")) {
			ret = get_string(v, "boot.kernel", origin, &c->kernel, err);
		} else if (!strcmp(key, "initrd")) {
			ret = get_string(v, "boot.initrd", origin, &c->initrd, err);
		} else if (!strcmp(key, "cmdline")) {
			ret = get_string(v, "boot.cmdline", origin, &c->cmdline, err);
		} else if (!strcmp(key, "disk")) {
			unsigned d;

			ret = get_uint(v, "boot.disk", origin, HV_MAX_DISKS - 1, &d, err);
			c->boot_disk = (int)d;
		} else {
			hv_err_set(err, "%s: unknown field boot.%s", origin, key);
			ret = -EINVAL;
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int parse(const char *text, const char *origin, const char *base_dir, bool check_files,
		 struct hv_config **out, struct hv_err *err)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *j = NULL;
	struct hv_config *c = calloc(1, sizeof(*c));
	int ret = -EINVAL;

	*out = NULL;
	if (!tok || !c) {
		hv_err_set(err, "%s: out of memory", origin);
		ret = -ENOMEM;
		goto out;
	}
	c->memory_mb = 256;
	c->vcpus = 1;
	c->boot_disk = -1;
	j = json_tokener_parse_ex(tok, text, (int)strlen(text));
	if (!j || json_tokener_get_error(tok) != json_tokener_success) {
		hv_err_set(err, "%s: not valid JSON (%s at offset %zu)", origin,
			   json_tokener_error_desc(json_tokener_get_error(tok)),
			   json_tokener_get_parse_end(tok));
		goto out;
	}
	{
		size_t end = json_tokener_get_parse_end(tok);

		if (text[end + strspn(text + end, " \t\r\n")]) {
			hv_err_set(err, "%s: trailing data after the JSON object at offset %zu",
				   origin, end);
			goto out;
		}
	}
	if (!json_object_is_type(j, json_type_object)) {
		hv_err_set(err, "%s: the config must be a JSON object", origin);
		goto out;
	}
	json_object_object_foreach(j, key, v) {
		if (!strcmp(key, "name")) {
			ret = get_string(v, "name", origin, &c->name, err);
		} else if (!strcmp(key, "memory_mb")) {
			ret = get_uint(v, "memory_mb", origin, 1u << 20, &c->memory_mb, err);
		} else if (!strcmp(key, "vcpus")) {
			ret = get_uint(v, "vcpus", origin, HV_MAX_VCPUS, &c->vcpus, err);
		} else if (!strcmp(key, "machine")) {
			ret = get_string(v, "machine", origin, &c->machine, err);
		} else if (!strcmp(key, "serial_log")) {
			ret = get_string(v, "serial_log", origin, &c->serial_log, err);
		} else if (!strcmp(key, "on_reboot")) {
			const char *s = json_object_get_string(v);

			ret = 0;
			if (json_object_is_type(v, json_type_string) && !strcmp(s, "poweroff"))
				c->reboot_poweroff = true;
			else if (json_object_is_type(v, json_type_string) && !strcmp(s, "restart"))
				c->reboot_poweroff = false;
			else {
				hv_err_set(err, "%s: on_reboot %s is not \"restart\" or \"poweroff\"",
					   origin, json_object_to_json_string(v));
				ret = -EINVAL;
			}
		} else if (!strcmp(key, "boot")) {
			ret = parse_boot(v, origin, c, err);
		} else if (!strcmp(key, "disks")) {
			size_t n;

			if (!json_object_is_type(v, json_type_array)) {
				hv_err_set(err, "%s: disks must be an array, not %s", origin,
					   json_object_to_json_string(v));
				ret = -EINVAL;
				goto out;
			}
			n = json_object_array_length(v);
			if (n > HV_MAX_DISKS) {
				hv_err_set(err, "%s: %zu disks; at most %d", origin, n, HV_MAX_DISKS);
				ret = -EINVAL;
				goto out;
			}
			ret = 0;
			for (size_t i = 0; i < n && ret == 0; i++) {
				c->nr_disks = (unsigned)i + 1;
				ret = parse_disk(json_object_array_get_idx(v, i), (unsigned)i, origin,
						 &c->disks[i], err);
			}
		} else {
			hv_err_set(err, "%s: unknown field \"%s\"", origin, key);
			ret = -EINVAL;
		}
		if (ret < 0)
			goto out;
	}
	if (!c->name) {
		hv_err_set(err, "%s: name is missing", origin);
		ret = -EINVAL;
		goto out;
	}
	ret = check_config(c, origin, base_dir, check_files, err);
	if (ret < 0)
		goto out;
	*out = c;
	c = NULL;
out:
	hv_config_free(c);
	json_object_put(j);
	if (tok)
		json_tokener_free(tok);
	return ret;
}

int hv_config_parse(const char *text, const char *origin, const char *base_dir,
		    struct hv_config **out, struct hv_err *err)
{
	return parse(text, origin, base_dir, true, out, err);
}

static int load(const char *path, bool check_files, struct hv_config **out, struct hv_err *err)
{
	char *text = NULL, *copy = NULL, *base = NULL, *slash;
	int ret;

	*out = NULL;
	ret = hv_read_file(path, MAX_CONFIG_BYTES, &text, err);
	if (ret < 0)
		goto out;
	/* Relative paths in a config file are relative to the file. */
	copy = realpath(path, NULL);
	if (!copy) {
		ret = -errno;
		hv_err_set(err, "%s: %s", path, strerror(errno));
		goto out;
	}
	slash = strrchr(copy, '/');
	base = slash == copy ? strdup("/") : strndup(copy, (size_t)(slash - copy));
	if (!base) {
		ret = -ENOMEM;
		goto out;
	}
	ret = parse(text, path, base, check_files, out, err);
out:
	free(text);
	free(copy);
	free(base);
	return ret;
}

int hv_config_load(const char *path, struct hv_config **out, struct hv_err *err)
{
	return load(path, true, out, err);
}

int hv_config_load_stored(const char *path, struct hv_config **out, struct hv_err *err)
{
	return load(path, false, out, err);
}

struct json_object *hv_config_to_json(const struct hv_config *c)
{
	struct json_object *j = json_object_new_object(), *boot = json_object_new_object();
	struct json_object *disks = json_object_new_array();

	json_object_object_add(j, "name", json_object_new_string(c->name));
	json_object_object_add(j, "memory_mb", json_object_new_int64(c->memory_mb));
	json_object_object_add(j, "vcpus", json_object_new_int64(c->vcpus));
	json_object_object_add(j, "machine", json_object_new_string(c->machine ? c->machine : "pc"));
	if (c->kernel)
		json_object_object_add(boot, "kernel", json_object_new_string(c->kernel));
	if (c->initrd)
		json_object_object_add(boot, "initrd", json_object_new_string(c->initrd));
	if (c->cmdline)
		json_object_object_add(boot, "cmdline", json_object_new_string(c->cmdline));
	if (c->boot_disk >= 0)
		json_object_object_add(boot, "disk", json_object_new_int64(c->boot_disk));
	json_object_object_add(j, "boot", boot);
	json_object_object_add(j, "on_reboot",
			       json_object_new_string(c->reboot_poweroff ? "poweroff" : "restart"));
	for (unsigned i = 0; i < c->nr_disks; i++) {
		const struct hv_disk_config *d = &c->disks[i];
		struct json_object *jd = json_object_new_object();

		json_object_object_add(jd, "path", json_object_new_string(d->path));
		json_object_object_add(jd, "bus", json_object_new_string(hv_bus_name(d->bus)));
		json_object_object_add(jd, "read_only", json_object_new_boolean(d->read_only));
		if (d->bus == HV_BUS_SYNTHETIC)
			json_object_object_add(jd, "num_queues",
					       json_object_new_int64(d->num_queues));
		json_object_array_add(disks, jd);
	}
	json_object_object_add(j, "disks", disks);
	if (c->serial_log)
		json_object_object_add(j, "serial_log", json_object_new_string(c->serial_log));
	return j;
}
