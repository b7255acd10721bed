/* smtp_session internals shared by smtp_session.c (the connection, the
 * protocol pump, bodies, commits) and smtp_tls.c (STARTTLS). Not for other
 * modules. */
#ifndef MXD_SMTP_SESSION_IMPL_H
#define MXD_SMTP_SESSION_IMPL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/tls.h"
#include "msg/mime7.h"
#include "msg/tlsreq.h"
#include "smtp/smtp_net_impl.h"
#include "store/qid.h"

#define SESSION_CBUF  (16 * 1024) /* ciphertext read buffer (TLS) */
#define BODY_MEM_INIT (16 * 1024)
#define BODY_MEM_MAX  (128 * 1024) /* beyond this a body goes to a spool file */
/* Unsent output (replies filling and being written, and over TLS the
 * ciphertext queued in uv_write): past OUT_HIGH the session stops taking
 * commands and reading; it goes on once the client has read it down to
 * OUT_LOW. */
#define OUT_HIGH (64 * 1024)
#define OUT_LOW  (OUT_HIGH / 2)
/* Closing waits at most this long (or command_timeout, if shorter) for the
 * last replies to drain, then resets the connection. */
#define SESSION_LINGER_MS 10000

struct outbuf {
    char *data;
    size_t len, cap;
};

struct spool_job {
    uv_work_t req;
    struct smtp_session *s;
    char *path; /* owned copy: the session may drop its own */
    char *data; /* owned */
    size_t len;
    int rc;
};

struct smtp_session {
    struct smtp_session *prev, *next;
    struct smtp_server *srv;
    struct conf *conf; /* the config at accept (a reference) */
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    struct smtp_proto *proto; /* NULL until the session starts (refused, PROXY header) */
    /* The client: the connection's peer, or the one its PROXY header named. */
    struct sockaddr_storage peer;
    char ip[INET6_ADDRSTRLEN];
    bool ip_counted;          /* peer holds a slot in srv->ips (the per-IP limit) */
    struct smtp_proxy *proxy; /* smtp_proxy.c: reading the PROXY header; then NULL */
    char qid[QID_LEN + 1];
    uint64_t started_ms;
    unsigned handles_open;
    unsigned pending; /* store jobs and spool writes that will call back */
    bool reading, eof, closing, in_pump, spool_busy, spool_failed;
    bool delaying;   /* past the soft error limit: a reject waits error_sleep */
    bool out_paused; /* the pump stopped at OUT_HIGH */
    bool lingering;  /* closing, the linger timer runs */
    /* before the greeting (smtp_greet.c) */
    bool connecting;         /* the connect stage is in flight: reads are reported, not taken */
    bool teased;             /* a "220-" teaser went out: the greeting has begun */
    char *refusal;           /* refused after the teaser: the reply to the client's first command */
    struct outbuf out, wout; /* filling, being written */
    /* the body of the transaction in progress */
    char *body;
    size_t body_len, body_cap;
    char *spool_path;
    uint64_t spool_len;
    unsigned spool_gen; /* bodies replaced by a filter (each spools to a file of its own) */
    bool end_wait;      /* the verdict waits for the spool write in flight */
    struct check_verdict *end_v; /* that verdict (pointers the pipeline's until the next MAIL) */
    struct mime7_hscan hscan;    /* 8-bit octets in its header? (SMTPUTF8 needed) */
    struct tlsreq_scan tlsreq;   /* "TLS-Required: No" in its header? (RFC 8689 5) */
    /* counters for the disconnect line */
    unsigned nmsgs, nrejects;
    /* STARTTLS (smtp_tls.c) */
    struct tls_conn *tls;
    char *cbuf;             /* ciphertext read buffer */
    bool tls_handshaking;   /* until the handshake is done */
    bool tls_plain_pending; /* the plaintext 220 is still being written */
    bool tls_bye;           /* close_notify sent */
    size_t tls_wbytes;      /* ciphertext queued in uv_write */
    char tls_desc[96];
    /* the check pipeline (NULL for a connection refused at accept) */
    struct check_session *checks;
};

