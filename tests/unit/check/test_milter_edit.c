/* Unit tests for milter_edit: the header edits by the milter protocol's
 * index rules (CHGHEADER: the n-th field of that name, empty deletes,
 * missing adds; INSHEADER: a position; ADDHEADER: after the last field)
 * and the CRLF state of a replacement body across chunks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "check/milter_edit.h"

static const char raw[] = "From: a\r\nSubject: old\r\nX-T: one\r\nX-T: two\r\n\tfolded\r\n"
                          "x-t: three\r\n";

static void
expect_text(struct milter_head *h, const char *want)
{
    size_t len;
    char *t = milter_head_text(h, &len);

    assert_string_equal(t, want);
    assert_int_equal(len, strlen(want));
    free(t);
}

static void
test_parse_keeps_folding(void **state)
{
    struct milter_head *h = milter_head_new();

    (void)state;
    milter_head_parse(h, raw, sizeof(raw) - 1);
    assert_int_equal(milter_head_count(h), 5);
    expect_text(h, raw);
    milter_head_free(h);
}

static void
test_change_index_and_case(void **state)
{
    struct milter_head *h = milter_head_new();

    (void)state;
    milter_head_parse(h, raw, sizeof(raw) - 1);
    assert_int_equal(milter_head_change(h, 2, "X-T", "new"), 0); /* the folded one */
    assert_int_equal(milter_head_change(h, 3, "x-T", ""), 0);    /* any case: deleted */
    assert_int_equal(milter_head_change(h, 0, "subject", "s"), 0);
    expect_text(h, "From: a\r\nsubject: s\r\nX-T: one\r\nX-T: new\r\n");
    /* no 5th X-T: added at the end; an empty value for a missing one: nothing */
    assert_int_equal(milter_head_change(h, 5, "X-T", "five"), 0);
    assert_int_equal(milter_head_change(h, 1, "X-None", ""), 0);
    expect_text(h, "From: a\r\nsubject: s\r\nX-T: one\r\nX-T: new\r\nX-T: five\r\n");
    milter_head_free(h);
}

static void
test_insert_and_add(void **state)
{
    struct milter_head *h = milter_head_new();

    (void)state;
    milter_head_parse(h, "A: 1\r\nB: 2\r\n", 12);
    assert_int_equal(milter_head_insert(h, 0, "Top", "t"), 0);
    assert_int_equal(milter_head_insert(h, 2, "Mid", "m"), 0);
    assert_int_equal(milter_head_insert(h, 99, "End", "e"), 0);
    assert_int_equal(milter_head_add(h, "Last", "l\n\tfolded"), 0);
    expect_text(h, "Top: t\r\nA: 1\r\nMid: m\r\nB: 2\r\nEnd: e\r\nLast: l\r\n\tfolded\r\n");
    assert_int_equal(milter_head_add(h, "Bad Name", "x"), MXD_EINVAL);
    milter_head_free(h);
}

static void
test_crlf_across_chunks(void **state)
{
    struct milter_crlf st = {false};
    char out[64];
    size_t n;

    (void)state;
    n = milter_crlf(&st, "a\nb\r", 4, out);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "a\r\nb\r", 5);
    n = milter_crlf(&st, "\nc\n", 3, out); /* the CR came in the last chunk */
    assert_int_equal(n, 4);
    assert_memory_equal(out, "\nc\r\n", 4);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_keeps_folding),
        cmocka_unit_test(test_change_index_and_case),
        cmocka_unit_test(test_insert_and_add),
        cmocka_unit_test(test_crlf_across_chunks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
