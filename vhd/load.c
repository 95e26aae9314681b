/* load.c - read and validate the metadata of one VHD file.
 *
 * Every offset, length and count from the file is checked against the file
 * size and the format's limits before it is used (DESIGN.md rule 5).  The
 * same code serves open (stop at the first error) and check (report all). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

int vhd_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* short file: callers checked sizes first */
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int vhd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* A metadata region, for overlap checks. */
struct region {
	uint64_t start, end;
	const char *what;
	uint32_t index;
};

static int region_cmp(const void *a, const void *b)
{
	const struct region *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

static bool footer_cookie_ok(const struct vhd_footer *f)
{
	return !memcmp(f->cookie, VHD_COOKIE, 8);
}

static void cookie_text(const char *c, char out[9])
{
	for (int i = 0; i < 8; i++)
		out[i] = (c[i] >= 0x20 && c[i] < 0x7f) ? c[i] : '.';
	out[8] = 0;
}

/* Chooses the footer: the trailing copy when sound, else the copy at offset 0
 * (dynamic disks keep one there), else whichever has the right cookie. */
static int load_footer(struct vhd_image *img, struct vhd_diag *d)
{
	uint8_t tail[VHD_FOOTER_SIZE], head[VHD_FOOTER_SIZE];
	struct vhd_footer ft, fh;
	bool tail_cookie, tail_sum, head_cookie = false, head_sum = false;
	char c[9];
	int ret;

	if (img->file_size < VHD_FOOTER_SIZE) {
		diag_report(d, VHD_SEV_ERROR, "file size",
			    "%" PRIu64 " bytes is too small to hold a VHD footer (512 bytes)",
			    img->file_size);
		return -EINVAL;
	}
	img->footer_pos = img->file_size - VHD_FOOTER_SIZE;
	ret = pread_full(img->fd, tail, sizeof(tail), img->footer_pos);
	if (ret < 0)
		return ret;
	vhd_footer_decode(tail, &ft);
	tail_cookie = footer_cookie_ok(&ft);
	if (!tail_cookie && img->file_size >= 511 + VHD_SECTOR_SIZE) {
		/* Virtual PC before 2004 wrote a 511-byte footer. */
		uint8_t old[VHD_FOOTER_SIZE] = {0};

		ret = pread_full(img->fd, old, 511, img->file_size - 511);
		if (ret < 0)
			return ret;
		if (!memcmp(old, VHD_COOKIE, 8)) {
			memcpy(tail, old, sizeof(tail));
			vhd_footer_decode(tail, &ft);
			tail_cookie = true;
			img->footer_pos = img->file_size - 511;
		}
	}
	tail_sum = tail_cookie && vhd_footer_checksum_ok(tail);

	if (img->file_size >= 2 * VHD_FOOTER_SIZE) {
		ret = pread_full(img->fd, head, sizeof(head), 0);
		if (ret < 0)
			return ret;
		vhd_footer_decode(head, &fh);
		head_cookie = footer_cookie_ok(&fh) &&
			      (fh.disk_type == VHD_TYPE_DYNAMIC || fh.disk_type == VHD_TYPE_DIFF);
		head_sum = head_cookie && vhd_footer_checksum_ok(head);
	}

	if (tail_sum) {
		img->footer = ft;
		img->footer_checksum_ok = true;
		/* A fixed disk's first sector is guest data, not a footer copy. */
		if (ft.disk_type == VHD_TYPE_FIXED)
			return 0;
		if (head_cookie && memcmp(head, tail, sizeof(head)))
			diag_report(d, VHD_SEV_WARNING, "footer copy",
				    "the footer copy at offset 0 differs from the footer at offset %" PRIu64,
				    img->footer_pos);
		else if (!head_cookie)
			diag_report(d, VHD_SEV_WARNING, "footer copy",
				    "no valid footer copy at offset 0 of a %s disk",
				    vhd_type_name(ft.disk_type));
		return 0;
	}
	cookie_text(ft.cookie, c);
	if (head_sum) {
		img->footer = fh;
		img->footer_checksum_ok = true;
		img->used_head_footer = true;
		if (tail_cookie)
			diag_report(d, VHD_SEV_WARNING, "footer checksum",
				    "footer at offset %" PRIu64 " has checksum 0x%08x, computed 0x%08x; using the copy at offset 0",
				    img->footer_pos, ft.checksum, vhd_checksum(tail, 512, 64));
		else
			diag_report(d, VHD_SEV_WARNING, "footer cookie",
				    "footer at offset %" PRIu64 " has cookie \"%s\" (expected \"conectix\"); using the copy at offset 0",
				    img->footer_pos, c);
		return 0;
	}
	if (tail_cookie || head_cookie) {
		const uint8_t *raw = tail_cookie ? tail : head;

		img->footer = tail_cookie ? ft : fh;
		img->used_head_footer = !tail_cookie;
		img->footer_checksum_ok = false;
		diag_report(d, VHD_SEV_WARNING, "footer checksum",
			    "footer at offset %" PRIu64 " has checksum 0x%08x, computed 0x%08x, and no sound copy exists",
			    tail_cookie ? img->footer_pos : 0, vhd_be32(raw + 64),
			    vhd_checksum(raw, 512, 64));
		return 0;
	}
	diag_report(d, VHD_SEV_ERROR, "footer cookie",
		    "no VHD footer: cookie at offset %" PRIu64 " is \"%s\" (expected \"conectix\") and offset 0 holds no footer copy",
		    img->footer_pos, c);
	return -EINVAL;
}

static int check_footer_fields(struct vhd_image *img, struct vhd_diag *d)
{
	const struct vhd_footer *f = &img->footer;
	unsigned before = d->errors;

	if (f->version >> 16 != 1)
		diag_report(d, VHD_SEV_ERROR, "footer version",
			    "format version 0x%08x is not 1.x", f->version);
	if (!(f->features & VHD_FEATURES_RESERVED))
		diag_report(d, VHD_SEV_WARNING, "footer features",
			    "features 0x%08x lack the reserved bit 0x2", f->features);
	if (f->disk_type != VHD_TYPE_FIXED && f->disk_type != VHD_TYPE_DYNAMIC &&
	    f->disk_type != VHD_TYPE_DIFF) {
		diag_report(d, VHD_SEV_ERROR, "disk type",
			    "disk type %u is not fixed (2), dynamic (3) or differencing (4)",
			    f->disk_type);
		return -EINVAL;
	}
	if (f->current_size % VHD_SECTOR_SIZE)
		diag_report(d, VHD_SEV_ERROR, "current size",
			    "current size %" PRIu64 " is not a multiple of 512", f->current_size);
	if (f->current_size > VHD_MAX_SIZE)
		diag_report(d, VHD_SEV_ERROR, "current size",
			    "current size %" PRIu64 " exceeds the VHD limit of 2040 GiB (%llu)",
			    f->current_size, VHD_MAX_SIZE);
	if (f->current_size == 0)
		diag_report(d, VHD_SEV_WARNING, "current size", "the disk is empty (size 0)");
	if (f->disk_type == VHD_TYPE_FIXED) {
		if (img->footer_pos < f->current_size)
			diag_report(d, VHD_SEV_ERROR, "current size",
				    "fixed disk of %" PRIu64 " bytes but the file holds only %" PRIu64
				    " bytes of data (truncated)",
				    f->current_size, img->footer_pos);
		else if (img->footer_pos > f->current_size)
			diag_report(d, VHD_SEV_WARNING, "current size",
				    "fixed disk of %" PRIu64 " bytes has %" PRIu64
				    " extra bytes before its footer",
				    f->current_size, img->footer_pos - f->current_size);
	} else {
		if (f->data_offset < VHD_FOOTER_SIZE || f->data_offset % VHD_SECTOR_SIZE ||
		    f->data_offset > img->footer_pos ||
		    img->footer_pos - f->data_offset < VHD_DYNHDR_SIZE)
			diag_report(d, VHD_SEV_ERROR, "data offset",
				    "dynamic header offset 0x%" PRIx64
				    " is not a sector inside the file (data ends at %" PRIu64 ")",
				    f->data_offset, img->footer_pos);
	}
	img->virtual_size = vhd_footer_virtual_size(f, &img->size_source);
	return d->errors > before ? -EINVAL : 0;
}

static int check_dynhdr(struct vhd_image *img, struct vhd_diag *d)
{
	uint8_t buf[VHD_DYNHDR_SIZE];
	struct vhd_dynhdr *h = &img->hdr;
	unsigned before = d->errors;
	char c[9];
	int ret;

	ret = pread_full(img->fd, buf, sizeof(buf), img->footer.data_offset);
	if (ret < 0)
		return ret;
	vhd_dynhdr_decode(buf, h);
	if (memcmp(h->cookie, VHD_DYN_COOKIE, 8)) {
		cookie_text(h->cookie, c);
		diag_report(d, VHD_SEV_ERROR, "header cookie",
			    "dynamic header at offset 0x%" PRIx64 " has cookie \"%s\" (expected \"cxsparse\")",
			    img->footer.data_offset, c);
		return -EINVAL;
	}
	if (!vhd_dynhdr_checksum_ok(buf))
		diag_report(d, VHD_SEV_WARNING, "header checksum",
			    "dynamic header checksum 0x%08x, computed 0x%08x",
			    h->checksum, vhd_checksum(buf, VHD_DYNHDR_SIZE, 36));
	if (h->version >> 16 != 1)
		diag_report(d, VHD_SEV_ERROR, "header version",
			    "dynamic header version 0x%08x is not 1.x", h->version);
	if (h->block_size < VHD_MIN_BLOCK_SIZE || h->block_size > VHD_MAX_BLOCK_SIZE ||
	    (h->block_size & (h->block_size - 1)))
		diag_report(d, VHD_SEV_ERROR, "block size",
			    "block size %u is not a power of two between 512 and 256 MiB",
			    h->block_size);
	if (d->errors > before)
		return -EINVAL;

	img->block_size = h->block_size;
	img->sectors_per_block = h->block_size / VHD_SECTOR_SIZE;
	img->bitmap_size = (uint32_t)round_up(img->sectors_per_block / 8 ? img->sectors_per_block / 8 : 1,
					      VHD_SECTOR_SIZE);
	img->nr_blocks = (uint32_t)((img->footer.current_size + h->block_size - 1) / h->block_size);

	if (h->max_table_entries < img->nr_blocks)
		diag_report(d, VHD_SEV_ERROR, "max table entries",
			    "BAT has %u entries but a disk of %" PRIu64
			    " bytes in %u-byte blocks needs %u",
			    h->max_table_entries, img->footer.current_size, h->block_size,
			    img->nr_blocks);
	if (h->table_offset < VHD_FOOTER_SIZE || h->table_offset > img->footer_pos ||
	    (img->footer_pos - h->table_offset) / 4 < h->max_table_entries)
		diag_report(d, VHD_SEV_ERROR, "table offset",
			    "BAT at offset 0x%" PRIx64 " with %u entries does not fit in the file (data ends at %" PRIu64 ")",
			    h->table_offset, h->max_table_entries, img->footer_pos);
	else if (h->table_offset < img->footer.data_offset + VHD_DYNHDR_SIZE &&
		 h->table_offset + 4ull * h->max_table_entries > img->footer.data_offset)
		diag_report(d, VHD_SEV_ERROR, "table offset",
			    "BAT at offset 0x%" PRIx64 " overlaps the dynamic header at 0x%" PRIx64,
			    h->table_offset, img->footer.data_offset);
	return d->errors > before ? -EINVAL : 0;
}

/* Only the entries the disk needs are kept in memory: a hostile header may
 * declare billions (a sparse file makes that free), and entries past the
 * disk's end are never used.  The next few are looked at for a warning. */
#define BAT_MAX_ENTRIES (64u << 20)  /* 256 MiB of BAT: 128 TiB in 2 MiB blocks */
#define BAT_EXTRA_SCAN 65536u

static int load_bat(struct vhd_image *img, struct vhd_diag *d)
{
	uint32_t n = img->nr_blocks;
	uint32_t extra = img->hdr.max_table_entries - n;
	uint32_t *more = NULL;
	int ret;

	if (n > BAT_MAX_ENTRIES) {
		diag_report(d, VHD_SEV_ERROR, "block size",
			    "%u-byte blocks give %u BAT entries for this size, more than the %u we load (use larger blocks)",
			    img->block_size, n, BAT_MAX_ENTRIES);
		return -EINVAL;
	}
	img->bat = malloc(n ? (size_t)n * 4 : 4);
	if (!img->bat)
		return -ENOMEM;
	ret = pread_full(img->fd, img->bat, (size_t)n * 4, img->hdr.table_offset);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < n; i++)
		img->bat[i] = vhd_be32((const uint8_t *)&img->bat[i]);

	if (extra > BAT_EXTRA_SCAN)
		extra = BAT_EXTRA_SCAN;
	if (!extra)
		return 0;
	more = malloc((size_t)extra * 4);
	if (!more)
		return -ENOMEM;
	ret = pread_full(img->fd, more, (size_t)extra * 4, img->hdr.table_offset + 4ull * n);
	for (uint32_t i = 0; ret == 0 && i < extra; i++) {
		uint32_t e = vhd_be32((const uint8_t *)&more[i]);

		if (e != VHD_BAT_UNUSED) {
			diag_report(d, VHD_SEV_WARNING, "block allocation table",
				    "BAT[%u] = 0x%08x (and maybe more) lies beyond the disk's %u blocks; ignored",
				    n + i, e, n);
			break; /* one sentence for all of them */
		}
	}
	free(more);
	return ret;
}

