/*
 * The daemon's side of serving tunnels (tunnel_sandbox.h): the owner that
 * tunnel_serve asks which label is a tunnel and whether a connection may go
 * in, and the part that opens the plain TCP listener of each unencrypted
 * tunnel on its host port while the sandbox's VMM runs.
 *
 * A connection counts against the sandbox's cap of open connections
 * (--ingress-max-connections, shared with connect-token connections), holds a
 * reference on the sandbox and counts as activity for the idle timeout until
 * it ends. When the VMM is gone the part's teardown closes the listeners and
 * ends every connection of the sandbox.
 */
#include "tunnel_sandbox.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sandbox.h"
#include "sandbox_part.h"
#include "sandboxd.h"
#include "store.h"
#include "tunnel_serve.h"
#include "tunnels.h"

/* One unencrypted tunnel's plain listener; freed when its handle closed. */
struct tunnel_listener {
	uv_tcp_t tcp;
	struct sandboxd *d;
	uint16_t plain_port;
};

/* ---- the owner of tunnel_serve's connections ---- */

static int kind_of(void *ctx, const char *label, enum tunnel_kind *kind)
{
	const struct sandbox_tunnel *t;

	if (!tunnel_find_label(ctx, label, &t))
		return -ENOENT;
	*kind = t->kind;
	return 0;
}

static int admit(void *ctx, const char *label, uint16_t plain_port, struct tunnel_target *target)
{
	struct sandboxd *d = ctx;
	const struct sandbox_tunnel *t;
	struct sandbox *sb = label ? tunnel_find_label(d, label, &t) : tunnel_find_plain_port(d, plain_port, &t);

	if (!sb)
		return -ENOENT;
	if (sb->state != SANDBOX_RUNNING)
		return -EAGAIN;
	if (sb->ingress.nlinks >= d->ingress_max_connections) {
		sv_warn("sandbox=%s event=tunnel_refused port=%u reason=\"%u open connections, its limit\"", sb->id,
			t->port, sb->ingress.nlinks);
		return -EMFILE;
	}
	sb->ingress.nlinks++;
	sandbox_ref(sb);
	/* An open connection keeps the sandbox from its idle timeout. */
	sandbox_activity(sb, 1);
	snprintf(target->vsock_path, sizeof(target->vsock_path), "%s", sb->vm.vsock);
	target->port = t->port;
	target->owner = sb;
	return 0;
}

static void release(void *ctx, void *owner)
{
	struct sandbox *sb = owner;

	(void)ctx;
	sb->ingress.nlinks--;
	sandbox_activity(sb, -1);
	sandbox_unref(sb);
}

const struct tunnel_serve_ops sandboxd_tunnel_ops = {
	.kind_of = kind_of,
	.admit = admit,
	.release = release,
};

/* ---- plain listeners ---- */

static void on_plain_connection(uv_stream_t *server, int status)
{
	struct tunnel_listener *tl = server->data;

	if (status < 0) {
		sv_warn("tunnel host port %u: %s", tl->plain_port, uv_strerror(status));
		return;
	}
	/* Refused connections are taken and closed inside, so the backlog never fills. */
	tunnel_serve_accept(tl->d->tunnel_serve, server, tl->plain_port);
}

static void free_listener(uv_handle_t *h)
{
	free(h->data);
}

/* Listens on port of the ingress host: 0 or -errno (-EADDRINUSE: held by another program). */
static int listen_plain(struct sandboxd *d, uint16_t port, struct tunnel_listener **out)
{
	struct sockaddr_storage addr = d->tunnel_bind;
	struct tunnel_listener *tl = calloc(1, sizeof(*tl));
	int r;

	if (!tl)
		return -ENOMEM;
	if (addr.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&addr)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)&addr)->sin_port = htons(port);
	tl->d = d;
	tl->plain_port = port;
	uv_tcp_init(d->loop, &tl->tcp);
	tl->tcp.data = tl;
	r = uv_tcp_bind(&tl->tcp, (struct sockaddr *)&addr, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&tl->tcp, 128, on_plain_connection);
	if (r < 0) {
		uv_close((uv_handle_t *)&tl->tcp, free_listener);
		return r;
	}
	*out = tl;
	return 0;
}

static void listeners_close(struct sandbox *sb)
{
	for (unsigned i = 0; i < sb->tunnels.n; i++) {
		struct tunnel_listener *tl = sb->tunnels.t[i].listener;

		if (tl)
			uv_close((uv_handle_t *)&tl->tcp, free_listener);
		sb->tunnels.t[i].listener = NULL;
	}
}

/*
 * Opens the listener of every unencrypted tunnel of sb. A host port that
 * another program holds is traded for the next free one of --tunnel-ports
 * (the record and the API then show the new one). 0, or -errno with err.
 */
static int listeners_open(struct sandbox *sb, char *err, size_t errlen)
{
	struct sandboxd *d = sb->d;

	for (unsigned i = 0; i < sb->tunnels.n; i++) {
		struct sandbox_tunnel *t = &sb->tunnels.t[i];
		int r;

		if (t->kind != TUNNEL_UNENCRYPTED || !t->plain_port || t->listener)
			continue;
		while ((r = listen_plain(d, t->plain_port, (struct tunnel_listener **)&t->listener)) == -EADDRINUSE) {
			uint16_t next = tunnel_plain_port_after(d, sb, t->plain_port);

			sv_warn("sandbox=%s tunnel host port %u is held by another program; trying %u", sb->id,
				t->plain_port, next);
			t->plain_port = next;
			if (!next) {
				r = -EADDRINUSE;
				break;
			}
		}
		if (r < 0) {
			snprintf(err, errlen, "cannot listen on a host port of --tunnel-ports %u-%u for guest port %u: %s",
				 d->tunnel_port_lo, d->tunnel_port_hi, t->port, uv_strerror(r));
			listeners_close(sb);
			return r;
		}
	}
	return 0;
}

static int part_setup(struct sandbox *sb, struct sandbox_launch *l, char *err, size_t errlen)
{
	(void)l;
	if (!sb->d->tunnel_serve)
		return 0; /* no --ingress: tunnels_admit refused any tunnel */
	return listeners_open(sb, err, errlen);
}

static void part_teardown(struct sandbox *sb)
{
	listeners_close(sb);
	if (sb->d->tunnel_serve)
		tunnel_serve_drop_owner(sb->d->tunnel_serve, sb);
}

/* A restart found the VMM alive: its plain endpoints come back (once serving is set up, tunnel_sandbox_adopt_all). */
static void part_adopt(struct sandbox *sb)
{
	char err[256];

	if (!sb->d->tunnel_serve)
		return;
	if (listeners_open(sb, err, sizeof(err)) < 0)
		sv_warn("sandbox=%s %s", sb->id, err);
	store_save(sb); /* a host port may have changed */
}

const struct sandbox_part_ops sandbox_tunnel_listeners_part = {
	.name = "tunnel listeners",
	.setup = part_setup,
	.teardown = part_teardown,
	.adopt = part_adopt,
};

void tunnel_sandbox_adopt_all(struct sandboxd *d)
{
	for (struct sandbox *sb = d->sandboxes; sb; sb = sb->next)
		if (!sandbox_has_ended(sb))
			part_adopt(sb);
}
