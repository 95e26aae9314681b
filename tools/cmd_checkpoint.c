/* vhdtool checkpoint: checkpoint trees of a set of disks (Hyper-V's
 * Checkpoint-VM, Get-VMCheckpoint, Restore-VMCheckpoint, Remove-VMCheckpoint,
 * Rename-VMCheckpoint, Export-VMCheckpoint).  The work is in snapshot/. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "snap.h"

static const char checkpoint_help[] =
	"Usage: vhdtool checkpoint init SET DISK... [--copy]\n"
	"       vhdtool checkpoint create SET [--name NAME]\n"
	"       vhdtool checkpoint list SET\n"
	"       vhdtool checkpoint current SET [DISK]\n"
	"       vhdtool checkpoint apply SET ID [--checkpoint-first [--name NAME]]\n"
	"       vhdtool checkpoint delete SET ID [--subtree]\n"
	"       vhdtool checkpoint rename SET ID NAME\n"
	"       vhdtool checkpoint export SET ID DIR [--type dynamic|fixed] [--force]\n"
	"       vhdtool checkpoint repair SET\n"
	"\n"
	"Checkpoints of a set of disks that belong together (one machine's disks), like\n"
	"Hyper-V checkpoints with AVHD files.  A set is a directory holding the disks,\n"
	"their differencing children and set.json (the tree).  A checkpoint freezes every\n"
	"disk at one instant: each current disk becomes a read-only parent and gets a new,\n"
	"empty differencing child, which is then written as the current state (\"Now\").\n"
	"Checkpoints form a tree: applying an older one starts a new branch.\n"
	"\n"
	"Commands:\n"
	"  init SET DISK...   make directory SET (new or empty) a set whose disks are the\n"
	"                     given standalone VHDs, moved into it and named after their\n"
	"                     file names (os.vhd -> disk \"os\").  --copy copies them\n"
	"                     instead (flattened into dynamic VHDs; differencing disks can\n"
	"                     only be copied) and leaves the originals alone.\n"
	"  create SET         take a checkpoint of every disk, atomically: either all disks\n"
	"                     get their new child and the tree records it, or nothing\n"
	"                     changes.  Default name: \"SET - (date time UTC)\".\n"
	"  list SET           the tree, with Now marked and the space each node's files\n"
	"                     take; --output=json for scripts.\n"
	"  current SET [DISK] the files that hold the current state (Now), one line per\n"
	"                     disk (\"DISK PATH\"), or only DISK's path: the files to give\n"
	"                     a VM or to write to.  They change with create and apply.\n"
	"  apply SET ID       discard the current state and continue from checkpoint ID\n"
	"                     (new empty children of its disks).  --checkpoint-first saves\n"
	"                     the current state as a checkpoint first, in the same atomic\n"
	"                     step (named by --name).\n"
	"  delete SET ID      remove checkpoint ID; what depends on it keeps its content.\n"
	"                     No dependent: its files are removed.  One dependent (a child\n"
	"                     checkpoint or Now): the dependent's changes are merged into\n"
	"                     the checkpoint's disk, which the dependent then uses.  Two or\n"
	"                     more: the files stay as a hidden shared node (shown as\n"
	"                     \"deleted\") until one branch is left.  --subtree also removes\n"
	"                     everything below ID; Now keeps its content (checkpoints\n"
	"                     above it are merged into it).\n"
	"  rename SET ID NAME give a checkpoint a new name.\n"
	"  export SET ID DIR  write DIR/<disk>.vhd for every disk: standalone (flattened)\n"
	"                     copies as of checkpoint ID (or \"now\"); dynamic unless\n"
	"                     --type fixed; existing files only with --force.\n"
	"  repair SET         what every command does on opening (finish or undo an\n"
	"                     interrupted operation), plus: merge away deleted shared nodes\n"
	"                     left with one dependent, remove leftover temporary files, and\n"
	"                     vhdtool repair every image.  Files that are not part of the\n"
	"                     set are reported and left alone.\n"
	"\n"
	"ID is a checkpoint's number (see list) or its name.\n"
	"\n"
	"Options:\n"
	"  --name NAME        checkpoint name (create, apply --checkpoint-first)\n"
	"  --checkpoint-first save the current state before applying\n"
	"  --subtree          delete the checkpoint and everything below it\n"
	"  --copy             init: copy the disks instead of moving them\n"
	"  --type TYPE        export: dynamic (default) or fixed\n"
	"  --force            export: overwrite existing files\n"
	"  -p, --progress     progress of merges, copies and exports on a terminal\n"
	"  --output=json      machine-readable result\n"
	"\n"
	"Crash safety: each operation is written to SET/journal.json before it touches a\n"
	"disk, and set.json is replaced atomically (temp file, fsync, rename, directory\n"
	"fsync).  After a crash or kill -9 the next command on the set (or repair)\n"
	"undoes an unfinished create or apply and finishes an unfinished delete (merges\n"
	"resume where they stopped).  Every surviving checkpoint and Now keep their\n"
	"content throughout; a disk that a surviving checkpoint reads is never written.\n"
	"Only one command works on a set at a time (SET/lock); a second one is refused.\n"
	"Metadata that is damaged or disagrees with the disks (missing files, loops,\n"
	"parent links that lead elsewhere) is reported, naming what is wrong, and\n"
	"nothing is changed.  The layout is described in docs/snapshot.md.\n"
	"\n"
	"Examples:\n"
	"  vhdtool checkpoint init vm1 os.vhd data.vhd\n"
	"  vhdtool checkpoint create vm1 --name \"before update\"\n"
	"  vhdtool checkpoint list vm1\n"
	"  vhdtool checkpoint apply vm1 \"before update\"\n"
	"  vhdtool checkpoint delete vm1 2\n"
	"  vhdtool checkpoint export vm1 2 /srv/export\n";

struct ck_args {
	struct cli_common c;
	const char *name;
	const char *type;
	bool checkpoint_first, subtree, copy, force, progress;
	int nargs;
	char **args;    /* positional arguments after the subcommand */
};

