/* Unit tests for spf_record.c (table-driven): which TXT strings are SPF
 * records (RFC 7208 4.5), which records are valid by RFC 7208 (the ABNF of
 * section 12 with 5, 6 and 7), and the record libspf2 is given in their
 * place for an IPv4 and an IPv6 client. */
#include <sys/socket.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "check/spf_record.h"

struct valid_case {
    const char *name;
    const char *record;
    bool valid;
};

static const struct valid_case valid_cases[] = {
    /* valid */
    {"empty", "v=spf1", true},
    {"all", "v=spf1 -all", true},
    {"upper case", "V=SPF1 -ALL", true},
    {"trailing space (12: *SP)", "v=spf1 a -all ", true},
    {"two spaces", "v=spf1 a  -all", true},
    {"every mechanism",
     "v=spf1 +all -include:a.example.com ~a ?a:b.example.com/24//64 mx mx/0 mx//0 ptr "
     "ptr:c.example.com ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{i}.d.example.com",
     true},
    {"a/0", "v=spf1 a/0 -all", true},
    {"ip4 /0", "v=spf1 ip4:1.1.1.1/0", true},
    {"ip4 /32", "v=spf1 ip4:1.1.1.1/32", true},
    {"ip6 /128", "v=spf1 ip6:::1/128", true},
    {"ip6 with IPv4 tail", "v=spf1 ip6:::1.1.1.1/0", true},
    {"ip6 IPv4-mapped", "v=spf1 ip6:::FFFF:1.2.3.4", true},
    {"redirect", "v=spf1 redirect=_spf.example.com", true},
    {"exp", "v=spf1 -all exp=explain.%{d}", true},
    {"unknown modifier", "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all", true},
    {"unknown modifier, empty", "v=spf1 foo= -all", true},
    {"unknown modifier, c macro", "v=spf1 foo=%{c} -all", true},
    {"macros", "v=spf1 exists:%{l1r+-}.%{D2}.%{ir}.%{v}._spf.%{d}", true},
    {"%% %_ %-", "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all", true},
    {"domain ends with a macro", "v=spf1 include:%{d}", true},
    {"trailing dot", "v=spf1 a:example.com.", true},
    {"toplabel with hyphen", "v=spf1 a:foo.xn--p1ai", true},
    {"toplabel digits with hyphen", "v=spf1 a:foo.123-4", true},
    {"colon and slash in domain", "v=spf1 a:foo:bar/baz.example.com", true},
    {"domain and both cidrs", "v=spf1 mx:example.com/24//64", true},
    {"transformer 127", "v=spf1 exists:%{d127}.example.com", true},
    /* invalid: RFC 7208 4.6 makes each a permerror */
    {"non-ASCII", "v=spf1 a:\xef\xbb\xbfgarbage.example.net -all", false},
    {"non-ASCII term",
     "v=spf1 \x80"
     "a:example.net -all",
     false},
    {"CR", "v=spf1 a:ctrl.example.com\rptr -all", false},
    {"LF", "v=spf1 ip4:192.0.2.5\n include:x.example.com ~all", false},
    {"tab", "v=spf1\t-all x", true}, /* not SPF: checked only as such below */
    {"redirect with colon", "v=spf1 ip4:1.2.3.4 redirect:t2.example.com", false},
    {"one label", "v=spf1 a:foo-bar -all", false},
    {"ptr empty", "v=spf1 ptr:", false},
    {"port", "v=spf1 a:example.com:8080", false},
    {"numeric", "v=spf1 a:111.222.33.44", false},
    {"numeric toplabel", "v=spf1 a:abc.123", false},
    {"bad toplabel", "v=spf1 a:example.-com", false},
    {"toplabel ends with hyphen", "v=spf1 a:example.com-", false},
    {"only toplabel", "v=spf1 a:museum", false},
    {"only toplabel, dot", "v=spf1 a:museum.", false},
    {"a empty", "v=spf1 a:", false},
    {"mx empty", "v=spf1 mx: -all", false},
    {"exists empty", "v=spf1 exists:", false},
    {"exists cidr", "v=spf1 exists:mail.example.com/24", false},
    {"include missing", "v=spf1 include -all", false},
    {"include cidr", "v=spf1 include:ip5.example.com/24 -all", false},
    {"cidr 032", "v=spf1 ip4:1.2.3.4/032 -all", false},
    {"cidr 33", "v=spf1 ip4:1.2.3.4/33", false},
    {"cidr6 129", "v=spf1 a//129 -all", false},
    {"cidr6 0128", "v=spf1 ip6:::1/0128", false},
    {"ip4 short", "v=spf1 ip4:1.2.3", false},
    {"ip4 leading zero", "v=spf1 ip4:1.2.3.04", false},
    {"ip4 256", "v=spf1 ip4:1.2.3.256", false},
    {"ip4 port", "v=spf1 ip4:1.2.3.4:8080", false},
    {"ip6 bad", "v=spf1 ip6::::1", false},
    {"ip6 double cidr", "v=spf1 ip6:::1//64", false},
    {"all with argument", "v=spf1 all:foo", false},
    {"exp empty", "v=spf1 exp= -all", false},
    {"exp no toplabel", "v=spf1 exp=-all", false},
    {"exp twice", "v=spf1 exp=a.example.com -all exp=b.example.com", false},
    {"redirect empty", "v=spf1 ?all redirect=", false},
    {"redirect twice", "v=spf1 redirect=a.example.com -all REDIRECT=a.example.com", false},
    {"unknown modifier bad macro", "v=spf1 -all foo=%abc", false},
    {"unknown modifier bad name", "v=spf1 -all 1foo=bar", false},
    {"qualified modifier", "v=spf1 -foo=bar", false},
    {"r in domain", "v=spf1 -all exp=%{r}.example.com", false},
    {"c in domain", "v=spf1 exists:%{c}.example.com", false},
    {"parenthesis macro", "v=spf1 -exists:%(ir).sbl.example.com ?all", false},
    {"embedded bad macro", "v=spf1 exists:foo%(ir).sbl.example.com ?all", false},
    {"trailing %", "v=spf1 exists:foo%.sbl.example.com ?all", false},
    {"% at end", "v=spf1 exists:foo.example.com%", false},
    {"unknown macro letter", "v=spf1 exists:%{x}.example.com", false},
    {"transformer 0", "v=spf1 exists:%{d0}.example.com", false},
    {"unclosed macro", "v=spf1 exists:%{d.example.com", false},
    {"unknown mechanism", "v=spf1 foo -all", false},
    {"qualifier alone", "v=spf1 -", false},
    {"NUL", "v=spf1 a:foo.example.com\0", false},
    /* found by fuzz_spf_record: inet_pton stopped at the NUL */
    {"NUL in ip6", "v=spf1 ip6:::1.1.1.1\0", false},
};

