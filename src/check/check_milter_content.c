/* check_milter_content: the content part of the milter check (see
 * check_milter.c for the check as a whole). Owns, per connection, the
 * header/body parser that turns the content stream into HEADER, EOH and
 * BODY commands (chunks of at most 65,535 octets) for every filter taking
 * part, the message's header withheld from the store while filters read
 * it (up to HEAD_MAX), and the filters' modifications: kept until a
 * filter's final reply, then applied to the withheld header and the
 * pipeline's edits (recipients, sender, quarantine); a new body goes to
 * the sink as it comes. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "check/check_milter_impl.h"

/* ---- modifications ------------------------------------------------------ */

void
check_milter__mods_clear(struct mstate *ms)
{
    for (size_t i = 0; i < ms->nmods; i++) {
        free(ms->mods[i].a);
        free(ms->mods[i].b);
    }
    free(ms->mods);
    ms->mods = NULL;
    ms->nmods = ms->mods_bytes = 0;
}

static void
log_mod(struct mf *f, const char *what, const char *detail)
{
    char d[300];

    log_msg(LOG_INFO, ms_qid(f->ms), "milter", "filter=%s %s %s", f->def->name, what,
            log_esc(d, sizeof(d), detail, strlen(detail)));
}

static void
ignored(struct mf *f, const struct milter_event *ev, const char *why)
{
    mf_count(f, "ignored");
    log_msg(LOG_WARN, ms_qid(f->ms), "milter", "filter=%s ignored=%s reason=%s", f->def->name,
            milter_ev_name(ev->type), why);
}

/* "<a@b>" or "a@b" as an address; false when it is not one. */
static bool
parse_path(const char *text, bool allow_null, struct addr *out)
{
    char path[ADDR_PATH_MAX + 3];
    size_t used;

    if (text[0] == '<')
        snprintf(path, sizeof(path), "%s", text);
    else
        snprintf(path, sizeof(path), "<%s>", text);
    return addr_parse_path(path, strlen(path), allow_null, true, out, &used) == ADDR_OK &&
           path[used] == '\0' && !out->is_postmaster;
}

/* A recipient change goes into the pipeline's edits. */
static void
edit_rcpt(struct mf *f, const struct mod *m)
{
    struct check_edits *e = check_edits(f->ms->cs);
    const struct conf *c = check_info(f->ms->cs)->conf;
    struct addr a;

    if (!parse_path(m->a, false, &a)) {
        log_mod(f, "ignored=bad-address", m->a);
        mf_count(f, "ignored");
        return;
    }
    if (m->type == MILTER_EV_DELRCPT) {
        e->del = xrealloc(e->del, (e->ndel + 1) * sizeof(*e->del));
        e->del[e->ndel++] = xstrdup(a.mailbox);
        log_mod(f, "delete_rcpt", a.mailbox);
        return;
    }
    /* mxd delivers only to the domains it serves */
    if (conf_domain_find(c, a.domain_lc, strlen(a.domain_lc)) == NULL) {
        log_mod(f, "ignored=add_rcpt reason=domain-not-served", a.mailbox);
        mf_count(f, "ignored");
        return;
    }
    if (m->b != NULL && m->b[0] != '\0')
        log_mod(f, "add_rcpt esmtp-args-ignored", m->b);
    e->add = xrealloc(e->add, (e->nadd + 1) * sizeof(*e->add));
    e->add[e->nadd].address = xstrdup(a.mailbox);
    e->add[e->nadd].domain = xstrdup(a.domain_lc);
    e->nadd++;
    log_mod(f, "add_rcpt", a.mailbox);
}

static void
edit_other(struct mf *f, const struct mod *m)
{
    struct check_edits *e = check_edits(f->ms->cs);
    struct addr a;
    char reason[200];
    size_t n = 0;

    if (m->type == MILTER_EV_CHGFROM) {
        if (!parse_path(m->a, true, &a)) {
            log_mod(f, "ignored=bad-address", m->a);
            mf_count(f, "ignored");
            return;
        }
        if (m->b != NULL && m->b[0] != '\0')
            log_mod(f, "change_from esmtp-args-ignored", m->b);
        free(e->sender);
        e->sender = xstrdup(a.mailbox);
        log_mod(f, "change_from", a.mailbox[0] != '\0' ? a.mailbox : "<>");
        return;
    }
    /* QUARANTINE: the reason, controls made spaces, for mxctl queue */
    for (const char *p = m->a; *p != '\0' && n + 1 < sizeof(reason); p++)
        reason[n++] = (unsigned char)*p < ' ' || *p == 127 ? ' ' : *p;
    reason[n] = '\0';
    free(e->quarantine);
    e->quarantine = xasprintf("quarantined by %s: %s", f->def->name, reason);
    log_mod(f, "quarantine", reason);
}

