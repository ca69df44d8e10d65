#ifndef SANDVM_API_SANDBOXD_ROUTES_H
#define SANDVM_API_SANDBOXD_ROUTES_H

/* The REST API of docs/api.md on top of http_conn. */

struct sandboxd;
struct http_request;

void routes_init(struct sandboxd *d);
/* http_server's route callback. */
void routes_on_headers(struct http_request *req, void *ctx);

#endif
