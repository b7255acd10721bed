/* iptab: connection counts per client IP address. */
#ifndef MXD_IPTAB_H
#define MXD_IPTAB_H

#include <sys/socket.h>

struct iptab;

struct iptab *iptab_new(void);
void iptab_free(struct iptab *t);
/* Adds one connection for sa's address and returns the new count. */
unsigned iptab_inc(struct iptab *t, const struct sockaddr *sa);
/* Removes one connection for sa's address (which must have been added). */
void iptab_dec(struct iptab *t, const struct sockaddr *sa);

#endif
