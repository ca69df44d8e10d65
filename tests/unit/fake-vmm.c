/*
 * A stand-in for the VMM, so unit tests drive sandboxd's whole sandbox
 * lifecycle without KVM: it takes the VMM's command line, runs the real
 * guest agent (sandvm-agent --unix, next to this binary) as its "guest",
 * and serves the VMM's vsock socket (CONNECT PORT -> OK, then bytes spliced
 * to the agent) and control socket (every request answered {"ok": true}).
 *
 * What it does is read from the first line of its root file system or
 * initrd (the image a test names): "crash" exits at once with a message on
 * the console, "mute" never answers CONNECT; "sbin DIR" boots with DIR
 * bind-mounted on /sbin in the agent's own mount namespace (root only), so
 * the "guest" has the programs a test put there (the isolation monitor's
 * probe program); anything else boots.
 *
 * Snapshots (docs/vmm.md's contract, in miniature): the control ops
 * "snapshot" (into "dir", or the state and memory files sent as
 * descriptors), "pause", "resume" and "status" answer as the VMM does; the
 * state file it writes is a placeholder ("fake-vmm snapshot 1" and the
 * image's first line), which --restore DIR or --restore-state fd:N
 * --restore-memory fd:M read back: the "guest" then comes up as after a
 * boot of that image. Any other state file is refused as the VMM refuses a
 * broken one, exit status 2 with "snapshot: ...". A snapshot request with
 * "memory_key" writes a "sealed" memory file (a marker and a checksum of
 * the key, no guest bytes); --restore-memory-key fd:K must then give the
 * same key (exactly 32 bytes), or the restore is refused as the VMM's is.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spare_args.h"

static pid_t agent_pid = -1;

#define SNAPSHOT_MAGIC "fake-vmm snapshot 1\n"

/* What a snapshot records: the image's first line (the guest's behaviour). */
static char what[64];
static bool paused, restored;

