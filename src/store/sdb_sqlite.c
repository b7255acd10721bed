/*
 * sdb_sqlite: the sdb API on SQLite (the embedded default engine). A thin
 * layer: statements are sqlite3_stmt, bodies are messages.body written and
 * read in place through SQLite's incremental blob I/O. A large body (schema
 * 013, store.c) is messages.body (our trace header) followed by the file
 * messages.body_file names in <database dir>/bodies: read as one.
 *
 * Owns its sqlite3 handle and the statements prepared on it; one thread at
 * a time (opened with SQLITE_OPEN_NOMUTEX by db_open). Blocking.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/db.h"
#include "store/sdb_impl.h"

struct lite {
    struct sdb base;
    sqlite3 *db;
    char *path;
    char *bodies;            /* <database dir>/bodies */
    int wal_frames;          /* sdb_checkpoint_later: the WAL's frames after the last commit */
    sqlite3_stmt *body_file; /* prepared on first use; finalized by close */
};

struct lite_stmt {
    struct sdb_stmt base;
    sqlite3_stmt *st;
};

struct lite_body {
    struct sdb_body base;
    sqlite3_blob *blob;
    uint64_t off, total;
};

static struct lite *
lite(const struct sdb *db)
{
    return (struct lite *)db;
}

static sqlite3_stmt *
lst(struct sdb_stmt *s)
{
    return ((struct lite_stmt *)s)->st;
}

static void
lite_close(struct sdb *db)
{
    struct lite *l = lite(db);
    sqlite3_stmt *s;

    /* statements the caller did not finalize would keep the handle open */
    while ((s = sqlite3_next_stmt(l->db, NULL)) != NULL)
        sqlite3_finalize(s);
    sqlite3_close(l->db);
    free(l->path);
    free(l->bodies);
    free(l);
}

static const char *
lite_name(const struct sdb *db)
{
    return lite(db)->path;
}

static const char *
lite_errmsg(const struct sdb *db)
{
    return sqlite3_errmsg(lite(db)->db);
}

static bool
lite_lost(const struct sdb *db)
{
    (void)db;
    return false;
}

static int
lite_reconnect(struct sdb *db, char **err)
{
    (void)db;
    (void)err;
    return 0;
}

