#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "parse.h"
#include "spec.h"

#define AUTH_MAX_KEYS 1024
#define AUTH_RELOAD_MS 1000
#define KEY_PREFIX "svk_"

struct auth_entry {
	uint8_t hash[32];
	char name[65];
};

struct auth_keys {
	char path[512];
	struct timespec mtime;
	off_t size;
	uint64_t checked_ms; /* when the file was last looked at (monotonic) */
	size_t n;
	struct auth_entry e[AUTH_MAX_KEYS];
};

static int hash_token(const char *token, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	return EVP_Digest(token, len, out, &n, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * The key file is read again when it changed. Unforced, it is looked at no
 * more than once per AUTH_RELOAD_MS (a removed key stops working within
 * that); a key that matches nothing forces a look, so a key just added works
 * at once, and only refused requests pay for the stat.
 */
static void reload(struct auth_keys *k, bool force)
{
	char line[256];
	struct stat st;
	uint64_t now = monotonic_ms();
	FILE *f;

	if (!force && k->checked_ms && now - k->checked_ms < AUTH_RELOAD_MS)
		return;
	k->checked_ms = now;
	if (stat(k->path, &st) < 0) {
		k->n = 0;
		return;
	}
	if (st.st_mtim.tv_sec == k->mtime.tv_sec && st.st_mtim.tv_nsec == k->mtime.tv_nsec &&
	    st.st_size == k->size)
		return;
	f = fopen(k->path, "re");
	if (!f) {
		sv_err("cannot read the API keys in %s: %s", k->path, strerror(errno));
		return;
	}
	k->mtime = st.st_mtim;
	k->size = st.st_size;
	k->n = 0;
	while (fgets(line, sizeof(line), f) && k->n < AUTH_MAX_KEYS) {
		struct auth_entry *e = &k->e[k->n];
		char hex[65], name[65];

		if (line[0] == '#' || sscanf(line, "%64s %64s", hex, name) != 2 || strlen(hex) != 64 ||
		    sv_hex_decode(hex, e->hash, 32) < 0)
			continue;
		snprintf(e->name, sizeof(e->name), "%s", name);
		k->n++;
	}
	fclose(f);
	sv_info("%zu API key%s loaded from %s", k->n, k->n == 1 ? "" : "s", k->path);
}

int auth_open(const char *path, struct auth_keys **out)
{
	struct auth_keys *k = calloc(1, sizeof(*k));

	if (!k)
		return -ENOMEM;
	snprintf(k->path, sizeof(k->path), "%s", path);
	reload(k, true);
	*out = k;
	return 0;
}

void auth_close(struct auth_keys *k)
{
	if (k)
		OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

/* Every entry is compared, so timing says nothing about which one matched. */
static const char *match(const struct auth_keys *k, const uint8_t h[32])
{
	const char *who = NULL;

	for (size_t i = 0; i < k->n; i++)
		if (CRYPTO_memcmp(h, k->e[i].hash, 32) == 0)
			who = k->e[i].name;
	return who;
}

const char *auth_check(struct auth_keys *k, const char *header, size_t len)
{
	uint8_t h[32];
	const char *who = NULL;

	reload(k, false);
	if (len < 7 || strncasecmp(header, "Bearer ", 7))
		return NULL;
	header += 7;
	len -= 7;
	while (len && (*header == ' ' || *header == '\t'))
		header++, len--;
	while (len && (header[len - 1] == ' ' || header[len - 1] == '\t'))
		len--;
	if (!len || hash_token(header, len, h) < 0)
		return NULL;
	who = match(k, h);
	if (!who) {
		/* Perhaps a key added since the last look. */
		reload(k, true);
		who = match(k, h);
	}
	return who;
}

int auth_new_key(const char *path, const char *name, char *out, size_t cap)
{
	uint8_t raw[32], h[32];
	char line[160];
	size_t o;
	int fd, r = 0;

	if (!spec_valid_name(name))
		return -EINVAL;
	if (cap < sizeof(KEY_PREFIX) + 64)
		return -ENOSPC;
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	o = (size_t)snprintf(out, cap, KEY_PREFIX);
	sv_hex_encode(raw, sizeof(raw), out + o);
	OPENSSL_cleanse(raw, sizeof(raw));
	if (hash_token(out, strlen(out), h) < 0)
		return -EIO;
	sv_hex_encode(h, sizeof(h), line);
	o = 2 * sizeof(h);
	snprintf(line + o, sizeof(line) - o, " %s\n", name);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, line, strlen(line)) != (ssize_t)strlen(line) || fsync(fd) < 0)
		r = -EIO;
	close(fd);
	return r;
}
