/*
 * sdb: the store's SQL connection, one small API over two engines: SQLite
 * (the embedded default, sdb_sqlite.c) and PostgreSQL (cluster mode,
 * sdb_pg.c). Shaped after SQLite's own API so that store code reads the
 * same for both: prepare once, bind, step, read columns, reset.
 *
 * A connection and its statements belong to one thread at a time and
 * block (disk, network): use them from the store's threads or from mxctl,
 * never from the loop thread while it serves clients.
 *
 * SQL text: parameters are written ?1, ?2 ... (the PostgreSQL side turns
 * them into $1, $2 ... outside string literals). Where the dialects differ
 * the caller keeps one text per engine (sdb_engine() says which).
 * Statements that need the new row's id end in RETURNING id (both engines
 * support it): there is no last-insert-rowid.
 */
#ifndef MXD_SDB_H
#define MXD_SDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

enum sdb_engine { SDB_SQLITE, SDB_POSTGRESQL };

/* Where the database is. */
struct sdb_params {
    enum sdb_engine engine;
    const char *path;     /* SQLITE: the database file */
    const char *conninfo; /* POSTGRESQL: a libpq connection string */
    /* POSTGRESQL: a server that cannot be reached now is no error: the
     * connection starts lost (sdb_lost) and sdb_reconnect connects and
     * brings the schema up to date (mxd starts and answers 451 until
     * then). false: sdb_open fails (mxctl, tests). */
    bool lazy;
    /* POSTGRESQL: statements run after each (re)connect, e.g. a session
     * setting; NULL: none. A failure is a failed connect. */
    const char *on_connect;
};

struct sdb;
struct sdb_stmt;

/* sdb_step's results other than an error (a negative MXD_E*). */
#define SDB_DONE 0
#define SDB_ROW  1

/* Highest schema version this binary knows (the same number for both
 * engines: migration N of one is migration N of the other). */
int sdb_schema_version(void);

/*
 * Connects (SQLite: opens, creating the file and its directory; WAL,
 * synchronous=FULL, foreign keys) and brings the schema up to date, each
 * migration in its own transaction, safe against another process doing
 * the same at once. A database newer than this binary: MXD_ESCHEMA.
 * Otherwise MXD_EINVAL, MXD_EIO, MXD_ESTORE; *err (caller frees) says why,
 * naming the database but never a password. *out is NULL on failure.
 */
int sdb_open(const struct sdb_params *p, struct sdb **out, char **err) MXD_WUR;

/* Parses a libpq connection string (PQconninfoParse) without connecting:
 * 0, or MXD_EINVAL with libpq's reason in *err (one line, caller frees). */
int sdb_conninfo_check(const char *conninfo, char **err) MXD_WUR;

/* Finalizes every statement still prepared on db and closes it. NULL ok. */
void sdb_close(struct sdb *db);

enum sdb_engine sdb_engine(const struct sdb *db);

/* A short name for logs: the SQLite path, or "postgresql host:port/db". */
const char *sdb_name(const struct sdb *db);

/* The last error on db, for logs (never NULL; valid until the next call). */
const char *sdb_errmsg(const struct sdb *db);

/*
 * POSTGRESQL: the connection is gone (the server died, a failover): every
 * statement fails until sdb_reconnect succeeded. SQLITE: always false.
 */
bool sdb_lost(const struct sdb *db);

/* Connects again (blocking, bounded by the conninfo's connect_timeout) and
 * re-prepares the statements lazily. 0 or MXD_ESTORE (*err says why). */
int sdb_reconnect(struct sdb *db, char **err) MXD_WUR;

/* Runs sql (one or more statements, no result rows wanted). 0 or MXD_ESTORE. */
int sdb_exec(struct sdb *db, const char *sql) MXD_WUR;

/* A transaction is open on db (after BEGIN, before COMMIT or ROLLBACK). */
bool sdb_in_txn(const struct sdb *db);

/* SQLite: this connection's commits no longer checkpoint the WAL inside
 * the COMMIT (SQLite's autocheckpoint, before the caller learns that its
 * transaction is durable); sdb_checkpoint_due does it when the caller is
 * ready. PostgreSQL: nothing. */