static void on_term(int sig)
{
	(void)sig;
	/*
	 * The agent goes before the VMM does: a fallback boot of the same sandbox
	 * reuses its agent socket's path, and a dying agent still listening there
	 * would take the new VMM's first connection and reset it.
	 */
	if (agent_pid > 0) {
		kill(agent_pid, SIGKILL);
		while (waitpid(agent_pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	_exit(0);
}

static int listen_at(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0) {
		fprintf(stderr, "fake-vmm: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return fd;
}

static int connect_to(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* "fd:N" as the VMM takes it (sandboxd passes every resource so), or -1 for a path. */
static int fd_arg(const char *v)
{
	return !strncmp(v, "fd:", 3) ? atoi(v + 3) : -1;
}

/* A listening socket given as fd:N, or bound at a path; its path into path (for the agent's socket beside it). */
static int listener(const char *v, char *path, size_t len)
{
	struct sockaddr_un a;
	socklen_t alen = sizeof(a);
	int fd = fd_arg(v);

	if (fd < 0) {
		snprintf(path, len, "%s", v);
		return listen_at(v);
	}
	memset(&a, 0, sizeof(a));
	if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
		fprintf(stderr, "fake-vmm: %s: %s\n", v, strerror(errno));
		exit(1);
	}
	snprintf(path, len, "%s", a.sun_path);
	fcntl(fd, F_SETFD, FD_CLOEXEC); /* not the agent's */
	return fd;
}

static void write_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

struct splice {
	int a, b;
};

/* Bytes both ways; an end of stream is passed on as a half-close, as the VMM's vsock does. */
static void *splice_main(void *arg)
{
	struct splice *s = arg;
	char buf[65536];
	bool a_done = false, b_done = false;

	while (!a_done || !b_done) {
		struct pollfd p[2] = { { .fd = a_done ? -1 : s->a, .events = POLLIN },
				       { .fd = b_done ? -1 : s->b, .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents) {
			n = read(s->a, buf, sizeof(buf));
			if (n < 0 && errno != EINTR)
				break;
			if (n == 0) {
				a_done = true;
				shutdown(s->b, SHUT_WR);
			} else if (n > 0) {
				write_all(s->b, buf, (size_t)n);
			}
		}
		if (p[1].revents) {
			n = read(s->b, buf, sizeof(buf));
			if (n < 0 && errno != EINTR)
				break;
			if (n == 0) {
				b_done = true;
				shutdown(s->a, SHUT_WR);
			} else if (n > 0) {
				write_all(s->a, buf, (size_t)n);
			}
		}
	}
	close(s->a);
	close(s->b);
	free(s);
	return NULL;
}

/*
 * One vsock connection: "CONNECT PORT\n", then the agent's bytes both ways:
 * port 1025 is its relay port (agent_sock + ".relay"), any other its
 * protocol port.
 */
static void vsock_conn(int fd, const char *agent_sock, int mute)
{
	char line[64], relay[PATH_MAX + 32];
	size_t got = 0;
	int agent;
	struct splice *s;
	pthread_t t;

	while (got < sizeof(line) - 1 && read(fd, line + got, 1) == 1 && line[got] != '\n')
		got++;
	line[got] = '\0';
	if (mute)
		return; /* held open, never answered (the fd leaks on purpose: the test kills us) */
	snprintf(relay, sizeof(relay), "%s.relay", agent_sock);
	agent = connect_to(!strcmp(line, "CONNECT 1025") ? relay : agent_sock);
	if (agent < 0) {
		close(fd); /* nothing listens yet: the client retries */
		return;
	}
	write_all(fd, "OK 1\n", 5);
	s = malloc(sizeof(*s));
	s->a = fd;
	s->b = agent;
	pthread_create(&t, NULL, splice_main, s);
	pthread_detach(t);
}

/* The request line and the descriptors sent with it (SCM_RIGHTS), as the VMM reads them. */
static ssize_t recv_request(int fd, char *buf, size_t cap, int *fds, int *nfds)
{
	char ctl[CMSG_SPACE(4 * sizeof(int))];
	struct iovec iov = { .iov_base = buf, .iov_len = cap - 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);

	*nfds = 0;
	if (n <= 0)
		return n;
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			*nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds, CMSG_DATA(c), (size_t)*nfds * sizeof(int));
		}
	return n;
}

/* "KEY":"VALUE" of a flat request, into out; false when absent. */
static bool json_string(const char *req, const char *key, char *out, size_t cap)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(req, pat);
	if (!p)
		return false;
	p += strlen(pat);
	snprintf(out, cap, "%.*s", (int)strcspn(p, "\""), p);
	return true;
}

static bool write_file_fd(int fd, const char *text)
{
	size_t n = strlen(text);

	return ftruncate(fd, 0) == 0 && pwrite(fd, text, n, 0) == (ssize_t)n;
}

#define SEALED_MAGIC "fake-vmm sealed memory check="

/* Not cryptography: enough for a test to tell one key from another. */
static unsigned key_check(const char *hex)
{
	unsigned h = 2166136261u;

	for (; *hex; hex++)
		h = (h ^ (unsigned char)*hex) * 16777619u;
	return h;
}

/* The placeholder state and memory files; the memory file's length, or -1. */
static long snapshot_to(int state_fd, int memory_fd, const char *key_hex)
{
	char state[sizeof(SNAPSHOT_MAGIC) + sizeof(what)], memory[80];

	snprintf(state, sizeof(state), SNAPSHOT_MAGIC "%s", what);
	if (key_hex)
		snprintf(memory, sizeof(memory), SEALED_MAGIC "%u\n", key_check(key_hex));
	else
		snprintf(memory, sizeof(memory), "fake guest memory\n");
	if (!write_file_fd(state_fd, state) || !write_file_fd(memory_fd, memory))
		return -1;
	return (long)strlen(memory);
}

static void snapshot_op(int fd, const char *req, const int *fds, int nfds)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], reply[160], key[80];
	bool sealed = json_string(req, "memory_key", key, sizeof(key));
	int sfd = -1, mfd = -1;
	long bytes = -1;

	if (sealed && strlen(key) != 64) {
		static const char bad[] = "{\"ok\":false,\"error\":\"snapshot: memory_key must be 64 hex digits\"}\n";

		write_all(fd, bad, strlen(bad));
		return;
	}
	if (json_string(req, "dir", dir, sizeof(dir))) {
		snprintf(path, sizeof(path), "%s/state", dir);
		sfd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		snprintf(path, sizeof(path), "%s/memory", dir);
		mfd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	} else if (nfds == 2 && strstr(req, "\"state_fd\":0") && strstr(req, "\"memory_fd\":1")) {
		sfd = dup(fds[0]);
		mfd = dup(fds[1]);
	}
	if (sfd >= 0 && mfd >= 0)
		bytes = snapshot_to(sfd, mfd, sealed ? key : NULL);
	if (sfd >= 0)
		close(sfd);
	if (mfd >= 0)
		close(mfd);
	if (bytes < 0) {
		write_all(fd, "{\"ok\":false,\"error\":\"snapshot: cannot write the files\"}\n", 57);
		return;
	}
	paused = true; /* the VMM leaves the VM paused after a snapshot */
	snprintf(reply, sizeof(reply), "{\"ok\":true,\"state\":\"paused\",\"memory_bytes\":%ld,\"snapshot_ms\":0}\n",
		 bytes);
	write_all(fd, reply, strlen(reply));
}

