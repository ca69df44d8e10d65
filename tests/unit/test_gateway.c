/*
 * The fleet gateway end to end without KVM (docs/fleet.md): a real etcd
 * (/usr/bin/etcd, Debian's etcd-server; the test fails without it), two
 * real workers (build/bin/sandboxd with tests/unit/fake-vmm as their VMM,
 * HTTPS on loopback with certificates of one CA made here with openssl,
 * registered in etcd by themselves with --etcd/--advertise/--worker-id) and
 * the gateway in front of them, all spoken to over HTTPS with libcurl.
 *
 * "small" takes one sandbox but has the more free memory, so the first
 * create lands there and the next ones go to "big" (placement compares both
 * of two workers); exec output streams through the gateway's relay; the
 * list merges both with "worker"; small's key deleted makes its sandbox
 * lost (finished, 125) and its key written back routes it again; etcd
 * stopped, big's sandboxes still answer and creates get 503.
 */
/* Paths here are short temporary folders; snprintf cuts rather than overflows. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"

#define ETCD "/usr/bin/etcd"
#define ETCDCTL "/usr/bin/etcdctl"

struct proc {
	pid_t pid;
	unsigned port;
	char name[16];
};

struct fleet {
	char dir[64], sandboxd[PATH_MAX], vmm[PATH_MAX], key[128], ca[128];
	char etcd_url[64];
	struct proc etcd, big, small, gw;
	unsigned etcd_peer_port;
	char sb_small[32], sb_big[32]; /* sandboxes placed on each */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool has(const char *s, const char *needle)
{
	return strstr(s, needle) != NULL;
}

/* A free loopback port (bound and released: the process that binds it next is ours, moments later). */
static unsigned free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

struct buf {
	char *p;
	size_t len, cap;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;
	size_t len = size * n;

	for (size_t i = 0; i < len && b->len + 1 < b->cap; i++)
		b->p[b->len++] = data[i] ? data[i] : ' '; /* exec frames hold zero bytes: searchable as spaces */
	b->p[b->len] = '\0';
	return len;
}

/* One HTTPS request to port (the gateway or a worker); the status, the body in body ("" when none). */
static int request(struct fleet *f, unsigned port, const char *method, const char *path, const char *json,
		   char *body, size_t cap)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	char url[512], auth[200], scratch[256];
	struct buf b = {.p = body ? body : scratch, .cap = body ? cap : sizeof(scratch)};
	long status = 0;

	assert_non_null(c);
	b.p[0] = '\0';
	snprintf(url, sizeof(url), "https://127.0.0.1:%u%s", port, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", f->key);
	h = curl_slist_append(h, auth);
	h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CAINFO, f->ca);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	if (json)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return (int)status;
}

static int gw(struct fleet *f, const char *method, const char *path, const char *json, char *body, size_t cap)
{
	return request(f, f->gw.port, method, path, json, body, cap);
}

static void spawn(struct fleet *f, struct proc *p, const char *const *argv)
{
	char log[128];

	snprintf(log, sizeof(log), "%s/%s.log", f->dir, p->name);
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
}

static void stop(struct proc *p)
{
	int st;

	if (p->pid <= 0)
		return;
	kill(p->pid, SIGTERM);
	waitpid(p->pid, &st, 0);
	p->pid = -1;
}

static void start_etcd(struct fleet *f)
{
	char data[128], client[64], peer[64];
	const char *argv[] = {ETCD, "--data-dir", data, "--listen-client-urls", client, "--advertise-client-urls",
			      client, "--listen-peer-urls", peer, NULL};
	double end = now_s() + 20;

	snprintf(data, sizeof(data), "%s/etcd-data", f->dir);
	snprintf(client, sizeof(client), "http://127.0.0.1:%u", f->etcd.port);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%u", f->etcd_peer_port);
	snprintf(f->etcd_url, sizeof(f->etcd_url), "%s", client);
	spawn(f, &f->etcd, argv);
	while (now_s() < end) {
		char cmd[256];

		snprintf(cmd, sizeof(cmd), ETCDCTL " --endpoints %s endpoint health >/dev/null 2>&1", client);
		if (system(cmd) == 0)
			return;
		usleep(100 * 1000);
	}
	fail_msg("etcd did not come up (see %s/etcd.log)", f->dir);
}

