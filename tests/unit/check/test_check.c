/* Unit tests for the check pipeline (check.c), driven through
 * check_session_new_list with fake checks on a loop of each test's own, no
 * sockets. A fake's behaviour at each stage is data (answer now, later,
 * never, twice, after the budget). Covered: a table of stages (the verdict,
 * one answer, which checks ran and in what order, in the call or from the
 * loop); the content through observers and filters to the sink; the header
 * fields and hops of an accepted end; resets at MAIL and after the end;
 * holds that keep a check's state past check_session_free; a done callback
 * that asks the next stage; the stage budget; the HELO name. Every test
 * ends with uv_run() returning and uv_loop_close() == 0. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "base/conf.h"
#include "check/check.h"
#include "check/check_impl.h"

#define NFAKE_MAX 4
#define NDONE_MAX 4
#define BUDGET_MS 100
#define HELO_NAME "client.example.test"
#define MAGIC     0x6368656bu
#define CONF_TEXT "[server]\nhostname = mx.example.test\ndatabase = /nonexistent/q.db\n"

/* ---- fake checks --------------------------------------------------------- */

enum how {
    H_NONE,           /* no hook for the stage */
    H_NOW,            /* answers inside the hook (code 0: passes) */
    H_LATER,          /* answers from a timer after ms */
    H_NEVER,          /* never answers */
    H_TWICE,          /* answers, then at once the opposite */
    H_TWICE_LATER,    /* the same from a timer after ms */
    H_NOW_THEN_LATER, /* answers now, and the opposite after ms */
    H_LATE,           /* answers BUDGET_MS + ms after the hook */
    H_WORK,           /* passes now; held work comes back after ms */
};

struct step {
    enum how how;
    int code;         /* 0: pass; 4xx or 5xx: refuse with text */
    const char *text; /* "5.7.1 ..." */
    unsigned ms;
};

/* clang-format off */
#define PASS                   {H_NOW, 0, NULL, 0}
#define PASS_LATER(ms)         {H_LATER, 0, NULL, ms}
#define REFUSE(c, t)           {H_NOW, c, t, 0}
#define REFUSE_LATER(ms, c, t) {H_LATER, c, t, ms}
#define NEVER                  {H_NEVER, 0, NULL, 0}
/* clang-format on */

/* The second answer of H_TWICE*, H_NOW_THEN_LATER: the opposite of the first. */
#define SECOND_CODE 550
#define SECOND_TEXT "5.7.1 second answer"

enum role { R_NONE, R_OBSERVE, R_UPPER, R_DROP };

struct fake_def {
    const char *name;
    struct step at[CHECK_STAGE_END + 1];
    enum role role;     /* content: observer or filter */
    const char *fields; /* added in the end hook (NULL: none) */
    unsigned received;  /* facts->received set in the end hook (0: untouched) */
    bool no_reset;      /* without a reset hook */
};

/* One done callback's answer. */
struct got {
    struct check_verdict v;
    char fields[4096]; /* a copy of v.fields */
    bool sync;         /* done ran inside the call that asked */
    uint64_t after_ms; /* since the stage was asked */
};

struct harness {
    uv_loop_t loop;
    struct conf *conf;
    struct check_session *cs;
    const struct fake_def *defs;
    size_t n, nstarted;
    struct check_ops ops[NFAKE_MAX];
    const struct check_ops *list[NFAKE_MAX];
    unsigned stops[NFAKE_MAX], resets[NFAKE_MAX];
    char ran[512]; /* the stage hooks called, by name */
    char seq[512]; /* the same and the reset hooks, as "~name" */
    /* content */
    char ev[256]; /* "o<i>" observe, "f<i>" filter, "s" sink */
    char seen[NFAKE_MAX][1024];
    char sink[1024];
    size_t sink_len;
    unsigned bad_streams; /* data hooks given a stream not for the next check */
    /* the stages asked, and their answers */
    struct addr sender, rcpt[3];
    size_t nrcpt;
    bool in_call;
    uint64_t asked_at;
    struct got got[NDONE_MAX];
    size_t ndone;
    enum check_stage then[NDONE_MAX]; /* done number k asks then[k] next */
    size_t nthen;
    bool free_in_done;
    /* what hooks saw */
    char helo_seen[256], hostname_seen[256], mail_qid[32], rcpts_seen[256];
    char mail_sender[ADDR_PATH_MAX];
    unsigned mail_received;
    bool mail_spf_done;
    /* work from timers (later answers, held work) */
    unsigned back;                  /* timers that fired */
    unsigned stops_at_back;         /* stops when the last one fired */
    bool state_ok_at_back;          /* its check's state was intact */
    unsigned unholds_gone;          /* check_unhold returned true */
    unsigned gone_stops[NFAKE_MAX]; /* stops after each such check_unhold */
    unsigned stops_after_gone;      /* ... after the last one */
};

struct fake {
    unsigned magic;
    struct harness *h;
    size_t i;
    struct check_session *cs;
    struct check_stream out;
    char line[256]; /* the drop filter's partial line */
    size_t line_len;
};

/* An answer or held work out on a timer of its own; holds the pipeline. */
struct later {
    uv_timer_t timer;
    struct fake *f;
    struct check_session *cs;
    struct check_ticket t;
    int code[2];
    const char *text[2];
    int nanswers; /* 0: work that does not answer */
};

static void note(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
note(char *buf, size_t size, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf + used, size - used, fmt, ap);
    va_end(ap);
}

static void
note_word(char *buf, size_t size, const char *word)
{
    note(buf, size, "%s%s", buf[0] != '\0' ? "," : "", word);
}

static unsigned
sum_stops(const struct harness *h)
{
    unsigned n = 0;

    for (size_t i = 0; i < h->n; i++)
        n += h->stops[i];
    return n;
}

static void
answer(struct check_ticket t, int code, const char *text)
{
    if (code == 0)
        check_pass(t);
    else
        check_answer(t, code < 500 ? CHECK_TEMPFAIL : CHECK_REJECT, code, text);
}

