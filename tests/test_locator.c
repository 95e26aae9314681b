/* Unit tests of parent locators: UTF-16 text, the paths we encode (W2ru,
 * W2ku, MacX), and parent resolution through each locator kind, through the
 * parent name alone, after moving a chain, and with --parent-dir. */
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

static char dir[PATH_MAX];

static void test_utf16(void)
{
	uint8_t buf[256];
	char out[256];
	int n;

	n = vhd_utf8_to_utf16("C:\\a\\b.vhd", false, buf, sizeof(buf));
	CHECK_EQ_U(n, 20);
	CHECK(buf[0] == 'C' && buf[1] == 0); /* little endian */
	CHECK(vhd_utf16_to_utf8(buf, (size_t)n, false, out, sizeof(out)) == 10);
	CHECK_STR(out, "C:\\a\\b.vhd");

	/* non-BMP (surrogate pair) and accented text, big endian */
	n = vhd_utf8_to_utf16("d\xc3\xa9j\xc3\xa0-\xf0\x9f\x98\x80.vhd", true, buf, sizeof(buf));
	CHECK(n > 0);
	CHECK(vhd_utf16_to_utf8(buf, (size_t)n, true, out, sizeof(out)) > 0);
	CHECK_STR(out, "d\xc3\xa9j\xc3\xa0-\xf0\x9f\x98\x80.vhd");

	/* a lone surrogate (seen in the wild) becomes U+FFFD, not a failure */
	buf[0] = 0xD8;
	buf[1] = 0x00;
	buf[2] = 0x00;
	buf[3] = 'x';
	CHECK(vhd_utf16_to_utf8(buf, 4, true, out, sizeof(out)) == 4);
	CHECK_STR(out, "\xef\xbf\xbdx");

	/* too small an output is an error, and still NUL-terminated */
	n = vhd_utf8_to_utf16("abcdef", false, buf, sizeof(buf));
	CHECK(vhd_utf16_to_utf8(buf, (size_t)n, false, out, 3) < 0);
	CHECK(strlen(out) < 3);
	CHECK(vhd_utf8_to_utf16("abcdef", false, buf, 4) < 0);
}

static void utf16le_str(const uint8_t *b, int n, char *out)
{
	CHECK(vhd_utf16_to_utf8(b, (size_t)n, false, out, 4096) >= 0);
}

static void test_encode(void)
{
	char child[PATH_MAX + 32], parent[PATH_MAX + 32], s[4096], want[PATH_MAX + 64];
	uint8_t buf[8192];
	int n;

	snprintf(child, sizeof(child), "%s/c.vhd", dir);
	snprintf(parent, sizeof(parent), "%s/p.vhd", dir);
	close(open(parent, O_CREAT | O_WRONLY, 0644));

	n = locator_encode_path(VHD_PLAT_W2RU, child, parent, buf, sizeof(buf));
	utf16le_str(buf, n, s);
	CHECK_STR(s, ".\\p.vhd"); /* Microsoft's form */

	n = locator_encode_path(VHD_PLAT_W2KU, child, parent, buf, sizeof(buf));
	utf16le_str(buf, n, s);
	snprintf(want, sizeof(want), "%s\\p.vhd", dir);
	for (char *p = want; *p; p++)
		if (*p == '/')
			*p = '\\';
	CHECK_STR(s, want);

	n = locator_encode_path(VHD_PLAT_MACX, child, parent, buf, sizeof(buf));
	buf[n] = 0;
	snprintf(want, sizeof(want), "file://%s/p.vhd", dir);
	CHECK_STR((char *)buf, want);

	/* parent one level up, child in a subdirectory */
	snprintf(child, sizeof(child), "%s/sub/c.vhd", dir);
	mkdir(child, 0755), rmdir(child);
	snprintf(s, sizeof(s), "%s/sub", dir);
	mkdir(s, 0755);
	n = locator_encode_path(VHD_PLAT_W2RU, child, parent, buf, sizeof(buf));
	utf16le_str(buf, n, s);
	CHECK_STR(s, "..\\p.vhd");

	/* a name that needs percent-encoding in the URL */
	snprintf(parent, sizeof(parent), "%s/my disk%%.vhd", dir);
	close(open(parent, O_CREAT | O_WRONLY, 0644));
	n = locator_encode_path(VHD_PLAT_MACX, child, parent, buf, sizeof(buf));
	buf[n] = 0;
	CHECK(strstr((char *)buf, "/my%20disk%25.vhd") != NULL);
	unlink(parent);
}

static void make_chain(const char *p, const char *c)
{
	struct vhd_create_opts o = {.type = VHD_TYPE_DYNAMIC, .size = 4u << 20, .overwrite = true};
	struct vhd_image *img;
	struct vhd_open_opts oo = {.flags = VHD_OPEN_RDWR};
	struct vhd_err err;

	if (vhd_create(p, &o, &err) < 0)
		FAIL("create %s: %s", p, err.msg);
	if (vhd_open(p, &oo, &img, &err) < 0)
		FAIL("open %s: %s", p, err.msg);
	CHECK(vhd_pwrite(img, "parent-data", 11, 1000) == 0);
	CHECK(vhd_close(img) == 0);
	o.type = VHD_TYPE_DIFF;
	o.parent = p;
	if (vhd_create(c, &o, &err) < 0)
		FAIL("create %s: %s", c, err.msg);
}

