/* Unit tests for mime7: the header scan (SMTPUTF8 needed?) and the 8-bit
 * to 7-bit converter (issue 14). Each conversion case runs fed whole and
 * one octet at a time: the output must be the same. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mime7_out.h"
#include "msg/mime7.h"

/* Converts in pieces of step octets (0: whole); *err gets the error. */
static struct m7out
convert(const char *in, size_t len, size_t step, const char **err, bool *saw8)
{
    struct m7out o = {0};

    (void)m7out_convert(in, len, step, &o, err, saw8);
    return o;
}

struct conv_case {
    const char *name;
    const char *in;
    const char *want; /* NULL: same as in */
    const char *err;  /* NULL: converts; else a part of the error */
};

#define MV   "MIME-Version: 1.0\r\n"
#define CT8  "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
#define QPCT "Content-Transfer-Encoding: quoted-printable\r\n"
#define UML                                                                                        \
    "Gr\xc3\xbc\xc3\x9f"                                                                           \
    "e" /* Grüße */
#define L80 "12345678901234567890123456789012345678901234567890123456789012345678901234567890"

static const struct conv_case conv_cases[] = {
    {"7-bit, no MIME: unchanged", "Subject: a\r\n\r\nbody\r\n.\r\n", NULL, NULL},
    {"no MIME-Version, 8-bit body", "Subject: a\r\n\r\n" UML "\r\n", NULL, "without MIME-Version"},
    {"8-bit header", MV "Subject: " UML "\r\n" CT8 "\r\nx\r\n", NULL, "header"},
    {"8-bit header, no body", "Subject: " UML "\r\n", NULL, "header"},
    {"text 8bit to quoted-printable, CTE moved to the end of the header",
     MV CT8 "Subject: x\r\n\r\n" UML "\r\n",
     MV "Content-Type: text/plain; charset=utf-8\r\nSubject: x\r\n" QPCT "\r\nGr=C3=BC=C3=9Fe\r\n",
     NULL},
    {"quoted-printable rules: =, trailing white space, bare CR, bare LF, long lines",
     MV CT8 "\r\na=b \r\ntab\t\r\n\r\nx\ry\n" L80 "\r\n" UML "  x \r\n.\r\n",
     MV "Content-Type: text/plain; charset=utf-8\r\n" QPCT "\r\na=3Db=20\r\ntab=09\r\n\r\nx=0Dy\r\n"
        "123456789012345678901234567890123456789012345678901234567890123456789012345=\r\n"
        "67890\r\nGr=C3=BC=C3=9Fe  x=20\r\n.\r\n",
     NULL},
    {"trailing white space at the very end", MV CT8 "\r\n" UML " ",
     MV "Content-Type: text/plain; charset=utf-8\r\n" QPCT "\r\nGr=C3=BC=C3=9Fe=20", NULL},
    {"text labelled 7bit with 8-bit", MV "Content-Type: text/plain\r\n\r\n" UML "\r\n", NULL,
     "labelled 7bit"},
    {"base64 part with 8-bit", MV "Content-Transfer-Encoding: base64\r\n\r\n" UML "\r\n", NULL,
     "encoded"},
    {"multipart: the 8bit text part converted, the rest as it was",
     MV "Content-Type: multipart/mixed; boundary=\"b 1\"\r\n\r\npreamble\r\n"
        "--b 1\r\n" CT8 "\r\n" UML "\r\n"
        "--b 1\r\nContent-Type: application/octet-stream\r\n\r\nAAAA\r\n"
        "--b 1--\r\nepilogue\r\n",
     MV "Content-Type: multipart/mixed; boundary=\"b 1\"\r\n\r\npreamble\r\n"
        "--b 1\r\nContent-Type: text/plain; charset=utf-8\r\n" QPCT "\r\nGr=C3=BC=C3=9Fe\r\n"
        "--b 1\r\nContent-Type: application/octet-stream\r\n\r\nAAAA\r\n"
        "--b 1--\r\nepilogue\r\n",
     NULL},
    {"a part without a header defaults to text/plain 7bit",
     MV "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" UML "\r\n--b--\r\n", NULL,
     "labelled 7bit"},
    {"8-bit in a non-text part",
     MV "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" UML
        "\r\n--b--\r\n",
     NULL, "non-text"},
    {"8-bit in a preamble",
     MV "Content-Type: multipart/mixed; boundary=b\r\n\r\n" UML "\r\n--b\r\n\r\nx\r\n--b--\r\n",
     NULL, "outside the parts"},
    {"8-bit in an epilogue",
     MV "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n" UML "\r\n",
     NULL, "outside the parts"},
    {"an outer boundary closes the inner multipart",
     MV "Content-Type: multipart/mixed; boundary=out\r\n\r\n"
        "--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
        "--in\r\n" CT8 "\r\n" UML "\r\n"
        "--out\r\n" CT8 "\r\n" UML "\r\n--out--\r\n",
     MV "Content-Type: multipart/mixed; boundary=out\r\n\r\n"
        "--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
        "--in\r\nContent-Type: text/plain; charset=utf-8\r\n" QPCT "\r\nGr=C3=BC=C3=9Fe\r\n"
        "--out\r\nContent-Type: text/plain; charset=utf-8\r\n" QPCT
        "\r\nGr=C3=BC=C3=9Fe\r\n--out--\r\n",
     NULL},
    {"message/rfc822 8bit: followed inside, relabelled 7bit",
     MV "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Subject: inner\r\n" MV CT8 "\r\n" UML "\r\n--b--\r\n",
     MV "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        "Subject: inner\r\n" MV "Content-Type: text/plain; charset=utf-8\r\n" QPCT
        "\r\nGr=C3=BC=C3=9Fe\r\n--b--\r\n",
     NULL},
    {"attached message without MIME-Version",
     MV "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n" UML "\r\n", NULL,
     "without MIME-Version"},
    {"8-bit header of an attached message",
     MV "Content-Type: message/rfc822\r\n\r\nSubject: " UML "\r\n\r\nx\r\n", NULL, "header"},
    {"digest parts default to message/rfc822",
     MV "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: " UML
        "\r\n\r\nx\r\n--d--\r\n",
     NULL, "header"},
    {"Content-Type with comments and case",
     MV "Content-Type: (c) MULTIPART/Mixed (x) ; (y) BOUNDARY = \"q\\\"b\"\r\n\r\n"
        "--q\"b\r\n" CT8 "\r\n" UML "\r\n--q\"b--\r\n",
     MV "Content-Type: (c) MULTIPART/Mixed (x) ; (y) BOUNDARY = \"q\\\"b\"\r\n\r\n"
        "--q\"b\r\nContent-Type: text/plain; charset=utf-8\r\n" QPCT
        "\r\nGr=C3=BC=C3=9Fe\r\n--q\"b--\r\n",
     NULL},
    {"folded Content-Transfer-Encoding",
     MV "Content-Transfer-Encoding:\r\n 8bit\r\n\r\n" UML "\r\n", MV QPCT "\r\nGr=C3=BC=C3=9Fe\r\n",
     NULL},
    {"two Content-Transfer-Encodings: unreadable",
     MV CT8 "Content-Transfer-Encoding: 8bit\r\n\r\n" UML "\r\n", NULL, "cannot be read"},
    {"a header that ends without an empty line", MV CT8 UML "\r\n",
     MV "Content-Type: text/plain; charset=utf-8\r\n" QPCT "\r\nGr=C3=BC=C3=9Fe\r\n", NULL},
    {"LF line ends", "MIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\n\n" UML "\n",
     "MIME-Version: 1.0\n" QPCT "\nGr=C3=BC=C3=9Fe\r\n", NULL},
};

