#ifndef SANDVM_VMM_VIRTIO_IOV_H
#define SANDVM_VMM_VIRTIO_IOV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * Byte ranges over a list of buffers, as device models see a descriptor
 * chain: headers split across segments, payloads after them. Pure; every
 * function fails with -EINVAL, touching nothing, when the list is too short.
 */

/* Copies len bytes starting `skip` bytes into iov[0..n) out to dst. */
int iov_gather(const struct iovec *iov, unsigned n, size_t skip, void *dst, size_t len);

/* Copies len bytes from src into iov[0..n) starting `skip` bytes in. */
int iov_scatter(const struct iovec *iov, unsigned n, size_t skip, const void *src, size_t len);

/* Describes [skip, skip + len) of iov[0..n) as a new list in out[0..*nout), at most n entries. */
int iov_slice(const struct iovec *iov, unsigned n, size_t skip, uint64_t len, struct iovec *out,
	      int *nout);

#endif
