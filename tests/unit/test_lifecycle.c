/*
 * sandboxd's sandbox lifecycle end to end without KVM: the real daemon
 * (build/bin/sandboxd) with tests/unit/fake-vmm as its VMM, which runs the
 * real guest agent on this host as the "guest". Through the API: create and
 * readiness, exec with output and status, an entrypoint, timeouts, idle
 * timeouts, terminate, a VMM that crashes at boot and one whose agent never
 * answers, adoption of running sandboxes by a restarted daemon, pause and
 * resume (and a paused sandbox across a restart), the file
 * API, the route table with its errno-to-status map, and connect tokens
 * through the ingress listener to a server of the test (the agent's relay
 * dials it on this host's loopback).
 */
/* Paths here are short temporary folders; snprintf cuts rather than overflows. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_dir.h"
#include "unit.h"

struct daemon {
	char dir[64], state[96], sock[96], images[96], sandboxd[PATH_MAX], vmm[PATH_MAX];
	char key[128];
	pid_t pid;
	unsigned ingress_port; /* the daemon serves --ingress there when set */
	char tunnel_ports[32]; /* --tunnel-ports, when set (with ingress_port) */
	char cgroup_root[128]; /* jailed (--cgroup-root) when set; --no-jail otherwise */
	const char *spare_vmms; /* --spare-vmms, when set */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* One request, Connection: close; the status, and the body in body. */
