/* smtp_auth: sender authentication for one SMTP session (glue between
 * smtp_session and the spf and authres modules).
 *
 * Owns the session's struct smtp_auth: the SPF result of the transaction,
 * the RCPT held while SPF is still running, the header filter and the
 * trace fields (Authentication-Results, Received-SPF) for the stored
 * message. Loop thread only; the SPF check itself runs on a lookup thread
 * (spf_check_async) and counts in s->pending like a store job, so its
 * completion never finds a freed session.
 *
 * The SPF check starts at MAIL and is awaited at the first RCPT (spf =
 * reject: the answer depends on it) or at the end of data (spf = tag), so
 * it overlaps with the client's pipeline. A session runs one check at a
 * time (issue 14): a new MAIL for the identity of the check in flight
 * takes it over, one for another identity waits for it to return (a
 * blocking libspf2 call cannot be cancelled), and a result other than
 * temperror serves later transactions with the same identity. DKIM is
 * hashed as the content arrives (on the loop: no I/O); at the end of data
 * one lookup job looks the keys up, verifies, and evaluates DMARC, within
 * dkim_timeout: a timer answers with what is left as temperror if the job
 * has not. Only then is the message refused (dmarc = reject, p=reject) or
 * committed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/authres.h"
#include "check/dkim.h"
#include "check/dmarc.h"
#include "check/spf.h"
#include "dns/lookup.h"
#include "smtp/smtp_session_impl.h"

enum auth_wait { AUTH_WAIT_NONE, AUTH_WAIT_RCPT, AUTH_WAIT_END };

/* The end-of-data job may take dkim_timeout and this much more before the
 * timer answers for it (the resolver's timeouts are whole seconds). */
#define END_GRACE_MS 1000

struct spf_wait;

struct smtp_auth {
    struct spf_query spf_q;   /* the identity the transaction needs */
    bool spf_running;         /* the transaction waits for its SPF result */
    bool spf_done;            /* spf holds the result for spf_q */
    struct spf_wait *spf_job; /* the session's one check in flight, or NULL */
    struct spf_result spf;
    enum auth_wait waiting;
    struct addr rcpt; /* the RCPT waiting for SPF */
    struct authres_filter filter;
    struct dkim_verifier *dkim; /* DKIM or DMARC on: the message being hashed */
    bool end_done;              /* the end-of-data job has answered */
    /* the From: authors' domains (RFC 7489 6.6.1), and why the field is
     * malformed (several From:, too long, too many authors) or NULL */
    char end_from[DMARC_AUTHORS_MAX][AUTHRES_DOMAIN_MAX];
    size_t nend_from;
    const char *from_malformed;
    struct dkim_result dkim_res;
    struct dmarc_result dmarc_res;
    char *hdr; /* trace fields for the stored message (owned) */
    size_t hdr_len;
};

/* The end-of-data job: DKIM key lookups and DMARC, on a lookup thread,
 * and the timer that answers for it when it overruns. Freed when both the
 * work has come back and the timer has closed. */
struct end_job {
    struct lookup_job work;
    uv_timer_t timer;
    struct smtp_session *s; /* NULL once the session has its answer */
    bool worked, timer_closed;
    struct dkim_verifier *dkim; /* owned by the job */
    bool do_dmarc;
    struct dns_servers servers;
    struct dmarc_input din;
    struct dkim_result dkim_res;
    struct dmarc_result dmarc_res;
};

struct spf_wait {
    struct smtp_session *s;
    struct spf_query q;
    struct spf_result res;
};

static const struct conf *
auth_conf(const struct smtp_session *s)
{
    return s->conf; /* the config the session started with (reload) */
}

void
smtp_auth_free(struct smtp_session *s)
{
    if (s->auth != NULL) {
        free(s->auth->hdr);
        dkim_verifier_free(s->auth->dkim);
        authres_filter_free(&s->auth->filter);
    }
    free(s->auth);
    s->auth = NULL;
}

static struct smtp_auth *
auth_get(struct smtp_session *s)
{
    if (s->auth == NULL)
        s->auth = xcalloc(1, sizeof(*s->auth));
    return s->auth;
}