static void
later_closed(uv_handle_t *hd)
{
    struct later *l = hd->data;
    struct harness *h = l->f->h;
    struct check_session *cs = l->cs;

    free(l);
    if (check_unhold(cs)) { /* cs and the check's state may be gone */
        h->stops_after_gone = sum_stops(h);
        if (h->unholds_gone < NFAKE_MAX)
            h->gone_stops[h->unholds_gone] = h->stops_after_gone;
        h->unholds_gone++;
    }
}

static void
later_cb(uv_timer_t *timer)
{
    struct later *l = timer->data;
    struct harness *h = l->f->h;

    h->back++;
    h->stops_at_back = sum_stops(h);
    h->state_ok_at_back = l->f->magic == MAGIC;
    for (int k = 0; k < l->nanswers; k++)
        answer(l->t, l->code[k], l->text[k]);
    uv_close((uv_handle_t *)&l->timer, later_closed);
}

/* nanswers from a timer after ms: (code, text), then the opposite. */
static void
schedule(struct fake *f, struct check_ticket t, unsigned ms, int nanswers, int code,
         const char *text)
{
    struct later *l = calloc(1, sizeof(*l));

    assert_non_null(l);
    l->f = f;
    l->cs = f->cs;
    l->t = t;
    l->nanswers = nanswers;
    l->code[0] = code;
    l->text[0] = text;
    l->code[1] = code == 0 ? SECOND_CODE : 0;
    l->text[1] = code == 0 ? SECOND_TEXT : NULL;
    assert_int_equal(uv_timer_init(check_info(f->cs)->env.loop, &l->timer), 0);
    l->timer.data = l;
    check_hold(f->cs);
    assert_int_equal(uv_timer_start(&l->timer, later_cb, ms, 0), 0);
}

static void
fake_hook(struct fake *f, enum check_stage stage, struct check_ticket t)
{
    const struct fake_def *d = &f->h->defs[f->i];
    const struct step *s = &d->at[stage];

    note_word(f->h->ran, sizeof(f->h->ran), d->name);
    note_word(f->h->seq, sizeof(f->h->seq), d->name);
    switch (s->how) {
    case H_NONE:
        fail_msg("%s: a hook it does not have was called", d->name);
        break;
    case H_NOW:
        answer(t, s->code, s->text);
        break;
    case H_LATER:
        schedule(f, t, s->ms, 1, s->code, s->text);
        break;
    case H_NEVER:
        break;
    case H_TWICE:
        answer(t, s->code, s->text);
        answer(t, s->code == 0 ? SECOND_CODE : 0, SECOND_TEXT);
        break;
    case H_TWICE_LATER:
        schedule(f, t, s->ms, 2, s->code, s->text);
        break;
    case H_NOW_THEN_LATER:
        answer(t, s->code, s->text);
        schedule(f, t, s->ms, 1, s->code == 0 ? SECOND_CODE : 0, SECOND_TEXT);
        break;
    case H_LATE:
        schedule(f, t, BUDGET_MS + s->ms, 1, s->code, s->text);
        break;
    case H_WORK:
        schedule(f, t, s->ms, 0, 0, NULL);
        check_pass(t);
        break;
    }
}

static void *
fake_start(struct check_session *cs)
{
    struct harness *h = check_info(cs)->env.loop->data;
    struct fake *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    assert_true(h->nstarted < h->n);
    f->magic = MAGIC;
    f->h = h;
    f->i = h->nstarted++;
    f->cs = cs;
    return f;
}

static void
fake_stop(void *st)
{
    struct fake *f = st;

    assert_int_equal(f->magic, MAGIC);
    f->h->stops[f->i]++;
    f->magic = 0;
    free(f);
}

static void
fake_reset(void *st)
{
    struct fake *f = st;
    char word[32];

    f->h->resets[f->i]++;
    snprintf(word, sizeof(word), "~%s", f->h->defs[f->i].name);
    note_word(f->h->seq, sizeof(f->h->seq), word);
}

static void
fake_connect(void *st, struct check_ticket t)
{
    fake_hook(st, CHECK_STAGE_CONNECT, t);
}

static void
fake_helo(void *st, struct check_ticket t)
{
    struct fake *f = st;
    const struct check_info *ci = check_info(f->cs);

    snprintf(f->h->helo_seen, sizeof(f->h->helo_seen), "%s", ci->helo);
    snprintf(f->h->hostname_seen, sizeof(f->h->hostname_seen), "%s", ci->conf->hostname);
    fake_hook(f, CHECK_STAGE_HELO, t);
}

static void
fake_mail(void *st, struct check_ticket t)
{
    struct fake *f = st;
    struct harness *h = f->h;
    const struct check_info *ci = check_info(f->cs);

    h->mail_received = check_txn_facts(f->cs)->received;
    h->mail_spf_done = check_txn_facts(f->cs)->spf_done;
    snprintf(h->mail_qid, sizeof(h->mail_qid), "%s", ci->qid);
    snprintf(h->mail_sender, sizeof(h->mail_sender), "%s", ci->sender->mailbox);
    fake_hook(f, CHECK_STAGE_MAIL, t);
}

static void
fake_rcpt(void *st, struct check_ticket t, const struct addr *rcpt)
{
    struct fake *f = st;

    note(f->h->rcpts_seen, sizeof(f->h->rcpts_seen), "%s%s", f->h->rcpts_seen[0] ? "," : "",
         rcpt->mailbox);
    fake_hook(f, CHECK_STAGE_RCPT, t);
}

static void
fake_end(void *st, struct check_ticket t)
{
    struct fake *f = st;
    const struct fake_def *d = &f->h->defs[f->i];

    if (d->fields != NULL)
        check_add_fields(f->cs, d->fields, strlen(d->fields));
    if (d->received > 0)
        check_txn_facts(f->cs)->received = d->received;
    fake_hook(f, CHECK_STAGE_END, t);
}

/* ---- content: observers and filters ------------------------------------ */

static void
fake_data(void *st, struct check_stream out)
{
    struct fake *f = st;

    if (out.cs != f->cs || out.next != f->i + 1)
        f->h->bad_streams++;
    f->out = out;
    f->line_len = 0;
}

static void
fake_observe(void *st, const char *data, size_t len)
{
    struct fake *f = st;

    note(f->h->ev, sizeof(f->h->ev), "o%zu", f->i);
    note(f->h->seen[f->i], sizeof(f->h->seen[f->i]), "%.*s", (int)len, data);
}

