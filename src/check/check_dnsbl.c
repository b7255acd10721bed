/* check_dnsbl: DNSBL and DNSWL scoring and FCrDNS (issue 16 part 3) as
 * checks of the pipeline, after postscreen's DNSBL test:
 *
 *   connect (check_dnsbl)          starts every lookup at once: one A query
 *                                  per list of dnsbl_sites (a list named
 *                                  twice with two filters is asked once),
 *                                  and with fcrdns = on the client's PTR,
 *                                  then A/AAAA of its names; passes at once
 *   connect (check_dnsbl_verdict)  with dnsbl_action = reject, waits for
 *                                  the answers and decides: 554 5.7.1 in
 *                                  the greeting's place (RFC 5321 3.1);
 *                                  after a pre-greet wait it decides at
 *                                  once on the answers in, the rest
 *                                  counting as timeouts
 *   RCPT (check_dnsbl)             otherwise decides at the first RCPT
 *                                  (the answers came in while the client
 *                                  sent EHLO and MAIL); dnsbl_action =
 *                                  enforce refuses every RCPT with 554
 *                                  5.7.1, so the attempt is logged
 *
 * Other checks of the connect stage may run between the two connect hooks
 * (a test that waits, such as the pre-greet test, while the lookups are
 * out). The score is the sum of the weights of the lists whose answer has
 * a record through its filter (dnsbl.c; 127.255.255.x and records outside
 * 127/8 never count: a list error, logged), plus fcrdns_weight when the
 * client has no confirmed reverse name. At or over dnsbl_threshold the
 * client is listed; at or under dnsbl_allowlist_threshold it is trusted
 * (facts.client_trusted: greylisting spares it). Replies and logs name
 * each list by its public name (dnsbl_reply_map), never the name asked.
 *
 * It is one of the screening's remembered tests (screen.h, SCREEN_DNSBL,
 * on with dnsbl_sites): a client that is not listed, on complete answers
 * (no timeout, no list error, no FCrDNS failure), is remembered for
 * screen_ttl (screen_remember), and while that holds its connections ask
 * no list and wait for none (result=known; with fcrdns = on only the PTR
 * is still asked, for Received:). A listed client is never remembered. An
 * allowlisted one (facts.screen.allowlisted) ends a pre-greet wait that
 * is running (check_pregreet_allowlisted) as soon as the lists answered.
 *
 * Budget: every lookup ends by dnsbl_timeout after the connection began
 * (the resolver's per-query timeout); one that did not answer counts as
 * not listed (logged, counted). trusted_networks skip all of it. One log
 * line and one mxd_dnsbl_total count per decision. Loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/check_impl.h"
#include "check/dnsbl.h"
#include "check/screen.h"
#include "dns/dnsmsg.h"
#include "dns/resolver.h"

#define FCRDNS_NAMES_MAX 4 /* PTR names whose addresses are asked (Postfix: all; bounded here) */

extern const struct check_ops check_dnsbl;

enum site_state { SITE_OUT, SITE_CLEAN, SITE_LISTED, SITE_FAILED };
enum fc_state { FC_OFF, FC_OUT, FC_CONFIRMED, FC_UNCONFIRMED, FC_TEMPFAIL };

static const char *const fc_names[] = {"off", "out", "confirmed", "unconfirmed", "tempfail"};

struct site_answer {
    enum site_state state;
    bool error; /* a record was a list error */
};

/* One connection's screening. */
struct dnsbl_st {
    struct check_session *cs;
    bool active;  /* lookups were started (not skipped) */
    bool known;   /* the client's DNSBL pass is remembered: no list is asked */
    bool decided; /* the verdict is known */
    bool listed;  /* ... and the client is listed */
    unsigned out; /* queries out */
    uint64_t deadline_ns;
    struct site_answer *sites; /* per dnsbl_sites entry */
    struct dnsbl_score score;
    /* a stage waiting for the verdict */
    bool waiting;
    struct check_ticket t;
    enum check_stage wait_stage;
    /* FCrDNS */
    enum fc_state fc;
    char (*names)[DNSMSG_NAME_MAX]; /* the PTR answer's names, while they are asked */
    size_t nnames;
    int confirmed;           /* index in names, -1 none */
    bool fwd_failed;         /* a forward lookup failed (servfail, timeout) */
    unsigned fc_out;         /* forward lookups out */
    char *client_name;       /* the confirmed name (facts.client_name points here) */
    const struct addr *rcpt; /* the recipient asked (the pipeline's, for the stage) */
};

