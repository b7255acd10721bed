/* authres: formats Authentication-Results (RFC 8601) and Received-SPF
 * (RFC 7208 9.1) fields, and filters a message's header so that no
 * Authentication-Results field claiming our authserv-id survives (RFC 8601
 * section 5). Pure: no I/O, clock or policy; any thread. The filter is a
 * push parser over the unstuffed content: it holds at most one header field
 * (AUTHRES_FIELD_MAX octets) and passes everything after the header
 * through. A field longer than that is judged on its first
 * AUTHRES_FIELD_MAX octets, which always include the authserv-id of any
 * real Authentication-Results field. It does not parse anything beyond the
 * header, and never changes the octets it keeps. */
#include "authres.h"

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

bool
authres_is_ours(const char *field, size_t len, const char *authserv_id)
{
    static const char name[] = "Authentication-Results";
    size_t n = sizeof(name) - 1, i, idlen = strlen(authserv_id);
    char id[AUTHRES_DOMAIN_MAX];
    size_t o = 0;

    if (len < n || strncasecmp(field, name, n) != 0)
        return false;
    i = n;
    while (i < len && (field[i] == ' ' || field[i] == '\t'))
        i++; /* RFC 5322 4.5: obsolete white space before the colon */
    if (i >= len || field[i] != ':')
        return false;
    i = skip_cfws(field, i + 1, len);
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

bool
authres_from_domain(const char *value, char *out, size_t size)
{
    const char *lt = NULL, *at = NULL, *end;
    size_t len = strlen(value), i = skip_cfws(value, 0, len), o = 0;
    bool quoted = false;

    /* Find the angle-addr, or else the bare addr-spec's "@", outside
     * quoted strings and comments. */
    for (; i < len; i++) {
        char c = value[i];

        if (quoted) {
            if (c == '\\' && i + 1 < len)
                i++;
            else if (c == '"')
                quoted = false;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '(') {
            i = skip_cfws(value, i, len) - 1;
        } else if (c == '<' && lt == NULL) {
            lt = value + i;
        } else if (c == '@') {
            at = value + i; /* the last "@" before the end or ">" */
        } else if (c == '>' || c == ',' || c == ':' || c == ';') {
            if (c == ':' && lt == NULL)
                return false; /* a group: no single author domain */
            if (c == '>' || c == ',' || at != NULL)
                break;
        }
    }
    if (at == NULL)
        return false;
    end = at + 1;
    while (*end != '\0' && strchr(">,;() \t\r\n", *end) == NULL)
        end++;
    if (end > at + 1 && end[-1] == '.')
        end--;
    if (end == at + 1 || at[1] == '[' || (size_t)(end - at) > size)
        return false;
    for (const char *p = at + 1; p < end; p++) {
        char c = *p;

        out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[o] = '\0';
    return true;
}

/* ---- the filter -------------------------------------------------------- */

enum { FILT_LINE_START, FILT_IN_LINE, FILT_LINE_CR, FILT_BODY };

void
authres_filter_init(struct authres_filter *f, const char *authserv_id, authres_emit_fn emit,
                    void *arg)
{
    memset(f, 0, sizeof(*f));
    f->authserv_id = authserv_id;
    f->emit = emit;
    f->arg = arg;
    f->state = FILT_LINE_START;
}

static bool
field_is(const struct authres_filter *f, const char *name)
{
    size_t n = strlen(name), i = n;

    if (f->flen < n || strncasecmp(f->field, name, n) != 0)
        return false;
    while (i < f->flen && (f->field[i] == ' ' || f->field[i] == '\t'))
        i++;
    return i < f->flen && f->field[i] == ':';
}

/* Keeps the first From: value (unfolded as it came) for DMARC. */
static void
field_note_from(struct authres_filter *f)
{
    const char *colon;
    size_t n;

    if (!field_is(f, "From"))
        return;
    if (f->nfrom++ > 0)
        return;
    colon = memchr(f->field, ':', f->flen);
    n = f->flen - (size_t)(colon + 1 - f->field);
    memcpy(f->from, colon + 1, n);
    f->from[n] = '\0';
}

/* The held field is complete (or the hold is full): keep or drop it. */
static void
field_decide(struct authres_filter *f, bool complete)
{
    if (f->flen == 0)
        return;
    if (authres_is_ours(f->field, f->flen, f->authserv_id)) {
        f->removed++;
        f->dropping = !complete;
    } else {
        field_note_from(f);
        f->emit(f->arg, f->field, f->flen);
        f->passing = !complete;
    }
    f->flen = 0;
}

/* A new field (or the end of the header) begins: the last one is done. */
static void
field_end(struct authres_filter *f)
{
    field_decide(f, true);
    f->dropping = f->passing = false;
}

static void
field_put(struct authres_filter *f, const char *p, size_t n)
{
    if (f->dropping)
        return;
    if (f->passing) {
        f->emit(f->arg, p, n);
        return;
    }
    if (f->flen + n >= sizeof(f->field) - 1)
        field_decide(f, false);
    if (f->dropping)
        return;
    if (f->passing) {
        f->emit(f->arg, p, n);
        return;
    }
    memcpy(f->field + f->flen, p, n);
    f->flen += n;
}

/* One header octet; returns false once the header has ended. */
static bool
filter_octet(struct authres_filter *f, const char *p)
{
    switch (f->state) {
    case FILT_LINE_START:
        if (*p == '\r') {
            f->state = FILT_LINE_CR;
            return true;
        }
        if (*p != ' ' && *p != '\t')
            field_end(f); /* not a continuation: a new field */
        f->state = FILT_IN_LINE;
        field_put(f, p, 1);
        return true;
    case FILT_LINE_CR:
        /* An empty line: the header ends (RFC 5322 2.1). A lone CR is
         * refused by the protocol anyway; keep it as body. */
        field_end(f);
        f->emit(f->arg, "\r", 1);
        f->state = FILT_BODY;
        return false;
    default:
        field_put(f, p, 1);
        if (*p == '\n')
            f->state = FILT_LINE_START;
        return true;
    }
}

void
authres_filter_feed(struct authres_filter *f, const char *data, size_t len)
{
    size_t i = 0;

    while (i < len && f->state != FILT_BODY) {
        if (f->state == FILT_IN_LINE && !f->dropping) {
            /* Fast path: the rest of this line in one piece. */
            const char *nl = memchr(data + i, '\n', len - i);
            size_t n = nl != NULL ? (size_t)(nl - (data + i)) : len - i;

            if (n > 0) {
                field_put(f, data + i, n);
                i += n;
                continue;
            }
        }
        if (!filter_octet(f, data + i))
            break; /* the octet after the blank line's CR is emitted below */
        i++;
    }
    if (i < len && f->state == FILT_BODY)
        f->emit(f->arg, data + i, len - i);
}

void
authres_filter_end(struct authres_filter *f)
{
    if (f->state == FILT_BODY)
        return;
    field_end(f);
    if (f->state == FILT_LINE_CR)
        f->emit(f->arg, "\r", 1);
    f->state = FILT_BODY;
}
