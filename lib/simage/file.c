#include "simage/file.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "parse.h"

int simage_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return SIMAGE_E_TRUNCATED;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int simage_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

void simage_hex(const uint8_t *in, size_t len, char *out)
{
	sv_hex_encode(in, len, out);
}

void simage_id_hex(const uint8_t id[SIMAGE_ID_BYTES], char out[2 * SIMAGE_ID_BYTES + 1])
{
	simage_hex(id, SIMAGE_ID_BYTES, out);
}

static int read_raw(void *ctx, void *buf, size_t len, uint64_t off)
{
	return simage_pread_full(*(const int *)ctx, buf, len, off);
}

int simage_write(int raw_fd, uint64_t disk_size, int out_fd, const uint8_t *ikm, size_t ikm_len,
		 const struct simage_write_opts *opts, struct simage_header *h,
		 struct simage_write_stats *stats)
{
	return simage_write_from(read_raw, &raw_fd, disk_size, out_fd, ikm, ikm_len, opts, h, stats);
}

unsigned simage_default_threads(void)
{
	cpu_set_t set;
	long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);

	/* Past 4 the writes and the page cache, not the cipher, set the pace. */
	return n < 1 ? 1 : n > 4 ? 4 : (unsigned)n;
}

static unsigned thread_count(unsigned want)
{
	return want < 1 ? 1 : want > SIMAGE_THREADS_MAX ? SIMAGE_THREADS_MAX : want;
}

/*
 * A write shared by its sealing threads. Each claims the next chunk, fills
 * and seals it on its own, then waits for its turn to place it: chunk i's
 * file offset is known only once chunk i - 1's sealed length is, so offsets,
 * table entries, stats and progress are assigned in index order under the
 * lock, and the pwrite of the sealed bytes happens after, outside it, beside
 * the other threads' work. Each thread holds one chunk at a time: memory is
 * bounded by the thread count, whatever the disk's size.
 */
struct write_job {
	int (*fill)(void *ctx, void *buf, size_t len, uint64_t off);
	void *fill_ctx;
	int out_fd;
	const struct simage_header *h;
	const struct simage_keys *keys;
	const struct simage_write_opts *opts;
	uint8_t *table;
	pthread_mutex_t lock;
	pthread_cond_t turn; /* next_place moved, or err was set */
	uint64_t next_claim, next_place, pos;
	int err;
	struct simage_write_stats stats;
};

struct seal_worker {
	struct write_job *job;
	struct simage_codec codec;
	uint8_t *plain, *sealed;
	pthread_t tid;
};

static void job_fail(struct write_job *j, int err)
{
	pthread_mutex_lock(&j->lock);
	if (!j->err)
		j->err = err;
	pthread_cond_broadcast(&j->turn);
	pthread_mutex_unlock(&j->lock);
}

static void *seal_loop(void *arg)
{
	struct seal_worker *w = arg;
	struct write_job *j = w->job;
	uint64_t chunk = simage_chunk_size(j->h);

	for (;;) {
		struct simage_entry e;
		uint64_t i, len;
		int r;

		pthread_mutex_lock(&j->lock);
		if (j->err || j->next_claim == j->h->chunk_count) {
			pthread_mutex_unlock(&j->lock);
			break;
		}
		i = j->next_claim++;
		pthread_mutex_unlock(&j->lock);
		len = simage_chunk_len(j->h, i);
		r = j->fill(j->fill_ctx, w->plain, len, i * chunk);
		if (r == 0)
			r = simage_seal_chunk(&w->codec, j->h, j->keys, i, w->plain, w->sealed, &e);
		if (r < 0) {
			job_fail(j, r);
			break;
		}
		pthread_mutex_lock(&j->lock);
		/* The thread holding the lowest unplaced chunk never waits: no deadlock. */
		while (!j->err && j->next_place != i)
			pthread_cond_wait(&j->turn, &j->lock);
		if (j->err) {
			pthread_mutex_unlock(&j->lock);
			break;
		}
		if (!(e.flags & SIMAGE_CHUNK_HOLE)) {
			e.offset = j->pos;
			j->pos += e.length;
		} else {
			j->stats.holes++;
		}
		if (e.flags & SIMAGE_CHUNK_COMPRESSED)
			j->stats.compressed++;
		simage_entry_encode(&e, j->table + i * SIMAGE_ENTRY_SIZE);
		j->stats.chunks++;
		j->next_place++;
		if (j->opts->progress)
			j->opts->progress(j->opts->progress_ctx, i + 1, j->h->chunk_count);
		pthread_cond_broadcast(&j->turn);
		pthread_mutex_unlock(&j->lock);
		if (!(e.flags & SIMAGE_CHUNK_HOLE)) {
			r = simage_pwrite_full(j->out_fd, w->sealed, e.length, e.offset);
			if (r < 0) {
				job_fail(j, r);
				break;
			}
		}
	}
	return NULL;
}

