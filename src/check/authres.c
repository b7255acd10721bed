/* authres: formats Authentication-Results (RFC 8601) and Received-SPF
 * (RFC 7208 9.1) fields, and filters a message's header so that no
 * Authentication-Results field claiming our authserv-id survives (RFC 8601
 * section 5). Pure: no I/O, clock or policy; any thread. The filter is a
 * push parser over the unstuffed content: it reads each header field's
 * name, holds an Authentication-Results field and the first From: field
 * whole (up to AUTHRES_FIELD_MAX octets, allocated as needed) and passes
 * every other field, and everything after the header, through as it comes.
 * An Authentication-Results field is judged on the complete field; one too
 * long to hold is removed unjudged (RFC 8601 5 lets us remove any). It
 * counts From: and Received: fields (DMARC, hop count) and keeps the first
 * From: value. It does not parse anything beyond the header, and never
 * changes the octets it keeps. */
#include "check/authres.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- builder ----------------------------------------------------------- */

static void
ar_put(struct authres *ar, const char *s, size_t n)
{
    if (ar->len + n + 1 > ar->cap) {
        size_t cap = ar->cap ? ar->cap : 256;

        while (cap < ar->len + n + 1)
            cap *= 2;
        ar->buf = xrealloc(ar->buf, cap);
        ar->cap = cap;
    }
    memcpy(ar->buf + ar->len, s, n);
    ar->len += n;
    ar->buf[ar->len] = '\0';
}

static void
ar_puts(struct authres *ar, const char *s)
{
    ar_put(ar, s, strlen(s));
}

/* RFC 2045 token characters: printable ASCII but space and tspecials. */
static bool
is_token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* A value (RFC 2045 token or quoted-string) or, for addresses, a pvalue
 * addr-spec ("user@example.com", RFC 8601 2.2). Controls are dropped. */
static void
ar_value(struct authres *ar, const char *v)
{
    bool plain = v[0] != '\0';
    int at = 0;

    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '@' && ++at == 1 && p != v && p[1] != '\0')
            continue;
        if (!is_token_char((unsigned char)*p))
            plain = false;
    }
    if (plain) {
        ar_puts(ar, v);
        return;
    }
    ar_put(ar, "\"", 1);
    for (const char *p = v; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;

        if (c < 0x20 || c == 0x7f)
            continue;
        if (c == '"' || c == '\\')
            ar_put(ar, "\\", 1);
        ar_put(ar, p, 1);
    }
    ar_put(ar, "\"", 1);
}

/* A comment (RFC 5322 3.2.2): parentheses and backslashes are quoted. */
static void
ar_comment(struct authres *ar, const char *c)
{
    ar_put(ar, " (", 2);
    for (const char *p = c; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;

        if (ch < 0x20 || ch == 0x7f)
            continue;
        if (ch == '(' || ch == ')' || ch == '\\')
            ar_put(ar, "\\", 1);
        ar_put(ar, p, 1);
    }
    ar_put(ar, ")", 1);
}

void
authres_init(struct authres *ar, const char *authserv_id)
{
    memset(ar, 0, sizeof(*ar));
    ar_puts(ar, "Authentication-Results: ");
    ar_value(ar, authserv_id);
}

void
authres_add(struct authres *ar, const char *method, const char *result, const char *comment,
            const struct authres_prop *props, size_t nprops)
{
    /* One resinfo per line: RFC 5322 2.2.3 folding before each. */
    ar_puts(ar, ";\r\n\t");
    ar_puts(ar, method);
    ar_put(ar, "=", 1);
    ar_puts(ar, result);
    if (comment != NULL && comment[0] != '\0')
        ar_comment(ar, comment);
    for (size_t i = 0; i < nprops; i++) {
        if (props[i].value == NULL)
            continue;
        ar_put(ar, " ", 1);
        ar_puts(ar, props[i].name);
        ar_put(ar, "=", 1);
        ar_value(ar, props[i].value);
    }
    ar->nresults++;
}

const char *
authres_finish(struct authres *ar, size_t *len)
{
    if (ar->nresults == 0)
        ar_puts(ar, "; none"); /* RFC 8601 2.2: no-result */
    ar_puts(ar, "\r\n");
    *len = ar->len;
    return ar->buf;
}

