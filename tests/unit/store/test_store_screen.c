/*
 * test_store_screen: the screening's store jobs (store_screen.c, schema
 * 005) against a real database in a temporary directory, on a real uv
 * loop: a record then a lookup, expired passes not answered, the later
 * expiry kept, a few expired rows deleted per record job, a batch of
 * passes in one job beside a message commit, a lookup after the store
 * closed. Every test ends with uv_loop_close() == 0.
 */
#include <sys/stat.h>

#include <dirent.h>
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
#include "store/store.h"

struct fx {
    char dir[512];
    char db[600];
    uv_loop_t loop;
    struct store *st;
    int calls;
    int status;
    size_t n;
    struct store_screen_pass got[8];
};

static void
rm_rf(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;

    while (d != NULL && (e = readdir(d)) != NULL) {
        char *sub;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        sub = xasprintf("%s/%s", path, e->d_name);
        if (unlink(sub) != 0)
            rmdir(sub); /* bodies: the large bodies' directory, empty */
        free(sub);
    }
    if (d != NULL)
        closedir(d);
    rmdir(path);
}

static int
fx_setup(void **state)
{
    struct fx *fx = xcalloc(1, sizeof(*fx));
    const char *tmp = getenv("TMPDIR");
    char *err = NULL;

    snprintf(fx->dir, sizeof(fx->dir), "%s/test_store_screen.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->db, sizeof(fx->db), "%s/queue.db", fx->dir);
    if (uv_loop_init(&fx->loop) != 0)
        return -1;
    if (store_open(&fx->loop, &STORE_CONFIG_SQLITE(fx->db), &fx->st, &err) != 0) {
        fprintf(stderr, "store_open: %s\n", err);
        return -1;
    }
    *state = fx;
    return 0;
}

static void
closed_cb(void *arg)
{
    (void)arg;
}

static int
fx_teardown(void **state)
{
    struct fx *fx = *state;

    if (fx->st != NULL)
        store_close(fx->st, closed_cb, fx);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    rm_rf(fx->dir);
    free(fx);
    return 0;
}

static void
done_cb(void *arg, int status)
{
    struct fx *fx = arg;

    fx->calls++;
    fx->status = status;
}

static void
lookup_cb(void *arg, int status, const struct store_screen_pass *passes, size_t n)
{
    struct fx *fx = arg;

    fx->calls++;
    fx->status = status;
    fx->n = n;
    assert_true(n <= 8);
    memcpy(fx->got, passes, n * sizeof(*passes));
}

static void
wait_calls(struct fx *fx, int n)
{
    while (fx->calls < n)
        uv_run(&fx->loop, UV_RUN_ONCE);
}

static struct store_screen_pass
pass(const char *client, const char *test, int64_t passed, int64_t expires)
{
    struct store_screen_pass p;

    memset(&p, 0, sizeof(p));
    snprintf(p.client, sizeof(p.client), "%s", client);
    snprintf(p.test, sizeof(p.test), "%s", test);
    p.passed = passed;
    p.expires = expires;
    return p;
}

/* Records passes[0..n) (copied) at now and waits for the answer. */
static void
record(struct fx *fx, const struct store_screen_pass *passes, size_t n, int64_t now)
{
    struct store_screen_pass *copy = xcalloc(n, sizeof(*copy));
    int want = fx->calls + 1;

    memcpy(copy, passes, n * sizeof(*copy));
    store_screen_record_async(fx->st, copy, n, now, done_cb, fx);
    wait_calls(fx, want);
    assert_int_equal(fx->status, 0);
}

static size_t
lookup(struct fx *fx, const char *client, int64_t now)
{
    int want = fx->calls + 1;

    store_screen_lookup_async(fx->st, client, now, lookup_cb, fx);
    wait_calls(fx, want);
    assert_int_equal(fx->status, 0);
    return fx->n;
}

static int64_t
count_rows(struct fx *fx)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t n;

    assert_int_equal(sqlite3_open_v2(fx->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM screen", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void
test_store_screen_record_lookup(void **state)
{
    struct fx *fx = *state;
    const struct store_screen_pass p[] = {
        pass("192.0.2.1", "pregreet", 1000, 1000 + 86400),
        pass("2001:db8:1:2::/64", "pregreet", 1000, 2000),
    };

    assert_int_equal(lookup(fx, "192.0.2.1", 1000), 0);
    record(fx, p, 2, 1000);
    assert_int_equal(lookup(fx, "192.0.2.1", 1001), 1);
    assert_string_equal(fx->got[0].client, "192.0.2.1");
    assert_string_equal(fx->got[0].test, "pregreet");
    assert_int_equal(fx->got[0].passed, 1000);
    assert_int_equal(fx->got[0].expires, 1000 + 86400);
    assert_int_equal(lookup(fx, "2001:db8:1:2::/64", 1999), 1);
    /* expired: not answered */
    assert_int_equal(lookup(fx, "2001:db8:1:2::/64", 2000), 0);
    assert_int_equal(lookup(fx, "192.0.2.2", 1001), 0);
}

static void
test_store_screen_later_expiry_kept(void **state)
{
    struct fx *fx = *state;
    struct store_screen_pass p = pass("192.0.2.9", "pregreet", 5000, 9000);

    record(fx, &p, 1, 5000);
    p = pass("192.0.2.9", "pregreet", 4000, 6000); /* an older pass, recorded late */
    record(fx, &p, 1, 5000);
    assert_int_equal(lookup(fx, "192.0.2.9", 5000), 1);
    assert_int_equal(fx->got[0].passed, 5000);
    assert_int_equal(fx->got[0].expires, 9000);
    p = pass("192.0.2.9", "pregreet", 7000, 12000);
    record(fx, &p, 1, 7000);
    assert_int_equal(lookup(fx, "192.0.2.9", 7000), 1);
    assert_int_equal(fx->got[0].expires, 12000);
    assert_int_equal(count_rows(fx), 1);
}

/* Each record job deletes a few expired rows: many expired rows go over a
 * few jobs, and a row that has not expired stays. */
static void
test_store_screen_expiry(void **state)
{
    struct fx *fx = *state;
    struct store_screen_pass many[100];
    struct store_screen_pass keep = pass("198.51.100.1", "pregreet", 100, 100000);
    int jobs = 0;

    for (int i = 0; i < 100; i++) {
        char ip[32];

        snprintf(ip, sizeof(ip), "10.0.0.%d", i);
        many[i] = pass(ip, "pregreet", 100, 200);
    }
    record(fx, many, 100, 100);
    record(fx, &keep, 1, 100);
    assert_int_equal(count_rows(fx), 101);
    while (count_rows(fx) > 1 && jobs < 10) {
        record(fx, &keep, 1, 300);
        jobs++;
    }
    assert_int_equal(count_rows(fx), 1);
    assert_true(jobs >= 3 && jobs <= 4); /* 32 a job */
    assert_int_equal(lookup(fx, "198.51.100.1", 300), 1);
}

/* After store_close a lookup is answered MXD_ECLOSING with nothing. */
static void
test_store_screen_closing(void **state)
{
    struct fx *fx = *state;

    store_close(fx->st, closed_cb, fx);
    store_screen_lookup_async(fx->st, "192.0.2.1", 1, lookup_cb, fx);
    store_screen_record_async(fx->st, NULL, 0, 1, done_cb, fx);
    fx->st = NULL;
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->calls, 2);
    assert_int_equal(fx->status, MXD_ECLOSING);
    assert_int_equal(fx->n, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_screen_record_lookup, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_screen_later_expiry_kept, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_screen_expiry, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_screen_closing, fx_setup, fx_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
