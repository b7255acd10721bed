/* reply: parser for SMTP/LMTP server replies (RFC 5321 4.2, RFC 2034/3463
 * enhanced status codes). Owns no memory: the caller's struct reply_parser
 * holds the line being read, and the caller's struct reply is filled in
 * place (it is scratch while a reply is incomplete, so pass the same one
 * until REPLY_DONE). Any thread, pure: no I/O, clock or allocation.
 *
 * Error contract: REPLY_ERROR for anything that is not a well-formed reply
 * (code outside 2xx-5xx, continuation lines with another code, bare CR or
 * LF, NUL, a line over REPLY_LINE_MAX); the parser is then reset, but the
 * peer is broken and the caller should stop talking to it.
 *
 * It does not interpret codes (that is the client's job) and does not
 * unescape or validate the text beyond the above; text past REPLY_TEXT_MAX
 * is dropped silently. */
#include "base/reply.h"

#include <stdio.h>
#include <string.h>

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

void
reply_parser_init(struct reply_parser *rp)
{
    memset(rp, 0, sizeof(*rp));
}

/* Length of the run of 1-3 digits at s[0..len), or 0 when there is none or
 * it is longer (RFC 3463 2: subject and detail are 1*3digit). */
static size_t
enh_digits(const char *s, size_t len)
{
    size_t n = 0;

    while (n < len && is_digit(s[n]))
        n++;
    return n >= 1 && n <= 3 ? n : 0;
}

/* Parses an enhanced status code "class.subject.detail" at the start of
 * the text s[0..len) of a reply with this code (RFC 3463 2: the class is
 * 2, 4 or 5 and must agree with the reply, RFC 2034 4). It must be
 * followed by a space or the end of the text. Copies it to enh and returns
 * its length, or returns 0 (s is then ordinary text). */
