/* test_hv - unit tests of hv/: partition configs (parsing, defaults,
 * refusals naming the field and value), the vhd-vspd and QEMU command
 * lines, state.json round trips, process identity (pid + start time), and
 * the QMP client against a scripted fake QEMU on a Unix socket. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hv.h"
#include "internal.h"

static int failures;
static char tmpdir[256];

#define CHECK(cond, ...)                                                         \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "test_hv: FAIL %s:%d: %s: ", __FILE__,   \
				__LINE__, #cond);                                \
			fprintf(stderr, __VA_ARGS__);                            \
			fputc('\n', stderr);                                     \
			failures++;                                              \
		}                                                                \
	} while (0)

static char *path_in_tmp(const char *leaf)
{
	return hv_strf("%s/%s", tmpdir, leaf);
}

static void touch(const char *leaf)
{
	char *p = path_in_tmp(leaf);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd >= 0)
		close(fd);
	free(p);
}

/* Parses text with base dir tmpdir; returns the result code, *c the config. */
static int parse(const char *text, struct hv_config **c, struct hv_err *err)
{
	memset(err, 0, sizeof(*err));
	return hv_config_parse(text, "t.json", tmpdir, c, err);
}

/* The config must be refused with a message that contains every word. */
static void expect_refused(const char *text, const char *want1, const char *want2)
{
	struct hv_config *c = NULL;
	struct hv_err err;
	int r = parse(text, &c, &err);

	CHECK(r < 0 && c == NULL, "accepted: %s", text);
	CHECK(strstr(err.msg, want1) != NULL, "message \"%s\" lacks \"%s\" (config %s)", err.msg,
	      want1, text);
	if (want2)
		CHECK(strstr(err.msg, want2) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want2);
	hv_config_free(c);
}

