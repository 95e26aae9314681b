/* test_fuzz_regressions.c - replays every file under fixtures/fuzz/ (the
 * seed corpus and each input that once crashed or fooled the parser)
 * through LLVMFuzzerTestOneInput, the fuzz target's own code, so that the
 * normal (sanitized) CI build keeps them fixed without libFuzzer.
 *
 * Each input runs in a child process, so one crash does not hide the
 * others; its temp files go under a directory removed at the end.
 *
 * Extra arguments name files or directories to replay instead (handy to
 * reproduce a crash: test_fuzz_regressions crash-1234). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned replayed, failed;

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;
	int ret = -1;

	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0)
		goto out;
	buf = malloc(len ? (size_t)len : 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len)
		goto out;
	printf("replay %s (%ld bytes)\n", path, len);
	fflush(stdout);
	fflush(stderr);
	{
		pid_t pid = fork();
		int status;

		if (pid < 0)
			goto out;
		if (pid == 0) {
			LLVMFuzzerTestOneInput(buf, (size_t)len);
			exit(0); /* runs the target's atexit cleanup */
		}
		if (waitpid(pid, &status, 0) < 0)
			goto out;
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			printf("FAIL %s: %s %d\n", path,
			       WIFSIGNALED(status) ? "killed by signal" : "exit status",
			       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
			failed++;
		}
	}
	replayed++;
	ret = 0;
out:
	if (ret < 0)
		fprintf(stderr, "%s: cannot read\n", path);
	free(buf);
	fclose(f);
	return ret;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files in sorted order (reproducible runs); hidden files and the README
 * and dictionary are not inputs. */
static int replay_tree(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int ret = 0;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path);
	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		/* nbd-seed/ and vhost-seed/ hold protocol sessions, not images */
		if (de->d_name[0] == '.' || !strcmp(de->d_name, "README.md") ||
		    !strcmp(de->d_name, "nbd-seed") || !strcmp(de->d_name, "vhost-seed") ||
		    (l > 5 && !strcmp(de->d_name + l - 5, ".dict")))
			continue;
		if (n == cap) {
			char **g = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*g));

			if (!g) {
				ret = -1;
				break;
			}
			names = g;
		}
		names[n] = malloc(strlen(path) + l + 2);
		if (!names[n]) {
			ret = -1;
			break;
		}
		sprintf(names[n++], "%s/%s", path, de->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < n; i++) {
		if (ret == 0 && replay_tree(names[i]) < 0)
			ret = -1;
		free(names[i]);
	}
	free(names);
	return ret;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

int main(int argc, char **argv)
{
	const char *src = getenv("TEST_SRC_DIR"), *tmp = getenv("TMPDIR");
	char dir[PATH_MAX], work[PATH_MAX];
	int ret = 0;

	snprintf(work, sizeof(work), "%s/vhd-fuzz-replay-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(work)) {
		printf("SKIP: cannot make a temp dir: %s\n", strerror(errno));
		return 77;
	}
	setenv("TMPDIR", work, 1); /* the target makes its files under TMPDIR */
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			if (replay_tree(argv[i]) < 0)
				ret = 1;
		printf("%u inputs replayed, %u failed\n", replayed, failed);
		ret = ret || failed;
		goto out;
	}
	if (!src) {
		printf("SKIP: TEST_SRC_DIR is not set (run through ctest)\n");
		ret = 77;
		goto out;
	}
	snprintf(dir, sizeof(dir), "%s/../fixtures/fuzz", src);
	if (access(dir, R_OK) < 0) {
		printf("SKIP: %s: %s\n", dir, strerror(errno));
		ret = 77;
		goto out;
	}
	if (replay_tree(dir) < 0)
		ret = 1;
	printf("%u inputs replayed from %s, %u failed\n", replayed, dir, failed);
	if (failed)
		ret = 1;
	else if (replayed == 0 && ret == 0) {
		printf("SKIP: no inputs under %s\n", dir);
		ret = 77;
	}
out:
	nftw(work, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return ret;
}
