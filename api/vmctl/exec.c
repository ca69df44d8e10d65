/*
 * vmctl exec and vmctl run: a command in a sandbox with its output, input
 * and signals streamed. Three threads: the main one reads the output stream
 * and decides the exit status; one forwards stdin as a chunked upload; one
 * takes SIGINT, SIGTERM and SIGHUP (blocked everywhere else) and forwards
 * them. The process ends as soon as the exit frame is in, whatever the
 * stdin thread is blocked in.
 */
#include "commands.h"
#include "exec_frames.h"
#include "http.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Reconnects to an output stream that broke before its last frame. */
#define EXEC_OUTPUT_RETRIES 5
/* For `run`: a second signal this soon after the first gives up on the command. */
#define EXEC_GIVE_UP_NS 1000000000L
#define EXEC_DELETE_TIMEOUT_S 60L

static const char exec_usage[] =
	"usage: vmctl exec [OPTIONS] ID -- CMD [ARG...]\n"
	"Runs CMD in a running sandbox with stdin, stdout and stderr streamed, and exits\n"
	"with its status (128+N when a signal N killed it, 124 on --timeout). Ctrl-C,\n"
	"SIGTERM and SIGHUP are passed on to CMD. Exit status 125: vmctl or sandboxd failed.\n"
	"\n"
	"  --timeout S        kill CMD (and its process group) after S seconds\n"
	"  --workdir PATH     working directory (default: the sandbox's)\n"
	"  --env K=V          environment entry, added to the sandbox's (repeatable)\n"
	"  --no-stdin         do not forward stdin (CMD's stdin is closed at once)\n"
	VMCTL_COMMON_USAGE;

static const char run_usage[] =
	"usage: vmctl run [CREATE OPTIONS] [--no-stdin] -- CMD [ARG...]\n"
	"Single use: creates a sandbox, runs CMD in it as vmctl exec does, and removes the\n"
	"sandbox, also on error or Ctrl-C (twice within a second: stop waiting for CMD).\n"
	"Exits with CMD's status. Progress goes to stderr when it is a terminal or with\n"
	"--verbose.\n"
	"\n" VMCTL_CREATE_USAGE
	"  --no-stdin                   do not forward stdin (CMD's stdin is closed at once)\n"
	VMCTL_COMMON_USAGE;

enum {
	OPT_EXEC_TIMEOUT = VMCTL_OPT_FIRST_OTHER,
	OPT_EXEC_WORKDIR,
	OPT_EXEC_ENV,
	OPT_NO_STDIN,
};

struct exec_session {
	const struct vmctl_client *client;
	bool is_run;
	sigset_t signals;
	pthread_t signal_thread;
	bool signal_thread_started;

	pthread_mutex_t lock;
	/* "/v1/sandboxes/ID/execs/EID", under lock; NULL until the exec exists. */
	char *exec_path;
	/* The last signal that came before there was an exec to give it to. */
	int pending_signal;

	atomic_bool give_up;       /* run: abandon the command, remove the sandbox */
	atomic_bool finished;      /* the exit frame is in: stdin's fate no longer matters */
	atomic_bool pipe_broken;   /* our stdout is gone: the command gets SIGPIPE */
	atomic_int last_signal;

	/* Output stream state, main thread only. */
	struct vmctl_frames frames;
	bool final_frame;
	bool stdout_broken;
	int status;
};

/* A tiny local write loop: frames go to fds 1 and 2 unbuffered, in order. */
static int exec_write_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static char *exec_path_with(struct exec_session *s, const char *suffix)
{
	char *p = NULL;

	pthread_mutex_lock(&s->lock);
	if (s->exec_path && asprintf(&p, "%s%s", s->exec_path, suffix) < 0)
		p = NULL;
	pthread_mutex_unlock(&s->lock);
	return p;
}