void
authres_free(struct authres *ar)
{
    free(ar->buf);
    memset(ar, 0, sizeof(*ar));
}

/* ---- Received-SPF ------------------------------------------------------ */

size_t
authres_received_spf(char *buf, size_t size, const char *result, const char *comment,
                     const char *client_ip, const char *envelope_from, const char *helo,
                     const char *receiver, const char *identity)
{
    struct authres ar;
    size_t n = 0;

    /* Reuse the builder's escaping; the field has its own grammar:
     * result [comment] key-value-list (RFC 7208 9.1). */
    memset(&ar, 0, sizeof(ar));
    ar_puts(&ar, "Received-SPF: ");
    ar_puts(&ar, result);
    if (comment != NULL && comment[0] != '\0')
        ar_comment(&ar, comment);
    ar_puts(&ar, "\r\n\tclient-ip=");
    ar_puts(&ar, client_ip);
    ar_puts(&ar, "; envelope-from=");
    ar_value(&ar, envelope_from);
    if (helo != NULL && helo[0] != '\0') {
        ar_puts(&ar, "; helo=");
        ar_value(&ar, helo);
    }
    ar_puts(&ar, ";\r\n\treceiver=");
    ar_value(&ar, receiver);
    ar_puts(&ar, "; identity=");
    ar_puts(&ar, identity);
    ar_puts(&ar, "\r\n");
    if (ar.len < size) {
        memcpy(buf, ar.buf, ar.len + 1);
        n = ar.len;
    }
    authres_free(&ar);
    return n;
}

/* ---- judging a field --------------------------------------------------- */

/* Skips RFC 5322 CFWS: white space, line folds and nested comments. */
static size_t
skip_cfws(const char *s, size_t i, size_t len)
{
    int depth = 0;

    while (i < len) {
        char c = s[i];

        if (depth > 0 && c == '\\' && i + 1 < len) {
            i += 2;
            continue;
        }
        if (c == '(')
            depth++;
        else if (c == ')' && depth > 0)
            depth--;
        else if (depth == 0 && c != ' ' && c != '\t' && c != '\r' && c != '\n')
            break;
        i++;
    }
    return i;
}

/* The offset just past the colon when field[0..len) is a `name` field
 * (ASCII case-insensitive; white space before the colon allowed, RFC 5322
 * 4.5 obs-optional, folded or not), else 0. */
static size_t
field_name_is(const char *field, size_t len, const char *name)
{
    size_t n = strlen(name), i = n;

    if (len < n || strncasecmp(field, name, n) != 0)
        return 0;
    while (i < len && strchr(" \t\r\n", field[i]) != NULL)
        i++;
    return i < len && field[i] == ':' ? i + 1 : 0;
}

bool
authres_is_ours(const char *field, size_t len, const char *authserv_id)
{
    size_t i = field_name_is(field, len, "Authentication-Results"), idlen = strlen(authserv_id);
    char id[AUTHRES_DOMAIN_MAX];
    size_t o = 0;

    if (i == 0)
        return false;
    i = skip_cfws(field, i, len);
    if (i < len && field[i] == '"') { /* quoted-string form */
        for (i++; i < len && field[i] != '"' && o + 1 < sizeof(id); i++) {
            if (field[i] == '\\' && i + 1 < len)
                i++;
            if (field[i] != '\r' && field[i] != '\n')
                id[o++] = field[i];
        }
    } else {
        for (; i < len && is_token_char((unsigned char)field[i]) && o + 1 < sizeof(id); i++)
            id[o++] = field[i];
    }
    id[o] = '\0';
    if (o > 0 && id[o - 1] == '.')
        id[--o] = '\0'; /* an absolute name is the same name */
    if (idlen > 0 && authserv_id[idlen - 1] == '.')
        idlen--;
    return o == idlen && strncasecmp(id, authserv_id, idlen) == 0;
}

/* ---- the authors of a From: field -------------------------------------- */

struct from_scan {
    char (*out)[AUTHRES_DOMAIN_MAX];
    size_t max, n;
    bool bad;    /* too many domains, or one too long */
    char *addr;  /* the current mailbox's address octets (no CFWS) */
    size_t alen; /* at most strlen(value) */
};

