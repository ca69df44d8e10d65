/*
 * sandboxd: manages this worker's sandboxes behind an HTTP API (docs/api.md).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <malloc.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "auth.h"
#include "fleet/fleet_worker.h"
#include "fleet/gateway.h"
#include "http_conn.h"
#include "images.h"
#include "ingress.h"
#include "ingress_proxy.h"
#include "isolation_monitor.h"
#include "tunnel_sandbox.h"
#include "tunnel_serve.h"

/* Long options without a short letter. */
enum { OPT_TUNNEL_MAX_CONNECTIONS = 0x100, OPT_TUNNEL_IDLE_TIMEOUT, OPT_NO_JAIL, OPT_JAIL_IDS, OPT_CGROUP_ROOT,
       OPT_COLD_BOOT, OPT_METRICS_LISTEN, OPT_METRICS_AUTH, OPT_ISOLATION_PROBE, OPT_ISOLATION_PROBE_PEER,
       OPT_ISOLATION_PROBE_DENY, OPT_ETCD, OPT_ADVERTISE, OPT_WORKER_ID, OPT_GATEWAY, OPT_TLS_CA,
       OPT_RELAY_IDLE_TIMEOUT, OPT_SPARE_VMMS };
#include "log.h"
#include "metrics_scrape.h"
#include "net.h"
#include "routes.h"
#include "sandbox.h"
#include "templates.h"
#include "sandboxd.h"
#include "snapshots.h"
#include "tls.h"
#include "vmm_launcher.h"
#include "vmm_spares.h"

#define DEFAULT_STATE_DIR "/var/lib/sandvm"
#define DEFAULT_SOCKET "/run/sandvm/sandboxd.sock"
#define SWEEP_MS 30000

static const char usage[] =
	"usage: sandboxd [--state-dir DIR] [--socket PATH] [--listen HOST:PORT [--tls-cert F --tls-key F]]\n"
	"                [--listen-insecure HOST:PORT] [--images DIR]\n"
	"                [--vmm PATH] [--spare-vmms N] [--max-sandboxes N] [--max-memory MIB]\n"
	"                [--log-level LEVEL]\n"
	"                [--no-net] [--allow-private-egress CIDR[,CIDR...]]... [--image-dir DIR]...\n"
	"                [--ingress HOST:PORT --ingress-domain DOMAIN [--ingress-tls-cert F --ingress-tls-key F]]\n"
	"                [--tunnel-ports LO-HI] [--tunnel-host HOST] [--tunnel-max-connections N]\n"
	"                [--tunnel-idle-timeout S] [--no-jail] [--jail-ids FIRST:COUNT] [--cgroup-root DIR]\n"
	"                [--metrics-listen HOST:PORT [--metrics-auth key|none]]\n"
	"                [--isolation-probe S] [--isolation-probe-peer ADDR:PORT]\n"
	"                [--isolation-probe-deny ADDR:PORT]...\n"
	"                [--etcd URL[,URL...] --advertise https://HOST:PORT [--worker-id ID]]\n"
	"       sandboxd --gateway --etcd URL[,URL...] --listen HOST:PORT --tls-ca FILE\n"
	"                [--tls-cert F --tls-key F] [--state-dir DIR] [--log-level LEVEL]\n"
	"                [--relay-idle-timeout S]\n"
	"       sandboxd [--state-dir DIR] --new-key NAME\n"
	"       sandboxd [--state-dir DIR] --rotate-managed-key\n"
	"\n"
	"  --state-dir DIR      registry, API keys, sandbox run files (default " DEFAULT_STATE_DIR ")\n"
	"  --socket PATH        unix socket of the API, mode 0600 (default " DEFAULT_SOCKET ")\n"
	"  --listen HOST:PORT   also serve the API on TCP, HTTPS with TLS 1.3 only; without\n"
	"                       --tls-cert/--tls-key a private CA and a certificate are made once\n"
	"                       in STATE_DIR/tls (clients trust STATE_DIR/tls/ca.pem)\n"
	"  --tls-cert FILE      the listener's certificate chain (PEM)\n"
	"  --tls-key FILE       its private key (PEM)\n"
	"  --listen-insecure HOST:PORT\n"
	"                       plain HTTP on TCP instead, on a loopback address only\n"
	"  --images DIR         guest kernel and images: vmlinux, initramfs.cpio.gz, debian.ext4\n"
	"                       (default: ../guest next to this binary, i.e. build/guest)\n"
	"  --image-dir DIR      a folder whose files a sandbox's \"image\" may name by absolute path,\n"
	"                       besides the --images folder; repeatable (at most 7)\n"
	"  --vmm PATH           the VMM binary (default: vmm next to this binary)\n"
	"  --spare-vmms N       VMM processes kept started and waiting, 0..16 (default 2): a\n"
	"                       sandbox's VMM is one of them, not a new process (docs/architecture.md)\n"
	"  --image-builder PATH builds a missing built-in image on first use, called as\n"
	"                       PATH debian|minimal OUT (default: rootfs/build-image of the\n"
	"                       source tree this binary was built in, if there is one; \"\" for none)\n"
	"  --max-sandboxes N    sandboxes starting or running at once (default 64)\n"
	"  --max-memory MIB     guest memory of those in all (default 80% of this host's)\n"
	"  --log-level L        error, warn, info (default) or debug\n"
	"  --cold-boot          every sandbox boots its kernel (no warm-start templates;\n"
	"                       docs/architecture.md, \"Templates\")\n"
	"  --no-net             sandboxes get no network device (default: a tap each, with NAT,\n"
	"                       when running as root with /dev/net/tun; docs/network.md)\n"
	"  --allow-private-egress CIDR[,CIDR...]\n"
	"                       let every sandbox reach these parts of the private ranges\n"
	"                       (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10,\n"
	"                       fc00::/7), which are closed to sandboxes otherwise; repeatable,\n"
	"                       each prefix inside one of them (docs/network.md)\n"
	"  --image-sweep S      delete expired snapshot images every S seconds (default 3600)\n"
	"  --ingress HOST:PORT  serve connect tokens' URLs https://LABEL.DOMAIN[:PORT] here, HTTPS\n"
	"                       with TLS 1.3 only (docs/ingress.md); needs --ingress-domain\n"
	"  --ingress-domain D   the domain under which each sandbox port gets a name; DNS for\n"
	"                       *.D must lead clients to --ingress\n"
	"  --ingress-tls-cert F, --ingress-tls-key F\n"
	"                       the ingress certificate (for D and *.D) and key; without them one\n"
	"                       is made in STATE_DIR/tls, signed by the CA of --listen\n"
	"  --ingress-timeout S  how long the server in a sandbox may stay silent on a request\n"
	"                       before the client gets 504 (default 60)\n"
	"  --ingress-max-connections N\n"
	"                       open ingress connections per sandbox (default 512; 429 beyond),\n"
	"                       tunnel connections included\n"
	"  --tunnel-ports LO-HI host TCP ports for unencrypted tunnels' plain endpoints\n"
	"  --tunnel-host HOST   the host clients reach those ports at (default: the --ingress\n"
	"                       address unless a wildcard, else the ingress domain)\n"
	"  --tunnel-max-connections N\n"
	"                       open connections per tunnel (default 256; closed at once beyond)\n"
	"  --tunnel-idle-timeout S\n"
	"                       a tunnel connection without a byte either way closes (default 600)\n"
	"  --no-jail            run VMMs unjailed, as root in sandboxd's namespaces (debugging only;\n"
	"                       default: each VMM jailed, docs/security.md)\n"
	"  --jail-ids FIRST:COUNT\n"
	"                       the uids (gid = uid) jailed VMMs run as, one per sandbox, the lowest\n"
	"                       free first (default 200000:10000)\n"
	"  --cgroup-root DIR    the cgroup v2 directory under which each VMM gets a leaf sandvm/ID\n"
	"                       with its memory, pids and cpu limits (default: the cgroup2 mount;\n"
	"                       without one, VMMs are jailed without a cgroup, with a warning)\n"
	"  --metrics-listen HOST:PORT\n"
	"                       serve GET /metrics (Prometheus text) alone here, HTTPS with TLS 1.3\n"
	"                       only, with the --listen certificate or one made in STATE_DIR/tls\n"
	"                       (GET /metrics on the API listeners asks for an API key as always)\n"
	"  --metrics-auth key|none\n"
	"                       whether --metrics-listen asks for an API key (default: none on a\n"
	"                       loopback address, key on any other)\n"
	"  --isolation-probe S  every S seconds (10..86400), start a canary sandbox whose guest\n"
	"                       probes the walls every sandbox has, then delete it; breaches are\n"
	"                       logged as errors and shown by /v1/health and /metrics (default: off;\n"
	"                       POST /v1/selftest/isolation runs one at any time; docs/security.md)\n"
	"  --isolation-probe-peer ADDR:PORT\n"
	"                       a host the canary must reach (TCP), proving its network works;\n"
	"                       IPv6 as [ADDR]:PORT\n"
	"  --isolation-probe-deny ADDR:PORT\n"
	"                       a host in a private or internal network the sandboxes must never\n"
	"                       reach (a database, the VPC's router); the canary tries it over TCP;\n"
	"                       repeatable (at most 16)\n"
	"  --etcd URL[,URL...]  register this worker in etcd (http://HOST:PORT of its members) as\n"
	"                       /sandvm/workers/ID under a lease kept alive while it runs; without\n"
	"                       its lease it takes no creates (docs/fleet.md, \"Workers\")\n"
	"  --advertise URL      https://HOST:PORT, where gateways reach this worker's API (with --etcd)\n"
	"  --worker-id ID       its name in the fleet, [A-Za-z0-9._-]{1,63} (default: the hostname)\n"
	"  --gateway            serve one address for a fleet of workers instead of running\n"
	"                       sandboxes (docs/fleet.md): places creates, relays calls to the\n"
	"                       worker holding each sandbox; STATE_DIR/api-keys must hold the\n"
	"                       workers' keys (the gateway checks them and forwards them)\n"
	"  --tls-ca FILE        with --gateway: the CA (PEM) the workers' certificates must\n"
	"                       verify against (their addresses' IPs or names)\n"
	"  --relay-idle-timeout S  with --gateway: a call relayed to a worker that carries no\n"
	"                       byte either way for S seconds is cut (default 3660, 1..86400)\n"
	"  --new-key NAME       make an API key, store its hash, print the key, exit\n"
	"  --rotate-managed-key replace the managed key of snapshot images, re-wrapping each\n"
	"                       image's key with the new one (run while sandboxd is stopped)\n";

