/* format.h - on-disk VHD structures and their encode/decode on buffers.
 *
 * Private to vhd/ (and its unit tests and fuzz target).  Nothing here touches
 * a file descriptor: decoders take a buffer, encoders fill one, so they can be
 * tested and fuzzed in isolation.  All on-disk integers are big-endian except
 * the UTF-16LE text inside W2ru/W2ku locators.
 */
#ifndef VHD_FORMAT_H
#define VHD_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhd.h"

#define VHD_COOKIE "conectix"
#define VHD_DYN_COOKIE "cxsparse"
#define VHD_VERSION 0x00010000u
#define VHD_FEATURES_RESERVED 0x00000002u
#define VHD_BAT_UNUSED 0xFFFFFFFFu
#define VHD_NO_OFFSET 0xFFFFFFFFFFFFFFFFull
#define VHD_NR_LOCATORS 8
#define VHD_PARENT_NAME_BYTES 512
/* Seconds between the Unix epoch and the VHD epoch (2000-01-01 UTC). */
#define VHD_EPOCH_OFFSET 946684800u

/* Platform codes of parent locators. */
#define VHD_PLAT_NONE 0u
#define VHD_PLAT_WI2R 0x57693272u /* "Wi2r" deprecated relative, 8-bit   */
#define VHD_PLAT_WI2K 0x5769326Bu /* "Wi2k" deprecated absolute, 8-bit   */
#define VHD_PLAT_W2RU 0x57327275u /* "W2ru" relative, UTF-16LE           */
#define VHD_PLAT_W2KU 0x57326B75u /* "W2ku" absolute, UTF-16LE           */
#define VHD_PLAT_MAC 0x4D616320u  /* "Mac " alias record (opaque)         */
#define VHD_PLAT_MACX 0x4D616358u /* "MacX" file URL, UTF-8              */

/* Host OS codes. */
#define VHD_OS_WINDOWS 0x5769326Bu /* "Wi2k" */

struct vhd_footer {
	char cookie[8];
	uint32_t features;
	uint32_t version;
	uint64_t data_offset;
	uint32_t timestamp;
	uint8_t creator_app[4];
	uint32_t creator_version;
	uint32_t creator_os;
	uint64_t original_size;
	uint64_t current_size;
	struct vhd_geometry geometry;
	uint32_t disk_type;
	uint32_t checksum;
	uint8_t uuid[16];
	uint8_t saved_state;
};

struct vhd_locator {
	uint32_t code;
	uint32_t data_space;   /* as stored: bytes or sectors, see locator_space_bytes() */
	uint32_t data_length;
	uint32_t reserved;
	uint64_t data_offset;
};

struct vhd_dynhdr {
	char cookie[8];
	uint64_t data_offset;
	uint64_t table_offset;
	uint32_t version;
	uint32_t max_table_entries;
	uint32_t block_size;
	uint32_t checksum;
	uint8_t parent_uuid[16];
	uint32_t parent_timestamp;
	uint8_t parent_name[VHD_PARENT_NAME_BYTES]; /* UTF-16BE as stored */
	struct vhd_locator loc[VHD_NR_LOCATORS];
};

/* Big-endian helpers. */
static inline uint16_t vhd_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t vhd_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t vhd_be64(const uint8_t *p)
{
	return (uint64_t)vhd_be32(p) << 32 | vhd_be32(p + 4);
}
static inline void vhd_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void vhd_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void vhd_put_be64(uint8_t *p, uint64_t v)
{
	vhd_put_be32(p, (uint32_t)(v >> 32));
	vhd_put_be32(p + 4, (uint32_t)v);
}

/* One's complement of the byte sum, with the 4-byte checksum field at
 * csum_off counted as zero.  Same rule for footer (off 64) and header (36). */
uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off);

void vhd_footer_decode(const uint8_t buf[VHD_FOOTER_SIZE], struct vhd_footer *f);
/* Encodes and fills in the checksum (also stored back into f->checksum). */
void vhd_footer_encode(struct vhd_footer *f, uint8_t buf[VHD_FOOTER_SIZE]);
bool vhd_footer_checksum_ok(const uint8_t buf[VHD_FOOTER_SIZE]);

void vhd_dynhdr_decode(const uint8_t buf[VHD_DYNHDR_SIZE], struct vhd_dynhdr *h);
void vhd_dynhdr_encode(struct vhd_dynhdr *h, uint8_t buf[VHD_DYNHDR_SIZE]);
bool vhd_dynhdr_checksum_ok(const uint8_t buf[VHD_DYNHDR_SIZE]);

/* The spec's CHS algorithm (appendix "CHS calculation"). */
void vhd_chs_for_size(uint64_t size, struct vhd_geometry *g);
uint64_t vhd_chs_bytes(const struct vhd_geometry *g);
bool vhd_chs_is_max(const struct vhd_geometry *g);
/* Which size readers must expose: CHS for Virtual PC ("vpc ") and qemu
 * without force_size ("qemu") unless the geometry is the maximum marker,
 * the footer's current size otherwise (Hyper-V, VirtualBox, libvhdi, qemu
 * >= 10).  Returns the size and names the source. */
uint64_t vhd_footer_virtual_size(const struct vhd_footer *f, const char **source);

/* Bytes of locator data space: the spec says sectors, real producers store
 * bytes.  Like blktap: < 512 means sectors, a multiple of 512 means bytes;
 * anything else is invalid (returns 0). */
uint64_t vhd_locator_space_bytes(uint32_t stored);
const char *vhd_platform_name(uint32_t code, char buf[5]);
/* Four raw bytes as printable text ('.' for the rest, trailing NULs cut). */
void vhd_fourcc_text(const uint8_t in[4], char out[5]);

/* Text conversion for locators and the parent name.  Return the number of
 * bytes written (excluding the NUL) or -EINVAL/-ENAMETOOLONG.  Invalid
 * sequences (lone surrogates) become U+FFFD rather than failing. */
int vhd_utf16_to_utf8(const uint8_t *in, size_t in_len, bool big_endian,
		      char *out, size_t out_size);
int vhd_utf8_to_utf16(const char *in, bool big_endian, uint8_t *out,
		      size_t out_size);

/* Bitmap bits are MSB-first: byte i bit 7 = sector 8i. */
static inline bool vhd_bit_test(const uint8_t *bm, uint32_t sector)
{
	return bm[sector >> 3] & (0x80u >> (sector & 7));
}
static inline void vhd_bit_set(uint8_t *bm, uint32_t sector)
{
	bm[sector >> 3] |= (uint8_t)(0x80u >> (sector & 7));
}

#endif