static void
log_spf(struct smtp_session *s, const struct spf_result *r)
{
    char from[600];
    const struct spf_query *q = &s->auth->spf_q;
    const char *id = r->helo_identity ? q->helo : q->sender;

    log_msg(LOG_INFO, s->qid, "auth",
            "spf result=%s identity=%s id=%s client=%s queries=%u voids=%u ms=%.1f",
            spf_res_name(r->res), r->helo_identity ? "helo" : "mailfrom",
            log_addr(from, sizeof(from), id), s->ip, r->queries, r->voids, r->ms);
}

/* spf = reject: 550 for fail, 451 for temperror (RFC 7372 3.2, 3.3);
 * true when the RCPT was answered. */
static bool
spf_refuse(struct smtp_session *s)
{
    const struct spf_result *r = &s->auth->spf;
    char text[400];

    if (auth_conf(s)->spf != CONF_AUTH_REJECT)
        return false;
    if (r->res == SPF_RES_FAIL) {
        snprintf(text, sizeof(text), "5.7.23 SPF validation failed: %.300s",
                 r->explanation[0] ? r->explanation : r->comment);
        smtp_proto_answer(s->proto, 550, text);
        return true;
    }
    if (r->res == SPF_RES_TEMPERROR) {
        smtp_proto_answer(s->proto, 451, "4.7.24 SPF validation error (DNS), try again later");
        return true;
    }
    return false;
}

static void auth_end(struct smtp_session *s);
static void spf_start(struct smtp_session *s);

static bool
spf_same(const struct spf_query *x, const struct spf_query *y)
{
    return strcmp(x->sender, y->sender) == 0 && strcmp(x->helo, y->helo) == 0;
}

/* The transaction has its SPF result: go on with what waited for it. */
static void
spf_apply(struct smtp_session *s)
{
    struct smtp_auth *a = s->auth;
    enum auth_wait waiting = a->waiting;

    a->spf_running = false;
    a->spf_done = true;
    log_spf(s, &a->spf);
    a->waiting = AUTH_WAIT_NONE;
    if (waiting == AUTH_WAIT_RCPT) {
        if (!spf_refuse(s))
            smtp_session__rcpt(s, &a->rcpt);
        smtp_session__pump(s);
    } else if (waiting == AUTH_WAIT_END) {
        auth_end(s);
        smtp_session__pump(s);
    }
}

static void
on_spf(void *arg, struct spf_result *res)
{
    struct spf_wait *w = arg;
    struct smtp_session *s = w->s;
    struct smtp_auth *a = s->auth;

    if (a != NULL)
        a->spf_job = NULL;
    if (smtp_session__release(s) || a == NULL || !a->spf_running) {
        free(w);
        return;
    }
    if (!spf_same(&w->q, &a->spf_q)) {
        free(w); /* superseded: now the identity the transaction needs */
        spf_start(s);
        return;
    }
    metrics_observe(METRICS_H_SPF_SECONDS, res->ms / 1000.0);
    a->spf = *res;
    free(w);
    spf_apply(s);
}

/* Starts the check for a->spf_q; none may be in flight. */
static void
spf_start(struct smtp_session *s)
{
    struct smtp_auth *a = s->auth;
    struct spf_wait *w = xcalloc(1, sizeof(*w));

    w->s = s;
    w->q = a->spf_q;
    a->spf_job = w;
    s->pending++;
    spf_check_async(s->srv->loop, auth_conf(s), &w->q, &w->res, on_spf, w);
}

