/* Unit tests for proxy: PROXY protocol v1 and v2 headers, valid and every
 * malformed form we could think of. Each case is fed whole, one octet at a
 * time and in 3- and 7-octet pieces, with SMTP input after it: the result
 * and the octets taken must not depend on the split, and a header is never
 * taken past its end. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/proxy.h"

/* Spelled as literals: a string and its length (it may hold NULs). */
#define B(s) s, sizeof(s) - 1
#define SIG  "\r\n\r\n\x00\r\nQUIT\n"
/* v2 address blocks */
#define A4                                                                                         \
    "\xc0\x00\x02\x2c"                                                                             \
    "\x7f\x00\x00\x01"                                                                             \
    "\x30\x39"                                                                                     \
    "\x00\x19"
#define A6_SRC                                                                                     \
    "\x20\x01\x0d\xb8"                                                                             \
    "\x00\x00\x00\x00"                                                                             \
    "\x00\x00\x00\x00"                                                                             \
    "\x00\x00\x00\x07"
#define A6_DST                                                                                     \
    "\x00\x00\x00\x00"                                                                             \
    "\x00\x00\x00\x00"                                                                             \
    "\x00\x00\x00\x00"                                                                             \
    "\x00\x00\x00\x01"
#define A6                                                                                         \
    A6_SRC A6_DST "\xff\xff"                                                                       \
                  "\x00\x19"
#define Z16  "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
#define Z108 Z16 Z16 Z16 Z16 Z16 Z16 "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

enum want { OK, LOCAL, NEED, ERR };

struct pcase {
    const char *name;
    const char *in;
    size_t len;
    enum want want;
    enum proxy_error err; /* ERR */
    unsigned version;     /* OK, LOCAL */
    const char *src;      /* OK: the client, numeric */
    unsigned sport;
    const char *dst;
    unsigned dport;
};

