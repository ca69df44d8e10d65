/*
 * vmctl snapshot-dir, mount, unmount, images, image rm: encrypted snapshot
 * images (docs/image-format.md, docs/api.md). Keys come only from files,
 * never from the command line, and are sent base64 in the request body.
 */
#include "commands.h"
#include "http.h"
#include "output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEY_MIN 16
#define KEY_MAX 512

static const char snapshot_usage[] =
	"usage: vmctl snapshot-dir ID PATH [--key-file F] [--ttl S|none]\n"
	"\n"
	"Makes an encrypted image of directory PATH in sandbox ID and prints the image id\n"
	"alone on stdout. With --key-file the image is sealed with the key in F (its bytes,\n"
	"16..512 of them; never stored: the same key must be given to mount it); without,\n"
	"with a key sandboxd manages. The image expires 30 days after it was last made or\n"
	"mounted; --ttl S sets another span in seconds, --ttl none keeps it until removed.\n"
	"After the command name --key-file is the image key; give the API key file before\n"
	"the command name (vmctl --key-file API COMMAND ...) or in $SANDVM_API_KEY_FILE.\n" VMCTL_COMMON_USAGE;

static const char mount_usage[] =
	"usage: vmctl mount ID PATH IMAGE [--key-file F]\n"
	"\n"
	"Mounts image IMAGE at PATH in sandbox ID (read-write; writes go to a throwaway\n"
	"encrypted overlay, never to the image). An image made with a customer key needs\n"
	"the same key (--key-file F); a wrong or missing key is refused and nothing is\n"
	"mounted.\n" VMCTL_COMMON_USAGE;

static const char unmount_usage[] = "usage: vmctl unmount ID PATH\n\nUnmounts the image at PATH in sandbox ID.\n"
	VMCTL_COMMON_USAGE;

static const char images_usage[] =
	"usage: vmctl images [--json]\n"
	"       vmctl image rm IMAGE...\n"
	"\n"
	"images lists the snapshot images: id, key (customer or managed), size on disk,\n"
	"when made and last used, when it expires, and the directory it was made from.\n"
	"image rm deletes images for good: the file, its record and its key material.\n" VMCTL_COMMON_USAGE;

enum { OPT_TTL = VMCTL_OPT_FIRST_OTHER, OPT_JSON };

struct snap_opts {
	const char *cmd;
	const char *ttl;
	bool json;
};

static int snap_handle(void *ctx, int opt, const char *arg)
{
	struct snap_opts *o = ctx;

	switch (opt) {
	case OPT_TTL: o->ttl = arg; return 0;
	case OPT_JSON: o->json = true; return 0;
	default: return -EINVAL;
	}
}

/*
 * Parses argv; the --key-file given after the command name is the image
 * key (returned in *image_key), the API key file stays what it was.
 */
static int snap_parse(struct vmctl_args *a, struct snap_opts *o, const char *usage, int argc, char **argv,
		      const char **image_key, int *first)
{
	static const struct option opts[] = {
		{ "ttl", required_argument, NULL, OPT_TTL },
		{ "json", no_argument, NULL, OPT_JSON },
		{ 0 },
	};
	const char *api_key = a->key_file;
	int r;

	a->key_file = NULL;
	r = vmctl_cmd_parse(a, o->cmd, usage, argc, argv, opts, snap_handle, o, first);
	*image_key = a->key_file;
	a->key_file = api_key;
	return r;
}

static void base64(const uint8_t *in, size_t len, char *out)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) |
			     (i + 2 < len ? in[i + 2] : 0);

		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = i + 1 < len ? abc[v >> 6 & 63] : '=';
		out[o++] = i + 2 < len ? abc[v & 63] : '=';
	}
	out[o] = '\0';
}

