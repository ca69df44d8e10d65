/*
 * Snapshot images: round trips, wrong and missing keys, and tampering of
 * every kind (flipped bytes anywhere, swapped or replayed chunks, forged
 * holes, truncation): each is refused, never read as other data.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "simage/file.h"

#define CHUNK_SHIFT 16u
#define CHUNK (1u << CHUNK_SHIFT)

static const uint8_t key_a[32] = "0123456789abcdef0123456789abcde";
static const uint8_t key_b[32] = "0123456789abcdef0123456789abcdX";

/* A disk of n chunks plus a half-chunk tail: random, zero, compressible in turn. */
static uint8_t *make_disk(size_t *len, unsigned n, uint64_t seed)
{
	uint8_t *d;

	*len = (size_t)n * CHUNK + CHUNK / 2;
	d = calloc(1, *len);
	assert_non_null(d);
	for (size_t i = 0; i < *len; i++) {
		switch ((i / CHUNK) % 3) {
		case 0:
			d[i] = (uint8_t)unit_rand(&seed);
			break;
		case 1:
			break;
		default:
			d[i] = (uint8_t)(i % 7 == 0 ? 'x' : 'y');
		}
	}
	return d;
}

static int mem_file(const void *data, size_t len)
{
	int fd = memfd_create("simage", 0);

	assert_true(fd >= 0);
	if (len)
		assert_int_equal(pwrite(fd, data, len, 0), (ssize_t)len);
	return fd;
}

static int pack(const uint8_t *disk, size_t len, const uint8_t *key, size_t key_len,
		struct simage_header *h, struct simage_write_stats *st)
{
	struct simage_write_opts opts = { .chunk_shift = CHUNK_SHIFT };
	int raw = mem_file(disk, len), out = mem_file(NULL, 0);

	assert_int_equal(simage_write(raw, len, out, key, key_len, &opts, h, st), 0);
	close(raw);
	return out;
}

static uint8_t *file_bytes(int fd, size_t *len)
{
	off_t end = lseek(fd, 0, SEEK_END);
	uint8_t *b = malloc((size_t)end);

	assert_non_null(b);
	assert_int_equal(pread(fd, b, (size_t)end, 0), end);
	*len = (size_t)end;
	return b;
}

/*
 * Opens the image in bytes and reads every chunk: 0 when all of it opened
 * and matched disk, the first error otherwise. A chunk that opens but
 * differs from the original fails the test: tampering must never pass.
 */
static int read_back(const uint8_t *bytes, size_t len, const uint8_t *key, const uint8_t *disk)
{
	struct simage_reader r;
	int fd = mem_file(bytes, len), e;
	uint8_t *plain = malloc(CHUNK);

	assert_non_null(plain);
	e = simage_reader_open(&r, fd, key, 32);
	for (uint64_t i = 0; e == 0 && i < r.h.chunk_count; i++) {
		e = simage_reader_read_chunk(&r, i, plain);
		if (e == 0 && memcmp(plain, disk + i * CHUNK, simage_chunk_len(&r.h, i)) != 0)
			fail_msg("chunk %llu opened with the wrong content", (unsigned long long)i);
	}
	if (e == 0 || r.table)
		simage_reader_close(&r);
	free(plain);
	close(fd);
	return e;
}

static void round_trip(void **state)
{
	struct simage_header h;
	struct simage_write_stats st;
	size_t len, img_len;
	uint8_t *disk = make_disk(&len, 9, 1), *img;
	int fd;

	(void)state;
	fd = pack(disk, len, key_a, sizeof(key_a), &h, &st);
	assert_int_equal(st.chunks, 10);
	assert_int_equal(st.holes, 3);      /* chunks 1, 4, 7 */
	assert_true(st.compressed >= 3);    /* 2, 5, 8 and the tail */
	img = file_bytes(fd, &img_len);
	assert_int_equal(img_len, h.file_size);
	assert_true(img_len < len);
	assert_int_equal(read_back(img, img_len, key_a, disk), 0);
	free(img);
	free(disk);
	close(fd);
}

