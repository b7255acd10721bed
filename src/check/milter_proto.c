/* milter_proto: owns one milter dialogue's state: what was negotiated, the
 * queue of commands (their packet bytes and, per command, whether a reply
 * is awaited) and the input buffer of replies. Any thread, one at a time;
 * pure. Errors: commands return -MXD_E*; a reply that breaks the protocol
 * (unknown command, one not allowed now, malformed data, a packet over
 * MILTER_REPLY_MAX) ends the dialogue: every call after it fails. It does
 * not decide what a reply means for the message (check_milter.c does).
 *
 * Facts from the protocol description (libmilter's mfdef.h numbers;
 * Sendmail's and Postfix's behaviour): the MTA offers actions and steps in
 * OPTNEG, the filter answers with the subset it wants plus, optionally,
 * per stage the macros it wants (uint32 stage, names\0); modifications
 * come only in the reply to end of body, before its final answer; SKIP
 * only answers a body chunk. */
#include "check/milter_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACT_NAME(id, name) name,
static const char *const ev_names[] = {MILTER_EVENTS(ACT_NAME)};
#undef ACT_NAME

/* One queued command: its bytes are out[start, end). */
struct rec {
    size_t start, end;
    char cmd;
    bool await;
};

struct milter_proto {
    uint32_t offer_act, offer_steps;
    uint32_t act, steps; /* negotiated */
    unsigned version;
    bool optneg_sent, negotiated, broken, quit, skip_body;
    char symlist[MILTER_NSTAGES][MILTER_SYMLIST_MAX];
    bool has_symlist[MILTER_NSTAGES];
    /* queued commands */
    char *out;
    size_t out_len, out_cap, out_taken;
    struct rec *recs;
    size_t nrecs, recs_cap;
    /* replies */
    char *in;
    size_t in_len, in_pos, in_cap;
    char text[MILTER_TEXT_MAX];
    const char *error;
};

const char *
milter_ev_name(enum milter_ev e)
{
    return (unsigned)e < MILTER_NEVENTS ? ev_names[e] : "?";
}

struct milter_proto *
milter_proto_new(uint32_t actions, uint32_t steps)
{
    struct milter_proto *m = xcalloc(1, sizeof(*m));

    m->offer_act = actions & MILTER_ACT_ALL;
    m->offer_steps = steps & MILTER_P_OFFER;
    return m;
}

void
milter_proto_free(struct milter_proto *m)
{
    if (m == NULL)
        return;
    free(m->out);
    free(m->recs);
    free(m->in);
    free(m);
}

/* ---- queuing commands --------------------------------------------------- */

static void
put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static uint32_t
get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;

    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* Data of a packet being built: pieces appended to the queue's tail. */
struct pkt {
    struct milter_proto *m;
    size_t start; /* of the length field */
    int err;
};

static void
out_reserve(struct milter_proto *m, size_t more)
{
    if (m->out_len + more > m->out_cap) {
        size_t cap = m->out_cap ? m->out_cap : 4096;

        while (cap < m->out_len + more)
            cap *= 2;
        m->out = xrealloc(m->out, cap);
        m->out_cap = cap;
    }
}

static struct pkt
pkt_begin(struct milter_proto *m, char cmd)
{
    struct pkt p = {m, m->out_len, 0};

    out_reserve(m, 5);
    m->out_len += 4;
    m->out[m->out_len++] = cmd;
    return p;
}

static void
pkt_add(struct pkt *p, const void *data, size_t len)
{
    struct milter_proto *m = p->m;

    if (p->err != 0)
        return;
    if (m->out_len - p->start - 5 + len > MILTER_DATA_MAX || m->out_len + len > MILTER_OUT_MAX) {
        p->err = MXD_ETOOBIG;
        return;
    }
    out_reserve(m, len);
    memcpy(m->out + m->out_len, data, len);
    m->out_len += len;
}

static void
pkt_str(struct pkt *p, const char *s)
{
    pkt_add(p, s, strlen(s) + 1);
}

