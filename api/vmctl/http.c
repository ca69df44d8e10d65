/*
 * Requests to sandboxd over libcurl: one easy handle per request, the reply
 * kept in memory or streamed to a sink, and errors turned into one line.
 */
#include "args.h"
#include "http.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* JSON replies are small; this only bounds a confused or hostile server. */
#define HTTP_BODY_MAX (64u << 20)
/* An error body is one message; the rest is dropped. */
#define HTTP_ERROR_BODY_MAX (64u << 10)
#define HTTP_CONNECT_TIMEOUT_S 10L

#ifndef CURL_WRITEFUNC_ERROR /* libcurl before 7.87 */
#define CURL_WRITEFUNC_ERROR 0xFFFFFFFF
#endif

void vmctl_buf_free(struct vmctl_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static int buf_append(struct vmctl_buf *b, const char *data, size_t n)
{
	size_t cap;
	char *p;

	if (b->len + n + 1 > b->cap) {
		cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (!p)
			return -ENOMEM;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

bool vmctl_req_ok(const struct vmctl_req *q)
{
	return q->status >= 200 && q->status < 300;
}

static size_t req_write(char *data, size_t size, size_t nmemb, void *opaque)
{
	struct vmctl_req *q = opaque;
	size_t n = size * nmemb;
	long status = 0;
	int r;

	curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
	q->status = status;
	if (q->sink && vmctl_req_ok(q)) {
		r = q->sink(q->sink_ctx, data, n);
		if (r) {
			q->sink_result = r;
			return CURL_WRITEFUNC_ERROR;
		}
		return n;
	}
	if (q->sink) {
		/* An error body: one message, its start is enough. */
		if (q->body.len >= HTTP_ERROR_BODY_MAX)
			return n;
	} else if (q->body.len + n > HTTP_BODY_MAX) {
		q->sink_result = -EFBIG;
		return CURL_WRITEFUNC_ERROR;
	}
	if (buf_append(&q->body, data, n)) {
		q->sink_result = -ENOMEM;
		return CURL_WRITEFUNC_ERROR;
	}
	return n;
}

static int req_progress(void *opaque, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			curl_off_t ulnow)
{
	const struct vmctl_req *q = opaque;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	return q->cancel && atomic_load(q->cancel);
}

int vmctl_req_add_header(struct vmctl_req *q, const char *header)
{
	struct curl_slist *l = curl_slist_append(q->headers, header);

	if (!l)
		return -ENOMEM;
	q->headers = l;
	return 0;
}

int vmctl_req_upload(struct vmctl_req *q, curl_read_callback read_fn, void *ctx, curl_off_t size)
{
	CURL *e = q->easy;

	curl_easy_setopt(e, CURLOPT_READFUNCTION, read_fn);
	curl_easy_setopt(e, CURLOPT_READDATA, ctx);
	if (!strcmp(q->method, "PUT")) {
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		if (size >= 0)
			curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, size);
		return 0;
	}
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, size);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	return size < 0 ? vmctl_req_add_header(q, "Transfer-Encoding: chunked") : 0;
}

int vmctl_req_init(struct vmctl_req *q, const struct vmctl_client *c, const char *method,
		   const char *path, const cJSON *body)
{
	CURL *e;
	char *json = NULL;
	int r = -ENOMEM;

	memset(q, 0, sizeof(*q));
	q->client = c;
	q->method = method;
	q->easy = e = curl_easy_init();
	if (!e || asprintf(&q->url, "%s%s", c->base, path) < 0) {
		q->url = NULL;
		goto fail;
	}
	curl_easy_setopt(e, CURLOPT_URL, q->url);
	if (c->unix_path)
		curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
	/* sandboxd speaks TLS 1.3 only; its certificate is verified (a private CA with --cacert). */
	curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
	if (c->cacert)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->cacert);
	/* Threads (exec's stdin and signal threads) and no signal-based timeouts. */
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* A sandbox named ".." must reach the server as such, not as a parent directory. */
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, HTTP_CONNECT_TIMEOUT_S);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, req_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, req_progress);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, q);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "vmctl/" SANDVM_VERSION);
	/* Uploads go at once instead of waiting a second for "100 Continue". */
	if (vmctl_req_add_header(q, "Expect:"))
		goto fail;
	if (c->auth && vmctl_req_add_header(q, c->auth))
		goto fail;
	if (body) {
		json = cJSON_PrintUnformatted(body);
		if (!json || vmctl_req_add_header(q, "Content-Type: application/json"))
			goto fail;
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(json));
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, json);
		free(json);
		json = NULL;
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
	}
	if (strcmp(method, "GET") && strcmp(method, "POST"))
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
	return 0;
fail:
	free(json);
	vmctl_req_destroy(q);
	return r;
}

int vmctl_req_perform(struct vmctl_req *q)
{
	char *ctype = NULL;
	CURLcode rc;

	/* The header list may have grown since init. */
	curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, q->headers);
	rc = curl_easy_perform(q->easy);
	q->curl_result = rc;
	curl_easy_getinfo(q->easy, CURLINFO_OS_ERRNO, &q->os_errno);
	if (curl_easy_getinfo(q->easy, CURLINFO_CONTENT_TYPE, &ctype) == CURLE_OK && ctype)
		q->text_reply = !strncasecmp(ctype, "text/plain", 10);
	curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->status);
	if (rc == CURLE_OK)
		return 0;
	if (rc == CURLE_WRITE_ERROR && q->sink_result > 0)
		return 0;
	if (rc == CURLE_WRITE_ERROR && q->sink_result < 0)
		return q->sink_result;
	if (rc == CURLE_ABORTED_BY_CALLBACK)
		return -ECANCELED;
	return -EIO;
}

