/* check_rate: the per-client rate limits (Postfix's anvil and its
 * smtpd_client_*_rate_limit) as a check of the pipeline. It counts, in the
 * process-wide anvil table of the check environment, every new connection
 * (connect stage), every message delivery request (MAIL FROM, mail stage)
 * and every recipient (RCPT TO, rcpt stage) of a client, whether or not
 * the request is then accepted, as Postfix does; past a limit (per minute,
 * 0 = off) the request is refused with Postfix's replies:
 *
 *   connect  421 4.7.0 <hostname> Error: too many connections from your address, ...
 *            (and the session closes)
 *   MAIL     450 4.7.1 Error: too much mail from <client>
 *   RCPT     450 4.7.1 Error: too many recipients from <client>
 *
 * Each refusal is logged with the client and the rule and counted in
 * mxd_rate_limited_total{rule}. Clients in trusted_networks are neither
 * counted nor limited. Loop thread; answers every stage at once. */
#include <stdio.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/anvil.h"
#include "check/check_impl.h"

/* Counts the request and returns true when it is over the limit. */
static bool
rate_over(struct check_session *cs, enum anvil_rule rule, unsigned limit)
{
    const struct check_info *in = check_info(cs);
    const struct conf *c = in->conf;
    const struct sockaddr *sa = (const struct sockaddr *)&in->client.peer;
    unsigned count;

    if (limit == 0 || in->env.anvil == NULL ||
        conf_cidr_match(c->trusted_networks, c->ntrusted_networks, sa))
        return false;
    count = anvil_hit(in->env.anvil, sa, c->ipv6_prefix_length, rule, uv_now(in->env.loop));
    if (count <= limit)
        return false;
    log_msg(LOG_INFO, in->qid[0] ? in->qid : NULL, "check",
            "rate limit client=%s rule=%s count=%u limit=%u", in->client.ip, anvil_rule_name(rule),
            count, limit);
    metrics_count(METRICS_F_RATE_LIMITED, anvil_rule_name(rule), NULL);
    return true;
}

static void
rate_connect(void *arg, struct check_ticket t)
{
    struct check_session *cs = arg;
    const struct conf *c = check_info(cs)->conf;
    char text[CHECK_TEXT_MAX];

    if (!rate_over(cs, ANVIL_CONNECT, c->connection_rate_limit)) {
        check_pass(t);
        return;
    }
    /* RFC 5321 3.1: 421 instead of the greeting; the session closes. */
    snprintf(text, sizeof(text),
             "4.7.0 %s Error: too many connections from your address, try again later",
             c->hostname);
    check_answer(t, CHECK_TEMPFAIL, 421, text);
}

static void
rate_mail(void *arg, struct check_ticket t)
{
    struct check_session *cs = arg;
    const struct check_info *in = check_info(cs);
    char text[CHECK_TEXT_MAX];

    if (!rate_over(cs, ANVIL_MAIL, in->conf->message_rate_limit)) {
        check_pass(t);
        return;
    }
    snprintf(text, sizeof(text), "4.7.1 Error: too much mail from %s", in->client.ip);
    check_answer(t, CHECK_TEMPFAIL, 450, text);
}

static void
rate_rcpt(void *arg, struct check_ticket t, const struct addr *rcpt)
{
    struct check_session *cs = arg;
    const struct check_info *in = check_info(cs);
    char text[CHECK_TEXT_MAX];

    (void)rcpt;
    if (!rate_over(cs, ANVIL_RCPT, in->conf->recipient_rate_limit)) {
        check_pass(t);
        return;
    }
    snprintf(text, sizeof(text), "4.7.1 Error: too many recipients from %s", in->client.ip);
    check_answer(t, CHECK_TEMPFAIL, 450, text);
}

static void *
rate_start(struct check_session *cs)
{
    return cs;
}

const struct check_ops check_rate = {
    .name = "rate",
    .start = rate_start,
    .connect = rate_connect,
    .mail = rate_mail,
    .rcpt = rate_rcpt,
};
