/*
 * The host side of the VMM's jail (jail_host.h): ids, the jail root and the
 * cgroup leaf of each sandbox, made before its VMM starts and removed after
 * it is gone.
 */
#include "jail_host.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"
#include "sandbox_part.h"
#include "sandboxd.h"

/* The controllers a leaf's limits use; io only for its default weight. */
static const char *const controllers[] = {"memory", "pids", "cpu", "io"};
/* After cgroup.kill, how long teardown waits for the leaf to empty before it leaves it (a warning). */
#define CGROUP_EMPTY_WAIT_MS 500
#define CGROUP_EMPTY_STEP_MS 5

/* ---- pure parts ---- */

static int parse_decimal(const char *s, const char **end, unsigned long long max, unsigned long long *out)
{
	unsigned long long v = 0;
	const char *p = s;

	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (unsigned)(*p - '0');
		if (v > max)
			return -ERANGE;
		p++;
	}
	if (p == s)
		return -EINVAL;
	*end = p;
	*out = v;
	return 0;
}

int jail_host_parse_ids(const char *s, unsigned *first, unsigned *count)
{
	unsigned long long a, b;
	const char *p;

	if (parse_decimal(s, &p, 4294967294ull, &a) < 0 || *p != ':')
		return -EINVAL;
	if (parse_decimal(p + 1, &p, JAIL_HOST_IDS_COUNT_MAX, &b) < 0 || *p)
		return -EINVAL;
	if (a == 0 || b == 0 || a + b - 1 > 4294967294ull)
		return -EINVAL;
	*first = (unsigned)a;
	*count = (unsigned)b;
	return 0;
}

int jail_host_pick_id(const unsigned *used, size_t n, unsigned first, unsigned count, unsigned *out)
{
	/* Few sandboxes run at once: counting below each candidate beats sorting. */
	for (unsigned long long id = first; id < (unsigned long long)first + count; id++) {
		bool taken = false;

		for (size_t i = 0; i < n && !taken; i++)
			taken = used[i] == id;
		if (!taken) {
			*out = (unsigned)id;
			return 0;
		}
		if (id - first >= n) /* n ids cannot block more than n candidates */
			break;
	}
	return -ENOSPC;
}

void jail_host_limits(unsigned memory_mib, unsigned cpus, struct jail_limits *out)
{
	if (cpus == 0)
		cpus = 1;
	out->memory_max = ((unsigned long long)memory_mib + JAIL_HOST_VMM_ALLOWANCE_MIB) << 20;
	out->pids_max = cpus + JAIL_HOST_PIDS_EXTRA;
	snprintf(out->cpu_max, sizeof(out->cpu_max), "%llu 100000", (unsigned long long)cpus * 100000);
}

/* The next space-separated token of [*p, end), or NULL. */
static const char *next_token(const char **p, const char *end, size_t *len)
{
	const char *t;

	while (*p < end && **p == ' ')
		(*p)++;
	if (*p >= end)
		return NULL;
	t = *p;
	while (*p < end && **p != ' ')
		(*p)++;
	*len = (size_t)(*p - t);
	return t;
}

/* mountinfo's escapes (\040 for a space, \134 for a backslash...); -EINVAL on a bad one or no room. */
static int unescape(const char *s, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (c == '\\') {
			if (len - i < 4 || s[i + 1] < '0' || s[i + 1] > '3' || s[i + 2] < '0' || s[i + 2] > '7' ||
			    s[i + 3] < '0' || s[i + 3] > '7')
				return -EINVAL;
			c = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
			if (c == '\0')
				return -EINVAL;
			i += 3;
		}
		if (o + 1 >= cap)
			return -EINVAL;
		out[o++] = c;
	}
	if (cap == 0)
		return -EINVAL;
	out[o] = '\0';
	return 0;
}

