#ifndef SANDVM_API_SANDBOXD_HTTP_CONN_H
#define SANDVM_API_SANDBOXD_HTTP_CONN_H

/*
 * HTTP/1.1 server connections on libuv streams, parsed by the packaged
 * http_parser. One request at a time per connection (keep-alive, pipelined
 * requests wait); the body is buffered, spooled to a file or handed to a
 * sink with back-pressure, as the route chooses once the headers are in.
 * Responses are whole or chunked streams. A connection lives until its close
 * callback and as long as someone holds a reference (an operation running on
 * a worker thread), so a late reply to a vanished client is dropped safely.
 *
 * Every request head is judged by http_head.h before the parser sees it; its
 * header fields are kept in a bounded list. A server caps its connections
 * (evicting the oldest idle one for a new client), gives a client a time
 * limit for each request head and for keep-alive idleness, and allocates a
 * connection's input buffer only while a request is arriving; a TLS
 * connection keeps its record buffers only while it is busy. After a reply
 * a route may hand the connection over to a byte relay (WebSocket upgrades,
 * tunnels): from then on its bytes go both ways unparsed.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http_head.h"
#include "json_text.h"

struct http_conn;
struct http_request;
struct ssl_ctx_st;

enum http_body_mode {
	HTTP_BODY_DISCARD = 0,
	HTTP_BODY_BUFFER, /* in memory, up to body_limit */
	HTTP_BODY_FILE,   /* appended to body_fd, up to body_limit */
	HTTP_BODY_SINK,   /* handed to sink as it arrives */
};

/* Called for what the route set up; may be NULL. */
struct http_handler {
	/* Body bytes for HTTP_BODY_SINK: 0, 1 to stop reading until http_conn_resume, or -errno. */
	int (*sink)(struct http_request *req, const char *data, size_t len);
	/* The whole request is in: reply (now or later). */
	void (*complete)(struct http_request *req);
	/* A chunked response took all queued bytes. */
	void (*drained)(struct http_request *req);
	/* The client went away before the reply ended. */
	void (*aborted)(struct http_request *req);
};

#define HTTP_MAX_AUTH 256

struct http_request {
	struct http_conn *conn;
	int method; /* enum http_method; -1 when the head was refused before it was read */
	const char *url; /* the request target as sent, NUL-terminated; "" before it is read */
	size_t url_len;
	const char *query;       /* points into url; "" when none */
	char auth[HTTP_MAX_AUTH];
	size_t auth_len;
	struct http_headers *headers; /* every field, while the request lives (NULL before) */
	bool headers_done;
	bool upgrade;        /* Connection: upgrade or CONNECT: only a relay can answer */
	bool accepts_upgrade; /* set by the route that will call http_conn_detach */
	uint64_t start_ns;
	const char *key_name; /* for the log; set by the router */

	enum http_body_mode body_mode;
	size_t body_limit;
	char *body;
	size_t body_len;
	int body_fd;
	bool body_too_large;
	uint64_t content_length; /* with has_length: the request's Content-Length */
	bool has_length, chunked; /* how the request body is framed (neither: no body) */
	int status_code; /* of the reply, for the log */
	int route_status; /* a success's status, from the route table (api_call.h) */

	const struct http_handler *handler;
	void *ctx;
	bool responded, streaming, complete;
};

/* Called when a request's headers are in; sets body mode and handler. */
typedef void (*http_route_fn)(struct http_request *req, void *ctx);

#define HTTP_DEFAULT_MAX_CONNECTIONS 16384
#define HTTP_DEFAULT_HEADER_TIMEOUT_MS 10000
#define HTTP_DEFAULT_IDLE_TIMEOUT_MS 60000
#define HTTP_DEFAULT_BODY_TIMEOUT_MS 60000
#define HTTP_DEFAULT_TLS_QUIET_MS 1000
#define HTTP_POOL_MAX 32

