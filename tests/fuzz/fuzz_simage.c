/*
 * libFuzzer target: snapshot image headers and chunk tables (the pure
 * decoders, fed unauthenticated bytes directly), then the whole open and
 * read path with a fixed key. Images come from the host's store, but a
 * tampered file must only ever be refused.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct simage_reader r;
	uint8_t *plain;
	int fd;

	decode_only(data, size);
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
