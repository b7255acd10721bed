/* authres: the sender-authentication header fields mxd writes and the one
 * it removes (pure: no I/O, no allocation beyond the builder's buffer). */
#ifndef MXD_AUTHRES_H
#define MXD_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define AUTHRES_FIELD_MAX  4096 /* a header field is judged on at most this much */
#define AUTHRES_DOMAIN_MAX 256

/* ---- Authentication-Results (RFC 8601) --------------------------------- */

struct authres {
    /* private */
    char *buf; /* owned; "Authentication-Results: id" and the resinfos */
    size_t len, cap;
    unsigned nresults;
};

/* A property of a result: "smtp.mailfrom", "header.d", ... and its value
 * (written as a token, an addr-spec or a quoted-string, whichever fits). */
struct authres_prop {
    const char *name;
    const char *value;
};

/* Starts a field for authserv_id (our hostname). */
void authres_init(struct authres *ar, const char *authserv_id);
/* Appends "method=result (comment) props..."; comment may be NULL; peer
 * text in comment and values is escaped so it cannot break the field. */
void authres_add(struct authres *ar, const char *method, const char *result, const char *comment,
                 const struct authres_prop *props, size_t nprops);
/* The finished field, CRLF-terminated and folded ("; none" without
 * results); *len its length. Owned by ar until authres_free. */
const char *authres_finish(struct authres *ar, size_t *len);
void authres_free(struct authres *ar);

/*
 * Writes a Received-SPF field (RFC 7208 9.1), CRLF-terminated, into buf:
 * result, a comment, then client-ip, envelope-from, helo, receiver and
 * identity ("mailfrom" or "helo"). Returns its length, 0 when it does not fit.
 */
size_t authres_received_spf(char *buf, size_t size, const char *result, const char *comment,
                            const char *client_ip, const char *envelope_from, const char *helo,
                            const char *receiver, const char *identity);

/* ---- the header filter (RFC 8601 section 5) ---------------------------- */

/* Receives the message with our Authentication-Results fields removed. */
typedef void (*authres_emit_fn)(void *arg, const char *data, size_t len);

struct authres_filter {
    /* read-only after authres_filter_end */
    unsigned removed;             /* fields removed */
    unsigned nfrom;               /* From: fields seen in the header */
    char from[AUTHRES_FIELD_MAX]; /* the first From: field's value, NUL-terminated */
    /* private */
    const char *authserv_id; /* borrowed */
    authres_emit_fn emit;
    void *arg;
    int state;
    bool dropping; /* the current field is ours: drop its rest */
    bool passing;  /* the current field was too long: emitted as it comes */
    size_t flen;
    char field[AUTHRES_FIELD_MAX];
};

/* Starts filtering one message's content (after dot-unstuffing) for
 * authserv_id (borrowed for the filter's life). */
void authres_filter_init(struct authres_filter *f, const char *authserv_id, authres_emit_fn emit,
                         void *arg);
/* Feeds the next piece of content; what survives goes to emit. */
void authres_filter_feed(struct authres_filter *f, const char *data, size_t len);
/* The content ended: emits what is still held. */
void authres_filter_end(struct authres_filter *f);

/* True when a header field (name, colon and value, folded or not) is an
 * Authentication-Results field whose authserv-id is authserv_id (ASCII
 * case-insensitive, as domain names are). */
bool authres_is_ours(const char *field, size_t len, const char *authserv_id);

/* The domain of the first address in a From: value (RFC 5322 3.6.2),
 * lower-cased, into out; false when there is none (group, literal, junk). */
bool authres_from_domain(const char *value, char *out, size_t size);

#endif