/* Bytes a block occupies in the file: its bitmap and its data.  Producers
 * (we and qemu) store the last block whole even when the virtual size ends
 * inside it; a file that stores it short is accepted as long as the part
 * inside the virtual size is there. */
uint64_t block_span(const struct vhd_image *img, uint32_t block, uint64_t off)
{
	uint64_t start = (uint64_t)block * img->block_size;
	uint64_t used = img->footer.current_size - start;
	uint64_t full = (uint64_t)img->bitmap_size + img->block_size;

	if (used >= img->block_size || (off <= img->footer_pos && img->footer_pos - off >= full))
		return full;
	return img->bitmap_size + round_up(used, VHD_SECTOR_SIZE);
}

static void add_region(struct region *r, size_t *n, uint64_t start, uint64_t len,
		       const char *what, uint32_t index)
{
	r[*n].start = start;
	r[*n].end = start + len;
	r[*n].what = what;
	r[*n].index = index;
	(*n)++;
}

static const char *region_name(const struct region *r, char *buf, size_t size)
{
	if (!strcmp(r->what, "block") || !strcmp(r->what, "locator"))
		snprintf(buf, size, "%s %u", r->what, r->index);
	else
		snprintf(buf, size, "%s", r->what);
	return buf;
}

/* Locators: offsets and lengths inside the file; content is decoded later,
 * when a parent is looked for. */
