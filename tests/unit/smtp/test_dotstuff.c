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

#include "smtp/dotstuff.h"

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

/* The reference: the byte-at-a-time state machine dotstuff.c had before
 * its text fast path, over a whole input: content, whether and where it
 * ended, and whether a bare CR or LF was seen. */
struct ref_out {
    char body[8192];
    size_t blen, end_at; /* end_at: octets consumed through the terminator */
    bool ended, bare;
};

enum { R_BOL, R_TEXT, R_CR, R_DOT, R_DOT_CR };

static int
ref_step(struct ref_out *r, char c)
{
    r->body[r->blen++] = c;
    if (c == '\n')
        r->bare = true;
    return c == '\r' ? R_CR : R_TEXT;
}

static void
ref_run(const char *in, size_t len, struct ref_out *r)
{
    int st = R_BOL;

    memset(r, 0, sizeof(*r));
    for (size_t i = 0; i < len; i++) {
        char c = in[i];

        if (st == R_BOL && c == '.') {
            st = R_DOT;
        } else if (st == R_CR && c == '\n') {
            r->body[r->blen++] = c;
            st = R_BOL;
        } else if (st == R_DOT && c == '\r') {
            st = R_DOT_CR;
        } else if (st == R_DOT_CR && c == '\n') {
            r->ended = true;
            r->end_at = i + 1;
            return;
        } else {
            if (st == R_CR || st == R_DOT_CR)
                r->bare = true;
            st = ref_step(r, c);
        }
    }
}

/* Random bodies made of the octets that matter, fed in random pieces: the
 * fast path (memchr over text) must agree with the model. */
static void
test_ds_random_model(void **state)
{
    static const char alphabet[] = "\r\n.ab\r\n..";
    uint32_t seed = 12345;
    char in[512], body[8192];

    (void)state;
    for (int round = 0; round < 20000; round++) {
        size_t len, pos = 0, blen = 0;
        struct dotstuff d;
        struct ref_out ref;
        bool ended = false;

        seed = seed * 1103515245u + 12345u;
        len = 1 + (seed >> 16) % (sizeof(in) - 8);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = (seed >> 16) % 3 == 0 ? alphabet[(seed >> 20) % (sizeof(alphabet) - 1)]
                                          : (char)('a' + (seed >> 24) % 26);
        }
        /* make the end likely but not certain */
        if (round % 2 == 0 && len + 5 <= sizeof(in)) {
            memcpy(in + len, "\r\n.\r\n", 5);
            len += 5;
        }
        ref_run(in, len, &ref);
        dotstuff_init(&d);
        while (pos < len && !ended) {
            const char *out;
            size_t outlen, used, n;

            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 16) % 64;
            if (n > len - pos)
                n = len - pos;
            for (size_t off = 0; off < n && !ended;) {
                enum dotstuff_result r =
                    dotstuff_next(&d, in + pos + off, n - off, &used, &out, &outlen);

                if (r == DOTSTUFF_SPAN) {
                    memcpy(body + blen, out, outlen);
                    blen += outlen;
                }
                off += used;
                ended = r == DOTSTUFF_END;
                if (ended)
                    pos += off;
                else if (off == n)
                    pos += n;
            }
        }
        assert_int_equal(ended, ref.ended);
        if (ended) {
            assert_int_equal(pos, ref.end_at);
        }
        assert_int_equal(d.bare, ref.bare);
        assert_int_equal(blen, ref.blen);
        assert_memory_equal(body, ref.body, blen);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ds_table),
        cmocka_unit_test(test_ds_span_bounds),
        cmocka_unit_test(test_ds_random_model),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
