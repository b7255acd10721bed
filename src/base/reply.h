/* reply: parser for SMTP/LMTP server replies (RFC 5321 4.2, RFC 2034
 * enhanced codes). Pure: bytes in, one complete reply out at a time. */
#ifndef MXD_REPLY_H
#define MXD_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

#define REPLY_LINE_MAX 1000 /* longest reply line we accept, CRLF included */
#define REPLY_TEXT_MAX 2048 /* text kept per reply (all lines), truncated beyond */

struct reply {
    /* public, read-only after REPLY_DONE */
    int code;     /* 200..599 (1xx and other garbage is an error) */
    char enh[16]; /* enhanced status "x.y.z" from the first line, or "" */
    /* the text of every line without code, separator, enhanced code and
     * CRLF, lines joined with '\n'; truncated at REPLY_TEXT_MAX - 1 */
    char text[REPLY_TEXT_MAX];
    unsigned nlines;
};

struct reply_parser {
    /* private */
    char line[REPLY_LINE_MAX];
    size_t len;
    int code;
    unsigned nlines;
    size_t text_len;
    bool in_progress;
};

enum reply_result {
    REPLY_NEED = 0,  /* input consumed, reply incomplete: feed more */
    REPLY_DONE = 1,  /* *out holds a complete reply */
    REPLY_ERROR = -1 /* not a reply (bad code, inconsistent continuation,
                        line too long, bare LF ...): the peer is broken */
};

void reply_parser_init(struct reply_parser *rp);

/*
 * Consumes input from in[0..len) until one reply is complete (REPLY_DONE,
 * *consumed = octets used, the rest belongs to the next reply), the input
 * ends (REPLY_NEED, *consumed = len) or the input is garbage (REPLY_ERROR).
 * After REPLY_DONE the parser is ready for the next reply. out is written
 * only on REPLY_DONE (it may be scratch until then).
 */
enum reply_result reply_parse(struct reply_parser *rp, const char *in, size_t len, size_t *consumed,
                              struct reply *out);

/* For EHLO/LHLO replies: true when some line's first word is keyword
 * (ASCII case-insensitive); *param (may be NULL) points at the rest of that
 * line in r->text (not NUL-terminated at the line end: use *plen). */
bool reply_has_keyword(const struct reply *r, const char *keyword, const char **param,
                       size_t *plen);

/*
 * Cleans text from outside (a DNS record, a peer's reply) for one line of
 * an SMTP reply, a DSN field or a log: every control octet (CR, LF, TAB,
 * NUL, DEL, ...) becomes '?', and so does an octet >= 0x80 unless utf8 and
 * part of well-formed UTF-8; space runs shrink to one, both ends are
 * trimmed. Writes at most size - 1 octets (never part of a UTF-8 sequence)
 * and a NUL into out (size > 0); returns the length written. Pure.
 */
size_t reply_text_clean(char *out, size_t size, const char *in, size_t len, bool utf8);

/* "250 2.1.5 text" style one-line summary for logs and last_reply:
 * code, enhanced code when present, first line of text. Returns buf. */
const char *reply_summary(const struct reply *r, char *buf, size_t size);

#endif
