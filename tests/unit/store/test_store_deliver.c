/*
 * test_store_deliver: the store's delivery and operator jobs (due
 * recipients, body reads, outcomes with DSNs, flush/hold/release/delete/
 * bounce) against a real database in a temporary directory, driven by a
 * real uv loop (store_fixture.h). Every test ends with uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "base/metrics.h"
#include "base/util.h"
#include "store/db.h"
#include "store/store.h"
#include "store/store_impl.h" /* the store's SQL, for EXPLAIN QUERY PLAN */
#include "store_fixture.h"

/* ---- due recipients ----------------------------------------------------- */

enum { A1R0, A1R1, A1R2, A2R0, A2R1, A3R0, A4R0, A4R1, NR };

/* want: the list as check_due renders it, "QID[rcpt,...]" per message, the
 * recipients by their enum value. */
static const struct {
    const char *name;
    int64_t now;
    size_t limit;
    int skip[4];
    size_t nskip;
    const char *want;
    int64_t next_due;
} due_cases[] = {
    {"all due", 1000, 10, {0}, 0, "A1[0,1] A3[5] A2[3]", 4000},
    {"limit", 1000, 2, {0}, 0, "A1[0] A3[5]", 4000},
    {"skip", 1000, 2, {A1R0}, 1, "A3[5] A2[3]", 4000},
    {"skip unsorted", 1000, 10, {A3R0, A1R0, A2R0}, 3, "A1[1]", 4000},
    {"skip not due", 1000, 1, {A4R0, A1R2}, 2, "A1[0]", 4000},
    {"limit 0", 1000, 0, {0}, 0, "", 4000},
    {"later", 4500, 10, {0}, 0, "A1[0,1] A3[5] A2[3] A4[7]", 5000},
    {"at next_attempt", 5000, 10, {0}, 0, "A1[0,1] A3[5] A2[3] A4[7,6]", 0},
    {"nothing due", 99, 10, {0}, 0, "", 100},
};

static void
check_due(size_t c, const int64_t *ids, const struct store_dmsg *list)
{
    char got[256] = "";
    size_t len = 0;

    for (const struct store_dmsg *m = list; m != NULL; m = m->next) {
        len += (size_t)snprintf(got + len, sizeof(got) - len, "%s%s[", len ? " " : "", m->qid);
        for (size_t k = 0; k < m->nrcpts; k++) {
            int e = 0;

            while (e < NR && ids[e] != m->rcpts[k].id)
                e++;
            len += (size_t)snprintf(got + len, sizeof(got) - len, "%s%d", k ? "," : "", e);
        }
        len += (size_t)snprintf(got + len, sizeof(got) - len, "]");
    }
    if (strcmp(got, due_cases[c].want) != 0)
        fail_msg("%s: got \"%s\" want \"%s\"", due_cases[c].name, got, due_cases[c].want);
}

/* The envelope and recipient fields of the "all due" case. */
static void
check_due_fields(const struct fx *fx, const struct store_dmsg *a1, int64_t a1_id)
{
    const struct store_dmsg *a2 = a1->next->next;

    assert_int_equal(a1->id, a1_id);
    assert_int_equal(a1->received, 1700000000);
    assert_string_equal(a1->sender, "s1@example.net");
    assert_int_equal(a1->size, sql_int(fx, "SELECT length(body) FROM messages WHERE qid = 'A1'"));
    assert_false(a1->smtputf8);
    assert_false(a1->utf8_needed);
    assert_false(a1->body_8bit);
    assert_string_equal(a1->rcpts[0].address, "a@One.example");
    assert_string_equal(a1->rcpts[0].domain, "one.example");
    assert_int_equal(a1->rcpts[0].attempts, 0);
    assert_int_equal(a1->rcpts[1].attempts, 2);
    assert_string_equal(a2->sender, "");
    assert_true(a2->smtputf8);
    /* no message_facts row (queued before schema 003): it needs it */
    assert_true(a2->utf8_needed);
    assert_true(a2->body_8bit);
}

static void
test_due_selection(void **state)
{
    static const char *const rc[] = {"a@One.example", "b@one.example", "c@one.example"};
    struct fx *fx = *state;
    int64_t m[4], ids[NR];

    open_store(fx);
    m[0] = seed_msg(fx, "A1", "s1@example.net", rc, 3);
    m[1] = seed_msg(fx, "A2", "", rc, 2);
    m[2] = seed_msg(fx, "A3", "s3@example.net", rc, 1);
    m[3] = seed_msg(fx, "A4", "s4@example.net", rc, 2);
    for (int i = 0; i < NR; i++) {
        static const int msg[NR] = {0, 0, 0, 1, 1, 2, 3, 3}, nth[NR] = {0, 1, 2, 0, 1, 0, 0, 1};

        ids[i] = rcpt_id(fx, m[msg[i]], nth[i]);
    }
    for (int i = 0; i < NR; i++) {
        /* A1R0 and A3R0 tie at 100: the lower id first. */
        static const char *const st[NR] = {"queued",    "deferred", "held",   "queued",
                                           "delivered", "deferred", "queued", "queued"};
        /* A1R2 is held by the operator: next_attempt INT64_MAX, never due. */
        static const int64_t next[NR] = {100, 300, INT64_MAX, 200, 10, 100, 5000, 4000};

        set_rcpt(fx, ids[i], st[i], next[i]);
    }
    sql_exec(fx, "UPDATE message_rcpts SET attempts = 2 WHERE id = %lld", (long long)ids[A1R1]);
    sql_exec(fx, "UPDATE messages SET smtputf8 = 1, body_8bit = 1 WHERE id = %lld",
             (long long)m[1]);
    /* as if queued before schema 003: no message_facts row */
    sql_exec(fx, "DELETE FROM message_facts WHERE message_id = %lld", (long long)m[1]);

    for (size_t i = 0; i < sizeof(due_cases) / sizeof(due_cases[0]); i++) {
        struct res r = {.fx = fx};
        int64_t skip[4];
        int want = fx->seq + 1;

        for (size_t k = 0; k < due_cases[i].nskip; k++)
            skip[k] = ids[due_cases[i].skip[k]];
        store_due_async(fx->st, due_cases[i].now, due_cases[i].limit, skip, due_cases[i].nskip,
                        due_cb, &r);
        memset(skip, 0, sizeof(skip)); /* copied */
        run_until(fx, want);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.status, 0);
        check_due(i, ids, r.list);
        if (r.next_due != due_cases[i].next_due)
            fail_msg("%s: next_due %lld", due_cases[i].name, (long long)r.next_due);
        if (i == 0)
            check_due_fields(fx, r.list, m[0]);
        store_dmsg_free_list(r.list);
    }
    store_dmsg_free_list(NULL);
    close_store(fx);
}

