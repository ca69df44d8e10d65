/*
 * Sandbox lifecycle (sandbox.h): one state machine; the VMM started through
 * the launcher, the guest's readiness checked on the loop, timers for the
 * sandbox timeout and idle timeout, terminate, the VMM's end, adoption of
 * VMMs that outlived a previous daemon, forgetting finished sandboxes.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "agent_client.h"
#include "agent_conn.h"
#include "api_call.h"
#include "exec.h"
#include "image_path.h"
#include "images.h"
#include "log.h"
#include "pause.h"
#include "vmm_control.h"
#include "sandbox.h"
#include "sandbox_part.h"
#include "sandboxd.h"
#include "restored.h"
#include "simage/crypto.h"
#include "store.h"
#include "templates.h"
#include "vmm_launcher.h"

#define READY_TIMEOUT_MS 120000
#define KILL_GRACE_MS 3000
#define IDLE_CHECK_MS 1000
#define FINISHED_KEEP_S 3600

static void finish(struct sandbox *sb, const char *reason, int returncode, const char *message);
static void ready_abort(struct sandbox *sb);
static void ready_done(struct sandbox *sb);
static void start_free(struct sandbox *sb);
static void start_with(struct sandbox *sb, bool warm, const char *mode, const char *why);
static void paused(struct sandbox *sb);
static void resume_end(struct sandbox *sb, int r, const char *why);

/* Start modes (struct sandbox's start_mode) */
static const char START_WARM[] = "warm", START_COLD[] = "cold", START_FALLBACK[] = "cold-fallback";

/*
 * What a VM's launch needs while it starts: the configuration the parts
 * filled, kept until the guest is ready, for a warm start may still fall
 * back to a cold boot with the same parts (same jail, tap, drives).
 */
struct sandbox_start {
	struct sandbox *sb;
	struct sandbox_vm_config cfg;
	struct sandbox_launch launch;
	char kernel[4200], other[4200], run_dir[512];
	struct template_wait wait;
	bool waiting;            /* for its shape's template */
	bool warm;               /* the VMM restores from template_dir */
	bool discard;            /* the warm VMM's end means the template is broken */
	bool resume;             /* a paused sandbox resumes from template_dir (its pause folder) */
	char template_dir[400];
	char fallback_why[400];  /* a warm start that failed, before its VMM is gone */
};

/* The jail first: the others may need the VMM's uid (a tap's owner); torn down last, after the VMM is gone. */
const struct sandbox_part_ops *const sandbox_parts[] = {&sandbox_jail_part, &sandbox_net_part, &sandbox_mounts_part,
							  &sandbox_ingress_part, &sandbox_tunnels_part,
							  &sandbox_tunnel_listeners_part, NULL};

/* Every part's teardown, the last set up first. */
static void parts_teardown(struct sandbox *sb)
{
	size_t n = 0;

	while (sandbox_parts[n])
		n++;
	while (n--)
		if (sandbox_parts[n]->teardown)
			sandbox_parts[n]->teardown(sb);
}

double sandboxd_wall_time(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1000.0;
}

void sandbox_make_id(const char *prefix, char *out, size_t len)
{
	unsigned char b[8];

	if (uv_random(NULL, NULL, b, sizeof(b), 0, NULL) < 0)
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)rand();
	snprintf(out, len, "%s-%02x%02x%02x%02x%02x%02x%02x%02x", prefix, b[0], b[1], b[2], b[3], b[4], b[5],
		 b[6], b[7]);
}

void sandbox_ref(struct sandbox *sb)
{
	sb->refs++;
}

void sandbox_unref(struct sandbox *sb)
{
	if (--sb->refs)
		return;
	cJSON_Delete(sb->net.allow);
	connect_tokens_destroy(&sb->ingress.tokens);
	spec_sandbox_free(&sb->spec);
	free(sb);
}

static void on_handle_closed(uv_handle_t *h)
{
	sandbox_unref(h->data);
}

static void close_handle(struct sandbox *sb, uv_handle_t *h)
{
	if (!h->loop || uv_is_closing(h))
		return;
	h->data = sb;
	sandbox_ref(sb);
	uv_close(h, on_handle_closed);
}

/* Control characters a guest wrote become spaces before they reach a message. */
static void scrub_controls(char *text, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)text[i] < 0x20 && text[i] != '\n')
			text[i] = ' ';
}

static void tail_file(const char *path, char *out, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t size;
	ssize_t n;

	out[0] = '\0';
	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	lseek(fd, size > (off_t)cap - 1 ? size - (off_t)cap + 1 : 0, SEEK_SET);
	n = read(fd, out, cap - 1);
	close(fd);
	out[n > 0 ? n : 0] = '\0';
	scrub_controls(out, n > 0 ? (size_t)n : 0);
}

/* The console's newest bytes, across the VMM's rotation (console.log.1, console.log). */
static void tail_console(const struct sandbox *sb, char *out, size_t cap)
{
	scrub_controls(out, sandbox_vm_console_tail(&sb->vm, out, cap));
}

void sandbox_usage(const struct sandboxd *d, unsigned *count, unsigned *memory_mib)
{
	*count = 0;
	*memory_mib = 0;
	for (const struct sandbox *sb = d->sandboxes; sb; sb = sb->next)
		if (sb->state != SANDBOX_FINISHED) {
			(*count)++;
			if (sb->state != SANDBOX_PAUSED)
				*memory_mib += sb->spec.memory_mib;
		}
}

struct sandbox *sandbox_find(struct sandboxd *d, const char *id_or_name)
{
	struct sandbox *by_name = NULL;

	for (struct sandbox *sb = d->sandboxes; sb; sb = sb->next) {
		if (sb->deleted)
			continue;
		if (!strcmp(sb->id, id_or_name))
			return sb;
		if (sb->spec.name && !strcmp(sb->spec.name, id_or_name) && !strcmp(sb->spec.app, "default") &&
		    (!by_name || !sandbox_has_ended(sb)))
			by_name = sb;
	}
	return by_name;
}

/* A stopping sandbox's result is final: clients see it finished (its VMM is still counted in the host's limits). */
const char *sandbox_state_name(enum sandbox_state s)
{
	static const char *const names[SANDBOX_STATES] = {
		[SANDBOX_STARTING] = "starting", [SANDBOX_RUNNING] = "running", [SANDBOX_PAUSING] = "pausing",
		[SANDBOX_PAUSED] = "paused",     [SANDBOX_RESUMING] = "resuming", [SANDBOX_STOPPING] = "finished",
		[SANDBOX_FINISHED] = "finished",
	};

	return s < SANDBOX_STATES ? names[s] : "finished";
}

void sandbox_not_running(const struct sandbox *sb, char *out, size_t cap)
{
	if (sb->state == SANDBOX_PAUSED || sb->state == SANDBOX_PAUSING)
		snprintf(out, cap, "sandbox %s is %s: resume it first (POST /v1/sandboxes/%s/resume)", sb->id,
			 sandbox_state_name(sb->state), sb->id);
	else
		snprintf(out, cap, "sandbox %s is %s, not running", sb->id, sandbox_state_name(sb->state));
}

bool sandbox_has_ended(const struct sandbox *sb)
{
	return sb->state == SANDBOX_STOPPING || sb->state == SANDBOX_FINISHED;
}

/*
 * Seconds since the epoch with microseconds, written with integer arithmetic:
 * cJSON's own printing of a fraction (%.15g, read back, maybe %.17g) was the
 * biggest cost of a GET of a sandbox (docs/benchmarks.md, bench/http).
 */
