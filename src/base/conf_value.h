/* conf internals shared by conf.c (keys, sections, errors by line) and
 * conf_value.c (parsers for single values). Not for other modules. */
#ifndef MXD_CONF_VALUE_H
#define MXD_CONF_VALUE_H

#include <sys/un.h>

#include <stdbool.h>
#include <stdint.h>

#include "base/conf.h"

#define CONF_SUN_PATH_MAX sizeof(((struct sockaddr_un *)NULL)->sun_path)

#define CONF_EP_UNIX    0x1u /* "unix:/path" allowed */
#define CONF_EP_NUMERIC 0x2u /* the host must be an IP literal */

/* What conf__parse_endpoint accepts. */
struct conf_ep_opt {
    unsigned flags;
    uint16_t defport; /* 0: the port is required */
};

/* Blanks other than newline. */
bool conf__is_space(char c);
/* Trims s in place; returns its first non-space byte (inside s). */
char *conf__trim(char *s);
/* Digits only, no sign, no overflow; *end is left after the digits. 0 or MXD_EINVAL. */
int conf__parse_u64(const char *s, uint64_t *out, const char **end) MXD_WUR;
/* RFC 1035 2.3.1 host name; a last label of digits only is refused. */
bool conf__is_hostname(const char *s);

/*
 * Item parsers: s into *out (a struct conf_endpoint, conf_listen or conf_cidr),
 * whose strings the caller frees with the matching _free. 0, or MXD_EINVAL with
 * *why a static message and nothing allocated.
 */
/* arg is a struct conf_ep_opt. */
int conf__parse_endpoint(const char *s, const void *arg, void *out, const char **why) MXD_WUR;
/* A milter's socket: "inet:IP:port", "inet6:[IP]:port" (or "IP:port",
 * "[IP]:port"), "unix:/path"; numeric, so connecting never waits for DNS.
 * arg is unused. */
int conf__parse_milter(const char *s, const void *arg, void *out, const char **why) MXD_WUR;
/* A numeric "IPv4:port" or "[IPv6]:port"; arg is unused. */
int conf__parse_listen(const char *s, const void *arg, void *out, const char **why) MXD_WUR;
/* "192.0.2.10", "192.0.2.0/24", "2001:db8::/32"; arg is unused. */
int conf__parse_cidr(const char *s, const void *arg, void *out, const char **why) MXD_WUR;

/* dnsbl_sites and dnsbl_reply_map items (conf_dnsbl.c); arg is unused. */
int conf__parse_dnsbl_site(const char *s, const void *arg, void *out, const char **why) MXD_WUR;
int conf__parse_dnsbl_map(const char *s, const void *arg, void *out, const char **why) MXD_WUR;
void conf__dnsbl_site_free(void *item);
void conf__dnsbl_map_free(void *item);

/* Content filters (conf_milter.c). A [milter NAME] section's NAME:
 * letters, digits, '-', '_', '.', at most 64 octets, not "none". */
bool conf__is_milter_name(const char *s);
/* One milters list item: a section's name (among the first nsections of
 * c->milter_defs, any case) or a socket, appended to c->milter_defs as an
 * inline entry with the [server] milter_* values unless the same text is
 * there. *index: its place in c->milter_defs. 0, or MXD_EINVAL with *why. */
int conf__milter_item(struct conf *c, size_t nsections, const char *item, size_t *index,
                      const char **why) MXD_WUR;
/* l = the entries at ix[0..n), once c->milter_defs no longer moves. */
void conf__milter_list_finish(const struct conf *c, struct conf_milters *l, const size_t *ix,
                              size_t n);
void conf__milter_free(struct conf_milter *m);

/* recipients_source (conf_rsource.c): "file:/abs/path" or an ldap:// URL
 * into a struct conf_rsource; arg is unused. */
int conf__parse_rsource(const char *s, const void *arg, void *out, const char **why) MXD_WUR;
void conf__rsource_free(void *item);

/* Free what a struct conf_endpoint or conf_listen item holds, not the item. */
void conf__endpoint_free(void *item);
void conf__listen_free(void *item);

#endif