static void exec_post_signal(struct exec_session *s, int sig)
{
	char *path = exec_path_with(s, "/signal");
	cJSON *body = cJSON_CreateObject();
	struct vmctl_req q;
	int r;

	if (!path || !body || !cJSON_AddNumberToObject(body, "signal", sig)) {
		fprintf(stderr, "vmctl: out of memory, signal %d not passed on\n", sig);
		goto out;
	}
	r = vmctl_request(&q, s->client, "POST", path, body);
	/* 404 and 409: the command ended meanwhile, which is what the signal was for. */
	if ((r || !vmctl_req_ok(&q)) && !atomic_load(&s->finished) &&
	    (r || (q.status != 404 && q.status != 409))) {
		fprintf(stderr, "vmctl: could not pass signal %d on:\n", sig);
		vmctl_req_report(&q, r);
	}
	vmctl_req_destroy(&q);
out:
	cJSON_Delete(body);
	free(path);
}

static long exec_ns_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

static void *exec_signal_main(void *arg)
{
	struct exec_session *s = arg;
	struct timespec last = { 0 };
	bool have_last = false, forward;
	int sig;

	for (;;) {
		if (sigwait(&s->signals, &sig))
			continue;
		if (sig == SIGUSR1) {
			/* Sent by the main thread: our stdout reader went away. */
			if (atomic_exchange(&s->pipe_broken, false))
				exec_post_signal(s, SIGPIPE);
			continue;
		}
		atomic_store(&s->last_signal, sig);
		if (s->is_run && have_last && exec_ns_since(&last) < EXEC_GIVE_UP_NS) {
			atomic_store(&s->give_up, true);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &last);
		have_last = true;
		pthread_mutex_lock(&s->lock);
		forward = s->exec_path != NULL;
		if (!forward)
			s->pending_signal = sig;
		pthread_mutex_unlock(&s->lock);
		if (forward)
			exec_post_signal(s, sig);
		else if (s->is_run)
			fprintf(stderr, "vmctl: interrupted; the sandbox is removed once it is up "
					"(again within 1 s: stop waiting)\n");
	}
	return NULL;
}

/* Before any thread exists (curl's resolver makes some), so that all inherit the mask. */
static int exec_signals_start(struct exec_session *s)
{
	int r;

	sigemptyset(&s->signals);
	sigaddset(&s->signals, SIGINT);
	sigaddset(&s->signals, SIGTERM);
	sigaddset(&s->signals, SIGHUP);
	sigaddset(&s->signals, SIGUSR1);
	r = pthread_sigmask(SIG_BLOCK, &s->signals, NULL);
	if (!r)
		r = pthread_create(&s->signal_thread, NULL, exec_signal_main, s);
	if (r) {
		fprintf(stderr, "vmctl: cannot start the signal thread: %s\n", strerror(r));
		return -r;
	}
	s->signal_thread_started = true;
	return 0;
}

static size_t exec_stdin_read(char *buf, size_t size, size_t nmemb, void *opaque)
{
	ssize_t n;

	(void)opaque;
	do
		n = read(STDIN_FILENO, buf, size * nmemb);
	while (n < 0 && errno == EINTR);
	return n < 0 ? CURL_READFUNC_ABORT : (size_t)n;
}

static void *exec_stdin_main(void *arg)
{
	struct exec_session *s = arg;
	char *path = exec_path_with(s, "/stdin");
	struct vmctl_req q;
	int r;

	r = path ? vmctl_req_init(&q, s->client, "POST", path, NULL) : -ENOMEM;
	if (r) {
		fprintf(stderr, "vmctl: out of memory, stdin not passed on\n");
		free(path);
		return NULL;
	}
	r = vmctl_req_upload(&q, exec_stdin_read, NULL, -1);
	if (!r)
		r = vmctl_req_perform(&q);
	/*
	 * A command that ends before its input does makes the daemon refuse the
	 * rest (or drop the connection): no news. Anything else is.
	 */
	if (!atomic_load(&s->finished) && !r && !vmctl_req_ok(&q) && q.status != 404 && q.status != 409) {
		fprintf(stderr, "vmctl: stdin not passed on:\n");
		vmctl_req_report(&q, r);
	}
	vmctl_req_destroy(&q);
	free(path);
	return NULL;
}