/* Opens c and checks it reads the parent's bytes; returns the open result. */
static int try_open(const char *c, const char *parent_dir, struct vhd_err *err)
{
	struct vhd_open_opts o = {.parent_dir = parent_dir};
	struct vhd_image *img;
	char buf[11];
	int ret = vhd_open(c, &o, &img, err);

	if (ret < 0)
		return ret;
	CHECK(vhd_parent(img) != NULL);
	CHECK(vhd_pread(img, buf, 11, 1000) == 0);
	CHECK(!memcmp(buf, "parent-data", 11));
	vhd_close(img);
	return 0;
}

/* Zeroes every locator slot except `keep` (code), fixing the checksum. */
static void keep_only(const char *c, uint32_t keep, bool keep_name)
{
	uint8_t buf[VHD_DYNHDR_SIZE];
	struct vhd_dynhdr h;
	int fd = open(c, O_RDWR);

	CHECK(fd >= 0);
	CHECK(pread(fd, buf, sizeof(buf), 512) == (ssize_t)sizeof(buf));
	vhd_dynhdr_decode(buf, &h);
	for (int i = 0; i < VHD_NR_LOCATORS; i++)
		if (h.loc[i].code != keep)
			memset(&h.loc[i], 0, sizeof(h.loc[i]));
	if (!keep_name)
		memset(h.parent_name, 0, sizeof(h.parent_name));
	vhd_dynhdr_encode(&h, buf);
	CHECK(pwrite(fd, buf, sizeof(buf), 512) == (ssize_t)sizeof(buf));
	close(fd);
}

static void test_resolution(void)
{
	char p[PATH_MAX + 32], c[PATH_MAX + 32], moved[PATH_MAX + 32], mc[PATH_MAX + 64],
		mp[PATH_MAX + 64];
	static const uint32_t codes[] = {VHD_PLAT_W2RU, VHD_PLAT_W2KU, VHD_PLAT_MACX};
	struct vhd_err err;

	snprintf(p, sizeof(p), "%s/base.vhd", dir);
	snprintf(c, sizeof(c), "%s/child.vhd", dir);
	make_chain(p, c);
	if (try_open(c, NULL, &err) < 0)
		FAIL("open chain: %s", err.msg);

	/* each locator on its own is enough (parent name removed too) */
	for (size_t i = 0; i < 3; i++) {
		make_chain(p, c);
		keep_only(c, codes[i], false);
		if (try_open(c, NULL, &err) < 0)
			FAIL("locator %zu alone: %s", i, err.msg);
	}
	/* no locators: the parent unicode name (base name) in the child's dir */
	make_chain(p, c);
	keep_only(c, 0xFFFFFFFF, true);
	if (try_open(c, NULL, &err) < 0)
		FAIL("name only: %s", err.msg);
	/* nothing at all: a clear error naming the unique id */
	keep_only(c, 0xFFFFFFFF, false);
	CHECK(try_open(c, NULL, &err) < 0);
	CHECK(strstr(err.msg, "parent") && strstr(err.msg, "unique id"));

	/* move the pair elsewhere: the relative locator still finds it */
	make_chain(p, c);
	snprintf(moved, sizeof(moved), "%s/moved", dir);
	mkdir(moved, 0755);
	snprintf(mc, sizeof(mc), "%s/child.vhd", moved);
	snprintf(mp, sizeof(mp), "%s/base.vhd", moved);
	CHECK(rename(c, mc) == 0 && rename(p, mp) == 0);
	if (try_open(mc, NULL, &err) < 0)
		FAIL("moved chain: %s", err.msg);

	/* --parent-dir: the parent lies in `moved`; restricting to `dir/sub`
	 * refuses it, restricting to `moved` accepts it */
	{
		char sub[PATH_MAX + 32];

		snprintf(sub, sizeof(sub), "%s/sub", dir);
		mkdir(sub, 0755);
		CHECK(try_open(mc, sub, &err) < 0);
		CHECK(strstr(err.msg, "outside the allowed parent directory") != NULL);
		if (try_open(mc, moved, &err) < 0)
			FAIL("parent-dir accept: %s", err.msg);
	}
	/* a different file with the right name but another unique id */
	{
		struct vhd_create_opts o = {.type = VHD_TYPE_DYNAMIC, .size = 4u << 20, .overwrite = true};

		CHECK(vhd_create(mp, &o, &err) == 0);
		CHECK(try_open(mc, NULL, &err) < 0);
		CHECK(strstr(err.msg, "does not match") != NULL);
	}
	unlink(mc);
	unlink(mp);
	rmdir(moved);
	unlink(p);
	unlink(c);
}

int main(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(dir, sizeof(dir), "/tmp/test_locator.XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	CHECK(realpath(dir, cmd) != NULL);
	snprintf(dir, sizeof(dir), "%s", cmd);
	test_utf16();
	test_encode();
	test_resolution();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
	puts("test_locator: ok");
	return 0;
}