/* Issue 14: whether a message that carried SMTPUTF8 needs it, and its hop
 * count, are stored (schema 003, message_facts) and read back with the
 * envelope; a DSN of it inherits the need. */
static void
test_issue14_utf8_needed(void **state)
{
    static const char *const rc[] = {"a@one.example"};
    static const bool smtputf8[] = {false, true, true};
    static const bool needed[] = {false, false, true};
    struct fx *fx = *state;
    struct res r = {.fx = fx};
    int want;

    open_store(fx);
    for (size_t i = 0; i < 3; i++) {
        struct store_msg *m = make_msg(i == 0   ? "U0"
                                       : i == 1 ? "U1"
                                                : "U2",
                                       "s@example.net", rc, 1);

        m->smtputf8 = smtputf8[i];
        m->utf8_needed = needed[i];
        m->hops = 5 + (unsigned)i;
        want = fx->seq + 1;
        store_commit_async(fx->st, m, commit_cb, &r);
        run_until(fx, want);
        assert_int_equal(r.status, 0);
    }
    assert_int_equal(count(fx, "message_facts", "1"), 3);
    assert_int_equal(count(fx, "message_facts", "utf8_needed = 1"), 1);
    want = fx->seq + 1;
    store_due_async(fx->st, 1700000000, 10, NULL, 0, due_cb, &r);
    run_until(fx, want);
    assert_int_equal(r.status, 0);
    for (const struct store_dmsg *m = r.list; m != NULL; m = m->next) {
        size_t i = (size_t)(m->qid[1] - '0');

        assert_int_equal(m->smtputf8, smtputf8[i]);
        assert_int_equal(m->utf8_needed, needed[i]);
        assert_int_equal(m->hops, 5 + i); /* issue 14 item 9 */
    }
    store_dmsg_free_list(r.list);
    /* deleting a message deletes its row */
    assert_int_equal(run_op(fx, STORE_OP_DELETE, "U2"), 0);
    assert_int_equal(count(fx, "message_facts", "1"), 2);
    close_store(fx);
}

/* Every query on due recipients goes through the partial index. */
static void
test_due_uses_index(void **state)
{
    static const enum store_stmt stmts[] = {STORE_R_DUE, STORE_R_NEXT_DUE, STORE_W_FLUSH};
    struct fx *fx = *state;
    sqlite3 *db = NULL;
    char *err = NULL;

    assert_int_equal(db_open(fx->db, &db, &err), 0);
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        char *sql = xasprintf("EXPLAIN QUERY PLAN %s", store__sql[stmts[i]].sql);
        sqlite3_stmt *s = NULL;
        bool indexed = false;

        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        while (sqlite3_step(s) == SQLITE_ROW) {
            const char *detail = (const char *)sqlite3_column_text(s, 3);

            print_message("%s: %s\n", store__sql[stmts[i]].label, detail);
            indexed |= strstr(detail, "INDEX message_rcpts_due") != NULL;
            assert_null(strstr(detail, "SCAN"));
            assert_null(strstr(detail, "TEMP B-TREE")); /* ORDER BY from the index */
        }
        assert_true(indexed);
        sqlite3_finalize(s);
        free(sql);
    }
    sqlite3_close(db);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

/* ---- body reads --------------------------------------------------------- */

