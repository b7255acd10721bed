/* check: the pipeline (check.h for the contract, check_impl.h for what a
 * check is). One struct check_session per connection: the checks' states,
 * what the connection and the transaction have learned (check_facts,
 * check_txn_facts), the stage in flight and its budget timer. Loop thread
 * only.
 *
 * A stage runs its checks one after another: run() calls a hook; a hook
 * that answers inside the call lets the loop go on, one that answers later
 * resumes it from check_answer. The first check that does not accept ends
 * the stage. The budget timer answers for a check that has not answered
 * in time; its ticket then no longer matches (gen) and its late answer is
 * dropped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "check/check_impl.h"

/* What a transaction needs (about 18 KiB), allocated at the first MAIL
 * and reused: a connection that never sends MAIL does not carry it
 * (10,000 idle connections: tests/bench/run.sh). */
struct txn {
    struct check_txn_facts facts;
    struct addr sender;
    struct addr rcpt; /* of the RCPT stage in flight */
};

struct check_session {
    struct check_info info;
    struct check_facts facts;
    struct txn *txn; /* NULL until the first MAIL */
    const struct check_ops *const *list;
    size_t n;
    void **st; /* each check's state */
    check_sink_cb sink;
    void *sink_arg;
    check_teaser_cb teaser;
    void *teaser_arg;
    bool teaser_sent;
    uint64_t budget_ms;
    uv_timer_t timer;
    unsigned holds; /* work out that will call back, and the timer */
    bool dead;      /* check_session_free was called */
    /* the stage in flight */
    bool asking, waiting, in_hook;
    enum check_stage stage;
    size_t next;    /* the check to run next */
    size_t current; /* the check that was asked */
    unsigned gen;   /* tickets: the answer awaited carries this */
    check_done_cb done;
    void *done_arg;
    struct check_verdict verdict;
    /* end of data: header fields to add */
    char *fields;
    size_t fields_len, fields_cap;
    /* the content filters' edits, and their flow */
    struct check_edits edits;
    check_rewind_cb rewind;
    check_resume_cb resume;
    bool busy;
};

static const struct addr no_sender; /* info.sender before MAIL */

static const char *const stage_names[] = {"connect", "helo", "mail", "rcpt", "end"};

struct check_session *
check_session_new_list(const struct check_env *env, const struct conf *conf,
                       const struct check_client *client, check_sink_cb sink, void *sink_arg,
                       const struct check_ops *const *list, size_t n, uint64_t budget_ms)
{
    struct check_session *cs = xcalloc(1, sizeof(*cs));

    cs->info.conf = conf_ref(conf);
    cs->info.env = *env;
    cs->info.client = *client;
    cs->info.sender = &no_sender;
    cs->info.started_ms = uv_now(env->loop);
    cs->list = list;
    cs->n = n;
    cs->st = xcalloc(n > 0 ? n : 1, sizeof(*cs->st));
    cs->sink = sink;
    cs->sink_arg = sink_arg;
    cs->budget_ms = budget_ms > 0 ? budget_ms : conf->command_timeout_ms;
    if (uv_timer_init(env->loop, &cs->timer) != 0)
        mxd_panic("check: uv_timer_init failed");
    cs->timer.data = cs;
    cs->holds = 1; /* the timer, until closed */
    for (size_t i = 0; i < n; i++)
        if (list[i]->start != NULL)
            cs->st[i] = list[i]->start(cs);
    return cs;
}

static void
edits_clear(struct check_edits *e)
{
    free(e->header);
    free(e->sender);
    for (size_t i = 0; i < e->nadd; i++) {
        free(e->add[i].address);
        free(e->add[i].domain);
    }
    free(e->add);
    for (size_t i = 0; i < e->ndel; i++)
        free(e->del[i]);
    free(e->del);
    free(e->quarantine);
    *e = (struct check_edits){0};
}

static bool
edits_made(const struct check_edits *e)
{
    return e->header != NULL || e->sender != NULL || e->nadd > 0 || e->ndel > 0 ||
           e->quarantine != NULL;
}

static void
really_free(struct check_session *cs)
{
    edits_clear(&cs->edits);
    for (size_t i = 0; i < cs->n; i++)
        if (cs->list[i]->stop != NULL)
            cs->list[i]->stop(cs->st[i]);
    conf_free((struct conf *)cs->info.conf);
    free(cs->st);
    free(cs->fields);
    free(cs->txn);
    free(cs);
}

void
check_hold(struct check_session *cs)
{
    cs->holds++;
}