/* The process: the daemon's state, and the listeners and signals that feed it. */
struct daemon {
	struct sandboxd d;
	struct http_server unix_server, tcp_server; /* no TLS; TLS (or --listen-insecure) */
	struct http_server metrics_server;          /* --metrics-listen: GET /metrics only, TLS */
	uv_pipe_t unix_listener;
	uv_tcp_t tcp_listener, ingress_listener, metrics_listener;
	bool tcp_on, ingress_on, metrics_on;
	struct ingress_proxy ingress; /* --ingress */
	struct tunnel_serve tunnels;  /* tunnel connections on --ingress and the plain host ports */
	uv_signal_t sig_term, sig_int;
	bool fleet_stopping; /* the lease is being revoked; a second signal stops at once */
	bool gateway;        /* --gateway: no sandboxes of its own */
};

/* Where the TCP listener's certificate comes from. */
struct tls_options {
	const char *cert, *key; /* the operator's, or NULL: STATE_DIR/tls is made once */
	bool insecure;          /* --listen-insecure: plain HTTP, loopback only */
};

static void on_connection(uv_stream_t *listener, int status)
{
	int r;

	if (status < 0) {
		sv_warn("accept: %s", uv_strerror(status));
		return;
	}
	/* Each listener's server: TLS on TCP, none on the unix socket. */
	r = http_conn_accept(listener->data, listener);
	if (r < 0)
		sv_warn("accept: %s", uv_strerror(r));
}

/* Each connection, VMM socket and tap is a file descriptor: take all the kernel allows us. */
static void raise_nofile_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		sv_warn("cannot raise the open files limit to %llu: %s", (unsigned long long)rl.rlim_max,
			strerror(errno));
}

static int make_dirs(const char *path, mode_t mode)
{
	char tmp[4096];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, mode) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int listen_unix(struct daemon *dm, const char *path)
{
	char dir[4096];
	mode_t old;
	int r;

	snprintf(dir, sizeof(dir), "%s", path);
	r = make_dirs(dirname(dir), 0755);
	if (r < 0) {
		sv_err("cannot create the folder of %s: %s", path, strerror(-r));
		return r;
	}
	unlink(path); /* a stale socket of an earlier run */
	uv_pipe_init(dm->d.loop, &dm->unix_listener, 0);
	dm->unix_listener.data = &dm->unix_server;
	old = umask(0177);
	r = uv_pipe_bind(&dm->unix_listener, path);
	umask(old);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&dm->unix_listener, 128, on_connection);
	if (r < 0)
		sv_err("cannot listen on %s: %s", path, uv_strerror(r));
	return r;
}

