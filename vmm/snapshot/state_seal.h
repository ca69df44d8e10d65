#ifndef SANDVM_VMM_SNAPSHOT_STATE_SEAL_H
#define SANDVM_VMM_SNAPSHOT_STATE_SEAL_H

/*
 * A snapshot's state file sealed with the memory key (docs/vmm.md, "Sealed
 * state file"): the vCPUs' registers (XSAVE holds whatever the guest last
 * had in its vector registers, key schedules included) are no more in clear
 * on disk than guest RAM is. The envelope:
 *
 *   0   magic "SVSTSEAL"
 *   8   le32 version (1), le32 zero
 *   16  salt[16], random per file
 *   32  nonce[12], random per file
 *   44  ciphertext of the clear state file (format.h), then its 16-byte tag
 *
 * AES-256-GCM under HKDF-SHA256(key, salt, "sandvm snapshot state v1"),
 * the first 44 bytes as associated data. The parser is a pure function
 * over the file's bytes.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_SEAL_KEY_BYTES 32u
#define STATE_SEAL_HEADER_BYTES 44u
#define STATE_SEAL_TAG_BYTES 16u
#define STATE_SEAL_OVERHEAD (STATE_SEAL_HEADER_BYTES + STATE_SEAL_TAG_BYTES)

/* Whether buf begins with the envelope's magic (a sealed state file, well formed or not). */
bool state_seal_is_sealed(const uint8_t *buf, size_t len);
/*
 * Seals the len bytes at in into out, which has room for len +
 * STATE_SEAL_OVERHEAD bytes. 0, or -errno (-EIO: the cipher failed).
 */
int state_seal(const uint8_t key[STATE_SEAL_KEY_BYTES], const uint8_t *in, size_t len, uint8_t *out);
/*
 * Opens the sealed file buf (len bytes) into out (room for len -
 * STATE_SEAL_OVERHEAD bytes), *out_len its length. 0; -EINVAL with why for
 * a file that is not a well-formed envelope; -EBADMSG when the tag does not
 * verify (another key, or tampered); -EIO when the cipher failed.
 */
int state_unseal(const uint8_t key[STATE_SEAL_KEY_BYTES], const uint8_t *buf, size_t len, uint8_t *out,
		 size_t *out_len, char *why, size_t whylen);

#endif
