#ifndef SANDVM_API_SANDBOXD_SANDBOX_PART_H
#define SANDVM_API_SANDBOXD_SANDBOX_PART_H

/*
 * The parts of a sandbox (its network, its mounted images) plug into the
 * lifecycle through one const ops table each, as the VMM's devices plug into
 * their transport: sandbox.c calls every part at each step of the lifecycle
 * and knows none of them, and each part keeps its state in its own
 * sub-struct of struct sandbox (sb->net, sb->mounts) and its own record
 * fields. Any hook may be NULL.
 */

#include <stddef.h>

struct sandbox;
struct cJSON;
struct sandbox_vm_config;

/* What the parts add to the VMM's command line; the buffers live as long as the launch. */
struct sandbox_launch {
	struct sandbox_vm_config *cfg;
	const char *run_dir;
	char net[64]; /* the guest MAC the net part gives (cfg->net_mac) */
	char net_policy[600], cmdline[256];
};

struct sandbox_part_ops {
	const char *name;
	/* Before the VMM starts: take resources, fill the launch. 0 or -errno with a message; teardown undoes it. */
	int (*setup)(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen);
	/*
	 * A paused sandbox resumes: fill the launch from what the part still
	 * holds, taking nothing new. 0 or -errno with a message.
	 */
	int (*relaunch)(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen);
	/* The VMM is gone for good (or never started, or a restart found it gone); not when it pauses. */
	void (*teardown)(struct sandbox *sb);
	/* A restart reads the part back from the sandbox's record. */
	void (*restore)(struct sandbox *sb, const struct cJSON *record);
	/* A restart found the sandbox's VMM still running, or the sandbox paused: take back what it holds. */
	void (*adopt)(struct sandbox *sb);
	/* Into the registry record. */
	void (*save)(const struct sandbox *sb, struct cJSON *record);
	/* Into the sandbox object of the API. */
	void (*to_json)(const struct sandbox *sb, struct cJSON *out);
};

extern const struct sandbox_part_ops sandbox_jail_part;   /* jail_host.c: uid/gid, jail root, cgroup leaf */
extern const struct sandbox_part_ops sandbox_net_part;    /* net.c */
extern const struct sandbox_part_ops sandbox_mounts_part; /* snapshots.c */
extern const struct sandbox_part_ops sandbox_ingress_part; /* ingress.c */
extern const struct sandbox_part_ops sandbox_tunnels_part; /* tunnels.c: labels, host ports */
extern const struct sandbox_part_ops sandbox_tunnel_listeners_part; /* tunnel_sandbox.c: plain endpoints */

/* Every part, in set-up order (torn down in reverse), NULL-terminated. */
extern const struct sandbox_part_ops *const sandbox_parts[];

#endif
