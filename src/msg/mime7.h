/* mime7: what a next hop without 8BITMIME or SMTPUTF8 can be given (pure):
 * the header scan that says whether a message needs SMTPUTF8, and the
 * 8-bit to 7-bit MIME converter (quoted-printable for 8-bit text parts). */
#ifndef MXD_MIME7_H
#define MXD_MIME7_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

/* ---- header scan ------------------------------------------------------- */

/* Whether a message's header (up to its first empty line) holds an octet
 * >= 0x80, fed in pieces of any size. Zero it to start (= {0}). */
struct mime7_hscan {
    uint8_t st; /* private: where in a line we are */
    bool done;  /* the empty line ending the header was seen */
    bool eight; /* an 8-bit octet in the header */
};

void mime7_hscan_feed(struct mime7_hscan *h, const char *data, size_t len);

/* True when s[0..len) has an octet >= 0x80. */
bool mime7_has_8bit(const char *s, size_t len);

/* ---- 8-bit to 7-bit conversion ----------------------------------------- */

/* Receives converted octets; data is valid only during the call. */
typedef void (*mime7_emit_fn)(void *arg, const char *data, size_t len);

struct mime7;

/* A converter for one message (RFC 5322 header, body; CRLF lines, bare LF
 * tolerated), streaming: memory is fixed (about 16 KiB) whatever the
 * message. Its output, through emit, is 7-bit: text parts labelled 8bit
 * or binary become quoted-printable (RFC 2045 6.7) with their
 * Content-Transfer-Encoding rewritten (moved to the end of the part's
 * header); multipart and message/rfc822 parts are followed inside and
 * relabelled 7bit; everything else passes unchanged. An 8-bit octet
 * anywhere else (a header, a body without MIME-Version, a non-text part,
 * a part labelled 7bit, a preamble) makes the message inconvertible: emit
 * is not called again and mime7_finish fails. Caller frees. */
struct mime7 *mime7_new(mime7_emit_fn emit, void *arg);
void mime7_free(struct mime7 *m);

/* The next octets of the message, in pieces of any size. */
void mime7_feed(struct mime7 *m, const char *data, size_t len);

/* End of the message: emits what is held. 0, or MXD_EINVAL when the
 * message cannot be converted (mime7_error says why). */
int mime7_finish(struct mime7 *m) MXD_WUR;

/* Why the message cannot be converted, or NULL. Static text. */
const char *mime7_error(const struct mime7 *m);

/* An octet >= 0x80 was fed: without one there is nothing to convert. */
bool mime7_saw_8bit(const struct mime7 *m);

#endif