/* One mailbox ended: its domain (after the last "@") joins the list. */
static void
from_mailbox(struct from_scan *fs)
{
    char *at = NULL, *d;
    size_t n;

    for (size_t i = 0; i < fs->alen; i++)
        if (fs->addr[i] == '@')
            at = fs->addr + i;
    n = at != NULL ? (size_t)(fs->addr + fs->alen - (at + 1)) : 0;
    fs->alen = 0;
    while (n > 0 && at[n] == '.')
        n--; /* an absolute name is the same name */
    if (n == 0 || at[1] == '[' || at[1] == '.')
        return; /* no domain, or a domain literal: no DMARC domain */
    if (n >= AUTHRES_DOMAIN_MAX) {
        fs->bad = true;
        return;
    }
    for (size_t i = 0; i < fs->n; i++)
        if (strncmp(fs->out[i], at + 1, n) == 0 && fs->out[i][n] == '\0')
            return; /* already listed (the buffer is lower-cased already) */
    if (fs->n == fs->max) {
        fs->bad = true;
        return;
    }
    d = fs->out[fs->n++];
    memcpy(d, at + 1, n);
    d[n] = '\0';
}

int
authres_from_domains(const char *value, char (*out)[AUTHRES_DOMAIN_MAX], size_t max)
{
    size_t len = strlen(value);
    struct from_scan fs = {.out = out, .max = max, .addr = xmalloc(len + 1)};
    bool angle = false, angle_done = false;

    /* Only the octets of addresses are collected: comments and white space
     * are skipped, a quoted local part becomes one placeholder octet, a
     * display name is dropped at "<" and a group name at ":". Inside <>
     * a ":" ends an obsolete source route (RFC 5322 4.4), which is dropped
     * likewise. "," and ";" outside <> end a mailbox. */
    for (size_t i = 0; i < len && !fs.bad; i++) {
        char c = value[i];

        if (c == '(') {
            i = skip_cfws(value, i, len) - 1;
        } else if (c == '"') {
            for (i++; i < len && value[i] != '"'; i++)
                if (value[i] == '\\' && i + 1 < len)
                    i++;
            if (!angle_done)
                fs.addr[fs.alen++] = 'q';
        } else if (angle && c == '>') {
            angle = false;
            angle_done = true;
        } else if (c == '<' && angle_done) {
            from_mailbox(&fs); /* "<a@x> <b@y>": two addresses, both count */
            angle = true;
            angle_done = false;
        } else if (c == '<' || (c == ':' && !angle_done)) {
            angle = angle || c == '<';
            fs.alen = 0;
        } else if (!angle && (c == ',' || c == ';')) {
            from_mailbox(&fs);
            angle_done = false;
        } else if (!angle_done && (unsigned char)c > ' ' && c != 0x7f) {
            fs.addr[fs.alen++] = ascii_lower(c);
        }
    }
    if (!fs.bad)
        from_mailbox(&fs);
    free(fs.addr);
    return fs.bad ? -1 : (int)fs.n;
}

/* ---- the filter -------------------------------------------------------- */

enum { FILT_LINE_START, FILT_IN_LINE, FILT_LINE_CR, FILT_BODY };

/* The current field: its name is being read (held until the colon), it is
 * held whole, passed on as it comes, or dropped. */
enum { FLD_NAME, FLD_HOLD, FLD_PASS, FLD_DROP };

void
authres_filter_init(struct authres_filter *f, const char *authserv_id, authres_emit_fn emit,
                    void *arg)
{
    memset(f, 0, sizeof(*f));
    f->authserv_id = authserv_id;
    f->emit = emit;
    f->arg = arg;
    f->state = FILT_LINE_START;
    f->kind = FLD_NAME;
}

void
authres_filter_free(struct authres_filter *f)
{
    free(f->field);
    free(f->from);
    memset(f, 0, sizeof(*f));
}

/* Appends to the hold; the caller keeps flen + n within AUTHRES_FIELD_MAX. */
static void
hold_put(struct authres_filter *f, const char *p, size_t n)
{
    if (f->flen + n > f->fcap) {
        size_t cap = f->fcap ? f->fcap : 256;

        while (cap < f->flen + n)
            cap *= 2;
        f->field = xrealloc(f->field, cap);
        f->fcap = cap;
    }
    memcpy(f->field + f->flen, p, n);
    f->flen += n;
}

