/*
 * vmctl: the command-line client of sandboxd (docs/api.md). Global options,
 * then a command; each command parses the rest and returns the exit status.
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "commands.h"

static const char usage[] =
	"usage: vmctl [--host URL] [--key-file FILE] [--cacert FILE] [--verbose] COMMAND [ARGS...]\n"
	"\n"
	"Commands:\n"
	"  create [OPTIONS] [-- CMD...]   start a sandbox, print its id\n"
	"  exec [OPTIONS] ID -- CMD...    run a command in a sandbox, exit with its status\n"
	"  run [OPTIONS] -- CMD...        create, exec, remove: a single-use sandbox\n"
	"  ls [--tag K=V]... [--json]     list sandboxes\n"
	"  inspect ID [--json]            show a sandbox\n"
	"  wait ID [--timeout S]          wait until it finished, exit with its returncode\n"
	"  logs ID                        print the sandbox log (its entrypoint's output)\n"
	"  rm ID...                       stop and forget sandboxes\n"
	"  terminate ID...                stop sandboxes, keep their records\n"
	"  pause ID...                    pause sandboxes to disk (their VMMs stop)\n"
	"  resume ID...                   resume paused sandboxes\n"
	"  cp LOCAL ID:PATH | ID:PATH LOCAL   copy a file in or out (LOCAL may be -)\n"
	"  net show ID [--json]           show a sandbox's network policy and counters\n"
	"  net set ID --open | --block | --cidr-allow CIDR...\n"
	"                                 change a running sandbox's network policy\n"
	"  snapshot-dir ID PATH [--key-file F] [--ttl S|none]\n"
	"                                 make an encrypted image of a directory, print its id\n"
	"  mount ID PATH IMAGE [--key-file F]   mount an image in a sandbox\n"
	"  unmount ID PATH                unmount it\n"
	"  images [--json]                list snapshot images\n"
	"  image rm IMAGE...              delete snapshot images\n"
	"  connect-token ID [--port P] [--user-metadata JSON] [--ttl S]\n"
	"                                 a token for HTTP/WebSocket access to a sandbox's port\n"
	"  connect-tokens ID              list its tokens; connect-token rm ID TID removes one\n"
	"  tunnels ID [--json]            a sandbox's tunnels: their URLs and TCP endpoints\n"
	"  health [--json]                ask sandboxd how it is\n"
	"  selftest isolation [--json]    run the isolation monitor's probes once; exit 0 ok,\n"
	"                                 1 breached, 2 unknown\n"
	"'vmctl COMMAND --help' describes each.\n"
	"\n"
	"Options (also accepted after the command name):\n"
	"  --host URL       unix:///PATH, http://HOST:PORT or https://HOST:PORT; default\n"
	"                   $SANDVM_HOST, else " VMCTL_DEFAULT_HOST "\n"
	"  --cacert FILE    CA certificate(s) that https:// hosts are verified with (default\n"
	"                   $SANDVM_CACERT, else the system's); sandboxd's own CA is\n"
	"                   STATE_DIR/tls/ca.pem\n"
	"  --key-file FILE  file whose first line is the API key (default $SANDVM_API_KEY_FILE,\n"
	"                   else ~/.config/sandvm/api-key); $SANDVM_API_KEY, when set, wins\n"
	"  --verbose        progress on stderr\n"
	"  --version        print the version\n"
	"\n"
	"Exit status: the command's for exec, run and wait; 2 for a usage error; 125 when\n"
	"sandboxd cannot be reached or refuses the request.\n";

static const struct {
	const char *name;
	vmctl_command_fn fn;
} commands[] = {
	{ "create", vmctl_cmd_create },
	{ "exec", vmctl_cmd_exec },
	{ "run", vmctl_cmd_run },
	{ "ls", vmctl_cmd_ls },
	{ "inspect", vmctl_cmd_inspect },
	{ "wait", vmctl_cmd_wait },
	{ "logs", vmctl_cmd_logs },
	{ "rm", vmctl_cmd_rm },
	{ "terminate", vmctl_cmd_terminate },
	{ "pause", vmctl_cmd_pause },
	{ "resume", vmctl_cmd_resume },
	{ "snapshot-dir", vmctl_cmd_snapshot_dir },
	{ "mount", vmctl_cmd_mount },
	{ "unmount", vmctl_cmd_unmount },
	{ "images", vmctl_cmd_images },
	{ "image", vmctl_cmd_image },
	{ "cp", vmctl_cmd_cp },
	{ "net", vmctl_cmd_net },
	{ "connect-token", vmctl_cmd_connect_token },
	{ "connect-tokens", vmctl_cmd_connect_tokens },
	{ "tunnels", vmctl_cmd_tunnels },
	{ "health", vmctl_cmd_health },
	{ "selftest", vmctl_cmd_selftest },
};

enum { OPT_VERSION = VMCTL_OPT_FIRST_COMMAND };

static vmctl_command_fn find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, name))
			return commands[i].fn;
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		VMCTL_COMMON_OPTIONS,
		{ "version", no_argument, NULL, OPT_VERSION },
		{ 0 },
	};
	struct vmctl_args a = { 0 };
	vmctl_command_fn fn;
	char *help_argv[] = { NULL, "--help", NULL };
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		if (c == VMCTL_OPT_HELP || c == 'h') {
			fputs(usage, stdout);
			return 0;
		}
		if (c == OPT_VERSION) {
			printf("vmctl %s\n", SANDVM_VERSION);
			return 0;
		}
		if (!vmctl_args_common(&a, c, optarg))
			return vmctl_getopt_error(NULL, c, argv);
	}
	if (optind >= argc) {
		fputs(usage, stderr);
		return VMCTL_EXIT_USAGE;
	}
	/* `vmctl help [COMMAND]` as people type it. */
	if (!strcmp(argv[optind], "help")) {
		if (optind + 1 >= argc) {
			fputs(usage, stdout);
			return 0;
		}
		fn = find_command(argv[optind + 1]);
		if (!fn)
			return vmctl_usage_error(NULL, "unknown command '%s'", argv[optind + 1]);
		help_argv[0] = argv[optind + 1];
		return fn(&a, 2, help_argv);
	}
	fn = find_command(argv[optind]);
	if (!fn)
		return vmctl_usage_error(NULL, "unknown command '%s'", argv[optind]);
	/* A write to a closed pipe is an error to report, not a death. */
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "vmctl: cannot initialise libcurl\n");
		return VMCTL_EXIT_FAILED;
	}
	/*
	 * No curl_global_cleanup(): exec's stdin thread may still be inside
	 * curl when the command returns, and the process ends here anyway.
	 */
	return fn(&a, argc - optind, argv + optind);
}