static void test_config(void)
{
	struct hv_config *c = NULL, *c2 = NULL;
	struct hv_err err;
	char *want;
	int r;

	touch("vmlinuz");
	touch("initrd");
	touch("a.vhd");
	touch("b.vhd");
	touch("c.vhd");
	touch("d.vhd");
	touch("e.vhd");

	r = parse("{\"name\": \"vm1\", \"vcpus\": 3, \"boot\": {\"kernel\": \"vmlinuz\", "
		  "\"initrd\": \"initrd\", \"cmdline\": \"console=ttyS0\"}, "
		  "\"disks\": [{\"path\": \"a.vhd\"}, {\"path\": \"b.vhd\", \"bus\": \"emulated\"}, "
		  "{\"path\": \"c.vhd\", \"read_only\": true, \"num_queues\": 1}]}", &c, &err);
	CHECK(r == 0, "valid config refused: %s", err.msg);
	if (r == 0) {
		want = path_in_tmp("vmlinuz");
		CHECK(!strcmp(c->kernel, want), "kernel %s not made absolute (%s)", c->kernel, want);
		free(want);
		CHECK(c->memory_mb == 256, "default memory %u", c->memory_mb);
		CHECK(!strcmp(c->machine, "pc"), "default machine %s", c->machine);
		CHECK(c->nr_disks == 3, "%u disks", c->nr_disks);
		CHECK(c->disks[0].bus == HV_BUS_SYNTHETIC, "default bus");
		CHECK(c->disks[0].num_queues == 3, "num_queues default %u, want vcpus 3",
		      c->disks[0].num_queues);
		CHECK(c->disks[1].bus == HV_BUS_EMULATED, "bus emulated");
		CHECK(c->disks[2].read_only && c->disks[2].num_queues == 1, "disk 2 options");
		CHECK(c->boot_disk == -1 && !c->reboot_poweroff, "boot defaults");
		/* Round trip: the stored form parses back to the same. */
		{
			struct json_object *j = hv_config_to_json(c), *j2;
			const char *t = json_object_to_json_string(j);

			r = parse(t, &c2, &err);
			CHECK(r == 0, "round trip refused: %s (%s)", err.msg, t);
			if (r == 0) {
				j2 = hv_config_to_json(c2);
				CHECK(!strcmp(t, json_object_to_json_string(j2)),
				      "round trip differs:\n%s\n%s", t, json_object_to_json_string(j2));
				json_object_put(j2);
			}
			json_object_put(j);
		}
	}
	hv_config_free(c);
	hv_config_free(c2);

	expect_refused("{\"name\": \"vm1\", \"memroy_mb\": 5, \"boot\": {\"kernel\": \"vmlinuz\"}}",
		       "unknown field", "memroy_mb");
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"vmlinuz\"}, \"disks\": "
		       "[{\"path\": \"a.vhd\", \"bus\": \"scsi\"}]}", "disks[0].bus", "\"scsi\"");
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"vmlinuz\"}, \"disks\": "
		       "[{\"path\": \"a.vhd\", \"bus\": \"emulated\", \"read_only\": true}]}",
		       "disks[0]", "read_only");
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"vmlinuz\"}, \"disks\": "
		       "[{\"path\": \"a.vhd\"}, {\"path\": \"a.vhd\"}]}", "disks[0] and disks[1]",
		       "a.vhd");
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"vmlinuz\", \"disk\": 0}, "
		       "\"disks\": [{\"path\": \"a.vhd\"}]}", "both kernel and disk", NULL);
	expect_refused("{\"name\": \"vm1\", \"disks\": [{\"path\": \"a.vhd\"}]}", "nothing to boot",
		       NULL);
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"disk\": 2}, \"disks\": "
		       "[{\"path\": \"a.vhd\"}]}", "boot.disk 2", NULL);
	expect_refused("{\"name\": \"../x\", \"boot\": {\"kernel\": \"vmlinuz\"}}", "name",
		       "\"../x\"");
	expect_refused("{\"name\": \"vm1\", \"vcpus\": 0, \"boot\": {\"kernel\": \"vmlinuz\"}}",
		       "vcpus 0", NULL);
	expect_refused("{\"name\": \"vm1\", \"vcpus\": \"two\", \"boot\": {\"kernel\": \"vmlinuz\"}}",
		       "vcpus must be an integer", "\"two\"");
	expect_refused("{\"name\": \"vm1\", \"memory_mb\": 8, \"boot\": {\"kernel\": \"vmlinuz\"}}",
		       "memory_mb 8", NULL);
	expect_refused("{\"name\": \"vm1\", \"machine\": \"isapc\", \"boot\": {\"kernel\": "
		       "\"vmlinuz\"}}", "machine", "isapc");
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"missing\"}}", "boot.kernel",
		       "missing");
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"vmlinuz\"}, \"disks\": "
		       "[{\"path\": \"nope.vhd\"}]}", "disks[0].path", "nope.vhd");
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"vmlinuz\"}} {}",
		       "trailing data", NULL);
	expect_refused("{\"name\": \"vm1\", \"boot\": ", "not valid JSON", NULL);
	expect_refused("[1, 2]", "must be a JSON object", NULL);
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"vmlinuz\"}, \"disks\": "
		       "[{\"path\": \"a.vhd\", \"num_queues\": 99}]}", "num_queues", "99");
	expect_refused("{\"name\": \"vm1\", \"boot\": {\"kernel\": \"vmlinuz\"}, \"disks\": "
		       "[{\"path\": \"a.vhd\", \"bus\": \"emulated\"}, {\"path\": \"b.vhd\", \"bus\": "
		       "\"emulated\"}, {\"path\": \"c.vhd\", \"bus\": \"emulated\"}, {\"path\": "
		       "\"d.vhd\", \"bus\": \"emulated\"}, {\"path\": \"e.vhd\", \"bus\": "
		       "\"emulated\"}]}", "5 emulated disks", "pc");
	expect_refused("{\"name\": \"vm1\", \"on_reboot\": \"halt\", \"boot\": {\"kernel\": "
		       "\"vmlinuz\"}}", "on_reboot", "halt");
}

static bool argv_has(const struct hv_argv *a, const char *s)
{
	for (unsigned i = 0; i < a->n; i++)
		if (!strcmp(a->v[i], s))
			return true;
	return false;
}