/* Ends the packet: its length written and its record queued, or undone. */
static int
pkt_end(struct pkt *p, bool await)
{
    struct milter_proto *m = p->m;

    if (p->err != 0) {
        m->out_len = p->start;
        return p->err;
    }
    put32(m->out + p->start, (uint32_t)(m->out_len - p->start - 4));
    if (m->nrecs == m->recs_cap) {
        m->recs_cap = m->recs_cap ? m->recs_cap * 2 : 16;
        m->recs = xrealloc(m->recs, m->recs_cap * sizeof(*m->recs));
    }
    m->recs[m->nrecs++] = (struct rec){p->start, m->out_len, m->out[p->start + 4], await};
    return await ? MILTER_AWAIT : MILTER_NOREPLY;
}

/* A command may be queued: negotiated (or it is OPTNEG), not broken. */
static bool
usable(const struct milter_proto *m)
{
    return !m->broken && !m->quit && m->negotiated;
}

/* A step's command: skipped with its NO* flag, no reply with its NR_*. */
/* nr 0: always answered. */
static int
step(struct milter_proto *m, char cmd, uint32_t no, uint32_t nr, const char *const *strs, size_t n)
{
    struct pkt p;

    if (!usable(m))
        return MXD_EINVAL;
    if (m->steps & no)
        return MILTER_SKIPPED;
    p = pkt_begin(m, cmd);
    for (size_t i = 0; i < n; i++)
        pkt_str(&p, strs[i]);
    return pkt_end(&p, !(m->steps & nr));
}

/* A command without data that is never answered (ABORT, QUIT). */
static int
bare(struct milter_proto *m, char cmd)
{
    struct pkt p = pkt_begin(m, cmd);

    return pkt_end(&p, false);
}

int
milter_proto_optneg(struct milter_proto *m)
{
    struct pkt p;
    char v[12];

    if (m->optneg_sent || m->broken)
        return MXD_EINVAL;
    m->optneg_sent = true;
    put32(v, MILTER_VERSION);
    put32(v + 4, m->offer_act);
    put32(v + 8, m->offer_steps);
    p = pkt_begin(m, 'O');
    pkt_add(&p, v, sizeof(v));
    return pkt_end(&p, true);
}

static const char stage_cmd[MILTER_NSTAGES] = {'C', 'H', 'M', 'R', 'T', 'E', 'N'};
static const uint32_t stage_no[MILTER_NSTAGES] = {
    MILTER_P_NOCONNECT, MILTER_P_NOHELO, MILTER_P_NOMAIL, MILTER_P_NORCPT, MILTER_P_NODATA, 0,
    MILTER_P_NOEOH,
};

/* name is in the stage's list: names compare without their braces. */
static bool
listed(const char *list, const char *name)
{
    size_t nl = strlen(name);
    const char *p = list;

    if (nl > 2 && name[0] == '{' && name[nl - 1] == '}') {
        name++;
        nl -= 2;
    }
    while (*p != '\0') {
        size_t wl;

        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        wl = strcspn(p, " ,\t");
        if (wl == 0)
            break;
        if (wl > 2 && p[0] == '{' && p[wl - 1] == '}') {
            if (wl - 2 == nl && memcmp(p + 1, name, nl) == 0)
                return true;
        } else if (wl == nl && memcmp(p, name, nl) == 0) {
            return true;
        }
        p += wl;
    }
    return false;
}

int
milter_proto_macros(struct milter_proto *m, enum milter_stage st, const struct milter_macro *mv,
                    size_t n)
{
    struct pkt p;
    size_t sent = 0;
    char c;

    if (!usable(m) || (unsigned)st >= MILTER_NSTAGES)
        return MXD_EINVAL;
    if ((m->steps & stage_no[st]) || (st == MILTER_ST_DATA && m->version < 4))
        return MILTER_SKIPPED;
    c = stage_cmd[st];
    p = pkt_begin(m, 'D');
    pkt_add(&p, &c, 1);
    for (size_t i = 0; i < n; i++) {
        if (mv[i].value == NULL || mv[i].name == NULL || mv[i].name[0] == '\0')
            continue;
        if (m->has_symlist[st] && !listed(m->symlist[st], mv[i].name))
            continue;
        pkt_str(&p, mv[i].name);
        pkt_str(&p, mv[i].value);
        sent++;
    }
    if (sent == 0 && p.err == 0)
        p.err = 1; /* nothing to say: no packet */
    if (p.err == 1) {
        m->out_len = p.start;
        return MILTER_SKIPPED;
    }
    return pkt_end(&p, false);
}

