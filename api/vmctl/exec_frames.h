#ifndef SANDVM_API_VMCTL_EXEC_FRAMES_H
#define SANDVM_API_VMCTL_EXEC_FRAMES_H

/*
 * Decoder of the exec output stream of sandboxd (docs/api.md, "Output
 * frames"): an 8-byte header (type, three zero bytes, big-endian payload
 * length) then the payload. Bytes come in pieces of any size, as curl hands
 * them over; every complete frame is passed to the callback once.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMCTL_FRAME_HEADER 8
/* Far above what the daemon sends; bounds what a hostile peer makes us buffer. */
#define VMCTL_FRAME_MAX (16u << 20)

enum vmctl_frame_type {
	VMCTL_FRAME_STDOUT = 1,
	VMCTL_FRAME_STDERR = 2,
	VMCTL_FRAME_EXIT = 3,
	VMCTL_FRAME_ERROR = 4,
};

/*
 * Called once per complete frame; payload is valid only during the call.
 * Any other type than the four above is passed on too (the caller decides).
 * Returns 0 to go on; anything else stops the decoder and is returned by
 * vmctl_frames_feed() from then on.
 */
typedef int (*vmctl_frame_cb)(void *ctx, unsigned type, const uint8_t *payload, size_t len);

struct vmctl_frames {
	vmctl_frame_cb cb;
	void *ctx;
	uint8_t header[VMCTL_FRAME_HEADER];
	size_t header_len;
	/* Payload of a frame split across feeds; NULL while reading a header. */
	uint8_t *buf;
	size_t len, got;
	int stopped;
};

void vmctl_frames_init(struct vmctl_frames *f, vmctl_frame_cb cb, void *ctx);
void vmctl_frames_destroy(struct vmctl_frames *f);

/*
 * Feeds n bytes. Returns 0, -EPROTO for a malformed header (non-zero pad
 * bytes, length above VMCTL_FRAME_MAX), -ENOMEM, or the callback's non-zero
 * value. Once it returned non-zero it returns the same without reading more.
 */
int vmctl_frames_feed(struct vmctl_frames *f, const void *data, size_t n);

/* True between frames: the stream may end here without losing anything. */
bool vmctl_frames_at_boundary(const struct vmctl_frames *f);

#endif