void vmctl_req_destroy(struct vmctl_req *q)
{
	if (q->easy)
		curl_easy_cleanup(q->easy);
	curl_slist_free_all(q->headers);
	free(q->url);
	vmctl_buf_free(&q->body);
	memset(q, 0, sizeof(*q));
}

int vmctl_request(struct vmctl_req *q, const struct vmctl_client *c, const char *method,
		  const char *path, const cJSON *body)
{
	int r = vmctl_req_init(q, c, method, path, body);

	if (r)
		return r;
	return vmctl_req_perform(q);
}

/* The "error" of a JSON error body, else the body's first line. */
static void req_error_message(const struct vmctl_req *q, char *out, size_t size)
{
	cJSON *j = q->body.data ? cJSON_Parse(q->body.data) : NULL;
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "error");
	size_t n;

	if (cJSON_IsString(msg) && msg->valuestring[0]) {
		snprintf(out, size, "%s", msg->valuestring);
	} else if (q->body.len && q->text_reply) {
		n = strcspn(q->body.data, "\r\n");
		snprintf(out, size, "%.*s", (int)(n < 200 ? n : 200), q->body.data);
	} else {
		/* An HTML page or nothing: not sandboxd's, or not its error. */
		snprintf(out, size, "%s answered without an error message (is it sandboxd?)",
			 q->client ? q->client->host : "the server");
	}
	cJSON_Delete(j);
}

static bool req_unreachable(CURLcode rc)
{
	return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
	       rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_OPERATION_TIMEDOUT;
}

int vmctl_req_report(const struct vmctl_req *q, int r)
{
	const char *host = q->client ? q->client->host : "?";
	const char *why;
	char msg[1024];

	if (r == -EIO) {
		why = q->errbuf[0] ? q->errbuf : curl_easy_strerror(q->curl_result);
		/* curl speaks of "localhost port 80" for a unix socket; the errno says it plainly. */
		if (q->client && q->client->unix_path && q->os_errno && q->curl_result == CURLE_COULDNT_CONNECT)
			why = strerror((int)q->os_errno);
		if (req_unreachable(q->curl_result) && !q->status)
			fprintf(stderr, "vmctl: cannot reach sandboxd at %s: %s — is sandboxd running?\n",
				host, why);
		else
			fprintf(stderr, "vmctl: request to sandboxd at %s failed: %s\n", host, why);
		if (q->curl_result == CURLE_PEER_FAILED_VERIFICATION)
			fprintf(stderr, "vmctl: the server's certificate is not trusted: give its CA with --cacert "
					"or $SANDVM_CACERT (sandboxd's own: STATE_DIR/tls/ca.pem)\n");
	} else if (r == -ECANCELED) {
		fprintf(stderr, "vmctl: request to sandboxd at %s interrupted\n", host);
	} else if (r == -EFBIG) {
		fprintf(stderr, "vmctl: the reply of sandboxd at %s is too large\n", host);
	} else if (r < 0) {
		fprintf(stderr, "vmctl: request to sandboxd at %s: %s\n", host, strerror(-r));
	} else {
		req_error_message(q, msg, sizeof(msg));
		fprintf(stderr, "vmctl: %s (HTTP %ld)\n", msg, q->status);
		if (q->status == 401 && q->client && q->client->key_origin)
			fprintf(stderr, "vmctl: the API key came from %s\n", q->client->key_origin);
	}
	return VMCTL_EXIT_FAILED;
}

cJSON *vmctl_req_json(const struct vmctl_req *q)
{
	cJSON *j = q->body.data ? cJSON_ParseWithLength(q->body.data, q->body.len) : NULL;

	if (!j)
		fprintf(stderr, "vmctl: sandboxd sent a reply that is not JSON (HTTP %ld)\n", q->status);
	return j;
}

int vmctl_call(const struct vmctl_args *a, bool need_key, const char *method, const char *path,
	       const cJSON *body, cJSON **reply)
{
	struct vmctl_client c;
	struct vmctl_req q;
	int r;

	if (reply)
		*reply = NULL;
	r = vmctl_client_open(&c, a, need_key);
	if (r)
		return r;
	r = vmctl_request(&q, &c, method, path, body);
	if (r || !vmctl_req_ok(&q)) {
		r = vmctl_req_report(&q, r);
	} else if (reply) {
		*reply = vmctl_req_json(&q);
		r = *reply ? 0 : VMCTL_EXIT_FAILED;
	}
	vmctl_req_destroy(&q);
	vmctl_client_close(&c);
	return r;
}

int vmctl_call_sandbox(const struct vmctl_args *a, const char *method, const char *id, const char *suffix,
		       const cJSON *body, cJSON **reply)
{
	char *path = vmctl_sandbox_path(id, suffix);
	int r;

	if (reply)
		*reply = NULL;
	if (!path) {
		fprintf(stderr, "vmctl: out of memory\n");
		return VMCTL_EXIT_FAILED;
	}
	r = vmctl_call(a, true, method, path, body, reply);
	free(path);
	return r;
}

int vmctl_print_status(int r)
{
	if (r >= 0)
		return r;
	fprintf(stderr, "vmctl: %s\n", strerror(-r));
	return VMCTL_EXIT_FAILED;
}

char *vmctl_sandbox_path(const char *id, const char *suffix)
{
	char *esc = curl_easy_escape(NULL, id, 0), *path;

	if (!esc)
		return NULL;
	if (asprintf(&path, "/v1/sandboxes/%s%s", esc, suffix) < 0)
		path = NULL;
	curl_free(esc);
	return path;
}
