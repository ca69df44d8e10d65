#ifndef SANDVM_API_SANDBOXD_IMAGES_H
#define SANDVM_API_SANDBOXD_IMAGES_H

/*
 * Built-in images built on first use (images.c): a create that needs one
 * waits for its build.
 */

#include <stdbool.h>

struct sandboxd;
struct sandbox_spec;
struct api_call;

int images_init(struct sandboxd *d);
void images_destroy(struct sandboxd *d);
bool images_can_build(const struct sandboxd *d, const char *name);
/* Builds spec's image (or joins the build under way), then creates; takes spec. */
int images_build_and_create(struct sandboxd *d, struct sandbox_spec *spec, struct api_call *call);
void *images_to_json(const struct sandboxd *d);

#endif