static void
upper_filter(struct fake *f, const char *data, size_t len)
{
    char buf[1024];

    assert_true(len <= sizeof(buf));
    for (size_t k = 0; k < len; k++)
        buf[k] = data[k] >= 'a' && data[k] <= 'z' ? (char)(data[k] - 'a' + 'A') : data[k];
    check_emit(f->out, buf, len);
}

/* Drops the lines that begin "x-drop:" (as written); keeps a partial line
 * until its end comes. */
static void
drop_filter(struct fake *f, const char *data, size_t len)
{
    char keep[1024];
    size_t n = 0;

    for (size_t k = 0; k < len; k++) {
        assert_true(f->line_len < sizeof(f->line));
        f->line[f->line_len++] = data[k];
        if (data[k] != '\n')
            continue;
        if (f->line_len < 7 || memcmp(f->line, "x-drop:", 7) != 0) {
            assert_true(n + f->line_len <= sizeof(keep));
            memcpy(keep + n, f->line, f->line_len);
            n += f->line_len;
        }
        f->line_len = 0;
    }
    if (n > 0)
        check_emit(f->out, keep, n);
}

static void
fake_filter(void *st, const char *data, size_t len)
{
    struct fake *f = st;

    note(f->h->ev, sizeof(f->h->ev), "f%zu", f->i);
    note(f->h->seen[f->i], sizeof(f->h->seen[f->i]), "%.*s", (int)len, data);
    if (f->h->defs[f->i].role == R_UPPER)
        upper_filter(f, data, len);
    else
        drop_filter(f, data, len);
}

static void
sink_cb(void *arg, const char *data, size_t len)
{
    struct harness *h = arg;

    note(h->ev, sizeof(h->ev), "s");
    assert_true(h->sink_len + len < sizeof(h->sink));
    memcpy(h->sink + h->sink_len, data, len);
    h->sink_len += len;
    h->sink[h->sink_len] = '\0';
}

/* ---- the harness --------------------------------------------------------- */

static void
make_addr(struct addr *a, const char *local, const char *domain)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->mailbox, sizeof(a->mailbox), "%s@%s", local, domain);
    snprintf(a->local, sizeof(a->local), "%s", local);
    snprintf(a->domain, sizeof(a->domain), "%s", domain);
    snprintf(a->domain_lc, sizeof(a->domain_lc), "%s", domain);
}

static void
build_ops(struct harness *h)
{
    for (size_t i = 0; i < h->n; i++) {
        const struct fake_def *d = &h->defs[i];
        struct check_ops *o = &h->ops[i];

        o->name = d->name;
        o->start = fake_start;
        o->stop = fake_stop;
        o->connect = d->at[CHECK_STAGE_CONNECT].how != H_NONE ? fake_connect : NULL;
        o->helo = d->at[CHECK_STAGE_HELO].how != H_NONE ? fake_helo : NULL;
        o->mail = d->at[CHECK_STAGE_MAIL].how != H_NONE ? fake_mail : NULL;
        o->rcpt = d->at[CHECK_STAGE_RCPT].how != H_NONE ? fake_rcpt : NULL;
        o->end = d->at[CHECK_STAGE_END].how != H_NONE ? fake_end : NULL;
        o->data = d->role != R_NONE ? fake_data : NULL;
        o->observe = d->role == R_OBSERVE ? fake_observe : NULL;
        o->filter = d->role == R_UPPER || d->role == R_DROP ? fake_filter : NULL;
        o->reset = d->no_reset ? NULL : fake_reset;
        h->list[i] = o;
    }
}

static void
harness_init(struct harness *h, const struct fake_def *defs, size_t n)
{
    struct check_client client;
    struct sockaddr_in *sin = (struct sockaddr_in *)&client.peer;
    char *err = NULL;

    memset(h, 0, sizeof(*h));
    assert_true(n <= NFAKE_MAX);
    h->defs = defs;
    h->n = n;
    build_ops(h);
    assert_int_equal(uv_loop_init(&h->loop), 0);
    h->loop.data = h;
    if (conf_parse_string(CONF_TEXT, "t.conf", &h->conf, &err) != 0)
        fail_msg("conf: %s", err != NULL ? err : "?");
    memset(&client, 0, sizeof(client));
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(0xc0000201); /* 192.0.2.1 */
    snprintf(client.ip, sizeof(client.ip), "192.0.2.1");
    make_addr(&h->sender, "sender", "example.org");
    make_addr(&h->rcpt[0], "r1", "example.net");
    make_addr(&h->rcpt[1], "r2", "example.net");
    make_addr(&h->rcpt[2], "r3", "example.net");
    h->cs = check_session_new_list(&(struct check_env){&h->loop, NULL, NULL, NULL}, h->conf,
                                   &client, sink_cb, h, h->list, n, BUDGET_MS);
    assert_non_null(h->cs);
    assert_int_equal(h->nstarted, n);
    assert_int_equal(h->conf->refs, 2); /* the pipeline took a reference */
}

/* Frees the session (unless done did), runs the loop dry: every check
 * stopped once, the conf reference dropped, no handle left. */
static void
harness_end(struct harness *h)
{
    check_session_free(h->cs);
    h->cs = NULL;
    assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
    for (size_t i = 0; i < h->n; i++)
        assert_int_equal(h->stops[i], 1);
    assert_int_equal(h->conf->refs, 1);
    conf_free(h->conf);
    assert_int_equal(uv_loop_close(&h->loop), 0);
}

static void done_cb(void *arg, const struct check_verdict *v);

static void
ask(struct harness *h, enum check_stage stage)
{
    bool was = h->in_call;

    h->in_call = true;
    uv_update_time(&h->loop); /* timers and budget count from here */
    h->asked_at = uv_now(&h->loop);
    switch (stage) {
    case CHECK_STAGE_CONNECT:
        check_connect(h->cs, done_cb, h);
        break;
    case CHECK_STAGE_HELO:
        check_helo(h->cs, HELO_NAME, done_cb, h);
        break;
    case CHECK_STAGE_MAIL:
        check_mail(h->cs, "QID1", &h->sender, done_cb, h);
        break;
    case CHECK_STAGE_RCPT:
        assert_true(h->nrcpt < 3);
        check_rcpt(h->cs, &h->rcpt[h->nrcpt++], done_cb, h);
        break;
    case CHECK_STAGE_END:
        check_end(h->cs, done_cb, h);
        break;
    }
    h->in_call = was;
}

