/* smtp_net: the libuv side of the SMTP server: listeners, sessions,
 * timeouts, limits; moves bytes between sockets and smtp_proto. */
#ifndef MXD_SMTP_NET_H
#define MXD_SMTP_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/conf.h"
#include "base/util.h"
#include "store/store.h"

struct smtp_server;

/* Listening sockets for smtp_server_start: conf->listen in order, bound
 * before privileges are dropped, or the ones systemd passed. */
struct smtp_listen_fds {
    int fd[64];
    size_t n;
    bool activated; /* from systemd (LISTEN_FDS): reload leaves them alone */
};

/* A non-blocking TCP socket bound to cl and listening (IPv6 ones are
 * IPV6_V6ONLY). 0 and *fd, or MXD_EIO and *err (caller frees). */
int smtp_listen_fd(const struct conf_listen *cl, int *fd, char **err) MXD_WUR;

/*
 * Starts accepting on fds (the server takes them; they are closed on
 * failure too). The server keeps a reference to conf (conf_ref); store is
 * borrowed and must outlive the server. spool_dir must exist. On failure
 * returns a UV_E* or MXD_E* code and *err (caller frees) names the address.
 */
int smtp_server_start(uv_loop_t *loop, const struct conf *conf, struct store *store,
                      const char *spool_dir, const struct smtp_listen_fds *fds,
                      struct smtp_server **out, char **err) MXD_WUR;

/* Reload: new sessions use conf (a reference is taken); sessions in
 * progress keep theirs. Listeners no longer in conf->listen are closed and
 * new ones bound (unless they came from systemd). */
void smtp_server_set_conf(struct smtp_server *srv, const struct conf *conf);

/*
 * Graceful stop (SIGTERM): closes the listeners, lets commits in flight
 * finish and answers them, sends 421 to every other session and closes it.
 * When the last session is gone, frees the server and calls cb.
 */
void smtp_server_shutdown(struct smtp_server *srv, void (*cb)(void *arg), void *arg);

/* cb runs on the loop thread after each message is committed (the
 * scheduler's kick). */
void smtp_server_on_queued(struct smtp_server *srv, void (*cb)(void *arg), void *arg);

/* cb runs on the loop thread for each recipient of a message about to be
 * committed (not a quarantined one): it may mark the recipient held at
 * accept (store_rcpt's held_reply, issue 22: its primary is known down). */
void smtp_server_on_hold(struct smtp_server *srv,
                         bool (*cb)(void *arg, const struct store_msg *m, struct store_rcpt *r),
                         void *arg);

struct tls_creds;
/* Offer STARTTLS with these credentials (borrowed) to new sessions. */
void smtp_server_set_tls(struct smtp_server *srv, struct tls_creds *creds);

struct callahead;
/* Recipient verification for domains with `recipients = lmtp` (borrowed). */
void smtp_server_set_callahead(struct smtp_server *srv, struct callahead *ca);

/* ETRN (RFC 1985) from an allowed client: cb(arg, domain, subdomains)
 * starts delivery of the mail held for domain (and its subdomains when
 * the client sent "@domain") and returns how many of our domains matched. */
void smtp_server_on_etrn(struct smtp_server *srv,
                         size_t (*cb)(void *arg, const char *domain, bool subdomains), void *arg);

struct smtp_server_stats {
    uint64_t connections_total;
    uint64_t connections_open;
    uint64_t messages_accepted;
    uint64_t bytes_accepted;
};

void smtp_server_get_stats(const struct smtp_server *srv, struct smtp_server_stats *out);

#endif
