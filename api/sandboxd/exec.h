#ifndef SANDVM_API_SANDBOXD_EXEC_H
#define SANDVM_API_SANDBOXD_EXEC_H

/*
 * Execs in a sandbox (exec.c): started through the guest agent on the loop
 * (agent_conn.h), their output streamed to one reader, stdin from one
 * writer, signals, exit status.
 */

#include <stdbool.h>
#include <stddef.h>

struct sandbox;
struct exec_spec;
struct exec_session;
struct http_request;

/* Starts argv in the sandbox; 0 with *out, or -errno with a message. */
int exec_start(struct sandbox *sb, const struct exec_spec *spec, bool entrypoint, struct exec_session **out,
	       char *err, size_t errlen);
struct exec_session *exec_find(struct sandbox *sb, const char *id);
/* Its execs (entrypoint included) whose process has not ended. */
unsigned exec_running(const struct sandbox *sb);
const char *exec_id(const struct exec_session *ex);
void *exec_to_json(const struct exec_session *ex);
/* GET .../output: streams the output to req; -EBUSY when another reader has it. */
int exec_attach_output(struct exec_session *ex, struct http_request *req);
/* POST .../stdin: set up at headers time; replies when the body ended. */
int exec_attach_stdin(struct exec_session *ex, struct http_request *req);
int exec_signal(struct exec_session *ex, int sig);

#endif
