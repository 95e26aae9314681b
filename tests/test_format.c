/* Unit tests of the buffer-level format code: checksum, footer and header
 * encode/decode, CHS geometry (specification examples and real images),
 * size semantics, locator data space, bitmap bit order. */
#include <fcntl.h>
#include <unistd.h>

#include "format.h"
#include "testutil.h"

static void test_chs(void)
{
	static const struct {
		uint64_t size;
		unsigned c, h, s;
	} cases[] = {
		{64ull << 20, 963, 8, 17},        /* reference notes, observed */
		{1ull << 30, 2080, 16, 63},
		{4194304, 120, 4, 17},            /* Windows 10 diskpart 4 MiB */
		{4212736, 121, 4, 17},            /* dfvfs ext2.vhd */
		{104448, 3, 4, 17},               /* dfvfs image.vhd */
		{20971520, 602, 4, 17},           /* VirtualBox 20 MiB (gwacl) */
		{5242880, 150, 4, 17},            /* FreeBSD mkimg */
		{200ull << 30, 65535, 16, 255},   /* beyond 127.5 GiB: max geometry */
		{2040ull << 30, 65535, 16, 255},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vhd_geometry g;

		vhd_chs_for_size(cases[i].size, &g);
		if (g.cylinders != cases[i].c || g.heads != cases[i].h || g.sectors != cases[i].s)
			FAIL("CHS for %llu: got %u/%u/%u, want %u/%u/%u",
			     (unsigned long long)cases[i].size, g.cylinders, g.heads, g.sectors,
			     cases[i].c, cases[i].h, cases[i].s);
		CHECK(vhd_chs_bytes(&g) <= cases[i].size);
	}
	{
		struct vhd_geometry g;

		vhd_chs_for_size(200ull << 30, &g);
		CHECK(vhd_chs_is_max(&g));
		vhd_chs_for_size(64ull << 20, &g);
		CHECK(!vhd_chs_is_max(&g));
	}
}

static void sample_footer(struct vhd_footer *f)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->cookie, VHD_COOKIE, 8);
	f->features = 2;
	f->version = VHD_VERSION;
	f->data_offset = 512;
	f->timestamp = 0x12345678;
	memcpy(f->creator_app, "win ", 4);
	f->creator_version = 0x000A0000;
	f->creator_os = VHD_OS_WINDOWS;
	f->original_size = f->current_size = 64ull << 20;
	vhd_chs_for_size(f->current_size, &f->geometry);
	f->disk_type = VHD_TYPE_DYNAMIC;
	for (int i = 0; i < 16; i++)
		f->uuid[i] = (uint8_t)(i * 17);
	f->saved_state = 1;
}

static void test_footer_roundtrip(void)
{
	uint8_t buf[VHD_FOOTER_SIZE], buf2[VHD_FOOTER_SIZE];
	struct vhd_footer f, g;

	sample_footer(&f);
	vhd_footer_encode(&f, buf);
	CHECK(!memcmp(buf, "conectix", 8));
	CHECK_EQ_U(vhd_be32(buf + 60), 3);
	CHECK_EQ_U(vhd_be64(buf + 48), 64ull << 20);
	CHECK_EQ_U(buf[84], 1);
	CHECK(vhd_footer_checksum_ok(buf));
	vhd_footer_decode(buf, &g);
	CHECK(!memcmp(&f, &g, sizeof(f)));
	vhd_footer_encode(&g, buf2);
	CHECK(!memcmp(buf, buf2, sizeof(buf)));
	/* any flipped bit breaks the checksum */
	buf[100] ^= 0x10;
	CHECK(!vhd_footer_checksum_ok(buf));
}

static void test_checksum_known(void)
{
	/* Sum of bytes with the field skipped, then NOT: an all-zero buffer
	 * gives 0xFFFFFFFF, one byte of 1 gives 0xFFFFFFFE. */
	uint8_t z[512] = {0};

	CHECK_EQ_U(vhd_checksum(z, 512, 64), 0xFFFFFFFFu);
	z[0] = 1;
	z[64] = 0xFF; /* inside the checksum field: ignored */
	CHECK_EQ_U(vhd_checksum(z, 512, 64), 0xFFFFFFFEu);
}

/* A real footer made by VirtualBox (from a Go test file, see the fixture
 * README), and a real Windows differencing disk: checksums and fields. */
static void test_real_footers(void)
{
	const char *shared = getenv("VHDSTACK_SHARED");
	char path[4096];
	uint8_t buf[VHD_FOOTER_SIZE];
	struct vhd_footer f;
	int fd;

	if (!shared)
		return;
	snprintf(path, sizeof(path), "%s/fixtures/public/other/gwacl-vbox-fixed-20MiB-footer.bin", shared);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		printf("note: %s missing, real-footer checks skipped\n", path);
		return;
	}
	CHECK(read(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
	close(fd);
	CHECK(vhd_footer_checksum_ok(buf));
	vhd_footer_decode(buf, &f);
	CHECK(!memcmp(f.creator_app, "vbox", 4));
	CHECK_EQ_U(f.current_size, 20971520);
	CHECK_EQ_U(f.geometry.cylinders, 602);
	CHECK_EQ_U(f.disk_type, VHD_TYPE_FIXED);
	{
		const char *src;

		/* vbox: current size is authoritative, not CHS (20959232) */
		CHECK_EQ_U(vhd_footer_virtual_size(&f, &src), 20971520);
		CHECK_STR(src, "current-size");
	}

	snprintf(path, sizeof(path), "%s/fixtures/public/dfvfs/image.vhd", shared);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		CHECK(pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf));
		close(fd);
		/* documented quirk: stored 0xfffff683, computed 0xffffef25 */
		CHECK_EQ_U(vhd_be32(buf + 64), 0xfffff683u);
		CHECK_EQ_U(vhd_checksum(buf, 512, 64), 0xffffef25u);
		CHECK(!vhd_footer_checksum_ok(buf));
	}
}

