/*
 * test_store_greylist: the store's greylist jobs (schema 004) against a
 * real database in a temporary directory, driven by a real uv loop
 * (store_fixture.h), on a fake clock: the rules carry `now`. Every test
 * ends with uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "base/util.h"
#include "store/db.h"
#include "store/store.h"
#include "store/store_impl.h" /* the store's SQL, for EXPLAIN QUERY PLAN */
/* the fixture's helpers for delivery jobs are not used here */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "store_fixture.h"
#pragma GCC diagnostic pop

#define T0     1700000000
#define DELAY  300
#define WINDOW 86400
#define TTL    (35 * 86400)

#define NET  "net:192.0.2.0/24"
#define FROM "list-bounces@example.org"
#define TO   "user@example.test"

/* What a greylist callback saw. */
struct gres {
    struct fx *fx;
    int calls;
    int status;
    bool got_answer;
    struct store_grey_answer a;
};

static void
grey_cb(void *arg, int status, const struct store_grey_answer *a)
{
    struct gres *r = arg;

    r->calls++;
    r->status = status;
    r->got_answer = a != NULL;
    if (a != NULL)
        r->a = *a;
    r->fx->seq++;
}

static struct store_grey_rules
rules_at(int64_t now)
{
    return (struct store_grey_rules){.now = now, .delay = DELAY, .window = WINDOW, .ttl = TTL};
}

/* One attempt of (client, FROM, TO) at now; its answer (status 0). */
static struct store_grey_answer
attempt(struct fx *fx, const char *client, int64_t now)
{
    struct store_grey_rules r = rules_at(now);
    struct gres g = {.fx = fx};
    int want = fx->seq + 1;

    store_greylist_async(fx->st, client, FROM, TO, &r, grey_cb, &g);
    run_until(fx, want);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, 0);
    assert_true(g.got_answer);
    return g.a;
}

static void
want(const struct store_grey_answer *a, bool pass, enum store_grey_state state, bool written)
{
    if (a->pass != pass || a->state != state || a->written != written)
        fail_msg("got pass=%d state=%s written=%d, want pass=%d state=%s written=%d", a->pass,
                 store_grey_state_name(a->state), a->written, pass, store_grey_state_name(state),
                 written);
}

/* The row's column for the triplet (client, FROM, TO); -1 for NULL. */
static int64_t
col(const struct fx *fx, const char *client, const char *column)
{
    return sql_int(fx,
                   "SELECT coalesce(%s, -1) FROM greylist WHERE client = '%s' AND sender = '%s' "
                   "AND rcpt = '%s'",
                   column, client, FROM, TO);
}

/* ---- the rules ---------------------------------------------------------- */

static void
test_first_attempt_defers(void **state)
{
    struct fx *fx = *state;
    struct store_grey_answer a;

    open_store(fx);
    a = attempt(fx, NET, T0);
    want(&a, false, STORE_GREY_NEW, true);
    assert_false(a.expired);
    assert_int_equal(a.first_seen, T0);
    assert_int_equal(a.expires, T0 + WINDOW);
    assert_int_equal(col(fx, NET, "first_seen"), T0);
    assert_int_equal(col(fx, NET, "last_seen"), T0);
    assert_int_equal(col(fx, NET, "passed"), -1);
    assert_int_equal(col(fx, NET, "expires"), T0 + WINDOW);
    close_store(fx);
}

static void
test_early_retry_defers(void **state)
{
    struct fx *fx = *state;
    struct store_grey_answer a;

    open_store(fx);
    attempt(fx, NET, T0);
    /* just before the delay: still 451, and the delay still runs from T0,
     * answered by the reader without a write */
    for (int64_t t = T0; t < T0 + DELAY; t += DELAY / 3) {
        a = attempt(fx, NET, t);
        want(&a, false, STORE_GREY_EARLY, false);
        assert_int_equal(a.first_seen, T0);
    }
    a = attempt(fx, NET, T0 + DELAY - 1);
    want(&a, false, STORE_GREY_EARLY, false);
    assert_int_equal(col(fx, NET, "first_seen"), T0);
    assert_int_equal(col(fx, NET, "last_seen"), T0);
    assert_int_equal(col(fx, NET, "passed"), -1);
    close_store(fx);
}

static void
test_retry_after_delay_passes(void **state)
{
    struct fx *fx = *state;
    struct store_grey_answer a;

    open_store(fx);
    attempt(fx, NET, T0);
    a = attempt(fx, NET, T0 + DELAY);
    want(&a, true, STORE_GREY_RETRY, true);
    assert_int_equal(a.first_seen, T0);
    assert_int_equal(a.passed, T0 + DELAY);
    assert_int_equal(a.expires, T0 + DELAY + TTL);
    assert_int_equal(col(fx, NET, "passed"), T0 + DELAY);
    assert_int_equal(col(fx, NET, "expires"), T0 + DELAY + TTL);
    /* the last moment of the window still passes */
    attempt(fx, "net:198.51.100.0/24", T0);
    a = attempt(fx, "net:198.51.100.0/24", T0 + WINDOW - 1);
    want(&a, true, STORE_GREY_RETRY, true);
    close_store(fx);
}