static cJSON *time_or_null(double t)
{
	long long us;
	char text[32];

	if (!(t > 0) || t > 1e15)
		return cJSON_CreateNull();
	us = (long long)(t * 1e6 + 0.5);
	snprintf(text, sizeof(text), "%lld.%06lld", us / 1000000, us % 1000000);
	return cJSON_CreateRaw(text);
}

void *sandbox_to_json(const struct sandbox *sb)
{
	cJSON *o = cJSON_Duplicate(sb->spec.json, 1);

	cJSON_AddStringToObject(o, "id", sb->id);
	if (!cJSON_GetObjectItemCaseSensitive(o, "name"))
		cJSON_AddNullToObject(o, "name");
	if (!cJSON_GetObjectItemCaseSensitive(o, "command"))
		cJSON_AddNullToObject(o, "command");
	cJSON_AddStringToObject(o, "state", sandbox_state_name(sb->state));
	cJSON_AddItemToObject(o, "created_at", time_or_null(sb->created_at));
	cJSON_AddItemToObject(o, "started_at", time_or_null(sb->started_at));
	cJSON_AddItemToObject(o, "finished_at", time_or_null(sb->finished_at));
	if (sandbox_has_ended(sb)) {
		cJSON_AddNumberToObject(o, "returncode", sb->returncode);
		cJSON_AddStringToObject(o, "reason", sb->reason ? sb->reason : "failed");
	} else {
		cJSON_AddNullToObject(o, "returncode");
		cJSON_AddNullToObject(o, "reason");
	}
	if (sb->message[0])
		cJSON_AddStringToObject(o, "message", sb->message);
	if (sb->start_mode)
		cJSON_AddStringToObject(o, "start", sb->start_mode);
	else
		cJSON_AddNullToObject(o, "start");
	if (sb->start_reason[0])
		cJSON_AddStringToObject(o, "start_reason", sb->start_reason);
	if (sb->state == SANDBOX_PAUSED || sb->state == SANDBOX_RESUMING) {
		cJSON_AddItemToObject(o, "paused_at", time_or_null(sb->paused_at));
		cJSON_AddNumberToObject(o, "timeout_left", (double)(long long)(sb->timeout_left * 1000) / 1000.0);
	}
	if (sb->resume_error[0])
		cJSON_AddStringToObject(o, "resume_error", sb->resume_error);
	cJSON_AddNumberToObject(o, "execs_running", sb->active);
	for (const struct sandbox_part_ops *const *part = sandbox_parts; *part; part++)
		if ((*part)->to_json)
			(*part)->to_json(sb, o);
	return o;
}

/* ---- watchers of the end ---- */

void sandbox_watch(struct sandbox *sb, struct sandbox_watch *w)
{
	w->next = sb->watchers;
	sb->watchers = w;
}

void sandbox_unwatch(struct sandbox *sb, struct sandbox_watch *w)
{
	for (struct sandbox_watch **p = &sb->watchers; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			return;
		}
}

static void tell_watchers(struct sandbox *sb)
{
	struct sandbox_watch *w;

	while ((w = sb->watchers)) {
		sb->watchers = w->next;
		w->next = NULL;
		w->finished(w);
	}
}

/* ---- ending ---- */

/* A sandbox that never made it into the registry. */
static void discard(struct sandbox *sb)
{
	close_handle(sb, (uv_handle_t *)&sb->timeout_timer);
	close_handle(sb, (uv_handle_t *)&sb->idle_timer);
	close_handle(sb, (uv_handle_t *)&sb->expire_timer);
	sandbox_unref(sb);
}

static void forget(struct sandbox *sb)
{
	for (struct sandbox **p = &sb->d->sandboxes; *p; p = &(*p)->next)
		if (*p == sb) {
			*p = sb->next;
			break;
		}
	store_remove(sb);
	discard(sb);
}

/*
 * The one way a sandbox changes state. STARTING -> RUNNING once the agent
 * answers; STARTING or RUNNING -> STOPPING when its end is decided (a
 * reason and a returncode; the VMM is asked to stop); -> FINISHED when the
 * VMM is gone. Nothing leaves FINISHED.
 */
static void set_state(struct sandbox *sb, enum sandbox_state to)
{
	static const bool allowed[SANDBOX_STATES][SANDBOX_STATES] = {
		[SANDBOX_STARTING] = {[SANDBOX_RUNNING] = true, [SANDBOX_STOPPING] = true, [SANDBOX_FINISHED] = true},
		[SANDBOX_RUNNING] = {[SANDBOX_PAUSING] = true, [SANDBOX_STOPPING] = true, [SANDBOX_FINISHED] = true},
		[SANDBOX_PAUSING] = {[SANDBOX_PAUSED] = true, [SANDBOX_RUNNING] = true, [SANDBOX_STOPPING] = true,
				     [SANDBOX_FINISHED] = true},
		[SANDBOX_PAUSED] = {[SANDBOX_RESUMING] = true, [SANDBOX_STOPPING] = true, [SANDBOX_FINISHED] = true},
		[SANDBOX_RESUMING] = {[SANDBOX_RUNNING] = true, [SANDBOX_PAUSED] = true, [SANDBOX_STOPPING] = true,
				      [SANDBOX_FINISHED] = true},
		[SANDBOX_STOPPING] = {[SANDBOX_FINISHED] = true},
	};

	if (!allowed[sb->state][to]) {
		sv_err("sandbox=%s event=bad_transition from=%d to=%d", sb->id, sb->state, to);
		return;
	}
	sb->state = to;
	/* A finished sandbox is never resumed: its snapshot goes (a sandbox that is forgotten loses its folder anyway). */
	if (to == SANDBOX_FINISHED)
		pause_files_remove(sb->vm.dir);
}

/*
 * A VMM that exits with status 2 (VMM_EXIT_CONFIG) refused what it was given
 * before the guest ran: for a restore, the snapshot (its log says why,
 * "snapshot: ..."). That is the cause even when the agent's connection
 * ended first and left its own message.
 */
static bool vmm_refused(const char *how)
{
	return strcmp(how, "exit status 2") == 0;
}

