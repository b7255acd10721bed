/* authres: the sender-authentication header fields mxd writes and the one
 * it removes (pure: no I/O; allocates only the builder's buffer and the
 * filter's hold, both bounded). */
#ifndef MXD_AUTHRES_H
#define MXD_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

/* An Authentication-Results or From: field is judged whole, held up to this
 * much: a longer Authentication-Results field is removed, a longer From: is
 * reported (from_overlong). */
#define AUTHRES_FIELD_MAX  (32 * 1024)
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
    unsigned removed;   /* Authentication-Results fields removed */
    unsigned nfrom;     /* From: fields seen in the header */
    unsigned nreceived; /* Received: fields seen in the header (hop count) */
    bool from_overlong; /* the first From: field was longer than AUTHRES_FIELD_MAX */
    char *from;         /* the first From: field's value, NUL-terminated, or NULL (owned) */
    /* private */
    const char *authserv_id; /* borrowed */
    authres_emit_fn emit;
    void *arg;
    int state; /* where in a line */
    int kind;  /* what is done with the current field */
    bool hold_ar;
    char *field; /* the field being held (owned), at most AUTHRES_FIELD_MAX */
    size_t flen, fcap;
};

/* Starts filtering one message's content (after dot-unstuffing) for
 * authserv_id (borrowed for the filter's life). f must be zeroed or freed. */
void authres_filter_init(struct authres_filter *f, const char *authserv_id, authres_emit_fn emit,
                         void *arg);
/* Feeds the next piece of content; what survives goes to emit. */
void authres_filter_feed(struct authres_filter *f, const char *data, size_t len);
/* The content ended: emits what is still held. */
void authres_filter_end(struct authres_filter *f);
/* Frees what the filter holds (f->from included) and zeroes it. */
void authres_filter_free(struct authres_filter *f);

/* True when a header field (name, colon and value, folded or not) is an
 * Authentication-Results field whose authserv-id is authserv_id (ASCII
 * case-insensitive, as domain names are). */
bool authres_is_ours(const char *field, size_t len, const char *authserv_id);

/* The domains of the authors in a From: value (RFC 5322 3.6.2 mailbox-list;
 * the members of a group too), lower-cased, without a final dot, each once,
 * into out[0..max). Returns how many (0: none, e.g. only a group name,
 * domain literals or junk), or -1 when there are more than max distinct
 * domains or one is AUTHRES_DOMAIN_MAX long or longer. */
int authres_from_domains(const char *value, char (*out)[AUTHRES_DOMAIN_MAX], size_t max);

#endif