static void
test_known_refreshes(void **state)
{
    struct fx *fx = *state;
    int64_t pass = T0 + DELAY, refresh = STORE_GREY_REFRESH(TTL);
    struct store_grey_answer a;

    assert_int_equal(refresh, 86400);
    open_store(fx);
    attempt(fx, NET, T0);
    attempt(fx, NET, pass);
    /* passes; the reader answers while the row is fresh */
    a = attempt(fx, NET, pass + refresh - 1);
    want(&a, true, STORE_GREY_KNOWN, false);
    assert_int_equal(col(fx, NET, "expires"), pass + TTL);
    /* a day on: the pass is written, the triplet lives TTL from now */
    a = attempt(fx, NET, pass + refresh);
    want(&a, true, STORE_GREY_KNOWN, true);
    assert_int_equal(a.expires, pass + refresh + TTL);
    assert_int_equal(col(fx, NET, "last_seen"), pass + refresh);
    assert_int_equal(col(fx, NET, "expires"), pass + refresh + TTL);
    assert_int_equal(col(fx, NET, "passed"), pass); /* the first pass stays */
    assert_int_equal(col(fx, NET, "first_seen"), T0);
    /* passes long after the window, as long as it is refreshed */
    a = attempt(fx, NET, pass + refresh + TTL - 1);
    want(&a, true, STORE_GREY_KNOWN, true);
    close_store(fx);
}

static void
test_after_window_starts_afresh(void **state)
{
    struct fx *fx = *state;
    struct store_grey_answer a;

    open_store(fx);
    attempt(fx, NET, T0);
    /* the retry comes too late: a first attempt again, first_seen reset */
    a = attempt(fx, NET, T0 + WINDOW);
    want(&a, false, STORE_GREY_NEW, true);
    assert_true(a.expired);
    assert_int_equal(a.first_seen, T0 + WINDOW);
    assert_int_equal(col(fx, NET, "first_seen"), T0 + WINDOW);
    assert_int_equal(count(fx, "greylist", "1"), 1);
    a = attempt(fx, NET, T0 + WINDOW + DELAY - 1);
    want(&a, false, STORE_GREY_EARLY, false);
    a = attempt(fx, NET, T0 + WINDOW + DELAY);
    want(&a, true, STORE_GREY_RETRY, true);
    close_store(fx);
}

static void
test_ttl_expiry(void **state)
{
    struct fx *fx = *state;
    int64_t pass = T0 + DELAY;
    struct store_grey_answer a;

    open_store(fx);
    attempt(fx, NET, T0);
    attempt(fx, NET, pass);
    a = attempt(fx, NET, pass + TTL - 1);
    want(&a, true, STORE_GREY_KNOWN, true);
    /* not seen for TTL after its last pass: forgotten, greylisted again */
    a = attempt(fx, NET, pass + TTL - 1 + TTL);
    want(&a, false, STORE_GREY_NEW, true);
    assert_true(a.expired);
    assert_int_equal(col(fx, NET, "passed"), -1);
    close_store(fx);
}

/* The client part is the key: a triplet keyed by the sender's SPF domain
 * passes whatever network the retry comes from (greylist.c makes the key
 * the same), and one keyed by a network is another triplet. */
static void
test_spf_domain_keying(void **state)
{
    struct fx *fx = *state;
    struct store_grey_answer a;

    open_store(fx);
    a = attempt(fx, "spf:example.org", T0);
    want(&a, false, STORE_GREY_NEW, true);
    a = attempt(fx, NET, T0 + DELAY);
    want(&a, false, STORE_GREY_NEW, true);
    a = attempt(fx, "spf:example.org", T0 + DELAY);
    want(&a, true, STORE_GREY_RETRY, true);
    a = attempt(fx, "spf:example.net", T0 + DELAY);
    want(&a, false, STORE_GREY_NEW, true);
    assert_int_equal(count(fx, "greylist", "client LIKE 'spf:%%'"), 2);
    close_store(fx);
}

/* ---- the writer's part -------------------------------------------------- */

/* Jobs for one new triplet at once: the first defers as new, the others
 * see its row (the writer reads again) and defer as early; one row. */
static void
test_concurrent_first_attempts(void **state)
{
    struct fx *fx = *state;
    struct store_grey_rules r = rules_at(T0);
    struct gres g[4];
    int want_seq, nnew = 0;

    open_store(fx);
    want_seq = fx->seq + 4;
    for (int i = 0; i < 4; i++) {
        g[i] = (struct gres){.fx = fx};
        store_greylist_async(fx->st, NET, FROM, TO, &r, grey_cb, &g[i]);
    }
    run_until(fx, want_seq);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(g[i].status, 0);
        assert_false(g[i].a.pass);
        nnew += g[i].a.state == STORE_GREY_NEW;
    }
    assert_int_equal(nnew, 1);
    assert_int_equal(count(fx, "greylist", "1"), 1);
    close_store(fx);
}