/* Adds "key" (base64 of the file's bytes) to body; an exit status on failure, else 0. */
static int add_key(const char *cmd, const char *file, cJSON *body)
{
	uint8_t key[KEY_MAX + 1];
	char text[(KEY_MAX + 2) / 3 * 4 + 1];
	ssize_t n;
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "vmctl: %s: key file %s: %s\n", cmd, file, strerror(errno));
		return VMCTL_EXIT_LOCAL;
	}
	n = read(fd, key, sizeof(key));
	close(fd);
	if (n < KEY_MIN || n > KEY_MAX) {
		memset(key, 0, sizeof(key));
		if (n < 0)
			fprintf(stderr, "vmctl: %s: key file %s: %s\n", cmd, file, strerror(errno));
		else
			fprintf(stderr, "vmctl: %s: key file %s: a key is %d..%d bytes, this one is %s%zd\n", cmd, file,
				KEY_MIN, KEY_MAX, n > KEY_MAX ? "more than " : "", n > KEY_MAX ? (ssize_t)KEY_MAX : n);
		return VMCTL_EXIT_USAGE;
	}
	base64(key, (size_t)n, text);
	memset(key, 0, sizeof(key));
	cJSON_AddStringToObject(body, "key", text);
	memset(text, 0, sizeof(text));
	return 0;
}

/* Wipes the key out of the request body before it is freed. */
static void body_free(cJSON *body)
{
	cJSON *k = cJSON_GetObjectItemCaseSensitive(body, "key");

	if (cJSON_IsString(k))
		memset(k->valuestring, 0, strlen(k->valuestring));
	cJSON_Delete(body);
}

int vmctl_cmd_snapshot_dir(struct vmctl_args *a, int argc, char **argv)
{
	struct snap_opts o = { .cmd = "snapshot-dir" };
	const char *key_file;
	cJSON *body = NULL, *reply = NULL;
	const cJSON *img;
	int first, r;

	r = snap_parse(a, &o, snapshot_usage, argc, argv, &key_file, &first);
	if (r >= 0)
		return r;
	if (argc - first != 2)
		return vmctl_usage_error(o.cmd, argc - first < 2 ? "needs ID and PATH" : "unexpected argument '%s'",
					 argv[first + 2]);
	body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "path", argv[first + 1]);
	if (key_file && (r = add_key(o.cmd, key_file, body)) != 0)
		goto out;
	if (o.ttl && !strcmp(o.ttl, "none")) {
		cJSON_AddStringToObject(body, "ttl", "none");
	} else if (o.ttl) {
		uint64_t ttl;

		if (vmctl_parse_number(o.cmd, "--ttl", o.ttl, &ttl) < 0) {
			r = VMCTL_EXIT_USAGE;
			goto out;
		}
		cJSON_AddNumberToObject(body, "ttl", (double)ttl);
	}
	if (a->verbose)
		fprintf(stderr, "vmctl: making an image of %s in %s...\n", argv[first + 1], argv[first]);
	r = vmctl_call_sandbox(a, "POST", argv[first], "/snapshots", body, &reply);
	img = cJSON_GetObjectItemCaseSensitive(reply, "image");
	if (r == 0 && cJSON_IsString(img))
		printf("%s\n", img->valuestring);
	else if (r == 0)
		r = VMCTL_EXIT_FAILED;
out:
	body_free(body);
	cJSON_Delete(reply);
	return r;
}

int vmctl_cmd_mount(struct vmctl_args *a, int argc, char **argv)
{
	struct snap_opts o = { .cmd = "mount" };
	const char *key_file;
	cJSON *body, *reply = NULL;
	int first, r;

	r = snap_parse(a, &o, mount_usage, argc, argv, &key_file, &first);
	if (r >= 0)
		return r;
	if (argc - first != 3)
		return vmctl_usage_error(o.cmd, argc - first < 3 ? "needs ID, PATH and IMAGE" : "unexpected argument '%s'",
					 argv[first + 3]);
	body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "path", argv[first + 1]);
	cJSON_AddStringToObject(body, "image", argv[first + 2]);
	if (!key_file || (r = add_key(o.cmd, key_file, body)) == 0)
		r = vmctl_call_sandbox(a, "POST", argv[first], "/mounts", body, &reply);
	body_free(body);
	cJSON_Delete(reply);
	return r;
}

