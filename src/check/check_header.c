/* check_authres: two checks around sender authentication's header work.
 *
 * check_header, first in the list: the Authentication-Results filter
 * (authres.c) as a content filter: fields that claim to be ours are
 * removed on the way to the store (RFC 8601 5), whatever [auth] says. At
 * the end of data it records what the header says (Received: fields, the
 * From: authors for DMARC) and refuses what the header alone decides: too
 * many hops (RFC 5321 6.3) and, with dmarc = reject, a From: field whose
 * shape would dodge DMARC (RFC 5322 3.6).
 *
 * check_trace, after SPF, DKIM and DMARC: the header fields for the stored
 * message, Authentication-Results (RFC 8601) and Received-SPF (RFC 7208
 * 9.1), from the transaction's facts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "check/check_impl.h"

struct header_state {
    struct check_session *cs;
    struct authres_filter filter;
    struct check_stream out; /* where the filter passes the content on */
    bool active;             /* the filter was set up for this content */
};

static void *
header_start(struct check_session *cs)
{
    struct header_state *st = xcalloc(1, sizeof(*st));

    st->cs = cs;
    return st;
}

static void
header_reset(void *arg)
{
    struct header_state *st = arg;

    if (st->active)
        authres_filter_free(&st->filter);
    st->active = false;
}

static void
header_stop(void *arg)
{
    header_reset(arg);
    free(arg);
}

static void
filter_emit(void *arg, const char *data, size_t len)
{
    struct header_state *st = arg;

    check_emit(st->out, data, len);
}

static void
header_data(void *arg, struct check_stream out)
{
    struct header_state *st = arg;

    header_reset(st);
    st->out = out;
    authres_filter_init(&st->filter, check_info(st->cs)->conf->hostname, filter_emit, st);
    st->active = true;
}

static void
header_filter(void *arg, const char *data, size_t len)
{
    struct header_state *st = arg;

    authres_filter_feed(&st->filter, data, len);
}

/* The From: authors for DMARC; a malformed field is noted (RFC 5322 3.6:
 * exactly one From:; parsed whole or not at all). */
static void
note_from(const struct authres_filter *f, struct check_txn_facts *facts)
{
    int n = 0;

    facts->from_malformed = NULL;
    if (f->nfrom > 1)
        facts->from_malformed = "several From: fields";
    else if (f->from_overlong)
        facts->from_malformed = "From: field too long";
    else if (f->from != NULL &&
             (n = authres_from_domains(f->from, facts->from, DMARC_AUTHORS_MAX)) < 0)
        facts->from_malformed = "too many authors in From:";
    facts->nfrom = n > 0 ? (size_t)n : 0;
    facts->nfrom_fields = f->nfrom;
}

static void
header_end(void *arg, struct check_ticket t)
{
    struct header_state *st = arg;
    const struct check_info *in = check_info(st->cs);
    const struct conf *c = in->conf;
    struct check_txn_facts *facts = check_txn_facts(st->cs);
    char text[200];

    if (!st->active) {
        check_pass(t);
        return;
    }
    authres_filter_end(&st->filter);
    if (st->filter.removed > 0)
        log_msg(LOG_INFO, in->qid, "auth", "removed authentication-results count=%u",
                st->filter.removed);
    note_from(&st->filter, facts);
    facts->received = st->filter.nreceived;
    if (st->filter.nreceived > c->max_hops) {
        snprintf(text, sizeof(text), "5.4.6 Too many hops (%u Received: fields, limit %u)",
                 st->filter.nreceived, c->max_hops);
        check_answer(t, CHECK_REJECT, 554, text);
        return;
    }
    /* RFC 7489 6.6.1: DMARC evaluates the author domains of the one
     * RFC5322.From field; a message with several From: fields (a form RFC
     * 5322 3.6 forbids) or none, or one whose authors cannot be read,
     * cannot be evaluated and is typically rejected. With dmarc = reject
     * it is refused (permerror, 550 5.6.0). */
    if (facts->from_malformed != NULL && c->dmarc == CONF_AUTH_REJECT) {
        log_msg(LOG_INFO, in->qid, "auth", "dmarc result=permerror reason=\"%s\"",
                facts->from_malformed);
        snprintf(text, sizeof(text), "5.6.0 Malformed message: %s (RFC 5322 3.6)",
                 facts->from_malformed);
        check_answer(t, CHECK_REJECT, 550, text);
        return;
    }
    check_pass(t);
}

