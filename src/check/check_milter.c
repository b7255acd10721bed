/* check_milter: content filters over the milter protocol (Sendmail's,
 * Postfix's) as a check of the pipeline, last in the list: a filter sees
 * only what mxd's own checks accepted, and the content as it will be
 * stored. Owns, per connection, one milter connection per filter of the
 * configuration (conf->milter_defs; milter_net.c), opened when a list
 * first asks it (at connect for the [server] list, as Postfix does), and
 * the stages' dialogue with them; the content (HEADER, EOH and
 * BODY commands, the withheld header) and the modifications are in
 * check_milter_content.c, the state both share in check_milter_impl.h.
 * Loop thread only.
 *
 * Stages: connect, HELO, MAIL, RCPT, DATA and the content, end of message;
 * ABORT when a transaction ends without one, QUIT when the connection
 * goes. Each stage asks the filters of a list in order; the first that
 * does not continue decides. Lists: [server] milters at connect, HELO and
 * MAIL; from RCPT on the recipients' domain's list while every recipient
 * of the transaction shares it, else the [server] list (rcpt_list). A
 * filter that joins late catches up first (next_step: connect, HELO, MAIL,
 * the transaction's earlier recipients); a refusal then is sticky.
 * Replies: continue and accept (for the rest of the connection at connect
 * and HELO, of the transaction later) pass; reject,
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
 * A filter that cannot be reached, times out (its connect_timeout,
 * command_timeout, content_timeout for the end of message), closes or
 * breaks the protocol is closed and its default_action answers for it from
 * then on, for the rest of the connection. Memory is
 * bounded: the header (HEAD_MAX), one header field (64 KiB) and one body
 * chunk per connection; past BUSY_HIGH queued for a filter the session
 * stops feeding content (check_set_busy) until every filter is under
 * BUSY_LOW, so a slow filter slows its client instead of filling memory.
 * Every decision is logged with the queue id and counted
 * (mxd_milter_events_total{filter,event}; mxd_milter_reply_seconds). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "check/check_milter_impl.h"

/* How long a probe (milter_net.c) may stay silent before its first reply. */
#define PROBE_MS 2000u

static const char *const ask_names[] = {"-", "connect", "helo", "mail", "rcpt", "end"};

static void run(struct mstate *ms);

/* Writes what may go, and (re)arms the reply timeout. */
void
check_milter__flush(struct mf *f)
{
    const struct conf_milter *d = f->def;

    if (f->conn == NULL)
        return;
    milter_conn_flush(f->conn);
    if (milter_proto_awaiting(mf_proto(f)) || milter_proto_pending(mf_proto(f)) > 0) {
        uint64_t ms = f->ms->ask == ASK_END ? d->content_timeout_ms : d->command_timeout_ms;

        /* a probe's silence before the transaction: the filter dropped the
         * QUIT_NC; no need to wait the whole timeout to learn that */
        if (f->probe && !f->replied && !f->txn_started && ms > PROBE_MS)
            ms = PROBE_MS;
        milter_conn_deadline(f->conn, ms);
    } else
        milter_conn_deadline(f->conn, 0);
}

/* The filter is out for the rest of the connection. */
void
check_milter__fail(struct mf *f, const char *why)
{
    struct mstate *ms = f->ms;
    char w[200];

    log_msg(LOG_WARN, ms_qid(ms), "milter", "filter failed filter=%s client=%s stage=%s reason=%s",
            f->def->name, check_info(ms->cs)->client.ip, ask_names[ms->ask],
            log_esc(w, sizeof(w), why, strlen(why)));
    mf_count(f, "error");
    f->dead = true;
    if (ms->ask == ASK_END && ms_current(ms) == f)
        check_milter__mods_clear(ms); /* what it changed goes with it */
    if (ms->repl_by == f)             /* its new body is half there: the message cannot be stored */
        ms->body_broken = true;
    milter_conn_close(f->conn, false);
    f->conn = NULL;
    check_milter__update_busy(ms);
}

