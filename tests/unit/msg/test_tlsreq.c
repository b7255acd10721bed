/* Unit tests for tlsreq: "TLS-Required: No" (RFC 8689 5) found in a
 * message's header, fed whole and one octet at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "msg/tlsreq.h"

struct tcase {
    const char *name;
    const char *in;
    bool want;
};

static const struct tcase cases[] = {
    {"plain", "TLS-Required: No\r\nSubject: x\r\n\r\nbody\r\n", true},
    {"any case, spaces", "Subject: x\r\ntls-required:\t  nO  \r\n\r\n", true},
    {"bare LF", "From: a\nTLS-Required: No\n\nbody\n", true},
    {"last line without end", "Subject: x\r\nTLS-Required: No", true},
    {"other value", "TLS-Required: Yes\r\n\r\n", false},
    {"no then more", "TLS-Required: Nope\r\n\r\n", false},
    {"empty value", "TLS-Required:\r\n\r\n", false},
    {"in the body", "Subject: x\r\n\r\nTLS-Required: No\r\n", false},
    {"other field", "X-TLS-Required: No\r\n\r\n", false},
    {"folded into another field", "Subject: x\r\n TLS-Required: No\r\n\r\n", false},
    {"after a long line",
     "X-Long: "
     "0123456789012345678901234567890123456789012345678901234567890123"
     "456789\r\nTLS-Required: No\r\n\r\n",
     true},
    {"long value", "TLS-Required: No                                                        x\r\n",
     false},
    {"none", "Subject: x\r\n\r\n", false},
};

static bool
scan(const char *in, size_t step)
{
    struct tlsreq_scan t = {0};
    size_t n = strlen(in);

    if (step == 0) {
        tlsreq_scan_feed(&t, in, n);
    } else {
        for (size_t i = 0; i < n; i += step)
            tlsreq_scan_feed(&t, in + i, n - i < step ? n - i : step);
    }
    tlsreq_scan_finish(&t);
    return t.no;
}

static void
test_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool whole = scan(cases[i].in, 0), bytes = scan(cases[i].in, 1);

        if (whole != cases[i].want || bytes != cases[i].want)
            fail_msg("%s: want %d, got %d whole, %d octet by octet", cases[i].name, cases[i].want,
                     whole, bytes);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