void sdb_checkpoint_later(struct sdb *db);
/* After sdb_checkpoint_later: once the WAL holds pages or more frames, a
 * PASSIVE checkpoint (synced as SQLite's own). 0, or MXD_ESTORE. */
int sdb_checkpoint_due(struct sdb *db, int pages);

/* Prepares sql for repeated use on db. 0 or MXD_ESTORE (sdb_errmsg). */
int sdb_prepare(struct sdb *db, const char *sql, struct sdb_stmt **out) MXD_WUR;

/* NULL ok. */
void sdb_finalize(struct sdb_stmt *s);

/*
 * Parameters, from 1. A binding stays until it is replaced (sdb_reset
 * keeps it, as in SQLite); text and blob pointers are not copied and must
 * stay valid until the statement has been stepped to its end or reset.
 * Binding an index the statement does not use is ignored. Text NULL binds
 * SQL NULL.
 */
void sdb_bind_i64(struct sdb_stmt *s, int idx, int64_t v);
void sdb_bind_text(struct sdb_stmt *s, int idx, const char *text);
void sdb_bind_blob(struct sdb_stmt *s, int idx, const void *p, size_t n);
void sdb_bind_null(struct sdb_stmt *s, int idx);
/* n zero octets: the place of a body sdb_body_begin fills in (SQLite's
 * messages.body; the PostgreSQL texts do not use the parameter). */
void sdb_bind_zeroblob(struct sdb_stmt *s, int idx, uint64_t n);

/* The first call runs the statement; each call moves to the next row:
 * SDB_ROW, SDB_DONE, or MXD_ESTORE (sdb_errmsg; sdb_lost may now be true). */
int sdb_step(struct sdb_stmt *s) MXD_WUR;

/* Ends the current run (the rows not read are dropped); bindings stay. */
void sdb_reset(struct sdb_stmt *s);

/* Columns of the current row, from 0. Text and blob pointers are valid
 * until the next sdb_step or sdb_reset; a NULL value reads as 0, "" (text
 * NULL for sdb_col_text) or 0 octets. */
bool sdb_col_null(struct sdb_stmt *s, int col);
int64_t sdb_col_i64(struct sdb_stmt *s, int col);
const char *sdb_col_text(struct sdb_stmt *s, int col);
/* sdb_col_text, with "" for NULL. */
const char *sdb_col_str(struct sdb_stmt *s, int col);
const void *sdb_col_blob(struct sdb_stmt *s, int col, size_t *len);

/* ---- message bodies ------------------------------------------------------
 * A body is written once, right after its messages row was inserted in the
 * same transaction, and read by range. SQLite keeps it in messages.body
 * (inserted as a zeroblob of the final size, then written in place);
 * PostgreSQL in message_body chunks. Neither holds more than one chunk of
 * it in memory. */
struct sdb_body;

/* Starts writing the total-octet body of message msg_id. 0 or MXD_ESTORE. */
int sdb_body_begin(struct sdb *db, int64_t msg_id, uint64_t total, struct sdb_body **out) MXD_WUR;
/* Appends p[0..n); 0 or MXD_ESTORE. */
int sdb_body_write(struct sdb_body *b, const void *p, size_t n) MXD_WUR;
/* Finishes (and frees) b; fewer octets than announced is an error unless
 * the caller is abandoning the write (ok false). 0 or MXD_ESTORE. */
int sdb_body_end(struct sdb_body *b, bool ok);

/* Reads up to max octets of message msg_id's body from offset into buf:
 * *got octets, *total the body's size. 0, MXD_ENOENT (no such message) or
 * MXD_ESTORE. */
int sdb_body_read(struct sdb *db, int64_t msg_id, uint64_t offset, void *buf, size_t max,
                  size_t *got, uint64_t *total) MXD_WUR;

/* SQLite: the directory of the large bodies kept in files (schema 013):
 * "<dir of database>/bodies", beside the spool (the same filesystem: a
 * spool file is linked there). Caller frees. */
char *sdb_sqlite_body_dir(const char *database);

#endif