static int exec_stdin_start(struct exec_session *s)
{
	pthread_t t;
	int r = pthread_create(&t, NULL, exec_stdin_main, s);

	if (r) {
		fprintf(stderr, "vmctl: cannot start the stdin thread: %s\n", strerror(r));
		return -r;
	}
	/* Never joined: it may sit in read(0) after the command ended. */
	pthread_detach(t);
	return 0;
}

static int exec_final_frame(struct exec_session *s, unsigned type, const uint8_t *p, size_t n)
{
	cJSON *j = cJSON_ParseWithLength((const char *)p, n);
	const cJSON *rc = cJSON_GetObjectItemCaseSensitive(j, "returncode");
	const cJSON *reason = cJSON_GetObjectItemCaseSensitive(j, "reason");
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");

	s->final_frame = true;
	atomic_store(&s->finished, true);
	s->status = VMCTL_EXIT_FAILED;
	if (type == VMCTL_FRAME_ERROR) {
		fprintf(stderr, "vmctl: %s\n", cJSON_IsString(err) ? err->valuestring : "the exec failed");
	} else if (!cJSON_IsNumber(rc) || rc->valuedouble < 0 || rc->valuedouble > 255) {
		fprintf(stderr, "vmctl: sandboxd sent an exit frame without a returncode\n");
	} else {
		s->status = (int)rc->valuedouble;
		if (cJSON_IsString(reason) && !strcmp(reason->valuestring, "timeout"))
			fprintf(stderr, "vmctl: the command timed out and was killed\n");
	}
	cJSON_Delete(j);
	return 1;
}

static int exec_frame(void *ctx, unsigned type, const uint8_t *p, size_t n)
{
	struct exec_session *s = ctx;

	switch (type) {
	case VMCTL_FRAME_STDOUT:
		if (s->stdout_broken)
			return 0;
		if (exec_write_all(STDOUT_FILENO, p, n) == -EPIPE) {
			/* As a local pipeline would: the writer gets SIGPIPE. */
			s->stdout_broken = true;
			atomic_store(&s->pipe_broken, true);
			pthread_kill(s->signal_thread, SIGUSR1);
		}
		return 0;
	case VMCTL_FRAME_STDERR:
		exec_write_all(STDERR_FILENO, p, n);
		return 0;
	case VMCTL_FRAME_EXIT:
	case VMCTL_FRAME_ERROR:
		return exec_final_frame(s, type, p, n);
	default:
		return 0; /* a newer daemon's frame type: not ours to read */
	}
}

static int exec_output_sink(void *ctx, const char *data, size_t n)
{
	struct exec_session *s = ctx;

	return vmctl_frames_feed(&s->frames, data, n);
}

/* Reads the output stream until its last frame; returns the exit status. */
static int exec_read_output(struct exec_session *s)
{
	char *path = exec_path_with(s, "/output");
	struct vmctl_req q;
	int r = -ENOMEM;

	for (int attempt = 0; path; attempt++) {
		vmctl_frames_init(&s->frames, exec_frame, s);
		r = vmctl_req_init(&q, s->client, "GET", path, NULL);
		if (r)
			break;
		q.sink = exec_output_sink;
		q.sink_ctx = s;
		q.cancel = &s->give_up;
		r = vmctl_req_perform(&q);
		vmctl_frames_destroy(&s->frames);
		if (s->final_frame) {
			vmctl_req_destroy(&q);
			free(path);
			return s->status;
		}
		if (r == -ECANCELED || r == -EPROTO || r == -ENOMEM || (!r && !vmctl_req_ok(&q)) ||
		    (r == -EIO && q.curl_result == CURLE_COULDNT_CONNECT) || attempt == EXEC_OUTPUT_RETRIES) {
			if (r == -EPROTO)
				fprintf(stderr, "vmctl: sandboxd sent a malformed exec output stream\n");
			else if (!r && vmctl_req_ok(&q))
				fprintf(stderr, "vmctl: the exec output stream ended without an exit status\n");
			else if (r != -ECANCELED)
				vmctl_req_report(&q, r);
			vmctl_req_destroy(&q);
			break;
		}
		/* The daemon keeps unread output: a new reader goes on where this one stopped. */
		if (s->client->verbose)
			fprintf(stderr, "vmctl: exec output stream broke; reconnecting\n");
		vmctl_req_destroy(&q);
		sleep(1);
	}
	free(path);
	if (r == -ECANCELED)
		return -ECANCELED;
	return VMCTL_EXIT_FAILED;
}

