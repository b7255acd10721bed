/* mxctl_summary: `mxctl queue --summary`, the queue's shape as Postfix's
 * qshape shows it: recipients waiting by destination domain and the age of
 * their message, with the state split. Part of mxctl. */
#ifndef MXD_MXCTL_SUMMARY_H
#define MXD_MXCTL_SUMMARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/sdb.h"

/* The qshape age buckets (minutes): 0-5, 5-10, 10-20, ... 640-1280, 1280+. */
#define MXCTL_SUMMARY_BUCKETS 10

/* The default number of domain rows before "other". */
#define MXCTL_SUMMARY_TOP 10

/* Prints the summary of db's queue at time now (unix seconds): the top
 * domains by recipients, then "other" (when more), then the total; as a
 * table or as one JSON object. Reads in one transaction; returns an exit
 * status (mxctl_json.h), having said why on stderr. */
int mxctl_summary(struct sdb *db, int64_t now, size_t top, bool json);

#endif
