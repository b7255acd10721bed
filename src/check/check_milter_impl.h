/* check_milter internals shared by check_milter.c (the filters'
 * connections, the stages, their replies) and check_milter_content.c (the
 * content stream turned into HEADER, EOH and BODY commands, the header
 * withheld for edits, and the modifications applied at the end). Loop
 * thread only. Not for other files. */
#ifndef MXD_CHECK_MILTER_IMPL_H
#define MXD_CHECK_MILTER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/metrics.h"
#include "check/check_impl.h"
#include "check/milter_edit.h"
#include "check/milter_net.h"

#define HDR_MAX 65000u /* a header field handed to a filter: name and value fit MILTER_DATA_MAX */
/* The message's header is withheld from the store while filters read it,
 * so that their edits apply to it; past this it passes unedited. */
#define HEAD_MAX (1024u * 1024u)
/* Modifications a filter sends before its final reply, kept until it:
 * past this the filter misbehaves. */
#define MODS_MAX (1024u * 1024u)
/* Back-pressure: past BUSY_HIGH octets queued for a filter the session
 * stops feeding content, and goes on once every filter is under BUSY_LOW. */
#define BUSY_HIGH (256u * 1024u)
#define BUSY_LOW  (64u * 1024u)

/* The message's header: not withheld (no filter takes part), being read,
 * held whole (ms->head), or too large and passed on unedited. */
enum head { HEAD_NONE, HEAD_READING, HEAD_HELD, HEAD_PASSED };

/* A modification kept until its filter's final reply. */
struct mod {
    enum milter_ev type;
    uint32_t index;
    char *a, *b;
};

enum ask { ASK_NONE, ASK_CONNECT, ASK_HELO, ASK_MAIL, ASK_RCPT, ASK_END };

struct mstate;

/* One filter for one connection: every filter of the configuration
 * (conf->milter_defs) has one, opened when a list asks it first. */
struct mf {
    struct mstate *ms;
    const struct conf_milter *def;
    struct milter_conn *conn; /* NULL before connect, and once failed */
    bool negotiated;
    /* the connection was parked by an earlier session (reuse = on), and
     * no reply has come on it yet in this one */
    bool reused, replied;
    bool probe;         /* reused, parked elsewhere than after a message */
    bool retried;       /* a parked one failed so: new connections only */
    bool after_message; /* its last reply: continue to an end of message */
    /* what it was told: a filter that joins later (a domain's list) is
     * told connect, HELO, MAIL and the transaction's earlier recipients
     * first (catching up) */
    bool seen_connect, seen_helo;
    size_t nrcpt_seen; /* of ms->accepted */
    bool in_txn;       /* in the transaction's list at DATA: it reads the content */
    uint64_t asked_ns; /* the current step's command went (uv_hrtime) */
    /* a refusal it gave while catching up (at connect or HELO: for the
     * connection; else for the transaction), for every later stage */
    bool sticky, sticky_conn;
    enum check_action sticky_action;
    int sticky_code;
    char sticky_text[CHECK_TEXT_MAX];
    bool dead;      /* failed: the default action answers for it */
    bool conn_done; /* accepted the connection: not asked again */
    bool txn_started, txn_done, eob_sent;
    /* a refusal during the content, for the end */
    enum check_action txn_action;
    int txn_code;
    char txn_text[CHECK_TEXT_MAX];
};

/* A recipient the filters passed, for those that catch up later. */
struct mrcpt {
    char *mailbox;
    char *domain_lc;
};

struct mstate {
    struct check_session *cs;
    struct mf *f; /* by conf_milter.index */
    size_t n;
    /* the stage being asked, of the filters in list (ms->cur its index) */
    enum ask ask;
    const struct conf_milters *list;
    struct check_ticket t;
    size_t cur;
    enum ask step; /* the command the current filter is told: ask, or a step it catches up */
    bool replay;   /* step RCPT: an earlier recipient (ms->accepted) */
    char want;     /* the command whose reply ends the current filter's turn */
    struct addr rcpt;
    /* the transaction: its list (NULL before a recipient passed) and
     * recipients (kept only when a domain has its own list) */
    bool per_domain;
    const struct conf_milters *txn_list;
    struct mrcpt *accepted;
    size_t naccepted;
    /* the content */
    bool content, in_body, line_start, eoh_cr;
    struct check_stream out;
    char *hdr; /* the field being read (raw, CRLF-ended lines) */
    size_t hdr_len;
    char *chunk; /* the body chunk being filled */
    size_t chunk_len;
    /* the header, withheld: raw while read, then the fields */
    enum head head_state;
    char *raw;
    size_t raw_len;
    struct milter_head *head;
    /* the current filter's modifications, applied at its final reply */
    struct mod *mods;
    size_t nmods, mods_bytes;
    /* a body replacement */
    struct mf *repl_by; /* the filter whose new body the sink is getting */
    struct milter_crlf crlf;
    char *repl_buf;   /* 2 * MILTER_REPLY_MAX: a chunk with its line ends made CRLF */
    bool body_broken; /* a filter failed halfway through its new body */
    bool busy;        /* the session was told to stop feeding content */
};

static inline const char *
ms_qid(const struct mstate *ms)
{
    const char *q = check_info(ms->cs)->qid;

    return q[0] != '\0' ? q : NULL;
}

static inline void
mf_count(const struct mf *f, const char *event)
{
    metrics_count(METRICS_F_MILTER, f->def->name, event);
}

/* The filter asked now, or NULL. */
static inline struct mf *
ms_current(struct mstate *ms)
{
    if (ms->ask == ASK_NONE || ms->list == NULL || ms->cur >= ms->list->n)
        return NULL;
    return &ms->f[ms->list->v[ms->cur]->index];
}

static inline struct milter_proto *
mf_proto(struct mf *f)
{
    return milter_conn_proto(f->conn);
}

/* check_milter.c */
/* Writes what may go, and (re)arms the reply timeout. */
void check_milter__flush(struct mf *f);
/* The filter is out for the rest of the connection. */
void check_milter__fail(struct mf *f, const char *why);
/* The filter's default_action answers the stage for it. */
void check_milter__default(struct mf *f);

/* check_milter_content.c */
/* Drops the current filter's kept modifications. */
void check_milter__mods_clear(struct mstate *ms);
/* The filter passed the message: its changes, in the order it sent them. */
void check_milter__mods_apply(struct mf *f);
/* A modification in the reply to end of message. */
void check_milter__modification(struct mf *f, const struct milter_event *ev);
/* Back-pressure: tells the pipeline whether a filter is too far behind. */
void check_milter__update_busy(struct mstate *ms);
/* The check's data and filter hooks. */
void check_milter__data(void *arg, struct check_stream out);
void check_milter__filter(void *arg, const char *data, size_t len);
/* The content is over: what is left of the header and body goes out. */
void check_milter__content_end(struct mstate *ms);
/* Writes what the content left queued for each filter. */
void check_milter__content_flush(struct mstate *ms);
/* What a message left behind. */
void check_milter__txn_clear(struct mstate *ms);

#endif