struct exec_opts {
	cJSON *body;
	bool no_stdin;
};

static int exec_start(struct exec_session *s, const char *id, const cJSON *body)
{
	char *path = vmctl_sandbox_path(id, "/execs"), *esc = NULL;
	const cJSON *eid;
	struct vmctl_req q;
	cJSON *reply = NULL;
	int r, pending;

	r = path ? vmctl_req_init(&q, s->client, "POST", path, body) : -ENOMEM;
	if (r) {
		fprintf(stderr, "vmctl: out of memory\n");
		free(path);
		return VMCTL_EXIT_FAILED;
	}
	q.cancel = &s->give_up;
	r = vmctl_req_perform(&q);
	if (r || !vmctl_req_ok(&q)) {
		r = r == -ECANCELED ? -ECANCELED : vmctl_req_report(&q, r);
		goto out;
	}
	reply = vmctl_req_json(&q);
	eid = cJSON_GetObjectItemCaseSensitive(reply, "id");
	r = VMCTL_EXIT_FAILED;
	if (!cJSON_IsString(eid) || !eid->valuestring[0]) {
		if (reply)
			fprintf(stderr, "vmctl: sandboxd's reply to exec has no id (HTTP %ld)\n", q.status);
		goto out;
	}
	esc = curl_easy_escape(NULL, eid->valuestring, 0);
	pthread_mutex_lock(&s->lock);
	if (esc && asprintf(&s->exec_path, "%s/%s", path, esc) < 0)
		s->exec_path = NULL;
	pending = s->pending_signal;
	s->pending_signal = 0;
	pthread_mutex_unlock(&s->lock);
	if (!s->exec_path) {
		fprintf(stderr, "vmctl: out of memory\n");
		goto out;
	}
	if (s->client->verbose)
		fprintf(stderr, "vmctl: exec %s started\n", eid->valuestring);
	if (pending)
		exec_post_signal(s, pending);
	r = 0;
out:
	curl_free(esc);
	cJSON_Delete(reply);
	vmctl_req_destroy(&q);
	free(path);
	return r;
}

/* The exec part of both commands: returns the exit status, or -ECANCELED (run gave up). */
static int exec_run(struct exec_session *s, const char *id, const cJSON *body, bool with_stdin)
{
	int r = exec_start(s, id, body);

	if (r)
		return r;
	if (with_stdin && exec_stdin_start(s))
		return VMCTL_EXIT_FAILED;
	return exec_read_output(s);
}

static int exec_option(const char *cmd, struct exec_opts *o, int opt, const char *arg)
{
	cJSON *env;
	uint64_t n;

	switch (opt) {
	case OPT_NO_STDIN:
		o->no_stdin = true;
		return 0;
	case OPT_EXEC_TIMEOUT:
		if (vmctl_parse_number(cmd, "--timeout", arg, &n))
			return -EINVAL;
		cJSON_DeleteItemFromObjectCaseSensitive(o->body, "timeout");
		return cJSON_AddNumberToObject(o->body, "timeout", (double)n) ? 0 : -ENOMEM;
	case OPT_EXEC_WORKDIR:
		cJSON_DeleteItemFromObjectCaseSensitive(o->body, "workdir");
		return cJSON_AddStringToObject(o->body, "workdir", arg) ? 0 : -ENOMEM;
	case OPT_EXEC_ENV:
		env = cJSON_GetObjectItemCaseSensitive(o->body, "env");
		if (!env)
			env = cJSON_AddObjectToObject(o->body, "env");
		return env ? vmctl_parse_kv(cmd, "--env", arg, env) : -ENOMEM;
	}
	return -EINVAL;
}