int jail_host_cgroup2_mount(const char *mountinfo, char *out, size_t cap)
{
	const char *line = mountinfo;

	while (*line) {
		const char *eol = strchr(line, '\n'), *p = line, *point = NULL, *t;
		size_t point_len = 0, len;
		int i;

		if (!eol)
			eol = line + strlen(line);
		/* id, parent, major:minor, root, mount point */
		for (i = 0; i < 5 && (t = next_token(&p, eol, &len)); i++)
			if (i == 4) {
				point = t;
				point_len = len;
			}
		if (point) {
			/* options, then optional fields up to "-", then the file system type */
			while ((t = next_token(&p, eol, &len)) && !(len == 1 && *t == '-'))
				;
			t = t ? next_token(&p, eol, &len) : NULL;
			if (t && len == 7 && !memcmp(t, "cgroup2", 7) && unescape(point, point_len, out, cap) == 0 &&
			    out[0] == '/')
				return 0;
		}
		line = *eol ? eol + 1 : eol;
	}
	if (cap)
		out[0] = '\0';
	return -ENOENT;
}

long long jail_host_oom_kills(const char *text)
{
	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		unsigned long long v;
		const char *end;

		if (strncmp(line, "oom_kill ", 9) != 0)
			continue;
		if (parse_decimal(line + 9, &end, LLONG_MAX, &v) < 0 || (*end && *end != '\n'))
			return -1;
		return (long long)v;
	}
	return -1;
}

/* ---- files ---- */

static int write_file(const char *path, const char *text)
{
	size_t len = strlen(text);
	int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len)
		r = errno ? -errno : -EIO;
	close(fd);
	return r;
}

/* A small file's text (cgroup files, mountinfo), NUL-terminated; -errno. */
static int read_file(const char *path, char *buf, size_t cap)
{
	size_t n = 0;
	ssize_t got;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (n + 1 < cap && (got = read(fd, buf + n, cap - 1 - n)) > 0)
		n += (size_t)got;
	close(fd);
	buf[n] = '\0';
	return 0;
}

static bool has_word(const char *list, const char *word)
{
	size_t len = strlen(word);

	for (const char *p = list; (p = strstr(p, word)); p += len)
		if ((p == list || p[-1] == ' ' || p[-1] == '\n') && (p[len] == '\0' || p[len] == ' ' || p[len] == '\n'))
			return true;
	return false;
}

/* ---- the daemon ---- */

void jail_host_defaults(struct jail_host *h)
{
	memset(h, 0, sizeof(*h));
	h->enabled = true;
	h->first = JAIL_HOST_IDS_FIRST_DEFAULT;
	h->count = JAIL_HOST_IDS_COUNT_DEFAULT;
}

/* Each controller on its own: one missing must not keep the others off. */
static void enable_controllers(const char *dir)
{
	char path[4200], word[16];

	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", dir);
	for (size_t i = 0; i < sizeof(controllers) / sizeof(controllers[0]); i++) {
		snprintf(word, sizeof(word), "+%s", controllers[i]);
		int r = write_file(path, word);

		if (r < 0)
			sv_debug("cgroup %s: cannot enable %s: %s", dir, controllers[i], strerror(-r));
	}
}

