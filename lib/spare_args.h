#ifndef SANDVM_LIB_SPARE_ARGS_H
#define SANDVM_LIB_SPARE_ARGS_H

/*
 * A spare VMM: a VMM process started before it is needed (`vmm --args-from
 * FD`), its program and libraries loaded, waiting on a unix socket for the
 * command line it would have been started with. sandboxd sends one message:
 * the arguments and, as SCM_RIGHTS, the log (the spare's stdout and stderr)
 * then the descriptors the arguments name as fd:3, fd:4, ... The spare puts
 * each where a fresh start would have had it and goes on as that VMM.
 *
 * The message's bytes: SPARE_ARGS_MAGIC with its NUL, then each argument with
 * its NUL; at most SPARE_ARGS_MAX_BYTES, SPARE_ARGS_MAX_ARGS arguments and
 * SPARE_ARGS_MAX_FDS descriptors (the log included).
 */

#include <stddef.h>

#define SPARE_ARGS_MAGIC "sandvm-spare-args 1"
#define SPARE_ARGS_MAX_BYTES 8192u
#define SPARE_ARGS_MAX_ARGS 128u
#define SPARE_ARGS_MAX_FDS 16u
/* The spare's own argument that /proc/PID/cmdline shows the real command line in, once it has it. */
#define SPARE_ARGS_TITLE_BYTES 2048u

/* The message for argv (NULL-ended): its length, or -E2BIG when it does not fit cap or the limits. */
int spare_args_encode(const char *const *argv, char *buf, size_t cap);

/*
 * Splits a received message in place (pure): argv[0..n-1] point into buf and
 * argv[n] is NULL (argv holds max_args + 1). n, or -EINVAL: no magic, an
 * argument without its NUL, no argument at all, or more than max_args.
 */
int spare_args_decode(char *buf, size_t len, char **argv, unsigned max_args);

/* One sendmsg of argv with logfd and fds[0..nfds-1]. 0 or -errno (-E2BIG past the limits). */
int spare_args_send(int sock, const char *const *argv, int logfd, const int *fds, unsigned nfds);

struct spare_args {
	char buf[SPARE_ARGS_MAX_BYTES];
	char *argv[SPARE_ARGS_MAX_ARGS + 1];
	int argc;
};

/*
 * Waits for the message on sock, then: the log on stdout and stderr, the
 * descriptors on 3, 4, ... (without close-on-exec, as a fresh start has
 * them), sock closed. 0 with out filled; -EPIPE when the sender went away
 * without a message (nothing to do: exit quietly); -EPROTO for a message
 * that is not one (truncated, no log, bad bytes); or -errno.
 */
int spare_args_receive(int sock, struct spare_args *out);

/*
 * For a program started as `PROG --args-from FD TITLE` (argc 4): waits on FD
 * (spare_args_receive), shows the command line over its own arguments
 * (spare_args_retitle), and replaces *argc and *argv with what came (they
 * point into sa, which must live as long as they are used). 0; -EBADF for
 * an FD that is not a number from 3 to 1023; or spare_args_receive's errors.
 */
int spare_args_become(int *argc, char ***argv, struct spare_args *sa);

/*
 * Shows argv (NULL-ended) as this process's command line: written over the
 * bytes of its own arguments orig_argv[0..orig_argc-1], which must be
 * contiguous (as the kernel lays them out), cut short where they end.
 */
void spare_args_retitle(char **orig_argv, int orig_argc, char *const *argv);

#endif