static void check_locators(struct vhd_image *img, struct vhd_diag *d,
			   struct region *regions, size_t *nr)
{
	bool diff = img->footer.disk_type == VHD_TYPE_DIFF;
	enum vhd_severity sev = diff ? VHD_SEV_ERROR : VHD_SEV_WARNING;

	for (int i = 0; i < VHD_NR_LOCATORS; i++) {
		const struct vhd_locator *l = &img->hdr.loc[i];
		uint64_t space, len;
		char name[5], field[32];

		if (l->code == VHD_PLAT_NONE)
			continue;
		snprintf(field, sizeof(field), "parent locator %d", i);
		vhd_platform_name(l->code, name);
		switch (l->code) {
		case VHD_PLAT_WI2R: case VHD_PLAT_WI2K: case VHD_PLAT_W2RU:
		case VHD_PLAT_W2KU: case VHD_PLAT_MAC: case VHD_PLAT_MACX:
			break;
		default:
			diag_report(d, VHD_SEV_WARNING, field,
				    "unknown platform code 0x%08x (\"%s\"), ignored", l->code, name);
			continue;
		}
		space = vhd_locator_space_bytes(l->data_space);
		if (l->data_length == 0 && l->data_space == 0)
			continue;
		if (space == 0 && l->data_space) {
			diag_report(d, sev, field,
				    "%s data space %u is neither a sector count nor a multiple of 512 bytes",
				    name, l->data_space);
			continue;
		}
		len = l->data_length > space ? l->data_length : space;
		if (l->data_length > space)
			diag_report(d, VHD_SEV_WARNING, field,
				    "%s data length %u exceeds its data space of %" PRIu64 " bytes",
				    name, l->data_length, space);
		if (l->data_offset < VHD_FOOTER_SIZE || l->data_offset > img->footer_pos ||
		    img->footer_pos - l->data_offset < l->data_length) {
			diag_report(d, sev, field,
				    "%s data at offset 0x%" PRIx64 " length %u lies outside the file (data ends at %" PRIu64 ")",
				    name, l->data_offset, l->data_length, img->footer_pos);
			continue;
		}
		if (img->footer_pos - l->data_offset < len)
			len = img->footer_pos - l->data_offset;
		add_region(regions, nr, l->data_offset, round_up(len, VHD_SECTOR_SIZE), "locator",
			   (uint32_t)i);
	}
}

