/* fuzz_vhost_replay.c - replays fixtures/fuzz/vhost-seed/ (structured
 * well-formed and hostile guests, and any input that once broke the
 * daemon) through LLVMFuzzerTestOneInput of fuzz_vhost.c, in every build,
 * so that the sanitized CI build keeps them passing without libFuzzer.
 *
 * All inputs go to one in-process server, as in a fuzzing run; at the end
 * the server is stopped, and the image must check clean and equal the
 * model (fuzz_vhost_finish).  Arguments name files to replay instead;
 * --make-seeds DIR writes the structured seeds (fuzz_vhost_make_seeds). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_vhost_finish(void);
int fuzz_vhost_make_seeds(const char *dir);

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

int main(int argc, char **argv)
{
	const char *src = getenv("TEST_SRC_DIR");
	char dir[PATH_MAX], *names[4096];
	size_t n = 0;
	unsigned done = 0;
	struct dirent *de;
	DIR *d;
	int ret = 0;

	if (argc == 3 && !strcmp(argv[1], "--make-seeds")) {
		ret = fuzz_vhost_make_seeds(argv[2]);
		if (ret < 0)
			fprintf(stderr, "%s: %s\n", argv[2], strerror(-ret));
		return ret < 0;
	}
	LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			if (replay(argv[i]) < 0)
				ret = 1;
		fuzz_vhost_finish();
		return ret;
	}
	if (!src) {
		printf("SKIP: TEST_SRC_DIR is not set (run through ctest)\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/../fixtures/fuzz/vhost-seed", src);
	d = opendir(dir);
	if (!d) {
		printf("SKIP: %s: %s\n", dir, strerror(errno));
		return 77;
	}
	while ((de = readdir(d)) && n < sizeof(names) / sizeof(names[0])) {
		if (de->d_name[0] == '.' || !strcmp(de->d_name, "README.md"))
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
	fuzz_vhost_finish();
	printf("%u guests replayed from %s; every answer matched the model, no stray write, the "
	       "image checks clean and equals the model\n", done, dir);
	if (done == 0 && ret == 0) {
		printf("SKIP: no inputs under %s\n", dir);
		return 77;
	}
	return ret;
}
