/* log: owns the log level and the output choice (process-wide, set once at
 * start-up). Any thread: each line is written with one write(2) or one
 * sd_journal_sendv, so lines from the writer thread and the loop thread do
 * not interleave. When systemd connected stderr to the journal
 * (JOURNAL_STREAM names our stderr's device and inode), each line goes to
 * the journal with its key=value pairs as MXD_* fields (docs/logging.md);
 * if that fails, or with JOURNAL_STREAM set for another file, lines go to
 * stderr with a <N> priority prefix; elsewhere with a UTC timestamp.
 * The thread that called log_batch_begin (the loop thread) collects its
 * stderr lines and writes them with one write(2) at log_flush (once per
 * loop iteration, before the loop waits), not one per line; err and warn
 * lines flush at once. Never logs bodies or secrets: callers pass escaped
 * values. */
#include "base/log.h"

#include <sys/stat.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

#define LOG_FIELDS_MAX 32
#define LOG_BATCH_SIZE (64 * 1024)

static enum log_level log_level_max = LOG_INFO;
static bool log_journal;
static bool log_level_prefix; /* JOURNAL_STREAM set: "<N>" instead of a timestamp */

/* The batching thread's pending lines; no other thread touches them. */
static _Thread_local char *log_batch;
static _Thread_local size_t log_batch_len;

void
log_init(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    log_journal = js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
                  (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    log_level_prefix = js != NULL;
}

void
log_batch_begin(void)
{
    if (log_batch == NULL)
        log_batch = xmalloc(LOG_BATCH_SIZE);
}

static void
write_all(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(2, p, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* stderr is gone: nothing better to do with the lines */
        p += w;
        len -= (size_t)w;
    }
}

void
log_flush(void)
{
    if (log_batch_len > 0)
        write_all(log_batch, log_batch_len);
    log_batch_len = 0;
}

void
log_batch_end(void)
{
    log_flush();
    free(log_batch);
    log_batch = NULL;
}

static bool
is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* One word at p: a quoted value runs to the closing unescaped quote. */
static const char *
word_end(const char *p)
{
    bool q = false;

    for (; *p != '\0' && (q || *p != ' '); p++) {
        if (*p == '\\' && p[1] != '\0')
            p++;
        else if (*p == '"')
            q = !q;
    }
    return p;
}

size_t
log__fields(const char *line, const char **event, size_t *elen, struct log_field *out, size_t max)
{
    const char *p = line;
    size_t n = 0;

    *event = p;
    *elen = strcspn(p, " ");
    p += *elen;
    while (*p != '\0' && n < max) {
        const char *w, *e, *eq;

        while (*p == ' ')
            p++;
        w = p;
        e = word_end(p);
        p = e;
        for (eq = w; eq < e && is_key_char(*eq); eq++)
            ;
        if (eq == w || eq >= e || *eq != '=')
            continue;
        out[n].key = w;
        out[n].klen = (size_t)(eq - w);
        out[n].val = eq + 1;
        out[n].vlen = (size_t)(e - eq - 1);
        if (out[n].vlen >= 2 && out[n].val[0] == '"' && out[n].val[out[n].vlen - 1] == '"') {
            out[n].val++;
            out[n].vlen -= 2;
        }
        n++;
    }
    return n;
}

/* The journal fields of one line, packed into one buffer. */
struct jfields {
    struct iovec iov[LOG_FIELDS_MAX + 8];
    size_t n, used;
    char buf[8192];
};

static void jf_add(struct jfields *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
jf_add(struct jfields *j, const char *fmt, ...)
{
    size_t room = sizeof(j->buf) - j->used;
    va_list ap;
    int w;

    if (j->n == sizeof(j->iov) / sizeof(j->iov[0]))
        return;
    va_start(ap, fmt);
    w = vsnprintf(j->buf + j->used, room, fmt, ap);
    va_end(ap);
    if (w <= 0 || (size_t)w >= room)
        return; /* does not fit: the field is left out */
    j->iov[j->n].iov_base = j->buf + j->used;
    j->iov[j->n++].iov_len = (size_t)w;
    j->used += (size_t)w + 1;
}

/* MESSAGE (as on stderr, without time and level), PRIORITY, MXD_QID,
 * MXD_COMPONENT, MXD_EVENT and MXD_<KEY> per key=value. 0 or < 0. */
static int
log_journal_send(enum log_level level, const char *qid, const char *component, const char *line)
{
    struct log_field f[LOG_FIELDS_MAX];
    struct jfields *j = xcalloc(1, sizeof(*j));
    size_t elen;
    const char *event;
    size_t nf = log__fields(line, &event, &elen, f, LOG_FIELDS_MAX);
    int rc;

    jf_add(j, "MESSAGE=%s %s %s", qid ? qid : "-", component, line);
    jf_add(j, "PRIORITY=%d", (int)level);
    jf_add(j, "SYSLOG_IDENTIFIER=mxd");
    jf_add(j, "MXD_COMPONENT=%s", component);
    jf_add(j, "MXD_EVENT=%.*s", (int)elen, event);
    if (qid != NULL)
        jf_add(j, "MXD_QID=%s", qid);
    for (size_t i = 0; i < nf; i++) {
        char key[64];
        size_t k;

        for (k = 0; k < f[i].klen && k + 1 < sizeof(key); k++)
            key[k] =
                f[i].key[k] >= 'a' && f[i].key[k] <= 'z' ? (char)(f[i].key[k] - 32) : f[i].key[k];
        key[k] = '\0';
        jf_add(j, "MXD_%s=%.*s", key, (int)f[i].vlen, f[i].val);
    }
    rc = sd_journal_sendv(j->iov, (int)j->n);
    free(j);
    return rc;
}

void
log_set_level(enum log_level level)
{
    log_level_max = level;
}

static const char *
log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_ERR:
        return "err";
    case LOG_WARN:
        return "warn";
    case LOG_INFO:
        return "info";
    case LOG_DEBUG:
        return "debug";
    }
    return "info";
}