static int request(struct daemon *d, const char *method, const char *path, const char *json, char *body,
		   size_t cap)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char head[1024], *buf = malloc(1 << 20), *p;
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), status = 0, n;

	assert_non_null(buf);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", d->sock);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	n = snprintf(head, sizeof(head),
		     "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n"
		     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
		     method, path, d->key, json ? strlen(json) : 0);
	assert_int_equal(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
	if (json)
		assert_int_equal(send(fd, json, strlen(json), MSG_NOSIGNAL), (ssize_t)strlen(json));
	for (;;) {
		ssize_t r = recv(fd, buf + got, (1 << 20) - 1 - got, 0);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	sscanf(buf, "HTTP/1.1 %d", &status);
	p = strstr(buf, "\r\n\r\n");
	if (body) {
		/* Exec output frames hold zero bytes: kept as spaces, so the text can be searched. */
		size_t off = p ? (size_t)(p + 4 - buf) : got, len = got - off < cap - 1 ? got - off : cap - 1;

		for (size_t i = 0; i < len; i++)
			body[i] = buf[off + i] ? buf[off + i] : ' ';
		body[len] = '\0';
	}
	free(buf);
	return status;
}

static void start_daemon(struct daemon *d)
{
	double end = now_s() + 10;

	d->pid = fork();
	if (d->pid == 0) {
		int log = open("/dev/null", O_WRONLY);
		char logpath[128];

		snprintf(logpath, sizeof(logpath), "%s/sandboxd.log", d->dir);
		log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(log, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		char ingress[32];
		const char *argv[32] = {d->sandboxd, "--state-dir", d->state, "--socket", d->sock, "--images",
					d->images, "--vmm", d->vmm, "--image-builder", "", "--no-net", "--max-memory",
					"4096"};
		int n = 14;

		/* The fake VMM ignores --jail-*: jailed, only sandboxd's side of the jail is real. */
		if (d->cgroup_root[0]) {
			argv[n++] = "--cgroup-root";
			argv[n++] = d->cgroup_root;
		} else {
			argv[n++] = "--no-jail";
		}

		snprintf(ingress, sizeof(ingress), "127.0.0.1:%u", d->ingress_port);
		if (d->ingress_port) {
			argv[n++] = "--ingress";
			argv[n++] = ingress;
			argv[n++] = "--ingress-domain";
			argv[n++] = "sbx.test";
			argv[n++] = "--ingress-timeout";
			argv[n++] = "2";
		}
		if (d->tunnel_ports[0]) {
			argv[n++] = "--tunnel-ports";
			argv[n++] = d->tunnel_ports;
		}
		if (d->spare_vmms) {
			argv[n++] = "--spare-vmms";
			argv[n++] = d->spare_vmms;
		}
		argv[n] = NULL;
		execv(d->sandboxd, (char *const *)argv);
		_exit(127);
	}
	while (now_s() < end) {
		char body[256];

		if (access(d->sock, F_OK) == 0 && request(d, "GET", "/v1/health", NULL, body, sizeof(body)) == 200)
			return;
		usleep(20000);
	}
	fail_msg("sandboxd did not come up (see %s/sandboxd.log)", d->dir);
}

static void stop_daemon(struct daemon *d)
{
	int st;

	kill(d->pid, SIGTERM);
	waitpid(d->pid, &st, 0);
	d->pid = -1;
}

static int setup_with(void **state, const char *cgroup_root)
{
	struct daemon *d = calloc(1, sizeof(*d));
	char self[PATH_MAX], path[PATH_MAX + 64], cmd[PATH_MAX + 64];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	FILE *p;

	if (!d || n <= 0)
		return -1;
	self[n] = '\0';
	/* BUILD/tests (or tests-asan, tests-tsan): fake-vmm beside this binary, sandboxd in BUILD/bin. */
	snprintf(d->vmm, sizeof(d->vmm), "%s/fake-vmm", dirname(self));
	snprintf(d->sandboxd, sizeof(d->sandboxd), "%s/../bin/sandboxd", self);
	snprintf(d->dir, sizeof(d->dir), "/tmp/sandvm-life.XXXXXX");
	if (!mkdtemp(d->dir))
		return -1;
	snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
	snprintf(d->sock, sizeof(d->sock), "%s/api.sock", d->dir);
	snprintf(d->images, sizeof(d->images), "%s/images", d->dir);
	mkdir(d->images, 0700);
	snprintf(path, sizeof(path), "%s/vmlinux", d->images);
	write_file(path, "not a kernel\n");
	snprintf(path, sizeof(path), "%s/initramfs.cpio.gz", d->images);
	write_file(path, "boot\n");
	snprintf(path, sizeof(path), "%s/crash.img", d->images);
	write_file(path, "crash\n");
	snprintf(path, sizeof(path), "%s/mute.img", d->images);
	write_file(path, "mute\n");
	snprintf(cmd, sizeof(cmd), "'%s' --state-dir '%s' --new-key tests", d->sandboxd, d->state);
	p = popen(cmd, "r");
	if (!p || !fgets(d->key, sizeof(d->key), p))
		return -1;
	pclose(p);
	d->key[strcspn(d->key, "\n")] = '\0';
	if (cgroup_root)
		snprintf(d->cgroup_root, sizeof(d->cgroup_root), "%s", cgroup_root);
	start_daemon(d);
	*state = d;
	return 0;
}

static int teardown(void **state)
{
	struct daemon *d = *state;
	char body[64 * 1024];

	/* Whatever still runs goes: terminate every sandbox, then the daemon. */
	if (d->pid > 0) {
		request(d, "GET", "/v1/sandboxes", NULL, body, sizeof(body));
		for (char *p = body; (p = strstr(p, "\"id\":\"")); p += 6) {
			char id[64], path[128];

			sscanf(p + 6, "%63[^\"]", id);
			snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
			request(d, "DELETE", path, NULL, NULL, 0);
		}
		usleep(300 * 1000);
		stop_daemon(d);
	}
	/* Fake VMMs a failed case left behind go with the folder. */
	if (test_dir_remove(d->dir) != 0)
		return -1;
	free(d);
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, NULL);
}

/* Jailed, under a cgroup v2 directory of its own; skipped where sandboxd could not jail (not root, no cgroup2). */
static int setup_jailed(void **state)
{
	static const char *const roots[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"};
	char probe[128], dir[128];

	*state = NULL;
	if (geteuid() != 0)
		return 0;
	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		snprintf(probe, sizeof(probe), "%s/cgroup.procs", roots[i]);
		snprintf(dir, sizeof(dir), "%s/sandvm-test-life-%d", roots[i], getpid());
		if (access(probe, W_OK) == 0 && mkdir(dir, 0755) == 0)
			return setup_with(state, dir);
	}
	return 0;
}

static int teardown_jailed(void **state)
{
	struct daemon *d = *state;
	char root[sizeof(d->cgroup_root)], sandvm[sizeof(d->cgroup_root) + 8];
	int r;

	if (!d)
		return 0;
	snprintf(root, sizeof(root), "%s", d->cgroup_root);
	snprintf(sandvm, sizeof(sandvm), "%s/sandvm", root);
	r = teardown(state);
	rmdir(sandvm);
	rmdir(root);
	return r;
}

/* "id" of a sandbox object. */
static void id_of(const char *json, char *id, size_t cap)
{
	const char *p = strstr(json, "\"id\":\"");

	assert_non_null(p);
	snprintf(id, cap, "%.*s", (int)strcspn(p + 6, "\""), p + 6);
}

static bool has(const char *json, const char *needle)
{
	return strstr(json, needle) != NULL;
}

/* Waits (GET .../wait) until the sandbox finished; its object in body. */
static void wait_finished(struct daemon *d, const char *id, char *body, size_t cap)
{
	char path[128];

	snprintf(path, sizeof(path), "/v1/sandboxes/%s/wait?timeout=20", id);
	assert_int_equal(request(d, "GET", path, NULL, body, cap), 200);
	if (!has(body, "\"state\":\"finished\""))
		fail_msg("not finished: %s", body);
}

/* Runs argv (a JSON array) in the sandbox; the exec stream's bytes in out. */
static size_t exec_in(struct daemon *d, const char *id, const char *argv_json, char *out, size_t cap)
{
	char path[160], json[512], body[4096], ex[64];
	size_t n;

	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs", id);
	snprintf(json, sizeof(json), "{\"argv\":%s}", argv_json);
	assert_int_equal(request(d, "POST", path, json, body, sizeof(body)), 201);
	id_of(body, ex, sizeof(ex));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs/%s/output", id, ex);
	assert_int_equal(request(d, "GET", path, NULL, out, cap), 200);
	n = strlen(out);
	return n;
}

/* The whole of a small file (NUL-terminated); its length. */
static size_t slurp(const char *path, char *out, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	assert_non_null(f);
	n = fread(out, 1, cap - 1, f);
	fclose(f);
	out[n] = '\0';
	return n;
}

static pid_t record_pid(struct daemon *d, const char *id)
{
	char path[256], text[16384], *p;

	snprintf(path, sizeof(path), "%s/sandboxes/%s/sandbox.json", d->state, id);
	slurp(path, text, sizeof(text));
	p = strstr(text, "\"pid\":");
	return p ? (pid_t)strtol(p + 6, NULL, 10) : 0;
}

/* Whether the /proc command line of sandbox id's VMM holds what. */
static bool vmm_cmdline_has(struct daemon *d, const char *id, const char *what)
{
	char path[64], text[8192];
	pid_t pid = record_pid(d, id);
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	f = pid > 0 ? fopen(path, "r") : NULL;
	if (!f)
		return false;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	for (size_t i = 0; i < n; i++)
		if (!text[i])
			text[i] = ' ';
	text[n] = '\0';
	return strstr(text, what) != NULL;
}

static void create_exec_terminate(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[128], out[65536];
	double t0 = now_s();

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	assert_true(has(body, "\"state\":\"running\""));
	assert_true(now_s() - t0 < 5);
	/* Each part of the sandbox adds its own fields: the network (none here: --no-net) and the mounts. */
	assert_true(has(body, "\"network\":{\"mode\":\"none\"}"));
	assert_true(has(body, "\"mounts\":[]"));
	id_of(body, id, sizeof(id));
	/* Output frames (chunked, framed) hold the text and the exit status. */
	exec_in(d, id, "[\"sh\",\"-c\",\"echo hello from the fake guest; exit 3\"]", out, sizeof(out));
	assert_true(has(out, "hello from the fake guest"));
	assert_true(has(out, "\"returncode\":3"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	wait_finished(d, id, body, sizeof(body));
	assert_true(has(body, "\"reason\":\"terminated\""));
	assert_true(has(body, "\"returncode\":137"));
}

/* Polls /metrics until it holds what (10 s at most); whether it did. */
static bool metrics_reach(struct daemon *d, const char *what, char *out, size_t cap)
{
	for (int i = 0; i < 200; i++) {
		assert_int_equal(request(d, "GET", "/metrics", NULL, out, cap), 200);
		if (has(out, what))
			return true;
		usleep(50000);
	}
	return false;
}

/*
 * Spare VMMs (--spare-vmms, default 2): waiting before any create; a
 * sandbox's VMM is one of them, its /proc command line the one it was given;
 * the pool fills again; a VMM program changed on disk retires the spares (a
 * new process runs the next sandbox, new spares follow).
 */
static void spare_vmms(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[128], out[65536];

	assert_true(metrics_reach(d, "\nsandvm_vmm_spares_ready 2\n", out, sizeof(out)));
	assert_true(has(out, "sandvm_vmm_starts_total{how=\"spare\"} 0\n"));
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"cold_boot\":true}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	assert_int_equal(request(d, "GET", "/metrics", NULL, out, sizeof(out)), 200);
	assert_true(has(out, "sandvm_vmm_starts_total{how=\"spare\"} 1\n"));
	assert_true(has(out, "sandvm_vmm_starts_total{how=\"process\"} 0\n"));
	assert_true(vmm_cmdline_has(d, id, "--vsock"));
	assert_false(vmm_cmdline_has(d, id, "--args-from"));
	exec_in(d, id, "[\"sh\",\"-c\",\"echo from a spare\"]", out, sizeof(out));
	assert_true(has(out, "from a spare"));
	assert_true(metrics_reach(d, "\nsandvm_vmm_spares_ready 2\n", out, sizeof(out)));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	wait_finished(d, id, body, sizeof(body));

	/* An upgraded VMM runs at once: the waiting spares are of the old one. */
	assert_int_equal(utimes(d->vmm, NULL), 0);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"cold_boot\":true}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	assert_int_equal(request(d, "GET", "/metrics", NULL, out, sizeof(out)), 200);
	assert_true(has(out, "sandvm_vmm_starts_total{how=\"spare\"} 1\n"));
	assert_true(has(out, "sandvm_vmm_starts_total{how=\"process\"} 1\n"));
	assert_true(metrics_reach(d, "\nsandvm_vmm_spares_ready 2\n", out, sizeof(out)));
	snprintf(path, sizeof(path), "%s/sandboxd.log", d->dir);
	slurp(path, out, sizeof(out));
	assert_true(has(out, "event=vmm_spare_retired"));
	assert_false(has(out, "event=vmm_spare_failed"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	wait_finished(d, id, body, sizeof(body));

	/* --spare-vmms 0: none wait, and every VMM is a new process. */
	stop_daemon(d);
	d->spare_vmms = "0";
	start_daemon(d);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"cold_boot\":true}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	usleep(500000);
	assert_int_equal(request(d, "GET", "/metrics", NULL, out, sizeof(out)), 200);
	assert_true(has(out, "\nsandvm_vmm_spares_ready 0\n"));
	assert_true(has(out, "sandvm_vmm_starts_total{how=\"spare\"} 0\n"));
	assert_true(has(out, "sandvm_vmm_starts_total{how=\"process\"} 1\n"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	wait_finished(d, id, body, sizeof(body));
}

static void entrypoint_and_timeouts(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[128], logs[4096];

	/* An entrypoint's exit status is the sandbox's; its output is in the logs. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"command\":[\"sh\",\"-c\",\"echo entry; exit 7\"]}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	wait_finished(d, id, body, sizeof(body));
	assert_true(has(body, "\"returncode\":7"));
	assert_true(has(body, "\"reason\":\"exited\""));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/logs", id);
	assert_int_equal(request(d, "GET", path, NULL, logs, sizeof(logs)), 200);
	assert_true(has(logs, "entry"));
	/* The sandbox's own timeout. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"timeout\":1}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	wait_finished(d, id, body, sizeof(body));
	assert_true(has(body, "\"reason\":\"timeout\""));
	/* Idle: no exec for a second. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"idle_timeout\":1}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	wait_finished(d, id, body, sizeof(body));
	assert_true(has(body, "\"reason\":\"idle_timeout\""));
}

static void failures_at_start(void **state)
{
	struct daemon *d = *state;
	char body[65536], json[256];

	/* A VMM that dies at boot: 503 with what its console said. */
	snprintf(json, sizeof(json), "{\"image\":\"%s/crash.img\"}", d->images);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", json, body, sizeof(body)), 503);
	assert_true(has(body, "failed to start"));
	assert_true(has(body, "fake-vmm: booting crash"));
	/* An image outside the allowed folders, and one with a comma. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"/etc/hostname\"}", body, sizeof(body)),
			 403);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"/x,serial=y\"}", body, sizeof(body)),
			 400);
}

/* The VMM cannot even be started: 500, and nothing of the sandbox is left behind. */
static void spawn_fails(void **state)
{
	struct daemon *d = *state;
	char body[65536], cmd[PATH_MAX * 2], sandboxes[128];
	int entries = 0;
	DIR *dir;
	struct dirent *e;

	stop_daemon(d);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s/vmm-copy'", d->vmm, d->dir);
	assert_int_equal(system(cmd), 0);
	snprintf(d->vmm, sizeof(d->vmm), "%s/vmm-copy", d->dir);
	start_daemon(d);
	/* Executable when the daemon started (it checks), not when it spawns. */
	assert_int_equal(chmod(d->vmm, 0600), 0);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\"}", body, sizeof(body)), 500);
	assert_true(has(body, "cannot start the VMM"));
	snprintf(sandboxes, sizeof(sandboxes), "%s/sandboxes", d->state);
	dir = opendir(sandboxes);
	assert_non_null(dir);
	while ((e = readdir(dir)))
		entries += e->d_name[0] != '.';
	closedir(dir);
	assert_int_equal(entries, 0);
	assert_int_equal(request(d, "GET", "/v1/sandboxes", NULL, body, sizeof(body)), 200);
	assert_string_equal(body, "{\"sandboxes\":[]}");
}

/* A VMM whose agent never answers: the create waits for readiness; deleting the sandbox ends it at once. */
static void mute_guest(void **state)
{
	struct daemon *d = *state;
	char body[65536], json[256];
	pid_t child;
	int st;
	double t0;

	snprintf(json, sizeof(json), "{\"image\":\"%s/mute.img\"}", d->images);
	child = fork();
	if (child == 0) {
		/* The create call blocks until the sandbox is ready or ended: here, terminated while starting. */
		int status = request(d, "POST", "/v1/sandboxes", json, body, sizeof(body));

		_exit(status == 201 && has(body, "\"state\":\"finished\"") && has(body, "\"reason\":\"terminated\"")
			      ? 0
			      : 1);
	}
	usleep(1500 * 1000);
	/* Meanwhile the daemon serves others. */
	t0 = now_s();
	assert_int_equal(request(d, "GET", "/v1/health", NULL, body, sizeof(body)), 200);
	assert_true(now_s() - t0 < 1.0);
	/* No isolation run yet: unknown, never ok. */
	assert_true(has(body, "\"isolation\":\"unknown\"") && has(body, "\"isolation_last_run\":null"));
	/* The metrics see the sandbox that is starting (its VMM's counters are not read before it runs). */
	assert_int_equal(request(d, "GET", "/metrics", NULL, body, sizeof(body)), 200);
	assert_true(has(body, "sandvm_sandboxes{state=\"starting\"} 1\n"));
	assert_true(has(body, "sandvm_isolation_state{state=\"unknown\"} 1\n"));
	assert_int_equal(request(d, "GET", "/v1/sandboxes?state=starting", NULL, body, sizeof(body)), 200);
	{
		char id[64], path[128];

		id_of(body, id, sizeof(id));
		snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", id);
		assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	}
	/* The VMM's end cancels the readiness check: the create is answered now, not after 120 s. */
	t0 = now_s();
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_true(now_s() - t0 < 10);
}

static void restart_adopts(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[128], out[65536];

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"timeout\":600}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	stop_daemon(d);
	start_daemon(d);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"state\":\"running\""));
	exec_in(d, id, "[\"echo\",\"still here\"]", out, sizeof(out));
	assert_true(has(out, "still here"));
}

/* One op on a VMM's control socket, as the daemon sends it; the reply line into reply. */
static void control_op(const char *path, const char *op, char *reply, size_t cap)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ssize_t n;

	assert_true(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(write(fd, op, strlen(op)), (ssize_t)strlen(op));
	n = read(fd, reply, cap - 1);
	assert_true(n > 0);
	reply[n] = '\0';
	close(fd);
}

/*
 * The daemon stops while a pause is under way: its VMM has paused the VM for
 * the snapshot, the record says pausing, half the pause's files are there.
 * The next start runs the VM again, drops the files, and the sandbox is running.
 */
static void restart_undoes_a_pause(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[256], ctl[256], out[65536], reply[256], rec[8192], *at;
	struct stat st;
	FILE *f;
	size_t n;

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"timeout\":600}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	snprintf(ctl, sizeof(ctl), "%s/sandboxes/%s/control", d->state, id);
	control_op(ctl, "{\"op\":\"pause\"}\n", reply, sizeof(reply));
	assert_true(has(reply, "\"state\":\"paused\""));
	stop_daemon(d);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/sandbox.json", d->state, id);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(rec, 1, sizeof(rec) - 1, f);
	fclose(f);
	rec[n] = '\0';
	at = strstr(rec, "\"state\"");
	assert_non_null(at);
	at = strstr(at, "\"running\"");
	assert_non_null(at);
	memcpy(at, "\"pausing\"", 9); /* same length: the rest of the record stays as it is */
	write_file(path, rec);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause", d->state, id);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause/state", d->state, id);
	write_file(path, "half a snapshot");
	start_daemon(d);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"state\":\"running\""));
	control_op(ctl, "{\"op\":\"status\"}\n", reply, sizeof(reply));
	assert_true(has(reply, "\"state\":\"running\""));
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause", d->state, id);
	assert_int_equal(stat(path, &st), -1);
	exec_in(d, id, "[\"echo\",\"resumed\"]", out, sizeof(out));
	assert_true(has(out, "resumed"));
}

/* The one template directory under STATE/templates into out; false when there is none. */
static bool template_dir(struct daemon *d, char *out, size_t cap)
{
	char dir[160];
	DIR *dh;
	struct dirent *e;
	bool found = false;

	snprintf(dir, sizeof(dir), "%s/templates", d->state);
	dh = opendir(dir);
	while (dh && (e = readdir(dh)))
		if (e->d_name[0] != '.') {
			snprintf(out, cap, "%s/%s", dir, e->d_name);
			found = true;
		}
	if (dh)
		closedir(dh);
	return found;
}

/*
 * Warm starts: the first create of a shape waits for its template (one
 * build), later ones restore from it; cold_boot boots; a corrupt template
 * is refused by the VMM, deleted, and the create boots cold and says so;
 * the next create builds the template again.
 */
/*
 * Warm starts under the fake VMM. Its guest is the real agent run unprivileged
 * (--unix): it checks the RESTORED request and refuses to apply it (EPERM,
 * naming the entropy step), as it must outside a VM. So every warm start
 * here ends in a cold boot that says why; the template is built once, kept,
 * reused, rebuilt when stale, deleted when corrupt. Warm starts that come up
 * warm are tested on real VMs (tests/integration/api_test.py).
 */
static void warm_starts(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], out[65536], tdir[256], path[320];
	struct stat st, st2;
	FILE *f;

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	assert_true(has(body, "\"state\":\"running\""));
	if (!has(body, "\"start\":\"cold-fallback\"") || !has(body, "take its identity") || !has(body, "entropy"))
		fail_msg("%s", body);
	id_of(body, id, sizeof(id));
	exec_in(d, id, "[\"echo\",\"booted guest\"]", out, sizeof(out));
	assert_true(has(out, "booted guest"));
	/* The template: root's files, 0600, and what it was made from; an identity refusal keeps it. */
	assert_true(template_dir(d, tdir, sizeof(tdir)));
	snprintf(path, sizeof(path), "%s/state", tdir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/meta.json", tdir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* The same shape again: the same template, not a new build. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	assert_true(has(body, "\"start\":\"cold-fallback\""));
	assert_int_equal(stat(path, &st2), 0);
	assert_int_equal(st.st_ino, st2.st_ino);
	assert_true(st2.st_mtim.tv_sec == st.st_mtim.tv_sec && st2.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
	/* Asked to boot. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"memory_mib\":64,\"cold_boot\":true}", body, sizeof(body)),
			 201);
	assert_true(has(body, "\"start\":\"cold\""));
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"cold_boot\":1}", body,
				 sizeof(body)),
			 400);
	/* A corrupt template: refused, deleted, the create boots and says why. */
	snprintf(path, sizeof(path), "%s/state", tdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("garbage\n", f);
	fclose(f);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	assert_true(has(body, "\"state\":\"running\""));
	if (!has(body, "\"start\":\"cold-fallback\""))
		fail_msg("%s", body);
	assert_true(has(body, "snapshot: bad magic"));
	id_of(body, id, sizeof(id));
	exec_in(d, id, "[\"echo\",\"booted instead\"]", out, sizeof(out));
	assert_true(has(out, "booted instead"));
	snprintf(path, sizeof(path), "%s/meta.json", tdir);
	assert_int_equal(access(path, F_OK), -1);
	/* Built again by the next create. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	assert_true(has(body, "take its identity"));
	assert_int_equal(stat(path, &st), 0);
	/* A changed input (the VMM binary's mtime) makes the template stale: rebuilt. */
	assert_int_equal(utimes(d->vmm, NULL), 0);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	assert_true(has(body, "take its identity"));
	assert_int_equal(stat(path, &st2), 0);
	assert_true(st2.st_mtim.tv_sec != st.st_mtim.tv_sec || st2.st_mtim.tv_nsec != st.st_mtim.tv_nsec);
	/* An image whose VM never comes up has no template: the create boots it (and fails as before). */
	snprintf(path, sizeof(path), "{\"image\":\"%s/crash.img\"}", d->images);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", path, body, sizeof(body)), 503);
	assert_true(has(body, "fake-vmm: booting crash"));
}

/* Does path exist as a regular file of mode 0600? */
static bool private_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600;
}

