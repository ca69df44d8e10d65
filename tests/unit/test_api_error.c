/*
 * The API's one errno-to-status map (api/sandboxd/api_error.c): every errno
 * domain code fails with lands on the status docs/api.md promises, and
 * anything unexpected is a 500, never a success or a client error.
 */
#include <errno.h>

#include "api_error.h"
#include "unit.h"

static void documented_statuses(void **state)
{
	static const struct {
		int err, status;
	} map[] = {
		{-EINVAL, 400},	  {-EACCES, 403}, {-EPERM, 403},   {-ENOENT, 404},	{-EOPNOTSUPP, 405},
		{-EBUSY, 409},	  {-EEXIST, 409}, {-ESRCH, 409},   {-EALREADY, 409}, {-E2BIG, 413},
		{-EFBIG, 413},	  {-EMSGSIZE, 413}, {-EDQUOT, 429}, {-EPROTO, 502},	{-EBADMSG, 502},
		{-EAGAIN, 503},	  {-EHOSTDOWN, 503}, {-ETIMEDOUT, 504}, {-ENOTEMPTY, 409}, {-EISDIR, 409},
		{-ENOTDIR, 409},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (api_error_status(map[i].err) != map[i].status)
			fail_msg("errno %d: status %d, want %d", -map[i].err, api_error_status(map[i].err), map[i].status);
		/* The sign does not matter: a positive errno maps the same. */
		assert_int_equal(api_error_status(-map[i].err), map[i].status);
	}
}

static void anything_else_is_500(void **state)
{
	static const int others[] = {0, -ENOMEM, -EIO, -ENOSPC, -EPIPE, -ECONNRESET, -EMFILE, -4095, 1 << 30};

	(void)state;
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		assert_int_equal(api_error_status(others[i]), 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(documented_statuses),
		cmocka_unit_test(anything_else_is_500),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
