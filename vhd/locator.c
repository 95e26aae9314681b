/* locator.c - parent locators: decoding the paths other producers wrote and
 * encoding the ones we write (W2ru relative, W2ku absolute, MacX file URL).
 *
 * Locator bytes are untrusted: they only ever produce candidate paths, which
 * the opener then accepts only if the file is a regular file that parses as
 * a VHD with the expected unique id. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define LOCATOR_MAX_BYTES 65536u

static void backslash_to_slash(char *s)
{
	for (; *s; s++)
		if (*s == '\\')
			*s = '/';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "file://./x" -> "./x", "file:///a/b" or "file://localhost/a/b" -> "/a/b",
 * percent escapes decoded.  Returns false for anything else. */
static bool file_url_to_path(char *s)
{
	char *p, *w;

	if (strncmp(s, "file://", 7))
		return false;
	p = s + 7;
	if (!strncmp(p, "localhost/", 10))
		p += 9;
	for (w = s; *p; p++) {
		if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
			*w++ = (char)(hexval(p[1]) << 4 | hexval(p[2]));
			p += 2;
		} else {
			*w++ = *p;
		}
	}
	*w = 0;
	return s[0] != 0;
}

/* Reads and decodes one locator's path into out (UTF-8, '/' separators). */
static bool locator_path(const struct vhd_image *img, const struct vhd_locator *l,
			 char *out, size_t size)
{
	uint8_t *raw = NULL;
	uint32_t len = l->data_length;
	bool ok = false;

	if (len == 0 || len > LOCATOR_MAX_BYTES || l->data_offset > img->footer_pos ||
	    img->footer_pos - l->data_offset < len)
		return false;
	raw = calloc(1, len + 1);
	if (!raw || pread_full(img->fd, raw, len, l->data_offset) < 0)
		goto out;
	switch (l->code) {
	case VHD_PLAT_W2RU:
	case VHD_PLAT_W2KU:
		if (vhd_utf16_to_utf8(raw, len, false, out, size) <= 0)
			goto out;
		backslash_to_slash(out);
		break;
	case VHD_PLAT_WI2R:
	case VHD_PLAT_WI2K:
		snprintf(out, size, "%s", (char *)raw);
		backslash_to_slash(out);
		break;
	case VHD_PLAT_MACX:
		snprintf(out, size, "%s", (char *)raw);
		if (!file_url_to_path(out))
			goto out;
		break;
	default:
		goto out;
	}
	ok = out[0] != 0;
out:
	free(raw);
	return ok;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

static void add_candidate(char **out, size_t *n, size_t max, const char *dir, const char *path)
{
	char buf[PATH_MAX * 2];

	if (*n >= max || !path[0])
		return;
	if (path[0] == '/' || !dir)
		snprintf(buf, sizeof(buf), "%s", path);
	else
		snprintf(buf, sizeof(buf), "%s/%s", dir, path[0] == '.' && path[1] == '/' ? path + 2 : path);
	for (size_t i = 0; i < *n; i++)
		if (!strcmp(out[i], buf))
			return;
	out[*n] = strdup(buf);
	if (out[*n])
		(*n)++;
}

size_t locator_candidates(const struct vhd_image *img, char **out, size_t max)
{
	static const uint32_t order[] = {VHD_PLAT_W2RU, VHD_PLAT_MACX, VHD_PLAT_W2KU,
					 VHD_PLAT_WI2R, VHD_PLAT_WI2K};
	char dir[PATH_MAX], path[PATH_MAX];
	char bases[VHD_NR_LOCATORS + 1][PATH_MAX];
	size_t n = 0, nb = 0;
	char *slash;

	snprintf(dir, sizeof(dir), "%s", img->path);
	slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = 0;
	else
		snprintf(dir, sizeof(dir), ".");

	for (size_t o = 0; o < sizeof(order) / sizeof(order[0]); o++) {
		for (int i = 0; i < VHD_NR_LOCATORS; i++) {
			const struct vhd_locator *l = &img->hdr.loc[i];

			if (l->code != order[o] || !locator_path(img, l, path, sizeof(path)))
				continue;
			/* "C:/dir/p.vhd" means nothing here; its base name may. */
			if (!(path[0] && path[1] == ':'))
				add_candidate(out, &n, max, dir, path);
			snprintf(bases[nb++], PATH_MAX, "%s", base_name(path));
		}
	}
	/* Like libvhdi: the base name of the parent unicode name, in the
	 * child's directory (Windows stores a full path there). */
	if (vhd_utf16_to_utf8(img->hdr.parent_name, VHD_PARENT_NAME_BYTES, true, path,
			      sizeof(path)) > 0) {
		backslash_to_slash(path);
		snprintf(bases[nb++], PATH_MAX, "%s", base_name(path));
	}
	for (size_t i = 0; i < nb; i++)
		if (strcmp(bases[i], ".") && strcmp(bases[i], ".."))
			add_candidate(out, &n, max, dir, bases[i]);
	return n;
}

/* Absolute, normalised path of p; p itself may not exist yet (a child being
 * created), only its directory must. */
static int absolute_path(const char *p, char *out, size_t size)
{
	char dir[PATH_MAX], real[PATH_MAX];
	const char *slash = strrchr(p, '/');

	if (realpath(p, real)) {
		snprintf(out, size, "%s", real);
		return 0;
	}
	if (slash) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - p), p);
		if (!dir[0])
			snprintf(dir, sizeof(dir), "/");
	} else {
		snprintf(dir, sizeof(dir), ".");
	}
	if (!realpath(dir, real))
		return -errno;
	if (snprintf(out, size, "%s/%s", strcmp(real, "/") ? real : "", slash ? slash + 1 : p) >=
	    (int)size)
		return -ENAMETOOLONG;
	return 0;
}

