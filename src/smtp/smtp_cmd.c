/* smtp_cmd: one function per SMTP command, for smtp_proto. Same contract
 * as smtp_proto.c: pure, replies instead of errors, check before apply.
 * RFC 5321 4.1.1 (commands), 4.1.4 (order), RFC 1870 (SIZE), RFC 6152
 * (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3030 (CHUNKING/BDAT). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "smtp/smtp_proto_impl.h"

#define R smtp_proto__reply

struct smtp_cmd {
    const char *name;
    enum smtp_step (*fn)(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev);
};

static bool
is_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Decimal to uint64; saturates at UINT64_MAX (a SIZE that big is too big). */
static uint64_t
parse_u64(const char *s, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');

        if (v > (UINT64_MAX - d) / 10)
            return UINT64_MAX;
        v = v * 10 + d;
    }
    return v;
}

/* The client's name in HELO/EHLO: one token of printable ASCII or UTF-8.
 * Not required to be a valid domain: many real clients send bare names, and
 * the name is only recorded (escaped) in the Received header. */
static bool
helo_arg(struct smtp_proto *p, const char *arg, size_t len)
{
    if (len == 0 || len >= sizeof(p->helo) || memchr(arg, ' ', len) != NULL)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)arg[i] < 0x21 || arg[i] == 0x7f)
            return false;
    if (!addr_utf8_valid(arg, len))
        return false;
    memcpy(p->helo, arg, len);
    p->helo[len] = '\0';
    return true;
}

void
smtp_proto__helo_reply(struct smtp_proto *p)
{
    const char *verb = p->esmtp ? "EHLO" : "HELO";
    char buf[SMTP_REPLY_MAX];
    size_t off;

    if (!p->esmtp) {
        R(p, verb, 250, "%s", p->cfg.hostname);
        return;
    }
    /* RFC 5321 4.1.1.1: multi-line reply, one extension a line. */
    snprintf(buf, sizeof(buf),
             "%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
             "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-ETRN\r\n250-DSN\r\n%s250 CHUNKING",
             p->cfg.hostname, (unsigned long long)p->cfg.max_message_size,
             /* RFC 8689 2: REQUIRETLS only where the session itself is TLS */
             p->tls             ? "250-REQUIRETLS\r\n"
             : p->cfg.tls_offer ? "250-STARTTLS\r\n"
                                : "");
    off = p->reply_len;
    R(p, verb, 250, "-%s", buf);
    /* "250 -host" -> "250-host": the first line continues. */
    memmove(p->reply + off + 3, p->reply + off + 4, p->reply_len - off - 4);
    p->reply_len--;
}

static enum smtp_step
cmd_helo_common(struct smtp_proto *p, const char *verb, const char *arg, size_t len, bool esmtp,
                struct smtp_event *ev)
{
    if (!helo_arg(p, arg, len)) {
        R(p, verb, 501, "5.5.4 Syntax: %s hostname", verb);
        return STEP_AGAIN;
    }
    smtp_proto__txn_reset(p);
    p->esmtp = esmtp;
    if (p->cfg.helo_answered) {
        p->owed = OWE_HELO;
        ev->type = SMTP_EV_HELO;
        ev->data = p->helo;
        ev->len = strlen(p->helo);
        return STEP_EVENT;
    }
    p->pend_helo = true;
    smtp_proto__helo_reply(p);
    return STEP_AGAIN;
}

static enum smtp_step
cmd_ehlo(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    return cmd_helo_common(p, "EHLO", arg, len, true, ev);
}

static enum smtp_step
cmd_helo(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    return cmd_helo_common(p, "HELO", arg, len, false, ev);
}

/* Parses "FROM:<path>" / "TO:<path>" up to the parameters. Returns the
 * addr_status, or 1 for a syntax error before the path; *rest and *rlen hold
 * what follows the path. */
