/* check_milter: content filters over the milter protocol (Sendmail's,
 * Postfix's) as a check of the pipeline, last in the list: a filter sees
 * only what mxd's own checks accepted, and the content as it will be
 * stored. Owns, per connection, one milter connection per filter in
 * [server] milters (milter_net.c), opened at the connect stage as Postfix
 * does, and the header/body parser that turns the content stream into
 * HEADER, EOH and BODY commands (chunks of at most 65,535 octets). Loop
 * thread only.
 *
 * Stages: connect, HELO, MAIL, RCPT, DATA and the content, end of message;
 * ABORT when a transaction ends without one, QUIT when the connection
 * goes. Each stage asks the filters in order; the first that does not
 * continue decides. Replies: continue and accept (for the rest of the
 * connection at connect and HELO, of the transaction later) pass; reject,
 * tempfail and a reply code (its class checked, its text cleaned) refuse
 * the stage (a recipient alone at RCPT); discard drops the message after a
 * 250 (CHECK_DISCARD); a refusal during the content is the verdict at the
 * end.
 *
 * Modifications (the reply to end of message) are kept until the filter's
 * final reply and applied only when it passes the message, in the order
 * sent: header edits on the message's header, which this check withholds
 * from the store while the content flows (up to HEAD_MAX; a larger one
 * passes unedited) and hands back in the verdict's edits (check_edits);
 * recipients added (a domain of the configuration only; ESMTP arguments
 * logged and ignored) and removed, the sender changed, quarantine (stored
 * held with the reason). A new body goes straight to the session as it
 * comes (check_rewind: spooled like any large body); a filter that fails
 * halfway through one makes the message 451, whatever the default action.
 *
 * A filter that cannot be reached, times out (milter_connect_timeout,
 * milter_command_timeout, milter_content_timeout for the end of message),
 * closes or breaks the protocol is closed and milter_default_action
 * answers for it from then on, for the rest of the connection. Memory is
 * bounded: the header (HEAD_MAX), one header field (64 KiB) and one body
 * chunk per connection; past BUSY_HIGH queued for a filter the session
 * stops feeding content (check_set_busy) until every filter is under
 * BUSY_LOW, so a slow filter slows its client instead of filling memory.
 * Every decision is logged with the queue id and counted
 * (mxd_milter_events_total{filter,event}). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
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
static const char *const ask_names[] = {"-", "connect", "helo", "mail", "rcpt", "end"};

struct mstate;

/* One filter for one connection. */
struct mf {
    struct mstate *ms;
    const struct conf_endpoint *ep;
    struct milter_conn *conn; /* NULL before connect, and once failed */
    bool negotiated;
    bool dead;      /* failed: the default action answers for it */
    bool conn_done; /* accepted the connection: not asked again */
    bool txn_started, txn_done, eob_sent;
    /* a refusal during the content, for the end */
    enum check_action txn_action;
    int txn_code;
    char txn_text[CHECK_TEXT_MAX];
};

