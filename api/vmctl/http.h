#ifndef SANDVM_API_VMCTL_HTTP_H
#define SANDVM_API_VMCTL_HTTP_H

/*
 * The sandboxd client: where the daemon is (unix socket or TCP), the API
 * key, and requests over libcurl. A client is read-only once opened, so the
 * threads of `exec` share one; every request has its own curl handle.
 */
#include <curl/curl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct vmctl_args;
typedef struct cJSON cJSON;

struct vmctl_client {
	const char *host;  /* as the user gave it, for messages */
	char *base;        /* URL prefix: "http://localhost" for a unix socket */
	char *unix_path;   /* NULL over TCP */
	const char *cacert; /* CA file for https://, NULL: the system's */
	char *auth;        /* "Authorization: Bearer KEY"; NULL when no key */
	char *key_origin;  /* where the key came from, for a 401 hint */
	bool verbose;
};

/*
 * Resolves the host and, when need_key, the API key (SANDVM_API_KEY, else
 * --key-file or SANDVM_API_KEY_FILE, else ~/.config/sandvm/api-key).
 * Returns 0, or the exit status after printing why (usage error for a bad
 * host, VMCTL_EXIT_FAILED for a missing or unreadable key).
 */
int vmctl_client_open(struct vmctl_client *c, const struct vmctl_args *a, bool need_key);
void vmctl_client_close(struct vmctl_client *c);

/* A reply body kept in memory: JSON replies and error bodies. */
struct vmctl_buf {
	char *data; /* NUL-terminated when not NULL */
	size_t len, cap;
};

void vmctl_buf_free(struct vmctl_buf *b);

/*
 * Where a 2xx body goes when not into memory (logs, file downloads, exec
 * output). Returns 0 to go on, > 0 to stop the transfer as complete, < 0
 * (-errno) to fail it.
 */
typedef int (*vmctl_sink_fn)(void *ctx, const char *data, size_t n);

struct vmctl_req {
	const struct vmctl_client *client;
	const char *method; /* a string literal of the caller's */
	CURL *easy;
	struct curl_slist *headers;
	char *url;
	long status;           /* 0 until a reply came */
	struct vmctl_buf body; /* the reply, or the error body when a sink is set */
	vmctl_sink_fn sink;
	void *sink_ctx;
	int sink_result;
	/* When set and true, the transfer is abandoned (within about a second). */
	const atomic_bool *cancel;
	CURLcode curl_result;
	long os_errno; /* of a failed connect */
	bool text_reply; /* the reply was text/plain */
	char errbuf[CURL_ERROR_SIZE];
};

/*
 * Prepares method path (path starts with /v1/). body, when not NULL, is
 * sent as JSON. For an upload the caller sets CURLOPT_UPLOAD or a read
 * function on q->easy afterwards. 0 or -ENOMEM.
 */
int vmctl_req_init(struct vmctl_req *q, const struct vmctl_client *c, const char *method,
		   const char *path, const cJSON *body);
int vmctl_req_add_header(struct vmctl_req *q, const char *header);

/*
 * Makes the body of a POST or PUT come from read_fn (curl's read callback
 * contract). size < 0: unknown, sent chunked. 0 or -ENOMEM.
 */
int vmctl_req_upload(struct vmctl_req *q, curl_read_callback read_fn, void *ctx, curl_off_t size);

/*
 * Runs the request. 0 once a whole reply came (whatever its status, or a
 * sink stopped it on purpose); -ECANCELED when q->cancel ended it; the sink's
 * -errno; -EIO for a transport error (q->curl_result says which).
 */
int vmctl_req_perform(struct vmctl_req *q);
void vmctl_req_destroy(struct vmctl_req *q);

/*
 * Prints why a request failed: "vmctl: <server message> (HTTP <status>)",
 * or that sandboxd could not be reached. r is vmctl_req_perform's result.
 * Returns VMCTL_EXIT_FAILED.
 */
int vmctl_req_report(const struct vmctl_req *q, int r);

/* 2xx */
bool vmctl_req_ok(const struct vmctl_req *q);

/* The reply body as JSON, NULL (after printing why) when it is not. */
cJSON *vmctl_req_json(const struct vmctl_req *q);

/*
 * "/v1/sandboxes/ID" + suffix with ID URL-encoded; suffix may be "".
 * NULL when out of memory.
 */
char *vmctl_sandbox_path(const char *id, const char *suffix);

/*
 * One whole call: a client (with the API key when need_key), method on path
 * with body (may be NULL), and on success the reply's JSON in *reply (the
 * caller's to cJSON_Delete), or NULL when reply is NULL (a reply without a
 * body, DELETE). Returns 0, or the exit status after printing why (the client,
 * the transport, sandboxd's error or a reply that is not JSON).
 */
int vmctl_call(const struct vmctl_args *a, bool need_key, const char *method, const char *path,
	       const cJSON *body, cJSON **reply);
/* The same on "/v1/sandboxes/ID" + suffix. */
int vmctl_call_sandbox(const struct vmctl_args *a, const char *method, const char *id, const char *suffix,
		       const cJSON *body, cJSON **reply);

/*
 * What a printer's result means for the exit status: 0 or an exit status as
 * it is, -errno printed and VMCTL_EXIT_FAILED.
 */
int vmctl_print_status(int r);

/* One JSON request; the reply in q (vmctl_req_destroy it). Result as vmctl_req_perform. */
int vmctl_request(struct vmctl_req *q, const struct vmctl_client *c, const char *method,
		  const char *path, const cJSON *body);

#endif
