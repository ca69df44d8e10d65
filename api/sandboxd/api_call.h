#ifndef SANDVM_API_SANDBOXD_API_CALL_H
#define SANDVM_API_SANDBOXD_API_CALL_H

/*
 * An API call as domain code sees it: a body to read and an answer to give,
 * now or later. Domain code never picks an HTTP status: it answers with a
 * JSON object (the route table in routes.c gives the success's status) or
 * fails with a negative errno, the request field at fault and a message
 * (api_error.h maps the errno). A call answered later is held meanwhile; an
 * answer to a client that went away is dropped.
 */

#include <stdbool.h>
#include <stddef.h>

struct api_call;
struct http_request;
struct cJSON;

/* The call of a routed request (the same object, seen from the domain side). */
struct api_call *api_call_of(struct http_request *req);
struct http_request *api_call_request(struct api_call *call);

/* The request body ("" when none) and its length. */
const char *api_call_body(const struct api_call *call, size_t *len);

/* Success: body (taken; NULL for none) with the route's status. */
void api_call_ok(struct api_call *call, struct cJSON *body);
/* Failure: err a negative errno; field the request field at fault, or NULL. */
void api_call_fail(struct api_call *call, int err, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Keeps the call valid for an answer after the handler returned; api_call_release drops it. */
void api_call_hold(struct api_call *call);
void api_call_release(struct api_call *call);
/* The client went away: an answer would be dropped. */
bool api_call_gone(const struct api_call *call);

/*
 * A call made inside the daemon, not by a client (the isolation monitor's
 * canary create): its answer goes to sink rather than to a connection. The
 * creator holds one reference; api_call_internal_drop gives it up, after
 * which the call is gone (answers are dropped) and freed once domain code
 * released it too. NULL when out of memory.
 */
struct api_call_sink {
	void (*ok)(void *ctx, struct cJSON *body); /* body taken (NULL: none) */
	void (*fail)(void *ctx, int err, const char *message);
};
struct api_call *api_call_internal_new(const struct api_call_sink *sink, void *ctx);
void api_call_internal_drop(struct api_call *call);

#endif
