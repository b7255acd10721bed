/*
 * dbconf: the queue's database as the configuration names it. Owns
 * nothing and keeps no state; any thread (dbconf_snapshot blocks, as every
 * sdb call on its connection does).
 * Errors: dbconf_snapshot returns 0 or MXD_ESTORE, the reason in
 * sdb_errmsg. Does not open or check the database: sdb_open does.
 */
#include "store/dbconf.h"

struct sdb_params
dbconf_params(const struct conf *conf)
{
    return (struct sdb_params){
        .engine = conf->store == CONF_STORE_POSTGRESQL ? SDB_POSTGRESQL : SDB_SQLITE,
        .path = conf->database,
        .conninfo = conf->postgresql,
    };
}

const char *
dbconf_engine_name(enum sdb_engine engine)
{
    return engine == SDB_POSTGRESQL ? "postgresql" : "sqlite";
}

int
dbconf_snapshot(struct sdb *db)
{
    return sdb_exec(db, sdb_engine(db) == SDB_POSTGRESQL
                            ? "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                            : "BEGIN");
}

void
dbconf_snapshot_end(struct sdb *db)
{
    /* a failed ROLLBACK leaves nothing to undo: the connection is closing */
    if (sdb_in_txn(db) && sdb_exec(db, "ROLLBACK") != 0)
        return;
}
