#include "file_map.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int sv_file_map_fd(struct sv_file_map *map, int fd)
{
	struct stat st;
	void *p;

	map->data = NULL;
	map->size = 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	if (st.st_size == 0)
		return 0;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	map->data = p;
	map->size = (size_t)st.st_size;
	return 0;
}

int sv_file_map_open(struct sv_file_map *map, const char *path)
{
	int fd, err;

	map->data = NULL;
	map->size = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = sv_file_map_fd(map, fd);
	close(fd);
	return err;
}

void sv_file_map_close(struct sv_file_map *map)
{
	if (map->data)
		munmap((void *)map->data, map->size);
	map->data = NULL;
	map->size = 0;
}