static void vmm_exited(void *ctx, const char *how)
{
	struct sandbox *sb = ctx;
	struct sandbox_start *st = sb->start;
	char detail[400], log[400];

	sb->vmm = NULL;
	/* A VMM's firewall counters end with it; the next one (a resume, a fallback boot) starts at 0. */
	metrics_fw_retire(&sb->d->metrics, &sb->fw_seen);
	sb->vmm_gen++;
	if (sb->state == SANDBOX_PAUSING || sb->state == SANDBOX_PAUSED) {
		/* Stopped after its snapshot, as asked (else the snapshot job's end decides), or a cut-short resume's VMM. */
		sv_info("sandbox=%s event=vmm_exited pid=%d how=\"%s\"", sb->id, sb->pid, how);
		sb->pid = -1;
		if (sb->state == SANDBOX_PAUSING && !sb->pause_busy)
			paused(sb);
		sandbox_unref(sb); /* the VMM's */
		return;
	}
	if (st && st->resume) {
		/* A resume that failed (or was ended): the sandbox stays paused with its snapshot, or finishes. */
		char why[sizeof(st->fallback_why) + 100];

		if (sb->ready_conn) {
			agent_conn_cancel(sb->ready_conn);
			sb->ready_conn = NULL;
		}
		tail_file(sb->vm.log, log, sizeof(log));
		if (st->fallback_why[0] && !vmm_refused(how))
			snprintf(why, sizeof(why), "%s", st->fallback_why);
		else
			snprintf(why, sizeof(why), "the VMM exited (%s) while it restored the sandbox: %s", how, log);
		if (sb->state == SANDBOX_RESUMING) {
			sv_info("sandbox=%s event=vmm_exited pid=%d how=\"%s\"", sb->id, sb->pid, how);
			sb->pid = -1;
			set_state(sb, SANDBOX_PAUSED);
			resume_end(sb, -EHOSTDOWN, why);
			sandbox_unref(sb); /* the VMM's */
			return;
		}
		resume_end(sb, -ESRCH, "the sandbox ended while it resumed");
		st = NULL;
	}
	if (st && st->warm && sb->state == SANDBOX_STARTING) {
		/* A warm start that failed: the same parts, booted; a broken template goes. */
		char why[sizeof(sb->start_reason)];

		if (sb->ready_conn) {
			agent_conn_cancel(sb->ready_conn);
			sb->ready_conn = NULL;
		}
		tail_file(sb->vm.log, log, sizeof(log));
		if (vmm_refused(how))
			st->discard = true; /* the template itself was refused, whatever the agent saw first */
		if (st->fallback_why[0] && !vmm_refused(how))
			snprintf(why, sizeof(why), "%s", st->fallback_why);
		else
			snprintf(why, sizeof(why), "the restore from the template failed (%s): %s", how, log);
		if (st->discard)
			templates_discard(sb->d, st->template_dir, why);
		start_with(sb, false, START_FALLBACK, why);
		sandbox_unref(sb); /* the warm VMM's */
		return;
	}
	parts_teardown(sb);
	if (sb->state == SANDBOX_STOPPING) {
		set_state(sb, SANDBOX_FINISHED);
		/* Waits that came while the VMM went away: finish() told only those before it. */
		tell_watchers(sb);
	} else if (!sandbox_has_ended(sb) && jail_host_oom_message(sb, sb->message, sizeof(sb->message))) {
		finish(sb, "failed", RC_FAILED, NULL);
	} else if (!sandbox_has_ended(sb)) {
		tail_console(sb, detail, sizeof(detail));
		tail_file(sb->vm.log, log, sizeof(log));
		snprintf(sb->message, sizeof(sb->message), "the VM stopped unexpectedly (%s); VMM log: %s; console: %s",
			 how, log, detail);
		finish(sb, "failed", RC_FAILED, NULL); /* no VMM: straight to FINISHED */
	}
	ready_abort(sb);
	sv_info("sandbox=%s event=vmm_exited pid=%d how=\"%s\"", sb->id, sb->pid, how);
	if (sb->deleted)
		forget(sb);
	sandbox_unref(sb); /* the VMM's */
}

/* Decides the sandbox's end: its result is final from here; the VMM is asked to stop. */
static void finish(struct sandbox *sb, const char *reason, int returncode, const char *message)
{
	bool waiting = sb->start && sb->start->waiting, was_paused = sb->state == SANDBOX_PAUSED;
	struct api_call *pause_call = sb->pause_busy || sb->start ? NULL : sb->pause_call;

	if (sandbox_has_ended(sb))
		return;
	metrics_end(&sb->d->metrics, reason);
	set_state(sb, sb->vmm ? SANDBOX_STOPPING : SANDBOX_FINISHED);
	if (was_paused)
		parts_teardown(sb); /* what it kept for its resume */
	if (pause_call) {
		/* Its snapshot was taken, its VMM was stopping: the pause call learns the end now. */
		sb->pause_call = NULL;
		api_call_fail(pause_call, -ESRCH, NULL, "sandbox %s ended while it paused", sb->id);
		api_call_release(pause_call);
	}
	sb->reason = reason;
	sb->returncode = returncode;
	if (message)
		snprintf(sb->message, sizeof(sb->message), "%s", message);
	sb->finished_at = sandboxd_wall_time();
	uv_timer_stop(&sb->timeout_timer);
	uv_timer_stop(&sb->idle_timer);
	if (!sb->deleted)
		store_save(sb);
	sv_info("sandbox=%s event=finished reason=%s returncode=%d", sb->id, reason, returncode);
	tell_watchers(sb);
	/* Running execs end with the VM: their agent connections break and they finish as usual. */
	if (sb->vmm)
		sb->d->launcher->stop(sb->vmm, KILL_GRACE_MS);
	if (waiting) {
		/* Ended while it waited for its template: no VMM to wait for; the create is answered now. */
		templates_cancel(sb->d, &sb->start->wait);
		sb->start->waiting = false;
		parts_teardown(sb);
		ready_done(sb);
	}
}

void sandbox_terminate(struct sandbox *sb, const char *reason, int returncode, const char *message)
{
	finish(sb, reason, returncode, message);
}

void sandbox_delete(struct sandbox *sb)
{
	if (sb->deleted)
		return;
	finish(sb, "terminated", RC_TERMINATED, NULL);
	sb->deleted = true;
	if (!sb->vmm)
		forget(sb);
}

/* ---- timers ---- */

static void on_timeout(uv_timer_t *t)
{
	struct sandbox *sb = t->data;
	char msg[96];

	snprintf(msg, sizeof(msg), "the sandbox timeout of %u s passed", sb->spec.timeout);
	finish(sb, "timeout", RC_TIMEOUT, msg);
}

static void on_idle_check(uv_timer_t *t)
{
	struct sandbox *sb = t->data;
	char msg[96];

	if (sb->active)
		return;
	if (uv_now(sb->d->loop) - sb->last_active_ms >= (uint64_t)sb->spec.idle_timeout * 1000) {
		snprintf(msg, sizeof(msg), "idle for %u s", sb->spec.idle_timeout);
		finish(sb, "idle_timeout", RC_TIMEOUT, msg);
	}
}

void sandbox_activity(struct sandbox *sb, int delta)
{
	sb->active += delta;
	sb->last_active_ms = uv_now(sb->d->loop);
}

static void arm_timers(struct sandbox *sb)
{
	double left = sb->deadline - sandboxd_wall_time();

	uv_timer_start(&sb->timeout_timer, on_timeout, left > 0 ? (uint64_t)(left * 1000) : 0, 0);
	if (sb->spec.idle_timeout) {
		sb->last_active_ms = uv_now(sb->d->loop);
		uv_timer_start(&sb->idle_timer, on_idle_check, IDLE_CHECK_MS, IDLE_CHECK_MS);
	}
}

/* ---- create ---- */

static struct sandbox *sandbox_alloc(struct sandboxd *d)
{
	struct sandbox *sb = calloc(1, sizeof(*sb));

	if (!sb)
		return NULL;
	sb->d = d;
	sb->refs = 1;
	sb->pid = -1;
	uv_timer_init(d->loop, &sb->timeout_timer);
	uv_timer_init(d->loop, &sb->idle_timer);
	uv_timer_init(d->loop, &sb->expire_timer);
	sb->timeout_timer.data = sb->idle_timer.data = sb->expire_timer.data = sb;
	return sb;
}

static void start_entrypoint(struct sandbox *sb)
{
	struct exec_spec es = {0};
	char err[512];

	es.argv = sb->spec.command;
	if (exec_start(sb, &es, true, &sb->entrypoint, err, sizeof(err)) < 0)
		finish(sb, "failed", RC_FAILED, err);
}

