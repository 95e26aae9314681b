/* format.c - encode/decode of VHD footers and dynamic headers, checksum,
 * CHS geometry, size semantics.  Buffers only; no I/O. */
#include "format.h"

#include <errno.h>
#include <string.h>

uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++) {
		if (i >= csum_off && i < csum_off + 4)
			continue;
		sum += buf[i];
	}
	return ~sum;
}

void vhd_footer_decode(const uint8_t b[VHD_FOOTER_SIZE], struct vhd_footer *f)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->cookie, b, 8);
	f->features = vhd_be32(b + 8);
	f->version = vhd_be32(b + 12);
	f->data_offset = vhd_be64(b + 16);
	f->timestamp = vhd_be32(b + 24);
	memcpy(f->creator_app, b + 28, 4);
	f->creator_version = vhd_be32(b + 32);
	f->creator_os = vhd_be32(b + 36);
	f->original_size = vhd_be64(b + 40);
	f->current_size = vhd_be64(b + 48);
	f->geometry.cylinders = vhd_be16(b + 56);
	f->geometry.heads = b[58];
	f->geometry.sectors = b[59];
	f->disk_type = vhd_be32(b + 60);
	f->checksum = vhd_be32(b + 64);
	memcpy(f->uuid, b + 68, 16);
	f->saved_state = b[84];
}

void vhd_footer_encode(struct vhd_footer *f, uint8_t b[VHD_FOOTER_SIZE])
{
	memset(b, 0, VHD_FOOTER_SIZE);
	memcpy(b, f->cookie, 8);
	vhd_put_be32(b + 8, f->features);
	vhd_put_be32(b + 12, f->version);
	vhd_put_be64(b + 16, f->data_offset);
	vhd_put_be32(b + 24, f->timestamp);
	memcpy(b + 28, f->creator_app, 4);
	vhd_put_be32(b + 32, f->creator_version);
	vhd_put_be32(b + 36, f->creator_os);
	vhd_put_be64(b + 40, f->original_size);
	vhd_put_be64(b + 48, f->current_size);
	vhd_put_be16(b + 56, f->geometry.cylinders);
	b[58] = f->geometry.heads;
	b[59] = f->geometry.sectors;
	vhd_put_be32(b + 60, f->disk_type);
	memcpy(b + 68, f->uuid, 16);
	b[84] = f->saved_state;
	f->checksum = vhd_checksum(b, VHD_FOOTER_SIZE, 64);
	vhd_put_be32(b + 64, f->checksum);
}

bool vhd_footer_checksum_ok(const uint8_t b[VHD_FOOTER_SIZE])
{
	return vhd_be32(b + 64) == vhd_checksum(b, VHD_FOOTER_SIZE, 64);
}

static void locator_decode(const uint8_t *b, struct vhd_locator *l)
{
	l->code = vhd_be32(b);
	l->data_space = vhd_be32(b + 4);
	l->data_length = vhd_be32(b + 8);
	l->reserved = vhd_be32(b + 12);
	l->data_offset = vhd_be64(b + 16);
}

static void locator_encode(const struct vhd_locator *l, uint8_t *b)
{
	vhd_put_be32(b, l->code);
	vhd_put_be32(b + 4, l->data_space);
	vhd_put_be32(b + 8, l->data_length);
	vhd_put_be32(b + 12, l->reserved);
	vhd_put_be64(b + 16, l->data_offset);
}

void vhd_dynhdr_decode(const uint8_t b[VHD_DYNHDR_SIZE], struct vhd_dynhdr *h)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->cookie, b, 8);
	h->data_offset = vhd_be64(b + 8);
	h->table_offset = vhd_be64(b + 16);
	h->version = vhd_be32(b + 24);
	h->max_table_entries = vhd_be32(b + 28);
	h->block_size = vhd_be32(b + 32);
	h->checksum = vhd_be32(b + 36);
	memcpy(h->parent_uuid, b + 40, 16);
	h->parent_timestamp = vhd_be32(b + 56);
	memcpy(h->parent_name, b + 64, VHD_PARENT_NAME_BYTES);
	for (int i = 0; i < VHD_NR_LOCATORS; i++)
		locator_decode(b + 576 + 24 * i, &h->loc[i]);
}

