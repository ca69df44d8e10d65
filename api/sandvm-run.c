/*
 * sandvm-run: run one command in a fresh sandbox VM (or in a running one,
 * with --attach) straight through the VMM, without the daemon. Exits with
 * the command's status. docs/sandvm-run.md is the reference.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "sandbox_vm.h"

/* Exit statuses of our own, as docker and timeout(1) use them. */
#define EXIT_SANDBOX_FAILED 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127
#define MAX_ENV 1024

static const char usage[] =
	"usage: sandvm-run [VM OPTIONS] [EXEC OPTIONS] -- CMD [ARG...]\n"
	"       sandvm-run --attach SOCKET|unix:PATH [EXEC OPTIONS] -- CMD [ARG...]\n"
	"       sandvm-run --attach SOCKET FILE-COMMAND\n"
	"\n"
	"VM options (a fresh VM, destroyed afterwards):\n"
	"  --image minimal|debian|PATH  root file system: the initramfs (default), the Debian\n"
	"                               image with python3, or an ext4 image with the agent\n"
	"  --kernel PATH                guest kernel (default: build/guest/vmlinux)\n"
	"  --cpus N                     vCPUs (default 1)\n"
	"  --memory MIB                 guest RAM (default 512)\n"
	"  --cmdline STR                extra kernel arguments\n"
	"  --ready-timeout S            how long to wait for the agent (default 60)\n"
	"  --keep-dir DIR               run directory (sockets, console.log, vmm.log), kept\n"
	"Exec options:\n"
	"  --timeout S                  kill the command (and its process group) after S seconds\n"
	"  --env K=V                    environment entry (repeatable; replaces the default one)\n"
	"  --workdir PATH               working directory (default /)\n"
	"  --user UID[:GID]             run as this user (default 0:0)\n"
	"  --tty                        run on a pseudo-terminal\n"
	"  --no-stdin                   do not forward stdin (it is closed at once)\n"
	"  --verbose                    progress and timings on stderr\n"
	"  --repeat N                   run the command N times on one connection (benchmarks;\n"
	"                               with --verbose, prints round-trip percentiles)\n"
	"File commands (with --attach):\n"
	"  --ping | --cat PATH | --put LOCAL PATH | --stat PATH | --ls PATH\n"
	"  --mkdir PATH [--parents] | --rm PATH [--recursive] | --shutdown\n"
	"  --restored [--hostname NAME]   after a VM was restored from a snapshot: the agent\n"
	"                               reseeds the guest's RNG from the host, sets its clock\n"
	"                               (and hostname) before anything else runs\n"
	"\n"
	"Exit status: the command's; 128+N if it was killed by signal N; 124 on timeout;\n"
	"125 if the sandbox failed; 126 if the command cannot run; 127 if it was not found.\n";

enum { FILE_NONE, FILE_PING, FILE_CAT, FILE_PUT, FILE_STAT, FILE_LS, FILE_MKDIR, FILE_RM, FILE_SHUTDOWN,
       FILE_RESTORED };

struct options {
	const char *image, *kernel, *cmdline, *attach, *keep_dir;
	unsigned cpus, memory_mib, ready_timeout_s, repeat;
	struct agent_exec_request req;
	const char *env[MAX_ENV + 1];
	unsigned nenv;
	bool no_stdin, verbose, parents, recursive;
	int file_cmd;
	const char *file_arg, *file_arg2;
	const char *hostname; /* --hostname, with --restored */
};

static int signal_pipe[2] = { -1, -1 };

