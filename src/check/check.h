/* check: the check pipeline. Everything that decides on a client, a
 * sender, a recipient or a message is a check; the SMTP session asks the
 * pipeline at each stage and gets one verdict back, now or later, through
 * one completion callback. The session never knows which checks exist, and
 * no check knows the session: the arrow goes one way, smtp/ -> check/.
 *
 * Stages, in the order a transaction meets them: connect (before the
 * greeting), HELO/EHLO, MAIL, RCPT (once per recipient), and the content:
 * data (it begins), body (chunks, through the checks' filters to the
 * session's sink), end (the final dot or the last BDAT). The checks of a
 * stage run one after another in the registered order (check_list.c); the
 * first that does not accept decides, and the stage's answer comes when
 * all have answered or its time budget is spent (then 451 4.3.0).
 *
 * One stage is asked at a time, and each is answered exactly once; the
 * callback may run inside the call (no check had to wait). Loop thread
 * only. */
#ifndef MXD_CHECK_H
#define MXD_CHECK_H

#include <sys/socket.h>

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/addr.h"
#include "base/conf.h"

struct store;
struct callahead;
struct anvil;
struct screen;

/* The services checks may use, the server's for its life; and its load
 * when the connection began. */
struct check_env {
    uv_loop_t *loop;
    struct store *store;
    struct callahead *callahead; /* NULL: recipients are not verified */
    struct anvil *anvil;         /* per-client rates, for the process; NULL: not counted */
    struct screen *screen;       /* the screening's memory of passes; NULL: none kept */
    size_t connections_open;     /* the server's open connections, this one included */
};

/* What the session knows of its client, copied at check_session_new. */
struct check_client {
    struct sockaddr_storage peer;
    char ip[INET6_ADDRSTRLEN]; /* numeric, for logs and headers */
};

enum check_action {
    CHECK_ACCEPT,   /* go on (at the end of data: store the message) */
    CHECK_TEMPFAIL, /* 4xx: code and text say it */
    CHECK_REJECT,   /* 5xx */
    CHECK_DROP,     /* connect stage only: close the connection without a word */
    CHECK_DISCARD,  /* end of data only: 250 (code and text say it), and nothing is stored
                       (a content filter asked to drop the message) */
};

#define CHECK_TEXT_MAX 512

/* A recipient a content filter added. */
struct check_edit_rcpt {
    char *address; /* "local@domain" */
    char *domain;  /* lower case, a domain of the configuration */
};

/* What content filters changed in a message (check_milter.c): the
 * session applies it to what it stores. */
struct check_edits {
    /* The message's header as it must be stored, below our Received:
     * (CRLF-ended fields, without the empty line that ends it): the
     * pipeline withheld the header from the sink, which got the content
     * from the empty line on. NULL: the content carried its header. */
    char *header;
    size_t header_len;
    char *sender;                /* the new envelope sender ("" the null sender), NULL: unchanged */
    struct check_edit_rcpt *add; /* recipients added */
    size_t nadd;
    char **del; /* recipients removed, as received (compared in any case) */
    size_t ndel;
    char *quarantine; /* stored held with this reason; NULL: delivered as usual */
};

struct check_verdict {
    enum check_action action;
    int code;                  /* the reply code when not accepted */
    char text[CHECK_TEXT_MAX]; /* "5.7.1 ..." as smtp_proto_answer takes it */
    /* At the end of data, accepted: header fields to put above our
     * Received: (CRLF-terminated, "" when none) and the Received: fields
     * counted in the message (its hops before ours). Owned by the pipeline
     * until the next transaction. */
    const char *fields;
    size_t fields_len;
    unsigned hops;
    /* At the end of data, accepted: the client's forward-confirmed reverse
     * name for our Received: (NULL when none is known). Owned by the
     * pipeline. */
    const char *client_name;
    /* At the end of data, accepted: what content filters changed (NULL:
     * nothing). Owned by the pipeline until the next transaction. */
    const struct check_edits *edits;
    /* At the end of data, accepted: the return path is authenticated (SPF
     * pass for the MAIL FROM domain, or a DKIM pass aligned with it):
     * bounce_policy = authenticated lets only such a message get DSNs. */
    bool return_auth;
};