static int
path_arg(const char *arg, size_t len, const char *prefix, bool is_mail, struct addr *out,
         const char **rest, size_t *rlen)
{
    size_t pl = strlen(prefix);
    size_t i;
    size_t used;
    int rc;

    if (len < pl || ascii_ncasecmp(arg, prefix, pl) != 0)
        return 1;
    /* RFC 5321 has no space after the colon; accept it as nearly every
     * MTA does, since real clients send it. */
    for (i = pl; i < len && arg[i] == ' '; i++)
        ;
    if (i == len || arg[i] != '<')
        return 1;
    rc = addr_parse_path(arg + i, len - i, is_mail, true, out, &used);
    if (rc != ADDR_OK)
        return rc;
    *rest = arg + i + used;
    *rlen = len - i - used;
    return 0;
}

/* Reply for a path that addr_parse_path refused. */
static void
path_error(struct smtp_proto *p, const char *verb, int rc, bool is_mail)
{
    const char *enh = is_mail ? "5.1.7" : "5.1.3";
    const char *what = is_mail ? "sender" : "recipient";

    if (rc == 1)
        R(p, verb, 501, "5.5.4 Syntax: %s", is_mail ? "MAIL FROM:<address>" : "RCPT TO:<address>");
    else if (rc == ADDR_E_TOO_LONG)
        R(p, verb, 501, "%s Error: %s address too long", enh, what);
    else if (rc == ADDR_E_BAD_UTF8)
        R(p, verb, 501, "%s Error: %s address is not valid UTF-8", enh, what);
    else
        R(p, verb, 501, "%s Error: bad %s address syntax", enh, what);
}

struct mail_params {
    bool size_seen, body_seen, utf8_seen, ret_seen, envid_seen, requiretls;
    uint64_t size;
    bool body_8bit;
    enum dsn_ret ret;
    char envid[DSN_ENVID_MAX + 1];
};

static bool
key_is(const char *k, size_t kl, const char *name)
{
    return kl == strlen(name) && ascii_ncasecmp(k, name, kl) == 0;
}

/* A known parameter given twice, without its value or with a bad one:
 * RFC 3461 4: 501 5.5.4 for the DSN parameters, as for the others. */
static bool
param_bad(struct smtp_proto *p, const char *verb, const char *k, size_t kl)
{
    R(p, verb, 501, "5.5.4 Error: bad or repeated %.*s parameter", (int)kl, k);
    return false;
}

static bool
param_unknown(struct smtp_proto *p, const char *verb, const char *k, size_t kl)
{
    R(p, verb, 555, "5.5.4 Error: unsupported parameter %.*s", (int)(kl > 32 ? 32 : kl), k);
    return false;
}

/* One MAIL parameter (RFC 5321 4.1.2 esmtp-param); false after replying. */
static bool
mail_param(struct smtp_proto *p, const char *k, size_t kl, const char *v, size_t vl, bool hasv,
           struct mail_params *mp)
{
    if (key_is(k, kl, "SIZE")) {
        if (mp->size_seen || !hasv || !is_digits(v, vl))
            return param_bad(p, "MAIL", k, kl);
        mp->size_seen = true;
        mp->size = parse_u64(v, vl);
    } else if (key_is(k, kl, "BODY")) {
        if (mp->body_seen || !hasv ||
            !((vl == 4 && ascii_ncasecmp(v, "7BIT", 4) == 0) ||
              (vl == 8 && ascii_ncasecmp(v, "8BITMIME", 8) == 0)))
            return param_bad(p, "MAIL", k, kl);
        mp->body_seen = true;
        mp->body_8bit = vl == 8;
    } else if (key_is(k, kl, "SMTPUTF8")) {
        if (mp->utf8_seen || hasv)
            return param_bad(p, "MAIL", k, kl);
        mp->utf8_seen = true;
    } else if (key_is(k, kl, "RET")) { /* RFC 3461 4.3 */
        if (mp->ret_seen || !hasv || dsn_ret_parse(v, vl, &mp->ret) != 0)
            return param_bad(p, "MAIL", k, kl);
        mp->ret_seen = true;
    } else if (key_is(k, kl, "ENVID")) { /* RFC 3461 4.4 */
        if (mp->envid_seen || !hasv || dsn_envid_parse(v, vl, mp->envid, sizeof(mp->envid)) != 0)
            return param_bad(p, "MAIL", k, kl);
        mp->envid_seen = true;
    } else if (key_is(k, kl, "REQUIRETLS")) { /* RFC 8689 2: no value */
        if (mp->requiretls || hasv)
            return param_bad(p, "MAIL", k, kl);
        /* Only over TLS (RFC 8689 2: the session itself must use TLS);
         * 5.7.10 "Encryption needed" (RFC 5248). */
        if (!p->tls) {
            R(p, "MAIL", 530, "5.7.10 Error: REQUIRETLS needs a TLS session, use STARTTLS first");
            return false;
        }
        mp->requiretls = true;
    } else {
        return param_unknown(p, "MAIL", k, kl);
    }
    return true;
}

