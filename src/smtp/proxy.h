/* proxy: HAProxy's PROXY protocol header, versions 1 (a text line) and 2
 * (binary), as a load balancer sends it before the client's first octet
 * (pure: bytes in, a result out, no I/O). */
#ifndef MXD_PROXY_H
#define MXD_PROXY_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>

/* The spec's limit for a v1 line, "PROXY ... \r\n" included. */
#define PROXY_V1_MAX 107
/* Our limit for a whole v2 header (16 fixed octets, the addresses and the
 * TLVs). The spec allows 16 + 65535; a balancer's addresses take at most
 * 216 octets (AF_UNIX) and HAProxy's TLVs (ALPN, authority, unique id of
 * up to 128 octets, SSL details with the client certificate's CN, netns,
 * CRC32C) a few hundred more. Past this a header is refused: a client
 * cannot make a session hold more. */
#define PROXY_V2_MAX 1024

/* The reasons a header is refused: id, metric label, log text. */
#define PROXY_ERRORS(X)                                                                            \
    X(NONE, "none", "no error")                                                                    \
    X(NOT_PROXY, "not-proxy", "not a PROXY protocol header")                                       \
    X(V1_TOO_LONG, "v1-too-long", "v1 line without CRLF in 107 octets")                            \
    X(V1_SYNTAX, "v1-syntax", "v1 line malformed (fields, spaces or line end)")                    \
    X(V1_PROTOCOL, "v1-protocol", "v1 protocol is not TCP4, TCP6 or UNKNOWN")                      \
    X(V1_ADDRESS, "v1-address", "v1 address is not an address of the protocol's family")           \
    X(V1_PORT, "v1-port", "v1 port is not a number from 0 to 65535")                               \
    X(V2_VERSION, "v2-version", "v2 version is not 2")                                             \
    X(V2_COMMAND, "v2-command", "v2 command is neither LOCAL nor PROXY")                           \
    X(V2_FAMILY, "v2-family", "v2 address family or transport not TCP over IPv4 or IPv6")          \
    X(V2_LENGTH, "v2-length", "v2 length too short for its address family")                        \
    X(V2_TOO_LONG, "v2-too-long", "v2 header longer than 1024 octets")                             \
    X(V2_TLV, "v2-tlv", "v2 TLV runs past the header")
#define PROXY_ERR_ENUM(id, ...) PROXY_ERR_##id,
enum proxy_error { PROXY_ERRORS(PROXY_ERR_ENUM) PROXY_NERRORS };
#undef PROXY_ERR_ENUM

enum proxy_status {
    PROXY_NEED_MORE, /* all input taken; the header is not complete yet */
    PROXY_DONE,      /* the header is complete: p->res says what it said */
    PROXY_ERROR,     /* refused: p->res.err says why */
};

struct proxy_result {
    unsigned version; /* 1 or 2 (0 until the first octet tells) */
    /* v1 UNKNOWN, v2 LOCAL, or v2 PROXY for an AF_UNSPEC or AF_UNIX
     * client: no client address; keep the connection's own. */
    bool local;
    struct sockaddr_storage src; /* !local: the client (AF_INET or AF_INET6) */
    struct sockaddr_storage dst; /* !local: the address it connected to */
    size_t len;                  /* DONE: octets of the header */
    enum proxy_error err;        /* ERROR */
};

struct proxy_parser {
    /* read-only */
    struct proxy_result res;
    /* private */
    enum proxy_status status;
    size_t len;  /* octets in buf */
    size_t want; /* v2: the whole header's length, once known */
    unsigned char buf[PROXY_V2_MAX];
};

/* Starts a new header. */
void proxy_init(struct proxy_parser *p);

/*
 * Takes octets of in[0..len) as the header needs them and says where it
 * is. *used is how many it took: with PROXY_DONE, the octets after them
 * are the client's own (SMTP) input. It never takes more than the header,
 * may be fed one octet at a time, and refuses as soon as the input cannot
 * be a valid header any more. After DONE or ERROR it takes nothing and
 * returns the same status.
 */
enum proxy_status proxy_feed(struct proxy_parser *p, const void *in, size_t len, size_t *used);

/* The metric label ("v1-port") and the log text of a reason. */
const char *proxy_error_name(enum proxy_error e);
const char *proxy_error_text(enum proxy_error e);

#endif
