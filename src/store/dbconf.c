/*
 * dbconf: the queue's database as the configuration names it. Owns
 * nothing and keeps no state; any thread (dbconf_snapshot blocks, as every
 * sdb call on its connection does).
 * Errors: dbconf_snapshot returns 0 or MXD_ESTORE, the reason in
 * sdb_errmsg; dbconf_check returns 0 or MXD_EINVAL with a FILE:LINE
 * message. Does not open or check the database: sdb_open does.
 */
#include "store/dbconf.h"

#include <stdlib.h>

int
dbconf_check(const struct conf *conf, char **err)
{
    char *msg = NULL;

    *err = NULL;
    if (conf->store != CONF_STORE_POSTGRESQL || conf->postgresql == NULL)
        return 0; /* conf_load already said that postgresql is missing */
    if (sdb_conninfo_check(conf->postgresql, &msg) == 0)
        return 0;
    *err = xasprintf("%s:%d: postgresql: %s", conf->path ? conf->path : "mxd.conf",
                     conf->postgresql_line > 0 ? conf->postgresql_line : 1, msg);
    free(msg);
    return MXD_EINVAL;
}

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
