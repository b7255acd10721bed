/* smtp_tls: STARTTLS for an SMTP session (RFC 3207): owns the session's
 * tls_conn, its ciphertext read buffer and the ciphertext writes in
 * flight. Loop thread only. After the plaintext "220 Ready" has been
 * written, every octet read is ciphertext for the handshake and then for
 * records; decrypted octets go into smtp_proto's input buffer exactly as
 * plaintext would. A failed handshake closes the connection with the
 * GnuTLS reason in the log. The protocol layer has already dropped any
 * plaintext pipelined behind STARTTLS (CVE-2011-0411). */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "check/check.h"
#include "smtp/smtp_session_impl.h"

#define TLS_READ_HIGH (64 * 1024) /* stop reading while this much waits undecrypted */

struct tls_write {
    uv_write_t req;
    struct smtp_session *s;
    size_t len;
    char data[];
};

static void
on_tls_write(uv_write_t *req, int status)
{
    struct tls_write *w = (struct tls_write *)req;
    struct smtp_session *s = w->s;

    s->tls_wbytes -= w->len;
    free(w);
    if (status < 0 && !s->closing) {
        /* A client that gives up on our certificate may reset the
         * connection while our handshake flight is still being written. */
        smtp_session__tls_eof(s, uv_strerror(status));
        smtp_session__close(s);
        return;
    }
    if (s->closing) {
        if (s->tls_wbytes == 0)
            smtp_session__close(s);
        return;
    }
    /* The ciphertext counts towards the session's unsent output: the pump
     * stopped at OUT_HIGH goes on once the client has read enough. */
    if (s->out_paused && smtp_session__unsent(s) < OUT_LOW)
        smtp_session__pump(s);
}

/* GnuTLS push: queue the ciphertext on the stream. */
static void
tls_push(void *arg, const char *data, size_t len)
{
    struct smtp_session *s = arg;
    struct tls_write *w;
    uv_buf_t b;

    if (uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    w = xmalloc(sizeof(*w) + len);
    w->s = s;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned)len);
    s->tls_wbytes += len;
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_tls_write) != 0) {
        s->tls_wbytes -= len;
        free(w);
    }
}

void
smtp_session__tls_start(struct smtp_session *s)
{
    s->tls = tls_conn_new(s->srv->tls, tls_push, s);
    s->cbuf = xmalloc(SESSION_CBUF);
    s->tls_handshaking = true;
    /* The plaintext 220 must be on the wire before any TLS record. */
    s->tls_plain_pending = s->wout.len > 0 || s->out.len > 0;
}

void
smtp_session__tls_plain_done(struct smtp_session *s)
{
    s->tls_plain_pending = false;
    smtp_session__tls_input(s, NULL, 0);
}

/* Drives the handshake; true once it is done. */
static bool
tls_handshake(struct smtp_session *s)
{
    char esc[200];
    const char *why;
    int rc = tls_conn_handshake(s->tls);

    if (rc == 1)
        return false;
    if (rc < 0) {
        why = tls_conn_error(s->tls);
        log_msg(LOG_INFO, NULL, "smtp", "tls handshake failed client=%s reason=%s", s->ip,
                log_esc(esc, sizeof(esc), why, strlen(why)));
        s->out.len = 0;
        smtp_session__close(s);
        return false;
    }
    s->tls_handshaking = false;
    tls_conn_describe(s->tls, s->tls_desc, sizeof(s->tls_desc));
    {
        /* "VERSION CIPHER": the checks get both (milter macros) */
        char v[sizeof(s->tls_desc)];
        char *sp;

        snprintf(v, sizeof(v), "%s", s->tls_desc);
        sp = strchr(v, ' ');
        if (sp != NULL)
            *sp++ = '\0';
        check_tls(s->checks, v, sp != NULL ? sp : "");
    }
    smtp_proto_tls_started(s->proto, s->tls_desc);
    log_msg(LOG_INFO, NULL, "smtp", "tls established client=%s tls=\"%s\"", s->ip, s->tls_desc);
    return true;
}

bool
smtp_session__tls_drain(struct smtp_session *s)
{
    bool progress = false;

    for (;;) {
        size_t avail;
        char *dst = smtp_proto_rbuf(s->proto, &avail);
        ssize_t n;

        if (avail == 0)
            break; /* the pump makes room; the rest waits in the TLS buffers */
        n = tls_conn_read(s->tls, dst, avail);
        if (n > 0) {
            smtp_proto_feed(s->proto, (size_t)n);
            progress = true;
            continue;
        }
        if (n < 0 && !s->eof) {
            s->eof = true;
            progress = true;
        }
        break;
    }
    return progress;
}

void
smtp_session__tls_input(struct smtp_session *s, const char *data, size_t len)
{
    if (len > 0)
        tls_conn_feed(s->tls, data, len);
    if (tls_conn_buffered(s->tls) > TLS_READ_HIGH && s->reading) {
        /* The protocol is not consuming (waiting on the store): stop
         * reading, as for plaintext; NEED_INPUT starts it again. */
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
    if (s->closing || s->tls_plain_pending)
        return;
    if (s->tls_handshaking && !tls_handshake(s))
        return;
    smtp_session__tls_drain(s);
    smtp_session__pump(s);
}

void
smtp_session__tls_flush(struct smtp_session *s)
{
    if (s->tls_handshaking || s->out.len == 0 || uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    if (tls_conn_write(s->tls, s->out.data, s->out.len) != 0) {
        s->out.len = 0;
        smtp_session__close(s);
        return;
    }
    s->out.len = 0;
}

void
smtp_session__tls_bye(struct smtp_session *s)
{
    if (s->tls == NULL || s->tls_handshaking || s->tls_bye || uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    s->tls_bye = true;
    tls_conn_bye(s->tls);
}

void
smtp_session__tls_eof(struct smtp_session *s, const char *why)
{
    if (s->tls_handshaking)
        log_msg(LOG_INFO, NULL, "smtp", "tls handshake failed client=%s reason=\"%s\"", s->ip, why);
}