struct check_session;

/* The answer for the stage that was asked. */
typedef void (*check_done_cb)(void *arg, const struct check_verdict *v);
/* A check wants the greeting begun now, with the line "220-<text>" (the
 * pre-greet test's teaser): the final 220 line follows the connect stage's
 * acceptance. text is valid during the call. */
typedef void (*check_teaser_cb)(void *arg, const char *text);
/* Content that passed the checks' filters, on its way to the store. */
typedef void (*check_sink_cb)(void *arg, const char *data, size_t len);

/* The content the sink received since check_data is void: a filter
 * replaces it, and the new content follows through the sink. */
typedef void (*check_rewind_cb)(void *arg);
/* The pipeline takes content again (see check_busy). */
typedef void (*check_resume_cb)(void *arg);

/* A pipeline for one connection. conf is referenced (a reload leaves it);
 * the sink receives the content between check_data and check_end. */
struct check_session *check_session_new(const struct check_env *env, const struct conf *conf,
                                        const struct check_client *client, check_sink_cb sink,
                                        void *sink_arg);
/* The connection is gone. Nothing is called back any more; work a check
 * still has out (a lookup that cannot be cancelled) frees it later. A
 * stage must not be in flight. */
void check_session_free(struct check_session *cs);

/* The connect stage, before the greeting. While it is in flight the
 * session reads, and tells the pipeline of input with check_input_early;
 * that input is the protocol's once the stage accepts, and is dropped
 * with the connection otherwise. A refusal is the greeting's place (RFC
 * 5321 3.1: 554 or 421 instead of 220); after a teaser it cannot be
 * (RFC 5321 4.2.1: one code for all lines of a reply): the greeting ends
 * with its 220 line and the refusal answers the client's first command.
 * CHECK_DROP closes the connection at once. */
void check_connect(struct check_session *cs, check_done_cb done, void *arg);
/* Where a teaser goes (NULL, the default: none is sent). */
void check_set_teaser(struct check_session *cs, check_teaser_cb teaser, void *arg);
/* The connect stage is in flight and the client sent data[0..len) before
 * the greeting (len may be 0), or closed its side (eof). Borrowed for the
 * call; the checks may answer the stage from inside it. */
void check_input_early(struct check_session *cs, const char *data, size_t len, bool eof);
/* Where a replaced body goes (rewind) and who is told when content may
 * flow again (resume); both get the sink's arg. Without rewind (NULL, the
 * default) a body replacement is refused. */
void check_set_content(struct check_session *cs, check_rewind_cb rewind, check_resume_cb resume);
/* A content filter is behind (its queue is full): the session must not
 * call check_body until resume is called. */
bool check_busy(const struct check_session *cs);
/* STARTTLS succeeded: the protocol version and cipher (copied), for the
 * checks (the milter macros {tls_version} and {cipher}). */
void check_tls(struct check_session *cs, const char *version, const char *cipher);
/* helo is copied. */
void check_helo(struct check_session *cs, const char *helo, check_done_cb done, void *arg);
/* A transaction begins: its queue id (for logs) and sender are copied. */
void check_mail(struct check_session *cs, const char *qid, const struct addr *sender,
                check_done_cb done, void *arg);
/* rcpt is copied. */
void check_rcpt(struct check_session *cs, const struct addr *rcpt, check_done_cb done, void *arg);
/* The content begins; nothing is answered. */
void check_data(struct check_session *cs);
/* A chunk of content as received; it reaches the sink, maybe rewritten,
 * before this returns or with a later chunk. */
void check_body(struct check_session *cs, const char *data, size_t len);
/* The content is complete: the verdict on the message. */
void check_end(struct check_session *cs, check_done_cb done, void *arg);
/* The transaction ended without a message (RSET, a new MAIL, an error). */
void check_reset(struct check_session *cs);

#endif