static int seal_worker_init(struct seal_worker *w, struct write_job *j)
{
	uint64_t chunk = simage_chunk_size(j->h);
	int r;

	memset(w, 0, sizeof(*w));
	w->job = j;
	r = simage_codec_init(&w->codec, chunk);
	w->plain = malloc(chunk);
	w->sealed = malloc(simage_sealed_max(chunk));
	return r < 0 ? r : !w->plain || !w->sealed ? -ENOMEM : 0;
}

static void seal_worker_destroy(struct seal_worker *w, uint64_t chunk)
{
	simage_codec_destroy(&w->codec);
	/* The plaintext may be a guest's memory: nothing of it stays in freed heap. */
	if (w->plain)
		OPENSSL_cleanse(w->plain, chunk);
	free(w->plain);
	free(w->sealed);
}

int simage_write_from(int (*fill)(void *ctx, void *buf, size_t len, uint64_t off), void *fill_ctx,
		      uint64_t disk_size, int out_fd, const uint8_t *ikm, size_t ikm_len,
		      const struct simage_write_opts *opts, struct simage_header *h,
		      struct simage_write_stats *stats)
{
	struct seal_worker workers[SIMAGE_THREADS_MAX];
	struct write_job job = { .fill = fill, .fill_ctx = fill_ctx, .out_fd = out_fd, .opts = opts };
	struct simage_keys keys;
	uint8_t header[SIMAGE_HEADER_SIZE];
	unsigned want = thread_count(opts->threads), started = 0, ready = 0;
	uint64_t chunk;
	int r;

	memset(h, 0, sizeof(*h));
	memset(stats, 0, sizeof(*stats));
	h->version = SIMAGE_VERSION;
	h->flags = opts->flags;
	h->chunk_shift = opts->chunk_shift ? opts->chunk_shift : SIMAGE_CHUNK_SHIFT_DEFAULT;
	h->disk_size = disk_size;
	h->created = (uint64_t)time(NULL);
	if ((h->flags & ~SIMAGE_KNOWN_FLAGS) || simage_header_layout(h) < 0)
		return -EINVAL;
	r = simage_random(h->image_id, sizeof(h->image_id));
	if (r == 0)
		r = simage_random(h->salt, sizeof(h->salt));
	if (r < 0)
		return r;
	r = simage_derive_keys(ikm, ikm_len, h, &keys);
	if (r < 0)
		return r;
	memcpy(h->key_check, keys.check, SIMAGE_CHECK_BYTES);
	chunk = simage_chunk_size(h);
	/* No more threads than chunks: a small disk makes none. */
	if (want > h->chunk_count)
		want = (unsigned)h->chunk_count;
	job.h = h;
	job.keys = &keys;
	job.pos = h->data_offset;
	job.table = calloc(h->chunk_count, SIMAGE_ENTRY_SIZE);
	pthread_mutex_init(&job.lock, NULL);
	pthread_cond_init(&job.turn, NULL);
	r = -ENOMEM;
	if (job.table) {
		r = seal_worker_init(&workers[0], &job);
		ready = 1;
	}
	if (r == 0 && ftruncate(out_fd, 0) < 0)
		r = -errno;
	if (r < 0)
		goto out;
	/* Threads beyond the caller's are a speed-up: one that cannot start is done without. */
	for (unsigned t = 1; t < want; t++) {
		if (seal_worker_init(&workers[t], &job) < 0) {
			seal_worker_destroy(&workers[t], chunk);
			break;
		}
		ready++;
		if (pthread_create(&workers[t].tid, NULL, seal_loop, &workers[t]) != 0)
			break;
		started++;
	}
	seal_loop(&workers[0]);
	for (unsigned t = 1; t <= started; t++)
		pthread_join(workers[t].tid, NULL);
	r = job.err;
	if (r < 0)
		goto out;
	*stats = job.stats;
	h->file_size = job.pos;
	simage_header_encode(h, header);
	r = simage_compute_mac(&keys, header, job.table, h->chunk_count * SIMAGE_ENTRY_SIZE, h->mac);
	if (r < 0)
		goto out;
	simage_header_encode(h, header);
	r = simage_pwrite_full(out_fd, job.table, h->chunk_count * SIMAGE_ENTRY_SIZE, h->table_offset);
	if (r == 0)
		r = simage_pwrite_full(out_fd, header, sizeof(header), 0);
	if (r == 0 && ftruncate(out_fd, (off_t)job.pos) < 0)
		r = -errno;
	if (r == 0 && fsync(out_fd) < 0)
		r = -errno;
	stats->file_size = job.pos;
out:
	simage_keys_wipe(&keys);
	for (unsigned t = 0; t < ready; t++)
		seal_worker_destroy(&workers[t], chunk);
	pthread_cond_destroy(&job.turn);
	pthread_mutex_destroy(&job.lock);
	free(job.table);
	return r;
}

