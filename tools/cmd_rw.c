/* vhdtool read / write: copy bytes between the virtual disk and a stream. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define CHUNK (1u << 20)

static const char read_help[] =
	"Usage: vhdtool read [OPTIONS] FILE [OUTPUT]\n"
	"\n"
	"Copy bytes of the virtual disk (as seen through the whole differencing chain)\n"
	"to OUTPUT, or to standard output when OUTPUT is absent or \"-\".  Read-only:\n"
	"nothing is ever written to the image.\n"
	"\n"
	"  --offset=N        start at byte N of the virtual disk (default 0; any byte)\n"
	"  --length=N        copy N bytes (default: up to the end of the disk)\n"
	"  -U, --force-share open without the image lock\n"
	"  --parent-dir=DIR  look for parents only under DIR\n"
	"\n"
	"Example: vhdtool read disk.vhd --offset 1M --length 4K | xxd | head\n";

static const char write_help[] =
	"Usage: vhdtool write [OPTIONS] FILE [INPUT]\n"
	"\n"
	"Copy bytes from INPUT (or standard input when absent or \"-\") into the virtual\n"
	"disk at --offset, until end of input or --length bytes.  Any byte offset and\n"
	"length work (partial sectors are read, merged and rewritten; in a differencing\n"
	"disk the rest of such a sector comes from the parent).  New blocks are\n"
	"allocated crash-safely; the data is flushed before the command exits.  Writing\n"
	"past the end of the virtual disk fails and writes nothing beyond it.\n"
	"\n"
	"  --offset=N        start at byte N (default 0)\n"
	"  --length=N        write at most N bytes\n"
	"  --parent-dir=DIR  look for parents only under DIR\n"
	"\n"
	"Example: printf 'hello' | vhdtool write disk.vhd --offset 4096\n";

struct rw_args {
	struct cli_common c;
	uint64_t offset, length;
	bool have_length;
	const char *image, *stream;
};

static int parse_rw(int argc, char **argv, struct rw_args *a, const char *help, const char *name)
{
	static const struct option longopts[] = {
		{"offset", required_argument, NULL, 'o' + 256},
		{"length", required_argument, NULL, 'l' + 256},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	int opt, ret;

	memset(a, 0, sizeof(*a));
	while ((opt = getopt_long(argc, argv, "f:Uh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			fputs(help, stdout);
			return 1;
		case 'o' + 256:
			if (cli_parse_size(optarg, &a->offset) < 0) {
				cli_error("%s: --offset: \"%s\" is not a number", name, optarg);
				return -1;
			}
			break;
		case 'l' + 256:
			if (cli_parse_size(optarg, &a->length) < 0) {
				cli_error("%s: --length: \"%s\" is not a number", name, optarg);
				return -1;
			}
			a->have_length = true;
			break;
		default:
			ret = cli_common_opt(&a->c, opt, optarg);
			if (ret <= 0)
				return -1;
		}
	}
	if (optind >= argc || argc - optind > 2) {
		cli_error("%s: expected FILE and an optional stream (see vhdtool %s --help)", name, name);
		return -1;
	}
	a->image = argv[optind];
	a->stream = optind + 1 < argc ? argv[optind + 1] : "-";
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int cmd_read(int argc, char **argv)
{
	struct rw_args a;
	struct vhd_open_opts o;
	struct vhd_image *img = NULL;
	struct vhd_err err;
	uint8_t *buf = NULL;
	int fd = STDOUT_FILENO, ret, status = EXIT_FAIL;
	uint64_t size, left;

	ret = parse_rw(argc, argv, &a, read_help, "read");
	if (ret)
		return ret > 0 ? EXIT_OK : EXIT_USAGE;
	cli_open_opts(&a.c, &o, false);
	if (vhd_open(a.image, &o, &img, &err) < 0) {
		cli_error("read: %s", err.msg);
		return EXIT_FAIL;
	}
	size = vhd_virtual_size(img);
	if (a.offset > size || (a.have_length && a.length > size - a.offset)) {
		cli_error("read: %s: range %llu+%llu lies beyond the virtual size %llu", a.image,
			  (unsigned long long)a.offset, (unsigned long long)a.length,
			  (unsigned long long)size);
		goto out;
	}
	left = a.have_length ? a.length : size - a.offset;
	if (strcmp(a.stream, "-")) {
		fd = open(a.stream, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			cli_error("read: %s: %s", a.stream, strerror(errno));
			goto out;
		}
	}
	buf = malloc(CHUNK);
	if (!buf)
		goto out;
	for (uint64_t off = a.offset; left;) {
		size_t n = left < CHUNK ? (size_t)left : CHUNK;

		ret = vhd_pread(img, buf, n, off);
		if (ret < 0) {
			cli_error("read: %s: at offset %llu: %s", a.image, (unsigned long long)off,
				  strerror(-ret));
			goto out;
		}
		ret = write_all(fd, buf, n);
		if (ret < 0) {
			cli_error("read: %s: %s", a.stream, strerror(-ret));
			goto out;
		}
		off += n;
		left -= n;
	}
	status = EXIT_OK;
out:
	if (fd != STDOUT_FILENO && fd >= 0)
		close(fd);
	free(buf);
	vhd_close(img);
	return status;
}

static ssize_t read_full(int fd, uint8_t *p, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int cmd_write(int argc, char **argv)
{
	struct rw_args a;
	struct vhd_open_opts o;
	struct vhd_image *img = NULL;
	struct vhd_err err;
	uint8_t *buf = NULL;
	int fd = STDIN_FILENO, ret, status = EXIT_FAIL;
	uint64_t off, size, left;

	ret = parse_rw(argc, argv, &a, write_help, "write");
	if (ret)
		return ret > 0 ? EXIT_OK : EXIT_USAGE;
	cli_open_opts(&a.c, &o, true);
	if (vhd_open(a.image, &o, &img, &err) < 0) {
		cli_error("write: %s", err.msg);
		return EXIT_FAIL;
	}
	size = vhd_virtual_size(img);
	if (strcmp(a.stream, "-")) {
		fd = open(a.stream, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			cli_error("write: %s: %s", a.stream, strerror(errno));
			goto out;
		}
	}
	buf = malloc(CHUNK);
	if (!buf)
		goto out;
	left = a.have_length ? a.length : UINT64_MAX;
	for (off = a.offset; left;) {
		ssize_t n = read_full(fd, buf, left < CHUNK ? (size_t)left : CHUNK);

		if (n < 0) {
			cli_error("write: %s: %s", a.stream, strerror((int)-n));
			goto out;
		}
		if (n == 0)
			break;
		if (off > size || (uint64_t)n > size - off) {
			cli_error("write: %s: writing %zd bytes at offset %llu would pass the end of the "
				  "disk (virtual size %llu)",
				  a.image, n, (unsigned long long)off, (unsigned long long)size);
			goto out;
		}
		ret = vhd_pwrite(img, buf, (uint64_t)n, off);
		if (ret < 0) {
			cli_error("write: %s: at offset %llu: %s", a.image, (unsigned long long)off,
				  strerror(-ret));
			goto out;
		}
		off += (uint64_t)n;
		left -= (uint64_t)n;
	}
	ret = vhd_flush(img);
	if (ret < 0) {
		cli_error("write: %s: flush: %s", a.image, strerror(-ret));
		goto out;
	}
	status = EXIT_OK;
out:
	if (fd != STDIN_FILENO && fd >= 0)
		close(fd);
	free(buf);
	ret = vhd_close(img);
	if (ret < 0 && status == EXIT_OK) {
		cli_error("write: %s: close: %s", a.image, strerror(-ret));
		status = EXIT_FAIL;
	}
	return status;
}
