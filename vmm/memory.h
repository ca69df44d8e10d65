#ifndef SANDVM_VMM_MEMORY_H
#define SANDVM_VMM_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Guest RAM. Every access to guest memory goes through guest_mem_ptr(), the
 * one place where a guest physical range is checked to lie wholly inside one
 * RAM region; nothing else turns a guest address into a pointer.
 */

#define GUEST_MEM_MAX_REGIONS 2

struct guest_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *host;
};

struct guest_mem {
	struct guest_mem_region regions[GUEST_MEM_MAX_REGIONS];
	unsigned nregions;
	uint64_t total;
};

/*
 * Reserves and maps `size` bytes of RAM laid out by the architecture
 * (regions given by the caller, sorted, non-overlapping).
 */
int guest_mem_init(struct guest_mem *mem, const struct guest_mem_region *layout,
		   unsigned nregions, bool hugepages);
/*
 * The same layout backed by a snapshot's memory file (the regions one after
 * another from offset 0), mapped MAP_PRIVATE: pages are read from the file
 * on first touch and shared with every other VM mapping it until the guest
 * writes them. fd may be read-only; it is not kept. The file must be at
 * least the layout's total size (-EINVAL).
 */
int guest_mem_init_file(struct guest_mem *mem, const struct guest_mem_region *layout, unsigned nregions,
			int fd);
void guest_mem_destroy(struct guest_mem *mem);

/* Host pointer for [gpa, gpa + len), or NULL if any byte is outside RAM. */
void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len);

/* Copies; -EFAULT when the range is not all RAM. */
int guest_mem_write(const struct guest_mem *mem, uint64_t gpa, const void *src, size_t len);
int guest_mem_read(const struct guest_mem *mem, uint64_t gpa, void *dst, size_t len);

#endif
