/* setparent.c - change the parent of a differencing disk: set-parent (Hyper-V
 * Set-VHD -ParentPath, qemu-img rebase -u) and rebase (qemu-img rebase, safe
 * mode: the child's content is kept).
 *
 * What changes in CHILD: the dynamic header's parent unique id, parent
 * timestamp, parent unicode name and locator table, and the locator data
 * (W2ru, W2ku, MacX, the encodings create.c writes).  The footer, the BAT and
 * the blocks are not touched by the repoint itself.
 *
 * Crash safety of the repoint (kill -9 or power loss at any point):
 *
 *   The danger is a child that opens over a disk whose content it was not
 *   written against.  Every parent candidate is accepted only when its
 *   footer's unique id equals the id in the child's header (open.c), so what
 *   must never happen is a header whose id is found through no locator, or a
 *   locator that names garbage while the header relies on it.  The repoint
 *   therefore moves through header states in which the recorded id can
 *   always be resolved:
 *
 *   1. The new locator data goes into fresh space after everything the file
 *      holds: the footer is written at the new end first and made durable,
 *      then the data over the old footer (like write.c's allocation); fsync.
 *      A crash here leaves leaked space after the last block, nothing else.
 *   2. H1 = old id, old name, table = old locators + new locators; fsync.
 *   3. H2 = new id, new name and timestamp, the same table; fsync.
 *   4. If every new locator fits in an old locator's space (always for files
 *      we created: 4 KiB each, see create.c), the new data is written there
 *      (the old spaces are referenced by H2 but hold paths of the old parent,
 *      which H2's id rejects, and H2 also has the copies at the end); fsync.
 *      H4 = new id, table = the new locators in the old spaces; fsync.  The
 *      space at the end is now unreferenced: the footer is written at its
 *      start, fsync, and the file is cut after it (like repair/compact), so
 *      the file ends up the same size, locators before the first block.
 *      Otherwise H3 = new id, table = the new locators at the end; fsync, and
 *      the old locator space stays as leaked space (check: info).
 *
 *   A header is one 1024-byte write at offset 512: a process kill never tears
 *   it (one pwrite within one page); power loss on a 512-byte-sector device
 *   could persist one of its two sectors only.  Sector 0 holds the checksum,
 *   the id, the timestamp and the first 224 characters of the name; sector 1
 *   the rest of the name and the locator table.  Each step changes either
 *   only the table (2 and 4: the other sector differs in the checksum only),
 *   or only the id/name with the table unchanged (3), so a torn header reads
 *   as the state before or after the step with a bad checksum: it opens with
 *   a warning (the header checksum is advisory, every field is validated)
 *   and `vhdtool repair` recomputes the sum.  In every state a locator
 *   naming the disk with the recorded id exists (for the old id: as long as
 *   the old locators found the old parent before).
 *
 *   Re-running after an interruption is safe in every state: the table of a
 *   half-done repoint simply holds more entries (old ones beyond the eight
 *   slots are dropped, the least useful kinds first).
 *
 * rebase (safe): every range CHILD does not hold itself where the old chain
 * and the new one read differently is copied from the old chain into CHILD
 * with the crash-safe write path (data, fdatasync, then BAT/bitmap: until the
 * bitmap bit is set the sector still reads from the old parent, and both are
 * the same bytes), all of it is flushed, then the repoint above runs with the
 * new id.  A crash during the copy leaves the old parent in place and the
 * content unchanged; running rebase again skips what was copied.  A crash
 * during the repoint leaves a child that opens over the old or the new
 * parent, both showing the same content.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define NR_NEW 3                     /* W2ru, W2ku, MacX */
#define LOCATOR_MIN_SPACE 4096u      /* as create.c */
#define LOCATOR_BUF 65536u
#define COPY_CHUNK (1u << 20)
#define BATCH_BYTES (32u << 20)      /* data written per fdatasync */
#define BATCH_PLANS 1024

