/*
 * vmctl cp: one file into or out of a sandbox through the files API,
 * streamed both ways (no file is held in memory).
 */
#include "commands.h"
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char cp_usage[] =
	"usage: vmctl cp LOCAL ID:PATH\n"
	"       vmctl cp ID:PATH LOCAL\n"
	"Copies one file into or out of a sandbox; PATH is absolute. LOCAL may be - for\n"
	"stdin or stdout, or a directory to copy into. An upload keeps the local file's\n"
	"mode. Exit status 1 when the local file cannot be read or written.\n"
	"\n" VMCTL_COMMON_USAGE;

struct cp_remote {
	char *id;
	const char *path;
};

/* ID:/absolute/path with an ID of sandbox id or name characters. */
static bool cp_parse_remote(const char *s, struct cp_remote *rem)
{
	size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");

	if (!n || s[n] != ':' || s[n + 1] != '/')
		return false;
	rem->id = strndup(s, n);
	rem->path = s + n + 1;
	return rem->id != NULL;
}

static char *cp_files_path(const struct cp_remote *rem, const char *extra)
{
	char *base = vmctl_sandbox_path(rem->id, "/files?path="), *esc = curl_easy_escape(NULL, rem->path, 0);
	char *path = NULL;

	if (base && esc && asprintf(&path, "%s%s%s", base, esc, extra) < 0)
		path = NULL;
	free(base);
	curl_free(esc);
	return path;
}

struct cp_upload {
	FILE *f;
	int err;
};

static size_t cp_read(char *buf, size_t size, size_t nmemb, void *opaque)
{
	struct cp_upload *u = opaque;
	size_t n = fread(buf, 1, size * nmemb, u->f);

	if (n == 0 && ferror(u->f)) {
		u->err = errno ? errno : EIO;
		return CURL_READFUNC_ABORT;
	}
	return n;
}

static int cp_upload(const struct vmctl_client *c, const char *local, const struct cp_remote *rem)
{
	struct cp_upload u = { .f = stdin };
	char mode[32] = "";
	struct stat st = { 0 };
	struct vmctl_req q;
	char *path = NULL;
	int r;

	if (strcmp(local, "-")) {
		u.f = fopen(local, "rbe");
		if (!u.f || fstat(fileno(u.f), &st) < 0) {
			fprintf(stderr, "vmctl: %s: %s\n", local, strerror(errno));
			if (u.f)
				fclose(u.f);
			return VMCTL_EXIT_LOCAL;
		}
		if (S_ISDIR(st.st_mode)) {
			fprintf(stderr, "vmctl: %s: is a directory (cp copies one file)\n", local);
			fclose(u.f);
			return VMCTL_EXIT_LOCAL;
		}
		snprintf(mode, sizeof(mode), "&mode=%04o", (unsigned)(st.st_mode & 07777));
	}
	path = cp_files_path(rem, mode);
	r = path ? vmctl_req_init(&q, c, "PUT", path, NULL) : -ENOMEM;
	if (r) {
		fprintf(stderr, "vmctl: out of memory\n");
		r = VMCTL_EXIT_FAILED;
		goto out;
	}
	/* A regular file goes with its size; anything else chunked. */
	r = vmctl_req_upload(&q, cp_read, &u, u.f != stdin && S_ISREG(st.st_mode) ? (curl_off_t)st.st_size : -1);
	if (!r)
		r = vmctl_req_perform(&q);
	if (u.err) {
		fprintf(stderr, "vmctl: %s: %s\n", local, strerror(u.err));
		r = VMCTL_EXIT_LOCAL;
	} else if (r || !vmctl_req_ok(&q)) {
		r = vmctl_req_report(&q, r);
	}
	vmctl_req_destroy(&q);
out:
	free(path);
	if (u.f != stdin)
		fclose(u.f);
	return r;
}

struct cp_download {
	const char *target; /* NULL for stdout */
	int fd;
	bool created_regular;
	int err;
};

