/* anvil: per-client request rates (Postfix's anvil(8)): new connections,
 * message delivery requests (MAIL FROM) and recipients (RCPT TO) per
 * client and per minute, in a bounded table of the most recently seen
 * clients. Pure: the time and the hash seed are passed in. */
#ifndef MXD_ANVIL_H
#define MXD_ANVIL_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

/* What is counted: id, and its name in logs and metrics (the config key
 * that limits it). */
#define ANVIL_RULES(X)                                                                             \
    X(CONNECT, "connection_rate_limit")                                                            \
    X(MAIL, "message_rate_limit")                                                                  \
    X(RCPT, "recipient_rate_limit")
#define ANVIL_RULE_ENUM(id, name) ANVIL_##id,
enum anvil_rule { ANVIL_RULES(ANVIL_RULE_ENUM) ANVIL_NRULES };
#undef ANVIL_RULE_ENUM

#define ANVIL_WINDOW_MS 60000u /* rates are per minute (Postfix's anvil_rate_time_unit) */
#define ANVIL_CLIENTS   65536u /* clients remembered (about 6 MiB at most) */

struct anvil;

/* A table of at most max_clients (>= 1) clients, rates over window_ms
 * (> 0); seed keys the hash (pass a random value: clients choose their
 * addresses). Caller frees. */
struct anvil *anvil_new(size_t max_clients, uint64_t window_ms, uint64_t seed);
void anvil_free(struct anvil *a);

/* Counts one event of rule for sa's client (IPv4 address, or IPv6
 * v6_prefix network: iptab_key) at now_ms, and returns the client's rate:
 * its events of rule in the window ending now, this one included (see
 * anvil.c for the estimate and its bound). The client becomes the most
 * recently used; a new client may evict the least recently used one. */
unsigned anvil_hit(struct anvil *a, const struct sockaddr *sa, unsigned v6_prefix,
                   enum anvil_rule rule, uint64_t now_ms);

/* The rate anvil_hit would return without counting: 0 for a client not in
 * the table. Changes nothing (not even the order of use). */
unsigned anvil_rate(const struct anvil *a, const struct sockaddr *sa, unsigned v6_prefix,
                    enum anvil_rule rule, uint64_t now_ms);

/* Clients in the table now. */
size_t anvil_size(const struct anvil *a);

/* "connection_rate_limit", ... */
const char *anvil_rule_name(enum anvil_rule rule);

#endif