static bool is_loopback(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
	return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

/* A TCP listener's TLS context: the operator's certificate, or the one made in STATE_DIR/tls for host. */
static int setup_tls(struct daemon *dm, const char *opt, const char *host, const struct tls_options *tls,
		     struct ssl_ctx_st **out)
{
	char dir[sizeof(dm->d.state_dir) + 8], cert[sizeof(dir) + 16], key[sizeof(dir) + 16], err[512];
	bool made = false;

	if (tls->cert || tls->key) {
		if (!tls->cert || !tls->key) {
			sv_err("--tls-cert and --tls-key go together");
			return -EINVAL;
		}
		snprintf(cert, sizeof(cert), "%s", tls->cert);
		snprintf(key, sizeof(key), "%s", tls->key);
	} else {
		snprintf(dir, sizeof(dir), "%s/tls", dm->d.state_dir);
		if (tls_ensure_certificates(dir, host, &made, err, sizeof(err)) < 0) {
			sv_err("making a certificate for %s: %s", opt, err);
			return -EIO;
		}
		snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
		snprintf(key, sizeof(key), "%s/key.pem", dir);
		if (made)
			sv_info("made a private CA and a certificate for %s in %s", host, dir);
		sv_info("TLS: clients verify this server with the CA %s/ca.pem (vmctl --cacert, $SANDVM_CACERT)",
			dir);
	}
	*out = tls_server_ctx_new(cert, key, err, sizeof(err));
	if (!*out) {
		sv_err("TLS for %s: %s", opt, err);
		return -EINVAL;
	}
	if (tls->cert && strcmp(host, "0.0.0.0") && strcmp(host, "::") && !tls_cert_covers(cert, host))
		sv_warn("%s: the certificate %s does not name %s; scrapers and clients must expect the name it has",
			opt, cert, host);
	return 0;
}

/* HOST:PORT ("[::1]:8443" as well as "::1:8443") into addr, with host's text. 0 or -EINVAL (told). */
static int parse_listen_address(const char *opt, const char *spec, char *host, size_t cap,
				struct sockaddr_storage *addr)
{
	const char *colon = strrchr(spec, ':');
	int port;

	if (!colon || colon == spec || (size_t)(colon - spec) >= cap) {
		sv_err("%s wants HOST:PORT, not %s", opt, spec);
		return -EINVAL;
	}
	snprintf(host, cap, "%.*s", (int)(colon - spec), spec);
	/* "[::1]:8443" as well as "::1:8443" */
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	port = atoi(colon + 1);
	if (port <= 0 || port > 65535) {
		sv_err("%s: bad port in %s", opt, spec);
		return -EINVAL;
	}
	memset(addr, 0, sizeof(*addr));
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)addr) &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr)) {
		sv_err("%s: %s is not an IP address", opt, host);
		return -EINVAL;
	}
	return port;
}

static int listen_tcp(struct daemon *dm, const char *spec, const struct tls_options *tls)
{
	const char *opt = tls->insecure ? "--listen-insecure" : "--listen";
	char host[256];
	struct sockaddr_storage addr;
	int r;

	if (parse_listen_address(opt, spec, host, sizeof(host), &addr) < 0)
		return -EINVAL;
	if (tls->insecure && !is_loopback(&addr)) {
		sv_err("--listen-insecure serves plain HTTP, so only on a loopback address (not %s); "
		       "use --listen for TLS",
		       host);
		return -EINVAL;
	}
	if (!tls->insecure && (r = setup_tls(dm, "--listen", host, tls, &dm->tcp_server.tls)) < 0)
		return r;
	uv_tcp_init(dm->d.loop, &dm->tcp_listener);
	dm->tcp_listener.data = &dm->tcp_server;
	r = uv_tcp_bind(&dm->tcp_listener, (struct sockaddr *)&addr, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&dm->tcp_listener, 511, on_connection);
	if (r < 0)
		sv_err("cannot listen on %s: %s", spec, uv_strerror(r));
	dm->tcp_on = r == 0;
	return r;
}

/*
 * --metrics-listen: GET /metrics alone, HTTPS with TLS 1.3 like every TCP
 * listener (the --listen certificate, or STATE_DIR/tls's for its host). An
 * API key is asked for under --metrics-auth key, and by default off
 * loopback: a scraper on the worker itself needs none.
 */
static int listen_metrics(struct daemon *dm, const char *spec, const struct tls_options *tls, const char *auth)
{
	char host[256];
	struct sockaddr_storage addr;
	int r;

	if (parse_listen_address("--metrics-listen", spec, host, sizeof(host), &addr) < 0)
		return -EINVAL;
	if (auth && strcmp(auth, "key") && strcmp(auth, "none")) {
		sv_err("--metrics-auth wants key or none, not %s", auth);
		return -EINVAL;
	}
	dm->d.metrics_need_key = auth ? !strcmp(auth, "key") : !is_loopback(&addr);
	if (tls->insecure) {
		struct tls_options own = {0};

		r = setup_tls(dm, "--metrics-listen", host, &own, &dm->metrics_server.tls);
	} else {
		r = setup_tls(dm, "--metrics-listen", host, tls, &dm->metrics_server.tls);
	}
	if (r < 0)
		return r;
	uv_tcp_init(dm->d.loop, &dm->metrics_listener);
	dm->metrics_listener.data = &dm->metrics_server;
	r = uv_tcp_bind(&dm->metrics_listener, (struct sockaddr *)&addr, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&dm->metrics_listener, 128, on_connection);
	if (r < 0) {
		sv_err("cannot listen on %s: %s", spec, uv_strerror(r));
		return r;
	}
	dm->metrics_on = true;
	dm->d.metrics.servers[METRICS_LISTENER_METRICS] = &dm->metrics_server;
	sv_info("metrics: https://%s/metrics (%s)", spec,
		dm->d.metrics_need_key ? "an API key is asked for" : "no API key is asked for");
	return 0;
}