static void start_worker(struct fleet *f, struct proc *p, const char *max_sandboxes, const char *max_memory)
{
	char state[128], sock[128], images[128], listen[32], advertise[64], cert[128], key[128];
	const char *argv[] = {f->sandboxd, "--state-dir", state, "--socket", sock, "--images", images, "--vmm",
			      f->vmm, "--image-builder", "", "--no-net", "--no-jail", "--max-sandboxes", max_sandboxes,
			      "--max-memory", max_memory, "--listen", listen, "--tls-cert", cert, "--tls-key", key,
			      "--etcd", f->etcd_url, "--advertise", advertise, "--worker-id", p->name, NULL};

	snprintf(state, sizeof(state), "%s/%s", f->dir, p->name);
	snprintf(sock, sizeof(sock), "%s/%s.sock", f->dir, p->name);
	snprintf(images, sizeof(images), "%s/images", f->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", p->port);
	snprintf(advertise, sizeof(advertise), "https://127.0.0.1:%u", p->port);
	snprintf(cert, sizeof(cert), "%s/cert.pem", f->dir);
	snprintf(key, sizeof(key), "%s/key.pem", f->dir);
	spawn(f, p, argv);
}

static void start_gateway(struct fleet *f)
{
	char state[128], listen[32], cert[128], key[128];
	const char *argv[] = {f->sandboxd, "--gateway", "--state-dir", state, "--etcd", f->etcd_url, "--listen",
			      listen, "--tls-cert", cert, "--tls-key", key, "--tls-ca", f->ca, NULL};

	snprintf(state, sizeof(state), "%s/gw", f->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", f->gw.port);
	snprintf(cert, sizeof(cert), "%s/cert.pem", f->dir);
	snprintf(key, sizeof(key), "%s/key.pem", f->dir);
	spawn(f, &f->gw, argv);
}

/* Runs a shell command; asserts it worked. */
static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0)
		fail_msg("failed: %s", cmd);
}

static int teardown(void **state);

static int setup(void **state)
{
	struct fleet *f = calloc(1, sizeof(*f));
	char self[PATH_MAX], cmd[PATH_MAX + 128], body[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	double end;
	FILE *p;

	if (!f || n <= 0)
		return -1;
	self[n] = '\0';
	/* Without etcd there is no fleet to test: a failure, never a skip. */
	if (access(ETCD, X_OK) < 0 || access(ETCDCTL, X_OK) < 0) {
		fprintf(stderr, "test_gateway: %s and %s are needed (Debian: etcd-server, etcd-client)\n", ETCD,
			ETCDCTL);
		return -1;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(f->vmm, sizeof(f->vmm), "%s/fake-vmm", dirname(self));
	snprintf(f->sandboxd, sizeof(f->sandboxd), "%s/../bin/sandboxd", self);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sandvm-gw.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->ca, sizeof(f->ca), "%s/ca.pem", f->dir);
	/* One CA for the fleet; a certificate for 127.0.0.1 that every member serves. */
	sh("cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
	   "-out ca.pem -days 2 -subj /CN=sandvm-test-ca 2>/dev/null && "
	   "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out req.csr "
	   "-subj /CN=127.0.0.1 2>/dev/null && printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf && "
	   "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 "
	   "-extfile ext.cnf 2>/dev/null && mkdir -p images big small gw && echo 'not a kernel' > images/vmlinux "
	   "&& echo boot > images/initramfs.cpio.gz",
	   f->dir);
	/* The same API keys on the gateway and the workers (docs/fleet.md). */
	snprintf(cmd, sizeof(cmd), "'%s' --state-dir '%s/big' --new-key tests 2>/dev/null", f->sandboxd, f->dir);
	p = popen(cmd, "r");
	if (!p || !fgets(f->key, sizeof(f->key), p))
		return -1;
	pclose(p);
	f->key[strcspn(f->key, "\n")] = '\0';
	sh("cp '%s/big/api-keys' '%s/small/api-keys' && cp '%s/big/api-keys' '%s/gw/api-keys'", f->dir, f->dir,
	   f->dir, f->dir);
	snprintf(f->etcd.name, sizeof(f->etcd.name), "etcd");
	snprintf(f->big.name, sizeof(f->big.name), "big");
	snprintf(f->small.name, sizeof(f->small.name), "small");
	snprintf(f->gw.name, sizeof(f->gw.name), "gw");
	f->etcd.port = free_port();
	f->etcd_peer_port = free_port();
	f->big.port = free_port();
	f->small.port = free_port();
	f->gw.port = free_port();
	start_etcd(f);
	/* small holds one sandbox but has the more memory free: the first create goes there. */
	start_worker(f, &f->big, "8", "4096");
	start_worker(f, &f->small, "1", "8192");
	start_gateway(f);
	*state = f;
	end = now_s() + 20;
	while (now_s() < end) {
		if (request(f, f->gw.port, "GET", "/v1/health", NULL, body, sizeof(body)) == 200 &&
		    has(body, "\"workers_live\":2"))
			return 0;
		usleep(100 * 1000);
	}
	fprintf(stderr, "test_gateway: the fleet did not come up: %s\n", body);
	sh("tail -n 5 '%s'/*.log >&2", f->dir);
	teardown(state); /* cmocka runs no group teardown after a failed setup */
	*state = NULL;
	return -1;
}

/* Every process of the test's own, by pid: whatever still runs under its folder (the fake VMMs) too. */
static void kill_leftovers(const char *dir)
{
	DIR *d = opendir("/proc");
	struct dirent *e;

	while (d && (e = readdir(d))) {
		char path[300], cmdline[4096];
		FILE *fp;
		size_t n;
		pid_t pid = (pid_t)atoi(e->d_name);

		if (pid <= 0 || pid == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
		fp = fopen(path, "r");
		if (!fp)
			continue;
		n = fread(cmdline, 1, sizeof(cmdline) - 1, fp);
		fclose(fp);
		for (size_t i = 0; i < n; i++)
			if (!cmdline[i])
				cmdline[i] = ' ';
		cmdline[n] = '\0';
		if (strstr(cmdline, dir))
			kill(pid, SIGKILL);
	}
	if (d)
		closedir(d);
}

static int teardown(void **state)
{
	struct fleet *f = *state;
	char cmd[256];

	if (!f)
		return 0;
	/* The workers' sandboxes go first (their VMMs outlive a stopped worker otherwise). */
	if (f->sb_big[0]) {
		snprintf(cmd, sizeof(cmd), "/v1/sandboxes/%s", f->sb_big);
		request(f, f->big.port, "DELETE", cmd, NULL, NULL, 0);
	}
	if (f->sb_small[0]) {
		snprintf(cmd, sizeof(cmd), "/v1/sandboxes/%s", f->sb_small);
		request(f, f->small.port, "DELETE", cmd, NULL, NULL, 0);
	}
	stop(&f->gw);
	stop(&f->big);
	stop(&f->small);
	stop(&f->etcd);
	kill_leftovers(f->dir);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) < 0)
		return -1;
	free(f);
	curl_global_cleanup();
	return 0;
}