/* One query out; freed by its callback (the state may be gone by then). */
struct dnsbl_q {
    struct dnsbl_st *st;
    int site; /* the list asked, or -1: the PTR, -2 - i: the forward lookup of names[i] */
};

static void decide(struct dnsbl_st *st);

static struct resolver *
resolver_of(struct dnsbl_st *st)
{
    const struct check_info *in = check_info(st->cs);

    return resolver_get(in->env.loop, in->conf);
}

static bool
ask(struct dnsbl_st *st, const char *name, int type, int site, resolver_cb cb)
{
    unsigned timeout = resolver_timeout_until(st->deadline_ns);
    struct dnsbl_q *q;

    if (timeout == 0)
        return false;
    q = xmalloc(sizeof(*q));
    q->st = st;
    q->site = site;
    st->out++;
    check_hold(st->cs);
    (void)resolver_query(resolver_of(st), name, type, timeout, cb, q);
    return true;
}

/* The query is back: false when the connection is gone (q is freed). */
static bool
back(struct dnsbl_q *q)
{
    struct dnsbl_st *st = q->st;

    st->out--;
    if (check_unhold(st->cs)) {
        free(q);
        return false;
    }
    return true;
}

static void stage_answer(struct dnsbl_st *st, struct check_ticket t, enum check_stage stage);

/* Every answer is in (or its time is out): the verdict, and the answer of
 * a stage that waits for it. */
static void
maybe_done(struct dnsbl_st *st)
{
    if (st->out > 0 || st->decided)
        return;
    decide(st);
    if (st->waiting) {
        st->waiting = false;
        stage_answer(st, st->t, st->wait_stage);
    }
}

/* ---- the lists --------------------------------------------------------- */

static void
on_list(void *arg, const struct resolver_answer *a)
{
    struct dnsbl_q *q = arg;
    struct dnsbl_st *st = q->st;
    const struct conf *c;
    struct sockaddr_storage addrs[DNSBL_ADDRS_MAX];
    unsigned char rec[DNSBL_ADDRS_MAX * 4];
    size_t n = 0;

    if (!back(q))
        return;
    if (st->decided) { /* too late: the verdict took it as not listed */
        free(q);
        return;
    }
    c = check_info(st->cs)->conf;
    if (a->status == RESOLVER_OK &&
        dnsmsg_addrs(a->packet, a->len, false, 0, addrs, &n, DNSBL_ADDRS_MAX) != 0)
        n = 0;
    for (size_t i = 0; i < n; i++)
        memcpy(rec + 4 * i, &((const struct sockaddr_in *)&addrs[i])->sin_addr, 4);
    /* every entry of the list asked (the same name with other filters) */
    for (size_t i = (size_t)q->site; i < c->ndnsbl_sites; i++) {
        struct site_answer *sa = &st->sites[i];

        if (strcmp(c->dnsbl_sites[i].name, c->dnsbl_sites[q->site].name) != 0)
            continue;
        if (a->status == RESOLVER_SERVFAIL || a->status == RESOLVER_TIMEOUT) {
            sa->state = SITE_FAILED;
        } else {
            bool listed = dnsbl_site_listed(&c->dnsbl_sites[i], rec, n, &sa->error);

            sa->state = listed ? SITE_LISTED : SITE_CLEAN;
        }
    }
    free(q);
    maybe_done(st);
}

/* ---- FCrDNS ------------------------------------------------------------ */

