/*
 * test_store_rcpt: the store jobs of recipients = sync and of the kept
 * callahead answers (store_rcpt.c, schema 006) against a real database
 * on a real uv loop: a list never synced, a list stored and looked up
 * (address, case, @domain catch-all), an unchanged list that only moves
 * its time, a new list replacing the old whole, callahead answers kept,
 * replaced and expired. Every test ends with uv_loop_close() == 0.
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
    bool listed, changed;
    int64_t synced;
    struct store_verify v;
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

    snprintf(fx->dir, sizeof(fx->dir), "%s/test_store_rcpt.XXXXXX", tmp && *tmp ? tmp : "/tmp");
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
wait_calls(struct fx *fx, int n)
{
    while (fx->calls < n)
        uv_run(&fx->loop, UV_RUN_ONCE);
}

static void
sync_cb(void *arg, int status, bool changed)
{
    struct fx *fx = arg;

    fx->calls++;
    fx->status = status;
    fx->changed = changed;
}

static void
lookup_cb(void *arg, int status, bool listed, int64_t synced)
{
    struct fx *fx = arg;

    fx->calls++;
    fx->status = status;
    fx->listed = listed;
    fx->synced = synced;
}

static void
verify_cb(void *arg, int status, const struct store_verify *v)
{
    struct fx *fx = arg;

    fx->calls++;
    fx->status = status;
    memset(&fx->v, 0, sizeof(fx->v));
    if (v != NULL)
        fx->v = *v;
}

/* A packed list of the n strings in items. */
static char *
packed(const char *const *items, size_t n, size_t *len)
{
    size_t total = 0;
    char *buf, *p;

    for (size_t i = 0; i < n; i++)
        total += strlen(items[i]) + 1;
    p = buf = xmalloc(total + 1);
    for (size_t i = 0; i < n; i++) {
        memcpy(p, items[i], strlen(items[i]) + 1);
        p += strlen(items[i]) + 1;
    }
    *len = total;
    return buf;
}

static void
replace(struct fx *fx, const char *src, const char *const *items, size_t n, const char *digest,
        int64_t now)
{
    size_t len;
    char *buf = packed(items, n, &len);
    int c = fx->calls;

    store_sync_replace_async(fx->st, src, buf, len, n, digest, now, sync_cb, fx);
    wait_calls(fx, c + 1);
    assert_int_equal(fx->status, 0);
}

static void
lookup(struct fx *fx, const char *src, const char *address, const char *domain)
{
    int c = fx->calls;

    store_sync_lookup_async(fx->st, src, address, domain, lookup_cb, fx);
    wait_calls(fx, c + 1);
}

static void
test_sync_lists(void **state)
{
    struct fx *fx = *state;
    static const char *const one[] = {"alice@example.org", "Bob@Example.org", "@catch.example"};
    static const char *const two[] = {"carol@example.org"};

    lookup(fx, "file:/u", "alice@example.org", "example.org");
    assert_int_equal(fx->status, MXD_ENOENT); /* never synced */
    assert_false(fx->listed);
    replace(fx, "file:/u", one, 3, "d1", 1000);
    assert_true(fx->changed);
    lookup(fx, "file:/u", "alice@example.org", "example.org");
    assert_int_equal(fx->status, 0);
    assert_true(fx->listed);
    assert_int_equal(fx->synced, 1000);
    lookup(fx, "file:/u", "BOB@example.ORG", "example.org");
    assert_true(fx->listed);
    lookup(fx, "file:/u", "anyone@catch.example", "catch.example");
    assert_true(fx->listed);
    lookup(fx, "file:/u", "nobody@example.org", "example.org");
    assert_int_equal(fx->status, 0);
    assert_false(fx->listed);
    lookup(fx, "ldap://other/x?mail", "alice@example.org", "example.org");
    assert_int_equal(fx->status, MXD_ENOENT); /* lists are per source */
    /* same digest: only the time moves (the list handed over is not used) */
    replace(fx, "file:/u", two, 1, "d1", 2000);
    assert_false(fx->changed);
    lookup(fx, "file:/u", "alice@example.org", "example.org");
    assert_true(fx->listed);
    assert_int_equal(fx->synced, 2000);
    /* a new list replaces the old one whole */
    replace(fx, "file:/u", two, 1, "d2", 3000);
    assert_true(fx->changed);
    lookup(fx, "file:/u", "alice@example.org", "example.org");
    assert_false(fx->listed);
    lookup(fx, "file:/u", "carol@example.org", "example.org");
    assert_true(fx->listed);
    assert_int_equal(fx->synced, 3000);
    /* an empty list is a list */
    replace(fx, "file:/u", NULL, 0, "d3", 4000);
    lookup(fx, "file:/u", "carol@example.org", "example.org");
    assert_int_equal(fx->status, 0);
    assert_false(fx->listed);
}

static void
verify_get(struct fx *fx, const char *address, int64_t now)
{
    int c = fx->calls;

    store_verify_get_async(fx->st, address, now, verify_cb, fx);
    wait_calls(fx, c + 1);
}

/* Writer jobs run in order: once this one is back, the records queued
 * before it are committed. */
static void
barrier(struct fx *fx)
{
    replace(fx, "barrier", NULL, 0, "b", 1);
}

static void
test_verify_cache(void **state)
{
    struct fx *fx = *state;
    struct store_verify yes = {.ok = true, .verified = 1000, .expires = 5000};
    struct store_verify no = {.ok = false, .verified = 1100, .expires = 1200};

    verify_get(fx, "a@example.org", 1000);
    assert_int_equal(fx->status, MXD_ENOENT);
    store_verify_put_async(fx->st, "a@example.org", &yes);
    store_verify_put_async(fx->st, "b@example.org", &no);
    barrier(fx); /* the writer took the records before it */
    verify_get(fx, "A@Example.org", 1500);
    assert_int_equal(fx->status, 0);
    assert_true(fx->v.ok);
    assert_int_equal(fx->v.verified, 1000);
    assert_int_equal(fx->v.expires, 5000);
    verify_get(fx, "b@example.org", 1150);
    assert_int_equal(fx->status, 0);
    assert_false(fx->v.ok);
    verify_get(fx, "b@example.org", 1200); /* expired */
    assert_int_equal(fx->status, MXD_ENOENT);
    /* a newer answer replaces the old; its job deletes the expired row */
    yes.ok = false;
    yes.verified = 6000;
    yes.expires = 7000;
    store_verify_put_async(fx->st, "a@example.org", &yes);
    barrier(fx);
    verify_get(fx, "a@example.org", 6500);
    assert_int_equal(fx->status, 0);
    assert_false(fx->v.ok);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_lists, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_cache, fx_setup, fx_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