void vhd_dynhdr_encode(struct vhd_dynhdr *h, uint8_t b[VHD_DYNHDR_SIZE])
{
	memset(b, 0, VHD_DYNHDR_SIZE);
	memcpy(b, h->cookie, 8);
	vhd_put_be64(b + 8, h->data_offset);
	vhd_put_be64(b + 16, h->table_offset);
	vhd_put_be32(b + 24, h->version);
	vhd_put_be32(b + 28, h->max_table_entries);
	vhd_put_be32(b + 32, h->block_size);
	memcpy(b + 40, h->parent_uuid, 16);
	vhd_put_be32(b + 56, h->parent_timestamp);
	memcpy(b + 64, h->parent_name, VHD_PARENT_NAME_BYTES);
	for (int i = 0; i < VHD_NR_LOCATORS; i++)
		locator_encode(&h->loc[i], b + 576 + 24 * i);
	h->checksum = vhd_checksum(b, VHD_DYNHDR_SIZE, 36);
	vhd_put_be32(b + 36, h->checksum);
}

bool vhd_dynhdr_checksum_ok(const uint8_t b[VHD_DYNHDR_SIZE])
{
	return vhd_be32(b + 36) == vhd_checksum(b, VHD_DYNHDR_SIZE, 36);
}

/* The appendix algorithm of the VHD specification, as Hyper-V, VirtualBox,
 * blktap and qemu implement it.  The product usually falls short of size. */
void vhd_chs_for_size(uint64_t size, struct vhd_geometry *g)
{
	uint64_t total = size / VHD_SECTOR_SIZE;
	uint64_t spt, heads, cyl_x_heads;

	if (total > 65535ull * 16 * 255)
		total = 65535ull * 16 * 255;
	if (total >= 65535ull * 16 * 63) {
		spt = 255;
		heads = 16;
		cyl_x_heads = total / spt;
	} else {
		spt = 17;
		cyl_x_heads = total / spt;
		heads = (cyl_x_heads + 1023) / 1024;
		if (heads < 4)
			heads = 4;
		if (cyl_x_heads >= heads * 1024 || heads > 16) {
			spt = 31;
			heads = 16;
			cyl_x_heads = total / spt;
		}
		if (cyl_x_heads >= heads * 1024) {
			spt = 63;
			heads = 16;
			cyl_x_heads = total / spt;
		}
	}
	g->cylinders = (uint16_t)(cyl_x_heads / heads);
	g->heads = (uint8_t)heads;
	g->sectors = (uint8_t)spt;
}

uint64_t vhd_chs_bytes(const struct vhd_geometry *g)
{
	return (uint64_t)g->cylinders * g->heads * g->sectors * VHD_SECTOR_SIZE;
}

bool vhd_chs_is_max(const struct vhd_geometry *g)
{
	return g->cylinders == 65535 && g->heads == 16 && g->sectors == 255;
}

uint64_t vhd_footer_virtual_size(const struct vhd_footer *f, const char **source)
{
	bool chs_creator = !memcmp(f->creator_app, "vpc ", 4) ||
			   !memcmp(f->creator_app, "qemu", 4);
	uint64_t chs = vhd_chs_bytes(&f->geometry);

	/* The CHS product is only authoritative for Virtual PC and old qemu,
	 * and never larger than what the footer says the disk holds. */
	if (chs_creator && !vhd_chs_is_max(&f->geometry) && chs <= f->current_size) {
		*source = "chs";
		return chs;
	}
	*source = "current-size";
	return f->current_size;
}

uint64_t vhd_locator_space_bytes(uint32_t stored)
{
	if (stored < VHD_SECTOR_SIZE)
		return (uint64_t)stored * VHD_SECTOR_SIZE;
	if (stored % VHD_SECTOR_SIZE == 0)
		return stored;
	return 0;
}

void vhd_fourcc_text(const uint8_t in[4], char out[5])
{
	int n = 4;

	while (n > 0 && in[n - 1] == 0)
		n--;
	for (int i = 0; i < n; i++)
		out[i] = (in[i] >= 0x20 && in[i] < 0x7f) ? (char)in[i] : '.';
	out[n] = 0;
}

