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
 * end. At the end, header fields a filter adds or inserts go above our
 * Received: (check_add_fields). What the pipeline and the store cannot do
 * yet (change or delete header fields, replace the body, change
 * recipients or the sender, quarantine) is logged and counted as ignored.
 *
 * A filter that cannot be reached, times out (milter_connect_timeout,
 * milter_command_timeout, milter_content_timeout for the end of message),
 * closes or breaks the protocol is closed and milter_default_action
 * answers for it from then on, for the rest of the connection. Memory is
 * bounded: one header field (64 KiB) and one body chunk per connection,
 * and at most MILTER_OUT_MAX queued per filter (past it the filter has
 * failed for the message). Every decision is logged with the queue id and
 * counted (mxd_milter_events_total{filter,event}). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/check_impl.h"
#include "check/milter_net.h"

#define HDR_MAX 65000u /* a header field handed to a filter: name and value fit MILTER_DATA_MAX */

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
    /* header fields the current filter adds at the end of message: given
     * to the pipeline when it passes the message */
    char *fields;
    size_t fields_len;
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
    ms->fields_len = 0; /* what it added goes with it */
    milter_conn_close(f->conn, false);
    f->conn = NULL;
}

/* The stage's answer; the next stage may be asked inside. */
static void
answer(struct mstate *ms, enum check_action action, int code, const char *text)
{
    struct check_ticket t = ms->t;

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
        ms->fields_len = 0;
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
    if (ms->ask == ASK_END && ms->fields_len > 0) /* the filter passes the message */
        check_add_fields(ms->cs, ms->fields, ms->fields_len);
    ms->fields_len = 0;
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

/* A modification in the reply to end of message. */
static void
modification(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    char field[HDR_MAX + 16];
    size_t n;

    if (ev->permitted &&
        (ev->type == MILTER_EV_ADDHEADER || (ev->type == MILTER_EV_INSHEADER && ev->index == 0))) {
        n = milter_header_format(field, sizeof(field), ev->a, ev->b);
        if (n > 0) {
            /* inserted at the top: before what was added */
            bool top = ev->type == MILTER_EV_INSHEADER;

            ms->fields = xrealloc(ms->fields, ms->fields_len + n);
            if (top)
                memmove(ms->fields + n, ms->fields, ms->fields_len);
            memcpy(ms->fields + (top ? 0 : ms->fields_len), field, n);
            ms->fields_len += n;
            count(f, milter_ev_name(ev->type));
            log_msg(LOG_INFO, qid_of(ms), "milter", "filter=%s %s name=%s", f->ep->text,
                    milter_ev_name(ev->type), ev->a);
            return;
        }
    }
    /* not supported by the pipeline and the store yet (or not negotiated) */
    count(f, "ignored");
    log_msg(LOG_WARN, qid_of(ms), "milter", "filter=%s ignored=%s%s name=%s", f->ep->text,
            milter_ev_name(ev->type), ev->permitted ? "" : " not-negotiated=yes",
            ev->a != NULL ? ev->a : "-");
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

static const struct milter_conn_cbs conn_cbs = {on_connected, on_input, on_failed};

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
    int rc;

    switch (ms->ask) {
    case ASK_CONNECT:
        ms->want = 'C';
        return send_connect(f);
    case ASK_HELO:
        ms->want = 'H';
        return milter_proto_helo(proto(f), in->helo);
    case ASK_MAIL: {
        struct milter_macro mac[] = {{"i", in->qid}, {"{mail_addr}", in->sender->mailbox}};

        ms->want = 'M';
        f->txn_started = true;
        snprintf(path, sizeof(path), "<%s>", in->sender->mailbox);
        rc = milter_proto_macros(proto(f), MILTER_ST_MAIL, mac, 2);
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
 * neither a blank nor the empty line that ends the header. */
static void
header_bytes(struct mstate *ms, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = data[i];

        if (ms->eoh_cr) { /* the empty line */
            ms->eoh_cr = false;
            end_of_header(ms);
            if (ch != '\n')
                body_bytes(ms, data + i, len - i);
            else
                body_bytes(ms, data + i + 1, len - i - 1);
            return;
        }
        if (ms->line_start) {
            ms->line_start = false;
            if (ch == '\r') {
                ms->eoh_cr = true;
                continue;
            }
            if (ch == '\n') {
                end_of_header(ms);
                body_bytes(ms, data + i + 1, len - i - 1);
                return;
            }
            if (ch != ' ' && ch != '\t')
                send_header_field(ms);
        }
        if (ms->hdr_len < HDR_MAX)
            ms->hdr[ms->hdr_len++] = ch;
        if (ch == '\n')
            ms->line_start = true;
    }
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

    check_emit(ms->out, data, len); /* nothing is rewritten on the way */
    if (!ms->content)
        return;
    if (ms->in_body)
        body_bytes(ms, data, len);
    else
        header_bytes(ms, data, len);
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
            if (ms->eoh_cr)
                ms->eoh_cr = false;
            end_of_header(ms);
        }
        send_chunk(ms);
        ms->content = false;
    }
    stage(ms, ASK_END, t);
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
    ms->content = false;
    free(ms->hdr);
    free(ms->chunk);
    free(ms->fields);
    ms->hdr = ms->chunk = ms->fields = NULL;
    ms->fields_len = 0;
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
    free(ms->hdr);
    free(ms->chunk);
    free(ms->fields);
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
