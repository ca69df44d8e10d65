/*
 * libFuzzer target: the ALPN choice of the ingress listener (tunnel_alpn_choose),
 * from the protocol list a TLS client sends. The first byte picks the name's
 * kind (a connect-token name, or a tunnel of each kind); the rest is the list.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel_serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int kinds[] = {-1, TUNNEL_ENCRYPTED, TUNNEL_UNENCRYPTED, TUNNEL_H2};
	const unsigned char *out = NULL;
	unsigned char outlen = 0;
	unsigned char *in;
	int kind, r;

	if (size < 1 || size - 1 > 65535)
		return 0;
	kind = kinds[data[0] % 4];
	/* An exact copy, so reading past the list is caught. */
	in = malloc(size - 1 ? size - 1 : 1);
	if (!in)
		return 0;
	memcpy(in, data + 1, size - 1);
	r = tunnel_alpn_choose(kind, in, (unsigned)(size - 1), &out, &outlen);
	if (r == 0) {
		/* The choice is a protocol of the client's own list, and one this listener speaks. */
		if (!out || out < in + 1 || out + outlen > in + size - 1 || out[-1] != outlen)
			abort();
		if (kind == TUNNEL_H2 ? outlen != 2 || memcmp(out, "h2", 2)
				      : outlen != 8 || memcmp(out, "http/1.1", 8))
			abort();
	} else if (r == 1) {
		/* No protocol: only for a byte tunnel. */
		if (kind != TUNNEL_ENCRYPTED && kind != TUNNEL_UNENCRYPTED)
			abort();
	} else if (r != -EPROTO || kind == TUNNEL_ENCRYPTED || kind == TUNNEL_UNENCRYPTED) {
		/* Refused: only an h2 tunnel without h2, or a token name without http/1.1. */
		abort();
	}
	free(in);
	return 0;
}
