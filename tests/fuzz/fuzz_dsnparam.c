/* Fuzz target: the RFC 3461 parameter parsers (dsnparam, issue 18) fed
 * arbitrary values. Checks: what is accepted is NUL-terminated within its
 * buffer, xtext decodes to printable ASCII and encode/decode give it back,
 * a NOTIFY accepted is named and parsed back to the same bits, an ORCPT
 * accepted formats (no longer than sent) and parses back to itself. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "msg/dsnparam.h"

static void
xtext_props(const char *s, size_t n)
{
    char dec[DSN_ORCPT_MAX + 1], enc[3 * DSN_ORCPT_MAX + 1], back[DSN_ORCPT_MAX + 1];
    size_t dlen = 0, elen;

    if (dsn_xtext_decode(s, n, dec, sizeof(dec), &dlen) != 0)
        return;
    check(dlen <= n && strlen(dec) == dlen);
    for (size_t i = 0; i < dlen; i++)
        check(dec[i] >= 0x20 && dec[i] <= 0x7e);
    elen = dsn_xtext_encode(dec, dlen, enc, sizeof(enc));
    check(dlen == 0 || (elen > 0 && elen <= n));
    if (dlen == 0)
        return;
    check(dsn_xtext_decode(enc, elen, back, sizeof(back), NULL) == 0);
    check(strcmp(back, dec) == 0);
}

static void
notify_props(const char *s, size_t n)
{
    unsigned bits = 0, again = 0;
    const char *name;

    if (dsn_notify_parse(s, n, &bits) != 0)
        return;
    check(bits != 0 && (bits == DSN_NOTIFY_NEVER || (bits & DSN_NOTIFY_NEVER) == 0));
    name = dsn_notify_name(bits);
    check(dsn_notify_parse(name, strlen(name), &again) == 0 && again == bits);
}

static void
orcpt_props(const char *s, size_t n)
{
    char out[DSN_ORCPT_MAX + 1], wire[3 * DSN_ORCPT_MAX + 64], back[DSN_ORCPT_MAX + 1];
    size_t wl;

    if (dsn_orcpt_parse(s, n, out, sizeof(out)) != 0)
        return;
    check(strlen(out) <= n && strchr(out, ';') != NULL);
    wl = dsn_orcpt_format(out, "x@y.test", wire, sizeof(wire));
    check(wl > 0 && wl <= n); /* the canonical encoding is never longer */
    check(dsn_orcpt_parse(wire, wl, back, sizeof(back)) == 0);
    check(strcmp(back, out) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char envid[DSN_ENVID_MAX + 1];
    enum dsn_ret ret;

    if (size > 2 * DSN_ORCPT_MAX)
        return 0;
    xtext_props(s, size);
    notify_props(s, size);
    orcpt_props(s, size);
    if (dsn_envid_parse(s, size, envid, sizeof(envid)) == 0)
        check(strlen(envid) >= 1 && strlen(envid) <= size);
    if (dsn_ret_parse(s, size, &ret) == 0)
        check(ret == DSN_RET_FULL || ret == DSN_RET_HDRS);
    return 0;
}