static int read_header(int fd, struct simage_header *h, uint8_t raw[SIMAGE_HEADER_SIZE])
{
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size < SIMAGE_HEADER_SIZE) {
		uint8_t magic[8];

		if (st.st_size >= 8 && simage_pread_full(fd, magic, 8, 0) == 0 && memcmp(magic, SIMAGE_MAGIC, 8))
			return SIMAGE_E_MAGIC;
		return SIMAGE_E_TRUNCATED;
	}
	r = simage_pread_full(fd, raw, SIMAGE_HEADER_SIZE, 0);
	if (r == 0)
		r = simage_header_decode(raw, SIMAGE_HEADER_SIZE, h);
	if (r == 0 && (uint64_t)st.st_size != h->file_size)
		r = (uint64_t)st.st_size < h->file_size ? SIMAGE_E_TRUNCATED : SIMAGE_E_FIELD;
	return r;
}

int simage_peek(int fd, struct simage_header *h)
{
	uint8_t raw[SIMAGE_HEADER_SIZE];

	return read_header(fd, h, raw);
}

static int reader_finish(struct simage_reader *r, const uint8_t raw[SIMAGE_HEADER_SIZE])
{
	uint8_t *table, mac[SIMAGE_MAC_BYTES];
	size_t table_len = r->h.chunk_count * SIMAGE_ENTRY_SIZE;
	int e;

	table = malloc(table_len ? table_len : 1);
	r->table = calloc(r->h.chunk_count ? r->h.chunk_count : 1, sizeof(*r->table));
	if (!table || !r->table) {
		free(table);
		return -ENOMEM;
	}
	e = simage_pread_full(r->fd, table, table_len, r->h.table_offset);
	if (e == 0)
		e = simage_compute_mac(&r->keys, raw, table, table_len, mac);
	/* Authenticate before parsing: a forged table never reaches the checks below. */
	if (e == 0 && !simage_mac_equal(mac, r->h.mac))
		e = SIMAGE_E_AUTH;
	if (e == 0)
		e = simage_table_decode(&r->h, table, table_len, r->table);
	free(table);
	if (e == 0)
		e = simage_codec_init(&r->codec, simage_chunk_size(&r->h));
	if (e == 0) {
		r->sealed = malloc(simage_sealed_max(simage_chunk_size(&r->h)));
		if (!r->sealed)
			e = -ENOMEM;
	}
	return e;
}

int simage_reader_open(struct simage_reader *r, int fd, const uint8_t *ikm, size_t ikm_len)
{
	uint8_t raw[SIMAGE_HEADER_SIZE];
	int e;

	memset(r, 0, sizeof(*r));
	r->fd = fd;
	e = read_header(fd, &r->h, raw);
	if (e == 0 && !ikm)
		e = SIMAGE_E_NOKEY;
	if (e == 0)
		e = simage_derive_keys(ikm, ikm_len, &r->h, &r->keys);
	if (e == 0 && !simage_key_matches(&r->h, &r->keys))
		e = SIMAGE_E_KEY;
	if (e == 0)
		e = reader_finish(r, raw);
	if (e < 0)
		simage_reader_close(r);
	return e;
}

int simage_reader_open_keys(struct simage_reader *r, int fd, const struct simage_keys *keys)
{
	uint8_t raw[SIMAGE_HEADER_SIZE];
	int e;

	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->keys = *keys;
	e = read_header(fd, &r->h, raw);
	if (e == 0)
		e = reader_finish(r, raw);
	if (e < 0)
		simage_reader_close(r);
	return e;
}

/* Only reads r's fd, header, table and keys: several threads may run it with their own codec and buffer. */
static int read_chunk_with(const struct simage_reader *r, struct simage_codec *codec, uint8_t *sealed,
			   uint64_t index, uint8_t *plain)
{
	const struct simage_entry *e;
	int err;

	if (index >= r->h.chunk_count)
		return -EINVAL;
	e = &r->table[index];
	if (!(e->flags & SIMAGE_CHUNK_HOLE)) {
		err = simage_pread_full(r->fd, sealed, e->length, e->offset);
		if (err < 0)
			return err;
	}
	return simage_open_chunk(codec, &r->h, &r->keys, index, e, sealed, plain);
}

int simage_reader_read_chunk(struct simage_reader *r, uint64_t index, uint8_t *plain)
{
	return read_chunk_with(r, &r->codec, r->sealed, index, plain);
}