int
milter_proto_connect(struct milter_proto *m, const char *hostname, enum milter_family fam,
                     uint16_t port, const char *addr)
{
    struct pkt p;
    char f = (char)fam, pb[2] = {(char)(port >> 8), (char)port};

    if (!usable(m) || (fam != MILTER_FAM_UNKNOWN && addr == NULL))
        return MXD_EINVAL;
    if (m->steps & MILTER_P_NOCONNECT)
        return MILTER_SKIPPED;
    p = pkt_begin(m, 'C');
    pkt_str(&p, hostname);
    pkt_add(&p, &f, 1);
    if (fam != MILTER_FAM_UNKNOWN) {
        pkt_add(&p, pb, 2);
        pkt_str(&p, addr);
    }
    return pkt_end(&p, !(m->steps & MILTER_P_NR_CONN));
}

int
milter_proto_helo(struct milter_proto *m, const char *helo)
{
    return step(m, 'H', MILTER_P_NOHELO, MILTER_P_NR_HELO, &helo, 1);
}

int
milter_proto_mail(struct milter_proto *m, const char *const *args, size_t n)
{
    if (n == 0)
        return MXD_EINVAL;
    return step(m, 'M', MILTER_P_NOMAIL, MILTER_P_NR_MAIL, args, n);
}

int
milter_proto_rcpt(struct milter_proto *m, const char *const *args, size_t n)
{
    if (n == 0)
        return MXD_EINVAL;
    return step(m, 'R', MILTER_P_NORCPT, MILTER_P_NR_RCPT, args, n);
}

int
milter_proto_data(struct milter_proto *m)
{
    if (usable(m) && m->version < 4)
        return MILTER_SKIPPED; /* DATA came with version 4 */
    return step(m, 'T', MILTER_P_NODATA, MILTER_P_NR_DATA, NULL, 0);
}

int
milter_proto_header(struct milter_proto *m, const char *name, const char *value)
{
    const char *s[2] = {name, value};

    if (name == NULL || name[0] == '\0' || value == NULL)
        return MXD_EINVAL;
    if (usable(m) && !(m->steps & MILTER_P_HDR_LEADSPC))
        s[1] += strspn(value, " \t");
    return step(m, 'L', MILTER_P_NOHDRS, MILTER_P_NR_HDR, s, 2);
}

int
milter_proto_eoh(struct milter_proto *m)
{
    return step(m, 'N', MILTER_P_NOEOH, MILTER_P_NR_EOH, NULL, 0);
}

int
milter_proto_body(struct milter_proto *m, const char *data, size_t len)
{
    struct pkt p;

    if (!usable(m) || len == 0)
        return MXD_EINVAL;
    if (len > MILTER_CHUNK_MAX)
        return MXD_ETOOBIG;
    if ((m->steps & MILTER_P_NOBODY) || m->skip_body)
        return MILTER_SKIPPED;
    p = pkt_begin(m, 'B');
    pkt_add(&p, data, len);
    return pkt_end(&p, !(m->steps & MILTER_P_NR_BODY));
}

int
milter_proto_eob(struct milter_proto *m)
{
    int rc = step(m, 'E', 0, 0, NULL, 0);

    if (rc >= 0)
        m->skip_body = false;
    return rc;
}

int
milter_proto_unknown(struct milter_proto *m, const char *line)
{
    if (usable(m) && m->version < 3)
        return MILTER_SKIPPED;
    return step(m, 'U', MILTER_P_NOUNKNOWN, MILTER_P_NR_UNKN, &line, 1);
}

int
milter_proto_abort(struct milter_proto *m)
{
    if (!usable(m))
        return MXD_EINVAL;
    milter_proto_drop_queued(m);
    m->skip_body = false;
    return bare(m, 'A');
}

int
milter_proto_quit(struct milter_proto *m, bool new_conn)
{
    int rc;

    if (m->broken || m->quit || !m->optneg_sent)
        return MXD_EINVAL;
    milter_proto_drop_queued(m);
    rc = bare(m, new_conn ? 'K' : 'Q');
    /* QUIT_NC: the filter forgets the connection but keeps what was
     * negotiated; CONNECT follows on this socket */
    m->quit = !new_conn;
    m->skip_body = false;
    return rc;
}

