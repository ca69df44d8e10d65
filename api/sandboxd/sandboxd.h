#ifndef SANDVM_API_SANDBOXD_SANDBOXD_H
#define SANDVM_API_SANDBOXD_SANDBOXD_H

/*
 * The daemon's state: its settings, the sandbox registry, the network
 * address pool, the image builds. One per process, made in main.c, touched
 * from the event loop thread only; worker threads get copies of what they
 * need and report back through uv_queue_work completions.
 */

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "image_path.h"
#include "jail_host.h"
#include "metrics.h"
#include "net.h"

struct cJSON;
struct auth_keys;
struct fleet_worker;
struct image_build;
struct isolation_monitor;
struct sandbox;
struct tunnel_serve;
struct vmm_launcher_ops;
struct vmm_spares;

/* Spare VMM processes kept waiting (--spare-vmms; vmm_spares.h). */
#define SANDBOXD_SPARE_VMMS_DEFAULT 2u

/* Template VMs built at once (templates.c); a shape beyond that boots cold meanwhile. */
#define SANDBOXD_TEMPLATE_BUILDS_MAX 8

struct template;

struct sandboxd {
	uv_loop_t *loop;
	char state_dir[256];
	char images_dir[4096];
	struct image_dirs image_dirs; /* where a client's image path may point: images_dir, --image-dir */
	char vmm_path[4096];
	const struct vmm_launcher_ops *launcher; /* how VMMs start and stop (vmm_launcher.h) */
	struct vmm_spares *spares;               /* VMMs started ahead of need, or NULL (vmm_spares.h) */
	struct jail_host jail;                   /* --no-jail, --jail-ids, --cgroup-root (jail_host.h) */
	char image_builder[4096]; /* "" when images cannot be built here */
	unsigned max_sandboxes;
	unsigned max_memory_mib;
	struct auth_keys *keys;
	bool net_enabled;
	struct cJSON *allow_private; /* --allow-private-egress: CIDR strings, for every sandbox */
	struct sandbox *sandboxes;
	uv_timer_t sweep_timer;
	bool stopping;
	uint8_t net_pool[SANDBOXD_NET_POOL_SIZE / 8]; /* network indexes in use (net.c) */
	struct image_build *builds; /* built-in images built on first use (images.c) */
	size_t nbuilds;
	char snapshot_dir[320];     /* snapshot images, their records and wrapped keys */
	unsigned image_sweep_s;     /* how often expired images are deleted */
	char ingress_domain[256];   /* --ingress-domain: connect-token URLs are https://LABEL.DOMAIN[:PORT] */
	unsigned ingress_port;      /* the port of those URLs (--ingress) */
	unsigned ingress_max_connections; /* open ingress connections per sandbox (429 beyond) */
	unsigned tunnel_port_lo, tunnel_port_hi; /* --tunnel-ports LO-HI; 0: no unencrypted tunnels */
	char tunnel_host[256];      /* --tunnel-host: the host of unencrypted tunnels' plain endpoints */
	unsigned tunnel_max_connections;  /* open connections per tunnel (--tunnel-max-connections) */
	unsigned tunnel_idle_timeout_s;   /* a quiet tunnel connection closes (--tunnel-idle-timeout) */
	struct tunnel_serve *tunnel_serve; /* serves tunnel connections (with --ingress; else NULL) */
	struct sockaddr_storage tunnel_bind; /* the --ingress address: plain endpoints listen on its host */
	uv_timer_t image_sweep_timer;
	struct template *templates;  /* warm-start templates by shape (templates.c) */
	bool no_templates;           /* --cold-boot: every create boots (templates unused) */
	unsigned template_jail_ids[SANDBOXD_TEMPLATE_BUILDS_MAX]; /* held by template builds, 0: free */
	struct metrics metrics;      /* GET /metrics (metrics.h, metrics_scrape.c) */
	bool metrics_need_key;       /* the --metrics-listen listener asks for an API key (--metrics-auth) */
	struct isolation_monitor *isolation; /* canary runs (isolation_monitor.h) */
	struct fleet_worker *fleet;  /* --etcd: this worker's record in etcd (fleet/fleet_worker.h); else NULL */
};

/* Wall clock time in seconds (with milliseconds). */
double sandboxd_wall_time(void);

#endif
