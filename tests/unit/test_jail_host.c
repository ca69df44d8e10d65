/*
 * sandboxd's side of the jail, its pure parts (jail_host.h): --jail-ids, the
 * uid allocator, a leaf's limits, mountinfo's cgroup2 mount and
 * memory.events' oom_kill, with hostile inputs; and the VMM command line
 * sandbox_vm_prepare makes with a jail.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "jail_host.h"
#include "sandbox_vm.h"

static void ids(void **state)
{
	static const char *const bad[] = {
		"",          ":",           "200000",     "200000:",     ":10",          "0:10",
		"1:0",       "-1:10",       "1:-10",      "+1:10",       "1:+10",        " 1:10",
		"1:10 ",     "1:10:1",      "1;10",       "0x10:10",     "4294967295:1", "4294967294:2",
		"1:16777217", "99999999999999999999:1",   "1:99999999999999999999",       "1.5:10",
	};
	unsigned first = 0, count = 0;

	(void)state;
	assert_int_equal(jail_host_parse_ids("200000:10000", &first, &count), 0);
	assert_int_equal(first, 200000);
	assert_int_equal(count, 10000);
	assert_int_equal(jail_host_parse_ids("1:1", &first, &count), 0);
	assert_int_equal(jail_host_parse_ids("4294967294:1", &first, &count), 0);
	assert_int_equal(first, 4294967294u);
	assert_int_equal(jail_host_parse_ids("4294967000:294", &first, &count), 0);
	assert_int_equal(jail_host_parse_ids("100:16777216", &first, &count), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		first = count = 7;
		if (jail_host_parse_ids(bad[i], &first, &count) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_int_equal(first, 7);
		assert_int_equal(count, 7);
	}
}

static void pick(void **state)
{
	const unsigned used[] = {102, 100, 101, 104, 5000, 99};
	unsigned id = 0;

	(void)state;
	assert_int_equal(jail_host_pick_id(NULL, 0, 100, 10, &id), 0);
	assert_int_equal(id, 100);
	assert_int_equal(jail_host_pick_id(used, 6, 100, 10, &id), 0);
	assert_int_equal(id, 103); /* the lowest free, whatever the order of the used ones */
	assert_int_equal(jail_host_pick_id(used, 3, 100, 3, &id), -ENOSPC);
	assert_int_equal(jail_host_pick_id(used, 6, 100, 5, &id), 0);
	assert_int_equal(id, 103);
	assert_int_equal(jail_host_pick_id(used, 6, 5000, 1, &id), -ENOSPC);
	/* The range's top end, next to the largest id there is. */
	assert_int_equal(jail_host_pick_id((const unsigned[]){4294967293u}, 1, 4294967293u, 2, &id), 0);
	assert_int_equal(id, 4294967294u);
}

static void pick_fills_the_range(void **state)
{
	unsigned used[64], id;

	(void)state;
	/* Taking every id in turn hands out each once, lowest first, then none. */
	for (unsigned i = 0; i < 64; i++) {
		assert_int_equal(jail_host_pick_id(used, i, 1000, 64, &id), 0);
		assert_int_equal(id, 1000 + i);
		used[i] = id;
	}
	assert_int_equal(jail_host_pick_id(used, 64, 1000, 64, &id), -ENOSPC);
	/* One freed in the middle comes back first. */
	used[17] = 0;
	assert_int_equal(jail_host_pick_id(used, 64, 1000, 64, &id), 0);
	assert_int_equal(id, 1017);
}

static void limits(void **state)
{
	struct jail_limits l;

	(void)state;
	jail_host_limits(512, 2, &l);
	assert_int_equal(l.memory_max, (512ull + 256) << 20);
	assert_int_equal(l.pids_max, 66);
	assert_string_equal(l.cpu_max, "200000 100000");
	jail_host_limits(128, 1, &l);
	assert_int_equal(l.memory_max, 384ull << 20);
	assert_int_equal(l.pids_max, 65);
	assert_string_equal(l.cpu_max, "100000 100000");
	jail_host_limits(1024 * 1024, 254, &l); /* the largest sandbox: nothing wraps */
	assert_int_equal(l.memory_max, (1024ull * 1024 + 256) << 20);
	assert_int_equal(l.pids_max, 318);
	assert_string_equal(l.cpu_max, "25400000 100000");
	jail_host_limits(64, 0, &l);
	assert_string_equal(l.cpu_max, "100000 100000");
}

