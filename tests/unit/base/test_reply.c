/* Unit tests for reply: the SMTP/LMTP reply parser. Every table case is
 * fed whole, one octet at a time and in 3-octet pieces: the outcome must
 * not depend on how the server's bytes were split. Golden files under
 * data/reply/ hold replies captured from Dovecot 2.3 LMTP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/reply.h"

struct reply_case {
    const char *name;
    const char *in;
    enum reply_result want;
    int want_code;
    const char *want_enh;
    const char *want_text;
    unsigned want_nlines;
    size_t want_consumed; /* 0: all of in */
};

static const struct reply_case reply_cases[] = {
    {"single", "250 OK\r\n", REPLY_DONE, 250, "", "OK", 1, 0},
    {"code only", "250\r\n", REPLY_DONE, 250, "", "", 1, 0},
    {"code and space", "250 \r\n", REPLY_DONE, 250, "", "", 1, 0},
    {"multi-line", "250-first\r\n250-second\r\n250 third\r\n", REPLY_DONE, 250, "",
     "first\nsecond\nthird", 3, 0},
    {"empty continuation", "220-\r\n220 ready\r\n", REPLY_DONE, 220, "", "\nready", 2, 0},
    {"enhanced", "250 2.1.5 Ok\r\n", REPLY_DONE, 250, "2.1.5", "Ok", 1, 0},
    {"enhanced only", "550 5.1.1\r\n", REPLY_DONE, 550, "5.1.1", "", 1, 0},
    {"enhanced 3 digits", "550 5.123.456 x\r\n", REPLY_DONE, 550, "5.123.456", "x", 1, 0},
    {"enhanced on every line", "452-4.2.2 Mailbox full\r\n452 4.2.2 try later\r\n", REPLY_DONE, 452,
     "4.2.2", "Mailbox full\ntry later", 2, 0},
    {"other enhanced later", "250-2.0.0 a\r\n250 2.1.0 b\r\n", REPLY_DONE, 250, "2.0.0",
     "a\n2.1.0 b", 2, 0},
    {"enhanced only later", "250-a\r\n250 2.0.0 b\r\n", REPLY_DONE, 250, "", "a\n2.0.0 b", 2, 0},
    {"enhanced class mismatch", "250 5.0.0 x\r\n", REPLY_DONE, 250, "", "5.0.0 x", 1, 0},
    {"enhanced class 3", "354 3.0.0 go\r\n", REPLY_DONE, 354, "", "3.0.0 go", 1, 0},
    {"enhanced two parts", "250 2.0 x\r\n", REPLY_DONE, 250, "", "2.0 x", 1, 0},
    {"enhanced 4 digits", "250 2.0.0000 x\r\n", REPLY_DONE, 250, "", "2.0.0000 x", 1, 0},
    {"enhanced empty part", "250 2..0 x\r\n", REPLY_DONE, 250, "", "2..0 x", 1, 0},
    {"enhanced glued", "250 2.0.0x\r\n", REPLY_DONE, 250, "", "2.0.0x", 1, 0},
    {"enhanced trailing dot", "250 2.0.0. x\r\n", REPLY_DONE, 250, "", "2.0.0. x", 1, 0},
    {"enhanced two digit class", "250 22.0.0 x\r\n", REPLY_DONE, 250, "", "22.0.0 x", 1, 0},
    {"tab kept", "250 a\tb\r\n", REPLY_DONE, 250, "", "a\tb", 1, 0},
    {"utf-8 kept", "250 caf\xc3\xa9\r\n", REPLY_DONE, 250, "", "caf\xc3\xa9", 1, 0},
    {"two replies", "250 a\r\n354 go\r\n", REPLY_DONE, 250, "", "a", 1, 7},
    {"multi then next", "250-a\r\n250 b\r\n221 bye\r\n", REPLY_DONE, 250, "", "a\nb", 2, 14},
    {"partial line", "250 ok", REPLY_NEED, 0, NULL, NULL, 0, 0},
    {"closes mid-reply", "250-a\r\n250-b\r\n", REPLY_NEED, 0, NULL, NULL, 0, 0},
    {"CR without LF yet", "250 ok\r", REPLY_NEED, 0, NULL, NULL, 0, 0},
    {"1xx", "150 go ahead\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 1},
    {"6xx", "600 x\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 1},
    {"0xx", "099 x\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 1},
    {"two digits", "25 x\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 3},
    {"letter in code", "2x0 ok\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 2},
    {"bad separator", "250x\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 4},
    {"empty line", "\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 1},
    {"text first", "ok 250\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 1},
    {"mismatched continuation", "250-a\r\n251 b\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 10},
    {"mismatched class", "250-a\r\n550 b\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 8},
    {"bare LF", "250 ok\n", REPLY_ERROR, 0, NULL, NULL, 0, 0},
    {"bare LF continuation", "250-a\n250 b\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 6},
    {"bare CR", "250 o\rk\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 7},
    {"HTTP", "HTTP/1.1 400 Bad Request\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 1},
    {"SSH banner", "SSH-2.0-OpenSSH_9.2\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 1},
    {"code then CR", "250\rx\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 5},
    {"bad separator later", "250-a\r\n250+b\r\n", REPLY_ERROR, 0, NULL, NULL, 0, 11},
};

/* Feeds in[0..len) in pieces of `step` octets (0: whole) until the parser
 * says something other than NEED; returns that, *consumed in total. */
static enum reply_result
feed_steps(struct reply_parser *rp, const char *in, size_t len, size_t step, size_t *consumed,
           struct reply *out)
{
    enum reply_result r = REPLY_NEED;
    size_t pos = 0;

    while (pos < len) {
        size_t n = step == 0 || len - pos < step ? len - pos : step;
        size_t used = 0;

        r = reply_parse(rp, in + pos, n, &used, out);
        assert_true(used <= n);
        pos += used;
        if (r != REPLY_NEED)
            break;
        assert_int_equal(used, n);
    }
    *consumed = pos;
    return r;
}

static void
run_case(const struct reply_case *c, size_t step)
{
    struct reply_parser rp;
    struct reply out;
    size_t len = strlen(c->in);
    size_t consumed = 0;
    enum reply_result r;

    print_message("case \"%s\" step %zu\n", c->name, step);
    memset(&out, 0x55, sizeof(out));
    reply_parser_init(&rp);
    r = feed_steps(&rp, c->in, len, step, &consumed, &out);
    assert_int_equal(r, c->want);
    assert_int_equal(consumed, c->want_consumed != 0 ? c->want_consumed : len);
    if (r != REPLY_DONE)
        return;
    assert_int_equal(out.code, c->want_code);
    assert_string_equal(out.enh, c->want_enh);
    assert_string_equal(out.text, c->want_text);
    assert_int_equal(out.nlines, c->want_nlines);
}

static void
test_reply_table(void **state)
{
    static const size_t steps[] = {0, 1, 3};

    (void)state;
    for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
        for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++)
            run_case(&reply_cases[i], steps[s]);
    }
}

static void
test_reply_nul(void **state)
{
    static const char in[] = "250 a\0b\r\n";
    struct reply_parser rp;
    struct reply out;
    size_t used;

    (void)state;
    reply_parser_init(&rp);
    assert_int_equal(reply_parse(&rp, in, sizeof(in) - 1, &used, &out), REPLY_ERROR);
    assert_int_equal(used, 6);
}

/* A line of exactly REPLY_LINE_MAX octets with its CRLF is fine; one more
 * is an error, found before the line ends. */
static void
test_reply_line_max(void **state)
{
    char in[REPLY_LINE_MAX + 8];
    struct reply_parser rp;
    struct reply out;
    size_t used;

    (void)state;
    memcpy(in, "250 ", 4);
    memset(in + 4, 'x', REPLY_LINE_MAX - 6);
    memcpy(in + REPLY_LINE_MAX - 2, "\r\n", 2);
    reply_parser_init(&rp);
    assert_int_equal(reply_parse(&rp, in, REPLY_LINE_MAX, &used, &out), REPLY_DONE);
    assert_int_equal(used, REPLY_LINE_MAX);
    assert_int_equal(strlen(out.text), REPLY_LINE_MAX - 6);

    memset(in + 4, 'x', REPLY_LINE_MAX - 5);
    memcpy(in + REPLY_LINE_MAX - 1, "\r\n", 2);
    reply_parser_init(&rp);
    assert_int_equal(reply_parse(&rp, in, REPLY_LINE_MAX + 1, &used, &out), REPLY_ERROR);
    assert_int_equal(used, REPLY_LINE_MAX);

    /* endless line fed in pieces: error once the buffer is full */
    memset(in, 'x', sizeof(in));
    memcpy(in, "250 ", 4);
    reply_parser_init(&rp);
    assert_int_equal(reply_parse(&rp, in, 500, &used, &out), REPLY_NEED);
    assert_int_equal(reply_parse(&rp, in, 500, &used, &out), REPLY_ERROR);
}

/* Text over REPLY_TEXT_MAX is truncated, never overflowed. */
static void
test_reply_text_truncated(void **state)
{
    char line[700];
    struct reply_parser rp;
    struct reply out;
    size_t used;

    (void)state;
    memset(line, 'y', sizeof(line));
    memcpy(line, "250-", 4);
    memcpy(line + sizeof(line) - 2, "\r\n", 2);
    reply_parser_init(&rp);
    for (int i = 0; i < 5; i++)
        assert_int_equal(reply_parse(&rp, line, sizeof(line), &used, &out), REPLY_NEED);
    assert_int_equal(reply_parse(&rp, "250 end\r\n", 9, &used, &out), REPLY_DONE);
    assert_int_equal(out.nlines, 6);
    assert_int_equal(strlen(out.text), REPLY_TEXT_MAX - 1);
    assert_int_equal(out.text[sizeof(line) - 6], '\n');
}

/* After an error the parser starts afresh; after DONE too. */
static void
test_reply_sequence(void **state)
{
    static const char in[] = "250-a\r\n250 b\r\n354 go ahead\r\n221 2.0.0 Bye\r\n";
    static const int want[] = {250, 354, 221};
    struct reply_parser rp;
    struct reply out;
    size_t pos = 0;

    (void)state;
    reply_parser_init(&rp);
    for (size_t i = 0; i < 3; i++) {
        size_t used;

        assert_int_equal(reply_parse(&rp, in + pos, sizeof(in) - 1 - pos, &used, &out), REPLY_DONE);
        assert_int_equal(out.code, want[i]);
        pos += used;
    }
    assert_int_equal(pos, sizeof(in) - 1);
    assert_string_equal(out.enh, "2.0.0");
    assert_string_equal(out.text, "Bye");

    assert_int_equal(reply_parse(&rp, "xyz\r\n", 5, &pos, &out), REPLY_ERROR);
    assert_int_equal(reply_parse(&rp, "250 ok\r\n", 8, &pos, &out), REPLY_DONE);
    assert_int_equal(out.code, 250);
}

static void
parse_one(const char *in, struct reply *out)
{
    struct reply_parser rp;
    size_t used;

    reply_parser_init(&rp);
    assert_int_equal(reply_parse(&rp, in, strlen(in), &used, out), REPLY_DONE);
    assert_int_equal(used, strlen(in));
}

/* As Dovecot 2.3.19 answers LHLO (captured), plus a SIZE line. */
static void
test_reply_keywords(void **state)
{
    struct reply r;
    const char *param = NULL;
    size_t plen = 99;

    (void)state;
    parse_one("250-vm\r\n250-8BITMIME\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n"
              "250-PIPELINING\r\n250-SIZE 10240000\r\n250 STARTTLS\r\n",
              &r);
    assert_true(reply_has_keyword(&r, "PIPELINING", NULL, NULL));
    assert_true(reply_has_keyword(&r, "pipelining", NULL, NULL));
    assert_true(reply_has_keyword(&r, "8BITMIME", &param, &plen));
    assert_int_equal(plen, 0);
    assert_true(reply_has_keyword(&r, "ENHANCEDSTATUSCODES", NULL, NULL));
    assert_true(reply_has_keyword(&r, "STARTTLS", NULL, NULL));
    assert_true(reply_has_keyword(&r, "SIZE", &param, &plen));
    assert_int_equal(plen, 8);
    assert_memory_equal(param, "10240000", 8);
    assert_false(reply_has_keyword(&r, "vm", NULL, NULL)); /* the greeting line */
    assert_false(reply_has_keyword(&r, "PIPE", NULL, NULL));
    assert_false(reply_has_keyword(&r, "PIPELINING2", NULL, NULL));
    assert_false(reply_has_keyword(&r, "SMTPUTF8", NULL, NULL));
    assert_false(reply_has_keyword(&r, "", NULL, NULL));

    parse_one("250 PIPELINING\r\n", &r); /* one line: only a greeting */
    assert_false(reply_has_keyword(&r, "PIPELINING", NULL, NULL));

    parse_one("250-host\r\n250 AUTH  PLAIN LOGIN\r\n", &r);
    assert_true(reply_has_keyword(&r, "auth", &param, &plen));
    assert_int_equal(plen, 11);
    assert_memory_equal(param, "PLAIN LOGIN", 11);
}

struct summary_case {
    const char *in;
    size_t size;
    const char *want;
};

static void
test_reply_summary(void **state)
{
    static const struct summary_case cases[] = {
        {"250 2.0.0 <a@example.test> v97q Saved\r\n", 256, "250 2.0.0 <a@example.test> v97q Saved"},
        {"550-5.1.1 no such user\r\n550 5.1.1 see docs\r\n", 256, "550 5.1.1 no such user"},
        {"451 try again\r\n", 256, "451 try again"},
        {"250\r\n", 256, "250"},
        {"250 2.0.0\r\n", 256, "250 2.0.0"},
        {"250 a\tb\x7f\x1b[31m\r\n", 256, "250 a?b??[31m"},
        {"250 2.0.0 long text\r\n", 6, "250 2"},
        {"250 2.0.0 long text\r\n", 1, ""},
        {"250-\r\n250 second\r\n", 256, "250"},
    };
    char buf[256];
    struct reply r;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        parse_one(cases[i].in, &r);
        memset(buf, 'Z', sizeof(buf));
        assert_ptr_equal(reply_summary(&r, buf, cases[i].size), buf);
        assert_string_equal(buf, cases[i].want);
    }
    memset(buf, 'Z', sizeof(buf));
    reply_summary(&r, buf, 0);
    assert_int_equal(buf[0], 'Z');
}

/* Golden: data/reply/NAME.in is a server transcript; NAME.out has one line
 * per reply ("code|enh|nlines|text" with newlines as "\n") or "ERROR". */
static size_t
golden_render(const char *in, size_t len, size_t step, char *out, size_t outsize)
{
    struct reply_parser rp;
    struct reply r;
    size_t pos = 0, olen = 0;

    reply_parser_init(&rp);
    while (pos < len) {
        size_t used;
        enum reply_result res = feed_steps(&rp, in + pos, len - pos, step, &used, &r);

        pos += used;
        if (res == REPLY_NEED)
            break;
        if (res == REPLY_ERROR) {
            olen += (size_t)snprintf(out + olen, outsize - olen, "ERROR\n");
            break;
        }
        olen += (size_t)snprintf(out + olen, outsize - olen, "%d|%s|%u|", r.code, r.enh, r.nlines);
        for (const char *t = r.text; *t != '\0' && olen + 3 < outsize; t++) {
            if (*t == '\n') {
                out[olen++] = '\\';
                out[olen++] = 'n';
            } else {
                out[olen++] = *t;
            }
        }
        olen += (size_t)snprintf(out + olen, outsize - olen, "\n");
        assert_true(olen < outsize);
    }
    return olen;
}

static char *
slurp(const char *dir, const char *name, const char *ext, size_t *len)
{
    char path[512];
    FILE *f;
    char *buf = malloc(65536);

    assert_non_null(buf);
    snprintf(path, sizeof(path), "%s/reply/%s.%s", dir, name, ext);
    f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    *len = fread(buf, 1, 65535, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void
test_reply_golden(void **state)
{
    static const char *const names[] = {"dovecot_session", "dovecot_refusals", "garbage"};
    const char *dir = getenv("MXD_TEST_DATA");
    char got[8192];

    (void)state;
    if (dir == NULL)
        dir = "tests/unit/data";
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t inlen, wantlen;
        char *in = slurp(dir, names[i], "in", &inlen);
        char *want = slurp(dir, names[i], "out", &wantlen);

        for (size_t step = 0; step < 3; step++) {
            size_t n = golden_render(in, inlen, step, got, sizeof(got));

            got[n] = '\0';
            print_message("golden %s step %zu\n", names[i], step);
            assert_string_equal(got, want);
        }
        free(in);
        free(want);
    }
}

/* Issue 14 item 8: the one sanitizer for text from outside. */
static void
test_reply_issue14_text_clean(void **state)
{
    static const struct {
        const char *in;
        size_t size;
        bool utf8;
        const char *want;
    } cases[] = {
        {"plain text", 64, false, "plain text"},
        {"a\r\n250 2.0.0 x\r\n354 go", 64, false, "a??250 2.0.0 x??354 go"},
        {"tab\there\x7f\x1b[0m", 64, false, "tab?here??[0m"},
        {"  lots   of    space  ", 64, false, "lots of space"},
        {"caf\xc3\xa9", 64, false, "caf??"},
        {"caf\xc3\xa9", 64, true, "caf\xc3\xa9"},
        {"bad \xc3( \xed\xa0\x80", 64, true, "bad ?( ???"},
        {"abcdef", 4, false, "abc"},
        {"ab\xc3\xa9", 4, true, "ab"}, /* never half a UTF-8 sequence */
        {"x", 1, false, ""},
        {"", 8, false, ""},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n =
            reply_text_clean(out, cases[i].size, cases[i].in, strlen(cases[i].in), cases[i].utf8);

        if (strcmp(out, cases[i].want) != 0 || n != strlen(out))
            fail_msg("case %zu: got \"%s\" (%zu)", i, out, n);
    }
    /* NUL in the middle is a control like the others */
    assert_int_equal(reply_text_clean(out, sizeof(out), "a\0b", 3, false), 3);
    assert_string_equal(out, "a?b");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_table),
        cmocka_unit_test(test_reply_nul),
        cmocka_unit_test(test_reply_line_max),
        cmocka_unit_test(test_reply_text_truncated),
        cmocka_unit_test(test_reply_sequence),
        cmocka_unit_test(test_reply_keywords),
        cmocka_unit_test(test_reply_summary),
        cmocka_unit_test(test_reply_golden),
        cmocka_unit_test(test_reply_issue14_text_clean),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