/* The filter passed the message: its changes, in the order it sent them. */
void
check_milter__mods_apply(struct mf *f)
{
    struct mstate *ms = f->ms;

    for (size_t i = 0; i < ms->nmods; i++) {
        const struct mod *m = &ms->mods[i];
        int rc = 0;

        mf_count(f, milter_ev_name(m->type));
        switch (m->type) {
        case MILTER_EV_ADDHEADER:
        case MILTER_EV_INSHEADER:
        case MILTER_EV_CHGHEADER:
            if (ms->head_state != HEAD_HELD) {
                log_mod(f, "ignored=header-not-held name=", m->a);
                continue;
            }
            if (m->type == MILTER_EV_ADDHEADER)
                rc = milter_head_add(ms->head, m->a, m->b);
            else if (m->type == MILTER_EV_INSHEADER)
                rc = milter_head_insert(ms->head, m->index, m->a, m->b);
            else
                rc = milter_head_change(ms->head, m->index, m->a, m->b);
            log_mod(f, milter_ev_name(m->type), m->a);
            if (rc < 0)
                log_mod(f, "ignored=bad-field name=", m->a);
            break;
        case MILTER_EV_ADDRCPT:
        case MILTER_EV_DELRCPT:
            edit_rcpt(f, m);
            break;
        default:
            edit_other(f, m);
            break;
        }
    }
}

/* A chunk of the filter's new body, straight to the sink: the content
 * received so far is dropped at its first chunk. */
static void
replace_body(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    size_t n;

    if (ms->repl_by != f) {
        /* the withheld header stays; the sink gets the empty line and the new body */
        if (ms->head_state != HEAD_HELD || !check_rewind(ms->cs)) {
            ignored(f, ev, "header-not-held");
            return;
        }
        if (ms->repl_buf == NULL)
            ms->repl_buf = xmalloc(2 * MILTER_REPLY_MAX);
        ms->repl_by = f;
        ms->crlf = (struct milter_crlf){false};
        check_emit(ms->out, "\r\n", 2);
        mf_count(f, "replace_body");
        log_msg(LOG_INFO, ms_qid(ms), "milter", "filter=%s replace_body", f->def->name);
    }
    n = milter_crlf(&ms->crlf, ev->data, ev->len, ms->repl_buf);
    check_emit(ms->out, ms->repl_buf, n);
}

/* A modification in the reply to end of message: kept until the filter's
 * final reply (a filter that fails before it changes nothing), but for a
 * new body, which is too large to keep. */
void
check_milter__modification(struct mf *f, const struct milter_event *ev)
{
    struct mstate *ms = f->ms;
    size_t size;
    struct mod *m;

    if (ms->ask != ASK_END || ms_current(ms) != f) {
        check_milter__fail(f, "modification out of place");
        return;
    }
    if (!ev->permitted) {
        ignored(f, ev, "not-negotiated");
        return;
    }
    if (ev->type == MILTER_EV_REPLBODY) {
        replace_body(f, ev);
        return;
    }
    size = (ev->a != NULL ? strlen(ev->a) : 0) + (ev->b != NULL ? strlen(ev->b) : 0) + 64;
    if (ms->mods_bytes + size > MODS_MAX) {
        check_milter__fail(f, "too many modifications");
        check_milter__default(f);
        return;
    }
    ms->mods = xrealloc(ms->mods, (ms->nmods + 1) * sizeof(*ms->mods));
    m = &ms->mods[ms->nmods++];
    m->type = ev->type;
    m->index = ev->index;
    m->a = xstrdup(ev->a != NULL ? ev->a : "");
    m->b = xstrdup(ev->b != NULL ? ev->b : "");
    ms->mods_bytes += size;
}

/* ---- the content ------------------------------------------------------- */

/* The filters that take part in this message's content. */
static bool
in_content(const struct mf *f)
{
    return f->conn != NULL && f->negotiated && !f->dead && !f->conn_done && !f->txn_done &&
           f->txn_started && f->in_txn;
}

/* Back-pressure: tells the pipeline whether a filter is too far behind. */
void
check_milter__update_busy(struct mstate *ms)
{
    bool high = false, low = true;

    for (size_t i = 0; i < ms->n; i++) {
        size_t q;

        if (ms->f[i].conn == NULL || ms->f[i].dead)
            continue;
        q = milter_conn_queued(ms->f[i].conn);
        high = high || q > BUSY_HIGH;
        low = low && q <= BUSY_LOW;
    }
    if (ms->content && !ms->busy && high)
        ms->busy = true;
    else if (ms->busy && (low || !ms->content))
        ms->busy = false;
    else
        return;
    check_set_busy(ms->cs, ms->busy);
}

