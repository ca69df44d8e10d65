/*
 * libFuzzer target: vmctl's decoder of sandboxd's exec output frames, whose
 * payloads are what the guest wrote. The input's first two bytes choose how
 * the rest is cut into pieces and which frame's callback stops the decoder;
 * fed whole or in pieces, the decoder must hand over the same frames and end
 * in the same state.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../api/vmctl/exec_frames.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct trace {
	unsigned frames;
	unsigned stop_at;
	uint64_t digest; /* over every frame's type, length and payload */
};

static int on_frame(void *ctx, unsigned type, const uint8_t *payload, size_t len)
{
	struct trace *t = ctx;

	if (len > VMCTL_FRAME_MAX || type > 0xff)
		abort();
	t->digest = (t->digest ^ type) * 0x100000001b3ull;
	t->digest = (t->digest ^ len) * 0x100000001b3ull;
	for (size_t i = 0; i < len; i++)
		t->digest = (t->digest ^ payload[i]) * 0x100000001b3ull;
	return t->frames++ == t->stop_at ? -1 : 0;
}

static int decode(const uint8_t *data, size_t size, uint8_t cut_seed, unsigned stop_at, struct trace *t,
		  int *boundary)
{
	struct vmctl_frames f;
	uint64_t st = cut_seed;
	size_t off = 0;
	int r = 0;

	memset(t, 0, sizeof(*t));
	t->digest = 0xcbf29ce484222325ull;
	t->stop_at = stop_at;
	vmctl_frames_init(&f, on_frame, t);
	while (off < size) {
		size_t piece = size - off;

		if (cut_seed) {
			st = st * 6364136223846793005ull + 1442695040888963407ull;
			piece = (size_t)(st >> 59) + 1; /* 1..32 bytes */
			if (piece > size - off)
				piece = size - off;
		}
		r = vmctl_frames_feed(&f, data + off, piece);
		if (r)
			break;
		off += piece;
	}
	/* A stopped decoder keeps its answer and reads nothing more. */
	if (r) {
		unsigned frames = t->frames;

		if (vmctl_frames_feed(&f, data, size) != r || t->frames != frames)
			abort();
	}
	*boundary = vmctl_frames_at_boundary(&f);
	vmctl_frames_destroy(&f);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct trace whole, pieces;
	int r_whole, r_pieces, b_whole, b_pieces;
	uint8_t cut_seed;
	unsigned stop_at;

	if (size < 2)
		return 0;
	cut_seed = data[0] | 1;
	stop_at = data[1] < 0xf0 ? data[1] % 8 : ~0u;
	data += 2;
	size -= 2;
	r_whole = decode(data, size, 0, stop_at, &whole, &b_whole);
	r_pieces = decode(data, size, cut_seed, stop_at, &pieces, &b_pieces);
	if (r_whole != r_pieces || whole.frames != pieces.frames || whole.digest != pieces.digest)
		abort();
	if (!r_whole && b_whole != b_pieces)
		abort();
	return 0;
}
