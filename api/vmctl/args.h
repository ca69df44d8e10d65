#ifndef SANDVM_API_VMCTL_ARGS_H
#define SANDVM_API_VMCTL_ARGS_H

/*
 * Command-line pieces every vmctl command shares: the global options (also
 * accepted after the command name), exit statuses, and parsers of numbers
 * and K=V words that print a usage error naming the option.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct cJSON cJSON;

/* Exit statuses of vmctl itself; any other is the remote command's. */
#define VMCTL_EXIT_LOCAL 1   /* a local file could not be read or written */
#define VMCTL_EXIT_USAGE 2
#define VMCTL_EXIT_FAILED 125 /* sandboxd unreachable or it refused the request */

#define VMCTL_DEFAULT_HOST "unix:///run/sandvm/sandboxd.sock"

struct vmctl_args {
	const char *host;     /* --host, else SANDVM_HOST, else the default */
	const char *key_file; /* --key-file; NULL when not given */
	const char *cacert;   /* --cacert, else SANDVM_CACERT, else the system's CAs */
	bool verbose;
};

/* Option values the common options use in every command's getopt table. */
enum {
	VMCTL_OPT_HOST = 1000,
	VMCTL_OPT_KEY_FILE,
	VMCTL_OPT_CACERT,
	VMCTL_OPT_VERBOSE,
	VMCTL_OPT_HELP,
	VMCTL_OPT_FIRST_COMMAND, /* commands number their own options from here */
};

#define VMCTL_COMMON_OPTIONS                                                   \
	{ "host", required_argument, NULL, VMCTL_OPT_HOST },                   \
	{ "key-file", required_argument, NULL, VMCTL_OPT_KEY_FILE },           \
	{ "cacert", required_argument, NULL, VMCTL_OPT_CACERT },               \
	{ "verbose", no_argument, NULL, VMCTL_OPT_VERBOSE },                   \
	{ "help", no_argument, NULL, VMCTL_OPT_HELP }

#define VMCTL_COMMON_USAGE                                                     \
	"Common options: --host URL, --key-file FILE, --cacert FILE, --verbose, --help (see vmctl --help)\n"

/*
 * Handles the options of VMCTL_COMMON_OPTIONS except --help. Returns true
 * when opt was one of them.
 */
bool vmctl_args_common(struct vmctl_args *a, int opt, const char *arg);

/*
 * Prints "vmctl: CMD: message" and a pointer to CMD --help on stderr;
 * returns VMCTL_EXIT_USAGE for the caller to return.
 */
int vmctl_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * After getopt_long (with opterr 0 and an option string starting with ':')
 * returned '?' or ':': a usage error naming the option. Returns VMCTL_EXIT_USAGE.
 */
int vmctl_getopt_error(const char *cmd, int c, char **argv);

/*
 * A whole non-negative decimal number (at most 2^53, which JSON carries
 * exactly); ranges are the server's to check. 0 or -EINVAL after printing
 * a usage error.
 */
int vmctl_parse_number(const char *cmd, const char *opt, const char *s, uint64_t *out);

/* K=V with a non-empty K, set (or replaced) in the JSON object obj. */
int vmctl_parse_kv(const char *cmd, const char *opt, const char *s, cJSON *obj);

/*
 * Index of the first "--" in argv[1..argc), or argc when there is none:
 * what follows it is a command line, never options of ours.
 */
int vmctl_find_dashdash(int argc, char **argv);

#endif
