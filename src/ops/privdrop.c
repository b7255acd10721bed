/* privdrop: owns nothing; called once by main on the loop thread before
 * any network input is read and before the store opens (so the database
 * and spool are created by the unprivileged user). Returns 0 or MXD_E*
 * with *err. Does not chroot, and does not change the working directory:
 * relative paths in the config keep their meaning. */
#define _DEFAULT_SOURCE /* initgroups */
#include "ops/privdrop.h"

#include <sys/types.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
privdrop_to(const char *user, char **warn, char **err)
{
    struct passwd *pw;

    errno = 0;
    pw = getpwnam(user);
    if (pw == NULL) {
        *err = xasprintf("user %s: %s", user, errno ? strerror(errno) : "no such user");
        return MXD_ENOENT;
    }
    if (geteuid() != 0) {
        if (geteuid() != pw->pw_uid)
            *warn = xasprintf("not started as root: running as uid %u, not as user %s",
                              (unsigned)geteuid(), user);
        return 0;
    }
    if (pw->pw_uid == 0) {
        *err = xasprintf("user %s has uid 0: refusing to run as root", user);
        return MXD_EINVAL;
    }
    /* Groups first: once the uid is gone, so is the right to change them. */
    if (initgroups(user, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
        *err = xasprintf("cannot become user %s: %s", user, strerror(errno));
        return MXD_EIO;
    }
    if (setuid(0) == 0 || seteuid(0) == 0 || getuid() != pw->pw_uid || geteuid() != pw->pw_uid ||
        getgid() != pw->pw_gid || getegid() != pw->pw_gid) {
        *err = xasprintf("dropping to user %s did not stick: root can be regained", user);
        return MXD_EIO;
    }
    return 0;
}