static void note_stderr(void *ctx, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "vhdtool: checkpoint: %s\n", msg);
}

static int parse(int argc, char **argv, struct ck_args *a)
{
	static const struct option longopts[] = {
		{"name", required_argument, NULL, 'n' + 256},
		{"checkpoint-first", no_argument, NULL, 'c' + 256},
		{"subtree", no_argument, NULL, 's' + 256},
		{"copy", no_argument, NULL, 'C' + 256},
		{"type", required_argument, NULL, 't' + 256},
		{"force", no_argument, NULL, 'F' + 256},
		{"progress", no_argument, NULL, 'p'},
		CLI_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	int opt;

	while ((opt = getopt_long(argc, argv, "pf:Uh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n' + 256:
			a->name = optarg;
			break;
		case 'c' + 256:
			a->checkpoint_first = true;
			break;
		case 's' + 256:
			a->subtree = true;
			break;
		case 'C' + 256:
			a->copy = true;
			break;
		case 't' + 256:
			a->type = optarg;
			break;
		case 'F' + 256:
			a->force = true;
			break;
		case 'p':
			a->progress = true;
			break;
		case 'h':
			fputs(checkpoint_help, stdout);
			return 1;
		default:
			if (cli_common_opt(&a->c, opt, optarg) <= 0)
				return -1;
		}
	}
	a->nargs = argc - optind;
	a->args = argv + optind;
	return 0;
}

static bool want_args(const struct ck_args *a, const char *cmd, int min, int max)
{
	if (a->nargs >= min && a->nargs <= max)
		return true;
	cli_error("checkpoint %s: wrong number of arguments (see vhdtool checkpoint --help)", cmd);
	return false;
}

static void format_time(int64_t t, char *buf, size_t len, bool iso)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm)) {
		snprintf(buf, len, "?");
		return;
	}
	strftime(buf, len, iso ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S", &tm);
}

/* ---- list ---------------------------------------------------------------- */

struct tree_line {
	char id[24];
	char label[SNAP_NAME_MAX + 512];
	char when[32];
	char size[32];
};

struct tree_out {
	struct tree_line *lines;
	size_t n, cap;
};