/* The VMM pid in sandbox id's record, or 0. */
/*
 * A wait that comes after terminate, while the VMM is still going away (held
 * here by SIGSTOP until sandboxd kills it, 3 s on): it answers once the VMM is
 * gone, not at its own timeout of 20 s.
 */
static void wait_while_stopping(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[128];
	pid_t vmm;
	double t0;

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	vmm = record_pid(d, id);
	assert_true(vmm > 0);
	assert_int_equal(kill(vmm, SIGSTOP), 0);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	t0 = now_s();
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/wait?timeout=20", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(now_s() - t0 < 10);
	assert_true(has(body, "\"state\":\"finished\""));
	assert_true(has(body, "\"reason\":\"terminated\""));
	assert_int_equal(kill(vmm, 0), -1); /* gone (and reaped) before the answer */
}

static void spill(const char *path, const char *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
}

/*
 * Pause and resume under the fake VMM: a pause writes the snapshot through
 * the VMM into the sandbox's pause folder and stops the VMM; the paused
 * sandbox refuses calls that need its guest with 409, its timeout clock
 * stands still, and a restarted daemon lists it paused. Its resume restores
 * a VMM from those files; as for warm starts, the unprivileged agent refuses
 * the RESTORED identity (EPERM), so here every resume fails, says why, and
 * leaves the sandbox paused with its snapshot. Resumes that succeed are
 * tested on real VMs (tests/integration/api_test.py).
 */