const struct check_ops check_header = {
    .name = "header",
    .start = header_start,
    .stop = header_stop,
    .end = header_end,
    .data = header_data,
    .filter = header_filter,
    .reset = header_reset,
};

/* ---- check_trace: the header fields ------------------------------------ */

/* spf=... smtp.mailfrom=..., and the Received-SPF field into rspf. */
static size_t
add_spf(const struct check_info *in, const struct spf_result *r, struct authres *ar, char *rspf,
        size_t size)
{
    const char *helo = in->helo, *sender = in->sender->mailbox;
    struct authres_prop p = {r->helo_identity ? "smtp.helo" : "smtp.mailfrom",
                             r->helo_identity ? helo : sender};
    char from[ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 16];

    authres_add(ar, "spf", spf_res_name(r->res), NULL, &p, 1);
    if (r->helo_identity)
        snprintf(from, sizeof(from), "postmaster@%s", helo);
    else
        snprintf(from, sizeof(from), "%s", sender);
    return authres_received_spf(rspf, size, spf_res_name(r->res), r->comment, in->client.ip, from,
                                helo, in->conf->hostname, r->helo_identity ? "helo" : "mailfrom");
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

/* dmarc=... per author domain (RFC 7489 6.6.1), or one for the message:
 * header.from (RFC 7489 11.1), policy.dmarc, the policy evaluated after
 * sp= and pct= (the IANA Email Authentication Methods registry's entry of
 * RFC 7489), and in the comment the record's p= and the disposition
 * (RFC 7489 appendix C's DispositionType: what mxd did; a message that
 * carries this field was delivered, so "none": mxd refuses a p=reject
 * failure only with dmarc = reject, and then nothing is stored). */
static void
add_dmarc(const struct dmarc_result *m, struct authres *ar)
{
    size_t n = m->nauthors > 0 ? m->nauthors : 1;

    for (size_t i = 0; i < n; i++) {
        const struct dmarc_author *w = m->nauthors > 0 ? &m->authors[i] : NULL;
        const char *policy = w != NULL ? w->policy : m->policy, *why = w != NULL ? w->why : m->why;
        const char *applied = w != NULL ? w->applied : m->applied;
        struct authres_prop p[] = {{"header.from", w != NULL ? w->domain : NULL},
                                   {"policy.dmarc", applied[0] ? applied : NULL}};
        char comment[160] = "";

        if (policy[0] != '\0')
            snprintf(comment, sizeof(comment), "p=%s dis=none", policy);
        else if (why[0] != '\0')
            snprintf(comment, sizeof(comment), "%s", why);
        authres_add(ar, "dmarc", dmarc_res_name(w != NULL ? w->res : m->res), comment, p, 2);
    }
}

static void
trace_end(void *arg, struct check_ticket t)
{
    struct check_session *cs = arg;
    const struct check_info *in = check_info(cs);
    const struct conf *c = in->conf;
    const struct check_txn_facts *f = check_txn_facts(cs);
    struct authres ar;
    char rspf[2048];
    size_t arlen, rlen = 0;
    const char *arhdr;

    if (c->spf == CONF_AUTH_OFF && c->dkim == CONF_AUTH_OFF && c->dmarc == CONF_AUTH_OFF) {
        check_pass(t); /* nothing checked, nothing to say (ours were still removed) */
        return;
    }
    authres_init(&ar, c->hostname);
    if (f->spf_done)
        rlen = add_spf(in, &f->spf, &ar, rspf, sizeof(rspf));
    if (f->verified && c->dkim != CONF_AUTH_OFF)
        add_dkim(&f->dkim, &ar);
    if (f->verified && c->dmarc != CONF_AUTH_OFF)
        add_dmarc(&f->dmarc, &ar);
    arhdr = authres_finish(&ar, &arlen);
    check_add_fields(cs, arhdr, arlen);
    check_add_fields(cs, rspf, rlen);
    authres_free(&ar);
    check_pass(t);
}

static void *
trace_start(struct check_session *cs)
{
    return cs;
}

const struct check_ops check_trace = {
    .name = "trace",
    .start = trace_start,
    .end = trace_end,
};