static void rcpt_passed(struct mstate *ms);

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
    if (ms->ask == ASK_RCPT && action == CHECK_ACCEPT)
        rcpt_passed(ms);
    if (ms->ask == ASK_END && action == CHECK_ACCEPT && ms->head_state == HEAD_HELD) {
        struct check_edits *e = check_edits(ms->cs);

        free(e->header);
        e->header = milter_head_text(ms->head, &e->header_len);
    }
    ms->ask = ASK_NONE;
    check_answer(t, action, code, text);
}

/* The filter's default_action for a filter that cannot answer. */
void
check_milter__default(struct mf *f)
{
    struct mstate *ms = f->ms;
    enum conf_milter_action a = f->def->default_action;

    if (a == CONF_MILTER_ACCEPT) {
        ms->cur++;
        run(ms);
    } else if (a == CONF_MILTER_TEMPFAIL) {
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
        if (ms->step == ASK_CONNECT || ms->step == ASK_HELO)
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

    mf_count(f, milter_ev_name(ev->type));
    if (ev->type == MILTER_EV_CONTINUE || ev->type == MILTER_EV_PROGRESS)
        return;
    log_msg(LOG_INFO, ms_qid(ms), "milter", "filter=%s client=%s stage=%s action=%s%s%s",
            f->def->name, check_info(ms->cs)->client.ip, stage, milter_ev_name(ev->type),
            ev->type == MILTER_EV_REPLYCODE ? " reply=" : "",
            ev->type == MILTER_EV_REPLYCODE ? log_esc(t, sizeof(t), ev->b, strlen(ev->b)) : "");
}

/* The filter's verdict on the message, given at the end of data. */
static void
txn_verdict(struct mf *f, enum check_action action, int code, const char *text)
{
    f->txn_action = action;
    f->txn_code = code;
    snprintf(f->txn_text, sizeof(f->txn_text), "%s", text);
}

/* ACCEPT from a filter: it is done with the connection (at connect or
 * HELO) or with the transaction (later). */
static void
accepted(struct mf *f, enum ask step)
{
    if (step == ASK_CONNECT || step == ASK_HELO)
        f->conn_done = true;
    else
        f->txn_done = true;
}

/* The reply to a step a filter catches up on (see next_step): continue
 * goes on with its next step, accept skips it, a refusal answers the
 * stage and every later one that asks this filter (sticky). */
static void
catchup_reply(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    enum check_action action;
    int code;
    char text[CHECK_TEXT_MAX];

    if (refusal(ms, ev, &action, &code, text, sizeof(text))) {
        if (action == CHECK_DISCARD) { /* the message goes at its end */
            f->txn_done = true;
            txn_verdict(f, CHECK_DISCARD, 250, text);
            ms->cur++;
            run(ms);
            return;
        }
        f->sticky = true;
        f->sticky_conn = ms->step == ASK_CONNECT || ms->step == ASK_HELO;
        f->sticky_action = action;
        f->sticky_code = code;
        snprintf(f->sticky_text, sizeof(f->sticky_text), "%s", text);
        answer(ms, action, code, text);
        return;
    }
    if (ev->type == MILTER_EV_ACCEPT) {
        accepted(f, ms->step);
        ms->cur++;
    }
    run(ms);
}

/* The final reply to the stage's command. */
static void
stage_reply(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    enum check_action action;
    int code;
    char text[CHECK_TEXT_MAX];

    log_reply(f, ev, ask_names[ms->step]);
    metrics_observe(METRICS_H_MILTER_SECONDS, (double)(uv_hrtime() - f->asked_ns) / 1e9);
    if (ev->type == MILTER_EV_CONNFAIL) {
        check_milter__fail(f, "the filter asked to fail the connection");
        check_milter__default(f);
        return;
    }
    if (ms->step != ms->ask || ms->replay) {
        catchup_reply(f, ev);
        return;
    }
    if (refusal(ms, ev, &action, &code, text, sizeof(text))) {
        check_milter__mods_clear(ms);
        if (ms->ask == ASK_MAIL || ms->ask == ASK_END || action == CHECK_DISCARD)
            f->txn_done = true;
        if (action == CHECK_DISCARD && ms->ask != ASK_END) {
            /* the message goes at its end */
            txn_verdict(f, CHECK_DISCARD, 250, text);
            ms->cur++;
            run(ms);
            return;
        }
        answer(ms, action, code, text);
        return;
    }
    if (ms->ask == ASK_END) /* the filter passes the message: its changes apply */
        check_milter__mods_apply(f);
    /* a QUIT_NC may follow it on any filter (milter_net.c) */
    f->after_message = ms->ask == ASK_END && ev->type == MILTER_EV_CONTINUE;
    check_milter__mods_clear(ms);
    if (ev->type == MILTER_EV_ACCEPT)
        accepted(f, ms->ask);
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
        mf_count(f, milter_ev_name(ev->type));
        return;
    }
    log_reply(f, ev, "content");
    if (ev->type == MILTER_EV_CONNFAIL) {
        check_milter__fail(f, "the filter asked to fail the connection");
        return;
    }
    if (refusal(ms, ev, &action, &code, text, sizeof(text)))
        txn_verdict(f, action, code, text);
    f->txn_done = true;
    milter_proto_drop_queued(mf_proto(f));
}