static bool
client_v4(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET ||
           IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* Whether the forward answer holds the client's address. */
static bool
has_client(const struct dnsbl_st *st, const struct resolver_answer *a)
{
    const struct sockaddr_storage *peer = &check_info(st->cs)->client.peer;
    bool v4 = client_v4(peer);
    struct sockaddr_storage addrs[16];
    const void *want;
    size_t n = 0;

    if (a->status != RESOLVER_OK ||
        dnsmsg_addrs(a->packet, a->len, !v4, 0, addrs, &n, sizeof(addrs) / sizeof(addrs[0])) != 0)
        return false;
    if (peer->ss_family == AF_INET)
        want = &((const struct sockaddr_in *)peer)->sin_addr;
    else
        want = ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr + (v4 ? 12 : 0);
    for (size_t i = 0; i < n; i++) {
        const void *got = v4 ? (const void *)&((const struct sockaddr_in *)&addrs[i])->sin_addr
                             : (const void *)&((const struct sockaddr_in6 *)&addrs[i])->sin6_addr;

        if (memcmp(got, want, v4 ? 4 : 16) == 0)
            return true;
    }
    return false;
}

static void
fc_settle(struct dnsbl_st *st)
{
    if (st->confirmed >= 0) {
        st->fc = FC_CONFIRMED;
        st->client_name = xstrdup(st->names[st->confirmed]);
        check_facts(st->cs)->client_name = st->client_name;
    } else if (st->fwd_failed) {
        st->fc = FC_TEMPFAIL;
    } else {
        st->fc = FC_UNCONFIRMED;
    }
    free(st->names);
    st->names = NULL;
}

static void
on_forward(void *arg, const struct resolver_answer *a)
{
    struct dnsbl_q *q = arg;
    struct dnsbl_st *st = q->st;
    int i = -2 - q->site;

    if (!back(q))
        return;
    free(q);
    st->fc_out--;
    if (st->fc != FC_OUT) { /* settled without it (the verdict could not wait) */
        maybe_done(st);
        return;
    }
    if (has_client(st, a)) {
        if (st->confirmed < 0 || i < st->confirmed)
            st->confirmed = i; /* the first name of the PTR answer that confirms */
    } else if (a->status == RESOLVER_SERVFAIL || a->status == RESOLVER_TIMEOUT) {
        st->fwd_failed = true;
    }
    if (st->fc_out == 0)
        fc_settle(st);
    maybe_done(st);
}

static void
on_ptr(void *arg, const struct resolver_answer *a)
{
    struct dnsbl_q *q = arg;
    struct dnsbl_st *st = q->st;
    char names[FCRDNS_NAMES_MAX][DNSMSG_NAME_MAX];
    size_t n = 0;

    if (!back(q))
        return;
    free(q);
    if (st->decided) /* too late: the verdict settled FCrDNS as tempfail */
        return;
    if (a->status == RESOLVER_SERVFAIL || a->status == RESOLVER_TIMEOUT) {
        st->fc = FC_TEMPFAIL;
    } else if (a->status != RESOLVER_OK ||
               dnsmsg_ptr(a->packet, a->len, names, &n, FCRDNS_NAMES_MAX) != 0) {
        st->fc = FC_UNCONFIRMED;
    } else {
        int type =
            client_v4(&check_info(st->cs)->client.peer) ? RESOLVER_TYPE_A : RESOLVER_TYPE_AAAA;

        st->names = xcalloc(n > 0 ? n : 1, sizeof(*st->names));
        for (size_t i = 0; i < n; i++)
            if (dnsbl_name_ok(names[i]))
                memcpy(st->names[st->nnames++], names[i], DNSMSG_NAME_MAX);
        for (size_t i = 0; i < st->nnames; i++) {
            if (ask(st, st->names[i], type, -2 - (int)i, on_forward))
                st->fc_out++;
            else
                st->fwd_failed = true; /* the budget is spent */
        }
        if (st->fc_out == 0)
            fc_settle(st);
    }
    maybe_done(st);
}

/* ---- the verdict ------------------------------------------------------- */

/* "zen.example:3,wl.example:-5" of the lists in state want, into buf. */
static void
list_names(const struct dnsbl_st *st, enum site_state want, bool errors, char *buf, size_t size)
{
    const struct conf *c = check_info(st->cs)->conf;
    size_t o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < c->ndnsbl_sites && o + 1 < size; i++) {
        const struct conf_dnsbl_site *s = &c->dnsbl_sites[i];
        int n;

        if (errors ? !st->sites[i].error : st->sites[i].state != want)
            continue;
        if (want == SITE_LISTED && !errors)
            n = snprintf(buf + o, size - o, "%s%s:%d", o ? "," : "", s->display, s->weight);
        else
            n = snprintf(buf + o, size - o, "%s%s", o ? "," : "", s->display);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    if (o >= size)
        buf[size - 1] = '\0';
    if (buf[0] == '\0')
        snprintf(buf, size, "-");
}

static void
count_lists(const struct dnsbl_st *st)
{
    const struct conf *c = check_info(st->cs)->conf;

    for (size_t i = 0; i < c->ndnsbl_sites; i++) {
        const struct site_answer *a = &st->sites[i];

        if (a->error)
            metrics_count(METRICS_F_DNSBL_LISTS, c->dnsbl_sites[i].display, "error");
        metrics_count(METRICS_F_DNSBL_LISTS, c->dnsbl_sites[i].display,
                      a->state == SITE_LISTED  ? "listed"
                      : a->state == SITE_CLEAN ? "clean"
                                               : "timeout");
    }
}

static const char *
action_name(enum conf_dnsbl_action a)
{
    return a == CONF_DNSBL_REJECT ? "reject" : a == CONF_DNSBL_ENFORCE ? "enforce" : "ignore";
}

/* Whatever is still out when the verdict is taken (the pre-greet wait is
 * over: the greeting does not wait for the lists) counts as not answered:
 * a list as a timeout (not listed), FCrDNS as a temporary failure (no
 * weight) unless a name was confirmed already. */
static void
settle_out(struct dnsbl_st *st)
{
    const struct conf *c = check_info(st->cs)->conf;

    for (size_t i = 0; i < c->ndnsbl_sites; i++)
        if (st->sites[i].state == SITE_OUT)
            st->sites[i].state = SITE_FAILED;
    if (st->fc == FC_OUT) {
        st->fwd_failed = true;
        fc_settle(st);
    }
}

/* A client that is not listed passed the DNSBL test (postscreen's rule),
 * remembered for screen_ttl so that its next connections ask no list;
 * but only on complete answers: a list that timed out or answered with an
 * error, or FCrDNS that failed, may have hidden a listing, so such a
 * client is let in now and asked again next time. True when remembered. */
static bool
remember(struct dnsbl_st *st)
{
    const struct check_info *in = check_info(st->cs);
    const struct conf *c = in->conf;
    int64_t now = (int64_t)time(NULL);

    if (in->env.screen == NULL || c->ndnsbl_sites == 0 || st->listed || st->fc == FC_TEMPFAIL)
        return false;
    for (size_t i = 0; i < c->ndnsbl_sites; i++)
        if (st->sites[i].state == SITE_FAILED || st->sites[i].error)
            return false;
    screen_remember(in->env.screen, (const struct sockaddr *)&in->client.peer,
                    c->ipv6_prefix_length, SCREEN_DNSBL, now, now + (int64_t)c->screen_ttl_s);
    return true;
}

/* A remembered pass: no list was asked (FCrDNS may have been, for its name). */
static void
log_known(struct dnsbl_st *st)
{
    const struct check_info *in = check_info(st->cs);

    log_msg(LOG_INFO, NULL, "check", "dnsbl client=%s result=known fcrdns=%s name=%s",
            in->client.ip, fc_names[st->fc], st->client_name ? st->client_name : "-");
    metrics_count(METRICS_F_DNSBL, "known", NULL);
    if (st->fc != FC_OFF)
        metrics_count(METRICS_F_FCRDNS, fc_names[st->fc], NULL);
}

static void
decide(struct dnsbl_st *st)
{
    struct check_session *cs = st->cs;
    const struct check_info *in = check_info(cs);
    const struct conf *c = in->conf;
    struct check_facts *f = check_facts(cs);
    char hits[512], errs[256], failed[256];
    const char *result;
    bool kept;

    st->decided = true;
    settle_out(st);
    if (st->known) { /* only FCrDNS was asked, for its name: no score */
        log_known(st);
        return;
    }
    memset(&st->score, 0, sizeof(st->score));
    for (size_t i = 0; i < c->ndnsbl_sites; i++)
        dnsbl_score_add(&st->score, c->dnsbl_sites, i, st->sites[i].state == SITE_LISTED);
    if (st->fc == FC_UNCONFIRMED)
        st->score.score += c->fcrdns_weight;
    st->listed = st->score.score >= c->dnsbl_threshold;
    if (st->listed) {
        result = "listed";
    } else if (st->score.score <= c->dnsbl_allowlist_threshold) {
        result = "trusted";
        f->client_trusted = true;
        f->screen.allowlisted = true;
    } else {
        result = "pass";
    }
    list_names(st, SITE_LISTED, false, hits, sizeof(hits));
    list_names(st, SITE_LISTED, true, errs, sizeof(errs));
    list_names(st, SITE_FAILED, false, failed, sizeof(failed));
    kept = remember(st);
    log_msg(LOG_INFO, NULL, "check",
            "dnsbl client=%s result=%s score=%d threshold=%d lists=%s list_errors=%s "
            "timeouts=%s fcrdns=%s name=%s action=%s remembered=%s",
            in->client.ip, result, st->score.score, c->dnsbl_threshold, hits, errs, failed,
            fc_names[st->fc], st->client_name ? st->client_name : "-",
            st->listed ? action_name(c->dnsbl_action) : "none", kept ? "yes" : "no");
    metrics_count(METRICS_F_DNSBL, result, NULL);
    count_lists(st);
    if (st->fc != FC_OFF)
        metrics_count(METRICS_F_FCRDNS, fc_names[st->fc], NULL);
    if (f->screen.allowlisted) /* last: it may end the pre-greet wait (next loop turn) */
        check_pregreet_allowlisted(cs);
}

/* The refusal's text: the public name of the heaviest list that lists
 * the client (RFC 5321 3.1 for 554 at connect). */
static void
refuse(struct dnsbl_st *st, struct check_ticket t)
{
    const struct check_info *in = check_info(st->cs);
    char text[CHECK_TEXT_MAX];

    if (st->score.nlisted > 0)
        dnsbl_reply_text(text, sizeof(text), in->client.ip, &in->conf->dnsbl_sites[st->score.top]);
    else /* the score is FCrDNS's alone */
        snprintf(text, sizeof(text),
                 "5.7.1 Service unavailable; client [%s] has no confirmed reverse DNS name",
                 in->client.ip);
    check_answer(t, CHECK_REJECT, 554, text);
}

/* The verdict is known: refuse a listed client at connect (reject) or at
 * each RCPT (enforce), else go on. */
static void
stage_answer(struct dnsbl_st *st, struct check_ticket t, enum check_stage stage)
{
    const struct check_info *in = check_info(st->cs);
    enum conf_dnsbl_action act = in->conf->dnsbl_action;

    if (st->listed && stage == CHECK_STAGE_CONNECT && act == CONF_DNSBL_REJECT) {
        refuse(st, t);
    } else if (st->listed && stage == CHECK_STAGE_RCPT && act == CONF_DNSBL_ENFORCE) {
        char from[600], to[600];

        log_msg(LOG_INFO, in->qid[0] ? in->qid : NULL, "check",
                "dnsbl client=%s sender=%s rcpt=%s result=refused action=enforce", in->client.ip,
                log_addr(from, sizeof(from), in->sender != NULL ? in->sender->mailbox : ""),
                log_addr(to, sizeof(to), st->rcpt->mailbox));
        metrics_count(METRICS_F_DNSBL, "refused-rcpt", NULL);
        refuse(st, t);
    } else {
        check_pass(t);
    }
}

/* A stage that needs the verdict: now, or when the last answer is in. */
static void
need_verdict(struct dnsbl_st *st, struct check_ticket t, enum check_stage stage)
{
    if (st == NULL || !st->active) {
        check_pass(t);
        return;
    }
    if (!st->decided) {
        st->waiting = true;
        st->t = t;
        st->wait_stage = stage;
        maybe_done(st);
        return;
    }
    stage_answer(st, t, stage);
}

/* ---- hooks ------------------------------------------------------------- */

static void
dnsbl_connect(void *arg, struct check_ticket t)
{
    struct dnsbl_st *st = arg;
    const struct check_info *in;
    const struct conf *c;
    const struct sockaddr *sa;
    char qname[DNSBL_QNAME_MAX];

    if (st == NULL) { /* screening is off */
        check_pass(t);
        return;
    }
    in = check_info(st->cs);
    c = in->conf;
    sa = (const struct sockaddr *)&in->client.peer;

    if (conf_cidr_match(c->trusted_networks, c->ntrusted_networks, sa)) {
        log_msg(LOG_INFO, NULL, "check", "dnsbl client=%s result=skip reason=trusted_networks",
                in->client.ip);
        metrics_count(METRICS_F_DNSBL, "skip", NULL);
        check_pass(t);
        return;
    }
    /* A remembered pass: no list is asked (and the greeting waits for
     * none); FCrDNS still is, with fcrdns = on, for the name in Received:. */
    st->known = c->ndnsbl_sites > 0 &&
                check_facts(st->cs)->screen.until[SCREEN_DNSBL] > (int64_t)time(NULL);
    if (st->known && !c->fcrdns) {
        st->decided = true;
        log_known(st);
        check_pass(t);
        return;
    }
    st->active = true;
    st->confirmed = -1;
    st->deadline_ns = uv_hrtime() + c->dnsbl_timeout_ms * 1000000u;
    st->sites = xcalloc(c->ndnsbl_sites > 0 ? c->ndnsbl_sites : 1, sizeof(*st->sites));
    for (size_t i = 0; i < c->ndnsbl_sites && !st->known; i++) {
        bool first = true;

        for (size_t j = 0; j < i && first; j++)
            first = strcmp(c->dnsbl_sites[j].name, c->dnsbl_sites[i].name) != 0;
        if (!first)
            continue;
        if (dnsbl_query_name(sa, c->dnsbl_sites[i].name, qname, sizeof(qname)) != 0 ||
            !ask(st, qname, RESOLVER_TYPE_A, (int)i, on_list))
            st->sites[i].state = SITE_FAILED;
    }
    if (c->fcrdns) {
        st->fc = FC_OUT;
        if (dnsbl_ptr_name(sa, qname, sizeof(qname)) != 0 ||
            !ask(st, qname, RESOLVER_TYPE_PTR, -1, on_ptr))
            st->fc = FC_TEMPFAIL;
    }
    check_pass(t); /* the answers come in while the connection goes on */
}

static void
dnsbl_rcpt(void *arg, struct check_ticket t, const struct addr *rcpt)
{
    struct dnsbl_st *st = arg;

    if (st != NULL)
        st->rcpt = rcpt; /* the pipeline's copy, valid for the stage */
    need_verdict(st, t, CHECK_STAGE_RCPT);
}

/* State only when screening is on: idle connections of a server without
 * it carry nothing. */
static void *
dnsbl_start(struct check_session *cs)
{
    const struct conf *c = check_info(cs)->conf;
    struct dnsbl_st *st;

    if (c->ndnsbl_sites == 0 && !c->fcrdns)
        return NULL;
    st = xcalloc(1, sizeof(*st));

    st->cs = cs;
    st->confirmed = -1;
    return st;
}

static void
dnsbl_stop(void *arg)
{
    struct dnsbl_st *st = arg;

    if (st == NULL)
        return;
    free(st->sites);
    free(st->names);
    free(st->client_name);
    free(st);
}

/* The second connect hook: the greeting waits for the verdict only when
 * a listed client is refused at connect, and a remembered client is not
 * asked. After a pre-greet wait the verdict is taken at once, on the
 * answers in (the lists ran during the wait): the greeting never waits
 * longer than greet_wait for them. Without that wait, the lists get up to
 * dnsbl_timeout from the connection's start. */
static void
verdict_connect(void *arg, struct check_ticket t)
{
    struct dnsbl_st *st = arg;

    if (st == NULL || st->known || check_info(st->cs)->conf->dnsbl_action != CONF_DNSBL_REJECT) {
        check_pass(t);
        return;
    }
    if (st->active && !st->decided && check_facts(st->cs)->screen.pregreet_waited)
        decide(st);
    need_verdict(st, t, CHECK_STAGE_CONNECT);
}

static void *
verdict_start(struct check_session *cs)
{
    return check_state(cs, &check_dnsbl); /* check_dnsbl's, freed by its stop */
}

const struct check_ops check_dnsbl = {
    .name = "dnsbl",
    .start = dnsbl_start,
    .stop = dnsbl_stop,
    .connect = dnsbl_connect,
    .rcpt = dnsbl_rcpt,
};

const struct check_ops check_dnsbl_verdict = {
    .name = "dnsbl-verdict",
    .start = verdict_start,
    .connect = verdict_connect,
};