/* One RCPT parameter: RFC 3461 4.1 NOTIFY, 4.2 ORCPT. */
static bool
rcpt_param(struct smtp_proto *p, const char *k, size_t kl, const char *v, size_t vl, bool hasv,
           struct smtp_rcpt_dsn *rp)
{
    if (key_is(k, kl, "NOTIFY")) {
        if (rp->notify != 0 || !hasv || dsn_notify_parse(v, vl, &rp->notify) != 0)
            return param_bad(p, "RCPT", k, kl);
    } else if (key_is(k, kl, "ORCPT")) {
        if (rp->orcpt[0] != '\0' || !hasv ||
            dsn_orcpt_parse(v, vl, rp->orcpt, sizeof(rp->orcpt)) != 0) {
            rp->orcpt[0] = '\0';
            return param_bad(p, "RCPT", k, kl);
        }
    } else {
        return param_unknown(p, "RCPT", k, kl);
    }
    return true;
}

/* Walks " KEY[=VALUE]..." after the path: MAIL's into mp, RCPT's into rp. */
static bool
params_parse(struct smtp_proto *p, const char *verb, const char *s, size_t n,
             struct mail_params *mp, struct smtp_rcpt_dsn *rp)
{
    size_t i = 0;

    if (n > 0 && s[0] != ' ') {
        R(p, verb, 501, "5.5.4 Error: garbage after the address");
        return false;
    }
    while (i < n) {
        size_t k, eq, e;
        bool ok;

        while (i < n && s[i] == ' ')
            i++;
        if (i == n)
            break;
        for (e = i; e < n && s[e] != ' '; e++)
            ;
        for (eq = i; eq < e && s[eq] != '='; eq++)
            ;
        k = i;
        i = e;
        if (!p->esmtp) /* RFC 5321 4.1.2: parameters only after EHLO */
            return param_unknown(p, verb, s + k, eq - k);
        if (mp != NULL)
            ok = mail_param(p, s + k, eq - k, s + eq + 1, eq < e ? e - eq - 1 : 0, eq < e, mp);
        else
            ok = rcpt_param(p, s + k, eq - k, s + eq + 1, eq < e ? e - eq - 1 : 0, eq < e, rp);
        if (!ok)
            return false;
    }
    return true;
}

