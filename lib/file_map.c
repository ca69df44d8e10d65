#include "file_map.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int sv_file_map_open(struct sv_file_map *map, const char *path)
{
	struct stat st;
	void *p;
	int fd, err;

	map->data = NULL;
	map->size = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		err = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto out_close;
	}
	err = 0;
	if (st.st_size == 0)
		goto out_close;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		err = -errno;
		goto out_close;
	}
	map->data = p;
	map->size = (size_t)st.st_size;
out_close:
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