/* Commands wholly after out_taken, kept when keep says so. */
static void
drop_unsent(struct milter_proto *m, bool (*keep)(const struct rec *))
{
    size_t w = 0, first = m->nrecs, pos;

    for (size_t i = 0; i < m->nrecs; i++) {
        if (m->recs[i].start >= m->out_taken) {
            first = i;
            break;
        }
    }
    if (first == m->nrecs)
        return;
    w = first;
    pos = m->recs[first].start;
    for (size_t i = first; i < m->nrecs; i++) {
        struct rec r = m->recs[i];
        size_t len = r.end - r.start;

        if (keep != NULL && keep(&r)) {
            memmove(m->out + pos, m->out + r.start, len);
            m->recs[w++] = (struct rec){pos, pos + len, r.cmd, r.await};
            pos += len;
        }
    }
    m->nrecs = w;
    m->out_len = pos;
}

void
milter_proto_drop_queued(struct milter_proto *m)
{
    drop_unsent(m, NULL);
}

static bool
not_body(const struct rec *r)
{
    return r->cmd != 'B';
}

/* The first command that awaits a reply, or nrecs. */
static size_t
first_await(const struct milter_proto *m)
{
    for (size_t i = 0; i < m->nrecs; i++)
        if (m->recs[i].await)
            return i;
    return m->nrecs;
}

const char *
milter_proto_output(const struct milter_proto *m, size_t *len)
{
    size_t i = first_await(m), limit = i < m->nrecs ? m->recs[i].end : m->out_len;

    *len = m->broken ? 0 : limit - m->out_taken;
    return m->out + m->out_taken;
}

/* Forgets the commands handed out up to (not including) index upto. */
static void
pop(struct milter_proto *m, size_t upto)
{
    size_t cut;

    if (upto == 0)
        return;
    cut = m->recs[upto - 1].end;
    memmove(m->recs, m->recs + upto, (m->nrecs - upto) * sizeof(*m->recs));
    m->nrecs -= upto;
    memmove(m->out, m->out + cut, m->out_len - cut);
    m->out_len -= cut;
    m->out_taken -= cut;
    for (size_t i = 0; i < m->nrecs; i++) {
        m->recs[i].start -= cut;
        m->recs[i].end -= cut;
    }
}

/* Drops the leading commands that were handed out and await nothing. */
static void
pop_sent(struct milter_proto *m)
{
    size_t i = 0;

    while (i < m->nrecs && !m->recs[i].await && m->recs[i].end <= m->out_taken)
        i++;
    pop(m, i);
}

void
milter_proto_taken(struct milter_proto *m, size_t n)
{
    size_t len;

    milter_proto_output(m, &len);
    if (n > len)
        mxd_panic("milter_proto_taken: %zu of %zu", n, len);
    m->out_taken += n;
    pop_sent(m);
}

size_t
milter_proto_pending(const struct milter_proto *m)
{
    return m->out_len;
}

bool
milter_proto_unread(const struct milter_proto *m)
{
    return m->in_len > m->in_pos;
}

bool
milter_proto_awaiting(const struct milter_proto *m)
{
    size_t i = first_await(m);

    return i < m->nrecs && m->recs[i].end <= m->out_taken;
}

/* ---- replies ------------------------------------------------------------ */

char *
milter_proto_rbuf(struct milter_proto *m, size_t *avail)
{
    size_t want = 4096;

    if (m->in_pos > 0) {
        memmove(m->in, m->in + m->in_pos, m->in_len - m->in_pos);
        m->in_len -= m->in_pos;
        m->in_pos = 0;
    }
    if (m->in_len >= 4) { /* room for the packet that has begun */
        uint32_t plen = get32(m->in);

        if (plen <= MILTER_REPLY_MAX && 4 + (size_t)plen > want)
            want = 4 + (size_t)plen;
    }
    if (m->in_cap < want) {
        m->in = xrealloc(m->in, want);
        m->in_cap = want;
    }
    *avail = m->broken ? 0 : m->in_cap - m->in_len;
    return m->in + m->in_len;
}

void
milter_proto_filled(struct milter_proto *m, size_t n)
{
    if (n > m->in_cap - m->in_len)
        mxd_panic("milter_proto_filled: %zu over the buffer", n);
    m->in_len += n;
}