static void
test_spf_record_check_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
        const struct valid_case *c = &valid_cases[i];
        /* the NUL cases have their octet inside the string */
        size_t len = strlen(c->record) + (strncmp(c->name, "NUL", 3) == 0);
        const char *why = NULL;
        int rc;

        if (!spf_record_is_spf(c->record, len))
            continue;
        rc = spf_record_check(c->record, len, &why);
        if ((rc == 0) != c->valid)
            fail_msg("%s: \"%s\" %s, want %s (%s)", c->name, c->record,
                     rc == 0 ? "valid" : "invalid", c->valid ? "valid" : "invalid",
                     why != NULL ? why : "");
        if (rc != 0 && (why == NULL || strstr(why, "RFC 7208") == NULL))
            fail_msg("%s: no RFC section in the reason", c->name);
    }
}

static void
test_spf_record_is_spf(void **state)
{
    (void)state;
    assert_true(spf_record_is_spf("v=spf1", 6));
    assert_true(spf_record_is_spf("v=spf1 -all", 11));
    assert_true(spf_record_is_spf("V=Spf1 -all", 11));
    assert_false(spf_record_is_spf("v=spf10", 7));
    assert_false(spf_record_is_spf("v=spf1\t-all", 11));
    assert_false(spf_record_is_spf("v=spf", 5));
    assert_false(spf_record_is_spf("spf2.0/pra -all", 15));
    assert_false(spf_record_is_spf("\x96", 1));
    assert_false(spf_record_is_spf(" v=spf1", 7));
}

struct rewrite_case {
    const char *name;
    const char *record;
    const char *want4, *want6; /* for an IPv4 and an IPv6 client */
};