static int cp_open_target(struct cp_download *d)
{
	struct stat st;

	if (d->fd >= 0)
		return 0;
	d->fd = open(d->target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (d->fd < 0)
		return -errno;
	d->created_regular = fstat(d->fd, &st) == 0 && S_ISREG(st.st_mode);
	return 0;
}

/* Opens the local file only once the reply is a success: an error leaves it alone. */
static int cp_sink(void *ctx, const char *data, size_t n)
{
	struct cp_download *d = ctx;
	ssize_t w;
	int r = cp_open_target(d);

	if (r) {
		d->err = -r;
		return r;
	}
	while (n) {
		w = write(d->fd, data, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			d->err = errno;
			return -errno;
		}
		data += w;
		n -= (size_t)w;
	}
	return 0;
}

/* LOCAL, or LOCAL/basename(PATH) when LOCAL is a directory. */
static char *cp_local_target(const char *local, const char *remote_path)
{
	const char *base = strrchr(remote_path, '/') + 1;
	struct stat st;
	char *t;

	if (stat(local, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (!*base) {
			errno = EISDIR;
			return NULL;
		}
		if (asprintf(&t, "%s/%s", local, base) < 0)
			return NULL;
		return t;
	}
	return strdup(local);
}

static int cp_download(const struct vmctl_client *c, const struct cp_remote *rem, const char *local)
{
	struct cp_download d = { .fd = -1 };
	char *target = NULL, *path = NULL;
	struct vmctl_req q;
	int r;

	if (strcmp(local, "-")) {
		target = cp_local_target(local, rem->path);
		if (!target) {
			fprintf(stderr, "vmctl: %s: %s\n", local, strerror(errno));
			return VMCTL_EXIT_LOCAL;
		}
		d.target = target;
	} else {
		d.fd = STDOUT_FILENO;
	}
	path = cp_files_path(rem, "");
	r = path ? vmctl_req_init(&q, c, "GET", path, NULL) : -ENOMEM;
	if (r) {
		fprintf(stderr, "vmctl: out of memory\n");
		r = VMCTL_EXIT_FAILED;
		goto out;
	}
	q.sink = cp_sink;
	q.sink_ctx = &d;
	r = vmctl_req_perform(&q);
	if (!r && vmctl_req_ok(&q) && d.target) {
		/* An empty file never reached the sink. */
		r = cp_open_target(&d);
		if (r)
			d.err = -r;
	}
	if (d.err) {
		fprintf(stderr, "vmctl: %s: %s\n", d.target ? d.target : "stdout", strerror(d.err));
		r = VMCTL_EXIT_LOCAL;
	} else if (r || !vmctl_req_ok(&q)) {
		r = vmctl_req_report(&q, r);
	}
	vmctl_req_destroy(&q);
	if (d.target && d.fd >= 0 && close(d.fd) < 0 && !r) {
		fprintf(stderr, "vmctl: %s: %s\n", d.target, strerror(errno));
		r = VMCTL_EXIT_LOCAL;
	}
	/* Half a file would pass for the whole one. */
	if (r && d.created_regular)
		unlink(d.target);
out:
	free(path);
	free(target);
	return r;
}

int vmctl_cmd_cp(struct vmctl_args *a, int argc, char **argv)
{
	struct cp_remote src = { 0 }, dst = { 0 };
	bool src_remote, dst_remote;
	struct vmctl_client c;
	int first, r;

	r = vmctl_cmd_parse(a, "cp", cp_usage, argc, argv, NULL, NULL, NULL, &first);
	if (r >= 0)
		return r;
	if (argc - first != 2)
		return vmctl_usage_error("cp", "expected LOCAL ID:PATH or ID:PATH LOCAL");
	src_remote = cp_parse_remote(argv[first], &src);
	dst_remote = cp_parse_remote(argv[first + 1], &dst);
	if (src_remote == dst_remote) {
		r = vmctl_usage_error("cp", "%s", src_remote ? "both arguments name a sandbox file (copy through a local file)"
					   : "one argument must name a sandbox file, as ID:/absolute/path");
		goto out;
	}
	r = vmctl_client_open(&c, a, true);
	if (r)
		goto out;
	r = dst_remote ? cp_upload(&c, argv[first], &dst) : cp_download(&c, &src, argv[first + 1]);
	vmctl_client_close(&c);
out:
	free(src.id);
	free(dst.id);
	return r;
}