/* Each writer job deletes at most 8 expired rows, through the index. */
static void
test_expired_rows_deleted(void **state)
{
    struct fx *fx = *state;

    open_store(fx);
    attempt(fx, "net:203.0.113.0/24", T0); /* creates the table's first row */
    sql_exec(fx,
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) "
             "INSERT INTO greylist SELECT 'net:old' || i, '', 'x', 1, 1, NULL, %d FROM n",
             T0 - 1);
    assert_int_equal(count(fx, "greylist", "expires <= %d", T0), 20);
    /* a reader answer deletes nothing */
    attempt(fx, "net:203.0.113.0/24", T0 + 1);
    assert_int_equal(count(fx, "greylist", "expires <= %d", T0), 20);
    attempt(fx, NET, T0);
    assert_int_equal(count(fx, "greylist", "expires <= %d", T0), 12);
    attempt(fx, "net:198.51.100.0/24", T0);
    attempt(fx, "net:192.0.2.128/25", T0);
    assert_int_equal(count(fx, "greylist", "expires <= %d", T0), 0);
    /* the live rows stay */
    assert_int_equal(count(fx, "greylist", "1"), 4);
    close_store(fx);
}

static void
test_expire_uses_index(void **state)
{
    struct fx *fx = *state;
    sqlite3 *db = NULL;
    char *err = NULL;
    char *sql = xasprintf("EXPLAIN QUERY PLAN %s", store__sql[STORE_W_GREY_EXPIRE].sql);
    sqlite3_stmt *s = NULL;
    bool indexed = false;

    assert_int_equal(db_open(fx->db, &db, &err), 0);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(s, 3);

        print_message("%s\n", detail);
        indexed |= strstr(detail, "INDEX greylist_expires") != NULL;
        assert_null(strstr(detail, "SCAN greylist"));
    }
    assert_true(indexed);
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(sql);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

/* Greylist writes share the group commit with messages: both commit, and
 * the rows survive a restart of the store. */
static void
test_with_messages_and_restart(void **state)
{
    struct fx *fx = *state;
    static const char *const rcpts[] = {"a@example.test"};
    struct store_grey_rules r = rules_at(T0);
    struct res m = {.fx = fx};
    struct gres g[3];
    struct store_grey_answer a;
    int want_seq;

    open_store(fx);
    want_seq = fx->seq + 4;
    store_commit_async(fx->st, make_msg("Q1", "s@example.net", rcpts, 1), commit_cb, &m);
    for (int i = 0; i < 3; i++) {
        char client[32];

        g[i] = (struct gres){.fx = fx};
        snprintf(client, sizeof(client), "net:192.0.%d.0/24", i);
        store_greylist_async(fx->st, client, FROM, TO, &r, grey_cb, &g[i]);
    }
    run_until(fx, want_seq);
    assert_int_equal(m.status, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(g[i].status, 0);
    close_store(fx);

    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->closed = 0;
    open_store(fx);
    assert_int_equal(count(fx, "greylist", "1"), 3);
    assert_int_equal(count(fx, "messages", "qid = 'Q1'"), 1);
    a = attempt(fx, "net:192.0.1.0/24", T0 + DELAY);
    want(&a, true, STORE_GREY_RETRY, true);
    close_store(fx);
}

static void
test_closing_refuses(void **state)
{
    struct fx *fx = *state;
    struct store_grey_rules r = rules_at(T0);
    struct gres g = {.fx = fx};

    open_store(fx);
    store_close(fx->st, closed_cb, fx);
    store_greylist_async(fx->st, NET, FROM, TO, &r, grey_cb, &g);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, MXD_ECLOSING);
    assert_false(g.got_answer);
    assert_int_equal(fx->closed, 1);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

static void
test_state_names(void **state)
{
    struct fx *fx = *state;

    assert_string_equal(store_grey_state_name(STORE_GREY_NEW), "new");
    assert_string_equal(store_grey_state_name(STORE_GREY_EARLY), "early");
    assert_string_equal(store_grey_state_name(STORE_GREY_RETRY), "retry");
    assert_string_equal(store_grey_state_name(STORE_GREY_KNOWN), "known");
    assert_string_equal(store_grey_state_name((enum store_grey_state)9), "unknown");
    assert_int_equal(STORE_GREY_REFRESH(100), 10);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_first_attempt_defers),
        T(test_early_retry_defers),
        T(test_retry_after_delay_passes),
        T(test_known_refreshes),
        T(test_after_window_starts_afresh),
        T(test_ttl_expiry),
        T(test_spf_domain_keying),
        T(test_concurrent_first_attempts),
        T(test_expired_rows_deleted),
        T(test_expire_uses_index),
        T(test_with_messages_and_restart),
        T(test_closing_refuses),
        T(test_state_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
