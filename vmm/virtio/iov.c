#include "virtio/iov.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* Walks [skip, skip + len): copies (out or in) when `buf`, else records the pieces. */
static int walk(const struct iovec *iov, unsigned n, size_t skip, uint64_t len, uint8_t *buf,
		bool to_iov, struct iovec *pieces, int *npieces)
{
	uint64_t total = 0;
	int k = 0;

	for (unsigned i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (skip > total || len > total - skip)
		return -EINVAL;
	for (unsigned i = 0; i < n && len > 0; i++) {
		uint8_t *base = iov[i].iov_base;
		size_t l = iov[i].iov_len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		base += skip;
		l -= skip;
		skip = 0;
		if (l > len)
			l = (size_t)len;
		if (pieces)
			pieces[k++] = (struct iovec){ base, l };
		else if (to_iov)
			memcpy(base, buf, l);
		else
			memcpy(buf, base, l);
		if (buf)
			buf += l;
		len -= l;
	}
	if (npieces)
		*npieces = k;
	return 0;
}

int iov_gather(const struct iovec *iov, unsigned n, size_t skip, void *dst, size_t len)
{
	return walk(iov, n, skip, len, dst, false, NULL, NULL);
}

int iov_scatter(const struct iovec *iov, unsigned n, size_t skip, const void *src, size_t len)
{
	return walk(iov, n, skip, len, (uint8_t *)src, true, NULL, NULL);
}

int iov_slice(const struct iovec *iov, unsigned n, size_t skip, uint64_t len, struct iovec *out,
	      int *nout)
{
	return walk(iov, n, skip, len, NULL, false, out, nout);
}
