#ifndef SANDVM_API_SANDBOXD_FLEET_GATEWAY_RELAY_H
#define SANDVM_API_SANDBOXD_FLEET_GATEWAY_RELAY_H

/*
 * A client's call on one sandbox, relayed to the worker that holds it
 * (docs/fleet.md, "Routing"): decided at headers time, the client
 * connection is handed over (http_conn_hand_over) and its bytes go to a TLS
 * connection to the worker unparsed, after the request head rebuilt with
 * Connection: close; the worker's reply comes back the same way until the
 * worker closes, then the client's connection closes too. So exec output,
 * stdin and file bodies stream both ways at the pace of the slower side:
 * at most GATEWAY_RELAY_MAX_QUEUED bytes wait towards either side before
 * the other stops being read.
 *
 * A worker that cannot be reached gets the client a 502 (503 while
 * connecting timed out) in the API's JSON error shape, written by the relay.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_request;
struct ssl_ctx_st;

#define GATEWAY_RELAY_MAX_QUEUED (256u * 1024)
#define GATEWAY_RELAY_CONNECT_TIMEOUT_MS 10000u

/*
 * The request head as the worker gets it: the client's request line and
 * fields, without hop-by-hop ones (Connection, Keep-Alive, Proxy-*, TE,
 * Trailer, Upgrade) and Host, plus Host: worker and Connection: close; the
 * body's framing fields (Content-Length, Transfer-Encoding) stay, since the
 * body goes as the client framed it. Length, or -E2BIG.
 */
int gateway_relay_head(const struct http_request *req, const char *worker_host, uint16_t port, char *out,
		       size_t cap);

struct gateway_relay;

/*
 * From a route at headers time: the connection is handed over now, the
 * worker named later (its owner may have to ask etcd first); client bytes
 * wait meanwhile (bounded: the client is paused past the limit). The
 * caller holds the relay until it calls gateway_relay_connect,
 * gateway_relay_answer or gateway_relay_release, exactly one of them.
 * 0 with *out, or -errno with the request not answered (the caller answers).
 */
int gateway_relay_begin(struct http_request *req, struct gateway_relay **out);
/* Opens the TLS connection to the worker; the rebuilt head and the waiting bytes go first. */
void gateway_relay_connect(struct gateway_relay *r, uv_loop_t *loop, struct ssl_ctx_st *tls, const char *host,
			   uint16_t port);
/* Answers the client with a reply of the gateway's own (status, a JSON body), then closes. */
void gateway_relay_answer(struct gateway_relay *r, int status, const char *json);
/* Gives the relay up (the client is gone already, or is cut). */
void gateway_relay_release(struct gateway_relay *r);
/* The client went away meanwhile. */
bool gateway_relay_gone(const struct gateway_relay *r);

#endif
