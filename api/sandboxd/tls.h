#ifndef SANDVM_API_SANDBOXD_TLS_H
#define SANDVM_API_SANDBOXD_TLS_H

/*
 * TLS 1.3 for sandboxd's TCP listeners (OpenSSL): the server context, and a
 * private CA with a server certificate made once for a first run without
 * certificates of the operator's. The connections themselves run TLS in
 * http_conn.c over memory BIOs.
 */

#include <stdbool.h>
#include <stddef.h>

struct ssl_ctx_st;

/*
 * A TLS 1.3-only server context (no earlier version, no compression, no
 * renegotiation, ALPN http/1.1) with the certificate chain and key in PEM
 * files. NULL with a message in err.
 */
struct ssl_ctx_st *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
void tls_server_ctx_free(struct ssl_ctx_st *ctx);
/*
 * A TLS 1.3-only client context that trusts the CA certificates in ca_file
 * alone (not the system's) and verifies every peer (the fleet gateway's
 * connections to workers). NULL with a message in err. Freed with
 * tls_server_ctx_free.
 */
struct ssl_ctx_st *tls_client_ctx_new(const char *ca_file, char *err, size_t errlen);

/*
 * In dir (made 0700 when missing): ca.pem and ca.key (a private CA, made
 * once), cert.pem and key.pem (a server certificate signed by it, for
 * "localhost", 127.0.0.1, ::1 and host). A server certificate that does not
 * cover host is made again with the same CA. *made says whether anything
 * was written. 0, or -errno with a message.
 */
int tls_ensure_certificates(const char *dir, const char *host, bool *made, char *err, size_t errlen);

/*
 * In dir, beside what tls_ensure_certificates keeps there (made too when
 * missing): ingress-cert.pem and ingress-key.pem, a certificate for domain
 * and *.domain signed by the same CA, made again when it covers neither.
 * Their paths go to cert and key. 0, or -errno with a message.
 */
int tls_ensure_domain_certificate(const char *dir, const char *domain, char *cert, char *key, size_t cap,
				  bool *made, char *err, size_t errlen);

/* True when the certificate in cert_file names host (an IP address or a DNS name). */
bool tls_cert_covers(const char *cert_file, const char *host);

#endif
