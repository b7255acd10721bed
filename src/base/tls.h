/* tls: GnuTLS server sessions driven by the caller's own I/O (the libuv
 * stream), for STARTTLS. */
#ifndef MXD_TLS_H
#define MXD_TLS_H

#include <sys/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

struct tls_creds;
struct tls_conn;

/* Loads the certificate chain and key (PEM; the key must match) and the
 * priority string. On failure *err (caller frees). */
int tls_creds_load(const char *cert, const char *key, const char *priority, struct tls_creds **out,
                   char **err) MXD_WUR;
/* Takes one more reference (dropped with tls_creds_free). */
void tls_creds_ref(struct tls_creds *c);
/* Drops the caller's reference; sessions still using c keep it alive. */
void tls_creds_free(struct tls_creds *c);
/* When the server certificate loaded by tls_creds_load expires (its
 * notAfter, unix seconds); 0 for NULL or client credentials. */
int64_t tls_creds_expiry(const struct tls_creds *c);

/* For mxd --check: as tls_creds_load, plus *warn (caller frees, may stay
 * NULL) when the certificate has expired or is not yet valid. */
int tls_creds_check(const char *cert, const char *key, const char *priority, char **err,
                    char **warn) MXD_WUR;

/* Client credentials for STARTTLS towards another server. With trust,
 * trust anchors from ca_file (PEM bundle) or, when ca_file is NULL, the
 * system trust store, for sessions that verify; without, none (sessions
 * that do not verify need none). Reads files: call it at start-up, not
 * per connection. On failure *err (caller frees). */
int tls_client_creds_load(bool trust, const char *ca_file, const char *priority,
                          struct tls_creds **out, char **err) MXD_WUR;

/* DANE for SMTP (RFC 7672): the DNSSEC-secure TLSA records of one next
 * hop that are usable (DANE-TA(2), DANE-EE(3)), and the names a DANE-TA
 * chain must carry. Reference-counted; tls_dane_free drops one. */
struct tls_dane;
struct tls_dane *tls_dane_new(void);
void tls_dane_ref(struct tls_dane *d);
void tls_dane_free(struct tls_dane *d);
/* Adds one TLSA record's RDATA (copied); false when it is unusable for
 * SMTP (PKIX-TA/PKIX-EE, unknown selector or matching type, bad length)
 * and was ignored. */
bool tls_dane_add_record(struct tls_dane *d, const unsigned char *rdata, size_t len);
/* A reference identifier for DANE-TA (the MX host name, the next-hop
 * domain); at most 4 are kept. */
void tls_dane_add_name(struct tls_dane *d, const char *name);
/* Usable records held (0: TLS is mandatory but cannot be authenticated). */
size_t tls_dane_usable(const struct tls_dane *d);
/* Checks a certificate chain (DER, the server's first) against d: 0, or
 * MXD_EINVAL with the reason in *why (caller frees). */
int tls_dane_verify_der(const struct tls_dane *d, const unsigned char *const *der,
                        const size_t *len, size_t n, char **why) MXD_WUR;

/* Ciphertext the session wants sent; data is only valid during the call. */
typedef void (*tls_push_cb)(void *arg, const char *data, size_t len);

/* A server session using c (borrowed; must outlive it). Never NULL. */
struct tls_conn *tls_conn_new(struct tls_creds *c, tls_push_cb push, void *arg);
void tls_conn_free(struct tls_conn *t);

/* A client session using c (borrowed). name (may be NULL): sent as SNI
 * unless it is an IP literal, and with verify the name the server's
 * certificate must carry (RFC 6125; an IP literal is matched against its
 * IP addresses); verify also checks the chain against c's trust anchors,
 * and a failure makes the handshake fail with the reason in
 * tls_conn_error. resume/resume_len (may be NULL/0): session data from
 * tls_conn_session_data of an earlier session with the same server.
 * Never NULL. */
struct tls_conn *tls_conn_new_client(struct tls_creds *c, const char *name, bool verify,
                                     const void *resume, size_t resume_len, tls_push_cb push,
                                     void *arg);

/* Client, before the handshake: the server's certificate must pass DANE
 * verification against d (takes a reference) instead of PKIX; a failure
 * fails the handshake with the reason in tls_conn_error. d without usable
 * records: no check. */
void tls_conn_set_dane(struct tls_conn *t, struct tls_dane *d);

/* True once the handshake resumed an earlier session. */
bool tls_conn_resumed(const struct tls_conn *t);

/* Client: data to resume this session later (caller frees with free()),
 * once the server has sent a ticket (TLS 1.3) or a session (TLS 1.2);
 * MXD_ENOENT before that. */
int tls_conn_session_data(const struct tls_conn *t, void **data, size_t *len) MXD_WUR;

/* Ciphertext read from the socket (copied). */
void tls_conn_feed(struct tls_conn *t, const char *data, size_t len);

/* Advances the handshake: 0 done, 1 needs more input, < 0 failed
 * (tls_conn_error says why). */
int tls_conn_handshake(struct tls_conn *t);

/* Decrypted octets into buf: > 0 how many, 0 none yet (feed more), < 0 the
 * peer closed or the session failed. Records without application data
 * (session tickets, KeyUpdate) are read past while ciphertext is left. */
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