int
milter_proto_feed(struct milter_proto *m, const char *data, size_t len, size_t *taken)
{
    *taken = 0;
    while (len > 0) {
        size_t avail, n;
        char *p = milter_proto_rbuf(m, &avail);

        if (m->broken)
            return MXD_EINVAL;
        if (avail == 0 ||
            (m->in_len >= 4 && (get32(m->in) == 0 || get32(m->in) > MILTER_REPLY_MAX ||
                                m->in_len >= 4 + (size_t)get32(m->in))))
            return 0; /* a whole (or a bad) packet waits to be pulled */
        n = len < avail ? len : avail;
        if (m->in_len < 4 && n > 4 - m->in_len)
            n = 4 - m->in_len; /* the length first, so the buffer grows to fit */
        else if (m->in_len >= 4 && n > 4 + (size_t)get32(m->in) - m->in_len)
            n = 4 + (size_t)get32(m->in) - m->in_len;
        memcpy(p, data, n);
        milter_proto_filled(m, n);
        data += n;
        len -= n;
        *taken += n;
    }
    return 0;
}

static int
fail(struct milter_proto *m, const char *why)
{
    m->broken = true;
    m->error = why;
    return MXD_EINVAL;
}

const char *
milter_proto_error(const struct milter_proto *m)
{
    return m->error != NULL ? m->error : "";
}

/* Splits d[0..n) into count NUL-terminated strings (the last ending the
 * data exactly unless rest is allowed). */
static bool
strings(const char *d, size_t n, const char **out, size_t count, bool rest)
{
    size_t pos = 0;

    for (size_t i = 0; i < count; i++) {
        const char *z = pos < n ? memchr(d + pos, '\0', n - pos) : NULL;

        if (z == NULL)
            return false;
        out[i] = d + pos;
        pos = (size_t)(z - d) + 1;
    }
    return rest || pos == n;
}

static bool
good_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 997)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 127 || s[i] == ':')
            return false;
    return true;
}

/* "xyz[ -]text": the code (4xx or 5xx), and the text cleaned into m->text
 * with an enhanced status code of the same class. */
static bool
replycode(struct milter_proto *m, const char *s, int *code)
{
    const char *t;
    size_t w = 0, i;
    char *o = m->text;
    int c;

    if ((s[0] != '4' && s[0] != '5') || s[1] < '0' || s[1] > '5' || s[2] < '0' || s[2] > '9' ||
        (s[3] != ' ' && s[3] != '-' && s[3] != '\0'))
        return false;
    c = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    t = s[3] != '\0' ? s + 4 : s + 3;
    /* the enhanced code: class digit '.' 1-3 digits '.' 1-3 digits */
    i = 0;
    if ((t[0] == '2' || t[0] == '4' || t[0] == '5') && t[1] == '.') {
        size_t j = 2, k = 0;

        while (k < 3 && t[j] >= '0' && t[j] <= '9')
            j++, k++;
        if (k > 0 && t[j] == '.') {
            size_t l = 0;

            j++;
            while (l < 3 && t[j + l] >= '0' && t[j + l] <= '9')
                l++;
            if (l > 0 && (t[j + l] == ' ' || t[j + l] == '\0'))
                i = j + l;
        }
    }
    if (i == 0) {
        w = (size_t)snprintf(o, MILTER_TEXT_MAX, "%c.7.1%s", s[0], t[0] != '\0' ? " " : "");
    } else {
        memcpy(o, t, i);
        o[0] = s[0];
        w = i;
        t += i;
    }
    /* the first line only; controls become spaces */
    for (; *t != '\0' && *t != '\r' && *t != '\n' && w + 1 < MILTER_TEXT_MAX; t++)
        o[w++] = ((unsigned char)*t < ' ' || *t == 127) ? ' ' : *t;
    while (w > 0 && o[w - 1] == ' ')
        w--;
    o[w] = '\0';
    *code = c;
    return true;
}

