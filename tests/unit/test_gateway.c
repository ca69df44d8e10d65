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
 * lost (finished, 125) and its key written back routes it again; a DELETE
 * takes the reservation away (a lost sandbox's too); a relayed call names
 * the worker (Sandvm-Worker), sends the worker's address as Host and is cut
 * after --relay-idle-timeout (a stand-in worker of the test's own, a TLS
 * server in a thread); vmctl lists with a WORKER column and execs through
 * it; routes the gateway does not serve answer 501; etcd stopped, big's
 * sandboxes still answer and creates get 503.
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
#include <openssl/ssl.h>
#include <pthread.h>
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
	char dir[64], sandboxd[PATH_MAX], vmm[PATH_MAX], vmctl[PATH_MAX], key[128], ca[128];
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

/* One HTTPS request to port; the status, the body in body ("" when none), the reply's fields in head. */
static int request_head(struct fleet *f, unsigned port, const char *method, const char *path, const char *json,
			char *body, size_t cap, char *head, size_t head_cap)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	char url[512], auth[200], scratch[256], hscratch[16];
	struct buf b = {.p = body ? body : scratch, .cap = body ? cap : sizeof(scratch)};
	struct buf hb = {.p = head ? head : hscratch, .cap = head ? head_cap : sizeof(hscratch)};
	long status = 0;

	hb.p[0] = '\0';
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
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

static int request(struct fleet *f, unsigned port, const char *method, const char *path, const char *json,
		   char *body, size_t cap)
{
	return request_head(f, port, method, path, json, body, cap, NULL, 0);
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
			      listen, "--tls-cert", cert, "--tls-key", key, "--tls-ca", f->ca,
			      "--relay-idle-timeout", "2", NULL};

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
	snprintf(f->vmctl, sizeof(f->vmctl), "%s/../bin/vmctl", self);
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

/* The value at key in etcd ("" when absent). */
static void etcd_value(struct fleet *f, const char *key, char *out, size_t cap)
{
	char cmd[512];
	FILE *p;

	snprintf(cmd, sizeof(cmd), ETCDCTL " --endpoints %s get --print-value-only '%s'", f->etcd_url, key);
	out[0] = '\0';
	p = popen(cmd, "r");
	assert_non_null(p);
	if (!fgets(out, (int)cap, p))
		out[0] = '\0';
	pclose(p);
	out[strcspn(out, "\n")] = '\0';
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

			char key[96], value[256];

			/* Not needed further: deleted through the gateway, its reservation with it. */
			snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
			assert_int_equal(gw(f, "DELETE", path, NULL, NULL, 0), 204);
			snprintf(key, sizeof(key), "/sandvm/sandboxes/%s", id);
			etcd_value(f, key, value, sizeof(value));
			assert_string_equal(value, "");
			assert_int_equal(gw(f, "GET", path, NULL, NULL, 0), 404);
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
	/* stdin through the relay, as a sized body (Content-Length). */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs", f->sb_big);
	assert_int_equal(gw(f, "POST", path, "{\"argv\":[\"cat\"],\"stdin\":true}", body, sizeof(body)), 201);
	field(body, "id", ex, sizeof(ex));
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs/%s/stdin", f->sb_big, ex);
	assert_int_equal(gw(f, "POST", path, "sized-stdin-through-gateway", NULL, 0), 204);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs/%s/output", f->sb_big, ex);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "sized-stdin-through-gateway"));
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
	/* Its wait reaches it too, and names it. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/wait?timeout=1", f->sb_small);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"state\":\"running\""));
	assert_true(has(body, "\"worker\":\"small\""));
}

static void delete_lost(void **state)
{
	struct fleet *f = *state;
	char body[4096], value[256];
	const char *key = "/sandvm/sandboxes/sb-00000000000000aa", *path = "/v1/sandboxes/sb-00000000000000aa";

	/* A reservation on a worker that is gone (never seen here). */
	sh(ETCDCTL " --endpoints %s put %s '{\"worker\":\"ghost\",\"created\":1}' >/dev/null", f->etcd_url, key);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"reason\":\"lost\""));
	assert_int_equal(gw(f, "GET", "/v1/sandboxes/sb-00000000000000aa/wait", NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"worker\":\"ghost\""));
	/* Other calls on it are refused; its DELETE takes the reservation away and says so. */
	assert_int_equal(gw(f, "GET", "/v1/sandboxes/sb-00000000000000aa/logs", NULL, body, sizeof(body)), 409);
	assert_int_equal(gw(f, "DELETE", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"deleted\":\"reservation\""));
	assert_true(has(body, "\"worker\":\"ghost\""));
	etcd_value(f, key, value, sizeof(value));
	assert_string_equal(value, "");
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 404);
	assert_int_equal(gw(f, "DELETE", path, NULL, body, sizeof(body)), 404);
}

