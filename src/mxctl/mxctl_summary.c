/*
 * mxctl_summary: `mxctl queue --summary` (issue 23), Postfix's qshape for
 * mxd's queue: waiting recipients (queued, deferred, held) counted by
 * destination domain and by the age of their message in qshape's buckets,
 * with the split by state. Owns, for one call, the table of domains it
 * reads (one entry per domain with waiting mail) and a jansson tree for
 * --json. Blocking, single-threaded: part of mxctl.
 *
 * One aggregate query, grouped in the database by (domain, state,
 * bucket). On SQLite it reads two covering indexes in message order
 * (schema 008), never a row of messages (whose rows hold the bodies) or of
 * message_rcpts, so a queue of a million recipients takes well under a
 * second (docs/performance.md); PostgreSQL has no INDEXED BY and no ON
 * for a CROSS JOIN, so it gets the same query as a plain join and plans
 * it itself. The domains' ranking, "other" and the total are summed here
 * from its rows.
 *
 * Errors: returns an exit status (mxctl_json.h) and says why on stderr.
 * Does not: change the database; list messages (that is `mxctl queue`).
 */
#include "mxctl/mxctl_summary.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mxctl/mxctl_json.h"
#include "store/dbconf.h"

enum { SUM_QUEUED, SUM_DEFERRED, SUM_HELD, SUM_NSTATES };

static const char *const state_names[SUM_NSTATES] = {"queued", "deferred", "held"};

/* qshape's columns: the upper bound of each bucket, in minutes. */
static const char *const bucket_names[MXCTL_SUMMARY_BUCKETS] = {
    "0-5m", "5-10m", "20m", "40m", "80m", "160m", "320m", "640m", "1280m", "1280m+"};

/* Bucket by age in seconds (a message from the future counts as new): one
 * CASE, so the database groups by it. The bounds double from 5 minutes. */
#define SUMMARY_SELECT                                                                             \
    "SELECT r.domain, r.state, CASE"                                                               \
    " WHEN ?1 - m.received < 300 THEN 0 WHEN ?1 - m.received < 600 THEN 1"                         \
    " WHEN ?1 - m.received < 1200 THEN 2 WHEN ?1 - m.received < 2400 THEN 3"                       \
    " WHEN ?1 - m.received < 4800 THEN 4 WHEN ?1 - m.received < 9600 THEN 5"                       \
    " WHEN ?1 - m.received < 19200 THEN 6 WHEN ?1 - m.received < 38400 THEN 7"                     \
    " WHEN ?1 - m.received < 76800 THEN 8 ELSE 9 END AS bucket, count(*)"
#define SUMMARY_WHERE                                                                              \
    " WHERE r.state IN ('queued', 'deferred', 'held')"                                             \
    " GROUP BY r.domain, r.state, bucket ORDER BY r.domain"

static const char summary_sqlite[] = SUMMARY_SELECT
    /* CROSS JOIN keeps messages outside: both indexes are then read in
     * message id order, a merge rather than a million random lookups. */
    " FROM messages AS m INDEXED BY messages_received"
    " CROSS JOIN message_rcpts AS r INDEXED BY message_rcpts_shape ON r.message_id = "
    "m.id" SUMMARY_WHERE;

static const char summary_pg[] = SUMMARY_SELECT
    " FROM messages AS m JOIN message_rcpts AS r ON r.message_id = m.id" SUMMARY_WHERE;

struct sum_row {
    char *domain; /* owned; NULL for "other" and the total */
    uint64_t total;
    uint64_t ages[MXCTL_SUMMARY_BUCKETS];
    uint64_t states[SUM_NSTATES];
};

struct sum_table {
    struct sum_row *v;
    size_t n, cap;
};

static void
row_add(struct sum_row *to, const struct sum_row *from)
{
    to->total += from->total;
    for (size_t i = 0; i < MXCTL_SUMMARY_BUCKETS; i++)
        to->ages[i] += from->ages[i];
    for (size_t i = 0; i < SUM_NSTATES; i++)
        to->states[i] += from->states[i];
}

