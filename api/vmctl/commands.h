#ifndef SANDVM_API_VMCTL_COMMANDS_H
#define SANDVM_API_VMCTL_COMMANDS_H

/*
 * The vmctl commands. Each takes its own argv (argv[0] is the command name)
 * and returns the process exit status; only main() exits.
 */
#include <stdatomic.h>
#include <stdbool.h>

#include "args.h"

struct option;

struct vmctl_client;

typedef int (*vmctl_command_fn)(struct vmctl_args *a, int argc, char **argv);

int vmctl_cmd_create(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_ls(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_inspect(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_wait(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_logs(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_rm(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_terminate(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_pause(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_resume(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_health(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_cp(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_exec(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_run(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_net(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_snapshot_dir(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_mount(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_unmount(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_images(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_image(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_connect_token(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_connect_tokens(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_tunnels(struct vmctl_args *a, int argc, char **argv);
int vmctl_cmd_selftest(struct vmctl_args *a, int argc, char **argv);

/* The create flags, shared by `create` and `run`. */
enum {
	VMCTL_OPT_IMAGE = VMCTL_OPT_FIRST_COMMAND,
	VMCTL_OPT_CPU,
	VMCTL_OPT_MEMORY,
	VMCTL_OPT_TIMEOUT,
	VMCTL_OPT_IDLE_TIMEOUT,
	VMCTL_OPT_WORKDIR,
	VMCTL_OPT_ENV,
	VMCTL_OPT_NAME,
	VMCTL_OPT_APP,
	VMCTL_OPT_TAG,
	VMCTL_OPT_BLOCK_NETWORK,
	VMCTL_OPT_RESTRICTED,
	VMCTL_OPT_COLD_BOOT,
	VMCTL_OPT_CIDR_ALLOW,
	VMCTL_OPT_ENCRYPTED_PORT,
	VMCTL_OPT_UNENCRYPTED_PORT,
	VMCTL_OPT_H2_PORT,
	VMCTL_OPT_FIRST_OTHER, /* options of single commands from here */
};

#define VMCTL_CREATE_OPTIONS                                                       \
	{ "image", required_argument, NULL, VMCTL_OPT_IMAGE },                     \
	{ "cpu", required_argument, NULL, VMCTL_OPT_CPU },                         \
	{ "memory", required_argument, NULL, VMCTL_OPT_MEMORY },                   \
	{ "timeout", required_argument, NULL, VMCTL_OPT_TIMEOUT },                 \
	{ "idle-timeout", required_argument, NULL, VMCTL_OPT_IDLE_TIMEOUT },       \
	{ "workdir", required_argument, NULL, VMCTL_OPT_WORKDIR },                 \
	{ "env", required_argument, NULL, VMCTL_OPT_ENV },                         \
	{ "name", required_argument, NULL, VMCTL_OPT_NAME },                       \
	{ "app", required_argument, NULL, VMCTL_OPT_APP },                         \
	{ "tag", required_argument, NULL, VMCTL_OPT_TAG },                         \
	{ "block-network", no_argument, NULL, VMCTL_OPT_BLOCK_NETWORK },           \
	{ "restricted", no_argument, NULL, VMCTL_OPT_RESTRICTED },                 \
	{ "cold-boot", no_argument, NULL, VMCTL_OPT_COLD_BOOT },                   \
	{ "cidr-allow", required_argument, NULL, VMCTL_OPT_CIDR_ALLOW },           \
	{ "encrypted-port", required_argument, NULL, VMCTL_OPT_ENCRYPTED_PORT },   \
	{ "unencrypted-port", required_argument, NULL, VMCTL_OPT_UNENCRYPTED_PORT }, \
	{ "h2-port", required_argument, NULL, VMCTL_OPT_H2_PORT }

#define VMCTL_CREATE_USAGE                                                                   \
	"  --image debian|minimal|PATH  root file system (default debian)\n"                \
	"  --cpu N                      vCPUs (default 1)\n"                                 \
	"  --memory MIB                 guest memory in MiB (default 512)\n"                 \
	"  --timeout S                  seconds the sandbox may live (default 300)\n"        \
	"  --idle-timeout S             stop it after S seconds without an exec or file\n"   \
	"                               call (default 0: never)\n"                           \
	"  --workdir PATH               default working directory of execs (default /)\n"    \
	"  --env K=V                    default environment of execs (repeatable)\n"         \
	"  --name NAME                  unique among the running sandboxes of the app\n"     \
	"  --app APP                    namespace of names (default \"default\")\n"          \
	"  --tag K=V                    label, for vmctl ls --tag (repeatable)\n"            \
	"  --block-network              no network access for the guest\n"                   \
	"  --cidr-allow CIDR            network access only to CIDR (repeatable; IPv4 or\n"  \
	"                               IPv6); see vmctl net\n"                               \
	"  --restricted                 single use: one exec, then the sandbox is destroyed\n" \
	"  --cold-boot                  boot the kernel, not the shape's warm-start template\n" \
	"  --encrypted-port P           a tunnel to guest port P: TLS at the URL vmctl\n"    \
	"                               tunnels prints (repeatable; needs sandboxd --ingress)\n" \
	"  --unencrypted-port P         the same, and plain TCP on a host port too\n"      \
	"                               (repeatable; needs sandboxd --tunnel-ports)\n"     \
	"  --h2-port P                  a TLS tunnel with ALPN h2, to an h2c server\n"     \
	"                               (repeatable)\n"

/*
 * Adds create flag opt to the JSON body of POST /v1/sandboxes. 1 when opt
 * is no create flag, 0 when it was, -EINVAL after a usage error.
 */
/*
 * getopt over the common options plus extra (NULL: none), each other option
 * handed to handle (non-zero: a usage error); positional arguments are left in
 * argv[*first..argc). Returns -1 to go on, or an exit status (0 after --help).
 */
int vmctl_cmd_parse(struct vmctl_args *a, const char *cmd, const char *usage, int argc, char **argv,
		    const struct option *extra, int (*handle)(void *ctx, int opt, const char *arg), void *ctx,
		    int *first);

int vmctl_create_option(const char *cmd, cJSON *body, int opt, const char *arg);

/*
 * Appends cidr to the "cidr_allowlist" array of body (made when missing).
 * Only emptiness is checked here; the server judges the CIDR. 0, or -EINVAL
 * after a usage error naming opt.
 */
int vmctl_add_cidr(const char *cmd, const char *opt, cJSON *body, const char *cidr);

/*
 * POST /v1/sandboxes with body; *id is the new sandbox's (free it). With
 * progress, says what it does on stderr. cancel, when set, abandons the
 * request. Returns 0 or the exit status after printing why.
 */
int vmctl_create_sandbox(const struct vmctl_client *c, const cJSON *body, bool progress,
			 const atomic_bool *cancel, char **id);

#endif
