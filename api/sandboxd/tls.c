#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CA_DAYS (10 * 365)
#define CERT_DAYS 825

static void ssl_error(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
	ERR_clear_error();
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
		       unsigned int inlen, void *arg)
{
	static const unsigned char http11[] = "\x08http/1.1";

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, http11, sizeof(http11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL; /* a client that offers ALPN must offer http/1.1 */
	return SSL_TLSEXT_ERR_OK;
}

/*
 * A context that speaks TLS 1.3 only, as both ends of every connection here
 * do: no compression, no renegotiation, no session cache; options are added
 * to those. NULL, with err set, when OpenSSL refuses.
 */
static SSL_CTX *tls13_ctx_new(const SSL_METHOD *method, uint64_t options, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(method);

	if (!ctx) {
		ssl_error(err, errlen, "TLS context");
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION)) {
		ssl_error(err, errlen, "TLS 1.3");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | options);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
}

struct ssl_ctx_st *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = tls13_ctx_new(TLS_server_method(), SSL_OP_CIPHER_SERVER_PREFERENCE, err, errlen);

	if (!ctx)
		return NULL;
	/*
	 * Record buffers are kept while a connection is busy: http_conn.c gives
	 * them back (SSL_free_buffers) once it is quiet, rather than after every
	 * record (SSL_MODE_RELEASE_BUFFERS, not set). No session tickets to
	 * write or store.
	 */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		ssl_error(err, errlen, cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		ssl_error(err, errlen, key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_error(err, errlen, "the key does not match the certificate");
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct ssl_ctx_st *tls_client_ctx_new(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = tls13_ctx_new(TLS_client_method(), 0, err, errlen);

	if (!ctx)
		return NULL;
	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		ssl_error(err, errlen, ca_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

void tls_server_ctx_free(struct ssl_ctx_st *ctx)
{
	SSL_CTX_free(ctx);
}

/* ---- certificates ---- */

static bool is_ip(const char *host)
{
	ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);

	if (!ip)
		return false;
	ASN1_OCTET_STRING_free(ip);
	return true;
}

static X509 *read_cert(const char *path);

bool tls_cert_covers(const char *cert_file, const char *host)
{
	X509 *x = read_cert(cert_file);
	bool ok;

	if (!x)
		return false;
	ok = is_ip(host) ? X509_check_ip_asc(x, host, 0) == 1 : X509_check_host(x, host, 0, 0, NULL) == 1;
	X509_free(x);
	return ok;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext)
		return -1;
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

static X509 *new_cert(EVP_PKEY *key, const char *cn, int days)
{
	X509 *x = X509_new();
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	X509_NAME *name;

	if (!x || RAND_bytes(serial, sizeof(serial)) != 1)
		goto fail;
	serial[0] &= 0x7f; /* positive */
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) || !X509_set_version(x, 2) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) || !X509_set_pubkey(x, key))
		goto fail;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"sandvm", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0))
		goto fail;
	BN_free(bn);
	return x;
fail:
	BN_free(bn);
	X509_free(x);
	return NULL;
}

/* Writes a PEM file all at once (temporary file, then rename); keys 0600. */
static int write_pem(const char *dir, const char *name, X509 *cert, EVP_PKEY *key, char *err, size_t errlen)
{
	char path[4200], tmp[4300];
	FILE *f;
	int fd, ok;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, key ? 0600 : 0644);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		snprintf(err, errlen, "%s: %s", tmp, strerror(e));
		return -e;
	}
	ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ok = 0;
	fclose(f);
	if (!ok || rename(tmp, path) < 0) {
		unlink(tmp);
		snprintf(err, errlen, "cannot write %s", path);
		return -EIO;
	}
	return 0;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "re");
	EVP_PKEY *k;

	if (!f)
		return NULL;
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return k;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "re");
	X509 *x;

	if (!f)
		return NULL;
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return x;
}

static int make_ca(const char *dir, char *err, size_t errlen)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *ca = key ? new_cert(key, "sandvm sandboxd CA", CA_DAYS) : NULL;
	int r = -EIO;

	if (!ca)
		goto out;
	if (!X509_set_issuer_name(ca, X509_get_subject_name(ca)) ||
	    add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(ca, ca, NID_subject_key_identifier, "hash") < 0 || !X509_sign(ca, key, EVP_sha256()))
		goto out;
	r = write_pem(dir, "ca.key", NULL, key, err, errlen);
	if (r == 0)
		r = write_pem(dir, "ca.pem", ca, NULL, err, errlen);
out:
	if (r == -EIO && !err[0])
		ssl_error(err, errlen, "making the CA");
	X509_free(ca);
	EVP_PKEY_free(key);
	return r;
}