int jail_host_init(struct jail_host *h, const char *cgroup_root_opt)
{
	char path[4200], text[8192], missing[64] = "";
	const char *source = "--cgroup-root";
	int r;

	if (!h->enabled)
		return 0;
	if (geteuid() != 0) {
		sv_err("the VMM jail needs sandboxd to run as root (or --no-jail, for development only)");
		return -EPERM;
	}
	if (cgroup_root_opt) {
		snprintf(h->cgroup_root, sizeof(h->cgroup_root), "%s", cgroup_root_opt);
		snprintf(path, sizeof(path), "%s/cgroup.controllers", h->cgroup_root);
		if (cgroup_root_opt[0] != '/' || access(path, F_OK) < 0) {
			sv_err("--cgroup-root %s: not a cgroup v2 directory (no cgroup.controllers)", cgroup_root_opt);
			return -EINVAL;
		}
	} else {
		source = "the cgroup2 mount";
		r = read_file("/proc/self/mountinfo", text, sizeof(text));
		if (r < 0 || jail_host_cgroup2_mount(text, h->cgroup_root, sizeof(h->cgroup_root)) < 0) {
			sv_warn("no cgroup v2 file system is mounted (/proc/self/mountinfo): jailed VMMs run without a "
				"cgroup, so without memory, pids and cpu limits (mount cgroup2, or name one with "
				"--cgroup-root)");
			h->cgroup_root[0] = '\0';
			return 0;
		}
	}
	enable_controllers(h->cgroup_root);
	snprintf(path, sizeof(path), "%s/sandvm", h->cgroup_root);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		sv_warn("cannot make the cgroup %s (%s, %s): jailed VMMs run without a cgroup", path, source,
			strerror(errno));
		h->cgroup_root[0] = '\0';
		return 0;
	}
	enable_controllers(path);
	snprintf(path, sizeof(path), "%s/sandvm/cgroup.subtree_control", h->cgroup_root);
	text[0] = '\0';
	read_file(path, text, sizeof(text));
	h->memory = has_word(text, "memory");
	h->pids = has_word(text, "pids");
	h->cpu = has_word(text, "cpu");
	for (size_t i = 0; i < sizeof(controllers) / sizeof(controllers[0]); i++)
		if (!has_word(text, controllers[i]))
			snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
				 missing[0] ? ", " : "", controllers[i]);
	if (missing[0])
		sv_warn("cgroup %s/sandvm: controllers %s are not available there; sandboxes run without those "
			"limits", h->cgroup_root, missing);
	else
		sv_info("jail: cgroup leaves under %s/sandvm, ids %u..%u", h->cgroup_root, h->first,
			h->first + h->count - 1);
	return 0;
}

/* ---- one sandbox ---- */

bool jail_host_oom_message(const struct sandbox *sb, char *out, size_t cap)
{
	if (!sb->jail.oom_killed)
		return false;
	snprintf(out, cap, "out of memory: the VMM passed its cgroup's memory.max (%u MiB)", sb->jail.memory_max_mib);
	return true;
}

/* An empty directory owned by root, 0555: nothing in it, nothing the VMM's uid may add. */
static int make_root(const char *path)
{
	if (mkdir(path, 0555) < 0) {
		if (errno != EEXIST)
			return -errno;
		/* Left by a crash: only an empty one will do (rmdir fails on anything else). */
		if (rmdir(path) < 0 || mkdir(path, 0555) < 0)
			return -errno;
	}
	if (chown(path, 0, 0) < 0 || chmod(path, 0555) < 0)
		return -errno;
	return 0;
}

/* Ends whatever is left in a leaf and removes it. */
static void remove_leaf(const char *leaf)
{
	char path[4300], events[512];

	snprintf(path, sizeof(path), "%s/cgroup.kill", leaf);
	if (access(path, F_OK) == 0)
		write_file(path, "1");
	snprintf(path, sizeof(path), "%s/cgroup.events", leaf);
	for (int waited = 0; rmdir(leaf) < 0; waited += CGROUP_EMPTY_STEP_MS) {
		if (errno == ENOENT)
			return;
		if (errno != EBUSY || waited >= CGROUP_EMPTY_WAIT_MS) {
			sv_warn("cannot remove the cgroup %s: %s", leaf, strerror(errno));
			return;
		}
		/* Killed tasks leave asynchronously; cgroup.events says "populated 0" once they did. */
		if (read_file(path, events, sizeof(events)) == 0 && strstr(events, "populated 0"))
			continue;
		poll(NULL, 0, CGROUP_EMPTY_STEP_MS);
	}
}

static int write_limit(const char *leaf, const char *file, const char *value, char *err, size_t errlen)
{
	char path[4300];
	int r;

	snprintf(path, sizeof(path), "%s/%s", leaf, file);
	r = write_file(path, value);
	if (r < 0)
		snprintf(err, errlen, "cgroup %s: writing %s: %s", leaf, file, strerror(-r));
	return r;
}