static size_t children_of(const struct snap_set *s, uint64_t id, uint64_t *out)
{
	struct snap_node n;
	size_t c = 0;

	for (size_t i = 0; i < snap_nr_checkpoints(s); i++) {
		snap_node_get(s, snap_checkpoint_id(s, i), &n);
		if (n.parent == id)
			out[c++] = n.id;
	}
	snap_node_get(s, SNAP_NOW, &n);
	if (id && n.parent == id)
		out[c++] = SNAP_NOW;
	return c;
}

static int render(const struct snap_set *s, uint64_t id, const char *prefix, const char *branch,
		  struct tree_out *t)
{
	struct snap_node n;
	struct tree_line *l;
	uint64_t *kids;
	size_t nk;
	int ret = 0;

	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 64;
		struct tree_line *nl = realloc(t->lines, cap * sizeof(*nl));

		if (!nl)
			return -1;
		t->lines = nl;
		t->cap = cap;
	}
	snap_node_get(s, id, &n);
	l = &t->lines[t->n++];
	memset(l, 0, sizeof(*l));
	cli_human_size(n.bytes, l->size, sizeof(l->size));
	if (id == SNAP_NOW) {
		snprintf(l->id, sizeof(l->id), "-");
		snprintf(l->label, sizeof(l->label), "%s%sNow", prefix, branch);
		snprintf(l->when, sizeof(l->when), "(current state)");
	} else {
		snprintf(l->id, sizeof(l->id), "%" PRIu64, id);
		if (n.hidden)
			snprintf(l->label, sizeof(l->label), "%s%s(deleted; shared by %u)", prefix, branch,
				 n.dependents);
		else
			snprintf(l->label, sizeof(l->label), "%s%s%s", prefix, branch, n.name);
		format_time(n.created, l->when, sizeof(l->when), false);
	}
	if (id == SNAP_NOW)
		return 0;
	kids = calloc(snap_nr_checkpoints(s) + 1, sizeof(*kids));
	if (!kids)
		return -1;
	nk = children_of(s, id, kids);
	for (size_t i = 0; i < nk && ret == 0; i++) {
		char sub[4096];
		bool last = i + 1 == nk;

		/* the root's own line has no branch; its children start at column 0 */
		snprintf(sub, sizeof(sub), "%s%s", prefix, !branch[0] ? "" : strcmp(branch, "|-- ") ? "    " : "|   ");
		ret = render(s, kids[i], sub, last ? "`-- " : "|-- ", t);
	}
	free(kids);
	return ret;
}

static int list_human(const struct snap_set *s)
{
	struct tree_out t = {0};
	size_t w = strlen("CHECKPOINT"), visible = 0;
	struct snap_node now;
	int ret = 0;

	printf("Checkpoint set %s: %zu disk%s (", snap_dir(s), snap_nr_disks(s),
	       snap_nr_disks(s) == 1 ? "" : "s");
	for (size_t k = 0; k < snap_nr_disks(s); k++)
		printf("%s%s", k ? ", " : "", snap_disk_name(s, k));
	for (size_t i = 0; i < snap_nr_checkpoints(s); i++) {
		struct snap_node n;

		snap_node_get(s, snap_checkpoint_id(s, i), &n);
		visible += !n.hidden;
		if (!n.parent)
			ret = render(s, n.id, "", "", &t);
	}
	printf("), %zu checkpoint%s\n", visible, visible == 1 ? "" : "s");
	snap_node_get(s, SNAP_NOW, &now);
	if (!now.parent)
		ret = render(s, SNAP_NOW, "", "", &t);
	if (ret < 0) {
		free(t.lines);
		return -1;
	}
	for (size_t i = 0; i < t.n; i++)
		if (strlen(t.lines[i].label) > w)
			w = strlen(t.lines[i].label);
	printf("%-4s  %-*s  %-19s  %s\n", "ID", (int)w, "CHECKPOINT", "CREATED (UTC)", "SIZE");
	for (size_t i = 0; i < t.n; i++)
		printf("%-4s  %-*s  %-19s  %s\n", t.lines[i].id, (int)w, t.lines[i].label,
		       t.lines[i].when, t.lines[i].size);
	free(t.lines);
	return 0;
}

static struct json_object *files_json(const struct snap_set *s, uint64_t id)
{
	struct json_object *f = json_object_new_object();