static void test_size_rule(void)
{
	struct vhd_footer f;
	const char *src;

	sample_footer(&f);
	f.current_size = 64ull << 20; /* CHS covers 67055616 */
	memcpy(f.creator_app, "qemu", 4);
	CHECK_EQ_U(vhd_footer_virtual_size(&f, &src), 67055616);
	CHECK_STR(src, "chs");
	memcpy(f.creator_app, "vpc ", 4);
	CHECK_EQ_U(vhd_footer_virtual_size(&f, &src), 67055616);
	memcpy(f.creator_app, "win ", 4);
	CHECK_EQ_U(vhd_footer_virtual_size(&f, &src), 64ull << 20);
	CHECK_STR(src, "current-size");
	memcpy(f.creator_app, "qem2", 4);
	CHECK_EQ_U(vhd_footer_virtual_size(&f, &src), 64ull << 20);
	memcpy(f.creator_app, "tap\0", 4);
	CHECK_EQ_U(vhd_footer_virtual_size(&f, &src), 64ull << 20);
	/* qemu with the maximum geometry: current size */
	memcpy(f.creator_app, "qemu", 4);
	f.geometry = (struct vhd_geometry){65535, 16, 255};
	f.current_size = 200ull << 30;
	CHECK_EQ_U(vhd_footer_virtual_size(&f, &src), 200ull << 30);
}

static void test_dynhdr_roundtrip(void)
{
	uint8_t buf[VHD_DYNHDR_SIZE];
	struct vhd_dynhdr h, g;

	memset(&h, 0, sizeof(h));
	memcpy(h.cookie, VHD_DYN_COOKIE, 8);
	h.data_offset = VHD_NO_OFFSET;
	h.table_offset = 1536;
	h.version = VHD_VERSION;
	h.max_table_entries = 32;
	h.block_size = 2u << 20;
	for (int i = 0; i < 16; i++)
		h.parent_uuid[i] = (uint8_t)(0xA0 + i);
	h.parent_timestamp = 42;
	CHECK(vhd_utf8_to_utf16("p.vhd", true, h.parent_name, sizeof(h.parent_name)) == 10);
	h.loc[0] = (struct vhd_locator){VHD_PLAT_W2RU, 4096, 14, 0, 0x1000};
	h.loc[7] = (struct vhd_locator){VHD_PLAT_MACX, 8, 20, 0, 0x3000};
	vhd_dynhdr_encode(&h, buf);
	CHECK(!memcmp(buf, "cxsparse", 8));
	CHECK_EQ_U(vhd_be64(buf + 8), VHD_NO_OFFSET);
	CHECK_EQ_U(vhd_be64(buf + 16), 1536);
	CHECK_EQ_U(vhd_be32(buf + 576), VHD_PLAT_W2RU);
	CHECK_EQ_U(vhd_be64(buf + 576 + 7 * 24 + 16), 0x3000);
	CHECK_EQ_U(buf[64], 0);   /* UTF-16BE: 'p' = 00 70 */
	CHECK_EQ_U(buf[65], 'p');
	CHECK(vhd_dynhdr_checksum_ok(buf));
	vhd_dynhdr_decode(buf, &g);
	CHECK(!memcmp(&h, &g, sizeof(h)));
	buf[1000] = 1;
	CHECK(!vhd_dynhdr_checksum_ok(buf));
}

static void test_locator_space(void)
{
	CHECK_EQ_U(vhd_locator_space_bytes(1), 512);     /* sectors */
	CHECK_EQ_U(vhd_locator_space_bytes(8), 4096);
	CHECK_EQ_U(vhd_locator_space_bytes(4096), 4096); /* bytes (Hyper-V) */
	CHECK_EQ_U(vhd_locator_space_bytes(65536), 65536);
	CHECK_EQ_U(vhd_locator_space_bytes(600), 0);     /* neither */
	{
		char n[5];

		CHECK_STR(vhd_platform_name(VHD_PLAT_W2KU, n), "W2ku");
		CHECK_STR(vhd_platform_name(VHD_PLAT_MAC, n), "Mac ");
	}
}

static void test_bitmap_order(void)
{
	uint8_t bm[2] = {0, 0};

	vhd_bit_set(bm, 0);
	CHECK_EQ_U(bm[0], 0x80); /* MSB first */
	vhd_bit_set(bm, 15);
	CHECK_EQ_U(bm[1], 0x01);
	CHECK(vhd_bit_test(bm, 0) && vhd_bit_test(bm, 15) && !vhd_bit_test(bm, 1));
	/* Windows sample: 0x02 0x01 in the first bytes = sectors 6 and 15 */
	bm[0] = 0x02;
	bm[1] = 0x01;
	CHECK(vhd_bit_test(bm, 6) && vhd_bit_test(bm, 15) && !vhd_bit_test(bm, 7));
}

int main(void)
{
	test_chs();
	test_checksum_known();
	test_footer_roundtrip();
	test_real_footers();
	test_size_rule();
	test_dynhdr_roundtrip();
	test_locator_space();
	test_bitmap_order();
	puts("test_format: ok");
	return 0;
}