static void pause_resume(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], other[64], path[320], vmm_log[8192] = "", wrapped[128], key_path[320],
		mem_path[320], sealed_mem[256];
	FILE *f;
	size_t n, sealed_len;

	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"memory_mib\":64,\"timeout\":3,\"cold_boot\":true}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/resume", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 409);
	assert_true(has(body, "only a paused sandbox can be resumed"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/pause", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	if (!has(body, "\"state\":\"paused\"") || !has(body, "\"timeout_left\":"))
		fail_msg("%s", body);
	/* The snapshot: root's files, 0600, in the sandbox's own folder; the VMM is gone. */
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause/state", d->state, id);
	assert_true(private_file(path));
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause/memory", d->state, id);
	assert_true(private_file(path));
	/* The memory file is sealed (the fake VMM writes a marker, never the guest's bytes) under a wrapped key. */
	slurp(path, vmm_log, sizeof(vmm_log));
	if (!has(vmm_log, "fake-vmm sealed memory") || has(vmm_log, "fake guest memory"))
		fail_msg("%s", vmm_log);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause/key", d->state, id);
	assert_true(private_file(path));
	assert_int_equal(slurp(path, wrapped, sizeof(wrapped)), 61);
	/* Calls that need the guest: 409, saying so. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/pause", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 409);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs", id);
	assert_int_equal(request(d, "POST", path, "{\"argv\":[\"true\"]}", body, sizeof(body)), 409);
	assert_true(has(body, "is paused: resume it first"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=/etc/hostname", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 409);
	assert_true(has(body, "is paused"));
	assert_int_equal(request(d, "GET", "/v1/sandboxes?state=paused", NULL, body, sizeof(body)), 200);
	assert_true(has(body, id));
	/* Its timeout of 3 s passes while paused: the clock stood still. */
	usleep(3500 * 1000);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	if (!has(body, "\"state\":\"paused\""))
		fail_msg("%s", body);
	/* A restarted daemon lists it paused, the snapshot kept. */
	stop_daemon(d);
	start_daemon(d);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	if (!has(body, "\"state\":\"paused\"") || !has(body, "\"timeout_left\":"))
		fail_msg("%s", body);
	/* The resume restores a VMM from the snapshot; the agent refuses the identity; it stays paused. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/resume", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 503);
	if (!has(body, "stays paused") || !has(body, "take its identity") || !has(body, "entropy"))
		fail_msg("%s", body);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/vmm.log", d->state, id);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(vmm_log, 1, sizeof(vmm_log) - 1, f);
	fclose(f);
	vmm_log[n] = '\0';
	assert_true(has(vmm_log, "restored from snapshot"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	if (!has(body, "\"state\":\"paused\"") || !has(body, "\"resume_error\":"))
		fail_msg("%s", body);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause/memory", d->state, id);
	assert_true(private_file(path));
	/* A wrapped key that does not open (tampered): refused before any VMM starts; it stays paused. */
	snprintf(key_path, sizeof(key_path), "%s/sandboxes/%s/pause/key", d->state, id);
	snprintf(mem_path, sizeof(mem_path), "%s/sandboxes/%s/pause/memory", d->state, id);
	wrapped[20] ^= 1;
	spill(key_path, wrapped, 61);
	wrapped[20] ^= 1;
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/resume", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 500);
	if (!has(body, "does not open with the managed key"))
		fail_msg("%s", body);
	/* The key gone but the memory sealed: the VMM refuses it. */
	unlink(key_path);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 503);
	if (!has(body, "stays paused") || !has(body, "sealed and no --restore-memory-key"))
		fail_msg("%s", body);
	/* A pause folder from before sealing (no key, memory in clear) still resumes as it was written. */
	sealed_len = slurp(mem_path, sealed_mem, sizeof(sealed_mem));
	write_file(mem_path, "fake guest memory\n");
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 503);
	if (!has(body, "stays paused") || !has(body, "take its identity"))
		fail_msg("%s", body);
	spill(mem_path, sealed_mem, sealed_len);
	spill(key_path, wrapped, 61);
	chmod(key_path, 0600);
	chmod(mem_path, 0600);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause/memory", d->state, id);
	/* A corrupt snapshot: the VMM refuses it, the sandbox stays paused, nothing deleted. */
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause/state", d->state, id);
	write_file(path, "garbage\n");
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/resume", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 503);
	if (!has(body, "stays paused") || !has(body, "snapshot: bad magic"))
		fail_msg("%s", body);
	/* An entrypoint's stream would be cut: refused. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"cold_boot\":true,\"command\":[\"sleep\",\"30\"]}", body,
				 sizeof(body)),
			 201);
	id_of(body, other, sizeof(other));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/pause", other);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 409);
	assert_true(has(body, "entrypoint"));
	assert_int_equal(request(d, "POST", "/v1/sandboxes/sb-nosuch/pause", NULL, body, sizeof(body)), 404);
	assert_int_equal(request(d, "POST", "/v1/sandboxes/sb-nosuch/resume", NULL, body, sizeof(body)), 404);
	/* Terminated while paused: finished at once, the snapshot gone. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	if (!has(body, "\"state\":\"finished\"") || !has(body, "\"reason\":\"terminated\""))
		fail_msg("%s", body);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/pause", d->state, id);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/pause", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 409);
}

/* The record's "jail" uid of sandbox id, or 0. */
static unsigned record_uid(struct daemon *d, const char *id)
{
	char path[256], text[16384] = "", *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/sandboxes/%s/sandbox.json", d->state, id);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	p = strstr(text, "\"jail\"");
	p = p ? strstr(p, "\"uid\":") : NULL;
	return p ? (unsigned)strtoul(p + 6, NULL, 10) : 0;
}

static void create_minimal(struct daemon *d, char *id, size_t cap)
{
	char body[65536];

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"timeout\":600}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, cap);
}

