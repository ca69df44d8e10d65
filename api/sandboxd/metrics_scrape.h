#ifndef SANDVM_API_SANDBOXD_METRICS_SCRAPE_H
#define SANDVM_API_SANDBOXD_METRICS_SCRAPE_H

/* GET /metrics on the daemon's state (metrics.h): the API route and the --metrics-listen listener. */

struct sandboxd;
struct http_request;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Answers req (its handler's work is done) with the exposition, once the VMMs' counters are read. */
void metrics_scrape(struct sandboxd *d, struct http_request *req);
/* http_server's route callback of the --metrics-listen listener; ctx is the struct sandboxd. */
void metrics_on_headers(struct http_request *req, void *ctx);

#endif