bool
check_unhold(struct check_session *cs)
{
    if (--cs->holds == 0 && cs->dead) {
        really_free(cs);
        return true;
    }
    return cs->dead;
}

static void
timer_closed(uv_handle_t *h)
{
    check_unhold(h->data);
}

void
check_session_free(struct check_session *cs)
{
    if (cs == NULL)
        return;
    if (cs->asking)
        mxd_panic("check_session_free: a stage is in flight");
    cs->dead = true;
    uv_close((uv_handle_t *)&cs->timer, timer_closed);
}

const struct check_info *
check_info(const struct check_session *cs)
{
    return &cs->info;
}

void *
check_state(struct check_session *cs, const struct check_ops *ops)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->list[i] == ops)
            return cs->st[i];
    return NULL;
}

struct check_facts *
check_facts(struct check_session *cs)
{
    return &cs->facts;
}

static struct txn *
txn_of(struct check_session *cs)
{
    if (cs->txn == NULL)
        cs->txn = xcalloc(1, sizeof(*cs->txn));
    return cs->txn;
}

struct check_txn_facts *
check_txn_facts(struct check_session *cs)
{
    return &txn_of(cs)->facts;
}

/* ---- stages ------------------------------------------------------------ */

static bool
has_hook(const struct check_ops *o, enum check_stage stage)
{
    switch (stage) {
    case CHECK_STAGE_CONNECT:
        return o->connect != NULL;
    case CHECK_STAGE_HELO:
        return o->helo != NULL;
    case CHECK_STAGE_MAIL:
        return o->mail != NULL;
    case CHECK_STAGE_RCPT:
        return o->rcpt != NULL;
    case CHECK_STAGE_END:
        return o->end != NULL;
    }
    return false;
}

static void
call_hook(struct check_session *cs, size_t i, struct check_ticket t)
{
    const struct check_ops *o = cs->list[i];

    switch (cs->stage) {
    case CHECK_STAGE_CONNECT:
        o->connect(cs->st[i], t);
        break;
    case CHECK_STAGE_HELO:
        o->helo(cs->st[i], t);
        break;
    case CHECK_STAGE_MAIL:
        o->mail(cs->st[i], t);
        break;
    case CHECK_STAGE_RCPT:
        o->rcpt(cs->st[i], t, &cs->txn->rcpt);
        break;
    case CHECK_STAGE_END:
        o->end(cs->st[i], t);
        break;
    }
}

static void
reset_hooks(struct check_session *cs)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->list[i]->reset != NULL)
            cs->list[i]->reset(cs->st[i]);
}

/* SPF passed for the MAIL FROM domain itself (not the HELO identity of
 * <>), or DKIM passed aligned with it. */
static bool
return_path_auth(struct check_session *cs)
{
    const struct check_txn_facts *f = check_txn_facts(cs);
    const struct addr *a = cs->info.sender;

    if (a == NULL || a->is_null || a->domain_lc[0] == '\0')
        return false;
    if (f->spf_done && f->spf.res == SPF_RES_PASS && !f->spf.helo_identity &&
        ascii_casecmp(f->spf.domain, a->domain_lc) == 0)
        return true;
    return f->dkim_rp_aligned;
}

/* The stage has its answer: give it to the session. Nothing of the stage
 * is touched after done, which may ask the next stage. */
static void
finish(struct check_session *cs)
{
    struct check_verdict v = cs->verdict;
    check_done_cb done = cs->done;
    void *arg = cs->done_arg;

    uv_timer_stop(&cs->timer);
    cs->asking = false;
    cs->waiting = false;
    if (cs->stage == CHECK_STAGE_END && v.action == CHECK_ACCEPT) {
        v.fields = cs->fields != NULL ? cs->fields : "";
        v.fields_len = cs->fields_len;
        v.hops = check_txn_facts(cs)->received + 1;
        v.client_name = cs->facts.client_name;
        v.edits = edits_made(&cs->edits) ? &cs->edits : NULL;
        v.return_auth = return_path_auth(cs);
    }
    if (cs->stage == CHECK_STAGE_HELO && v.action != CHECK_ACCEPT)
        cs->info.helo[0] = '\0';
    if (cs->stage == CHECK_STAGE_END) /* the transaction is over (v has the fields) */
        reset_hooks(cs);
    done(arg, &v);
}

