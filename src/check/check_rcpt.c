/* check_rcpt: the recipient policy as a check of the pipeline. Is the
 * domain ours, and is the user known (the domain's `recipients`: any, the
 * recipients table in the store, a list synced from a file or LDAP (issue
 * 18: 550 only while the list is younger than recipients_max_age, 450
 * 4.1.1 for an unlisted address once it is older), or a callahead to its
 * LMTP server or primary)? RFC 5321 4.5.1: <postmaster> without a domain, and postmaster
 * at every domain we serve, are always accepted, whatever the domain's
 * recipients policy. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/iptab.h"
#include "base/log.h"
#include "base/metrics.h"
#include "check/callahead.h"
#include "check/check_impl.h"
#include "store/store.h"

/* One lookup or callahead out; holds the pipeline until it is back. */
struct rcpt_job {
    struct check_ticket t; /* its pipeline, and the answer awaited */
    /* recipients = sync: copied, for the answer and its log line */
    uint64_t max_age_s;
    char client[INET6_ADDRSTRLEN];
    char to[600]; /* the address, as log_addr writes it */
};

/* The job is back with result (0, MXD_ENOENT, or it could not say: then
 * code and text): answer, unless the connection is gone. */
static void
job_back(struct rcpt_job *j, int result, int code, const char *text)
{
    struct check_ticket t = j->t;

    free(j);
    if (check_unhold(t.cs))
        return;
    if (result == 0)
        check_pass(t);
    else if (result == MXD_ENOENT)
        check_answer(t, CHECK_REJECT, 550, "5.1.1 Recipient address rejected: User unknown");
    else
        check_answer(t, CHECK_TEMPFAIL, code, text);
}

/* The recipients table: 451 4.3.0 when it could not be read. */
static void
on_lookup(void *arg, int status)
{
    job_back(arg, status, 451, "4.3.0 Error: temporary lookup failure, try again later");
}

/* A callahead: 450 4.1.1 when the server could not say. */
static void
on_callahead(void *arg, int result)
{
    job_back(arg, result, 450, "4.1.1 Recipient address verification failed, try again later");
}

/* A synced list answered. Listed: 250, however old the list. Unlisted:
 * 550 while the list is fresh; once it is older than recipients_max_age
 * (or was never read whole) the backup cannot know, so 450 4.1.1. */
static void
on_sync(void *arg, int status, bool listed, int64_t synced)
{
    struct rcpt_job *j = arg;
    int64_t age = (int64_t)time(NULL) - synced;

    if (status == 0 && listed) {
        job_back(j, 0, 0, NULL);
    } else if (status == 0 && age < (int64_t)j->max_age_s) {
        job_back(j, MXD_ENOENT, 0, NULL);
    } else if (status == 0 || status == MXD_ENOENT) {
        metrics_count(METRICS_F_RCPT_UNSURE, "stale", NULL);
        if (status == 0)
            log_msg(LOG_WARN, NULL, "recipient",
                    "stale list client=%s to=%s age=%llds max_age=%llus", j->client, j->to,
                    (long long)age, (unsigned long long)j->max_age_s);
        else
            log_msg(LOG_WARN, NULL, "recipient", "stale list client=%s to=%s age=never", j->client,
                    j->to);
        job_back(j, MXD_EIO, 450,
                 "4.1.1 Recipient address unverified: the recipient list is out of date, try "
                 "again later");
    } else {
        job_back(j, status, 451, "4.3.0 Error: temporary lookup failure, try again later");
    }
}

static struct rcpt_job *
job_new(struct check_session *cs, struct check_ticket t)
{
    struct rcpt_job *j = xcalloc(1, sizeof(*j));

    j->t = t;
    check_hold(cs);
    return j;
}

static void
rcpt_rcpt(void *arg, struct check_ticket t, const struct addr *a)
{
    struct check_session *cs = arg;
    const struct check_info *in = check_info(cs);
    const struct conf *c = in->conf;
    const struct conf_domain *d = NULL;

    if (a->is_postmaster) {
        if (c->ndomains > 0) {
            check_pass(t);
            return;
        }
    } else if (!a->domain_literal) {
        d = conf_domain_find(c, a->domain_lc, strlen(a->domain_lc));
    }
    if (d == NULL) {
        /* Not ours: never a relay, whatever the local part says. */
        check_answer(t, CHECK_REJECT, 550, "5.7.1 Error: relay access denied");
        return;
    }
    if (addr_is_postmaster(a)) {
        check_pass(t);
        return;
    }
    if (d->recipients == CONF_RCPTS_TABLE) {
        store_rcpt_lookup_async(in->env.store, a->mailbox, a->domain_lc, on_lookup, job_new(cs, t));
    } else if (d->recipients == CONF_RCPTS_SYNC) {
        struct rcpt_job *j = job_new(cs, t);

        j->max_age_s = d->recipients_max_age_s;
        snprintf(j->client, sizeof(j->client), "%s", in->client.ip);
        log_addr(j->to, sizeof(j->to), a->mailbox);
        store_sync_lookup_async(in->env.store, d->rsource.text, a->mailbox, a->domain_lc, on_sync,
                                j);
    } else if ((d->recipients == CONF_RCPTS_LMTP || d->recipients == CONF_RCPTS_PRIMARY) &&
               in->env.callahead != NULL) {
        unsigned char key[IPTAB_KEY_LEN];
        char client[INET6_ADDRSTRLEN];

        /* the client as the per-client limits count it (an IPv6 /64) */
        iptab_key((const struct sockaddr *)&in->client.peer, c->ipv6_prefix_length, key);
        if (inet_ntop(AF_INET6, key, client, sizeof(client)) == NULL)
            snprintf(client, sizeof(client), "%s", in->client.ip);
        callahead_check(in->env.callahead, c, d, a->mailbox, client, on_callahead, job_new(cs, t));
    } else {
        check_pass(t);
    }
}

static void *
rcpt_start(struct check_session *cs)
{
    return cs;
}

const struct check_ops check_rcpt_policy = {
    .name = "recipient",
    .start = rcpt_start,
    .rcpt = rcpt_rcpt,
};