/* The argument after flag equals value (some occurrence). */
static bool argv_pair(const struct hv_argv *a, const char *flag, const char *value)
{
	for (unsigned i = 0; i + 1 < a->n; i++)
		if (!strcmp(a->v[i], flag) && !strcmp(a->v[i + 1], value))
			return true;
	return false;
}

static void test_argv(void)
{
	struct hv_config *c = NULL;
	struct hv_argv a = {0};
	struct hv_err err;
	struct hv_paths p = {.run_dir = "/st/vm1/run", .serial_log = "/logs/a,b.log",
			     .vspd_pid = "/st/vm1/run/vspd.pid"};
	char *k = path_in_tmp("vmlinuz"), *disk0 = path_in_tmp("a.vhd"), *want;
	int r;

	r = parse("{\"name\": \"vm1\", \"vcpus\": 2, \"memory_mb\": 300, \"on_reboot\": "
		  "\"poweroff\", \"boot\": {\"kernel\": \"vmlinuz\", \"cmdline\": \"a b\"}, "
		  "\"disks\": [{\"path\": \"a.vhd\", \"bus\": \"emulated\"}, "
		  "{\"path\": \"b.vhd\", \"read_only\": true}, {\"path\": \"c.vhd\", "
		  "\"num_queues\": 1}]}", &c, &err);
	CHECK(r == 0, "config refused: %s", err.msg);
	if (r < 0)
		goto out;
	r = hv_vspd_argv(c, "/bin/vhd-vspd", &p, &a, &err);
	CHECK(r == 0, "vspd argv: %s", err.msg);
	CHECK(argv_pair(&a, "-s", "/st/vm1/run/nbd.sock"), "no private NBD socket");
	CHECK(argv_pair(&a, "--pid-file", "/st/vm1/run/vspd.pid"), "no pid file");
	want = hv_strf("d0=%s", disk0);
	CHECK(argv_pair(&a, "-e", want), "no export %s", want);
	free(want);
	want = hv_strf("d1=%s/b.vhd,ro", tmpdir);
	CHECK(argv_pair(&a, "-e", want), "no read-only export %s", want);
	free(want);
	CHECK(argv_pair(&a, "--vhost-user", "d1=/st/vm1/run/vu1.sock") &&
	      argv_pair(&a, "--vhost-user", "d2=/st/vm1/run/vu2.sock"), "vhost-user sockets");
	CHECK(!argv_pair(&a, "--vhost-user", "d0=/st/vm1/run/vu0.sock"),
	      "an emulated disk got a vhost-user socket");
	CHECK(argv_pair(&a, "--num-queues", "2"), "--num-queues is not the maximum (2)");
	hv_argv_free(&a);

	r = hv_qemu_argv(c, "/bin/qemu", "tcg", &p, &a, &err);
	CHECK(r == 0, "qemu argv: %s", err.msg);
	CHECK(argv_has(&a, "-nodefaults") && argv_has(&a, "-S") && argv_has(&a, "-no-reboot"),
	      "-nodefaults, -S, -no-reboot");
	CHECK(argv_pair(&a, "-display", "none") && argv_pair(&a, "-accel", "tcg") &&
	      argv_pair(&a, "-m", "300M") && argv_pair(&a, "-smp", "2"), "basic options");
	CHECK(argv_pair(&a, "-object", "memory-backend-memfd,id=hv-mem,size=300M,share=on"),
	      "shared memfd memory");
	CHECK(argv_pair(&a, "-machine", "pc,memory-backend=hv-mem"), "machine");
	CHECK(argv_pair(&a, "-chardev", "file,id=hv-serial,path=/logs/a,,b.log,append=on"),
	      "serial log path not escaped for QEMU");
	CHECK(argv_pair(&a, "-kernel", k) && argv_pair(&a, "-append", "a b"), "kernel boot");
	CHECK(argv_pair(&a, "-device", "ide-hd,id=hv-disk0,drive=hv-nbd0"), "IDE disk");
	CHECK(argv_pair(&a, "-blockdev", "driver=nbd,node-name=hv-nbd0,server.type=unix,"
				       "server.path=/st/vm1/run/nbd.sock,export=d0"), "NBD blockdev");
	CHECK(argv_pair(&a, "-device", "vhost-user-blk-pci,id=hv-disk1,chardev=hv-vu1,"
				     "num-queues=2"), "vhost-user-blk disk 1");
	CHECK(argv_pair(&a, "-device", "vhost-user-blk-pci,id=hv-disk2,chardev=hv-vu2,"
				     "num-queues=1"), "vhost-user-blk disk 2");
	CHECK(argv_pair(&a, "-chardev", "socket,id=hv-vu1,path=/st/vm1/run/vu1.sock,reconnect=1"),
	      "vhost-user chardev");
	CHECK(argv_pair(&a, "-mon", "chardev=hv-qmp,mode=control") &&
	      argv_pair(&a, "-mon", "chardev=hv-qmpw,mode=control"), "two QMP monitors");
	hv_argv_free(&a);

	r = hv_qemu_argv(c, "/bin/qemu", "hax", &p, &a, &err);
	CHECK(r == -EINVAL && strstr(err.msg, "hax"), "bad accelerator accepted (%s)", err.msg);
	{
		char longdir[200];

		memset(longdir, 'x', sizeof(longdir) - 1);
		longdir[0] = '/';
		longdir[sizeof(longdir) - 1] = 0;
		p.run_dir = longdir;
		r = hv_vspd_argv(c, "/bin/vhd-vspd", &p, &a, &err);
		CHECK(r == -ENAMETOOLONG && strstr(err.msg, "too long"),
		      "a socket path over 107 bytes accepted (%d %s)", r, err.msg);
		hv_argv_free(&a);
	}
	/* boot from a disk */
	hv_config_free(c);
	c = NULL;
	r = parse("{\"name\": \"vm2\", \"boot\": {\"disk\": 0}, \"machine\": \"q35\", "
		  "\"disks\": [{\"path\": \"a.vhd\", \"bus\": \"emulated\"}]}", &c, &err);
	CHECK(r == 0, "boot-disk config refused: %s", err.msg);
	if (r == 0) {
		p.run_dir = "/r";
		r = hv_qemu_argv(c, "/bin/qemu", "kvm", &p, &a, &err);
		CHECK(r == 0 && argv_pair(&a, "-device", "ide-hd,id=hv-disk0,drive=hv-nbd0,bootindex=1"),
		      "bootindex");
		CHECK(argv_pair(&a, "-cpu", "host") && argv_pair(&a, "-machine",
								  "q35,memory-backend=hv-mem"),
		      "kvm/q35 options");
		CHECK(!argv_has(&a, "-kernel") && !argv_has(&a, "-no-reboot"), "no kernel, reboot on");
		hv_argv_free(&a);
	}
out:
	free(k);
	free(disk0);
	hv_config_free(c);
}