/* The readiness check's verdict (ready_result, ready_error) is in: the create call gets its answer. */
static void ready_done(struct sandbox *sb)
{
	struct api_call *call = sb->create_call;
	bool ready = sb->state == SANDBOX_STARTING && sb->ready_result == 0;
	char console[600];

	start_free(sb);
	sb->create_call = NULL;
	if (sb->state == SANDBOX_STARTING && sb->ready_result == 0) {
		set_state(sb, SANDBOX_RUNNING);
		sb->started_at = sandboxd_wall_time();
		store_save(sb);
		arm_timers(sb);
		sv_info("sandbox=%s event=ready ms=%.0f", sb->id, (sb->started_at - sb->created_at) * 1000);
		if (call)
			metrics_ready(&sb->d->metrics, sb->started_at - sb->created_at);
		if (sb->spec.command)
			start_entrypoint(sb);
	} else if (sb->state == SANDBOX_STARTING) {
		tail_console(sb, console, sizeof(console));
		snprintf(sb->message, sizeof(sb->message), "%s; console: %s", sb->ready_error, console);
		sv_warn("sandbox=%s event=start_failed why=\"%s\"", sb->id, sb->ready_error);
		finish(sb, "failed", RC_FAILED, NULL);
	}
	if (call) {
		metrics_create(&sb->d->metrics, ready ? METRICS_CREATE_READY : METRICS_CREATE_FAILED);
		if (sandbox_has_ended(sb) && sb->reason && !strcmp(sb->reason, "failed"))
			api_call_fail(call, -EHOSTDOWN, NULL, "sandbox %s failed to start: %s", sb->id, sb->message);
		else if (!api_call_gone(call))
			api_call_ok(call, sandbox_to_json(sb));
		api_call_release(call);
	}
	sandbox_unref(sb);
}

/* agent_conn_hello: the guest agent answered (r 0), or why it did not. */
static void on_ready_ended(void *ctx, int r, const struct agent_exec_status *st, const char *error)
{
	struct sandbox *sb = ctx;

	(void)st;
	sb->ready_conn = NULL;
	sb->ready_result = r;
	if (r == -ETIMEDOUT)
		snprintf(sb->ready_error, sizeof(sb->ready_error), "the guest agent did not answer within %d s",
			 READY_TIMEOUT_MS / 1000);
	else
		snprintf(sb->ready_error, sizeof(sb->ready_error), "%s", error);
	ready_done(sb);
}

static const struct agent_conn_ops ready_ops = {.ended = on_ready_ended};

/* On the loop, no thread: connects to the agent (retrying while the guest boots) until it says HELLO. */
static void ready_start(struct sandbox *sb)
{
	struct agent_conn_config cfg = {
		.vsock_path = sb->vm.vsock,
		.port = AGENT_CLIENT_PORT,
		.connect_ms = READY_TIMEOUT_MS,
	};
	int r = agent_conn_hello(sb->d->loop, &cfg, &ready_ops, sb, &sb->ready_conn);

	if (r < 0) {
		sb->ready_result = r;
		snprintf(sb->ready_error, sizeof(sb->ready_error), "cannot start the readiness check: %s", strerror(-r));
		ready_done(sb);
	}
}

static void resumed(struct sandbox *sb);

/* A warm start's check: the agent again (its connections were reset), then the sandbox's own identity. */
static void on_restored(void *ctx, int r, const struct agent_exec_status *st, const char *error)
{
	struct sandbox *sb = ctx;

	(void)st;
	sb->ready_conn = NULL;
	if (sb->start && sb->start->resume) {
		if (r == 0 && sb->state == SANDBOX_RESUMING)
			return resumed(sb);
		/* The VMM's end (vmm_exited) ends the resume with this. */
		snprintf(sb->start->fallback_why, sizeof(sb->start->fallback_why),
			 "the resumed guest did not answer or take its identity: %s",
			 error ? error : r < 0 ? strerror(-r) : "the sandbox ended");
		if (sb->vmm && sb->state == SANDBOX_RESUMING)
			sb->d->launcher->stop(sb->vmm, KILL_GRACE_MS);
		return;
	}
	if (r < 0 && sb->start && sb->start->warm && sb->vmm && sb->state == SANDBOX_STARTING) {
		/* The VMM's end (vmm_exited) falls back to a cold boot; the template itself is not to blame. */
		snprintf(sb->start->fallback_why, sizeof(sb->start->fallback_why),
			 "the restored guest did not answer or take its identity: %s", error ? error : strerror(-r));
		sb->start->discard = false;
		sb->d->launcher->stop(sb->vmm, KILL_GRACE_MS);
		return;
	}
	on_ready_ended(ctx, r, NULL, error);
}

static const struct agent_conn_ops restored_ops = {.ended = on_restored};

static void ready_start_warm(struct sandbox *sb)
{
	struct restored_identity id;
	int r = restored_identity_init(&id);

	/* What a cold boot of this sandbox would have had on its command line, and its MAC. */
	if (r == 0)
		restored_identity_from_cmdline(&id, sb->start->launch.cmdline);
	if (r == 0 && sb->start->cfg.net_mac)
		snprintf(id.mac, sizeof(id.mac), "%s", sb->start->cfg.net_mac);
	/* A resumed guest is the same machine: its machine-id stays (clones of a template each get a fresh one). */
	if (sb->start->resume)
		id.machine_id[0] = '\0';
	if (r == 0)
		r = restored_send(sb->d->loop, sb->vm.vsock, READY_TIMEOUT_MS, &id, &restored_ops, sb, &sb->ready_conn);
	explicit_bzero(&id, sizeof(id));
	if (r < 0) {
		sb->ready_result = r;
		snprintf(sb->ready_error, sizeof(sb->ready_error), "cannot start the readiness check: %s", strerror(-r));
		ready_done(sb);
	}
}

/* The VMM went away while the guest booted: the check ends with that. */
static void ready_abort(struct sandbox *sb)
{
	if (!sb->ready_conn)
		return;
	agent_conn_cancel(sb->ready_conn);
	sb->ready_conn = NULL;
	sb->ready_result = -ECHILD;
	snprintf(sb->ready_error, sizeof(sb->ready_error), "the VMM exited while the guest booted");
	ready_done(sb);
}