/* A snapshot of a path that is not a directory in the guest: 404 naming it (docs/api.md). */
static void snapshot_missing_dir(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[128];

	create_minimal(d, id, sizeof(id));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/snapshots", id);
	assert_int_equal(request(d, "POST", path, "{\"path\":\"/nonexistent-sandvm-dir\"}", body, sizeof(body)),
			 404);
	assert_true(has(body, "/nonexistent-sandvm-dir is not a directory in the sandbox"));
}

/*
 * sandboxd's side of the jail: each sandbox its own uid (the lowest free,
 * kept in its record and reserved across a restart), an empty root-owned
 * 0555 jail root and a cgroup leaf, both gone with the VMM.
 */
static void jail_host_side(void **state)
{
	struct daemon *d = *state;
	char a[64], b[64], c[64], e[64], path[512], body[65536];
	struct stat st;

	if (!d)
		skip(); /* not root, or no writable cgroup v2 here */
	create_minimal(d, a, sizeof(a));
	create_minimal(d, b, sizeof(b));
	assert_int_equal(record_uid(d, a), 200000);
	assert_int_equal(record_uid(d, b), 200001);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/root", d->state, a);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0555);
	assert_int_equal(st.st_uid, 0);
	snprintf(path, sizeof(path), "%s/sandvm/%s/cgroup.procs", d->cgroup_root, a);
	assert_int_equal(access(path, F_OK), 0);
	/* A restart adopts both and keeps their ids. */
	stop_daemon(d);
	start_daemon(d);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", a);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"state\":\"running\""));
	create_minimal(d, c, sizeof(c));
	assert_int_equal(record_uid(d, c), 200002);
	/* The VMM gone: its leaf and root go, and its id is free again. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", a);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	wait_finished(d, a, body, sizeof(body));
	snprintf(path, sizeof(path), "%s/sandvm/%s", d->cgroup_root, a);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/sandboxes/%s/root", d->state, a);
	assert_int_equal(access(path, F_OK), -1);
	create_minimal(d, e, sizeof(e));
	assert_int_equal(record_uid(d, e), 200000);
}

/* The route table and the errno map, seen by a client: each failure's status, and a body saying why. */
static void routes_and_errors(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[160];

	assert_int_equal(request(d, "GET", "/v1/nothing", NULL, body, sizeof(body)), 404);
	assert_true(has(body, "no such route"));
	assert_int_equal(request(d, "PATCH", "/v1/sandboxes", NULL, body, sizeof(body)), 404);
	assert_int_equal(request(d, "GET", "/v1/sandboxes/sb-none", NULL, body, sizeof(body)), 404);
	assert_true(has(body, "no sandbox sb-none"));
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":", body, sizeof(body)), 400);
	assert_int_equal(request(d, "GET", "/v1/snapshots/0123", NULL, body, sizeof(body)), 404);
	assert_int_equal(request(d, "DELETE", "/v1/snapshots/0123", NULL, body, sizeof(body)), 404);
	assert_int_equal(request(d, "GET", "/v1/sandboxes?tag=novalue", NULL, body, sizeof(body)), 400);
	assert_true(has(body, "\"field\":\"tag\""));
	/* Over the daemon's --max-memory of 4096 MiB: 429, naming the field. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":8192}", body,
				 sizeof(body)),
			 429);
	assert_true(has(body, "\"field\":\"memory_mib\""));

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs/ex-none", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 404);
	assert_true(has(body, "no exec ex-none"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/wait?timeout=x", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 400);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/chmod?path=/x", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 405);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/network", id);
	assert_int_equal(request(d, "PUT", path, "{\"block_network\":1}", body, sizeof(body)), 400);
	/* Connect tokens: a bad field is 400 before anything else; this daemon has no ingress: 503. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/connect-tokens", id);
	assert_int_equal(request(d, "POST", path, "{\"port\":0}", body, sizeof(body)), 400);
	assert_true(has(body, "\"field\":\"port\""));
	assert_int_equal(request(d, "POST", path, "{\"user_metadata\":[1]}", body, sizeof(body)), 400);
	assert_int_equal(request(d, "POST", path, "{}", body, sizeof(body)), 503);
	assert_true(has(body, "--ingress"));
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"connect_tokens\":[]"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/connect-tokens/tok-none", id);
	assert_int_equal(request(d, "DELETE", path, NULL, body, sizeof(body)), 404);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
	assert_int_equal(request(d, "DELETE", path, NULL, body, sizeof(body)), 204);
	/* Gone from the registry: a finished sandbox's calls are 404 or 409, never a success. */
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 404);
}

/* ---- connect tokens through the ingress listener ---- */

/* A free TCP port on the loopback (bound, then let go). */
static unsigned free_port(int *keep_fd, bool keep)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	if (keep) {
		assert_int_equal(listen(fd, 16), 0);
		*keep_fd = fd;
	} else {
		close(fd);
	}
	return ntohs(a.sin_port);
}

/* Whether port can be bound on loopback now. */
static bool port_free(unsigned port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

/*
 * The first of two free ports in a row, below the kernel's ephemeral range
 * (32768 and up), where no connection of another program takes one meanwhile.
 */
static unsigned free_port_pair(void)
{
	uint64_t seed = (uint64_t)getpid() * 2654435761u + (uint64_t)time(NULL);

	for (int i = 0; i < 1000; i++) {
		unsigned lo = 20000 + unit_rand(&seed) % 10000;

		if (port_free(lo) && port_free(lo + 1))
			return lo;
	}
	fail_msg("no two free ports in a row in 20000..30000");
	return 0;
}

/* The "guest's" server: answers each request with its head as received, keeping the connection. */
static void *echo_head_server(void *arg)
{
	int lfd = (int)(intptr_t)arg, fd;

	while ((fd = accept(lfd, NULL, NULL)) >= 0) {
		char buf[16384], reply[17000];
		size_t got = 0;

		for (;;) {
			ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
			char *end;

			if (n <= 0)
				break;
			got += (size_t)n;
			buf[got] = '\0';
			while ((end = strstr(buf, "\r\n\r\n"))) {
				size_t head = (size_t)(end + 4 - buf);
				int len = snprintf(reply, sizeof(reply), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%.*s",
						   head, (int)head, buf);

				if (write(fd, reply, (size_t)len) != len)
					break;
				memmove(buf, buf + head, got - head + 1);
				got -= head;
			}
		}
		close(fd);
	}
	return NULL;
}

struct tls_client {
	int fd;
	SSL *ssl;
};

static void tls_open(struct daemon *d, struct tls_client *c, const char *host)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((uint16_t)d->ingress_port)};
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char ca[160];
	struct timeval tv = {.tv_sec = 5};

	snprintf(ca, sizeof(ca), "%s/tls/ca.pem", d->state);
	assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	SSL_set_tlsext_host_name(c->ssl, host);
	SSL_set1_host(c->ssl, host);
	SSL_set_fd(c->ssl, c->fd);
	if (SSL_connect(c->ssl) != 1)
		fail_msg("TLS handshake with the ingress listener as %s failed", host);
}

/* Sends a request; the status of its response (body in body), or -1 once the connection ended. */
static int tls_request(struct tls_client *c, const char *text, char *body, size_t cap)
{
	char buf[32768];
	size_t got = 0;
	int status = -1;

	if (SSL_write(c->ssl, text, (int)strlen(text)) <= 0)
		return -1;
	for (;;) {
		int r = SSL_read(c->ssl, buf + got, (int)(sizeof(buf) - 1 - got));
		const char *end, *cl;

		if (r <= 0)
			break;
		got += (size_t)r;
		buf[got] = '\0';
		end = strstr(buf, "\r\n\r\n");
		cl = strcasestr(buf, "\r\ncontent-length: ");
		if (end && cl && got >= (size_t)(end + 4 - buf) + strtoul(cl + 18, NULL, 10)) {
			sscanf(buf, "HTTP/1.1 %d", &status);
			snprintf(body, cap, "%s", end + 4);
			break;
		}
	}
	ERR_clear_error();
	return status;
}

static void tls_close(struct tls_client *c)
{
	SSL_free(c->ssl);
	close(c->fd);
}