struct http_server {
	uv_loop_t *loop;
	http_route_fn route;
	void *route_ctx;
	/* Limits; http_server_init sets the defaults above. */
	unsigned max_connections;
	unsigned header_timeout_ms; /* from a request's first byte (or the accept) to its blank line */
	unsigned idle_timeout_ms;   /* between requests of a kept-alive connection */
	unsigned body_timeout_ms;   /* without a byte of a (not streamed) request body */
	unsigned tls_quiet_ms;      /* quiet time after which a TLS connection gives back its record buffers */
	struct ssl_ctx_st *tls;     /* TLS on every connection (tls.h), or NULL */
	/*
	 * A TLS handshake completed, before any HTTP is read; may take the
	 * connection with http_conn_take. May be NULL.
	 */
	void (*tls_done)(struct http_conn *c, void *ctx);
	void *tls_done_ctx;
	/* A connection with a context (http_conn_set_ctx) closes; may be NULL. */
	void (*conn_closed)(struct http_conn *c, void *ctx);
	/* State. */
	unsigned connections;   /* open, not closing */
	unsigned input_buffers; /* connections holding an input buffer */
	unsigned tls_buffers;   /* TLS connections that may hold record buffers (used since the last release) */
	unsigned long long evicted, timed_out, refused, tls_failed;
	unsigned long long accepted;   /* connections taken, all told */
	unsigned long long replies[6]; /* requests answered, by status class: [2] 2xx ... [0] anything else */
	struct http_conn *conns; /* every open connection, newest first */
	char *tls_raw;           /* ciphertext read or flushed just now (one piece at a time on the loop) */
	char *cork;              /* the corked connection's gathered plaintext (http_conn_cork) */
	size_t cork_len;
	struct http_conn *cork_conn; /* the connection corked now, or NULL */
	void *head_pool[HTTP_POOL_MAX], *input_pool[HTTP_POOL_MAX]; /* spare ones, for reuse */
	unsigned heads_pooled, inputs_pooled;
	struct json_text json; /* the text of JSON replies, kept for the next one */
};

void http_server_init(struct http_server *srv, uv_loop_t *loop, http_route_fn route, void *route_ctx);
/* Frees what the server holds once its connections are gone. */
void http_server_destroy(struct http_server *srv);

/*
 * Accepts a connection from a listening unix or TCP stream. At the cap the
 * oldest connection that has no request under way is closed for it; with
 * none such, the new one is accepted and closed at once (-EMFILE).
 */
int http_conn_accept(struct http_server *srv, uv_stream_t *listener);
/* Serves a connected unix or TCP socket; takes fd (closed with the connection, or on failure unless -ENOTSOCK). */
int http_conn_adopt(struct http_server *srv, int fd);

void http_conn_ref(struct http_conn *c);
void http_conn_unref(struct http_conn *c);
/* True once the client is gone; replies are then dropped. */
bool http_conn_closed(const struct http_conn *c);
/* Starts reading request body bytes again after a sink asked to stop. */
void http_conn_resume(struct http_conn *c);
/*
 * Gathers what is written to c (replies, streams, relayed bytes) until
 * http_conn_uncork, up to 16 KiB at a time, so that a reply's head and body
 * made in one turn of the loop leave in one write (over TLS one record).
 * Within one callback only: one connection of a server at a time (another
 * one's writes go out as they come), and every cork is taken out before the
 * callback returns.
 */
void http_conn_cork(struct http_conn *c);
/* Writes what was gathered. */
void http_conn_uncork(struct http_conn *c);
/* Closes the connection now, whatever it was doing (no lingering); an owed reply's handler hears aborted. */
void http_conn_abort(struct http_conn *c);
/* Per-connection state of the route's owner; srv->conn_closed is told when the connection closes. */
void http_conn_set_ctx(struct http_conn *c, void *ctx);
void *http_conn_ctx(const struct http_conn *c);
/* The server name the TLS client asked for (lower case as sent), or NULL (none, or no TLS). */
const char *http_conn_sni(const struct http_conn *c);
/* The peer's address as text ("127.0.0.1", "::1"; "" for a unix socket), asked once per connection. 0 or -errno. */
int http_conn_peer(struct http_conn *c, char *out, size_t cap);

