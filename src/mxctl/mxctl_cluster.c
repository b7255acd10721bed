/*
 * mxctl_cluster: `mxctl cluster` (issue 21). Reads cluster_nodes (one row
 * per node: name, started, heartbeat, in unix seconds; each node renews
 * its heartbeat every third of cluster_lease) and, per node, the number
 * of message_rcpts whose lease it holds now (lease_owner, lease_until).
 * Owns, for one call, one statement and a jansson tree for --json.
 * Blocking, single-threaded: part of mxctl.
 *
 * A node is "dead" when its heartbeat is more than twice cluster_lease
 * old: by then every lease it held has expired and other nodes take its
 * work; a node just slow to renew is still "alive". The verdict is this
 * mxctl's, from its own clock and configuration; it changes nothing.
 *
 * Errors: returns an exit status (mxctl_json.h) and says why on stderr.
 * Does not: run on SQLite (mxctl.c refuses first: there is no cluster),
 * remove dead nodes, or take their leases.
 */
#include "mxctl/mxctl_cluster.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mxctl/mxctl_json.h"
#include "store/dbconf.h"

/* The leases counted per node: a correlated count over the lease_owner
 * index, one row per node, ordered by name so the output is stable. */
static const char cluster_sql[] = "SELECT n.name, n.started, n.heartbeat,"
                                  " (SELECT count(*) FROM message_rcpts AS r"
                                  "  WHERE r.lease_owner = n.name AND r.lease_until > ?1)"
                                  " FROM cluster_nodes AS n ORDER BY n.name";

static void
oom(const void *p)
{
    if (p == NULL)
        mxd_panic("mxctl: out of memory building JSON");
}

/* Node names are ours (node_name or the hostname): printed as they are,
 * control characters aside. */
static void
put_name(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            printf("\\x%02x", *p);
        else
            putchar(*p);
    }
}

static json_t *
node_json(const char *name, int64_t started, int64_t heartbeat, int64_t age, bool alive,
          int64_t leases)
{
    json_t *o = json_pack("{s:s?, s:I, s:I, s:I, s:b, s:I}", "name", name, "started",
                          (json_int_t)started, "heartbeat", (json_int_t)heartbeat, "heartbeat_age",
                          (json_int_t)age, "alive", alive, "leases", (json_int_t)leases);

    if (o == NULL) /* a name that is not UTF-8 */
        o = json_pack("{s:n, s:I, s:I, s:I, s:b, s:I}", "name", "started", (json_int_t)started,
                      "heartbeat", (json_int_t)heartbeat, "heartbeat_age", (json_int_t)age, "alive",
                      alive, "leases", (json_int_t)leases);
    oom(o);
    return o;
}

static int
print_json(json_t *arr)
{
    char *text = json_dumps(arr, JSON_COMPACT | JSON_ENCODE_ANY);
    int rc;

    oom(text);
    rc = puts(text) < 0 ? MXCTL_REFUSED : MXCTL_OK;
    free(text);
    return rc;
}

int
mxctl_cluster(struct sdb *db, int64_t now, int64_t lease_s, bool json)
{
    struct sdb_stmt *s = NULL;
    json_t *arr = json_array();
    int rc = MXCTL_OK, step = SDB_DONE, n = 0;

    oom(arr);
    if (dbconf_snapshot(db) != 0 || sdb_prepare(db, cluster_sql, &s) != 0) {
        fprintf(stderr, "mxctl: cluster: %s\n", sdb_errmsg(db));
        rc = MXCTL_REFUSED;
        goto done;
    }
    sdb_bind_i64(s, 1, now);
    while ((step = sdb_step(s)) == SDB_ROW) {
        const char *name = sdb_col_str(s, 0);
        int64_t heartbeat = sdb_col_i64(s, 2), age = now - heartbeat;
        bool alive = age <= 2 * lease_s;

        if (json) {
            json_array_append_new(
                arr, node_json(name, sdb_col_i64(s, 1), heartbeat, age, alive, sdb_col_i64(s, 3)));
            continue;
        }
        if (n++ == 0)
            printf("%-32s %10s %-5s %8s\n", "NODE", "HEARTBEAT", "STATE", "LEASES");
        put_name(name);
        printf("%*s %9llds %-5s %8lld\n", 32 - (int)strlen(name) > 0 ? 32 - (int)strlen(name) : 0,
               "", (long long)(age > 0 ? age : 0), alive ? "alive" : "dead",
               (long long)sdb_col_i64(s, 3));
    }
    if (step != SDB_DONE) {
        fprintf(stderr, "mxctl: cluster: %s\n", sdb_errmsg(db));
        rc = MXCTL_REFUSED;
    }
done:
    sdb_finalize(s);
    dbconf_snapshot_end(db);
    if (rc == MXCTL_OK && json)
        rc = print_json(arr);
    else if (rc == MXCTL_OK && n == 0)
        puts("no cluster nodes");
    json_decref(arr);
    return rc;
}