/* --ingress: the proxy's own listener and certificate (for DOMAIN and *.DOMAIN). */
static int listen_ingress(struct daemon *dm, const char *spec, const char *domain, const struct tls_options *tls,
			  unsigned timeout_s)
{
	struct sandboxd *d = &dm->d;
	char host[256], dir[sizeof(d->state_dir) + 8], cert[sizeof(dir) + 32], key[sizeof(dir) + 32], err[512];
	struct sockaddr_storage addr;
	bool made = false;
	int port, r;

	if (!domain) {
		sv_err("--ingress needs --ingress-domain (the DNS domain whose names lead to it)");
		return -EINVAL;
	}
	port = parse_listen_address("--ingress", spec, host, sizeof(host), &addr);
	if (port < 0)
		return -EINVAL;
	if (ingress_proxy_init(&dm->ingress, d->loop, domain, &sandboxd_ingress_ops, d) < 0) {
		sv_err("--ingress-domain: %s is not a DNS name", domain);
		return -EINVAL;
	}
	dm->ingress.response_timeout_ms = timeout_s * 1000;
	if (tls->cert || tls->key) {
		if (!tls->cert || !tls->key) {
			sv_err("--ingress-tls-cert and --ingress-tls-key go together");
			return -EINVAL;
		}
		snprintf(cert, sizeof(cert), "%s", tls->cert);
		snprintf(key, sizeof(key), "%s", tls->key);
	} else {
		snprintf(dir, sizeof(dir), "%s/tls", d->state_dir);
		if (tls_ensure_domain_certificate(dir, domain, cert, key, sizeof(cert), &made, err, sizeof(err)) < 0) {
			sv_err("making a certificate for --ingress: %s", err);
			return -EIO;
		}
		if (made)
			sv_info("made a certificate for %s and *.%s in %s", domain, domain, dir);
	}
	dm->ingress.server.tls = tls_server_ctx_new(cert, key, err, sizeof(err));
	if (!dm->ingress.server.tls) {
		sv_err("TLS for --ingress: %s", err);
		return -EINVAL;
	}
	uv_tcp_init(d->loop, &dm->ingress_listener);
	dm->ingress_listener.data = &dm->ingress.server;
	r = uv_tcp_bind(&dm->ingress_listener, (struct sockaddr *)&addr, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&dm->ingress_listener, 511, on_connection);
	if (r < 0) {
		sv_err("cannot listen on %s: %s", spec, uv_strerror(r));
		return r;
	}
	dm->ingress_on = true;
	d->tunnel_bind = addr;
	r = tunnel_serve_init(&dm->tunnels, d->loop, dm->ingress.domain, &sandboxd_tunnel_ops, d);
	if (r < 0) {
		sv_err("tunnels on --ingress: %s", strerror(-r));
		return r;
	}
	dm->tunnels.max_connections = d->tunnel_max_connections;
	dm->tunnels.idle_timeout_ms = d->tunnel_idle_timeout_s * 1000u;
	tunnel_serve_attach(&dm->tunnels, &dm->ingress.server, dm->ingress.server.tls);
	d->tunnel_serve = &dm->tunnels;
	snprintf(d->ingress_domain, sizeof(d->ingress_domain), "%s", dm->ingress.domain);
	d->ingress_port = (unsigned)port;
	if (!d->tunnel_host[0])
		snprintf(d->tunnel_host, sizeof(d->tunnel_host), "%s",
			 !host[0] || !strcmp(host, "0.0.0.0") || !strcmp(host, "::") ? d->ingress_domain : host);
	if (port == 443)
		sv_info("ingress: https://LABEL.%s on %s", dm->ingress.domain, spec);
	else
		sv_info("ingress: https://LABEL.%s:%d on %s", dm->ingress.domain, port, spec);
	return 0;
}

static void isolation_listener(struct isolation_monitor *m, bool on, const uv_tcp_t *listener)
{
	struct sockaddr_storage a;
	int len = sizeof(a);

	if (on && uv_tcp_getsockname(listener, (struct sockaddr *)&a, &len) == 0)
		isolation_monitor_add_listener(m, (struct sockaddr *)&a);
}

/*
 * The isolation monitor: what its canary must not reach (the listeners) or
 * see (the worker's secrets), and its timer with --isolation-probe.
 */
static int start_isolation(struct daemon *dm, const struct isolation_monitor_config *cfg, const char *keys_path,
			   const struct tls_options *tls, const struct tls_options *ingress_tls)
{
	struct sandboxd *d = &dm->d;
	char path[sizeof(d->state_dir) + 32];

	if (isolation_monitor_new(d, cfg, &d->isolation) < 0)
		return -EINVAL;
	isolation_listener(d->isolation, dm->tcp_on, &dm->tcp_listener);
	isolation_listener(d->isolation, dm->metrics_on, &dm->metrics_listener);
	isolation_listener(d->isolation, dm->ingress_on, &dm->ingress_listener);
	isolation_monitor_add_secret(d->isolation, "api-keys", keys_path);
	snprintf(path, sizeof(path), "%s/tls/key.pem", d->state_dir);
	isolation_monitor_add_secret(d->isolation, "tls-key", tls->key ? tls->key : path);
	if (ingress_tls->key)
		isolation_monitor_add_secret(d->isolation, "ingress-tls-key", ingress_tls->key);
	snprintf(path, sizeof(path), "%s/managed.key", d->snapshot_dir);
	isolation_monitor_add_secret(d->isolation, "managed-key", path);
	isolation_monitor_add_secret(d->isolation, "state-dir", d->state_dir);
	if (cfg->interval_s && !d->net_enabled)
		sv_warn("isolation: --no-net: the canary has no network, so only its guest and vsock walls are probed");
	isolation_monitor_start(d->isolation);
	return 0;
}

static void on_fleet_stopped(void *arg)
{
	struct daemon *dm = arg;

	uv_stop(dm->d.loop);
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
	struct daemon *dm = s->data;

	if (dm->gateway)
		sv_info("signal %d: stopping the gateway; calls relayed now are cut, the workers and their "
			"sandboxes go on (other gateways, or this one restarted, serve them)",
			signum);
	else
		sv_info("signal %d: stopping; running sandboxes keep running and are adopted at the next start",
			signum);
	dm->d.stopping = true;
	/* In a fleet, the record goes first (bounded: fleet_worker_stop answers within a request's deadline). */
	if (dm->d.fleet && !dm->fleet_stopping) {
		dm->fleet_stopping = true;
		fleet_worker_stop(dm->d.fleet, on_fleet_stopped, dm);
		return;
	}
	uv_stop(dm->d.loop);
}