/* "id" and "worker" of a sandbox object. */
static void field(const char *json, const char *name, char *out, size_t cap)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":\"", name);
	p = strstr(json, pat);
	if (!p)
		fail_msg("no \"%s\" in %s", name, json);
	p += strlen(pat);
	snprintf(out, cap, "%.*s", (int)strcspn(p, "\""), p);
}

static void create_places_by_room(void **state)
{
	struct fleet *f = *state;
	char body[65536], id[32], worker[32];
	unsigned on_big = 0;

	/* small has the most free memory: the first create lands there. */
	assert_int_equal(gw(f, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body, sizeof(body)),
			 201);
	field(body, "worker", worker, sizeof(worker));
	assert_string_equal(worker, "small");
	field(body, "id", f->sb_small, sizeof(f->sb_small));
	assert_true(has(body, "\"state\":\"running\""));
	/* small is full now (one sandbox): the next ones go to big, whatever its record says yet. */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(
			gw(f, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body, sizeof(body)),
			201);
		field(body, "worker", worker, sizeof(worker));
		field(body, "id", id, sizeof(id));
		assert_string_equal(worker, "big");
		on_big++;
		if (i == 0)
			snprintf(f->sb_big, sizeof(f->sb_big), "%s", id);
		else {
			char path[64];

			/* Not needed further: deleted through the gateway (a relayed DELETE). */
			snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
			assert_int_equal(gw(f, "DELETE", path, NULL, NULL, 0), 204);
		}
	}
	assert_int_equal(on_big, 2);
	/* The gateway gives ids: a client's own is refused. */
	assert_int_equal(gw(f, "POST", "/v1/sandboxes", "{\"id\":\"sb-0000000000000000\"}", body, sizeof(body)), 400);
	/* Without a key nothing reaches a worker. */
	{
		char saved[128];

		snprintf(saved, sizeof(saved), "%s", f->key);
		snprintf(f->key, sizeof(f->key), "not-a-key");
		assert_int_equal(gw(f, "GET", "/v1/sandboxes", NULL, body, sizeof(body)), 401);
		snprintf(f->key, sizeof(f->key), "%s", saved);
	}
}