static void control_conn(int fd)
{
	char buf[4096], reply[160];
	int fds[4], nfds;
	ssize_t n = recv_request(fd, buf, sizeof(buf), fds, &nfds);

	if (n > 0) {
		if (strstr(buf, "\"op\":\"snapshot\"")) {
			snapshot_op(fd, buf, fds, nfds);
		} else if (strstr(buf, "\"op\":\"pause\"")) {
			paused = true;
			write_all(fd, "{\"ok\":true,\"state\":\"paused\"}\n", 31);
		} else if (strstr(buf, "\"op\":\"resume\"")) {
			paused = false;
			write_all(fd, "{\"ok\":true,\"state\":\"running\"}\n", 32);
		} else if (strstr(buf, "\"op\":\"status\"")) {
			snprintf(reply, sizeof(reply), "{\"ok\":true,\"state\":\"%s\",\"restored\":%s}\n",
				 paused ? "paused" : "running", restored ? "true" : "false");
			write_all(fd, reply, strlen(reply));
		} else {
			write_all(fd, "{\"ok\":true}\n", 12);
		}
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	close(fd);
}

static void hex32(const unsigned char *in, char *out)
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", in[i]);
}

/* The memory file against the key (or its absence), as the VMM checks a sealed one. */
static void check_memory(const char *memory_arg, const char *dir, const char *key_arg)
{
	char path[PATH_MAX + 16], buf[128], hex[65];
	unsigned char key[33];
	int fd = fd_arg(memory_arg ? memory_arg : "");
	ssize_t n;

	if (fd < 0) {
		snprintf(path, sizeof(path), "%s/memory", memory_arg ? memory_arg : dir);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
	if (n < 0) {
		fprintf(stderr, "vmm: snapshot: cannot read the memory file: %s\n", strerror(errno));
		exit(2);
	}
	buf[n] = '\0';
	if (!key_arg) {
		if (!strncmp(buf, SEALED_MAGIC, strlen(SEALED_MAGIC))) {
			fprintf(stderr, "vmm: snapshot: memory file is sealed and no --restore-memory-key was given\n");
			exit(2);
		}
		return;
	}
	fd = fd_arg(key_arg);
	n = fd >= 0 ? read(fd, key, sizeof(key)) : -1;
	if (fd >= 0)
		close(fd);
	if (n != 32) {
		fprintf(stderr, "vmm: snapshot: memory key: not exactly 32 bytes\n");
		exit(2);
	}
	hex32(key, hex);
	if (strncmp(buf, SEALED_MAGIC, strlen(SEALED_MAGIC))) {
		fprintf(stderr, "vmm: snapshot: memory file: not a sealed memory file\n");
		exit(2);
	}
	if (strtoul(buf + strlen(SEALED_MAGIC), NULL, 10) != key_check(hex)) {
		fprintf(stderr, "vmm: snapshot: memory file: wrong key: the key does not match this sealed memory file\n");
		exit(2);
	}
}

/* Reads a snapshot's state file back into what; exits 2 as the VMM does for a broken one. */
static void restore_from(const char *state_arg, const char *dir)
{
	char path[PATH_MAX + 16], buf[sizeof(SNAPSHOT_MAGIC) + sizeof(what)];
	int fd = fd_arg(state_arg ? state_arg : "");
	ssize_t n;

	if (fd < 0) {
		snprintf(path, sizeof(path), "%s/state", state_arg ? state_arg : dir);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
	if (n < 0) {
		fprintf(stderr, "vmm: snapshot: cannot read the state file: %s\n", strerror(errno));
		exit(2);
	}
	buf[n] = '\0';
	if (strncmp(buf, SNAPSHOT_MAGIC, strlen(SNAPSHOT_MAGIC))) {
		fprintf(stderr, "vmm: snapshot: bad magic (not a snapshot state file)\n");
		exit(2);
	}
	snprintf(what, sizeof(what), "%s", buf + strlen(SNAPSHOT_MAGIC));
	restored = true;
	fprintf(stderr, "vmm: restored from snapshot in 0 ms\n");
}

int main(int argc, char **argv)
{
	struct spare_args spare;
	const char *vsock = NULL, *control = NULL, *console = NULL, *image = NULL, *restore = NULL,
		   *restore_state = NULL, *restore_memory = NULL, *restore_memory_key = NULL;
	char self[PATH_MAX], agent[PATH_MAX + 32], dir[PATH_MAX], agent_sock[PATH_MAX + 16],
		vsock_path[PATH_MAX], control_path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	int vfd, cfd, mute = 0;
	FILE *f;

	/* A spare, as the VMM's (spare_args.h): waits for its command line, then runs it. */
	if (argc == 4 && !strcmp(argv[1], "--args-from")) {
		int r = spare_args_become(&argc, &argv, &spare);

		if (r == -EPIPE)
			return 0;
		if (r < 0) {
			fprintf(stderr, "fake-vmm: --args-from: %s\n", strerror(-r));
			return 2;
		}
	}
	for (int i = 1; i + 1 < argc; i++) {
		if (!strcmp(argv[i], "--vsock"))
			vsock = argv[++i];
		else if (!strcmp(argv[i], "--control"))
			control = argv[++i];
		else if (!strcmp(argv[i], "--console"))
			console = argv[++i];
		else if (!strcmp(argv[i], "--initrd"))
			image = argv[++i];
		else if (!strcmp(argv[i], "--drive") && !image)
			image = argv[++i];
		else if (!strcmp(argv[i], "--restore"))
			restore = argv[++i];
		else if (!strcmp(argv[i], "--restore-state"))
			restore_state = argv[++i];
		else if (!strcmp(argv[i], "--restore-memory"))
			restore_memory = argv[++i];
		else if (!strcmp(argv[i], "--restore-memory-key"))
			restore_memory_key = argv[++i];
	}
	if (!restore_state != !restore_memory) {
		fprintf(stderr, "vmm: --restore-state and --restore-memory go together\n");
		return 2;
	}
	if (!vsock || !control || n <= 0) {
		fprintf(stderr, "fake-vmm: needs --vsock and --control\n");
		return 2;
	}
	self[n] = '\0';
	if (restore || restore_state) {
		check_memory(restore_memory, restore, restore_memory_key);
		restore_from(restore_state, restore);
		image = NULL; /* the guest is the snapshot's */
	}
	if (image) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s", image);
		path[strcspn(path, ",")] = '\0'; /* a --drive value: PATH,ro,serial=... */
		if (fd_arg(path) >= 0) {
			ssize_t got = pread(fd_arg(path), what, sizeof(what) - 1, 0);

			what[got > 0 ? got : 0] = '\0';
			what[strcspn(what, "\n") + (strchr(what, '\n') ? 1 : 0)] = '\0';
		} else {
			f = fopen(path, "r");
			if (f) {
				if (!fgets(what, sizeof(what), f))
					what[0] = '\0';
				fclose(f);
			}
		}
	}
	if (console) {
		/* fd:N is the console directory, as sandboxd gives it. */
		int cfd = fd_arg(console) >= 0 ? openat(fd_arg(console), "console.log",
							 O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640) : -1;

		f = cfd >= 0 ? fdopen(cfd, "a") : fopen(console, "a");
		if (f) {
			fprintf(f, "fake-vmm: %s %s", restored ? "restored" : "booting", what[0] ? what : "\n");
			fclose(f);
		}
	}
	if (!strncmp(what, "crash", 5)) {
		fprintf(stderr, "fake-vmm: the guest crashed (as its image asked)\n");
		return 5;
	}
	mute = !strncmp(what, "mute", 4);
	snprintf(agent, sizeof(agent), "%s/sandvm-agent", dirname(self));
	vfd = listener(vsock, vsock_path, sizeof(vsock_path));
	cfd = listener(control, control_path, sizeof(control_path));
	snprintf(dir, sizeof(dir), "%s", vsock_path);
	snprintf(agent_sock, sizeof(agent_sock), "%s/agent.sock", dirname(dir));
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	signal(SIGPIPE, SIG_IGN);
	agent_pid = fork();
	if (agent_pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (!strncmp(what, "sbin ", 5)) {
			char sbin[sizeof(what)];

			snprintf(sbin, sizeof(sbin), "%s", what + 5);
			sbin[strcspn(sbin, "\n")] = '\0';
			if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
			    mount(sbin, "/sbin", NULL, MS_BIND, NULL) < 0)
				_exit(126);
		}
		execl(agent, agent, "--unix", agent_sock, (char *)NULL);
		_exit(127);
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = vfd, .events = POLLIN }, { .fd = cfd, .events = POLLIN } };
		int st;

		if (waitpid(agent_pid, &st, WNOHANG) == agent_pid) {
			fprintf(stderr, "fake-vmm: the agent exited\n");
			return 1;
		}
		if (poll(p, 2, 200) <= 0)
			continue;
		if (p[0].revents) {
			int fd = accept4(vfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0)
				vsock_conn(fd, agent_sock, mute);
		}
		if (p[1].revents) {
			int fd = accept4(cfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0)
				control_conn(fd);
		}
	}
}
