/* Command-line flags and JSON config: parsing, precedence, validation errors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "config.h"

static char err[512];

static int parse(struct vmm_config *cfg, enum vmm_config_action *action, int argc, ...)
{
	char *argv[32];
	va_list ap;

	argv[0] = "vmm";
	va_start(ap, argc);
	for (int i = 1; i <= argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	argv[argc + 1] = NULL;
	vmm_config_init(cfg);
	err[0] = '\0';
	return vmm_config_parse_args(cfg, argc + 1, argv, action, err, sizeof(err));
}

static void defaults(void **state)
{
	struct vmm_config cfg;

	(void)state;
	vmm_config_init(&cfg);
	assert_int_equal(cfg.cpus, 1);
	assert_int_equal(cfg.memory_mib, 128);
	assert_int_equal(cfg.console, VMM_CONSOLE_STDOUT);
	assert_null(cfg.kernel);
	vmm_config_destroy(&cfg);
}

static void flags_parse(void **state)
{
	enum vmm_config_action a;
	struct vmm_config cfg;

	(void)state;
	assert_int_equal(parse(&cfg, &a, 12, "--kernel", "/k", "--initrd=/i", "--cpus", "2",
			       "--memory", "256", "--cmdline", "quiet loglevel=3", "--console",
			       "none", "--hugepages"),
			 0);
	assert_int_equal(a, VMM_CONFIG_RUN);
	assert_string_equal(cfg.kernel, "/k");
	assert_string_equal(cfg.initrd, "/i");
	assert_int_equal(cfg.cpus, 2);
	assert_int_equal(cfg.memory_mib, 256);
	assert_string_equal(cfg.cmdline, "quiet loglevel=3");
	assert_int_equal(cfg.console, VMM_CONSOLE_NONE);
	assert_true(cfg.hugepages);
	vmm_config_destroy(&cfg);

	assert_int_equal(parse(&cfg, &a, 2, "--console", "/tmp/c.log"), 0);
	assert_int_equal(cfg.console, VMM_CONSOLE_FILE);
	assert_string_equal(cfg.console_path, "/tmp/c.log");
	vmm_config_destroy(&cfg);

	assert_int_equal(parse(&cfg, &a, 1, "--help"), 0);
	assert_int_equal(a, VMM_CONFIG_HELP);
	vmm_config_destroy(&cfg);
}

static void flag_errors_name_the_field(void **state)
{
	enum vmm_config_action a;
	struct vmm_config cfg;

	(void)state;
	assert_int_equal(parse(&cfg, &a, 2, "--memory", "12x"), -EINVAL);
	assert_non_null(strstr(err, "memory"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--memory", "16"), -EINVAL);
	assert_non_null(strstr(err, "out of range"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--memory", "-5"), -EINVAL);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--memory", "99999999999999999999999"), -EINVAL);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--cpus", "0"), -EINVAL);
	assert_non_null(strstr(err, "cpus"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--cpus", "255"), -EINVAL);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 1, "--kernel"), -EINVAL);
	assert_non_null(strstr(err, "needs a value"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--frobnicate", "1"), -EINVAL);
	assert_non_null(strstr(err, "unknown option"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 1, "stray"), -EINVAL);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--console", ""), -EINVAL);
	vmm_config_destroy(&cfg);
}

static int json(struct vmm_config *cfg, const char *text)
{
	vmm_config_init(cfg);
	err[0] = '\0';
	return vmm_config_parse_json(cfg, text, strlen(text), err, sizeof(err));
}

static void json_parses(void **state)
{
	struct vmm_config cfg;

	(void)state;
	assert_int_equal(json(&cfg, "{\"kernel\":\"/k\",\"cpus\":4,\"memory_mib\":512,"
				    "\"console\":\"stdout\",\"boot_timeout_s\":30,"
				    "\"hugepages\":true,\"control\":\"/run/x.sock\"}"),
			 0);
	assert_string_equal(cfg.kernel, "/k");
	assert_int_equal(cfg.cpus, 4);
	assert_int_equal(cfg.memory_mib, 512);
	assert_int_equal(cfg.boot_timeout_s, 30);
	assert_true(cfg.hugepages);
	assert_string_equal(cfg.control_path, "/run/x.sock");
	vmm_config_destroy(&cfg);
}

static void json_errors(void **state)
{
	static const struct {
		const char *text;
		const char *expect;
	} cases[] = {
		{ "{", "not valid JSON" },
		{ "[]", "object" },
		{ "{\"kernal\":\"/k\"}", "unknown field 'kernal'" },
		{ "{\"cpus\":\"2\"}", "cpus must be" },
		{ "{\"cpus\":2.5}", "cpus must be" },
		{ "{\"cpus\":-1}", "cpus must be" },
		{ "{\"memory_mib\":1e300}", "memory_mib must be" },
		{ "{\"memory_mib\":8}", "out of range" },
		{ "{\"kernel\":5}", "kernel must be a string" },
		{ "{\"hugepages\":1}", "true or false" },
		{ "{\"network\":{}}", "unknown field 'network'" },
		{ "{\"drives\":{}}", "drives must be an array" },
		{ "{\"drives\":[5]}", "must be an object" },
		{ "{\"drives\":[{}]}", "no \"path\"" },
		{ "{\"drives\":[{\"path\":\"/x\",\"ro\":true}]}", "'ro' is unknown" },
		{ "{\"drives\":[{\"path\":\"/x\",\"serial\":\"has space\"}]}", "printable" },
		{ "{\"drives\":[{\"path\":\"/x\",\"serial\":\"123456789012345678901\"}]}",
		  "1..20" },
	};
	struct vmm_config cfg;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(json(&cfg, cases[i].text), -EINVAL);
		if (!strstr(err, cases[i].expect))
			fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].expect);
		vmm_config_destroy(&cfg);
	}
}

/* The console file's cap: a flag and a JSON field, bounded, 1 MiB unless given. */
static void console_max_bytes(void **state)
{
	enum vmm_config_action a;
	struct vmm_config cfg;

	(void)state;
	vmm_config_init(&cfg);
	assert_int_equal(cfg.console_max_bytes, 1024 * 1024);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 4, "--console", "/tmp/c.log", "--console-max-bytes", "65536"), 0);
	assert_int_equal(cfg.console_max_bytes, 65536);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 1, "--console-max-bytes=16384"), 0);
	assert_int_equal(cfg.console_max_bytes, 16384);
	vmm_config_destroy(&cfg);
	/* Less than two serial chunks cannot be rotated within the cap. */
	assert_int_equal(parse(&cfg, &a, 2, "--console-max-bytes", "16383"), -EINVAL);
	assert_non_null(strstr(err, "console-max-bytes: 16383 is out of range"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--console-max-bytes", "1M"), -EINVAL);
	assert_non_null(strstr(err, "not a whole number"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--console_max_bytes", "65536"), -EINVAL);
	assert_non_null(strstr(err, "unknown option"));
	vmm_config_destroy(&cfg);

	assert_int_equal(json(&cfg, "{\"console\":\"/c.log\",\"console_max_bytes\":2097152}"), 0);
	assert_int_equal(cfg.console_max_bytes, 2097152);
	vmm_config_destroy(&cfg);
	assert_int_equal(json(&cfg, "{\"console_max_bytes\":\"65536\"}"), -EINVAL);
	assert_non_null(strstr(err, "console_max_bytes must be a non-negative whole number"));
	vmm_config_destroy(&cfg);
	assert_int_equal(json(&cfg, "{\"console_max_bytes\":1024}"), -EINVAL);
	assert_non_null(strstr(err, "out of range"));
	vmm_config_destroy(&cfg);
}

/* --seccomp and "seccomp": kill by default, log, off; anything else names the field. */
static void seccomp_mode(void **state)
{
	enum vmm_config_action a;
	struct vmm_config cfg;

	(void)state;
	vmm_config_init(&cfg);
	assert_int_equal(cfg.seccomp, VMM_SECCOMP_KILL);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--seccomp", "log"), 0);
	assert_int_equal(cfg.seccomp, VMM_SECCOMP_LOG);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 1, "--seccomp=off"), 0);
	assert_int_equal(cfg.seccomp, VMM_SECCOMP_OFF);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--seccomp", "strict"), -EINVAL);
	assert_non_null(strstr(err, "seccomp: 'strict' is not kill, log or off"));
	vmm_config_destroy(&cfg);
	assert_int_equal(json(&cfg, "{\"seccomp\":\"log\"}"), 0);
	assert_int_equal(cfg.seccomp, VMM_SECCOMP_LOG);
	vmm_config_destroy(&cfg);
	assert_int_equal(json(&cfg, "{\"seccomp\":true}"), -EINVAL);
	assert_non_null(strstr(err, "seccomp must be a string"));
	vmm_config_destroy(&cfg);
}

/* --restore DIR is the two files in it; no kernel is needed then; the pair goes together. */
static void restore_flags(void **state)
{
	enum vmm_config_action a;
	struct vmm_config cfg;

	(void)state;
	assert_int_equal(parse(&cfg, &a, 2, "--restore", "/snap/t1"), 0);
	assert_string_equal(cfg.restore_state, "/snap/t1/state");
	assert_string_equal(cfg.restore_memory, "/snap/t1/memory");
	assert_int_equal(cfg.restore_state_fd, -1);
	vmm_config_destroy(&cfg);

	assert_int_equal(parse(&cfg, &a, 4, "--restore-state", "fd:7", "--restore-memory", "fd:8"), 0);
	assert_int_equal(cfg.restore_state_fd, 7);
	assert_int_equal(cfg.restore_memory_fd, 8);
	/* No kernel needed with a snapshot (the descriptors are not checked before they are taken). */
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), 0);
	vmm_config_destroy(&cfg);

	assert_int_equal(parse(&cfg, &a, 2, "--restore-state", "fd:7"), 0);
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "go together"));
	vmm_config_destroy(&cfg);

	assert_int_equal(parse(&cfg, &a, 2, "--restore", "fd:3"), -EINVAL);
	assert_non_null(strstr(err, "directory path"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--restore", "/nonexistent-snapshot"), 0);
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "restore state"));
	vmm_config_destroy(&cfg);
	/* Without a snapshot the kernel is still required. */
	assert_int_equal(parse(&cfg, &a, 2, "--cpus", "1"), 0);
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no kernel"));
	vmm_config_destroy(&cfg);
}

