#include "memory.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int check_layout(const struct guest_mem_region *layout, unsigned nregions)
{
	if (nregions == 0 || nregions > GUEST_MEM_MAX_REGIONS)
		return -EINVAL;
	for (unsigned i = 0; i < nregions; i++) {
		const struct guest_mem_region *r = &layout[i];

		if (r->size == 0 || r->gpa + r->size < r->gpa ||
		    (i > 0 && r->gpa < layout[i - 1].gpa + layout[i - 1].size))
			return -EINVAL;
	}
	return 0;
}

/* Holes shorter than this between two data extents are mapped from the file too: fewer mappings. */
#define FILE_GAP_MERGE (256u << 10)
/* More file mappings than this in one region: the whole region comes from the file. */
#define FILE_MAX_MAPPINGS 8192u

/*
 * Maps the data extents of [off, off + size) of fd over the anonymous region
 * at host (MAP_FIXED, private); holes stay anonymous. 0, 1 when there are too
 * many extents to map one by one, or -errno.
 */
static int map_extents(uint8_t *host, uint64_t size, int fd, uint64_t off)
{
	uint64_t pos = off, end = off + size;
	unsigned n = 0;

	while (pos < end) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA), hole;
		uint64_t start, stop;

		if (data < 0 && errno == ENXIO)
			break; /* nothing but holes to the end of the file */
		if (data < 0)
			return -errno;
		if ((uint64_t)data >= end)
			break;
		start = (uint64_t)data & ~4095ull;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		stop = ((uint64_t)hole + 4095) & ~4095ull;
		/* Swallow short holes after this extent. */
		while (stop < end) {
			off_t next = lseek(fd, (off_t)stop, SEEK_DATA);

			if (next < 0 || (uint64_t)next >= end || (uint64_t)next - stop >= FILE_GAP_MERGE)
				break;
			hole = lseek(fd, next, SEEK_HOLE);
			if (hole < 0)
				return -errno;
			stop = ((uint64_t)hole + 4095) & ~4095ull;
		}
		if (stop > end)
			stop = end;
		if (++n > FILE_MAX_MAPPINGS)
			return 1;
		if (mmap(host + (start - off), stop - start, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, (off_t)start) == MAP_FAILED)
			return -errno;
		pos = stop;
	}
	return 0;
}

int guest_mem_init_file(struct guest_mem *mem, const struct guest_mem_region *layout, unsigned nregions,
			int fd)
{
	uint64_t off = 0;
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0) {
		memset(mem, 0, sizeof(*mem));
		return -errno;
	}
	/*
	 * Anonymous RAM first: zero pages (holes in the file) stay anonymous, so
	 * a guest writing one costs one page, not a page-cache page and its
	 * private copy. The file's data is mapped over it, shared with every
	 * other VM restored from the file until written.
	 */
	r = guest_mem_init(mem, layout, nregions, false);
	if (r < 0)
		return r;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < mem->total) {
		guest_mem_destroy(mem);
		return -EINVAL;
	}
	for (unsigned i = 0; i < mem->nregions; i++) {
		struct guest_mem_region *g = &mem->regions[i];

		r = map_extents(g->host, g->size, fd, off);
		if (r == 1 && mmap(g->host, g->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd,
				   (off_t)off) == MAP_FAILED)
			r = -errno;
		if (r < 0) {
			guest_mem_destroy(mem);
			return r;
		}
		/* The file's mappings are new ones: they are kept out of core dumps too. */
		madvise(g->host, g->size, MADV_DONTDUMP);
		off += g->size;
	}
	return 0;
}

int guest_mem_init(struct guest_mem *mem, const struct guest_mem_region *layout,
		   unsigned nregions, bool hugepages)
{
	int err;

	memset(mem, 0, sizeof(*mem));
	err = check_layout(layout, nregions);
	if (err < 0)
		return err;
	for (unsigned i = 0; i < nregions; i++) {
		const struct guest_mem_region *r = &layout[i];
		void *p;

		/* NORESERVE: a 4 GiB guest that touches 100 MiB costs 100 MiB. */
		p = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			err = -errno;
			goto undo;
		}
		if (hugepages)
			madvise(p, r->size, MADV_HUGEPAGE);
		/* Guest RAM never belongs in a core dump of the VMM. */
		madvise(p, r->size, MADV_DONTDUMP);
		mem->regions[i] = *r;
		mem->regions[i].host = p;
		mem->nregions = i + 1;
		mem->total += r->size;
	}
	return 0;
undo:
	guest_mem_destroy(mem);
	return err;
}

void guest_mem_destroy(struct guest_mem *mem)
{
	for (unsigned i = 0; i < mem->nregions; i++)
		munmap(mem->regions[i].host, mem->regions[i].size);
	memset(mem, 0, sizeof(*mem));
}

void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		uint64_t off;

		if (gpa < r->gpa)
			continue;
		off = gpa - r->gpa;
		/* Written so that no sum can wrap around. */
		if (off >= r->size || len > r->size - off)
			continue;
		return r->host + off;
	}
	return NULL;
}

int guest_mem_write(const struct guest_mem *mem, uint64_t gpa, const void *src, size_t len)
{
	void *p = guest_mem_ptr(mem, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

int guest_mem_read(const struct guest_mem *mem, uint64_t gpa, void *dst, size_t len)
{
	const void *p = guest_mem_ptr(mem, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}