/* A whole-image read shared by its threads: each claims the next chunk, reads, opens and sinks it. */
struct read_job {
	const struct simage_reader *r;
	int (*sink)(void *ctx, uint64_t index, const uint8_t *plain, size_t len);
	void *sink_ctx;
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	void *progress_ctx;
	pthread_mutex_t lock;
	uint64_t next_claim, done, bad_index;
	int err;
};

struct open_worker {
	struct read_job *job;
	struct simage_codec own, *codec; /* the calling thread's is the reader's own */
	uint8_t *plain, *sealed;
	bool borrowed;
	pthread_t tid;
};

static void *open_loop(void *arg)
{
	struct open_worker *w = arg;
	struct read_job *j = w->job;

	for (;;) {
		uint64_t i;
		int e;

		pthread_mutex_lock(&j->lock);
		if (j->err || j->next_claim == j->r->h.chunk_count) {
			pthread_mutex_unlock(&j->lock);
			break;
		}
		i = j->next_claim++;
		pthread_mutex_unlock(&j->lock);
		e = read_chunk_with(j->r, w->codec, w->sealed, i, w->plain);
		if (e == 0)
			e = j->sink(j->sink_ctx, i, w->plain, simage_chunk_len(&j->r->h, i));
		pthread_mutex_lock(&j->lock);
		/* Chunks are claimed in order: every one below a failure is read, so the lowest is reported. */
		if (e < 0 && i < j->bad_index) {
			j->bad_index = i;
			j->err = e;
		}
		if (e == 0 && !j->err) {
			j->done++;
			if (j->progress)
				j->progress(j->progress_ctx, j->done, j->r->h.chunk_count);
		}
		pthread_mutex_unlock(&j->lock);
		if (e < 0)
			break;
	}
	return NULL;
}

/* With r, the worker uses the reader's codec and sealed buffer (the calling thread's: r is not used otherwise meanwhile). */
static int open_worker_init(struct open_worker *w, struct read_job *j, struct simage_reader *r)
{
	uint64_t chunk = simage_chunk_size(&j->r->h);
	int e = 0;

	memset(w, 0, sizeof(*w));
	w->job = j;
	w->borrowed = r != NULL;
	if (r) {
		w->codec = &r->codec;
		w->sealed = r->sealed;
	} else {
		w->codec = &w->own;
		e = simage_codec_init(&w->own, chunk);
		w->sealed = malloc(simage_sealed_max(chunk));
	}
	w->plain = malloc(chunk);
	return e < 0 ? e : !w->plain || !w->sealed ? -ENOMEM : 0;
}

static void open_worker_destroy(struct open_worker *w, uint64_t chunk)
{
	if (!w->borrowed) {
		simage_codec_destroy(&w->own);
		free(w->sealed);
	}
	if (w->plain)
		OPENSSL_cleanse(w->plain, chunk);
	free(w->plain);
}

int simage_reader_read_all(struct simage_reader *r, unsigned threads,
			   int (*sink)(void *ctx, uint64_t index, const uint8_t *plain, size_t len),
			   void *sink_ctx, void (*progress)(void *ctx, uint64_t done, uint64_t total),
			   void *progress_ctx, uint64_t *bad_index)
{
	struct open_worker workers[SIMAGE_THREADS_MAX];
	struct read_job job = { .r = r, .sink = sink, .sink_ctx = sink_ctx, .progress = progress,
				.progress_ctx = progress_ctx, .bad_index = UINT64_MAX };
	unsigned want = thread_count(threads), ready = 1, started = 0;
	uint64_t chunk = simage_chunk_size(&r->h);
	int e;

	if (bad_index)
		*bad_index = UINT64_MAX;
	if (want > r->h.chunk_count)
		want = (unsigned)r->h.chunk_count;
	e = open_worker_init(&workers[0], &job, r);
	if (e < 0) {
		open_worker_destroy(&workers[0], chunk);
		return e;
	}
	pthread_mutex_init(&job.lock, NULL);
	for (unsigned t = 1; t < want; t++) {
		if (open_worker_init(&workers[t], &job, NULL) < 0) {
			open_worker_destroy(&workers[t], chunk);
			break;
		}
		ready++;
		if (pthread_create(&workers[t].tid, NULL, open_loop, &workers[t]) != 0)
			break;
		started++;
	}
	open_loop(&workers[0]);
	for (unsigned t = 1; t <= started; t++)
		pthread_join(workers[t].tid, NULL);
	for (unsigned t = 0; t < ready; t++)
		open_worker_destroy(&workers[t], chunk);
	pthread_mutex_destroy(&job.lock);
	if (bad_index)
		*bad_index = job.bad_index;
	return job.err;
}

void simage_reader_close(struct simage_reader *r)
{
	simage_keys_wipe(&r->keys);
	simage_codec_destroy(&r->codec);
	free(r->table);
	free(r->sealed);
	r->table = NULL;
	r->sealed = NULL;
}
