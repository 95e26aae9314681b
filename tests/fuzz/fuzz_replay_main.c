/* fuzz_replay_main.c - replays a fuzz target's seeds through its
 * LLVMFuzzerTestOneInput in every build, so that the sanitized CI build keeps
 * them passing without libFuzzer.  Linked with one target, which a compile
 * definition names:
 *
 *   FUZZ_REPLAY_NBD    fuzz_nbd.c, test_nbd_fuzz_replay: fixtures/fuzz/nbd-seed/
 *                      (valid and hostile NBD client sessions, and any input
 *                      that once broke the server)
 *   FUZZ_REPLAY_VHOST  fuzz_vhost.c, test_vhost_fuzz_replay: fixtures/fuzz/vhost-seed/
 *                      (structured well-formed and hostile guests, and any
 *                      input that once broke the daemon)
 *
 * All inputs go to one in-process server, as in a fuzzing run (a server bug
 * that needs several inputs shows here too); at the end the target's finish
 * hook stops the server and checks the image (clean; for vhost also equal to
 * the model).  Arguments name files to replay instead; the vhost replay also
 * takes --make-seeds DIR, which writes the structured seeds
 * (fuzz_vhost_make_seeds). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct replay_target {
	const char *seeds;   /* directory under fixtures/fuzz/ */
	const char *inputs;  /* what one input is, for the summary */
	const char *verdict; /* what a run that got to the summary showed */
	void (*finish)(void);
	int (*make_seeds)(const char *dir); /* NULL: no --make-seeds */
};

#if defined(FUZZ_REPLAY_NBD)
void fuzz_nbd_finish(void);

static const struct replay_target target = {
	.seeds = "nbd-seed",
	.inputs = "sessions",
	.verdict = "the server survived, the image checks clean",
	.finish = fuzz_nbd_finish,
};
#elif defined(FUZZ_REPLAY_VHOST)
void fuzz_vhost_finish(void);
int fuzz_vhost_make_seeds(const char *dir);

static const struct replay_target target = {
	.seeds = "vhost-seed",
	.inputs = "guests",
	.verdict = "every answer matched the model, no stray write, the image checks clean "
		   "and equals the model",
	.finish = fuzz_vhost_finish,
	.make_seeds = fuzz_vhost_make_seeds,
};
#else
#error "define FUZZ_REPLAY_NBD or FUZZ_REPLAY_VHOST to name the fuzz target linked in"
#endif

static int replay(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;
	int ret = -1;

	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc(len ? (size_t)len : 1);
		if (buf && fread(buf, 1, (size_t)len, f) == (size_t)len) {
			printf("replay %s (%ld bytes)\n", path, len);
			fflush(stdout);
			LLVMFuzzerTestOneInput(buf, (size_t)len);
			ret = 0;
		}
	}
	if (ret < 0)
		fprintf(stderr, "%s: cannot read\n", path);
	free(buf);
	fclose(f);
	return ret;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Seed directories hold inputs plus their README and, possibly, libFuzzer
 * dictionaries, which are not inputs. */
static int is_input(const char *name)
{
	size_t l = strlen(name);

	return name[0] != '.' && strcmp(name, "README.md") &&
	       !(l > 5 && !strcmp(name + l - 5, ".dict"));
}

int main(int argc, char **argv)
{
	const char *src = getenv("TEST_SRC_DIR");
	char dir[PATH_MAX], *names[4096];
	size_t n = 0;
	unsigned done = 0;
	struct dirent *de;
	DIR *d;
	int ret = 0;

	if (target.make_seeds && argc == 3 && !strcmp(argv[1], "--make-seeds")) {
		ret = target.make_seeds(argv[2]);
		if (ret < 0)
			fprintf(stderr, "%s: %s\n", argv[2], strerror(-ret));
		return ret < 0;
	}
	LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			if (replay(argv[i]) < 0)
				ret = 1;
		target.finish();
		return ret;
	}
	if (!src) {
		printf("SKIP: TEST_SRC_DIR is not set (run through ctest)\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/../fixtures/fuzz/%s", src, target.seeds);
	d = opendir(dir);
	if (!d) {
		printf("SKIP: %s: %s\n", dir, strerror(errno));
		return 77;
	}
	while ((de = readdir(d)) && n < sizeof(names) / sizeof(names[0])) {
		if (!is_input(de->d_name))
			continue;
		if (asprintf(&names[n], "%s/%s", dir, de->d_name) < 0)
			return 1;
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		if (replay(names[i]) < 0)
			ret = 1;
		else
			done++;
		free(names[i]);
	}
	target.finish();
	printf("%u %s replayed from %s; %s\n", done, target.inputs, dir, target.verdict);
	if (done == 0 && ret == 0) {
		printf("SKIP: no inputs under %s\n", dir);
		return 77;
	}
	return ret;
}