/* Reports every region that starts before the previous one ended. */
static void check_overlaps(struct vhd_image *img, struct vhd_diag *d,
			   struct region *r, size_t n, uint64_t *leaked)
{
	uint64_t end = VHD_FOOTER_SIZE; /* after the footer copy */
	size_t prev = SIZE_MAX;
	char a[48], b[48];

	qsort(r, n, sizeof(*r), region_cmp);
	for (size_t i = 0; i < n; i++) {
		if (prev != SIZE_MAX && r[i].start < end) {
			diag_report(d, VHD_SEV_ERROR,
				    !strcmp(r[i].what, "block") ? "block allocation table" : r[i].what,
				    "%s at 0x%" PRIx64 "-0x%" PRIx64 " overlaps %s at 0x%" PRIx64 "-0x%" PRIx64,
				    region_name(&r[i], a, sizeof(a)), r[i].start, r[i].end,
				    region_name(&r[prev], b, sizeof(b)), r[prev].start, r[prev].end);
		} else if (r[i].start - end >= 4096) {
			/* Alignment padding is not a leak; a whole unused page is. */
			*leaked += r[i].start - end;
		}
		if (r[i].end > end) {
			end = r[i].end;
			prev = i;
		}
	}
	if (img->footer_pos > end && img->footer_pos - end >= 4096)
		*leaked += img->footer_pos - end;
	img->data_end = end;
}

