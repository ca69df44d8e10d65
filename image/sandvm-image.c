/*
 * sandvm-image: snapshot images on the host (docs/image-format.md).
 *
 *   sandvm-image pack RAW IMAGE --key-file F [--managed] [--chunk-shift N] [--threads N]
 *   sandvm-image unpack IMAGE RAW --key-file F [--threads N]
 *   sandvm-image verify IMAGE --key-file F [--threads N]
 *   sandvm-image info IMAGE
 *
 * Keys come only from files (16..512 bytes, used as they are). Progress goes
 * to stderr, results to stdout. Chunks are sealed and opened by --threads
 * threads (default: the CPUs this process may use, at most 4).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "simage/file.h"

static void usage(FILE *to)
{
	fprintf(to, "usage: sandvm-image pack RAW IMAGE --key-file F [--managed] [--chunk-shift %u..%u] [--threads N]\n"
		    "       sandvm-image unpack IMAGE RAW --key-file F [--threads N]\n"
		    "       sandvm-image verify IMAGE --key-file F [--threads N]\n"
		    "       sandvm-image info IMAGE\n"
		    "--threads 1..%u: chunks sealed or opened at once (default %u)\n",
		SIMAGE_CHUNK_SHIFT_MIN, SIMAGE_CHUNK_SHIFT_MAX, SIMAGE_THREADS_MAX, simage_default_threads());
}

static const char *errstr(int r)
{
	return r <= SIMAGE_E_TRUNCATED ? simage_strerror(r) : strerror(-r);
}

/* A key file's bytes, whole; 16..512 of them. */
static int read_key(const char *path, uint8_t *key, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	uint8_t extra;

	if (fd < 0) {
		fprintf(stderr, "sandvm-image: key file %s: %s\n", path, strerror(errno));
		return -1;
	}
	n = read(fd, key, SIMAGE_IKM_MAX);
	if (n == SIMAGE_IKM_MAX && read(fd, &extra, 1) == 1)
		n = SIMAGE_IKM_MAX + 1;
	close(fd);
	if (n < (ssize_t)SIMAGE_IKM_MIN || n > (ssize_t)SIMAGE_IKM_MAX) {
		fprintf(stderr, "sandvm-image: key file %s: a key is %u..%u bytes, this one is %s%zd\n", path,
			SIMAGE_IKM_MIN, SIMAGE_IKM_MAX, n > (ssize_t)SIMAGE_IKM_MAX ? "more than " : "",
			n > (ssize_t)SIMAGE_IKM_MAX ? (ssize_t)SIMAGE_IKM_MAX : n);
		return -1;
	}
	*len = (size_t)n;
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress(void *ctx, uint64_t done, uint64_t total)
{
	int *last = ctx;
	int pct = (int)(done * 100 / total);

	if (pct / 10 != *last / 10 || done == total) {
		fprintf(stderr, "\rsandvm-image: %3d%% (%llu/%llu chunks)", pct, (unsigned long long)done,
			(unsigned long long)total);
		if (done == total)
			fputc('\n', stderr);
		*last = pct;
	}
}

static int cmd_pack(const char *raw_path, const char *out_path, const uint8_t *key, size_t key_len,
		    unsigned flags, unsigned shift, unsigned threads)
{
	struct simage_write_opts opts = { .flags = flags, .chunk_shift = shift, .progress = progress,
					  .threads = threads };
	struct simage_write_stats stats;
	struct simage_header h;
	struct stat st;
	char id[2 * SIMAGE_ID_BYTES + 1];
	int raw, out, r, last = -10;
	double t0;

	opts.progress_ctx = &last;
	raw = open(raw_path, O_RDONLY | O_CLOEXEC);
	if (raw < 0 || fstat(raw, &st) < 0) {
		fprintf(stderr, "sandvm-image: %s: %s\n", raw_path, strerror(errno));
		return 1;
	}
	if (st.st_size == 0 || st.st_size % 512) {
		fprintf(stderr, "sandvm-image: %s: a disk is a non-zero multiple of 512 bytes\n", raw_path);
		return 1;
	}
	out = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		fprintf(stderr, "sandvm-image: %s: %s\n", out_path, strerror(errno));
		return 1;
	}
	t0 = now();
	r = simage_write(raw, (uint64_t)st.st_size, out, key, key_len, &opts, &h, &stats);
	close(raw);
	close(out);
	if (r < 0) {
		unlink(out_path);
		fprintf(stderr, "sandvm-image: pack: %s\n", errstr(r));
		return 1;
	}
	simage_id_hex(h.image_id, id);
	fprintf(stderr,
		"sandvm-image: %llu chunks (%llu holes, %llu compressed), %llu bytes from %llu in %.2f s\n",
		(unsigned long long)stats.chunks, (unsigned long long)stats.holes,
		(unsigned long long)stats.compressed, (unsigned long long)stats.file_size,
		(unsigned long long)st.st_size, now() - t0);
	printf("%s\n", id);
	return 0;
}

static int open_reader(const char *path, const uint8_t *key, size_t key_len, struct simage_reader *rd)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0) {
		fprintf(stderr, "sandvm-image: %s: %s\n", path, strerror(errno));
		return -1;
	}
	r = simage_reader_open(rd, fd, key, key_len);
	if (r < 0) {
		close(fd);
		fprintf(stderr, "sandvm-image: %s: %s\n", path, errstr(r));
		return -1;
	}
	return fd;
}

