/* fuzz_nbd.c - libFuzzer target: the NBD server (handshake and transmission)
 * fed arbitrary client bytes.
 *
 * Once per process (LLVMFuzzerInitialize, or the first input) a real
 * server is started in-process with the vsp API: one engine worker, a Unix
 * socket in a temp dir, two exports - "main" (the default, a 4 MiB dynamic
 * VHD in 64 KiB blocks with some data) and "ro" (read-only).  Each input is
 * one client session: connect, send the input's bytes as they are (the
 * server's greeting is read and discarded as it comes), half-close, then
 * read until the server hangs up.
 *
 * Besides "no crash, no leak, no UB" in the server's threads (the
 * sanitizers), it aborts when:
 *   - the server does not hang up within HANGUP_MS of the client's EOF
 *     while it sends nothing (a connection that can never close again);
 *   - the first bytes are not the greeting;
 *   - every HEALTH_EVERY inputs (and at exit) a well-behaved client cannot
 *     open "main" and read from it;
 *   - at exit, after the server stopped, the image does not check clean.
 *
 * Built as fuzz_nbd with -DFUZZ=ON; test_nbd_fuzz_replay links the same code
 * and replays fixtures/fuzz/nbd-seed/ in every build.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd_client.h"
#include "vhd.h"
#include "vsp.h"

#define HANGUP_MS 5000
#define HEALTH_EVERY 256
#define MAIN_SIZE (4u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_nbd_finish(void);

/* The server of this process (one per fuzzing process, like libFuzzer's
 * own state). */
static struct {
	bool up;
	char dir[PATH_MAX];
	char sock[PATH_MAX + 16];
	char main_path[PATH_MAX + 16];
	char ro_path[PATH_MAX + 16];
	struct vsp_engine *engine;
	struct vsp_disk *main, *ro;
	struct vsp_nbd_server *srv;
	unsigned long inputs;
} F;

#define INVARIANT(cond, ...)                                                      \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "fuzz_nbd: invariant failed: %s: ", #cond); \
			fprintf(stderr, __VA_ARGS__);                             \
			fputc('\n', stderr);                                      \
			abort();                                                  \
		}                                                                 \
	} while (0)

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_image(const char *path, uint64_t size, bool data)
{
	struct vhd_create_opts o = {.type = VHD_TYPE_DYNAMIC, .size = size, .block_size = 64 << 10};
	struct vhd_open_opts oo = {.flags = VHD_OPEN_RDWR};
	struct vhd_image *img;
	struct vhd_err err;
	uint8_t buf[70000];

	INVARIANT(vhd_create(path, &o, &err) == 0, "create %s: %s", path, err.msg);
	if (!data)
		return;
	INVARIANT(vhd_open(path, &oo, &img, &err) == 0, "open %s: %s", path, err.msg);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	/* a whole block, a partial one, and a run over a block boundary */
	INVARIANT(vhd_pwrite(img, buf, 65536, 0) == 0, "write");
	INVARIANT(vhd_pwrite(img, buf, 1000, 200000) == 0, "write");
	INVARIANT(vhd_pwrite(img, buf, sizeof(buf), 3 * 65536 - 5000) == 0, "write");
	INVARIANT(vhd_close(img) == 0, "close");
}

static void rm_files(void)
{
	unlink(F.main_path);
	unlink(F.ro_path);
	unlink(F.sock);
	rmdir(F.dir);
}