static void connect_tokens_ingress(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[160], json[256], req[1024], url[256], token[128], tid[64], host[128];
	unsigned backend;
	int lfd;
	pthread_t server;
	struct tls_client c, c2;
	const char *p;

	backend = free_port(&lfd, true);
	pthread_create(&server, NULL, echo_head_server, (void *)(intptr_t)lfd);
	stop_daemon(d);
	d->ingress_port = free_port(NULL, false);
	start_daemon(d);

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/connect-tokens", id);
	snprintf(json, sizeof(json), "{\"port\":%u,\"user_metadata\":{\"name\":\"Zo\u00eb\"}}", backend);
	assert_int_equal(request(d, "POST", path, json, body, sizeof(body)), 201);
	p = strstr(body, "\"url\":\"https://");
	assert_non_null(p);
	snprintf(url, sizeof(url), "%.*s", (int)strcspn(p + 15, "\""), p + 15);
	snprintf(host, sizeof(host), "%.*s", (int)strcspn(url, ":"), url);
	assert_non_null(strstr(host, ".sbx.test"));
	p = strstr(body, "\"token\":\"");
	assert_non_null(p);
	snprintf(token, sizeof(token), "%.*s", (int)strcspn(p + 9, "\""), p + 9);
	id_of(body, tid, sizeof(tid));

	/* Through the listener, the relay and the agent to the test's server. */
	tls_open(d, &c, host);
	snprintf(req, sizeof(req), "GET /hello?q=1 HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
		 "X-Verified-User-Data: forged\r\n\r\n", url, token);
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), 200);
	assert_true(has(body, "GET /hello?q=1 HTTP/1.1\r\n"));
	assert_true(has(body, "\r\nX-Verified-User-Data: {\"name\":\"Zo\\u00eb\"}\r\n"));
	assert_false(has(body, "forged"));
	assert_false(has(body, token));
	/* Another label of the same domain: 404; no token: 401, the connection kept. */
	tls_open(d, &c2, "ffffffffffffffff.sbx.test");
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: ffffffffffffffff.sbx.test\r\nAuthorization: Bearer %s\r\n\r\n",
		 token);
	assert_int_equal(tls_request(&c2, req, body, sizeof(body)), 404);
	tls_close(&c2);
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", url);
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), 401);
	/* Revoked: the open connection closes, a new one gets 401. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/connect-tokens/%s", id, tid);
	assert_int_equal(request(d, "DELETE", path, NULL, body, sizeof(body)), 204);
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", url, token);
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), -1);
	tls_close(&c);
	tls_open(d, &c, host);
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), 401);
	tls_close(&c);

	/* A token with a ttl of 1 s ends with it. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/connect-tokens", id);
	snprintf(json, sizeof(json), "{\"port\":%u,\"ttl\":1}", backend);
	assert_int_equal(request(d, "POST", path, json, body, sizeof(body)), 201);
	p = strstr(body, "\"token\":\"");
	snprintf(token, sizeof(token), "%.*s", (int)strcspn(p + 9, "\""), p + 9);
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", url, token);
	tls_open(d, &c, host);
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), 200);
	assert_true(has(body, "X-Verified-User-Data: {}\r\n"));
	sleep(2);
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), 401);
	tls_close(&c);

	/* Tokens end with the sandbox. */
	snprintf(json, sizeof(json), "{\"port\":%u}", backend);
	assert_int_equal(request(d, "POST", path, json, body, sizeof(body)), 201);
	p = strstr(body, "\"token\":\"");
	snprintf(token, sizeof(token), "%.*s", (int)strcspn(p + 9, "\""), p + 9);
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", url, token);
	tls_open(d, &c, host);
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), 200);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", id);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	wait_finished(d, id, body, sizeof(body));
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), -1);
	tls_close(&c);
	tls_open(d, &c, host);
	assert_int_equal(tls_request(&c, req, body, sizeof(body)), 401);
	tls_close(&c);
	shutdown(lfd, SHUT_RDWR);
	close(lfd);
	pthread_join(server, NULL);
}

/* Sends a request with a body of len bytes and leaves without reading the answer. */
static void send_and_leave(struct daemon *d, const char *method, const char *path, const char *body, size_t len)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char head[1024];
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), n;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", d->sock);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %zu\r\n\r\n",
		     method, path, d->key, len);
	assert_int_equal(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
	for (size_t off = 0; off < len;) {
		ssize_t w = send(fd, body + off, len - off, MSG_NOSIGNAL);

		assert_true(w > 0);
		off += (size_t)w;
	}
	close(fd);
}

/* The file API through the real daemon and agent: each call on the daemon's loop, the statuses of the contract. */
static void file_calls(void **state)
{
	struct daemon *d = *state;
	char body[65536], id[64], path[512], dir[128];

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	id_of(body, id, sizeof(id));
	snprintf(dir, sizeof(dir), "%s/files/a/b", d->dir);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/mkdir?path=%s&parents=1", id, dir);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 204);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s/note.txt&mode=0600", id, dir);
	assert_int_equal(request(d, "PUT", path, "a note through the file API\n", body, sizeof(body)), 204);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_string_equal(body, "a note through the file API\n");
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/stat?path=%s/note.txt", id, dir);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	if (!has(body, "\"type\":\"file\"") || !has(body, "\"size\":28") || !has(body, "\"mode\":384"))
		fail_msg("stat: %s", body);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/list?path=%s", id, dir);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_string_equal(body, "{\"entries\":[{\"name\":\"note.txt\",\"type\":\"file\",\"size\":28}]}");
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/list?path=%s/files/a", id, d->dir);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	/* A folder's size depends on the file system. */
	if (strncmp(body, "{\"entries\":[{\"name\":\"b\",\"type\":\"dir\",\"size\":", 44) || !has(body, "}]}"))
		fail_msg("list: %s", body);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/mkdir?path=%s/files/empty", id, d->dir);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 204);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/list?path=%s/files/empty", id, d->dir);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_string_equal(body, "{\"entries\":[]}");
	/* Errors: the agent's, mapped to statuses, with its message. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s/missing", id, d->dir);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 404);
	assert_true(has(body, "\"error\":"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s", id, dir);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 409);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s/files/a", id, d->dir);
	assert_int_equal(request(d, "DELETE", path, NULL, body, sizeof(body)), 409);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s/files/a&recursive=1", id, d->dir);
	assert_int_equal(request(d, "DELETE", path, NULL, body, sizeof(body)), 204);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/stat?path=%s/files/a", id, d->dir);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 404);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=relative", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 400);
	assert_true(has(body, "\"field\":\"path\""));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/nope?path=/x", id);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 405);

	/* A client that leaves: an upload is still carried through, a download is dropped; the daemon goes on. */
	{
		size_t big = 3 << 20;
		char *data = malloc(big), want[64];
		double end = now_s() + 10;

		assert_non_null(data);
		memset(data, 'z', big);
		snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s/files/left.bin", id, d->dir);
		send_and_leave(d, "PUT", path, data, big);
		snprintf(want, sizeof(want), "\"size\":%zu", big);
		snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/stat?path=%s/files/left.bin", id, d->dir);
		while (now_s() < end && !(request(d, "GET", path, NULL, body, sizeof(body)) == 200 && has(body, want)))
			usleep(20000);
		if (!has(body, want))
			fail_msg("the upload of a client that left: %s", body);
		snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=%s/files/left.bin", id, d->dir);
		for (int i = 0; i < 5; i++)
			send_and_leave(d, "GET", path, NULL, 0);
		free(data);
		assert_int_equal(request(d, "GET", "/v1/health", NULL, body, sizeof(body)), 200);
	}
}

/* ---- tunnels ---- */

/* The label of the tunnel of port in a GET .../tunnels body. */
static void tunnel_label(const char *body, unsigned port, char *label, size_t cap)
{
	char key[64];
	const char *p;

	snprintf(key, sizeof(key), "\"%u\":{\"container_port\":%u,\"host\":\"", port, port);
	p = strstr(body, key);
	if (!p)
		fail_msg("no tunnel %u in %s", port, body);
	p += strlen(key);
	snprintf(label, cap, "%.*s", (int)strcspn(p, "."), p);
	assert_int_equal(strlen(label), 16);
}

