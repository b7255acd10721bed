/* check_greylist: greylisting (RFC 6647) as a check of the pipeline, at
 * RCPT, for the domains with `greylist = on`. The first attempt of an
 * unknown (client, sender, recipient) triplet gets 451 4.7.1; a retry
 * after greylist_delay and within greylist_window passes, and the triplet
 * is remembered for greylist_ttl after its last pass (greylist.c builds
 * the triplet, store_greylist.c keeps and judges it).
 *
 * It runs after the recipient policy, so an unknown user is refused for
 * good before any triplet is made for it, and after SPF, whose result at
 * RCPT (check_spf.c waits for it when this recipient is greylisted) makes
 * the client part the sender's domain instead of its network. The
 * postmaster, trusted_networks and clients the screening trusts
 * (check_facts.client_trusted) are never greylisted. Each decision is
 * logged and counted (mxd_greylist_total{action}). When the store cannot
 * answer, 451 4.3.0, as for the recipients table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/check_impl.h"
#include "check/greylist.h"
#include "store/store.h"

/* One store job out; holds the pipeline until it is back. */
struct grey_job {
    struct check_ticket t;
    char client[GREYLIST_CLIENT_MAX];
    char sender[ADDR_PATH_MAX];
    char rcpt[ADDR_PATH_MAX];
};

static void
log_grey(struct check_session *cs, const char *rcpt, const char *key, const char *what)
{
    const struct check_info *in = check_info(cs);
    char from[600], to[600], k[600];

    log_msg(LOG_INFO, in->qid, "check", "greylist client=%s sender=%s rcpt=%s key=%s %s",
            in->client.ip, log_addr(from, sizeof(from), in->sender->mailbox),
            log_addr(to, sizeof(to), rcpt), log_esc(k, sizeof(k), key, strlen(key)), what);
}

static void
on_greylist(void *arg, int status, const struct store_grey_answer *a)
{
    struct grey_job *j = arg;
    struct check_ticket t = j->t;
    char what[128];

    if (check_unhold(t.cs)) {
        free(j);
        return;
    }
    if (status != 0) {
        snprintf(what, sizeof(what), "action=error status=%d", status);
        log_grey(t.cs, j->rcpt, j->client, what);
        metrics_count(METRICS_F_GREYLIST, "error", NULL);
        check_answer(t, CHECK_TEMPFAIL, 451,
                     "4.3.0 Error: temporary lookup failure, try again later");
    } else {
        snprintf(what, sizeof(what), "action=%s state=%s%s age=%llds", a->pass ? "pass" : "defer",
                 store_grey_state_name(a->state), a->expired ? " expired=yes" : "",
                 (long long)(time(NULL) - a->first_seen));
        log_grey(t.cs, j->rcpt, j->client, what);
        metrics_count(METRICS_F_GREYLIST, a->pass ? "pass" : "defer", NULL);
        if (a->pass)
            check_pass(t);
        else /* 451, not 450: some senders retry a 450 at once and give up */
            check_answer(t, CHECK_TEMPFAIL, 451, "4.7.1 Greylisted, try again later");
    }
    free(j);
}

static void
grey_rcpt(void *arg, struct check_ticket t, const struct addr *rcpt)
{
    struct check_session *cs = arg;
    const struct check_info *in = check_info(cs);
    const struct check_facts *f = check_facts(cs);
    const struct check_txn_facts *tf;
    const struct conf *c = in->conf;
    enum greylist_skip skip;
    struct store_grey_rules rules;
    struct grey_job *j;
    char what[64];

    skip = greylist_skip(c, (const struct sockaddr *)&in->client.peer, f->client_trusted, rcpt);
    if (skip != GREYLIST_APPLIES) {
        if (skip != GREYLIST_OFF) {
            snprintf(what, sizeof(what), "action=skip reason=%s", greylist_skip_name(skip));
            log_grey(cs, rcpt->mailbox, "-", what);
            metrics_count(METRICS_F_GREYLIST, "skip", NULL);
        }
        check_pass(t);
        return;
    }
    tf = check_txn_facts(cs);
    j = xcalloc(1, sizeof(*j));
    j->t = t;
    greylist_client((const struct sockaddr *)&in->client.peer,
                    tf->spf_done && tf->spf.res == SPF_RES_PASS ? tf->spf.domain : NULL, j->client);
    greylist_sender(in->sender->mailbox, j->sender);
    greylist_rcpt(rcpt->mailbox, j->rcpt);
    rules = (struct store_grey_rules){
        .now = (int64_t)time(NULL),
        .delay = (int64_t)c->greylist_delay_s,
        .window = (int64_t)c->greylist_window_s,
        .ttl = (int64_t)c->greylist_ttl_s,
    };
    check_hold(cs);
    store_greylist_async(in->env.store, j->client, j->sender, j->rcpt, &rules, on_greylist, j);
}

static void *
grey_start(struct check_session *cs)
{
    return cs;
}

const struct check_ops check_greylist = {
    .name = "greylist",
    .start = grey_start,
    .rcpt = grey_rcpt,
};