/* ---- the filters' replies ---------------------------------------------- */

static void
on_input(void *arg)
{
    struct mf *f = arg;
    struct mstate *ms = f->ms;
    struct check_session *cs = ms->cs;
    struct milter_event ev;
    int rc;

    check_hold(cs);
    while (f->conn != NULL && (rc = milter_proto_next(mf_proto(f), &ev)) != 0) {
        bool mine = ms->ask != ASK_NONE && ms_current(ms) == f;

        if (f->probe && !f->replied)
            milter_conn_quitnc_learn(f->def->socket.text, MILTER_QUITNC_ANYWHERE);
        f->replied = true;
        if (rc < 0) {
            check_milter__fail(f, milter_proto_error(mf_proto(f)));
            if (mine)
                check_milter__default(f);
            break;
        }
        if (ev.type == MILTER_EV_NEGOTIATED) {
            f->negotiated = true;
            if (mine)
                run(ms);
        } else if (ev.type == MILTER_EV_PROGRESS) {
            mf_count(f, "progress");
        } else if (!ev.final) {
            check_milter__modification(f, &ev);
        } else if (mine && ev.cmd == ms->want) {
            stage_reply(f, &ev);
        } else {
            content_reply(f, &ev);
        }
    }
    if (!check_unhold(cs)) {
        for (size_t i = 0; i < ms->n; i++)
            check_milter__flush(&ms->f[i]);
        check_milter__update_busy(ms);
    }
}

static void
on_connected(void *arg)
{
    struct mf *f = arg;

    if (milter_proto_optneg(mf_proto(f)) < 0) {
        check_milter__fail(f, "cannot negotiate");
        return;
    }
    check_milter__flush(f);
}

/* A parked connection that fails before its first reply in this session,
 * before a transaction: the filter closed it (or restarted) while it was
 * parked, or, a probe that times out, dropped the QUIT_NC (libmilter
 * takes it only right after a message it continued: from now on the
 * filter's connections are parked only there). The filter starts over on
 * a new connection (next_step catches it up on connect and HELO). */
static bool
retry_fresh(struct mf *f, const char *why, bool timeout)
{
    bool learnt = f->probe && !f->replied && timeout;

    if (learnt)
        milter_conn_quitnc_learn(f->def->socket.text, MILTER_QUITNC_AFTER_MESSAGE);
    if (!f->reused || f->replied || f->txn_started)
        return false;
    log_msg(LOG_INFO, ms_qid(f->ms), "milter", "reused connection failed filter=%s reason=%s: %s",
            f->def->name, why,
            learnt ? "it takes QUIT_NC only after a message, reconnecting" : "reconnecting");
    mf_count(f, "reuse_failed");
    milter_conn_close(f->conn, false);
    f->conn = NULL;
    f->reused = f->negotiated = f->probe = false;
    f->retried = true;
    f->seen_connect = f->seen_helo = false;
    return true;
}

static void
on_failed(void *arg, const char *why, bool timeout)
{
    struct mf *f = arg;
    struct mstate *ms = f->ms;
    bool mine = ms->ask != ASK_NONE && ms_current(ms) == f;

    check_hold(ms->cs);
    if (retry_fresh(f, why, timeout)) {
        if (mine)
            run(ms);
    } else {
        check_milter__fail(f, why);
        if (mine)
            check_milter__default(f);
    }
    check_unhold(ms->cs);
}