/* --etcd: the worker id defaults to the hostname; --advertise is required. 0 or -EINVAL (told). */
static int fleet_config(struct fleet_worker_config *cfg, const char *id)
{
	char host[256] = "";

	if (!cfg->endpoints) {
		if (cfg->advertise || id) {
			sv_err("--advertise and --worker-id go with --etcd");
			return -EINVAL;
		}
		return 0;
	}
	if (!cfg->advertise) {
		sv_err("--etcd needs --advertise https://HOST:PORT, where gateways reach this worker");
		return -EINVAL;
	}
	if (!fleet_worker_address_valid(cfg->advertise)) {
		sv_err("--advertise wants https://HOST:PORT (no path), not %s", cfg->advertise);
		return -EINVAL;
	}
	if (!id) {
		if (gethostname(host, sizeof(host) - 1) < 0 || !fleet_id_valid(host, strlen(host))) {
			sv_err("the hostname \"%s\" is no worker id ([A-Za-z0-9._-]{1,63}, not . or ..); "
			       "name one with --worker-id",
			       host);
			return -EINVAL;
		}
		id = host;
	}
	if (!fleet_id_valid(id, strlen(id))) {
		sv_err("--worker-id wants [A-Za-z0-9._-]{1,63} (not . or ..), not \"%s\"", id);
		return -EINVAL;
	}
	snprintf(cfg->id, sizeof(cfg->id), "%s", id);
	return 0;
}

static void on_image_sweep(uv_timer_t *t)
{
	snapshots_sweep(t->data);
}

static void on_sweep(uv_timer_t *t)
{
	sandbox_sweep(t->data);
}

static void default_paths(const char *argv0, char *images, char *vmm, char *builder, size_t cap)
{
	char self[PATH_MAX], *dir;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		snprintf(self, sizeof(self), "%s", argv0);
	else
		self[n] = '\0';
	dir = dirname(self);
	if (!images[0])
		snprintf(images, cap, "%s/../guest", dir);
	if (!vmm[0])
		snprintf(vmm, cap, "%s/vmm", dir);
	/* build/bin/sandboxd in a source tree: its image builder is ../../rootfs/build-image. */
	if (builder) {
		snprintf(builder, cap, "%s/../../rootfs/build-image", dir);
		if (access(builder, X_OK) < 0)
			builder[0] = '\0';
	}
}

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v == 0 || v > 1u << 24)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* LO-HI: decimal ports 1..65535, LO <= HI, nothing else. */
static int parse_port_range(const char *s, unsigned *lo, unsigned *hi)
{
	unsigned long a, b;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	a = strtoul(s, &end, 10);
	if (*end != '-' || end[1] < '0' || end[1] > '9')
		return -EINVAL;
	b = strtoul(end + 1, &end, 10);
	if (*end || a < 1 || a > 65535 || b < 1 || b > 65535 || a > b)
		return -EINVAL;
	*lo = (unsigned)a;
	*hi = (unsigned)b;
	return 0;
}

/* Where the gateway's settings come from: the command line. */
struct gateway_options {
	const char *etcd, *ca;
	unsigned relay_idle_s; /* --relay-idle-timeout; 0: the default */
};

/*
 * sandboxd --gateway: the TLS listener and its API keys as a worker has
 * them, the routes of the gateway, no VMM and no sandboxes.
 */