/* Records the answer; may ask the next stage (then[]) or free the session. */
static void
done_cb(void *arg, const struct check_verdict *v)
{
    struct harness *h = arg;
    struct got *g;

    assert_true(h->ndone < NDONE_MAX);
    g = &h->got[h->ndone++];
    g->v = *v;
    g->sync = h->in_call;
    g->after_ms = uv_now(&h->loop) - h->asked_at;
    if (v->fields != NULL)
        snprintf(g->fields, sizeof(g->fields), "%.*s", (int)v->fields_len, v->fields);
    if (h->ndone <= h->nthen) {
        ask(h, h->then[h->ndone - 1]);
    } else if (h->free_in_done) {
        check_session_free(h->cs);
        h->cs = NULL;
    }
}

static void
assert_budget_verdict(const struct got *g)
{
    assert_int_equal(g->v.action, CHECK_TEMPFAIL);
    assert_int_equal(g->v.code, 451);
    assert_non_null(strstr(g->v.text, "4.3.0"));
    assert_true(g->after_ms >= BUDGET_MS);
}

/* ---- the stages, table-driven ------------------------------------------- */

struct stage_row {
    const char *name;
    struct fake_def fakes[NFAKE_MAX];
    size_t n;
    enum check_stage stage;
    enum check_action action;
    int code;         /* when not accepted */
    const char *text; /* exact; NULL: the budget's 451 4.3.0 */
    const char *ran;  /* the stage hooks called, in order */
    bool sync;        /* done ran inside the call */
};

static const struct stage_row stage_rows[] = {
    {"no checks", {{0}}, 0, CHECK_STAGE_CONNECT, CHECK_ACCEPT, 0, "", "", true},
    {"no check has a hook for the stage",
     {{.name = "a", .at = {[CHECK_STAGE_HELO] = REFUSE(550, "5.7.1 no")}}},
     1,
     CHECK_STAGE_RCPT,
     CHECK_ACCEPT,
     0,
     "",
     "",
     true},
    {"all pass now",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = PASS}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS}},
      {.name = "c", .at = {[CHECK_STAGE_RCPT] = PASS}}},
     3,
     CHECK_STAGE_RCPT,
     CHECK_ACCEPT,
     0,
     "",
     "a,b,c",
     true},
    {"a check without the hook is skipped",
     {{.name = "a", .at = {[CHECK_STAGE_MAIL] = PASS}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS}},
      {.name = "c", .at = {[CHECK_STAGE_MAIL] = REFUSE(451, "4.7.1 c says later")}}},
     3,
     CHECK_STAGE_MAIL,
     CHECK_TEMPFAIL,
     451,
     "4.7.1 c says later",
     "a,c",
     true},
    {"pass later, then now",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = PASS_LATER(5)}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS}}},
     2,
     CHECK_STAGE_RCPT,
     CHECK_ACCEPT,
     0,
     "",
     "a,b",
     false},
    {"5xx now: the checks after it do not run",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = PASS}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = REFUSE(550, "5.1.1 no such user")}},
      {.name = "c", .at = {[CHECK_STAGE_RCPT] = PASS}}},
     3,
     CHECK_STAGE_RCPT,
     CHECK_REJECT,
     550,
     "5.1.1 no such user",
     "a,b",
     true},
    {"4xx now at connect",
     {{.name = "a", .at = {[CHECK_STAGE_CONNECT] = REFUSE(421, "4.7.0 too busy")}},
      {.name = "b", .at = {[CHECK_STAGE_CONNECT] = PASS}}},
     2,
     CHECK_STAGE_CONNECT,
     CHECK_TEMPFAIL,
     421,
     "4.7.0 too busy",
     "a",
     true},
    {"5xx later after a later pass",
     {{.name = "a", .at = {[CHECK_STAGE_MAIL] = PASS_LATER(5)}},
      {.name = "b", .at = {[CHECK_STAGE_MAIL] = REFUSE_LATER(5, 554, "5.7.1 blocked")}},
      {.name = "c", .at = {[CHECK_STAGE_MAIL] = PASS}}},
     3,
     CHECK_STAGE_MAIL,
     CHECK_REJECT,
     554,
     "5.7.1 blocked",
     "a,b",
     false},
    {"4xx later at the end of data",
     {{.name = "a", .at = {[CHECK_STAGE_END] = REFUSE_LATER(5, 450, "4.7.0 wait")}},
      {.name = "b", .at = {[CHECK_STAGE_END] = PASS}}},
     2,
     CHECK_STAGE_END,
     CHECK_TEMPFAIL,
     450,
     "4.7.0 wait",
     "a",
     false},
    {"end of data accepted",
     {{.name = "a", .at = {[CHECK_STAGE_END] = PASS}}},
     1,
     CHECK_STAGE_END,
     CHECK_ACCEPT,
     0,
     "",
     "a",
     true},
    {"never answers: the budget's 451",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = PASS}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = NEVER}},
      {.name = "c", .at = {[CHECK_STAGE_RCPT] = PASS}}},
     3,
     CHECK_STAGE_RCPT,
     CHECK_TEMPFAIL,
     451,
     NULL,
     "a,b",
     false},
    {"answers after the budget: dropped",
     {{.name = "a", .at = {[CHECK_STAGE_HELO] = {H_LATE, 550, "5.7.1 too late", 20}}},
      {.name = "b", .at = {[CHECK_STAGE_HELO] = PASS}}},
     2,
     CHECK_STAGE_HELO,
     CHECK_TEMPFAIL,
     451,
     NULL,
     "a",
     false},
    {"the budget is the stage's, not each check's",
     {{.name = "a", .at = {[CHECK_STAGE_MAIL] = PASS_LATER(BUDGET_MS * 6 / 10)}},
      {.name = "b", .at = {[CHECK_STAGE_MAIL] = PASS_LATER(BUDGET_MS * 6 / 10)}},
      {.name = "c", .at = {[CHECK_STAGE_MAIL] = PASS}}},
     3,
     CHECK_STAGE_MAIL,
     CHECK_TEMPFAIL,
     451,
     NULL,
     "a,b",
     false},
    {"twice now, pass then refuse: the refusal is ignored",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = {H_TWICE, 0, NULL, 0}}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS}}},
     2,
     CHECK_STAGE_RCPT,
     CHECK_ACCEPT,
     0,
     "",
     "a,b",
     true},
    {"twice now, refuse then pass: the pass is ignored",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = {H_TWICE, 550, "5.7.1 first", 0}}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS}}},
     2,
     CHECK_STAGE_RCPT,
     CHECK_REJECT,
     550,
     "5.7.1 first",
     "a",
     true},
    {"twice later, refuse then pass",
     {{.name = "a", .at = {[CHECK_STAGE_CONNECT] = {H_TWICE_LATER, 450, "4.2.0 first", 5}}},
      {.name = "b", .at = {[CHECK_STAGE_CONNECT] = PASS}}},
     2,
     CHECK_STAGE_CONNECT,
     CHECK_TEMPFAIL,
     450,
     "4.2.0 first",
     "a",
     false},
    {"twice later, pass then refuse",
     {{.name = "a", .at = {[CHECK_STAGE_CONNECT] = {H_TWICE_LATER, 0, NULL, 5}}},
      {.name = "b", .at = {[CHECK_STAGE_CONNECT] = PASS}}},
     2,
     CHECK_STAGE_CONNECT,
     CHECK_ACCEPT,
     0,
     "",
     "a,b",
     false},
    {"pass now, refuse later while the next check waits",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = {H_NOW_THEN_LATER, 0, NULL, 5}}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS_LATER(20)}}},
     2,
     CHECK_STAGE_RCPT,
     CHECK_ACCEPT,
     0,
     "",
     "a,b",
     false},
};