/* The filter took what was written: the content may flow again. */
static void
on_written(void *arg)
{
    struct mf *f = arg;

    check_hold(f->ms->cs);
    check_milter__flush(f); /* it is alive: its deadline runs from now */
    check_milter__update_busy(f->ms);
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

        rc = milter_proto_macros(mf_proto(f), MILTER_ST_CONNECT, mac, sizeof(mac) / sizeof(mac[0]));
    }
    if (rc < 0)
        return rc;
    return milter_proto_connect(mf_proto(f), name, fam, port, in->client.ip);
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

    mf_count(f, "call");
    f->asked_ns = uv_hrtime();
    f->after_message = false;
    switch (ms->step) {
    case ASK_CONNECT:
        ms->want = 'C';
        f->seen_connect = true;
        return send_connect(f);
    case ASK_HELO: {
        struct milter_macro mac[] = {{"{tls_version}", tls_v}, {"{cipher}", tls_c}};

        ms->want = 'H';
        f->seen_helo = true;
        rc = milter_proto_macros(mf_proto(f), MILTER_ST_HELO, mac, 2);
        return rc < 0 ? rc : milter_proto_helo(mf_proto(f), in->helo);
    }
    case ASK_MAIL: {
        struct milter_macro mac[] = {{"i", in->qid},
                                     {"{mail_addr}", in->sender->mailbox},
                                     {"{tls_version}", tls_v},
                                     {"{cipher}", tls_c}};

        ms->want = 'M';
        f->txn_started = true;
        snprintf(path, sizeof(path), "<%s>", in->sender->mailbox);
        rc = milter_proto_macros(mf_proto(f), MILTER_ST_MAIL, mac, 4);
        return rc < 0 ? rc : milter_proto_mail(mf_proto(f), args, 1);
    }
    case ASK_RCPT: {
        const char *box = ms->replay ? ms->accepted[f->nrcpt_seen].mailbox : ms->rcpt.mailbox;
        const char *dom = ms->replay ? ms->accepted[f->nrcpt_seen].domain_lc : ms->rcpt.domain_lc;
        const struct conf_domain *d = conf_domain_find(in->conf, dom, strlen(dom));
        const char *mailer = d == NULL ? "error" : d->mode == CONF_MODE_LOCAL ? "lmtp" : "smtp";
        struct milter_macro mac[] = {
            {"{rcpt_addr}", box}, {"{rcpt_host}", dom}, {"{rcpt_mailer}", mailer}};

        ms->want = 'R';
        f->nrcpt_seen += ms->replay;
        snprintf(path, sizeof(path), "<%s>", box);
        rc = milter_proto_macros(mf_proto(f), MILTER_ST_RCPT, mac, 3);
        return rc < 0 ? rc : milter_proto_rcpt(mf_proto(f), args, 1);
    }
    case ASK_END: {
        struct milter_macro mac[] = {{"i", in->qid}};

        ms->want = 'E';
        f->eob_sent = true;
        rc = milter_proto_macros(mf_proto(f), MILTER_ST_EOM, mac, 1);
        return rc < 0 ? rc : milter_proto_eob(mf_proto(f));
    }
    case ASK_NONE:
        break;
    }
    return MXD_EINVAL;
}

/* What f is told next for the stage: what it missed first (a filter of a
 * domain's list joins at RCPT: connect, HELO, MAIL, the transaction's
 * earlier recipients), then the stage's own command. */
static enum ask
next_step(struct mstate *ms, struct mf *f, bool *replay)
{
    *replay = false;
    if (!f->seen_connect)
        return ASK_CONNECT;
    if (ms->ask > ASK_HELO && !f->seen_helo && check_info(ms->cs)->helo[0] != '\0')
        return ASK_HELO;
    if (ms->ask > ASK_MAIL && !f->txn_started)
        return ASK_MAIL;
    if (ms->ask >= ASK_RCPT && f->nrcpt_seen < ms->naccepted) {
        *replay = true;
        return ASK_RCPT;
    }
    return ms->ask;
}

/* f is out of the stage: true when it answered it (a sticky refusal, the
 * default action), else *skip says whether it passes without a word. */