static enum smtp_step
cmd_mail(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    struct mail_params mp = {0};
    const char *rest = NULL;
    size_t rlen = 0;
    int rc;

    if (p->helo[0] == '\0') {
        R(p, "MAIL", 503, "5.5.1 Error: send HELO/EHLO first");
        return STEP_AGAIN;
    }
    if (p->txn_active) {
        R(p, "MAIL", 503, "5.5.1 Error: nested MAIL command");
        return STEP_AGAIN;
    }
    rc = path_arg(arg, len, "FROM:", true, &p->pend_addr, &rest, &rlen);
    if (rc != 0) {
        path_error(p, "MAIL", rc, true);
        return STEP_AGAIN;
    }
    if (!params_parse(p, "MAIL", rest, rlen, &mp, NULL))
        return STEP_AGAIN;
    if (p->pend_addr.utf8 && !mp.utf8_seen) {
        R(p, "MAIL", 553, "5.6.7 Error: non-ASCII address requires SMTPUTF8 (RFC 6531)");
        return STEP_AGAIN;
    }
    if (mp.size > p->cfg.max_message_size) {
        R(p, "MAIL", 552, "5.3.4 Error: message size exceeds fixed limit of %llu octets",
          (unsigned long long)p->cfg.max_message_size);
        return STEP_AGAIN;
    }
    p->pend_utf8 = mp.utf8_seen;
    p->pend_8bit = mp.body_8bit;
    p->pend_size = mp.size;
    p->pend_ret = mp.ret;
    memcpy(p->pend_envid, mp.envid, sizeof(p->pend_envid));
    p->pend_requiretls = mp.requiretls;
    p->owed = OWE_MAIL;
    ev->type = SMTP_EV_MAIL;
    ev->addr = &p->pend_addr;
    return STEP_EVENT;
}

static bool
rcpt_duplicate(const struct smtp_proto *p, const struct addr *a)
{
    for (size_t i = 0; i < p->txn.nrcpts; i++)
        if (strcmp(p->txn.rcpts[i].local, a->local) == 0 &&
            strcmp(p->txn.rcpts[i].domain_lc, a->domain_lc) == 0)
            return true;
    return false;
}

static enum smtp_step
cmd_rcpt(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    const char *rest = NULL;
    size_t rlen = 0;
    int rc;

    if (!p->txn_active) {
        R(p, "RCPT", 503, "5.5.1 Error: need MAIL command");
        return STEP_AGAIN;
    }
    p->rcpt_seen = true;
    rc = path_arg(arg, len, "TO:", false, &p->pend_addr, &rest, &rlen);
    if (rc != 0) {
        path_error(p, "RCPT", rc, false);
        return STEP_AGAIN;
    }
    memset(&p->pend_rdsn, 0, sizeof(p->pend_rdsn));
    if (!params_parse(p, "RCPT", rest, rlen, NULL, &p->pend_rdsn))
        return STEP_AGAIN;
    if (p->pend_addr.utf8 && !p->txn.smtputf8) {
        R(p, "RCPT", 553, "5.6.7 Error: non-ASCII address requires SMTPUTF8 (RFC 6531)");
        return STEP_AGAIN;
    }
    if (rcpt_duplicate(p, &p->pend_addr)) {
        R(p, "RCPT", 250, "2.1.5 Ok");
        return STEP_AGAIN;
    }
    if (p->txn.nrcpts >= p->cfg.max_recipients) {
        /* RFC 5321 4.5.3.1.10 */
        R(p, "RCPT", 452, "4.5.3 Error: too many recipients");
        return STEP_AGAIN;
    }
    p->owed = OWE_RCPT;
    ev->type = SMTP_EV_RCPT;
    ev->addr = &p->pend_addr;
    return STEP_EVENT;
}

/* Is a transaction ready for content? Replies and returns false if not. */
static bool
txn_ready(const struct smtp_proto *p, int *code, const char **text)
{
    if (!p->txn_active) {
        *code = 503;
        *text = "5.5.1 Error: need MAIL command";
    } else if (!p->rcpt_seen) {
        *code = 503;
        *text = "5.5.1 Error: need RCPT command";
    } else if (p->txn.nrcpts == 0) {
        /* RFC 5321 3.3: every RCPT was refused. */
        *code = 554;
        *text = "5.5.1 Error: no valid recipients";
    } else {
        return true;
    }
    return false;
}

