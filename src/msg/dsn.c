/* dsn: composes one RFC 3464 delivery status notification per call into a
 * new buffer the caller owns; owns nothing between calls. Any thread, pure:
 * no I/O, no clock (times come in struct dsn_input), no locale (day and
 * month names are ours, not strftime's).
 *
 * Error contract: every input is checked before anything is allocated;
 * MXD_EINVAL for a missing field, no recipients, an empty sender (no DSN
 * for <>), a malformed status, a single-line field holding a control
 * character or over its length limit, non-ASCII in an address or the
 * sender without smtputf8 (it could not have arrived that way), or a time
 * gmtime_r cannot convert. Diagnostics are peer text: they are never
 * refused, only cleaned (controls become '?', and so does non-ASCII unless
 * smtputf8, runs of spaces shrink to one) and folded. The original headers
 * are copied verbatim except that a bare CR or LF becomes CRLF and a line
 * over 998 octets is broken, so every output line obeys RFC 5322 2.1.1.
 * The output is NUL-terminated too (not counted in *outlen).
 *
 * It deliberately does not: decide whether a DSN is due (the caller asks
 * dsn_suppressed and reads NOTIFY), choose between headers and the whole
 * message (the caller passes one or the other, with full), or RFC
 * 2047-encode anything. */
#include "msg/dsn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/reply.h"

#define DSN_LINE_MAX  998 /* RFC 5322 2.1.1, without CRLF */
#define DSN_LINE_SOFT 78  /* RFC 5322 2.1.1 SHOULD */
#define DSN_ADDR_MAX  512 /* twice RFC 5321 4.5.3.1.3's path, for UTF-8 */
#define DSN_HOST_MAX  255 /* RFC 1035 2.3.4, plus room for a literal */
#define DSN_QID_MAX   40  /* keeps the boundary within RFC 2046's 70 */
#define DSN_DATE_MAX  48
#define DSN_BPREFIX   "=_mxd_"

struct dsn_buf {
    char *p;
    size_t len;
    size_t cap;
};

