/*
 * sdb_pg: the sdb API on PostgreSQL (cluster mode). Not built yet: opening
 * a PostgreSQL store is refused with a clear error.
 */
#include "store/sdb_impl.h"

int
sdb_pg_open(const struct sdb_params *p, struct sdb **out, char **err)
{
    (void)p;
    *out = NULL;
    *err = xstrdup("store = postgresql: this mxd has no PostgreSQL engine yet");
    return MXD_ECONFIG;
}