static bool
settled(struct mstate *ms, struct mf *f, bool *skip)
{
    bool txn_stage = ms->ask >= ASK_MAIL;

    *skip = false;
    if (f->dead) {
        check_milter__default(f);
        return true;
    }
    if (f->sticky && (f->sticky_conn || txn_stage)) {
        answer(ms, f->sticky_action, f->sticky_code, f->sticky_text);
        return true;
    }
    if (f->conn_done || (txn_stage && f->txn_done && ms->ask != ASK_END)) {
        *skip = true;
    } else if (ms->ask == ASK_END && f->txn_done) {
        if (f->txn_code != 0) {
            answer(ms, f->txn_action, f->txn_code, f->txn_text);
            return true;
        }
        *skip = true;
    }
    return false;
}

/* Asks the filters of ms->list from ms->cur on until one waits or decides. */
static void
run(struct mstate *ms)
{
    struct mf *f;

    while ((f = ms_current(ms)) != NULL) {
        bool skip;
        int rc;

        if (settled(ms, f, &skip))
            return;
        if (skip) {
            ms->cur++;
            continue;
        }
        if (f->conn == NULL && f->def->reuse && !f->retried &&
            (f->conn = milter_conn_reuse(f->def->socket.text, &conn_cbs, f, &f->probe)) != NULL) {
            f->reused = f->negotiated = true;
            f->replied = false;
            mf_count(f, "reuse");
        }
        if (f->conn == NULL) {
            const struct check_info *in = check_info(ms->cs);

            f->conn = milter_conn_open(in->env.loop, &f->def->socket,
                                       milter_proto_new(MILTER_ACT_ALL, MILTER_P_OFFER),
                                       f->def->connect_timeout_ms, &conn_cbs, f);
            return; /* on_input runs this again once negotiated */
        }
        if (!f->negotiated)
            return;
        ms->step = next_step(ms, f, &ms->replay);
        rc = send_stage(f);
        if (rc < 0) {
            check_milter__fail(f, rc == MXD_ETOOBIG ? "command too long" : "cannot send");
            check_milter__default(f);
            return;
        }
        check_milter__flush(f);
        if (rc == MILTER_AWAIT)
            return;
        if (ms->step == ms->ask && !ms->replay)
            ms->cur++;
    }
    if (ms->ask != ASK_NONE)
        answer(ms, CHECK_ACCEPT, 0, "");
}

static void
stage(struct mstate *ms, enum ask ask, const struct conf_milters *list, struct check_ticket t)
{
    ms->ask = ask;
    ms->list = list;
    ms->t = t;
    ms->cur = 0;
    run(ms);
}

/* Two lists with the same filters in the same order. */
static bool
same_list(const struct conf_milters *a, const struct conf_milters *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i] != b->v[i])
            return false;
    return true;
}

/* The list a recipient is asked of: its domain's (or the global one) while
 * the transaction's recipients so far are all of that list, else the
 * global list. */
static const struct conf_milters *
rcpt_list(struct mstate *ms, const struct addr *rcpt)
{
    const struct conf *c = check_info(ms->cs)->conf;
    const struct conf_domain *d = conf_domain_find(c, rcpt->domain_lc, strlen(rcpt->domain_lc));
    const struct conf_milters *dl = d != NULL && d->milters_set ? &d->milters : &c->milters;

    if (ms->txn_list == NULL || same_list(ms->txn_list, dl))
        return dl;
    return &c->milters;
}

/* A recipient passed every filter of ms->list: the list is the
 * transaction's, and it is kept for filters that catch up later. */
static void
rcpt_passed(struct mstate *ms)
{
    ms->txn_list = ms->list;
    if (!ms->per_domain)
        return;
    ms->accepted = xrealloc(ms->accepted, (ms->naccepted + 1) * sizeof(*ms->accepted));
    ms->accepted[ms->naccepted].mailbox = xstrdup(ms->rcpt.mailbox);
    ms->accepted[ms->naccepted].domain_lc = xstrdup(ms->rcpt.domain_lc);
    ms->naccepted++;
    for (size_t i = 0; i < ms->list->n; i++)
        ms->f[ms->list->v[i]->index].nrcpt_seen = ms->naccepted;
}