static void keys_wrong_missing_and_bad_length(void **state)
{
	struct simage_header h;
	struct simage_write_stats st;
	struct simage_reader r;
	struct simage_write_opts opts = { 0 };
	uint8_t long_key[513] = { 1 };
	size_t len;
	uint8_t *disk = make_disk(&len, 2, 2);
	int fd = pack(disk, len, key_a, sizeof(key_a), &h, &st), raw, out;

	(void)state;
	assert_int_equal(simage_reader_open(&r, fd, key_b, sizeof(key_b)), SIMAGE_E_KEY);
	assert_int_equal(simage_reader_open(&r, fd, NULL, 0), SIMAGE_E_NOKEY);
	assert_int_equal(simage_reader_open(&r, fd, key_a, 15), -EINVAL);
	assert_int_equal(simage_reader_open(&r, fd, long_key, 513), -EINVAL);
	/* The same bytes as a 16-byte prefix are another key. */
	assert_int_equal(simage_reader_open(&r, fd, key_a, 16), SIMAGE_E_KEY);
	assert_int_equal(simage_reader_open(&r, fd, key_a, sizeof(key_a)), 0);
	simage_reader_close(&r);
	raw = mem_file(disk, len);
	out = mem_file(NULL, 0);
	assert_int_equal(simage_write(raw, len, out, key_a, 15, &opts, &h, &st), -EINVAL);
	assert_int_equal(simage_write(raw, len, out, long_key, 513, &opts, &h, &st), -EINVAL);
	assert_int_equal(simage_write(raw, len, out, long_key, 512, &opts, &h, &st), 0);
	assert_int_equal(simage_reader_open(&r, out, long_key, 512), 0);
	simage_reader_close(&r);
	close(raw);
	close(out);
	close(fd);
	free(disk);
}

/* Every single-bit flip in header and table, and a spread of them in the data. */
static void flipped_bytes_never_pass(void **state)
{
	struct simage_header h;
	struct simage_write_stats st;
	size_t len, img_len, checked = 0;
	uint8_t *disk = make_disk(&len, 4, 3), *img;
	int fd = pack(disk, len, key_a, sizeof(key_a), &h, &st);

	(void)state;
	img = file_bytes(fd, &img_len);
	for (size_t pos = 0; pos < img_len; pos += pos < h.data_offset ? 1 : 61) {
		uint8_t bit = (uint8_t)(1u << (pos % 8));

		img[pos] ^= bit;
		if (read_back(img, img_len, key_a, disk) == 0)
			fail_msg("a flipped bit at byte %zu went unnoticed", pos);
		img[pos] ^= bit;
		checked++;
	}
	assert_true(checked > SIMAGE_HEADER_SIZE);
	assert_int_equal(read_back(img, img_len, key_a, disk), 0);
	free(img);
	free(disk);
	close(fd);
}

/* Two random chunks of equal sealed length swapped in place: the index in the AAD catches it. */
static void swapped_chunks(void **state)
{
	struct simage_header h;
	struct simage_write_stats st;
	struct simage_reader r;
	size_t len, img_len;
	uint8_t *disk = make_disk(&len, 4, 4), *img, *tmp;
	int fd = pack(disk, len, key_a, sizeof(key_a), &h, &st), mfd;
	uint8_t plain[CHUNK];

	(void)state;
	assert_int_equal(simage_reader_open(&r, fd, key_a, sizeof(key_a)), 0);
	/* Chunks 0 and 3 are random: stored whole, the same length. */
	assert_int_equal(r.table[0].length, r.table[3].length);
	img = file_bytes(fd, &img_len);
	tmp = malloc(r.table[0].length);
	memcpy(tmp, img + r.table[0].offset, r.table[0].length);
	memcpy(img + r.table[0].offset, img + r.table[3].offset, r.table[0].length);
	memcpy(img + r.table[3].offset, tmp, r.table[0].length);
	mfd = mem_file(img, img_len);
	simage_reader_close(&r);
	assert_int_equal(simage_reader_open(&r, mfd, key_a, sizeof(key_a)), 0); /* table intact */
	assert_int_equal(simage_reader_read_chunk(&r, 0, plain), SIMAGE_E_AUTH);
	assert_int_equal(simage_reader_read_chunk(&r, 3, plain), SIMAGE_E_AUTH);
	assert_int_equal(simage_reader_read_chunk(&r, 2, plain), 0);
	simage_reader_close(&r);
	free(tmp);
	free(img);
	free(disk);
	close(mfd);
	close(fd);
}