/* The entry for domain: the last one, since rows come ordered by domain. */
static struct sum_row *
table_row(struct sum_table *t, const char *domain)
{
    if (t->n > 0 && strcmp(t->v[t->n - 1].domain, domain) == 0)
        return &t->v[t->n - 1];
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
    }
    memset(&t->v[t->n], 0, sizeof(t->v[t->n]));
    t->v[t->n].domain = xstrdup(domain);
    return &t->v[t->n++];
}

static void
table_free(struct sum_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].domain);
    free(t->v);
}

static int
state_index(const char *state)
{
    for (int i = 0; i < SUM_NSTATES; i++) {
        if (strcmp(state, state_names[i]) == 0)
            return i;
    }
    return -1;
}

/* Most recipients first; equal counts by name, so the output is stable. */
static int
row_cmp(const void *a, const void *b)
{
    const struct sum_row *x = a, *y = b;

    if (x->total != y->total)
        return x->total > y->total ? -1 : 1;
    return strcmp(x->domain, y->domain);
}

static int
summary_read(struct sdb *db, int64_t now, struct sum_table *t)
{
    const char *sql = sdb_engine(db) == SDB_SQLITE ? summary_sqlite : summary_pg;
    struct sdb_stmt *s = NULL;
    int rc;

    if (sdb_prepare(db, sql, &s) != 0) {
        fprintf(stderr, "mxctl: queue --summary: %s\n", sdb_errmsg(db));
        return MXCTL_REFUSED;
    }
    sdb_bind_i64(s, 1, now);
    while ((rc = sdb_step(s)) == SDB_ROW) {
        const char *dom = sdb_col_text(s, 0);
        const char *state = sdb_col_text(s, 1);
        int64_t b = sdb_col_i64(s, 2);
        int si = state ? state_index(state) : -1;
        uint64_t n = (uint64_t)sdb_col_i64(s, 3);
        struct sum_row *r = table_row(t, dom ? dom : "");

        if (b < 0 || b >= MXCTL_SUMMARY_BUCKETS || si < 0)
            continue; /* cannot happen: the query's WHERE and CASE */
        r->total += n;
        r->ages[b] += n;
        r->states[si] += n;
    }
    if (rc != SDB_DONE)
        fprintf(stderr, "mxctl: queue --summary: %s\n", sdb_errmsg(db));
    sdb_finalize(s);
    return rc == SDB_DONE ? MXCTL_OK : MXCTL_REFUSED;
}

/* A domain as mxd stored it, control characters and backslash escaped. */
static void
domain_safe(char *out, size_t size, const char *d)
{
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)d; *p != '\0' && o + 5 < size; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            o += (size_t)snprintf(out + o, size - o, *p == '\\' ? "\\\\" : "\\x%02x", *p);
        else
            out[o++] = (char)*p;
    }
    out[o] = '\0';
}

static void
text_row(const char *name, int width, const struct sum_row *r)
{
    printf("%-*s %8llu", width, name, (unsigned long long)r->total);
    for (size_t i = 0; i < MXCTL_SUMMARY_BUCKETS; i++)
        printf(" %6llu", (unsigned long long)r->ages[i]);
    for (size_t i = 0; i < SUM_NSTATES; i++)
        printf(" %8llu", (unsigned long long)r->states[i]);
    putchar('\n');
}

static void
print_text(const struct sum_table *t, size_t shown, const struct sum_row *other,
           const struct sum_row *total)
{
    char buf[1024];
    int width = 6;

    for (size_t i = 0; i < shown; i++) {
        int n = (int)strlen(t->v[i].domain);

        width = n > width ? (n < 40 ? n : 40) : width;
    }
    printf("%-*s %8s", width, "DOMAIN", "TOTAL");
    for (size_t i = 0; i < MXCTL_SUMMARY_BUCKETS; i++)
        printf(" %6s", bucket_names[i]);
    printf(" %8s %8s %8s\n", "QUEUED", "DEFERRED", "HELD");
    text_row("TOTAL", width, total);
    for (size_t i = 0; i < shown; i++) {
        domain_safe(buf, sizeof(buf), t->v[i].domain);
        text_row(buf, width, &t->v[i]);
    }
    if (other->total > 0)
        text_row("other", width, other);
}

