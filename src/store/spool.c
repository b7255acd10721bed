/* spool: owns the files under <database dir>/spool. The loop thread calls
 * spool_dir_for/spool_dir_prepare at start-up; spool_append runs on the
 * libuv threadpool. A spool file holds part of a body only until the store
 * has committed (or refused) the message; the store unlinks it, or (a large
 * body on SQLite) makes it durable and links it into <database dir>/bodies
 * (store.c). Nothing here is durable or fsynced. */
#include "store/spool.h"

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *
spool_dir_for(const char *database)
{
    const char *slash = strrchr(database, '/');

    if (slash == NULL)
        return xstrdup("spool");
    return xasprintf("%.*s/spool", (int)(slash - database), database);
}

int
spool_dir_prepare(const char *dir, char **err)
{
    DIR *d;
    struct dirent *de;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        *err = xasprintf("cannot create spool directory %s: %s", dir, strerror(errno));
        return MXD_EIO;
    }
    d = opendir(dir);
    if (d == NULL) {
        *err = xasprintf("cannot open spool directory %s: %s", dir, strerror(errno));
        return MXD_EIO;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) != 0 && errno != ENOENT) {
            *err = xasprintf("cannot clean spool file %s/%s: %s", dir, de->d_name, strerror(errno));
            closedir(d);
            return MXD_EIO;
        }
    }
    closedir(d);
    return 0;
}

int
spool_append(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int rc = 0;

    if (fd < 0)
        return MXD_EIO;
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = MXD_EIO;
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    if (close(fd) != 0)
        rc = MXD_EIO;
    return rc;
}