/* A chunk taken from another image made with the same key and data fails there. */
static void replay_between_images(void **state)
{
	struct simage_header h1, h2;
	struct simage_write_stats st;
	struct simage_reader r;
	size_t len, l1, l2;
	uint8_t *disk = make_disk(&len, 2, 5), *i1, *i2, plain[CHUNK];
	int f1 = pack(disk, len, key_a, sizeof(key_a), &h1, &st);
	int f2 = pack(disk, len, key_a, sizeof(key_a), &h2, &st), mfd;

	(void)state;
	assert_memory_not_equal(h1.image_id, h2.image_id, SIMAGE_ID_BYTES);
	assert_memory_not_equal(h1.salt, h2.salt, SIMAGE_SALT_BYTES);
	i1 = file_bytes(f1, &l1);
	i2 = file_bytes(f2, &l2);
	assert_int_equal(l1, l2);
	/* Chunk 0 of image 2 placed over chunk 0 of image 1. */
	assert_int_equal(simage_reader_open(&r, f1, key_a, sizeof(key_a)), 0);
	memcpy(i1 + r.table[0].offset, i2 + r.table[0].offset, r.table[0].length);
	simage_reader_close(&r);
	mfd = mem_file(i1, l1);
	assert_int_equal(simage_reader_open(&r, mfd, key_a, sizeof(key_a)), 0);
	assert_int_equal(simage_reader_read_chunk(&r, 0, plain), SIMAGE_E_AUTH);
	simage_reader_close(&r);
	/* Image 2's whole table over image 1's: the MAC covers the header with the id. */
	memcpy(i1 + SIMAGE_HEADER_SIZE, i2 + SIMAGE_HEADER_SIZE, h1.chunk_count * SIMAGE_ENTRY_SIZE);
	assert_int_equal(read_back(i1, l1, key_a, disk), SIMAGE_E_AUTH);
	free(i1);
	free(i2);
	free(disk);
	close(mfd);
	close(f1);
	close(f2);
}

static void truncated_and_extended(void **state)
{
	struct simage_header h;
	struct simage_write_stats st;
	size_t len, img_len;
	uint8_t *disk = make_disk(&len, 3, 6), *img;
	int fd = pack(disk, len, key_a, sizeof(key_a), &h, &st);

	(void)state;
	img = file_bytes(fd, &img_len);
	for (size_t cut = 0; cut < img_len; cut += cut < 1024 ? 1 : 4093) {
		int e = read_back(img, cut, key_a, disk);

		if (e != SIMAGE_E_TRUNCATED)
			fail_msg("image cut to %zu of %zu bytes: %d, not 'truncated'", cut, img_len, e);
	}
	img = realloc(img, img_len + 1);
	img[img_len] = 0;
	assert_int_equal(read_back(img, img_len + 1, key_a, disk), SIMAGE_E_FIELD);
	free(img);
	free(disk);
	close(fd);
}

