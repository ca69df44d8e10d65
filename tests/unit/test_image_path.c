/*
 * Which files a sandbox's "image" may name (api/sandboxd/image_path.c): only
 * regular files inside the allowed folders after symlinks and ".." are
 * resolved, never a path with a comma.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_path.h"
#include "unit.h"

struct tree {
	char root[64];
};

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	close(fd);
}

static void path_of(const struct tree *t, const char *rel, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", t->root, rel);
}

/* root/images/{a.ext4, sub/b.ext4, link-out -> ../outside/c.ext4, dir/}, root/images-2/, root/outside/c.ext4,
 * root/comma,dir/d.ext4 and images/link-comma -> ../comma,dir/d.ext4 */
static int setup(void **state)
{
	struct tree *t = calloc(1, sizeof(*t));
	char p[PATH_MAX], q[PATH_MAX];

	assert_non_null(t);
	snprintf(t->root, sizeof(t->root), "/tmp/sandvm-img-XXXXXX");
	assert_non_null(mkdtemp(t->root));
	const char *dirs[] = { "images", "images/sub", "images/dir", "images-2", "outside", "comma,dir" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		path_of(t, dirs[i], p, sizeof(p));
		assert_int_equal(mkdir(p, 0700), 0);
	}
	const char *files[] = { "images/a.ext4", "images/sub/b.ext4", "outside/c.ext4", "comma,dir/d.ext4",
				"images-2/e.ext4" };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		path_of(t, files[i], p, sizeof(p));
		touch(p);
	}
	path_of(t, "images/link-out", p, sizeof(p));
	path_of(t, "outside/c.ext4", q, sizeof(q));
	assert_int_equal(symlink(q, p), 0);
	path_of(t, "images/link-comma", p, sizeof(p));
	path_of(t, "comma,dir/d.ext4", q, sizeof(q));
	assert_int_equal(symlink(q, p), 0);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tree *t = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->root);
	assert_int_equal(system(cmd), 0);
	free(t);
	return 0;
}

static void only_inside_the_folders(void **state)
{
	static const struct {
		const char *rel;
		int r;
	} cases[] = {
		{ "images/a.ext4", 0 },
		{ "images/sub/b.ext4", 0 },
		{ "images/sub/../a.ext4", 0 },
		{ "images/../outside/c.ext4", -EACCES },
		{ "outside/c.ext4", -EACCES },
		{ "images/link-out", -EACCES },
		{ "images/link-comma", -EACCES },
		{ "comma,dir/d.ext4", -EACCES },
		{ "images/dir", -ENOENT },
		{ "images/missing.ext4", -ENOENT },
		{ "images-2/e.ext4", -EACCES }, /* "images" must not match "images-2" */
	};
	struct tree *t = *state;
	struct image_dirs dirs = { 0 };
	char p[PATH_MAX], out[PATH_MAX], err[256];

	path_of(t, "images", p, sizeof(p));
	assert_int_equal(image_dirs_add(&dirs, p, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r;

		path_of(t, cases[i].rel, p, sizeof(p));
		err[0] = '\0';
		r = image_path_resolve(&dirs, p, out, sizeof(out), err, sizeof(err));
		if (r != cases[i].r)
			fail_msg("%s: %d, expected %d (%s)", cases[i].rel, r, cases[i].r, err);
		if (r == 0)
			assert_null(strstr(out, ".."));
		else
			assert_true(strlen(err) > 0);
	}
	/* A second folder the operator allowed. */
	path_of(t, "images-2", p, sizeof(p));
	assert_int_equal(image_dirs_add(&dirs, p, err, sizeof(err)), 0);
	path_of(t, "images-2/e.ext4", p, sizeof(p));
	assert_int_equal(image_path_resolve(&dirs, p, out, sizeof(out), err, sizeof(err)), 0);
	/* A result that does not fit is refused, not cut. */
	assert_int_equal(image_path_resolve(&dirs, p, out, 8, err, sizeof(err)), -ENAMETOOLONG);
}

static void folders_must_exist(void **state)
{
	struct image_dirs dirs = { 0 };
	char err[256];

	(void)state;
	assert_int_equal(image_dirs_add(&dirs, "/nonexistent/sandvm-images", err, sizeof(err)), -ENOENT);
	assert_int_equal(dirs.count, 0);
	for (int i = 0; i < IMAGE_PATH_MAX_DIRS; i++)
		assert_int_equal(image_dirs_add(&dirs, "/tmp", err, sizeof(err)), 0);
	assert_int_equal(image_dirs_add(&dirs, "/tmp", err, sizeof(err)), -E2BIG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(only_inside_the_folders, setup, teardown),
		cmocka_unit_test(folders_must_exist),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