/* ---- a stand-in worker: a TLS server of the test's own, one connection per call ---- */

struct fake_worker {
	SSL_CTX *ctx;
	int lfd;
	unsigned port;
	bool silent;    /* read the request, never answer (until the gateway closes) */
	char head[4096]; /* the request head it got */
	pthread_t thread;
	/* Keep-alive mode (fake_worker_keep): conns connections, per_conn[i] requests on the i-th, then it closes. */
	unsigned conns, per_conn[4], accepts, requests; /* the counters atomic: read while it serves */
};

/* Serves keep-alive: requests without a body, each answered with a sized reply and no Connection field. */
static void *fake_worker_keep(void *arg)
{
	struct fake_worker *w = arg;
	static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
				    "{\"ok\":true}";

	for (unsigned i = 0; i < w->conns; i++) {
		int fd = accept(w->lfd, NULL, NULL);
		SSL *ssl;

		if (fd < 0)
			return NULL;
		__atomic_fetch_add(&w->accepts, 1, __ATOMIC_SEQ_CST);
		ssl = SSL_new(w->ctx);
		SSL_set_fd(ssl, fd);
		for (unsigned k = 0; SSL_accept(ssl) == 1 && k < w->per_conn[i]; k++) {
			size_t len = 0;

			w->head[0] = '\0';
			while (len + 1 < sizeof(w->head) && !strstr(w->head, "\r\n\r\n")) {
				int n = SSL_read(ssl, w->head + len, (int)(sizeof(w->head) - 1 - len));

				if (n <= 0)
					break;
				len += (size_t)n;
				w->head[len] = '\0';
			}
			if (!strstr(w->head, "\r\n\r\n"))
				break;
			SSL_write(ssl, reply, (int)strlen(reply));
			__atomic_fetch_add(&w->requests, 1, __ATOMIC_SEQ_CST);
		}
		SSL_shutdown(ssl);
		SSL_free(ssl);
		close(fd);
	}
	return NULL;
}