static int exec_add_argv(cJSON *body, char **argv, int n, const char *key)
{
	cJSON *a = cJSON_CreateStringArray((const char *const *)argv, n);

	if (!a || !cJSON_AddItemToObject(body, key, a)) {
		cJSON_Delete(a);
		return -ENOMEM;
	}
	return 0;
}

static void exec_session_init(struct exec_session *s, const struct vmctl_client *c, bool is_run)
{
	memset(s, 0, sizeof(*s));
	s->client = c;
	s->is_run = is_run;
	pthread_mutex_init(&s->lock, NULL);
}

/*
 * The signal thread may still use the session and the client; the process
 * ends right after, so they are left to it.
 */
static void exec_session_end(struct exec_session *s)
{
	if (!s->signal_thread_started) {
		free(s->exec_path);
		pthread_mutex_destroy(&s->lock);
	}
}

int vmctl_cmd_exec(struct vmctl_args *a, int argc, char **argv)
{
	static const struct option opts[] = {
		VMCTL_COMMON_OPTIONS,
		{ "timeout", required_argument, NULL, OPT_EXEC_TIMEOUT },
		{ "workdir", required_argument, NULL, OPT_EXEC_WORKDIR },
		{ "env", required_argument, NULL, OPT_EXEC_ENV },
		{ "no-stdin", no_argument, NULL, OPT_NO_STDIN },
		{ 0 },
	};
	int dd = vmctl_find_dashdash(argc, argv), c, r, ncmd;
	struct exec_opts o = { .body = cJSON_CreateObject() };
	/* Static: the signal thread outlives this function, up to the process exit. */
	static struct vmctl_client client;
	static struct exec_session s;
	char **cmd;

	if (!o.body)
		return VMCTL_EXIT_FAILED;
	r = VMCTL_EXIT_USAGE;
	optind = 0;
	opterr = 0;
	/* Without --, options end at the ID and the rest is the command. */
	while ((c = getopt_long(dd, argv, dd < argc ? ":h" : "+:h", opts, NULL)) != -1) {
		if (c == VMCTL_OPT_HELP || c == 'h') {
			fputs(exec_usage, stdout);
			r = 0;
			goto out;
		}
		if (vmctl_args_common(a, c, optarg))
			continue;
		if (c == '?' || c == ':') {
			vmctl_getopt_error("exec", c, argv);
			goto out;
		}
		if (exec_option("exec", &o, c, optarg))
			goto out;
	}
	if (optind >= dd) {
		vmctl_usage_error("exec", "missing sandbox ID");
		goto out;
	}
	if (!argv[optind][0]) {
		vmctl_usage_error("exec", "empty sandbox ID");
		goto out;
	}
	if (dd < argc && optind + 1 < dd) {
		vmctl_usage_error("exec", "unexpected argument '%s' (the command goes after --)", argv[optind + 1]);
		goto out;
	}
	cmd = dd < argc ? argv + dd + 1 : argv + optind + 1;
	ncmd = dd < argc ? argc - dd - 1 : dd - optind - 1;
	if (ncmd <= 0) {
		vmctl_usage_error("exec", "missing the command to run (after --)");
		goto out;
	}
	if (exec_add_argv(o.body, cmd, ncmd, "argv") ||
	    !cJSON_AddBoolToObject(o.body, "stdin", !o.no_stdin)) {
		r = VMCTL_EXIT_FAILED;
		goto out;
	}
	r = vmctl_client_open(&client, a, true);
	if (r)
		goto out;
	exec_session_init(&s, &client, false);
	r = exec_signals_start(&s) ? VMCTL_EXIT_FAILED : exec_run(&s, argv[optind], o.body, !o.no_stdin);
	exec_session_end(&s);
out:
	cJSON_Delete(o.body);
	return r;
}