static void test_state(void)
{
	struct hv_ctx ctx = {.state_dir = tmpdir};
	struct hv_runstate rs = {0}, back;
	struct hv_part p;
	struct hv_err err;
	char *text = NULL;
	int r;

	r = hv_part_init(&ctx, "../evil", &p, &err);
	CHECK(r == -EINVAL, "a name with a slash accepted");
	r = hv_part_init(&ctx, "st1", &p, &err);
	CHECK(r == 0, "part init: %s", err.msg);
	if (r < 0)
		return;
	mkdir(p.dir, 0755);
	rs.state = HV_STATE_PAUSED;
	rs.generation = 4;
	rs.worker = (struct hv_proc){.pid = 123, .start_time = 456};
	snprintf(rs.accel, sizeof(rs.accel), "tcg");
	snprintf(rs.last_exit, sizeof(rs.last_exit), "qemu \"quoted\"\nnewline");
	rs.io_errors = 7;
	rs.started_at = 1000.5;
	r = hv_rs_write(&p, &rs, &err);
	CHECK(r == 0, "state write: %s", err.msg);
	r = hv_rs_read(&p, &back, &err);
	CHECK(r == 0, "state read: %s", err.msg);
	CHECK(back.state == HV_STATE_PAUSED && back.generation == 4 && back.worker.pid == 123 &&
	      back.worker.start_time == 456 && back.io_errors == 7 && back.started_at == 1000.5 &&
	      !strcmp(back.last_exit, rs.last_exit) && !strcmp(back.accel, "tcg"),
	      "state round trip differs");
	/* No temp file is left behind. */
	{
		char *tmp = hv_strf("%s/.state.json.%d.tmp", p.dir, (int)getpid());

		CHECK(access(tmp, F_OK) < 0, "temp file %s left behind", tmp);
		free(tmp);
	}
	/* A hostile state file is refused with its value named. */
	hv_write_file_atomic(p.state, "{\"state\": \"exploded\"}", 21, &err);
	r = hv_rs_read(&p, &back, &err);
	CHECK(r == -EINVAL && strstr(err.msg, "exploded"), "bad state accepted (%s)", err.msg);
	hv_write_file_atomic(p.state, "not json", 8, &err);
	r = hv_rs_read(&p, &back, &err);
	CHECK(r == -EINVAL && strstr(err.msg, "not a JSON object"), "garbage accepted (%s)",
	      err.msg);
	r = hv_read_file(p.state, 4, &text, &err);
	CHECK(r == -EFBIG, "hv_read_file max not enforced");
	free(text);
	hv_part_fini(&p);
}

