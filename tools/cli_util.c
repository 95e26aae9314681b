/* cli_util.c - option handling, sizes and output shared by vhdtool commands. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void warn_to_stderr(void *ctx, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "vhdtool: warning: %s\n", msg);
}

int cli_common_opt(struct cli_common *c, int opt, const char *arg)
{
	switch (opt) {
	case 'O' + 256:
		if (!strcmp(arg, "json"))
			c->json = true;
		else if (!strcmp(arg, "human"))
			c->json = false;
		else {
			cli_error("--output: \"%s\" is not human or json", arg);
			return -1;
		}
		return 1;
	case 'U':
		c->force_share = true;
		return 1;
	case 'P' + 256:
		c->parent_dir = arg;
		return 1;
	case 'f':
		if (strcasecmp(arg, "vhd") && strcasecmp(arg, "vpc")) {
			cli_error("-f: format \"%s\" is not supported (only vhd, alias vpc)", arg);
			return -1;
		}
		return 1;
	default:
		return 0;
	}
}

void cli_open_opts(const struct cli_common *c, struct vhd_open_opts *o, bool writable)
{
	memset(o, 0, sizeof(*o));
	o->flags = (writable ? VHD_OPEN_RDWR : 0) | (c->force_share ? VHD_OPEN_NO_LOCK : 0);
	o->parent_dir = c->parent_dir;
	o->warn = c->quiet ? NULL : warn_to_stderr;
}

int cli_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	case 'b': case 'B': case 0: break;
	default: return -EINVAL;
	}
	if (shift && (!strcasecmp(end, "iB") || !strcasecmp(end, "B")))
		end += strlen(end);
	else if (!shift && (*end == 'b' || *end == 'B'))
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

void cli_human_size(uint64_t v, char *buf, size_t len)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double d = (double)v;
	int u = 0;

	while (d >= 1024 && u < 4) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)v);
	else if (d == (double)(uint64_t)d)
		snprintf(buf, len, "%llu %s", (unsigned long long)d, units[u]);
	else
		snprintf(buf, len, d >= 100 ? "%.0f %s" : d >= 10 ? "%.1f %s" : "%.2f %s", d, units[u]);
}

void cli_print_json(struct json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
						       JSON_C_TO_STRING_SPACED |
						       JSON_C_TO_STRING_NOSLASHESCAPE));
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("vhdtool: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_progress_init(struct cli_progress *p, bool requested, const char *what)
{
	p->enabled = requested && isatty(STDERR_FILENO);
	p->what = what;
	p->start = p->last = now_s();
}

void cli_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
	struct cli_progress *p = ctx;
	double t = now_s(), el, rate;
	char d[32], r[32];

	if (!p->enabled || (t - p->last < 0.1 && done < total))
		return;
	p->last = t;
	el = t - p->start;
	rate = el > 0 ? (double)done / el : 0;
	cli_human_size(done, d, sizeof(d));
	cli_human_size((uint64_t)rate, r, sizeof(r));
	fprintf(stderr, "\r%s: %5.1f%% %s, %s/s, ETA %.0f s   ", p->what,
		total ? 100.0 * (double)done / (double)total : 100.0, d, r,
		rate > 0 ? (double)(total - done) / rate : 0.0);
	fflush(stderr);
}

void cli_progress_end(struct cli_progress *p)
{
	if (p->enabled)
		fputc('\n', stderr);
}