/* The pure decoders with hostile headers and tables. */
static void hostile_headers(void **state)
{
	struct simage_header h = { .version = 1, .chunk_shift = 16, .disk_size = 3 * 65536 }, d;
	uint8_t raw[SIMAGE_HEADER_SIZE], table[3 * SIMAGE_ENTRY_SIZE];
	struct simage_entry e[3], in[3] = {
		{ .offset = 0, .length = 0, .flags = SIMAGE_CHUNK_HOLE },
		{ .offset = 0, .length = 65536 + 16, .flags = 0 },
		{ .offset = 0, .length = 100, .flags = SIMAGE_CHUNK_COMPRESSED },
	};
	uint64_t seed = 7;

	(void)state;
	assert_int_equal(simage_header_layout(&h), 0);
	in[1].offset = h.data_offset;
	in[2].offset = h.data_offset + in[1].length;
	h.file_size = in[2].offset + in[2].length;
	simage_header_encode(&h, raw);
	assert_int_equal(simage_header_decode(raw, sizeof(raw), &d), 0);
	assert_int_equal(d.disk_size, h.disk_size);
	assert_int_equal(simage_header_decode(raw, sizeof(raw) - 1, &d), SIMAGE_E_TRUNCATED);
	assert_int_equal(simage_header_decode(raw, 3, &d), SIMAGE_E_TRUNCATED);
	for (int i = 0; i < 3; i++)
		simage_entry_encode(&in[i], table + i * SIMAGE_ENTRY_SIZE);
	assert_int_equal(simage_table_decode(&h, table, sizeof(table), e), 0);
	assert_int_equal(simage_table_decode(&h, table, sizeof(table) - 1, e), SIMAGE_E_TRUNCATED);

	/* Each field broken alone. */
	{
		struct { size_t off; uint8_t val; int want; } cases[] = {
			{ 0, 'X', SIMAGE_E_MAGIC }, { 8, 2, SIMAGE_E_VERSION }, { 13, 0, SIMAGE_E_FIELD },
			{ 16, 2, SIMAGE_E_FIELD },  /* unknown flag */
			{ 20, 15, SIMAGE_E_FIELD }, { 20, 23, SIMAGE_E_FIELD },
			{ 24, 1, SIMAGE_E_FIELD },  /* disk size not a multiple of 512 */
			{ 31, 1, SIMAGE_E_FIELD },  /* disk size beyond the cap */
			{ 32, 4, SIMAGE_E_FIELD },  /* chunk count */
			{ 41, 0, SIMAGE_E_FIELD },  /* table offset */
			{ 48, 0, SIMAGE_E_FIELD },  /* data offset */
			{ 56, 0, SIMAGE_E_FIELD },  /* file size below data offset */
			{ 200, 1, SIMAGE_E_FIELD }, /* reserved */
		};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			uint8_t bad[SIMAGE_HEADER_SIZE];

			memcpy(bad, raw, sizeof(bad));
			bad[cases[i].off] = cases[i].val;
			if (cases[i].off == 56)
				memset(bad + 56, 0, 8);
			if (simage_header_decode(bad, sizeof(bad), &d) != cases[i].want)
				fail_msg("byte %zu set to %u: not refused as %d", cases[i].off, cases[i].val,
					 cases[i].want);
		}
	}
	/* Tables: overlaps, gaps, out of order, bad lengths, holes with data, unknown flags. */
	{
		struct simage_entry bad[3];

		for (int c = 0; c < 9; c++) {
			memcpy(bad, in, sizeof(bad));
			switch (c) {
			case 0: bad[1].offset += 1; break;
			case 1: bad[2].offset -= 1; break;
			case 2: bad[1].length -= 1; break;
			case 3: bad[2].length = 65536 + 16; break;
			case 4: bad[0].offset = 5; break;
			case 5: bad[0].flags |= SIMAGE_CHUNK_COMPRESSED; break;
			case 6: bad[1].flags = 0x80; break;
			case 7: bad[2].length = 16; break;
			default: bad[2].length += 1; break; /* past the end of the file */
			}
			for (int i = 0; i < 3; i++)
				simage_entry_encode(&bad[i], table + i * SIMAGE_ENTRY_SIZE);
			if (simage_table_decode(&h, table, sizeof(table), e) != SIMAGE_E_TABLE)
				fail_msg("broken table %d accepted", c);
		}
	}
	/* Random bytes: never accepted as something inconsistent, never a crash. */
	for (int n = 0; n < 20000; n++) {
		uint8_t junk[SIMAGE_HEADER_SIZE];

		memcpy(junk, raw, sizeof(junk));
		for (int k = 0; k < 1 + n % 4; k++)
			junk[unit_rand(&seed) % 200] = (uint8_t)unit_rand(&seed);
		if (simage_header_decode(junk, sizeof(junk), &d) == 0) {
			assert_true(d.chunk_count <= SIMAGE_MAX_CHUNKS);
			assert_true(d.file_size >= d.data_offset);
			assert_int_equal(d.data_offset, d.table_offset + d.chunk_count * SIMAGE_ENTRY_SIZE);
		}
	}
}