/* What a daemon without --ingress, or without --tunnel-ports, refuses, naming the field. */
static void tunnels_refused(void **state)
{
	struct daemon *d = *state;
	char body[65536];

	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"h2_ports\":[80]}", body,
				 sizeof(body)),
			 400);
	assert_true(has(body, "\"field\":\"h2_ports\""));
	assert_true(has(body, "--ingress"));
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"encrypted_ports\":[80,80]}",
				 body, sizeof(body)),
			 400);
	assert_true(has(body, "\"field\":\"encrypted_ports\""));
	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"restricted\":true,\"unencrypted_ports\":[80]}", body,
				 sizeof(body)),
			 400);
	assert_true(has(body, "\"field\":\"unencrypted_ports\""));
	assert_int_equal(request(d, "GET", "/v1/sandboxes/sb-none/tunnels", NULL, body, sizeof(body)), 404);

	stop_daemon(d);
	d->ingress_port = free_port(NULL, false);
	start_daemon(d);
	assert_int_equal(request(d, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"unencrypted_ports\":[80]}",
				 body, sizeof(body)),
			 400);
	assert_true(has(body, "\"field\":\"unencrypted_ports\""));
	assert_true(has(body, "--tunnel-ports"));
}

/*
 * With --ingress and two host ports: the tunnels' JSON, host ports given to
 * one sandbox at a time (503 when none is free), kept over a restart,
 * released at finish; no connect token on a tunnel port.
 */
static void tunnels_ports(void **state)
{
	struct daemon *d = *state;
	char body[65536], a[64], b[64], path[160], want[4096], le[32], lu[32], lh[32], before[4096];
	unsigned lo;

	stop_daemon(d);
	d->ingress_port = free_port(NULL, false);
	lo = free_port_pair();
	snprintf(d->tunnel_ports, sizeof(d->tunnel_ports), "%u-%u", lo, lo + 1);
	start_daemon(d);

	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"memory_mib\":64,\"timeout\":600,\"block_network\":true,"
				 "\"encrypted_ports\":[443],\"unencrypted_ports\":[8000],\"h2_ports\":[50051]}",
				 body, sizeof(body)),
			 201);
	id_of(body, a, sizeof(a));
	assert_true(has(body, "\"tunnels\":3"));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/tunnels", a);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	tunnel_label(body, 443, le, sizeof(le));
	tunnel_label(body, 8000, lu, sizeof(lu));
	tunnel_label(body, 50051, lh, sizeof(lh));
	assert_string_not_equal(le, lu);
	assert_string_not_equal(lu, lh);
	snprintf(want, sizeof(want),
		 "{\"tunnels\":{"
		 "\"443\":{\"container_port\":443,\"host\":\"%s.sbx.test\",\"port\":%u,\"url\":\"https://%s.sbx.test:%u\","
		 "\"unencrypted_host\":null,\"unencrypted_port\":null,\"h2\":false},"
		 "\"8000\":{\"container_port\":8000,\"host\":\"%s.sbx.test\",\"port\":%u,\"url\":\"https://%s.sbx.test:%u\","
		 "\"unencrypted_host\":\"127.0.0.1\",\"unencrypted_port\":%u,\"h2\":false},"
		 "\"50051\":{\"container_port\":50051,\"host\":\"%s.sbx.test\",\"port\":%u,\"url\":\"https://%s.sbx.test:%u\","
		 "\"unencrypted_host\":null,\"unencrypted_port\":null,\"h2\":true}}}",
		 le, d->ingress_port, le, d->ingress_port, lu, d->ingress_port, lu, d->ingress_port, lo, lh,
		 d->ingress_port, lh, d->ingress_port);
	assert_string_equal(body, want);
	snprintf(before, sizeof(before), "%s", body);

	/* No connect token on a tunnel port: the tunnel would let a client forge the verified header. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/connect-tokens", a);
	assert_int_equal(request(d, "POST", path, "{\"port\":8000}", body, sizeof(body)), 400);
	assert_true(has(body, "\"field\":\"port\""));
	assert_true(has(body, "X-Verified-User-Data"));

	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"memory_mib\":64,\"unencrypted_ports\":[8000]}", body,
				 sizeof(body)),
			 201);
	id_of(body, b, sizeof(b));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/tunnels", b);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	snprintf(want, sizeof(want), "\"unencrypted_port\":%u", lo + 1);
	assert_true(has(body, want));
	/* The range is spent: 503, and nothing of the sandbox is left. */
	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"memory_mib\":64,\"unencrypted_ports\":[1]}", body,
				 sizeof(body)),
			 503);
	assert_true(has(body, "--tunnel-ports"));

	/* A restart takes the tunnels back, labels and host ports alike. */
	stop_daemon(d);
	start_daemon(d);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/tunnels", a);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	assert_string_equal(body, before);
	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"memory_mib\":64,\"unencrypted_ports\":[1]}", body,
				 sizeof(body)),
			 503);

	/* Finished: its host port goes back to the range. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/terminate", a);
	assert_int_equal(request(d, "POST", path, NULL, body, sizeof(body)), 200);
	wait_finished(d, a, body, sizeof(body));
	assert_int_equal(request(d, "POST", "/v1/sandboxes",
				 "{\"image\":\"minimal\",\"memory_mib\":64,\"unencrypted_ports\":[1]}", body,
				 sizeof(body)),
			 201);
	id_of(body, b, sizeof(b));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/tunnels", b);
	assert_int_equal(request(d, "GET", path, NULL, body, sizeof(body)), 200);
	snprintf(want, sizeof(want), "\"unencrypted_port\":%u", lo);
	assert_true(has(body, want));
	d->tunnel_ports[0] = '\0';
}

/* ---- the isolation monitor (POST/GET /v1/selftest/isolation) ---- */

/*
 * A stand-in for the guest's probe program, in the folder the fake VMM
 * binds on /sbin: it answers every spec with what was expected, but tries
 * env probes for real (so a planted key is a breach); its folder's "mode"
 * file makes it print garbage or fail instead.
 */
static const char fake_probe[] =
	"#!/bin/sh\n"
	"mode=$(cat \"$(dirname \"$0\")/mode\")\n"
	"[ \"$1\" = --timeout-ms ] && shift 2\n"
	"case $mode in\n"
	"garbage) printf 'sandvm-isolation-report 1\\nprobe x\\n'; exit 0 ;;\n"
	"fail) echo 'probe: broken' >&2; exit 3 ;;\n"
	"esac\n"
	"echo 'sandvm-isolation-report 1'\n"
	"n=0\n"
	"for spec in \"$@\"; do\n"
	"  name=${spec%%,*}; rest=${spec#*,}; exp=${rest%%,*}; rest=${rest#*,}; kind=${rest%%,*}; arg=${rest#*,}\n"
	"  obs=$exp\n"
	"  if [ \"$kind\" = env ] && env | grep -q -- \"$arg\"; then obs=reached; fi\n"
	"  echo \"probe $name $exp $obs env holds $arg\"\n"
	"  n=$((n+1))\n"
	"done\n"
	"echo \"end $n\"\n";

static void probe_mode(struct daemon *d, const char *mode)
{
	char path[160];

	snprintf(path, sizeof(path), "%s/sbin/mode", d->dir);
	write_file(path, mode);
}

