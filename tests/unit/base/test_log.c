/* Unit tests for log: splitting a line into the event and its key=value
 * fields (what becomes MXD_* journal fields), log_esc, and the loop
 * thread's batched stderr lines. */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"

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

/* Issue 14 item 12: an address is one field whatever it holds; a quoted
 * local part cannot forge relay= or reply= for a reader that splits on
 * key= and key="...". */
static void
test_log_issue14_addr_one_field(void **state)
{
    char buf[256], line[512];
    struct log_field f[8];
    const char *ev;
    size_t elen, n;

    (void)state;
    assert_string_equal(log_addr(buf, sizeof(buf), "a@b.example"), "<a@b.example>");
    assert_string_equal(log_addr(buf, sizeof(buf), ""), "<>");
    assert_string_equal(log_addr(buf, sizeof(buf), "\"x> relay=evil reply=250\"@example.test"),
                        "\"<\\\"x> relay=evil reply=250\\\"@example.test>\"");
    /* UTF-8 is escaped as everywhere else (item 18: one rule). */
    assert_string_equal(log_addr(buf, sizeof(buf), "j\xc3\xb6@example.test"),
                        "<j\\xc3\\xb6@example.test>");
    snprintf(line, sizeof(line), "delivered to=%s relay=lmtp attempts=1",
             log_addr(buf, sizeof(buf), "\"x> relay=evil\"@example.test"));
    n = log__fields(line, &ev, &elen, f, 8);
    assert_int_equal(n, 3);
    assert_int_equal(f[1].klen, 5);
    assert_memory_equal(f[1].key, "relay", 5);
    assert_int_equal(f[1].vlen, 4);
    assert_memory_equal(f[1].val, "lmtp", 4);
    /* Too long for the buffer: still one quoted field, cut with "...". */
    {
        char small[24];
        const char *r = log_addr(small, sizeof(small), "a very long local part@example.test");

        assert_true(r[0] == '"' && r[strlen(r) - 1] == '"');
        assert_non_null(strstr(r, "..."));
    }
}

/* What is waiting on the pipe, without blocking; "" when nothing. */
static size_t
drain(int fd, char *buf, size_t size)
{
    ssize_t n = read(fd, buf, size - 1);

    if (n < 0) {
        assert_int_equal(errno, EAGAIN);
        n = 0;
    }
    buf[n] = '\0';
    return (size_t)n;
}

static void
test_log_batch(void **state)
{
    char buf[65536];
    int p[2], saved = dup(2);

    (void)state;
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    assert_true(fcntl(p[0], F_SETPIPE_SZ, 1024 * 1024) >= 256 * 1024);
    assert_true(dup2(p[1], 2) == 2);
    log_init();

    /* Not batching: each line is out at once. */
    log_msg(LOG_INFO, "Q1", "test", "alone n=%d", 1);
    drain(p[0], buf, sizeof(buf));
    assert_non_null(strstr(buf, " info Q1 test alone n=1\n"));

    /* Batching: info lines wait for log_flush, then come in one write. */
    log_batch_begin();
    log_msg(LOG_INFO, NULL, "test", "first");
    log_msg(LOG_INFO, NULL, "test", "second");
    assert_int_equal(drain(p[0], buf, sizeof(buf)), 0);
    log_flush();
    drain(p[0], buf, sizeof(buf));
    assert_non_null(strstr(buf, " info - test first\n"));
    assert_non_null(strstr(buf, " info - test second\n"));
    assert_true(strstr(buf, "first") < strstr(buf, "second"));

    /* A warning flushes what waits, in order, with itself. */
    log_msg(LOG_INFO, NULL, "test", "before");
    log_msg(LOG_WARN, NULL, "test", "careful");
    drain(p[0], buf, sizeof(buf));
    assert_non_null(strstr(buf, "before"));
    assert_non_null(strstr(buf, " warn - test careful\n"));
    assert_true(strstr(buf, "before") < strstr(buf, "careful"));

    /* More than the batch holds (64 KiB): the older lines go out before
     * log_flush, and none is lost or reordered. */
    {
        static char all[256 * 1024];
        size_t n;
        const char *at = all;

        for (int i = 0; i < 1000; i++)
            log_msg(LOG_INFO, NULL, "test", "line=%04d %0100d", i, 0);
        n = drain(p[0], all, sizeof(all));
        assert_true(n > 0);
        log_flush();
        n += drain(p[0], all + n, sizeof(all) - n);
        for (int i = 0; i < 1000; i++) {
            char want[32];

            snprintf(want, sizeof(want), "line=%04d ", i);
            if ((at = strstr(at, want)) == NULL)
                fail_msg("%s missing or out of order", want);
        }
        assert_int_equal(all[n - 1], '\n');
    }

    /* Overlong lines are cut, and still end with a newline. */
    memset(buf, 'x', 5000);
    buf[5000] = '\0';
    log_msg(LOG_INFO, NULL, "test", "long=%s", buf);
    log_batch_end();
    {
        size_t n = drain(p[0], buf, sizeof(buf));

        assert_true(n > 4000 && n < 4400);
        assert_int_equal(buf[n - 1], '\n');
        assert_null(memchr(buf, '\n', n - 1));
    }

    /* After log_batch_end, lines are out at once again. */
    log_msg(LOG_INFO, NULL, "test", "after");
    drain(p[0], buf, sizeof(buf));
    assert_non_null(strstr(buf, "after"));

    assert_true(dup2(saved, 2) == 2);
    close(saved);
    close(p[0]);
    close(p[1]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_fields), cmocka_unit_test(test_log_fields_bounded),
        cmocka_unit_test(test_log_esc),    cmocka_unit_test(test_log_issue14_addr_one_field),
        cmocka_unit_test(test_log_batch),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
