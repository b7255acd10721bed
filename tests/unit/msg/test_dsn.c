/* Unit tests for dsn: every DSN is parsed back here (header, boundary,
 * the three RFC 6522 parts, the RFC 3464 fields per recipient) rather than
 * compared with a golden file, and every line of every output is checked
 * for CRLF and the 998-octet limit of RFC 5322 2.1.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msg/dsn.h"

#define NEW_QID "0JF4Q2ZK8X1MC"

static const char orig_headers[] = "Received: from client.remote.example (client.remote.example "
                                   "[192.0.2.7])\r\n\tby mx.example.test with ESMTP\r\n"
                                   "From: Sender <sender@remote.example>\r\n"
                                   "To: alice@example.test, bob@example.test\r\n"
                                   "Subject: hello\r\n";

static const struct dsn_rcpt two_rcpts[] = {
    {"alice@example.test", "5.1.1", "550 5.1.1 <alice@example.test>: User unknown",
     "lmtp.example.test", NULL, NULL},
    {"bob@example.test", "4.4.7", "delivery time expired", NULL, NULL, NULL},
};

static struct dsn_input
base_input(void)
{
    struct dsn_input in;

    memset(&in, 0, sizeof(in));
    in.reporting_mta = "mx.example.test";
    in.qid = "0JF4Q2Z000001";
    in.new_qid = NEW_QID;
    in.sender = "sender@remote.example";
    in.arrival = 0;
    in.now = 1700000000;
    in.rcpts = two_rcpts;
    in.nrcpts = 2;
    in.headers = orig_headers;
    in.headers_len = strlen(orig_headers);
    return in;
}

/* Every line ends in CRLF (no bare CR or LF, no NUL) and holds at most
 * 998 octets; the buffer is NUL-terminated after len. */
static void
check_lines(const char *s, size_t n)
{
    size_t start = 0, i;

    assert_true(n >= 2);
    assert_int_equal(s[n], '\0');
    assert_memory_equal(s + n - 2, "\r\n", 2);
    for (i = 0; i < n; i++) {
        assert_true(s[i] != '\0' && s[i] != '\n');
        if (s[i] == '\r') {
            assert_true(i + 1 < n && s[i + 1] == '\n');
            assert_true(i - start <= 998);
            start = i + 2;
            i++;
        }
    }
}

static size_t
count_str(const char *hay, const char *needle)
{
    size_t n = 0;
    const char *p = hay;

    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p++;
    }
    return n;
}

/* Value of the first field `name` in the header block at `block` (which
 * ends at a blank line or NUL), unfolded: a CRLF before WSP is dropped
 * (RFC 5322 2.2.3). NULL when absent. Caller frees. */
