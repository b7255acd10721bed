/* sdb_fixture: what the unit tests on sdb share (test_sdb, test_store_pg):
 * a statement that must run, one integer read, and an empty PostgreSQL
 * database. Include after cmocka.h. */
#ifndef MXD_SDB_FIXTURE_H
#define MXD_SDB_FIXTURE_H

#include <stdint.h>
#include <stdlib.h>

#include "store/sdb.h"

static inline void
exec_ok(struct sdb *db, const char *sql)
{
    if (sdb_exec(db, sql) != 0)
        fail_msg("%s: %s", sql, sdb_errmsg(db));
}

/* The first column of sql's first row as an integer. */
static inline int64_t
query_i64(struct sdb *db, const char *sql)
{
    struct sdb_stmt *s = NULL;
    int64_t v;

    if (sdb_prepare(db, sql, &s) != 0)
        fail_msg("prepare %s: %s", sql, sdb_errmsg(db));
    assert_int_equal(sdb_step(s), SDB_ROW);
    v = sdb_col_i64(s, 0);
    sdb_finalize(s);
    return v;
}

/* The PostgreSQL database conninfo names, emptied (its schema public
 * dropped and made again). */
static inline void
pg_wipe(const char *conninfo)
{
    struct sdb_params p = {.engine = SDB_POSTGRESQL, .conninfo = conninfo};
    struct sdb *db = NULL;
    char *err = NULL;

    if (sdb_open(&p, &db, &err) != 0)
        fail_msg("sdb_open: %s", err ? err : "");
    exec_ok(db, "DROP SCHEMA public CASCADE; CREATE SCHEMA public");
    sdb_close(db);
}

#endif