void
smtp_auth_mail(struct smtp_session *s, const struct addr *sender)
{
    const struct conf *c = auth_conf(s);
    struct smtp_auth *a;
    struct spf_query q;

    if (c->spf == CONF_AUTH_OFF && c->dkim == CONF_AUTH_OFF && c->dmarc == CONF_AUTH_OFF)
        return;
    a = auth_get(s);
    a->waiting = AUTH_WAIT_NONE;
    a->end_done = false;
    free(a->hdr);
    a->hdr = NULL;
    dkim_verifier_free(a->dkim);
    a->dkim = NULL;
    if (c->spf == CONF_AUTH_OFF)
        return;
    memset(&q, 0, sizeof(q));
    snprintf(q.ip, sizeof(q.ip), "%s", s->ip);
    snprintf(q.helo, sizeof(q.helo), "%s", smtp_proto_helo(s->proto));
    snprintf(q.sender, sizeof(q.sender), "%s", sender->mailbox);
    snprintf(q.receiver, sizeof(q.receiver), "%s", c->hostname);
    if (a->spf_done && a->spf.res != SPF_RES_TEMPERROR && spf_same(&q, &a->spf_q)) {
        struct spf_result r = a->spf; /* the same identity: the same answer */

        r.queries = r.voids = 0;
        r.ms = 0;
        log_spf(s, &r);
        return;
    }
    a->spf_q = q;
    a->spf_done = false;
    a->spf_running = true;
    if (a->spf_job == NULL)
        spf_start(s);
    /* else on_spf takes the check in flight, or starts ours after it */
}

bool
smtp_auth_rcpt_hold(struct smtp_session *s, const struct addr *rcpt)
{
    struct smtp_auth *a = s->auth;

    if (a == NULL || auth_conf(s)->spf != CONF_AUTH_REJECT)
        return false;
    if (a->spf_running) {
        a->rcpt = *rcpt;
        a->waiting = AUTH_WAIT_RCPT;
        return true;
    }
    return a->spf_done && spf_refuse(s);
}

static void
filter_emit(void *arg, const char *data, size_t len)
{
    smtp_session__body_append(arg, data, len);
}

void
smtp_auth_body_begin(struct smtp_session *s)
{
    const struct conf *c = auth_conf(s);
    struct smtp_auth *a = auth_get(s); /* the filter runs whatever [auth] says */

    authres_filter_free(&a->filter);
    authres_filter_init(&a->filter, c->hostname, filter_emit, s);
    dkim_verifier_free(a->dkim);
    a->dkim = NULL;
    if (c->dkim != CONF_AUTH_OFF || c->dmarc != CONF_AUTH_OFF)
        a->dkim = dkim_verifier_new(c->dkim_max_signatures); /* NULL: temperror */
}

void
smtp_auth_body(struct smtp_session *s, const char *data, size_t len)
{
    if (s->auth == NULL) {
        smtp_session__body_append(s, data, len);
        return;
    }
    dkim_verifier_feed(s->auth->dkim, data, len); /* the message as received */
    authres_filter_feed(&s->auth->filter, data, len);
}

/* spf=... smtp.mailfrom=..., and the Received-SPF field into rspf. */
static size_t
add_spf(struct smtp_session *s, struct authres *ar, char *rspf, size_t size)
{
    const struct spf_result *r = &s->auth->spf;
    const char *helo = smtp_proto_helo(s->proto);
    const char *sender = smtp_proto_txn(s->proto)->sender.mailbox;
    struct authres_prop p = {r->helo_identity ? "smtp.helo" : "smtp.mailfrom",
                             r->helo_identity ? helo : sender};
    char from[ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 16];

    authres_add(ar, "spf", spf_res_name(r->res), NULL, &p, 1);
    if (r->helo_identity)
        snprintf(from, sizeof(from), "postmaster@%s", helo);
    else
        snprintf(from, sizeof(from), "%s", sender);
    return authres_received_spf(rspf, size, spf_res_name(r->res), r->comment, s->ip, from, helo,
                                auth_conf(s)->hostname, r->helo_identity ? "helo" : "mailfrom");
}

/* dkim=... per signature (RFC 8601 2.7.1, RFC 6008 header.b). */
static void
add_dkim(const struct dkim_result *d, struct authres *ar)
{
    if (d->nsigs == 0)
        authres_add(ar, "dkim", "none", NULL, NULL, 0);
    for (size_t i = 0; i < d->nsigs; i++) {
        const struct dkim_sig *g = &d->sigs[i];
        struct authres_prop p[] = {{"header.d", g->domain[0] ? g->domain : NULL},
                                   {"header.s", g->selector[0] ? g->selector : NULL},
                                   {"header.b", g->b[0] ? g->b : NULL}};

        authres_add(ar, "dkim", dkim_res_name(g->res), g->why[0] ? g->why : NULL, p, 3);
    }
}