static int make_leaf(const struct jail_host *h, const char *id, unsigned memory_mib, unsigned cpus,
		     struct sandbox_jail *j, char *err, size_t errlen)
{
	struct jail_limits lim;
	char value[32], path[4300];
	int r = 0;

	snprintf(j->cgroup, sizeof(j->cgroup), "%s/sandvm/%s", h->cgroup_root, id);
	if (mkdir(j->cgroup, 0755) < 0) {
		if (errno == EEXIST) {
			remove_leaf(j->cgroup);
			if (mkdir(j->cgroup, 0755) == 0)
				goto made;
		}
		r = -errno;
		snprintf(err, errlen, "cannot make the cgroup %s: %s", j->cgroup, strerror(errno));
		j->cgroup[0] = '\0';
		return r;
	}
made:
	jail_host_limits(memory_mib, cpus, &lim);
	if (h->memory) {
		snprintf(value, sizeof(value), "%llu", lim.memory_max);
		r = write_limit(j->cgroup, "memory.max", value, err, errlen);
		snprintf(path, sizeof(path), "%s/memory.swap.max", j->cgroup);
		if (r == 0 && access(path, F_OK) == 0)
			r = write_limit(j->cgroup, "memory.swap.max", "0", err, errlen);
		j->memory_max_mib = (unsigned)(lim.memory_max >> 20);
	}
	if (r == 0 && h->pids) {
		snprintf(value, sizeof(value), "%u", lim.pids_max);
		r = write_limit(j->cgroup, "pids.max", value, err, errlen);
	}
	if (r == 0 && h->cpu)
		r = write_limit(j->cgroup, "cpu.max", lim.cpu_max, err, errlen);
	if (r < 0) {
		remove_leaf(j->cgroup);
		j->cgroup[0] = '\0';
	}
	return r;
}

void jail_host_release(struct sandbox_jail *j)
{
	char path[4300], events[1024];

	if (!j->held)
		return;
	if (j->cgroup[0]) {
		snprintf(path, sizeof(path), "%s/memory.events", j->cgroup);
		if (read_file(path, events, sizeof(events)) == 0 && jail_host_oom_kills(events) > 0)
			j->oom_killed = true;
		remove_leaf(j->cgroup);
	}
	if (rmdir(j->root) < 0 && errno != ENOENT)
		sv_warn("event=jail_root_left path=%s why=\"%s\"", j->root, strerror(errno));
	j->held = false;
}

static void jail_part_teardown(struct sandbox *sb)
{
	jail_host_release(&sb->jail);
}


int jail_host_take(struct sandboxd *d, const char *id, const char *run_dir, unsigned memory_mib, unsigned cpus,
		   struct sandbox_jail *j, char *err, size_t errlen)
{
	const struct jail_host *h = &d->jail;
	unsigned *used = NULL, uid;
	size_t n = 0, total = SANDBOXD_TEMPLATE_BUILDS_MAX;
	int r;

	for (const struct sandbox *o = d->sandboxes; o; o = o->next)
		total++;
	used = calloc(total + 1, sizeof(*used));
	if (!used)
		return -ENOMEM;
	for (const struct sandbox *o = d->sandboxes; o; o = o->next)
		if (o->jail.held)
			used[n++] = o->jail.vm.uid;
	/* Template VMs being built hold ids too (templates.c); 0 is a free slot. */
	for (size_t i = 0; i < SANDBOXD_TEMPLATE_BUILDS_MAX; i++)
		if (d->template_jail_ids[i])
			used[n++] = d->template_jail_ids[i];
	r = jail_host_pick_id(used, n, h->first, h->count, &uid);
	free(used);
	if (r < 0) {
		snprintf(err, errlen, "all %u jail ids (--jail-ids %u:%u) are in use", h->count, h->first, h->count);
		return r;
	}
	snprintf(j->root, sizeof(j->root), "%s/root", run_dir);
	r = make_root(j->root);
	if (r < 0) {
		snprintf(err, errlen, "cannot make the jail root %s: %s", j->root, strerror(-r));
		return r;
	}
	j->cgroup[0] = '\0';
	j->memory_max_mib = 0;
	j->oom_killed = false;
	if (h->cgroup_root[0]) {
		r = make_leaf(h, id, memory_mib, cpus, j, err, errlen);
		if (r < 0) {
			rmdir(j->root);
			return r;
		}
	}
	j->vm.root = j->root;
	j->vm.uid = j->vm.gid = uid;
	j->vm.cgroup = j->cgroup[0] ? j->cgroup : NULL;
	j->vm.fsize = 0;
	j->held = true;
	return 0;
}

