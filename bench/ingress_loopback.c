/*
 * The ingress proxy (api/sandboxd/ingress_proxy.c) alone on a loopback
 * listener, for bench/ingress (docs/benchmarks.md): the same proxy, TLS
 * context and connect tokens as sandboxd --ingress, with an owner of its
 * own (one label, one token, verified metadata) instead of sandboxd's
 * sandboxes. A granted request goes the way it goes into a sandbox without
 * KVM, as in tests/unit/test_ingress_proxy.c: the VMM's vsock socket served
 * by tests/unit/fake-vmm, the real guest agent's relay (sandvm-agent
 * --unix), a TCP connection to 127.0.0.1:BACKEND.
 *
 *     ingress_loopback --dir DIR --domain DOMAIN --backend PORT [--port PORT]
 *                      [--label LABEL] [--metadata JSON] [--fake-vmm PATH] [--relay-cpu N]
 *
 * DIR (existing, empty) gets the certificates (DIR/tls: a private CA, a
 * certificate for DOMAIN and *.DOMAIN) and the fake VMM's sockets. Once the
 * listener is up, one line goes to stdout:
 *
 *     ready port=P label=L token=SECRET cert=FILE key=FILE ca=FILE vmm=PID
 *
 * It serves until SIGTERM or SIGINT, then prints its counters on stderr.
 * --relay-cpu pins the fake VMM and its agent (the guest's side, which runs
 * on cores of its own in a real sandbox) to a CPU of their own.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <cjson/cJSON.h>

#include "connect_token.h"
#include "ingress_proxy.h"
#include "log.h"
#include "tls.h"

/* The owner: one sandbox port under one label, its tokens, where its "VMM" listens. */
struct bench_owner {
	char label[64];
	uint16_t port;
	char vsock[sizeof(((struct ingress_grant *)0)->vsock_path)];
	struct connect_tokens tokens;
	unsigned links;
	unsigned long long granted, denied;
};

struct bench {
	uv_loop_t loop;
	struct ingress_proxy proxy;
	uv_tcp_t listener;
	uv_signal_t sigterm, sigint;
	struct bench_owner owner;
	pid_t vmm;
};

