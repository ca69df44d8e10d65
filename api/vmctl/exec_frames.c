#include "exec_frames.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void vmctl_frames_init(struct vmctl_frames *f, vmctl_frame_cb cb, void *ctx)
{
	memset(f, 0, sizeof(*f));
	f->cb = cb;
	f->ctx = ctx;
}

void vmctl_frames_destroy(struct vmctl_frames *f)
{
	free(f->buf);
	f->buf = NULL;
}

bool vmctl_frames_at_boundary(const struct vmctl_frames *f)
{
	return f->header_len == 0 && !f->buf;
}

static int frames_stop(struct vmctl_frames *f, int r)
{
	f->stopped = r;
	free(f->buf);
	f->buf = NULL;
	return r;
}

static int frames_parse_header(struct vmctl_frames *f)
{
	const uint8_t *h = f->header;

	if (h[1] || h[2] || h[3])
		return -EPROTO;
	f->len = (size_t)h[4] << 24 | (size_t)h[5] << 16 | (size_t)h[6] << 8 | h[7];
	if (f->len > VMCTL_FRAME_MAX)
		return -EPROTO;
	f->got = 0;
	return 0;
}

int vmctl_frames_feed(struct vmctl_frames *f, const void *data, size_t n)
{
	const uint8_t *p = data;
	size_t take;
	int r;

	if (f->stopped)
		return f->stopped;
	while (n) {
		if (!f->buf) {
			take = VMCTL_FRAME_HEADER - f->header_len;
			if (take > n)
				take = n;
			memcpy(f->header + f->header_len, p, take);
			f->header_len += take;
			p += take;
			n -= take;
			if (f->header_len < VMCTL_FRAME_HEADER)
				break;
			r = frames_parse_header(f);
			if (r)
				return frames_stop(f, r);
			/* The common case: the whole payload is here, no copy. */
			if (n >= f->len) {
				f->header_len = 0;
				r = f->cb(f->ctx, f->header[0], p, f->len);
				if (r)
					return frames_stop(f, r);
				p += f->len;
				n -= f->len;
				continue;
			}
			f->buf = malloc(f->len ? f->len : 1);
			if (!f->buf)
				return frames_stop(f, -ENOMEM);
		}
		take = f->len - f->got;
		if (take > n)
			take = n;
		memcpy(f->buf + f->got, p, take);
		f->got += take;
		p += take;
		n -= take;
		if (f->got < f->len)
			break;
		r = f->cb(f->ctx, f->header[0], f->buf, f->len);
		free(f->buf);
		f->buf = NULL;
		f->header_len = 0;
		if (r)
			return frames_stop(f, r);
	}
	return 0;
}