static void test_proc(void)
{
	struct hv_proc me, child, fake;
	pid_t pid;
	int st;

	CHECK(hv_proc_get(getpid(), &me) == 0 && hv_proc_alive(&me), "self not alive");
	fake = me;
	fake.start_time++;
	CHECK(!hv_proc_alive(&fake), "a different start time counts as alive (recycled pid)");
	pid = fork();
	if (pid == 0)
		_exit(0);
	CHECK(pid > 0 && hv_proc_get(pid, &child) == 0, "child");
	waitpid(pid, &st, 0);
	CHECK(!hv_proc_alive(&child), "a reaped child counts as alive");
	pid = fork();
	if (pid == 0)
		_exit(0);
	if (pid > 0) {
		hv_proc_get(pid, &child);
		/* A zombie is dead for us. */
		for (int i = 0; i < 200 && hv_proc_alive(&child); i++)
			hv_sleep_ms(5);
		CHECK(!hv_proc_alive(&child), "a zombie counts as alive");
		waitpid(pid, &st, 0);
	}
	CHECK(hv_proc_get(0, &child) == -ESRCH, "pid 0");
}

/* ---- the fake QEMU ---------------------------------------------------------- */

struct fake {
	int lfd;
	int mode;     /* 0 normal conversation, 1 garbage, 2 silent */
	char got[4096];
};

static void send_str(int fd, const char *s)
{
	if (write(fd, s, strlen(s)) < 0) {
		/* the client went away: its test reports it */
	}
}

/* Reads one line from fd into buf (for checking what the client sent). */
static int read_line(int fd, char *buf, size_t len)
{
	size_t n = 0;

	while (n + 1 < len) {
		char ch;

		if (read(fd, &ch, 1) != 1)
			return -1;
		if (ch == '\n')
			break;
		buf[n++] = ch;
	}
	buf[n] = 0;
	return 0;
}