static size_t
enh_parse(const char *s, size_t len, int code, char *enh, size_t enhsize)
{
    size_t i = 1;
    char cls = (char)('0' + code / 100);

    if (len < 5 || s[0] != cls || (cls != '2' && cls != '4' && cls != '5'))
        return 0;
    for (int part = 0; part < 2; part++) {
        size_t n;

        if (i >= len || s[i] != '.')
            return 0;
        i++;
        n = enh_digits(s + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    if ((i < len && s[i] != ' ') || i >= enhsize)
        return 0;
    memcpy(enh, s, i);
    enh[i] = '\0';
    return i;
}

/* Appends s[0..len) to out->text, keeping it NUL-terminated and dropping
 * whatever does not fit. */
static void
text_append(struct reply_parser *rp, struct reply *out, const char *s, size_t len)
{
    size_t room = REPLY_TEXT_MAX - 1 - rp->text_len;

    if (len > room)
        len = room;
    memcpy(out->text + rp->text_len, s, len);
    rp->text_len += len;
    out->text[rp->text_len] = '\0';
}

/* Removes the enhanced code (and one space after it) from the start of a
 * line's text: parsed on the first line, matched on the following ones. */
static size_t
enh_strip(struct reply_parser *rp, struct reply *out, const char *text, size_t tlen)
{
    size_t n;

    if (rp->nlines == 0) {
        out->enh[0] = '\0';
        n = enh_parse(text, tlen, rp->code, out->enh, sizeof(out->enh));
    } else {
        n = strlen(out->enh);
        if (n == 0 || tlen < n || memcmp(text, out->enh, n) != 0 || (tlen > n && text[n] != ' '))
            n = 0;
    }
    if (n > 0 && n < tlen)
        n++; /* the separating space */
    return n;
}

/* Handles the complete line in rp->line[0..rp->len) (CRLF removed). Sets
 * *final for the last line of the reply. */
static enum reply_result
line_done(struct reply_parser *rp, struct reply *out, bool *final)
{
    const char *l = rp->line;
    size_t len = rp->len;
    const char *text = l + 4;
    size_t tlen = len > 4 ? len - 4 : 0;
    int code;
    size_t skip;

    /* RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39; we are lenient
     * about the second digit, strict about the first. line_put() checked
     * this already; it is repeated here for clarity's sake. */
    if (len < 3 || l[0] < '2' || l[0] > '5' || !is_digit(l[1]) || !is_digit(l[2]))
        return REPLY_ERROR;
    code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (rp->nlines > 0 && code != rp->code)
        return REPLY_ERROR; /* RFC 5321 4.2.1: every line has the same code */
    if (len == 3 || l[3] == ' ')
        *final = true;
    else if (l[3] == '-')
        *final = false;
    else
        return REPLY_ERROR;
    if (rp->nlines == 0) {
        rp->code = code;
        rp->text_len = 0;
        out->text[0] = '\0';
    } else {
        text_append(rp, out, "\n", 1);
    }
    skip = enh_strip(rp, out, text, tlen);
    text_append(rp, out, text + skip, tlen - skip);
    rp->nlines++;
    return REPLY_NEED;
}

/* Whether c may be digit pos (0..2) of the code: on a continuation line
 * it must repeat the first line's code. */
static bool
code_digit_ok(const struct reply_parser *rp, size_t pos, char c)
{
    static const int div[] = {100, 10, 1};

    if (rp->nlines > 0)
        return c == '0' + rp->code / div[pos] % 10;
    return pos == 0 ? c >= '2' && c <= '5' : is_digit(c);
}

/* Takes one octet that is not LF into the line buffer. The code and the
 * separator are checked as they arrive, so garbage (an HTTP or SSH server
 * on the LMTP port) is refused at once rather than after 1000 octets. */
static enum reply_result
line_put(struct reply_parser *rp, char c)
{
    size_t n = rp->len;

    if (n > 0 && rp->line[n - 1] == '\r')
        return REPLY_ERROR; /* bare CR */
    if (c == '\0' || n + 2 > REPLY_LINE_MAX)
        return REPLY_ERROR; /* no room left for this octet and the LF */
    if (n < 3 && !code_digit_ok(rp, n, c))
        return REPLY_ERROR;
    if (n == 3 && c != ' ' && c != '-' && c != '\r')
        return REPLY_ERROR;
    rp->line[rp->len++] = c;
    return REPLY_NEED;
}

enum reply_result
reply_parse(struct reply_parser *rp, const char *in, size_t len, size_t *consumed,
            struct reply *out)
{
    for (size_t i = 0; i < len; i++) {
        enum reply_result r;
        bool final = false;

        rp->in_progress = true;
        if (in[i] != '\n') {
            r = line_put(rp, in[i]);
        } else if (rp->len == 0 || rp->line[rp->len - 1] != '\r') {
            r = REPLY_ERROR; /* bare LF */
        } else {
            rp->len--;
            r = line_done(rp, out, &final);
            rp->len = 0;
        }
        if (r == REPLY_ERROR || final) {
            *consumed = i + 1;
            if (r != REPLY_ERROR) {
                out->code = rp->code;
                out->nlines = rp->nlines;
                r = REPLY_DONE;
            }
            reply_parser_init(rp);
            return r;
        }
    }
    *consumed = len;
    return REPLY_NEED;
}

bool
reply_has_keyword(const struct reply *r, const char *keyword, const char **param, size_t *plen)
{
    size_t klen = strlen(keyword);
    /* The first line is the greeting ("250-host.example"), not a keyword. */
    const char *line = strchr(r->text, '\n');

    while (line != NULL && klen > 0) {
        const char *end;
        size_t llen, w;

        line++;
        end = strchr(line, '\n');
        llen = end != NULL ? (size_t)(end - line) : strlen(line);
        for (w = 0; w < llen && line[w] != ' '; w++)
            ;
        if (w == klen && ascii_ncasecmp(line, keyword, klen) == 0) {
            while (w < llen && line[w] == ' ')
                w++;
            if (param != NULL)
                *param = line + w;
            if (plen != NULL)
                *plen = llen - w;
            return true;
        }
        line = end;
    }
    return false;
}

size_t
reply_text_clean(char *out, size_t size, const char *in, size_t len, bool utf8)
{
    size_t o = 0, i = 0;

    while (i < len) {
        unsigned char c = (unsigned char)in[i];
        size_t k = c >= 0x80 && utf8 ? utf8_char_len((const unsigned char *)in + i, len - i) : 0;

        if (k == 0) {
            k = 1;
            if (c < 0x20 || c >= 0x7f)
                c = '?';
        }
        if (o + k >= size)
            break;
        if (k > 1)
            memcpy(out + o, in + i, k);
        else if (c != ' ' || (o > 0 && out[o - 1] != ' '))
            out[o] = (char)c;
        else
            k = 0; /* a space that is dropped */
        o += k;
        i += k > 0 ? k : 1;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    return o;
}

const char *
reply_summary(const struct reply *r, char *buf, size_t size)
{
    const char *nl = strchr(r->text, '\n');
    size_t tlen = nl != NULL ? (size_t)(nl - r->text) : strlen(r->text);
    size_t pos;

    if (size == 0)
        return buf;
    /* The code and the enhanced code are digits and dots (reply_parse). */
    snprintf(buf, size, "%03d%s%s", r->code, r->enh[0] != '\0' ? " " : "", r->enh);
    pos = strlen(buf);
    if (tlen > 0 && pos + 1 < size) {
        buf[pos] = ' ';
        if (reply_text_clean(buf + pos + 1, size - pos - 1, r->text, tlen, true) == 0)
            buf[pos] = '\0';
    }
    return buf;
}