/* The OPTNEG reply: version, actions, steps, and the macro lists. */
static int
negotiate(struct milter_proto *m, const char *d, size_t n, struct milter_event *ev)
{
    uint32_t version, act, steps;
    size_t pos = 12;

    if (n < 12)
        return fail(m, "short OPTNEG reply");
    version = get32(d);
    act = get32(d + 4);
    steps = get32(d + 8);
    if (version < 2 || version > 6)
        return fail(m, "unsupported milter version");
    m->version = version;
    m->act = act & m->offer_act;
    m->steps = steps & m->offer_steps;
    while (pos < n) {
        uint32_t st;
        const char *z;
        size_t l;

        if (n - pos < 5)
            return fail(m, "malformed macro list");
        st = get32(d + pos);
        pos += 4;
        z = memchr(d + pos, '\0', n - pos);
        if (z == NULL)
            return fail(m, "malformed macro list");
        l = (size_t)(z - (d + pos));
        if (st < MILTER_NSTAGES && (m->act & MILTER_ACT_SETSYMLIST)) {
            if (l >= MILTER_SYMLIST_MAX)
                return fail(m, "macro list too long");
            memcpy(m->symlist[st], d + pos, l + 1);
            m->has_symlist[st] = true;
        }
        pos += l + 1;
    }
    m->negotiated = true;
    ev->type = MILTER_EV_NEGOTIATED;
    ev->final = true;
    return 1;
}

static bool
is_mod(char c)
{
    return strchr("hiqmb+-2e", c) != NULL;
}

static uint32_t
mod_action(char c)
{
    switch (c) {
    case 'h':
    case 'i':
        return MILTER_ACT_ADDHDRS;
    case 'm':
        return MILTER_ACT_CHGHDRS;
    case 'b':
        return MILTER_ACT_CHGBODY;
    case '+':
        return MILTER_ACT_ADDRCPT;
    case '-':
        return MILTER_ACT_DELRCPT;
    case '2':
        return MILTER_ACT_ADDRCPT_PAR;
    case 'e':
        return MILTER_ACT_CHGFROM;
    default:
        return MILTER_ACT_QUARANTINE;
    }
}

/* A modification (the reply to end of body, before its final answer). */
static int
modification(struct milter_proto *m, char c, char *d, size_t n, struct milter_event *ev)
{
    const char *s[3];

    ev->permitted = (m->act & mod_action(c)) != 0;
    switch (c) {
    case 'h':
        if (!strings(d, n, s, 2, false) || !good_name(s[0]))
            return fail(m, "malformed add header");
        ev->type = MILTER_EV_ADDHEADER;
        ev->a = s[0];
        ev->b = s[1];
        return 1;
    case 'i':
    case 'm':
        if (n < 4 || !strings(d + 4, n - 4, s, 2, false) || !good_name(s[0]))
            return fail(m, "malformed header change");
        ev->type = c == 'i' ? MILTER_EV_INSHEADER : MILTER_EV_CHGHEADER;
        ev->index = get32(d);
        ev->a = s[0];
        ev->b = s[1];
        return 1;
    case 'b':
        ev->type = MILTER_EV_REPLBODY;
        ev->data = d;
        ev->len = n;
        return 1;
    case '+':
    case '-':
        if (!strings(d, n, s, 1, false) || s[0][0] == '\0')
            return fail(m, "malformed recipient change");
        ev->type = c == '+' ? MILTER_EV_ADDRCPT : MILTER_EV_DELRCPT;
        ev->a = s[0];
        ev->b = "";
        return 1;
    case '2':
    case 'e':
        /* address, then optional ESMTP arguments in one string */
        if (!strings(d, n, s, 1, true) || s[0][0] == '\0')
            return fail(m, "malformed address change");
        ev->a = s[0];
        ev->b = "";
        if (strlen(s[0]) + 1 < n) {
            if (!strings(d + strlen(s[0]) + 1, n - strlen(s[0]) - 1, s + 1, 1, false))
                return fail(m, "malformed address change");
            ev->b = s[1];
        }
        ev->type = c == '2' ? MILTER_EV_ADDRCPT : MILTER_EV_CHGFROM;
        return 1;
    default: /* 'q' */
        if (!strings(d, n, s, 1, false))
            return fail(m, "malformed quarantine");
        ev->type = MILTER_EV_QUARANTINE;
        ev->a = s[0];
        return 1;
    }
}

/* The reply has been decoded: the command is answered when it is final. */
static int
answered(struct milter_proto *m, struct milter_event *ev)
{
    size_t i = first_await(m);

    if (ev->final) {
        pop(m, i + 1);
        pop_sent(m);
    }
    return 1;
}

