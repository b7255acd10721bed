/* check_spf: SPF (RFC 7208) as a check of the pipeline, with libspf2
 * through spf.c (on the loop, its DNS answers from the resolver).
 *
 * The check starts at MAIL and is awaited at the first RCPT (spf =
 * reject: the answer depends on it; or a recipient that is greylisted:
 * its triplet is keyed by the domain SPF passed for) or at the end of
 * data (spf = tag), so it overlaps with the client's pipeline. A
 * connection runs one check at a time (issue 14): a new MAIL for the
 * identity of the check in flight takes it over, one for another identity
 * waits for it to return (a check in flight is not cancelled), and a
 * result other than temperror serves later transactions with the same
 * identity. The result goes into the transaction's facts for DMARC,
 * greylisting and the header fields. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/check_impl.h"
#include "check/greylist.h"

/* RCPT waits to judge (spf = reject), or for the facts (greylisting). */
enum spf_wait_for { WAIT_NONE, WAIT_RCPT, WAIT_RCPT_FACTS, WAIT_END };

struct spf_job;

/* The identity a transaction needs and its last result (2.4 KiB: apart,
 * so that connections without MAIL do not carry it). */
struct spf_ident {
    struct spf_query q;
    struct spf_result res;
};

struct spf_state {
    struct check_session *cs;
    struct spf_ident *id;   /* NULL until the first MAIL with spf on */
    bool running;           /* the transaction waits for its result */
    bool done;              /* id->res holds the result for id->q */
    struct spf_job *job;    /* the one check in flight, or NULL */
    enum spf_wait_for wait; /* a stage waits for the result */
    struct check_ticket t;  /* ... and answers with this */
};

struct spf_job {
    struct spf_state *st;
    struct spf_query q;
    struct spf_result res;
};

static void *
spf_start_state(struct check_session *cs)
{
    struct spf_state *st = xcalloc(1, sizeof(*st));

    st->cs = cs;
    return st;
}

static void
spf_stop(void *arg)
{
    struct spf_state *st = arg;

    free(st->id);
    free(st);
}

static const struct conf *
conf_of(const struct spf_state *st)
{
    return check_info(st->cs)->conf;
}

static void
log_spf(const struct spf_state *st, const struct spf_result *r)
{
    const struct check_info *in = check_info(st->cs);
    const char *id = r->helo_identity ? st->id->q.helo : st->id->q.sender;
    char from[600];

    log_msg(LOG_INFO, in->qid, "auth",
            "spf result=%s identity=%s id=%s client=%s queries=%u voids=%u ms=%.1f",
            spf_res_name(r->res), r->helo_identity ? "helo" : "mailfrom",
            log_addr(from, sizeof(from), id), in->client.ip, r->queries, r->voids, r->ms);
}

/* spf = reject: 550 for fail (RFC 7208 8.4: the domain says the client
 * may not send for it, "reject" is the suggested action), 451 for
 * temperror (8.6: a transient DNS error, "try again later"); enhanced codes
 * from RFC 7372 3.2 and 3.3. Nothing else is refused: none, neutral (8.1,
 * 8.2), softfail (8.5: "SHOULD NOT reject ... on this result alone") and
 * permerror (8.7: the record is broken; local policy, mxd passes) only tag
 * the message. A permerror from a record with a syntax error
 * (spf_record.c) is the RFC's (4.6), not mxd's. */
static void
rcpt_answer(struct spf_state *st, struct check_ticket t)
{
    const struct spf_result *r = &st->id->res;
    char text[400];

    if (r->res == SPF_RES_FAIL) {
        snprintf(text, sizeof(text), "5.7.23 SPF validation failed: %.300s",
                 r->explanation[0] ? r->explanation : r->comment);
        check_answer(t, CHECK_REJECT, 550, text);
    } else if (r->res == SPF_RES_TEMPERROR) {
        check_answer(t, CHECK_TEMPFAIL, 451, "4.7.24 SPF validation error (DNS), try again later");
    } else {
        check_pass(t);
    }
}

static bool
same_identity(const struct spf_query *x, const struct spf_query *y)
{
    return strcmp(x->sender, y->sender) == 0 && strcmp(x->helo, y->helo) == 0;
}

/* The transaction has its result: into the facts, and on with what
 * waited for it. */
