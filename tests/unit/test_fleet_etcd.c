/*
 * The etcd client (api/sandboxd/fleet/etcd.c) and a worker's registration
 * against a real etcd (/usr/bin/etcd, Debian's etcd-server) started here on
 * free loopback ports with a data directory of its own. Without etcd the
 * test fails: the fleet is not tested by skipping it.
 *
 * The client: lease grant, keepalive and revoke, put, get, range,
 * create-if-absent both ways, a watch seeing a put and a delete, failover
 * past a closed port, a bounded timeout against a member that never
 * answers, and no callback after a free or a cancel. The worker: the real
 * build/bin/sandboxd with tests/unit/fake-vmm (as test_lifecycle runs it)
 * and --etcd: its record, rewritten after a create; a revoked lease and a
 * stopped etcd (SIGSTOP) noticed, creates refused meanwhile, registration
 * again; a second worker with the same id refused; the record gone at
 * SIGTERM.
 */
/* Paths here are short temporary folders; snprintf cuts rather than overflows. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <cjson/cJSON.h>
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
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "fleet/etcd.h"
#include "test_dir.h"
#include "unit.h"

#define ETCD_BIN "/usr/bin/etcd"

struct env {
	char dir[64];
	unsigned port, peer_port;
	char url[64];
	pid_t etcd;
	/* sandboxd */
	char state[96], sock[96], images[96], sandboxd[PATH_MAX], vmm[PATH_MAX], key[128], log[96];
	pid_t sd;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A loopback port nobody listens on right now. */
