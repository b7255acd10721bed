/* smtp_net internals shared by smtp_net.c (listeners, server) and
 * smtp_session.c (one connection). Not for other modules. */
#ifndef MXD_SMTP_NET_IMPL_H
#define MXD_SMTP_NET_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "smtp/smtp_net.h"
#include "smtp/smtp_proto.h"
#include "store/qid.h"

struct smtp_session;
struct smtp_listener;

struct smtp_server {
    /* read-only after start */
    uv_loop_t *loop;
    const struct conf *conf; /* the current one; sessions keep their own */
    struct store *store;
    char *spool_dir;
    struct smtp_proto_cfg pcfg;
    /* private */
    struct conf *conf_ref; /* == conf, the reference we hold */
    struct smtp_listener *listeners;
    unsigned listeners_open;
    bool activated; /* listeners came from systemd: reload leaves them */
    struct iptab *ips;
    struct anvil *anvil;   /* per-client rates (check_rate), for the server's life */
    struct screen *screen; /* the screening's memory of passes (check_screen); NULL: none */
    struct qid_gen qids;
    struct smtp_session *sessions; /* doubly linked, for shutdown */
    size_t nsessions;
    bool closing;
    void (*shutdown_cb)(void *arg);
    void *shutdown_arg;
    struct smtp_server_stats stats;
    struct callahead *callahead;
    struct tls_creds *tls; /* STARTTLS offered when set */
    size_t (*on_etrn)(void *arg, const char *domain, bool subdomains);
    void *on_etrn_arg;
    void (*on_queued)(void *arg);
    void *on_queued_arg;
    bool (*on_hold)(void *arg, const struct store_msg *m, struct store_rcpt *r);
    void *on_hold_arg;
};

/* A new connection is waiting on lstream: accept it and run its session;
 * proxy: the listener is marked proxy (a PROXY header comes first). */
void smtp_session_accept(struct smtp_server *srv, uv_stream_t *lstream, bool proxy);
/* SIGTERM: 421 and close every session that owes nothing; the others
 * follow once their commit or lookup has been answered. */
void smtp_session_shutdown_all(struct smtp_server *srv);
/* A session was freed. */
void smtp_net__session_gone(struct smtp_server *srv);

#endif