static void
spf_known(struct spf_state *st)
{
    enum spf_wait_for wait = st->wait;
    struct check_txn_facts *f = check_txn_facts(st->cs);

    st->running = false;
    st->done = true;
    f->spf_done = true;
    f->spf = st->id->res;
    log_spf(st, &st->id->res);
    st->wait = WAIT_NONE;
    if (wait == WAIT_RCPT)
        rcpt_answer(st, st->t);
    else if (wait == WAIT_END || wait == WAIT_RCPT_FACTS)
        check_pass(st->t);
}

static void job_start(struct spf_state *st);

static void
on_spf(void *arg, struct spf_result *res)
{
    struct spf_job *j = arg;
    struct spf_state *st = j->st;

    st->job = NULL;
    if (check_unhold(st->cs) || !st->running) {
        free(j);
        return;
    }
    if (!same_identity(&j->q, &st->id->q)) {
        free(j); /* superseded: now the identity the transaction needs */
        job_start(st);
        return;
    }
    metrics_observe(METRICS_H_SPF_SECONDS, res->ms / 1000.0);
    st->id->res = *res;
    free(j);
    spf_known(st);
}

/* Starts the check for st->id->q; none may be in flight. */
static void
job_start(struct spf_state *st)
{
    struct spf_job *j = xcalloc(1, sizeof(*j));
    const struct check_info *in = check_info(st->cs);

    j->st = st;
    j->q = st->id->q;
    st->job = j;
    check_hold(st->cs);
    spf_check_async(in->env.loop, in->conf, &j->q, &j->res, on_spf, j);
}

static void
spf_mail(void *arg, struct check_ticket t)
{
    struct spf_state *st = arg;
    const struct check_info *in = check_info(st->cs);
    struct spf_query q;

    st->wait = WAIT_NONE;
    if (in->conf->spf == CONF_AUTH_OFF) {
        check_pass(t);
        return;
    }
    memset(&q, 0, sizeof(q));
    snprintf(q.ip, sizeof(q.ip), "%s", in->client.ip);
    snprintf(q.helo, sizeof(q.helo), "%s", in->helo);
    snprintf(q.sender, sizeof(q.sender), "%s", in->sender->mailbox);
    snprintf(q.receiver, sizeof(q.receiver), "%s", in->conf->hostname);
    if (st->done && st->id->res.res != SPF_RES_TEMPERROR && same_identity(&q, &st->id->q)) {
        struct spf_result r = st->id->res; /* the same identity: the same answer */
        struct check_txn_facts *f = check_txn_facts(st->cs);

        r.queries = r.voids = 0;
        r.ms = 0;
        log_spf(st, &r);
        f->spf_done = true;
        f->spf = st->id->res;
        check_pass(t);
        return;
    }
    if (st->id == NULL)
        st->id = xcalloc(1, sizeof(*st->id));
    st->id->q = q;
    st->done = false;
    st->running = true;
    if (st->job == NULL)
        job_start(st);
    /* else on_spf takes the check in flight, or starts ours after it */
    check_pass(t);
}

/* Whether rcpt's greylisting needs the result (check_greylist.c). */
static bool
greylisted(struct spf_state *st, const struct addr *rcpt)
{
    const struct check_info *in = check_info(st->cs);

    return greylist_skip(in->conf, (const struct sockaddr *)&in->client.peer,
                         check_facts(st->cs)->client_trusted, rcpt) == GREYLIST_APPLIES;
}

static void
spf_rcpt(void *arg, struct check_ticket t, const struct addr *rcpt)
{
    struct spf_state *st = arg;
    bool judge = conf_of(st)->spf == CONF_AUTH_REJECT;

    if (!st->running && !st->done) {
        check_pass(t); /* spf = off */
    } else if (st->running && (judge || greylisted(st, rcpt))) {
        st->t = t;
        st->wait = judge ? WAIT_RCPT : WAIT_RCPT_FACTS;
    } else if (judge && st->done) {
        rcpt_answer(st, t);
    } else {
        check_pass(t);
    }
}

static void
spf_end(void *arg, struct check_ticket t)
{
    struct spf_state *st = arg;

    if (st->running) {
        st->t = t;
        st->wait = WAIT_END;
        return;
    }
    check_pass(t);
}

static void
spf_reset(void *arg)
{
    struct spf_state *st = arg;

    st->wait = WAIT_NONE;
}

const struct check_ops check_spf = {
    .name = "spf",
    .start = spf_start_state,
    .stop = spf_stop,
    .mail = spf_mail,
    .rcpt = spf_rcpt,
    .end = spf_end,
    .reset = spf_reset,
};