static enum smtp_step
cmd_data(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    int code;
    const char *text;

    (void)arg;
    (void)ev;
    if (len > 0) {
        R(p, "DATA", 501, "5.5.4 Syntax: DATA");
        return STEP_AGAIN;
    }
    if (!txn_ready(p, &code, &text)) {
        R(p, "DATA", code, "%s", text);
        return STEP_AGAIN;
    }
    if (p->bdat_used) {
        R(p, "DATA", 503, "5.5.1 Error: DATA after BDAT");
        return STEP_AGAIN;
    }
    p->phase = PH_DATA;
    dotstuff_init(&p->ds);
    p->body_begun = true;
    p->pend_begin = true;
    R(p, "DATA", 354, "End data with <CR><LF>.<CR><LF>");
    return STEP_AGAIN;
}

static enum smtp_step
cmd_bdat(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    size_t n = 0;
    int code;
    const char *text;

    (void)ev;
    while (n < len && arg[n] != ' ')
        n++;
    if (!is_digits(arg, n) || n > 19 ||
        !(n == len || (len - n == 5 && ascii_ncasecmp(arg + n, " LAST", 5) == 0))) {
        /* The chunk size is unknown, so we cannot skip its octets. */
        R(p, "BDAT", 501, "5.5.4 Syntax: BDAT size [LAST]");
        return STEP_AGAIN;
    }
    p->phase = PH_BDAT;
    p->bdat_left = parse_u64(arg, n);
    p->bdat_last = n < len;
    p->bdat_discard = !txn_ready(p, &code, &text);
    if (p->bdat_discard) {
        /* RFC 3030 2: the octets are read and thrown away. */
        p->discard_code = code;
        p->discard_text = text;
        return STEP_AGAIN;
    }
    if (!p->bdat_used) {
        p->bdat_used = true;
        p->txn.bdat = true;
        p->bdat_prev_cr = false;
        p->body_begun = true;
        p->pend_begin = true;
    }
    return STEP_AGAIN;
}

static enum smtp_step
cmd_rset(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    (void)arg;
    (void)ev;
    if (len > 0) {
        R(p, "RSET", 501, "5.5.4 Syntax: RSET");
        return STEP_AGAIN;
    }
    smtp_proto__txn_reset(p);
    R(p, "RSET", 250, "2.0.0 Ok");
    return STEP_AGAIN;
}

static enum smtp_step
cmd_noop(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    (void)arg;
    (void)len;
    (void)ev;
    R(p, "NOOP", 250, "2.0.0 Ok");
    return STEP_AGAIN;
}

static enum smtp_step
cmd_quit(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    (void)arg;
    (void)ev;
    if (len > 0) {
        R(p, "QUIT", 501, "5.5.4 Syntax: QUIT");
        return STEP_AGAIN;
    }
    R(p, "QUIT", 221, "2.0.0 %s closing connection", p->cfg.hostname);
    smtp_proto__txn_reset(p);
    p->phase = PH_CLOSED;
    p->pend_close = true;
    return STEP_AGAIN;
}

