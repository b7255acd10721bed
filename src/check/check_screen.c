/* check_screen: the screening's memory as a check of the pipeline, first
 * of the screening at the connect stage. It asks the memory of passes
 * (screen.c: the cache, else the store's reader) about the client and
 * leaves the answer in the facts, for the checks after it:
 *
 *   facts.screen.until[t]  when the client's remembered pass of test t
 *                          expires: the screening tests skip what it
 *                          passed (no teaser, no wait, no lookups);
 *   facts.client_trusted   it passed every screening test that is on (the
 *                          pre-greet test with greet_action on, the DNSBL
 *                          test with dnsbl_sites set), in earlier
 *                          connections, and the pre-greet test is one of
 *                          them: greylisting spares it. One test
 *                          remembered and another not is not enough, and
 *                          a DNSBL pass alone (not being listed) says
 *                          nothing of the client's behaviour: with the
 *                          pre-greet test off only a DNSWL trusts.
 *
 * Nothing is asked when no screening test is on (greet_action = off and
 * no dnsbl_sites), nor for trusted_networks (the tests skip those
 * anyway). It never refuses:
 * a store that fails answers "no pass", and the client is tested. The
 * state lives in a job held while the store is asked. Loop thread. */
#include <stdlib.h>
#include <time.h>

#include "check/check_impl.h"
#include "check/screen.h"

struct screen_job {
    struct check_session *cs;
    struct check_ticket t;
};

/* Whether test t is on in c (its passes count and are remembered). */
static bool
test_on(const struct conf *c, enum screen_test t)
{
    switch (t) {
    case SCREEN_PREGREET:
        return c->greet_action != CONF_GREET_OFF;
    case SCREEN_DNSBL:
        return c->ndnsbl_sites > 0;
    case SCREEN_NTESTS:
        break;
    }
    return false;
}

static void
note(struct check_session *cs, const int64_t until[SCREEN_NTESTS])
{
    const struct conf *c = check_info(cs)->conf;
    struct check_facts *f = check_facts(cs);
    int64_t now = (int64_t)time(NULL);
    bool all = true, any = false;

    f->screen.looked_up = true;
    for (int t = 0; t < SCREEN_NTESTS; t++) {
        f->screen.until[t] = until[t];
        if (test_on(c, (enum screen_test)t)) {
            any = true;
            all = all && until[t] > now;
        }
    }
    f->client_trusted = any && all && test_on(c, SCREEN_PREGREET);
}

static void
on_known(void *arg, const int64_t until[SCREEN_NTESTS])
{
    struct screen_job *j = arg;

    if (!check_unhold(j->cs)) {
        note(j->cs, until);
        check_pass(j->t);
    }
    free(j);
}

static void
screen_connect(void *arg, struct check_ticket t)
{
    struct check_session *cs = arg;
    const struct check_info *in = check_info(cs);
    const struct conf *c = in->conf;
    const struct sockaddr *sa = (const struct sockaddr *)&in->client.peer;
    int64_t until[SCREEN_NTESTS] = {0};
    struct screen_job *j;
    bool on = false;

    for (int i = 0; i < SCREEN_NTESTS; i++)
        on = on || test_on(c, (enum screen_test)i);
    if (!on || in->env.screen == NULL ||
        conf_cidr_match(c->trusted_networks, c->ntrusted_networks, sa)) {
        check_pass(t);
        return;
    }
    j = xmalloc(sizeof(*j));
    j->cs = cs;
    j->t = t;
    check_hold(cs); /* until on_known, if the store is asked */
    if (screen_lookup(in->env.screen, sa, c->ipv6_prefix_length, (int64_t)time(NULL), until,
                      on_known, j)) {
        check_unhold(cs); /* answered from the cache (cs is alive: we are in its hook) */
        free(j);
        note(cs, until);
        check_pass(t);
    }
}

static void *
screen_start(struct check_session *cs)
{
    return cs;
}

const struct check_ops check_screen = {
    .name = "screen",
    .start = screen_start,
    .connect = screen_connect,
};
