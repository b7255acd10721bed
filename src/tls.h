/* tls: GnuTLS server sessions driven by the caller's own I/O (the libuv
 * stream), for STARTTLS. */
#ifndef MXD_TLS_H
#define MXD_TLS_H

#include <sys/types.h>

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct tls_creds;
struct tls_conn;

/* Loads the certificate chain and key (PEM; the key must match) and the
 * priority string. On failure *err (caller frees). */
int tls_creds_load(const char *cert, const char *key, const char *priority, struct tls_creds **out,
                   char **err) MXD_WUR;
/* Drops the caller's reference; sessions still using c keep it alive. */
void tls_creds_free(struct tls_creds *c);

/* For mxd --check: as tls_creds_load, plus *warn (caller frees, may stay
 * NULL) when the certificate has expired or is not yet valid. */
int tls_creds_check(const char *cert, const char *key, const char *priority, char **err,
                    char **warn) MXD_WUR;

/* Ciphertext the session wants sent; data is only valid during the call. */
typedef void (*tls_push_cb)(void *arg, const char *data, size_t len);

/* A server session using c (borrowed; must outlive it). Never NULL. */
struct tls_conn *tls_conn_new(struct tls_creds *c, tls_push_cb push, void *arg);
void tls_conn_free(struct tls_conn *t);

/* Ciphertext read from the socket (copied). */
void tls_conn_feed(struct tls_conn *t, const char *data, size_t len);

/* Advances the handshake: 0 done, 1 needs more input, < 0 failed
 * (tls_conn_error says why). */
int tls_conn_handshake(struct tls_conn *t);

/* Decrypted octets into buf: > 0 how many, 0 none yet (feed more), < 0 the
 * peer closed or the session failed. */
ssize_t tls_conn_read(struct tls_conn *t, char *buf, size_t len);

/* True when decrypted data or unprocessed ciphertext is waiting (read
 * again before waiting for the socket). */
bool tls_conn_pending(const struct tls_conn *t);

/* Encrypts and pushes all of data. 0 or < 0. */
int tls_conn_write(struct tls_conn *t, const char *data, size_t len) MXD_WUR;

/* Ciphertext fed and not yet processed, in octets. */
size_t tls_conn_buffered(const struct tls_conn *t);

/* Sends close_notify (RFC 8446 6.1) through the push callback. */
void tls_conn_bye(struct tls_conn *t);

const char *tls_conn_error(const struct tls_conn *t);

/* "TLS1.3 AES-256-GCM" style summary for logs and Received:. */
void tls_conn_describe(const struct tls_conn *t, char *buf, size_t size);

#endif