static const uint32_t new_codes[NR_NEW] = {VHD_PLAT_W2RU, VHD_PLAT_W2KU, VHD_PLAT_MACX};

__attribute__((format(printf, 2, 3)))
static void warnf(const struct vhd_open_opts *opts, const char *fmt, ...)
{
	char msg[VHD_ERR_LEN + 600];
	va_list ap;

	if (!opts || !opts->warn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	opts->warn(opts->warn_ctx, msg);
}

static int sync_data(int fd)
{
	return fdatasync(fd) < 0 ? -errno : 0;
}

static bool same_file(const struct vhd_image *a, const struct vhd_image *b)
{
	return a->dev == b->dev && a->ino == b->ino;
}

/* ---- the header states ------------------------------------------------ */

struct new_locator {
	uint32_t code;
	uint8_t *data;            /* encoded path, zero-padded to `space` */
	uint32_t len;
	uint64_t space;           /* bytes reserved at the end of the file */
	uint64_t end_off;         /* where it lives at the end of the file */
	int reuse;                /* index into the old table, or -1 */
};

/* Preference when the table overflows: the kinds open.c tries first. */
static int kind_rank(uint32_t code)
{
	switch (code) {
	case VHD_PLAT_W2RU: return 0;
	case VHD_PLAT_MACX: return 1;
	case VHD_PLAT_W2KU: return 2;
	case VHD_PLAT_WI2R: return 3;
	case VHD_PLAT_WI2K: return 4;
	case VHD_PLAT_MAC: return 5;
	default: return 6;
	}
}

/* The raw header with the parent fields replaced and the checksum redone.
 * Everything else (reserved bytes a foreign producer may have used) is kept
 * byte for byte. */
static void header_build(const uint8_t *base, const uint8_t uuid[16], uint32_t timestamp,
			 const uint8_t name[VHD_PARENT_NAME_BYTES],
			 const struct vhd_locator loc[VHD_NR_LOCATORS], uint8_t *out)
{
	memcpy(out, base, VHD_DYNHDR_SIZE);
	memcpy(out + 40, uuid, 16);
	vhd_put_be32(out + 56, timestamp);
	memcpy(out + 64, name, VHD_PARENT_NAME_BYTES);
	for (int i = 0; i < VHD_NR_LOCATORS; i++) {
		uint8_t *b = out + 576 + 24 * i;

		vhd_put_be32(b, loc[i].code);
		vhd_put_be32(b + 4, loc[i].data_space);
		vhd_put_be32(b + 8, loc[i].data_length);
		vhd_put_be32(b + 12, loc[i].reserved);
		vhd_put_be64(b + 16, loc[i].data_offset);
	}
	vhd_put_be32(out + 36, vhd_checksum(out, VHD_DYNHDR_SIZE, 36));
}

static int header_write(struct vhd_image *img, const uint8_t *raw)
{
	int ret = pwrite_full(img->fd, raw, VHD_DYNHDR_SIZE, img->footer.data_offset);

	return ret < 0 ? ret : sync_data(img->fd);
}

static int footer_write(struct vhd_image *img, uint64_t pos)
{
	uint8_t buf[VHD_FOOTER_SIZE];

	vhd_footer_encode(&img->footer, buf);
	return pwrite_full(img->fd, buf, sizeof(buf), pos);
}

/* An old locator whose space may take new data once nothing relies on it. */
static bool reusable(const struct vhd_image *img, const struct vhd_locator *l, uint64_t limit)
{
	uint64_t space = vhd_locator_space_bytes(l->data_space);

	return l->code != VHD_PLAT_NONE && space && l->data_length <= space &&
	       l->data_offset >= VHD_FOOTER_SIZE && l->data_offset % VHD_SECTOR_SIZE == 0 &&
	       l->data_offset <= limit && limit - l->data_offset >= space &&
	       /* never the header or the BAT (load.c would have refused, but cheap) */
	       (l->data_offset >= img->footer.data_offset + VHD_DYNHDR_SIZE ||
		l->data_offset + space <= img->footer.data_offset) &&
	       (l->data_offset >= img->hdr.table_offset + 4ull * img->hdr.max_table_entries ||
		l->data_offset + space <= img->hdr.table_offset);
}

/* Picks an old locator space for each new locator, lowest offsets first (they
 * lie before the blocks).  Returns true when every new locator got one. */
static bool assign_spaces(const struct vhd_image *img, struct new_locator *nl, uint64_t limit)
{
	const struct vhd_locator *old = img->hdr.loc;
	bool used[VHD_NR_LOCATORS] = {false};
	int order[NR_NEW] = {0, 1, 2};

	/* longest data first, so that a tight space goes to what fits it */
	for (int i = 0; i < NR_NEW; i++)
		for (int j = i + 1; j < NR_NEW; j++)
			if (nl[order[j]].len > nl[order[i]].len) {
				int t = order[i];

				order[i] = order[j];
				order[j] = t;
			}
	for (int k = 0; k < NR_NEW; k++) {
		struct new_locator *n = &nl[order[k]];
		int best = -1;

		n->reuse = -1;
		for (int i = 0; i < VHD_NR_LOCATORS; i++) {
			if (used[i] || !reusable(img, &old[i], limit) ||
			    vhd_locator_space_bytes(old[i].data_space) < n->len)
				continue;
			if (best < 0 || old[i].data_offset < old[best].data_offset)
				best = i;
		}
		if (best < 0)
			return false;
		used[best] = true;
		n->reuse = best;
	}
	return true;
}

/* H1's table: the new locators (at the end of the file) and as many of the
 * old ones as fit, most useful kinds first. */
static void union_table(const struct vhd_image *img, const struct new_locator *nl,
			struct vhd_locator *t)
{
	const struct vhd_locator *old = img->hdr.loc;
	int n = 0;

	memset(t, 0, sizeof(*t) * VHD_NR_LOCATORS);
	for (int i = 0; i < NR_NEW; i++, n++) {
		t[n].code = nl[i].code;
		t[n].data_space = (uint32_t)nl[i].space;
		t[n].data_length = nl[i].len;
		t[n].data_offset = nl[i].end_off;
	}
	for (int rank = 0; rank <= 6 && n < VHD_NR_LOCATORS; rank++)
		for (int i = 0; i < VHD_NR_LOCATORS && n < VHD_NR_LOCATORS; i++)
			if (old[i].code != VHD_PLAT_NONE && kind_rank(old[i].code) == rank)
				t[n++] = old[i];
}

static int encode_new(const char *child_path, const char *parent_path, struct new_locator *nl,
		      uint8_t name[VHD_PARENT_NAME_BYTES], struct vhd_err *err)
{
	const char *base = strrchr(parent_path, '/');
	int ret;

	base = base ? base + 1 : parent_path;
	memset(name, 0, VHD_PARENT_NAME_BYTES);
	ret = vhd_utf8_to_utf16(base, true, name, VHD_PARENT_NAME_BYTES);
	if (ret < 0) {
		vhd_err_set(err, "%s: parent name: \"%s\" is longer than the 256 UTF-16 units the header holds",
			    child_path, base);
		return ret;
	}
	for (int i = 0; i < NR_NEW; i++) {
		char pn[5];

		nl[i].code = new_codes[i];
		nl[i].data = calloc(1, LOCATOR_BUF);
		if (!nl[i].data)
			return -ENOMEM;
		ret = locator_encode_path(new_codes[i], child_path, parent_path, nl[i].data,
					  LOCATOR_BUF);
		if (ret < 0) {
			vhd_err_set(err, "%s: parent locator %s: cannot encode the path of %s: %s",
				    child_path, vhd_platform_name(new_codes[i], pn), parent_path,
				    strerror(-ret));
			return ret;
		}
		nl[i].len = (uint32_t)ret;
		nl[i].space = round_up(nl[i].len, VHD_SECTOR_SIZE);
		if (nl[i].space < LOCATOR_MIN_SPACE)
			nl[i].space = LOCATOR_MIN_SPACE;
		nl[i].reuse = -1;
	}
	return 0;
}

/* The repoint (see the top of the file).  img is the child, opened for
 * writing, exclusively locked; np the new parent.  On success img->hdr
 * describes the new state. */
static int repoint(struct vhd_image *img, const char *child_path, const struct vhd_image *np,
		   const char *np_path, struct vhd_err *err)
{
	struct new_locator nl[NR_NEW];
	struct vhd_locator table[VHD_NR_LOCATORS];
	uint8_t name[VHD_PARENT_NAME_BYTES], raw0[VHD_DYNHDR_SIZE], raw[VHD_DYNHDR_SIZE];
	uint8_t *zone = NULL;
	uint64_t e0, e1, total = 0;
	uint32_t ts = 0;
	struct stat st;
	const char *step = "reading the dynamic header";
	int ret;

	memset(nl, 0, sizeof(nl));
	ret = encode_new(child_path, np_path, nl, name, err);
	if (ret < 0)
		goto out_quiet;
	if (fstat(np->fd, &st) == 0 && st.st_mtime > VHD_EPOCH_OFFSET)
		ts = (uint32_t)(st.st_mtime - VHD_EPOCH_OFFSET);
	ret = pread_full(img->fd, raw0, sizeof(raw0), img->footer.data_offset);
	if (ret < 0)
		goto out;

	/* 1. new locator data after everything, footer at the new end first */
	e0 = round_up(img->footer_pos > img->data_end ? img->footer_pos : img->data_end,
		      VHD_SECTOR_SIZE);
	for (int i = 0; i < NR_NEW; i++) {
		nl[i].end_off = e0 + total;
		total += nl[i].space;
	}
	e1 = e0 + total;
	zone = calloc(1, total);
	if (!zone) {
		ret = -ENOMEM;
		goto out_quiet;
	}
	for (int i = 0; i < NR_NEW; i++)
		memcpy(zone + (nl[i].end_off - e0), nl[i].data, nl[i].len);
	step = "writing the footer at the new end";
	ret = footer_write(img, e1);
	if (ret == 0)
		ret = sync_data(img->fd);
	if (ret < 0)
		goto out;
	img->footer_pos = e1;
	img->file_size = e1 + VHD_FOOTER_SIZE;
	step = "writing the new locator data";
	ret = pwrite_full(img->fd, zone, total, e0);
	if (ret == 0)
		ret = sync_data(img->fd);
	if (ret < 0)
		goto out;

	/* 2. old id, old and new locators */
	step = "writing the dynamic header (old and new locators)";
	union_table(img, nl, table);
	header_build(raw0, img->hdr.parent_uuid, img->hdr.parent_timestamp, img->hdr.parent_name,
		     table, raw);
	ret = header_write(img, raw);
	if (ret < 0)
		goto out;

	/* 3. new id, same table */
	step = "writing the dynamic header (new parent id)";
	header_build(raw0, np->footer.uuid, ts, name, table, raw);
	ret = header_write(img, raw);
	if (ret < 0)
		goto out;

	memset(table, 0, sizeof(table));
	if (assign_spaces(img, nl, e0)) {
		/* 4. the new data into the old spaces, then H4, then cut the end */
		for (int i = 0; i < NR_NEW; i++) {
			const struct vhd_locator *o = &img->hdr.loc[nl[i].reuse];
			uint64_t space = vhd_locator_space_bytes(o->data_space);
			uint8_t *buf = calloc(1, space);

			if (!buf) {
				ret = -ENOMEM;
				goto out_quiet;
			}
			memcpy(buf, nl[i].data, nl[i].len);
			step = "writing locator data in place";
			ret = pwrite_full(img->fd, buf, space, o->data_offset);
			free(buf);
			if (ret < 0)
				goto out;
			table[i].code = nl[i].code;
			table[i].data_space = o->data_space; /* as stored: same space */
			table[i].data_length = nl[i].len;
			table[i].data_offset = o->data_offset;
		}
		ret = sync_data(img->fd);
		if (ret < 0)
			goto out;
		step = "writing the dynamic header (locators in place)";
		header_build(raw0, np->footer.uuid, ts, name, table, raw);
		ret = header_write(img, raw);
		if (ret < 0)
			goto out;
		vhd_dynhdr_decode(raw, &img->hdr);
		step = "giving back the space at the end";
		ret = footer_write(img, e0);
		if (ret == 0)
			ret = sync_data(img->fd);
		if (ret == 0 && ftruncate(img->fd, (off_t)(e0 + VHD_FOOTER_SIZE)) < 0)
			ret = -errno;
		if (ret == 0 && fsync(img->fd) < 0)
			ret = -errno;
		if (ret < 0)
			goto out;
		img->footer_pos = e0;
		img->file_size = e0 + VHD_FOOTER_SIZE;
	} else {
		/* 4'. the new locators stay at the end; the old space is leaked */
		for (int i = 0; i < NR_NEW; i++) {
			table[i].code = nl[i].code;
			table[i].data_space = (uint32_t)nl[i].space;
			table[i].data_length = nl[i].len;
			table[i].data_offset = nl[i].end_off;
		}
		step = "writing the dynamic header (new locators)";
		header_build(raw0, np->footer.uuid, ts, name, table, raw);
		ret = header_write(img, raw);
		if (ret < 0)
			goto out;
		vhd_dynhdr_decode(raw, &img->hdr);
		img->data_end = e1;
	}
	ret = 0;
	goto out_quiet;
out:
	vhd_err_set(err, "%s: set-parent: %s: %s (the child is consistent; run the command again)",
		    child_path, step, strerror(-ret));
out_quiet:
	free(zone);
	for (int i = 0; i < NR_NEW; i++)
		free(nl[i].data);
	return ret;
}

/* ---- opening ------------------------------------------------------------ */

/* Options for the parents (old and new chains): the caller's parent_dir,
 * warnings and -U; never writable. */
static struct vhd_open_opts parent_opts(const struct vhd_open_opts *opts, unsigned extra)
{
	struct vhd_open_opts o = {0};

	if (opts) {
		o.parent_dir = opts->parent_dir;
		o.warn = opts->warn;
		o.warn_ctx = opts->warn_ctx;
		o.flags = opts->flags & VHD_OPEN_NO_LOCK;
	}
	o.flags |= extra;
	return o;
}

/* The child, for writing, exclusively locked (whatever -U says: nobody may
 * write it meanwhile), without its parent. */
static int open_child(const char *child, const struct vhd_open_opts *opts, struct vhd_image **out,
		      struct vhd_err *err)
{
	struct vhd_open_opts o = parent_opts(opts, VHD_OPEN_RDWR | VHD_OPEN_NO_PARENT);
	struct vhd_image *img = NULL;
	int ret;

	o.flags &= ~VHD_OPEN_NO_LOCK;
	ret = vhd_open(child, &o, &img, err);
	if (ret < 0)
		return ret;
	if (img->footer.disk_type != VHD_TYPE_DIFF) {
		vhd_err_set(err, "%s: is a %s disk: only a differencing disk has a parent to change",
			    child, vhd_type_name((enum vhd_type)img->footer.disk_type));
		vhd_close(img);
		return -EINVAL;
	}
	if (vhd_merge_pending(child)) {
		vhd_err_set(err, "%s: an interrupted merge waits to be finished; run `vhdtool merge` "
				 "or `vhdtool repair` on it first", child);
		vhd_close(img);
		return -EBUSY;
	}
	*out = img;
	return 0;
}

/* Opens NEWPARENT's chain read-only.  First it walks the chain one level at a
 * time without locks, so that a chain containing CHILD is reported as the
 * loop it is (opening it with locks would just collide with our own lock,
 * and a chain through CHILD's missing parent would fail for another reason). */
static int open_new_parent(const char *path, const struct vhd_image *child,
			   const struct vhd_open_opts *opts, struct vhd_image **out,
			   struct vhd_err *err)
{
	struct vhd_open_opts walk = parent_opts(opts, VHD_OPEN_NO_PARENT | VHD_OPEN_NO_LOCK);
	struct vhd_open_opts po = parent_opts(opts, 0);
	struct vhd_image *top = NULL, *np = NULL;
	struct vhd_err perr;
	int ret;

	walk.warn = NULL; /* the real open below says it once */
	ret = vhd_open(path, &walk, &top, &perr);
	if (ret < 0) {
		vhd_err_set(err, "new parent %s", perr.msg);
		return ret;
	}
	for (struct vhd_image *cur = top; cur; cur = cur->parent) {
		struct vhd_diag d = {.file = cur->path, .err = &perr, .opts = &walk};

		if (same_file(cur, child)) {
			if (cur == top)
				vhd_err_set(err, "%s: a disk cannot be its own parent", child->path);
			else
				vhd_err_set(err, "%s: the chain of the new parent %s contains %s itself "
						 "(as %s): that would be a loop",
					    child->path, path, child->path, cur->path);
			ret = -ELOOP;
			goto out;
		}
		if (cur->footer.disk_type != VHD_TYPE_DIFF)
			break;
		perr.msg[0] = 0;
		ret = image_open_parent(cur, &walk, &d);
		if (ret < 0) {
			vhd_err_set(err, "new parent %s does not open as a chain: %s", path,
				    perr.msg[0] ? perr.msg : strerror(-ret));
			goto out;
		}
	}
	ret = vhd_open(path, &po, &np, &perr);
	if (ret < 0) {
		vhd_err_set(err, "new parent %s", perr.msg);
		goto out;
	}
	for (struct vhd_image *cur = np; cur; cur = cur->parent)
		if (same_file(cur, child)) { /* changed since the walk */
			vhd_err_set(err, "%s: the chain of the new parent %s contains it: that would be a loop",
				    child->path, path);
			ret = -ELOOP;
			goto out;
		}
	*out = np;
	np = NULL;
	ret = 0;
out:
	vhd_close(np);
	vhd_close(top);
	return ret;
}

/* ---- set-parent ------------------------------------------------------------ */

static int check_ids(struct vhd_image *child, const struct vhd_image *np, const char *np_path,
		     bool force, const struct vhd_open_opts *opts, struct vhd_err *err)
{
	char want[37], got[37];
	bool same = !memcmp(np->footer.uuid, child->hdr.parent_uuid, 16);

	vhd_uuid_format(child->hdr.parent_uuid, want);
	vhd_uuid_format(np->footer.uuid, got);
	if (!same && !force) {
		vhd_err_set(err, "%s: the new parent %s has unique id %s, but the child records %s for its "
				 "parent: it is another disk (pass --force to attach the child to it anyway; "
				 "the child's content then changes, or use rebase to keep it)",
			    child->path, np_path, got, want);
		return -EINVAL;
	}
	if (!same && child->footer.saved_state) {
		vhd_err_set(err, "%s: saved state: the disk belongs to a saved virtual machine; "
				 "refusing to change the content it shows", child->path);
		return -EBUSY;
	}
	if (!same)
		warnf(opts, "%s: its parent unique id changes from %s to %s (%s): the sectors the child "
			    "does not hold now read from the new parent, so the disk's visible content "
			    "may change (rebase keeps it)",
		      child->path, want, got, np_path);
	if (np->virtual_size != child->virtual_size)
		warnf(opts, "%s: the new parent %s is %" PRIu64 " bytes, the child %" PRIu64
			    " bytes (beyond the parent's end the child reads zeros where it holds nothing)",
		      child->path, np_path, np->virtual_size, child->virtual_size);
	return 0;
}

/* Common end of set-parent and rebase: close both images (the child's
 * close flushes) and make sure a failure has a sentence. */
static int close_both(struct vhd_image *img, struct vhd_image *np, const char *child,
		      const char *what, int ret, struct vhd_err *err)
{
	int cret;

	vhd_close(np);
	cret = vhd_close(img);
	if (ret == 0 && cret < 0) {
		ret = cret;
		vhd_err_set(err, "%s: flushing: %s", child, strerror(-ret));
	}
	if (ret < 0 && err && !err->msg[0])
		vhd_err_set(err, "%s: %s: %s", child, what, strerror(-ret));
	return ret;
}

int vhd_set_parent(const char *child, const char *new_parent, bool force,
		   const struct vhd_open_opts *opts, struct vhd_err *err)
{
	struct vhd_image *img = NULL, *np = NULL;
	int ret;

	if (err)
		err->msg[0] = 0;
	ret = open_child(child, opts, &img, err);
	if (ret < 0)
		return ret;
	ret = open_new_parent(new_parent, img, opts, &np, err);
	if (ret < 0)
		goto out;
	ret = check_ids(img, np, new_parent, force, opts, err);
	if (ret < 0)
		goto out;
	ret = repoint(img, child, np, new_parent, err);
out:
	return close_both(img, np, child, "set-parent", ret, err);
}

/* ---- rebase ----------------------------------------------------------------- */

/* Like vhd_map with VHD_MAP_RESOLVE on a whole chain, reading zeros beyond
 * its end (a parent smaller than the child). */
static int map_chain(struct vhd_image *img, uint64_t off, uint64_t len, struct vhd_extent *e)
{
	if (off >= img->virtual_size) {
		memset(e, 0, sizeof(*e));
		e->offset = off;
		e->length = len;
		e->kind = VHD_EXT_ZERO;
		e->fd = -1;
		e->owner = img;
		return 0;
	}
	if (img->virtual_size - off < len)
		len = img->virtual_size - off;
	return vhd_map(img, off, len, VHD_MAP_RESOLVE, e);
}

/* True when both extents read the same bytes without looking: both zero, or
 * the same place of the same file (chains sharing an ancestor). */
static bool same_source(const struct vhd_extent *a, const struct vhd_extent *b)
{
	if (a->kind == VHD_EXT_ZERO && b->kind == VHD_EXT_ZERO)
		return true;
	return a->kind == VHD_EXT_DATA && b->kind == VHD_EXT_DATA && a->owner && b->owner &&
	       same_file(a->owner, b->owner) && a->file_offset == b->file_offset;
}

static int extent_read(const struct vhd_extent *e, uint8_t *buf, uint64_t len)
{
	if (e->kind == VHD_EXT_DATA)
		return pread_full(e->fd, buf, len, e->file_offset);
	if (e->kind == VHD_EXT_ZERO) {
		memset(buf, 0, len);
		return 0;
	}
	return -ENOLINK;
}

static int write_differences(struct write_batch *b, const uint8_t *old, const uint8_t *new,
			     uint64_t len, uint64_t off)
{
	uint64_t s = 0;

	while (s < len) {
		uint64_t e;
		int ret;

		while (s < len && !memcmp(old + s, new + s, VHD_SECTOR_SIZE))
			s += VHD_SECTOR_SIZE;
		if (s >= len)
			break;
		for (e = s; e < len && memcmp(old + e, new + e, VHD_SECTOR_SIZE); e += VHD_SECTOR_SIZE)
			;
		ret = batch_write(b, old + s, e - s, off + s);
		if (ret < 0)
			return ret;
		s = e;
	}
	return 0;
}

/* Copies into the child what it reads from the old chain where the new chain
 * would read something else. */
static int copy_differences(struct vhd_image *child, struct vhd_image *np, vhd_progress_fn progress,
			    void *progress_ctx, struct vhd_err *err)
{
	uint64_t size = child->virtual_size, off = 0;
	struct write_batch batch, *b = &batch;
	uint8_t *obuf = NULL, *nbuf = NULL;
	const char *what = "mapping the child";
	int ret = batch_init(b, child, BATCH_PLANS, BATCH_BYTES);

	if (ret < 0 || posix_memalign((void **)&obuf, 4096, COPY_CHUNK) ||
	    posix_memalign((void **)&nbuf, 4096, COPY_CHUNK)) {
		ret = -ENOMEM;
		goto out;
	}
	while (off < size) {
		struct vhd_extent e, eo, en;
		uint64_t run_end;

		what = "mapping the child";
		ret = vhd_map(child, off, size - off, 0, &e);
		if (ret < 0)
			goto fail;
		run_end = off + e.length;
		if (e.kind != VHD_EXT_PARENT) {
			off = run_end;
			goto next;
		}
		while (off < run_end) {
			uint64_t n;

			what = "mapping the old parent";
			ret = map_chain(child->parent, off, run_end - off, &eo);
			if (ret < 0)
				goto fail;
			what = "mapping the new parent";
			ret = map_chain(np, off, eo.length, &en);
			if (ret < 0)
				goto fail;
			n = en.length; /* <= eo.length: one kind on each side */
			if (!same_source(&eo, &en)) {
				if (n > COPY_CHUNK)
					n = COPY_CHUNK;
				what = "reading the old parent";
				ret = extent_read(&eo, obuf, n);
				if (ret < 0)
					goto fail;
				what = "reading the new parent";
				ret = extent_read(&en, nbuf, n);
				if (ret < 0)
					goto fail;
				what = "writing the child";
				ret = write_differences(b, obuf, nbuf, n, off);
				if (ret < 0)
					goto fail;
			}
			off += n;
			if (progress)
				progress(progress_ctx, off, size);
		}
next:
		if (progress)
			progress(progress_ctx, off, size);
	}
	what = "writing the child";
	ret = batch_flush(b);
	if (ret == 0)
		ret = vhd_flush(child);
	if (ret < 0)
		goto fail;
	goto out;
fail:
	vhd_err_set(err, "%s: rebase: %s at offset %" PRIu64 ": %s (the content is unchanged; "
			 "run the rebase again)", child->path, what, off, strerror(-ret));
out:
	free(obuf);
	free(nbuf);
	batch_free(b);
	return ret;
}

int vhd_rebase(const char *child, const char *new_parent, const struct vhd_open_opts *opts,
	       vhd_progress_fn progress, void *progress_ctx, struct vhd_err *err)
{
	struct vhd_open_opts po = parent_opts(opts, 0);
	struct vhd_image *img = NULL, *np = NULL;
	struct vhd_err perr = {{0}};
	int ret;

	if (err)
		err->msg[0] = 0;
	ret = open_child(child, opts, &img, err);
	if (ret < 0)
		return ret;
	{
		struct vhd_diag d = {.file = child, .err = &perr, .opts = &po};

		ret = image_open_parent(img, &po, &d);
		if (ret < 0) {
			vhd_err_set(err, "%s: rebase needs the current parent to keep the content, and it "
					 "does not open: %s (if the parent was only moved or renamed, "
					 "`vhdtool set-parent` repoints the child; `rebase --unsafe` attaches "
					 "it to another disk without copying)",
				    child, perr.msg[0] ? perr.msg : strerror(-ret));
			goto out;
		}
	}
	ret = open_new_parent(new_parent, img, opts, &np, err);
	if (ret < 0)
		goto out;
	if (img->footer.saved_state) {
		vhd_err_set(err, "%s: saved state: the disk belongs to a saved virtual machine; "
				 "refusing to rewrite it", child);
		ret = -EBUSY;
		goto out;
	}
	ret = copy_differences(img, np, progress, progress_ctx, err);
	if (ret < 0)
		goto out;
	ret = repoint(img, child, np, new_parent, err);
out:
	return close_both(img, np, child, "rebase", ret, err);
}
