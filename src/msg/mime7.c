/* mime7: the header scan for SMTPUTF8 (RFC 6531 3.4: a message needs the
 * extension when its envelope or header is not ASCII) and the 8-bit to
 * 7-bit converter for next hops without 8BITMIME (RFC 6152 3, RFC 2045,
 * RFC 2046). Owns struct mime7: one fixed-size block (a line, one header
 * field, the stack of open multipart boundaries, an output buffer), so
 * memory does not grow with the message. Pure: no I/O, clock or store;
 * any single thread. Errors: none are returned while feeding; the first
 * 8-bit octet that cannot be converted stops the output and makes
 * mime7_finish fail with MXD_EINVAL and a static reason. It does not
 * decode or re-encode base64 or quoted-printable parts, convert headers
 * (RFC 2047), or treat 8-bit in a part labelled 7bit as convertible: such
 * a message is not MIME-clean and is refused, never sent raw. */
#include "msg/mime7.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* ---- header scan ------------------------------------------------------- */

enum { HS_BOL, HS_BOL_CR, HS_MID };

bool
mime7_has_8bit(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

void
mime7_hscan_feed(struct mime7_hscan *h, const char *data, size_t len)
{
    for (size_t i = 0; i < len && !h->done; i++) {
        unsigned char c = (unsigned char)data[i];

        if (c >= 0x80)
            h->eight = true;
        if (c == '\n') {
            /* an empty line (LF or CR LF alone) ends the header */
            h->done = h->st != HS_MID;
            h->st = HS_BOL;
        } else if (c == '\r' && h->st == HS_BOL) {
            h->st = HS_BOL_CR;
        } else {
            h->st = HS_MID;
        }
    }
}

/* ---- 8-bit to 7-bit conversion ----------------------------------------- */

#define M7_LINE     1024 /* a longer line is handled in pieces */
#define M7_FIELD    8192 /* a longer Content-Type is unreadable */
#define M7_CTE      512  /* a longer Content-Transfer-Encoding is unreadable */
#define M7_BOUNDARY 100  /* RFC 2046 5.1.1 allows 70; a little slack */
#define M7_DEPTH    16   /* nested multiparts followed */
#define M7_OUT      4096 /* output buffer */
#define M7_QP_LINE  75   /* RFC 2045 6.7 (5): 76 with the soft break's '=' */

enum m7_type { M7_TEXT, M7_MULTIPART, M7_MESSAGE, M7_OTHER };
enum m7_cte { M7_CTE_NONE, M7_CTE_7BIT, M7_CTE_8BIT, M7_CTE_BINARY, M7_CTE_ENCODED };
enum m7_field { M7_F_OTHER, M7_F_CT, M7_F_CTE, M7_F_MV };

static const char m7_err_header[] = "8-bit octets in a header";

struct mime7 {
    mime7_emit_fn emit;
    void *arg;
    const char *err; /* set once: inconvertible */
    bool saw8;
    /* the line being assembled; lcont: it continues a piece already handled */
    char line[M7_LINE];
    size_t llen;
    bool lcont;
    bool rawline; /* the rest of this line passes as it is (a boundary) */
    /* the entity whose header is being read (in_header) */
    bool in_header;
    struct {
        bool mime;   /* MIME-Version seen, or a part of a multipart */
        bool broken; /* its Content-Type or -Transfer-Encoding is unreadable */
        bool ct_seen, cte_seen;
        enum m7_type type;
        bool digest;
        enum m7_cte cte;
        char boundary[M7_BOUNDARY + 1];
        size_t blen;
        bool cte_held; /* its Content-Transfer-Encoding field, held back */
        size_t cte_len;
        char cte_field[M7_CTE];
    } ent;
    /* the header field being read */
    bool fopen, fover;
    enum m7_field fkind;
    char field[M7_FIELD];
    size_t flen;
    /* body: raw, or quoted-printable; why an 8-bit octet in a raw one fails */
    bool qp;
    const char *why;
    struct {
        char b[M7_BOUNDARY + 1];
        size_t len;
        bool digest;
    } stack[M7_DEPTH];
    size_t depth;
    /* quoted-printable encoder */
    size_t col;
    char pend_ws;
    bool pend_cr;
    /* output */
    char out[M7_OUT];
    size_t olen;
};

static void
out_flush(struct mime7 *m)
{
    if (m->olen > 0 && m->err == NULL)
        m->emit(m->arg, m->out, m->olen);
    m->olen = 0;
}

static void
out_put(struct mime7 *m, const char *s, size_t n)
{
    while (n > 0) {
        size_t k = n < M7_OUT - m->olen ? n : M7_OUT - m->olen;

        memcpy(m->out + m->olen, s, k);
        m->olen += k;
        s += k;
        n -= k;
        if (m->olen == M7_OUT)
            out_flush(m);
    }
}

/* Octets that pass unchanged: an 8-bit one makes the message fail. */
static void
out_raw(struct mime7 *m, const char *s, size_t n, const char *why)
{
    if (m->err != NULL)
        return;
    if (mime7_has_8bit(s, n)) {
        m->err = why;
        m->olen = 0;
        return;
    }
    out_put(m, s, n);
}

static void
out_str(struct mime7 *m, const char *s)
{
    out_put(m, s, strlen(s));
}

/* -- quoted-printable (RFC 2045 6.7) -- */

static void
qp_room(struct mime7 *m, size_t n)
{
    if (m->col + n > M7_QP_LINE) {
        out_str(m, "=\r\n"); /* soft line break */
        m->col = 0;
    }
}

static void
qp_lit(struct mime7 *m, char c)
{
    qp_room(m, 1);
    out_put(m, &c, 1);
    m->col++;
}

static void
qp_enc(struct mime7 *m, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    char e[3] = {'=', hex[c >> 4], hex[c & 15]};

    qp_room(m, 3);
    out_put(m, e, 3);
    m->col += 3;
}

static void
qp_eol(struct mime7 *m)
{
    if (m->pend_ws != 0)
        qp_enc(m, (unsigned char)m->pend_ws); /* (3): no white space before a line end */
    m->pend_ws = 0;
    out_str(m, "\r\n");
    m->col = 0;
}

static void
qp_byte(struct mime7 *m, unsigned char c)
{
    if (m->pend_cr) {
        m->pend_cr = false;
        if (c == '\n') {
            qp_eol(m);
            return;
        }
        if (m->pend_ws != 0)
            qp_lit(m, m->pend_ws);
        m->pend_ws = 0;
        qp_enc(m, '\r'); /* a bare CR is data */
    }
    if (c == '\r') {
        m->pend_cr = true;
        return;
    }
    if (c == '\n') {
        qp_eol(m); /* a bare LF ends a line: CRLF on the wire */
        return;
    }
    if (m->pend_ws != 0)
        qp_lit(m, m->pend_ws);
    m->pend_ws = 0;
    if (c == ' ' || c == '\t')
        m->pend_ws = (char)c;
    else if (c >= 33 && c <= 126 && c != '=')
        qp_lit(m, (char)c);
    else
        qp_enc(m, c);
}

/* The end of the encoded data: what is held is encoded. */
static void
qp_flush(struct mime7 *m)
{
    if (m->pend_cr) {
        if (m->pend_ws != 0)
            qp_lit(m, m->pend_ws);
        m->pend_ws = 0;
        qp_enc(m, '\r');
    }
    if (m->pend_ws != 0)
        qp_enc(m, (unsigned char)m->pend_ws);
    m->pend_cr = false;
    m->pend_ws = 0;
    m->col = 0;
}

/* -- header field values (RFC 2045 5.1, 6.1; RFC 5322 3.2.2) -- */

/* Skips white space, line ends and (nested) comments. */
static size_t
skip_cfws(const char *s, size_t n, size_t i)
{
    int depth = 0;

    for (; i < n; i++) {
        char c = s[i];

        if (depth > 0 && c == '\\' && i + 1 < n)
            i++;
        else if (c == '(')
            depth++;
        else if (c == ')' && depth > 0)
            depth--;
        else if (depth == 0 && c != ' ' && c != '\t' && c != '\r' && c != '\n')
            break;
    }
    return i;
}

static bool
is_tchar(char c)
{
    return c > 32 && c < 127 && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* A token at s[*i]: its start and length (0: none). */
static size_t
token(const char *s, size_t n, size_t *i, const char **start)
{
    size_t b = *i;

    while (*i < n && is_tchar(s[*i]))
        (*i)++;
    *start = s + b;
    return *i - b;
}

static bool
tok_is(const char *t, size_t len, const char *word)
{
    return len == strlen(word) && ascii_ncasecmp(t, word, len) == 0;
}

/* A parameter value, token or quoted-string, into buf (NUL-terminated);
 * false when it is neither or does not fit. */
static bool
param_value(const char *s, size_t n, size_t *i, char *buf, size_t size)
{
    size_t o = 0;

    if (*i < n && s[*i] == '"') {
        for ((*i)++; *i < n && s[*i] != '"'; (*i)++) {
            if (s[*i] == '\\' && *i + 1 < n)
                (*i)++;
            if (s[*i] == '\r' || s[*i] == '\n')
                continue; /* folding inside the quotes */
            if (o + 1 >= size)
                return false;
            buf[o++] = s[*i];
        }
        if (*i >= n)
            return false;
        (*i)++;
    } else {
        const char *t;
        size_t len = token(s, n, i, &t);

        if (len == 0 || len >= size)
            return false;
        memcpy(buf, t, len);
        o = len;
    }
    buf[o] = '\0';
    return o > 0;
}

/* Content-Type: type "/" subtype *(";" parameter). */
static void
parse_ct(struct mime7 *m, const char *s, size_t n)
{
    const char *ty, *sub;
    size_t i = skip_cfws(s, n, 0), tl, sl;

    tl = token(s, n, &i, &ty);
    i = skip_cfws(s, n, i);
    if (tl == 0 || i >= n || s[i] != '/') {
        m->ent.broken = true;
        return;
    }
    i = skip_cfws(s, n, i + 1);
    sl = token(s, n, &i, &sub);
    m->ent.type = tok_is(ty, tl, "text")                                   ? M7_TEXT
                  : tok_is(ty, tl, "multipart")                            ? M7_MULTIPART
                  : tok_is(ty, tl, "message") && tok_is(sub, sl, "rfc822") ? M7_MESSAGE
                                                                           : M7_OTHER;
    m->ent.digest = m->ent.type == M7_MULTIPART && tok_is(sub, sl, "digest");
    while ((i = skip_cfws(s, n, i)) < n && s[i] == ';') {
        const char *a;
        size_t al;
        char val[M7_BOUNDARY + 1];

        i = skip_cfws(s, n, i + 1);
        al = token(s, n, &i, &a);
        i = skip_cfws(s, n, i);
        if (al == 0 || i >= n || s[i] != '=')
            break;
        i = skip_cfws(s, n, i + 1);
        if (!param_value(s, n, &i, val, sizeof(val))) {
            if (tok_is(a, al, "boundary"))
                m->ent.broken = true; /* too long, or malformed */
            break;
        }
        if (tok_is(a, al, "boundary")) {
            m->ent.blen = strlen(val);
            memcpy(m->ent.boundary, val, m->ent.blen + 1);
        }
    }
}

static void
parse_cte(struct mime7 *m, const char *s, size_t n)
{
    const char *t;
    size_t i = skip_cfws(s, n, 0);
    size_t len = token(s, n, &i, &t);

    m->ent.cte = tok_is(t, len, "7bit")     ? M7_CTE_7BIT
                 : tok_is(t, len, "8bit")   ? M7_CTE_8BIT
                 : tok_is(t, len, "binary") ? M7_CTE_BINARY
                                            : M7_CTE_ENCODED;
}

/* -- entities -- */

static void
entity_begin(struct mime7 *m, bool mime, enum m7_type type)
{
    memset(&m->ent, 0, sizeof(m->ent));
    m->ent.mime = mime;
    m->ent.type = type;
    m->in_header = true;
    m->fopen = false;
}

/* The field's value: after the colon. */
static void
field_end(struct mime7 *m)
{
    const char *colon = memchr(m->field, ':', m->flen);
    size_t off = colon != NULL ? (size_t)(colon - m->field) + 1 : m->flen;

    if (!m->fopen)
        return;
    m->fopen = false;
    if (m->fover)
        return;
    if (m->fkind == M7_F_MV) {
        m->ent.mime = true;
    } else if (m->fkind == M7_F_CT) {
        parse_ct(m, m->field + off, m->flen - off);
    } else if (m->fkind == M7_F_CTE) {
        parse_cte(m, m->field + off, m->flen - off);
        memcpy(m->ent.cte_field, m->field, m->flen);
        m->ent.cte_len = m->flen;
        m->ent.cte_held = true;
    }
}

static void
field_add(struct mime7 *m, const char *p, size_t n)
{
    size_t cap = m->fkind == M7_F_CTE ? M7_CTE : M7_FIELD;

    if (m->fkind != M7_F_OTHER && !m->fover && n <= cap - m->flen) {
        memcpy(m->field + m->flen, p, n);
        m->flen += n;
        if (m->fkind != M7_F_CTE) /* the others pass on at once */
            out_raw(m, p, n, m7_err_header);
        return;
    }
    if (m->fkind != M7_F_OTHER && !m->fover) {
        /* too long to read: the part cannot be followed; it passes on */
        if (m->fkind == M7_F_CTE)
            out_raw(m, m->field, m->flen, m7_err_header);
        if (m->fkind != M7_F_MV)
            m->ent.broken = true;
        m->fover = true;
    }
    out_raw(m, p, n, m7_err_header);
}

/* RFC 5322 2.2: printable ASCII but ':' up to the colon (white space
 * before it tolerated, RFC 5322 4.5.3). Its name's kind in *kind. */
static bool
field_start(const char *p, size_t n, enum m7_field *kind)
{
    size_t i = 0, name;

    while (i < n && p[i] > 32 && p[i] < 127 && p[i] != ':')
        i++;
    name = i;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (name == 0 || i >= n || p[i] != ':')
        return false;
    *kind = tok_is(p, name, "content-type")                ? M7_F_CT
            : tok_is(p, name, "content-transfer-encoding") ? M7_F_CTE
            : tok_is(p, name, "mime-version")              ? M7_F_MV
                                                           : M7_F_OTHER;
    return true;
}

static void
field_begin(struct mime7 *m, const char *p, size_t n, enum m7_field kind)
{
    if ((kind == M7_F_CT && m->ent.ct_seen) || (kind == M7_F_CTE && m->ent.cte_seen))
        m->ent.broken = true; /* two of them: which one counts is anybody's guess */
    m->ent.ct_seen |= kind == M7_F_CT;
    m->ent.cte_seen |= kind == M7_F_CTE;
    m->fopen = true;
    m->fover = false;
    m->fkind = kind;
    m->flen = 0;
    field_add(m, p, n);
}

/* Where the part's Content-Transfer-Encoding was: the new one (a field
 * that was there is dropped), or the held one as it was. */
static void
cte_out(struct mime7 *m, const char *label)
{
    if (label != NULL) {
        out_str(m, "Content-Transfer-Encoding: ");
        out_str(m, label);
        out_str(m, "\r\n");
    } else if (m->ent.cte_held) {
        out_raw(m, m->ent.cte_field, m->ent.cte_len, m7_err_header);
    }
}

/* The end of a header: how the body goes, and the part's
 * Content-Transfer-Encoding. Returns true when an attached message's
 * header follows (message/rfc822). */
static bool
header_end(struct mime7 *m, bool *emitted)
{
    bool eight = m->ent.cte == M7_CTE_8BIT || m->ent.cte == M7_CTE_BINARY;
    const char *label = NULL;
    bool nested = false;

    field_end(m);
    m->in_header = false;
    m->qp = false;
    m->col = 0;
    m->pend_ws = 0;
    m->pend_cr = false;
    if (!m->ent.mime || m->ent.broken) {
        m->why = !m->ent.mime ? "8-bit body without MIME-Version"
                              : "8-bit octets in a part whose Content-Type or "
                                "Content-Transfer-Encoding cannot be read";
    } else if (m->ent.type == M7_TEXT && eight) {
        m->qp = true;
        label = "quoted-printable";
    } else if (m->ent.type == M7_TEXT) {
        m->why = m->ent.cte == M7_CTE_ENCODED ? "8-bit octets in an encoded part"
                                              : "8-bit octets in a text part labelled 7bit";
    } else if (m->ent.type == M7_MULTIPART && m->ent.blen > 0 && m->depth < M7_DEPTH &&
               m->ent.cte != M7_CTE_ENCODED) {
        m->stack[m->depth].len = m->ent.blen;
        m->stack[m->depth].digest = m->ent.digest;
        memcpy(m->stack[m->depth].b, m->ent.boundary, m->ent.blen);
        m->depth++;
        m->why = "8-bit octets outside the parts of a multipart";
        label = eight ? "7bit" : NULL; /* RFC 2045 6.4: 7bit, 8bit or binary */
    } else if (m->ent.type == M7_MESSAGE && m->ent.cte != M7_CTE_ENCODED) {
        nested = true; /* RFC 2046 5.2.1: the message inside is followed */
        label = eight ? "7bit" : NULL;
    } else {
        m->why = m->ent.type == M7_MULTIPART ? "8-bit octets in a multipart that cannot be followed"
                                             : "8-bit octets in a non-text part";
        label = eight ? "7bit" : NULL; /* true once nothing 8-bit is in it */
    }
    *emitted = label != NULL || m->ent.cte_held;
    cte_out(m, label);
    return nested;
}

/* A boundary line of an open multipart (RFC 2046 5.1.1: the innermost
 * first; an outer one ends the inner ones too): its level, or -1. */
static int
boundary_level(const struct mime7 *m, const char *p, size_t n, bool *close)
{
    if (n < 2 || p[0] != '-' || p[1] != '-')
        return -1;
    for (size_t k = m->depth; k-- > 0;) {
        size_t bl = m->stack[k].len;

        if (n - 2 >= bl && memcmp(p + 2, m->stack[k].b, bl) == 0) {
            *close = n - 2 >= bl + 2 && p[2 + bl] == '-' && p[3 + bl] == '-';
            return (int)k;
        }
    }
    return -1;
}

static void
body_piece(struct mime7 *m, const char *p, size_t n, bool bol, bool eol)
{
    bool close = false;
    int k = bol ? boundary_level(m, p, n, &close) : -1;

    if (k >= 0) {
        if (m->qp)
            qp_flush(m);
        out_raw(m, p, n, "8-bit octets on a boundary line");
        m->rawline = !eol;
        m->depth = (size_t)k + (close ? 0 : 1);
        m->qp = false;
        if (close)
            m->why = "8-bit octets outside the parts of a multipart";
        else
            entity_begin(m, true, m->stack[k].digest ? M7_MESSAGE : M7_TEXT);
        return;
    }
    if (!m->qp) {
        out_raw(m, p, n, m->why);
        return;
    }
    for (size_t i = 0; i < n; i++)
        qp_byte(m, (unsigned char)p[i]);
}

static bool
empty_line(const char *p, size_t n, bool eol)
{
    return eol && (n == 1 || (n == 2 && p[0] == '\r'));
}

static void header_piece(struct mime7 *m, const char *p, size_t n, bool bol, bool eol);

/* The header ends at p (an empty line, or a line that is no field). */
static void
header_done(struct mime7 *m, const char *p, size_t n, bool bol, bool eol)
{
    bool emitted = false;
    bool blank = empty_line(p, n, eol);
    bool nested = header_end(m, &emitted);

    if (blank) {
        out_raw(m, p, n, m7_err_header);
    } else if (emitted) {
        out_str(m, "\r\n"); /* what we put in the header stays in it */
    }
    if (nested)
        entity_begin(m, false, M7_TEXT); /* the attached message's header */
    if (blank)
        return;
    if (nested)
        header_piece(m, p, n, bol, eol);
    else
        body_piece(m, p, n, bol, eol);
}

static void
header_piece(struct mime7 *m, const char *p, size_t n, bool bol, bool eol)
{
    enum m7_field kind;

    if (!bol) {
        field_add(m, p, n); /* the rest of a long line */
        return;
    }
    if (m->fopen && (p[0] == ' ' || p[0] == '\t') && !empty_line(p, n, eol)) {
        field_add(m, p, n); /* folded (RFC 5322 2.2.3) */
        return;
    }
    field_end(m);
    if (!empty_line(p, n, eol) && field_start(p, n, &kind)) {
        field_begin(m, p, n, kind);
        return;
    }
    header_done(m, p, n, bol, eol);
}

/* One piece of a line: bol, it starts the line; eol, it ends it. */
static void
piece(struct mime7 *m, const char *p, size_t n, bool bol, bool eol)
{
    if (m->err != NULL)
        return;
    if (!bol && m->rawline) {
        out_raw(m, p, n, "8-bit octets on a boundary line");
    } else if (m->in_header) {
        header_piece(m, p, n, bol, eol);
    } else {
        body_piece(m, p, n, bol, eol);
    }
    if (eol)
        m->rawline = false;
}

struct mime7 *
mime7_new(mime7_emit_fn emit, void *arg)
{
    struct mime7 *m = xcalloc(1, sizeof(*m));

    m->emit = emit;
    m->arg = arg;
    entity_begin(m, false, M7_TEXT); /* RFC 2045 4: MIME-Version makes it MIME */
    return m;
}

void
mime7_free(struct mime7 *m)
{
    free(m);
}

void
mime7_feed(struct mime7 *m, const char *data, size_t len)
{
    size_t i = 0;

    if (!m->saw8)
        m->saw8 = mime7_has_8bit(data, len);
    while (i < len && m->err == NULL) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t want = nl != NULL ? (size_t)(nl - (data + i)) + 1 : len - i;
        size_t k = want < M7_LINE - m->llen ? want : M7_LINE - m->llen;
        bool eol;

        memcpy(m->line + m->llen, data + i, k);
        m->llen += k;
        i += k;
        eol = m->llen > 0 && m->line[m->llen - 1] == '\n';
        if (eol || m->llen == M7_LINE) {
            piece(m, m->line, m->llen, !m->lcont, eol);
            m->lcont = !eol;
            m->llen = 0;
        }
    }
    out_flush(m);
}

int
mime7_finish(struct mime7 *m)
{
    if (m->llen > 0)
        piece(m, m->line, m->llen, !m->lcont, false);
    m->llen = 0;
    if (m->err == NULL && m->in_header) {
        bool emitted;

        (void)header_end(m, &emitted); /* a message that is all header */
    }
    if (m->err == NULL && m->qp)
        qp_flush(m);
    out_flush(m);
    return m->err != NULL ? MXD_EINVAL : 0;
}

const char *
mime7_error(const struct mime7 *m)
{
    return m->err;
}

bool
mime7_saw_8bit(const struct mime7 *m)
{
    return m->saw8;
}