/* dmarc=... per author domain (RFC 7489 6.6.1), or one for the message. */
static void
add_dmarc(const struct smtp_auth *a, struct authres *ar)
{
    const struct dmarc_result *m = &a->dmarc_res;
    size_t n = m->nauthors > 0 ? m->nauthors : 1;

    for (size_t i = 0; i < n; i++) {
        const struct dmarc_author *w = m->nauthors > 0 ? &m->authors[i] : NULL;
        struct authres_prop p = {"header.from", w != NULL ? w->domain : NULL};
        const char *policy = w != NULL ? w->policy : m->policy, *why = w != NULL ? w->why : m->why;
        char comment[160] = "";

        if (policy[0] != '\0')
            snprintf(comment, sizeof(comment), "p=%s", policy);
        else if (why[0] != '\0')
            snprintf(comment, sizeof(comment), "%s", why);
        authres_add(ar, "dmarc", dmarc_res_name(w != NULL ? w->res : m->res), comment, &p, 1);
    }
}

/* Authentication-Results and Received-SPF for the stored message. */
static void
auth_headers(struct smtp_session *s)
{
    struct smtp_auth *a = s->auth;
    const struct conf *c = auth_conf(s);
    struct authres ar;
    char rspf[2048];
    size_t arlen, rlen = 0;
    const char *arhdr;

    free(a->hdr);
    a->hdr = NULL;
    a->hdr_len = 0;
    if (c->spf == CONF_AUTH_OFF && c->dkim == CONF_AUTH_OFF && c->dmarc == CONF_AUTH_OFF)
        return; /* nothing checked, nothing to say (ours were still removed) */
    authres_init(&ar, c->hostname);
    if (a->spf_done)
        rlen = add_spf(s, &ar, rspf, sizeof(rspf));
    if (a->end_done && c->dkim != CONF_AUTH_OFF)
        add_dkim(&a->dkim_res, &ar);
    if (a->end_done && c->dmarc != CONF_AUTH_OFF)
        add_dmarc(a, &ar);
    arhdr = authres_finish(&ar, &arlen);
    a->hdr = xmalloc(arlen + rlen + 1);
    memcpy(a->hdr, arhdr, arlen);
    memcpy(a->hdr + arlen, rspf, rlen);
    a->hdr_len = arlen + rlen;
    a->hdr[a->hdr_len] = '\0';
    authres_free(&ar);
}

static void
log_end(struct smtp_session *s)
{
    const struct smtp_auth *a = s->auth;
    const struct conf *c = auth_conf(s);
    char esc[300], sel[300];

    for (size_t i = 0; c->dkim != CONF_AUTH_OFF && i < a->dkim_res.nsigs; i++) {
        const struct dkim_sig *g = &a->dkim_res.sigs[i];

        log_msg(LOG_INFO, s->qid, "auth",
                "dkim result=%s domain=%s selector=%s reason=\"%s\" queries=%u ms=%.1f",
                dkim_res_name(g->res), log_esc(esc, sizeof(esc), g->domain, strlen(g->domain)),
                log_esc(sel, sizeof(sel), g->selector, strlen(g->selector)),
                g->why[0] ? g->why : "-", a->dkim_res.queries, a->dkim_res.ms);
    }
    if (c->dkim != CONF_AUTH_OFF && a->dkim_res.nsigs == 0)
        log_msg(LOG_INFO, s->qid, "auth", "dkim result=none");
    for (size_t i = 0; c->dmarc != CONF_AUTH_OFF && i < a->dmarc_res.nauthors; i++) {
        const struct dmarc_author *w = &a->dmarc_res.authors[i];

        log_msg(LOG_INFO, s->qid, "auth", "dmarc result=%s from=%s policy=%s queries=%u",
                dmarc_res_name(w->res), log_esc(esc, sizeof(esc), w->domain, strlen(w->domain)),
                w->policy[0] ? w->policy : "-", a->dmarc_res.queries);
    }
    if (c->dmarc != CONF_AUTH_OFF && a->dmarc_res.nauthors == 0)
        log_msg(LOG_INFO, s->qid, "auth", "dmarc result=%s from= policy=- queries=%u",
                dmarc_res_name(a->dmarc_res.res), a->dmarc_res.queries);
}

