/*
 * Where sandboxd is and which API key to send: the part of the client that
 * reads the environment and the key file, apart from the requests themselves.
 */
#include "args.h"
#include "http.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY_DEFAULT_FILE ".config/sandvm/api-key"

static int client_parse_host(struct vmctl_client *c, const char *host)
{
	const char *rest;
	size_t n;

	if (!strncmp(host, "unix://", 7)) {
		if (host[7] != '/')
			goto bad;
		c->unix_path = strdup(host + 7);
		c->base = strdup("http://localhost");
	} else if (!strncmp(host, "http://", 7) || !strncmp(host, "https://", 8)) {
		rest = strstr(host, "://") + 3;
		if (!*rest || *rest == '/')
			goto bad;
		c->base = strdup(host);
		/* "http://h:1/" and "http://h:1" name the same API root. */
		if (c->base)
			for (n = strlen(c->base); n && c->base[n - 1] == '/'; n--)
				c->base[n - 1] = '\0';
	} else {
		goto bad;
	}
	if (!c->base || (!strncmp(host, "unix://", 7) && !c->unix_path))
		return -ENOMEM;
	return 0;
bad:
	vmctl_usage_error(NULL, "--host: expected unix:///PATH, http://HOST:PORT or https://HOST:PORT, got '%s'",
			  host);
	return -EINVAL;
}

static void key_trim(char *s)
{
	size_t n = strlen(s), i = 0;

	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	while (s[i] == ' ' || s[i] == '\t')
		i++;
	memmove(s, s + i, n - i + 1);
}

/* A key goes into a header line: printable ASCII without spaces, nothing else. */
static bool key_is_valid(const char *k)
{
	if (!*k)
		return false;
	for (; *k; k++)
		if (*k < 0x21 || *k > 0x7e)
			return false;
	return true;
}

/* The first line of path, trimmed; -errno, or -ENODATA when it is empty. */
static int key_read_file(const char *path, char **key)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	int r = 0;

	if (!f)
		return -errno;
	if (getline(&line, &cap, f) < 0) {
		r = ferror(f) ? -EIO : -ENODATA;
		goto out;
	}
	key_trim(line);
	if (!*line)
		r = -ENODATA;
out:
	fclose(f);
	if (r) {
		free(line);
		return r;
	}
	*key = line;
	return 0;
}

static const char *key_strerror(int r)
{
	return r == -ENODATA ? "the file is empty" : strerror(-r);
}

static char *key_default_path(void)
{
	const char *home = getenv("HOME");
	struct passwd *pw;
	char *path;

	if (!home || !*home) {
		pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : "/";
	}
	if (asprintf(&path, "%s/%s", home, KEY_DEFAULT_FILE) < 0)
		return NULL;
	return path;
}

static int client_load_key(struct vmctl_client *c, const struct vmctl_args *a)
{
	const char *env = getenv("SANDVM_API_KEY");
	const char *file = a->key_file ? a->key_file : getenv("SANDVM_API_KEY_FILE");
	const char *file_from = a->key_file ? "--key-file" : "SANDVM_API_KEY_FILE";
	char *key = NULL, *def = NULL;
	int r;

	if (env && *env) {
		key = strdup(env);
		if (!key)
			return -ENOMEM;
		key_trim(key);
		r = asprintf(&c->key_origin, "SANDVM_API_KEY");
	} else if (file && *file) {
		r = key_read_file(file, &key);
		if (r) {
			fprintf(stderr, "vmctl: cannot read the API key from %s (named by %s): %s\n", file,
				file_from, key_strerror(r));
			return -EACCES;
		}
		r = asprintf(&c->key_origin, "%s (named by %s)", file, file_from);
	} else {
		def = key_default_path();
		if (!def)
			return -ENOMEM;
		r = key_read_file(def, &key);
		if (r) {
			fprintf(stderr,
				"vmctl: no API key: SANDVM_API_KEY is not set, neither --key-file nor "
				"SANDVM_API_KEY_FILE names a key file, and %s cannot be read (%s)\n"
				"vmctl: sandboxd makes keys with `sandboxd --new-key NAME`\n",
				def, key_strerror(r));
			free(def);
			return -EACCES;
		}
		r = asprintf(&c->key_origin, "%s", def);
		free(def);
	}
	if (r < 0) {
		c->key_origin = NULL;
		free(key);
		return -ENOMEM;
	}
	if (!key_is_valid(key)) {
		fprintf(stderr, "vmctl: the API key from %s is empty or has characters a key cannot have\n",
			c->key_origin);
		free(key);
		return -EINVAL;
	}
	r = asprintf(&c->auth, "Authorization: Bearer %s", key);
	/* Keep the key itself in as few places as possible. */
	explicit_bzero(key, strlen(key));
	free(key);
	if (r < 0) {
		c->auth = NULL;
		return -ENOMEM;
	}
	return 0;
}

int vmctl_client_open(struct vmctl_client *c, const struct vmctl_args *a, bool need_key)
{
	const char *host = a->host;
	int r;

	memset(c, 0, sizeof(*c));
	if (!host || !*host)
		host = getenv("SANDVM_HOST");
	if (!host || !*host)
		host = VMCTL_DEFAULT_HOST;
	c->host = host;
	c->verbose = a->verbose;
	c->cacert = a->cacert && *a->cacert ? a->cacert : getenv("SANDVM_CACERT");
	if (c->cacert && !*c->cacert)
		c->cacert = NULL;
	r = client_parse_host(c, host);
	if (r == -EINVAL) {
		vmctl_client_close(c);
		return VMCTL_EXIT_USAGE;
	}
	if (!r && need_key)
		r = client_load_key(c, a);
	if (r) {
		if (r == -ENOMEM)
			fprintf(stderr, "vmctl: out of memory\n");
		vmctl_client_close(c);
		return VMCTL_EXIT_FAILED;
	}
	return 0;
}

void vmctl_client_close(struct vmctl_client *c)
{
	if (c->auth)
		explicit_bzero(c->auth, strlen(c->auth));
	free(c->auth);
	free(c->key_origin);
	free(c->base);
	free(c->unix_path);
	memset(c, 0, sizeof(*c));
}
