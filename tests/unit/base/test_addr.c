/* test_addr: table-driven tests for addr (RFC 5321 4.1.2 paths, RFC 6531
 * SMTPUTF8). Every input is copied into a heap buffer of exactly its length
 * so ASan reports any read past len. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/addr.h"

/* Input literal and its length, so rows may hold NUL bytes. */
#define IN(x) .in = (x), .len = sizeof(x) - 1

/* Long names for the length boundaries. */
#define X10  "xxxxxxxxxx"
#define X60  X10 X10 X10 X10 X10 X10
#define X62  X60 "xx"
#define X63  X60 "xxx"
#define X64  X60 "xxxx"
#define X65  X60 "xxxxx"
#define D189 X63 "." X63 "." X60 "x"     /* 189 octets */
#define D190 D189 "x"                    /* 190 */
#define D252 X63 "." X63 "." X63 "." X60 /* 252: the longest domain in "<a@...>" */
#define D253 D252 "x"                    /* 253 */
#define D255 "xx." D252                  /* 255 = ADDR_DOMAIN_MAX */
#define D256 "xx." D253                  /* 256 */
#define E10  "éééééééééé"                /* 20 octets */
#define U63  E10 E10 E10 "éa"            /* 63-octet U-label */
#define U64  E10 E10 E10 "éé"            /* 64-octet U-label */

enum {
    F_NULL = 1 << 0, /* is_null */
    F_PM = 1 << 1,   /* is_postmaster */
    F_LIT = 1 << 2,  /* domain_literal */
    F_UTF8 = 1 << 3, /* utf8 */
};

struct path_case {
    const char *name;
    const char *in;
    size_t len;
    bool allow_null;
    bool allow_utf8;
    int want;
    const char *mailbox;   /* checked when want == ADDR_OK */
    const char *local;     /* NULL: the mailbox up to its last '@' */
    const char *domain_lc; /* NULL: the domain with ASCII letters lowered */
    size_t consumed;       /* 0: len */
    unsigned flags;
};

