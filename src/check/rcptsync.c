/* rcptsync: owns one struct rs_source per distinct recipients_source of
 * the `recipients = sync` domains: its refresh timer, for a file a watch
 * on its directory (uv_fs_event: an editor's rename and a rewrite in place
 * both show) and a settle timer, and at most one read out at a time (on a
 * lookup thread, rcptsync_read.c). A whole, valid read goes to the store,
 * which swaps the list in one writer job (store_sync_replace_async); a
 * failed or broken read keeps the stored list and logs why, and the list
 * grows old (check_rcpt answers 450 4.1.1 for unlisted addresses once it
 * is older than recipients_max_age). Loop thread only.
 * Does not: answer RCPT (check_rcpt.c reads the store), or forget stored
 * lists of sources no longer configured (a few rows; they are not read). */
#include "check/rcptsync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/rcptsync_impl.h"

#define RCPTSYNC_SETTLE_MS 200 /* a change waits this long for the next one */

struct rs_source {
    struct rs_source *next;
    struct rcptsync *rs;
    char *text; /* the source as written: the store's key */
    struct conf_rsource src;
    uint64_t refresh_ms;
    uv_timer_t refresh, settle;
    uv_fs_event_t watch;
    char *dir, *name; /* file: the directory watched, the file's name in it */
    bool watching;
    struct rcptsync_read *out; /* the read in flight, or NULL */
    bool again;                /* changed while a read was out */
    unsigned open_handles;     /* closing: handles not yet closed */
    bool dropped;
    bool wanted;      /* rcptsync_set_conf: still configured */
    uint64_t want_ms; /* rcptsync_set_conf: the refresh asked for */
};

