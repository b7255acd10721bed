/*
 * sqlparam: SQLite-style parameters (?N, and a bare ? for the next number)
 * rewritten as PostgreSQL's $N, for sdb_pg. Pure: no libpq, no I/O; the
 * text is skipped inside '...', E'...' (backslash escapes), "..." and
 * -- or block comments. Fuzzed by tests/fuzz/fuzz_sqlparam.c.
 */
#include "store/sqlparam.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* The SQL with ?N (and a bare ?, SQLite's next number) as $N outside
 * '...' (E'...' with backslash escapes), "...", -- and block comments.
 * *nparams: the highest number; used[i]: $i+1 appears. */
char *
sqlparam_rewrite(const char *sql, int *nparams, bool **used)
{
    size_t len = strlen(sql);
    char *out = xmalloc(len * 6 + 1); /* "?" -> "$32766" at most */
    size_t o = 0;
    int max = 0;
    bool *u = NULL;

    for (size_t i = 0; i < len;) {
        char c = sql[i];

        if (c == '\'' || c == '"') {
            bool esc = c == '\'' && i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e');

            out[o++] = sql[i++];
            while (i < len) {
                if (esc && sql[i] == '\\' && i + 1 < len) {
                    out[o++] = sql[i++];
                    out[o++] = sql[i++];
                    continue;
                }
                if (sql[i] == c) {
                    out[o++] = sql[i++];
                    if (i < len && sql[i] == c) { /* doubled: still inside */
                        out[o++] = sql[i++];
                        continue;
                    }
                    break;
                }
                out[o++] = sql[i++];
            }
        } else if (c == '-' && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n')
                out[o++] = sql[i++];
        } else if (c == '/' && sql[i + 1] == '*') {
            out[o++] = sql[i++];
            out[o++] = sql[i++];
            while (i < len && !(sql[i] == '*' && sql[i + 1] == '/'))
                out[o++] = sql[i++];
            for (int k = 0; k < 2 && i < len; k++)
                out[o++] = sql[i++];
        } else if (c == '?') {
            long n = 0;
            size_t j = i + 1;

            while (j < len && sql[j] >= '0' && sql[j] <= '9' && n < 100000)
                n = n * 10 + (sql[j++] - '0');
            if (j == i + 1)
                n = max + 1;
            if (n < 1 || n > 32766) { /* SQLite's limit; PostgreSQL's is 65535 */
                free(out);
                free(u);
                return NULL;
            }
            if (n > max) {
                u = xrealloc(u, (size_t)n * sizeof(*u));
                memset(u + max, 0, (size_t)(n - max) * sizeof(*u));
                max = (int)n;
            }
            u[n - 1] = true;
            o += (size_t)sprintf(out + o, "$%ld", n);
            i = j;
        } else {
            out[o++] = sql[i++];
        }
    }
    out[o] = '\0';
    *nparams = max;
    *used = u;
    return out;
}