/* A content command queued (rc: milter_proto's). The header fields go out
 * with the end of header (one write, not one per field: the content comes
 * from the filters before this one a line at a time), a full body chunk
 * at once, the last one with the end of message (milter_end), and
 * whatever waits once CONTENT_FLUSH octets do. */
#define CONTENT_FLUSH (64u * 1024u)

static void
each_rc(struct mf *f, int rc)
{
    if (rc < 0) {
        check_milter__fail(f, rc == MXD_ETOOBIG ? "filter too slow: content queue full"
                                                : "cannot send");
        return;
    }
    if (milter_proto_pending(mf_proto(f)) >= CONTENT_FLUSH)
        check_milter__flush(f);
}

void
check_milter__content_flush(struct mstate *ms)
{
    for (size_t i = 0; i < ms->n; i++)
        if (ms->f[i].conn != NULL && milter_proto_pending(mf_proto(&ms->f[i])) > 0)
            check_milter__flush(&ms->f[i]);
}

static void
send_header_field(struct mstate *ms)
{
    char *colon, *name, *value, *w;

    if (ms->hdr_len == 0)
        return;
    ms->hdr[ms->hdr_len] = '\0';
    ms->hdr_len = 0;
    colon = strchr(ms->hdr, ':');
    if (colon == NULL)
        return; /* not a field: nothing to tell */
    *colon = '\0';
    name = ms->hdr;
    for (w = colon; w > name && (w[-1] == ' ' || w[-1] == '\t'); w--)
        w[-1] = '\0';
    /* CRLF line ends become LF, the last one goes */
    value = colon + 1;
    w = value;
    for (char *r = value; *r != '\0'; r++) {
        if (*r == '\r' && r[1] == '\n')
            continue;
        *w++ = *r;
    }
    while (w > value && (w[-1] == '\n' || w[-1] == '\r'))
        w--;
    *w = '\0';
    if (name[0] == '\0')
        return;
    for (size_t i = 0; i < ms->n; i++)
        if (in_content(&ms->f[i]))
            each_rc(&ms->f[i], milter_proto_header(mf_proto(&ms->f[i]), name, value));
}

static void
end_of_header(struct mstate *ms)
{
    send_header_field(ms);
    ms->in_body = true;
    if (ms->head_state == HEAD_READING) {
        if (ms->head == NULL)
            ms->head = milter_head_new();
        milter_head_parse(ms->head, ms->raw, ms->raw_len);
        free(ms->raw);
        ms->raw = NULL;
        ms->raw_len = 0;
        ms->head_state = HEAD_HELD;
    }
    for (size_t i = 0; i < ms->n; i++)
        if (in_content(&ms->f[i]))
            each_rc(&ms->f[i], milter_proto_eoh(mf_proto(&ms->f[i])));
    check_milter__content_flush(ms);
}

/* The body chunk; flush: written now (else with the end of message). */
static void
send_chunk(struct mstate *ms, bool flush)
{
    if (ms->chunk_len == 0)
        return;
    for (size_t i = 0; i < ms->n; i++)
        if (in_content(&ms->f[i]))
            each_rc(&ms->f[i], milter_proto_body(mf_proto(&ms->f[i]), ms->chunk, ms->chunk_len));
    ms->chunk_len = 0;
    if (flush)
        check_milter__content_flush(ms);
}

static void
body_bytes(struct mstate *ms, const char *data, size_t len)
{
    while (len > 0) {
        size_t n = MILTER_CHUNK_MAX - ms->chunk_len;

        if (n > len)
            n = len;
        memcpy(ms->chunk + ms->chunk_len, data, n);
        ms->chunk_len += n;
        data += n;
        len -= n;
        if (ms->chunk_len == MILTER_CHUNK_MAX)
            send_chunk(ms, true);
    }
}

/* The header, octet by octet: a field ends where a line starts with
 * neither a blank nor the empty line that ends the header. Returns where
 * the empty line begins in data (len: all of it is header); *cr says its
 * CR came at the end of an earlier chunk (it was withheld). The header's
 * octets are kept in ms->raw while it is withheld. */
