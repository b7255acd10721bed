/* spool: temporary files for message bodies too big to hold in memory. */
#ifndef MXD_SPOOL_H
#define MXD_SPOOL_H

#include <stddef.h>

#include "base/util.h"

/* The spool directory for a database path: "<dir of database>/spool".
 * Caller frees. */
char *spool_dir_for(const char *database);

/* Creates dir if missing and removes files left in it by a previous run
 * (bodies of messages that were never acknowledged). Blocking: start-up
 * only. Returns 0 or MXD_EIO with *err set (caller frees). */
int spool_dir_prepare(const char *dir, char **err) MXD_WUR;

/* Appends data to the file at path, creating it (mode 0600) when missing.
 * Blocking: call from a worker thread. Returns 0 or MXD_EIO. */
int spool_append(const char *path, const char *data, size_t len) MXD_WUR;

#endif