/* ---- the compression skip ---- */

static void fill_random(uint8_t *p, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)unit_rand(&seed);
}

/* Bytes [i * stride, i * stride + window) of each sample window of a len-byte chunk. */
static bool in_window(size_t pos, size_t len)
{
	size_t stride = len / SIMAGE_SAMPLE_WINDOWS;

	return pos / stride < SIMAGE_SAMPLE_WINDOWS && pos % stride < SIMAGE_SAMPLE_WINDOW;
}

static void seal_one(struct simage_codec *c, const uint8_t *plain, size_t len, struct simage_entry *e)
{
	struct simage_header h = { .version = 1, .chunk_shift = 18, .disk_size = len };
	struct simage_keys keys;
	uint8_t *sealed = malloc(simage_sealed_max(len)), *back = malloc(len);

	assert_non_null(sealed);
	assert_non_null(back);
	memset(&keys, 7, sizeof(keys));
	assert_int_equal(simage_header_layout(&h), 0);
	assert_int_equal(simage_seal_chunk(c, &h, &keys, 0, plain, sealed, e), 0);
	/* Whatever was decided, the chunk opens to the same bytes. */
	assert_int_equal(simage_open_chunk(c, &h, &keys, 0, e, sealed, back), 0);
	assert_memory_equal(back, plain, len);
	free(sealed);
	free(back);
}

/*
 * Which chunks zstd is tried on: not random ones; zeros, text and a chunk
 * half random and half zero, yes. The trade-off, pinned here: a chunk whose
 * sample windows hold random bytes and whose rest is zero is stored
 * uncompressed, though zstd would have shrunk it; it still reads back.
 */
static void compression_skip_decision(void **state)
{
	const size_t len = 1u << 18;
	struct simage_codec c;
	struct simage_entry e;
	uint8_t *p = malloc(len);
	static const char text[] = "the quick brown fox jumps over the lazy dog; sandvm snapshot images\n";

	(void)state;
	assert_non_null(p);
	assert_int_equal(simage_codec_init(&c, len), 0);
	fill_random(p, len, 11);
	assert_false(simage_worth_compressing(&c, p, len));
	seal_one(&c, p, len, &e);
	assert_int_equal(e.flags, 0);
	assert_int_equal(e.length, len + SIMAGE_TAG_BYTES);

	memset(p, 0, len);
	assert_true(simage_worth_compressing(&c, p, len));

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)text[i % (sizeof(text) - 1)];
	assert_true(simage_worth_compressing(&c, p, len));
	seal_one(&c, p, len, &e);
	assert_int_equal(e.flags, SIMAGE_CHUNK_COMPRESSED);

	/* A file's random tail, then zeros: windows fall in both parts. */
	fill_random(p, len / 2, 12);
	memset(p + len / 2, 0, len / 2);
	assert_true(simage_worth_compressing(&c, p, len));
	seal_one(&c, p, len, &e);
	assert_int_equal(e.flags, SIMAGE_CHUNK_COMPRESSED);

	/* Random text over a small alphabet: byte entropy near 4 bits, and zstd's entropy stage finds it. */
	fill_random(p, len, 13);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)('a' + p[i] % 16);
	assert_true(simage_worth_compressing(&c, p, len));

	/* A random 1 KiB block repeated: high byte entropy, but the windows repeat too. */
	fill_random(p, 1024, 14);
	for (size_t i = 1024; i < len; i++)
		p[i] = p[i % 1024];
	assert_true(simage_worth_compressing(&c, p, len));
	seal_one(&c, p, len, &e);
	assert_int_equal(e.flags, SIMAGE_CHUNK_COMPRESSED);

	/* The miss: random exactly where the sample looks, zeros elsewhere. */
	memset(p, 0, len);
	fill_random(p, len, 15);
	for (size_t i = 0; i < len; i++)
		if (!in_window(i, len))
			p[i] = 0;
	assert_false(simage_worth_compressing(&c, p, len));
	seal_one(&c, p, len, &e);
	assert_int_equal(e.flags, 0);

	/* A short chunk (a disk's tail) is always tried whole. */
	fill_random(p, 8192, 16);
	assert_true(simage_worth_compressing(&c, p, 8192));

	simage_codec_destroy(&c);
	free(p);
}

