/*
 * sdb: dispatches the store's SQL API to the engine a connection was
 * opened with (sdb_sqlite.c or sdb_pg.c). No state of its own.
 */
#include "store/sdb.h"

#include <stdlib.h>

#include "store/db.h"
#include "store/sdb_impl.h"

int
sdb_schema_version(void)
{
    return db_schema_version();
}

int
sdb_open(const struct sdb_params *p, struct sdb **out, char **err)
{
    *out = NULL;
    *err = NULL;
    switch (p->engine) {
    case SDB_SQLITE:
        return sdb_sqlite_open(p, out, err);
    case SDB_POSTGRESQL:
        return sdb_pg_open(p, out, err);
    }
    *err = xstrdup("unknown database engine");
    return MXD_EINVAL;
}

void
sdb_close(struct sdb *db)
{
    if (db != NULL)
        db->ops->close(db);
}

enum sdb_engine
sdb_engine(const struct sdb *db)
{
    return db->engine;
}

const char *
sdb_name(const struct sdb *db)
{
    return db->ops->name(db);
}

const char *
sdb_errmsg(const struct sdb *db)
{
    return db->ops->errmsg(db);
}

bool
sdb_lost(const struct sdb *db)
{
    return db->ops->lost(db);
}

int
sdb_reconnect(struct sdb *db, char **err)
{
    *err = NULL;
    return db->ops->reconnect(db, err);
}

int
sdb_exec(struct sdb *db, const char *sql)
{
    return db->ops->exec(db, sql);
}

bool
sdb_in_txn(const struct sdb *db)
{
    return db->ops->in_txn(db);
}

void
sdb_checkpoint_later(struct sdb *db)
{
    if (db->ops->checkpoint_later != NULL)
        db->ops->checkpoint_later(db);
}

int
sdb_checkpoint_due(struct sdb *db, int pages)
{
    return db->ops->checkpoint_due != NULL ? db->ops->checkpoint_due(db, pages) : 0;
}

int
sdb_prepare(struct sdb *db, const char *sql, struct sdb_stmt **out)
{
    *out = NULL;
    return db->ops->prepare(db, sql, out);
}

void
sdb_finalize(struct sdb_stmt *s)
{
    if (s != NULL)
        s->db->ops->finalize(s);
}

void
sdb_bind_i64(struct sdb_stmt *s, int idx, int64_t v)
{
    s->db->ops->bind_i64(s, idx, v);
}

void
sdb_bind_text(struct sdb_stmt *s, int idx, const char *text)
{
    s->db->ops->bind_text(s, idx, text);
}

void
sdb_bind_blob(struct sdb_stmt *s, int idx, const void *p, size_t n)
{
    s->db->ops->bind_blob(s, idx, p, n);
}

void
sdb_bind_zeroblob(struct sdb_stmt *s, int idx, uint64_t n)
{
    s->db->ops->bind_zeroblob(s, idx, n);
}

void
sdb_bind_null(struct sdb_stmt *s, int idx)
{
    s->db->ops->bind_null(s, idx);
}

int
sdb_step(struct sdb_stmt *s)
{
    return s->db->ops->step(s);
}

void
sdb_reset(struct sdb_stmt *s)
{
    s->db->ops->reset(s);
}

bool
sdb_col_null(struct sdb_stmt *s, int col)
{
    return s->db->ops->col_null(s, col);
}

int64_t
sdb_col_i64(struct sdb_stmt *s, int col)
{
    return s->db->ops->col_i64(s, col);
}

const char *
sdb_col_text(struct sdb_stmt *s, int col)
{
    return s->db->ops->col_text(s, col);
}

const char *
sdb_col_str(struct sdb_stmt *s, int col)
{
    const char *t = s->db->ops->col_text(s, col);

    return t != NULL ? t : "";
}

const void *
sdb_col_blob(struct sdb_stmt *s, int col, size_t *len)
{
    return s->db->ops->col_blob(s, col, len);
}

int
sdb_body_begin(struct sdb *db, int64_t msg_id, uint64_t total, struct sdb_body **out)
{
    *out = NULL;
    return db->ops->body_begin(db, msg_id, total, out);
}

int
sdb_body_write(struct sdb_body *b, const void *p, size_t n)
{
    return b->db->ops->body_write(b, p, n);
}

int
sdb_body_end(struct sdb_body *b, bool ok)
{
    return b == NULL ? 0 : b->db->ops->body_end(b, ok);
}

int
sdb_body_read(struct sdb *db, int64_t msg_id, uint64_t offset, void *buf, size_t max, size_t *got,
              uint64_t *total)
{
    *got = 0;
    *total = 0;
    return db->ops->body_read(db, msg_id, offset, buf, max, got, total);
}