struct rcptsync {
    uv_loop_t *loop;
    struct store *store;
    struct rs_source *sources;
    size_t nlive; /* sources not yet freed (dropped ones included) */
    bool stopping;
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

/* What a store job needs to log its end: the source outlives neither. */
struct rs_stored {
    char *text;
    size_t n;
    uint64_t t0;
};

static void start_read(struct rs_source *s);

static void
copy_rsource(struct conf_rsource *d, const struct conf_rsource *s)
{
    memset(d, 0, sizeof(*d));
    d->ldap = s->ldap;
    d->port = s->port;
    d->scope = s->scope;
#define DUP(f) d->f = s->f != NULL ? xstrdup(s->f) : NULL
    DUP(text);
    DUP(path);
    DUP(host);
    DUP(base);
    DUP(attr);
    DUP(filter);
#undef DUP
}

static void
free_rsource(struct conf_rsource *r)
{
    free(r->text);
    free(r->path);
    free(r->host);
    free(r->base);
    free(r->attr);
    free(r->filter);
}

static void
maybe_stopped(struct rcptsync *rs)
{
    if (rs->stopping && rs->nlive == 0) {
        void (*cb)(void *) = rs->stop_cb;
        void *arg = rs->stop_arg;

        free(rs);
        if (cb != NULL)
            cb(arg);
    }
}

/* A dropped source is freed once its handles are closed and no read is
 * out. */
static void
source_maybe_free(struct rs_source *s)
{
    struct rcptsync *rs = s->rs;

    if (!s->dropped || s->open_handles > 0 || s->out != NULL)
        return;
    free_rsource(&s->src);
    free(s->text);
    free(s->dir);
    free(s->name);
    free(s);
    rs->nlive--;
    maybe_stopped(rs);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct rs_source *s = h->data;

    s->open_handles--;
    source_maybe_free(s);
}

/* Unlinks s from the live list and closes its handles. */
static void
source_drop(struct rs_source *s)
{
    struct rcptsync *rs = s->rs;

    for (struct rs_source **pp = &rs->sources; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->dropped = true;
    if (s->out != NULL)
        s->out->src = NULL;
    s->out = NULL;
    uv_close((uv_handle_t *)&s->refresh, on_handle_closed);
    uv_close((uv_handle_t *)&s->settle, on_handle_closed);
    s->open_handles += 2;
    if (s->watching) {
        uv_close((uv_handle_t *)&s->watch, on_handle_closed);
        s->open_handles++;
    }
}

/* ---- store ----------------------------------------------------------- */

static void
on_stored(void *arg, int status, bool changed)
{
    struct rs_stored *st = arg;
    char esc[600];

    log_esc(esc, sizeof(esc), st->text, strlen(st->text));
    if (status != 0) {
        metrics_count(METRICS_F_RCPT_SYNCS, "failed", NULL);
        log_msg(LOG_WARN, NULL, "rcptsync", "not stored source=%s reason=store", esc);
    } else {
        metrics_count(METRICS_F_RCPT_SYNCS, changed ? "changed" : "unchanged", NULL);
        log_msg(changed ? LOG_INFO : LOG_DEBUG, NULL, "rcptsync",
                "synced source=%s entries=%zu changed=%s ms=%llu", esc, st->n,
                changed ? "yes" : "no", (unsigned long long)((uv_hrtime() - st->t0) / 1000000));
    }
    free(st->text);
    free(st);
}

/* ---- reads ----------------------------------------------------------- */

static void
read_work(struct lookup_job *lj)
{
    rcptsync__read(lj->data);
}

static void
read_free(struct rcptsync_read *r)
{
    rcptlist_free(&r->list);
    free(r->path);
    free(r->host);
    free(r->base);
    free(r->attr);
    free(r->filter);
    free(r);
}

static void
read_done(struct lookup_job *lj)
{
    struct rcptsync_read *r = lj->data;
    struct rs_source *s = r->src;
    char esc[600], why[600];

    if (s == NULL) { /* dropped (reload or stop) while out */
        read_free(r);
        return;
    }
    s->out = NULL;
    log_esc(esc, sizeof(esc), s->text, strlen(s->text));
    if (r->status != 0) {
        metrics_count(METRICS_F_RCPT_SYNCS, "failed", NULL);
        log_msg(LOG_WARN, NULL, "rcptsync", "%s source=%s reason=%s keeping=old-list",
                r->status == MXD_EINVAL ? "broken" : "unreachable", esc,
                log_esc(why, sizeof(why), r->err, strlen(r->err)));
    } else {
        struct rs_stored *st = xcalloc(1, sizeof(*st));

        if (r->skipped > 0)
            log_msg(LOG_WARN, NULL, "rcptsync", "skipped source=%s values=%zu reason=%s", esc,
                    r->skipped, "\"not an address\"");
        st->text = xstrdup(s->text);
        st->n = r->list.n;
        st->t0 = uv_hrtime();
        store_sync_replace_async(s->rs->store, s->text, r->list.buf, r->list.len, r->list.n,
                                 r->digest, (int64_t)time(NULL), on_stored, st);
        r->list.buf = NULL; /* the store's now */
    }
    read_free(r);
    if (s->again) {
        s->again = false;
        start_read(s);
    }
}

static void
start_read(struct rs_source *s)
{
    struct rcptsync_read *r;

    if (s->out != NULL) {
        s->again = true;
        return;
    }
    r = xcalloc(1, sizeof(*r));
    r->src = s;
    r->ldap = s->src.ldap;
    r->path = s->src.path != NULL ? xstrdup(s->src.path) : NULL;
    r->host = s->src.host != NULL ? xstrdup(s->src.host) : NULL;
    r->base = s->src.base != NULL ? xstrdup(s->src.base) : NULL;
    r->attr = s->src.attr != NULL ? xstrdup(s->src.attr) : NULL;
    r->filter = s->src.filter != NULL ? xstrdup(s->src.filter) : NULL;
    r->port = s->src.port;
    r->scope = s->src.scope;
    rcptlist_init(&r->list);
    r->lj.data = r;
    s->out = r;
    lookup_queue(s->rs->loop, &r->lj, read_work, read_done);
}

/* ---- timers and watches ---------------------------------------------- */

static void
on_refresh(uv_timer_t *t)
{
    start_read(t->data);
}

static void
on_settle(uv_timer_t *t)
{
    start_read(t->data);
}

static void
on_fs(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct rs_source *s = h->data;

    (void)events;
    if (status < 0 || (filename != NULL && strcmp(filename, s->name) != 0))
        return;
    uv_timer_start(&s->settle, on_settle, RCPTSYNC_SETTLE_MS, 0);
}

static void
watch_file(struct rs_source *s)
{
    const char *slash = strrchr(s->src.path, '/');
    char esc[600];
    int rc;

    s->dir =
        slash == s->src.path ? xstrdup("/") : xstrndup(s->src.path, (size_t)(slash - s->src.path));
    s->name = xstrdup(slash + 1);
    uv_fs_event_init(s->rs->loop, &s->watch);
    s->watch.data = s;
    if ((rc = uv_fs_event_start(&s->watch, on_fs, s->dir, 0)) != 0) {
        log_msg(LOG_WARN, NULL, "rcptsync", "no watch source=%s reason=%s (read every refresh)",
                log_esc(esc, sizeof(esc), s->text, strlen(s->text)), uv_strerror(rc));
        uv_close((uv_handle_t *)&s->watch, on_handle_closed);
        s->open_handles++;
        return;
    }
    s->watching = true;
}

static struct rs_source *
source_new(struct rcptsync *rs, const struct conf_domain *d)
{
    struct rs_source *s = xcalloc(1, sizeof(*s));

    s->rs = rs;
    s->text = xstrdup(d->rsource.text);
    copy_rsource(&s->src, &d->rsource);
    uv_timer_init(rs->loop, &s->refresh);
    uv_timer_init(rs->loop, &s->settle);
    s->refresh.data = s->settle.data = s;
    if (!s->src.ldap)
        watch_file(s);
    s->next = rs->sources;
    rs->sources = s;
    rs->nlive++;
    return s;
}

/* ---- interface -------------------------------------------------------- */

struct rcptsync *
rcptsync_new(uv_loop_t *loop, struct store *store)
{
    struct rcptsync *rs = xcalloc(1, sizeof(*rs));

    rs->loop = loop;
    rs->store = store;
    return rs;
}

static struct rs_source *
source_find(struct rcptsync *rs, const char *text)
{
    for (struct rs_source *s = rs->sources; s != NULL; s = s->next)
        if (strcmp(s->text, text) == 0)
            return s;
    return NULL;
}

void
rcptsync_set_conf(struct rcptsync *rs, const struct conf *c)
{
    struct rs_source *s, *next;

    if (rs->stopping)
        return;
    for (s = rs->sources; s != NULL; s = s->next) {
        s->wanted = false;
        s->want_ms = 0;
    }
    for (size_t i = 0; i < c->ndomains; i++) {
        const struct conf_domain *d = &c->domains[i];
        uint64_t refresh = d->recipients_refresh_s * 1000;

        if (d->recipients != CONF_RCPTS_SYNC || d->rsource.text == NULL)
            continue;
        if ((s = source_find(rs, d->rsource.text)) == NULL)
            s = source_new(rs, d);
        s->wanted = true;
        /* A source several domains share is read as often as the most
         * eager of them asks. */
        if (s->want_ms == 0 || refresh < s->want_ms)
            s->want_ms = refresh;
    }
    for (s = rs->sources; s != NULL; s = next) {
        next = s->next;
        if (!s->wanted) {
            source_drop(s);
        } else if (s->refresh_ms == 0) { /* new: read now */
            s->refresh_ms = s->want_ms;
            uv_timer_start(&s->refresh, on_refresh, 0, s->refresh_ms);
        } else if (s->refresh_ms != s->want_ms) {
            s->refresh_ms = s->want_ms;
            uv_timer_start(&s->refresh, on_refresh, s->refresh_ms, s->refresh_ms);
        }
    }
}

void
rcptsync_stop(struct rcptsync *rs, void (*cb)(void *arg), void *arg)
{
    rs->stopping = true;
    rs->stop_cb = cb;
    rs->stop_arg = arg;
    while (rs->sources != NULL)
        source_drop(rs->sources);
    maybe_stopped(rs);
}