static int check_layout(struct vhd_image *img, struct vhd_diag *d)
{
	uint32_t n = img->hdr.max_table_entries;
	struct region *regions;
	size_t nr = 0;
	unsigned before = d->errors;
	uint64_t leaked = 0;
	int ret = 0;

	/* one region per allocated block, plus header, BAT and locators */
	for (uint32_t i = 0; i < img->nr_blocks; i++)
		nr += img->bat[i] != VHD_BAT_UNUSED;
	regions = malloc((nr + 2 + VHD_NR_LOCATORS) * sizeof(*regions));
	nr = 0;
	if (!regions)
		return -ENOMEM;
	add_region(regions, &nr, img->footer.data_offset, VHD_DYNHDR_SIZE, "dynamic header", 0);
	add_region(regions, &nr, img->hdr.table_offset,
		   round_up(4ull * n, VHD_SECTOR_SIZE) < img->footer_pos - img->hdr.table_offset
			   ? round_up(4ull * n, VHD_SECTOR_SIZE)
			   : 4ull * n,
		   "block allocation table", 0);
	check_locators(img, d, regions, &nr);

	for (uint32_t i = 0; i < img->nr_blocks; i++) {
		uint64_t off, span;

		if (img->bat[i] == VHD_BAT_UNUSED)
			continue;
		off = block_file_offset(img, i);
		span = block_span(img, i, off);
		if (off < VHD_FOOTER_SIZE || off > img->footer_pos || img->footer_pos - off < span) {
			diag_report(d, VHD_SEV_ERROR, "block allocation table",
				    "BAT[%u] = 0x%08x puts block %u at 0x%" PRIx64 "-0x%" PRIx64
				    ", outside the file's data (which ends at 0x%" PRIx64 ")",
				    i, img->bat[i], i, off, off + span, img->footer_pos);
			continue;
		}
		img->nr_allocated++;
		add_region(regions, &nr, off, span, "block", i);
	}
	check_overlaps(img, d, regions, nr, &leaked);
	img->leaked_bytes = leaked;
	if (d->report)
		d->report->leaked_bytes += leaked;
	if (d->errors > before)
		ret = -EINVAL;
	free(regions);
	return ret;
}

int image_load(struct vhd_image *img, struct vhd_diag *d)
{
	struct stat st;
	int ret;

	if (fstat(img->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		diag_report(d, VHD_SEV_ERROR, "file type", "not a regular file (mode 0%o)",
			    (unsigned)st.st_mode);
		return -EINVAL;
	}
	img->dev = st.st_dev;
	img->ino = st.st_ino;
	img->file_size = (uint64_t)st.st_size;

	ret = load_footer(img, d);
	if (ret < 0)
		return ret;
	ret = check_footer_fields(img, d);
	if (ret < 0)
		return ret;
	if (img->footer.disk_type == VHD_TYPE_FIXED) {
		img->data_end = img->footer.current_size;
		return 0;
	}
	ret = check_dynhdr(img, d);
	if (ret < 0)
		return ret;
	ret = load_bat(img, d);
	if (ret < 0)
		return ret;
	return check_layout(img, d);
}