static void run_delete(const struct vmctl_client *c, const char *id, bool progress)
{
	char *path = vmctl_sandbox_path(id, "");
	struct vmctl_req q;
	int r;

	if (progress)
		fprintf(stderr, "vmctl: removing sandbox %s\n", id);
	r = path ? vmctl_req_init(&q, c, "DELETE", path, NULL) : -ENOMEM;
	if (r) {
		fprintf(stderr, "vmctl: out of memory; sandbox %s not removed\n", id);
		free(path);
		return;
	}
	/* A daemon that hangs must not keep us (and a Ctrl-C-ing user) here forever. */
	curl_easy_setopt(q.easy, CURLOPT_TIMEOUT, EXEC_DELETE_TIMEOUT_S);
	r = vmctl_req_perform(&q);
	/* 404: a restricted sandbox is gone after its exec. */
	if (r || (!vmctl_req_ok(&q) && q.status != 404)) {
		fprintf(stderr, "vmctl: could not remove sandbox %s (it ends at its timeout):\n", id);
		vmctl_req_report(&q, r);
	}
	vmctl_req_destroy(&q);
	free(path);
}

struct run_parse_ctx {
	cJSON *create;
	struct exec_opts *o;
};

static int run_handle(void *ctx, int opt, const char *arg)
{
	struct run_parse_ctx *p = ctx;

	if (opt == OPT_NO_STDIN) {
		p->o->no_stdin = true;
		return 0;
	}
	return vmctl_create_option("run", p->create, opt, arg);
}

static int run_parse(struct vmctl_args *a, int argc, char **argv, cJSON *create, struct exec_opts *o)
{
	static const struct option opts[] = {
		VMCTL_CREATE_OPTIONS,
		{ "no-stdin", no_argument, NULL, OPT_NO_STDIN },
		{ 0 },
	};
	struct run_parse_ctx ctx = { create, o };
	int dd = vmctl_find_dashdash(argc, argv), first, r;

	r = vmctl_cmd_parse(a, "run", run_usage, dd, argv, opts, run_handle, &ctx, &first);
	if (r >= 0)
		return r;
	if (first < dd)
		return vmctl_usage_error("run", "unexpected argument '%s' (the command goes after --)", argv[first]);
	if (dd + 1 >= argc)
		return vmctl_usage_error("run", "missing the command to run (after --)");
	if (exec_add_argv(o->body, argv + dd + 1, argc - dd - 1, "argv") ||
	    !cJSON_AddBoolToObject(o->body, "stdin", !o->no_stdin))
		return VMCTL_EXIT_FAILED;
	return -1;
}

int vmctl_cmd_run(struct vmctl_args *a, int argc, char **argv)
{
	struct exec_opts o = { .body = cJSON_CreateObject() };
	cJSON *create = cJSON_CreateObject();
	/* Static: the signal thread outlives this function, up to the process exit. */
	static struct vmctl_client client;
	static struct exec_session s;
	bool progress;
	char *id = NULL;
	int r, sig;

	r = VMCTL_EXIT_FAILED;
	if (!o.body || !create)
		goto out;
	r = run_parse(a, argc, argv, create, &o);
	if (r >= 0)
		goto out;
	r = vmctl_client_open(&client, a, true);
	if (r)
		goto out;
	progress = a->verbose || isatty(STDERR_FILENO);
	exec_session_init(&s, &client, true);
	if (exec_signals_start(&s)) {
		r = VMCTL_EXIT_FAILED;
		goto end;
	}
	r = vmctl_create_sandbox(&client, create, progress, &s.give_up, &id);
	if (r) {
		if (atomic_load(&s.give_up))
			fprintf(stderr, "vmctl: gave up; the sandbox being created, if any, ends at its timeout\n");
		goto end;
	}
	pthread_mutex_lock(&s.lock);
	sig = s.pending_signal;
	pthread_mutex_unlock(&s.lock);
	r = sig ? -ECANCELED : exec_run(&s, id, o.body, !o.no_stdin);
	if (r == -ECANCELED) {
		fprintf(stderr, "vmctl: stopped waiting for the command\n");
		sig = atomic_load(&s.last_signal);
		r = 128 + (sig ? sig : SIGINT);
	}
	run_delete(&client, id, a->verbose);
end:
	exec_session_end(&s);
	free(id);
out:
	cJSON_Delete(create);
	cJSON_Delete(o.body);
	return r;
}
