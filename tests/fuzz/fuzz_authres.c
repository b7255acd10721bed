/* Fuzz target: the Authentication-Results header filter (authres_filter_*)
 * fed a message whole and one octet at a time, the From: author parser
 * (authres_from_domains) and the reply text sanitizer (reply_text_clean).
 * Checks: the same output and counts whatever the split; the output is
 * the input when nothing was removed, and never longer; filtering the
 * output again removes nothing (no field of ours survives); author
 * domains are non-empty, lower case, without controls, and distinct;
 * cleaned text has no control octet and fits. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/reply.h"
#include "check/authres.h"
#include "fuzz.h"

#define ID "mx.example.net"

struct out {
    char *buf;
    size_t len, cap;
};

static void
emit(void *arg, const char *data, size_t len)
{
    struct out *o = arg;

    if (o->len + len > o->cap) {
        o->cap = (o->len + len) * 2;
        o->buf = realloc(o->buf, o->cap);
        check(o->buf != NULL);
    }
    memcpy(o->buf + o->len, data, len);
    o->len += len;
}

/* Filters in[0..len) in pieces of step (0: whole); the filter is left
 * ended and must be freed by the caller. */
static void
filter(struct authres_filter *f, struct out *o, const char *in, size_t len, size_t step)
{
    memset(f, 0, sizeof(*f));
    memset(o, 0, sizeof(*o));
    authres_filter_init(f, ID, emit, o);
    for (size_t pos = 0; pos < len;) {
        size_t n = step == 0 || len - pos < step ? len - pos : step;

        authres_filter_feed(f, in + pos, n);
        pos += n;
    }
    authres_filter_end(f);
}

static void
check_authors(const char *value)
{
    char dom[4][AUTHRES_DOMAIN_MAX];
    int n = authres_from_domains(value, dom, 4);

    check(n >= -1 && n <= 4);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(dom[i]);

        check(len > 0 && len < AUTHRES_DOMAIN_MAX && dom[i][len - 1] != '.');
        for (size_t k = 0; k < len; k++)
            check((unsigned char)dom[i][k] > ' ' && dom[i][k] != 0x7f &&
                  !(dom[i][k] >= 'A' && dom[i][k] <= 'Z'));
        for (int j = 0; j < i; j++)
            check(strcmp(dom[i], dom[j]) != 0);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct authres_filter a, b, c;
    struct out oa, ob, oc;
    char *value, clean[64];
    size_t n;

    filter(&a, &oa, in, size, 0);
    filter(&b, &ob, in, size, 1);
    check(oa.len == ob.len && (oa.len == 0 || memcmp(oa.buf, ob.buf, oa.len) == 0));
    check(a.removed == b.removed && a.nfrom == b.nfrom && a.nreceived == b.nreceived);
    check(a.from_overlong == b.from_overlong && (a.from == NULL) == (b.from == NULL));
    check(a.from == NULL || strcmp(a.from, b.from) == 0);
    check(oa.len <= size);
    check(a.removed > 0 || (oa.len == size && (size == 0 || memcmp(oa.buf, in, size) == 0)));
    filter(&c, &oc, oa.buf != NULL ? oa.buf : "", oa.len, 0);
    check(c.removed == 0 && oc.len == oa.len);
    if (a.from != NULL)
        check_authors(a.from);
    authres_filter_free(&a);
    authres_filter_free(&b);
    authres_filter_free(&c);
    free(oa.buf);
    free(ob.buf);
    free(oc.buf);

    value = malloc(size + 1);
    check(value != NULL);
    memcpy(value, data, size);
    value[size] = '\0';
    check_authors(value);
    free(value);

    n = reply_text_clean(clean, sizeof(clean), in, size, size > 0 && data[0] & 1);
    check(n < sizeof(clean) && strlen(clean) == n);
    for (size_t i = 0; i < n; i++)
        check((unsigned char)clean[i] >= ' ' && clean[i] != 0x7f);
    return 0;
}
