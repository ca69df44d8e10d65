#ifndef SANDVM_API_SANDBOXD_ROUTES_H
#define SANDVM_API_SANDBOXD_ROUTES_H

/* The REST API of docs/api.md on top of http_conn. */

struct sandboxd;
struct http_request;

/* http_server's route callback; ctx is the struct sandboxd. */
void routes_on_headers(struct http_request *req, void *ctx);

#endif