static void *fake_worker_serve(void *arg)
{
	struct fake_worker *w = arg;
	static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
				    "Connection: close\r\n\r\n{\"ok\":true}";
	int fd = accept(w->lfd, NULL, NULL);
	size_t len = 0;
	char scratch[256];
	SSL *ssl;

	w->head[0] = '\0';
	if (fd < 0)
		return NULL;
	ssl = SSL_new(w->ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1) {
		while (len + 1 < sizeof(w->head) && !strstr(w->head, "\r\n\r\n")) {
			int n = SSL_read(ssl, w->head + len, (int)(sizeof(w->head) - 1 - len));

			if (n <= 0)
				break;
			len += (size_t)n;
			w->head[len] = '\0';
		}
		if (!w->silent)
			SSL_write(ssl, reply, (int)strlen(reply));
		else
			while (SSL_read(ssl, scratch, sizeof(scratch)) > 0)
				;
		SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	close(fd);
	return NULL;
}

static void relay_names_worker(void **state)
{
	struct fleet *f = *state;
	struct fake_worker w = {0};
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	char cert[128], key[128], body[4096], head[4096], want[96], value[256];
	const char *path = "/v1/sandboxes/sb-00000000000000ee/logs";
	double t0, took;
	int status;

	snprintf(cert, sizeof(cert), "%s/cert.pem", f->dir);
	snprintf(key, sizeof(key), "%s/key.pem", f->dir);
	w.ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(w.ctx);
	assert_int_equal(SSL_CTX_use_certificate_file(w.ctx, cert, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(w.ctx, key, SSL_FILETYPE_PEM), 1);
	w.lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(w.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(w.lfd, 4), 0);
	assert_int_equal(getsockname(w.lfd, (struct sockaddr *)&a, &alen), 0);
	w.port = ntohs(a.sin_port);
	/* Registered as a worker that takes no creates, holding one reserved sandbox. */
	sh(ETCDCTL " --endpoints %s put /sandvm/workers/echo '{\"id\":\"echo\",\"address\":\"https://127.0.0.1:%u\","
	   "\"version\":\"t\",\"sandboxes\":1,\"memory_mib\":64,\"max_sandboxes\":1,\"max_memory_mib\":1024,"
	   "\"accepting\":false,\"started\":1}' >/dev/null",
	   f->etcd_url, w.port);
	sh(ETCDCTL " --endpoints %s put /sandvm/sandboxes/sb-00000000000000ee '{\"worker\":\"echo\",\"created\":1}' "
	   ">/dev/null",
	   f->etcd_url);
	t0 = now_s();
	do {
		usleep(100 * 1000);
		gw(f, "GET", "/v1/health", NULL, body, sizeof(body));
	} while (!has(body, "\"workers_live\":3") && now_s() < t0 + 5);
	assert_true(has(body, "\"workers_live\":3"));

	/* A relayed call: the worker's address as Host, the reply naming the worker. */
	assert_int_equal(pthread_create(&w.thread, NULL, fake_worker_serve, &w), 0);
	status = request_head(f, f->gw.port, "GET", path, NULL, body, sizeof(body), head, sizeof(head));
	pthread_join(w.thread, NULL);
	assert_int_equal(status, 200);
	assert_string_equal(body, "{\"ok\":true}");
	assert_true(has(head, "Sandvm-Worker: echo\r\n"));
	snprintf(want, sizeof(want), "\r\nHost: 127.0.0.1:%u\r\n", w.port);
	assert_true(has(w.head, want));
	assert_true(has(w.head, "GET /v1/sandboxes/sb-00000000000000ee/logs HTTP/1.1\r\n"));
	/* Kept alive towards the worker; the client's connection ends with the reply. */
	assert_false(has(w.head, "\r\nConnection:"));
	assert_true(has(head, "\r\nConnection: close\r\n"));

	/*
	 * Kept alive: relayed and whole calls one after the other go on one
	 * connection; when the worker closes it (here after three requests), the
	 * next call takes a new one and never sees the old one's end.
	 */
	w.conns = 2;
	w.per_conn[0] = 3;
	w.per_conn[1] = 1;
	assert_int_equal(pthread_create(&w.thread, NULL, fake_worker_keep, &w), 0);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_int_equal(gw(f, "GET", "/v1/sandboxes/sb-00000000000000ee", NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"worker\":\"echo\""));
	status = request_head(f, f->gw.port, "GET", path, NULL, body, sizeof(body), head, sizeof(head));
	assert_int_equal(status, 200);
	assert_string_equal(body, "{\"ok\":true}");
	assert_true(has(head, "Sandvm-Worker: echo\r\n"));
	assert_true(has(head, "\r\nConnection: close\r\n"));
	assert_int_equal(__atomic_load_n(&w.accepts, __ATOMIC_SEQ_CST), 1);
	assert_int_equal(__atomic_load_n(&w.requests, __ATOMIC_SEQ_CST), 3);
	usleep(200 * 1000); /* its close reaches the gateway */
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_string_equal(body, "{\"ok\":true}");
	pthread_join(w.thread, NULL);
	assert_int_equal(w.accepts, 2);
	assert_int_equal(w.requests, 4);
	/* The gateway's health counts the calls that found a kept connection (two here, at least). */
	assert_int_equal(gw(f, "GET", "/v1/health", NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"worker_connections\":{\"idle\":"));
	assert_false(has(body, "\"reused\":0}"));
	assert_false(has(w.head, "\r\nConnection:"));

	/* A worker that never answers: cut after --relay-idle-timeout (2 s), a 504 as nothing came. */
	w.silent = true;
	assert_int_equal(pthread_create(&w.thread, NULL, fake_worker_serve, &w), 0);
	t0 = now_s();
	status = gw(f, "GET", path, NULL, body, sizeof(body));
	took = now_s() - t0;
	pthread_join(w.thread, NULL);
	assert_int_equal(status, 504);
	assert_true(has(body, "carried nothing for 2 s"));
	assert_true(took >= 1.5 && took < 8);

	/* Gone again, so the cases after this one see the fleet as before. */
	sh(ETCDCTL " --endpoints %s del /sandvm/workers/echo >/dev/null", f->etcd_url);
	sh(ETCDCTL " --endpoints %s del /sandvm/sandboxes/sb-00000000000000ee >/dev/null", f->etcd_url);
	etcd_value(f, "/sandvm/workers/echo", value, sizeof(value));
	assert_string_equal(value, "");
	close(w.lfd);
	SSL_CTX_free(w.ctx);
}

/* vmctl pointed at the gateway: ls with a WORKER column, exec through the relay. */
static void vmctl_through_gateway(void **state)
{
	struct fleet *f = *state;
	char cmd[1024], out[8192] = "";
	size_t len = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd),
		 "SANDVM_API_KEY='%s' '%s' --host https://127.0.0.1:%u --cacert '%s' ls 2>&1; "
		 "SANDVM_API_KEY='%s' '%s' --host https://127.0.0.1:%u --cacert '%s' exec %s -- echo via-vmctl 2>&1",
		 f->key, f->vmctl, f->gw.port, f->ca, f->key, f->vmctl, f->gw.port, f->ca, f->sb_big);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (len + 1 < sizeof(out) && fgets(out + len, (int)(sizeof(out) - len), p))
		len = strlen(out);
	assert_int_equal(pclose(p), 0);
	assert_true(has(out, "WORKER"));
	assert_true(has(out, f->sb_big));
	assert_true(has(out, "  big  "));
	assert_true(has(out, "via-vmctl\n"));
}

