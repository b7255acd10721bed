/* sqlparam: ?N parameters as PostgreSQL's $N (sdb_pg's statements). */
#ifndef MXD_SQLPARAM_H
#define MXD_SQLPARAM_H

#include <stdbool.h>

/*
 * Returns sql (NUL-terminated) with each ?N, and each bare ? (the number
 * after the highest so far, as SQLite counts), written $N outside string
 * literals, quoted identifiers and comments; *nparams is the highest
 * number and (*used)[i] says whether $i+1 appears (both caller frees; used
 * is NULL when nparams is 0). NULL when a number is 0 or above 32766
 * (SQLite's limit). The caller frees the result.
 */
char *sqlparam_rewrite(const char *sql, int *nparams, bool **used);

#endif
