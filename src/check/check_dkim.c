/* check_dkim: DKIM (RFC 6376) and DMARC (RFC 7489) as a check of the
 * pipeline, through dkim.c (libopendkim) and dmarc.c (RFC 7489, our own).
 *
 * The content is hashed as it arrives (an observer: the message as
 * received, on the loop, no I/O). At the end of data, after the header
 * check and SPF, the keys are looked up through the resolver and verified,
 * then DMARC is evaluated with the SPF result and the From: authors from
 * the facts, all asynchronously on the loop, within dkim_timeout: a timer
 * answers with what is left as temperror ("time budget spent") if the
 * lookups have not come back by then. The results go into the facts for
 * the header fields; with dmarc = reject a p=reject failure refuses the
 * message (RFC 7489 10.3: at the end of data, nothing stored). */
#define _DEFAULT_SOURCE /* arc4random_uniform */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "check/check_impl.h"
#include "dns/resolver.h"

struct dkim_state {
    struct check_session *cs;
    struct dkim_verifier *v; /* the message being hashed, or NULL */
};

/* The end-of-data job (key lookups and verification, then DMARC), and
 * the timer that answers for it when the budget runs out first. Freed
 * when both the work has come back and the timer has closed. */
struct end_job {
    uv_timer_t timer;
    struct check_session *cs;
    struct check_ticket t;
    bool answered, worked, timer_closed;
    struct dkim_verifier *v; /* owned by the job */
    bool do_dmarc;
    uv_loop_t *loop;
    struct resolver *r;
    uint64_t deadline_ns;
    struct dmarc_input din;
    struct dkim_result dkim_res;
    struct dmarc_result dmarc_res;
};

_Static_assert(sizeof(((struct dmarc_input *)0)->from_domains) ==
                   sizeof(((struct check_txn_facts *)0)->from),
               "From: author domains: the facts and DMARC's input agree");

static bool
enabled(const struct conf *c)
{
    return c->dkim != CONF_AUTH_OFF || c->dmarc != CONF_AUTH_OFF;
}

static void *
dkim_start(struct check_session *cs)
{
    struct dkim_state *st = xcalloc(1, sizeof(*st));

    st->cs = cs;
    return st;
}

static void
dkim_reset(void *arg)
{
    struct dkim_state *st = arg;

    dkim_verifier_free(st->v);
    st->v = NULL;
}

static void
dkim_stop(void *arg)
{
    dkim_reset(arg);
    free(arg);
}

static void
dkim_data(void *arg, struct check_stream out)
{
    struct dkim_state *st = arg;
    const struct conf *c = check_info(st->cs)->conf;

    (void)out;
    dkim_reset(st);
    if (enabled(c))
        st->v = dkim_verifier_new(c->dkim_max_signatures); /* NULL: temperror */
}

static void
dkim_observe(void *arg, const char *data, size_t len)
{
    struct dkim_state *st = arg;

    dkim_verifier_feed(st->v, data, len);
}

