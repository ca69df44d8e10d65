/*
 * api_call.h over the HTTP core: a call is its request; the route table set
 * the success's status on it (req->route_status), api_error_status() picks
 * a failure's.
 */
#include "api_call.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "api_error.h"
#include "http_conn.h"

/*
 * A call inside the daemon: a request with no connection (every client's
 * request has one), its answer going to sink.
 */
struct internal_call {
	struct http_request req; /* first: the call is the request */
	const struct api_call_sink *sink;
	void *ctx;
	unsigned refs;
	bool dropped;
};

static struct internal_call *internal(const struct api_call *call)
{
	const struct http_request *req = (const struct http_request *)call;

	return req->conn ? NULL : (struct internal_call *)call;
}

struct api_call *api_call_internal_new(const struct api_call_sink *sink, void *ctx)
{
	struct internal_call *ic = calloc(1, sizeof(*ic));

	if (!ic)
		return NULL;
	ic->req.method = -1;
	ic->req.url = "";
	ic->req.query = "";
	ic->req.body_fd = -1;
	ic->sink = sink;
	ic->ctx = ctx;
	ic->refs = 1;
	return (struct api_call *)&ic->req;
}

static void internal_release(struct internal_call *ic)
{
	if (--ic->refs == 0)
		free(ic);
}

void api_call_internal_drop(struct api_call *call)
{
	struct internal_call *ic = internal(call);

	ic->dropped = true;
	internal_release(ic);
}

struct api_call *api_call_of(struct http_request *req)
{
	return (struct api_call *)req;
}

struct http_request *api_call_request(struct api_call *call)
{
	return (struct http_request *)call;
}

const char *api_call_body(const struct api_call *call, size_t *len)
{
	const struct http_request *req = (const struct http_request *)call;

	*len = req->body ? req->body_len : 0;
	return req->body ? req->body : "";
}

void api_call_ok(struct api_call *call, cJSON *body)
{
	struct http_request *req = api_call_request(call);
	int status = req->route_status ? req->route_status : 200;
	struct internal_call *ic = internal(call);

	if (ic) {
		if (ic->dropped || ic->req.responded) {
			cJSON_Delete(body);
			return;
		}
		ic->req.responded = true;
		ic->sink->ok(ic->ctx, body);
		return;
	}
	if (http_conn_closed(req->conn)) {
		cJSON_Delete(body);
		return;
	}
	if (body)
		http_respond_json(req, status, body);
	else
		http_respond(req, status, NULL, NULL, 0);
}

void api_call_fail(struct api_call *call, int err, const char *field, const char *fmt, ...)
{
	struct http_request *req = api_call_request(call);
	struct internal_call *ic = internal(call);
	char msg[1024];
	va_list ap;

	if (ic ? ic->dropped || ic->req.responded : http_conn_closed(req->conn))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ic) {
		(void)field;
		ic->req.responded = true;
		ic->sink->fail(ic->ctx, err, msg);
		return;
	}
	http_respond_error(req, api_error_status(err), field, "%s", msg);
}

void api_call_hold(struct api_call *call)
{
	struct internal_call *ic = internal(call);

	if (ic) {
		ic->refs++;
		return;
	}
	http_conn_ref(api_call_request(call)->conn);
}

void api_call_release(struct api_call *call)
{
	struct internal_call *ic = internal(call);

	if (ic) {
		internal_release(ic);
		return;
	}
	http_conn_unref(api_call_request(call)->conn);
}

bool api_call_gone(const struct api_call *call)
{
	const struct internal_call *ic = internal(call);

	if (ic)
		return ic->dropped;
	return http_conn_closed(((const struct http_request *)call)->conn);
}
