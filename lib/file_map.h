#ifndef SANDVM_LIB_FILE_MAP_H
#define SANDVM_LIB_FILE_MAP_H

#include <stddef.h>
#include <stdint.h>

/* A whole file mapped read-only, so parsers see one bounded buffer. */
struct sv_file_map {
	const uint8_t *data;
	size_t size;
};

/* Returns 0 or -errno; an empty file maps to data == NULL, size == 0. */
int sv_file_map_open(struct sv_file_map *map, const char *path);
/* The same for an open descriptor, which stays the caller's (a mapping needs none). */
int sv_file_map_fd(struct sv_file_map *map, int fd);
void sv_file_map_close(struct sv_file_map *map);

#endif