/* ---- parallel sealing and reading ---- */

static unsigned thread_count_now(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	unsigned n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void *nothing(void *arg)
{
	return arg;
}

/*
 * The process's threads before a test makes any: one thread made and
 * joined first, since ThreadSanitizer starts a thread of its own beside the
 * first one a program makes, and it stays.
 */
static unsigned threads_before(void)
{
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, nothing, NULL), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	for (int i = 0; i < 200; i++) {
		unsigned n = thread_count_now();

		usleep(5000);
		if (thread_count_now() == n)
			return n;
	}
	return thread_count_now();
}

/* Joined threads leave /proc a moment after pthread_join returns: wait for the count to settle. */
static void assert_threads_back_to(unsigned want)
{
	for (int i = 0; i < 200 && thread_count_now() != want; i++)
		usleep(5000);
	assert_int_equal(thread_count_now(), want);
}

struct slow_source {
	const uint8_t *disk;
	uint64_t fail_at; /* the offset whose fill fails; UINT64_MAX: none */
	int fail_with;
	bool hold_first; /* chunk 0's fill waits until 3 more have started (5 s at most) */
	pthread_mutex_t lock;
	pthread_cond_t started;
	unsigned calls, concurrent, max_concurrent;
};

/*
 * Early chunks take longest, so later ones are sealed first and must wait
 * for their turn; with hold_first that is certain however the threads are
 * scheduled, not only likely.
 */
static int slow_fill(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct slow_source *s = ctx;
	struct timespec ts = { 0, (long)(off < 4 * CHUNK ? 3000000 : 200000) }, until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	pthread_mutex_lock(&s->lock);
	s->calls++;
	if (++s->concurrent > s->max_concurrent)
		s->max_concurrent = s->concurrent;
	pthread_cond_broadcast(&s->started);
	while (s->hold_first && off == 0 && s->calls < 4)
		if (pthread_cond_timedwait(&s->started, &s->lock, &until) != 0)
			break;
	pthread_mutex_unlock(&s->lock);
	nanosleep(&ts, NULL);
	memcpy(buf, s->disk + off, len);
	pthread_mutex_lock(&s->lock);
	s->concurrent--;
	pthread_mutex_unlock(&s->lock);
	return off == s->fail_at ? s->fail_with : 0;
}

struct progress_log {
	uint64_t calls, last;
	bool out_of_order;
};

static void log_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct progress_log *p = ctx;

	if (done != p->last + 1 || done > total)
		p->out_of_order = true;
	p->last = done;
	p->calls++;
}

/*
 * Four threads, early chunks slow: the image is laid out exactly as one
 * thread lays it out (same entries, in index order), progress comes in
 * order, every thread is gone after.
 */
