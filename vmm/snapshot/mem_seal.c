#include "snapshot/mem_seal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "memory.h"
#include "parse.h"
#include "simage/file.h"

#define PAGE 4096u

/* Bytes [off, off + len) of RAM counted across the regions one after another (a chunk may span two). */
static int copy_out(void *ctx, void *buf, size_t len, uint64_t off)
{
	const struct guest_mem *mem = ctx;
	uint8_t *p = buf;

	for (unsigned i = 0; i < mem->nregions && len; i++) {
		const struct guest_mem_region *g = &mem->regions[i];
		size_t n;

		if (off >= g->size) {
			off -= g->size;
			continue;
		}
		n = g->size - off < len ? (size_t)(g->size - off) : len;
		memcpy(p, g->host + off, n);
		p += n;
		len -= n;
		off = 0;
	}
	return len ? -EINVAL : 0;
}

static bool page_is_zero(const uint8_t *p, size_t len)
{
	uint64_t acc = 0;

	for (size_t i = 0; i < len / 8; i++) {
		uint64_t w;

		memcpy(&w, p + 8 * i, 8);
		acc |= w;
	}
	return acc == 0;
}

/* The reverse, skipping zero pages: RAM is zero already, and writing zeros would allocate it. */
static void copy_in(const struct guest_mem *mem, const uint8_t *plain, size_t len, uint64_t off)
{
	for (size_t done = 0; done < len; done += PAGE) {
		size_t n = len - done < PAGE ? len - done : PAGE;
		uint64_t at = off + done;

		if (page_is_zero(plain + done, n))
			continue;
		for (unsigned i = 0; i < mem->nregions; i++) {
			const struct guest_mem_region *g = &mem->regions[i];

			if (at >= g->size) {
				at -= g->size;
				continue;
			}
			/* Regions are whole pages: a page never spans two. */
			memcpy(g->host + at, plain + done, n);
			break;
		}
	}
}

int mem_seal_write(const struct guest_mem *mem, int fd, const uint8_t key[MEM_SEAL_KEY_BYTES], char *err,
		   size_t errlen)
{
	struct simage_write_opts opts = { .flags = SIMAGE_FLAG_MANAGED };
	struct simage_write_stats stats;
	struct simage_header h;
	int r;

	r = simage_write_from(copy_out, (void *)mem, mem->total, fd, key, MEM_SEAL_KEY_BYTES, &opts, &h, &stats);
	if (r < 0)
		return sv_errf(r <= SIMAGE_E_TRUNCATED ? -EIO : r, err, errlen, "%s",
			       r <= SIMAGE_E_TRUNCATED ? simage_strerror(r) : strerror(-r));
	return 0;
}

static const char *refusal(int r)
{
	switch (r) {
	case SIMAGE_E_KEY:
		return "wrong key: the key does not match this sealed memory file";
	case SIMAGE_E_AUTH:
		return "it failed authentication (tampered or corrupt)";
	case SIMAGE_E_TRUNCATED:
		return "it is truncated";
	case SIMAGE_E_MAGIC:
		return "not a sealed memory file";
	default:
		return simage_strerror(r);
	}
}

int mem_seal_read(const struct guest_mem *mem, int fd, const uint8_t key[MEM_SEAL_KEY_BYTES], char *err,
		  size_t errlen)
{
	struct simage_reader rd;
	uint8_t *plain = NULL;
	uint64_t chunk = 0;
	int r;

	r = simage_reader_open(&rd, fd, key, MEM_SEAL_KEY_BYTES);
	if (r < 0)
		return sv_errf(r <= SIMAGE_E_TRUNCATED ? -EINVAL : r, err, errlen, "%s",
			       r <= SIMAGE_E_TRUNCATED ? refusal(r) : strerror(-r));
	if (rd.h.disk_size != mem->total) {
		r = sv_errf(-EINVAL, err, errlen, "it holds %llu MiB of RAM, this VM has %llu (--memory)",
			    (unsigned long long)(rd.h.disk_size >> 20), (unsigned long long)(mem->total >> 20));
		goto out;
	}
	chunk = simage_chunk_size(&rd.h);
	plain = malloc(chunk);
	if (!plain) {
		r = sv_errf(-ENOMEM, err, errlen, "out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < rd.h.chunk_count; i++) {
		uint64_t len = simage_chunk_len(&rd.h, i);

		if (rd.table[i].flags & SIMAGE_CHUNK_HOLE)
			continue;
		r = simage_reader_read_chunk(&rd, i, plain);
		if (r < 0) {
			r = sv_errf(r <= SIMAGE_E_TRUNCATED ? -EINVAL : r, err, errlen, "chunk %llu: %s",
				    (unsigned long long)i, r <= SIMAGE_E_TRUNCATED ? refusal(r) : strerror(-r));
			goto out;
		}
		copy_in(mem, plain, (size_t)len, i * chunk);
	}
	r = 0;
out:
	if (plain) {
		OPENSSL_cleanse(plain, chunk);
		free(plain);
	}
	simage_reader_close(&rd);
	return r;
}

bool mem_seal_is_sealed(int fd)
{
	uint8_t raw[SIMAGE_HEADER_SIZE];
	struct simage_header h;

	return simage_pread_full(fd, raw, sizeof(raw), 0) == 0 && simage_header_decode(raw, sizeof(raw), &h) == 0;
}

int mem_seal_read_key(int fd, uint8_t key[MEM_SEAL_KEY_BYTES])
{
	uint8_t buf[MEM_SEAL_KEY_BYTES + 1];
	size_t got = 0;
	int r = 0;

	/* One byte more than a key: a longer input is refused, not cut. */
	while (got < sizeof(buf)) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (r == 0 && got != MEM_SEAL_KEY_BYTES)
		r = -EINVAL;
	if (r == 0)
		memcpy(key, buf, MEM_SEAL_KEY_BYTES);
	OPENSSL_cleanse(buf, sizeof(buf));
	return r;
}