static void
on_budget(uv_timer_t *t)
{
    struct check_session *cs = t->data;

    log_msg(LOG_WARN, cs->info.qid[0] ? cs->info.qid : NULL, "check",
            "no answer in time check=%s stage=%s client=%s budget_ms=%llu",
            cs->list[cs->current]->name, stage_names[cs->stage], cs->info.client.ip,
            (unsigned long long)cs->budget_ms);
    cs->gen++; /* its answer, if it comes, is dropped */
    cs->verdict.action = CHECK_TEMPFAIL;
    cs->verdict.code = 451;
    snprintf(cs->verdict.text, sizeof(cs->verdict.text),
             "4.3.0 Error: checks did not finish in time, try again later");
    finish(cs);
}

/* Runs the stage's checks from cs->next until one waits or decides. */
static void
run(struct check_session *cs)
{
    while (cs->next < cs->n) {
        size_t i = cs->next++;

        if (!has_hook(cs->list[i], cs->stage))
            continue;
        cs->current = i;
        cs->waiting = true;
        cs->in_hook = true;
        call_hook(cs, i, (struct check_ticket){cs, ++cs->gen});
        cs->in_hook = false;
        if (cs->waiting) {
            if (!uv_is_active((uv_handle_t *)&cs->timer))
                uv_timer_start(&cs->timer, on_budget, cs->budget_ms, 0);
            return;
        }
        if (cs->verdict.action != CHECK_ACCEPT)
            break;
    }
    finish(cs);
}

static void
stage_begin(struct check_session *cs, enum check_stage stage, check_done_cb done, void *arg)
{
    if (cs->asking)
        mxd_panic("check: stage %s asked while %s is in flight", stage_names[stage],
                  stage_names[cs->stage]);
    cs->asking = true;
    cs->stage = stage;
    cs->done = done;
    cs->done_arg = arg;
    cs->next = 0;
    memset(&cs->verdict, 0, sizeof(cs->verdict));
    cs->verdict.action = CHECK_ACCEPT;
    run(cs);
}

void
check_answer(struct check_ticket t, enum check_action action, int code, const char *text)
{
    struct check_session *cs = t.cs;

    if (!check_ticket_live(t))
        return; /* too late: the budget answered, or the connection is gone */
    if ((action == CHECK_TEMPFAIL && (code < 400 || code > 499)) ||
        (action == CHECK_REJECT && (code < 500 || code > 599)) ||
        (action == CHECK_DROP && cs->stage != CHECK_STAGE_CONNECT) ||
        (action == CHECK_DISCARD && (code != 250 || cs->stage != CHECK_STAGE_END)))
        mxd_panic("check %s: reply code %d for action %d", cs->list[cs->current]->name, code,
                  (int)action);
    cs->waiting = false;
    if (action != CHECK_ACCEPT) {
        cs->verdict.action = action;
        cs->verdict.code = code;
        snprintf(cs->verdict.text, sizeof(cs->verdict.text), "%s", text);
    }
    if (cs->in_hook)
        return; /* run() goes on */
    if (action != CHECK_ACCEPT)
        finish(cs);
    else
        run(cs);
}

bool
check_ticket_live(struct check_ticket t)
{
    const struct check_session *cs = t.cs;

    return !cs->dead && cs->asking && cs->waiting && t.gen == cs->gen;
}

void
check_pass(struct check_ticket t)
{
    check_answer(t, CHECK_ACCEPT, 0, "");
}

void
check_connect(struct check_session *cs, check_done_cb done, void *arg)
{
    stage_begin(cs, CHECK_STAGE_CONNECT, done, arg);
}

void
check_set_teaser(struct check_session *cs, check_teaser_cb teaser, void *arg)
{
    cs->teaser = teaser;
    cs->teaser_arg = arg;
}

void
check_tls(struct check_session *cs, const char *version, const char *cipher)
{
    snprintf(cs->info.tls_version, sizeof(cs->info.tls_version), "%s", version);
    snprintf(cs->info.tls_cipher, sizeof(cs->info.tls_cipher), "%s", cipher);
}

void
check_set_content(struct check_session *cs, check_rewind_cb rewind, check_resume_cb resume)
{
    cs->rewind = rewind;
    cs->resume = resume;
}

bool
check_busy(const struct check_session *cs)
{
    return cs != NULL && cs->busy;
}

struct check_edits *
check_edits(struct check_session *cs)
{
    return &cs->edits;
}

bool
check_rewind(struct check_session *cs)
{
    if (cs->rewind == NULL || cs->dead)
        return false;
    cs->rewind(cs->sink_arg);
    return true;
}

void
check_set_busy(struct check_session *cs, bool busy)
{
    bool was = cs->busy;

    cs->busy = busy;
    if (was && !busy && !cs->dead && cs->resume != NULL)
        cs->resume(cs->sink_arg);
}

