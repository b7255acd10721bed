/* metrics: owns the process-wide registry: plain counters and histograms
 * (C11 atomics, relaxed: any thread may count, e.g. the store's writer
 * thread and DNS jobs on the threadpool) and the labelled counter tables
 * (loop thread only). Like the log level, it is deliberately global: the
 * counting sites are spread over every module and must not need a handle.
 * Renders Prometheus text exposition format 0.0.4. Pure: no I/O, no
 * clock (the queue snapshot carries "now"). Does not serve HTTP
 * (metrics_http) or read the queue (qstat). */
#include "base/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define METRICS_BUCKETS_MAX 16

struct counter_def {
    const char *name, *type, *help;
};

static const struct counter_def counter_defs[METRICS_NCOUNTERS] = {
#define C_DEF(id, name, type, help) [METRICS_##id] = {name, type, help},
    METRICS_COUNTERS(C_DEF)
#undef C_DEF
};

struct family_def {
    const char *name, *l1, *l2, *help;
};

static const struct family_def family_defs[METRICS_NFAMILIES] = {
#define F_DEF(id, name, l1, l2, help) [METRICS_F_##id] = {name, l1, l2, help},
    METRICS_FAMILIES(F_DEF)
#undef F_DEF
};

struct hist_def {
    const char *name, *help;
    double scale;
    double bounds[METRICS_BUCKETS_MAX];
    size_t nbounds;
};

