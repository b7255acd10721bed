/* Unit tests for dotstuff: DATA end detection, dot-unstuffing, and every
 * SMTP smuggling line-ending variant (CVE-2023-51764). Each case is fed
 * whole, one octet at a time and in 3-octet pieces: the result must not
 * depend on how the input is split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dotstuff.h"

struct ds_case {
    const char *name;
    const char *in;
    bool want_end;
    const char *want_body; /* content up to the end (or all, without end) */
    bool want_bare;
    size_t want_rest; /* octets left after the terminator */
};

static const struct ds_case ds_cases[] = {
    {"empty message", ".\r\n", true, "", false, 0},
    {"one line", "hello\r\n.\r\n", true, "hello\r\n", false, 0},
    {"two lines", "a\r\nb\r\n.\r\n", true, "a\r\nb\r\n", false, 0},
    {"stuffed dot", "..\r\n.\r\n", true, ".\r\n", false, 0},
    {"stuffed text", "..hidden\r\n.\r\n", true, ".hidden\r\n", false, 0},
    {"dot in middle", "a.b\r\n.\r\n", true, "a.b\r\n", false, 0},
    {"leading dot text", ".x\r\n.\r\n", true, "x\r\n", false, 0},
    {"rest after end", "x\r\n.\r\nQUIT\r\n", true, "x\r\n", false, 6},
    {"no end yet", "x\r\n", false, "x\r\n", false, 0},
    {"dot line not end", "x\r\n.y\r\n", false, "x\r\ny\r\n", false, 0},
    {"8bit", "caf\xc3\xa9\r\n.\r\n", true, "caf\xc3\xa9\r\n", false, 0},
    {"NUL is content", "a\0b\r\n.\r\n", true, "a\0b\r\n", false, 0},
    /* smuggling variants: never an end, always flagged */
    {"LF.LF", "a\n.\nMAIL FROM:<x@y>\r\n", false, "a\n.\nMAIL FROM:<x@y>\r\n", true, 0},
    {"LF.CRLF", "a\n.\r\nMAIL FROM:<x@y>\r\n", false, "a\n.\r\nMAIL FROM:<x@y>\r\n", true, 0},
    {"CR.CR", "a\r.\rMAIL\r\n", false, "a\r.\rMAIL\r\n", true, 0},
    {"CRLF.LF", "a\r\n.\nMAIL\r\n", false, "a\r\n\nMAIL\r\n", true, 0},
    {"CR.CRLF", "a\r.\r\nMAIL\r\n", false, "a\r.\r\nMAIL\r\n", true, 0},
    {"LF.LF then real end", "a\n.\nb\r\n.\r\n", true, "a\n.\nb\r\n", true, 0},
    {"bare CR", "a\rb\r\n.\r\n", true, "a\rb\r\n", true, 0},
    {"bare LF", "a\nb\r\n.\r\n", true, "a\nb\r\n", true, 0},
    {"dot CR x", "\r\n.\rx\r\n.\r\n", true, "\r\nx\r\n", true, 0},
    {"initial LF.LF", "\n.\n", false, "\n.\n", true, 0},
};

/* Feeds in[] in pieces of `step` octets (0: whole), collecting content. */
static void
ds_run(const struct ds_case *c, size_t step)
{
    struct dotstuff d;
    char body[256];
    size_t blen = 0;
    size_t len = strlen(c->in);
    size_t pos = 0;
    bool ended = false;

    if (strcmp(c->name, "NUL is content") == 0)
        len = 8;
    dotstuff_init(&d);
    while (pos < len && !ended) {
        size_t n = step == 0 || len - pos < step ? len - pos : step;
        size_t off = 0;

        while (off < n && !ended) {
            const char *out;
            size_t outlen, used;
            enum dotstuff_result r =
                dotstuff_next(&d, c->in + pos + off, n - off, &used, &out, &outlen);

            assert_true(used <= n - off);
            if (r == DOTSTUFF_SPAN) {
                assert_true(blen + outlen < sizeof(body));
                memcpy(body + blen, out, outlen);
                blen += outlen;
            }
            off += used;
            ended = r == DOTSTUFF_END;
            if (r == DOTSTUFF_NEED)
                assert_int_equal(off, n);
        }
        pos += off;
    }
    assert_int_equal(ended, c->want_end);
    assert_int_equal(d.bare, c->want_bare);
    if (c->want_end)
        assert_int_equal(len - pos, c->want_rest);
    if (strcmp(c->name, "NUL is content") == 0) {
        assert_int_equal(blen, 5);
        assert_memory_equal(body, "a\0b\r\n", 5);
    } else {
        assert_int_equal(blen, strlen(c->want_body));
        assert_memory_equal(body, c->want_body, blen);
    }
}

static void
test_ds_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ds_cases) / sizeof(ds_cases[0]); i++) {
        print_message("case: %s\n", ds_cases[i].name);
        ds_run(&ds_cases[i], 0);
        ds_run(&ds_cases[i], 1);
        ds_run(&ds_cases[i], 3);
    }
}

/* A span never includes the dot of a dot line and never the terminator. */
static void
test_ds_span_bounds(void **state)
{
    struct dotstuff d;
    const char *in = "ab\r\n..c\r\n.\r\n";
    const char *out;
    size_t outlen, used;

    (void)state;
    dotstuff_init(&d);
    assert_int_equal(dotstuff_next(&d, in, strlen(in), &used, &out, &outlen), DOTSTUFF_SPAN);
    assert_int_equal(outlen, 4);
    assert_memory_equal(out, "ab\r\n", 4);
    assert_int_equal(used, 5); /* the stuffed dot is consumed */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ds_table),
        cmocka_unit_test(test_ds_span_bounds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
