#ifndef SANDVM_API_SANDBOXD_FLEET_GATEWAY_RELAY_H
#define SANDVM_API_SANDBOXD_FLEET_GATEWAY_RELAY_H

/*
 * A client's call on one sandbox, relayed to the worker that holds it
 * (docs/fleet.md, "Routing"): decided at headers time, the client
 * connection is handed over (http_conn_hand_over) and its bytes go,
 * unchanged after the rebuilt request head, to a TLS connection to the
 * worker taken from the pool (worker_pool.h); the worker's reply comes back
 * the same way, and when it ends the client's connection closes and the
 * worker connection goes back to the pool (when the request and the reply
 * were both whole and both sides keep-alive). So exec output, stdin and file
 * bodies stream both ways at the pace of the slower side: at most
 * GATEWAY_RELAY_MAX_QUEUED bytes wait towards either side before the other
 * stops being read. Bytes a client sends past its request are dropped.
 *
 * A worker that cannot be reached gets the client a 502 (504 when
 * connecting timed out) in the API's JSON error shape, written by the relay.
 * The worker's reply gets fields after each status line: "Sandvm-Worker:
 * ID", so every relayed answer says where it came from, and on the final
 * one "Connection: close" (the client's connection ends with it).
 *
 * A relay with no byte either way for idle_ms is cut (checked every quarter
 * of it): before the worker said anything the client gets a 504, after that
 * both connections are cut (a cut exec output stream is read again from
 * where it stopped, docs/api.md "Exec").
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_request;
struct worker_pool;

#define GATEWAY_RELAY_MAX_QUEUED (256u * 1024)
#define GATEWAY_RELAY_CONNECT_TIMEOUT_MS 10000u
/* Longer than the longest silence the API allows a reply (a /wait of 3600 s) and some. */
#define GATEWAY_RELAY_IDLE_MS_DEFAULT (3660u * 1000)
#define GATEWAY_RELAY_WORKER_FIELD "Sandvm-Worker"

/*
 * The request head as the worker gets it: the client's request line and
 * fields, without hop-by-hop ones (Connection, Keep-Alive, Proxy-*, TE,
 * Trailer, Upgrade) and Host, plus Host: worker_host:port (none when
 * worker_host is NULL), keep-alive (HTTP/1.1's default); the body's framing fields
 * (Content-Length, Transfer-Encoding) stay, since the body goes as the
 * client framed it. Length, or -E2BIG.
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
/* Where a relay goes. */
struct gateway_relay_target {
	const char *worker; /* its id, for the reply's Sandvm-Worker field */
	const char *host;   /* its advertised address: the request's Host and the certificate's name */
	uint16_t port;
	unsigned idle_ms;   /* 0: GATEWAY_RELAY_IDLE_MS_DEFAULT */
};

/* Takes a connection to the worker from pool (a kept one or a new one); the rebuilt head and the waiting bytes go first. */
void gateway_relay_connect(struct gateway_relay *r, uv_loop_t *loop, struct worker_pool *pool,
			   const struct gateway_relay_target *t);
/* Answers the client with a reply of the gateway's own (status, a JSON body), then closes. */
void gateway_relay_answer(struct gateway_relay *r, int status, const char *json);
/* Gives the relay up (the client is gone already, or is cut). */
void gateway_relay_release(struct gateway_relay *r);
/* The client went away meanwhile. */
bool gateway_relay_gone(const struct gateway_relay *r);

#endif