/* A certificate signed by dir's CA for san, with its key, as dir/prefix"cert.pem" and dir/prefix"key.pem". */
static int make_signed_cert(const char *dir, const char *prefix, const char *cn, const char *san, char *err,
			    size_t errlen);

static int make_server_cert(const char *dir, const char *host, char *err, size_t errlen)
{
	char san[600];

	snprintf(san, sizeof(san), "DNS:localhost,IP:127.0.0.1,IP:::1");
	if (host && host[0] && strcmp(host, "localhost") && strcmp(host, "127.0.0.1") && strcmp(host, "::1"))
		snprintf(san + strlen(san), sizeof(san) - strlen(san), ",%s:%s", is_ip(host) ? "IP" : "DNS", host);
	return make_signed_cert(dir, "", host && host[0] ? host : "localhost", san, err, errlen);
}

static int make_signed_cert(const char *dir, const char *prefix, const char *cn, const char *san, char *err,
			    size_t errlen)
{
	char path[4200], name[64];
	EVP_PKEY *ca_key, *key = NULL;
	X509 *ca, *x = NULL;
	int r = -EIO;

	snprintf(path, sizeof(path), "%s/ca.key", dir);
	ca_key = read_key(path);
	snprintf(path, sizeof(path), "%s/ca.pem", dir);
	ca = read_cert(path);
	if (!ca || !ca_key) {
		snprintf(err, errlen, "cannot read the CA in %s", dir);
		goto out;
	}
	key = EVP_EC_gen("P-256");
	x = key ? new_cert(key, cn, CERT_DAYS) : NULL;
	if (!x || !X509_set_issuer_name(x, X509_get_subject_name(ca)) ||
	    add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(x, ca, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(x, ca, NID_ext_key_usage, "serverAuth") < 0 ||
	    add_ext(x, ca, NID_subject_alt_name, san) < 0 ||
	    add_ext(x, ca, NID_authority_key_identifier, "keyid:always") < 0 || !X509_sign(x, ca_key, EVP_sha256()))
		goto out;
	snprintf(name, sizeof(name), "%skey.pem", prefix);
	r = write_pem(dir, name, NULL, key, err, errlen);
	snprintf(name, sizeof(name), "%scert.pem", prefix);
	if (r == 0)
		r = write_pem(dir, name, x, NULL, err, errlen);
out:
	if (r == -EIO && !err[0])
		ssl_error(err, errlen, "making the server certificate");
	X509_free(x);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	return r;
}

int tls_ensure_certificates(const char *dir, const char *host, bool *made, char *err, size_t errlen)
{
	char ca[4200], cert[4200], key[4200];
	int r;

	*made = false;
	err[0] = '\0';
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(-r));
		return r;
	}
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	if (access(ca, R_OK) < 0) {
		r = make_ca(dir, err, errlen);
		if (r < 0)
			return r;
		unlink(cert); /* signed by an earlier CA, if any */
		*made = true;
	}
	if (access(cert, R_OK) < 0 || access(key, R_OK) < 0 || !tls_cert_covers(cert, host && host[0] ? host : "localhost")) {
		r = make_server_cert(dir, host, err, errlen);
		if (r < 0)
			return r;
		*made = true;
	}
	return 0;
}

int tls_ensure_domain_certificate(const char *dir, const char *domain, char *cert, char *key, size_t cap,
				  bool *made, char *err, size_t errlen)
{
	char san[600], probe[300];
	bool ca_made = false;
	int r;

	*made = false;
	err[0] = '\0';
	if (!domain[0] || strlen(domain) > 253 || is_ip(domain) || strchr(domain, ',') || strchr(domain, '*')) {
		snprintf(err, errlen, "%s is not a DNS name", domain);
		return -EINVAL;
	}
	/* The CA (and the API listener's certificate) first, made as --listen would make them. */
	r = tls_ensure_certificates(dir, NULL, &ca_made, err, errlen);
	if (r < 0)
		return r;
	snprintf(cert, cap, "%s/ingress-cert.pem", dir);
	snprintf(key, cap, "%s/ingress-key.pem", dir);
	snprintf(probe, sizeof(probe), "label.%s", domain);
	if (!ca_made && access(cert, R_OK) == 0 && access(key, R_OK) == 0 && tls_cert_covers(cert, domain) &&
	    tls_cert_covers(cert, probe))
		return 0;
	snprintf(san, sizeof(san), "DNS:%s,DNS:*.%s", domain, domain);
	r = make_signed_cert(dir, "ingress-", domain, san, err, errlen);
	if (r == 0)
		*made = true;
	return r;
}
