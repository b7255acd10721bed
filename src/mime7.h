/* mime7: what a next hop without 8BITMIME or SMTPUTF8 can be given (pure):
 * the header scan that says whether a message needs SMTPUTF8, and the
 * 8-bit to 7-bit MIME converter (quoted-printable for 8-bit text parts). */
#ifndef MXD_MIME7_H
#define MXD_MIME7_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