static void parallel_write_keeps_order(void **state)
{
	struct simage_header h1, h4;
	struct simage_write_stats s1, s4;
	struct progress_log log = { 0 };
	struct slow_source src = { .fail_at = UINT64_MAX, .hold_first = true };
	struct simage_write_opts opts = { .chunk_shift = CHUNK_SHIFT };
	struct simage_reader r1, r4;
	size_t len, l4;
	uint8_t *disk = make_disk(&len, 23, 21), *img;
	unsigned before = threads_before();
	int out1 = mem_file(NULL, 0), out4 = mem_file(NULL, 0), raw = mem_file(disk, len);

	(void)state;
	src.disk = disk;
	pthread_mutex_init(&src.lock, NULL);
	pthread_cond_init(&src.started, NULL);
	assert_int_equal(simage_write(raw, len, out1, key_a, sizeof(key_a), &opts, &h1, &s1), 0);
	opts.threads = 4;
	opts.progress = log_progress;
	opts.progress_ctx = &log;
	assert_int_equal(simage_write_from(slow_fill, &src, len, out4, key_a, sizeof(key_a), &opts, &h4, &s4), 0);
	assert_threads_back_to(before);
	assert_true(src.max_concurrent > 1);
	assert_int_equal(src.calls, h4.chunk_count);
	assert_false(log.out_of_order);
	assert_int_equal(log.calls, h4.chunk_count);
	assert_int_equal(s1.chunks, s4.chunks);
	assert_int_equal(s1.holes, s4.holes);
	assert_int_equal(s1.compressed, s4.compressed);
	assert_int_equal(s1.file_size, s4.file_size);
	assert_int_equal(simage_reader_open(&r1, out1, key_a, sizeof(key_a)), 0);
	assert_int_equal(simage_reader_open(&r4, out4, key_a, sizeof(key_a)), 0);
	for (uint64_t i = 0; i < h1.chunk_count; i++) {
		assert_int_equal(r1.table[i].offset, r4.table[i].offset);
		assert_int_equal(r1.table[i].length, r4.table[i].length);
		assert_int_equal(r1.table[i].flags, r4.table[i].flags);
	}
	simage_reader_close(&r1);
	simage_reader_close(&r4);
	img = file_bytes(out4, &l4);
	assert_int_equal(read_back(img, l4, key_a, disk), 0);
	pthread_cond_destroy(&src.started);
	pthread_mutex_destroy(&src.lock);
	free(img);
	free(disk);
	close(raw);
	close(out1);
	close(out4);
}

/* A fill that fails in chunk 9 of 24, or an output that cannot be written: the error, no thread left. */
static void parallel_write_error_ends_cleanly(void **state)
{
	struct simage_header h;
	struct simage_write_stats st;
	struct slow_source src = { .fail_at = 9 * CHUNK, .fail_with = -EIO };
	struct simage_write_opts opts = { .chunk_shift = CHUNK_SHIFT, .threads = 4 };
	size_t len;
	uint8_t *disk = make_disk(&len, 23, 22);
	unsigned before = threads_before();
	int out = mem_file(NULL, 0), raw = mem_file(disk, len), sealed;

	(void)state;
	src.disk = disk;
	pthread_mutex_init(&src.lock, NULL);
	pthread_cond_init(&src.started, NULL);
	assert_int_equal(simage_write_from(slow_fill, &src, len, out, key_a, sizeof(key_a), &opts, &h, &st), -EIO);
	assert_threads_back_to(before);
	/* Chunks past the failure are not all filled: the others stopped claiming. */
	assert_true(src.calls < h.chunk_count);
	/* More threads than chunks: one chunk, one thread. */
	opts.threads = SIMAGE_THREADS_MAX;
	src.fail_at = 0;
	src.calls = 0;
	assert_int_equal(simage_write_from(slow_fill, &src, 512, out, key_a, sizeof(key_a), &opts, &h, &st), -EIO);
	assert_int_equal(src.calls, 1);
	assert_threads_back_to(before);
	/* An output that may not grow: every thread's pwrite fails, after they all started. */
	sealed = memfd_create("sealed", MFD_ALLOW_SEALING);
	assert_true(sealed >= 0);
	assert_int_equal(fcntl(sealed, F_ADD_SEALS, F_SEAL_GROW), 0);
	opts.threads = 3;
	assert_int_equal(simage_write(raw, len, sealed, key_a, sizeof(key_a), &opts, &h, &st), -EPERM);
	assert_threads_back_to(before);
	pthread_cond_destroy(&src.started);
	pthread_mutex_destroy(&src.lock);
	free(disk);
	close(sealed);
	close(raw);
	close(out);
}