static void
auth_finish(struct smtp_session *s)
{
    struct smtp_auth *a = s->auth;

    if (a->end_done && auth_conf(s)->dmarc == CONF_AUTH_REJECT && a->dmarc_res.reject) {
        char text[400];

        /* RFC 7489 10.3: refuse at the end of data, nothing is stored */
        snprintf(text, sizeof(text), "5.7.1 Rejected by DMARC policy for %.255s",
                 a->dmarc_res.domain);
        smtp_session__body_drop(s);
        smtp_proto_answer(s->proto, 550, text);
        return;
    }
    auth_headers(s);
    smtp_session__body_commit(s);
}

static void
end_work(struct lookup_job *w)
{
    struct end_job *j = w->data;

    dkim_verifier_finish(j->dkim, &j->servers, &j->dkim_res); /* NULL: temperror */
    if (!j->do_dmarc)
        return;
    if (uv_hrtime() >= j->servers.deadline_ns) {
        dmarc_result_unchecked(&j->din, "time budget spent", &j->dmarc_res);
        return;
    }
    j->din.dkim = &j->dkim_res;
    dmarc_check(&j->servers, &j->din, &j->dmarc_res);
}

static void
end_free(struct end_job *j)
{
    if (j->worked && j->timer_closed)
        free(j);
}

static void
end_closed(uv_handle_t *h)
{
    struct end_job *j = h->data;

    j->timer_closed = true;
    end_free(j);
}

/* The session's end-of-data results are in s->auth: log, then refuse or
 * commit. */
static void
end_answer(struct end_job *j)
{
    struct smtp_session *s = j->s;

    j->s = NULL;
    uv_close((uv_handle_t *)&j->timer, end_closed);
    if (smtp_session__release(s) || s->auth == NULL)
        return;
    s->auth->end_done = true;
    log_end(s);
    auth_finish(s);
    smtp_session__pump(s);
}

static void
end_done(struct lookup_job *w)
{
    struct end_job *j = w->data;
    struct smtp_session *s = j->s;

    j->worked = true;
    dkim_verifier_free(j->dkim);
    j->dkim = NULL;
    if (s == NULL) { /* the timer answered */
        end_free(j);
        return;
    }
    if (s->auth != NULL) {
        s->auth->dkim_res = j->dkim_res;
        s->auth->dmarc_res = j->dmarc_res;
    }
    end_answer(j);
}

/* The budget is spent and the job has not come back (no thread was free,
 * or a lookup overran): answer with what auth_end prepared. */
static void
end_timeout(uv_timer_t *t)
{
    struct end_job *j = t->data;

    log_msg(LOG_WARN, j->s->qid, "auth", "verification timed out budget_ms=%llu",
            (unsigned long long)auth_conf(j->s)->dkim_timeout_ms);
    end_answer(j);
}

