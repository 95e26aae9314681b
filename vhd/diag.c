/* diag.c - error sentences and the problem list shared by open and check. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void vhd_err_set(struct vhd_err *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

static void report_append(struct vhd_check_report *r, enum vhd_severity sev,
			  const char *file, const char *field, const char *msg)
{
	struct vhd_problem *p;

	/* A hostile image can have millions of bad entries: keep the report
	 * bounded and say how much was left out. */
	if (r->count >= VHD_CHECK_MAX_PROBLEMS) {
		r->suppressed++;
		return;
	}
	if (r->count == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct vhd_problem *n = realloc(r->problems, cap * sizeof(*n));

		if (!n)
			return; /* out of memory: the problem is dropped, not the process */
		r->problems = n;
		r->cap = cap;
	}
	p = &r->problems[r->count++];
	p->severity = sev;
	snprintf(p->file, sizeof(p->file), "%s", file);
	snprintf(p->field, sizeof(p->field), "%s", field);
	snprintf(p->msg, sizeof(p->msg), "%s", msg);
}

void diag_report(struct vhd_diag *d, enum vhd_severity sev, const char *field,
		 const char *fmt, ...)
{
	char msg[VHD_ERR_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (sev == VHD_SEV_ERROR)
		d->errors++;
	if (d->report) {
		report_append(d->report, sev, d->file, field, msg);
		return;
	}
	if (sev == VHD_SEV_ERROR) {
		if (d->errors == 1)
			vhd_err_set(d->err, "%s: %s: %s", d->file, field, msg);
		return;
	}
	if (sev == VHD_SEV_WARNING && d->opts && d->opts->warn) {
		char line[VHD_ERR_LEN + 600];

		snprintf(line, sizeof(line), "%s: %s: %s", d->file, field, msg);
		d->opts->warn(d->opts->warn_ctx, line);
	}
}

size_t vhd_check_count(const struct vhd_check_report *r, enum vhd_severity at_least)
{
	size_t n = 0;

	for (size_t i = 0; i < r->count; i++)
		n += r->problems[i].severity >= at_least;
	/* Left-out problems are counted, whatever their severity: a report
	 * that overflowed is not clean. */
	return n + (at_least > VHD_SEV_INFO ? r->suppressed : 0);
}

void vhd_check_report_free(struct vhd_check_report *r)
{
	free(r->problems);
	memset(r, 0, sizeof(*r));
}

const char *vhd_severity_name(enum vhd_severity sev)
{
	switch (sev) {
	case VHD_SEV_INFO:
		return "info";
	case VHD_SEV_WARNING:
		return "warning";
	case VHD_SEV_ERROR:
		return "error";
	}
	return "?";
}

const char *vhd_type_name(enum vhd_type type)
{
	switch (type) {
	case VHD_TYPE_FIXED:
		return "fixed";
	case VHD_TYPE_DYNAMIC:
		return "dynamic";
	case VHD_TYPE_DIFF:
		return "differencing";
	default:
		return "none";
	}
}

void vhd_uuid_format(const uint8_t u[16], char *buf)
{
	snprintf(buf, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
		 u[11], u[12], u[13], u[14], u[15]);
}