static void
test_convert_table(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof(conv_cases) / sizeof(conv_cases[0]); c++) {
        const struct conv_case *tc = &conv_cases[c];
        const char *want = tc->want != NULL ? tc->want : tc->in;
        size_t steps[] = {0, 1, 7};

        print_message("%s\n", tc->name);
        for (size_t s = 0; s < 3; s++) {
            const char *err;
            bool saw8;
            struct m7out o = convert(tc->in, strlen(tc->in), steps[s], &err, &saw8);

            assert_int_equal(saw8, mime7_has_8bit(tc->in, strlen(tc->in)));
            if (tc->err != NULL) {
                if (err == NULL || strstr(err, tc->err) == NULL)
                    fail_msg("%s: error \"%s\", want \"%s\"", tc->name, err ? err : "(none)",
                             tc->err);
            } else {
                if (err != NULL)
                    fail_msg("%s: unexpected error \"%s\"", tc->name, err);
                assert_false(mime7_has_8bit(o.data, o.len));
                if (o.len != strlen(want) || memcmp(o.data, want, o.len) != 0)
                    fail_msg("%s (step %zu):\ngot  \"%s\"\nwant \"%s\"", tc->name, steps[s], o.data,
                             want);
            }
            free(o.data);
        }
    }
}

/* Memory stays bounded: a 1 MiB 8-bit text part and a 100 KiB line. */
static void
test_convert_big(void **state)
{
    static const char head[] = MV CT8 "\r\n";
    size_t n = 1 << 20;
    char *in = malloc(sizeof(head) + n + 100 * 1024 + 4);
    size_t len = sizeof(head) - 1;
    const char *err;
    bool saw8;
    struct m7out o;

    (void)state;
    assert_non_null(in);
    memcpy(in, head, len);
    for (size_t i = 0; i < n; i++)
        in[len++] = i % 64 == 63 ? '\n' : (char)(0xa0 + i % 16);
    memset(in + len, 'x', 100 * 1024);
    len += 100 * 1024;
    o = convert(in, len, 4096, &err, &saw8);
    assert_null(err);
    assert_false(mime7_has_8bit(o.data, o.len));
    /* soft breaks keep every line within 76 octets */
    for (char *p = o.data, *nl; (nl = strstr(p, "\r\n")) != NULL; p = nl + 2)
        assert_true(nl - p <= 76);
    free(o.data);
    free(in);
}

struct hscan_case {
    const char *in;
    bool eight, done;
};

static const struct hscan_case hscan_cases[] = {
    {"Subject: a\r\n\r\n" UML "\r\n", false, true},
    {"Subject: " UML "\r\n\r\nbody\r\n", true, true},
    {"Subject: a\n\n" UML "\n", false, true},
    {"\r\n" UML, false, true},
    {"Subject: a\r\n X-" UML "\r\n", true, false},
    {"Subject: a\r\n \r\nTo: " UML "\r\n\r\n", true, true}, /* " \r\n" is no empty line */
};

static void
test_hscan(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof(hscan_cases) / sizeof(hscan_cases[0]); c++) {
        const char *in = hscan_cases[c].in;
        struct mime7_hscan whole = {0}, bytes = {0};

        mime7_hscan_feed(&whole, in, strlen(in));
        for (size_t i = 0; in[i] != '\0'; i++)
            mime7_hscan_feed(&bytes, in + i, 1);
        print_message("hscan case %zu\n", c);
        assert_int_equal(whole.eight, hscan_cases[c].eight);
        assert_int_equal(whole.done, hscan_cases[c].done);
        assert_int_equal(bytes.eight, whole.eight);
        assert_int_equal(bytes.done, whole.done);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_table),
        cmocka_unit_test(test_convert_big),
        cmocka_unit_test(test_hscan),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