/* ---- hooks ------------------------------------------------------------- */

/* Before a recipient is known (connect, HELO, MAIL) the global list. */
static const struct conf_milters *
global_list(const struct mstate *ms)
{
    return &check_info(ms->cs)->conf->milters;
}

static void
milter_connect(void *arg, struct check_ticket t)
{
    stage(arg, ASK_CONNECT, global_list(arg), t);
}

static void
milter_helo(void *arg, struct check_ticket t)
{
    stage(arg, ASK_HELO, global_list(arg), t);
}

static void
milter_mail(void *arg, struct check_ticket t)
{
    stage(arg, ASK_MAIL, global_list(arg), t);
}

static void
milter_rcpt(void *arg, struct check_ticket t, const struct addr *rcpt)
{
    struct mstate *ms = arg;

    ms->rcpt = *rcpt;
    stage(ms, ASK_RCPT, rcpt_list(ms, rcpt), t);
}

static void
milter_end(void *arg, struct check_ticket t)
{
    struct mstate *ms = arg;

    check_milter__content_end(ms);
    stage(ms, ASK_END, ms->txn_list != NULL ? ms->txn_list : global_list(ms), t);
    /* the last body chunk went with the first filter's end of message; the
     * others' (asked after it answers) go now */
    check_milter__content_flush(ms);
}

static void
milter_reset(void *arg)
{
    struct mstate *ms = arg;

    for (size_t i = 0; i < ms->n; i++) {
        struct mf *f = &ms->f[i];

        if (f->conn != NULL && f->negotiated && f->txn_started && !f->eob_sent) {
            f->after_message = false;
            if (milter_proto_abort(mf_proto(f)) < 0)
                check_milter__fail(f, "cannot send");
            else
                check_milter__flush(f);
        }
        f->txn_started = f->txn_done = f->eob_sent = f->in_txn = false;
        f->txn_code = 0;
        f->nrcpt_seen = 0;
        f->sticky = f->sticky && f->sticky_conn;
    }
    for (size_t i = 0; i < ms->naccepted; i++) {
        free(ms->accepted[i].mailbox);
        free(ms->accepted[i].domain_lc);
    }
    free(ms->accepted);
    ms->accepted = NULL;
    ms->naccepted = 0;
    ms->txn_list = NULL;
    check_milter__txn_clear(ms);
    check_milter__update_busy(ms);
}

static void *
milter_start(struct check_session *cs)
{
    const struct conf *c = check_info(cs)->conf;
    struct mstate *ms;

    /* with no filters too: the content passes through milter_filter */
    ms = xcalloc(1, sizeof(*ms));
    ms->cs = cs;
    ms->n = c->nmilter_defs;
    ms->f = xcalloc(ms->n, sizeof(*ms->f));
    for (size_t i = 0; i < ms->n; i++) {
        ms->f[i].ms = ms;
        ms->f[i].def = &c->milter_defs[i];
    }
    for (size_t i = 0; i < c->ndomains; i++)
        ms->per_domain = ms->per_domain || c->domains[i].milters_set;
    return ms;
}

/* The session is over: with reuse = on, a filter's connection with no
 * reply awaited is parked for the next session, else closed with QUIT.
 * A transaction it is in needs no ABORT: QUIT_NC ends it (and would drop
 * an ABORT not yet sent anyway). */
static void
park_or_close(struct mf *f)
{
    if (f->conn == NULL)
        return;
    if (f->def->reuse && f->negotiated && !f->dead &&
        milter_conn_park(f->conn, f->def->socket.text, f->after_message))
        return;
    milter_conn_close(f->conn, true);
}

static void
milter_stop(void *arg)
{
    struct mstate *ms = arg;

    for (size_t i = 0; i < ms->n; i++)
        park_or_close(&ms->f[i]);
    for (size_t i = 0; i < ms->naccepted; i++) {
        free(ms->accepted[i].mailbox);
        free(ms->accepted[i].domain_lc);
    }
    free(ms->accepted);
    check_milter__txn_clear(ms);
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
    .data = check_milter__data,
    .filter = check_milter__filter,
    .reset = milter_reset,
};
