/* vmctl's decoder of sandboxd's exec output frames: pieces of any size, hostile headers, stops. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "../../api/vmctl/exec_frames.h"

#define MAX_SEEN 64

struct seen {
	unsigned n;
	unsigned type[MAX_SEEN];
	size_t len[MAX_SEEN];
	uint8_t data[MAX_SEEN][64];
	int stop_at; /* frame index whose callback returns -EIO; -1: never */
};

static int record(void *ctx, unsigned type, const uint8_t *payload, size_t len)
{
	struct seen *s = ctx;
	unsigned i = s->n++;

	assert_true(i < MAX_SEEN);
	s->type[i] = type;
	s->len[i] = len;
	memcpy(s->data[i], payload, len < 64 ? len : 64);
	return (int)i == s->stop_at ? -EIO : 0;
}

/* Appends one frame to buf at *off. */
static void put_frame(uint8_t *buf, size_t *off, unsigned type, const char *payload, size_t len)
{
	uint8_t *h = buf + *off;

	h[0] = (uint8_t)type;
	h[1] = h[2] = h[3] = 0;
	h[4] = (uint8_t)(len >> 24);
	h[5] = (uint8_t)(len >> 16);
	h[6] = (uint8_t)(len >> 8);
	h[7] = (uint8_t)len;
	memcpy(h + 8, payload, len);
	*off += 8 + len;
}

/* stdout "hello", an empty stderr frame, stderr "oops!", exit status 3 (4 bytes). */
static size_t sample(uint8_t *buf)
{
	size_t n = 0;

	put_frame(buf, &n, VMCTL_FRAME_STDOUT, "hello", 5);
	put_frame(buf, &n, VMCTL_FRAME_STDERR, "", 0);
	put_frame(buf, &n, VMCTL_FRAME_STDERR, "oops!", 5);
	put_frame(buf, &n, VMCTL_FRAME_EXIT, "\0\0\0\3", 4);
	return n;
}

static void check_sample(const struct seen *s)
{
	assert_int_equal(s->n, 4);
	assert_int_equal(s->type[0], VMCTL_FRAME_STDOUT);
	assert_int_equal(s->len[0], 5);
	assert_memory_equal(s->data[0], "hello", 5);
	assert_int_equal(s->type[1], VMCTL_FRAME_STDERR);
	assert_int_equal(s->len[1], 0);
	assert_int_equal(s->type[2], VMCTL_FRAME_STDERR);
	assert_memory_equal(s->data[2], "oops!", 5);
	assert_int_equal(s->type[3], VMCTL_FRAME_EXIT);
	assert_int_equal(s->len[3], 4);
	assert_memory_equal(s->data[3], "\0\0\0\3", 4);
}

static void whole_stream(void **state)
{
	uint8_t buf[256];
	size_t n = sample(buf);
	struct seen s = { .stop_at = -1 };
	struct vmctl_frames f;

	(void)state;
	vmctl_frames_init(&f, record, &s);
	assert_true(vmctl_frames_at_boundary(&f));
	assert_int_equal(vmctl_frames_feed(&f, buf, n), 0);
	assert_true(vmctl_frames_at_boundary(&f));
	check_sample(&s);
	vmctl_frames_destroy(&f);
}

/* Every way of cutting the stream in two, then one byte at a time: the same frames each time. */
static void split_anywhere(void **state)
{
	uint8_t buf[256];
	size_t n = sample(buf);

	(void)state;
	for (size_t cut = 0; cut <= n; cut++) {
		struct seen s = { .stop_at = -1 };
		struct vmctl_frames f;

		vmctl_frames_init(&f, record, &s);
		assert_int_equal(vmctl_frames_feed(&f, buf, cut), 0);
		assert_int_equal(vmctl_frames_feed(&f, buf + cut, n - cut), 0);
		check_sample(&s);
		assert_true(vmctl_frames_at_boundary(&f));
		vmctl_frames_destroy(&f);
	}
	struct seen s = { .stop_at = -1 };
	struct vmctl_frames f;
	unsigned frames_done = 0;

	vmctl_frames_init(&f, record, &s);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(vmctl_frames_feed(&f, buf + i, 1), 0);
		/* At a boundary exactly when a frame has just been delivered. */
		assert_int_equal(vmctl_frames_at_boundary(&f), s.n > frames_done);
		frames_done = s.n;
	}
	check_sample(&s);
	vmctl_frames_destroy(&f);
}