	for (size_t k = 0; k < snap_nr_disks(s); k++) {
		char path[4096];

		snap_node_file(s, id, k, path, sizeof(path));
		json_object_object_add(f, snap_disk_name(s, k), json_object_new_string(path));
	}
	return f;
}

static void list_json(const struct snap_set *s)
{
	struct json_object *j = json_object_new_object(), *disks = json_object_new_array();
	struct json_object *cps = json_object_new_array(), *now = json_object_new_object();
	uint64_t *kids = calloc(snap_nr_checkpoints(s) + 1, sizeof(*kids));
	struct snap_node n;

	json_object_object_add(j, "set", json_object_new_string(snap_dir(s)));
	json_object_object_add(j, "generation", json_object_new_uint64(snap_generation(s)));
	for (size_t k = 0; k < snap_nr_disks(s); k++)
		json_object_array_add(disks, json_object_new_string(snap_disk_name(s, k)));
	json_object_object_add(j, "disks", disks);
	snap_node_get(s, SNAP_NOW, &n);
	json_object_object_add(now, "parent", n.parent ? json_object_new_uint64(n.parent) : NULL);
	json_object_object_add(now, "bytes", json_object_new_uint64(n.bytes));
	json_object_object_add(now, "files", files_json(s, SNAP_NOW));
	json_object_object_add(j, "now", now);
	for (size_t i = 0; i < snap_nr_checkpoints(s); i++) {
		struct json_object *c = json_object_new_object(), *ch = json_object_new_array();
		char when[32], path[4096];
		size_t nk;

		snap_node_get(s, snap_checkpoint_id(s, i), &n);
		format_time(n.created, when, sizeof(when), true);
		json_object_object_add(c, "id", json_object_new_uint64(n.id));
		json_object_object_add(c, "name", json_object_new_string(n.name));
		json_object_object_add(c, "parent", n.parent ? json_object_new_uint64(n.parent) : NULL);
		json_object_object_add(c, "created", json_object_new_string(when));
		json_object_object_add(c, "created-unix", json_object_new_int64(n.created));
		json_object_object_add(c, "hidden", json_object_new_boolean(n.hidden));
		json_object_object_add(c, "dependents", json_object_new_uint64(n.dependents));
		nk = kids ? children_of(s, n.id, kids) : 0;
		for (size_t k = 0; k < nk; k++)
			if (kids[k])
				json_object_array_add(ch, json_object_new_uint64(kids[k]));
		json_object_object_add(c, "children", ch);
		json_object_object_add(c, "now-below", json_object_new_boolean(nk && !kids[nk - 1]));
		json_object_object_add(c, "bytes", json_object_new_uint64(n.bytes));
		json_object_object_add(c, "files", files_json(s, n.id));
		snprintf(path, sizeof(path), "%s/%s", snap_dir(s), n.attachment);
		json_object_object_add(c, "attachment",
				       n.attachment[0] ? json_object_new_string(path) : NULL);
		json_object_array_add(cps, c);
	}
	json_object_object_add(j, "checkpoints", cps);
	cli_print_json(j);
	json_object_put(j);
	free(kids);
}

/* ---- the commands -------------------------------------------------------- */

struct notes {
	struct json_object *arr;  /* repair --output=json */
	unsigned count;
};

static void note_collect(void *ctx, const char *msg)
{
	struct notes *n = ctx;

	n->count++;
	if (n->arr)
		json_object_array_add(n->arr, json_object_new_string(msg));
	else
		printf("%s\n", msg);
}

static int open_set(const char *dir, struct cli_progress *prog,
		    struct snap_set **s, struct notes *notes)
{
	struct snap_opts o = {.note = notes ? note_collect : note_stderr, .note_ctx = notes,
			      .progress = cli_progress_cb, .progress_ctx = prog};
	struct vhd_err err;