static void mountinfo(void **state)
{
	static const char hybrid[] =
		"22 1 0:20 / / rw,relatime - overlay overlay rw\n"
		"31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
		"35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
		"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:4 master:1 - cgroup2 cgroup2 rw\n";
	static const char plain[] = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - "
				    "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
	static const char escaped[] = "29 23 0:26 / /srv/my\\040cgroups\\134x rw - cgroup2 none rw\n";
	char out[64];

	(void)state;
	assert_int_equal(jail_host_cgroup2_mount(hybrid, out, sizeof(out)), 0);
	assert_string_equal(out, "/sys/fs/cgroup/unified");
	assert_int_equal(jail_host_cgroup2_mount(plain, out, sizeof(out)), 0); /* no newline at the end */
	assert_string_equal(out, "/sys/fs/cgroup");
	assert_int_equal(jail_host_cgroup2_mount(escaped, out, sizeof(out)), 0);
	assert_string_equal(out, "/srv/my cgroups\\x");
}

static void mountinfo_hostile(void **state)
{
	static const char *const none[] = {
		"",
		"\n\n\n",
		"29 23 0:26 / /sys/fs/cgroup rw - cgroup cgroup rw\n",          /* v1 */
		"29 23 0:26 / /sys/fs/cgroup rw cgroup2 cgroup2 rw\n",          /* no separator */
		"29 23 0:26 / /sys/fs/cgroup rw -\n",                           /* nothing after it */
		"29 23 0:26 /\n",                                               /* too few fields */
		"29 23 0:26 / /sys/fs/cgroup rw - cgroup2x cgroup2 rw\n",
		"29 23 0:26 / /sys/fs/cgroup rw - xcgroup2 cgroup2 rw\n",
		"29 23 0:26 / relative rw - cgroup2 cgroup2 rw\n",              /* not absolute */
		"29 23 0:26 / /a\\04 rw - cgroup2 cgroup2 rw\n",                /* a cut escape */
		"29 23 0:26 / /a\\0 rw - cgroup2 cgroup2 rw\n",
		"29 23 0:26 / /a\\ rw - cgroup2 cgroup2 rw\n",
		"29 23 0:26 / /a\\400 rw - cgroup2 cgroup2 rw\n",               /* above 0377 */
		"29 23 0:26 / /a\\089 rw - cgroup2 cgroup2 rw\n",               /* not octal */
		"29 23 0:26 / /a\\000b rw - cgroup2 cgroup2 rw\n",              /* a NUL */
		"29 23 0:26 / /a-very-long-mount-point-that-does-not-fit-the-buffer-at-all-no rw - cgroup2 c rw\n",
		"- - - - - - cgroup2\n",
		"1 2 3 4 - 5 - cgroup2 x\n",                                    /* "-" as the mount point: not absolute */
	};
	char out[48];
	uint64_t rng = 18;

	(void)state;
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		strcpy(out, "untouched");
		if (jail_host_cgroup2_mount(none[i], out, sizeof(out)) != -ENOENT)
			fail_msg("case %zu gave '%s'", i, out);
	}
	/* A bad line does not hide a good one after it. */
	assert_int_equal(jail_host_cgroup2_mount("x y\n29 23 0:26 / /a\\400 rw - cgroup2 c rw\n"
						 "30 23 0:27 / /cg rw - cgroup2 c rw\n",
						 out, sizeof(out)),
			 0);
	assert_string_equal(out, "/cg");
	/* Random bytes: never a crash, never an unterminated answer. */
	for (int round = 0; round < 2000; round++) {
		char text[160];
		size_t n = unit_rand(&rng) % (sizeof(text) - 1);

		for (size_t i = 0; i < n; i++) {
			static const char alphabet[] = "0123 /\\-\ncgroup2";

			text[i] = alphabet[unit_rand(&rng) % (sizeof(alphabet) - 1)];
		}
		text[n] = '\0';
		if (jail_host_cgroup2_mount(text, out, sizeof(out)) == 0)
			assert_true(out[0] == '/' && strlen(out) < sizeof(out));
	}
}

