/* Unit tests for dnsmsg: hand-built DNS replies (MX with preference and a
 * CNAME before them, null MX, A/AAAA, the address bound) and malformed ones
 * (truncated header, record running past the end, a compression loop, an A
 * record of the wrong length), which must give MXD_EIO; TXT records (the
 * character-strings of each glued together, CNAMEs skipped, truncations
 * refused). */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dns/dnsmsg.h"

struct msg {
    unsigned char b[1024];
    size_t len;
};

static void
put(struct msg *m, const void *p, size_t n)
{
    assert_true(m->len + n <= sizeof(m->b));
    memcpy(m->b + m->len, p, n);
    m->len += n;
}

static void
put16(struct msg *m, unsigned v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};

    put(m, x, 2);
}

/* "mx1.example.org" as labels. */
static void
put_name(struct msg *m, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        unsigned char l = (unsigned char)n;

        put(m, &l, 1);
        put(m, name, n);
        name += n + (dot ? 1 : 0);
    }
    put(m, "", 1);
}

/* Header with one question for example.org (type qtype) and an answers. */
static void
msg_begin(struct msg *m, unsigned qtype, unsigned an)
{
    m->len = 0;
    put16(m, 0x1234);
    put16(m, 0x8180);
    put16(m, 1);
    put16(m, an);
    put16(m, 0);
    put16(m, 0);
    put_name(m, "example.org");
    put16(m, qtype);
    put16(m, 1);
}

/* An answer record owned by the question name (pointer 0xc00c). */
static void
rr_begin(struct msg *m, unsigned type, unsigned rdlen)
{
    put16(m, 0xc00c);
    put16(m, type);
    put16(m, 1);
    put16(m, 0);
    put16(m, 300);
    put16(m, rdlen);
}

static void
add_mx(struct msg *m, unsigned pref, const char *host)
{
    struct msg tmp = {.len = 0};

    put_name(&tmp, host);
    rr_begin(m, 15, 2 + (unsigned)tmp.len);
    put16(m, pref);
    put(m, tmp.b, tmp.len);
}

static void
test_mx_records(void **state)
{
    struct msg m;
    struct mx_host *hosts = NULL;
    size_t n = 0, null_mx = 0;
    struct msg cname = {.len = 0};

    (void)state;
    msg_begin(&m, 15, 4);
    put_name(&cname, "alias.example.org");
    rr_begin(&m, 5, (unsigned)cname.len);
    put(&m, cname.b, cname.len);
    add_mx(&m, 10, "mx1.example.org");
    add_mx(&m, 20, "mx2.example.org");
    add_mx(&m, 0, ""); /* null MX */
    assert_int_equal(dnsmsg_mx(m.b, m.len, &hosts, &n, &null_mx), 0);
    assert_int_equal(n, 2);
    assert_int_equal(null_mx, 1);
    assert_string_equal(hosts[0].name, "mx1.example.org");
    assert_int_equal(hosts[0].pref, 10);
    assert_string_equal(hosts[1].name, "mx2.example.org");
    assert_int_equal(hosts[1].pref, 20);
    free(hosts);
}

static void
test_mx_malformed(void **state)
{
    struct msg m;
    struct mx_host *hosts = NULL;
    size_t n = 0, null_mx = 0;

    (void)state;
    msg_begin(&m, 15, 1);
    add_mx(&m, 10, "mx1.example.org");
    /* every truncation of a valid reply is refused, never read past */
    for (size_t cut = 0; cut < m.len; cut++) {
        unsigned char *copy = malloc(cut ? cut : 1);

        memcpy(copy, m.b, cut);
        assert_int_equal(dnsmsg_mx(copy, cut, &hosts, &n, &null_mx), MXD_EIO);
        free(copy);
    }
    assert_int_equal(n, 0);
    /* rdlength 2: no room for the exchange name */
    msg_begin(&m, 15, 1);
    rr_begin(&m, 15, 2);
    put16(&m, 10);
    assert_int_equal(dnsmsg_mx(m.b, m.len, &hosts, &n, &null_mx), MXD_EIO);
    /* an exchange name that points at itself */
    msg_begin(&m, 15, 1);
    rr_begin(&m, 15, 4);
    put16(&m, 10);
    put16(&m, 0xc000 | (unsigned)(m.len));
    assert_int_equal(dnsmsg_mx(m.b, m.len, &hosts, &n, &null_mx), MXD_EIO);
    /* over the largest DNS message */
    assert_int_equal(dnsmsg_mx(m.b, 70000, &hosts, &n, &null_mx), MXD_EIO);
    assert_int_equal(n, 0);
    assert_null(hosts);
}