	if (snap_open(dir, &o, s, &err) < 0) {
		cli_error("checkpoint: %s", err.msg);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int resolve(const struct snap_set *s, const char *spec, bool allow_now, uint64_t *id)
{
	struct vhd_err err;

	if (snap_resolve(s, spec, allow_now, id, &err) < 0) {
		cli_error("checkpoint: %s", err.msg);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static void print_result(const struct ck_args *a, struct json_object *j, const char *human)
{
	if (a->c.json)
		cli_print_json(j);
	else
		printf("%s\n", human);
	json_object_put(j);
}

static int do_init(struct ck_args *a, struct cli_progress *prog)
{
	struct snap_opts o = {.note = note_stderr, .progress = cli_progress_cb, .progress_ctx = prog};
	struct snap_init_opts io = {.copy = a->copy};
	struct json_object *j;
	struct snap_set *s;
	struct vhd_err err;
	char msg[8192];
	size_t len;

	if (!want_args(a, "init", 2, a->nargs > 1 ? a->nargs : 2))
		return EXIT_USAGE;
	if (snap_init(a->args[0], (const char *const *)a->args + 1, (size_t)a->nargs - 1, &io, &o,
		      &err) < 0) {
		cli_error("checkpoint init: %s", err.msg);
		return EXIT_FAIL;
	}
	if (open_set(a->args[0], prog, &s, NULL) != EXIT_OK)
		return EXIT_FAIL;
	j = json_object_new_object();
	json_object_object_add(j, "set", json_object_new_string(snap_dir(s)));
	json_object_object_add(j, "copied", json_object_new_boolean(a->copy));
	len = (size_t)snprintf(msg, sizeof(msg), "Started checkpoint set %s with disk%s ", snap_dir(s),
			       snap_nr_disks(s) == 1 ? "" : "s");
	{
		struct json_object *d = json_object_new_array();

		for (size_t k = 0; k < snap_nr_disks(s); k++) {
			json_object_array_add(d, json_object_new_string(snap_disk_name(s, k)));
			if (len < sizeof(msg))
				len += (size_t)snprintf(msg + len, sizeof(msg) - len, "%s%s", k ? ", " : "",
							snap_disk_name(s, k));
		}
		json_object_object_add(j, "disks", d);
	}
	if (len < sizeof(msg))
		snprintf(msg + len, sizeof(msg) - len, " (%s)", a->copy ? "copied in" : "moved in");
	print_result(a, j, msg);
	snap_close(s);
	return EXIT_OK;
}

static int run(struct ck_args *a, const char *cmd, struct cli_progress *prog)
{
	struct snap_set *s = NULL;
	struct json_object *j = NULL;
	struct vhd_err err;
	struct snap_node n;
	char msg[8192], sz[32];
	uint64_t id = 0, other = 0;
	int status = EXIT_FAIL;

	if (!strcmp(cmd, "create") || !strcmp(cmd, "list") || !strcmp(cmd, "repair")) {
		if (!want_args(a, cmd, 1, 1))
			return EXIT_USAGE;
	} else if (!strcmp(cmd, "apply") || !strcmp(cmd, "delete")) {
		if (!want_args(a, cmd, 2, 2))
			return EXIT_USAGE;
	} else if (!strcmp(cmd, "current")) {
		if (!want_args(a, cmd, 1, 2))
			return EXIT_USAGE;
	} else if (!strcmp(cmd, "rename") || !strcmp(cmd, "export")) {
		if (!want_args(a, cmd, 3, 3))
			return EXIT_USAGE;
	} else {
		cli_error("checkpoint: unknown command \"%s\" (see vhdtool checkpoint --help)", cmd);
		return EXIT_USAGE;
	}
	if ((a->checkpoint_first && strcmp(cmd, "apply")) || (a->subtree && strcmp(cmd, "delete")) ||
	    ((a->type || a->force) && strcmp(cmd, "export")) || a->copy) {
		cli_error("checkpoint %s: an option given does not apply to this command", cmd);
		return EXIT_USAGE;
	}
	if (a->name && strcmp(cmd, "create") && !(!strcmp(cmd, "apply") && a->checkpoint_first)) {
		cli_error("checkpoint %s: --name goes with create and apply --checkpoint-first", cmd);
		return EXIT_USAGE;
	}
	if (!strcmp(cmd, "repair")) {
		struct notes notes = {.arr = a->c.json ? json_object_new_array() : NULL};
		struct snap_repair_stats st = {0};
		int ret = EXIT_FAIL;

		if (open_set(a->args[0], prog, &s, &notes) == EXIT_OK) {
			ret = snap_repair(s, &st, &err);
			if (ret < 0)
				cli_error("checkpoint repair: %s", err.msg);
			ret = ret < 0 ? EXIT_FAIL : EXIT_OK;
		}
		if (a->c.json) {
			j = json_object_new_object();
			json_object_object_add(j, "set", json_object_new_string(a->args[0]));
			json_object_object_add(j, "ok", json_object_new_boolean(ret == EXIT_OK));
			json_object_object_add(j, "actions", notes.arr);
			json_object_object_add(j, "unknown-files", json_object_new_uint64(st.unknown));
			cli_print_json(j);
			json_object_put(j);
		} else if (ret == EXIT_OK && !notes.count && s) {
			printf("Nothing to repair in %s\n", snap_dir(s));
		}
		snap_close(s);
		return ret;
	}
	if (open_set(a->args[0], prog, &s, NULL) != EXIT_OK)
		return EXIT_FAIL;
	j = json_object_new_object();
	if (!strcmp(cmd, "list")) {
		json_object_put(j);
		j = NULL;
		if (a->c.json)
			list_json(s);
		else if (list_human(s) < 0)
			goto out;
	} else if (!strcmp(cmd, "current")) {
		char path[4096];
		size_t k, found = 0;

		for (k = 0; k < snap_nr_disks(s); k++) {
			if (a->nargs == 2 && strcmp(a->args[1], snap_disk_name(s, k)))
				continue;
			found++;
			snap_node_file(s, SNAP_NOW, k, path, sizeof(path));
			json_object_object_add(j, snap_disk_name(s, k), json_object_new_string(path));
			if (!a->c.json && a->nargs == 2)
				printf("%s\n", path);
			else if (!a->c.json)
				printf("%s %s\n", snap_disk_name(s, k), path);
		}
		if (!found) {
			cli_error("checkpoint current: %s has no disk \"%s\"", snap_dir(s), a->args[1]);
			goto out;
		}
		if (a->c.json)
			cli_print_json(j);
	} else if (!strcmp(cmd, "create")) {
		if (snap_create(s, a->name, &id, &err) < 0)
			goto fail;
		snap_node_get(s, id, &n);
		json_object_object_add(j, "id", json_object_new_uint64(id));
		json_object_object_add(j, "name", json_object_new_string(n.name));
		snprintf(msg, sizeof(msg), "Created checkpoint %" PRIu64 " \"%s\"", id, n.name);
		print_result(a, j, msg);
		j = NULL;
	} else if (!strcmp(cmd, "apply")) {
		if (resolve(s, a->args[1], false, &id) != EXIT_OK)
			goto out;
		snap_node_get(s, id, &n);
		if (snap_apply(s, id, a->checkpoint_first, a->name, &other, &err) < 0)
			goto fail;
		json_object_object_add(j, "applied", json_object_new_uint64(id));
		json_object_object_add(j, "saved", other ? json_object_new_uint64(other) : NULL);
		if (other)
			snprintf(msg, sizeof(msg), "Applied checkpoint %" PRIu64 " \"%s\"; the previous "
				 "state was saved as checkpoint %" PRIu64, id, n.name, other);
		else
			snprintf(msg, sizeof(msg), "Applied checkpoint %" PRIu64 " \"%s\"; the previous "
				 "state was discarded", id, n.name);
		print_result(a, j, msg);
		j = NULL;
	} else if (!strcmp(cmd, "delete")) {
		struct snap_delete_stats st;

		if (resolve(s, a->args[1], false, &id) != EXIT_OK)
			goto out;
		snap_node_get(s, id, &n);
		if (snap_delete(s, id, a->subtree, &st, &err) < 0)
			goto fail;
		cli_human_size(st.bytes_freed, sz, sizeof(sz));
		json_object_object_add(j, "deleted", json_object_new_uint64(id));
		json_object_object_add(j, "subtree", json_object_new_boolean(a->subtree));
		json_object_object_add(j, "removed", json_object_new_uint64(st.removed));
		json_object_object_add(j, "merged", json_object_new_uint64(st.merged));
		json_object_object_add(j, "hidden", json_object_new_uint64(st.hidden));
		json_object_object_add(j, "bytes-freed", json_object_new_uint64(st.bytes_freed));
		if (!a->subtree && st.hidden == 1 && st.removed == 1 && !st.merged)
			snprintf(msg, sizeof(msg), "Deleted checkpoint %" PRIu64 " \"%s\": its files stay, "
				 "shared by %u dependents (listed as deleted until one is left)", id, n.name,
				 n.dependents);
		else
			snprintf(msg, sizeof(msg), "Deleted checkpoint %" PRIu64 " \"%s\"%s: %u checkpoint%s "
				 "removed, %u merge%s%s, %s freed", id, n.name,
				 a->subtree ? " and its subtree" : "", st.removed, st.removed == 1 ? "" : "s",
				 st.merged, st.merged == 1 ? "" : "s",
				 st.hidden ? ", some files kept as hidden shared nodes" : "", sz);
		print_result(a, j, msg);
		j = NULL;
	} else if (!strcmp(cmd, "rename")) {
		if (resolve(s, a->args[1], false, &id) != EXIT_OK)
			goto out;
		if (snap_rename(s, id, a->args[2], &err) < 0)
			goto fail;
		json_object_object_add(j, "id", json_object_new_uint64(id));
		json_object_object_add(j, "name", json_object_new_string(a->args[2]));
		snprintf(msg, sizeof(msg), "Renamed checkpoint %" PRIu64 " to \"%s\"", id, a->args[2]);
		print_result(a, j, msg);
		j = NULL;
	} else if (!strcmp(cmd, "export")) {
		struct snap_export_opts eo = {.type = VHD_TYPE_DYNAMIC, .overwrite = a->force};
		struct json_object *files = json_object_new_array();
		size_t len;

		if (a->type && !strcmp(a->type, "fixed"))
			eo.type = VHD_TYPE_FIXED;
		else if (a->type && strcmp(a->type, "dynamic")) {
			cli_error("checkpoint export: --type \"%s\" is not dynamic or fixed", a->type);
			json_object_put(files);
			status = EXIT_USAGE;
			goto out;
		}
		if (resolve(s, a->args[1], true, &id) != EXIT_OK) {
			json_object_put(files);
			goto out;
		}
		if (snap_export(s, id, a->args[2], &eo, &err) < 0) {
			json_object_put(files);
			goto fail;
		}
		snap_node_get(s, id, &n);
		if (id)
			len = (size_t)snprintf(msg, sizeof(msg), "Exported checkpoint %" PRIu64
					       " \"%s\" to %s:", id, n.name, a->args[2]);
		else
			len = (size_t)snprintf(msg, sizeof(msg), "Exported Now to %s:", a->args[2]);
		for (size_t k = 0; k < snap_nr_disks(s); k++) {
			char path[4096];

			snprintf(path, sizeof(path), "%s/%s.vhd", a->args[2], snap_disk_name(s, k));
			json_object_array_add(files, json_object_new_string(path));
			if (len < sizeof(msg))
				len += (size_t)snprintf(msg + len, sizeof(msg) - len, " %s.vhd",
							snap_disk_name(s, k));
		}
		json_object_object_add(j, "exported", id ? json_object_new_uint64(id)
						      : json_object_new_string("now"));
		json_object_object_add(j, "type", json_object_new_string(vhd_type_name(eo.type)));
		json_object_object_add(j, "files", files);
		print_result(a, j, msg);
		j = NULL;
	}
	status = EXIT_OK;
	goto out;
fail:
	cli_error("checkpoint %s: %s", cmd, err.msg);
out:
	if (j)
		json_object_put(j);
	snap_close(s);
	return status;
}

int cmd_checkpoint(int argc, char **argv)
{
	struct ck_args a = {0};
	struct cli_progress prog;
	const char *cmd;
	int ret;

	if (argc < 2) {
		fputs(checkpoint_help, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(checkpoint_help, stdout);
		return EXIT_OK;
	}
	cmd = argv[1];
	ret = parse(argc - 1, argv + 1, &a);
	if (ret > 0)
		return EXIT_OK;
	if (ret < 0)
		return EXIT_USAGE;
	cli_progress_init(&prog, a.progress, cmd);
	if (!strcmp(cmd, "init"))
		ret = do_init(&a, &prog);
	else
		ret = run(&a, cmd, &prog);
	cli_progress_end(&prog);
	return ret;
}
