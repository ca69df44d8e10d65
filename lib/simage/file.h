#ifndef SANDVM_LIB_SIMAGE_FILE_H
#define SANDVM_LIB_SIMAGE_FILE_H

/*
 * Snapshot image files: written from a raw disk in one pass, opened with a
 * key (every check made before anything is served), read chunk by chunk.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "simage/crypto.h"
#include "simage/format.h"

struct simage_write_opts {
	uint32_t flags;       /* SIMAGE_FLAG_MANAGED for a managed key */
	uint32_t chunk_shift; /* 0: SIMAGE_CHUNK_SHIFT_DEFAULT */
	/*
	 * Called after each chunk with chunks done and total, in index order
	 * and one call at a time (from whichever sealing thread placed the
	 * chunk); may be NULL.
	 */
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	void *progress_ctx;
	/*
	 * Sealing threads, the calling one among them: 0 or 1 seals on the
	 * calling thread alone and makes no thread (the VMM, whose threads run
	 * under seccomp filters that allow no clone, writes this way); at most
	 * SIMAGE_THREADS_MAX. With more, fill is called from several threads at
	 * once for distinct ranges.
	 */
	unsigned threads;
};

#define SIMAGE_THREADS_MAX 16u

/* The thread count the host tools use: the CPUs this process may run on, at most 4. */
unsigned simage_default_threads(void);

struct simage_write_stats {
	uint64_t chunks, holes, compressed, file_size;
};

/*
 * Writes the disk in raw_fd (disk_size bytes, a multiple of 512) as an
 * image to out_fd, keyed by ikm; fills h (the image id among it). 0, -errno
 * or a SIMAGE_E_* code. out_fd is synced before returning.
 */
int simage_write(int raw_fd, uint64_t disk_size, int out_fd, const uint8_t *ikm, size_t ikm_len,
		 const struct simage_write_opts *opts, struct simage_header *h,
		 struct simage_write_stats *stats);

/*
 * The same from any source: fill(fill_ctx, buf, len, off) fills buf with
 * plaintext bytes [off, off + len), 0 or a negative error that ends the write
 * (a VMM seals guest RAM this way, docs/vmm.md "Sealed memory file").
 */
int simage_write_from(int (*fill)(void *ctx, void *buf, size_t len, uint64_t off), void *fill_ctx,
		      uint64_t disk_size, int out_fd, const uint8_t *ikm, size_t ikm_len,
		      const struct simage_write_opts *opts, struct simage_header *h,
		      struct simage_write_stats *stats);

/* Reads and checks the header only (no key needed): for listings. */
int simage_peek(int fd, struct simage_header *h);

struct simage_reader {
	int fd;
	struct simage_header h;
	struct simage_entry *table;
	struct simage_keys keys;
	struct simage_codec codec;
	uint8_t *sealed; /* one sealed chunk read from the file */
};

/*
 * Opens the image in fd (the reader does not own it) with ikm: header,
 * file size, key check (SIMAGE_E_KEY), MAC over header and table
 * (SIMAGE_E_AUTH), table layout. ikm NULL: SIMAGE_E_NOKEY.
 */
int simage_reader_open(struct simage_reader *r, int fd, const uint8_t *ikm, size_t ikm_len);
/* The same with keys already derived (the VMM gets these, never the customer key). */
int simage_reader_open_keys(struct simage_reader *r, int fd, const struct simage_keys *keys);
/* Chunk index in plaintext (simage_chunk_len bytes); SIMAGE_E_AUTH if tampered. */
int simage_reader_read_chunk(struct simage_reader *r, uint64_t index, uint8_t *plain);
void simage_reader_close(struct simage_reader *r);

/*
 * Reads every chunk with `threads` threads (the calling one among them; 0
 * or 1: the caller alone), each with its own codec and buffers, and gives
 * each chunk's plaintext to sink (0 or a negative error that ends the
 * read). sink is called from several threads at once, in no set order;
 * progress (may be NULL) one call at a time with the count done. On an
 * error the chunks already claimed finish and the rest are not read;
 * *bad_index (may be NULL) gets the lowest chunk that failed, or
 * UINT64_MAX when no chunk did (an allocation).
 */
int simage_reader_read_all(struct simage_reader *r, unsigned threads,
			   int (*sink)(void *ctx, uint64_t index, const uint8_t *plain, size_t len),
			   void *sink_ctx, void (*progress)(void *ctx, uint64_t done, uint64_t total),
			   void *progress_ctx, uint64_t *bad_index);

/* Whole transfers at off, or -errno; a read that meets the end is SIMAGE_E_TRUNCATED. */
int simage_pread_full(int fd, void *buf, size_t len, uint64_t off);
int simage_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* Lowercase hex of len bytes into out (2 * len + 1 bytes with the NUL). */
void simage_hex(const uint8_t *in, size_t len, char *out);
/* Hex of the 16-byte image id (33 bytes with the NUL). */
void simage_id_hex(const uint8_t id[SIMAGE_ID_BYTES], char out[2 * SIMAGE_ID_BYTES + 1]);

#endif