static void
log_results(const struct check_info *in, const struct check_txn_facts *f)
{
    const struct conf *c = in->conf;
    char esc[300], sel[300];

    for (size_t i = 0; c->dkim != CONF_AUTH_OFF && i < f->dkim.nsigs; i++) {
        const struct dkim_sig *g = &f->dkim.sigs[i];

        log_msg(LOG_INFO, in->qid, "auth",
                "dkim result=%s domain=%s selector=%s reason=\"%s\" queries=%u ms=%.1f",
                dkim_res_name(g->res), log_esc(esc, sizeof(esc), g->domain, strlen(g->domain)),
                log_esc(sel, sizeof(sel), g->selector, strlen(g->selector)),
                g->why[0] ? g->why : "-", f->dkim.queries, f->dkim.ms);
    }
    if (c->dkim != CONF_AUTH_OFF && f->dkim.nsigs == 0)
        log_msg(LOG_INFO, in->qid, "auth", "dkim result=none");
    for (size_t i = 0; c->dmarc != CONF_AUTH_OFF && i < f->dmarc.nauthors; i++) {
        const struct dmarc_author *w = &f->dmarc.authors[i];

        log_msg(LOG_INFO, in->qid, "auth", "dmarc result=%s from=%s policy=%s queries=%u",
                dmarc_res_name(w->res), log_esc(esc, sizeof(esc), w->domain, strlen(w->domain)),
                w->policy[0] ? w->policy : "-", f->dmarc.queries);
    }
    if (c->dmarc != CONF_AUTH_OFF && f->dmarc.nauthors == 0)
        log_msg(LOG_INFO, in->qid, "auth", "dmarc result=%s from= policy=- queries=%u",
                dmarc_res_name(f->dmarc.res), f->dmarc.queries);
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

/* The results are in the facts: log, then refuse or go on. */
static void
end_answer(struct end_job *j)
{
    const struct check_info *in = check_info(j->cs);
    const struct check_txn_facts *f = check_txn_facts(j->cs);
    char text[400];

    j->answered = true;
    uv_close((uv_handle_t *)&j->timer, end_closed);
    check_txn_facts(j->cs)->verified = true;
    log_results(in, f);
    /* RFC 7489 6.6.4 and 6.7: the domain asks for reject (p= or sp=,
     * after pct=) and no aligned identifier passed: refused at the end of
     * data (10.3: the SMTP reply, nothing stored). quarantine is tagged
     * only; temperror and permerror are never refused (6.6.2: no policy
     * is known). */
    if (in->conf->dmarc == CONF_AUTH_REJECT && f->dmarc.reject) {
        snprintf(text, sizeof(text), "5.7.1 Rejected by DMARC policy for %.255s", f->dmarc.domain);
        check_answer(j->t, CHECK_REJECT, 550, text);
        return;
    }
    check_pass(j->t);
}

/* The work is over (or was given up): the results into the facts unless
 * the timer answered already, then on. */
static void
end_done(struct end_job *j)
{
    bool answered = j->answered;

    j->worked = true;
    dkim_verifier_free(j->v);
    j->v = NULL;
    if (!answered) {
        struct check_txn_facts *f = check_txn_facts(j->cs);
        const struct addr *a = check_info(j->cs)->sender;

        f->dkim = j->dkim_res;
        f->dmarc = j->dmarc_res;
        for (size_t i = 0; i < f->dkim.nsigs && a != NULL && !a->is_null; i++)
            if (f->dkim.sigs[i].res == DKIM_RES_PASS &&
                dmarc_relaxed_aligned(f->dkim.sigs[i].domain, a->domain_lc))
                f->dkim_rp_aligned = true;
    }
    if (check_unhold(j->cs) || answered) {
        end_free(j); /* the timer answered, or the connection is gone */
        return;
    }
    end_answer(j);
}

static void
on_dmarc(void *arg, struct dmarc_result *out)
{
    (void)out;
    end_done(arg);
}

static void
on_dkim(void *arg, struct dkim_result *out)
{
    struct end_job *j = arg;

    if (!j->do_dmarc || j->answered) {
        end_done(j);
        return;
    }
    if (resolver_timeout_until(j->deadline_ns) == 0) {
        dmarc_result_unchecked(&j->din, "time budget spent", &j->dmarc_res);
        end_done(j);
        return;
    }
    j->din.dkim = out;
    dmarc_check_async(j->loop, j->r, &j->din, j->deadline_ns, &j->dmarc_res, on_dmarc, j);
}

/* The budget is spent and the lookups have not all come back: answer
 * with what dkim_end put in the facts. */
static void
end_timeout(uv_timer_t *t)
{
    struct end_job *j = t->data;
    const struct check_info *in = check_info(j->cs);

    log_msg(LOG_WARN, in->qid, "auth", "verification timed out budget_ms=%llu",
            (unsigned long long)in->conf->dkim_timeout_ms);
    end_answer(j);
}

static void
dkim_end(void *arg, struct check_ticket t)
{
    struct dkim_state *st = arg;
    const struct check_info *in = check_info(st->cs);
    const struct conf *c = in->conf;
    struct check_txn_facts *f = check_txn_facts(st->cs);
    struct end_job *j;

    if (!enabled(c)) {
        check_pass(t);
        return;
    }
    j = xcalloc(1, sizeof(*j));
    j->cs = st->cs;
    j->t = t;
    j->v = st->v;
    st->v = NULL;
    j->do_dmarc = c->dmarc != CONF_AUTH_OFF;
    j->loop = in->env.loop;
    j->r = resolver_get(in->env.loop, c);
    j->deadline_ns = uv_hrtime() + c->dkim_timeout_ms * 1000000;
    snprintf(j->din.ip, sizeof(j->din.ip), "%s", in->client.ip);
    memcpy(j->din.from_domains, f->from, sizeof(j->din.from_domains));
    j->din.nfrom = f->nfrom;
    j->din.from_bad = f->nfrom_fields != 1 || f->nfrom == 0 || f->from_malformed != NULL;
    j->din.spf = f->spf_done ? f->spf.res : SPF_RES_NONE;
    j->din.spf_helo = f->spf.helo_identity;
    j->din.sample = arc4random_uniform(100); /* RFC 7489 6.6.4: pct= sampling */
    if (f->spf_done)
        snprintf(j->din.spf_domain, sizeof(j->din.spf_domain), "%s", f->spf.domain);
    /* The answer if the timer has to give it. */
    dkim_verifier_pending(j->v, &f->dkim);
    dmarc_result_unchecked(&j->din, "time budget spent", &f->dmarc);
    /* Started before the lookups: at the same moment it goes first. */
    if (uv_timer_init(in->env.loop, &j->timer) != 0)
        mxd_panic("check_dkim: uv_timer_init failed");
    j->timer.data = j;
    if (uv_timer_start(&j->timer, end_timeout, c->dkim_timeout_ms, 0) != 0)
        mxd_panic("check_dkim: uv_timer_start failed");
    check_hold(st->cs);
    dkim_verifier_finish_async(j->v, j->loop, j->r, j->deadline_ns, &j->dkim_res, on_dkim, j);
}

const struct check_ops check_dkim = {
    .name = "dkim",
    .start = dkim_start,
    .stop = dkim_stop,
    .end = dkim_end,
    .data = dkim_data,
    .observe = dkim_observe,
    .reset = dkim_reset,
};