int vmctl_cmd_unmount(struct vmctl_args *a, int argc, char **argv)
{
	struct snap_opts o = { .cmd = "unmount" };
	const char *key_file;
	cJSON *body;
	int first, r;

	r = snap_parse(a, &o, unmount_usage, argc, argv, &key_file, &first);
	if (r >= 0)
		return r;
	if (key_file)
		return vmctl_usage_error(o.cmd, "takes no key");
	if (argc - first != 2)
		return vmctl_usage_error(o.cmd, argc - first < 2 ? "needs ID and PATH" : "unexpected argument '%s'",
					 argv[first + 2]);
	body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "path", argv[first + 1]);
	r = vmctl_call_sandbox(a, "POST", argv[first], "/unmount", body, NULL);
	cJSON_Delete(body);
	return r;
}

static void when(const cJSON *rec, const char *field, char *out, size_t len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, field);
	time_t t;
	struct tm tm;

	if (!cJSON_IsNumber(v)) {
		snprintf(out, len, "never");
		return;
	}
	t = (time_t)v->valuedouble;
	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%MZ", &tm);
}

static const char *str(const cJSON *rec, const char *field)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, field);

	return cJSON_IsString(v) ? v->valuestring : "-";
}

int vmctl_cmd_images(struct vmctl_args *a, int argc, char **argv)
{
	struct snap_opts o = { .cmd = "images" };
	const char *key_file;
	cJSON *reply = NULL;
	const cJSON *rec;
	int first, r;

	r = snap_parse(a, &o, images_usage, argc, argv, &key_file, &first);
	if (r >= 0)
		return r;
	if (key_file || first != argc)
		return vmctl_usage_error(o.cmd, key_file ? "takes no key" : "unexpected argument '%s'", argv[first]);
	r = vmctl_call(a, true, "GET", "/v1/snapshots", NULL, &reply);
	if (r)
		return r;
	if (o.json) {
		r = vmctl_print_json(reply) < 0 ? VMCTL_EXIT_FAILED : 0;
		cJSON_Delete(reply);
		return r;
	}
	printf("%-32s  %-8s  %10s  %-17s  %-17s  %-17s  %s\n", "IMAGE", "KEY", "SIZE", "CREATED", "LAST USED",
	       "EXPIRES", "SOURCE");
	cJSON_ArrayForEach(rec, cJSON_GetObjectItemCaseSensitive(reply, "images")) {
		char created[32], used[32], expires[32];
		const cJSON *size = cJSON_GetObjectItemCaseSensitive(rec, "file_size");

		when(rec, "created", created, sizeof(created));
		when(rec, "last_used", used, sizeof(used));
		when(rec, "expires", expires, sizeof(expires));
		printf("%-32s  %-8s  %10.0f  %-17s  %-17s  %-17s  %s:%s\n", str(rec, "id"), str(rec, "key"),
		       cJSON_IsNumber(size) ? size->valuedouble : 0, created, used, expires, str(rec, "sandbox"),
		       str(rec, "path"));
	}
	cJSON_Delete(reply);
	return 0;
}

int vmctl_cmd_image(struct vmctl_args *a, int argc, char **argv)
{
	struct snap_opts o = { .cmd = "image" };
	const char *key_file;
	int first, r, worst = 0;

	r = snap_parse(a, &o, images_usage, argc, argv, &key_file, &first);
	if (r >= 0)
		return r;
	if (first >= argc || strcmp(argv[first], "rm"))
		return vmctl_usage_error(o.cmd, "the sub-command is rm (vmctl image rm IMAGE...)");
	if (first + 1 >= argc)
		return vmctl_usage_error(o.cmd, "rm: which images?");
	for (int i = first + 1; i < argc; i++) {
		char path[128];

		if (strlen(argv[i]) > 64 || strchr(argv[i], '/')) {
			worst = vmctl_usage_error(o.cmd, "rm: '%s' is not an image id", argv[i]);
			continue;
		}
		snprintf(path, sizeof(path), "/v1/snapshots/%s", argv[i]);
		r = vmctl_call(a, true, "DELETE", path, NULL, NULL);
		if (r && !worst)
			worst = r;
	}
	return worst;
}