#define H_NB(...) (sizeof((double[]){__VA_ARGS__}) / sizeof(double))
static const struct hist_def hist_defs[METRICS_NHISTOGRAMS] = {
#define H_DEF(id, name, help, scale, ...)                                                          \
    [METRICS_H_##id] = {name, help, scale, {__VA_ARGS__}, H_NB(__VA_ARGS__)},
    METRICS_HISTOGRAMS(H_DEF)
#undef H_DEF
};

struct series {
    char l1[METRICS_LABEL_MAX];
    char l2[METRICS_LABEL_MAX];
    uint64_t value;
};

struct family {
    struct series s[METRICS_SERIES_MAX];
    size_t n;
};

struct hist {
    _Atomic uint64_t buckets[METRICS_BUCKETS_MAX + 1]; /* the last one is +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum; /* in 1/scale units */
};

struct lifetime {
    char domain[METRICS_LABEL_MAX];
    uint64_t seconds;
};

static _Atomic int64_t counters[METRICS_NCOUNTERS];
static struct family families[METRICS_NFAMILIES];
static struct hist hists[METRICS_NHISTOGRAMS];
static struct lifetime *lifetimes; /* loop thread */
static size_t nlifetimes;

void
metrics_add(enum metrics_counter c, int64_t n)
{
    atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

void
metrics_set(enum metrics_counter c, int64_t v)
{
    atomic_store_explicit(&counters[c], v, memory_order_relaxed);
}

uint64_t
metrics_get(enum metrics_counter c)
{
    int64_t v = atomic_load_explicit(&counters[c], memory_order_relaxed);

    return v < 0 ? 0 : (uint64_t)v;
}

static struct series *
series_find(enum metrics_family f, const char *l1, const char *l2, bool add)
{
    struct family *fam = &families[f];
    char a[METRICS_LABEL_MAX], b[METRICS_LABEL_MAX];
    struct series *s;

    snprintf(a, sizeof(a), "%s", l1 != NULL ? l1 : "");
    snprintf(b, sizeof(b), "%s", l2 != NULL ? l2 : "");
    for (size_t i = 0; i < fam->n; i++) {
        if (strcmp(fam->s[i].l1, a) == 0 && strcmp(fam->s[i].l2, b) == 0)
            return &fam->s[i];
    }
    s = &fam->s[METRICS_SERIES_MAX - 1]; /* "other", once the table is full */
    if (!add)
        return s->l1[0] != '\0' && strcmp(s->l1, a) == 0 && strcmp(s->l2, b) == 0 ? s : NULL;
    if (fam->n == METRICS_SERIES_MAX - 1) {
        /* Full: the last slot counts everything else. */
        snprintf(s->l1, sizeof(s->l1), "other");
        snprintf(s->l2, sizeof(s->l2), "%s", family_defs[f].l2 != NULL ? "other" : "");
        return s;
    }
    s = &fam->s[fam->n++];
    memcpy(s->l1, a, sizeof(a));
    memcpy(s->l2, b, sizeof(b));
    return s;
}

void
metrics_count(enum metrics_family f, const char *l1, const char *l2)
{
    series_find(f, l1, l2, true)->value++;
}

uint64_t
metrics_count_get(enum metrics_family f, const char *l1, const char *l2)
{
    const struct series *s = series_find(f, l1, l2, false);

    return s != NULL ? s->value : 0;
}

void
metrics_smtp_reject(const char *verb, int code, const char *reply, size_t len)
{
    char status[16] = "none";
    size_t i = 4, n = 0;

    if (code == 421) {
        metrics_count(METRICS_F_SESSIONS_REJECTED, "protocol_errors", NULL);
        return;
    }
    if (verb == NULL || strcmp(verb, "RCPT") != 0)
        return;
    /* "550 5.7.1 text" or "550-5.7.1 text": digits and dots after the code. */
    while (i < len && n + 1 < sizeof(status) &&
           ((reply[i] >= '0' && reply[i] <= '9') || reply[i] == '.'))
        status[n++] = reply[i++];
    if (n >= 5)
        status[n] = '\0';
    else
        snprintf(status, sizeof(status), "%d", code);
    metrics_count(METRICS_F_RECIPIENTS_REJECTED, status, NULL);
}

void
metrics_observe(enum metrics_histogram h, double value)
{
    const struct hist_def *d = &hist_defs[h];
    struct hist *x = &hists[h];
    size_t i = 0;

    if (!(value >= 0)) /* negative or NaN: a clock went backwards */
        value = 0;
    while (i < d->nbounds && value > d->bounds[i])
        i++;
    atomic_fetch_add_explicit(&x->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&x->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&x->sum, (uint64_t)(value * d->scale + 0.5), memory_order_relaxed);
}

void
metrics_set_lifetimes(const char *const *domains, const uint64_t *seconds, size_t n)
{
    free(lifetimes);
    lifetimes = n > 0 ? xcalloc(n, sizeof(*lifetimes)) : NULL;
    nlifetimes = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(lifetimes[i].domain, sizeof(lifetimes[i].domain), "%s", domains[i]);
        lifetimes[i].seconds = seconds[i];
    }
}

void
metrics_reset(void)
{
    metrics_set_lifetimes(NULL, NULL, 0);
    for (size_t i = 0; i < METRICS_NCOUNTERS; i++)
        atomic_store(&counters[i], 0);
    memset(families, 0, sizeof(families));
    for (size_t i = 0; i < METRICS_NHISTOGRAMS; i++) {
        for (size_t b = 0; b <= METRICS_BUCKETS_MAX; b++)
            atomic_store(&hists[i].buckets[b], 0);
        atomic_store(&hists[i].count, 0);
        atomic_store(&hists[i].sum, 0);
    }
}

/* ---- rendering ---------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        mxd_panic("metrics: vsnprintf failed");
    if ((size_t)n >= b->cap - b->len) {
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* Exposition format: label values escape \, " and newline. */
static const char *
label_esc(char *out, size_t size, const char *s)
{
    size_t o = 0;

    for (; *s != '\0' && o + 3 < size; s++) {
        if (*s == '\\' || *s == '"') {
            out[o++] = '\\';
            out[o++] = *s;
        } else if (*s == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
    return out;
}

static void
header(struct buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
render_series(struct buf *b, const struct family_def *d, const struct series *s)
{
    char e1[METRICS_LABEL_MAX * 2], e2[METRICS_LABEL_MAX * 2];

    if (d->l2 == NULL)
        buf_printf(b, "%s{%s=\"%s\"} %" PRIu64 "\n", d->name, d->l1,
                   label_esc(e1, sizeof(e1), s->l1), s->value);
    else
        buf_printf(b, "%s{%s=\"%s\",%s=\"%s\"} %" PRIu64 "\n", d->name, d->l1,
                   label_esc(e1, sizeof(e1), s->l1), d->l2, label_esc(e2, sizeof(e2), s->l2),
                   s->value);
}

static void
render_families(struct buf *b)
{
    for (size_t f = 0; f < METRICS_NFAMILIES; f++) {
        const struct family *fam = &families[f];
        const struct series *other = &fam->s[METRICS_SERIES_MAX - 1];

        header(b, family_defs[f].name, "counter", family_defs[f].help);
        for (size_t i = 0; i < fam->n; i++)
            render_series(b, &family_defs[f], &fam->s[i]);
        if (other->value > 0)
            render_series(b, &family_defs[f], other);
    }
}

static void
render_histograms(struct buf *b)
{
    for (size_t h = 0; h < METRICS_NHISTOGRAMS; h++) {
        const struct hist_def *d = &hist_defs[h];
        uint64_t cum = 0;

        header(b, d->name, "histogram", d->help);
        for (size_t i = 0; i <= d->nbounds; i++) {
            cum += atomic_load_explicit(&hists[h].buckets[i], memory_order_relaxed);
            if (i < d->nbounds)
                buf_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", d->name, d->bounds[i], cum);
            else
                buf_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", d->name, cum);
        }
        buf_printf(b, "%s_sum %.6g\n", d->name,
                   (double)atomic_load_explicit(&hists[h].sum, memory_order_relaxed) / d->scale);
        /* _count equals the +Inf bucket, read once above. */
        buf_printf(b, "%s_count %" PRIu64 "\n", d->name, cum);
    }
}

static void
render_lifetimes(struct buf *b)
{
    char e[METRICS_LABEL_MAX * 2];

    header(b, "mxd_domain_lifetime_seconds", "gauge",
           "How long a backup domain's mail may wait for its primary before it bounces");
    for (size_t i = 0; i < nlifetimes; i++)
        buf_printf(b, "mxd_domain_lifetime_seconds{domain=\"%s\"} %" PRIu64 "\n",
                   label_esc(e, sizeof(e), lifetimes[i].domain), lifetimes[i].seconds);
}

static void
render_queue(struct buf *b, const struct metrics_queue *q)
{
    char e1[600], e2[40];

    header(b, "mxd_queue_recipients", "gauge",
           "Recipients waiting for delivery, by domain and state (queued, deferred, held)");
    for (size_t i = 0; i < q->nrows; i++)
        buf_printf(b, "mxd_queue_recipients{domain=\"%s\",state=\"%s\"} %" PRIu64 "\n",
                   label_esc(e1, sizeof(e1), q->rows[i].domain),
                   label_esc(e2, sizeof(e2), q->rows[i].state), q->rows[i].recipients);
    header(b, "mxd_queue_messages", "gauge", "Messages in the queue");
    buf_printf(b, "mxd_queue_messages %" PRIu64 "\n", q->messages);
    header(b, "mxd_queue_oldest_age_seconds", "gauge",
           "Age of the oldest message in the queue (0 when empty)");
    buf_printf(b, "mxd_queue_oldest_age_seconds %" PRId64 "\n",
               q->oldest_received > 0 && q->now > q->oldest_received ? q->now - q->oldest_received
                                                                     : 0);
    header(b, "mxd_queue_held_oldest_age_seconds", "gauge",
           "Age of the oldest message with held recipients, by domain");
    for (size_t i = 0; i < q->nrows; i++) {
        const struct metrics_queue_row *r = &q->rows[i];

        if (strcmp(r->state, "held") != 0 || r->oldest_received <= 0)
            continue;
        buf_printf(b, "mxd_queue_held_oldest_age_seconds{domain=\"%s\"} %" PRId64 "\n",
                   label_esc(e1, sizeof(e1), r->domain),
                   q->now > r->oldest_received ? q->now - r->oldest_received : 0);
    }
}

char *
metrics_render(const struct metrics_queue *q)
{
    struct buf b = {xcalloc(1, 4096), 0, 4096};

    for (size_t c = 0; c < METRICS_NCOUNTERS; c++) {
        const struct counter_def *d = &counter_defs[c];

        header(&b, d->name, d->type, d->help);
        buf_printf(&b, "%s %" PRIu64 "\n", d->name, metrics_get((enum metrics_counter)c));
    }
    render_families(&b);
    render_histograms(&b);
    render_lifetimes(&b);
    if (q != NULL && q->valid)
        render_queue(&b, q);
    return b.p;
}