/* clang-format off */
static const struct path_case path_cases[] = {
    /* Plain mailboxes, RFC 5321 4.1.2 */
    {.name = "simple", IN("<a@b>"), .mailbox = "a@b", .domain_lc = "b"},
    {.name = "domain lowered, local kept", IN("<User.Name+tag@Example.COM>"),
     .mailbox = "User.Name+tag@Example.COM", .local = "User.Name+tag", .domain_lc = "example.com"},
    {.name = "all atext specials", IN("<!#$%&'*+-/=?^_`{|}~@x.example>"),
     .mailbox = "!#$%&'*+-/=?^_`{|}~@x.example"},
    {.name = "percent is not relay", IN("<user%other@ours.example>"),
     .mailbox = "user%other@ours.example", .local = "user%other", .domain_lc = "ours.example"},
    {.name = "bang is not relay", IN("<a!b@ours.example>"), .mailbox = "a!b@ours.example"},
    {.name = "single-label domain", IN("<a@localhost>"), .mailbox = "a@localhost"},
    {.name = "numeric labels are a domain", IN("<a@1.2.3.4>"), .mailbox = "a@1.2.3.4"},
    {.name = "A-label", IN("<a@xn--bcher-kva.example>"), .mailbox = "a@xn--bcher-kva.example"},
    {.name = "inner hyphens", IN("<a@a-b--c.example>"), .mailbox = "a@a-b--c.example"},
    {.name = "null path in MAIL", IN("<>"), .allow_null = true, .mailbox = "", .flags = F_NULL},
    {.name = "null path, params", IN("<> SIZE=100"), .allow_null = true, .mailbox = "",
     .consumed = 2, .flags = F_NULL},
    {.name = "null path in RCPT", IN("<>"), .want = ADDR_E_SYNTAX},
    {.name = "space in null path", IN("< >"), .allow_null = true, .want = ADDR_E_SYNTAX},
    {.name = "consumed with SIZE", IN("<a@b.example> SIZE=100"), .mailbox = "a@b.example",
     .consumed = 13},
    {.name = "consumed, params glued", IN("<a@b>SIZE"), .mailbox = "a@b", .consumed = 5},
    {.name = "consumed, second '>'", IN("<a@b>>"), .mailbox = "a@b", .consumed = 5},
    {.name = "bytes after '>' unread", IN("<a@b>\xff\0"), .mailbox = "a@b", .consumed = 5},

    /* Quoted local parts */
    {.name = "quoted '@'", IN("<\"user@evil\"@ours.example>"), .mailbox = "\"user@evil\"@ours.example",
     .local = "\"user@evil\"", .domain_lc = "ours.example"},
    {.name = "quoted empty", IN("<\"\"@x>"), .mailbox = "\"\"@x", .local = "\"\""},
    {.name = "quoted space and pairs", IN("<\"a b\\\"c\\\\\"@x>"), .mailbox = "\"a b\\\"c\\\\\"@x",
     .local = "\"a b\\\"c\\\\\""},
    {.name = "quoted '>' inside", IN("<\"a>b\"@c> X=1"), .mailbox = "\"a>b\"@c", .local = "\"a>b\"",
     .consumed = 9},
    {.name = "quoted-pair space", IN("<\"a\\ b\"@x>"), .mailbox = "\"a\\ b\"@x"},
    {.name = "quoted NUL", IN("<\"a\0\"@b>"), .want = ADDR_E_SYNTAX},
    {.name = "quoted CR", IN("<\"a\r\"@b>"), .want = ADDR_E_SYNTAX},
    {.name = "quoted DEL", IN("<\"a\x7f\"@b>"), .want = ADDR_E_SYNTAX},
    {.name = "quoted-pair of NUL", IN("<\"a\\\0\"@b>"), .want = ADDR_E_SYNTAX},
    {.name = "quoted-pair of LF", IN("<\"a\\\n\"@b>"), .want = ADDR_E_SYNTAX},
    {.name = "quote then atom", IN("<\"a\"b@c>"), .want = ADDR_E_SYNTAX},
    {.name = "atom then quote", IN("<a\"b\"@c>"), .want = ADDR_E_SYNTAX},
    {.name = "quoted, dot, atom", IN("<\"a\".b@c>"), .want = ADDR_E_SYNTAX},
    {.name = "unterminated quote", IN("<\"a@b>"), .want = ADDR_E_SYNTAX},
    {.name = "escaped closing quote", IN("<\"a\\\"@b>"), .want = ADDR_E_SYNTAX},
    {.name = "backslash at end", IN("<\"a\\"), .want = ADDR_E_SYNTAX},

    /* Dot-string and general syntax errors */
    {.name = "empty input", IN(""), .want = ADDR_E_SYNTAX},
    {.name = "no brackets", IN("a@b"), .want = ADDR_E_SYNTAX},
    {.name = "leading space", IN(" <a@b>"), .want = ADDR_E_SYNTAX},
    {.name = "missing '>'", IN("<a@b"), .want = ADDR_E_SYNTAX},
    {.name = "just '<'", IN("<"), .allow_null = true, .want = ADDR_E_SYNTAX},
    {.name = "double brackets", IN("<<a@b>>"), .want = ADDR_E_SYNTAX},
    {.name = "space in local", IN("<a b@c>"), .want = ADDR_E_SYNTAX},
    {.name = "space before '>'", IN("<a@b >"), .want = ADDR_E_SYNTAX},
    {.name = "tab in local", IN("<a\t@b>"), .want = ADDR_E_SYNTAX},
    {.name = "two '@'", IN("<a@b@c>"), .want = ADDR_E_SYNTAX},
    {.name = "no local part", IN("<@b>"), .want = ADDR_E_SYNTAX},
    {.name = "no domain", IN("<a@>"), .want = ADDR_E_SYNTAX},
    {.name = "no '@'", IN("<abc>"), .want = ADDR_E_SYNTAX},
    {.name = "leading dot", IN("<.a@b>"), .want = ADDR_E_SYNTAX},
    {.name = "trailing dot in local", IN("<a.@b>"), .want = ADDR_E_SYNTAX},
    {.name = "double dot in local", IN("<a..b@c>"), .want = ADDR_E_SYNTAX},
    {.name = "comment", IN("<(c)a@b>"), .want = ADDR_E_SYNTAX},
    {.name = "CRLF in local", IN("<a\r\n@b>"), .want = ADDR_E_SYNTAX},
    {.name = "CRLF in domain", IN("<a@b\r\n>"), .want = ADDR_E_SYNTAX},
    {.name = "bare LF", IN("<a\n@b>"), .want = ADDR_E_SYNTAX},
    {.name = "NUL in local", IN("<a\0b@c>"), .want = ADDR_E_SYNTAX},
    {.name = "NUL in domain", IN("<a@b\0c>"), .want = ADDR_E_SYNTAX},
    {.name = "NUL before '>'", IN("<a@b\0>"), .want = ADDR_E_SYNTAX},
    {.name = "DEL in local", IN("<a\x7f@b>"), .want = ADDR_E_SYNTAX},
    {.name = "ESC in local", IN("<a\x1b@b>"), .want = ADDR_E_SYNTAX},

    /* Domains, RFC 5321 4.1.2 */
    {.name = "leading hyphen", IN("<a@-b.c>"), .want = ADDR_E_SYNTAX},
    {.name = "trailing hyphen", IN("<a@b-.c>"), .want = ADDR_E_SYNTAX},
    {.name = "TLD trailing hyphen", IN("<a@b.c->"), .want = ADDR_E_SYNTAX},
    {.name = "trailing dot", IN("<a@b.>"), .want = ADDR_E_SYNTAX},
    {.name = "leading dot in domain", IN("<a@.b>"), .want = ADDR_E_SYNTAX},
    {.name = "empty label", IN("<a@b..c>"), .want = ADDR_E_SYNTAX},
    {.name = "underscore", IN("<a@b_c.example>"), .want = ADDR_E_SYNTAX},
    {.name = "label 63", IN("<a@" X63 ".b>"), .mailbox = "a@" X63 ".b"},
    {.name = "label 64", IN("<a@" X64 ".b>"), .want = ADDR_E_SYNTAX},

    /* Address literals, RFC 5321 4.1.3 */
    {.name = "IPv4 literal", IN("<a@[192.0.2.1]>"), .mailbox = "a@[192.0.2.1]",
     .domain_lc = "[192.0.2.1]", .flags = F_LIT},
    {.name = "IPv4 zeros", IN("<a@[0.0.0.0]>"), .mailbox = "a@[0.0.0.0]", .flags = F_LIT},
    {.name = "IPv6 literal", IN("<a@[IPv6:2001:DB8::1]>"), .mailbox = "a@[IPv6:2001:DB8::1]",
     .domain_lc = "[ipv6:2001:db8::1]", .flags = F_LIT},
    {.name = "IPv6 tag any case", IN("<a@[iPV6:::1]>"), .mailbox = "a@[iPV6:::1]",
     .domain_lc = "[ipv6:::1]", .flags = F_LIT},
    {.name = "IPv6 with IPv4 tail", IN("<a@[IPv6:::ffff:192.0.2.1]>"),
     .mailbox = "a@[IPv6:::ffff:192.0.2.1]", .flags = F_LIT},
    {.name = "general literal", IN("<a@[x-400:c=us;a=X]>"), .mailbox = "a@[x-400:c=us;a=X]",
     .domain_lc = "[x-400:c=us;a=x]", .flags = F_LIT},
    {.name = "IPv4 three octets", IN("<a@[1.2.3]>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv4 five octets", IN("<a@[1.2.3.4.5]>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv4 octet 256", IN("<a@[256.1.1.1]>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv4 leading zero", IN("<a@[01.2.3.4]>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv4 with space", IN("<a@[ 1.2.3.4]>"), .want = ADDR_E_SYNTAX},
    {.name = "empty literal", IN("<a@[]>"), .want = ADDR_E_SYNTAX},
    {.name = "unterminated literal", IN("<a@[1.2.3.4>"), .want = ADDR_E_SYNTAX},
    {.name = "text after literal", IN("<a@[1.2.3.4]x>"), .want = ADDR_E_SYNTAX},
    {.name = "literal then label", IN("<a@[1.2.3.4].b>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv6 two '::'", IN("<a@[IPv6:1::2::3]>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv6 five hex digits", IN("<a@[IPv6:12345::]>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv6 tag, IPv4 value", IN("<a@[IPv6:1.2.3.4]>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv6 zone id", IN("<a@[IPv6:fe80::1%eth0]>"), .want = ADDR_E_SYNTAX},
    {.name = "IPv6 without tag", IN("<a@[::1]>"), .want = ADDR_E_SYNTAX},
    {.name = "tag ends in hyphen", IN("<a@[x-:y]>"), .want = ADDR_E_SYNTAX},
    {.name = "empty tag", IN("<a@[:abc]>"), .want = ADDR_E_SYNTAX},
    {.name = "empty dcontent", IN("<a@[tag:]>"), .want = ADDR_E_SYNTAX},
    {.name = "space in dcontent", IN("<a@[tag:a b]>"), .want = ADDR_E_SYNTAX},
    {.name = "'[' in dcontent", IN("<a@[tag:a[b]>"), .want = ADDR_E_SYNTAX},
    {.name = "'\\' in dcontent", IN("<a@[tag:a\\b]>"), .want = ADDR_E_SYNTAX},

    /* Source routes, RFC 5321 4.1.2 A-d-l: accepted and dropped */
    {.name = "route of two", IN("<@a.example,@b.example:user@c.example>"),
     .mailbox = "user@c.example", .local = "user", .domain_lc = "c.example"},
    {.name = "route of one", IN("<@A.example:user@C.example> BODY=8BITMIME"),
     .mailbox = "user@C.example", .domain_lc = "c.example", .consumed = 27},
    {.name = "route, empty mailbox", IN("<@a:>"), .want = ADDR_E_SYNTAX},
    {.name = "route, no '@' after ','", IN("<@a,b:c@d>"), .want = ADDR_E_SYNTAX},
    {.name = "route, ';'", IN("<@a;@b:c@d>"), .want = ADDR_E_SYNTAX},
    {.name = "route, empty domain", IN("<@:c@d>"), .want = ADDR_E_SYNTAX},
    {.name = "route, trailing ','", IN("<@a,:c@d>"), .want = ADDR_E_SYNTAX},
    {.name = "route, trailing dot", IN("<@a.:c@d>"), .want = ADDR_E_SYNTAX},
    {.name = "route, literal", IN("<@[1.2.3.4]:a@b>"), .want = ADDR_E_SYNTAX},
    {.name = "route, no ':'", IN("<@a.example>"), .want = ADDR_E_SYNTAX},
    {.name = "route, two ':'", IN("<@a::b@c>"), .want = ADDR_E_SYNTAX},
    {.name = "route to null", IN("<@a:>"), .allow_null = true, .want = ADDR_E_SYNTAX},

    /* Postmaster, RFC 5321 4.1.1.3 and 4.5.1 */
    {.name = "postmaster", IN("<postmaster>"), .mailbox = "postmaster", .local = "postmaster",
     .domain_lc = "", .flags = F_PM},
    {.name = "PostMaster kept", IN("<PostMaster>"), .mailbox = "PostMaster", .local = "PostMaster",
     .domain_lc = "", .flags = F_PM},
    {.name = "postmaster, params", IN("<POSTMASTER> NOTIFY=NEVER"), .mailbox = "POSTMASTER",
     .local = "POSTMASTER", .domain_lc = "", .consumed = 12, .flags = F_PM},
    {.name = "postmaster in MAIL", IN("<postmaster>"), .allow_null = true, .want = ADDR_E_SYNTAX},
    {.name = "postmaster@domain", IN("<Postmaster@Example.org>"), .mailbox = "Postmaster@Example.org",
     .domain_lc = "example.org"},
    {.name = "routed postmaster", IN("<@a:postmaster>"), .want = ADDR_E_SYNTAX},
    {.name = "postmaste", IN("<postmaste>"), .want = ADDR_E_SYNTAX},
    {.name = "postmasters", IN("<postmasters>"), .want = ADDR_E_SYNTAX},
    {.name = "quoted postmaster", IN("<\"postmaster\">"), .want = ADDR_E_SYNTAX},
    {.name = "postmaster, no '>'", IN("<postmaster"), .want = ADDR_E_SYNTAX},

    /* Length limits, RFC 5321 4.5.3.1 */
    {.name = "local 64", IN("<" X64 "@b>"), .mailbox = X64 "@b"},
    {.name = "local 65", IN("<" X65 "@b>"), .want = ADDR_E_TOO_LONG},
    {.name = "quoted local 64", IN("<\"" X62 "\"@b>"), .mailbox = "\"" X62 "\"@b"},
    {.name = "quoted local 65", IN("<\"" X63 "\"@b>"), .want = ADDR_E_TOO_LONG},
    {.name = "path 256", IN("<a@" D252 ">"), .mailbox = "a@" D252},
    {.name = "path 257", IN("<a@" D253 ">"), .want = ADDR_E_TOO_LONG},
    {.name = "path 256, local 64", IN("<" X64 "@" D189 ">"), .mailbox = X64 "@" D189},
    {.name = "path 257, local 64", IN("<" X64 "@" D190 ">"), .want = ADDR_E_TOO_LONG},
    {.name = "domain 255 in a path", IN("<a@" D255 ">"), .want = ADDR_E_TOO_LONG},
    {.name = "domain 256", IN("<a@" D256 ">"), .want = ADDR_E_TOO_LONG},
    {.name = "route domain 255", IN("<@" D255 ":a@b>"), .mailbox = "a@b"},
    {.name = "route domain 256", IN("<@" D256 ":a@b>"), .want = ADDR_E_TOO_LONG},
    {.name = "route not counted", IN("<@r.example:" X64 "@" D189 ">"), .mailbox = X64 "@" D189},
    {.name = "long literal", IN("<a@[x:" D252 "]>"), .want = ADDR_E_TOO_LONG},

    /* SMTPUTF8, RFC 6531 3.3 */
    {.name = "UTF-8 mailbox", IN("<用户@例子.广告>"), .allow_utf8 = true,
     .mailbox = "用户@例子.广告", .local = "用户", .domain_lc = "例子.广告", .flags = F_UTF8},
    {.name = "UTF-8 off", IN("<用户@例子.广告>"), .want = ADDR_E_NON_ASCII},
    {.name = "U-label, ASCII lowered", IN("<a@BÜ.Example>"), .allow_utf8 = true,
     .mailbox = "a@BÜ.Example", .domain_lc = "bÜ.example", .flags = F_UTF8},
    {.name = "U-label, UTF-8 off", IN("<a@bü.example>"), .want = ADDR_E_NON_ASCII},
    {.name = "UTF-8 local, ASCII domain", IN("<jörg@example.org>"), .allow_utf8 = true,
     .mailbox = "jörg@example.org", .flags = F_UTF8},
    {.name = "UTF-8 quoted", IN("<\"ü x\"@b>"), .allow_utf8 = true, .mailbox = "\"ü x\"@b",
     .flags = F_UTF8},
    {.name = "UTF-8 quoted, off", IN("<\"ü x\"@b>"), .want = ADDR_E_NON_ASCII},
    {.name = "UTF-8 quoted-pair", IN("<\"\\ü\"@b>"), .allow_utf8 = true, .want = ADDR_E_SYNTAX},
    {.name = "UTF-8 quoted-pair, off", IN("<\"\\ü\"@b>"), .want = ADDR_E_NON_ASCII},
    {.name = "UTF-8 in literal", IN("<a@[x:ü]>"), .allow_utf8 = true, .want = ADDR_E_SYNTAX},
    {.name = "UTF-8 in literal, off", IN("<a@[x:ü]>"), .want = ADDR_E_NON_ASCII},
    {.name = "UTF-8 in route", IN("<@ü.example:a@b>"), .allow_utf8 = true, .mailbox = "a@b"},
    {.name = "UTF-8 in route, off", IN("<@ü.example:a@b>"), .want = ADDR_E_NON_ASCII},
    {.name = "UTF-8 for '@'", IN("<a\xc3\xbc" "b>"), .allow_utf8 = true, .want = ADDR_E_SYNTAX},
    {.name = "UTF-8 for '<'", IN("ü<a@b>"), .want = ADDR_E_NON_ASCII},
    {.name = "U-label 63 octets", IN("<a@" U63 ".example>"), .allow_utf8 = true,
     .mailbox = "a@" U63 ".example", .flags = F_UTF8},
    {.name = "U-label 64 octets", IN("<a@" U64 ".example>"), .allow_utf8 = true,
     .want = ADDR_E_SYNTAX},
    {.name = "U-label leading hyphen", IN("<a@-ü.example>"), .allow_utf8 = true,
     .want = ADDR_E_SYNTAX},
    {.name = "U+0080", IN("<\xc2\x80@b>"), .allow_utf8 = true, .mailbox = "\xc2\x80@b",
     .flags = F_UTF8},
    {.name = "U+0800", IN("<\xe0\xa0\x80@b>"), .allow_utf8 = true, .mailbox = "\xe0\xa0\x80@b",
     .flags = F_UTF8},
    {.name = "U+D7FF", IN("<\xed\x9f\xbf@b>"), .allow_utf8 = true, .mailbox = "\xed\x9f\xbf@b",
     .flags = F_UTF8},
    {.name = "U+E000", IN("<\xee\x80\x80@b>"), .allow_utf8 = true, .mailbox = "\xee\x80\x80@b",
     .flags = F_UTF8},
    {.name = "U+10000", IN("<\xf0\x90\x80\x80@b>"), .allow_utf8 = true,
     .mailbox = "\xf0\x90\x80\x80@b", .flags = F_UTF8},
    {.name = "U+10FFFF", IN("<\xf4\x8f\xbf\xbf@b>"), .allow_utf8 = true,
     .mailbox = "\xf4\x8f\xbf\xbf@b", .flags = F_UTF8},
    {.name = "overlong C0 80", IN("<\xc0\x80@b>"), .allow_utf8 = true, .want = ADDR_E_BAD_UTF8},
    {.name = "overlong C0 80, off", IN("<\xc0\x80@b>"), .want = ADDR_E_BAD_UTF8},
    {.name = "overlong C1 BF", IN("<\xc1\xbf@b>"), .allow_utf8 = true, .want = ADDR_E_BAD_UTF8},
    {.name = "overlong E0 80 80", IN("<a@\xe0\x80\x80.b>"), .allow_utf8 = true,
     .want = ADDR_E_BAD_UTF8},
    {.name = "overlong E0 9F BF, off", IN("<a@\xe0\x9f\xbf.b>"), .want = ADDR_E_BAD_UTF8},
    {.name = "overlong F0 8F BF BF", IN("<\xf0\x8f\xbf\xbf@b>"), .allow_utf8 = true,
     .want = ADDR_E_BAD_UTF8},
    {.name = "surrogate ED A0 80", IN("<\xed\xa0\x80@b>"), .allow_utf8 = true,
     .want = ADDR_E_BAD_UTF8},
    {.name = "surrogate ED BF BF, off", IN("<\xed\xbf\xbf@b>"), .want = ADDR_E_BAD_UTF8},
    {.name = "past U+10FFFF", IN("<\xf4\x90\x80\x80@b>"), .allow_utf8 = true,
     .want = ADDR_E_BAD_UTF8},
    {.name = "F5 lead", IN("<\xf5\x80\x80\x80@b>"), .allow_utf8 = true, .want = ADDR_E_BAD_UTF8},
    {.name = "FF", IN("<a@b\xff>"), .allow_utf8 = true, .want = ADDR_E_BAD_UTF8},
    {.name = "lone continuation", IN("<\x80@b>"), .allow_utf8 = true, .want = ADDR_E_BAD_UTF8},
    {.name = "truncated 2 by '@'", IN("<\xc3@b>"), .allow_utf8 = true, .want = ADDR_E_BAD_UTF8},
    {.name = "truncated 3 by end", IN("<a\xe2\x82"), .allow_utf8 = true, .want = ADDR_E_BAD_UTF8},
    {.name = "truncated 4 by end, off", IN("<a@b\xf0\x9f\x98"), .want = ADDR_E_BAD_UTF8},
    {.name = "truncated in quotes", IN("<\"\xe2\x82\"@b>"), .allow_utf8 = true,
     .want = ADDR_E_BAD_UTF8},
    {.name = "bad UTF-8 in literal", IN("<a@[x:\xc0\x80]>"), .want = ADDR_E_BAD_UTF8},
    {.name = "bad UTF-8 in route", IN("<@\xed\xa0\x80:a@b>"), .allow_utf8 = true,
     .want = ADDR_E_BAD_UTF8},
    {.name = "first problem wins", IN("<ü\xc0\x80@b>"), .want = ADDR_E_NON_ASCII},
    {.name = "first problem wins, on", IN("<ü\xc0\x80@b>"), .allow_utf8 = true,
     .want = ADDR_E_BAD_UTF8},
};
/* clang-format on */

/* Copies in[0..len) to a heap buffer of exactly len octets and parses it. */
static int
parse_exact(const char *in, size_t len, bool allow_null, bool allow_utf8, struct addr *out,
            size_t *consumed)
{
    char *buf = malloc(len > 0 ? len : 1);
    int rc;

    assert_non_null(buf);
    memcpy(buf, in, len);
    rc = addr_parse_path(len > 0 ? buf : buf + 1, len, allow_null, allow_utf8, out, consumed);
    free(buf);
    return rc;
}

static bool
has(const struct path_case *t, unsigned flag)
{
    return (t->flags & flag) != 0;
}

static void
check_fields(const struct path_case *t, const struct addr *a)
{
    const char *at = strrchr(t->mailbox, '@');
    size_t local_len = at != NULL ? (size_t)(at - t->mailbox) : strlen(t->mailbox);
    char want_lc[ADDR_DOMAIN_MAX + 1] = "";

    if (at != NULL) {
        for (size_t i = 0; at[i + 1] != '\0'; i++)
            want_lc[i] =
                (at[i + 1] >= 'A' && at[i + 1] <= 'Z') ? (char)(at[i + 1] + 32) : at[i + 1];
    }
    if (strcmp(a->mailbox, t->mailbox) != 0)
        fail_msg("%s: mailbox \"%s\", want \"%s\"", t->name, a->mailbox, t->mailbox);
    if (t->local != NULL ? strcmp(a->local, t->local) != 0
                         : strlen(a->local) != local_len || memcmp(a->local, t->mailbox, local_len))
        fail_msg("%s: local \"%s\"", t->name, a->local);
    if (strcmp(a->domain, at != NULL ? at + 1 : "") != 0)
        fail_msg("%s: domain \"%s\"", t->name, a->domain);
    if (strcmp(a->domain_lc, t->domain_lc != NULL ? t->domain_lc : want_lc) != 0)
        fail_msg("%s: domain_lc \"%s\"", t->name, a->domain_lc);
    if (a->is_null != has(t, F_NULL) || a->is_postmaster != has(t, F_PM) ||
        a->domain_literal != has(t, F_LIT) || a->utf8 != has(t, F_UTF8))
        fail_msg("%s: flags null=%d pm=%d lit=%d utf8=%d", t->name, a->is_null, a->is_postmaster,
                 a->domain_literal, a->utf8);
}

static void
test_addr_path_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *t = &path_cases[i];
        struct addr a;
        size_t consumed = 0;
        int rc;

        memset(&a, 0xAA, sizeof(a)); /* the parser must terminate every field it sets */
        rc = parse_exact(t->in, t->len, t->allow_null, t->allow_utf8, &a, &consumed);
        if (rc != t->want)
            fail_msg("%s: status %d, want %d", t->name, rc, t->want);
        if (rc != ADDR_OK)
            continue;
        if (consumed != (t->consumed != 0 ? t->consumed : t->len))
            fail_msg("%s: consumed %zu", t->name, consumed);
        check_fields(t, &a);
    }
}

/* No proper prefix of a complete path may parse, nor read past its end. */
static void
check_prefixes(const char *in, size_t len, bool allow_null, bool allow_utf8)
{
    for (size_t n = 0; n < len; n++) {
        struct addr a;
        size_t consumed = 0;
        int rc = parse_exact(in, n, allow_null, allow_utf8, &a, &consumed);

        if (rc == ADDR_OK)
            fail_msg("prefix %zu of \"%.*s\" parsed", n, (int)len, in);
    }
}

static void
test_addr_prefixes(void **state)
{
    static const struct path_case extra[] = {
        {.name = "utf8 route quoted", IN("<@ü.a,@b:\"x\\\"y\"@[IPv6:::1]>"), .allow_utf8 = true},
        {.name = "general literal", IN("<a.b@[tag:x]>")},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *t = &path_cases[i];

        if (t->want == ADDR_OK && (t->consumed == 0 || t->consumed == t->len))
            check_prefixes(t->in, t->len, t->allow_null, t->allow_utf8);
    }
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        struct addr a;
        size_t consumed;

        assert_int_equal(
            parse_exact(extra[i].in, extra[i].len, false, extra[i].allow_utf8, &a, &consumed),
            ADDR_OK);
        check_prefixes(extra[i].in, extra[i].len, false, extra[i].allow_utf8);
    }
}

struct bytes_case {
    const char *name;
    const char *in;
    size_t len;
    bool allow_utf8;
    bool want;
};

/* clang-format off */
static const struct bytes_case utf8_cases[] = {
    {"empty", IN(""), false, true},
    {"ASCII with NUL", IN("a\0b"), false, true},
    {"C2 80", IN("\xc2\x80"), false, true},
    {"DF BF", IN("\xdf\xbf"), false, true},
    {"E0 A0 80", IN("\xe0\xa0\x80"), false, true},
    {"EF BF BF", IN("\xef\xbf\xbf"), false, true},
    {"F0 90 80 80", IN("\xf0\x90\x80\x80"), false, true},
    {"F4 8F BF BF", IN("\xf4\x8f\xbf\xbf"), false, true},
    {"C0 80", IN("\xc0\x80"), false, false},
    {"C1 BF", IN("\xc1\xbf"), false, false},
    {"E0 80 80", IN("\xe0\x80\x80"), false, false},
    {"E0 9F BF", IN("\xe0\x9f\xbf"), false, false},
    {"ED A0 80", IN("\xed\xa0\x80"), false, false},
    {"ED BF BF", IN("\xed\xbf\xbf"), false, false},
    {"F0 8F BF BF", IN("\xf0\x8f\xbf\xbf"), false, false},
    {"F4 90 80 80", IN("\xf4\x90\x80\x80"), false, false},
    {"F5 80 80 80", IN("\xf5\x80\x80\x80"), false, false},
    {"FF", IN("\xff"), false, false},
    {"80", IN("\x80"), false, false},
    {"C3 then ASCII", IN("\xc3" "A"), false, false},
    {"truncated C3", IN("a\xc3"), false, false},
    {"truncated E2 82", IN("\xe2\x82"), false, false},
    {"truncated F0 9F 98", IN("\xf0\x9f\x98"), false, false},
    {"E2 82 then ASCII", IN("\xe2\x82" "A"), false, false},
};

static const struct bytes_case domain_cases[] = {
    {"simple", IN("example.com"), false, true},
    {"mixed case", IN("Example.COM"), false, true},
    {"single label", IN("a"), false, true},
    {"empty", IN(""), false, false},
    {"trailing dot", IN("a."), false, false},
    {"leading dot", IN(".a"), false, false},
    {"empty label", IN("a..b"), false, false},
    {"leading hyphen", IN("-a"), false, false},
    {"trailing hyphen", IN("a-"), false, false},
    {"underscore", IN("a_b"), false, false},
    {"space", IN("a b"), false, false},
    {"trailing space", IN("a.b "), false, false},
    {"trailing NUL", IN("a\0"), false, false},
    {"mailbox", IN("a@b"), false, false},
    {"label 63", IN(X63 ".example"), false, true},
    {"label 64", IN(X64 ".example"), false, false},
    {"domain 255", IN(D255), false, true},
    {"domain 256", IN(D256), false, false},
    {"IPv4 literal", IN("[192.0.2.1]"), false, true},
    {"IPv6 literal", IN("[IPv6:::1]"), false, true},
    {"general literal", IN("[x:y]"), false, true},
    {"bad IPv4 literal", IN("[1.2.3]"), false, false},
    {"bare IPv4", IN("192.0.2.1"), false, true},
    {"unterminated literal", IN("[192.0.2.1"), false, false},
    {"text after literal", IN("[192.0.2.1]x"), false, false},
    {"U-label", IN("bü.example"), true, true},
    {"U-label, off", IN("bü.example"), false, false},
    {"overlong", IN("b\xc0\x80"), true, false},
    {"surrogate", IN("b\xed\xa0\x80"), true, false},
};
/* clang-format on */

/* Runs fn on an exact-size heap copy of t->in. */
static bool
bytes_check(const struct bytes_case *t, bool domain)
{
    char *buf = malloc(t->len > 0 ? t->len : 1);
    bool ok;

    assert_non_null(buf);
    memcpy(buf, t->in, t->len);
    ok = domain ? addr_domain_valid(buf, t->len, t->allow_utf8) : addr_utf8_valid(buf, t->len);
    free(buf);
    return ok;
}

static void
test_addr_utf8_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
        if (bytes_check(&utf8_cases[i], false) != utf8_cases[i].want)
            fail_msg("utf8 %s: want %d", utf8_cases[i].name, utf8_cases[i].want);
    }
}

static void
test_addr_domain_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(domain_cases) / sizeof(domain_cases[0]); i++) {
        if (bytes_check(&domain_cases[i], true) != domain_cases[i].want)
            fail_msg("domain %s: want %d", domain_cases[i].name, domain_cases[i].want);
    }
}

/* Issue 14 item 11: postmaster at any of our domains, in any case, also
 * quoted (RFC 5321 4.5.1: the local part is case-insensitive there). */
static void
test_addr_issue14_postmaster_local(void **state)
{
    static const struct {
        const char *path;
        bool want;
    } cases[] = {
        {"<postmaster@example.test>", true},
        {"<PostMaster@Example.Test>", true},
        {"<\"postmaster\"@example.test>", true},
        {"<\"POSTMASTER\"@example.test>", true},
        {"<postmaster>", true},
        {"<postmasters@example.test>", false},
        {"<post.master@example.test>", false},
        {"<\"postmaster \"@example.test>", false},
        {"<xpostmaster@example.test>", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct addr a;
        size_t used;

        assert_int_equal(
            addr_parse_path(cases[i].path, strlen(cases[i].path), false, false, &a, &used),
            ADDR_OK);
        if (addr_is_postmaster(&a) != cases[i].want)
            fail_msg("%s: want %d", cases[i].path, cases[i].want);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_path_table),
        cmocka_unit_test(test_addr_prefixes),
        cmocka_unit_test(test_addr_utf8_valid),
        cmocka_unit_test(test_addr_domain_valid),
        cmocka_unit_test(test_addr_issue14_postmaster_local),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