static double wall_time(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What sandboxd's owner (ingress.c) does for a request, less the sandbox registry. */
static int authorize(void *ctx, const char *label, const struct ingress_token_candidate *cand, size_t n,
		     struct ingress_link *link, struct ingress_grant *grant, char *why, size_t cap)
{
	struct bench_owner *o = ctx;
	const struct connect_token *t = NULL;
	double now = wall_time();
	size_t i;

	if (strcmp(label, o->label)) {
		o->denied++;
		snprintf(why, cap, "no sandbox is served at this address");
		return 404;
	}
	for (i = 0; i < n && !t; i++) {
		t = connect_token_check(&o->tokens, cand[i].token, now);
		if (t && t->port != o->port)
			t = NULL;
	}
	if (!t) {
		o->denied++;
		snprintf(why, cap, "the connect token is not valid here");
		return 401;
	}
	if (!link->owner) {
		link->owner = o;
		o->links++;
	}
	snprintf(grant->vsock_path, sizeof(grant->vsock_path), "%s", o->vsock);
	grant->port = o->port;
	snprintf(grant->verified, sizeof(grant->verified), "%s", t->verified);
	snprintf(grant->token_id, sizeof(grant->token_id), "%s", t->id);
	grant->token_index = i - 1;
	o->granted++;
	return 0;
}

static void release(void *ctx, struct ingress_link *link)
{
	struct bench_owner *o = ctx;

	if (link->owner == o)
		o->links--;
	link->owner = NULL;
}

static const struct ingress_proxy_ops owner_ops = {.authorize = authorize, .release = release};

static void on_connection(uv_stream_t *l, int status)
{
	if (status < 0) {
		sv_warn("accept: %s", uv_strerror(status));
		return;
	}
	http_conn_accept(l->data, l);
}

static void on_stop(uv_signal_t *s, int signum)
{
	(void)signum;
	uv_stop(s->loop);
}

/* The fake VMM, which starts the agent (sandvm-agent beside it) on DIR/agent.sock. 0 or -errno. */
static int start_vmm(struct bench *b, const char *fake_vmm, const char *dir, int relay_cpu)
{
	char control[PATH_MAX], relay[PATH_MAX];
	struct stat st;

	snprintf(control, sizeof(control), "%s/control", dir);
	snprintf(relay, sizeof(relay), "%s/agent.sock.relay", dir);
	b->vmm = fork();
	if (b->vmm < 0)
		return -errno;
	if (b->vmm == 0) {
		if (relay_cpu >= 0) {
			cpu_set_t set;

			CPU_ZERO(&set);
			CPU_SET(relay_cpu, &set);
			if (sched_setaffinity(0, sizeof(set), &set) < 0)
				_exit(126);
		}
		execl(fake_vmm, fake_vmm, "--vsock", b->owner.vsock, "--control", control, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		if (stat(relay, &st) == 0 && stat(b->owner.vsock, &st) == 0)
			return 0;
		if (waitpid(b->vmm, NULL, WNOHANG) == b->vmm) {
			b->vmm = -1;
			return -ECHILD;
		}
		usleep(10000);
	}
	return -ETIMEDOUT;
}

static void stop_vmm(struct bench *b)
{
	if (b->vmm <= 0)
		return;
	kill(b->vmm, SIGTERM);
	waitpid(b->vmm, NULL, 0);
	b->vmm = -1;
}

/* The token's metadata as sandboxd keeps it (ingress_metadata_encode). 0 or -errno. */
static int make_token(struct bench_owner *o, const char *metadata_json, char *secret, size_t cap)
{
	char verified[INGRESS_METADATA_MAX + 1];
	const struct connect_token *t;
	cJSON *m = cJSON_Parse(metadata_json);
	int r;

	if (!m || !cJSON_IsObject(m)) {
		cJSON_Delete(m);
		return -EINVAL;
	}
	r = ingress_metadata_encode(m, verified, sizeof(verified));
	cJSON_Delete(m);
	if (r < 0)
		return r;
	return connect_token_new(&o->tokens, o->port, verified, wall_time(), 0, secret, cap, &t);
}

static void usage(void)
{
	fprintf(stderr, "usage: ingress_loopback --dir DIR --domain DOMAIN --backend PORT [--port PORT]\n"
			"                        [--label LABEL] [--metadata JSON] [--fake-vmm PATH] [--relay-cpu N]\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, 'd'},      {"domain", required_argument, NULL, 'D'},
		{"backend", required_argument, NULL, 'b'},  {"port", required_argument, NULL, 'p'},
		{"label", required_argument, NULL, 'l'},    {"metadata", required_argument, NULL, 'm'},
		{"fake-vmm", required_argument, NULL, 'f'}, {"relay-cpu", required_argument, NULL, 'c'},
		{NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *domain = NULL, *label = "0123456789abcdef",
		   *metadata = "{\"user\":\"bench\",\"plan\":\"pro\"}";
	char self[PATH_MAX], fake_vmm[PATH_MAX + 16] = "", tls_dir[PATH_MAX], cert[PATH_MAX], key[PATH_MAX],
		err[512], secret[CONNECT_TOKEN_SECRET_LEN + 1];
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int backend = 0, port = 0, relay_cpu = -1, len = sizeof(addr), opt, r, status = 1;
	struct bench *b = calloc(1, sizeof(*b));
	bool made;

	sv_log_init("ingress_loopback", SV_LOG_WARN);
	if (!b)
		return 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 'D': domain = optarg; break;
		case 'b': backend = atoi(optarg); break;
		case 'p': port = atoi(optarg); break;
		case 'l': label = optarg; break;
		case 'm': metadata = optarg; break;
		case 'f': snprintf(fake_vmm, sizeof(fake_vmm), "%s", optarg); break;
		case 'c': relay_cpu = atoi(optarg); break;
		default: usage(); return 2;
		}
	}
	if (!dir || !domain || backend <= 0 || backend > 65535 || port < 0 || port > 65535 ||
	    strlen(label) >= sizeof(b->owner.label)) {
		usage();
		return 2;
	}
	if (!fake_vmm[0]) {
		/* $(BUILD)/bench/ingress_loopback: the fake VMM is $(BUILD)/tests/fake-vmm. */
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

		if (n <= 0)
			return 1;
		self[n] = '\0';
		snprintf(fake_vmm, sizeof(fake_vmm), "%s/../tests/fake-vmm", dirname(self));
	}
	signal(SIGPIPE, SIG_IGN);

	snprintf(b->owner.label, sizeof(b->owner.label), "%s", label);
	b->owner.port = (uint16_t)backend;
	connect_tokens_init(&b->owner.tokens);
	/* The longest socket path there is DIR/agent.sock.relay, within a sun_path of 108 bytes. */
	if (strlen(dir) + sizeof("/agent.sock.relay") > 108) {
		sv_err("%s: too long a path for the fake VMM's sockets", dir);
		goto out_tokens;
	}
	snprintf(b->owner.vsock, sizeof(b->owner.vsock), "%s/vsock", dir);
	r = make_token(&b->owner, metadata, secret, sizeof(secret));
	if (r < 0) {
		sv_err("the token: %s", strerror(-r));
		goto out_tokens;
	}
	snprintf(tls_dir, sizeof(tls_dir), "%s/tls", dir);
	if (tls_ensure_domain_certificate(tls_dir, domain, cert, key, sizeof(cert), &made, err, sizeof(err)) < 0) {
		sv_err("certificate: %s", err);
		goto out_tokens;
	}
	r = start_vmm(b, fake_vmm, dir, relay_cpu);
	if (r < 0) {
		sv_err("%s: %s", fake_vmm, strerror(-r));
		goto out_vmm;
	}

	uv_loop_init(&b->loop);
	if (ingress_proxy_init(&b->proxy, &b->loop, domain, &owner_ops, &b->owner) < 0) {
		sv_err("%s is not a DNS name", domain);
		goto out_loop;
	}
	b->proxy.server.tls = tls_server_ctx_new(cert, key, err, sizeof(err));
	if (!b->proxy.server.tls) {
		sv_err("TLS: %s", err);
		goto out_proxy;
	}
	uv_tcp_init(&b->loop, &b->listener);
	b->listener.data = &b->proxy.server;
	addr.sin_port = htons((uint16_t)port);
	r = uv_tcp_bind(&b->listener, (struct sockaddr *)&addr, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&b->listener, 511, on_connection);
	if (r == 0)
		r = uv_tcp_getsockname(&b->listener, (struct sockaddr *)&addr, &len);
	if (r < 0) {
		sv_err("listen: %s", uv_strerror(r));
		goto out_listener;
	}
	uv_signal_init(&b->loop, &b->sigterm);
	uv_signal_init(&b->loop, &b->sigint);
	uv_signal_start(&b->sigterm, on_stop, SIGTERM);
	uv_signal_start(&b->sigint, on_stop, SIGINT);
	printf("ready port=%u label=%s token=%s cert=%s key=%s ca=%s/ca.pem vmm=%d\n", ntohs(addr.sin_port),
	       b->owner.label, secret, cert, key, tls_dir, (int)b->vmm);
	fflush(stdout);

	uv_run(&b->loop, UV_RUN_DEFAULT);
	fprintf(stderr, "ingress_loopback: requests %llu, refused %llu, granted %llu, denied %llu, upgrades %llu\n",
		b->proxy.requests, b->proxy.refused, b->owner.granted, b->owner.denied, b->proxy.upgrades);
	status = 0;
	uv_close((uv_handle_t *)&b->sigterm, NULL);
	uv_close((uv_handle_t *)&b->sigint, NULL);
out_listener:
	uv_close((uv_handle_t *)&b->listener, NULL);
	/* Open client connections go with the process: their owner counts are of no interest now. */
	uv_run(&b->loop, UV_RUN_NOWAIT);
	tls_server_ctx_free(b->proxy.server.tls);
out_proxy:
	ingress_proxy_destroy(&b->proxy);
out_loop:
	uv_loop_close(&b->loop);
out_vmm:
	stop_vmm(b);
out_tokens:
	connect_tokens_destroy(&b->owner.tokens);
	free(b);
	return status;
}