void http_respond(struct http_request *req, int status, const char *content_type, const void *body,
		  size_t len);
/* {"error": msg[, "field": field]} */
void http_respond_error(struct http_request *req, int status, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Serializes and frees json (a cJSON *). */
void http_respond_json(struct http_request *req, int status, void *json);
/* A reply whose body is the rest of fd from offset 0 (len bytes); takes fd. */
void http_respond_fd(struct http_request *req, int status, const char *content_type, int fd,
		     uint64_t len);

void http_stream_begin(struct http_request *req, int status, const char *content_type);

enum http_reply_framing {
	HTTP_REPLY_CHUNKED, /* http_stream_write chunks, http_stream_end ends them */
	HTTP_REPLY_LENGTH,  /* Content-Length: length, then exactly those bytes as they are */
	HTTP_REPLY_NONE,    /* no body (HEAD, 204, 304): fields may carry a Content-Length; ends here */
};

/*
 * A reply head of status and fields (whole lines ending in CRLF, none of
 * them framing or Connection) with the framing given; the body follows
 * through http_stream_write and http_stream_end. For proxied replies.
 */
void http_stream_begin_fields(struct http_request *req, int status, const char *fields, size_t fields_len,
			      enum http_reply_framing framing, uint64_t length);
/* Queues one chunk; returns the bytes queued and not yet written. */
size_t http_stream_write(struct http_request *req, const void *data, size_t len);
void http_stream_end(struct http_request *req);

const char *http_status_text(int status);

/* A request header's value (NUL-terminated), NULL when absent. */
const char *http_request_header(const struct http_request *req, const char *name);

/* ---- byte relays ---- */

struct http_relay_ops {
	/* Bytes from the client: 0, or 1 to stop reading until http_relay_resume. */
	int (*data)(void *ctx, const char *data, size_t len);
	/*
	 * The client ended its side (err 0: it may still read what the relay
	 * writes; http_relay_close when done) or the connection failed (err < 0:
	 * it is closed already). Called once; never after http_relay_close.
	 */
	void (*closed)(void *ctx, int err);
	/* Everything written went out (for back-pressure). May be NULL. */
	void (*drained)(void *ctx);
};

/*
 * Answers req (whole, its body read) with a head of status and headers
 * (lines ending in CRLF, may be "") and no body, then hands the connection
 * to ops: bytes that followed the request arrive at ops->data before this
 * returns. 0, or -errno with the request answered 500 or gone.
 */
int http_conn_detach(struct http_request *req, int status, const char *headers, const struct http_relay_ops *ops,
		     void *ctx);
/*
 * From a route, at headers time (before any body byte was parsed): nothing
 * is answered here; once the route returns, the connection becomes a byte
 * relay to ops, whose first bytes are those that followed the request head
 * (its body as the client framed it, and anything after). The relay's far
 * end answers the client (the fleet gateway's relay to a worker). 0, or
 * -EINVAL with nothing changed.
 */
int http_conn_hand_over(struct http_request *req, const struct http_relay_ops *ops, void *ctx);
/*
 * From srv->tls_done: hands the connection, no request read, to ops as a
 * byte relay (as http_conn_detach, without a reply). 0, or -errno with the
 * connection left as it was.
 */
int http_conn_take(struct http_conn *c, const struct http_relay_ops *ops, void *ctx);
/* Queues bytes to the client; returns the bytes queued and not yet written. */
size_t http_relay_write(struct http_conn *c, const void *data, size_t len);
void http_relay_pause(struct http_conn *c);
void http_relay_resume(struct http_conn *c);
/* Sends what is queued, then closes; no callback follows. */
void http_relay_close(struct http_conn *c);

#include "query.h"

#endif
