#ifndef SANDVM_API_SANDBOXD_TUNNEL_SANDBOX_H
#define SANDVM_API_SANDBOXD_TUNNEL_SANDBOX_H

/*
 * The daemon's side of serving tunnels: sandboxd_tunnel_ops answers
 * tunnel_serve (which label is a tunnel, may a connection go in, it ended),
 * and sandbox_tunnel_listeners_part (sandbox_part.h) opens each unencrypted
 * tunnel's plain TCP listener on its host port while the VMM runs, closing
 * it and every connection of the sandbox when the VMM is gone.
 */

#include "tunnel_serve.h"

struct sandboxd;

extern const struct tunnel_serve_ops sandboxd_tunnel_ops;

/* Once d->tunnel_serve is set: the plain endpoints of sandboxes a restart adopted. */
void tunnel_sandbox_adopt_all(struct sandboxd *d);

#endif