struct unpack {
	const struct simage_reader *rd;
	int out; /* -1: verify only */
};

/* Called from the reading threads at once: pwrite at each chunk's own offset needs no lock. */
static int sink_chunk(void *ctx, uint64_t index, const uint8_t *plain, size_t len)
{
	const struct unpack *u = ctx;

	/* Holes stay holes: the output was extended to the disk's size, sparse. */
	if (u->out < 0 || (u->rd->table[index].flags & SIMAGE_CHUNK_HOLE))
		return 0;
	return simage_pwrite_full(u->out, plain, len, index * simage_chunk_size(&u->rd->h));
}

/* Reads every chunk; with out >= 0 writes the disk there (holes stay holes). */
static int read_all(const char *path, const uint8_t *key, size_t key_len, int out, unsigned threads)
{
	struct simage_reader rd;
	struct unpack u = { .rd = &rd, .out = out };
	uint64_t bad;
	int fd = open_reader(path, key, key_len, &rd), r = 0, last = -10;
	double t0 = now();

	if (fd < 0)
		return 1;
	if (out >= 0 && ftruncate(out, (off_t)rd.h.disk_size) < 0) {
		r = -errno;
		fprintf(stderr, "sandvm-image: write: %s\n", strerror(errno));
		goto done;
	}
	r = simage_reader_read_all(&rd, threads, sink_chunk, &u, progress, &last, &bad);
	if (r < 0 && bad != UINT64_MAX)
		fprintf(stderr, "\nsandvm-image: %s: chunk %llu: %s\n", path, (unsigned long long)bad, errstr(r));
	else if (r < 0)
		fprintf(stderr, "\nsandvm-image: %s: %s\n", path, errstr(r));
	else
		fprintf(stderr, "sandvm-image: %llu bytes read and authenticated in %.2f s\n",
			(unsigned long long)rd.h.disk_size, now() - t0);
done:
	simage_reader_close(&rd);
	close(fd);
	return r < 0 ? 1 : 0;
}

static int cmd_info(const char *path)
{
	struct simage_header h;
	char id[2 * SIMAGE_ID_BYTES + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0) {
		fprintf(stderr, "sandvm-image: %s: %s\n", path, strerror(errno));
		return 1;
	}
	r = simage_peek(fd, &h);
	close(fd);
	if (r < 0) {
		fprintf(stderr, "sandvm-image: %s: %s\n", path, errstr(r));
		return 1;
	}
	simage_id_hex(h.image_id, id);
	printf("id %s\nversion %u\nkey %s\ndisk_size %llu\nchunk_size %llu\nchunks %llu\nfile_size %llu\n"
	       "created %llu\n",
	       id, h.version, h.flags & SIMAGE_FLAG_MANAGED ? "managed" : "customer",
	       (unsigned long long)h.disk_size, (unsigned long long)simage_chunk_size(&h),
	       (unsigned long long)h.chunk_count, (unsigned long long)h.file_size,
	       (unsigned long long)h.created);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "key-file", required_argument, NULL, 'k' },
		{ "managed", no_argument, NULL, 'm' },
		{ "chunk-shift", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *key_file = NULL, *cmd;
	uint8_t key[SIMAGE_IKM_MAX];
	size_t key_len = 0;
	unsigned flags = 0, shift = 0, threads = simage_default_threads();
	char *end;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'k':
			key_file = optarg;
			break;
		case 'm':
			flags |= SIMAGE_FLAG_MANAGED;
			break;
		case 's':
			shift = (unsigned)strtoul(optarg, NULL, 10);
			if (shift < SIMAGE_CHUNK_SHIFT_MIN || shift > SIMAGE_CHUNK_SHIFT_MAX) {
				usage(stderr);
				return 2;
			}
			break;
		case 't':
			threads = (unsigned)strtoul(optarg, &end, 10);
			if (*end || threads < 1 || threads > SIMAGE_THREADS_MAX) {
				usage(stderr);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind++];
	if (!strcmp(cmd, "info") && argc - optind == 1)
		return cmd_info(argv[optind]);
	if (!key_file) {
		fprintf(stderr, "sandvm-image: %s needs --key-file\n", cmd);
		return 2;
	}
	if (read_key(key_file, key, &key_len) < 0)
		return 2;
	if (!strcmp(cmd, "pack") && argc - optind == 2) {
		r = cmd_pack(argv[optind], argv[optind + 1], key, key_len, flags, shift, threads);
	} else if (!strcmp(cmd, "verify") && argc - optind == 1) {
		r = read_all(argv[optind], key, key_len, -1, threads);
	} else if (!strcmp(cmd, "unpack") && argc - optind == 2) {
		int out = open(argv[optind + 1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

		if (out < 0) {
			fprintf(stderr, "sandvm-image: %s: %s\n", argv[optind + 1], strerror(errno));
			return 1;
		}
		r = read_all(argv[optind], key, key_len, out, threads);
		if (fsync(out) < 0 && r == 0)
			r = 1;
		close(out);
	} else {
		usage(stderr);
		r = 2;
	}
	memset(key, 0, sizeof(key));
	return r;
}
