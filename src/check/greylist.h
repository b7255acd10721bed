/* greylist: the triplet greylisting keys on, and who is spared it (pure: no
 * I/O, no clock; check_greylist.c asks the store). */
#ifndef MXD_GREYLIST_H
#define MXD_GREYLIST_H

#include <sys/socket.h>

#include <stdbool.h>

#include "base/addr.h"
#include "base/conf.h"

/* "spf:" and a domain, or "net:" and an IPv6 /64 */
#define GREYLIST_CLIENT_MAX (4 + ADDR_DOMAIN_MAX + 1)

/* Why a recipient is not greylisted (GREYLIST_APPLIES: it is). */
#define GREYLIST_SKIPS(X)                                                                          \
    X(APPLIES, "applies")                                                                          \
    X(OFF, "off")                                                                                  \
    X(POSTMASTER, "postmaster")                                                                    \
    X(TRUSTED_NETWORK, "trusted_networks") X(CLIENT_TRUSTED, "client_trusted")
#define GREYLIST_SKIP_ENUM(e, s) GREYLIST_##e,
enum greylist_skip { GREYLIST_SKIPS(GREYLIST_SKIP_ENUM) };
#undef GREYLIST_SKIP_ENUM
const char *greylist_skip_name(enum greylist_skip s);

/* Whether the attempt of rcpt from peer is greylisted: its domain must be
 * ours with greylist = on; never the postmaster (RFC 5321 4.5.1), a client
 * in trusted_networks, or one the screening trusts (client_trusted). */
enum greylist_skip greylist_skip(const struct conf *c, const struct sockaddr *peer,
                                 bool client_trusted, const struct addr *rcpt);

/* The client part of the triplet: "spf:DOMAIN" (lower case) when SPF
 * passed for spf_domain (NULL or "": it did not), else the client's
 * network, "net:192.0.2.0/24" or "net:2001:db8:1:2::/64" (an IPv4-mapped
 * address counts as IPv4). */
void greylist_client(const struct sockaddr *peer, const char *spf_domain,
                     char out[GREYLIST_CLIENT_MAX]);

/* The sender part: the mailbox in lower case ("" for <>), its local part
 * normalised so that the addresses a list or forwarder makes per message
 * are one sender: a BATV "prvs=TAG=" prefix goes, the hash and time of an
 * SRS0/SRS1 address become '#', a "+extension" goes, and each number
 * standing alone between separators becomes '#' ("bounce-123-x" ->
 * "bounce-#-x"). A quoted local part is only lowered. */
void greylist_sender(const char *mailbox, char out[ADDR_PATH_MAX]);

/* The recipient part: the mailbox in lower case. */
void greylist_rcpt(const char *mailbox, char out[ADDR_PATH_MAX]);

#endif