static int jail_part_setup(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	int r;

	if (!sb->d->jail.enabled)
		return 0;
	r = jail_host_take(sb->d, sb->id, l->run_dir, sb->spec.memory_mib, sb->spec.cpu, &sb->jail, err, errlen);
	if (r == 0)
		l->cfg->jail = &sb->jail.vm;
	return r;
}

/* A paused sandbox resumes with the jail it kept. */
static int jail_part_relaunch(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	if (sb->jail.held)
		l->cfg->jail = &sb->jail.vm;
	return 0;
}

static void jail_part_save(const struct sandbox *sb, cJSON *record)
{
	const struct sandbox_jail *j = &sb->jail;
	cJSON *o;

	if (!j->held)
		return;
	o = cJSON_AddObjectToObject(record, "jail");
	if (!o)
		return;
	cJSON_AddNumberToObject(o, "uid", j->vm.uid);
	if (j->cgroup[0])
		cJSON_AddStringToObject(o, "cgroup", j->cgroup);
	cJSON_AddNumberToObject(o, "memory_max_mib", j->memory_max_mib);
}

/* The record is the daemon's own, but a path from it is still only taken in the shape this file makes. */
static void jail_part_restore(struct sandbox *sb, const cJSON *record)
{
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(record, "jail");
	const cJSON *uid = cJSON_GetObjectItemCaseSensitive(o, "uid");
	const cJSON *cg = cJSON_GetObjectItemCaseSensitive(o, "cgroup");
	const cJSON *mem = cJSON_GetObjectItemCaseSensitive(o, "memory_max_mib");
	struct sandbox_jail *j = &sb->jail;
	char tail[64];

	memset(j, 0, sizeof(*j));
	if (!cJSON_IsObject(o) || !cJSON_IsNumber(uid) || uid->valuedouble < 1 || uid->valuedouble > 4294967294.0)
		return;
	snprintf(j->root, sizeof(j->root), "%s/root", sb->vm.dir);
	snprintf(tail, sizeof(tail), "/sandvm/%s", sb->id);
	if (cJSON_IsString(cg) && cg->valuestring[0] == '/' && strlen(cg->valuestring) < sizeof(j->cgroup) &&
	    strlen(cg->valuestring) > strlen(tail) && !strstr(cg->valuestring, "/../") &&
	    !strcmp(cg->valuestring + strlen(cg->valuestring) - strlen(tail), tail))
		snprintf(j->cgroup, sizeof(j->cgroup), "%s", cg->valuestring);
	if (cJSON_IsNumber(mem) && mem->valuedouble >= 0 && mem->valuedouble < 1e9)
		j->memory_max_mib = (unsigned)mem->valuedouble;
	j->vm.root = j->root;
	j->vm.uid = j->vm.gid = (unsigned)uid->valuedouble;
	j->vm.cgroup = j->cgroup[0] ? j->cgroup : NULL;
	j->held = true; /* reserved until teardown, whether or not the VMM is still there */
}

const struct sandbox_part_ops sandbox_jail_part = {
	.name = "jail",
	.setup = jail_part_setup,
	.teardown = jail_part_teardown,
	.relaunch = jail_part_relaunch,
	.restore = jail_part_restore,
	.save = jail_part_save,
};