#define S0 SPF_RECORD_CIDR0_SUFFIX
static const struct rewrite_case rewrite_cases[] = {
    {"unchanged", "v=spf1 a mx:example.com/24 -all", "v=spf1 a mx:example.com/24 -all",
     "v=spf1 a mx:example.com -all"},
    {"spaces", "v=spf1  ip4:1.2.3.4   -all ", "v=spf1 ip4:1.2.3.4 -all", "v=spf1 ip4:1.2.3.4 -all"},
    {"version case", "V=SPF1 -all", "v=spf1 -all", "v=spf1 -all"},
    {"unknown modifier dropped", "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all",
     "v=spf1 ip4:1.2.3.4 -all", "v=spf1 ip4:1.2.3.4 -all"},
    {"redirect beside all dropped", "v=spf1 redirect=t5.example.com ~all", "v=spf1 ~all",
     "v=spf1 ~all"},
    {"redirect kept", "v=spf1 ip4:1.2.3.4 redirect=t2.example.com",
     "v=spf1 ip4:1.2.3.4 redirect=t2.example.com", "v=spf1 ip4:1.2.3.4 redirect=t2.example.com"},
    {"exp kept", "v=spf1 -all exp=e.example.com", "v=spf1 -all exp=e.example.com",
     "v=spf1 -all exp=e.example.com"},
    {"ip4 /0", "v=spf1 -ip4:1.1.1.1/0 +all", "v=spf1 -ip4:0.0.0.0/1 -ip4:128.0.0.0/1 +all",
     "v=spf1 -ip4:0.0.0.0/1 -ip4:128.0.0.0/1 +all"},
    {"ip6 /0", "v=spf1 ip6:::1.1.1.1/0", "v=spf1 ip6:::/1 ip6:8000::/1",
     "v=spf1 ip6:::/1 ip6:8000::/1"},
    {"a/0", "v=spf1 a/0 -all", "v=spf1 a:%{d}" S0 "/32 -all", "v=spf1 a -all"},
    {"a//0", "v=spf1 a//0 -all", "v=spf1 a -all", "v=spf1 a:%{d}" S0 "//128 -all"},
    {"mx:d/0//0", "v=spf1 ?mx:m.example.com/0//0", "v=spf1 ?mx:m.example.com" S0 "/32",
     "v=spf1 ?mx:m.example.com" S0 "//128"},
    {"a/24//64", "v=spf1 a/24//64", "v=spf1 a/24", "v=spf1 a//64"},
};

static void
test_spf_record_rewrite_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rewrite_cases) / sizeof(rewrite_cases[0]); i++) {
        const struct rewrite_case *c = &rewrite_cases[i];
        char out[512];

        for (int v6 = 0; v6 < 2; v6++) {
            int n = spf_record_rewrite(c->record, strlen(c->record), v6 ? AF_INET6 : AF_INET, out,
                                       sizeof(out));
            const char *want = v6 ? c->want6 : c->want4;

            if (n < 0 || strcmp(out, want) != 0 || (size_t)n != strlen(want))
                fail_msg("%s (IPv%d): got %d \"%s\", want \"%s\"", c->name, v6 ? 6 : 4, n,
                         n < 0 ? "" : out, want);
        }
    }
}

/* Invalid records are not rewritten; a buffer too small says so. */
static void
test_spf_record_rewrite_errors(void **state)
{
    char out[16];

    (void)state;
    assert_int_equal(spf_record_rewrite("v=spf1 a:", 9, AF_INET, out, sizeof(out)), MXD_EINVAL);
    assert_int_equal(spf_record_rewrite("not spf", 7, AF_INET, out, sizeof(out)), MXD_EINVAL);
    assert_int_equal(spf_record_rewrite("v=spf1 ip4:1.2.3.4 -all", 23, AF_INET, out, sizeof(out)),
                     MXD_ETOOBIG);
    assert_int_equal(spf_record_rewrite("v=spf1 -all", 11, AF_INET, out, 6), MXD_ETOOBIG);
    assert_int_equal(spf_record_rewrite("v=spf1 -all", 11, AF_INET, out, 0), MXD_ETOOBIG);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spf_record_check_table),
        cmocka_unit_test(test_spf_record_is_spf),
        cmocka_unit_test(test_spf_record_rewrite_table),
        cmocka_unit_test(test_spf_record_rewrite_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