static void
check_stage_row(const struct stage_row *row)
{
    struct harness h;
    const struct got *g = &h.got[0];

    print_message("row: %s\n", row->name);
    harness_init(&h, row->fakes, row->n);
    ask(&h, row->stage);
    assert_int_equal(h.ndone, row->sync ? 1 : 0);
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h.ndone, 1);
    assert_int_equal(g->sync, row->sync);
    assert_int_equal(g->v.action, row->action);
    if (row->text == NULL) {
        assert_budget_verdict(g);
    } else if (row->action != CHECK_ACCEPT) {
        assert_int_equal(g->v.code, row->code);
        assert_string_equal(g->v.text, row->text);
    }
    assert_string_equal(h.ran, row->ran);
    if (row->stage == CHECK_STAGE_HELO)
        assert_string_equal(check_info(h.cs)->helo, row->action == CHECK_ACCEPT ? HELO_NAME : "");
    if (row->stage == CHECK_STAGE_END && row->action == CHECK_ACCEPT) {
        assert_non_null(g->v.fields);
        assert_int_equal(g->v.fields_len, 0);
        assert_int_equal(g->v.hops, 1);
    } else {
        assert_int_equal(g->v.fields_len, 0);
    }
    harness_end(&h);
    assert_int_equal(h.ndone, 1); /* nothing after the free */
}

static void
test_check_stages(void **state)
{
    (void)state;
    for (size_t r = 0; r < sizeof(stage_rows) / sizeof(stage_rows[0]); r++)
        check_stage_row(&stage_rows[r]);
}

/* ---- content ------------------------------------------------------------- */

#define CHUNK0  "Subject: hi\r\nx-drop: yes\r\n"
#define CHUNK1  "\r\nbody x-drop: no\r\nx-dr"
#define CHUNK2  "op: also\r\nlast line\r\n"
#define CONTENT CHUNK0 CHUNK1 CHUNK2
#define KEPT    "Subject: hi\r\n\r\nbody x-drop: no\r\nlast line\r\n"

struct content_row {
    const char *name;
    struct fake_def fakes[NFAKE_MAX];
    size_t n;
    const char *seen[NFAKE_MAX]; /* what each observer or filter received */
    const char *ev0;             /* the calls for the first chunk, in order */
    const char *sink;
};

static const struct content_row content_rows[] = {
    {"no checks", {{0}}, 0, {NULL}, "s", CONTENT},
    {"observers only: the sink gets the content unchanged",
     {{.name = "a", .role = R_OBSERVE}, {.name = "b"}, {.name = "c", .role = R_OBSERVE}},
     3,
     {CONTENT, NULL, CONTENT},
     "o0o2s",
     CONTENT},
    {"observers first; drop then upper",
     {{.name = "a", .role = R_OBSERVE},
      {.name = "b", .role = R_DROP},
      {.name = "c", .role = R_OBSERVE},
      {.name = "d", .role = R_UPPER}},
     4,
     {CONTENT, CONTENT, CONTENT, KEPT},
     "o0o2f1f3s",
     "SUBJECT: HI\r\n\r\nBODY X-DROP: NO\r\nLAST LINE\r\n"},
    {"upper then drop: drop sees upper case and keeps all",
     {{.name = "a", .role = R_UPPER}, {.name = "b", .role = R_DROP}},
     2,
     {CONTENT,
      "SUBJECT: HI\r\nX-DROP: YES\r\n\r\nBODY X-DROP: NO\r\nX-DROP: ALSO\r\nLAST LINE\r\n"},
     "f0f1s",
     "SUBJECT: HI\r\nX-DROP: YES\r\n\r\nBODY X-DROP: NO\r\nX-DROP: ALSO\r\nLAST LINE\r\n"},
};

static void
check_content_row(const struct content_row *row)
{
    static const char *const chunks[] = {CHUNK0, CHUNK1, CHUNK2};
    struct harness h;

    print_message("row: %s\n", row->name);
    harness_init(&h, row->fakes, row->n);
    check_data(h.cs);
    assert_int_equal(h.bad_streams, 0);
    assert_int_equal(h.sink_len, 0);
    check_body(h.cs, chunks[0], strlen(chunks[0]));
    assert_string_equal(h.ev, row->ev0);
    for (size_t k = 1; k < 3; k++)
        check_body(h.cs, chunks[k], strlen(chunks[k]));
    assert_int_equal(h.sink_len, strlen(row->sink));
    assert_memory_equal(h.sink, row->sink, h.sink_len);
    for (size_t i = 0; i < row->n; i++)
        assert_string_equal(h.seen[i], row->seen[i] != NULL ? row->seen[i] : "");
    harness_end(&h);
}