void smtp_session__pump(struct smtp_session *s);
/* Queues data[0..len) for the client; smtp_session__flush writes what is
 * queued (TLS or not). */
void smtp_session__out(struct smtp_session *s, const char *data, size_t len);
void smtp_session__flush(struct smtp_session *s);
/* Starts reading (unless reading, at EOF or closing). */
void smtp_session__read_start(struct smtp_session *s);
/* The command timeout runs from now: 421 and close when it expires. */
void smtp_session__idle_timer(struct smtp_session *s);
/* Octets of output not yet taken by the kernel, whatever the transport. */
size_t smtp_session__unsent(const struct smtp_session *s);
/* A callback (store job, spool write, check verdict) came back: true when the
 * session is gone or going and the caller must not touch the protocol. */
bool smtp_session__release(struct smtp_session *s);
/* smtp_body.c: drops the body being received (memory and spool file). */
void smtp_session__body_drop(struct smtp_session *s);
/* A filter replaces the content: what the sink got so far is dropped (a
 * spool write in flight finishes into a file that is then removed); arg is s. */
void smtp_session__body_rewind(void *arg);
/* The content, past the checks' filters (check_body's sink); arg is s. */
void smtp_session__body_append(void *arg, const char *data, size_t len);
struct check_verdict;
/* The checks' verdict on the message (check_end's callback; arg is s):
 * refused, or stored and answered from the commit. */
void smtp_session__end_verdict(void *arg, const struct check_verdict *v);
/* Closes once the replies already queued are written. Idempotent. */
void smtp_session__close(struct smtp_session *s);

/* s->ip from s->peer. */
void smtp_session__name_peer(struct smtp_session *s);
/* The client is known (s->peer): counts it for the per-IP limit, then
 * starts the session (the connect stage, the banner) with early[0..n),
 * input that came with the PROXY header, as its first input; or refuses
 * it past the limit. */
void smtp_session__admit(struct smtp_session *s, const char *early, size_t n);

/* smtp_greet.c: the connect stage (the pipeline's verdict before the
 * greeting), with early[0..n) the input that came with the PROXY header:
 * a teaser a check asks for goes out, input before the greeting is read
 * and reported to the pipeline, and the verdict starts the protocol or
 * refuses the client. */
void smtp_session__connect(struct smtp_session *s, const char *early, size_t n);
/* on_read's work before the greeting (s->connecting or s->refusal). */
void smtp_session__early_read(struct smtp_session *s, ssize_t nread, const uv_buf_t *buf);

/* smtp_proxy.c: a connection to a listener marked proxy: refuses a peer
 * outside proxy_networks, else reads the PROXY header (proxy_timeout),
 * puts the client it names into s->peer and calls smtp_session__admit;
 * a missing or bad header closes the connection. */
void smtp_session__proxy_begin(struct smtp_session *s);

/* STARTTLS was answered 220: everything read from now on is TLS. */
void smtp_session__tls_start(struct smtp_session *s);
/* Ciphertext arrived. */
void smtp_session__tls_input(struct smtp_session *s, const char *data, size_t len);
/* Moves decrypted input into the protocol's buffer while it has room;
 * true when anything was fed (or the peer's end was seen). */
bool smtp_session__tls_drain(struct smtp_session *s);
/* Encrypts and writes the replies waiting in s->out. */
void smtp_session__tls_flush(struct smtp_session *s);
/* Closing: send close_notify once (after the handshake). */
void smtp_session__tls_bye(struct smtp_session *s);
/* The peer closed or the read failed during the handshake: log it. */
void smtp_session__tls_eof(struct smtp_session *s, const char *why);
/* The plaintext writes (the 220) are done: the handshake may proceed. */
void smtp_session__tls_plain_done(struct smtp_session *s);

#endif
