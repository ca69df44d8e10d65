/*
 * sandboxd's API keys (api/sandboxd/auth.c): hashed on disk, a key added
 * while the daemon runs works at once, a removed one stops within a second,
 * and the file is not read per request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "unit.h"

static void bearer(char *out, size_t cap, const char *key)
{
	snprintf(out, cap, "Bearer %s", key);
}

static void keys_come_and_go(void **state)
{
	char dir[] = "/tmp/sandvm-auth-XXXXXX", path[64], k1[128], k2[128], h[160], text[4096];
	struct auth_keys *keys;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/api-keys", dir);
	assert_int_equal(auth_new_key(path, "first", k1, sizeof(k1)), 0);
	assert_int_equal(auth_open(path, &keys), 0);
	bearer(h, sizeof(h), k1);
	assert_string_equal(auth_check(keys, h, strlen(h)), "first");
	/* Only hashes are stored. */
	f = fopen(path, "r");
	assert_non_null(f);
	text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
	fclose(f);
	assert_null(strstr(text, k1));
	/* Added while open: works on its first use, with no wait. */
	assert_int_equal(auth_new_key(path, "second", k2, sizeof(k2)), 0);
	bearer(h, sizeof(h), k2);
	assert_string_equal(auth_check(keys, h, strlen(h)), "second");
	/* Wrong or malformed: refused. */
	assert_null(auth_check(keys, "Bearer svk_nope", 15));
	assert_null(auth_check(keys, "Basic abc", 9));
	assert_null(auth_check(keys, "Bearer ", 7));
	/* Removed: refused within a second. */
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	usleep(1100 * 1000);
	bearer(h, sizeof(h), k1);
	assert_null(auth_check(keys, h, strlen(h)));
	auth_close(keys);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(keys_come_and_go),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