static size_t
header_bytes(struct mstate *ms, const char *data, size_t len, bool *cr)
{
    *cr = false;
    for (size_t i = 0; i < len; i++) {
        char ch = data[i];

        if (ms->eoh_cr) { /* the empty line (or a lone CR: the body begins) */
            ms->eoh_cr = false;
            *cr = true;
            end_of_header(ms);
            return i;
        }
        if (ms->line_start) {
            ms->line_start = false;
            if (ch == '\r') {
                ms->eoh_cr = true;
                continue;
            }
            if (ch == '\n') {
                end_of_header(ms);
                return i;
            }
            if (ch != ' ' && ch != '\t')
                send_header_field(ms);
        }
        if (ms->hdr_len < HDR_MAX)
            ms->hdr[ms->hdr_len++] = ch;
        if (ms->head_state == HEAD_READING)
            ms->raw[ms->raw_len++] = ch;
        if (ch == '\n')
            ms->line_start = true;
    }
    return len;
}

/* Content while the header is read: withheld, then from the empty line on
 * passed to the store. */
static void
header_content(struct mstate *ms, const char *data, size_t len)
{
    size_t off, skip;
    bool cr;

    if (ms->head_state == HEAD_READING && ms->raw_len + len > HEAD_MAX) {
        /* too large to hold: what was withheld goes on, unedited */
        log_msg(LOG_WARN, ms_qid(ms), "milter", "header over %u octets: passed unedited", HEAD_MAX);
        check_emit(ms->out, ms->raw, ms->raw_len);
        free(ms->raw);
        ms->raw = NULL;
        ms->raw_len = 0;
        ms->head_state = HEAD_PASSED;
    }
    if (ms->head_state == HEAD_READING && ms->raw == NULL)
        ms->raw = xmalloc(HEAD_MAX);
    off = header_bytes(ms, data, len, &cr);
    if (ms->head_state == HEAD_PASSED)
        check_emit(ms->out, data, off);
    if (off == len && !ms->in_body)
        return;
    if (cr) /* "\r" ended the last chunk: it begins the empty line */
        check_emit(ms->out, "\r", 1);
    check_emit(ms->out, data + off, len - off);
    /* the filters' body begins after the empty line */
    skip = off < len && data[off] == '\n' ? 1 : 0;
    body_bytes(ms, data + off + skip, len - off - skip);
}

void
check_milter__data(void *arg, struct check_stream out)
{
    struct mstate *ms = arg;
    const struct check_info *in = check_info(ms->cs);
    struct milter_macro mac[] = {{"i", in->qid}};

    const struct conf_milters *l = ms->txn_list != NULL ? ms->txn_list : &in->conf->milters;

    ms->out = out;
    ms->content = false;
    for (size_t i = 0; i < l->n; i++) /* only the transaction's filters read the content */
        ms->f[l->v[i]->index].in_txn = true;
    for (size_t i = 0; i < ms->n; i++) {
        struct mf *f = &ms->f[i];

        if (!in_content(f))
            continue;
        ms->content = true;
        if (milter_proto_macros(mf_proto(f), MILTER_ST_DATA, mac, 1) < 0 ||
            milter_proto_data(mf_proto(f)) < 0) {
            check_milter__fail(f, "cannot send");
            continue;
        }
        check_milter__flush(f);
    }
    if (ms->content) {
        ms->in_body = false;
        ms->line_start = true;
        ms->eoh_cr = false;
        ms->hdr_len = ms->chunk_len = 0;
        ms->head_state = HEAD_READING;
        if (ms->hdr == NULL)
            ms->hdr = xmalloc(HDR_MAX + 1);
        if (ms->chunk == NULL)
            ms->chunk = xmalloc(MILTER_CHUNK_MAX);
    }
}

void
check_milter__filter(void *arg, const char *data, size_t len)
{
    struct mstate *ms = arg;

    if (!ms->content) {
        check_emit(ms->out, data, len);
        return;
    }
    if (ms->in_body) {
        check_emit(ms->out, data, len);
        body_bytes(ms, data, len);
    } else {
        header_content(ms, data, len);
    }
    check_milter__update_busy(ms);
}

/* What a message left behind. */
void
check_milter__txn_clear(struct mstate *ms)
{
    ms->content = false;
    free(ms->hdr);
    free(ms->chunk);
    free(ms->raw);
    free(ms->repl_buf);
    ms->hdr = ms->chunk = ms->raw = ms->repl_buf = NULL;
    ms->raw_len = 0;
    milter_head_free(ms->head);
    ms->head = NULL;
    ms->head_state = HEAD_NONE;
    check_milter__mods_clear(ms);
    ms->repl_by = NULL;
    ms->body_broken = false;
}

void
check_milter__content_end(struct mstate *ms)
{
    if (!ms->content)
        return;
    if (!ms->in_body) {
        if (ms->eoh_cr) { /* a lone CR after the header */
            ms->eoh_cr = false;
            check_emit(ms->out, "\r", 1);
        }
        end_of_header(ms);
    }
    send_chunk(ms, false); /* with the end of message (milter_end flushes) */
    ms->content = false;
    check_milter__update_busy(ms);
}
