/*
 * The probes that look inside the guest (probe_local.h):
 *
 * env: whether a secret of the host's (an API key's prefix, say) leaked into
 * the sandbox's environment. Only the variable's name is reported, never its
 * value.
 *
 * file: whether a path that must not exist in a sandbox does (/dev/kvm, a
 * host directory). A device node counts as reached when it exists at all:
 * opening one may have side effects, and its presence is the leak.
 */
#include "probe_local.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static void env_probe(const struct probe_spec *s, char *const *envp, struct probe_result *r)
{
	unsigned seen = 0, found = 0;
	const char *first = NULL;

	for (; envp && *envp; envp++) {
		seen++;
		if (strstr(*envp, s->arg)) {
			if (!found)
				first = *envp;
			found++;
		}
	}
	if (!found) {
		probe_result_set(r, PROBE_BLOCKED, "in none of %u variables", seen);
		return;
	}
	/* The name alone: up to its '=' and at most 64 bytes of it. */
	int name_len = (int)strcspn(first, "=");

	if (name_len > 64)
		name_len = 64;
	if (found == 1)
		probe_result_set(r, PROBE_REACHED, "in %.*s", name_len, first);
	else
		probe_result_set(r, PROBE_REACHED, "in %.*s and %u more", name_len, first, found - 1);
}

static void file_probe(const struct probe_spec *s, struct probe_result *r)
{
	struct stat st;
	int fd, err;

	if (stat(s->arg, &st) < 0) {
		err = errno;
		if (err == ENOENT || err == ENOTDIR || err == EACCES)
			probe_result_set(r, PROBE_BLOCKED, "stat: %s", strerror(err));
		else
			probe_result_set(r, PROBE_ERROR, "stat: %s", strerror(err));
		return;
	}
	if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
		probe_result_set(r, PROBE_REACHED, "%s device %u:%u exists", S_ISCHR(st.st_mode) ? "character" : "block",
				 major(st.st_rdev), minor(st.st_rdev));
		return;
	}
	/* O_NONBLOCK: a FIFO must not hold the run. */
	fd = open(s->arg, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		if (err == ENOENT || err == ENOTDIR || err == EACCES)
			probe_result_set(r, PROBE_BLOCKED, "exists; open: %s", strerror(err));
		else
			probe_result_set(r, PROBE_ERROR, "exists; open: %s", strerror(err));
		return;
	}
	close(fd);
	probe_result_set(r, PROBE_REACHED, "%s, readable", S_ISDIR(st.st_mode) ? "a directory" : "exists");
}

void probe_local_run(const struct probe_plan *plan, char *const *envp, struct probe_result *results)
{
	for (unsigned i = 0; i < plan->count && i < PROBE_SPECS_MAX; i++) {
		const struct probe_spec *s = &plan->specs[i];

		if (s->kind == PROBE_ENV)
			env_probe(s, envp, &results[i]);
		else if (s->kind == PROBE_FILE)
			file_probe(s, &results[i]);
	}
}