static void
test_addrs(void **state)
{
    struct msg m;
    struct sockaddr_storage ss[3];
    size_t n = 0;
    const unsigned char v4a[4] = {192, 0, 2, 1}, v4b[4] = {192, 0, 2, 2};
    unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8};
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss[0];
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss[2];

    (void)state;
    v6[15] = 1;
    msg_begin(&m, 1, 3);
    rr_begin(&m, 1, 4);
    put(&m, v4a, 4);
    rr_begin(&m, 28, 16); /* not wanted in an A lookup */
    put(&m, v6, 16);
    rr_begin(&m, 1, 4);
    put(&m, v4b, 4);
    assert_int_equal(dnsmsg_addrs(m.b, m.len, false, 25, ss, &n, 3), 0);
    assert_int_equal(n, 2);
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 25);
    assert_memory_equal(&sin->sin_addr, v4a, 4);
    assert_int_equal(dnsmsg_addrs(m.b, m.len, true, 25, ss, &n, 3), 0);
    assert_int_equal(n, 3);
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_memory_equal(&sin6->sin6_addr, v6, 16);
    /* full: nothing more is written */
    assert_int_equal(dnsmsg_addrs(m.b, m.len, false, 25, ss, &n, 3), 0);
    assert_int_equal(n, 3);
}

static void
test_addrs_bad_length(void **state)
{
    struct msg m;
    struct sockaddr_storage ss[2];
    size_t n = 0;

    (void)state;
    msg_begin(&m, 1, 1);
    rr_begin(&m, 1, 3);
    put(&m, "abc", 3);
    assert_int_equal(dnsmsg_addrs(m.b, m.len, false, 25, ss, &n, 2), MXD_EIO);
    assert_int_equal(n, 0);
    m.len -= 1; /* rdata runs past the end */
    assert_int_equal(dnsmsg_addrs(m.b, m.len, false, 25, ss, &n, 2), MXD_EIO);
}

struct txts {
    char got[4][64];
    size_t n;
};

static void
on_txt(void *arg, const char *txt, size_t len)
{
    struct txts *t = arg;

    assert_int_equal(strlen(txt), len);
    assert_true(t->n < 4 && len < sizeof(t->got[0]));
    memcpy(t->got[t->n++], txt, len + 1);
}

/* One TXT record of character-strings. */
static void
add_txt(struct msg *m, const char *const *parts, size_t nparts)
{
    size_t rdlen = 0;

    for (size_t i = 0; i < nparts; i++)
        rdlen += 1 + strlen(parts[i]);
    rr_begin(m, 16, (unsigned)rdlen);
    for (size_t i = 0; i < nparts; i++) {
        unsigned char l = (unsigned char)strlen(parts[i]);

        put(m, &l, 1);
        put(m, parts[i], l);
    }
}

static void
test_txt(void **state)
{
    static const char *const spf[] = {"v=spf1 ip4:", "192.0.2.5 -all"};
    static const char *const other[] = {"hello"};
    struct msg m, cname = {.len = 0};
    struct txts t = {.n = 0};

    (void)state;
    msg_begin(&m, 16, 3);
    put_name(&cname, "alias.example.org");
    rr_begin(&m, 5, (unsigned)cname.len); /* the CNAME that led here: skipped */
    put(&m, cname.b, cname.len);
    add_txt(&m, spf, 2);
    add_txt(&m, other, 1);
    assert_int_equal(dnsmsg_txt(m.b, m.len, on_txt, &t), 0);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.got[0], "v=spf1 ip4:192.0.2.5 -all"); /* strings glued */
    assert_string_equal(t.got[1], "hello");
    /* every truncation is refused or stops early, never read past */
    for (size_t cut = 0; cut < m.len; cut++) {
        unsigned char *copy = malloc(cut ? cut : 1);

        t.n = 0;
        memcpy(copy, m.b, cut);
        assert_int_equal(dnsmsg_txt(copy, cut, on_txt, &t), MXD_EIO);
        free(copy);
    }
    assert_int_equal(dnsmsg_txt(m.b, 70000, on_txt, &t), MXD_EIO);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_records), cmocka_unit_test(test_mx_malformed),
        cmocka_unit_test(test_addrs),      cmocka_unit_test(test_addrs_bad_length),
        cmocka_unit_test(test_txt),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
