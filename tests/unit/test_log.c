/* Unit tests for log: splitting a line into the event and its key=value
 * fields (what becomes MXD_* journal fields), and log_esc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"

static void
assert_slice(const char *p, size_t len, const char *want)
{
    if (len != strlen(want) || memcmp(p, want, len) != 0)
        fail_msg("got '%.*s', want '%s'", (int)len, p, want);
}

static void
test_log_fields(void **state)
{
    static const struct {
        const char *line, *event;
        size_t n;
        const char *kv[4][2];
    } cases[] = {
        {"queued from=<a@b.example> size=12 nrcpt=1",
         "queued",
         3,
         {{"from", "<a@b.example>"}, {"size", "12"}, {"nrcpt", "1"}}},
        {"reject client=192.0.2.1 cmd=RCPT reply=\"550 5.7.1 relay denied\"",
         "reject",
         3,
         {{"client", "192.0.2.1"}, {"cmd", "RCPT"}, {"reply", "550 5.7.1 relay denied"}}},
        {"stopped", "stopped", 0, {{NULL, NULL}}},
        /* Not key=value: skipped. Upper case or odd keys are not keys. */
        {"reload refused error=\"a \\\"b\\\" c\" Foo=1 =x plain x=",
         "reload",
         2,
         {{"error", "a \\\"b\\\" c"}, {"x", ""}}},
        {"start failed: cannot listen on 127.0.0.1:25: in use", "start", 0, {{NULL, NULL}}},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct log_field f[8];
        const char *ev;
        size_t elen;
        size_t n = log__fields(cases[i].line, &ev, &elen, f, 8);

        assert_slice(ev, elen, cases[i].event);
        assert_int_equal(n, cases[i].n);
        for (size_t k = 0; k < n; k++) {
            assert_slice(f[k].key, f[k].klen, cases[i].kv[k][0]);
            assert_slice(f[k].val, f[k].vlen, cases[i].kv[k][1]);
        }
    }
}

static void
test_log_fields_bounded(void **state)
{
    struct log_field f[2];
    const char *ev;
    size_t elen;

    (void)state;
    assert_int_equal(log__fields("e a=1 b=2 c=3 d=4", &ev, &elen, f, 2), 2);
    assert_slice(f[1].key, f[1].klen, "b");
    /* An unterminated quote runs to the end of the line. */
    assert_int_equal(log__fields("e a=\"x y", &ev, &elen, f, 2), 1);
    assert_slice(f[0].val, f[0].vlen, "\"x y");
}

static void
test_log_esc(void **state)
{
    char buf[64];

    (void)state;
    assert_string_equal(log_esc(buf, sizeof(buf), "plain", 5), "plain");
    assert_string_equal(log_esc(buf, sizeof(buf), "a b", 3), "\"a b\"");
    assert_string_equal(log_esc(buf, sizeof(buf), "q\"\x01", 3), "\"q\\\"\\x01\"");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_fields),
        cmocka_unit_test(test_log_fields_bounded),
        cmocka_unit_test(test_log_esc),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