static void forward_signal(int sig)
{
	uint8_t b = (uint8_t)sig;
	int saved = errno;

	if (write(signal_pipe[1], &b, 1) < 0) {
		/* Nothing to do: the signal is lost, the command keeps running. */
	}
	errno = saved;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* build/bin/sandvm-run -> build/<rel> */
static char *beside_self(const char *rel)
{
	char self[PATH_MAX], *path;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return strdup(rel);
	self[n] = '\0';
	if (asprintf(&path, "%s/../%s", dirname(self), rel) < 0)
		return NULL;
	return path;
}

static int parse_user(const char *s, uint32_t *uid, uint32_t *gid)
{
	char *end;
	unsigned long u, g;

	errno = 0;
	u = strtoul(s, &end, 10);
	if (errno || end == s || u > 0xfffffffeul)
		return -EINVAL;
	g = u;
	if (*end == ':') {
		const char *gs = end + 1;

		g = strtoul(gs, &end, 10);
		if (errno || end == gs || g > 0xfffffffeul)
			return -EINVAL;
	}
	if (*end)
		return -EINVAL;
	*uid = (uint32_t)u;
	*gid = (uint32_t)g;
	return 0;
}

static unsigned parse_count(const char *opt, const char *s, unsigned max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v == 0 || v > max) {
		fprintf(stderr, "sandvm-run: %s: expected a number from 1 to %u, got '%s'\n", opt, max, s);
		exit(2);
	}
	return (unsigned)v;
}

static void parse_args(int argc, char **argv, struct options *o)
{
	enum {
		O_IMAGE = 256, O_KERNEL, O_CPUS, O_MEMORY, O_CMDLINE, O_READY, O_KEEP, O_TIMEOUT, O_ENV,
		O_WORKDIR, O_USER, O_TTY, O_NOSTDIN, O_VERBOSE, O_ATTACH, O_PING, O_CAT, O_PUT, O_STAT,
		O_LS, O_MKDIR, O_RM, O_PARENTS, O_RECURSIVE, O_SHUTDOWN, O_HELP, O_REPEAT, O_RESTORED, O_HOSTNAME,
	};
	static const struct option opts[] = {
		{ "image", required_argument, NULL, O_IMAGE },
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "memory", required_argument, NULL, O_MEMORY },
		{ "cmdline", required_argument, NULL, O_CMDLINE },
		{ "ready-timeout", required_argument, NULL, O_READY },
		{ "keep-dir", required_argument, NULL, O_KEEP },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "env", required_argument, NULL, O_ENV },
		{ "workdir", required_argument, NULL, O_WORKDIR },
		{ "user", required_argument, NULL, O_USER },
		{ "tty", no_argument, NULL, O_TTY },
		{ "no-stdin", no_argument, NULL, O_NOSTDIN },
		{ "verbose", no_argument, NULL, O_VERBOSE },
		{ "attach", required_argument, NULL, O_ATTACH },
		{ "ping", no_argument, NULL, O_PING },
		{ "cat", required_argument, NULL, O_CAT },
		{ "put", required_argument, NULL, O_PUT },
		{ "stat", required_argument, NULL, O_STAT },
		{ "ls", required_argument, NULL, O_LS },
		{ "mkdir", required_argument, NULL, O_MKDIR },
		{ "rm", required_argument, NULL, O_RM },
		{ "parents", no_argument, NULL, O_PARENTS },
		{ "recursive", no_argument, NULL, O_RECURSIVE },
		{ "shutdown", no_argument, NULL, O_SHUTDOWN },
		{ "help", no_argument, NULL, O_HELP },
		{ "repeat", required_argument, NULL, O_REPEAT },
		{ "restored", no_argument, NULL, O_RESTORED },
		{ "hostname", required_argument, NULL, O_HOSTNAME },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (c) {
		case O_IMAGE: o->image = optarg; break;
		case O_KERNEL: o->kernel = optarg; break;
		case O_CPUS: o->cpus = parse_count("--cpus", optarg, 254); break;
		case O_MEMORY: o->memory_mib = parse_count("--memory", optarg, 1u << 20); break;
		case O_CMDLINE: o->cmdline = optarg; break;
		case O_READY: o->ready_timeout_s = parse_count("--ready-timeout", optarg, 3600); break;
		case O_KEEP: o->keep_dir = optarg; break;
		case O_TIMEOUT:
			o->req.timeout_ms = parse_count("--timeout", optarg, 86400) * 1000u;
			break;
		case O_ENV:
			if (!strchr(optarg, '=') || optarg[0] == '=') {
				fprintf(stderr, "sandvm-run: --env: expected K=V, got '%s'\n", optarg);
				exit(2);
			}
			if (o->nenv == MAX_ENV) {
				fprintf(stderr, "sandvm-run: more than %d --env entries\n", MAX_ENV);
				exit(2);
			}
			o->env[o->nenv++] = optarg;
			break;
		case O_WORKDIR: o->req.workdir = optarg; break;
		case O_USER:
			if (parse_user(optarg, &o->req.uid, &o->req.gid)) {
				fprintf(stderr, "sandvm-run: --user: expected UID[:GID], got '%s'\n", optarg);
				exit(2);
			}
			break;
		case O_TTY: o->req.pty = true; break;
		case O_NOSTDIN: o->no_stdin = true; break;
		case O_VERBOSE: o->verbose = true; break;
		case O_ATTACH: o->attach = optarg; break;
		case O_PING: o->file_cmd = FILE_PING; break;
		case O_CAT: o->file_cmd = FILE_CAT; o->file_arg = optarg; break;
		case O_PUT:
			if (optind >= argc) {
				fprintf(stderr, "sandvm-run: --put LOCAL PATH\n");
				exit(2);
			}
			o->file_cmd = FILE_PUT;
			o->file_arg = optarg;
			o->file_arg2 = argv[optind++];
			break;
		case O_STAT: o->file_cmd = FILE_STAT; o->file_arg = optarg; break;
		case O_LS: o->file_cmd = FILE_LS; o->file_arg = optarg; break;
		case O_MKDIR: o->file_cmd = FILE_MKDIR; o->file_arg = optarg; break;
		case O_RM: o->file_cmd = FILE_RM; o->file_arg = optarg; break;
		case O_PARENTS: o->parents = true; break;
		case O_RECURSIVE: o->recursive = true; break;
		case O_SHUTDOWN: o->file_cmd = FILE_SHUTDOWN; break;
		case O_REPEAT: o->repeat = parse_count("--repeat", optarg, 1000000); break;
		case O_RESTORED: o->file_cmd = FILE_RESTORED; break;
		case O_HOSTNAME: o->hostname = optarg; break;
		case O_HELP: fputs(usage, stdout); exit(0);
		default: fputs(usage, stderr); exit(2);
		}
	}
	if (o->file_cmd != FILE_NONE && !o->attach) {
		fprintf(stderr, "sandvm-run: file commands need --attach SOCKET\n");
		exit(2);
	}
	if (o->file_cmd == FILE_NONE && optind >= argc) {
		fputs(usage, stderr);
		exit(2);
	}
	o->req.argv = (const char *const *)argv + optind;
	if (o->nenv) {
		o->env[o->nenv] = NULL;
		o->req.env = o->env;
	}
}

