/*
 * libFuzzer target: snapshot image headers and chunk tables (the pure
 * decoders, fed unauthenticated bytes directly), then the whole open and
 * read path with a fixed key. Images come from the host's store, but a
 * tampered file must only ever be refused. And the input as a chunk's
 * plaintext: whatever the compression sample decides, it seals and opens
 * back to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "simage/file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t key[32] = "fuzzing key, 32 bytes long.....";

static void decode_only(const uint8_t *data, size_t size)
{
	struct simage_header h;
	struct simage_entry *entries;

	if (simage_header_decode(data, size, &h) != 0)
		return;
	if (h.chunk_count == 0 || h.chunk_count > SIMAGE_MAX_CHUNKS ||
	    size - SIMAGE_HEADER_SIZE < h.chunk_count * SIMAGE_ENTRY_SIZE)
		return;
	entries = calloc(h.chunk_count, sizeof(*entries));
	if (!entries)
		return;
	if (simage_table_decode(&h, data + SIMAGE_HEADER_SIZE, size - SIMAGE_HEADER_SIZE, entries) == 0) {
		uint64_t end = h.data_offset;

		/* An accepted table stays inside the file, back to back. */
		for (uint64_t i = 0; i < h.chunk_count; i++) {
			if (entries[i].flags & SIMAGE_CHUNK_HOLE)
				continue;
			if (entries[i].offset != end ||
			    entries[i].length > simage_sealed_max(simage_chunk_len(&h, i)))
				abort();
			end += entries[i].length;
		}
		if (end != h.file_size)
			abort();
	}
	free(entries);
}

static void seal_round_trip(const uint8_t *data, size_t size)
{
	struct simage_header h = { .version = SIMAGE_VERSION, .chunk_shift = SIMAGE_CHUNK_SHIFT_MIN };
	struct simage_keys keys;
	struct simage_codec c;
	struct simage_entry e;
	uint8_t *sealed, *back;

	h.disk_size = (size < (1u << SIMAGE_CHUNK_SHIFT_MIN) ? size : 1u << SIMAGE_CHUNK_SHIFT_MIN) & ~511ull;
	if (h.disk_size == 0 || simage_header_layout(&h) != 0 || simage_codec_init(&c, h.disk_size) != 0)
		return;
	memset(&keys, 0x5a, sizeof(keys));
	sealed = malloc(simage_sealed_max(h.disk_size));
	back = malloc(h.disk_size);
	if (sealed && back && simage_seal_chunk(&c, &h, &keys, 0, data, sealed, &e) == 0 &&
	    !(e.flags & SIMAGE_CHUNK_HOLE)) {
		if (simage_open_chunk(&c, &h, &keys, 0, &e, sealed, back) != 0 || memcmp(back, data, h.disk_size))
			abort();
		if ((e.flags & SIMAGE_CHUNK_COMPRESSED) && e.length >= simage_sealed_max(h.disk_size))
			abort();
	}
	free(sealed);
	free(back);
	simage_codec_destroy(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct simage_reader r;
	uint8_t *plain;
	int fd;

	decode_only(data, size);
	seal_round_trip(data, size);
	fd = memfd_create("fuzz", 0);
	if (fd < 0)
		return 0;
	if (size && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	if (simage_reader_open(&r, fd, key, sizeof(key)) == 0) {
		plain = malloc(simage_chunk_size(&r.h));
		for (uint64_t i = 0; plain && i < r.h.chunk_count && i < 64; i++)
			(void)simage_reader_read_chunk(&r, i, plain);
		free(plain);
		simage_reader_close(&r);
	}
	close(fd);
	return 0;
}
