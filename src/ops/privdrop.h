/* privdrop: become an unprivileged user after the listeners are bound. */
#ifndef MXD_PRIVDROP_H
#define MXD_PRIVDROP_H

#include "base/util.h"

/*
 * When running as root: switches to user's uid, primary gid and
 * supplementary groups (initgroups, setgid, setuid) and checks that root
 * cannot be regained. Not root: 0 when already user (systemd's User=) and a
 * warning in *warn otherwise (caller frees). MXD_EIO or MXD_ENOENT with
 * *err (caller frees) on failure; the process must then exit.
 */
int privdrop_to(const char *user, char **warn, char **err) MXD_WUR;

#endif