/* SPF is known: hand DKIM and DMARC to a lookup thread, or finish now. */
static void
auth_end(struct smtp_session *s)
{
    struct smtp_auth *a = s->auth;
    const struct conf *c = auth_conf(s);
    struct end_job *j;

    if (c->dkim == CONF_AUTH_OFF && c->dmarc == CONF_AUTH_OFF) {
        auth_finish(s);
        return;
    }
    j = xcalloc(1, sizeof(*j));
    j->s = s;
    j->dkim = a->dkim;
    a->dkim = NULL;
    j->do_dmarc = c->dmarc != CONF_AUTH_OFF;
    dns_servers_from_conf(c, &j->servers);
    j->servers.deadline_ns = uv_hrtime() + c->dkim_timeout_ms * 1000000;
    snprintf(j->din.ip, sizeof(j->din.ip), "%s", s->ip);
    memcpy(j->din.from_domains, a->end_from, sizeof(j->din.from_domains));
    j->din.nfrom = a->nend_from;
    j->din.from_bad = a->filter.nfrom != 1 || a->nend_from == 0 || a->from_malformed != NULL;
    j->din.spf = a->spf_done ? a->spf.res : SPF_RES_NONE;
    j->din.spf_helo = a->spf.helo_identity;
    if (a->spf_done)
        snprintf(j->din.spf_domain, sizeof(j->din.spf_domain), "%s", a->spf.domain);
    /* The answer if the timer has to give it. */
    dkim_verifier_pending(j->dkim, &a->dkim_res);
    dmarc_result_unchecked(&j->din, "time budget spent", &a->dmarc_res);
    j->work.data = j;
    if (uv_timer_init(s->srv->loop, &j->timer) != 0)
        mxd_panic("smtp_auth: uv_timer_init failed");
    j->timer.data = j;
    if (uv_timer_start(&j->timer, end_timeout, c->dkim_timeout_ms + END_GRACE_MS, 0) != 0)
        mxd_panic("smtp_auth: uv_timer_start failed");
    s->pending++;
    lookup_queue(s->srv->loop, &j->work, end_work, end_done);
}

/* The From: authors for DMARC; a malformed field is noted (RFC 5322 3.6:
 * exactly one From:; parsed whole or not at all). */
static void
note_from(struct smtp_auth *a)
{
    const struct authres_filter *f = &a->filter;
    int n = 0;

    a->from_malformed = NULL;
    if (f->nfrom > 1)
        a->from_malformed = "several From: fields";
    else if (f->from_overlong)
        a->from_malformed = "From: field too long";
    else if (f->from != NULL &&
             (n = authres_from_domains(f->from, a->end_from, DMARC_AUTHORS_MAX)) < 0)
        a->from_malformed = "too many authors in From:";
    a->nend_from = n > 0 ? (size_t)n : 0;
}

/* Refusals decided by the header alone, before any check is awaited: too
 * many hops (RFC 5321 6.3), and with dmarc = reject a From: field whose
 * shape would dodge DMARC. True when the message was refused. */
static bool
body_refused(struct smtp_session *s)
{
    struct smtp_auth *a = s->auth;
    const struct conf *c = auth_conf(s);
    char text[200];

    note_from(a);
    if (a->filter.nreceived > c->max_hops) {
        snprintf(text, sizeof(text), "5.4.6 Too many hops (%u Received: fields, limit %u)",
                 a->filter.nreceived, c->max_hops);
        smtp_session__body_drop(s);
        smtp_proto_answer(s->proto, 554, text);
        return true;
    }
    if (a->from_malformed != NULL && c->dmarc == CONF_AUTH_REJECT) {
        log_msg(LOG_INFO, s->qid, "auth", "dmarc result=permerror reason=\"%s\"",
                a->from_malformed);
        snprintf(text, sizeof(text), "5.6.0 Malformed message: %s (RFC 5322 3.6)",
                 a->from_malformed);
        smtp_session__body_drop(s);
        smtp_proto_answer(s->proto, 550, text);
        return true;
    }
    return false;
}

void
smtp_auth_body_end(struct smtp_session *s)
{
    struct smtp_auth *a = s->auth;

    if (a == NULL) {
        smtp_session__body_commit(s);
        return;
    }
    authres_filter_end(&a->filter);
    if (a->filter.removed > 0)
        log_msg(LOG_INFO, s->qid, "auth", "removed authentication-results count=%u",
                a->filter.removed);
    if (body_refused(s))
        return;
    if (a->spf_running) {
        a->waiting = AUTH_WAIT_END; /* on_spf goes on */
        return;
    }
    auth_end(s);
}

const char *
smtp_auth_header(struct smtp_session *s, size_t *len)
{
    if (s->auth == NULL || s->auth->hdr == NULL) {
        *len = 0;
        return "";
    }
    *len = s->auth->hdr_len;
    return s->auth->hdr;
}

unsigned
smtp_auth_hops(const struct smtp_session *s)
{
    return (s->auth != NULL ? s->auth->filter.nreceived : 0) + 1;
}