static void other_routes(void **state)
{
	struct fleet *f = *state;
	char body[4096];

	/* One worker's own routes: a clear 501, not a 404 that looks like a missing object. */
	assert_int_equal(gw(f, "GET", "/v1/images", NULL, body, sizeof(body)), 501);
	assert_true(has(body, "the gateway does not serve /v1/images"));
	assert_int_equal(gw(f, "GET", "/v1/metrics", NULL, body, sizeof(body)), 501);
	/* Snapshot images are the fleet's (snapshot_images): an id that cannot be one is simply not there. */
	assert_int_equal(gw(f, "GET", "/v1/snapshots/abc", NULL, body, sizeof(body)), 404);
	assert_true(has(body, "no image abc"));
	assert_int_equal(gw(f, "PUT", "/v1/snapshots", "{}", body, sizeof(body)), 405);
	assert_int_equal(gw(f, "GET", "/nothing", NULL, body, sizeof(body)), 404);
	assert_int_equal(gw(f, "PUT", "/v1/sandboxes", "{}", body, sizeof(body)), 405);
}

/*
 * Snapshot images through the gateway: one stored on big (its record put in
 * big's store as a snapshot would leave it) is listed and read with
 * "worker", a mount of it in small's sandbox is refused naming both
 * workers, one in big's own sandbox goes to big, and its DELETE reaches big.
 */
