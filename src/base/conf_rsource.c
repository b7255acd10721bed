/* conf_rsource: the recipients_source value of a [domain] with
 * `recipients = sync`: "file:/path" or an LDAP URL (RFC 4516),
 * "ldap://host[:port]/base?attr?scope?filter", parsed and checked so that
 * a mistake is a FILE:LINE error at start, not a failed sync later.
 * Pure; any thread. Only plain ldap:// (no ldaps://, no extensions: a
 * bind name or StartTLS would need secrets in the config). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base/conf_value.h"

#define RSOURCE_PART_MAX 1024

/* Percent-decodes s[0..n) (RFC 3986 2.1) into a new string; NULL when a
 * %XX is broken or decodes to NUL. */
static char *
pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1), *o = out;

    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2]))
            goto fail;
        {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            long v = strtol(hex, NULL, 16);

            if (v == 0)
                goto fail;
            *o++ = (char)v;
        }
        i += 2;
    }
    *o = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

/* RFC 4512 1.4: an attribute description, a name (letter, then letters,
 * digits, '-') or a numeric OID, with ;options. */
static bool
is_attr(const char *s)
{
    if (!isalnum((unsigned char)*s))
        return false;
    for (; *s != '\0'; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != ';')
            return false;
    return true;
}

/* RFC 4515: in parentheses, balanced (escaped ones are \28 \29, never
 * bare), nothing after the last. */
static bool
is_filter(const char *s)
{
    int depth = 0;

    if (*s != '(')
        return false;
    for (const char *c = s; *c != '\0'; c++) {
        if (depth == 0 && c != s)
            return false; /* something after the last ')' */
        if (*c == '(')
            depth++;
        else if (*c == ')')
            depth--;
    }
    return depth == 0;
}

/* The host[:port] of an ldap:// URL into r. */
static int
parse_hostport(const char *s, size_t n, struct conf_rsource *r, const char **why)
{
    const char *colon = NULL, *h = s;
    size_t hl = n;
    uint64_t port = 389;

    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);

        if (close == NULL) {
            *why = "unclosed [ in the LDAP host";
            return MXD_EINVAL;
        }
        h = s + 1;
        hl = (size_t)(close - h);
        if (close + 1 < s + n) {
            if (close[1] != ':') {
                *why = "junk after the LDAP host";
                return MXD_EINVAL;
            }
            colon = close + 1;
        }
    } else if ((colon = memchr(s, ':', n)) != NULL) {
        hl = (size_t)(colon - s);
    }
    if (hl == 0) {
        *why = "an ldap:// URL needs a host";
        return MXD_EINVAL;
    }
    if (colon != NULL) {
        char digits[8];
        size_t dl = (size_t)(s + n - colon - 1);
        const char *end;

        if (dl == 0 || dl >= sizeof(digits)) {
            *why = "bad LDAP port";
            return MXD_EINVAL;
        }
        memcpy(digits, colon + 1, dl);
        digits[dl] = '\0';
        if (conf__parse_u64(digits, &port, &end) < 0 || *end != '\0' || port == 0 || port > 65535) {
            *why = "bad LDAP port";
            return MXD_EINVAL;
        }
    }
    r->host = xstrndup(h, hl);
    r->port = (uint16_t)port;
    if (strchr(r->host, ' ') != NULL || (s[0] != '[' && !conf__is_hostname(r->host) &&
                                         strspn(r->host, "0123456789.") != strlen(r->host))) {
        *why = "bad LDAP host";
        return MXD_EINVAL;
    }
    return 0;
}

/* The parts after the host: dn ? attrs ? scope ? filter [? extensions]. */
static int
parse_ldap(const char *s, struct conf_rsource *r, const char **why)
{
    const char *slash = strchr(s, '/');
    const char *part[4] = {NULL, NULL, NULL, NULL};
    size_t len[4] = {0, 0, 0, 0}, np = 0;
    const char *q;
    int rc;

    if ((rc = parse_hostport(s, slash != NULL ? (size_t)(slash - s) : strlen(s), r, why)) < 0)
        return rc;
    if (slash == NULL) {
        *why = "an ldap:// URL needs /base?attribute?scope?filter";
        return MXD_EINVAL;
    }
    for (q = slash + 1; np < 4; np++) {
        size_t n = strcspn(q, "?");

        part[np] = q;
        len[np] = n;
        if (q[n] == '\0') {
            np++;
            break;
        }
        q += n + 1;
    }
    if (np == 4 && part[3][len[3]] == '?') {
        *why = "LDAP URL extensions are not supported";
        return MXD_EINVAL;
    }
    for (size_t i = 0; i < np; i++) {
        if (len[i] > RSOURCE_PART_MAX) {
            *why = "LDAP URL part too long";
            return MXD_EINVAL;
        }
    }
    r->base = pct_decode(part[0], len[0]);
    r->attr = np > 1 ? pct_decode(part[1], len[1]) : NULL;
    if (r->base == NULL || (np > 1 && r->attr == NULL)) {
        *why = "bad %-escape in the LDAP URL";
        return MXD_EINVAL;
    }
    if (r->attr == NULL || !is_attr(r->attr)) {
        *why = "the LDAP URL needs one attribute (ldap://host/base?mail?sub?filter)";
        return MXD_EINVAL;
    }
    r->scope = CONF_LDAP_BASE; /* RFC 4516 2: the default scope */
    if (np > 2 && len[2] > 0) {
        if (len[2] == 4 && strncmp(part[2], "base", 4) == 0)
            r->scope = CONF_LDAP_BASE;
        else if (len[2] == 3 && strncmp(part[2], "one", 3) == 0)
            r->scope = CONF_LDAP_ONE;
        else if (len[2] == 3 && strncmp(part[2], "sub", 3) == 0)
            r->scope = CONF_LDAP_SUB;
        else {
            *why = "LDAP scope: want base, one or sub";
            return MXD_EINVAL;
        }
    }
    r->filter = np > 3 && len[3] > 0 ? pct_decode(part[3], len[3]) : xstrdup("(objectClass=*)");
    if (r->filter == NULL || !is_filter(r->filter)) {
        *why = "bad LDAP filter (want balanced parentheses, as (mail=*))";
        return MXD_EINVAL;
    }
    return 0;
}

int
conf__parse_rsource(const char *s, const void *arg, void *out, const char **why)
{
    struct conf_rsource *r = out, n;
    int rc = 0;

    (void)arg;
    memset(&n, 0, sizeof(n));
    if (strncmp(s, "file:", 5) == 0) {
        if (s[5] != '/' || s[6] == '\0') {
            *why = "file: needs an absolute path";
            return MXD_EINVAL;
        }
        if (strlen(s + 5) >= 4096) {
            *why = "path too long";
            return MXD_EINVAL;
        }
        n.path = xstrdup(s + 5);
    } else if (strncmp(s, "ldap://", 7) == 0) {
        n.ldap = true;
        rc = parse_ldap(s + 7, &n, why);
    } else {
        *why = "want file:/path or ldap://host/base?attribute?scope?filter";
        return MXD_EINVAL;
    }
    if (rc < 0) {
        conf__rsource_free(&n);
        return rc;
    }
    n.text = xstrdup(s);
    conf__rsource_free(r);
    *r = n;
    return 0;
}

void
conf__rsource_free(void *item)
{
    struct conf_rsource *r = item;

    free(r->text);
    free(r->path);
    free(r->host);
    free(r->base);
    free(r->attr);
    free(r->filter);
    memset(r, 0, sizeof(*r));
}