static unsigned free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* GET /health from etcd over a plain socket: whether it answers healthy. */
static bool etcd_healthy(unsigned port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	static const char req[] = "GET /health HTTP/1.0\r\n\r\n";
	char buf[1024];
	size_t got = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) < 0) {
		close(fd);
		return false;
	}
	while (got < sizeof(buf) - 1 && (n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	close(fd);
	ok = strstr(buf, "\"health\":\"true\"") != NULL;
	return ok;
}

static void start_etcd(struct env *e)
{
	char data[96], client[64], peer[64], cluster[96], logpath[96];
	double end = now_s() + 15;

	if (access(ETCD_BIN, X_OK) < 0)
		fail_msg(ETCD_BIN " is not installed (Debian's etcd-server; scripts/install-deps.sh installs it)");
	e->port = free_port();
	do
		e->peer_port = free_port();
	while (e->peer_port == e->port);
	snprintf(e->url, sizeof(e->url), "http://127.0.0.1:%u", e->port);
	snprintf(data, sizeof(data), "%s/etcd-data", e->dir);
	snprintf(client, sizeof(client), "http://127.0.0.1:%u", e->port);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%u", e->peer_port);
	snprintf(cluster, sizeof(cluster), "default=%s", peer);
	snprintf(logpath, sizeof(logpath), "%s/etcd.log", e->dir);
	e->etcd = fork();
	if (e->etcd == 0) {
		int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(log, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		execl(ETCD_BIN, "etcd", "--data-dir", data, "--listen-client-urls", client, "--advertise-client-urls",
		      client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster",
		      cluster, (char *)NULL);
		_exit(127);
	}
	while (now_s() < end) {
		if (etcd_healthy(e->port))
			return;
		if (waitpid(e->etcd, NULL, WNOHANG) == e->etcd)
			fail_msg("etcd exited at start (see %s)", logpath);
		usleep(50000);
	}
	fail_msg("etcd did not come up (see %s)", logpath);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (!e)
		return -1;
	snprintf(e->dir, sizeof(e->dir), "/tmp/sandvm-etcd.XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	e->sd = -1;
	start_etcd(e);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	if (e->sd > 0) {
		kill(e->sd, SIGKILL);
		waitpid(e->sd, NULL, 0);
	}
	if (e->etcd > 0) {
		kill(e->etcd, SIGCONT);
		kill(e->etcd, SIGKILL);
		waitpid(e->etcd, NULL, 0);
	}
	/* Fake VMMs a failed case left behind go with the folder. */
	if (test_dir_remove(e->dir) != 0)
		return -1;
	free(e);
	return 0;
}

/* ---- the client ---- */

struct res {
	int calls, err;
	bool succeeded;
	int64_t lease, ttl, revision, kv_lease, create_revision;
	size_t n;
	char key[256], value[2048];
};

static void copy_kv(struct res *r, const struct etcd_kv *kv)
{
	snprintf(r->key, sizeof(r->key), "%.*s", (int)kv->key_len, kv->key);
	snprintf(r->value, sizeof(r->value), "%.*s", (int)kv->value_len, kv->value);
	r->kv_lease = kv->lease;
	r->create_revision = kv->create_revision;
}

static void on_lease(void *arg, int err, int64_t lease, int64_t ttl_s)
{
	struct res *r = arg;

	r->calls++;
	r->err = err;
	r->lease = lease;
	r->ttl = ttl_s;
}

static void on_done(void *arg, int err)
{
	struct res *r = arg;

	r->calls++;
	r->err = err;
}

static void on_txn(void *arg, int err, bool succeeded, const struct etcd_kv *existing)
{
	struct res *r = arg;

	r->calls++;
	r->err = err;
	r->succeeded = succeeded;
	r->n = existing != NULL;
	if (existing)
		copy_kv(r, existing);
}

static void on_range(void *arg, int err, const struct etcd_kv *kvs, size_t n, int64_t revision)
{
	struct res *r = arg;

	r->calls++;
	r->err = err;
	r->n = n;
	r->revision = revision;
	r->key[0] = r->value[0] = '\0';
	if (n)
		copy_kv(r, &kvs[n - 1]);
}

/* Runs the loop until r has its answer (at most limit_s), then a little more to catch a second one. */
static void wait_res(uv_loop_t *loop, struct res *r, double limit_s)
{
	double end = now_s() + limit_s;

	while (r->calls == 0 && now_s() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	if (r->calls == 0)
		fail_msg("no answer within %.1f s", limit_s);
	for (int i = 0; i < 5; i++)
		uv_run(loop, UV_RUN_NOWAIT);
	assert_int_equal(r->calls, 1);
}

static void spin(uv_loop_t *loop, double s)
{
	double end = now_s() + s;

	while (now_s() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
}

static struct etcd_client *client(uv_loop_t *loop, const char *endpoints)
{
	struct etcd_client *c;
	char err[256];

	if (etcd_client_new(loop, endpoints, &c, err, sizeof(err)) < 0)
		fail_msg("etcd_client_new: %s", err);
	return c;
}

/* Frees the client and lets its handles close: the loop ends empty. */
static void free_client(uv_loop_t *loop, struct etcd_client *c)
{
	etcd_client_free(c);
	assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(loop), 0);
}

static void client_basics(void **state)
{
	struct env *e = *state;
	uv_loop_t loop;
	struct etcd_client *c;
	struct res r = {0};
	int64_t lease;
	char err[128];

	uv_loop_init(&loop);
	c = client(&loop, e->url);
	assert_int_equal(etcd_client_new(&loop, "https://127.0.0.1:1", &(struct etcd_client *){NULL}, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(etcd_client_new(&loop, "http://a:1,", &(struct etcd_client *){NULL}, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(etcd_lease_grant(c, 30, on_lease, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	assert_true(r.lease > 0);
	assert_int_equal(r.ttl, 30);
	lease = r.lease;
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_lease_keepalive(c, lease, on_lease, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	assert_true(r.lease == lease);
	assert_int_equal(r.ttl, 30);
	/* A put under the lease, another without, read back one by one and by prefix. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_put(c, "/t/a", "{\"v\":1}", 7, lease, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_put(c, "/t/b", "", 0, 0, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_get(c, "/t/a", on_range, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.key, "/t/a");
	assert_string_equal(r.value, "{\"v\":1}");
	assert_true(r.kv_lease == lease);
	assert_true(r.revision > 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_get(c, "/t/none", on_range, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.n, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_range_prefix(c, "/t/", on_range, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.key, "/t/b");
	assert_string_equal(r.value, "");
	/* Create-if-absent: once it succeeds, then it fails and shows what is there. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_create_if_absent(c, "/t/c", "first", 5, 0, on_txn, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	assert_true(r.succeeded);
	assert_int_equal(r.n, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_create_if_absent(c, "/t/c", "second", 6, lease, on_txn, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	assert_false(r.succeeded);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.value, "first");
	assert_int_equal(r.kv_lease, 0);
	/* Revoked: the key under it goes, and a keepalive says the lease is gone. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_lease_revoke(c, lease, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_lease_keepalive(c, lease, on_lease, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, -ENOENT);
	assert_int_equal(r.ttl, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_lease_revoke(c, lease, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, -ENOENT);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_get(c, "/t/a", on_range, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.n, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_put(c, "/t/d", "x", 1, lease, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, -ENOENT);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_delete(c, "/t/b", on_done, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	/* Arguments are checked before anything starts: no callback. */
	assert_int_equal(etcd_put(c, "", "x", 1, 0, on_done, &r), -EINVAL);
	assert_int_equal(etcd_lease_keepalive(c, 0, on_lease, &r), -EINVAL);
	free_client(&loop, c);
}

struct watch_log {
	int events, errors, puts, deletes, last_err;
	char last_key[128], last_value[128];
	bool cancel_in_cb;
	struct etcd_watch *w;
};

static void on_watch(void *arg, int err, bool deleted, const struct etcd_kv *kv)
{
	struct watch_log *l = arg;

	if (err) {
		l->errors++;
		l->last_err = err;
		return;
	}
	l->events++;
	if (deleted)
		l->deletes++;
	else
		l->puts++;
	snprintf(l->last_key, sizeof(l->last_key), "%.*s", (int)kv->key_len, kv->key);
	snprintf(l->last_value, sizeof(l->last_value), "%.*s", (int)kv->value_len, kv->value);
	if (l->cancel_in_cb) {
		etcd_watch_cancel(l->w);
		l->w = NULL;
	}
}

static void wait_events(uv_loop_t *loop, struct watch_log *l, int n)
{
	double end = now_s() + 5;

	while (l->events < n && !l->errors && now_s() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_int_equal(l->errors, 0);
	assert_int_equal(l->events, n);
}

static void client_watch(void **state)
{
	struct env *e = *state;
	uv_loop_t loop;
	struct etcd_client *c;
	struct watch_log l = {0}, l2 = {0};
	struct res r = {0};
	char cmd[160];

	uv_loop_init(&loop);
	c = client(&loop, e->url);
	assert_int_equal(etcd_range_prefix(c, "/w/", on_range, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(etcd_watch_prefix(c, "/w/", r.revision + 1, on_watch, &l, &l.w), 0);
	/* A second watch, canceled from inside its first event. */
	l2.cancel_in_cb = true;
	assert_int_equal(etcd_watch_prefix(c, "/w/", r.revision + 1, on_watch, &l2, &l2.w), 0);
	spin(&loop, 0.2); /* both on before the writes (from revision + 1 they would see them anyway) */
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_put(c, "/w/x", "hello", 5, 0, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_put(c, "/other", "no", 2, 0, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	wait_events(&loop, &l, 1);
	assert_int_equal(l.puts, 1);
	assert_string_equal(l.last_key, "/w/x");
	assert_string_equal(l.last_value, "hello");
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_delete(c, "/w/x", on_done, &r), 0);
	wait_res(&loop, &r, 5);
	wait_events(&loop, &l, 2);
	assert_int_equal(l.deletes, 1);
	assert_string_equal(l.last_key, "/w/x");
	assert_string_equal(l.last_value, "");
	assert_int_equal(l2.events, 1);
	assert_null(l2.w);
	/* Canceled: nothing more. */
	etcd_watch_cancel(l.w);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_put(c, "/w/y", "late", 4, 0, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	spin(&loop, 0.3);
	assert_int_equal(l.events, 2);
	assert_int_equal(l2.events, 1);
	assert_int_equal(l.errors + l2.errors, 0);
	/* From revision 1 the history is replayed: the put, the delete, the late put. */
	memset(&l, 0, sizeof(l));
	assert_int_equal(etcd_watch_prefix(c, "/w/", 1, on_watch, &l, &l.w), 0);
	wait_events(&loop, &l, 3);
	etcd_watch_cancel(l.w);
	/* Once compacted, a watch from before the compaction ends at once, with its error, once. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_get(c, "/w/y", on_range, &r), 0);
	wait_res(&loop, &r, 5);
	snprintf(cmd, sizeof(cmd), "etcdctl --endpoints %s compact %lld >/dev/null", e->url, (long long)r.revision);
	assert_int_equal(system(cmd), 0);
	memset(&l, 0, sizeof(l));
	assert_int_equal(etcd_watch_prefix(c, "/w/", 1, on_watch, &l, &l.w), 0);
	spin(&loop, 0.5);
	assert_int_equal(l.events, 0);
	assert_int_equal(l.errors, 1);
	assert_int_equal(l.last_err, -ESTALE);
	etcd_watch_cancel(l.w);
	free_client(&loop, c);
}

static void client_failover_and_timeouts(void **state)
{
	struct env *e = *state;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	char endpoints[160], mute[64];
	unsigned closed = free_port();
	uv_loop_t loop;
	struct etcd_client *c;
	struct res r = {0};
	double t0;
	int fd;

	uv_loop_init(&loop);
	/* The first member is a closed port: every request goes on to the second. */
	snprintf(endpoints, sizeof(endpoints), "http://127.0.0.1:%u,%s", closed, e->url);
	c = client(&loop, endpoints);
	assert_int_equal(etcd_put(c, "/f/a", "1", 1, 0, on_done, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(etcd_get(c, "/f/a", on_range, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.n, 1);
	etcd_client_free(c);
	/* No member at all: refused, at once. */
	snprintf(endpoints, sizeof(endpoints), "http://127.0.0.1:%u", closed);
	c = client(&loop, endpoints);
	memset(&r, 0, sizeof(r));
	t0 = now_s();
	assert_int_equal(etcd_get(c, "/f/a", on_range, &r), 0);
	wait_res(&loop, &r, 3);
	assert_int_equal(r.err, -ECONNREFUSED);
	assert_true(now_s() - t0 < 2);
	etcd_client_free(c);
	/* A member that takes the connection and never answers: the deadline ends the request. */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	snprintf(mute, sizeof(mute), "http://127.0.0.1:%u", ntohs(a.sin_port));
	c = client(&loop, mute);
	memset(&r, 0, sizeof(r));
	t0 = now_s();
	assert_int_equal(etcd_lease_grant(c, 10, on_lease, &r), 0);
	wait_res(&loop, &r, ETCD_REQUEST_TIMEOUT_MS / 1000.0 + 2);
	assert_int_equal(r.err, -ETIMEDOUT);
	assert_true(now_s() - t0 >= ETCD_REQUEST_TIMEOUT_MS / 1000.0 - 0.2);
	assert_true(now_s() - t0 < ETCD_REQUEST_TIMEOUT_MS / 1000.0 + 1);
	/* Freed with requests in flight (a watch among them): no callback ever. */
	memset(&r, 0, sizeof(r));
	struct watch_log l = {0};
	assert_int_equal(etcd_get(c, "/f/a", on_range, &r), 0);
	assert_int_equal(etcd_watch_prefix(c, "/f/", 0, on_watch, &l, &l.w), 0);
	spin(&loop, 0.1);
	free_client(&loop, c);
	assert_int_equal(r.calls, 0);
	assert_int_equal(l.events + l.errors, 0);
	close(fd);
}

/* Freed from inside its own callback: the other request in flight never answers. */
struct free_in_cb {
	struct etcd_client *c;
	int calls;
};

static void on_range_free(void *arg, int err, const struct etcd_kv *kvs, size_t n, int64_t revision)
{
	struct free_in_cb *f = arg;

	(void)err;
	(void)kvs;
	(void)n;
	(void)revision;
	f->calls++;
	if (f->c) {
		etcd_client_free(f->c);
		f->c = NULL;
	}
}

static void client_free_in_callback(void **state)
{
	struct env *e = *state;
	uv_loop_t loop;
	struct free_in_cb f = {0};

	uv_loop_init(&loop);
	f.c = client(&loop, e->url);
	for (int i = 0; i < 4; i++)
		assert_int_equal(etcd_get(f.c, "/t/none", on_range_free, &f), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(f.calls, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the worker ---- */

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int request(struct env *e, const char *method, const char *path, const char *json, char *body, size_t cap)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char head[1024], buf[65536], *p;
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), status = 0, n;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", e->sock);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	n = snprintf(head, sizeof(head),
		     "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n"
		     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
		     method, path, e->key, json ? strlen(json) : 0);
	assert_int_equal(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
	if (json)
		assert_int_equal(send(fd, json, strlen(json), MSG_NOSIGNAL), (ssize_t)strlen(json));
	for (;;) {
		ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	sscanf(buf, "HTTP/1.1 %d", &status);
	p = strstr(buf, "\r\n\r\n");
	if (body)
		snprintf(body, cap, "%s", p ? p + 4 : "");
	return status;
}

static pid_t spawn_sandboxd(struct env *e, const char *sock, const char *state, const char *worker_id)
{
	char endpoints[160];
	pid_t pid;

	/* A closed port first: the worker fails over to the live member from its first request on. */
	snprintf(endpoints, sizeof(endpoints), "http://127.0.0.1:%u,%s", free_port(), e->url);
	pid = fork();
	if (pid == 0) {
		int log = open(e->log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(log, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		execl(e->sandboxd, "sandboxd", "--state-dir", state, "--socket", sock, "--images", e->images, "--vmm",
		      e->vmm, "--image-builder", "", "--no-net", "--no-jail", "--max-memory", "4096", "--etcd",
		      endpoints, "--advertise", "https://127.0.0.1:8443", "--worker-id", worker_id, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* The worker's record in etcd, parsed; NULL when the key is absent. lease: the key's. */
static cJSON *record(struct env *e, int64_t *lease)
{
	uv_loop_t loop;
	struct etcd_client *c;
	struct res r = {0};
	cJSON *o = NULL;

	uv_loop_init(&loop);
	c = client(&loop, e->url);
	assert_int_equal(etcd_get(c, "/sandvm/workers/test-w1", on_range, &r), 0);
	wait_res(&loop, &r, 5);
	assert_int_equal(r.err, 0);
	if (r.n) {
		o = cJSON_Parse(r.value);
		assert_non_null(o);
		*lease = r.kv_lease;
	}
	free_client(&loop, c);
	return o;
}

static double num(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	if (!cJSON_IsNumber(v))
		fail_msg("the record has no number %s", name);
	return v->valuedouble;
}

/* Polls /v1/health until its body holds want (at most limit_s). */
static void wait_health(struct env *e, const char *want, double limit_s, char *body, size_t cap)
{
	double end = now_s() + limit_s;

	while (now_s() < end) {
		if (request(e, "GET", "/v1/health", NULL, body, cap) == 200 && strstr(body, want))
			return;
		usleep(50000);
	}
	fail_msg("/v1/health never showed %s within %.0f s: %s (see %s)", want, limit_s, body, e->log);
}

/* Polls the record until its "sandboxes" is n and its lease is not avoid. */
static cJSON *wait_record(struct env *e, int sandboxes, int64_t avoid, int64_t *lease, double limit_s)
{
	double end = now_s() + limit_s;

	while (now_s() < end) {
		cJSON *o = record(e, lease);

		if (o && num(o, "sandboxes") == sandboxes && *lease != avoid)
			return o;
		cJSON_Delete(o);
		usleep(50000);
	}
	fail_msg("the record never showed %d sandboxes under a new lease (see %s)", sandboxes, e->log);
	return NULL;
}

static bool log_has(struct env *e, const char *text)
{
	char buf[65536];
	FILE *f = fopen(e->log, "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return strstr(buf, text) != NULL;
}

static void worker_registration(void **state)
{
	struct env *e = *state;
	char self[PATH_MAX], path[PATH_MAX + 64], cmd[PATH_MAX + 64], body[8192], id[64], sock2[96], state2[96];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	int64_t lease, lease2, lease3;
	double t0 = time(NULL);
	cJSON *o;
	FILE *p;
	int st;
	pid_t other;

	assert_true(n > 0);
	self[n] = '\0';
	/* BUILD/tests (or tests-asan, tests-tsan): fake-vmm beside this binary, sandboxd in BUILD/bin. */
	snprintf(e->vmm, sizeof(e->vmm), "%s/fake-vmm", dirname(self));
	snprintf(e->sandboxd, sizeof(e->sandboxd), "%s/../bin/sandboxd", self);
	snprintf(e->state, sizeof(e->state), "%s/state", e->dir);
	snprintf(e->sock, sizeof(e->sock), "%s/api.sock", e->dir);
	snprintf(e->images, sizeof(e->images), "%s/images", e->dir);
	snprintf(e->log, sizeof(e->log), "%s/sandboxd.log", e->dir);
	mkdir(e->images, 0700);
	snprintf(path, sizeof(path), "%s/vmlinux", e->images);
	write_file(path, "not a kernel\n");
	snprintf(path, sizeof(path), "%s/initramfs.cpio.gz", e->images);
	write_file(path, "boot\n");
	snprintf(cmd, sizeof(cmd), "'%s' --state-dir '%s' --new-key tests", e->sandboxd, e->state);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(e->key, sizeof(e->key), p));
	pclose(p);
	e->key[strcspn(e->key, "\n")] = '\0';

	/* Registered before it serves, with the fields docs/fleet.md lists. */
	e->sd = spawn_sandboxd(e, e->sock, e->state, "test-w1");
	wait_health(e, "\"fleet\":{\"worker_id\":\"test-w1\",\"registered\":true,\"etcd\":\"ok\"}", 10, body,
		    sizeof(body));
	o = record(e, &lease);
	assert_non_null(o);
	assert_true(lease > 0);
	assert_string_equal(cJSON_GetObjectItem(o, "id")->valuestring, "test-w1");
	assert_string_equal(cJSON_GetObjectItem(o, "address")->valuestring, "https://127.0.0.1:8443");
	assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "version")));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "accepting")));
	assert_true(num(o, "sandboxes") == 0 && num(o, "memory_mib") == 0);
	assert_true(num(o, "max_sandboxes") == 64 && num(o, "max_memory_mib") == 4096);
	assert_true(num(o, "started") >= t0 - 2 && num(o, "started") <= time(NULL) + 1);
	assert_int_equal(cJSON_GetArraySize(o), 9);
	cJSON_Delete(o);

	/* Another worker with the same id while this one lives: refused, and this one's record stays. */
	snprintf(sock2, sizeof(sock2), "%s/api2.sock", e->dir);
	snprintf(state2, sizeof(state2), "%s/state2", e->dir);
	other = spawn_sandboxd(e, sock2, state2, "test-w1");
	assert_int_equal(waitpid(other, &st, 0), other);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	assert_true(log_has(e, "another live worker is registered as /sandvm/workers/test-w1"));

	/* A create shows in the record within its debounce. */
	assert_int_equal(request(e, "POST", "/v1/sandboxes", "{\"image\":\"minimal\",\"memory_mib\":64}", body,
				 sizeof(body)),
			 201);
	snprintf(id, sizeof(id), "%.*s", (int)strcspn(strstr(body, "\"id\":\"") + 6, "\""),
		 strstr(body, "\"id\":\"") + 6);
	o = wait_record(e, 1, 0, &lease2, 3);
	assert_true(num(o, "memory_mib") == 64);
	assert_true(lease2 == lease);
	cJSON_Delete(o);

	/* The lease revoked behind its back: noticed at the next keepalive, registered again under a new one. */
	{
		uv_loop_t loop;
		struct etcd_client *c;
		struct res r = {0};

		uv_loop_init(&loop);
		c = client(&loop, e->url);
		assert_int_equal(etcd_lease_revoke(c, lease, on_done, &r), 0);
		wait_res(&loop, &r, 5);
		assert_int_equal(r.err, 0);
		free_client(&loop, c);
	}
	o = wait_record(e, 1, lease, &lease2, 8);
	cJSON_Delete(o);
	assert_true(log_has(e, "lost its lease"));
	wait_health(e, "\"registered\":true", 2, body, sizeof(body));

	/* etcd stopped: no keepalive within the TTL, so no creates; back once etcd is. */
	kill(e->etcd, SIGSTOP);
	wait_health(e, "\"registered\":false,\"etcd\":\"unreachable\"", 10 + 5, body, sizeof(body));
	assert_int_equal(request(e, "POST", "/v1/sandboxes", "{\"image\":\"minimal\"}", body, sizeof(body)), 503);
	assert_non_null(strstr(body, "not registered in etcd"));
	kill(e->etcd, SIGCONT);
	wait_health(e, "\"fleet\":{\"worker_id\":\"test-w1\",\"registered\":true,\"etcd\":\"ok\"}", 10, body,
		    sizeof(body));
	o = wait_record(e, 1, lease2, &lease3, 3);
	cJSON_Delete(o);

	/* SIGTERM: the lease is revoked, so the record is gone at once (not after the TTL). */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
	assert_int_equal(request(e, "DELETE", path, NULL, body, sizeof(body)) / 100, 2);
	kill(e->sd, SIGTERM);
	assert_int_equal(waitpid(e->sd, &st, 0), e->sd);
	e->sd = -1;
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_null(record(e, &lease));
	assert_true(log_has(e, "revoked; /sandvm/workers/test-w1 is gone"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(client_basics),
		cmocka_unit_test(client_watch),
		cmocka_unit_test(client_failover_and_timeouts),
		cmocka_unit_test(client_free_in_callback),
		cmocka_unit_test(worker_registration),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