static void
test_body_read(void **state)
{
    static const char header[] = "Received: from x by y\r\n";
    static const char spool[] = "Subject: spooled part\r\n\r\n";
    static const char tail[] = "in memory\r\n";
    enum { H = sizeof(header) - 1, S = sizeof(spool) - 1, T = sizeof(tail) - 1, TOTAL = H + S + T };
    static const struct {
        uint64_t offset;
        size_t max, want;
    } cases[] = {
        {0, 5, 5},           {H - 3, 10, 10},      {H + S - 4, 8, 8},
        {TOTAL - 3, 100, 3}, {TOTAL, 10, 0},       {TOTAL + 5, 10, 0},
        {0, TOTAL, TOTAL},   {0, SIZE_MAX, TOTAL}, {1, 0, 0},
    };
    struct fx *fx = *state;
    char want[TOTAL + 1];
    char *path = xasprintf("%s/spool", fx->dir);
    struct store_msg *m = make_msg("B1", "s@example.net", op_rcpts, 1);
    struct res c = {.fx = fx}, miss = {.fx = fx};
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(spool, 1, S, f), S);
    assert_int_equal(fclose(f), 0);
    snprintf(want, sizeof(want), "%s%s%s", header, spool, tail);
    free(m->header);
    free(m->body);
    m->header = xstrdup(header);
    m->header_len = H;
    m->spool_path = path;
    m->spool_len = S;
    m->body = xstrdup(tail);
    m->body_len = T;

    open_store(fx);
    store_commit_async(fx->st, m, commit_cb, &c);
    run_until(fx, 1);
    assert_int_equal(c.status, 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct res r = {.fx = fx};
        int n = fx->seq + 1;

        store_body_read_async(fx->st, c.id, cases[i].offset, cases[i].max, body_cb, &r);
        run_until(fx, n);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.total, TOTAL);
        assert_int_equal(r.len, cases[i].want);
        if (r.len > 0)
            assert_memory_equal(r.data, want + cases[i].offset, r.len);
        free(r.data);
    }
    store_body_read_async(fx->st, c.id + 100, 0, 10, body_cb, &miss);
    run_until(fx, fx->seq + 1);
    assert_int_equal(miss.status, MXD_ENOENT);
    assert_int_equal(miss.len, 0);
    free(miss.data);
    close_store(fx);
}

/* ---- outcomes ----------------------------------------------------------- */

/* O1's one DSN (below): from <> to its sender, with the bounces. */
static void
check_dsn(const struct fx *fx, int64_t now)
{
    int64_t dsn = sql_int(fx, "SELECT id FROM messages WHERE client_addr = '127.0.0.1'");
    char *qid = sql_text(fx, "SELECT qid FROM messages WHERE id = %lld", (long long)dsn);
    char *body = sql_text(fx, "SELECT body FROM messages WHERE id = %lld", (long long)dsn);
    static const char *const want[] = {"Status: 5.1.1\r\n",
                                       "Status: 5.0.0\r\n", /* 552 without an enhanced code */
                                       "Status: 4.4.7\r\n", /* a 4xx that bounced: expired */
                                       "Status: 5.7.1\r\n",
                                       "Final-Recipient: rfc822; gone@example.com",
                                       "Remote-MTA: dns; mbox.example.com",
                                       "Diagnostic-Code: smtp; 550 5.1.1 User unknown",
                                       "Subject: test\r\n", /* the original headers */
                                       ("MAILER-DAEMON@" HOST),
                                       "To: <Sender@Example.NET>"};

    assert_int_equal(count(fx, "messages", "sender = ''"), 1);
    assert_int_equal(count(fx, "messages",
                           "id = %lld AND helo = '" HOST "' AND size = length(body) AND "
                           "received BETWEEN %lld AND %lld",
                           (long long)dsn, (long long)now, (long long)now + 5),
                     1);
    assert_int_equal(nrcpts(fx, dsn, "1"), 1);
    assert_int_equal(nrcpts(fx, dsn,
                            "address = 'Sender@Example.NET' AND domain = 'example.net' "
                            "AND state = 'queued' AND attempts = 0"),
                     1);
    assert_true(sql_int(fx, "SELECT next_attempt FROM message_rcpts WHERE message_id = %lld",
                        (long long)dsn) >= now);
    assert_int_equal(strlen(qid), 13);
    assert_non_null(strstr(body, qid));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (strstr(body, want[i]) == NULL)
            fail_msg("no \"%s\" in the DSN", want[i]);
    assert_null(strstr(body, "Final-Recipient: rfc822; ok@example.com"));
    assert_null(strstr(body, "Final-Recipient: rfc822; later@example.com"));
    assert_null(strstr(body, "more\r\n")); /* the original's body */
    free(body);
    free(qid);
}

static void
test_outcomes_mix_and_dsn(void **state)
{
    static const char *const rc[] = {"ok@example.com",  "later@example.com", "gone@example.com",
                                     "big@example.com", "old@example.com",   "multi@example.com"};
    struct fx *fx = *state;
    int64_t m, id[6], now = (int64_t)time(NULL);
    struct store_outcome o[6];
    char where[128];

    open_store(fx);
    m = seed_msg(fx, "O1", "Sender@Example.NET", rc, 6);
    for (int i = 0; i < 6; i++)
        id[i] = rcpt_id(fx, m, i);
    o[0] = outcome(id[0], m, STORE_RCPT_DELIVERED, 0, "250 2.0.0 ok", "mbox.example.com");
    o[1] = outcome(id[1], m, STORE_RCPT_DEFERRED, now + 600, "451 4.4.1 connect failed", NULL);
    o[2] = outcome(id[2], m, STORE_RCPT_BOUNCED, 0, "550 5.1.1 User unknown", "mbox.example.com");
    o[3] = outcome(id[3], m, STORE_RCPT_BOUNCED, 0, "552 too big", "mbox.example.com");
    o[4] = outcome(id[4], m, STORE_RCPT_BOUNCED, 0, "451 timed out", NULL);
    o[5] = outcome(id[5], m, STORE_RCPT_BOUNCED, 0, "554-5.7.1 not you", NULL);
    assert_int_equal(run_outcomes(fx, o, 6), 0);

    assert_int_equal(nrcpts(fx, m, "attempts = 1"), 6);
    assert_int_equal(nrcpts(fx, m, "state = 'bounced'"), 4);
    assert_true(rcpt_is(fx, id[0], "state = 'delivered' AND last_reply = '250 2.0.0 ok'"));
    snprintf(where, sizeof(where), "state = 'deferred' AND next_attempt = %lld",
             (long long)now + 600);
    assert_true(rcpt_is(fx, id[1], where));
    check_dsn(fx, now);
    assert_int_equal(count(fx, "messages", "id = %lld", (long long)m), 1); /* one deferred */

    /* The last pending recipient delivered: the message goes, no new DSN. */
    o[0] = outcome(id[1], m, STORE_RCPT_DELIVERED, 0, "250 2.0.0 ok", NULL);
    assert_int_equal(run_outcomes(fx, o, 1), 0);
    assert_int_equal(count(fx, "messages", "id = %lld", (long long)m), 0);
    assert_int_equal(nrcpts(fx, m, "1"), 0);
    assert_int_equal(count(fx, "messages", "sender = ''"), 1);
    close_store(fx);
}