static void isolation_selftest(void **state)
{
	struct daemon *d = *state;
	char path[160], line[160], *body = malloc(1 << 20);

	assert_non_null(body);
	if (geteuid() != 0) {
		free(body);
		skip(); /* the fake VMM needs a mount namespace to give the "guest" its /sbin */
	}
	snprintf(path, sizeof(path), "%s/sbin", d->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/sbin/sandvm-isolation-probe", d->dir);
	write_file(path, fake_probe);
	assert_int_equal(chmod(path, 0755), 0);
	probe_mode(d, "ok\n");
	snprintf(path, sizeof(path), "%s/initramfs.cpio.gz", d->images);
	snprintf(line, sizeof(line), "sbin %s/sbin\n", d->dir);
	write_file(path, line);

	/* No run yet: GET has nothing, health says unknown. */
	assert_int_equal(request(d, "GET", "/v1/selftest/isolation", NULL, body, 1 << 20), 404);
	assert_int_equal(request(d, "GET", "/v1/health", NULL, body, 1 << 20), 200);
	assert_true(has(body, "\"isolation\":\"unknown\""));
	assert_int_equal(request(d, "POST", "/v1/selftest/isolation", "{\"x\":1}", body, 1 << 20), 400);

	/* Every wall held. */
	assert_int_equal(request(d, "POST", "/v1/selftest/isolation", NULL, body, 1 << 20), 200);
	if (!has(body, "\"result\":\"ok\""))
		fail_msg("not ok: %s", body);
	assert_true(has(body, "\"reason\":null"));
	assert_true(has(body, "\"canary\":\"sb-"));
	assert_true(has(body, "{\"name\":\"guest.env.svk\",\"expected\":\"blocked\",\"observed\":\"blocked\","
			      "\"verdict\":\"held\""));
	assert_true(has(body, "\"name\":\"metadata.aws.tcp.80\""));
	assert_true(has(body, "\"name\":\"vsock.2.22\""));
	assert_true(has(body, "\"name\":\"guest.file.api-keys\""));
	assert_int_equal(request(d, "GET", "/v1/health", NULL, body, 1 << 20), 200);
	assert_true(has(body, "\"isolation\":\"ok\""));
	assert_false(has(body, "\"isolation_last_run\":null"));
	assert_int_equal(request(d, "GET", "/v1/selftest/isolation", NULL, body, 1 << 20), 200);
	assert_true(has(body, "\"result\":\"ok\""));
	assert_int_equal(request(d, "GET", "/metrics", NULL, body, 1 << 20), 200);
	assert_true(has(body, "sandvm_isolation_runs_total{result=\"ok\"} 1\n"));
	assert_true(has(body, "sandvm_isolation_state{state=\"ok\"} 1\n"));
	assert_true(has(body, "sandvm_isolation_probe_failures_total 0\n"));
	/* The canary is gone, with its record. */
	assert_int_equal(request(d, "GET", "/v1/sandboxes", NULL, body, 1 << 20), 200);
	assert_false(has(body, "isolation-canary"));

	/* A garbage report, a probe program that fails: unknown, with the reason. */
	probe_mode(d, "garbage\n");
	assert_int_equal(request(d, "POST", "/v1/selftest/isolation", NULL, body, 1 << 20), 200);
	if (!has(body, "\"result\":\"unknown\"") || !has(body, "\"reason\":\"the probe report was refused"))
		fail_msg("garbage: %s", body);
	probe_mode(d, "fail\n");
	assert_int_equal(request(d, "POST", "/v1/selftest/isolation", NULL, body, 1 << 20), 200);
	if (!has(body, "\"result\":\"unknown\"") || !has(body, "exited with status 3: probe: broken"))
		fail_msg("fail: %s", body);
	assert_int_equal(request(d, "GET", "/v1/health", NULL, body, 1 << 20), 200);
	assert_true(has(body, "\"isolation\":\"unknown\""));

	/* A canary that does not start is unknown, never ok. */
	write_file(path, "crash\n");
	assert_int_equal(request(d, "POST", "/v1/selftest/isolation", NULL, body, 1 << 20), 200);
	if (!has(body, "\"result\":\"unknown\"") || !has(body, "\"reason\":\"the canary did not start") ||
	    !has(body, "\"probes\":[]"))
		fail_msg("crash: %s", body);
	assert_int_equal(request(d, "GET", "/metrics", NULL, body, 1 << 20), 200);
	assert_true(has(body, "sandvm_isolation_runs_total{result=\"unknown\"} 3\n"));

	/* A key planted in the canary's environment (the test-only knob): breached, named, counted. */
	write_file(path, line);
	probe_mode(d, "ok\n");
	stop_daemon(d);
	setenv("SANDVM_TEST_ISOLATION_CANARY_ENV", "SANDVM_API_KEY=svk_planted", 1);
	start_daemon(d);
	unsetenv("SANDVM_TEST_ISOLATION_CANARY_ENV");
	assert_int_equal(request(d, "POST", "/v1/selftest/isolation", "{}", body, 1 << 20), 200);
	if (!has(body, "\"result\":\"breached\""))
		fail_msg("not breached: %s", body);
	assert_true(has(body, "{\"name\":\"guest.env.svk\",\"expected\":\"blocked\",\"observed\":\"reached\","
			      "\"verdict\":\"breached\""));
	assert_int_equal(request(d, "GET", "/v1/health", NULL, body, 1 << 20), 200);
	assert_true(has(body, "\"isolation\":\"breached\""));
	assert_int_equal(request(d, "GET", "/metrics", NULL, body, 1 << 20), 200);
	assert_true(has(body, "sandvm_isolation_runs_total{result=\"breached\"} 1\n"));
	assert_true(has(body, "sandvm_isolation_probe_failures_total 1\n"));
	assert_true(has(body, "sandvm_isolation_last_run_breached_probes 1\n"));
	snprintf(path, sizeof(path), "%s/sandboxd.log", d->dir);
	{
		slurp(path, body, 1 << 20);
		assert_true(has(body, "error: isolation: breached: probe guest.env.svk expected blocked, observed reached"));
		assert_true(has(body, "TEST ONLY: SANDVM_TEST_ISOLATION_CANARY_ENV"));
	}
	free(body);
}

/* The monitor's flags: a bad value stops sandboxd at once with a clear message. */
static void isolation_flags_refused(void **state)
{
	struct daemon *d = *state;
	static const char *const bad[][2] = {
		{"--isolation-probe", "0"},		 {"--isolation-probe", "-5"},
		{"--isolation-probe", "99999999999"},	 {"--isolation-probe", "soon"},
		{"--isolation-probe-peer", "10.0.0.1"},	 {"--isolation-probe-peer", "::1:80"},
		{"--isolation-probe-peer", "[::1]:0"},	 {"--isolation-probe-deny", "db.internal:5432"},
		{"--isolation-probe-deny", "10.0.0.1:99999"}, {"--spare-vmms", "17"},
		{"--spare-vmms", "-1"},			 {"--spare-vmms", "two"},
	};
	char cmd[2 * PATH_MAX + 512], out[4096];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *p;
		size_t n;
		int st;

		snprintf(cmd, sizeof(cmd), "'%s' --state-dir '%s' --socket '%s/x.sock' --vmm '%s' %s '%s' 2>&1",
			 d->sandboxd, d->state, d->dir, d->vmm, bad[i][0], bad[i][1]);
		p = popen(cmd, "r");
		assert_non_null(p);
		n = fread(out, 1, sizeof(out) - 1, p);
		out[n] = '\0';
		st = pclose(p);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 2 || !has(out, bad[i][0]))
			fail_msg("%s %s: status %d, said: %s", bad[i][0], bad[i][1], st, out);
	}
	/* And a good set is taken (the env knob's bad value is refused too). */
	snprintf(cmd, sizeof(cmd),
		 "SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE=8.8.8.0/24 '%s' --state-dir '%s/state2' --socket "
		 "'%s/x.sock' --images '%s' --image-builder '' --vmm '%s' --no-net --no-jail --isolation-probe 60 "
		 "--isolation-probe-peer '[2001:db8::1]:443' --isolation-probe-deny 10.1.2.3:5432 >'%s/knob.log' 2>&1",
		 d->sandboxd, d->dir, d->dir, d->images, d->vmm, d->dir);
	assert_int_equal(WEXITSTATUS(system(cmd)), 1);
	snprintf(cmd, sizeof(cmd), "%s/knob.log", d->dir);
	{
		slurp(cmd, out, sizeof(out));
		if (!has(out, "TEST ONLY") && !has(out, "wants one CIDR"))
			fail_msg("knob.log: %s", out);
		assert_true(has(out, "SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE wants one CIDR inside a private range"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(create_exec_terminate, setup, teardown),
		cmocka_unit_test_setup_teardown(wait_while_stopping, setup, teardown),
		cmocka_unit_test_setup_teardown(spare_vmms, setup, teardown),
		cmocka_unit_test_setup_teardown(snapshot_missing_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(entrypoint_and_timeouts, setup, teardown),
		cmocka_unit_test_setup_teardown(failures_at_start, setup, teardown),
		cmocka_unit_test_setup_teardown(spawn_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(mute_guest, setup, teardown),
		cmocka_unit_test_setup_teardown(warm_starts, setup, teardown),
		cmocka_unit_test_setup_teardown(restart_adopts, setup, teardown),
		cmocka_unit_test_setup_teardown(restart_undoes_a_pause, setup, teardown),
		cmocka_unit_test_setup_teardown(pause_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(jail_host_side, setup_jailed, teardown_jailed),
		cmocka_unit_test_setup_teardown(routes_and_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(file_calls, setup, teardown),
		cmocka_unit_test_setup_teardown(connect_tokens_ingress, setup, teardown),
		cmocka_unit_test_setup_teardown(tunnels_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(tunnels_ports, setup, teardown),
		cmocka_unit_test_setup_teardown(isolation_selftest, setup, teardown),
		cmocka_unit_test_setup_teardown(isolation_flags_refused, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	/* SANDVM_TEST_FILTER=NAME (a cmocka pattern) runs only those cases, for chasing one. */
	if (getenv("SANDVM_TEST_FILTER"))
		cmocka_set_test_filter(getenv("SANDVM_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