static void oom_kills(void **state)
{
	(void)state;
	assert_int_equal(jail_host_oom_kills("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"), 1);
	assert_int_equal(jail_host_oom_kills("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"), 0);
	assert_int_equal(jail_host_oom_kills("oom_kill 42"), 42);
	assert_int_equal(jail_host_oom_kills("oom_group_kill 3\n"), -1);
	assert_int_equal(jail_host_oom_kills(""), -1);
	assert_int_equal(jail_host_oom_kills("oom_kill \n"), -1);
	assert_int_equal(jail_host_oom_kills("oom_kill x\n"), -1);
	assert_int_equal(jail_host_oom_kills("oom_kill -1\n"), -1);
	assert_int_equal(jail_host_oom_kills("oom_kill 5 6\n"), -1);
	assert_int_equal(jail_host_oom_kills("oom_kill 99999999999999999999999\n"), -1);
	assert_int_equal(jail_host_oom_kills(" oom_kill 1\n"), -1);
	assert_int_equal(jail_host_oom_kills("xoom_kill 1\n"), -1);
}

/* The VMM's command line with a jail: every flag, within argv. */
static void vmm_command_line(void **state)
{
	const char *spares[] = {"s1", "s2", "s3", "s4", NULL};
	struct sandbox_vm_jail jail = {.root = "/state/sandboxes/sb-1/root", .uid = 200007, .gid = 200007,
				       .cgroup = "/sys/fs/cgroup/sandvm/sb-1", .fsize = 1ull << 36};
	struct sandbox_vm_config cfg = {.vmm = "/bin/vmm", .kernel = "/k", .rootfs = "/r", .cpus = 2, .memory_mib = 256,
					.net_tap = "t0", .net_policy = "/p", .spare_drives = spares, .jail = &jail};
	char dir[] = "/tmp/sandvm-cmdline.XXXXXX", joined[8192] = "";
	struct sandbox_vm_cmd cmd;
	struct sandbox_vm vm;
	int argc = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	cfg.run_dir = dir;
	assert_int_equal(sandbox_vm_prepare(&cfg, &vm, &cmd), 0);
	while (cmd.argv[argc]) {
		strcat(joined, " ");
		strcat(joined, cmd.argv[argc++]);
	}
	assert_true(argc < (int)(sizeof(cmd.argv) / sizeof(cmd.argv[0])));
	assert_non_null(strstr(joined, " --jail-root /state/sandboxes/sb-1/root --jail-uid 200007 --jail-gid 200007 "
				       "--jail-cgroup /sys/fs/cgroup/sandvm/sb-1 --jail-fsize 68719476736"));
	assert_non_null(strstr(joined, " --spare-drive s4 --net tap=t0 --net-policy /p"));
	/* Without a cgroup or fsize, only the three that go together. */
	jail.cgroup = NULL;
	jail.fsize = 0;
	assert_int_equal(sandbox_vm_prepare(&cfg, &vm, &cmd), 0);
	for (argc = 0; cmd.argv[argc];)
		argc++;
	assert_string_equal(cmd.argv[argc - 6], "--jail-root");
	assert_string_equal(cmd.argv[argc - 5], "/state/sandboxes/sb-1/root");
	assert_string_equal(cmd.argv[argc - 4], "--jail-uid");
	assert_string_equal(cmd.argv[argc - 2], "--jail-gid");
	assert_string_equal(cmd.argv[argc - 1], "200007");
	/* And none without a jail. */
	cfg.jail = NULL;
	assert_int_equal(sandbox_vm_prepare(&cfg, &vm, &cmd), 0);
	for (int i = 0; cmd.argv[i]; i++)
		assert_null(strstr(cmd.argv[i], "--jail"));
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ids),
		cmocka_unit_test(pick),
		cmocka_unit_test(pick_fills_the_range),
		cmocka_unit_test(limits),
		cmocka_unit_test(mountinfo),
		cmocka_unit_test(mountinfo_hostile),
		cmocka_unit_test(oom_kills),
		cmocka_unit_test(vmm_command_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