static void
test_check_content(void **state)
{
    (void)state;
    for (size_t r = 0; r < sizeof(content_rows) / sizeof(content_rows[0]); r++)
        check_content_row(&content_rows[r]);
}

/* ---- end of data: fields and hops ----------------------------------------- */

/* One transaction: MAIL, the content, the end; returns its answer. */
static const struct got *
transaction(struct harness *h)
{
    size_t before = h->ndone;

    ask(h, CHECK_STAGE_MAIL);
    assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h->ndone, before + 1);
    assert_int_equal(h->got[before].v.action, CHECK_ACCEPT);
    check_data(h->cs);
    check_body(h->cs, CONTENT, strlen(CONTENT));
    ask(h, CHECK_STAGE_END);
    assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h->ndone, before + 2);
    return &h->got[before + 1];
}

static void
test_check_end_fields(void **state)
{
    static char long_field[2100];
    static char want[2200];
    struct fake_def defs[] = {
        {.name = "a",
         .at = {[CHECK_STAGE_END] = PASS_LATER(5)},
         .fields = "X-A: 1\r\n",
         .received = 3},
        {.name = "b", .at = {[CHECK_STAGE_END] = PASS}},
        {.name = "c", .at = {[CHECK_STAGE_END] = PASS}, .fields = "X-C: 2\r\n"},
        {.name = "d", .at = {[CHECK_STAGE_END] = PASS}, .fields = long_field},
    };
    struct harness h;
    const struct got *g;

    (void)state;
    memset(long_field, 'x', sizeof(long_field));
    memcpy(long_field, "X-Long: ", 8);
    memcpy(long_field + sizeof(long_field) - 3, "\r\n", 3);
    snprintf(want, sizeof(want), "X-A: 1\r\nX-C: 2\r\n%s", long_field);
    harness_init(&h, defs, 4);
    /* two transactions: the second's fields do not add to the first's */
    for (int round = 0; round < 2; round++) {
        g = transaction(&h);
        assert_int_equal(g->v.action, CHECK_ACCEPT);
        assert_false(g->sync);
        assert_non_null(g->v.fields);
        assert_int_equal(g->v.fields_len, strlen(want));
        assert_string_equal(g->fields, want);
        assert_int_equal(g->v.hops, 4); /* received 3, + 1 */
        h.ndone = 0;
    }
    harness_end(&h);
}

static void
test_check_end_refused_no_fields(void **state)
{
    const struct fake_def defs[] = {
        {.name = "a", .at = {[CHECK_STAGE_END] = PASS}, .fields = "X-A: 1\r\n", .received = 2},
        {.name = "b", .at = {[CHECK_STAGE_END] = REFUSE(554, "5.7.1 content refused")}},
    };
    struct harness h;
    const struct got *g;

    (void)state;
    harness_init(&h, defs, 2);
    g = transaction(&h);
    assert_int_equal(g->v.action, CHECK_REJECT);
    assert_int_equal(g->v.code, 554);
    assert_string_equal(g->v.text, "5.7.1 content refused");
    assert_null(g->v.fields);
    assert_int_equal(g->v.fields_len, 0);
    assert_int_equal(g->v.hops, 0);
    harness_end(&h);
}

/* ---- resets -------------------------------------------------------------- */

static void
test_check_mail_resets(void **state)
{
    const struct fake_def defs[] = {
        {.name = "a", .at = {[CHECK_STAGE_MAIL] = PASS}},
        {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS}},
        {.name = "c", .at = {[CHECK_STAGE_MAIL] = PASS}, .no_reset = true},
    };
    struct harness h;

    (void)state;
    harness_init(&h, defs, 3);
    check_txn_facts(h.cs)->received = 7;
    check_txn_facts(h.cs)->spf_done = true;
    check_facts(h.cs)->client_trusted = true; /* of the connection: it stays */
    ask(&h, CHECK_STAGE_MAIL);
    assert_int_equal(h.ndone, 1);
    assert_int_equal(h.got[0].v.action, CHECK_ACCEPT);
    /* every reset hook before any mail hook; the facts were reset first */
    assert_string_equal(h.seq, "~a,~b,a,c");
    assert_int_equal(h.resets[0], 1);
    assert_int_equal(h.resets[1], 1);
    assert_int_equal(h.mail_received, 0);
    assert_false(h.mail_spf_done);
    assert_int_equal(check_txn_facts(h.cs)->received, 0);
    assert_true(check_facts(h.cs)->client_trusted);
    assert_string_equal(h.mail_qid, "QID1");
    assert_string_equal(h.mail_sender, "sender@example.org");
    assert_string_equal(check_info(h.cs)->qid, "QID1");
    assert_string_equal(check_info(h.cs)->sender->mailbox, "sender@example.org");
    check_reset(h.cs);
    assert_int_equal(h.resets[0], 2);
    assert_int_equal(h.resets[1], 2);
    assert_string_equal(h.seq, "~a,~b,a,c,~a,~b");
    harness_end(&h);
}

/* check_impl.h: reset runs when "the transaction is over (RSET, a new
 * MAIL, an error, or after the end's answer)", and check.h's check_reset
 * is for a transaction that "ended without a message", so after the end
 * it is the pipeline that calls the reset hooks, accepted or refused. */
static void
test_check_reset_after_end(void **state)
{
    const struct fake_def accepting[] = {
        {.name = "a", .at = {[CHECK_STAGE_END] = PASS_LATER(5)}},
        {.name = "b", .at = {[CHECK_STAGE_END] = PASS}},
    };
    const struct fake_def refusing[] = {
        {.name = "a", .at = {[CHECK_STAGE_END] = REFUSE(550, "5.7.1 no")}},
        {.name = "b", .at = {[CHECK_STAGE_END] = PASS}},
    };
    const struct fake_def *lists[] = {accepting, refusing};
    struct harness h;

    (void)state;
    for (size_t k = 0; k < 2; k++) {
        unsigned resets[2];

        harness_init(&h, lists[k], 2);
        (void)transaction(&h);
        memcpy(resets, h.resets, sizeof(resets));
        harness_end(&h);                /* first: a failure below leaks nothing */
        assert_int_equal(resets[0], 2); /* at MAIL, and after the end */
        assert_int_equal(resets[1], 2);
    }
}

