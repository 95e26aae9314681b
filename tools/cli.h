/* cli.h - shared helpers of vhdtool's commands. */
#ifndef VHDTOOL_CLI_H
#define VHDTOOL_CLI_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "vhd.h"

/* Exit codes, as documented in `vhdtool --help`. */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,    /* the operation failed (check: problems found) */
	EXIT_USAGE = 2,   /* bad arguments (check: the image could not be opened) */
};

struct cli_common {
	bool json;
	bool force_share;          /* -U: no lock */
	const char *parent_dir;
	bool quiet;
};

/* Long options every command accepts; handle them with cli_common_opt. */
#define CLI_COMMON_LONGOPTS                                            \
	{"output", required_argument, NULL, 'O' + 256},                \
	{"force-share", no_argument, NULL, 'U'},                        \
	{"parent-dir", required_argument, NULL, 'P' + 256},            \
	{"format", required_argument, NULL, 'f'},                       \
	{"help", no_argument, NULL, 'h'}

/* Returns 1 if handled, 0 if not a common option, -1 on a bad value. */
int cli_common_opt(struct cli_common *c, int opt, const char *arg);
void cli_open_opts(const struct cli_common *c, struct vhd_open_opts *o, bool writable);

/* "10G", "512", "1.5M" are not all valid: integers with K/M/G/T (powers of
 * 1024, optional "iB"/"B").  Returns 0 or -EINVAL. */
int cli_parse_size(const char *s, uint64_t *out);
/* "64 MiB" style. */
void cli_human_size(uint64_t v, char *buf, size_t len);
void cli_print_json(struct json_object *o);
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* -p progress on stderr: one line with percent, bytes, rate and ETA,
 * redrawn at most 10 times a second; silent when stderr is not a terminal. */
struct cli_progress {
	bool enabled;
	const char *what;
	double start, last;
};
void cli_progress_init(struct cli_progress *p, bool requested, const char *what);
void cli_progress_cb(void *ctx, uint64_t done, uint64_t total);
void cli_progress_end(struct cli_progress *p);

int cmd_create(int argc, char **argv);
int cmd_checkpoint(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_unmount(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_set_parent(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_repair(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_read(int argc, char **argv);
int cmd_write(int argc, char **argv);

#endif