void
log_msg(enum log_level level, const char *qid, const char *component, const char *fmt, ...)
{
    char line[4096];
    char out[4096 + 256];
    char prefix[64];
    size_t n;
    int w;
    va_list ap;

    if (level > log_level_max)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (log_journal && log_journal_send(level, qid, component, line) >= 0)
        return;
    if (log_level_prefix) {
        snprintf(prefix, sizeof(prefix), "<%d>", (int)level);
    } else {
        struct timespec ts;
        struct tm tm;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(prefix, sizeof(prefix), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(prefix + n, sizeof(prefix) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    }
    w = snprintf(out, sizeof(out), "%s%s %s %s %s\n", prefix, log_level_name(level),
                 qid ? qid : "-", component, line);
    if (w < 0)
        return;
    n = (size_t)w < sizeof(out) ? (size_t)w : sizeof(out) - 1;
    out[n - 1] = '\n';
    if (log_batch == NULL) {
        write_all(out, n);
        return;
    }
    if (log_batch_len + n > LOG_BATCH_SIZE)
        log_flush();
    memcpy(log_batch + log_batch_len, out, n);
    log_batch_len += n;
    if (level <= LOG_WARN)
        log_flush();
}

/* s escaped into buf between open and close (each "" or one character),
 * the whole quoted when any of it needs quotes, so a reader that splits on
 * key= and key="..." always sees one field. */
static const char *
esc_wrapped(char *buf, size_t size, const char *open, const char *s, size_t len, const char *close)
{
    static const char hex[] = "0123456789abcdef";
    bool quote = len == 0 && open[0] == '\0';
    size_t o = 0, ol = strlen(open), cl = strlen(close);

    if (size < 8 + ol + cl) {
        if (size > 0)
            buf[0] = '\0';
        return buf;
    }
    for (size_t i = 0; i < len && !quote; i++)
        quote = s[i] == ' ' || s[i] == '=' || s[i] == '"';
    if (quote)
        buf[o++] = '"';
    memcpy(buf + o, open, ol);
    o += ol;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[4];
        size_t tn = 0;

        if (c == '"' || c == '\\') {
            tmp[tn++] = '\\';
            tmp[tn++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            tmp[tn++] = (char)c;
        } else {
            tmp[tn++] = '\\';
            tmp[tn++] = 'x';
            tmp[tn++] = hex[c >> 4];
            tmp[tn++] = hex[c & 15];
        }
        if (o + tn + cl + 5 > size) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(buf + o, tmp, tn);
        o += tn;
    }
    memcpy(buf + o, close, cl);
    o += cl;
    if (quote)
        buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

const char *
log_esc(char *buf, size_t size, const char *s, size_t len)
{
    return esc_wrapped(buf, size, "", s, len, "");
}

const char *
log_addr(char *buf, size_t size, const char *addr)
{
    return esc_wrapped(buf, size, "<", addr, strlen(addr), ">");
}