static void
test_outcomes_null_sender(void **state)
{
    struct fx *fx = *state;
    int64_t m;
    struct store_outcome o[2];

    open_store(fx);
    m = seed_msg(fx, "N1", "", op_rcpts, 2);
    o[0] = outcome(rcpt_id(fx, m, 0), m, STORE_RCPT_BOUNCED, 0, "550 5.1.1 no", NULL);
    o[1] = outcome(rcpt_id(fx, m, 1), m, STORE_RCPT_BOUNCED, 0, "550 5.1.1 no", NULL);
    assert_int_equal(run_outcomes(fx, o, 2), 0);
    /* No DSN for a DSN; all final: gone. */
    assert_int_equal(count(fx, "messages", "1"), 0);
    assert_int_equal(count(fx, "message_rcpts", "1"), 0);
    assert_int_equal(run_outcomes(fx, NULL, 0), 0);
    close_store(fx);
}

/* A Remote-MTA dsn_compose refuses (a space) is left out, not the DSN. */
static void
test_outcomes_dsn_odd_remote(void **state)
{
    struct fx *fx = *state;
    struct store_outcome o;
    char *body;
    int64_t m;

    open_store(fx);
    m = seed_msg(fx, "D1", "s@example.net", op_rcpts, 1);
    o = outcome(rcpt_id(fx, m, 0), m, STORE_RCPT_BOUNCED, 0, "550 5.1.1 no", "unix:/my lmtp");
    assert_int_equal(run_outcomes(fx, &o, 1), 0);
    body = sql_text(fx, "SELECT body FROM messages WHERE client_addr = '127.0.0.1'");
    assert_non_null(body);
    assert_non_null(strstr(body, "Status: 5.1.1\r\n"));
    assert_null(strstr(body, "Remote-MTA"));
    free(body);
    assert_int_equal(count(fx, "messages", "qid = 'D1'"), 0);
    close_store(fx);
}

/* A final recipient stays final, a held one stays held when deferred, an
 * unknown one is ignored; a bad state fails the whole job unchanged. */
static void
test_outcomes_guarded(void **state)
{
    struct fx *fx = *state;
    int64_t m, a, b, c;
    struct store_outcome o[3];

    open_store(fx);
    m = seed_msg(fx, "G1", "s@example.net", op_rcpts, 3);
    a = rcpt_id(fx, m, 0);
    b = rcpt_id(fx, m, 1);
    c = rcpt_id(fx, m, 2);
    set_rcpt(fx, a, "delivered", 1);
    set_rcpt(fx, b, "held", 1);
    o[0] = outcome(a, m, STORE_RCPT_BOUNCED, 0, "550 5.1.1 no", NULL);
    o[1] = outcome(b, m, STORE_RCPT_DEFERRED, 77, "451 4.4.1 later", NULL);
    o[2] = outcome(c + 1000, m, STORE_RCPT_DELIVERED, 0, "250 ok", NULL);
    assert_int_equal(run_outcomes(fx, o, 3), 0);
    assert_true(rcpt_is(fx, a, "state = 'delivered' AND attempts = 0 AND last_reply IS NULL"));
    assert_true(rcpt_is(fx, b, "state = 'held' AND attempts = 1 AND next_attempt = 77"));
    assert_int_equal(count(fx, "messages", "1"), 1); /* no DSN */

    o[0] = outcome(c, m, STORE_RCPT_DELIVERED, 0, "250 ok", NULL);
    o[1] = outcome(b, m, STORE_RCPT_QUEUED, 0, NULL, NULL);
    assert_int_equal(run_outcomes(fx, o, 2), MXD_EINVAL);
    assert_true(rcpt_is(fx, c, "state = 'queued' AND attempts = 0"));
    close_store(fx);
}

/*
 * The DSN insert fails (a trigger refuses it) in a batch shared with a
 * message commit: the outcomes roll back completely and fail with
 * MXD_ESTORE, the commit is unaffected, and a retry succeeds once the cause
 * is gone.
 */