/* ---- holds and free ------------------------------------------------------ */

/* Nothing held: the checks stop once the loop has closed the timer. The
 * conf lives on through the pipeline's reference. */
static void
test_check_free_unheld(void **state)
{
    const struct fake_def defs[] = {
        {.name = "a", .at = {[CHECK_STAGE_HELO] = PASS}},
        {.name = "b", .at = {[CHECK_STAGE_CONNECT] = PASS}},
    };
    struct harness h;

    (void)state;
    harness_init(&h, defs, 2);
    conf_free(h.conf); /* the pipeline's reference is the last one */
    ask(&h, CHECK_STAGE_HELO);
    assert_int_equal(h.ndone, 1);
    assert_string_equal(h.hostname_seen, "mx.example.test");
    check_session_free(h.cs);
    assert_int_equal(sum_stops(&h), 0);
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h.stops[0], 1);
    assert_int_equal(h.stops[1], 1);
    assert_int_equal(uv_loop_close(&h.loop), 0);
}

/* Held work out when the session is freed: nothing stops until it comes
 * back; then check_unhold says the session is gone and every check has
 * stopped, once. */
static void
test_check_hold_past_free(void **state)
{
    const struct fake_def defs[] = {
        {.name = "w", .at = {[CHECK_STAGE_CONNECT] = {H_WORK, 0, NULL, 50}}},
        {.name = "p", .at = {[CHECK_STAGE_CONNECT] = PASS}},
    };
    struct harness h;

    (void)state;
    harness_init(&h, defs, 2);
    ask(&h, CHECK_STAGE_CONNECT);
    assert_int_equal(h.ndone, 1);
    assert_int_equal(h.got[0].v.action, CHECK_ACCEPT);
    assert_string_equal(h.ran, "w,p");
    check_session_free(h.cs);
    h.cs = NULL;
    assert_int_not_equal(uv_run(&h.loop, UV_RUN_NOWAIT), 0); /* the timer closes; work is out */
    assert_int_equal(h.back, 0);
    assert_int_equal(sum_stops(&h), 0);
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h.back, 1);
    assert_int_equal(h.stops_at_back, 0);
    assert_true(h.state_ok_at_back);
    assert_int_equal(h.unholds_gone, 1);
    assert_int_equal(h.stops_after_gone, 2);
    harness_end(&h);
}

/* Two checks with work out when the session is freed: the first back is
 * told the connection is gone (and must not touch it) though nothing has
 * stopped; the last back frees, and every check stops once. */
static void
test_check_hold_two_works(void **state)
{
    const struct fake_def defs[] = {
        {.name = "w1", .at = {[CHECK_STAGE_CONNECT] = {H_WORK, 0, NULL, 20}}},
        {.name = "w2", .at = {[CHECK_STAGE_CONNECT] = {H_WORK, 0, NULL, 40}}},
    };
    struct harness h;

    (void)state;
    harness_init(&h, defs, 2);
    ask(&h, CHECK_STAGE_CONNECT);
    assert_int_equal(h.ndone, 1);
    check_session_free(h.cs);
    h.cs = NULL;
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h.back, 2);
    assert_int_equal(h.unholds_gone, 2);
    assert_int_equal(h.gone_stops[0], 0);
    assert_int_equal(h.gone_stops[1], 2);
    harness_end(&h);
}

/* Held work back while the session lives: check_unhold says so, nothing
 * stops. */
static void
test_check_hold_back_before_free(void **state)
{
    const struct fake_def defs[] = {
        {.name = "w", .at = {[CHECK_STAGE_CONNECT] = {H_WORK, 0, NULL, 5}}},
    };
    struct harness h;

    (void)state;
    harness_init(&h, defs, 1);
    ask(&h, CHECK_STAGE_CONNECT);
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h.back, 1);
    assert_true(h.state_ok_at_back);
    assert_int_equal(h.unholds_gone, 0);
    assert_int_equal(h.stops[0], 0);
    harness_end(&h);
}

/* The stage's budget answers; done frees the session; the check's answer
 * comes after that: dropped, no second done, its state was kept. */
static void
test_check_late_answer_after_free(void **state)
{
    const struct fake_def defs[] = {
        {.name = "l", .at = {[CHECK_STAGE_RCPT] = {H_LATE, 550, "5.7.1 late", 20}}},
    };
    struct harness h;

    (void)state;
    harness_init(&h, defs, 1);
    h.free_in_done = true;
    ask(&h, CHECK_STAGE_RCPT);
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_null(h.cs);
    assert_int_equal(h.ndone, 1);
    assert_budget_verdict(&h.got[0]);
    assert_int_equal(h.back, 1);
    assert_int_equal(h.stops_at_back, 0);
    assert_true(h.state_ok_at_back);
    assert_int_equal(h.unholds_gone, 1);
    assert_int_equal(h.stops_after_gone, 1);
    harness_end(&h);
}

/* ---- re-entrancy: done asks the next stage ------------------------------- */

struct chain_row {
    const char *name;
    struct fake_def fakes[NFAKE_MAX];
    size_t n;
    enum check_action action[3]; /* RCPT r1, RCPT r2, END */
    bool sync[3];
    const char *ran;
    const char *rcpts; /* the recipients the rcpt hooks saw */
};

