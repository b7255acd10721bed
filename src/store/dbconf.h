/* dbconf: where the configuration says the queue's database is (struct
 * sdb_params for sdb_open), and a read snapshot on either engine. The one
 * place that turns [server] store, database and postgresql into a
 * connection's parameters: mxd, its queue gauges and mxctl all use it. */
#ifndef MXD_DBCONF_H
#define MXD_DBCONF_H

#include "base/conf.h"
#include "base/util.h"
#include "store/sdb.h"

/* The database conf names: store = sqlite, the file `database`; store =
 * postgresql, the conninfo `postgresql`. The strings are borrowed from conf
 * and live as long as it. */
struct sdb_params dbconf_params(const struct conf *conf);

/* Offline checks of what conf_load cannot judge below the store: with
 * store = postgresql, the conninfo's syntax (libpq's parser, no
 * connection). 0, or MXD_EINVAL with *err (caller frees) one
 * "FILE:LINE: postgresql: <libpq's reason>" line. */
int dbconf_check(const struct conf *conf, char **err) MXD_WUR;

/* "sqlite" or "postgresql", as the configuration spells the engine. */
const char *dbconf_engine_name(enum sdb_engine engine);

/* Opens a read-only transaction that sees one consistent snapshot of the
 * whole database (SQLite: a deferred BEGIN, which WAL keeps readable while
 * mxd writes; PostgreSQL: REPEATABLE READ, READ ONLY). End it with
 * dbconf_snapshot_end. 0 or MXD_ESTORE (sdb_errmsg). */
int dbconf_snapshot(struct sdb *db) MXD_WUR;

/* Ends the transaction open on db, if any, writing nothing (a ROLLBACK,
 * which cannot lose a read): after a snapshot, or after a failure. */
void dbconf_snapshot_end(struct sdb *db);

#endif
