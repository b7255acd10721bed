/* smtp_auth: sender authentication for one SMTP session (glue between
 * smtp_session and the spf and authres modules).
 *
 * Owns the session's struct smtp_auth: the SPF result of the transaction,
 * the RCPT held while SPF is still running, the header filter and the
 * trace fields (Authentication-Results, Received-SPF) for the stored
 * message. Loop thread only; the SPF check itself runs on the threadpool
 * (spf_check_async) and counts in s->pending like a store job, so its
 * completion never finds a freed session. A check whose transaction ended
 * (RSET, new MAIL) is dropped by its generation number.
 *
 * The SPF check starts at MAIL and is awaited at the first RCPT (spf =
 * reject: the answer depends on it) or at the end of data (spf = tag), so
 * it overlaps with the client's pipeline. It does not verify DKIM or DMARC
 * (not built yet: see docs/auth.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authres.h"
#include "log.h"
#include "smtp_session_impl.h"
#include "spf.h"

enum auth_wait { AUTH_WAIT_NONE, AUTH_WAIT_RCPT, AUTH_WAIT_END };

struct smtp_auth {
    unsigned gen; /* transaction number, for stale SPF completions */
    bool spf_running, spf_done;
    struct spf_result spf;
    enum auth_wait waiting;
    struct addr rcpt; /* the RCPT waiting for SPF */
    struct authres_filter filter;
    char *hdr; /* trace fields for the stored message (owned) */
    size_t hdr_len;
};

struct spf_wait {
    struct smtp_session *s;
    unsigned gen;
    struct spf_result res;
};

static const struct conf *
auth_conf(const struct smtp_session *s)
{
    return s->srv->conf;
}

void
smtp_auth_free(struct smtp_session *s)
{
    if (s->auth != NULL)
        free(s->auth->hdr);
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
    const struct smtp_txn *t = smtp_proto_txn(s->proto);
    const char *id = r->helo_identity ? smtp_proto_helo(s->proto) : t->sender.mailbox;

    log_msg(LOG_INFO, s->qid, "auth",
            "spf result=%s identity=%s id=<%s> client=%s queries=%u voids=%u ms=%.1f",
            spf_res_name(r->res), r->helo_identity ? "helo" : "mailfrom",
            log_esc(from, sizeof(from), id, strlen(id)), s->ip, r->queries, r->voids, r->ms);
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

static void auth_finish(struct smtp_session *s);

static void
on_spf(void *arg, struct spf_result *res)
{
    struct spf_wait *w = arg;
    struct smtp_session *s = w->s;
    struct smtp_auth *a = s->auth;
    enum auth_wait waiting;

    if (smtp_session__release(s) || a == NULL || w->gen != a->gen) {
        free(w);
        return;
    }
    a->spf = *res;
    a->spf_running = false;
    a->spf_done = true;
    free(w);
    log_spf(s, &a->spf);
    waiting = a->waiting;
    a->waiting = AUTH_WAIT_NONE;
    if (waiting == AUTH_WAIT_RCPT) {
        if (!spf_refuse(s))
            smtp_session__rcpt(s, &a->rcpt);
        smtp_session__pump(s);
    } else if (waiting == AUTH_WAIT_END) {
        auth_finish(s);
        smtp_session__pump(s);
    }
}

void
smtp_auth_mail(struct smtp_session *s, const struct addr *sender)
{
    const struct conf *c = auth_conf(s);
    struct smtp_auth *a;
    struct spf_wait *w;
    struct spf_query q;

    if (c->spf == CONF_AUTH_OFF && c->dkim == CONF_AUTH_OFF && c->dmarc == CONF_AUTH_OFF)
        return;
    a = auth_get(s);
    a->gen++;
    a->spf_running = a->spf_done = false;
    a->waiting = AUTH_WAIT_NONE;
    free(a->hdr);
    a->hdr = NULL;
    if (c->spf == CONF_AUTH_OFF)
        return;
    memset(&q, 0, sizeof(q));
    snprintf(q.ip, sizeof(q.ip), "%s", s->ip);
    snprintf(q.helo, sizeof(q.helo), "%s", smtp_proto_helo(s->proto));
    snprintf(q.sender, sizeof(q.sender), "%s", sender->mailbox);
    snprintf(q.receiver, sizeof(q.receiver), "%s", c->hostname);
    w = xcalloc(1, sizeof(*w));
    w->s = s;
    w->gen = a->gen;
    a->spf_running = true;
    s->pending++;
    spf_check_async(s->srv->loop, c, &q, &w->res, on_spf, w);
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
    if (s->auth != NULL)
        authres_filter_init(&s->auth->filter, auth_conf(s)->hostname, filter_emit, s);
}

void
smtp_auth_body(struct smtp_session *s, const char *data, size_t len)
{
    if (s->auth == NULL) {
        smtp_session__body_append(s, data, len);
        return;
    }
    authres_filter_feed(&s->auth->filter, data, len);
}

/* Authentication-Results and Received-SPF for the stored message. */
static void
auth_headers(struct smtp_session *s)
{
    struct smtp_auth *a = s->auth;
    const struct conf *c = auth_conf(s);
    const struct smtp_txn *t = smtp_proto_txn(s->proto);
    const char *helo = smtp_proto_helo(s->proto);
    struct authres ar;
    char rspf[2048];
    size_t arlen, rlen = 0;
    const char *arhdr;

    authres_init(&ar, c->hostname);
    if (a->spf_done) {
        struct authres_prop p = {a->spf.helo_identity ? "smtp.helo" : "smtp.mailfrom",
                                 a->spf.helo_identity ? helo : t->sender.mailbox};
        char from[ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 16];

        authres_add(&ar, "spf", spf_res_name(a->spf.res), NULL, &p, 1);
        if (a->spf.helo_identity)
            snprintf(from, sizeof(from), "postmaster@%s", helo);
        else
            snprintf(from, sizeof(from), "%s", t->sender.mailbox);
        rlen = authres_received_spf(rspf, sizeof(rspf), spf_res_name(a->spf.res), a->spf.comment,
                                    s->ip, from, helo, c->hostname,
                                    a->spf.helo_identity ? "helo" : "mailfrom");
    }
    arhdr = authres_finish(&ar, &arlen);
    a->hdr = xmalloc(arlen + rlen + 1);
    memcpy(a->hdr, arhdr, arlen);
    memcpy(a->hdr + arlen, rspf, rlen);
    a->hdr_len = arlen + rlen;
    a->hdr[a->hdr_len] = '\0';
    authres_free(&ar);
}

static void
auth_finish(struct smtp_session *s)
{
    auth_headers(s);
    smtp_session__body_commit(s);
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
    if (a->spf_running) {
        a->waiting = AUTH_WAIT_END; /* on_spf finishes */
        return;
    }
    auth_finish(s);
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
