/* received: builds the Received: trace header for smtp_proto (RFC 5321
 * 4.4, RFC 3848 "with" keywords, RFC 5322 3.3 date). Pure: the time and
 * the client address are passed in. Peer-supplied text (the HELO name) is
 * reduced to a safe character set so it cannot break the header. */
#include <stdio.h>
#include <string.h>

#include "smtp/smtp_proto_impl.h"

/* Copies the HELO name keeping letters, digits and "-._:[]"; UTF-8 is kept
 * only when the message is SMTPUTF8 (a header may carry it then). */
static void
received_clean(char *dst, size_t size, const char *src, bool utf8_ok)
{
    size_t o = 0;

    for (size_t i = 0; src[i] != '\0' && o + 1 < size; i++) {
        unsigned char c = (unsigned char)src[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("-._:[]", (int)c) != NULL || (c >= 0x80 && utf8_ok);

        dst[o++] = ok ? (char)c : '_';
    }
    dst[o] = '\0';
}

/* RFC 5322 3.3 date-time in UTC, e.g. "Mon, 23 Nov 2026 00:07:01 +0000". */
static void
received_date(char *dst, size_t size, time_t now)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;

    gmtime_r(&now, &tm);
    snprintf(dst, size, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

size_t
smtp_proto_received(const struct smtp_proto *p, const char *client_ip, const char *qid, time_t now,
                    char *buf, size_t size)
{
    return smtp_proto_received_named(p, client_ip, NULL, qid, now, buf, size);
}

size_t
smtp_proto_received_named(const struct smtp_proto *p, const char *client_ip,
                          const char *client_name, const char *qid, time_t now, char *buf,
                          size_t size)
{
    char name[256] = "";
    const struct smtp_txn *t = smtp_proto_txn(p);
    char helo[256];
    char date[64];
    char for_clause[ADDR_PATH_MAX + 16] = "";
    const char *with;
    char tls[112] = "";
    int n;

    received_clean(helo, sizeof(helo), smtp_proto_helo(p), t->smtputf8);
    if (client_name != NULL && client_name[0] != '\0') {
        received_clean(name, sizeof(name) - 1, client_name, false);
        strcat(name, " ");
    }
    received_date(date, sizeof(date), now);
    /* RFC 3848 (ESMTPS), RFC 6531 4.3 (UTF8SMTP, UTF8SMTPS) */
    if (!smtp_proto_esmtp(p))
        with = p->tls ? "ESMTPS" : "SMTP";
    else if (t->smtputf8)
        with = p->tls ? "UTF8SMTPS" : "UTF8SMTP";
    else
        with = p->tls ? "ESMTPS" : "ESMTP";
    if (p->tls)
        snprintf(tls, sizeof(tls), " (%s)", p->tls_desc);
    /* Name the recipient only when there is one: listing them all would
     * disclose Bcc recipients to each other. */
    if (t->nrcpts == 1)
        snprintf(for_clause, sizeof(for_clause), "\r\n\tfor <%s>", t->rcpts[0].mailbox);
    n = snprintf(buf, size,
                 "Received: from %s (%s%s%s%s)\r\n\tby %s (mxd) with %s%s id %s%s;\r\n\t%s\r\n",
                 helo, name, strchr(client_ip, ':') ? "[IPv6:" : "[", client_ip, "]",
                 p->cfg.hostname, with, tls, qid, for_clause, date);
    if (n < 0 || (size_t)n >= size)
        return 0;
    return (size_t)n;
}
