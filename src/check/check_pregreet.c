/* check_pregreet: postscreen's pre-greet test as a check of the pipeline,
 * at the connect stage after check_screen. SMTP has the server speak
 * first; a client that sends before the greeting is complete is a bot in
 * a hurry (or a program that is no mail server). With greet_action on,
 * a client the memory does not know gets the teaser "220-<hostname>
 * ESMTP" at once (greet_banner) and the rest of the greeting only after
 * greet_wait (pregreet_wait_ms: shorter under load); the session reads
 * meanwhile and the pipeline tells this check of every octet
 * (check_input_early). A client that stays silent passes: logged,
 * counted, remembered for screen_ttl (screen.c), so it gets its greeting
 * at once next time. One that talks fails:
 *
 *   reject  554 5.5.1 Error: SMTP protocol violation, talked before the greeting
 *           (in the greeting's place, or after the teaser the answer to
 *           its first command: smtp_greet.c), and the session closes
 *   drop    the connection closes without a word
 *   ignore  logged and counted only (postscreen's observation mode); it
 *           gets its greeting after the wait, is not remembered, and its
 *           input is then taken as commands
 *
 * either way not remembered. A client that closes during the wait is a
 * hangup (dropped, not remembered). Skipped: trusted_networks, and a
 * client whose pass is remembered (facts.screen.until). A client a DNSWL
 * vouches for (the DNSBL check's score at or under
 * dnsbl_allowlist_threshold, check_pregreet_allowlisted) ends its wait as
 * soon as the lists have answered, as a pass (result=allowlisted),
 * remembered like one: postscreen lets an allowlisted client skip the
 * other tests. Each outcome is
 * one log line (`check pregreet client=... result=...`) and one count in
 * mxd_pregreet_total{result}. Other checks may run beside the wait: a
 * connect hook placed before this one that starts work and passes, and
 * one after it that collects the result, run while and after the client
 * waits. Loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/check_impl.h"
#include "check/pregreet.h"
#include "check/screen.h"

extern const struct check_ops check_pregreet;

struct pregreet {
    struct check_session *cs;
    struct check_ticket t;
    bool waiting;     /* the connect hook's answer is owed */
    bool failed;      /* talked early (ignore: it passes at the end of the wait) */
    bool allowlisted; /* the wait ends early: a DNSWL vouches for the client */
    uint64_t wait_ms;
    uv_timer_t timer; /* initialised while the pipeline is held for it */
};

static const char *const action_names[] = {"off", "ignore", "reject", "drop"};

static void
timer_closed(uv_handle_t *h)
{
    struct pregreet *pg = h->data;

    (void)check_unhold(pg->cs); /* stop frees pg, once nothing holds it */
}

/* The wait is over: answer, and let the timer go. */
static void
finish(struct pregreet *pg, enum check_action action, int code, const char *text)
{
    pg->waiting = false;
    uv_timer_stop(&pg->timer);
    uv_close((uv_handle_t *)&pg->timer, timer_closed);
    check_answer(pg->t, action, code, text);
}

static void
hangup(struct pregreet *pg)
{
    const struct check_info *in = check_info(pg->cs);

    log_msg(LOG_INFO, NULL, "check", "pregreet client=%s result=hangup after_ms=%llu",
            in->client.ip, (unsigned long long)check_facts(pg->cs)->screen.early_ms);
    metrics_count(METRICS_F_PREGREET, "hangup", NULL);
}

/* It talked: log what it said (postscreen logs the first octets too). */
static void
talked(struct pregreet *pg)
{
    const struct check_info *in = check_info(pg->cs);
    const struct check_screen_facts *f = &check_facts(pg->cs)->screen;
    char esc[4 * CHECK_EARLY_HEAD + 8];

    pg->failed = true;
    log_msg(LOG_INFO, NULL, "check",
            "pregreet client=%s result=fail action=%s after_ms=%llu octets=%zu input=%s",
            in->client.ip, action_names[in->conf->greet_action], (unsigned long long)f->early_ms,
            f->early_octets, log_esc(esc, sizeof(esc), f->early_head, f->early_head_len));
    metrics_count(METRICS_F_PREGREET, "fail", NULL);
}

/* What the session read before the greeting (the facts have it). */
static void
decide_early(struct pregreet *pg)
{
    const struct check_screen_facts *f = &check_facts(pg->cs)->screen;
    const struct conf *c = check_info(pg->cs)->conf;

    if (f->early_octets > 0 && !pg->failed)
        talked(pg);
    if (f->early_eof) {
        if (!pg->failed)
            hangup(pg);
        finish(pg, CHECK_DROP, 0, "");
    } else if (pg->failed && c->greet_action == CONF_GREET_REJECT) {
        finish(pg, CHECK_REJECT, 554,
               "5.5.1 Error: SMTP protocol violation, talked before the greeting");
    } else if (pg->failed && c->greet_action == CONF_GREET_DROP) {
        finish(pg, CHECK_DROP, 0, "");
    }
    /* ignore: the wait goes on */
}