static int
lite_exec(struct sdb *db, const char *sql)
{
    return sqlite3_exec(lite(db)->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : MXD_ESTORE;
}

static bool
lite_in_txn(const struct sdb *db)
{
    return !sqlite3_get_autocommit(lite(db)->db);
}

/* Replaces SQLite's autocheckpoint hook (which checkpoints inside COMMIT). */
static int
lite_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((struct lite *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

static void
lite_checkpoint_later(struct sdb *db)
{
    struct lite *l = lite(db);

    sqlite3_wal_hook(l->db, lite_wal_hook, l);
}

static int
lite_checkpoint_due(struct sdb *db, int pages)
{
    struct lite *l = lite(db);
    int rc;

    if (l->wal_frames < pages)
        return 0;
    l->wal_frames = 0;
    rc = sqlite3_wal_checkpoint_v2(l->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    /* BUSY: another connection is checkpointing (mxctl); the next commit
     * that finds the WAL long tries again, as SQLite's own would */
    return rc == SQLITE_OK || rc == SQLITE_BUSY ? 0 : MXD_ESTORE;
}

static int
lite_prepare(struct sdb *db, const char *sql, struct sdb_stmt **out)
{
    struct lite_stmt *s = xcalloc(1, sizeof(*s));

    if (sqlite3_prepare_v3(lite(db)->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st, NULL) !=
        SQLITE_OK) {
        free(s);
        return MXD_ESTORE;
    }
    s->base.db = db;
    *out = &s->base;
    return 0;
}

static void
lite_finalize(struct sdb_stmt *s)
{
    sqlite3_finalize(lst(s));
    free(s);
}

static void
lite_bind_i64(struct sdb_stmt *s, int idx, int64_t v)
{
    sqlite3_bind_int64(lst(s), idx, v);
}

static void
lite_bind_text(struct sdb_stmt *s, int idx, const char *text)
{
    sqlite3_bind_text(lst(s), idx, text, -1, SQLITE_STATIC); /* NULL binds NULL */
}

static void
lite_bind_blob(struct sdb_stmt *s, int idx, const void *p, size_t n)
{
    sqlite3_bind_blob64(lst(s), idx, p != NULL ? p : "", n, SQLITE_STATIC);
}

static void
lite_bind_zeroblob(struct sdb_stmt *s, int idx, uint64_t n)
{
    /* past SQLITE_LIMIT_LENGTH it fails: the insert then fails with SQLITE_TOOBIG */
    if (sqlite3_bind_zeroblob64(lst(s), idx, n) != SQLITE_OK)
        sqlite3_bind_null(lst(s), idx);
}

static void
lite_bind_null(struct sdb_stmt *s, int idx)
{
    sqlite3_bind_null(lst(s), idx);
}

static int
lite_step(struct sdb_stmt *s)
{
    switch (sqlite3_step(lst(s))) {
    case SQLITE_ROW:
        return SDB_ROW;
    case SQLITE_DONE:
        return SDB_DONE;
    default:
        return MXD_ESTORE;
    }
}

static void
lite_reset(struct sdb_stmt *s)
{
    sqlite3_reset(lst(s));
}

static bool
lite_col_null(struct sdb_stmt *s, int col)
{
    return sqlite3_column_type(lst(s), col) == SQLITE_NULL;
}

static int64_t
lite_col_i64(struct sdb_stmt *s, int col)
{
    return sqlite3_column_int64(lst(s), col);
}

static const char *
lite_col_text(struct sdb_stmt *s, int col)
{
    return (const char *)sqlite3_column_text(lst(s), col);
}

static const void *
lite_col_blob(struct sdb_stmt *s, int col, size_t *len)
{
    const void *p = sqlite3_column_blob(lst(s), col);

    *len = (size_t)sqlite3_column_bytes(lst(s), col);
    return p;
}

static int
lite_body_begin(struct sdb *db, int64_t msg_id, uint64_t total, struct sdb_body **out)
{
    struct lite_body *b;
    sqlite3_blob *blob = NULL;

    if (total == 0) {
        b = xcalloc(1, sizeof(*b));
    } else {
        if (total > INT_MAX || sqlite3_blob_open(lite(db)->db, "main", "messages", "body", msg_id,
                                                 1, &blob) != SQLITE_OK)
            return MXD_ESTORE;
        b = xcalloc(1, sizeof(*b));
    }
    b->base.db = db;
    b->blob = blob;
    b->total = total;
    *out = &b->base;
    return 0;
}

static int
lite_body_write(struct sdb_body *bb, const void *p, size_t n)
{
    struct lite_body *b = (struct lite_body *)bb;

    if (n == 0)
        return 0;
    /* offsets stay inside an int: body_begin refused a larger total */
    if (b->blob == NULL || n > b->total - b->off ||
        sqlite3_blob_write(b->blob, p, (int)n, (int)b->off) != SQLITE_OK)
        return MXD_ESTORE;
    b->off += n;
    return 0;
}

static int
lite_body_end(struct sdb_body *bb, bool ok)
{
    struct lite_body *b = (struct lite_body *)bb;
    int rc = ok && b->off != b->total ? MXD_ESTORE : 0;

    if (sqlite3_blob_close(b->blob) != SQLITE_OK) /* NULL is a no-op */
        rc = MXD_ESTORE;
    free(b);
    return rc;
}

char *
sdb_sqlite_body_dir(const char *database)
{
    const char *slash = strrchr(database, '/');

    if (slash == NULL)
        return xstrdup("bodies");
    return xasprintf("%.*s/bodies", (int)(slash - database), database);
}

/* The name in messages.body_file of message msg_id: 0 (*name NULL when the
 * whole body is in messages.body; caller frees), MXD_ENOENT or MXD_ESTORE. */
static int
lite_body_file(struct lite *l, int64_t msg_id, char **name)
{
    int rc;

    *name = NULL;
    if (l->body_file == NULL &&
        sqlite3_prepare_v3(l->db, "SELECT body_file FROM messages WHERE id = ?1", -1,
                           SQLITE_PREPARE_PERSISTENT, &l->body_file, NULL) != SQLITE_OK)
        return MXD_ESTORE;
    sqlite3_bind_int64(l->body_file, 1, msg_id);
    rc = sqlite3_step(l->body_file);
    if (rc == SQLITE_ROW && sqlite3_column_type(l->body_file, 0) != SQLITE_NULL)
        *name = xstrdup((const char *)sqlite3_column_text(l->body_file, 0));
    sqlite3_reset(l->body_file);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? MXD_ENOENT : MXD_ESTORE;
}

/* Up to max octets from offset of the file part of a body; *size its size. */
static int
lite_file_read(struct lite *l, const char *name, uint64_t offset, void *buf, size_t max,
               size_t *got, uint64_t *size)
{
    char *path = xasprintf("%s/%s", l->bodies, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
    struct stat sb;

    free(path);
    *got = 0;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0)
            close(fd);
        return MXD_ESTORE;
    }
    *size = (uint64_t)sb.st_size;
    while (offset + *got < *size && *got < max) {
        ssize_t n = pread(fd, (char *)buf + *got, max - *got, (off_t)(offset + *got));

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = MXD_ESTORE;
            break;
        }
        *got += (size_t)n;
    }
    close(fd);
    return rc;
}

static int
lite_body_read(struct sdb *db, int64_t msg_id, uint64_t offset, void *buf, size_t max, size_t *got,
               uint64_t *total)
{
    struct lite *l = lite(db);
    sqlite3_blob *blob = NULL;
    char *name = NULL;
    uint64_t head, fsize = 0;
    size_t fgot = 0;
    int rc = 0;

    *got = 0;
    switch (sqlite3_blob_open(l->db, "main", "messages", "body", msg_id, 0, &blob)) {
    case SQLITE_OK:
        break;
    case SQLITE_ERROR: /* no such row (or the column is NULL) */
        sqlite3_blob_close(blob);
        return MXD_ENOENT;
    default:
        sqlite3_blob_close(blob);
        return MXD_ESTORE;
    }
    *total = head = (uint64_t)sqlite3_blob_bytes(blob);
    if (offset < head) {
        *got = (size_t)(head - offset) < max ? (size_t)(head - offset) : max;
        /* blob sizes and offsets fit an int: SQLITE_LIMIT_LENGTH */
        if (*got > 0 && sqlite3_blob_read(blob, buf, (int)*got, (int)offset) != SQLITE_OK) {
            *got = 0;
            rc = MXD_ESTORE;
        }
    }
    sqlite3_blob_close(blob);
    if (rc != 0 || (rc = lite_body_file(l, msg_id, &name)) != 0 || name == NULL)
        return rc == MXD_ENOENT ? MXD_ESTORE : rc; /* deleted between the two: a read error */
    /* the rest of the body follows the header in messages.body */
    rc = lite_file_read(l, name, offset + *got > head ? offset + *got - head : 0,
                        (char *)buf + *got, max - *got, &fgot, &fsize);
    free(name);
    if (rc != 0) {
        *got = 0;
        return rc;
    }
    *got += fgot;
    *total = head + fsize;
    return 0;
}

static const struct sdb_ops lite_ops = {
    .close = lite_close,
    .name = lite_name,
    .errmsg = lite_errmsg,
    .lost = lite_lost,
    .reconnect = lite_reconnect,
    .exec = lite_exec,
    .in_txn = lite_in_txn,
    .checkpoint_later = lite_checkpoint_later,
    .checkpoint_due = lite_checkpoint_due,
    .prepare = lite_prepare,
    .finalize = lite_finalize,
    .bind_i64 = lite_bind_i64,
    .bind_text = lite_bind_text,
    .bind_blob = lite_bind_blob,
    .bind_zeroblob = lite_bind_zeroblob,
    .bind_null = lite_bind_null,
    .step = lite_step,
    .reset = lite_reset,
    .col_null = lite_col_null,
    .col_i64 = lite_col_i64,
    .col_text = lite_col_text,
    .col_blob = lite_col_blob,
    .body_begin = lite_body_begin,
    .body_write = lite_body_write,
    .body_end = lite_body_end,
    .body_read = lite_body_read,
};

int
sdb_sqlite_open(const struct sdb_params *p, struct sdb **out, char **err)
{
    struct lite *l;
    sqlite3 *db;
    int rc;

    if ((rc = db_open(p->path, &db, err)) != 0)
        return rc;
    l = xcalloc(1, sizeof(*l));
    l->base.ops = &lite_ops;
    l->base.engine = SDB_SQLITE;
    l->db = db;
    l->path = xstrdup(p->path);
    l->bodies = sdb_sqlite_body_dir(p->path);
    *out = &l->base;
    return 0;
}
