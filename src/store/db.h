/* db: opens queue.db with mxd's pragmas and brings its schema up to date. */
#ifndef MXD_DB_H
#define MXD_DB_H

#include <stdbool.h>

#include <sqlite3.h>

#include "base/util.h"

/* Highest schema version this binary knows (the number of schema/NNN_*.sql). */
int db_schema_version(void);

/*
 * Opens (creating the file and its parent directory when missing) the
 * database at path: WAL mode, synchronous=FULL, foreign keys on, a short
 * busy timeout; applies the numbered schema files not yet applied, tracked
 * with PRAGMA user_version, each in its own transaction. A database newer
 * than db_schema_version() is refused with MXD_ESCHEMA. Blocking: call at
 * start-up or from a thread that owns the handle. On failure *err is a
 * message for the operator (caller frees) and *out is NULL.
 */
int db_open(const char *path, sqlite3 **out, char **err) MXD_WUR;

#endif
