/* batch.c - batched writes through the prepare/commit protocol: the data of
 * many pieces, one fdatasync, then every piece's metadata.  The synchronous
 * write path, merge and rebase use it; the block VSP engine does the same
 * with io_uring. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

/* Writeback is started as data is written, so the batch's fdatasync finds
 * little left to do. */
#define KICK_BYTES (16u << 20)

int batch_init(struct write_batch *b, struct vhd_image *img, size_t max_plans, uint64_t max_bytes)
{
	b->img = img;
	b->plans = calloc(max_plans ? max_plans : 1, sizeof(*b->plans));
	b->cap = max_plans ? max_plans : 1;
	b->n = 0;
	b->bytes = b->since_kick = 0;
	b->max_bytes = max_bytes;
	b->commit = false;
	return b->plans ? 0 : -ENOMEM;
}

void batch_free(struct write_batch *b)
{
	free(b->plans);
	b->plans = NULL;
}

/* Data durable (unless the image is VHD_OPEN_NO_SYNC), then metadata. */
int batch_flush(struct write_batch *b)
{
	int ret = 0;

	if (b->commit && !b->img->no_sync && fdatasync(b->img->fd) < 0)
		ret = -errno;
	for (size_t i = 0; i < b->n && ret == 0; i++)
		ret = vhd_write_commit(b->img, &b->plans[i]);
	b->n = 0;
	b->bytes = 0;
	b->commit = false;
	return ret;
}

void batch_written(struct write_batch *b, uint64_t len)
{
	b->since_kick += len;
	/* only data in the page cache needs the kick */
	if (b->since_kick >= KICK_BYTES && !b->img->no_sync && image_data_fd(b->img) == b->img->fd) {
		sync_file_range(b->img->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		b->since_kick = 0;
	}
}

bool batch_full(const struct write_batch *b, size_t pieces)
{
	return b->cap - b->n < pieces || b->bytes >= b->max_bytes;
}

int batch_plan(struct write_batch *b, uint64_t len, uint64_t off, size_t *first)
{
	*first = b->n;
	while (len) {
		struct vhd_write_plan *p;
		int ret;

		if (b->n == b->cap)
			return -ENOBUFS; /* the caller sizes its pieces with batch_full */
		p = &b->plans[b->n];
		ret = vhd_write_prepare(b->img, off, len, p);
		if (ret < 0)
			return ret;
		b->commit |= p->needs_commit;
		b->bytes += p->length;
		b->n++;
		off += p->length;
		len -= p->length;
	}
	return 0;
}

int batch_write_plan(struct write_batch *b, const struct vhd_write_plan *p, const void *buf)
{
	int ret = pwrite_full(p->fd, buf, p->length, p->file_offset);

	if (ret == -EINVAL && p->fd != b->img->fd) /* not aligned for O_DIRECT */
		ret = pwrite_full(b->img->fd, buf, p->length, p->file_offset);
	return ret;
}

int batch_write(struct write_batch *b, const void *data, uint64_t len, uint64_t off)
{
	const uint8_t *buf = data;

	while (len) {
		struct vhd_write_plan *p;
		uint64_t bs, piece;
		size_t first;
		int ret;

		if (batch_full(b, 1)) {
			ret = batch_flush(b);
			if (ret < 0)
				return ret;
		}
		/* up to the end of the block: exactly one plan (fixed disks: one) */
		bs = b->img->block_size;
		piece = bs && bs - off % bs < len ? bs - off % bs : len;
		ret = batch_plan(b, piece, off, &first);
		if (ret < 0)
			return ret;
		for (p = &b->plans[first]; p < b->plans + b->n; p++) {
			ret = batch_write_plan(b, p, buf);
			if (ret < 0)
				return ret;
			batch_written(b, p->length);
			buf += p->length;
			off += p->length;
			len -= p->length;
		}
	}
	return 0;
}