/* Path of target relative to the directory holding from (both absolute). */
static void relative_path(const char *from, const char *target, char *out, size_t size)
{
	size_t common = 0, i, pos = 0;
	const char *rest;

	/* longest common prefix ending at a '/' */
	for (i = 0; from[i] && from[i] == target[i]; i++)
		if (from[i] == '/')
			common = i + 1;
	rest = from + common;
	out[0] = 0;
	for (const char *s = rest; (s = strchr(s, '/')); s++)
		pos += (size_t)snprintf(out + pos, pos < size ? size - pos : 0, "../");
	snprintf(out + (pos < size ? pos : size - 1), pos < size ? size - pos : 1, "%s",
		 target + common);
}

static int percent_encode(const char *in, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t pos = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || strchr("-._~/", *p);

		if (pos + 4 > size)
			return -ENAMETOOLONG;
		if (plain) {
			out[pos++] = (char)*p;
		} else {
			out[pos++] = '%';
			out[pos++] = hex[*p >> 4];
			out[pos++] = hex[*p & 15];
		}
	}
	out[pos] = 0;
	return (int)pos;
}

int locator_encode_path(uint32_t code, const char *child_path, const char *parent_path,
			uint8_t *buf, size_t size)
{
	char child_abs[PATH_MAX], parent_abs[PATH_MAX], text[PATH_MAX * 3 + 16];
	int ret;

	ret = absolute_path(child_path, child_abs, sizeof(child_abs));
	if (ret < 0)
		return ret;
	ret = absolute_path(parent_path, parent_abs, sizeof(parent_abs));
	if (ret < 0)
		return ret;
	switch (code) {
	case VHD_PLAT_W2RU: {
		char rel[PATH_MAX * 2];

		/* Microsoft tools write ".\name"; keep that form. */
		relative_path(child_abs, parent_abs, rel, sizeof(rel));
		snprintf(text, sizeof(text), "%s%s", strncmp(rel, "../", 3) ? "./" : "", rel);
		for (char *s = text; *s; s++)
			if (*s == '/')
				*s = '\\';
		return vhd_utf8_to_utf16(text, false, buf, size);
	}
	case VHD_PLAT_W2KU:
		snprintf(text, sizeof(text), "%s", parent_abs);
		for (char *s = text; *s; s++)
			if (*s == '/')
				*s = '\\';
		return vhd_utf8_to_utf16(text, false, buf, size);
	case VHD_PLAT_MACX: {
		char enc[PATH_MAX * 3];

		ret = percent_encode(parent_abs, enc, sizeof(enc));
		if (ret < 0)
			return ret;
		ret = snprintf((char *)buf, size, "file://%s", enc);
		return ret >= (int)size ? -ENAMETOOLONG : ret;
	}
	default:
		return -EINVAL;
	}
}
