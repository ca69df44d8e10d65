#ifndef SANDVM_VMM_SNAPSHOT_MEM_SEAL_H
#define SANDVM_VMM_SNAPSHOT_MEM_SEAL_H

/*
 * A snapshot's memory file sealed with a key (docs/vmm.md, "Sealed memory
 * file"): guest RAM, the regions one after another, written as a snapshot
 * image (lib/simage, docs/image-format.md) whose disk is the RAM and whose
 * input key is the caller's 32 bytes. All-zero chunks are holes; every
 * stored chunk is zstd-compressed when that helps and sealed with
 * AES-256-GCM; header and chunk table carry an HMAC. No plaintext of guest
 * RAM is written to the file, and a tampered, truncated or substituted
 * file, or another key, is refused before anything is copied into RAM.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_mem;

#define MEM_SEAL_KEY_BYTES 32u

/* Writes mem to fd (truncated first, synced before returning) sealed with key; 0 or -errno with err. */
int mem_seal_write(const struct guest_mem *mem, int fd, const uint8_t key[MEM_SEAL_KEY_BYTES], char *err,
		   size_t errlen);
/*
 * Opens the sealed memory file in fd with key and decrypts it into mem
 * (freshly mapped, all zero, the snapshot's layout): only the non-zero
 * pages are written, so zero pages stay untouched anonymous memory. 0;
 * -EINVAL when the file is refused (err: wrong key, tampered, truncated,
 * another RAM size, not a sealed file); -errno for an I/O error. On failure
 * mem may hold part of the snapshot: the caller unmaps it.
 */
int mem_seal_read(const struct guest_mem *mem, int fd, const uint8_t key[MEM_SEAL_KEY_BYTES], char *err,
		  size_t errlen);
/* Whether the file in fd begins with a well-formed sealed header (no key needed). */
bool mem_seal_is_sealed(int fd);
/*
 * Reads the key from fd (a pipe or a regular file holding exactly
 * MEM_SEAL_KEY_BYTES bytes, nothing more); 0, or -EINVAL for any other
 * length, or -errno. fd is left open.
 */
int mem_seal_read_key(int fd, uint8_t key[MEM_SEAL_KEY_BYTES]);

#endif
