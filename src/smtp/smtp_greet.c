/* smtp_greet: the session before its greeting. Owns nothing of its own:
 * the session's flags connecting, teased and refusal (smtp_session_impl.h)
 * and, while they are set, its reads. Loop thread only.
 *
 * The connect stage is asked of the pipeline; while it runs (a check may
 * wait: the pre-greet test, a lookup) the session reads, and what the
 * client sends goes into the protocol's buffer, untouched, and is reported
 * to the pipeline (check_input_early): a client that talks before the
 * greeting has been heard, and nothing it sent is a command until the
 * stage accepts. A check may ask for the greeting to begin at once with a
 * "220-" teaser (postscreen's pre-greet test); the final "220 " line is
 * the protocol's banner, sent when the stage accepts.
 *
 * A refusal takes the greeting's place (RFC 5321 3.1: 554 or 421 instead
 * of 220) and the connection closes. After a teaser it cannot: every line
 * of a reply has the same code (RFC 5321 4.2.1), so the greeting ends with
 * its 220 line and the refusal answers the client's first command (the
 * early input, if any), then the connection closes; input after the
 * greeting is read only to be answered so. postscreen instead sends its
 * 521 (or nothing at all, then replies of its own dummy server) straight
 * after its "220-" line. A drop closes without a word. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/check.h"
#include "smtp/smtp_session_impl.h"

/* The refusal answers the client's first command; then we close. */
static void
refusal_send(struct smtp_session *s)
{
    smtp_session__out(s, s->refusal, strlen(s->refusal));
    smtp_session__close(s);
}

static void
on_teaser(void *arg, const char *text)
{
    struct smtp_session *s = arg;
    char line[300];
    size_t n;

    if (s->closing || s->teased)
        return;
    n = (size_t)snprintf(line, sizeof(line) - 2, "220-%s", text);
    if (n > sizeof(line) - 3)
        n = sizeof(line) - 3;
    for (size_t i = 4; i < n; i++)
        if (line[i] == '\r' || line[i] == '\n')
            line[i] = ' ';
    memcpy(line + n, "\r\n", 2);
    s->teased = true;
    smtp_session__out(s, line, n + 2);
    smtp_session__flush(s);
}

/* Refused: the greeting's place, or after the teaser its end and the
 * answer to the first command. */
static void
connect_refused(struct smtp_session *s, const struct check_verdict *v)
{
    struct smtp_event ev;

    log_msg(LOG_INFO, NULL, "smtp", "refused client=%s reason=check reply=%d", s->ip, v->code);
    metrics_count(METRICS_F_SESSIONS_REJECTED, "check", NULL);
    s->refusal = xasprintf("%d %s\r\n", v->code, v->text);
    if (!s->teased) {
        refusal_send(s);
        return;
    }
    if (smtp_proto_next(s->proto, &ev) == SMTP_EV_REPLY) /* the first event: the banner */
        smtp_session__out(s, ev.data, ev.len);
    if (smtp_proto_buffered(s->proto) || s->eof) {
        refusal_send(s);
        return;
    }
    smtp_session__flush(s);
    smtp_session__read_start(s);
    smtp_session__idle_timer(s);
}

static void
on_connect_verdict(void *arg, const struct check_verdict *v)
{
    struct smtp_session *s = arg;

    s->connecting = false;
    if (smtp_session__release(s))
        return;
    if (v->action == CHECK_ACCEPT) {
        smtp_session__pump(s); /* the banner, then what the client sent meanwhile */
        return;
    }
    if (v->action != CHECK_DROP) {
        connect_refused(s, v);
        return;
    }
    log_msg(LOG_INFO, NULL, "smtp", "dropped client=%s reason=check", s->ip);
    metrics_count(METRICS_F_SESSIONS_REJECTED, "check", NULL);
    smtp_session__close(s);
}

void
smtp_session__connect(struct smtp_session *s, const char *early, size_t n)
{
    s->connecting = true;
    check_set_teaser(s->checks, on_teaser, s);
    s->pending++;
    check_connect(s->checks, on_connect_verdict, s);
    if (!s->connecting || s->closing)
        return; /* answered at once */
    if (n > 0)
        check_input_early(s->checks, early, n, false); /* it came with the PROXY header */
    if (s->connecting && !s->closing)
        smtp_session__read_start(s);
}

void
smtp_session__early_read(struct smtp_session *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread > 0) {
        smtp_proto_feed(s->proto, (size_t)nread);
        if (s->refusal != NULL)
            refusal_send(s);
        else
            check_input_early(s->checks, buf->base, (size_t)nread, false);
        return;
    }
    if (nread == 0)
        return;
    /* the protocol's buffer is full (it waits for the stage), or the end */
    uv_read_stop((uv_stream_t *)&s->tcp);
    s->reading = false;
    if (nread == UV_ENOBUFS)
        return;
    s->eof = true;
    if (s->refusal != NULL)
        smtp_session__close(s);
    else
        check_input_early(s->checks, NULL, 0, true);
}