const char *vhd_platform_name(uint32_t code, char buf[5])
{
	uint8_t raw[4];

	vhd_put_be32(raw, code);
	vhd_fourcc_text(raw, buf);
	return buf;
}

static int put_utf8(uint32_t cp, char *out, size_t out_size, size_t *pos)
{
	uint8_t tmp[4];
	size_t n;

	if (cp < 0x80) {
		tmp[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		tmp[0] = (uint8_t)(0xC0 | cp >> 6);
		tmp[1] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		tmp[0] = (uint8_t)(0xE0 | cp >> 12);
		tmp[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		tmp[2] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		tmp[0] = (uint8_t)(0xF0 | cp >> 18);
		tmp[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
		tmp[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		tmp[3] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 4;
	}
	if (*pos + n + 1 > out_size)
		return -ENAMETOOLONG;
	memcpy(out + *pos, tmp, n);
	*pos += n;
	return 0;
}

int vhd_utf16_to_utf8(const uint8_t *in, size_t in_len, bool big_endian,
		      char *out, size_t out_size)
{
	size_t pos = 0;
	int ret = 0;

	if (out_size == 0)
		return -ENAMETOOLONG;
	for (size_t i = 0; i + 1 < in_len; i += 2) {
		uint32_t u = big_endian ? (uint32_t)(in[i] << 8 | in[i + 1])
					: (uint32_t)(in[i + 1] << 8 | in[i]);
		if (u == 0)
			break;
		if (u >= 0xD800 && u < 0xDC00 && i + 3 < in_len) {
			uint32_t lo = big_endian ? (uint32_t)(in[i + 2] << 8 | in[i + 3])
						 : (uint32_t)(in[i + 3] << 8 | in[i + 2]);
			if (lo >= 0xDC00 && lo < 0xE000) {
				u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
				i += 2;
			} else {
				u = 0xFFFD;
			}
		} else if (u >= 0xD800 && u < 0xE000) {
			u = 0xFFFD; /* lone surrogate: not strict UTF-16 in the wild */
		}
		ret = put_utf8(u, out, out_size, &pos);
		if (ret < 0)
			goto out;
	}
	ret = (int)pos;
out:
	out[pos] = 0;
	return ret;
}

/* Decodes one UTF-8 sequence; malformed input yields U+FFFD. */
static uint32_t next_utf8(const unsigned char **pp)
{
	const unsigned char *p = *pp;
	uint32_t cp;
	int extra;

	if (p[0] < 0x80) {
		*pp = p + 1;
		return p[0];
	}
	if ((p[0] & 0xE0) == 0xC0) {
		cp = p[0] & 0x1F;
		extra = 1;
	} else if ((p[0] & 0xF0) == 0xE0) {
		cp = p[0] & 0x0F;
		extra = 2;
	} else if ((p[0] & 0xF8) == 0xF0) {
		cp = p[0] & 0x07;
		extra = 3;
	} else {
		*pp = p + 1;
		return 0xFFFD;
	}
	for (int i = 1; i <= extra; i++) {
		if ((p[i] & 0xC0) != 0x80) {
			*pp = p + i;
			return 0xFFFD;
		}
		cp = cp << 6 | (p[i] & 0x3F);
	}
	*pp = p + 1 + extra;
	return cp > 0x10FFFF ? 0xFFFD : cp;
}

static void put_u16(uint8_t *out, uint32_t u, bool big_endian)
{
	out[big_endian ? 0 : 1] = (uint8_t)(u >> 8);
	out[big_endian ? 1 : 0] = (uint8_t)u;
}

int vhd_utf8_to_utf16(const char *in, bool big_endian, uint8_t *out, size_t out_size)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t pos = 0;

	while (*p) {
		uint32_t cp = next_utf8(&p);

		if (cp >= 0x10000) {
			if (pos + 4 > out_size)
				return -ENAMETOOLONG;
			cp -= 0x10000;
			put_u16(out + pos, 0xD800 + (cp >> 10), big_endian);
			put_u16(out + pos + 2, 0xDC00 + (cp & 0x3FF), big_endian);
			pos += 4;
		} else {
			if (pos + 2 > out_size)
				return -ENAMETOOLONG;
			put_u16(out + pos, cp, big_endian);
			pos += 2;
		}
	}
	return (int)pos;
}