static void
oom(const void *p)
{
    if (p == NULL)
        mxd_panic("mxctl: out of memory building JSON");
}

static json_t *
json_row(const char *domain, const struct sum_row *r)
{
    json_t *o = json_object(), *ages = json_array(), *name = NULL;
    char buf[1024];

    oom(o), oom(ages);
    if (domain != NULL) {
        /* Valid UTF-8 as it is; anything else escaped as the text shows it. */
        name = json_string(domain);
        if (name == NULL) {
            domain_safe(buf, sizeof(buf), domain);
            for (char *p = buf; *p != '\0'; p++)
                *p = (unsigned char)*p >= 0x80 ? '?' : *p;
            name = json_string(buf);
        }
        oom(name);
        json_object_set_new(o, "domain", name);
    }
    json_object_set_new(o, "total", json_integer((json_int_t)r->total));
    for (size_t i = 0; i < MXCTL_SUMMARY_BUCKETS; i++)
        json_array_append_new(ages, json_integer((json_int_t)r->ages[i]));
    json_object_set_new(o, "ages", ages);
    for (size_t i = 0; i < SUM_NSTATES; i++)
        json_object_set_new(o, state_names[i], json_integer((json_int_t)r->states[i]));
    return o;
}

static int
print_json(const struct sum_table *t, size_t shown, const struct sum_row *other,
           const struct sum_row *total, int64_t now)
{
    json_t *root = json_object(), *buckets = json_array(), *domains = json_array();
    char *text;
    int rc;

    oom(root), oom(buckets), oom(domains);
    json_object_set_new(root, "now", json_integer((json_int_t)now));
    for (size_t i = 0; i < MXCTL_SUMMARY_BUCKETS; i++)
        json_array_append_new(buckets, json_string(bucket_names[i]));
    json_object_set_new(root, "buckets", buckets);
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(domains, json_row(t->v[i].domain, &t->v[i]));
    json_object_set_new(root, "domains", domains);
    json_object_set_new(root, "other", json_row(NULL, other));
    json_object_set_new(root, "total", json_row(NULL, total));
    text = json_dumps(root, JSON_COMPACT);
    oom(text);
    rc = puts(text) < 0 ? MXCTL_REFUSED : MXCTL_OK;
    free(text);
    json_decref(root);
    return rc;
}

int
mxctl_summary(struct sdb *db, int64_t now, size_t top, bool json)
{
    struct sum_table t = {NULL, 0, 0};
    struct sum_row other, total;
    size_t shown;
    int rc;

    memset(&other, 0, sizeof(other));
    memset(&total, 0, sizeof(total));
    /* One read transaction: a consistent snapshot while mxd keeps writing. */
    if (dbconf_snapshot(db) != 0) {
        fprintf(stderr, "mxctl: queue --summary: %s\n", sdb_errmsg(db));
        return MXCTL_REFUSED;
    }
    rc = summary_read(db, now, &t);
    dbconf_snapshot_end(db);
    if (rc != MXCTL_OK)
        goto done;
    if (t.n > 0)
        qsort(t.v, t.n, sizeof(*t.v), row_cmp);
    shown = t.n < top ? t.n : top;
    for (size_t i = 0; i < t.n; i++) {
        row_add(&total, &t.v[i]);
        if (i >= shown)
            row_add(&other, &t.v[i]);
    }
    if (json)
        rc = print_json(&t, shown, &other, &total, now);
    else
        print_text(&t, shown, &other, &total);
done:
    table_free(&t);
    return rc;
}
