/*
 * api_call.h over the HTTP core: a call is its request; the route table set
 * the success's status on it (req->route_status), api_error_status() picks
 * a failure's.
 */
#include "api_call.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>

#include "api_error.h"
#include "http_conn.h"

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
	char msg[1024];
	va_list ap;

	if (http_conn_closed(req->conn))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	http_respond_error(req, api_error_status(err), field, "%s", msg);
}

void api_call_hold(struct api_call *call)
{
	http_conn_ref(api_call_request(call)->conn);
}

void api_call_release(struct api_call *call)
{
	http_conn_unref(api_call_request(call)->conn);
}

bool api_call_gone(const struct api_call *call)
{
	return http_conn_closed(((const struct http_request *)call)->conn);
}