static void flags_override_file(void **state)
{
	char path[] = "/tmp/sandvm-test-config-XXXXXX";
	const char *doc = "{\"kernel\":\"/from-file\",\"cpus\":3,\"memory_mib\":64}";
	enum vmm_config_action a;
	struct vmm_config cfg;
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
	close(fd);
	/* --cpus stands before --config on the line and still wins. */
	assert_int_equal(parse(&cfg, &a, 4, "--cpus", "2", "--config", path), 0);
	assert_string_equal(cfg.kernel, "/from-file");
	assert_int_equal(cfg.cpus, 2);
	assert_int_equal(cfg.memory_mib, 64);
	vmm_config_destroy(&cfg);
	unlink(path);

	assert_int_equal(parse(&cfg, &a, 2, "--config", "/nonexistent/x.json"), -EINVAL);
	assert_non_null(strstr(err, "cannot open"));
	vmm_config_destroy(&cfg);
}

static void drives(void **state)
{
	enum vmm_config_action a;
	struct vmm_config cfg;

	(void)state;
	assert_int_equal(parse(&cfg, &a, 4, "--drive", "/a.img", "--drive", "/b.img,ro,serial=DISK2"),
			 0);
	assert_int_equal(cfg.ndrives, 2);
	assert_string_equal(cfg.drives[0].path, "/a.img");
	assert_false(cfg.drives[0].read_only);
	assert_null(cfg.drives[0].serial);
	assert_true(cfg.drives[1].read_only);
	assert_string_equal(cfg.drives[1].serial, "DISK2");
	vmm_config_destroy(&cfg);

	assert_int_equal(parse(&cfg, &a, 2, "--drive", "/a.img,rw"), -EINVAL);
	assert_non_null(strstr(err, "unknown option 'rw'"));
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 2, "--drive", ",ro"), -EINVAL);
	vmm_config_destroy(&cfg);
	assert_int_equal(parse(&cfg, &a, 18, "--drive", "1", "--drive", "2", "--drive", "3",
			       "--drive", "4", "--drive", "5", "--drive", "6", "--drive", "7",
			       "--drive", "8", "--drive", "9"),
			 -EINVAL);
	assert_non_null(strstr(err, "at most 8"));
	vmm_config_destroy(&cfg);

	assert_int_equal(json(&cfg, "{\"drives\":[{\"path\":\"/d\",\"read_only\":true,"
				    "\"serial\":\"S1\"}]}"),
			 0);
	assert_int_equal(cfg.ndrives, 1);
	assert_true(cfg.drives[0].read_only);
	/* A drive that does not exist, and one that cannot be written, fail validation. */
	cfg.kernel = strdup("/etc/hostname");
	free(cfg.drives[0].path);
	cfg.drives[0].path = strdup("/nonexistent.img");
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "drive '/nonexistent.img'"));
	free(cfg.drives[0].path);
	cfg.drives[0].path = strdup("/tmp");
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file or block device"));
	free(cfg.drives[0].path);
	cfg.drives[0].path = strdup("/etc/hostname");
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), 0);
	vmm_config_destroy(&cfg);
}

static void validation(void **state)
{
	struct vmm_config cfg;

	(void)state;
	vmm_config_init(&cfg);
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no kernel"));
	cfg.kernel = strdup("/nonexistent/vmlinux");
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "No such file"));
	free(cfg.kernel);
	cfg.kernel = strdup("/tmp");
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	free(cfg.kernel);
	cfg.kernel = strdup("/etc/hostname");
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), 0);
	cfg.initrd = strdup("/nonexistent/initrd");
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "initrd"));
	free(cfg.initrd);
	cfg.initrd = NULL;
	cfg.control_path = strdup("");
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
	vmm_config_destroy(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults),
		cmocka_unit_test(flags_parse),
		cmocka_unit_test(flag_errors_name_the_field),
		cmocka_unit_test(json_parses),
		cmocka_unit_test(json_errors),
		cmocka_unit_test(console_max_bytes),
		cmocka_unit_test(seccomp_mode),
		cmocka_unit_test(flags_override_file),
		cmocka_unit_test(restore_flags),
		cmocka_unit_test(drives),
		cmocka_unit_test(validation),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
