#ifndef SANDVM_API_SANDBOXD_FILES_H
#define SANDVM_API_SANDBOXD_FILES_H

/*
 * File calls in a sandbox through the guest agent (files.c).
 */

struct sandbox;
struct http_request;

/* Routes .../files[/op]; op is "", "stat", "list" or "mkdir". Set at headers time. */
void files_route(struct sandbox *sb, const char *op, struct http_request *req);

#endif