static const struct chain_row chain_rows[] = {
    {"all now: three answers inside one call",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = PASS, [CHECK_STAGE_END] = PASS}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS}}},
     2,
     {CHECK_ACCEPT, CHECK_ACCEPT, CHECK_ACCEPT},
     {true, true, true},
     "a,b,a,b,a",
     "r1@example.net,r1@example.net,r2@example.net,r2@example.net"},
    {"later: each asked from a done on the loop",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = PASS_LATER(5), [CHECK_STAGE_END] = PASS_LATER(5)}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = REFUSE(550, "5.1.1 unknown")}}},
     2,
     {CHECK_REJECT, CHECK_REJECT, CHECK_ACCEPT},
     {false, false, false},
     "a,b,a,b,a",
     "r1@example.net,r1@example.net,r2@example.net,r2@example.net"},
    {"from the budget's done",
     {{.name = "a", .at = {[CHECK_STAGE_RCPT] = NEVER, [CHECK_STAGE_END] = PASS}},
      {.name = "b", .at = {[CHECK_STAGE_RCPT] = PASS}}},
     2,
     {CHECK_TEMPFAIL, CHECK_TEMPFAIL, CHECK_ACCEPT},
     {false, false, true},
     "a,a,a",
     "r1@example.net,r2@example.net"},
};

static void
check_chain_row(const struct chain_row *row)
{
    struct harness h;

    print_message("row: %s\n", row->name);
    harness_init(&h, row->fakes, row->n);
    h.then[0] = CHECK_STAGE_RCPT;
    h.then[1] = CHECK_STAGE_END;
    h.nthen = 2;
    ask(&h, CHECK_STAGE_RCPT);
    assert_int_equal(h.ndone, row->sync[0] ? 3 : 0);
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h.ndone, 3);
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(h.got[k].v.action, row->action[k]);
        assert_int_equal(h.got[k].sync, row->sync[k]);
        if (row->action[k] == CHECK_TEMPFAIL)
            assert_budget_verdict(&h.got[k]);
    }
    assert_string_equal(h.ran, row->ran);
    assert_string_equal(h.rcpts_seen, row->rcpts);
    harness_end(&h);
}

static void
test_check_reentrant(void **state)
{
    (void)state;
    for (size_t r = 0; r < sizeof(chain_rows) / sizeof(chain_rows[0]); r++)
        check_chain_row(&chain_rows[r]);
}

/* ---- the budget ---------------------------------------------------------- */

/* MAIL runs out of time (a answers 20 ms after the budget); its done asks
 * RCPT, which is in flight when a's late refusal comes: dropped, RCPT is
 * accepted; then HELO works as ever. */
static void
test_check_budget_then_next_stage(void **state)
{
    const struct fake_def defs[] = {
        {.name = "a",
         .at = {[CHECK_STAGE_MAIL] = {H_LATE, 550, "5.7.1 late", 20},
                [CHECK_STAGE_RCPT] = PASS_LATER(30),
                [CHECK_STAGE_HELO] = PASS}},
        {.name = "b",
         .at = {[CHECK_STAGE_MAIL] = PASS, [CHECK_STAGE_RCPT] = PASS, [CHECK_STAGE_HELO] = PASS}},
    };
    struct harness h;

    (void)state;
    harness_init(&h, defs, 2);
    h.then[0] = CHECK_STAGE_RCPT;
    h.nthen = 1;
    ask(&h, CHECK_STAGE_MAIL);
    assert_int_equal(h.ndone, 0);
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(h.ndone, 2);
    assert_budget_verdict(&h.got[0]);
    assert_string_equal(h.got[0].v.text,
                        "4.3.0 Error: checks did not finish in time, try again later");
    assert_int_equal(h.got[1].v.action, CHECK_ACCEPT);
    assert_true(h.got[1].after_ms < BUDGET_MS);
    assert_int_equal(h.back, 2);         /* the late answer, and RCPT's pass */
    assert_string_equal(h.ran, "a,a,b"); /* b did not run at MAIL */
    ask(&h, CHECK_STAGE_HELO);
    assert_int_equal(h.ndone, 3);
    assert_true(h.got[2].sync);
    assert_int_equal(h.got[2].v.action, CHECK_ACCEPT);
    assert_string_equal(h.ran, "a,a,b,a,b");
    harness_end(&h);
}

/* ---- HELO ---------------------------------------------------------------- */

struct helo_row {
    const char *name;
    struct step step; /* the one check's HELO behaviour */
    enum check_action action;
    const char *helo; /* check_info()->helo afterwards */
};

static const struct helo_row helo_rows[] = {
    {"accepted", PASS, CHECK_ACCEPT, HELO_NAME},
    {"accepted later", PASS_LATER(5), CHECK_ACCEPT, HELO_NAME},
    {"no hook", {H_NONE, 0, NULL, 0}, CHECK_ACCEPT, HELO_NAME},
    {"refused", REFUSE(550, "5.7.1 bad helo"), CHECK_REJECT, ""},
    {"refused later", REFUSE_LATER(5, 450, "4.7.1 helo later"), CHECK_TEMPFAIL, ""},
    {"out of time", NEVER, CHECK_TEMPFAIL, ""},
};

static void
test_check_helo(void **state)
{
    (void)state;
    for (size_t r = 0; r < sizeof(helo_rows) / sizeof(helo_rows[0]); r++) {
        const struct helo_row *row = &helo_rows[r];
        struct fake_def def = {.name = "a", .at = {[CHECK_STAGE_HELO] = row->step}};
        struct harness h;

        print_message("row: %s\n", row->name);
        harness_init(&h, &def, 1);
        assert_string_equal(check_info(h.cs)->helo, "");
        ask(&h, CHECK_STAGE_HELO);
        assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
        assert_int_equal(h.ndone, 1);
        assert_int_equal(h.got[0].v.action, row->action);
        assert_string_equal(check_info(h.cs)->helo, row->helo);
        /* the hook saw the name, even when it then refused */
        assert_string_equal(h.helo_seen, row->step.how != H_NONE ? HELO_NAME : "");
        harness_end(&h);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_stages),
        cmocka_unit_test(test_check_content),
        cmocka_unit_test(test_check_end_fields),
        cmocka_unit_test(test_check_end_refused_no_fields),
        cmocka_unit_test(test_check_mail_resets),
        cmocka_unit_test(test_check_reset_after_end),
        cmocka_unit_test(test_check_free_unheld),
        cmocka_unit_test(test_check_hold_past_free),
        cmocka_unit_test(test_check_hold_two_works),
        cmocka_unit_test(test_check_hold_back_before_free),
        cmocka_unit_test(test_check_late_answer_after_free),
        cmocka_unit_test(test_check_reentrant),
        cmocka_unit_test(test_check_budget_then_next_stage),
        cmocka_unit_test(test_check_helo),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