static void snapshot_images(void **state)
{
	struct fleet *f = *state;
	const char *img = "0123456789abcdef0123456789abcdef";
	char body[65536], path[160], json[256], rec[256];

	snprintf(rec, sizeof(rec), "%s/big/snapshots/%s.json", f->dir, img);
	sh("printf '%%s' '{\"id\":\"%s\",\"created\":1,\"last_used\":1,\"ttl\":null,\"key\":\"managed\","
	   "\"disk_size\":4096,\"file_size\":1024,\"sandbox\":\"%s\",\"path\":\"/project\"}' > '%s'",
	   img, f->sb_big, rec);
	assert_int_equal(gw(f, "GET", "/v1/snapshots", NULL, body, sizeof(body)), 200);
	assert_true(has(body, img));
	assert_true(has(body, "\"worker\":\"big\""));
	assert_false(has(body, "\"unreachable\""));
	snprintf(path, sizeof(path), "/v1/snapshots/%s", img);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	assert_true(has(body, "\"worker\":\"big\""));
	assert_true(has(body, "\"path\":\"/project\""));
	assert_int_equal(gw(f, "GET", "/v1/snapshots/ffffffffffffffffffffffffffffffff", NULL, body, sizeof(body)), 404);
	assert_true(has(body, "on any live worker"));
	/* Mounted where it is not: refused by the gateway, naming both workers; nothing reaches small. */
	snprintf(json, sizeof(json), "{\"path\":\"/data\",\"image\":\"%s\"}", img);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/mounts", f->sb_small);
	assert_int_equal(gw(f, "POST", path, json, body, sizeof(body)), 409);
	assert_true(has(body, "is stored on worker big"));
	assert_true(has(body, "runs on worker small"));
	assert_true(has(body, "\"field\":\"image\""));
	/* Where it is: big's own answer (the stand-in VMM cannot mount; the image file is not there either). */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/mounts", f->sb_big);
	assert_int_not_equal(gw(f, "POST", path, json, body, sizeof(body)), 409);
	assert_false(has(body, "is stored on worker"));
	/* An image no worker has: the sandbox's worker says so itself. */
	snprintf(json, sizeof(json), "{\"path\":\"/data\",\"image\":\"ffffffffffffffffffffffffffffffff\"}");
	assert_int_equal(gw(f, "POST", path, json, body, sizeof(body)), 404);
	/* Deleted at big. */
	snprintf(path, sizeof(path), "/v1/snapshots/%s", img);
	assert_int_equal(gw(f, "DELETE", path, NULL, body, sizeof(body)), 204);
	assert_int_equal(access(rec, F_OK), -1);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 404);
	assert_int_equal(gw(f, "DELETE", path, NULL, body, sizeof(body)), 404);
}

/*
 * etcd away for a moment (as while a cluster elects a new leader, when every
 * member answers "unavailable"): nothing changes at the gateway, which reads
 * again sooner instead of calling etcd down.
 */
static void etcd_blip(void **state)
{
	struct fleet *f = *state;
	char body[65536], path[160];
	double end;

	stop(&f->etcd);
	end = now_s() + 3;
	while (now_s() < end) {
		assert_int_equal(gw(f, "GET", "/v1/health", NULL, body, sizeof(body)), 200);
		assert_true(has(body, "\"etcd\":\"ok\""));
		usleep(200 * 1000);
	}
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/logs", f->sb_big);
	assert_int_equal(gw(f, "GET", path, NULL, body, sizeof(body)), 200);
	start_etcd(f);
	end = now_s() + 3;
	while (now_s() < end) {
		assert_int_equal(gw(f, "GET", "/v1/health", NULL, body, sizeof(body)), 200);
		assert_true(has(body, "\"etcd\":\"ok\""));
		usleep(200 * 1000);
	}
}

static void etcd_down(void **state)
{
	struct fleet *f = *state;
	char body[65536], path[160];
	double end;

	stop(&f->etcd);
	/* The gateway says so once reads have failed for its grace (8 s) after the last good one. */
	end = now_s() + 15;
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
		cmocka_unit_test(vmctl_through_gateway),
		cmocka_unit_test(other_routes),
		cmocka_unit_test(snapshot_images),
		cmocka_unit_test(relay_names_worker),
		cmocka_unit_test(lost_worker),
		cmocka_unit_test(delete_lost),
		cmocka_unit_test(etcd_blip),
		cmocka_unit_test(etcd_down),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