/* Emits what is held; the rest of the field is passed on. */
static void
hold_flush(struct authres_filter *f)
{
    if (f->flen > 0)
        f->emit(f->arg, f->field, f->flen);
    f->flen = 0;
    f->kind = FLD_PASS;
}

/* The hold ends with the colon: what is this field? */
static void
field_named(struct authres_filter *f)
{
    if (field_name_is(f->field, f->flen, "Authentication-Results") != 0) {
        f->kind = FLD_HOLD;
        f->hold_ar = true;
    } else if (field_name_is(f->field, f->flen, "From") != 0 && f->nfrom++ == 0) {
        f->kind = FLD_HOLD;
        f->hold_ar = false;
    } else {
        if (field_name_is(f->field, f->flen, "Received") != 0)
            f->nreceived++; /* RFC 5321 6.3: the hop count */
        hold_flush(f);
    }
}

/* The hold would pass AUTHRES_FIELD_MAX: an Authentication-Results field
 * cannot be judged and is removed; a From: is reported and passed on. */
static void
hold_full(struct authres_filter *f)
{
    if (f->kind == FLD_HOLD && f->hold_ar) {
        f->removed++;
        f->flen = 0;
        f->kind = FLD_DROP;
        return;
    }
    if (f->kind == FLD_HOLD)
        f->from_overlong = true;
    hold_flush(f);
}

static void
field_put(struct authres_filter *f, const char *p, size_t n)
{
    const char *colon;
    size_t k;

    if (f->kind == FLD_NAME && (colon = memchr(p, ':', n)) != NULL &&
        f->flen + (k = (size_t)(colon - p) + 1) <= AUTHRES_FIELD_MAX) {
        hold_put(f, p, k);
        field_named(f);
        p += k;
        n -= k;
    }
    if ((f->kind == FLD_NAME || f->kind == FLD_HOLD) && f->flen + n > AUTHRES_FIELD_MAX)
        hold_full(f);
    if (f->kind == FLD_PASS)
        f->emit(f->arg, p, n);
    else if (f->kind != FLD_DROP)
        hold_put(f, p, n);
}

/* A new field (or the end of the header) begins: the held one is complete. */
static void
field_end(struct authres_filter *f)
{
    if (f->kind == FLD_HOLD && f->hold_ar && authres_is_ours(f->field, f->flen, f->authserv_id)) {
        f->removed++;
        f->flen = 0;
    } else if (f->kind == FLD_HOLD && !f->hold_ar) {
        size_t v = field_name_is(f->field, f->flen, "From");

        f->from = xstrndup(f->field + v, f->flen - v);
    }
    hold_flush(f);
    f->kind = FLD_NAME;
}

void
authres_filter_feed(struct authres_filter *f, const char *data, size_t len)
{
    size_t i = 0;

    while (i < len && f->state != FILT_BODY) {
        const char *p = data + i, *nl;
        size_t n;

        switch (f->state) {
        case FILT_LINE_START:
            if (*p == '\r') {
                f->state = FILT_LINE_CR;
                i++;
                break;
            }
            if (*p != ' ' && *p != '\t')
                field_end(f); /* not a continuation: a new field */
            f->state = FILT_IN_LINE;
            break;
        case FILT_LINE_CR:
            /* An empty line: the header ends (RFC 5322 2.1); this octet
             * (the LF) is the body's. A lone CR is refused by the protocol
             * anyway. */
            field_end(f);
            f->emit(f->arg, "\r", 1);
            f->state = FILT_BODY;
            break;
        default:
            /* The rest of this line, LF included, in one piece. */
            nl = memchr(p, '\n', len - i);
            n = nl != NULL ? (size_t)(nl - p) + 1 : len - i;
            field_put(f, p, n);
            if (nl != NULL)
                f->state = FILT_LINE_START;
            i += n;
            break;
        }
    }
    if (i < len)
        f->emit(f->arg, data + i, len - i);
}

void
authres_filter_end(struct authres_filter *f)
{
    if (f->state != FILT_BODY) {
        field_end(f);
        if (f->state == FILT_LINE_CR)
            f->emit(f->arg, "\r", 1);
        f->state = FILT_BODY;
    }
    free(f->field); /* the hold is empty: an idle session keeps none */
    f->field = NULL;
    f->flen = f->fcap = 0;
}