static int image_paths(struct sandboxd *d, const char *image, struct sandbox_vm_config *cfg, char *kernel,
		       char *other, size_t cap, char *err, size_t errlen)
{
	struct stat st;

	snprintf(kernel, cap, "%s/vmlinux", d->images_dir);
	cfg->kernel = kernel;
	if (!strcmp(image, "minimal")) {
		snprintf(other, cap, "%s/initramfs.cpio.gz", d->images_dir);
		cfg->initrd = other;
	} else if (!strcmp(image, "debian")) {
		snprintf(other, cap, "%s/debian.ext4", d->images_dir);
		cfg->rootfs = other;
	} else {
		/* A client's path: only a file in the folders the operator allows, resolved. */
		int r = image_path_resolve(&d->image_dirs, image, other, cap, err, errlen);

		if (r < 0)
			return r;
		cfg->rootfs = other;
	}
	if (stat(kernel, &st) < 0) {
		snprintf(err, errlen, "the guest kernel %s is not built (run `make guest`)", kernel);
		return -ENOENT;
	}
	if (stat(other, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (images_can_build(d, image))
			return -EAGAIN;
		if (!strcmp(image, "debian"))
			snprintf(err, errlen, "image debian is not built yet (%s missing; run `make debian-image`)",
				 other);
		else if (!strcmp(image, "minimal"))
			snprintf(err, errlen, "image minimal is not built yet (%s missing; run `make initramfs`)",
				 other);
		else
			snprintf(err, errlen, "image %s is not a regular file", other);
		return -ENOENT;
	}
	return 0;
}

static bool name_taken(struct sandboxd *d, const struct sandbox_spec *spec)
{
	if (!spec->name)
		return false;
	for (struct sandbox *sb = d->sandboxes; sb; sb = sb->next)
		if (!sandbox_has_ended(sb) && !sb->deleted && sb->spec.name &&
		    !strcmp(sb->spec.name, spec->name) && !strcmp(sb->spec.app, spec->app))
			return true;
	return false;
}

/* What a sandbox that never started left in its run directory (files the parts wrote), and the folder. */
static void remove_run_files(const char *run_dir)
{
	char path[600];
	DIR *dir = opendir(run_dir);
	struct dirent *e;

	while (dir && (e = readdir(dir)))
		if (e->d_type == DT_REG || e->d_type == DT_SOCK) {
			snprintf(path, sizeof(path), "%s/%s", run_dir, e->d_name);
			unlink(path);
		}
	if (dir)
		closedir(dir);
	/* The console directory prepare made (empty: the VMM never ran). */
	snprintf(path, sizeof(path), "%s/" SANDBOX_VM_CONSOLE_DIR, run_dir);
	rmdir(path);
	rmdir(run_dir);
}

/* Frees the launch; a wait for a template is cancelled. */
static void start_free(struct sandbox *sb)
{
	if (!sb->start)
		return;
	if (sb->start->waiting)
		templates_cancel(sb->d, &sb->start->wait);
	free(sb->start);
	sb->start = NULL;
}

/* The VMM could not be started at all: the create fails and nothing of the sandbox stays. */
static void launch_failed(struct sandbox *sb, int r)
{
	struct api_call *call = sb->create_call;
	char run_dir[sizeof(sb->start->run_dir)];

	sb->create_call = NULL;
	snprintf(run_dir, sizeof(run_dir), "%s", sb->start->run_dir);
	if (call) {
		metrics_create(&sb->d->metrics, METRICS_CREATE_FAILED);
		api_call_fail(call, -EIO, NULL, "cannot start the VMM %s: %s", sb->d->vmm_path, strerror(-r));
		api_call_release(call);
	}
	parts_teardown(sb);
	sandbox_vm_destroy(&sb->vm);
	remove_run_files(run_dir);
	start_free(sb);
	set_state(sb, SANDBOX_FINISHED);
	sb->deleted = true;
	for (struct sandbox **p = &sb->d->sandboxes; *p; p = &(*p)->next)
		if (*p == sb) {
			*p = sb->next;
			break;
		}
	discard(sb);
	sandbox_unref(sb); /* the readiness check's */
}

static void ready_start_warm(struct sandbox *sb);

/* Starts the VMM as sb->start says (a boot, or a restore of template_dir) and the readiness check. */
static int launch(struct sandbox *sb)
{
	struct sandbox_start *st = sb->start;
	struct sandboxd *d = sb->d;
	struct sandbox_vm_cmd cmd;
	int r;

	st->cfg.restore = st->warm ? st->template_dir : NULL;
	r = d->launcher->prepare(&st->cfg, &sb->vm, &cmd);
	if (r == 0) {
		r = d->launcher->spawn(d->loop, d->spares, &cmd, sb->vm.log, vmm_exited, sb, &sb->vmm);
		sandbox_vm_cmd_close(&cmd); /* the VMM has its own now */
	}
	if (r < 0)
		return r;
	sandbox_ref(sb); /* the VMM's, dropped when it exited */
	sb->pid = d->launcher->pid(sb->vmm, &sb->pid_start);
	d->metrics.vmm_starts[d->launcher->from_spare(sb->vmm)]++;
	if (store_save(sb) < 0)
		sv_warn("sandbox=%s event=save_failed", sb->id);
	sv_info("sandbox=%s event=starting image=%s cpu=%u memory_mib=%u pid=%d start=%s", sb->id, sb->spec.image,
		sb->spec.cpu, sb->spec.memory_mib, sb->pid, sb->start_mode);
	if (st->warm)
		ready_start_warm(sb);
	else
		ready_start(sb);
	return 0;
}

/* Launches the VM warm or cold; a warm launch that cannot even spawn boots instead. */
static void start_with(struct sandbox *sb, bool warm, const char *mode, const char *why)
{
	int r;

	sb->start_mode = mode;
	snprintf(sb->start_reason, sizeof(sb->start_reason), "%s", why ? why : "");
	sb->start->warm = warm;
	sb->start->discard = warm;
	sb->start->fallback_why[0] = '\0';
	if (mode == START_FALLBACK)
		sv_warn("sandbox=%s event=cold_fallback why=\"%s\"", sb->id, sb->start_reason);
	r = launch(sb);
	if (r < 0 && warm) {
		char reason[200];

		snprintf(reason, sizeof(reason), "cannot start the VMM to restore the template: %s", strerror(-r));
		start_with(sb, false, START_FALLBACK, reason);
	} else if (r < 0) {
		launch_failed(sb, r);
	}
}

static void template_done(struct template_wait *w, int r, const char *dir, const char *why)
{
	struct sandbox_start *st = (struct sandbox_start *)((char *)w - offsetof(struct sandbox_start, wait));

	st->waiting = false;
	if (r == 0) {
		snprintf(st->template_dir, sizeof(st->template_dir), "%s", dir);
		start_with(st->sb, true, START_WARM, NULL);
	} else {
		start_with(st->sb, false, START_FALLBACK, why);
	}
}

/* Warm unless asked otherwise or no template can be had; maybe after its shape's template is built. */
static void start_choose(struct sandbox *sb)
{
	struct sandbox_start *st = sb->start;
	struct sandbox_vm_config *cfg = &st->cfg;
	struct template_shape shape = {
		.kernel = cfg->kernel, .initrd = cfg->initrd, .rootfs = cfg->rootfs, .cpus = cfg->cpus,
		.memory_mib = cfg->memory_mib, .net = cfg->net_tap != NULL, .spare_drives = cfg->spare_drives,
	};
	char why[600] = "";
	int r;

	if (sb->spec.cold_boot)
		return start_with(sb, false, START_COLD, "cold_boot was asked for");
	if (sb->d->no_templates)
		return start_with(sb, false, START_COLD, "sandboxd runs with --cold-boot");
	st->wait.done = template_done;
	r = templates_get(sb->d, &shape, &st->wait, st->template_dir, sizeof(st->template_dir), why, sizeof(why));
	if (r == 0)
		return start_with(sb, true, START_WARM, NULL);
	if (r < 0)
		return start_with(sb, false, START_FALLBACK, why);
	st->waiting = true;
	sv_info("sandbox=%s event=waiting_for_template", sb->id);
}

void sandbox_create(struct sandboxd *d, struct sandbox_spec *spec, struct api_call *call)
{
	struct sandbox_start *st;
	char err[512] = "", field[32];
	unsigned count, memory;
	struct sandbox *sb;
	int r;

	if (!tunnels_admit(d, spec, field, sizeof(field), err, sizeof(err))) {
		api_call_fail(call, -EINVAL, field, "%s", err);
		goto out_spec;
	}
	if (spec->id[0] && sandbox_find(d, spec->id)) {
		api_call_fail(call, -EEXIST, "id", "a sandbox %s is already here", spec->id);
		goto out_spec;
	}
	if (name_taken(d, spec)) {
		api_call_fail(call, -EEXIST, "name", "a sandbox named %s is already running in app %s", spec->name,
				   spec->app);
		goto out_spec;
	}
	sandbox_usage(d, &count, &memory);
	if (count + 1 > d->max_sandboxes) {
		api_call_fail(call, -EDQUOT, NULL, "this host runs %u sandboxes, its limit (--max-sandboxes)", count);
		goto out_spec;
	}
	if (memory + spec->memory_mib > d->max_memory_mib) {
		api_call_fail(call, -EDQUOT, "memory_mib",
				   "%u MiB more would exceed this host's sandbox memory limit of %u MiB (%u MiB in use)",
				   spec->memory_mib, d->max_memory_mib, memory);
		goto out_spec;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		api_call_fail(call, -ENOMEM, NULL, "out of memory");
		goto out_spec;
	}
	r = image_paths(d, spec->image, &st->cfg, st->kernel, st->other, sizeof(st->kernel), err, sizeof(err));
	if (r == -EAGAIN) {
		free(st);
		st = NULL;
		r = images_build_and_create(d, spec, call);
		if (r == 0)
			return; /* comes back here once the image is built */
	}
	if (r < 0) {
		api_call_fail(call, r == -EACCES ? -EACCES : -EAGAIN, "image", "%s",
				   err[0] ? err : "the image cannot be built here");
		free(st);
		goto out_spec;
	}
	sb = sandbox_alloc(d);
	if (!sb) {
		api_call_fail(call, -ENOMEM, NULL, "out of memory");
		free(st);
		goto out_spec;
	}
	sb->start = st;
	st->sb = sb;
	sb->spec = *spec;
	memset(spec, 0, sizeof(*spec));
	if (sb->spec.id[0])
		snprintf(sb->id, sizeof(sb->id), "%s", sb->spec.id);
	else
		sandbox_make_id("sb", sb->id, sizeof(sb->id));
	snprintf(st->run_dir, sizeof(st->run_dir), "%s/sandboxes/%s", d->state_dir, sb->id);
	st->cfg.vmm = d->vmm_path;
	st->cfg.cpus = sb->spec.cpu;
	st->cfg.memory_mib = sb->spec.memory_mib;
	st->cfg.run_dir = st->run_dir;
	st->cfg.pass_fds = true; /* the VMM opens no host path (docs/vmm.md) */
	st->launch.cfg = &st->cfg;
	st->launch.run_dir = st->run_dir;
	sb->created_at = sandboxd_wall_time();
	sb->deadline = sb->created_at + sb->spec.timeout;
	sb->net.mode = sb->spec.block_network ? NET_BLOCK : sb->spec.cidr_allowlist ? NET_ALLOWLIST : NET_OPEN;
	if (sb->spec.cidr_allowlist)
		sb->net.allow = cJSON_Duplicate(sb->spec.cidr_allowlist, 1);
	/* The parts first: the network's policy file lives in the run directory the VMM gets. */
	snprintf(sb->vm.dir, sizeof(sb->vm.dir), "%s", st->run_dir);
	r = mkdir(st->run_dir, 0700) < 0 && errno != EEXIST ? -errno : 0;
	for (const struct sandbox_part_ops *const *part = sandbox_parts; r == 0 && *part; part++) {
		if ((*part)->setup && (r = (*part)->setup(sb, &st->launch, err, sizeof(err))) < 0) {
			/* Undo the parts set up before this one. */
			while (part-- != sandbox_parts)
				if ((*part)->teardown)
					(*part)->teardown(sb);
			api_call_fail(call, -EAGAIN, NULL, "%s", err);
			metrics_create(&d->metrics, METRICS_CREATE_REJECTED);
			remove_run_files(st->run_dir);
			start_free(sb);
			discard(sb);
			return;
		}
	}
	if (r < 0) {
		api_call_fail(call, -EIO, NULL, "cannot make the run directory %s: %s", st->run_dir, strerror(-r));
		metrics_create(&d->metrics, METRICS_CREATE_REJECTED);
		start_free(sb);
		discard(sb);
		return;
	}
	/* Its own name in the guest, as a warm start's identity message gives it too (restored.c). */
	{
		size_t n = strlen(st->launch.cmdline);

		snprintf(st->launch.cmdline + n, sizeof(st->launch.cmdline) - n, "%ssandvm.hostname=%s", n ? " " : "",
			 sb->id);
		st->cfg.cmdline = st->launch.cmdline;
	}
	/* Listed (starting) from here, also while it waits for its shape's template. */
	sb->next = d->sandboxes;
	d->sandboxes = sb;
	sb->create_call = call;
	api_call_hold(call);
	sandbox_ref(sb); /* the readiness check's, dropped by ready_done */
	start_choose(sb);
	return;
out_spec:
	metrics_create(&d->metrics, METRICS_CREATE_REJECTED);
	spec_sandbox_free(spec);
}

/* ---- pause and resume ---- */

/* The snapshot of a pausing sandbox, written by its VMM while a worker waits. */
struct pause_job {
	uv_work_t work;
	struct sandbox *sb;
	char run_dir[256], control[320], key_store[320], id[32];
	unsigned memory_mib;
	int result;
	long long memory_bytes;
	char why[600];
};

static void pause_work(uv_work_t *w)
{
	struct pause_job *j = w->data;

	j->result = pause_snapshot(j->run_dir, j->control, j->key_store, j->id, j->memory_mib, &j->memory_bytes, j->why,
				   sizeof(j->why));
}

/* Answers the pause call (0: with the sandbox; else with why). */
static void pause_call_end(struct sandbox *sb, int r, const char *why)
{
	struct api_call *call = sb->pause_call;

	sb->pause_call = NULL;
	if (!call)
		return;
	if (r < 0)
		api_call_fail(call, r, NULL, "%s", why);
	else if (!api_call_gone(call))
		api_call_ok(call, sandbox_to_json(sb));
	api_call_release(call);
}

/* The snapshot is on disk and the VMM gone: nothing of the sandbox runs. */
static void paused(struct sandbox *sb)
{
	set_state(sb, SANDBOX_PAUSED);
	sb->paused_at = sandboxd_wall_time();
	if (store_save(sb) < 0)
		sv_warn("sandbox=%s event=save_failed", sb->id);
	sv_info("sandbox=%s event=paused timeout_left=%.0f", sb->id, sb->timeout_left);
	pause_call_end(sb, 0, NULL);
}

static void pause_done(uv_work_t *w, int status)
{
	struct pause_job *j = w->data;
	struct sandbox *sb = j->sb;
	char why[700];

	(void)status;
	sb->pause_busy = false;
	if (sb->state != SANDBOX_PAUSING) {
		/* Terminated or deleted meanwhile: its end removes the snapshot. */
		snprintf(why, sizeof(why), "sandbox %s ended while it paused", sb->id);
		pause_call_end(sb, -ESRCH, why);
	} else if (j->result == 0) {
		sv_info("sandbox=%s event=snapshot memory_bytes=%lld", sb->id, j->memory_bytes);
		if (sb->vmm)
			sb->d->launcher->stop(sb->vmm, KILL_GRACE_MS); /* vmm_exited: paused */
		else
			paused(sb);
	} else if (sb->vmm) {
		/* pause_snapshot asked the VM to go on: it runs as before, on its own clock. */
		sv_warn("sandbox=%s event=pause_failed why=\"%s\"", sb->id, j->why);
		set_state(sb, SANDBOX_RUNNING);
		arm_timers(sb);
		snprintf(why, sizeof(why), "sandbox %s was not paused (it runs on): %s", sb->id, j->why);
		pause_call_end(sb, -EIO, why);
	} else {
		snprintf(why, sizeof(why), "the VM stopped while its snapshot was taken: %s", j->why);
		parts_teardown(sb);
		finish(sb, "failed", RC_FAILED, why);
		pause_call_end(sb, -EIO, why);
	}
	free(j);
	sandbox_unref(sb); /* the job's */
}

static bool any_mount(const struct sandbox *sb)
{
	for (int i = 0; i < SANDBOX_MOUNT_SLOTS; i++)
		if (sb->mounts[i].path[0])
			return true;
	return false;
}

void sandbox_pause(struct sandbox *sb, struct api_call *call)
{
	struct pause_job *j;
	double left;

	if (sb->state != SANDBOX_RUNNING)
		return api_call_fail(call, -ESRCH, NULL, "sandbox %s is %s; only a running sandbox can be paused",
				     sb->id, sandbox_state_name(sb->state));
	if (sb->spec.restricted)
		return api_call_fail(call, -EBUSY, NULL, "a restricted sandbox cannot be paused");
	/* Every connection to the guest breaks when it is restored: what would be lost is refused, not cut. */
	if (sb->spec.command)
		return api_call_fail(call, -EBUSY, NULL,
				     "sandbox %s runs an entrypoint command, whose output stream a pause would cut",
				     sb->id);
	if (sb->active)
		return api_call_fail(call, -EBUSY, NULL,
				     "sandbox %s has %u exec or file calls running; a pause would cut them", sb->id,
				     sb->active);
	if (sb->snapshot_busy || any_mount(sb))
		return api_call_fail(call, -EBUSY, NULL,
				     "sandbox %s has images mounted or a snapshot-dir running: unmount them first",
				     sb->id);
	j = calloc(1, sizeof(*j));
	if (!j)
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	j->work.data = j;
	j->sb = sb;
	snprintf(j->run_dir, sizeof(j->run_dir), "%s", sb->vm.dir);
	snprintf(j->control, sizeof(j->control), "%s", sb->vm.control);
	snprintf(j->key_store, sizeof(j->key_store), "%s", sb->d->snapshot_dir);
	snprintf(j->id, sizeof(j->id), "%s", sb->id);
	j->memory_mib = sb->spec.memory_mib;
	set_state(sb, SANDBOX_PAUSING);
	uv_timer_stop(&sb->timeout_timer);
	uv_timer_stop(&sb->idle_timer);
	left = sb->deadline - sandboxd_wall_time();
	sb->timeout_left = left > 0 ? left : 0;
	sb->pause_call = call;
	api_call_hold(call);
	sb->pause_busy = true;
	sandbox_ref(sb); /* the job's */
	sv_info("sandbox=%s event=pausing", sb->id);
	uv_queue_work(sb->d->loop, &j->work, pause_work, pause_done);
}

/* The resume is over: its call answered, its launch freed. r < 0: why it failed (the sandbox is paused or ended). */
static void resume_end(struct sandbox *sb, int r, const char *why)
{
	char text[900];

	if (r < 0 && sb->state == SANDBOX_PAUSED) {
		snprintf(sb->resume_error, sizeof(sb->resume_error), "%s", why);
		sv_warn("sandbox=%s event=resume_failed why=\"%s\"", sb->id, why);
		store_save(sb);
		snprintf(text, sizeof(text), "sandbox %s could not be resumed and stays paused: %s", sb->id, why);
	} else {
		snprintf(text, sizeof(text), "sandbox %s: %s", sb->id, why ? why : "");
	}
	pause_call_end(sb, r, text);
	start_free(sb);
	sandbox_unref(sb); /* the resume's */
}

/* Its guest runs again and took its identity: the snapshot is spent. */
static void resumed(struct sandbox *sb)
{
	set_state(sb, SANDBOX_RUNNING);
	sb->deadline = sandboxd_wall_time() + sb->timeout_left;
	sb->timeout_left = 0;
	sb->paused_at = 0;
	sb->resume_error[0] = '\0';
	/* The VMM decrypted the memory file into its own RAM (an unsealed one it maps privately, kept until it exits). */
	pause_files_remove(sb->vm.dir);
	if (store_save(sb) < 0)
		sv_warn("sandbox=%s event=save_failed", sb->id);
	arm_timers(sb);
	sv_info("sandbox=%s event=resumed pid=%d", sb->id, sb->pid);
	resume_end(sb, 0, NULL);
}

void sandbox_resume(struct sandbox *sb, struct api_call *call)
{
	struct sandboxd *d = sb->d;
	struct sandbox_start *st;
	unsigned count, memory;
	char err[512] = "", why[700];
	uint8_t key[SIMAGE_KEY_BYTES];
	bool sealed;
	int r;

	if (sb->state != SANDBOX_PAUSED)
		return api_call_fail(call, -ESRCH, NULL, "sandbox %s is %s; only a paused sandbox can be resumed",
				     sb->id, sandbox_state_name(sb->state));
	sandbox_usage(d, &count, &memory);
	if (memory + sb->spec.memory_mib > d->max_memory_mib)
		return api_call_fail(call, -EDQUOT, NULL,
				     "resuming %u MiB would exceed this host's sandbox memory limit of %u MiB (%u MiB in use)",
				     sb->spec.memory_mib, d->max_memory_mib, memory);
	if (!pause_files_present(sb->vm.dir))
		return api_call_fail(call, -EIO, NULL, "the snapshot of sandbox %s is missing from %s/" PAUSE_DIR,
				     sb->id, sb->vm.dir);
	/* No key in the folder: a pause written before memory files were sealed resumes as it was written. */
	r = pause_key_load(sb->vm.dir, d->snapshot_dir, sb->id, key, err, sizeof(err));
	if (r < 0 && r != -ENOENT) {
		OPENSSL_cleanse(key, sizeof(key));
		return api_call_fail(call, -EIO, NULL, "cannot resume sandbox %s: %s", sb->id, err);
	}
	sealed = r == 0;
	st = calloc(1, sizeof(*st));
	if (!st) {
		OPENSSL_cleanse(key, sizeof(key));
		return api_call_fail(call, -ENOMEM, NULL, "out of memory");
	}
	/* The drives as at its create: the same root file system (the restore needs its devices in order). */
	r = image_paths(d, sb->spec.image, &st->cfg, st->kernel, st->other, sizeof(st->kernel), err, sizeof(err));
	if (r < 0) {
		free(st);
		OPENSSL_cleanse(key, sizeof(key));
		return api_call_fail(call, r == -EACCES ? -EACCES : -EAGAIN, "image", "cannot resume: %s",
				     err[0] ? err : "its image is not there");
	}
	st->sb = sb;
	snprintf(st->run_dir, sizeof(st->run_dir), "%s", sb->vm.dir);
	st->cfg.vmm = d->vmm_path;
	st->cfg.cpus = sb->spec.cpu;
	st->cfg.memory_mib = sb->spec.memory_mib;
	st->cfg.run_dir = st->run_dir;
	st->cfg.pass_fds = true;
	st->launch.cfg = &st->cfg;
	st->launch.run_dir = st->run_dir;
	for (const struct sandbox_part_ops *const *part = sandbox_parts; *part; part++)
		if ((*part)->relaunch && (r = (*part)->relaunch(sb, &st->launch, err, sizeof(err))) < 0) {
			free(st);
			OPENSSL_cleanse(key, sizeof(key));
			return api_call_fail(call, -EAGAIN, NULL, "cannot resume sandbox %s: %s", sb->id, err);
		}
	pause_dir(sb->vm.dir, st->template_dir, sizeof(st->template_dir));
	st->warm = st->resume = true;
	sb->start = st;
	sb->pause_call = call;
	api_call_hold(call);
	sandbox_ref(sb); /* the resume's, dropped by resume_end */
	st->cfg.restore_memory_key = sealed ? key : NULL;
	set_state(sb, SANDBOX_RESUMING);
	r = launch(sb);
	/* The VMM has the key through its pipe, or never will: none stays here. */
	OPENSSL_cleanse(key, sizeof(key));
	st->cfg.restore_memory_key = NULL;
	if (r < 0) {
		snprintf(why, sizeof(why), "cannot start the VMM %s: %s", d->vmm_path, strerror(-r));
		set_state(sb, SANDBOX_PAUSED);
		resume_end(sb, -EIO, why);
	}
}

/* ---- restart ---- */

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *known_reason(const char *r)
{
	static const char *const reasons[] = {"exited", "timeout", "idle_timeout", "terminated", "failed"};

	for (size_t i = 0; r && i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (!strcmp(r, reasons[i]))
			return reasons[i];
	return "failed";
}

static void restore_one(void *ctx, const char *id, void *record)
{
	struct sandboxd *d = ctx;
	cJSON *rec = record, *spec_json;
	struct spec_error err;
	struct sandbox *sb;
	const cJSON *st;
	char run_dir[512];
	bool was_pausing;

	spec_json = cJSON_DetachItemFromObjectCaseSensitive(rec, "spec");
	sb = spec_json ? sandbox_alloc(d) : NULL;
	if (!sb || spec_sandbox_from_json(spec_json, &sb->spec, &err) < 0) {
		sv_err("sandbox=%s event=record_unreadable why=\"%s\"", id, spec_json ? err.message : "no spec");
		if (sb) {
			discard(sb);
		} else {
			cJSON_Delete(spec_json);
		}
		cJSON_Delete(rec);
		return;
	}
	snprintf(sb->id, sizeof(sb->id), "%s", id);
	snprintf(run_dir, sizeof(run_dir), "%s/sandboxes/%s", d->state_dir, id);
	snprintf(sb->vm.dir, sizeof(sb->vm.dir), "%s", run_dir);
	snprintf(sb->vm.vsock, sizeof(sb->vm.vsock), "%s/vsock", run_dir);
	snprintf(sb->vm.control, sizeof(sb->vm.control), "%s/control", run_dir);
	snprintf(sb->vm.console, sizeof(sb->vm.console), "%s/" SANDBOX_VM_CONSOLE_DIR "/console.log", run_dir);
	snprintf(sb->vm.log, sizeof(sb->vm.log), "%s/vmm.log", run_dir);
	sb->vm.pid = -1;
	sb->created_at = num(rec, "created_at");
	sb->started_at = num(rec, "started_at");
	sb->finished_at = num(rec, "finished_at");
	sb->pid = (int)num(rec, "pid");
	sb->pid_start = (unsigned long long)num(rec, "pid_start");
	sb->returncode = (int)num(rec, "returncode");
	st = cJSON_GetObjectItemCaseSensitive(rec, "message");
	if (cJSON_IsString(st))
		snprintf(sb->message, sizeof(sb->message), "%s", st->valuestring);
	st = cJSON_GetObjectItemCaseSensitive(rec, "start");
	if (cJSON_IsString(st))
		sb->start_mode = !strcmp(st->valuestring, START_WARM)	  ? START_WARM
				 : !strcmp(st->valuestring, START_COLD) ? START_COLD
									  : START_FALLBACK;
	st = cJSON_GetObjectItemCaseSensitive(rec, "start_reason");
	if (cJSON_IsString(st))
		snprintf(sb->start_reason, sizeof(sb->start_reason), "%s", st->valuestring);
	st = cJSON_GetObjectItemCaseSensitive(rec, "resume_error");
	if (cJSON_IsString(st))
		snprintf(sb->resume_error, sizeof(sb->resume_error), "%s", st->valuestring);
	/* Records from before pauses have no deadline: the timeout counted from the create then. */
	sb->deadline = cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(rec, "deadline"))
			       ? num(rec, "deadline")
			       : sb->created_at + sb->spec.timeout;
	sb->timeout_left = num(rec, "timeout_left");
	sb->paused_at = num(rec, "paused_at");
	st = cJSON_GetObjectItemCaseSensitive(rec, "state");
	was_pausing = cJSON_IsString(st) && !strcmp(st->valuestring, "pausing");
	/*
	 * A resume cut short by the restart is undone: the sandbox is paused, its
	 * snapshot kept. So is a pause: the sandbox runs on, its VM resumed below.
	 */
	sb->state = !cJSON_IsString(st)			       ? SANDBOX_FINISHED
		    : !strcmp(st->valuestring, "running")      ? SANDBOX_RUNNING
		    : !strcmp(st->valuestring, "pausing")      ? SANDBOX_RUNNING
		    : !strcmp(st->valuestring, "starting")     ? SANDBOX_STARTING
		    : !strcmp(st->valuestring, "paused")       ? SANDBOX_PAUSED
		    : !strcmp(st->valuestring, "resuming")     ? SANDBOX_PAUSED
								: SANDBOX_FINISHED;
	if (sb->state == SANDBOX_FINISHED) {
		st = cJSON_GetObjectItemCaseSensitive(rec, "reason");
		sb->reason = known_reason(cJSON_IsString(st) ? st->valuestring : NULL);
	}
	for (const struct sandbox_part_ops *const *part = sandbox_parts; *part; part++)
		if ((*part)->restore)
			(*part)->restore(sb, rec);
	cJSON_Delete(rec);
	sb->next = d->sandboxes;
	d->sandboxes = sb;

	/* Is the VMM of this record still the process with that pid? Restoring sets states directly. */
	if (d->launcher->adopt(d->loop, sb->pid, sb->pid_start, vmm_exited, sb, &sb->vmm) == 0) {
		sandbox_ref(sb); /* the VMM's */
		for (const struct sandbox_part_ops *const *part = sandbox_parts; *part; part++)
			if ((*part)->adopt)
				(*part)->adopt(sb);
	} else if (sb->state == SANDBOX_PAUSED) {
		/* No VMM, by design: its parts wait for the resume. */
		for (const struct sandbox_part_ops *const *part = sandbox_parts; *part; part++)
			if ((*part)->adopt)
				(*part)->adopt(sb);
	} else {
		parts_teardown(sb); /* e.g. the persistent tap of a VM that is gone */
	}
	if (sb->state == SANDBOX_PAUSED) {
		if (sb->vmm) {
			sv_info("sandbox=%s event=resume_undone pid=%d", sb->id, sb->pid);
			d->launcher->stop(sb->vmm, KILL_GRACE_MS); /* vmm_exited leaves it paused */
		}
		sb->pid = -1;
		if (!pause_files_present(sb->vm.dir))
			finish(sb, "failed", RC_FAILED, "the snapshot of the paused sandbox is gone");
		else
			sv_info("sandbox=%s event=adopted state=paused", sb->id);
		return;
	}
	if (sb->state == SANDBOX_FINISHED) {
		if (sb->vmm) {
			sb->state = SANDBOX_STOPPING; /* its end was decided; the VMM still has to go */
			d->launcher->stop(sb->vmm, KILL_GRACE_MS);
		}
		return;
	}
	if (!sb->vmm) {
		char oom[160];

		finish(sb, "failed", RC_FAILED,
		       jail_host_oom_message(sb, oom, sizeof(oom)) ? oom : "the VM ended while sandboxd was down");
	} else if (sb->state == SANDBOX_STARTING) {
		finish(sb, "failed", RC_FAILED, "sandboxd restarted while the sandbox was starting");
	} else if (sb->spec.command) {
		finish(sb, "failed", RC_FAILED, "the entrypoint command was lost when sandboxd restarted");
	} else {
		if (was_pausing) {
			/* Before the API serves: a snapshot still being written is waited for. */
			int r = pause_undo(sb->vm.dir, sb->vm.control, VMM_CONTROL_TIMEOUT_MS);

			if (r < 0)
				sv_warn("sandbox=%s event=pause_undo_failed error=\"%s\"", sb->id, strerror(-r));
			else
				sv_info("sandbox=%s event=pause_undone", sb->id);
		}
		arm_timers(sb);
		sv_info("sandbox=%s event=adopted pid=%d", sb->id, sb->pid);
	}
}

int sandbox_restore_all(struct sandboxd *d)
{
	return store_load_all(d->state_dir, restore_one, d);
}

void sandbox_sweep(struct sandboxd *d)
{
	double now = sandboxd_wall_time();
	struct sandbox *sb = d->sandboxes, *next;

	for (; sb; sb = next) {
		next = sb->next;
		if (sb->state == SANDBOX_FINISHED && !sb->deleted && !sb->create_call &&
		    now - sb->finished_at > FINISHED_KEEP_S) {
			sv_info("sandbox=%s event=forgotten why=\"finished over %d s ago\"", sb->id, FINISHED_KEEP_S);
			sb->deleted = true;
			forget(sb);
		}
	}
}