int
milter_proto_next(struct milter_proto *m, struct milter_event *ev)
{
    size_t i = first_await(m), avail = m->in_len - m->in_pos;
    uint32_t plen;
    char *d, c, cmd;
    size_t n;
    int code;

    if (m->broken)
        return MXD_EINVAL;
    if (avail < 4)
        return 0;
    plen = get32(m->in + m->in_pos);
    if (plen == 0 || plen > MILTER_REPLY_MAX)
        return fail(m, plen == 0 ? "empty packet" : "packet too long");
    if (avail < 4 + (size_t)plen)
        return 0;
    if (!milter_proto_awaiting(m))
        return fail(m, "reply when none was awaited");
    d = m->in + m->in_pos + 5;
    n = plen - 1;
    c = d[-1];
    m->in_pos += 4 + (size_t)plen;
    cmd = m->recs[i].cmd;
    memset(ev, 0, sizeof(*ev));
    ev->cmd = cmd;
    ev->permitted = true;
    if (cmd == 'O') {
        if (c != 'O')
            return fail(m, "no OPTNEG reply");
        negotiate(m, d, n, ev);
        return m->broken ? MXD_EINVAL : answered(m, ev);
    }
    if (is_mod(c)) {
        if (cmd != 'E')
            return fail(m, "modification outside end of message");
        if (modification(m, c, d, n, ev) < 0)
            return MXD_EINVAL;
        return answered(m, ev);
    }
    ev->final = true;
    switch (c) {
    case 'a':
        ev->type = MILTER_EV_ACCEPT;
        break;
    case 'c':
        ev->type = MILTER_EV_CONTINUE;
        break;
    case 'r':
        ev->type = MILTER_EV_REJECT;
        break;
    case 't':
        ev->type = MILTER_EV_TEMPFAIL;
        break;
    case 'd':
        ev->type = MILTER_EV_DISCARD;
        break;
    case '4':
        ev->type = MILTER_EV_SHUTDOWN;
        break;
    case 'f':
        ev->type = MILTER_EV_CONNFAIL;
        break;
    case 'p':
        ev->type = MILTER_EV_PROGRESS;
        ev->final = false;
        break;
    case 's':
        if (cmd != 'B' || !(m->steps & MILTER_P_SKIP))
            return fail(m, "skip not allowed here");
        ev->type = MILTER_EV_SKIP;
        m->skip_body = true;
        drop_unsent(m, not_body);
        break;
    case 'y':
        if (n == 0 || d[n - 1] != '\0' || !replycode(m, d, &code))
            return fail(m, "malformed reply code");
        ev->type = MILTER_EV_REPLYCODE;
        ev->code = code;
        ev->b = m->text;
        break;
    default:
        return fail(m, "unknown reply");
    }
    return answered(m, ev);
}

uint32_t
milter_proto_actions(const struct milter_proto *m)
{
    return m->negotiated ? m->act : 0;
}

uint32_t
milter_proto_steps(const struct milter_proto *m)
{
    return m->negotiated ? m->steps : 0;
}

unsigned
milter_proto_version(const struct milter_proto *m)
{
    return m->negotiated ? m->version : 0;
}

/* ---- header fields for the stored message ------------------------------ */

size_t
milter_header_format(char *out, size_t size, const char *name, const char *value)
{
    size_t w, nl = strlen(name);
    bool line_start = false;

    if (!good_name(name) || nl + 4 > size)
        return 0;
    memcpy(out, name, nl);
    w = nl;
    out[w++] = ':';
    if (value[0] != ' ' && value[0] != '\t' && value[0] != '\0')
        out[w++] = ' ';
    for (const char *p = value; *p != '\0'; p++) {
        char ch = *p;

        if (ch == '\r' && p[1] == '\n')
            continue;
        if (ch == '\n' || ch == '\r') {
            if (w + 2 >= size)
                return 0;
            out[w++] = '\r';
            out[w++] = '\n';
            line_start = true;
            continue;
        }
        if (w + 4 >= size)
            return 0;
        if (line_start && ch != ' ' && ch != '\t')
            out[w++] = '\t'; /* a continuation line starts with a blank */
        line_start = false;
        out[w++] = ((unsigned char)ch < ' ' && ch != '\t') || ch == 127 ? ' ' : ch;
    }
    if (line_start) /* a trailing line break: the field ends there */
        w -= 2;
    if (w + 3 > size)
        return 0;
    out[w++] = '\r';
    out[w++] = '\n';
    out[w] = '\0';
    return w;
}