static void
test_outcomes_rollback(void **state)
{
    struct fx *fx = *state;
    struct res r = {.fx = fx}, c = {.fx = fx};
    struct store_outcome *own = xcalloc(2, sizeof(*own)), o[2];
    sqlite3 *blocker;
    int64_t m;

    open_store(fx);
    m = seed_msg(fx, "R1", "s@example.net", op_rcpts, 2);
    sql_exec(fx, "CREATE TRIGGER no_dsn BEFORE INSERT ON messages WHEN NEW.sender = '' "
                 "BEGIN SELECT RAISE(ABORT, 'no DSN today'); END");
    for (int i = 0; i < 2; i++) {
        own[i] = outcome(rcpt_id(fx, m, i), m, i ? STORE_RCPT_BOUNCED : STORE_RCPT_DELIVERED, 0,
                         i ? "550 5.1.1 no" : "250 ok", NULL);
        o[i] = own[i];
        o[i].last_reply = xstrdup(own[i].last_reply);
    }
    blocker = sql_open(fx);
    assert_int_equal(sqlite3_exec(blocker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    store_outcomes_async(fx->st, own, 2, done_cb, &r);
    store_commit_async(fx->st, make_msg("R2", "x@example.net", op_rcpts, 1), commit_cb, &c);
    assert_int_equal(sqlite3_exec(blocker, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(blocker);
    run_until(fx, fx->seq + 2);
    assert_int_equal(r.status, MXD_ESTORE);
    assert_int_equal(c.status, 0);
    assert_int_equal(nrcpts(fx, m, "state = 'queued' AND attempts = 0 AND last_reply IS NULL"), 2);
    assert_int_equal(count(fx, "messages", "sender = ''"), 0);

    sql_exec(fx, "DROP TRIGGER no_dsn");
    assert_int_equal(run_outcomes(fx, o, 2), 0);
    assert_int_equal(count(fx, "messages", "id = %lld", (long long)m), 0);
    assert_int_equal(count(fx, "messages", "sender = ''"), 1);
    close_store(fx);
}

/* ---- operator actions --------------------------------------------------- */

static int64_t
next_attempt(const struct fx *fx, int64_t id)
{
    return sql_int(fx, "SELECT next_attempt FROM message_rcpts WHERE id = %lld", (long long)id);
}

/* FLUSH one domain (any case), then all; an operator's hold (INT64_MAX)
 * stays, overdue stays; a backup domain's held mail is flushed. */
static void
test_op_flush(void **state)
{
    struct fx *fx = *state;
    int64_t m1, m2, r[3], far = (int64_t)time(NULL) + 100000;

    open_store(fx);
    m1 = seed_msg(fx, "P1", "s@example.net", op_rcpts, 3);
    m2 = seed_msg(fx, "P2", "t@example.net", op_rcpts, 1);
    for (int i = 0; i < 3; i++)
        r[i] = rcpt_id(fx, m1, i);
    set_rcpt(fx, r[0], "deferred", far);
    set_rcpt(fx, r[1], "queued", far);
    set_rcpt(fx, r[2], "held", INT64_MAX);
    set_rcpt(fx, rcpt_id(fx, m2, 0), "held", 100);

    assert_int_equal(run_op(fx, STORE_OP_FLUSH, "ONE.example"), 0);
    assert_true(next_attempt(fx, r[0]) <= (int64_t)time(NULL));
    assert_int_equal(next_attempt(fx, r[1]), far);
    assert_int_equal(run_op(fx, STORE_OP_FLUSH, NULL), 0);
    assert_true(next_attempt(fx, r[1]) <= (int64_t)time(NULL));
    assert_int_equal(next_attempt(fx, r[2]), INT64_MAX);
    assert_int_equal(next_attempt(fx, rcpt_id(fx, m2, 0)), 100);
    sql_exec(fx, "UPDATE message_rcpts SET next_attempt = %lld WHERE id = %lld", (long long)far,
             (long long)rcpt_id(fx, m2, 0));
    assert_int_equal(run_op(fx, STORE_OP_FLUSH, NULL), 0);
    assert_true(next_attempt(fx, rcpt_id(fx, m2, 0)) <= (int64_t)time(NULL));
    assert_int_equal(run_op(fx, STORE_OP_FLUSH, "nowhere.example"), 0);
    assert_int_equal(run_op(fx, STORE_OP_FLUSH, ""), 0);
    close_store(fx);
}

static void
test_op_hold_release_delete(void **state)
{
    struct fx *fx = *state;
    int64_t m1, m2, now = (int64_t)time(NULL);

    open_store(fx);
    m1 = seed_msg(fx, "P1", "s@example.net", op_rcpts, 3);
    m2 = seed_msg(fx, "P2", "t@example.net", op_rcpts, 1);
    set_rcpt(fx, rcpt_id(fx, m1, 0), "delivered", 1);
    set_rcpt(fx, rcpt_id(fx, m1, 1), "deferred", now + 100000);

    assert_int_equal(run_op(fx, STORE_OP_HOLD, "P1"), 0);
    assert_int_equal(nrcpts(fx, m1, "state = 'held'"), 2);
    assert_int_equal(run_op(fx, STORE_OP_RELEASE, "P1"), 0);
    assert_int_equal(nrcpts(fx, m1, "state = 'queued'"), 2);
    assert_int_equal(nrcpts(fx, m1, "state = 'delivered'"), 1);
    assert_true(next_attempt(fx, rcpt_id(fx, m1, 1)) >= now);
    assert_true(next_attempt(fx, rcpt_id(fx, m1, 1)) <= (int64_t)time(NULL));

    assert_int_equal(run_op(fx, STORE_OP_HOLD, "NOPE"), MXD_ENOENT);
    assert_int_equal(run_op(fx, STORE_OP_RELEASE, "NOPE"), MXD_ENOENT);
    assert_int_equal(run_op(fx, STORE_OP_DELETE, "NOPE"), MXD_ENOENT);
    assert_int_equal(run_op(fx, STORE_OP_BOUNCE, "NOPE"), MXD_ENOENT);
    assert_int_equal(run_op(fx, STORE_OP_HOLD, NULL), MXD_EINVAL);
    assert_int_equal(run_op(fx, (enum store_op)42, "P1"), MXD_EINVAL);

    /* DELETE: gone with its recipients, no DSN */
    assert_int_equal(run_op(fx, STORE_OP_DELETE, "P2"), 0);
    assert_int_equal(run_op(fx, STORE_OP_DELETE, "P2"), MXD_ENOENT);
    assert_int_equal(nrcpts(fx, m2, "1"), 0);
    assert_int_equal(count(fx, "messages", "1"), 1);
    close_store(fx);
}

/* BOUNCE: one DSN for the recipients not final, attempts unchanged, the
 * message deleted; from <>: deleted without DSN. */
static void
test_op_bounce(void **state)
{
    struct fx *fx = *state;
    int64_t m1;
    char *body;

    open_store(fx);
    m1 = seed_msg(fx, "P1", "s@example.net", op_rcpts, 3);
    (void)seed_msg(fx, "P3", "", op_rcpts, 1);
    set_rcpt(fx, rcpt_id(fx, m1, 0), "delivered", 1);
    set_rcpt(fx, rcpt_id(fx, m1, 1), "held", 1);
    assert_int_equal(run_op(fx, STORE_OP_BOUNCE, "P1"), 0);
    assert_int_equal(count(fx, "messages", "qid = 'P1'"), 0);
    body = sql_text(fx, "SELECT body FROM messages WHERE client_addr = '127.0.0.1'");
    assert_non_null(body);
    assert_non_null(strstr(body, "Status: 5.0.0\r\n"));
    assert_non_null(strstr(body, "Diagnostic-Code: smtp; 550 5.0.0 Bounced by the operator"));
    assert_non_null(strstr(body, "Final-Recipient: rfc822; b@two.example"));
    assert_non_null(strstr(body, "Final-Recipient: rfc822; c@one.example"));
    assert_null(strstr(body, "Final-Recipient: rfc822; a@one.example"));
    free(body);
    assert_int_equal(count(fx, "message_rcpts", "address = 's@example.net' AND state = 'queued'"),
                     1);

    assert_int_equal(run_op(fx, STORE_OP_BOUNCE, "P3"), 0);
    assert_int_equal(count(fx, "messages", "qid = 'P3'"), 0);
    assert_int_equal(count(fx, "messages", "1"), 1); /* the one DSN */
    close_store(fx);
}

/* ---- close -------------------------------------------------------------- */

static void
test_closing_refuses(void **state)
{
    struct fx *fx = *state;
    struct res due = {.fx = fx}, body = {.fx = fx}, out = {.fx = fx}, op = {.fx = fx};
    struct store_outcome *own = xcalloc(1, sizeof(*own));

    *own = outcome(1, 1, STORE_RCPT_DELIVERED, 0, "250 ok", "h");
    open_store(fx);
    store_close(fx->st, closed_cb, fx);
    store_due_async(fx->st, 0, 10, NULL, 0, due_cb, &due);
    store_body_read_async(fx->st, 1, 0, 10, body_cb, &body);
    store_outcomes_async(fx->st, own, 1, done_cb, &out); /* freed although refused */
    store_op_async(fx->st, STORE_OP_FLUSH, NULL, done_cb, &op);
    store_op_async(fx->st, STORE_OP_DELETE, "X", NULL, NULL); /* no callback: fine */
    assert_int_equal(due.calls + body.calls + out.calls + op.calls, 0);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->closed, 1);
    assert_int_equal(due.status, MXD_ECLOSING);
    assert_null(due.list);
    assert_int_equal(body.status, MXD_ECLOSING);
    assert_int_equal(body.len, 0);
    free(body.data);
    assert_int_equal(out.status, MXD_ECLOSING);
    assert_int_equal(op.status, MXD_ECLOSING);
    assert_int_equal(due.calls + body.calls + out.calls + op.calls, 4);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

static void
test_rcpt_state_names(void **state)
{
    struct fx *fx = *state;

    assert_string_equal(store_rcpt_state_name(STORE_RCPT_QUEUED), "queued");
    assert_string_equal(store_rcpt_state_name(STORE_RCPT_DEFERRED), "deferred");
    assert_string_equal(store_rcpt_state_name(STORE_RCPT_HELD), "held");
    assert_string_equal(store_rcpt_state_name(STORE_RCPT_DELIVERED), "delivered");
    assert_string_equal(store_rcpt_state_name(STORE_RCPT_BOUNCED), "bounced");
    assert_string_equal(store_rcpt_state_name((enum store_rcpt_state)99), "unknown");
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

/* Issue 18: NOTIFY and bounce_policy decide which DSNs the writer adds;
 * one delay warning per message; ORCPT, ENVID and RET=FULL in the DSNs. */
static char *
dsn_body(const struct fx *fx, const char *kind_text)
{
    return sql_text(fx,
                    "SELECT body FROM messages WHERE sender = '' AND instr(body, '%s') > 0 "
                    "ORDER BY id DESC LIMIT 1",
                    kind_text);
}

static void
test_issue18_dsn_rules(void **state)
{
    static const char *const rc[] = {"never@example.com", "fail@example.com", "succ@example.com",
                                     "late@example.com", "quiet@example.com"};
    struct store_dsn_rules rules = {.policy = STORE_BOUNCE_AUTHENTICATED, .delay_warning_s = 3600};
    struct fx *fx = *state;
    struct store_outcome o[5];
    int64_t m, id[5];
    uint64_t suppressed;
    char *body;

    open_store(fx);
    store_set_dsn_rules(fx->st, &rules);
    m = seed_msg(fx, "R1", "s@example.net", rc, 5);
    for (int i = 0; i < 5; i++)
        id[i] = rcpt_id(fx, m, i);
    assert_int_equal(
        sql_int(fx, "SELECT return_auth FROM message_dsn WHERE message_id = %lld", (long long)m),
        0);
    sql_exec(fx,
             "INSERT INTO rcpt_dsn VALUES (%lld, 1, NULL), (%lld, 4, 'rfc822;old@example.com'), "
             "(%lld, 2, NULL), (%lld, 0, 'rfc822;l@example.com'), (%lld, 4, NULL)",
             (long long)id[0], (long long)id[1], (long long)id[2], (long long)id[3],
             (long long)id[4]);
    sql_exec(fx, "UPDATE message_dsn SET envid = 'E-1', ret = 1 WHERE message_id = %lld",
             (long long)m);
    /* authenticated, and the return path was not: no DSN at all, counted */
    suppressed = metrics_get(METRICS_BOUNCES_SUPPRESSED);
    o[0] = outcome(id[1], m, STORE_RCPT_BOUNCED, 0, "550 5.1.1 no", NULL);
    assert_int_equal(run_outcomes(fx, o, 1), 0);
    assert_int_equal(count(fx, "messages", "sender = ''"), 0);
    assert_int_equal(metrics_get(METRICS_BOUNCES_SUPPRESSED), suppressed + 1);

    rules.policy = STORE_BOUNCE_ALWAYS;
    store_set_dsn_rules(fx->st, &rules);
    o[0] = outcome(id[0], m, STORE_RCPT_BOUNCED, 0, "550 5.1.1 never", NULL);
    o[1] = outcome(id[2], m, STORE_RCPT_DELIVERED, 0, "250 ok", NULL);
    o[1].success = STORE_SUCCESS_DELIVERED;
    o[2] = outcome(id[3], m, STORE_RCPT_DEFERRED, 1, "451 4.4.1 later", NULL);
    o[3] = outcome(id[4], m, STORE_RCPT_DEFERRED, 1, "451 4.4.1 later", NULL);
    assert_int_equal(run_outcomes(fx, o, 4), 0);
    /* NEVER: no failure DSN; a success DSN; one delay warning (late only) */
    assert_int_equal(count(fx, "messages", "sender = ''"), 2);
    assert_null(dsn_body(fx, "Action: failed"));
    body = dsn_body(fx, "Action: delivered");
    assert_non_null(body);
    assert_non_null(strstr(body, "Original-Envelope-Id: E-1\r\n"));
    assert_non_null(strstr(body, "Final-Recipient: rfc822; succ@example.com"));
    assert_non_null(strstr(body, "Content-Type: text/rfc822-headers")); /* FULL: failures only */
    free(body);
    body = dsn_body(fx, "Action: delayed");
    assert_non_null(body);
    assert_non_null(strstr(body, "Original-Recipient: rfc822; l@example.com\r\n"
                                 "Final-Recipient: rfc822; late@example.com\r\nAction: delayed\r\n"
                                 "Status: 4.4.1"));
    assert_null(strstr(body, "quiet@example.com"));
    free(body);
    assert_int_equal(
        sql_int(fx, "SELECT warned FROM message_dsn WHERE message_id = %lld", (long long)m), 1);
    /* deferred again: no second warning; then bounced with RET=FULL */
    o[0] = outcome(id[3], m, STORE_RCPT_DEFERRED, 1, "451 4.4.1 later", NULL);
    assert_int_equal(run_outcomes(fx, o, 1), 0);
    assert_int_equal(count(fx, "messages", "sender = ''"), 2);
    o[0] = outcome(id[4], m, STORE_RCPT_BOUNCED, 0, "550 5.2.2 full", NULL);
    assert_int_equal(run_outcomes(fx, o, 1), 0);
    body = dsn_body(fx, "Action: failed");
    assert_non_null(body);
    assert_non_null(strstr(body, "Content-Type: message/rfc822"));
    assert_non_null(strstr(body, "\r\nbody\r\n\r\nmore\r\n")); /* the whole message */
    free(body);
    /* never: nothing, counted */
    rules.policy = STORE_BOUNCE_NEVER;
    store_set_dsn_rules(fx->st, &rules);
    o[0] = outcome(id[3], m, STORE_RCPT_BOUNCED, 0, "550 5.1.1 no", NULL);
    assert_int_equal(run_outcomes(fx, o, 1), 0);
    assert_int_equal(count(fx, "messages", "sender = ''"), 3);
    assert_int_equal(count(fx, "messages", "qid = 'R1'"), 0); /* all final: gone */
    assert_int_equal(count(fx, "rcpt_dsn", "1"), 0);          /* with its rows */
    close_store(fx);
}

/* A job's deferrals skip settling a message only when nothing can change:
 * a due delay warning still goes out, a final outcome of the same message
 * in the same job still settles (its DSN, the delete), and a deferral that
 * found its recipient final already still deletes the message left with
 * nothing pending. */
static void
test_outcomes_deferral_settle(void **state)
{
    static const char *const rc[] = {"a@example.com", "b@example.com"};
    struct store_dsn_rules rules = {.policy = STORE_BOUNCE_ALWAYS, .delay_warning_s = 3600};
    struct fx *fx = *state;
    int64_t now = (int64_t)time(NULL), young, old, pair, stale, a[2], b[2], c[2], d[2];
    struct store_outcome o[4];

    open_store(fx);
    store_set_dsn_rules(fx->st, &rules);
    young = seed_msg(fx, "Y1", "s@example.net", rc, 2);
    old = seed_msg(fx, "D1", "s@example.net", rc, 2);
    pair = seed_msg(fx, "P1", "s@example.net", rc, 2);
    stale = seed_msg(fx, "S1", "s@example.net", rc, 2);
    for (int i = 0; i < 2; i++) {
        a[i] = rcpt_id(fx, young, i);
        b[i] = rcpt_id(fx, old, i);
        c[i] = rcpt_id(fx, pair, i);
        d[i] = rcpt_id(fx, stale, i);
    }
    sql_exec(fx, "UPDATE messages SET received = %lld WHERE id IN (%lld, %lld)",
             (long long)now - 60, (long long)young, (long long)pair);
    sql_exec(fx, "INSERT INTO rcpt_dsn VALUES (%lld, 2, 'rfc822;orig@example.com')",
             (long long)c[1]);
    sql_exec(fx, "UPDATE message_rcpts SET state = 'delivered' WHERE id = %lld", (long long)d[0]);
    sql_exec(fx, "UPDATE message_rcpts SET state = 'bounced' WHERE id = %lld", (long long)d[1]);

    /* one job: a young deferral (nothing due), an old one (its warning
     * due), a young deferral with a delivery asking for SUCCESS */
    o[0] = outcome(a[0], young, STORE_RCPT_DEFERRED, now + 600, "451 4.4.1 later", NULL);
    o[1] = outcome(b[0], old, STORE_RCPT_DEFERRED, now + 600, "451 4.4.1 later", NULL);
    o[2] = outcome(c[0], pair, STORE_RCPT_DEFERRED, now + 600, "451 4.4.1 later", NULL);
    o[3] = outcome(c[1], pair, STORE_RCPT_DELIVERED, 0, "250 ok", NULL);
    o[3].success = STORE_SUCCESS_DELIVERED;
    assert_int_equal(run_outcomes(fx, o, 4), 0);

    assert_int_equal(count(fx, "messages", "sender = ''"), 2);
    assert_int_equal(count(fx, "messages",
                           "sender = '' AND instr(body, 'Action: delayed') > 0 "
                           "AND instr(body, 'a@example.com') > 0"),
                     1);
    assert_int_equal(count(fx, "messages",
                           "sender = '' AND instr(body, 'Action: delivered') > 0 "
                           "AND instr(body, 'rfc822; orig@example.com') > 0"),
                     1);
    assert_int_equal(count(fx, "message_dsn", "warned = 1 AND message_id = %lld", (long long)old),
                     1);
    assert_int_equal(count(fx, "message_dsn", "warned = 1"), 1);
    assert_int_equal(count(fx, "messages", "qid IN ('Y1', 'D1', 'P1')"), 3);
    assert_true(rcpt_is(fx, a[0], "state = 'deferred' AND attempts = 1"));
    assert_true(rcpt_is(fx, c[0], "state = 'deferred' AND attempts = 1"));

    /* the young one grown old: its next deferral warns, once */
    sql_exec(fx, "UPDATE messages SET received = %lld WHERE id = %lld", (long long)now - 3600,
             (long long)young);
    o[0] = outcome(a[1], young, STORE_RCPT_HELD, now + 600, "451 4.4.1 later", NULL);
    assert_int_equal(run_outcomes(fx, o, 1), 0);
    assert_int_equal(count(fx, "messages", "sender = ''"), 3);
    o[0] = outcome(a[0], young, STORE_RCPT_DEFERRED, now + 600, "451 4.4.1 later", NULL);
    assert_int_equal(run_outcomes(fx, o, 1), 0);
    assert_int_equal(count(fx, "messages", "sender = ''"), 3);
    assert_int_equal(count(fx, "message_dsn", "warned = 1"), 2);

    /* no warnings at all: a deferral that found its recipient final still
     * settles, and the message with nothing pending goes */
    rules.delay_warning_s = 0;
    store_set_dsn_rules(fx->st, &rules);
    o[0] = outcome(d[1], stale, STORE_RCPT_DEFERRED, now + 600, "451 4.4.1 later", NULL);
    assert_int_equal(run_outcomes(fx, o, 1), 0);
    assert_int_equal(count(fx, "messages", "qid = 'S1'"), 0);
    assert_int_equal(count(fx, "messages", "qid IN ('Y1', 'D1', 'P1')"), 3);
    close_store(fx);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_due_selection),           T(test_due_uses_index),
        T(test_issue14_utf8_needed),     T(test_body_read),
        T(test_outcomes_mix_and_dsn),    T(test_outcomes_null_sender),
        T(test_outcomes_dsn_odd_remote), T(test_outcomes_guarded),
        T(test_outcomes_rollback),       T(test_op_flush),
        T(test_op_hold_release_delete),  T(test_op_bounce),
        T(test_closing_refuses),         T(test_rcpt_state_names),
        T(test_issue18_dsn_rules),       T(test_outcomes_deferral_settle),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