static void
pregreet_early(void *arg)
{
    struct pregreet *pg = arg;

    if (pg->waiting)
        decide_early(pg);
}

static void
on_wait_over(uv_timer_t *t)
{
    struct pregreet *pg = t->data;
    const struct check_info *in = check_info(pg->cs);
    const struct conf *c = in->conf;
    int64_t now = (int64_t)time(NULL);

    if (!check_ticket_live(pg->t)) { /* the stage's budget answered for us */
        finish(pg, CHECK_ACCEPT, 0, "");
        return;
    }
    if (!pg->failed) {
        check_facts(pg->cs)->screen.pregreet_passed = true;
        if (in->env.screen != NULL)
            screen_remember(in->env.screen, (const struct sockaddr *)&in->client.peer,
                            c->ipv6_prefix_length, SCREEN_PREGREET, now,
                            now + (int64_t)c->screen_ttl_s);
        if (pg->allowlisted) {
            log_msg(LOG_INFO, NULL, "check",
                    "pregreet client=%s result=allowlisted wait_ms=%llu after_ms=%llu",
                    in->client.ip, (unsigned long long)pg->wait_ms,
                    (unsigned long long)(uv_now(in->env.loop) - in->started_ms));
            metrics_count(METRICS_F_PREGREET, "allowlisted", NULL);
        } else {
            log_msg(LOG_INFO, NULL, "check", "pregreet client=%s result=pass wait_ms=%llu",
                    in->client.ip, (unsigned long long)pg->wait_ms);
            metrics_count(METRICS_F_PREGREET, "pass", NULL);
        }
    }
    finish(pg, CHECK_ACCEPT, 0, "");
}

void
check_pregreet_allowlisted(struct check_session *cs)
{
    struct pregreet *pg = check_state(cs, &check_pregreet);

    if (pg == NULL || !pg->waiting || pg->failed || pg->allowlisted)
        return;
    pg->allowlisted = true;
    /* at the next turn of the loop: the DNSBL check is inside its answer */
    uv_timer_start(&pg->timer, on_wait_over, 0, 0);
}

static void
pregreet_connect(void *arg, struct check_ticket t)
{
    struct pregreet *pg = arg;
    const struct check_info *in = check_info(pg->cs);
    const struct conf *c = in->conf;
    const struct check_facts *f = check_facts(pg->cs);
    char teaser[300];

    if (c->greet_action == CONF_GREET_OFF) {
        check_pass(t);
        return;
    }
    if (conf_cidr_match(c->trusted_networks, c->ntrusted_networks,
                        (const struct sockaddr *)&in->client.peer)) {
        metrics_count(METRICS_F_PREGREET, "trusted", NULL);
        check_pass(t);
        return;
    }
    if (f->screen.until[SCREEN_PREGREET] > (int64_t)time(NULL)) {
        log_msg(LOG_INFO, NULL, "check", "pregreet client=%s result=known", in->client.ip);
        metrics_count(METRICS_F_PREGREET, "known", NULL);
        check_pass(t);
        return;
    }
    pg->t = t;
    pg->waiting = true;
    pg->wait_ms = pregreet_wait_ms(c->greet_wait_ms, c->greet_stress_wait_ms,
                                   in->env.connections_open, c->max_connections);
    if (uv_timer_init(in->env.loop, &pg->timer) != 0)
        mxd_panic("check_pregreet: uv_timer_init failed");
    pg->timer.data = pg;
    check_hold(pg->cs);
    check_facts(pg->cs)->screen.pregreet_waited = true;
    uv_timer_start(&pg->timer, on_wait_over, pg->wait_ms, 0);
    /* It may have talked already, while the memory was asked. */
    if (f->screen.early_octets > 0 || f->screen.early_eof) {
        decide_early(pg);
        if (!pg->waiting)
            return;
    }
    if (c->greet_banner) {
        snprintf(teaser, sizeof(teaser), "%s ESMTP", c->hostname);
        check_teaser(pg->cs, teaser);
    }
}

static void *
pregreet_start(struct check_session *cs)
{
    struct pregreet *pg = xcalloc(1, sizeof(*pg));

    pg->cs = cs;
    return pg;
}

static void
pregreet_stop(void *arg)
{
    free(arg);
}

const struct check_ops check_pregreet = {
    .name = "pregreet",
    .start = pregreet_start,
    .stop = pregreet_stop,
    .connect = pregreet_connect,
    .early = pregreet_early,
};