bool
check_teaser(struct check_session *cs, const char *text)
{
    if (cs->teaser == NULL || cs->teaser_sent || !cs->asking || cs->stage != CHECK_STAGE_CONNECT)
        return false;
    cs->teaser_sent = true;
    cs->teaser(cs->teaser_arg, text);
    return true;
}

void
check_input_early(struct check_session *cs, const char *data, size_t len, bool eof)
{
    struct check_screen_facts *f = &cs->facts.screen;
    size_t keep;

    if (cs->dead || (len == 0 && !eof))
        return;
    if (f->early_octets == 0 && !f->early_eof)
        f->early_ms = uv_now(cs->info.env.loop) - cs->info.started_ms;
    keep = sizeof(f->early_head) - f->early_head_len;
    keep = len < keep ? len : keep;
    if (keep > 0) {
        memcpy(f->early_head + f->early_head_len, data, keep);
        f->early_head_len += keep;
    }
    f->early_octets += len;
    f->early_eof = f->early_eof || eof;
    /* a hook may answer the stage; the others still see the input */
    for (size_t i = 0; i < cs->n && !cs->dead; i++)
        if (cs->list[i]->early != NULL)
            cs->list[i]->early(cs->st[i]);
}

void
check_helo(struct check_session *cs, const char *helo, check_done_cb done, void *arg)
{
    snprintf(cs->info.helo, sizeof(cs->info.helo), "%s", helo);
    stage_begin(cs, CHECK_STAGE_HELO, done, arg);
}

void
check_reset(struct check_session *cs)
{
    reset_hooks(cs);
    cs->fields_len = 0;
    edits_clear(&cs->edits);
    check_set_busy(cs, false);
}

void
check_mail(struct check_session *cs, const char *qid, const struct addr *sender, check_done_cb done,
           void *arg)
{
    struct txn *t;

    check_reset(cs);
    /* what the checks learned of the transaction goes; of the connection
     * (the screening's facts, client_trusted) stays */
    t = txn_of(cs);
    memset(&t->facts, 0, sizeof(t->facts));
    snprintf(cs->info.qid, sizeof(cs->info.qid), "%s", qid);
    t->sender = *sender;
    cs->info.sender = &t->sender;
    stage_begin(cs, CHECK_STAGE_MAIL, done, arg);
}

void
check_rcpt(struct check_session *cs, const struct addr *rcpt, check_done_cb done, void *arg)
{
    txn_of(cs)->rcpt = *rcpt;
    stage_begin(cs, CHECK_STAGE_RCPT, done, arg);
}

void
check_end(struct check_session *cs, check_done_cb done, void *arg)
{
    stage_begin(cs, CHECK_STAGE_END, done, arg);
}

/* ---- content ----------------------------------------------------------- */

/* Content into the first filter at or after index from, or the sink. */
static void
emit_from(struct check_session *cs, size_t from, const char *data, size_t len)
{
    for (size_t i = from; i < cs->n; i++) {
        if (cs->list[i]->filter != NULL) {
            cs->list[i]->filter(cs->st[i], data, len);
            return;
        }
    }
    cs->sink(cs->sink_arg, data, len);
}

void
check_emit(struct check_stream out, const char *data, size_t len)
{
    emit_from(out.cs, out.next, data, len);
}

void
check_data(struct check_session *cs)
{
    cs->fields_len = 0;
    edits_clear(&cs->edits);
    /* last to first: a filter's stream is ready before anything can flow
     * into it, even from a data hook before it */
    for (size_t i = cs->n; i-- > 0;)
        if (cs->list[i]->data != NULL)
            cs->list[i]->data(cs->st[i], (struct check_stream){cs, i + 1});
}

void
check_body(struct check_session *cs, const char *data, size_t len)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->list[i]->observe != NULL)
            cs->list[i]->observe(cs->st[i], data, len);
    emit_from(cs, 0, data, len);
}

void
check_add_fields(struct check_session *cs, const char *fields, size_t len)
{
    if (cs->fields_len + len + 1 > cs->fields_cap) {
        size_t cap = cs->fields_cap ? cs->fields_cap : 1024;

        while (cap < cs->fields_len + len + 1)
            cap *= 2;
        cs->fields = xrealloc(cs->fields, cap);
        cs->fields_cap = cap;
    }
    memcpy(cs->fields + cs->fields_len, fields, len);
    cs->fields_len += len;
    cs->fields[cs->fields_len] = '\0';
}