/* A stream cut inside a header or a payload is not at a boundary (the CLI reports it as cut short). */
static void truncated_not_at_boundary(void **state)
{
	uint8_t buf[256];
	size_t n = sample(buf);
	struct seen s = { .stop_at = -1 };
	struct vmctl_frames f;

	(void)state;
	vmctl_frames_init(&f, record, &s);
	assert_int_equal(vmctl_frames_feed(&f, buf, 3), 0);
	assert_false(vmctl_frames_at_boundary(&f));
	assert_int_equal(vmctl_frames_feed(&f, buf + 3, 7), 0); /* header + 2 of "hello" */
	assert_false(vmctl_frames_at_boundary(&f));
	assert_int_equal(s.n, 0);
	vmctl_frames_destroy(&f); /* frees the partial payload (ASan checks) */
	assert_true(n > 10);
}

static void hostile_headers(void **state)
{
	static const uint8_t bad[][8] = {
		{ 1, 1, 0, 0, 0, 0, 0, 1 },    /* pad byte set */
		{ 1, 0, 0, 0x80, 0, 0, 0, 1 }, /* pad byte set */
		{ 1, 0, 0, 0, 0x01, 0x00, 0x00, 0x01 }, /* 16 MiB + 1 */
		{ 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff }, /* 4 GiB - 1 */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct seen s = { .stop_at = -1 };
		struct vmctl_frames f;

		vmctl_frames_init(&f, record, &s);
		assert_int_equal(vmctl_frames_feed(&f, bad[i], 8), -EPROTO);
		/* Sticky: nothing more is read. */
		assert_int_equal(vmctl_frames_feed(&f, "\x01\0\0\0\0\0\0\0", 8), -EPROTO);
		assert_int_equal(s.n, 0);
		vmctl_frames_destroy(&f);
	}
	/* Exactly the limit is accepted and waits for its payload. */
	struct seen s = { .stop_at = -1 };
	struct vmctl_frames f;
	const uint8_t max[8] = { 1, 0, 0, 0, 0x01, 0, 0, 0 };

	vmctl_frames_init(&f, record, &s);
	assert_int_equal(vmctl_frames_feed(&f, max, 8), 0);
	assert_false(vmctl_frames_at_boundary(&f));
	vmctl_frames_destroy(&f);
}

/* Unknown types go to the callback, which decides; its error stops the decoder for good. */
static void callback_stops(void **state)
{
	uint8_t buf[256];
	size_t n = 0;
	struct seen s = { .stop_at = 1 };
	struct vmctl_frames f;

	(void)state;
	put_frame(buf, &n, 9, "x", 1);
	put_frame(buf, &n, VMCTL_FRAME_STDOUT, "stop", 4);
	put_frame(buf, &n, VMCTL_FRAME_STDOUT, "never", 5);
	vmctl_frames_init(&f, record, &s);
	assert_int_equal(vmctl_frames_feed(&f, buf, n), -EIO);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.type[0], 9);
	assert_int_equal(vmctl_frames_feed(&f, buf, n), -EIO);
	assert_int_equal(s.n, 2);
	vmctl_frames_destroy(&f);

	/* The same stop when the stopping frame's payload arrived in pieces (buffered path). */
	struct seen t = { .stop_at = 1 };

	vmctl_frames_init(&f, record, &t);
	for (size_t i = 0; i < n; i++) {
		int r = vmctl_frames_feed(&f, buf + i, 1);

		assert_int_equal(r, i + 1 >= 9 + 8 + 4 ? -EIO : 0);
	}
	assert_int_equal(t.n, 2);
	assert_memory_equal(t.data[1], "stop", 4);
	vmctl_frames_destroy(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(whole_stream),
		cmocka_unit_test(split_anywhere),
		cmocka_unit_test(truncated_not_at_boundary),
		cmocka_unit_test(hostile_headers),
		cmocka_unit_test(callback_stops),
	};

	return cmocka_run_group_tests_name("vmctl_frames", tests, NULL, NULL);
}