static void
buf_put(struct dsn_buf *b, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 1024;

        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                mxd_panic("dsn: buffer size overflow");
            cap *= 2;
        }
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void
buf_puts(struct dsn_buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_printf(struct dsn_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
buf_printf(struct dsn_buf *b, const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        mxd_panic("dsn: vsnprintf failed");
    s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_put(b, s, (size_t)n);
    free(s);
}

/* A single-line field: 1..max octets, no controls, spaces only if allowed,
 * octets >= 0x80 only as UTF-8 and only if utf8. */
static bool
field_ok(const char *s, size_t max, bool space, bool utf8)
{
    size_t n, i, k;

    if (s == NULL || (n = strlen(s)) == 0 || n > max)
        return false;
    for (i = 0; i < n; i += k) {
        unsigned char c = (unsigned char)s[i];

        k = 1;
        if (c >= 0x80) {
            k = utf8 ? utf8_char_len((const unsigned char *)s + i, n - i) : 0;
            if (k == 0)
                return false;
        } else if (c < 0x20 || c == 0x7f || (c == ' ' && !space)) {
            return false;
        }
    }
    return true;
}

/* RFC 3463 2: class "." subject "." detail, class 2, 4 or 5, 1-3 digits. */
static bool
status_ok(const char *s)
{
    size_t part, digits;

    if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    s += 2;
    for (part = 0; part < 2; part++) {
        for (digits = 0; s[digits] >= '0' && s[digits] <= '9'; digits++)
            ;
        if (digits == 0 || digits > 3)
            return false;
        s += digits;
        if (part == 0 && *s++ != '.')
            return false;
    }
    return *s == '\0';
}

/* The queue id goes into Message-ID (RFC 5322 3.6.4 dot-atom-text) and the
 * boundary (RFC 2046 5.1.1 bchars): letters, digits, '-', '.', '_'. */
static bool
qid_ok(const char *s)
{
    size_t i;

    if (!field_ok(s, DSN_QID_MAX, false, false))
        return false;
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return false;
    }
    return s[0] != '.' && s[i - 1] != '.' && strstr(s, "..") == NULL;
}

static bool
rcpt_ok(const struct dsn_rcpt *r, bool utf8)
{
    if (!field_ok(r->address, DSN_ADDR_MAX, true, utf8) || !status_ok(r->status) ||
        r->diagnostic == NULL)
        return false;
    if (r->action != NULL && strcmp(r->action, "failed") != 0 &&
        strcmp(r->action, "delayed") != 0 && strcmp(r->action, "delivered") != 0 &&
        strcmp(r->action, "relayed") != 0)
        return false;
    if (r->orcpt != NULL && (!field_ok(r->orcpt, DSN_ADDR_MAX + 40, true, true) ||
                             strchr(r->orcpt, ';') == NULL || r->orcpt[0] == ';'))
        return false;
    return r->remote_mta == NULL || r->remote_mta[0] == '\0' ||
           field_ok(r->remote_mta, DSN_HOST_MAX, false, false);
}

static bool
input_ok(const struct dsn_input *in)
{
    size_t i;

    if (in == NULL || in->rcpts == NULL || in->nrcpts == 0 || in->headers == NULL)
        return false;
    if (!field_ok(in->reporting_mta, DSN_HOST_MAX, false, false) ||
        !field_ok(in->qid, DSN_QID_MAX, false, false) || !qid_ok(in->new_qid) ||
        !field_ok(in->sender, DSN_ADDR_MAX, true, in->smtputf8))
        return false;
    if (in->envid != NULL && !field_ok(in->envid, 100, true, false))
        return false;
    if ((unsigned)in->kind > DSN_KIND_SUCCESS)
        return false;
    for (i = 0; i < in->nrcpts; i++)
        if (!rcpt_ok(&in->rcpts[i], in->smtputf8))
            return false;
    return true;
}

/* RFC 5322 3.3 date-time in UTC; 0 or MXD_EINVAL. */
static int
fmt_date(time_t t, char out[DSN_DATE_MAX])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    int n;

    /* RFC 5322 3.3: the year has at least four digits, no sign */
    if (gmtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
        tm.tm_mon > 11 || (long long)tm.tm_year + 1900 < 0)
        return MXD_EINVAL;
    n = snprintf(out, DSN_DATE_MAX, "%s, %02d %s %04lld %02d:%02d:%02d +0000", days[tm.tm_wday],
                 tm.tm_mday, months[tm.tm_mon], (long long)tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
    if (n < 0 || n >= DSN_DATE_MAX)
        return MXD_EINVAL;
    return 0;
}

/* Peer text for one field, cleaned by reply_text_clean (controls and bad
 * octets as '?', one space at most, ends trimmed) so that folding never
 * leaves a whitespace-only line (RFC 5322 3.2.2). Caller frees. */
static char *
clean_text(const char *s, bool utf8)
{
    size_t n = strlen(s);
    char *t = xmalloc(n + 1);

    reply_text_clean(t, n + 1, s, n, utf8);
    return t;
}

/* Where to fold s[0..n) on a line already holding col octets: before the
 * last space that keeps the line within 78 octets, else the first that
 * keeps it within 998; 0 when there is none. */
static size_t
fold_point(const char *s, size_t n, size_t col)
{
    size_t soft = col < DSN_LINE_SOFT ? DSN_LINE_SOFT - col : 0;
    size_t hard = DSN_LINE_MAX - col;
    size_t i;

    if (n == 0)
        return 0;
    for (i = soft < n ? soft : n - 1; i > 0; i--)
        if (s[i] == ' ')
            return i;
    for (i = soft + 1; i < n && i <= hard; i++)
        if (s[i] == ' ')
            return i;
    return 0;
}

/* Appends s[0..n) (no CR or LF) and CRLF to a line already holding col
 * (< 998) octets. RFC 5322 2.2.3: folding puts CRLF before a space, so
 * unfolding gives the text back; a run with no space at all is cut at 998
 * octets, not inside a UTF-8 sequence, with CRLF SP. */
static void
buf_fold(struct dsn_buf *b, size_t col, const char *s, size_t n)
{
    while (col + n > DSN_LINE_SOFT) {
        size_t cut = fold_point(s, n, col);

        if (cut > 0) {
            buf_put(b, s, cut);
            buf_puts(b, "\r\n");
            col = 0;
        } else if (col + n <= DSN_LINE_MAX) {
            break;
        } else {
            cut = DSN_LINE_MAX - col;
            while (cut > 1 && ((unsigned char)s[cut] & 0xc0) == 0x80)
                cut--;
            buf_put(b, s, cut);
            buf_puts(b, "\r\n ");
            col = 1;
        }
        s += cut;
        n -= cut;
    }
    buf_put(b, s, n);
    buf_puts(b, "\r\n");
}

/* Part 1 (RFC 6522 3): what happened, for a person. */
static void
put_human(struct dsn_buf *b, const struct dsn_input *in)
{
    size_t i;

    buf_printf(b, "This is the mail delivery system at %s.\r\n\r\n", in->reporting_mta);
    if (in->kind == DSN_KIND_DELAY)
        buf_puts(b, "Your message could not be delivered yet to one or more of its\r\n"
                    "recipients. It is still being retried; you need not send it again.\r\n"
                    "Each recipient is listed below with the last reason. A delivery\r\n"
                    "report and the headers of your message are attached.\r\n\r\n");
    else if (in->kind == DSN_KIND_SUCCESS)
        buf_puts(b, "Your message was delivered to the recipients listed below, or\r\n"
                    "handed on to a system that does not report delivery (relayed), as\r\n"
                    "you asked. A delivery report and its headers are attached.\r\n\r\n");
    else
        buf_puts(b, "Your message could not be delivered to one or more of its recipients.\r\n"
                    "Delivery to them has been given up; it will not be tried again.\r\n"
                    "Each recipient is listed below with the reason. A delivery report\r\n"
                    "and the headers of your message are attached.\r\n\r\n");
    buf_printf(b, "The message had queue id %s here.\r\n\r\n", in->qid);
    for (i = 0; i < in->nrcpts; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        char *diag = clean_text(r->diagnostic, in->smtputf8);
        const char *why = diag[0] != '\0' ? diag : "(no reason given)";
        char *line;

        if (r->remote_mta != NULL && r->remote_mta[0] != '\0')
            line = xasprintf("host %s said: %s", r->remote_mta, why);
        else
            line = xasprintf("%s", why);
        buf_printf(b, "<%s>: ", r->address);
        buf_fold(b, strlen(r->address) + 4, line, strlen(line));
        free(line);
        free(diag);
    }
}

/* RFC 6533 3: a non-ASCII address is of type utf-8, not rfc822. */
static bool
has_8bit(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

/* RFC 3464 2.3.5: the MTA-name of "Remote-MTA: dns; ..." is a host, and
 * remote_mta is an endpoint as configured: "host:port", "[v6]:port",
 * "host" or "unix:/path". Writes the host into buf; false for a unix
 * socket (no name to give) or an empty one. */
static bool
mta_host(const char *relay, char *buf, size_t size)
{
    const char *end, *colon;
    size_t len;

    if (relay == NULL || relay[0] == '\0' || strncmp(relay, "unix:", 5) == 0)
        return false;
    if (relay[0] == '[' && (end = strchr(relay, ']')) != NULL) {
        relay++;
    } else {
        end = relay + strlen(relay);
        colon = strchr(relay, ':');
        /* one colon, then digits only: a port */
        if (colon != NULL && strchr(colon + 1, ':') == NULL && colon[1] != '\0' &&
            strspn(colon + 1, "0123456789") == strlen(colon + 1))
            end = colon;
    }
    len = (size_t)(end - relay);
    if (len == 0 || len >= size)
        return false;
    memcpy(buf, relay, len);
    buf[len] = '\0';
    return true;
}

/* Part 2: RFC 3464 2.2 per-message fields, then one 2.3 group per
 * recipient, each after a blank line. */
static void
put_status(struct dsn_buf *b, const struct dsn_input *in, const char *arrival)
{
    size_t i;

    /* RFC 3464 2.2.1: the envelope id first */
    if (in->envid != NULL && in->envid[0] != '\0')
        buf_printf(b, "Original-Envelope-Id: %s\r\n", in->envid);
    buf_printf(b, "Reporting-MTA: dns; %s\r\n", in->reporting_mta);
    buf_printf(b, "Arrival-Date: %s\r\n", arrival);
    for (i = 0; i < in->nrcpts; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        char *diag = clean_text(r->diagnostic, in->smtputf8);
        char host[DSN_HOST_MAX + 1];

        buf_puts(b, "\r\n");
        /* RFC 3464 2.3.1: "type; address"; raw UTF-8 (RFC 6533 utf-8
         * type) only in a message/global-delivery-status */
        if (r->orcpt != NULL && (in->smtputf8 || !has_8bit(r->orcpt))) {
            const char *semi = strchr(r->orcpt, ';');

            buf_printf(b, "Original-Recipient: %.*s; %s\r\n", (int)(semi - r->orcpt), r->orcpt,
                       semi + 1);
        }
        buf_printf(b, "Final-Recipient: %s; %s\r\n", has_8bit(r->address) ? "utf-8" : "rfc822",
                   r->address);
        buf_printf(b, "Action: %s\r\n", r->action != NULL ? r->action : "failed");
        buf_printf(b, "Status: %s\r\n", r->status);
        if (mta_host(r->remote_mta, host, sizeof(host)))
            buf_printf(b, "Remote-MTA: dns; %s\r\n", host);
        if (diag[0] != '\0') {
            buf_puts(b, "Diagnostic-Code: smtp; ");
            buf_fold(b, strlen("Diagnostic-Code: smtp; "), diag, strlen(diag));
        }
        free(diag);
    }
}

/* Part 3: the original header block, each line ended by CRLF; a bare CR
 * or LF ends a line too, and a line over 998 octets is broken. */
static void
put_orig(struct dsn_buf *b, const char *s, size_t n)
{
    size_t i = 0, col = 0;

    while (i < n) {
        size_t span = 0, room = DSN_LINE_MAX - col;

        while (i + span < n && span < room && s[i + span] != '\r' && s[i + span] != '\n')
            span++;
        if (span == room && i + span < n && s[i + span] != '\r' && s[i + span] != '\n') {
            while (span > 1 && ((unsigned char)s[i + span] & 0xc0) == 0x80)
                span--;
            buf_put(b, s + i, span);
            buf_puts(b, "\r\n ");
            col = 1;
            i += span;
            continue;
        }
        buf_put(b, s + i, span);
        col += span;
        i += span;
        if (i < n) {
            buf_puts(b, "\r\n");
            col = 0;
            i += s[i] == '\r' && i + 1 < n && s[i + 1] == '\n' ? 2 : 1;
        }
    }
    if (col > 0)
        buf_puts(b, "\r\n");
}

/* Each occurrence of prefix in s: counted, and when used is given, the
 * variant number v it is followed by ("_v_", v <= max) is marked. */
static size_t
boundary_hits(const struct dsn_buf *s, const char *prefix, bool *used, size_t max)
{
    size_t plen = strlen(prefix), hits = 0, i, j, v;

    for (i = 0; s->len >= plen && i <= s->len - plen; i++) {
        if (s->p[i] != prefix[0] || memcmp(s->p + i, prefix, plen) != 0)
            continue;
        hits++;
        j = i + plen;
        if (used == NULL || j >= s->len || s->p[j] != '_')
            continue;
        for (v = 0, j++; j < s->len && s->p[j] >= '0' && s->p[j] <= '9' && v <= max; j++)
            v = v * 10 + (size_t)(s->p[j] - '0');
        if (v <= max && j < s->len && s->p[j] == '_')
            used[v] = true;
    }
    return hits;
}

/* RFC 2046 5.1.1: the boundary must not occur in any part. The first
 * choice is DSN_BPREFIX + new_qid; if the parts hold it h times, one of
 * the variants "_0_" .. "_h_" appended is free (each occurrence rules out
 * at most one), and one pass finds it. Caller frees. */
static char *
pick_boundary(const struct dsn_buf parts[3], const char *new_qid)
{
    char *prefix = xasprintf(DSN_BPREFIX "%s", new_qid);
    char *boundary;
    size_t hits = 0, i, v;
    bool *used;

    for (i = 0; i < 3; i++)
        hits += boundary_hits(&parts[i], prefix, NULL, 0);
    if (hits == 0)
        return prefix;
    used = xcalloc(hits + 1, sizeof(*used));
    for (i = 0; i < 3; i++)
        boundary_hits(&parts[i], prefix, used, hits);
    for (v = 0; used[v]; v++)
        ;
    boundary = xasprintf("%s_%zu_", prefix, v);
    free(used);
    free(prefix);
    return boundary;
}

/* The DSN's own header (RFC 5322 3.6, RFC 3834 5 Auto-Submitted). */
static void
put_head(struct dsn_buf *b, const struct dsn_input *in, const char *date, const char *boundary)
{
    static const char *const subjects[] = {"Undelivered Mail Returned to Sender",
                                           "Delayed Mail (still being retried)",
                                           "Successful Mail Delivery Report"};

    buf_printf(b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", in->reporting_mta);
    buf_printf(b, "To: <%s>\r\n", in->sender);
    buf_printf(b, "Subject: %s\r\n", subjects[in->kind]);
    buf_printf(b, "Date: %s\r\n", date);
    buf_printf(b, "Message-ID: <%s@%s>\r\n", in->new_qid, in->reporting_mta);
    buf_puts(b, "Auto-Submitted: auto-replied\r\n");
    buf_puts(b, "MIME-Version: 1.0\r\n");
    buf_puts(b, "Content-Type: multipart/report; report-type=delivery-status;\r\n");
    buf_printf(b, "\tboundary=\"%s\"\r\n\r\n", boundary);
    buf_puts(b, "This is a MIME-encapsulated message.\r\n");
}

/* RFC 6522 3 order; RFC 6533 3 and 6 types when the original was SMTPUTF8.
 * Each part ends in CRLF, so "\r\n--" starts the next delimiter line. */
static void
put_parts(struct dsn_buf *b, const struct dsn_buf parts[3], const char *boundary, bool utf8,
          bool full, enum dsn_kind kind)
{
    const char *descr[3] = {"Notification", "Delivery report", "Undelivered Message Headers"};
    const char *types[3] = {"text/plain; charset=us-ascii", "message/delivery-status",
                            "text/rfc822-headers"};
    size_t i;

    if (kind != DSN_KIND_FAILURE)
        descr[2] = "Message Headers";
    if (full) { /* RFC 3461 4.3 RET=FULL, RFC 6522 3 */
        descr[2] = "Undelivered Message";
        types[2] = "message/rfc822";
    }
    if (utf8) {
        types[0] = "text/plain; charset=utf-8";
        types[1] = "message/global-delivery-status";
        types[2] = full ? "message/global" : "message/global-headers";
    }
    for (i = 0; i < 3; i++) {
        buf_printf(b, "\r\n--%s\r\n", boundary);
        buf_printf(b, "Content-Description: %s\r\n", descr[i]);
        buf_printf(b, "Content-Type: %s\r\n", types[i]);
        if (utf8)
            buf_puts(b, "Content-Transfer-Encoding: 8bit\r\n");
        buf_puts(b, "\r\n");
        buf_put(b, parts[i].p, parts[i].len);
    }
    buf_printf(b, "\r\n--%s--\r\n", boundary);
}

int
dsn_compose(const struct dsn_input *in, char **out, size_t *outlen)
{
    struct dsn_buf parts[3], msg;
    char date[DSN_DATE_MAX], arrival[DSN_DATE_MAX];
    char *boundary;
    size_t i;

    if (out == NULL || outlen == NULL || !input_ok(in))
        return MXD_EINVAL;
    if (fmt_date(in->now, date) != 0 || fmt_date(in->arrival, arrival) != 0)
        return MXD_EINVAL;
    memset(parts, 0, sizeof(parts));
    memset(&msg, 0, sizeof(msg));
    put_human(&parts[0], in);
    put_status(&parts[1], in, arrival);
    put_orig(&parts[2], in->headers, in->headers_len);
    boundary = pick_boundary(parts, in->new_qid);
    put_head(&msg, in, date, boundary);
    put_parts(&msg, parts, boundary, in->smtputf8, in->full, in->kind);
    buf_put(&msg, "", 1);
    free(boundary);
    for (i = 0; i < 3; i++)
        free(parts[i].p);
    *out = msg.p;
    *outlen = msg.len - 1;
    return 0;
}

bool
dsn_suppressed(const char *sender)
{
    /* RFC 5321 6.1 / RFC 3461 6.2: never a DSN for the null reverse-path. */
    return sender == NULL || sender[0] == '\0';
}