static char *
field_get(const char *block, const char *name)
{
    size_t nl = strlen(name);
    const char *p = block;

    while (*p != '\0' && strncmp(p, "\r\n", 2) != 0) {
        const char *eol = strstr(p, "\r\n");

        assert_non_null(eol);
        if (ascii_ncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            char *v = malloc(strlen(p) + 1);
            size_t o = 0;

            assert_non_null(v);
            for (p += nl + 1; *p == ' '; p++)
                ;
            while (*p != '\0' && !(p[0] == '\r' && p[1] == '\n' && p[2] != ' ' && p[2] != '\t')) {
                if (p[0] == '\r' && p[1] == '\n')
                    p += 2;
                else
                    v[o++] = *p++;
            }
            v[o] = '\0';
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

static void
assert_field(const char *block, const char *name, const char *want)
{
    char *v = field_get(block, name);

    assert_non_null(v);
    assert_string_equal(v, want);
    free(v);
}

/* Start of the k-th block of a header-like text whose blocks are separated
 * by blank lines (RFC 3464 2.1), or NULL. */
static const char *
block_at(const char *s, size_t k)
{
    for (; k > 0; k--) {
        s = strstr(s, "\r\n\r\n");
        if (s == NULL)
            return NULL;
        s += 4;
    }
    return *s != '\0' ? s : NULL;
}

/* Drops every CRLF that is followed by a space (a fold), in place. */
static void
unfold(char *s)
{
    size_t i, o = 0;

    for (i = 0; s[i] != '\0'; i++) {
        if (s[i] == '\r' && s[i + 1] == '\n' && s[i + 2] == ' ')
            i++;
        else
            s[o++] = s[i];
    }
    s[o] = '\0';
}

struct dsn_view {
    char *head;     /* the DSN's own header block, ending in CRLF */
    char *boundary; /* from its Content-Type */
    char *phead[3]; /* each part's header block */
    char *pbody[3]; /* each part's content */
};

static char *
dup_range(const char *a, const char *b)
{
    size_t n = (size_t)(b - a);
    char *s = malloc(n + 1);

    assert_non_null(s);
    memcpy(s, a, n);
    s[n] = '\0';
    return s;
}

static char *
boundary_of(const char *head)
{
    char *ct = field_get(head, "Content-Type");
    const char *b, *e;
    char *r;

    assert_non_null(ct);
    assert_non_null(strstr(ct, "multipart/report;"));
    assert_non_null(strstr(ct, "report-type=delivery-status"));
    b = strstr(ct, "boundary=\"");
    assert_non_null(b);
    b += strlen("boundary=\"");
    e = strchr(b, '"');
    assert_non_null(e);
    assert_true(e > b && e - b <= 70); /* RFC 2046 5.1.1 */
    r = dup_range(b, e);
    free(ct);
    return r;
}

/* Splits a DSN into header and three parts. The boundary must occur
 * exactly five times: in Content-Type, three delimiter lines and the close
 * delimiter, which ends the message. */
static void
view_parse(const char *s, size_t n, struct dsn_view *v)
{
    const char *hend = strstr(s, "\r\n\r\n"), *p;
    char delim[128], close[128];
    size_t i;

    assert_non_null(hend);
    v->head = dup_range(s, hend + 2);
    v->boundary = boundary_of(v->head);
    assert_int_equal(count_str(s, v->boundary), 5);
    snprintf(delim, sizeof(delim), "\r\n--%s\r\n", v->boundary);
    snprintf(close, sizeof(close), "\r\n--%s--\r\n", v->boundary);
    assert_true(n > strlen(close));
    assert_string_equal(s + n - strlen(close), close);
    p = strstr(hend + 2, delim);
    for (i = 0; i < 3; i++) {
        const char *start, *end, *hb;

        assert_non_null(p);
        start = p + strlen(delim);
        end = i < 2 ? strstr(start, delim) : s + n - strlen(close);
        assert_non_null(end);
        hb = strstr(start, "\r\n\r\n");
        assert_non_null(hb);
        assert_true(hb <= end);
        v->phead[i] = dup_range(start, hb + 2);
        v->pbody[i] = dup_range(hb + 4 <= end ? hb + 4 : end, end);
        p = end;
    }
}

static void
view_free(struct dsn_view *v)
{
    size_t i;

    free(v->head);
    free(v->boundary);
    for (i = 0; i < 3; i++) {
        free(v->phead[i]);
        free(v->pbody[i]);
    }
}

static char *
compose_ok(const struct dsn_input *in, size_t *len, struct dsn_view *v)
{
    char *out = NULL;

    assert_int_equal(dsn_compose(in, &out, len), 0);
    assert_non_null(out);
    check_lines(out, *len);
    memset(v, 0, sizeof(*v));
    view_parse(out, *len, v);
    return out;
}

static void
assert_part_types(const struct dsn_view *v, bool utf8)
{
    assert_field(v->phead[0], "Content-Type",
                 utf8 ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii");
    assert_field(v->phead[1], "Content-Type",
                 utf8 ? "message/global-delivery-status" : "message/delivery-status");
    assert_field(v->phead[2], "Content-Type",
                 utf8 ? "message/global-headers" : "text/rfc822-headers");
}

static void
test_dsn_header(void **state)
{
    struct dsn_input in = base_input();
    struct dsn_view v;
    size_t len;
    char *out;

    (void)state;
    out = compose_ok(&in, &len, &v);
    assert_field(v.head, "From", "Mail Delivery System <MAILER-DAEMON@mx.example.test>");
    assert_field(v.head, "To", "<sender@remote.example>");
    assert_field(v.head, "Subject", "Undelivered Mail Returned to Sender");
    assert_field(v.head, "Date", "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_field(v.head, "Message-ID", "<" NEW_QID "@mx.example.test>");
    assert_field(v.head, "Auto-Submitted", "auto-replied");
    assert_field(v.head, "MIME-Version", "1.0");
    assert_string_equal(v.boundary, "=_mxd_" NEW_QID);
    assert_part_types(&v, false);
    /* no 8-bit octet anywhere without SMTPUTF8 */
    for (size_t i = 0; i < len; i++)
        assert_true((unsigned char)out[i] < 0x80);
    view_free(&v);
    free(out);
}

static void
test_dsn_human_part(void **state)
{
    struct dsn_input in = base_input();
    struct dsn_view v;
    size_t len;
    char *out;

    (void)state;
    out = compose_ok(&in, &len, &v);
    unfold(v.pbody[0]);
    assert_non_null(strstr(v.pbody[0], "mx.example.test"));
    assert_non_null(strstr(v.pbody[0], "<alice@example.test>: host lmtp.example.test said: "
                                       "550 5.1.1 <alice@example.test>: User unknown\r\n"));
    assert_non_null(strstr(v.pbody[0], "<bob@example.test>: delivery time expired\r\n"));
    view_free(&v);
    free(out);
}

/* RFC 3464 2.3.5: Remote-MTA names the host ("dns; host"), not the
 * endpoint as configured: no port, no brackets, and none at all for a
 * unix socket (there is no name to give). The human part keeps it whole. */
static void
test_dsn_remote_mta_name(void **state)
{
    static const struct {
        const char *relay, *field;
    } cases[] = {
        {"lmtp.example.test:24", "dns; lmtp.example.test"},
        {"lmtp.example.test", "dns; lmtp.example.test"},
        {"192.0.2.1:2525", "dns; 192.0.2.1"},
        {"[2001:db8::1]:25", "dns; 2001:db8::1"},
        {"unix:/run/dovecot/lmtp", NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dsn_rcpt r = two_rcpts[0];
        struct dsn_input in = base_input();
        struct dsn_view v;
        const char *g;
        size_t len;
        char *out, *said;

        r.remote_mta = cases[i].relay;
        in.rcpts = &r;
        in.nrcpts = 1;
        out = compose_ok(&in, &len, &v);
        g = block_at(v.pbody[1], 1);
        assert_non_null(g);
        if (cases[i].field != NULL)
            assert_field(g, "Remote-MTA", cases[i].field);
        else
            assert_null(field_get(g, "Remote-MTA"));
        unfold(v.pbody[0]);
        said = xasprintf("host %s said: ", cases[i].relay);
        assert_non_null(strstr(v.pbody[0], said));
        free(said);
        view_free(&v);
        free(out);
    }
}

static void
test_dsn_status_part(void **state)
{
    struct dsn_input in = base_input();
    struct dsn_view v;
    const char *g;
    size_t len;
    char *out;

    (void)state;
    out = compose_ok(&in, &len, &v);
    assert_field(v.pbody[1], "Reporting-MTA", "dns; mx.example.test");
    assert_field(v.pbody[1], "Arrival-Date", "Thu, 01 Jan 1970 00:00:00 +0000");
    g = block_at(v.pbody[1], 1);
    assert_non_null(g);
    assert_field(g, "Final-Recipient", "rfc822; alice@example.test");
    assert_field(g, "Action", "failed");
    assert_field(g, "Status", "5.1.1");
    assert_field(g, "Remote-MTA", "dns; lmtp.example.test");
    assert_field(g, "Diagnostic-Code", "smtp; 550 5.1.1 <alice@example.test>: User unknown");
    g = block_at(v.pbody[1], 2);
    assert_non_null(g);
    assert_field(g, "Final-Recipient", "rfc822; bob@example.test");
    assert_field(g, "Action", "failed");
    assert_field(g, "Status", "4.4.7");
    assert_null(field_get(g, "Remote-MTA"));
    assert_field(g, "Diagnostic-Code", "smtp; delivery time expired");
    assert_null(block_at(v.pbody[1], 3));
    view_free(&v);
    free(out);
}

static void
test_dsn_headers_verbatim(void **state)
{
    struct dsn_input in = base_input();
    struct dsn_view v;
    size_t len;
    char *out;

    (void)state;
    out = compose_ok(&in, &len, &v);
    assert_string_equal(v.pbody[2], orig_headers);
    view_free(&v);
    free(out);
}

struct orig_case {
    const char *name;
    const char *in;
    const char *want;
};

static const struct orig_case orig_cases[] = {
    {"no final CRLF", "Subject: x\r\nX-A: y", "Subject: x\r\nX-A: y\r\n"},
    {"bare LF", "Subject: x\nX-A: y\n", "Subject: x\r\nX-A: y\r\n"},
    {"bare CR", "Subject: x\rX-A: y\r\n", "Subject: x\r\nX-A: y\r\n"},
    {"empty", "", ""},
};

static void
test_dsn_headers_normalised(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(orig_cases) / sizeof(orig_cases[0]); i++) {
        struct dsn_input in = base_input();
        struct dsn_view v;
        size_t len;
        char *out;

        in.headers = orig_cases[i].in;
        in.headers_len = strlen(orig_cases[i].in);
        out = compose_ok(&in, &len, &v);
        if (strcmp(v.pbody[2], orig_cases[i].want) != 0)
            fail_msg("%s: got \"%s\"", orig_cases[i].name, v.pbody[2]);
        view_free(&v);
        free(out);
    }
}

static void
test_dsn_headers_long_line(void **state)
{
    struct dsn_input in = base_input();
    struct dsn_view v;
    static char hdr[2600];
    char *out;
    size_t len, i, o = 0;

    (void)state;
    memcpy(hdr, "X-Long: ", 8);
    memset(hdr + 8, 'h', 2500);
    memcpy(hdr + 2508, "\r\nSubject: s\r\n", 15);
    in.headers = hdr;
    in.headers_len = strlen(hdr);
    out = compose_ok(&in, &len, &v);
    /* broken with CRLF SP; nothing lost */
    for (i = 0; v.pbody[2][i] != '\0'; i++)
        if (strncmp(v.pbody[2] + i, "\r\n ", 3) != 0)
            v.pbody[2][o++] = v.pbody[2][i];
        else
            i += 2;
    v.pbody[2][o] = '\0';
    assert_string_equal(v.pbody[2], hdr);
    view_free(&v);
    free(out);
}

struct date_case {
    time_t t;
    const char *want;
};

static const struct date_case date_cases[] = {
    {0, "Thu, 01 Jan 1970 00:00:00 +0000"},
    {86399, "Thu, 01 Jan 1970 23:59:59 +0000"},
    {951782400, "Tue, 29 Feb 2000 00:00:00 +0000"},
    {1700000000, "Tue, 14 Nov 2023 22:13:20 +0000"},
};

static void
test_dsn_dates(void **state)
{
    size_t i, n = sizeof(date_cases) / sizeof(date_cases[0]);

    (void)state;
    for (i = 0; i < n; i++) {
        struct dsn_input in = base_input();
        struct dsn_view v;
        size_t len;
        char *out;

        in.arrival = date_cases[i].t;
        in.now = date_cases[(i + 1) % n].t;
        out = compose_ok(&in, &len, &v);
        assert_field(v.pbody[1], "Arrival-Date", date_cases[i].want);
        assert_field(v.head, "Date", date_cases[(i + 1) % n].want);
        view_free(&v);
        free(out);
    }
}

/* Diagnostic-Code of the only recipient, unfolded, without "smtp; ". */
static char *
one_diag(const char *diag, bool *ok)
{
    struct dsn_input in = base_input();
    struct dsn_rcpt r = {"alice@example.test", "5.0.0", diag, NULL, NULL, NULL};
    struct dsn_view v;
    size_t len;
    char *out, *d, *res;

    in.rcpts = &r;
    in.nrcpts = 1;
    out = compose_ok(&in, &len, &v);
    d = field_get(block_at(v.pbody[1], 1), "Diagnostic-Code");
    assert_non_null(d);
    assert_memory_equal(d, "smtp; ", 6);
    res = strdup(d + 6);
    assert_non_null(res);
    *ok = strstr(v.pbody[0], "<alice@example.test>: ") != NULL;
    free(d);
    view_free(&v);
    free(out);
    return res;
}

static void
test_dsn_long_diagnostic(void **state)
{
    char *words = malloc(3001), *solid = malloc(3001), *got;
    size_t i, o = 0;
    bool ok;

    (void)state;
    assert_non_null(words);
    assert_non_null(solid);
    for (i = 0; i < 3000; i++)
        words[i] = i % 7 == 6 ? ' ' : (char)('a' + i % 7);
    words[2999] = 'z';
    words[3000] = '\0';
    memset(solid, 'x', 3000);
    solid[3000] = '\0';
    /* folded before existing spaces: unfolding restores the text */
    got = one_diag(words, &ok);
    assert_true(ok);
    assert_string_equal(got, words);
    free(got);
    /* no space to fold at: cut with CRLF SP, which adds only spaces */
    got = one_diag(solid, &ok);
    assert_true(ok);
    for (i = 0; got[i] != '\0'; i++)
        if (got[i] != ' ')
            got[o++] = got[i];
    got[o] = '\0';
    assert_string_equal(got, solid);
    free(got);
    free(words);
    free(solid);
}

struct clean_case {
    const char *in;
    const char *want;
};

static const struct clean_case clean_cases[] = {
    {"550 bad\r\nInjected: yes", "550 bad??Injected: yes"},
    {"550 tab\there\x7f", "550 tab?here?"},
    {"550   many    spaces  ", "550 many spaces"},
    {"550 caf\xc3\xa9", "550 caf??"},
};

static void
test_dsn_diagnostic_cleaned(void **state)
{
    size_t i;
    bool ok;

    (void)state;
    for (i = 0; i < sizeof(clean_cases) / sizeof(clean_cases[0]); i++) {
        char *got = one_diag(clean_cases[i].in, &ok);

        assert_true(ok);
        assert_string_equal(got, clean_cases[i].want);
        free(got);
    }
}

static void
test_dsn_boundary_collision(void **state)
{
    static const char hdr[] = "Subject: --=_mxd_" NEW_QID "\r\n"
                              "X-Trap: =_mxd_" NEW_QID "_0_ =_mxd_" NEW_QID "_2_\r\n"
                              "--=_mxd_" NEW_QID "--\r\n";
    struct dsn_rcpt r = {
        "alice@example.test", "5.0.0", "550 =_mxd_" NEW_QID "_1_", NULL, NULL, NULL};
    struct dsn_input in = base_input();
    struct dsn_view v;
    size_t len;
    char *out;

    (void)state;
    in.headers = hdr;
    in.headers_len = strlen(hdr);
    in.rcpts = &r;
    in.nrcpts = 1;
    out = compose_ok(&in, &len, &v);
    assert_string_equal(v.boundary, "=_mxd_" NEW_QID "_3_");
    assert_string_equal(v.pbody[2], hdr);
    assert_part_types(&v, false);
    view_free(&v);
    free(out);
}

static void
test_dsn_smtputf8(void **state)
{
    struct dsn_rcpt r[] = {
        {"\xce\xb4\xce\xbf\xce\xba@example.test", "5.1.1", "550 \xce\xb4 unknown", NULL, NULL,
         NULL},
        {"plain@example.test", "5.1.1", "550 unknown", NULL, NULL, NULL},
    };
    struct dsn_input in = base_input();
    struct dsn_view v;
    size_t len;
    char *out;

    (void)state;
    in.smtputf8 = true;
    in.sender = "s\xc3\xa9@remote.example";
    in.rcpts = r;
    out = compose_ok(&in, &len, &v);
    assert_part_types(&v, true);
    assert_field(v.phead[1], "Content-Transfer-Encoding", "8bit");
    assert_field(v.head, "To", "<s\xc3\xa9@remote.example>");
    assert_field(block_at(v.pbody[1], 1), "Final-Recipient",
                 "utf-8; \xce\xb4\xce\xbf\xce\xba@example.test");
    assert_field(block_at(v.pbody[1], 1), "Diagnostic-Code", "smtp; 550 \xce\xb4 unknown");
    assert_field(block_at(v.pbody[1], 2), "Final-Recipient", "rfc822; plain@example.test");
    view_free(&v);
    free(out);
}

enum bad_field {
    BF_SENDER,
    BF_MTA,
    BF_QID,
    BF_NEW_QID,
    BF_ADDR,
    BF_STATUS,
    BF_DIAG,
    BF_REMOTE,
    BF_HEADERS,
    BF_NRCPTS,
    BF_RCPTS,
};

struct bad_case {
    const char *name;
    enum bad_field field;
    const char *value;
};

static const struct bad_case bad_cases[] = {
    {"empty sender", BF_SENDER, ""},
    {"NULL sender", BF_SENDER, NULL},
    {"CRLF in sender", BF_SENDER, "a@b\r\nBcc: x@y"},
    {"8-bit sender without SMTPUTF8", BF_SENDER, "s\xc3\xa9@b.example"},
    {"no reporting MTA", BF_MTA, NULL},
    {"space in reporting MTA", BF_MTA, "mx example"},
    {"no qid", BF_QID, ""},
    {"no new qid", BF_NEW_QID, NULL},
    {"'@' in new qid", BF_NEW_QID, "a@b"},
    {"new qid too long", BF_NEW_QID, "0123456789012345678901234567890123456789X"},
    {"NULL address", BF_ADDR, NULL},
    {"LF in address", BF_ADDR, "a@b\n"},
    {"8-bit address without SMTPUTF8", BF_ADDR, "\xce\xb4@b.example"},
    {"NULL status", BF_STATUS, NULL},
    {"status class 3", BF_STATUS, "3.1.1"},
    {"status detail too long", BF_STATUS, "5.1.1000"},
    {"status trailing dot", BF_STATUS, "5.1."},
    {"NULL diagnostic", BF_DIAG, NULL},
    {"CR in remote MTA", BF_REMOTE, "mx\r"},
    {"NULL headers", BF_HEADERS, NULL},
    {"zero recipients", BF_NRCPTS, NULL},
    {"NULL recipients", BF_RCPTS, NULL},
};

static void
bad_apply(struct dsn_input *in, struct dsn_rcpt *r, const struct bad_case *c)
{
    switch (c->field) {
    case BF_SENDER:
        in->sender = c->value;
        break;
    case BF_MTA:
        in->reporting_mta = c->value;
        break;
    case BF_QID:
        in->qid = c->value;
        break;
    case BF_NEW_QID:
        in->new_qid = c->value;
        break;
    case BF_ADDR:
        r->address = c->value;
        break;
    case BF_STATUS:
        r->status = c->value;
        break;
    case BF_DIAG:
        r->diagnostic = c->value;
        break;
    case BF_REMOTE:
        r->remote_mta = c->value;
        break;
    case BF_HEADERS:
        in->headers = c->value;
        break;
    case BF_NRCPTS:
        in->nrcpts = 0;
        break;
    case BF_RCPTS:
        in->rcpts = NULL;
        break;
    }
}

static void
test_dsn_einval(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct dsn_input in = base_input();
        struct dsn_rcpt r[2] = {two_rcpts[0], two_rcpts[1]};
        char *out = (char *)&in; /* must stay untouched */
        size_t len = 42;
        int rc;

        in.rcpts = r;
        bad_apply(&in, &r[1], &bad_cases[i]);
        rc = dsn_compose(&in, &out, &len);
        if (rc != MXD_EINVAL || out != (char *)&in || len != 42)
            fail_msg("%s: rc %d", bad_cases[i].name, rc);
    }
}

static void
test_dsn_einval_args(void **state)
{
    struct dsn_input in = base_input();
    char *out = NULL;
    size_t len = 0;

    (void)state;
    assert_int_equal(dsn_compose(NULL, &out, &len), MXD_EINVAL);
    assert_int_equal(dsn_compose(&in, NULL, &len), MXD_EINVAL);
    assert_int_equal(dsn_compose(&in, &out, NULL), MXD_EINVAL);
    assert_null(out);
}

static void
test_dsn_suppressed(void **state)
{
    (void)state;
    assert_true(dsn_suppressed(""));
    assert_true(dsn_suppressed(NULL));
    assert_false(dsn_suppressed("sender@remote.example"));
    assert_false(dsn_suppressed("MAILER-DAEMON@remote.example"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dsn_header),
        cmocka_unit_test(test_dsn_human_part),
        cmocka_unit_test(test_dsn_status_part),
        cmocka_unit_test(test_dsn_remote_mta_name),
        cmocka_unit_test(test_dsn_headers_verbatim),
        cmocka_unit_test(test_dsn_headers_normalised),
        cmocka_unit_test(test_dsn_headers_long_line),
        cmocka_unit_test(test_dsn_dates),
        cmocka_unit_test(test_dsn_long_diagnostic),
        cmocka_unit_test(test_dsn_diagnostic_cleaned),
        cmocka_unit_test(test_dsn_boundary_collision),
        cmocka_unit_test(test_dsn_smtputf8),
        cmocka_unit_test(test_dsn_einval),
        cmocka_unit_test(test_dsn_einval_args),
        cmocka_unit_test(test_dsn_suppressed),
    };

    return cmocka_run_group_tests(tests, 0, NULL);
}