static enum smtp_step
cmd_vrfy(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    (void)arg;
    (void)ev;
    if (len == 0) {
        R(p, "VRFY", 501, "5.5.4 Syntax: VRFY address");
        return STEP_AGAIN;
    }
    /* RFC 5321 3.5.3: 252 discloses nothing. */
    R(p, "VRFY", 252, "2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
    return STEP_AGAIN;
}

static enum smtp_step
cmd_help(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    (void)arg;
    (void)len;
    (void)ev;
    R(p, "HELP", 214,
      "2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP; see RFC 5321");
    return STEP_AGAIN;
}

/* RFC 1985: ETRN node, "@domain" (and subdomains) or "#queue"; the
 * caller decides who may and which nodes exist. */
static enum smtp_step
cmd_etrn(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    if (p->helo[0] == '\0') {
        R(p, "ETRN", 503, "5.5.1 Error: send HELO/EHLO first");
        return STEP_AGAIN;
    }
    if (p->txn_active) {
        R(p, "ETRN", 503, "5.5.1 Error: ETRN is not allowed during a mail transaction");
        return STEP_AGAIN;
    }
    if (len == 0 || len >= sizeof(p->etrn) || memchr(arg, ' ', len) != NULL ||
        !addr_utf8_valid(arg, len)) {
        R(p, "ETRN", 501, "5.5.4 Syntax: ETRN node");
        return STEP_AGAIN;
    }
    memcpy(p->etrn, arg, len);
    p->etrn[len] = '\0';
    p->owed = OWE_ETRN;
    ev->type = SMTP_EV_ETRN;
    ev->data = p->etrn;
    ev->len = len;
    return STEP_EVENT;
}

/* RFC 3207. Whatever the client sent after STARTTLS before the handshake
 * is thrown away (CVE-2011-0411: plaintext injected behind STARTTLS must
 * not run as if it came over TLS), and the session starts over: the
 * client must EHLO again. */
static enum smtp_step
cmd_starttls(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    (void)arg;
    (void)ev;
    if (!p->cfg.tls_offer) {
        R(p, "STARTTLS", 502, "5.5.1 Error: command not implemented");
        return STEP_AGAIN;
    }
    if (p->tls) {
        R(p, "STARTTLS", 503, "5.5.1 Error: TLS already active");
        return STEP_AGAIN;
    }
    if (len > 0) {
        R(p, "STARTTLS", 501, "5.5.4 Syntax: STARTTLS");
        return STEP_AGAIN;
    }
    R(p, "STARTTLS", 220, "2.0.0 Ready to start TLS");
    p->rpos = p->wpos;
    smtp_proto__txn_reset(p);
    p->helo[0] = '\0';
    p->esmtp = false;
    p->pend_starttls = true;
    return STEP_AGAIN;
}

/* Known SMTP commands we do not offer (RFC 5321 4.2.4: 502). */
static enum smtp_step
cmd_unimplemented(struct smtp_proto *p, const char *arg, size_t len, struct smtp_event *ev)
{
    (void)arg;
    (void)len;
    (void)ev;
    R(p, "-", 502, "5.5.1 Error: command not implemented");
    return STEP_AGAIN;
}

static const struct smtp_cmd smtp_cmds[] = {
    {"EHLO", cmd_ehlo},          {"HELO", cmd_helo},          {"MAIL", cmd_mail},
    {"RCPT", cmd_rcpt},          {"DATA", cmd_data},          {"BDAT", cmd_bdat},
    {"RSET", cmd_rset},          {"NOOP", cmd_noop},          {"QUIT", cmd_quit},
    {"VRFY", cmd_vrfy},          {"HELP", cmd_help},          {"EXPN", cmd_unimplemented},
    {"ETRN", cmd_etrn},          {"STARTTLS", cmd_starttls},  {"AUTH", cmd_unimplemented},
    {"TURN", cmd_unimplemented}, {"SEND", cmd_unimplemented}, {"SOML", cmd_unimplemented},
    {"SAML", cmd_unimplemented},
};

enum smtp_step
smtp_proto__dispatch(struct smtp_proto *p, const char *line, size_t len, struct smtp_event *ev)
{
    size_t vl = 0;

    while (vl < len && line[vl] != ' ')
        vl++;
    for (size_t i = 0; i < sizeof(smtp_cmds) / sizeof(smtp_cmds[0]); i++) {
        const struct smtp_cmd *c = &smtp_cmds[i];

        if (strlen(c->name) == vl && ascii_ncasecmp(line, c->name, vl) == 0) {
            const char *arg = line + vl;
            size_t alen = len - vl;

            if (alen > 0) { /* skip the SP after the verb */
                arg++;
                alen--;
            }
            return c->fn(p, arg, alen, ev);
        }
    }
    R(p, "-", 500, "5.5.1 Error: command not recognized");
    return STEP_AGAIN;
}
