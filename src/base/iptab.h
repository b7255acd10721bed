/* iptab: connection counts per client. A client is its IPv4 address, or
 * for IPv6 its first v6_prefix bits (one /64 is one client: the smallest
 * block an ISP hands out, and what one host can pick any address from). */
#ifndef MXD_IPTAB_H
#define MXD_IPTAB_H

#include <sys/socket.h>

#define IPTAB_KEY_LEN 16

struct iptab;

struct iptab *iptab_new(void);
void iptab_free(struct iptab *t);
/* Adds one connection for sa's client and returns the new count. */
unsigned iptab_inc(struct iptab *t, const struct sockaddr *sa, unsigned v6_prefix);
/* Removes one connection for sa's client (added with the same v6_prefix). */
void iptab_dec(struct iptab *t, const struct sockaddr *sa, unsigned v6_prefix);
/* The client sa belongs to, as a key for any per-client table: IPv4 (also
 * IPv4-mapped IPv6) as ::ffff:a.b.c.d, IPv6 with the bits past v6_prefix
 * (1-128) cleared, anything else all ones. */
void iptab_key(const struct sockaddr *sa, unsigned v6_prefix, unsigned char key[IPTAB_KEY_LEN]);

#endif