static void start_server(void)
{
	const char *tmp = getenv("TMPDIR");
	struct vsp_engine_opts eo = {.workers = 1, .log_level = VSP_LOG_ERROR};
	struct vsp_disk_opts rw = {.cache = VSP_CACHE_WRITEBACK};
	struct vsp_disk_opts ro = {.cache = VSP_CACHE_WRITEBACK, .read_only = true};
	struct vsp_nbd_opts no = {.max_connections = 16};
	struct vhd_err err = {{0}};

	if (F.up)
		return;
	signal(SIGPIPE, SIG_IGN);
	snprintf(F.dir, sizeof(F.dir), "%s/fuzz-nbd.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	INVARIANT(mkdtemp(F.dir), "mkdtemp %s: %s", F.dir, strerror(errno));
	snprintf(F.sock, sizeof(F.sock), "%s/s", F.dir);
	snprintf(F.main_path, sizeof(F.main_path), "%s/main.vhd", F.dir);
	snprintf(F.ro_path, sizeof(F.ro_path), "%s/ro.vhd", F.dir);
	make_image(F.main_path, MAIN_SIZE, true);
	make_image(F.ro_path, 1 << 20, true);
	no.unix_path = F.sock;
	INVARIANT(vsp_engine_new(&eo, &F.engine) == 0, "engine");
	INVARIANT(vsp_disk_open(F.engine, F.main_path, &rw, &F.main, &err) == 0, "%s", err.msg);
	INVARIANT(vsp_disk_open(F.engine, F.ro_path, &ro, &F.ro, &err) == 0, "%s", err.msg);
	INVARIANT(vsp_nbd_server_new(F.engine, &no, &F.srv, &err) == 0, "%s", err.msg);
	INVARIANT(vsp_nbd_add_export(F.srv, "main", NULL, F.main) == 0, "export main");
	INVARIANT(vsp_nbd_add_export(F.srv, "ro", "read-only", F.ro) == 0, "export ro");
	INVARIANT(vsp_nbd_server_start(F.srv, &err) == 0, "%s", err.msg);
	F.up = true;
	atexit(fuzz_nbd_finish);
}

/* A well-behaved client still gets service. */
static void health_check(void)
{
	struct nbdc c;
	uint8_t buf[4096];
	int ret = nbdc_open(&c, F.sock, "main", F.inputs % 2 ? NBDC_WANT_META : 0);

	INVARIANT(ret == 0, "a good client cannot open main: %s", nbdc_strerror(ret));
	INVARIANT(c.size == MAIN_SIZE, "size %llu", (unsigned long long)c.size);
	ret = nbdc_pread(&c, buf, sizeof(buf), MAIN_SIZE - sizeof(buf), 0);
	INVARIANT(ret == 0, "a good client cannot read: %s", nbdc_strerror(ret));
	ret = nbdc_pwrite(&c, buf, sizeof(buf), 0, NBDC_CMD_FLAG_FUA);
	INVARIANT(ret == 0, "a good client cannot write: %s", nbdc_strerror(ret));
	nbdc_close(&c);
}

void fuzz_nbd_finish(void)
{
	struct vhd_check_report rep = {0};
	struct vhd_err err;

	if (!F.up)
		return;
	health_check();
	vsp_nbd_server_free(F.srv);
	INVARIANT(vsp_disk_close(F.main) == 0, "close main");
	INVARIANT(vsp_disk_close(F.ro) == 0, "close ro");
	vsp_engine_free(F.engine);
	F.up = false;
	INVARIANT(vhd_check(F.main_path, NULL, &rep, &err) == 0, "check: %s", err.msg);
	if (vhd_check_count(&rep, VHD_SEV_WARNING))
		for (size_t i = 0; i < rep.count; i++)
			fprintf(stderr, "  %s: %s\n", rep.problems[i].field, rep.problems[i].msg);
	INVARIANT(vhd_check_count(&rep, VHD_SEV_WARNING) == 0, "the served image is damaged");
	vhd_check_report_free(&rep);
	rm_files();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	start_server();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t greeting[16] = "NBDMAGICIHAVEOPT";
	uint8_t head[16], sink[65536];
	size_t sent = 0, got = 0;
	bool wr_closed = false;
	int64_t last = now_ms();
	int fd;

	start_server();
	fd = nbdc_connect_unix(F.sock);
	INVARIANT(fd >= 0, "connect: %s", strerror(-fd));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN | (sent < size ? POLLOUT : 0)};
		int n = poll(&p, 1, 100);

		if (n < 0 && errno != EINTR)
			break;
		if (sent == size && !wr_closed) {
			shutdown(fd, SHUT_WR);
			wr_closed = true;
			last = now_ms();
		}
		if (n > 0 && (p.revents & POLLOUT) && sent < size) {
			ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL);

			if (w > 0) {
				sent += (size_t)w;
				last = now_ms();
			} else if (w < 0 && errno != EAGAIN) {
				sent = size; /* the server hung up: nothing more to say */
			}
		}
		if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t r = recv(fd, sink, sizeof(sink), 0);

			if (r == 0 || (r < 0 && errno != EAGAIN))
				break; /* the server hung up */
			if (r > 0) {
				if (got < sizeof(head))
					memcpy(head + got, sink,
					       (size_t)r < sizeof(head) - got ? (size_t)r : sizeof(head) - got);
				got += (size_t)r;
				last = now_ms();
			}
		}
		/* Quiet for HANGUP_MS after our EOF (or with our bytes stuck): a
		 * connection the server will never close. */
		INVARIANT(now_ms() - last < HANGUP_MS,
			  "no hang-up %d ms after the client's EOF (%zu of %zu bytes sent, %zu received)",
			  HANGUP_MS, sent, size, got);
	}
	close(fd);
	if (got >= sizeof(head))
		INVARIANT(!memcmp(head, greeting, sizeof(head)), "the server did not greet");
	if (++F.inputs % HEALTH_EVERY == 0)
		health_check();
	return 0;
}