static int run_gateway(struct daemon *dm, const struct gateway_options *o, const char *listen_addr,
		       const struct tls_options *tls, const char *keys_path)
{
	struct sandboxd *d = &dm->d;
	struct gateway_config cfg = {0};
	struct gateway *g = NULL;
	char err[512];
	int r;

	if (!o->etcd || !o->ca || !listen_addr) {
		sv_err("--gateway needs --etcd URL, --tls-ca FILE (the workers' CA) and --listen HOST:PORT");
		return 2;
	}
	if (tls->insecure) {
		sv_err("--gateway serves HTTPS only: --listen, not --listen-insecure");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	d->loop = uv_default_loop();
	if (auth_open(keys_path, &d->keys) < 0)
		return 1;
	cfg.loop = d->loop;
	cfg.etcd_endpoints = o->etcd;
	cfg.keys = d->keys;
	cfg.relay_idle_ms = o->relay_idle_s * 1000u;
	dm->gateway = true;
	cfg.worker_tls = tls_client_ctx_new(o->ca, err, sizeof(err));
	if (!cfg.worker_tls) {
		sv_err("--tls-ca: %s", err);
		return 1;
	}
	r = gateway_new(&cfg, &g, err, sizeof(err));
	if (r < 0) {
		sv_err("--etcd: %s", err);
		return r == -EINVAL ? 2 : 1;
	}
	http_server_init(&dm->tcp_server, d->loop, gateway_on_headers, g);
	raise_nofile_limit();
	if (listen_tcp(dm, listen_addr, tls) < 0)
		return 1;
	uv_signal_init(d->loop, &dm->sig_term);
	dm->sig_term.data = dm;
	uv_signal_start(&dm->sig_term, on_stop_signal, SIGTERM);
	uv_signal_init(d->loop, &dm->sig_int);
	dm->sig_int.data = dm;
	uv_signal_start(&dm->sig_int, on_stop_signal, SIGINT);
	sv_info("gateway: serving https://%s for the workers in etcd %s (state %s)", listen_addr, o->etcd,
		d->state_dir);
	uv_run(d->loop, UV_RUN_DEFAULT);
	gateway_free(g);
	tls_server_ctx_free(dm->tcp_server.tls);
	tls_server_ctx_free(cfg.worker_tls);
	http_server_destroy(&dm->tcp_server);
	auth_close(d->keys);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"state-dir", required_argument, NULL, 'd'}, {"socket", required_argument, NULL, 's'},
		{"listen", required_argument, NULL, 'l'},    {"images", required_argument, NULL, 'i'},
		{"vmm", required_argument, NULL, 'v'},       {"max-sandboxes", required_argument, NULL, 'n'},
		{"max-memory", required_argument, NULL, 'm'}, {"log-level", required_argument, NULL, 'L'},
		{"new-key", required_argument, NULL, 'k'},   {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},         {"image-builder", required_argument, NULL, 'b'},
		{"no-net", no_argument, NULL, 'N'},          {"image-sweep", required_argument, NULL, 'S'},
		{"rotate-managed-key", no_argument, NULL, 'R'},
		{"allow-private-egress", required_argument, NULL, 'P'},
		{"image-dir", required_argument, NULL, 'I'},
		{"listen-insecure", required_argument, NULL, 'T'},
		{"tls-cert", required_argument, NULL, 'C'},
		{"tls-key", required_argument, NULL, 'K'},
		{"ingress", required_argument, NULL, 'G'},
		{"ingress-domain", required_argument, NULL, 'D'},
		{"ingress-tls-cert", required_argument, NULL, 'c'},
		{"ingress-tls-key", required_argument, NULL, 'e'},
		{"ingress-timeout", required_argument, NULL, 'O'},
		{"ingress-max-connections", required_argument, NULL, 'x'},
		{"tunnel-ports", required_argument, NULL, 'u'},
		{"tunnel-host", required_argument, NULL, 'H'},
		{"tunnel-max-connections", required_argument, NULL, OPT_TUNNEL_MAX_CONNECTIONS},
		{"tunnel-idle-timeout", required_argument, NULL, OPT_TUNNEL_IDLE_TIMEOUT},
		{"no-jail", no_argument, NULL, OPT_NO_JAIL},
		{"cold-boot", no_argument, NULL, OPT_COLD_BOOT},
		{"jail-ids", required_argument, NULL, OPT_JAIL_IDS},
		{"cgroup-root", required_argument, NULL, OPT_CGROUP_ROOT},
		{"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
		{"metrics-auth", required_argument, NULL, OPT_METRICS_AUTH},
		{"isolation-probe", required_argument, NULL, OPT_ISOLATION_PROBE},
		{"isolation-probe-peer", required_argument, NULL, OPT_ISOLATION_PROBE_PEER},
		{"isolation-probe-deny", required_argument, NULL, OPT_ISOLATION_PROBE_DENY},
		{"etcd", required_argument, NULL, OPT_ETCD},
		{"advertise", required_argument, NULL, OPT_ADVERTISE},
		{"worker-id", required_argument, NULL, OPT_WORKER_ID},
		{"gateway", no_argument, NULL, OPT_GATEWAY},
		{"tls-ca", required_argument, NULL, OPT_TLS_CA},
		{"relay-idle-timeout", required_argument, NULL, OPT_RELAY_IDLE_TIMEOUT},
		{"spare-vmms", required_argument, NULL, OPT_SPARE_VMMS},
		{NULL, 0, NULL, 0}};
	struct daemon *dm = calloc(1, sizeof(*dm));
	struct sandboxd *d = &dm->d;
	const char *socket_path = DEFAULT_SOCKET, *listen_addr = NULL, *insecure_addr = NULL, *new_key = NULL;
	struct tls_options tls = {0}, ingress_tls = {0};
	const char *ingress_addr = NULL, *ingress_domain = NULL, *cgroup_root = NULL;
	const char *metrics_addr = NULL, *metrics_auth = NULL;
	unsigned ingress_timeout_s = INGRESS_DEFAULT_RESPONSE_TIMEOUT_MS / 1000;
	struct isolation_monitor_config isolation = {0};
	struct fleet_worker_config fleet = {0};
	const char *worker_id = NULL;
	bool builder_given = false, rotate = false, gateway = false;
	unsigned spare_vmms = SANDBOXD_SPARE_VMMS_DEFAULT;
	struct gateway_options gw = {0};
	enum sv_log_level level = SV_LOG_INFO;
	char keys_path[sizeof(d->state_dir) + 16], dir[sizeof(d->state_dir) + 16], why[512];
	struct sysinfo si;
	int c, r;

	sv_log_init("sandboxd", SV_LOG_INFO);
	if (!dm) {
		fprintf(stderr, "sandboxd: out of memory\n");
		return 1;
	}
	snprintf(d->state_dir, sizeof(d->state_dir), "%s", DEFAULT_STATE_DIR);
	d->max_sandboxes = 64;
	d->ingress_max_connections = INGRESS_DEFAULT_MAX_CONNECTIONS;
	d->tunnel_max_connections = TUNNEL_DEFAULT_MAX_CONNECTIONS;
	d->tunnel_idle_timeout_s = TUNNEL_DEFAULT_IDLE_TIMEOUT_S;
	d->image_sweep_s = 3600;
	d->net_enabled = true;
	jail_host_defaults(&d->jail);
	d->allow_private = cJSON_CreateArray();
	if (!d->allow_private)
		return 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': snprintf(d->state_dir, sizeof(d->state_dir), "%s", optarg); break;
		case 's': socket_path = optarg; break;
		case 'l': listen_addr = optarg; break;
		case 'T': insecure_addr = optarg; break;
		case 'C': tls.cert = optarg; break;
		case 'K': tls.key = optarg; break;
		case 'G': ingress_addr = optarg; break;
		case 'D': ingress_domain = optarg; break;
		case 'c': ingress_tls.cert = optarg; break;
		case 'e': ingress_tls.key = optarg; break;
		case 'O':
			if (parse_uint(optarg, &ingress_timeout_s) < 0 || ingress_timeout_s > 86400) {
				fprintf(stderr, "sandboxd: --ingress-timeout wants seconds, 1..86400\n");
				return 2;
			}
			break;
		case 'x':
			if (parse_uint(optarg, &d->ingress_max_connections) < 0) {
				fprintf(stderr, "sandboxd: --ingress-max-connections wants a positive number\n");
				return 2;
			}
			break;
		case 'u':
			if (parse_port_range(optarg, &d->tunnel_port_lo, &d->tunnel_port_hi) < 0) {
				fprintf(stderr, "sandboxd: --tunnel-ports wants LO-HI, ports 1..65535 with LO <= HI\n");
				return 2;
			}
			break;
		case 'H':
			if (!*optarg || strlen(optarg) >= sizeof(d->tunnel_host) || strpbrk(optarg, " /\t\r\n")) {
				fprintf(stderr, "sandboxd: --tunnel-host wants a host name or address\n");
				return 2;
			}
			snprintf(d->tunnel_host, sizeof(d->tunnel_host), "%s", optarg);
			break;
		case OPT_TUNNEL_MAX_CONNECTIONS:
			if (parse_uint(optarg, &d->tunnel_max_connections) < 0) {
				fprintf(stderr, "sandboxd: --tunnel-max-connections wants a positive number\n");
				return 2;
			}
			break;
		case OPT_TUNNEL_IDLE_TIMEOUT:
			if (parse_uint(optarg, &d->tunnel_idle_timeout_s) < 0 || d->tunnel_idle_timeout_s > 86400) {
				fprintf(stderr, "sandboxd: --tunnel-idle-timeout wants seconds, 1..86400\n");
				return 2;
			}
			break;
		case OPT_NO_JAIL: d->jail.enabled = false; break;
		case OPT_JAIL_IDS:
			if (jail_host_parse_ids(optarg, &d->jail.first, &d->jail.count) < 0) {
				fprintf(stderr, "sandboxd: --jail-ids wants FIRST:COUNT, FIRST >= 1, COUNT 1..%u, "
						"the last id below 4294967295\n", JAIL_HOST_IDS_COUNT_MAX);
				return 2;
			}
			break;
		case OPT_CGROUP_ROOT: cgroup_root = optarg; break;
		case OPT_GATEWAY: gateway = true; break;
		case OPT_TLS_CA: gw.ca = optarg; break;
		case OPT_RELAY_IDLE_TIMEOUT:
			if (parse_uint(optarg, &gw.relay_idle_s) < 0 || gw.relay_idle_s > 86400) {
				sv_err("--relay-idle-timeout wants seconds, 1..86400");
				return 2;
			}
			break;
		case OPT_METRICS_LISTEN: metrics_addr = optarg; break;
		case OPT_METRICS_AUTH: metrics_auth = optarg; break;
		case OPT_ISOLATION_PROBE:
			if (isolation_interval_parse(optarg, &isolation.interval_s) < 0) {
				fprintf(stderr, "sandboxd: --isolation-probe wants seconds, %d..%d\n", ISOLATION_INTERVAL_MIN,
					ISOLATION_INTERVAL_MAX);
				return 2;
			}
			break;
		case OPT_ISOLATION_PROBE_PEER:
			if (isolation_endpoint_parse(optarg, &isolation.peer, why, sizeof(why)) < 0) {
				fprintf(stderr, "sandboxd: --isolation-probe-peer %s\n", why);
				return 2;
			}
			isolation.has_peer = true;
			break;
		case OPT_ETCD: fleet.endpoints = gw.etcd = optarg; break;
		case OPT_ADVERTISE: fleet.advertise = optarg; break;
		case OPT_WORKER_ID: worker_id = optarg; break;
		case OPT_ISOLATION_PROBE_DENY:
			if (isolation.ndeny == ISOLATION_DENY_MAX) {
				fprintf(stderr, "sandboxd: --isolation-probe-deny: at most %d\n", ISOLATION_DENY_MAX);
				return 2;
			}
			if (isolation_endpoint_parse(optarg, &isolation.deny[isolation.ndeny], why, sizeof(why)) < 0) {
				fprintf(stderr, "sandboxd: --isolation-probe-deny %s\n", why);
				return 2;
			}
			isolation.ndeny++;
			break;
		case 'i': snprintf(d->images_dir, sizeof(d->images_dir), "%s", optarg); break;
		case 'v': snprintf(d->vmm_path, sizeof(d->vmm_path), "%s", optarg); break;
		case 'b':
			snprintf(d->image_builder, sizeof(d->image_builder), "%s", optarg);
			builder_given = true;
			break;
		case 'n':
			if (parse_uint(optarg, &d->max_sandboxes) < 0) {
				fprintf(stderr, "sandboxd: --max-sandboxes wants a positive number\n");
				return 2;
			}
			break;
		case 'm':
			if (parse_uint(optarg, &d->max_memory_mib) < 0) {
				fprintf(stderr, "sandboxd: --max-memory wants a positive number of MiB\n");
				return 2;
			}
			break;
		case 'L':
			level = !strcmp(optarg, "error")  ? SV_LOG_ERROR
				: !strcmp(optarg, "warn") ? SV_LOG_WARN
				: !strcmp(optarg, "debug") ? SV_LOG_DEBUG
							   : SV_LOG_INFO;
			break;
		case 'k': new_key = optarg; break;
		case 'N': d->net_enabled = false; break;
		case OPT_COLD_BOOT: d->no_templates = true; break;
		case OPT_SPARE_VMMS:
			spare_vmms = 0; /* "0": none (parse_uint takes positive numbers only) */
			if ((strcmp(optarg, "0") != 0 && parse_uint(optarg, &spare_vmms) < 0) ||
			    spare_vmms > VMM_SPARES_MAX) {
				fprintf(stderr, "sandboxd: --spare-vmms wants 0..%u\n", VMM_SPARES_MAX);
				return 2;
			}
			break;
		case 'P':
			if (net_private_add(d->allow_private, optarg, why, sizeof(why)) < 0) {
				fprintf(stderr, "sandboxd: --allow-private-egress: %s\n", why);
				return 2;
			}
			break;
		case 'I':
			if (image_dirs_add(&d->image_dirs, optarg, why, sizeof(why)) < 0 ||
			    d->image_dirs.count == IMAGE_PATH_MAX_DIRS) {
				fprintf(stderr, "sandboxd: --image-dir: %s\n",
					d->image_dirs.count == IMAGE_PATH_MAX_DIRS ? "at most 7 folders" : why);
				return 2;
			}
			break;
		case 'R': rotate = true; break;
		case 'S':
			if (parse_uint(optarg, &d->image_sweep_s) < 0) {
				fprintf(stderr, "sandboxd: --image-sweep wants a positive number of seconds\n");
				return 2;
			}
			break;
		case 'V': printf("sandboxd %s\n", SANDVM_VERSION); return 0;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc) {
		fputs(usage, stderr);
		return 2;
	}
	sv_log_init("sandboxd", level);
	if (!new_key && !rotate && !gateway && fleet_config(&fleet, worker_id) < 0)
		return 2;
	snprintf(dir, sizeof(dir), "%s/sandboxes", d->state_dir);
	r = make_dirs(dir, 0700);
	if (r < 0) {
		sv_err("cannot create %s: %s", dir, strerror(-r));
		return 1;
	}
	snprintf(keys_path, sizeof(keys_path), "%s/api-keys", d->state_dir);
	if (new_key) {
		char key[128];

		r = auth_new_key(keys_path, new_key, key, sizeof(key));
		if (r < 0) {
			fprintf(stderr, "sandboxd: cannot make a key: %s\n",
				r == -EINVAL ? "the name must match [A-Za-z0-9._-]{1,64}" : strerror(-r));
			return 1;
		}
		printf("%s\n", key);
		fprintf(stderr, "sandboxd: key \"%s\" added to %s (only its hash is stored; keep the key)\n",
			new_key, keys_path);
		return 0;
	}
	if (rotate)
		return snapshots_rotate_managed_key(d->state_dir) < 0 ? 1 : 0;
	if ((gw.ca || gw.relay_idle_s) && !gateway) {
		sv_err("--tls-ca and --relay-idle-timeout go with --gateway");
		return 2;
	}
	if (gateway) {
		if (insecure_addr) {
			sv_err("--gateway serves HTTPS only: --listen, not --listen-insecure");
			return 2;
		}
		if (fleet.advertise || worker_id) {
			sv_err("--advertise and --worker-id are a worker's; a gateway runs no sandboxes");
			return 2;
		}
		return run_gateway(dm, &gw, listen_addr, &tls, keys_path);
	}
	if (snapshots_init(d) < 0)
		return 1;
	default_paths(argv[0], d->images_dir, d->vmm_path, builder_given ? NULL : d->image_builder,
		      sizeof(d->images_dir));
	d->launcher = &vmm_launcher_process;
	if (jail_host_init(&d->jail, cgroup_root) < 0)
		return 1;
	if (images_init(d) < 0) {
		sv_err("out of memory");
		return 1;
	}
	/* The images folder may not exist yet (built on first use): then no path points into it. */
	if (image_dirs_add(&d->image_dirs, d->images_dir, why, sizeof(why)) < 0)
		sv_debug("%s", why);
	if (!d->max_memory_mib && sysinfo(&si) == 0)
		d->max_memory_mib = (unsigned)((unsigned long long)si.totalram * si.mem_unit / (1024 * 1024) * 8 / 10);
	if (access(d->vmm_path, X_OK) < 0) {
		sv_err("the VMM %s is not there (build it, or name it with --vmm)", d->vmm_path);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	/*
	 * Guest agent calls run on the loop, but the VMMs' control sockets and
	 * snapshot jobs still use worker threads; with an arena per thread the
	 * freed buffers stay resident. Two arenas: 8 MiB instead of 22 MiB of RSS
	 * with 50 sandboxes (docs/benchmarks.md).
	 */
	mallopt(M_ARENA_MAX, 2);
	/* Control socket calls and snapshot jobs block worker threads; a few dozen may run at once. */
	setenv("UV_THREADPOOL_SIZE", "64", 0);
	d->loop = uv_default_loop();
	r = auth_open(keys_path, &d->keys);
	if (r < 0)
		return 1;
	http_server_init(&dm->unix_server, d->loop, routes_on_headers, d);
	http_server_init(&dm->tcp_server, d->loop, routes_on_headers, d);
	http_server_init(&dm->metrics_server, d->loop, metrics_on_headers, d);
	metrics_init(&d->metrics, sandboxd_wall_time());
	d->metrics.servers[METRICS_LISTENER_UNIX] = &dm->unix_server;
	raise_nofile_limit();
	net_init(d);
	if (spare_vmms && (r = vmm_spares_new(d->loop, d->vmm_path, spare_vmms, &d->spares)) < 0)
		sv_warn("spare VMMs: %s; each sandbox's VMM starts as a new process", strerror(-r));
	r = sandbox_restore_all(d);
	if (r < 0)
		sv_warn("reading the registry in %s: %s", dir, strerror(-r));
	if (listen_addr && insecure_addr) {
		sv_err("--listen and --listen-insecure exclude each other");
		return 2;
	}
	if (insecure_addr) {
		tls.insecure = true;
		listen_addr = insecure_addr;
	}
	if (ingress_domain && !ingress_addr) {
		sv_err("--ingress-domain goes with --ingress HOST:PORT");
		return 2;
	}
	if (metrics_auth && !metrics_addr) {
		sv_err("--metrics-auth goes with --metrics-listen HOST:PORT");
		return 2;
	}
	/* Registered before serving: a worker whose id another live worker holds does not start. */
	if (fleet.endpoints && (r = fleet_worker_start(d, &fleet, &d->fleet, why, sizeof(why))) < 0) {
		sv_err("--etcd: %s", why);
		return 1;
	}
	if (listen_unix(dm, socket_path) < 0 || (listen_addr && listen_tcp(dm, listen_addr, &tls) < 0) ||
	    (ingress_addr && listen_ingress(dm, ingress_addr, ingress_domain, &ingress_tls, ingress_timeout_s) < 0) ||
	    (metrics_addr && listen_metrics(dm, metrics_addr, &tls, metrics_auth) < 0))
		return 1;
	if (dm->tcp_on)
		d->metrics.servers[METRICS_LISTENER_TCP] = &dm->tcp_server;
	if (dm->ingress_on)
		d->metrics.servers[METRICS_LISTENER_INGRESS] = &dm->ingress.server;
	tunnel_sandbox_adopt_all(d);
	if (start_isolation(dm, &isolation, keys_path, &tls, &ingress_tls) < 0)
		return 1;
	uv_timer_init(d->loop, &d->sweep_timer);
	d->sweep_timer.data = d;
	uv_timer_start(&d->sweep_timer, on_sweep, SWEEP_MS, SWEEP_MS);
	uv_timer_init(d->loop, &d->image_sweep_timer);
	d->image_sweep_timer.data = d;
	uv_timer_start(&d->image_sweep_timer, on_image_sweep, 0, (uint64_t)d->image_sweep_s * 1000);
	uv_signal_init(d->loop, &dm->sig_term);
	dm->sig_term.data = dm;
	uv_signal_start(&dm->sig_term, on_stop_signal, SIGTERM);
	uv_signal_init(d->loop, &dm->sig_int);
	dm->sig_int.data = dm;
	uv_signal_start(&dm->sig_int, on_stop_signal, SIGINT);
	sv_info("serving the API on unix:%s%s%s (state %s, images %s, limits %u sandboxes / %u MiB)",
		socket_path, !dm->tcp_on ? "" : tls.insecure ? " and plain http://" : " and https://",
		dm->tcp_on ? listen_addr : "", d->state_dir, d->images_dir, d->max_sandboxes, d->max_memory_mib);
	uv_run(d->loop, UV_RUN_DEFAULT);
	if (d->fleet) {
		fleet_worker_free(d->fleet);
		d->fleet = NULL;
		uv_run(d->loop, UV_RUN_NOWAIT); /* its handles' close callbacks */
	}
	isolation_monitor_close(d->isolation);
	d->isolation = NULL;
	templates_shutdown(d);
	vmm_spares_free(d->spares);
	d->spares = NULL;
	uv_run(d->loop, UV_RUN_NOWAIT); /* the spares' handles */
	unlink(socket_path);
	tls_server_ctx_free(dm->tcp_server.tls);
	tls_server_ctx_free(dm->metrics_server.tls);
	if (dm->ingress_on) {
		tls_server_ctx_free(dm->ingress.server.tls);
		ingress_proxy_destroy(&dm->ingress);
		tunnel_serve_destroy(&dm->tunnels);
	}
	http_server_destroy(&dm->unix_server);
	http_server_destroy(&dm->tcp_server);
	http_server_destroy(&dm->metrics_server);
	images_destroy(d);
	auth_close(d->keys);
	cJSON_Delete(d->allow_private);
	return 0;
}