struct collect {
	const uint8_t *disk;
	uint8_t *seen; /* per chunk: times sunk */
	uint64_t fail_index;
	pthread_mutex_t lock;
	bool wrong;
};

static int collect_sink(void *ctx, uint64_t index, const uint8_t *plain, size_t len)
{
	struct collect *c = ctx;
	bool same = memcmp(plain, c->disk + index * CHUNK, len) == 0;

	pthread_mutex_lock(&c->lock);
	c->seen[index]++;
	if (!same)
		c->wrong = true;
	pthread_mutex_unlock(&c->lock);
	return index == c->fail_index ? -ENOSPC : 0;
}

/* Every chunk sunk once with its bytes; tampered chunks reported lowest first; a sink error ends it. */
static void parallel_read_all(void **state)
{
	struct simage_header h;
	struct simage_write_stats st;
	struct simage_reader r;
	struct progress_log log = { 0 };
	struct collect col = { .fail_index = UINT64_MAX };
	size_t len, img_len;
	uint8_t *disk = make_disk(&len, 23, 23), *img;
	unsigned before = threads_before();
	int fd = pack(disk, len, key_a, sizeof(key_a), &h, &st), mfd;
	uint64_t bad;

	(void)state;
	col.disk = disk;
	col.seen = calloc(h.chunk_count, 1);
	pthread_mutex_init(&col.lock, NULL);
	assert_int_equal(simage_reader_open(&r, fd, key_a, sizeof(key_a)), 0);
	assert_int_equal(simage_reader_read_all(&r, 4, collect_sink, &col, log_progress, &log, &bad), 0);
	assert_int_equal(bad, UINT64_MAX);
	assert_false(col.wrong);
	assert_false(log.out_of_order);
	assert_int_equal(log.calls, h.chunk_count);
	for (uint64_t i = 0; i < h.chunk_count; i++)
		assert_int_equal(col.seen[i], 1);
	/* The sink refuses chunk 5. */
	col.fail_index = 5;
	assert_int_equal(simage_reader_read_all(&r, 4, collect_sink, &col, NULL, NULL, &bad), -ENOSPC);
	assert_int_equal(bad, 5);
	simage_reader_close(&r);
	assert_threads_back_to(before);

	/* Chunks 3 and 18 (random, stored) tampered: 3 is the one reported. */
	img = file_bytes(fd, &img_len);
	assert_int_equal(simage_reader_open(&r, fd, key_a, sizeof(key_a)), 0);
	img[r.table[18].offset + 100] ^= 1;
	img[r.table[3].offset + 100] ^= 1;
	simage_reader_close(&r);
	mfd = mem_file(img, img_len);
	col.fail_index = UINT64_MAX;
	for (unsigned threads = 1; threads <= 4; threads++) {
		assert_int_equal(simage_reader_open(&r, mfd, key_a, sizeof(key_a)), 0);
		assert_int_equal(simage_reader_read_all(&r, threads, collect_sink, &col, NULL, NULL, &bad),
				 SIMAGE_E_AUTH);
		assert_int_equal(bad, 3);
		simage_reader_close(&r);
	}
	assert_false(col.wrong);
	assert_threads_back_to(before);
	pthread_mutex_destroy(&col.lock);
	free(col.seen);
	free(img);
	free(disk);
	close(mfd);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),
		cmocka_unit_test(keys_wrong_missing_and_bad_length),
		cmocka_unit_test(flipped_bytes_never_pass),
		cmocka_unit_test(swapped_chunks),
		cmocka_unit_test(replay_between_images),
		cmocka_unit_test(truncated_and_extended),
		cmocka_unit_test(hostile_headers),
		cmocka_unit_test(compression_skip_decision),
		cmocka_unit_test(parallel_write_keeps_order),
		cmocka_unit_test(parallel_write_error_ends_cleanly),
		cmocka_unit_test(parallel_read_all),
	};

	return cmocka_run_group_tests_name("simage", tests, NULL, NULL);
}
