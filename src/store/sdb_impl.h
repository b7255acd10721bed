/* sdb internals: what each engine provides (sdb_sqlite.c, sdb_pg.c) and
 * sdb.c dispatches to. Not for other files. */
#ifndef MXD_SDB_IMPL_H
#define MXD_SDB_IMPL_H

#include "store/sdb.h"

struct sdb_ops {
    void (*close)(struct sdb *db);
    const char *(*name)(const struct sdb *db);
    const char *(*errmsg)(const struct sdb *db);
    bool (*lost)(const struct sdb *db);
    int (*reconnect)(struct sdb *db, char **err);
    int (*exec)(struct sdb *db, const char *sql);
    bool (*in_txn)(const struct sdb *db);
    void (*checkpoint_later)(struct sdb *db);         /* NULL: nothing to do */
    int (*checkpoint_due)(struct sdb *db, int pages); /* NULL: never due */
    int (*prepare)(struct sdb *db, const char *sql, struct sdb_stmt **out);
    void (*finalize)(struct sdb_stmt *s);
    void (*bind_i64)(struct sdb_stmt *s, int idx, int64_t v);
    void (*bind_text)(struct sdb_stmt *s, int idx, const char *text);
    void (*bind_blob)(struct sdb_stmt *s, int idx, const void *p, size_t n);
    void (*bind_zeroblob)(struct sdb_stmt *s, int idx, uint64_t n);
    void (*bind_null)(struct sdb_stmt *s, int idx);
    int (*step)(struct sdb_stmt *s);
    void (*reset)(struct sdb_stmt *s);
    bool (*col_null)(struct sdb_stmt *s, int col);
    int64_t (*col_i64)(struct sdb_stmt *s, int col);
    const char *(*col_text)(struct sdb_stmt *s, int col);
    const void *(*col_blob)(struct sdb_stmt *s, int col, size_t *len);
    int (*body_begin)(struct sdb *db, int64_t msg_id, uint64_t total, struct sdb_body **out);
    int (*body_write)(struct sdb_body *b, const void *p, size_t n);
    int (*body_end)(struct sdb_body *b, bool ok);
    int (*body_read)(struct sdb *db, int64_t msg_id, uint64_t offset, void *buf, size_t max,
                     size_t *got, uint64_t *total);
};

/* The first member of each engine's connection, statement and body. */
struct sdb {
    const struct sdb_ops *ops;
    enum sdb_engine engine;
};
struct sdb_stmt {
    struct sdb *db;
};
struct sdb_body {
    struct sdb *db;
};

int sdb_sqlite_open(const struct sdb_params *p, struct sdb **out, char **err);
int sdb_pg_open(const struct sdb_params *p, struct sdb **out, char **err);

#endif