static void exec_streams_through(void **state)
{
	struct fleet *f = *state;
	char path[160], body[65536], ex[64];

	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs", f->sb_big);
	assert_int_equal(gw(f, "POST", path, "{\"argv\":[\"sh\",\"-c\",\"echo hello-through-gateway; seq 1 2000\"]}",
			    body, sizeof(body)),
			 201);
	field(body, "id", ex, sizeof(ex));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs/%s/output", f->sb_big, ex);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "hello-through-gateway"));
	assert_true(has(body, "\n2000\n"));
	assert_true(has(body, "\"returncode\":0"));
	/* A file up and down again, its bytes whole. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/files?path=/tmp/gw.txt", f->sb_big);
	assert_int_equal(gw(f, "PUT", path, "bytes through the gateway", NULL, 0), 204);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_string_equal(body, "bytes through the gateway");
	/* An id nobody reserved. */
	assert_int_equal(gw(f, "GET", "/v1/sandboxes/sb-0123456789abcdef", NULL, body, sizeof(body)), 404);
}

static void list_merges(void **state)
{
	struct fleet *f = *state;
	char body[65536], want[96];

	assert_int_equal(gw(f, "GET", "/v1/sandboxes", NULL, body, sizeof(body)), 200);
	assert_true(has(body, f->sb_small));
	assert_true(has(body, f->sb_big));
	assert_true(has(body, "\"worker\":\"small\""));
	assert_true(has(body, "\"worker\":\"big\""));
	assert_false(has(body, "\"unreachable\""));
	snprintf(want, sizeof(want), "\"id\":\"%s\"", f->sb_big);
	assert_true(has(body, want));
}

static void lost_worker(void **state)
{
	struct fleet *f = *state;
	char body[65536], path[96], record[1024] = "", cmd[512];
	FILE *p;
	double end;

	/* Its key goes away as when its lease expires; kept to be written back. */
	snprintf(cmd, sizeof(cmd), ETCDCTL " --endpoints %s get --print-value-only /sandvm/workers/small", f->etcd_url);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(record, sizeof(record), p));
	pclose(p);
	record[strcspn(record, "\n")] = '\0';
	sh(ETCDCTL " --endpoints %s del /sandvm/workers/small >/dev/null", f->etcd_url);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", f->sb_small);
	end = now_s() + 5;
	do {
		usleep(100 * 1000);
		assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	} while (!has(body, "\"reason\":\"lost\"") && now_s() < end);
	assert_true(has(body, "\"state\":\"finished\""));
	assert_true(has(body, "\"returncode\":125"));
	assert_true(has(body, "\"worker\":\"small\""));
	/* In the list too, and calls on it are refused, not sent anywhere else. */
	assert_int_equal(gw(f, "GET", "/v1/sandboxes", NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"reason\":\"lost\""));
	assert_true(has(body, f->sb_big));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs", f->sb_small);
	assert_int_equal(gw(f, "POST", path, "{\"argv\":[\"true\"]}", body, sizeof(body)), 409);
	/* Back under the same id: its sandbox routes again. */
	snprintf(cmd, sizeof(cmd), ETCDCTL " --endpoints %s put /sandvm/workers/small '%s' >/dev/null", f->etcd_url,
		 record);
	sh("%s", cmd);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", f->sb_small);
	end = now_s() + 5;
	do {
		usleep(100 * 1000);
		assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	} while (!has(body, "\"state\":\"running\"") && now_s() < end);
	assert_true(has(body, "\"state\":\"running\""));
	assert_true(has(body, "\"worker\":\"small\""));
	/* Its wait (relayed as bytes) reaches it too. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/wait?timeout=1", f->sb_small);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"state\":\"running\""));
}

static void etcd_down(void **state)
{
	struct fleet *f = *state;
	char body[65536], path[160];
	double end;

	stop(&f->etcd);
	/* The gateway notices within its resync period (2 s). */
	end = now_s() + 10;
	do {
		usleep(200 * 1000);
		assert_int_equal(gw(f, "GET", "/v1/health", NULL, body, sizeof(body)), 200);
	} while (!has(body, "\"etcd\":\"unreachable\"") && now_s() < end);
	assert_true(has(body, "\"etcd\":\"unreachable\""));
	/* Sandboxes it knows keep answering, streams included. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", f->sb_big);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"state\":\"running\""));
	assert_true(has(body, "\"worker\":\"big\""));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs", f->sb_big);
	assert_int_equal(gw(f, "POST", path, "{\"argv\":[\"echo\",\"still-here\"]}", body, sizeof(body)), 201);
	/* Creates are refused, saying why. */
	assert_int_equal(gw(f, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body, sizeof(body)),
			 503);
	assert_true(has(body, "etcd is unreachable"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(create_places_by_room),
		cmocka_unit_test(exec_streams_through),
		cmocka_unit_test(list_merges),
		cmocka_unit_test(lost_worker),
		cmocka_unit_test(etcd_down),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