struct mstate {
    struct check_session *cs;
    struct mf *f;
    size_t n;
    /* the stage being asked */
    enum ask ask;
    struct check_ticket t;
    size_t cur;
    char want; /* the command whose reply ends the current filter's turn */
    struct addr rcpt;
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

static void run(struct mstate *ms);

static const char *
qid_of(const struct mstate *ms)
{
    const char *q = check_info(ms->cs)->qid;

    return q[0] != '\0' ? q : NULL;
}

static void
count(const struct mf *f, const char *event)
{
    metrics_count(METRICS_F_MILTER, f->ep->text, event);
}

static struct milter_proto *
proto(struct mf *f)
{
    return milter_conn_proto(f->conn);
}

/* Writes what may go, and (re)arms the reply timeout. */
static void
mf_flush(struct mf *f)
{
    const struct conf *c = check_info(f->ms->cs)->conf;

    if (f->conn == NULL)
        return;
    milter_conn_flush(f->conn);
    if (milter_proto_awaiting(proto(f)) || milter_proto_pending(proto(f)) > 0)
        milter_conn_deadline(f->conn, f->ms->ask == ASK_END ? c->milter_content_timeout_ms
                                                            : c->milter_command_timeout_ms);
    else
        milter_conn_deadline(f->conn, 0);
}

static void
mods_clear(struct mstate *ms)
{
    for (size_t i = 0; i < ms->nmods; i++) {
        free(ms->mods[i].a);
        free(ms->mods[i].b);
    }
    free(ms->mods);
    ms->mods = NULL;
    ms->nmods = ms->mods_bytes = 0;
}

static void update_busy(struct mstate *ms);
static void mods_apply(struct mf *f);

/* The filter is out for the rest of the connection. */
static void
mf_fail(struct mf *f, const char *why)
{
    struct mstate *ms = f->ms;
    char w[200];

    log_msg(LOG_WARN, qid_of(ms), "milter", "filter failed filter=%s client=%s stage=%s reason=%s",
            f->ep->text, check_info(ms->cs)->client.ip, ask_names[ms->ask],
            log_esc(w, sizeof(w), why, strlen(why)));
    count(f, "error");
    f->dead = true;
    if (ms->ask == ASK_END && &ms->f[ms->cur] == f)
        mods_clear(ms);   /* what it changed goes with it */
    if (ms->repl_by == f) /* its new body is half there: the message cannot be stored */
        ms->body_broken = true;
    milter_conn_close(f->conn, false);
    f->conn = NULL;
    update_busy(ms);
}

/* The stage's answer; the next stage may be asked inside. */
static void
answer(struct mstate *ms, enum check_action action, int code, const char *text)
{
    struct check_ticket t = ms->t;

    if (ms->ask == ASK_END && action == CHECK_ACCEPT && ms->body_broken) {
        action = CHECK_TEMPFAIL;
        code = 451;
        text = "4.3.0 Error: a content filter failed while replacing the body, try again";
    }
    if (ms->ask == ASK_END && action == CHECK_ACCEPT && ms->head_state == HEAD_HELD) {
        struct check_edits *e = check_edits(ms->cs);

        free(e->header);
        e->header = milter_head_text(ms->head, &e->header_len);
    }
    ms->ask = ASK_NONE;
    check_answer(t, action, code, text);
}

/* milter_default_action for a filter that cannot answer. */
static void
stage_default(struct mf *f)
{
    struct mstate *ms = f->ms;
    const struct conf *c = check_info(ms->cs)->conf;

    if (c->milter_default_action == CONF_MILTER_ACCEPT) {
        ms->cur++;
        run(ms);
    } else if (c->milter_default_action == CONF_MILTER_TEMPFAIL) {
        answer(ms, CHECK_TEMPFAIL, 451, "4.7.1 Service unavailable - try again later");
    } else {
        answer(ms, CHECK_REJECT, 550, "5.7.1 Command rejected");
    }
}

/* A refusing reply as a verdict; false for one that is not a refusal. */
static bool
refusal(struct mstate *ms, const struct milter_event *ev, enum check_action *action, int *code,
        char *text, size_t size)
{
    switch (ev->type) {
    case MILTER_EV_REJECT:
        *action = CHECK_REJECT;
        *code = 550;
        snprintf(text, size, "5.7.1 Command rejected");
        return true;
    case MILTER_EV_TEMPFAIL:
        *action = CHECK_TEMPFAIL;
        *code = 451;
        snprintf(text, size, "4.7.1 Service unavailable - try again later");
        return true;
    case MILTER_EV_SHUTDOWN:
        *action = CHECK_TEMPFAIL;
        *code = 421;
        snprintf(text, size, "4.7.0 Server closing connection");
        return true;
    case MILTER_EV_REPLYCODE:
        *action = ev->code >= 500 ? CHECK_REJECT : CHECK_TEMPFAIL;
        *code = ev->code;
        snprintf(text, size, "%s", ev->b);
        return true;
    case MILTER_EV_DISCARD:
        if (ms->ask == ASK_CONNECT || ms->ask == ASK_HELO)
            return false; /* no message to discard yet: Postfix ignores it too */
        *action = CHECK_DISCARD;
        *code = 250;
        snprintf(text, size, "2.0.0 Ok: discarded");
        return true;
    default:
        return false;
    }
}

static void
log_reply(struct mf *f, const struct milter_event *ev, const char *stage)
{
    struct mstate *ms = f->ms;
    char t[CHECK_TEXT_MAX + 16];

    count(f, milter_ev_name(ev->type));
    if (ev->type == MILTER_EV_CONTINUE || ev->type == MILTER_EV_PROGRESS)
        return;
    log_msg(LOG_INFO, qid_of(ms), "milter", "filter=%s client=%s stage=%s action=%s%s%s",
            f->ep->text, check_info(ms->cs)->client.ip, stage, milter_ev_name(ev->type),
            ev->type == MILTER_EV_REPLYCODE ? " reply=" : "",
            ev->type == MILTER_EV_REPLYCODE ? log_esc(t, sizeof(t), ev->b, strlen(ev->b)) : "");
}

/* The final reply to the stage's command. */
static void
stage_reply(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    enum check_action action;
    int code;
    char text[CHECK_TEXT_MAX];

    log_reply(f, ev, ask_names[ms->ask]);
    if (ev->type == MILTER_EV_CONNFAIL) {
        mf_fail(f, "the filter asked to fail the connection");
        stage_default(f);
        return;
    }
    if (refusal(ms, ev, &action, &code, text, sizeof(text))) {
        mods_clear(ms);
        if (ms->ask == ASK_MAIL || ms->ask == ASK_END || action == CHECK_DISCARD)
            f->txn_done = true;
        if (action == CHECK_DISCARD && ms->ask != ASK_END) {
            /* the message goes at its end */
            f->txn_action = CHECK_DISCARD;
            f->txn_code = 250;
            snprintf(f->txn_text, sizeof(f->txn_text), "%s", text);
            ms->cur++;
            run(ms);
            return;
        }
        answer(ms, action, code, text);
        return;
    }
    if (ms->ask == ASK_END) /* the filter passes the message: its changes apply */
        mods_apply(f);
    mods_clear(ms);
    if (ev->type == MILTER_EV_ACCEPT) {
        if (ms->ask == ASK_CONNECT || ms->ask == ASK_HELO)
            f->conn_done = true;
        else
            f->txn_done = true;
    }
    ms->cur++;
    run(ms);
}

/* A reply to DATA, a header, EOH or a body chunk: a refusal waits for the
 * end of message; accept ends the filter's part in the message. */
static void
content_reply(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    enum check_action action;
    int code;
    char text[CHECK_TEXT_MAX];

    if (ev->type == MILTER_EV_CONTINUE || ev->type == MILTER_EV_SKIP) {
        count(f, milter_ev_name(ev->type));
        return;
    }
    log_reply(f, ev, "content");
    if (ev->type == MILTER_EV_CONNFAIL) {
        mf_fail(f, "the filter asked to fail the connection");
        return;
    }
    if (refusal(ms, ev, &action, &code, text, sizeof(text))) {
        f->txn_action = action;
        f->txn_code = code;
        snprintf(f->txn_text, sizeof(f->txn_text), "%s", text);
    }
    f->txn_done = true;
    milter_proto_drop_queued(proto(f));
}

/* ---- modifications ------------------------------------------------------ */

static void
log_mod(struct mf *f, const char *what, const char *detail)
{
    char d[300];

    log_msg(LOG_INFO, qid_of(f->ms), "milter", "filter=%s %s %s", f->ep->text, what,
            log_esc(d, sizeof(d), detail, strlen(detail)));
}

static void
ignored(struct mf *f, const struct milter_event *ev, const char *why)
{
    count(f, "ignored");
    log_msg(LOG_WARN, qid_of(f->ms), "milter", "filter=%s ignored=%s reason=%s", f->ep->text,
            milter_ev_name(ev->type), why);
}

/* "<a@b>" or "a@b" as an address; false when it is not one. */
static bool
parse_path(const char *text, bool allow_null, struct addr *out)
{
    char path[ADDR_PATH_MAX + 3];
    size_t used;

    if (text[0] == '<')
        snprintf(path, sizeof(path), "%s", text);
    else
        snprintf(path, sizeof(path), "<%s>", text);
    return addr_parse_path(path, strlen(path), allow_null, true, out, &used) == ADDR_OK &&
           path[used] == '\0' && !out->is_postmaster;
}

/* A recipient change goes into the pipeline's edits. */
static void
edit_rcpt(struct mf *f, const struct mod *m)
{
    struct check_edits *e = check_edits(f->ms->cs);
    const struct conf *c = check_info(f->ms->cs)->conf;
    struct addr a;

    if (!parse_path(m->a, false, &a)) {
        log_mod(f, "ignored=bad-address", m->a);
        count(f, "ignored");
        return;
    }
    if (m->type == MILTER_EV_DELRCPT) {
        e->del = xrealloc(e->del, (e->ndel + 1) * sizeof(*e->del));
        e->del[e->ndel++] = xstrdup(a.mailbox);
        log_mod(f, "delete_rcpt", a.mailbox);
        return;
    }
    /* mxd delivers only to the domains it serves */
    if (conf_domain_find(c, a.domain_lc, strlen(a.domain_lc)) == NULL) {
        log_mod(f, "ignored=add_rcpt reason=domain-not-served", a.mailbox);
        count(f, "ignored");
        return;
    }
    if (m->b != NULL && m->b[0] != '\0')
        log_mod(f, "add_rcpt esmtp-args-ignored", m->b);
    e->add = xrealloc(e->add, (e->nadd + 1) * sizeof(*e->add));
    e->add[e->nadd].address = xstrdup(a.mailbox);
    e->add[e->nadd].domain = xstrdup(a.domain_lc);
    e->nadd++;
    log_mod(f, "add_rcpt", a.mailbox);
}

static void
edit_other(struct mf *f, const struct mod *m)
{
    struct check_edits *e = check_edits(f->ms->cs);
    struct addr a;
    char reason[200];
    size_t n = 0;

    if (m->type == MILTER_EV_CHGFROM) {
        if (!parse_path(m->a, true, &a)) {
            log_mod(f, "ignored=bad-address", m->a);
            count(f, "ignored");
            return;
        }
        if (m->b != NULL && m->b[0] != '\0')
            log_mod(f, "change_from esmtp-args-ignored", m->b);
        free(e->sender);
        e->sender = xstrdup(a.mailbox);
        log_mod(f, "change_from", a.mailbox[0] != '\0' ? a.mailbox : "<>");
        return;
    }
    /* QUARANTINE: the reason, controls made spaces, for mxctl queue */
    for (const char *p = m->a; *p != '\0' && n + 1 < sizeof(reason); p++)
        reason[n++] = (unsigned char)*p < ' ' || *p == 127 ? ' ' : *p;
    reason[n] = '\0';
    free(e->quarantine);
    e->quarantine = xasprintf("quarantined by %s: %s", f->ep->text, reason);
    log_mod(f, "quarantine", reason);
}

/* The filter passed the message: its changes, in the order it sent them. */
static void
mods_apply(struct mf *f)
{
    struct mstate *ms = f->ms;

    for (size_t i = 0; i < ms->nmods; i++) {
        const struct mod *m = &ms->mods[i];
        int rc = 0;

        count(f, milter_ev_name(m->type));
        switch (m->type) {
        case MILTER_EV_ADDHEADER:
        case MILTER_EV_INSHEADER:
        case MILTER_EV_CHGHEADER:
            if (ms->head_state != HEAD_HELD) {
                log_mod(f, "ignored=header-not-held name=", m->a);
                continue;
            }
            if (m->type == MILTER_EV_ADDHEADER)
                rc = milter_head_add(ms->head, m->a, m->b);
            else if (m->type == MILTER_EV_INSHEADER)
                rc = milter_head_insert(ms->head, m->index, m->a, m->b);
            else
                rc = milter_head_change(ms->head, m->index, m->a, m->b);
            log_mod(f, milter_ev_name(m->type), m->a);
            if (rc < 0)
                log_mod(f, "ignored=bad-field name=", m->a);
            break;
        case MILTER_EV_ADDRCPT:
        case MILTER_EV_DELRCPT:
            edit_rcpt(f, m);
            break;
        default:
            edit_other(f, m);
            break;
        }
    }
}

/* A chunk of the filter's new body, straight to the sink: the content
 * received so far is dropped at its first chunk. */
static void
replace_body(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    size_t n;

    if (ms->repl_by != f) {
        /* the withheld header stays; the sink gets the empty line and the new body */
        if (ms->head_state != HEAD_HELD || !check_rewind(ms->cs)) {
            ignored(f, ev, "header-not-held");
            return;
        }
        if (ms->repl_buf == NULL)
            ms->repl_buf = xmalloc(2 * MILTER_REPLY_MAX);
        ms->repl_by = f;
        ms->crlf = (struct milter_crlf){false};
        check_emit(ms->out, "\r\n", 2);
        count(f, "replace_body");
        log_msg(LOG_INFO, qid_of(ms), "milter", "filter=%s replace_body", f->ep->text);
    }
    n = milter_crlf(&ms->crlf, ev->data, ev->len, ms->repl_buf);
    check_emit(ms->out, ms->repl_buf, n);
}

/* A modification in the reply to end of message: kept until the filter's
 * final reply (a filter that fails before it changes nothing), but for a
 * new body, which is too large to keep. */
static void
modification(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    size_t size;
    struct mod *m;

    if (ms->ask != ASK_END || &ms->f[ms->cur] != f) {
        mf_fail(f, "modification out of place");
        return;
    }
    if (!ev->permitted) {
        ignored(f, ev, "not-negotiated");
        return;
    }
    if (ev->type == MILTER_EV_REPLBODY) {
        replace_body(f, ev);
        return;
    }
    size = (ev->a != NULL ? strlen(ev->a) : 0) + (ev->b != NULL ? strlen(ev->b) : 0) + 64;
    if (ms->mods_bytes + size > MODS_MAX) {
        mf_fail(f, "too many modifications");
        stage_default(f);
        return;
    }
    ms->mods = xrealloc(ms->mods, (ms->nmods + 1) * sizeof(*ms->mods));
    m = &ms->mods[ms->nmods++];
    m->type = ev->type;
    m->index = ev->index;
    m->a = xstrdup(ev->a != NULL ? ev->a : "");
    m->b = xstrdup(ev->b != NULL ? ev->b : "");
    ms->mods_bytes += size;
}

static void
on_input(void *arg)
{
    struct mf *f = arg;
    struct mstate *ms = f->ms;
    struct check_session *cs = ms->cs;
    struct milter_event ev;
    int rc;

    check_hold(cs);
    while (f->conn != NULL && (rc = milter_proto_next(proto(f), &ev)) != 0) {
        bool mine = ms->ask != ASK_NONE && &ms->f[ms->cur] == f;

        if (rc < 0) {
            mf_fail(f, milter_proto_error(proto(f)));
            if (mine)
                stage_default(f);
            break;
        }
        if (ev.type == MILTER_EV_NEGOTIATED) {
            f->negotiated = true;
            if (mine)
                run(ms);
        } else if (ev.type == MILTER_EV_PROGRESS) {
            count(f, "progress");
        } else if (!ev.final) {
            modification(f, &ev);
        } else if (mine && ev.cmd == ms->want) {
            stage_reply(f, &ev);
        } else {
            content_reply(f, &ev);
        }
    }
    if (!check_unhold(cs)) {
        for (size_t i = 0; i < ms->n; i++)
            mf_flush(&ms->f[i]);
        update_busy(ms);
    }
}

static void
on_connected(void *arg)
{
    struct mf *f = arg;

    if (milter_proto_optneg(proto(f)) < 0) {
        mf_fail(f, "cannot negotiate");
        return;
    }
    mf_flush(f);
}

static void
on_failed(void *arg, const char *why)
{
    struct mf *f = arg;
    struct mstate *ms = f->ms;
    bool mine = ms->ask != ASK_NONE && &ms->f[ms->cur] == f;

    check_hold(ms->cs);
    mf_fail(f, why);
    if (mine)
        stage_default(f);
    check_unhold(ms->cs);
}

/* The filter took what was written: the content may flow again. */
static void
on_written(void *arg)
{
    struct mf *f = arg;

    check_hold(f->ms->cs);
    mf_flush(f); /* it is alive: its deadline runs from now */
    update_busy(f->ms);
    check_unhold(f->ms->cs);
}

static const struct milter_conn_cbs conn_cbs = {on_connected, on_input, on_failed, on_written};

/* ---- what a stage sends ------------------------------------------------ */

static int
send_connect(struct mf *f)
{
    const struct check_info *in = check_info(f->ms->cs);
    const struct sockaddr *sa = (const struct sockaddr *)&in->client.peer;
    uint16_t port = 0;
    const char *cname;
    char ports[8], name[256], under[256 + INET6_ADDRSTRLEN + 4];
    enum milter_family fam = MILTER_FAM_UNKNOWN;
    int rc;

    if (sa->sa_family == AF_INET) {
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
        fam = MILTER_FAM_INET;
    } else if (sa->sa_family == AF_INET6) {
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        fam = MILTER_FAM_INET6;
    }
    snprintf(ports, sizeof(ports), "%u", (unsigned)port);
    /* the forward-confirmed name when the DNSBL check looked it up
     * (fcrdns = on), else "[IP]" as Postfix writes an unknown client */
    cname = check_facts(f->ms->cs)->client_name;
    if (cname != NULL)
        snprintf(name, sizeof(name), "%s", cname);
    else
        snprintf(name, sizeof(name), "[%s]", in->client.ip);
    snprintf(under, sizeof(under), "%s [%s]", cname != NULL ? cname : "unknown", in->client.ip);
    {
        struct milter_macro mac[] = {
            {"j", in->conf->hostname},         {"_", under},
            {"{daemon_name}", "mxd"},          {"{client_addr}", in->client.ip},
            {"{client_port}", ports},          {"{client_name}", name},
            {"{if_name}", in->conf->hostname},
        };

        rc = milter_proto_macros(proto(f), MILTER_ST_CONNECT, mac, sizeof(mac) / sizeof(mac[0]));
    }
    if (rc < 0)
        return rc;
    return milter_proto_connect(proto(f), name, fam, port, in->client.ip);
}

static int
send_stage(struct mf *f)
{
    struct mstate *ms = f->ms;
    const struct check_info *in = check_info(ms->cs);
    char path[ADDR_PATH_MAX + 3];
    const char *args[1] = {path};
    /* without TLS the macros are not sent (NULL) */
    const char *tls_v = in->tls_version[0] != '\0' ? in->tls_version : NULL;
    const char *tls_c = in->tls_version[0] != '\0' ? in->tls_cipher : NULL;
    int rc;

    switch (ms->ask) {
    case ASK_CONNECT:
        ms->want = 'C';
        return send_connect(f);
    case ASK_HELO: {
        struct milter_macro mac[] = {{"{tls_version}", tls_v}, {"{cipher}", tls_c}};

        ms->want = 'H';
        rc = milter_proto_macros(proto(f), MILTER_ST_HELO, mac, 2);
        return rc < 0 ? rc : milter_proto_helo(proto(f), in->helo);
    }
    case ASK_MAIL: {
        struct milter_macro mac[] = {{"i", in->qid},
                                     {"{mail_addr}", in->sender->mailbox},
                                     {"{tls_version}", tls_v},
                                     {"{cipher}", tls_c}};

        ms->want = 'M';
        f->txn_started = true;
        snprintf(path, sizeof(path), "<%s>", in->sender->mailbox);
        rc = milter_proto_macros(proto(f), MILTER_ST_MAIL, mac, 4);
        return rc < 0 ? rc : milter_proto_mail(proto(f), args, 1);
    }
    case ASK_RCPT: {
        const struct conf_domain *d =
            conf_domain_find(in->conf, ms->rcpt.domain_lc, strlen(ms->rcpt.domain_lc));
        const char *mailer = d == NULL ? "error" : d->mode == CONF_MODE_LOCAL ? "lmtp" : "smtp";
        struct milter_macro mac[] = {{"{rcpt_addr}", ms->rcpt.mailbox},
                                     {"{rcpt_host}", ms->rcpt.domain_lc},
                                     {"{rcpt_mailer}", mailer}};

        ms->want = 'R';
        snprintf(path, sizeof(path), "<%s>", ms->rcpt.mailbox);
        rc = milter_proto_macros(proto(f), MILTER_ST_RCPT, mac, 3);
        return rc < 0 ? rc : milter_proto_rcpt(proto(f), args, 1);
    }
    case ASK_END: {
        struct milter_macro mac[] = {{"i", in->qid}};

        ms->want = 'E';
        f->eob_sent = true;
        rc = milter_proto_macros(proto(f), MILTER_ST_EOM, mac, 1);
        return rc < 0 ? rc : milter_proto_eob(proto(f));
    }
    case ASK_NONE:
        break;
    }
    return MXD_EINVAL;
}

/* Asks the filters from ms->cur on until one waits or decides. */
static void
run(struct mstate *ms)
{
    while (ms->ask != ASK_NONE && ms->cur < ms->n) {
        struct mf *f = &ms->f[ms->cur];
        bool txn_stage = ms->ask >= ASK_MAIL;
        int rc;

        if (f->dead) {
            stage_default(f);
            return;
        }
        if (f->conn_done || (txn_stage && f->txn_done && ms->ask != ASK_END)) {
            ms->cur++;
            continue;
        }
        if (ms->ask == ASK_END && f->txn_done) {
            if (f->txn_code != 0) {
                answer(ms, f->txn_action, f->txn_code, f->txn_text);
                return;
            }
            ms->cur++;
            continue;
        }
        if (f->conn == NULL) {
            const struct check_info *in = check_info(ms->cs);

            f->conn = milter_conn_open(in->env.loop, f->ep,
                                       milter_proto_new(MILTER_ACT_ALL, MILTER_P_OFFER),
                                       in->conf->milter_connect_timeout_ms, &conn_cbs, f);
            return; /* on_input runs this again once negotiated */
        }
        if (!f->negotiated)
            return;
        rc = send_stage(f);
        if (rc < 0) {
            mf_fail(f, rc == MXD_ETOOBIG ? "command too long" : "cannot send");
            stage_default(f);
            return;
        }
        mf_flush(f);
        if (rc == MILTER_AWAIT)
            return;
        ms->cur++;
    }
    if (ms->ask != ASK_NONE)
        answer(ms, CHECK_ACCEPT, 0, "");
}

static void
stage(struct mstate *ms, enum ask ask, struct check_ticket t)
{
    ms->ask = ask;
    ms->t = t;
    ms->cur = 0;
    run(ms);
}

/* ---- the content ------------------------------------------------------- */

/* The filters that take part in this message's content. */
static bool
in_content(const struct mf *f)
{
    return f->conn != NULL && f->negotiated && !f->dead && !f->conn_done && !f->txn_done &&
           f->txn_started;
}

/* Back-pressure: tells the pipeline whether a filter is too far behind. */
static void
update_busy(struct mstate *ms)
{
    bool high = false, low = true;

    for (size_t i = 0; i < ms->n; i++) {
        size_t q;

        if (ms->f[i].conn == NULL || ms->f[i].dead)
            continue;
        q = milter_conn_queued(ms->f[i].conn);
        high = high || q > BUSY_HIGH;
        low = low && q <= BUSY_LOW;
    }
    if (ms->content && !ms->busy && high)
        ms->busy = true;
    else if (ms->busy && (low || !ms->content))
        ms->busy = false;
    else
        return;
    check_set_busy(ms->cs, ms->busy);
}

static void
each_rc(struct mf *f, int rc)
{
    if (rc < 0) {
        mf_fail(f, rc == MXD_ETOOBIG ? "filter too slow: content queue full" : "cannot send");
        return;
    }
    mf_flush(f);
}

static void
send_header_field(struct mstate *ms)
{
    char *colon, *name, *value, *w;

    if (ms->hdr_len == 0)
        return;
    ms->hdr[ms->hdr_len] = '\0';
    ms->hdr_len = 0;
    colon = strchr(ms->hdr, ':');
    if (colon == NULL)
        return; /* not a field: nothing to tell */
    *colon = '\0';
    name = ms->hdr;
    for (w = colon; w > name && (w[-1] == ' ' || w[-1] == '\t'); w--)
        w[-1] = '\0';
    /* CRLF line ends become LF, the last one goes */
    value = colon + 1;
    w = value;
    for (char *r = value; *r != '\0'; r++) {
        if (*r == '\r' && r[1] == '\n')
            continue;
        *w++ = *r;
    }
    while (w > value && (w[-1] == '\n' || w[-1] == '\r'))
        w--;
    *w = '\0';
    if (name[0] == '\0')
        return;
    for (size_t i = 0; i < ms->n; i++)
        if (in_content(&ms->f[i]))
            each_rc(&ms->f[i], milter_proto_header(proto(&ms->f[i]), name, value));
}

static void
end_of_header(struct mstate *ms)
{
    send_header_field(ms);
    ms->in_body = true;
    if (ms->head_state == HEAD_READING) {
        if (ms->head == NULL)
            ms->head = milter_head_new();
        milter_head_parse(ms->head, ms->raw, ms->raw_len);
        free(ms->raw);
        ms->raw = NULL;
        ms->raw_len = 0;
        ms->head_state = HEAD_HELD;
    }
    for (size_t i = 0; i < ms->n; i++)
        if (in_content(&ms->f[i]))
            each_rc(&ms->f[i], milter_proto_eoh(proto(&ms->f[i])));
}

static void
send_chunk(struct mstate *ms)
{
    if (ms->chunk_len == 0)
        return;
    for (size_t i = 0; i < ms->n; i++)
        if (in_content(&ms->f[i]))
            each_rc(&ms->f[i], milter_proto_body(proto(&ms->f[i]), ms->chunk, ms->chunk_len));
    ms->chunk_len = 0;
}

static void
body_bytes(struct mstate *ms, const char *data, size_t len)
{
    while (len > 0) {
        size_t n = MILTER_CHUNK_MAX - ms->chunk_len;

        if (n > len)
            n = len;
        memcpy(ms->chunk + ms->chunk_len, data, n);
        ms->chunk_len += n;
        data += n;
        len -= n;
        if (ms->chunk_len == MILTER_CHUNK_MAX)
            send_chunk(ms);
    }
}

/* The header, octet by octet: a field ends where a line starts with
 * neither a blank nor the empty line that ends the header. Returns where
 * the empty line begins in data (len: all of it is header); *cr says its
 * CR came at the end of an earlier chunk (it was withheld). The header's
 * octets are kept in ms->raw while it is withheld. */
static size_t
header_bytes(struct mstate *ms, const char *data, size_t len, bool *cr)
{
    *cr = false;
    for (size_t i = 0; i < len; i++) {
        char ch = data[i];

        if (ms->eoh_cr) { /* the empty line (or a lone CR: the body begins) */
            ms->eoh_cr = false;
            *cr = true;
            end_of_header(ms);
            return i;
        }
        if (ms->line_start) {
            ms->line_start = false;
            if (ch == '\r') {
                ms->eoh_cr = true;
                continue;
            }
            if (ch == '\n') {
                end_of_header(ms);
                return i;
            }
            if (ch != ' ' && ch != '\t')
                send_header_field(ms);
        }
        if (ms->hdr_len < HDR_MAX)
            ms->hdr[ms->hdr_len++] = ch;
        if (ms->head_state == HEAD_READING)
            ms->raw[ms->raw_len++] = ch;
        if (ch == '\n')
            ms->line_start = true;
    }
    return len;
}

/* Content while the header is read: withheld, then from the empty line on
 * passed to the store. */
static void
header_content(struct mstate *ms, const char *data, size_t len)
{
    size_t off, skip;
    bool cr;

    if (ms->head_state == HEAD_READING && ms->raw_len + len > HEAD_MAX) {
        /* too large to hold: what was withheld goes on, unedited */
        log_msg(LOG_WARN, qid_of(ms), "milter", "header over %u octets: passed unedited", HEAD_MAX);
        check_emit(ms->out, ms->raw, ms->raw_len);
        free(ms->raw);
        ms->raw = NULL;
        ms->raw_len = 0;
        ms->head_state = HEAD_PASSED;
    }
    if (ms->head_state == HEAD_READING && ms->raw == NULL)
        ms->raw = xmalloc(HEAD_MAX);
    off = header_bytes(ms, data, len, &cr);
    if (ms->head_state == HEAD_PASSED)
        check_emit(ms->out, data, off);
    if (off == len && !ms->in_body)
        return;
    if (cr) /* "\r" ended the last chunk: it begins the empty line */
        check_emit(ms->out, "\r", 1);
    check_emit(ms->out, data + off, len - off);
    /* the filters' body begins after the empty line */
    skip = off < len && data[off] == '\n' ? 1 : 0;
    body_bytes(ms, data + off + skip, len - off - skip);
}

static void
milter_data(void *arg, struct check_stream out)
{
    struct mstate *ms = arg;
    const struct check_info *in = check_info(ms->cs);
    struct milter_macro mac[] = {{"i", in->qid}};

    ms->out = out;
    ms->content = false;
    for (size_t i = 0; i < ms->n; i++) {
        struct mf *f = &ms->f[i];

        if (!in_content(f))
            continue;
        ms->content = true;
        if (milter_proto_macros(proto(f), MILTER_ST_DATA, mac, 1) < 0) {
            mf_fail(f, "cannot send");
            continue;
        }
        each_rc(f, milter_proto_data(proto(f)));
    }
    if (ms->content) {
        ms->in_body = false;
        ms->line_start = true;
        ms->eoh_cr = false;
        ms->hdr_len = ms->chunk_len = 0;
        ms->head_state = HEAD_READING;
        if (ms->hdr == NULL)
            ms->hdr = xmalloc(HDR_MAX + 1);
        if (ms->chunk == NULL)
            ms->chunk = xmalloc(MILTER_CHUNK_MAX);
    }
}

static void
milter_filter(void *arg, const char *data, size_t len)
{
    struct mstate *ms = arg;

    if (!ms->content) {
        check_emit(ms->out, data, len);
        return;
    }
    if (ms->in_body) {
        check_emit(ms->out, data, len);
        body_bytes(ms, data, len);
    } else {
        header_content(ms, data, len);
    }
    update_busy(ms);
}

/* ---- hooks ------------------------------------------------------------- */

static void
milter_connect(void *arg, struct check_ticket t)
{
    stage(arg, ASK_CONNECT, t);
}

static void
milter_helo(void *arg, struct check_ticket t)
{
    stage(arg, ASK_HELO, t);
}

static void
milter_mail(void *arg, struct check_ticket t)
{
    stage(arg, ASK_MAIL, t);
}

static void
milter_rcpt(void *arg, struct check_ticket t, const struct addr *rcpt)
{
    struct mstate *ms = arg;

    ms->rcpt = *rcpt;
    stage(ms, ASK_RCPT, t);
}

static void
milter_end(void *arg, struct check_ticket t)
{
    struct mstate *ms = arg;

    if (ms->content) {
        if (!ms->in_body) {
            if (ms->eoh_cr) { /* a lone CR after the header */
                ms->eoh_cr = false;
                check_emit(ms->out, "\r", 1);
            }
            end_of_header(ms);
        }
        send_chunk(ms);
        ms->content = false;
        update_busy(ms);
    }
    stage(ms, ASK_END, t);
}

/* What a message left behind. */
static void
txn_clear(struct mstate *ms)
{
    ms->content = false;
    free(ms->hdr);
    free(ms->chunk);
    free(ms->raw);
    free(ms->repl_buf);
    ms->hdr = ms->chunk = ms->raw = ms->repl_buf = NULL;
    ms->raw_len = 0;
    milter_head_free(ms->head);
    ms->head = NULL;
    ms->head_state = HEAD_NONE;
    mods_clear(ms);
    ms->repl_by = NULL;
    ms->body_broken = false;
}

static void
milter_reset(void *arg)
{
    struct mstate *ms = arg;

    for (size_t i = 0; i < ms->n; i++) {
        struct mf *f = &ms->f[i];

        if (f->conn != NULL && f->negotiated && f->txn_started && !f->eob_sent) {
            if (milter_proto_abort(proto(f)) < 0)
                mf_fail(f, "cannot send");
            else
                mf_flush(f);
        }
        f->txn_started = f->txn_done = f->eob_sent = false;
        f->txn_code = 0;
    }
    txn_clear(ms);
    update_busy(ms);
}

static void *
milter_start(struct check_session *cs)
{
    const struct conf *c = check_info(cs)->conf;
    struct mstate *ms;

    /* with no filters too: the content passes through milter_filter */
    ms = xcalloc(1, sizeof(*ms));
    ms->cs = cs;
    ms->n = c->nmilters;
    ms->f = xcalloc(ms->n, sizeof(*ms->f));
    for (size_t i = 0; i < ms->n; i++) {
        ms->f[i].ms = ms;
        ms->f[i].ep = &c->milters[i];
    }
    return ms;
}

static void
milter_stop(void *arg)
{
    struct mstate *ms = arg;

    for (size_t i = 0; i < ms->n; i++)
        milter_conn_close(ms->f[i].conn, true);
    txn_clear(ms);
    free(ms->f);
    free(ms);
}

const struct check_ops check_milter = {
    .name = "milter",
    .start = milter_start,
    .stop = milter_stop,
    .connect = milter_connect,
    .helo = milter_helo,
    .mail = milter_mail,
    .rcpt = milter_rcpt,
    .end = milter_end,
    .data = milter_data,
    .filter = milter_filter,
    .reset = milter_reset,
};