static const struct pcase cases[] = {
    /* ---- v1, valid ---- */
    {"v1 tcp4", B("PROXY TCP4 192.0.2.44 127.0.0.1 12345 25\r\n"), OK, 0, 1, "192.0.2.44", 12345,
     "127.0.0.1", 25},
    {"v1 tcp6", B("PROXY TCP6 2001:db8::7 ::1 65535 25\r\n"), OK, 0, 1, "2001:db8::7", 65535, "::1",
     25},
    {"v1 tcp6 upper case hex", B("PROXY TCP6 2001:DB8::7 ::1 1 2\r\n"), OK, 0, 1, "2001:db8::7", 1,
     "::1", 2},
    {"v1 tcp6 v4-mapped", B("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"), OK, 0, 1,
     "::ffff:192.0.2.1", 1, "::1", 2},
    {"v1 ports 0", B("PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\n"), OK, 0, 1, "1.2.3.4", 0, "5.6.7.8", 0},
    {"v1 longest tcp6",
     B("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
       "65535 65535\r\n"),
     OK, 0, 1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535},
    {"v1 unknown", B("PROXY UNKNOWN\r\n"), LOCAL, 0, 1, NULL, 0, NULL, 0},
    {"v1 unknown with addresses", B("PROXY UNKNOWN ffff:: 1.2.3.4 junk\r\n"), LOCAL, 0, 1, NULL, 0,
     NULL, 0},
    /* 107 octets: the spec's longest line */
    {"v1 unknown 107 octets",
     B("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:"
       "ffff 65535 65535\r\n"),
     LOCAL, 0, 1, NULL, 0, NULL, 0},
    /* ---- v1, incomplete ---- */
    {"v1 empty", B(""), NEED, 0, 0, NULL, 0, NULL, 0},
    {"v1 no line end", B("PROXY TCP4 192.0.2.44 127.0.0.1 12345 25"), NEED, 0, 0, NULL, 0, NULL, 0},
    {"v1 CR without LF yet", B("PROXY TCP4 192.0.2.44 127.0.0.1 12345 25\r"), NEED, 0, 0, NULL, 0,
     NULL, 0},
    {"v1 signature only", B("PROXY "), NEED, 0, 0, NULL, 0, NULL, 0},
    /* ---- v1, refused ---- */
    {"not proxy: EHLO", B("EHLO client.test\r\n"), ERR, PROXY_ERR_NOT_PROXY, 0, NULL, 0, NULL, 0},
    {"not proxy: HTTP", B("GET / HTTP/1.0\r\n\r\n"), ERR, PROXY_ERR_NOT_PROXY, 0, NULL, 0, NULL, 0},
    {"not proxy: lower case", B("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ERR, PROXY_ERR_NOT_PROXY, 0,
     NULL, 0, NULL, 0},
    {"not proxy: PROXZ", B("PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ERR, PROXY_ERR_NOT_PROXY, 0, NULL,
     0, NULL, 0},
    {"not proxy: P then LF", B("P\n"), ERR, PROXY_ERR_NOT_PROXY, 0, NULL, 0, NULL, 0},
    {"not proxy: PROXY CRLF", B("PROXY\r\n"), ERR, PROXY_ERR_NOT_PROXY, 0, NULL, 0, NULL, 0},
    {"not proxy: NUL", B("\x00"), ERR, PROXY_ERR_NOT_PROXY, 0, NULL, 0, NULL, 0},
    {"v1 bare LF", B("PROXY TCP4 192.0.2.44 127.0.0.1 12345 25\n"), ERR, PROXY_ERR_V1_SYNTAX, 0,
     NULL, 0, NULL, 0},
    {"v1 CR CR LF", B("PROXY TCP4 192.0.2.44 127.0.0.1 12345 25\r\r\n"), ERR, PROXY_ERR_V1_SYNTAX,
     0, NULL, 0, NULL, 0},
    {"v1 CR inside", B("PROXY TCP4 192.0.2.44\r127.0.0.1 12345 25\r\n"), ERR, PROXY_ERR_V1_SYNTAX,
     0, NULL, 0, NULL, 0},
    {"v1 trailing space", B("PROXY TCP4 192.0.2.44 127.0.0.1 12345 25 \r\n"), ERR,
     PROXY_ERR_V1_SYNTAX, 0, NULL, 0, NULL, 0},
    {"v1 two spaces", B("PROXY TCP4  192.0.2.44 127.0.0.1 12345 25\r\n"), ERR, PROXY_ERR_V1_SYNTAX,
     0, NULL, 0, NULL, 0},
    {"v1 space before protocol", B("PROXY  TCP4 192.0.2.44 127.0.0.1 12345 25\r\n"), ERR,
     PROXY_ERR_V1_SYNTAX, 0, NULL, 0, NULL, 0},
    {"v1 tab", B("PROXY TCP4\t192.0.2.44 127.0.0.1 12345 25\r\n"), ERR, PROXY_ERR_V1_PROTOCOL, 0,
     NULL, 0, NULL, 0},
    {"v1 too few fields", B("PROXY TCP4 192.0.2.44 127.0.0.1 12345\r\n"), ERR, PROXY_ERR_V1_SYNTAX,
     0, NULL, 0, NULL, 0},
    {"v1 protocol only", B("PROXY TCP4\r\n"), ERR, PROXY_ERR_V1_SYNTAX, 0, NULL, 0, NULL, 0},
    {"v1 too many fields", B("PROXY TCP4 192.0.2.44 127.0.0.1 12345 25 26\r\n"), ERR,
     PROXY_ERR_V1_SYNTAX, 0, NULL, 0, NULL, 0},
    {"v1 empty protocol", B("PROXY \r\n"), ERR, PROXY_ERR_V1_SYNTAX, 0, NULL, 0, NULL, 0},
    {"v1 LF right after signature", B("PROXY \n"), ERR, PROXY_ERR_V1_SYNTAX, 0, NULL, 0, NULL, 0},
    {"v1 TCP5", B("PROXY TCP5 192.0.2.44 127.0.0.1 12345 25\r\n"), ERR, PROXY_ERR_V1_PROTOCOL, 0,
     NULL, 0, NULL, 0},
    {"v1 UDP4", B("PROXY UDP4 192.0.2.44 127.0.0.1 12345 25\r\n"), ERR, PROXY_ERR_V1_PROTOCOL, 0,
     NULL, 0, NULL, 0},
    {"v1 tcp4 lower case", B("PROXY tcp4 192.0.2.44 127.0.0.1 12345 25\r\n"), ERR,
     PROXY_ERR_V1_PROTOCOL, 0, NULL, 0, NULL, 0},
    {"v1 UNKNOWNX", B("PROXY UNKNOWNX\r\n"), ERR, PROXY_ERR_V1_PROTOCOL, 0, NULL, 0, NULL, 0},
    {"v1 unknown lower case", B("PROXY unknown\r\n"), ERR, PROXY_ERR_V1_PROTOCOL, 0, NULL, 0, NULL,
     0},
    {"v1 tcp4 with ipv6", B("PROXY TCP4 2001:db8::7 ::1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS, 0,
     NULL, 0, NULL, 0},
    {"v1 tcp6 with ipv4", B("PROXY TCP6 192.0.2.44 127.0.0.1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS,
     0, NULL, 0, NULL, 0},
    {"v1 mixed families", B("PROXY TCP4 192.0.2.44 ::1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS, 0,
     NULL, 0, NULL, 0},
    {"v1 octet 256", B("PROXY TCP4 256.0.2.44 127.0.0.1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS, 0,
     NULL, 0, NULL, 0},
    {"v1 three octets", B("PROXY TCP4 192.0.2 127.0.0.1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS, 0,
     NULL, 0, NULL, 0},
    {"v1 leading zero octet", B("PROXY TCP4 192.0.02.44 127.0.0.1 1 2\r\n"), ERR,
     PROXY_ERR_V1_ADDRESS, 0, NULL, 0, NULL, 0},
    {"v1 prefix length", B("PROXY TCP4 192.0.2.0/24 127.0.0.1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS,
     0, NULL, 0, NULL, 0},
    {"v1 host name", B("PROXY TCP4 localhost 127.0.0.1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS, 0,
     NULL, 0, NULL, 0},
    {"v1 zone id", B("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS, 0, NULL, 0,
     NULL, 0},
    {"v1 brackets", B("PROXY TCP6 [2001:db8::7] ::1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS, 0, NULL,
     0, NULL, 0},
    {"v1 bad destination", B("PROXY TCP4 192.0.2.44 127.0.0.x 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS,
     0, NULL, 0, NULL, 0},
    {"v1 NUL in address", B("PROXY TCP4 1.2.3.4\x00x 127.0.0.1 1 2\r\n"), ERR, PROXY_ERR_V1_ADDRESS,
     0, NULL, 0, NULL, 0},
    {"v1 address too long",
     B("PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0000:0000 ::1 1 2\r\n"), ERR,
     PROXY_ERR_V1_ADDRESS, 0, NULL, 0, NULL, 0},
    {"v1 port 65536", B("PROXY TCP4 192.0.2.44 127.0.0.1 65536 25\r\n"), ERR, PROXY_ERR_V1_PORT, 0,
     NULL, 0, NULL, 0},
    {"v1 port 99999", B("PROXY TCP4 192.0.2.44 127.0.0.1 1 99999\r\n"), ERR, PROXY_ERR_V1_PORT, 0,
     NULL, 0, NULL, 0},
    {"v1 port six digits", B("PROXY TCP4 192.0.2.44 127.0.0.1 100000 25\r\n"), ERR,
     PROXY_ERR_V1_PORT, 0, NULL, 0, NULL, 0},
    {"v1 port leading zero", B("PROXY TCP4 192.0.2.44 127.0.0.1 012 25\r\n"), ERR,
     PROXY_ERR_V1_PORT, 0, NULL, 0, NULL, 0},
    {"v1 port 00", B("PROXY TCP4 192.0.2.44 127.0.0.1 00 25\r\n"), ERR, PROXY_ERR_V1_PORT, 0, NULL,
     0, NULL, 0},
    {"v1 port negative", B("PROXY TCP4 192.0.2.44 127.0.0.1 -1 25\r\n"), ERR, PROXY_ERR_V1_PORT, 0,
     NULL, 0, NULL, 0},
    {"v1 port plus", B("PROXY TCP4 192.0.2.44 127.0.0.1 +1 25\r\n"), ERR, PROXY_ERR_V1_PORT, 0,
     NULL, 0, NULL, 0},
    {"v1 port hex", B("PROXY TCP4 192.0.2.44 127.0.0.1 0x19 25\r\n"), ERR, PROXY_ERR_V1_PORT, 0,
     NULL, 0, NULL, 0},
    {"v1 port letters", B("PROXY TCP4 192.0.2.44 127.0.0.1 1a 25\r\n"), ERR, PROXY_ERR_V1_PORT, 0,
     NULL, 0, NULL, 0},
    {"v1 unknown 108 octets",
     B("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:"
       "ffff 65535 655355\r\n"),
     ERR, PROXY_ERR_V1_TOO_LONG, 0, NULL, 0, NULL, 0},
    {"v1 no line end in 107",
     B("PROXY TCP4 "
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
     ERR, PROXY_ERR_V1_TOO_LONG, 0, NULL, 0, NULL, 0},
    /* ---- v2, valid ---- */
    {"v2 proxy inet", B(SIG "\x21\x11\x00\x0c" A4), OK, 0, 2, "192.0.2.44", 12345, "127.0.0.1", 25},
    {"v2 proxy inet6", B(SIG "\x21\x21\x00\x24" A6), OK, 0, 2, "2001:db8::7", 65535, "::1", 25},
    {"v2 local", B(SIG "\x20\x00\x00\x00"), LOCAL, 0, 2, NULL, 0, NULL, 0},
    {"v2 local with an inet block", B(SIG "\x20\x11\x00\x0c" A4), LOCAL, 0, 2, NULL, 0, NULL, 0},
    /* LOCAL: the family is to be ignored, the block skipped */
    {"v2 local odd family",
     B(SIG "\x20\xff\x00\x03"
           "abc"),
     LOCAL, 0, 2, NULL, 0, NULL, 0},
    {"v2 proxy unspec", B(SIG "\x21\x00\x00\x00"), LOCAL, 0, 2, NULL, 0, NULL, 0},
    {"v2 proxy unspec with a block",
     B(SIG "\x21\x00\x00\x05"
           "12345"),
     LOCAL, 0, 2, NULL, 0, NULL, 0},
    {"v2 proxy unix", B(SIG "\x21\x31\x00\xd8" Z108 Z108), LOCAL, 0, 2, NULL, 0, NULL, 0},
    {"v2 tlvs",
     B(SIG "\x21\x11\x00\x1b" A4 "\x01\x00\x04"
           "smtp"
           "\x04\x00\x02"
           "\x00\x00"
           "\x02\x00\x00"),
     OK, 0, 2, "192.0.2.44", 12345, "127.0.0.1", 25},
    {"v2 empty tlv last", B(SIG "\x21\x11\x00\x0f" A4 "\x04\x00\x00"), OK, 0, 2, "192.0.2.44",
     12345, "127.0.0.1", 25},
    /* ---- v2, incomplete ---- */
    {"v2 part of the signature", B("\r\n\r\n\x00\r"), NEED, 0, 0, NULL, 0, NULL, 0},
    {"v2 fixed part only", B(SIG "\x21\x11\x00\x0c"), NEED, 0, 0, NULL, 0, NULL, 0},
    {"v2 one octet short",
     B(SIG "\x21\x11\x00\x0c"
           "\xc0\x00\x02\x2c"
           "\x7f\x00\x00\x01"
           "\x30\x39"
           "\x00"),
     NEED, 0, 0, NULL, 0, NULL, 0},
    /* ---- v2, refused ---- */
    {"v2 bad signature", B("\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" A4), ERR, PROXY_ERR_NOT_PROXY,
     0, NULL, 0, NULL, 0},
    {"v2 CRLF then SMTP", B("\r\nEHLO x\r\n"), ERR, PROXY_ERR_NOT_PROXY, 0, NULL, 0, NULL, 0},
    {"v2 CRLF CRLF then text", B("\r\n\r\nhello"), ERR, PROXY_ERR_NOT_PROXY, 0, NULL, 0, NULL, 0},
    {"v2 version 1", B(SIG "\x11\x11\x00\x0c" A4), ERR, PROXY_ERR_V2_VERSION, 0, NULL, 0, NULL, 0},
    {"v2 version 3", B(SIG "\x31\x11\x00\x0c" A4), ERR, PROXY_ERR_V2_VERSION, 0, NULL, 0, NULL, 0},
    {"v2 version 0", B(SIG "\x01\x11\x00\x0c" A4), ERR, PROXY_ERR_V2_VERSION, 0, NULL, 0, NULL, 0},
    {"v2 command 2", B(SIG "\x22\x11\x00\x0c" A4), ERR, PROXY_ERR_V2_COMMAND, 0, NULL, 0, NULL, 0},
    {"v2 command 15", B(SIG "\x2f\x11\x00\x0c" A4), ERR, PROXY_ERR_V2_COMMAND, 0, NULL, 0, NULL, 0},
    {"v2 family 4", B(SIG "\x21\x41\x00\x0c" A4), ERR, PROXY_ERR_V2_FAMILY, 0, NULL, 0, NULL, 0},
    {"v2 family 15", B(SIG "\x21\xf1\x00\x0c" A4), ERR, PROXY_ERR_V2_FAMILY, 0, NULL, 0, NULL, 0},
    {"v2 inet dgram", B(SIG "\x21\x12\x00\x0c" A4), ERR, PROXY_ERR_V2_FAMILY, 0, NULL, 0, NULL, 0},
    {"v2 inet unspec transport", B(SIG "\x21\x10\x00\x0c" A4), ERR, PROXY_ERR_V2_FAMILY, 0, NULL, 0,
     NULL, 0},
    {"v2 inet transport 3", B(SIG "\x21\x13\x00\x0c" A4), ERR, PROXY_ERR_V2_FAMILY, 0, NULL, 0,
     NULL, 0},
    {"v2 inet6 dgram", B(SIG "\x21\x22\x00\x24" A6), ERR, PROXY_ERR_V2_FAMILY, 0, NULL, 0, NULL, 0},
    {"v2 unix dgram", B(SIG "\x21\x32\x00\xd8" Z108 Z108), ERR, PROXY_ERR_V2_FAMILY, 0, NULL, 0,
     NULL, 0},
    {"v2 unspec transport 3", B(SIG "\x21\x03\x00\x00"), ERR, PROXY_ERR_V2_FAMILY, 0, NULL, 0, NULL,
     0},
    {"v2 inet length 0", B(SIG "\x21\x11\x00\x00"), ERR, PROXY_ERR_V2_LENGTH, 0, NULL, 0, NULL, 0},
    {"v2 inet length 11",
     B(SIG "\x21\x11\x00\x0b"
           "\xc0\x00\x02\x2c"
           "\x7f\x00\x00\x01"
           "\x30\x39"
           "\x00"),
     ERR, PROXY_ERR_V2_LENGTH, 0, NULL, 0, NULL, 0},
    {"v2 inet6 with an inet length", B(SIG "\x21\x21\x00\x0c" A4), ERR, PROXY_ERR_V2_LENGTH, 0,
     NULL, 0, NULL, 0},
    {"v2 inet6 length 35", B(SIG "\x21\x21\x00\x23" A6), ERR, PROXY_ERR_V2_LENGTH, 0, NULL, 0, NULL,
     0},
    {"v2 unix length 215", B(SIG "\x21\x31\x00\xd7" Z108 Z108), ERR, PROXY_ERR_V2_LENGTH, 0, NULL,
     0, NULL, 0},
    {"v2 length 1009", B(SIG "\x21\x11\x03\xf1" A4), ERR, PROXY_ERR_V2_TOO_LONG, 0, NULL, 0, NULL,
     0},
    {"v2 length 65535", B(SIG "\x21\x11\xff\xff" A4), ERR, PROXY_ERR_V2_TOO_LONG, 0, NULL, 0, NULL,
     0},
    {"v2 local length 65535", B(SIG "\x20\x00\xff\xff"), ERR, PROXY_ERR_V2_TOO_LONG, 0, NULL, 0,
     NULL, 0},
    {"v2 two stray octets", B(SIG "\x21\x11\x00\x0e" A4 "\x04\x00"), ERR, PROXY_ERR_V2_TLV, 0, NULL,
     0, NULL, 0},
    {"v2 one stray octet", B(SIG "\x21\x11\x00\x0d" A4 "\x04"), ERR, PROXY_ERR_V2_TLV, 0, NULL, 0,
     NULL, 0},
    {"v2 tlv longer than the header",
     B(SIG "\x21\x11\x00\x11" A4 "\x01\x00\x04"
           "sm"),
     ERR, PROXY_ERR_V2_TLV, 0, NULL, 0, NULL, 0},
    {"v2 tlv length 65535",
     B(SIG "\x21\x11\x00\x11" A4 "\x01\xff\xff"
           "sm"),
     ERR, PROXY_ERR_V2_TLV, 0, NULL, 0, NULL, 0},
    {"v2 second tlv overruns",
     B(SIG "\x21\x11\x00\x14" A4 "\x04\x00\x00"
           "\x01\x00\x03"
           "sm"),
     ERR, PROXY_ERR_V2_TLV, 0, NULL, 0, NULL, 0},
};

static const char smtp_after[] = "EHLO client.test\r\n";

static void
want_addr(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
    char buf[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

        assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)));
        assert_int_equal(ntohs(sin->sin_port), port);
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

        assert_int_equal(ss->ss_family, AF_INET6);
        assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)));
        assert_int_equal(ntohs(sin6->sin6_port), port);
    }
    assert_string_equal(buf, ip);
}

/* Feeds c->in followed by SMTP input in pieces of step octets (0: whole);
 * returns the final status and sets *taken to the octets used in all. */
static enum proxy_status
feed(struct proxy_parser *p, const char *in, size_t len, size_t step, size_t *taken)
{
    enum proxy_status st = PROXY_NEED_MORE;
    size_t pos = 0;

    proxy_init(p);
    *taken = 0;
    while (pos < len) {
        size_t n = step == 0 || len - pos < step ? len - pos : step, used = 99999;

        st = proxy_feed(p, in + pos, n, &used);
        assert_true(used <= n);
        *taken += used;
        if (st == PROXY_NEED_MORE) {
            assert_int_equal(used, n); /* it takes all it is given */
        } else {
            break;
        }
        pos += n;
    }
    return st;
}

static void
run_case(const struct pcase *c, size_t step)
{
    struct proxy_parser p;
    char in[2048];
    size_t len = c->len, taken, used = 1;
    enum proxy_status st;

    /* NEED cases get no SMTP input after them: it would be more header */
    memcpy(in, c->in, c->len);
    if (c->want != NEED) {
        memcpy(in + len, smtp_after, sizeof(smtp_after) - 1);
        len += sizeof(smtp_after) - 1;
    }
    st = feed(&p, in, len, step, &taken);
    switch (c->want) {
    case NEED:
        assert_int_equal(st, PROXY_NEED_MORE);
        assert_int_equal(taken, c->len);
        return;
    case ERR:
        assert_int_equal(st, PROXY_ERROR);
        if (p.res.err != c->err)
            fail_msg("error %s, want %s", proxy_error_name(p.res.err), proxy_error_name(c->err));
        assert_true(taken <= (c->in[0] == 'P' ? PROXY_V1_MAX : PROXY_V2_MAX));
        break;
    case OK:
    case LOCAL:
        assert_int_equal(st, PROXY_DONE);
        assert_int_equal(p.res.err, PROXY_ERR_NONE);
        assert_int_equal(taken, c->len); /* the SMTP input is left */
        assert_int_equal(p.res.len, c->len);
        assert_int_equal(p.res.version, c->version);
        assert_int_equal(p.res.local, c->want == LOCAL);
        if (c->want == OK) {
            want_addr(&p.res.src, c->src, c->sport);
            want_addr(&p.res.dst, c->dst, c->dport);
        }
        break;
    }
    /* Done or refused: nothing more is taken, the answer stays. */
    assert_int_equal(proxy_feed(&p, smtp_after, 4, &used), st);
    assert_int_equal(used, 0);
}

static void
test_proxy_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("case: %s\n", cases[i].name);
        assert_true(cases[i].len + sizeof(smtp_after) < 2048);
        run_case(&cases[i], 0);
        run_case(&cases[i], 1);
        run_case(&cases[i], 3);
        run_case(&cases[i], 7);
    }
}

/* Every strict prefix of a valid header needs more, and a client that is
 * not a balancer is refused at its first octet. */
static void
test_proxy_prefixes(void **state)
{
    struct proxy_parser p;
    size_t used;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct pcase *c = &cases[i];

        if (c->want != OK && c->want != LOCAL)
            continue;
        for (size_t n = 0; n < c->len; n++) {
            proxy_init(&p);
            assert_int_equal(proxy_feed(&p, c->in, n, &used), PROXY_NEED_MORE);
            assert_int_equal(used, n);
        }
    }
    proxy_init(&p);
    assert_int_equal(proxy_feed(&p, "E", 1, &used), PROXY_ERROR);
    assert_int_equal(p.res.err, PROXY_ERR_NOT_PROXY);
    proxy_init(&p);
    assert_int_equal(proxy_feed(&p, "PROXI", 5, &used), PROXY_ERROR);
    proxy_init(&p);
    assert_int_equal(proxy_feed(&p, "\r\n\r\n\x00\r\nQ", 8, &used), PROXY_NEED_MORE);
    assert_int_equal(proxy_feed(&p, "X", 1, &used), PROXY_ERROR);
    assert_int_equal(p.res.err, PROXY_ERR_NOT_PROXY);
}

/* The longest v2 header we take (PROXY_V2_MAX, TLVs filling it), and one
 * octet more. */
static void
test_proxy_v2_bound(void **state)
{
    static const char head[] = SIG "\x21\x11\x00\x00" A4;
    unsigned char in[PROXY_V2_MAX + 64];
    struct proxy_parser p;
    size_t hl = sizeof(head) - 1, taken;

    (void)state;
    for (size_t extra = 0; extra < 2; extra++) {
        size_t total = PROXY_V2_MAX + extra, n = total - 16, vlen = total - hl - 3;

        memset(in, 'x', sizeof(in));
        memcpy(in, head, hl);
        in[14] = (unsigned char)(n >> 8);
        in[15] = (unsigned char)n;
        in[hl] = 0x04; /* NOOP, up to the end */
        in[hl + 1] = (unsigned char)(vlen >> 8);
        in[hl + 2] = (unsigned char)vlen;
        for (size_t step = 0; step < 4; step += 3) {
            enum proxy_status st = feed(&p, (const char *)in, sizeof(in), step, &taken);

            if (extra == 0) {
                assert_int_equal(st, PROXY_DONE);
                assert_int_equal(taken, PROXY_V2_MAX);
                assert_int_equal(p.res.len, PROXY_V2_MAX);
            } else {
                assert_int_equal(st, PROXY_ERROR);
                assert_int_equal(p.res.err, PROXY_ERR_V2_TOO_LONG);
                assert_int_equal(taken, 16); /* refused from the length alone */
            }
        }
    }
}

/* Every reason has a label and a text. */
static void
test_proxy_error_names(void **state)
{
    (void)state;
    for (int e = 0; e < PROXY_NERRORS; e++) {
        assert_true(strlen(proxy_error_name((enum proxy_error)e)) > 0);
        assert_true(strlen(proxy_error_text((enum proxy_error)e)) > 0);
    }
    assert_string_equal(proxy_error_name(PROXY_ERR_V1_PORT), "v1-port");
    assert_string_equal(proxy_error_name(PROXY_NERRORS), "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proxy_table),
        cmocka_unit_test(test_proxy_prefixes),
        cmocka_unit_test(test_proxy_v2_bound),
        cmocka_unit_test(test_proxy_error_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