static void *fake_qemu(void *arg)
{
	struct fake *f = arg;
	char line[1024];
	int fd = accept(f->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	if (f->mode == 2) {
		hv_sleep_ms(1500);
		goto out;
	}
	if (f->mode == 1) {
		send_str(fd, "this is not json\r\n");
		hv_sleep_ms(500);
		goto out;
	}
	send_str(fd, "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, \"capabilities\": []}}\r\n");
	if (read_line(fd, line, sizeof(line)) < 0)
		goto out;
	snprintf(f->got, sizeof(f->got), "%s", line);
	send_str(fd, "{\"return\": {}, \"id\": 1}\r\n");
	/* query-status: an event comes first, a stray reply, then the answer
	 * split over two writes. */
	if (read_line(fd, line, sizeof(line)) < 0)
		goto out;
	send_str(fd, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n");
	send_str(fd, "\r\n{\"return\": {}, \"id\": 999}\r\n");
	send_str(fd, "{\"return\": {\"status\": \"paused\", \"run");
	hv_sleep_ms(50);
	send_str(fd, "ning\": false}, \"id\": 2}\r\n");
	/* stop: an error reply */
	if (read_line(fd, line, sizeof(line)) < 0)
		goto out;
	send_str(fd, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}, \"id\": 3}\r\n");
	send_str(fd, "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": "
		     "\"guest-shutdown\"}}\r\n");
out:
	close(fd);
	return NULL;
}

static int fake_listen(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	unlink(path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
		perror("fake QEMU socket");
		exit(1);
	}
	return fd;
}

static void test_qmp(void)
{
	char *path = path_in_tmp("qmp.sock");
	struct fake f = {0};
	struct hv_qmp *q = NULL;
	struct json_object *ret = NULL, *ev = NULL, *v;
	struct hv_err err;
	pthread_t t;
	int r;

	f.lfd = fake_listen(path);
	pthread_create(&t, NULL, fake_qemu, &f);
	r = hv_qmp_connect(path, 5000, &q, &err);
	CHECK(r == 0, "connect: %s", err.msg);
	CHECK(strstr(f.got, "\"execute\":\"qmp_capabilities\"") != NULL,
	      "capabilities not negotiated: %s", f.got);
	if (r == 0) {
		r = hv_qmp_execute(q, "query-status", NULL, &ret, 5000, &err);
		CHECK(r == 0, "query-status: %s", err.msg);
		CHECK(ret && json_object_object_get_ex(ret, "status", &v) &&
		      !strcmp(json_object_get_string(v), "paused"), "reply content");
		json_object_put(ret);
		r = hv_qmp_execute(q, "stop", NULL, NULL, 5000, &err);
		CHECK(r == -EREMOTEIO && strstr(err.msg, "GenericError") && strstr(err.msg, "nope"),
		      "error reply: %d %s", r, err.msg);
		r = hv_qmp_next_event(q, &ev, 2000, &err);
		CHECK(r == 1 && json_object_object_get_ex(ev, "event", &v) &&
		      !strcmp(json_object_get_string(v), "STOP"), "queued STOP event");
		json_object_put(ev);
		r = hv_qmp_next_event(q, &ev, 2000, &err);
		CHECK(r == 1 && json_object_object_get_ex(ev, "event", &v) &&
		      !strcmp(json_object_get_string(v), "SHUTDOWN"), "SHUTDOWN event");
		json_object_put(ev);
		r = hv_qmp_next_event(q, &ev, 2000, &err);
		CHECK(r == -EPIPE, "closed connection: %d", r);
		hv_qmp_close(q);
	}
	pthread_join(t, NULL);

	f.mode = 1;
	pthread_create(&t, NULL, fake_qemu, &f);
	r = hv_qmp_connect(path, 5000, &q, &err);
	CHECK(r == -EPROTO && strstr(err.msg, "not a JSON object"), "garbage greeting: %d %s", r,
	      err.msg);
	pthread_join(t, NULL);

	f.mode = 2;
	pthread_create(&t, NULL, fake_qemu, &f);
	r = hv_qmp_connect(path, 300, &q, &err);
	CHECK(r == -ETIMEDOUT && strstr(err.msg, "no greeting"), "silent server: %d %s", r,
	      err.msg);
	pthread_join(t, NULL);
	close(f.lfd);

	r = hv_qmp_connect(path, 300, &q, &err);
	CHECK(r == -ECONNREFUSED && strstr(err.msg, path), "nobody listening: %d %s", r, err.msg);
	free(path);
}

int main(void)
{
	char cmd[300];

	snprintf(tmpdir, sizeof(tmpdir), "%s/test_hv.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR")
									    : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	test_config();
	test_argv();
	test_state();
	test_proc();
	test_qmp();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "test_hv: could not remove %s\n", tmpdir);
	if (failures) {
		fprintf(stderr, "test_hv: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test_hv: PASS\n");
	return 0;
}
