/* Fuzz target: RFC 5321 path parsing (addr_parse_path), UTF-8 validation
 * and domain checks. The first octet sets allow_null/allow_utf8; the rest
 * is the text after "MAIL FROM:" / "RCPT TO:". Checks: an accepted path is
 * consumed within the input, its parts are NUL-terminated within their
 * limits, and a UTF-8 address is accepted only when allowed. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct addr a;
    size_t consumed = 0;
    bool allow_null, allow_utf8;
    const char *s;
    int rc;

    if (size < 2)
        return 0;
    allow_null = data[0] & 1;
    allow_utf8 = data[0] & 2;
    s = (const char *)data + 1;
    size--;
    (void)addr_utf8_valid(s, size);
    (void)addr_domain_valid(s, size, allow_utf8);
    if (s[0] != '<')
        return 0; /* the caller guarantees it */
    rc = addr_parse_path(s, size, allow_null, allow_utf8, &a, &consumed);
    if (rc != ADDR_OK)
        return 0;
    check(consumed >= 2 && consumed <= size && s[consumed - 1] == '>');
    check(strlen(a.mailbox) < sizeof(a.mailbox));
    check(strlen(a.local) <= ADDR_LOCAL_MAX + 2);
    check(strlen(a.domain) <= ADDR_DOMAIN_MAX && strlen(a.domain_lc) == strlen(a.domain));
    check(!a.utf8 || allow_utf8);
    check(!a.is_null || allow_null);
    check(a.utf8 || addr_utf8_valid(a.mailbox, strlen(a.mailbox)));
    return 0;
}
