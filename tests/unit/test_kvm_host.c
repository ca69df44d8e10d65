/*
 * Telling a PVM /dev/kvm from a hardware one (vmm/kvm.c, kvm_host_is_pvm)
 * on made-up /sys/module trees.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvm.h"
#include "unit.h"

static bool with_modules(const char *const *mods)
{
	char root[] = "/tmp/sandvm-sysmod-XXXXXX", path[128], cmd[160];
	bool pvm;

	assert_non_null(mkdtemp(root));
	for (; *mods; mods++) {
		snprintf(path, sizeof(path), "%s/%s", root, *mods);
		assert_int_equal(mkdir(path, 0700), 0);
	}
	pvm = kvm_host_is_pvm(root);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
	return pvm;
}

static void pvm_only_without_hardware_kvm(void **state)
{
	(void)state;
	assert_true(with_modules((const char *const[]){ "kvm", "kvm_pvm", NULL }));
	assert_false(with_modules((const char *const[]){ "kvm", "kvm_intel", NULL }));
	assert_false(with_modules((const char *const[]){ "kvm", "kvm_amd", NULL }));
	/* Both loaded: the hardware one serves ordinary guests. */
	assert_false(with_modules((const char *const[]){ "kvm", "kvm_pvm", "kvm_intel", NULL }));
	assert_false(with_modules((const char *const[]){ NULL }));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pvm_only_without_hardware_kvm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
