/* rcptsync internals shared by rcptsync.c (the loop side: sources,
 * timers, file watches, store jobs) and rcptsync_read.c (one read, on a
 * lookup thread). Not for other modules. */
#ifndef MXD_RCPTSYNC_IMPL_H
#define MXD_RCPTSYNC_IMPL_H

#include <stdbool.h>

#include "base/conf.h"
#include "check/rcptlist.h"
#include "dns/lookup.h"

/* One read of one source. Its strings are copies (the source may be
 * dropped by a reload while the read is out). */
struct rcptsync_read {
    struct lookup_job lj;
    struct rs_source *src; /* NULL once the source was dropped */
    bool ldap;
    char *path;                        /* file */
    char *host, *base, *attr, *filter; /* ldap */
    uint16_t port;
    enum conf_ldap_scope scope;
    /* results */
    int status; /* 0, MXD_EIO (cannot be read), MXD_EINVAL (broken) */
    char err[512];
    struct rcptlist list;
    size_t skipped; /* LDAP values that are not addresses */
    char digest[17];
};

/* On a lookup thread: reads the source whole into r. */
void rcptsync__read(struct rcptsync_read *r);

#endif