static int list_entry(void *ctx, const struct agent_proto_list_entry *e)
{
	static const char types[] = "?fdl";

	(void)ctx;
	printf("%c %12llu %s\n", types[e->type < 4 ? e->type : 0], (unsigned long long)e->size, e->name);
	return 0;
}

static int file_command(struct agent_client *c, const struct options *o)
{
	struct agent_proto_stat_result st;
	uint64_t n;
	int r = 0, fd;

	switch (o->file_cmd) {
	case FILE_PING:
		r = agent_client_ping(c, 10000);
		if (!r)
			printf("pong from %s\n", c->agent_name);
		break;
	case FILE_CAT:
		r = agent_client_read_file(c, o->file_arg, STDOUT_FILENO, 0, &n);
		break;
	case FILE_PUT:
		fd = strcmp(o->file_arg, "-") ? open(o->file_arg, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
		if (fd < 0) {
			fprintf(stderr, "sandvm-run: %s: %s\n", o->file_arg, strerror(errno));
			return 1;
		}
		r = agent_client_write_file(c, o->file_arg2, fd, 0644, &n);
		break;
	case FILE_STAT:
		r = agent_client_stat(c, o->file_arg, &st);
		if (!r)
			printf("type=%u mode=%04o size=%llu mtime=%lld uid=%u gid=%u\n", st.type, st.mode,
			       (unsigned long long)st.size, (long long)st.mtime, st.uid, st.gid);
		break;
	case FILE_LS:
		r = agent_client_list(c, o->file_arg, list_entry, NULL);
		break;
	case FILE_MKDIR:
		r = agent_client_mkdir(c, o->file_arg, 0755, o->parents);
		break;
	case FILE_RM:
		r = agent_client_remove(c, o->file_arg, o->recursive);
		break;
	case FILE_SHUTDOWN:
		r = agent_client_shutdown(c, AGENT_PROTO_POWEROFF);
		break;
	case FILE_RESTORED: {
		struct agent_proto_restored m;
		uint8_t entropy[AGENT_PROTO_RESTORED_ENTROPY];

		r = agent_client_restored_prepare(&m, entropy);
		if (r == 0) {
			m.hostname = o->hostname;
			r = agent_client_restored(c, &m, 30000);
		}
		explicit_bzero(entropy, sizeof(entropy));
		if (!r)
			printf("restored\n");
		break;
	}
	}
	if (r) {
		fprintf(stderr, "sandvm-run: %s (%s)\n", agent_client_error(c), strerror(-r));
		return 1;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int run_exec(struct agent_client *c, struct options *o, const struct timespec *t0)
{
	struct agent_exec_io io = {
		.in_fd = o->no_stdin ? -1 : STDIN_FILENO,
		.out_fd = STDOUT_FILENO,
		.err_fd = STDERR_FILENO,
		.signal_fd = signal_pipe[0],
	};
	unsigned rounds = o->repeat ? o->repeat : 1;
	double *took = calloc(rounds, sizeof(*took));
	struct agent_exec_status st;
	struct timespec ts;
	struct winsize ws;
	int r = 0;

	if (!took)
		return EXIT_SANDBOX_FAILED;
	if (o->req.pty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
		o->req.rows = ws.ws_row;
		o->req.cols = ws.ws_col;
	}
	for (unsigned i = 0; i < rounds && !r; i++) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		r = agent_client_exec(c, &o->req, &io, &st);
		took[i] = ms_since(&ts);
		io.in_fd = -1; /* stdin goes to the first run only */
	}
	if (r) {
		free(took);
		fprintf(stderr, "sandvm-run: %s\n", agent_client_error(c));
		if (r == -ENOENT)
			return EXIT_NOT_FOUND;
		if (r == -EACCES || r == -EPERM || r == -E2BIG || r == -EINVAL)
			return EXIT_CANNOT_EXEC;
		return EXIT_SANDBOX_FAILED;
	}
	if (o->verbose)
		fprintf(stderr, "sandvm-run: exec done in %.1f ms (stdout %llu bytes, stderr %llu bytes)\n",
			ms_since(t0), (unsigned long long)st.out_bytes, (unsigned long long)st.err_bytes);
	if (o->verbose && rounds > 1) {
		qsort(took, rounds, sizeof(*took), cmp_double);
		fprintf(stderr, "sandvm-run: exec round trips: n=%u p50=%.3f ms p99=%.3f ms min=%.3f ms\n",
			rounds, took[rounds / 2], took[(size_t)(rounds * 0.99)], took[0]);
	}
	free(took);
	if (st.kind == AGENT_PROTO_EXIT_TIMED_OUT)
		fprintf(stderr, "sandvm-run: command timed out after %u s and was killed\n",
			o->req.timeout_ms / 1000);
	return agent_exec_status_code(&st);
}

static int run_in_fresh_vm(struct options *o)
{
	struct sandbox_vm_config cfg = {
		.cpus = o->cpus ? o->cpus : 1,
		.memory_mib = o->memory_mib ? o->memory_mib : 512,
		.cmdline = o->cmdline,
		.run_dir = o->keep_dir,
	};
	char *vmm = beside_self("bin/vmm");
	char *kernel = o->kernel ? strdup(o->kernel) : beside_self("guest/vmlinux");
	char *initrd = beside_self("guest/initramfs.cpio.gz");
	char *rootfs = NULL;
	struct agent_client c;
	struct sandbox_vm vm;
	struct timespec t0;
	int r, code, vmm_status;

	if (!o->image || !strcmp(o->image, "minimal"))
		rootfs = NULL;
	else if (!strcmp(o->image, "debian"))
		rootfs = beside_self("guest/debian.ext4");
	else
		rootfs = strdup(o->image);
	if (rootfs && access(rootfs, R_OK) < 0) {
		fprintf(stderr, "sandvm-run: image %s: %s%s\n", rootfs, strerror(errno),
			o->image && !strcmp(o->image, "debian") ? " (build it with `make debian-image`)" : "");
		return EXIT_SANDBOX_FAILED;
	}
	cfg.vmm = vmm;
	cfg.kernel = kernel;
	cfg.initrd = initrd;
	cfg.rootfs = rootfs;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (sandbox_vm_start(&cfg, &vm))
		return EXIT_SANDBOX_FAILED;
	r = sandbox_vm_connect(&vm, &c, (int)(o->ready_timeout_s ? o->ready_timeout_s : 60) * 1000);
	if (r) {
		fprintf(stderr, "sandvm-run: sandbox did not come up: %s\n", c.error);
		sandbox_vm_report(&vm, 20);
		sandbox_vm_destroy(&vm);
		return EXIT_SANDBOX_FAILED;
	}
	if (o->verbose)
		fprintf(stderr, "sandvm-run: agent ready after %.1f ms (%s)\n", ms_since(&t0),
			c.agent_name);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	code = run_exec(&c, o, &t0);
	if (agent_client_shutdown(&c, AGENT_PROTO_POWEROFF) == 0) {
		vmm_status = sandbox_vm_wait(&vm, 10000);
		if (vmm_status != 0) {
			fprintf(stderr, "sandvm-run: the VMM exited with status %d\n", vmm_status);
			sandbox_vm_report(&vm, 20);
		}
	} else if (code == EXIT_SANDBOX_FAILED) {
		sandbox_vm_report(&vm, 20);
	}
	agent_client_close(&c);
	sandbox_vm_destroy(&vm);
	free(vmm);
	free(kernel);
	free(initrd);
	free(rootfs);
	return code;
}

/* unix:PATH: an agent run by hand with --unix PATH (debugging, tests). */
static int attach_unix(struct agent_client *c, const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		snprintf(c->error, sizeof(c->error), "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	return agent_client_attach_fd(c, fd, 10000);
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct sigaction sa = { .sa_handler = forward_signal };
	int code;

	parse_args(argc, argv, &o);
	if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		perror("sandvm-run: pipe");
		return EXIT_SANDBOX_FAILED;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (o.attach) {
		struct agent_client c;
		struct timespec t0;
		int r;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (strncmp(o.attach, "unix:", 5) == 0)
			r = attach_unix(&c, o.attach + 5);
		else
			r = agent_client_connect(&c, o.attach, AGENT_CLIENT_PORT,
						 (int)(o.ready_timeout_s ? o.ready_timeout_s : 60) * 1000);
		if (r) {
			fprintf(stderr, "sandvm-run: %s\n", agent_client_error(&c));
			return EXIT_SANDBOX_FAILED;
		}
		if (o.verbose)
			fprintf(stderr, "sandvm-run: connected in %.1f ms\n", ms_since(&t0));
		clock_gettime(CLOCK_MONOTONIC, &t0);
		code = o.file_cmd != FILE_NONE ? file_command(&c, &o) : run_exec(&c, &o, &t0);
		agent_client_close(&c);
		return code;
	}
	return run_in_fresh_vm(&o);
}
