/* Unit tests for the resolver (issue 16) against a scripted name server:
 * a thread of this process answering on 127.0.0.1 UDP from a table of names
 * and counting every query it gets. The cases: each status (ok, nodata,
 * nxdomain, servfail, timeout) told apart; the cache (a name asked twice
 * reaches the server once while its TTL lasts, a TTL-0 name every time);
 * a silent name costs its own query's timeout and nothing to the queries
 * beside it; names under test., invalid., localhost. and the loopback
 * reverse zone are forwarded, not answered by libunbound itself;
 * cancelled queries are never called back; callbacks never run inside
 * resolver_query; every loop closes cleanly (uv_loop_close() == 0). */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "base/metrics.h"
#include "dns/dnsmsg.h"
#include "dns/resolver.h"

enum behaviour { B_A, B_A_TTL0, B_NODATA, B_NXDOMAIN, B_SERVFAIL, B_SILENT, B_PTR };

/* The scripted zone: what each name gets (any type but A/PTR: NODATA). */
static const struct zone_entry {
    const char *name;
    enum behaviour b;
} zone[] = {
    {"a.status.test", B_A},
    {"nodata.status.test", B_NODATA},
    {"nx.status.test", B_NXDOMAIN},
    {"fail.status.test", B_SERVFAIL},
    {"silent.test", B_SILENT},
    {"cached.test", B_A},
    {"ttl0.test", B_A_TTL0},
    {"beside.test", B_A},
    {"x.test", B_A},
    {"x.invalid", B_A},
    {"localhost", B_A},
    {"1.0.0.127.in-addr.arpa", B_PTR},
    {"cancel.test", B_A},
    {"loopcache.test", B_A},
};
#define NZONE (sizeof(zone) / sizeof(zone[0]))

struct server {
    int fd;
    uint16_t port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int asked[NZONE]; /* queries per zone entry */
    atomic_int other;        /* queries for names not in the zone */
};

static struct server srv;
static struct resolver_answer last; /* the last answer's fields (no packet) */

/* The question's name (lower case, dotted, no trailing dot) and the end of
 * the question; 0 when malformed. */
static size_t
question(const unsigned char *b, size_t n, char *name, size_t size, unsigned *qtype)
{
    size_t i = 12, o = 0;

    while (i < n && b[i] != 0) {
        size_t l = b[i++];

        if (l > 63 || i + l > n || o + l + 2 > size)
            return 0;
        if (o > 0)
            name[o++] = '.';
        for (size_t k = 0; k < l; k++) {
            unsigned char c = b[i + k];

            name[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        i += l;
    }
    if (i + 5 > n)
        return 0;
    name[o] = '\0';
    *qtype = (unsigned)b[i + 1] << 8 | b[i + 2];
    return i + 5;
}

static size_t
put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return 2;
}

/* The reply to the query in b[0..n) (rewritten in place); 0: stay silent. */
static size_t
respond(unsigned char *b, size_t n, size_t cap)
{
    char name[256];
    unsigned qtype = 0;
    size_t end = question(b, n, name, sizeof(name), &qtype), o;
    const struct zone_entry *z = NULL;
    unsigned rcode = 0, ancount = 0;

    if (end == 0 || cap < end + 64)
        return 0;
    for (size_t i = 0; i < NZONE; i++) {
        if (strcmp(zone[i].name, name) == 0) {
            z = &zone[i];
            atomic_fetch_add(&srv.asked[i], 1);
        }
    }
    if (z == NULL) {
        atomic_fetch_add(&srv.other, 1);
        rcode = 3;
    } else if (z->b == B_SILENT) {
        return 0;
    } else if (z->b == B_NXDOMAIN) {
        rcode = 3;
    } else if (z->b == B_SERVFAIL) {
        rcode = 2;
    }
    o = end;
    if (z != NULL && rcode == 0 &&
        ((qtype == 1 && (z->b == B_A || z->b == B_A_TTL0)) || (qtype == 12 && z->b == B_PTR))) {
        o += put16(b + o, 0xc00c); /* the question's name */
        o += put16(b + o, qtype);
        o += put16(b + o, 1);
        o += put16(b + o, 0);
        o += put16(b + o, z->b == B_A_TTL0 ? 0 : 300);
        if (qtype == 1) {
            static const unsigned char addr[4] = {192, 0, 2, 1};

            o += put16(b + o, 4);
            memcpy(b + o, addr, 4);
            o += 4;
        } else {
            static const unsigned char target[] = {9,   'l', 'o', 'c', 'a', 'l',
                                                   'h', 'o', 's', 't', 0};

            o += put16(b + o, sizeof(target));
            memcpy(b + o, target, sizeof(target));
            o += sizeof(target);
        }
        ancount = 1;
    }
    b[2] = (unsigned char)(0x84 | (b[2] & 0x01)); /* QR, AA; RD kept */
    b[3] = (unsigned char)(0x80 | rcode);         /* RA */
    put16(b + 6, ancount);
    put16(b + 8, 0);
    put16(b + 10, 0); /* no OPT: EDNS is optional */
    return o;
}

static void *
server_run(void *arg)
{
    unsigned char buf[1500];

    (void)arg;
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {.fd = srv.fd, .events = POLLIN};
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        ssize_t n;
        size_t out;

        if (poll(&p, 1, 50) != 1)
            continue;
        n = recvfrom(srv.fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
        if (n < 12)
            continue;
        out = respond(buf, (size_t)n, sizeof(buf));
        if (out > 0)
            (void)sendto(srv.fd, buf, out, 0, (struct sockaddr *)&from, flen);
    }
    return NULL;
}

static int
setup(void **state)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);

    (void)state;
    srv.fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(srv.fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(srv.fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(srv.fd, (struct sockaddr *)&sin, &len), 0);
    srv.port = ntohs(sin.sin_port);
    atomic_init(&srv.stop, false);
    assert_int_equal(pthread_create(&srv.thread, NULL, server_run, NULL), 0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    atomic_store(&srv.stop, true);
    pthread_join(srv.thread, NULL);
    close(srv.fd);
    return 0;
}

static int
asked(const char *name)
{
    for (size_t i = 0; i < NZONE; i++) {
        if (strcmp(zone[i].name, name) == 0)
            return atomic_load(&srv.asked[i]);
    }
    fail_msg("%s is not in the zone", name);
    return -1;
}

static struct resolver *
test_resolver(uv_loop_t *loop)
{
    char server[64];
    const char *servers[1] = {server};

    snprintf(server, sizeof(server), "127.0.0.1@%u", (unsigned)srv.port);
    return resolver_get_servers(loop, servers, 1);
}

struct outcome {
    int calls;
    enum resolver_status status;
    enum resolver_sec sec;
    double ms;
    size_t naddrs;
    struct sockaddr_storage addrs[4];
    uint64_t at_ns; /* uv_hrtime() of the callback */
};

static void
on_answer(void *arg, const struct resolver_answer *a)
{
    struct outcome *o = arg;

    o->calls++;
    o->status = a->status;
    o->sec = a->sec;
    o->ms = a->ms;
    o->at_ns = uv_hrtime();
    last = *a;
    last.packet = NULL;
    if (a->status == RESOLVER_OK)
        assert_int_equal(dnsmsg_addrs(a->packet, a->len, false, 25, o->addrs, &o->naddrs, 4), 0);
}

/* Asks for name's A records on a fresh loop and runs it to the end. */
static void
ask(const char *name, int type, unsigned timeout_ms, struct outcome *o)
{
    uv_loop_t loop;
    struct resolver *r;

    memset(o, 0, sizeof(*o));
    assert_int_equal(uv_loop_init(&loop), 0);
    r = test_resolver(&loop);
    (void)resolver_query(r, name, type, timeout_ms, on_answer, o);
    assert_int_equal(o->calls, 0); /* never from inside resolver_query */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(o->calls, 1);
    assert_int_equal(resolver_pending(r), 0);
}

static void
test_statuses(void **state)
{
    static const struct {
        const char *name;
        enum resolver_status want;
    } cases[] = {
        {"a.status.test", RESOLVER_OK},
        {"nodata.status.test", RESOLVER_NODATA},
        {"nx.status.test", RESOLVER_NXDOMAIN},
        {"fail.status.test", RESOLVER_SERVFAIL},
        {"", RESOLVER_SERVFAIL}, /* no query can be made */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct outcome o;

        print_message("%s\n", cases[i].name);
        ask(cases[i].name, RESOLVER_TYPE_A, 3000, &o);
        assert_int_equal(o.status, cases[i].want);
        assert_int_equal(o.sec, RESOLVER_SEC_INSECURE); /* no trust anchor */
        if (cases[i].want == RESOLVER_OK) {
            char ip[INET_ADDRSTRLEN];

            assert_int_equal(o.naddrs, 1);
            inet_ntop(AF_INET, &((struct sockaddr_in *)&o.addrs[0])->sin_addr, ip, sizeof(ip));
            assert_string_equal(ip, "192.0.2.1");
            assert_int_equal(last.ttl, 300);
            assert_int_equal(last.rcode, 0);
        }
    }
}

/* The same name twice: one query reaches the server while the TTL lasts;
 * a TTL-0 answer is asked for again. */
static void
test_cache(void **state)
{
    uint64_t hits = metrics_get(METRICS_DNS_CACHE_HITS);
    struct outcome o;

    (void)state;
    ask("cached.test", RESOLVER_TYPE_A, 3000, &o);
    assert_int_equal(o.status, RESOLVER_OK);
    ask("CACHED.test.", RESOLVER_TYPE_A, 3000, &o);
    assert_int_equal(o.status, RESOLVER_OK);
    assert_int_equal(o.naddrs, 1);
    assert_int_equal(asked("cached.test"), 1);
    assert_int_equal(metrics_get(METRICS_DNS_CACHE_HITS) - hits, 1);
    ask("ttl0.test", RESOLVER_TYPE_A, 3000, &o);
    ask("ttl0.test", RESOLVER_TYPE_A, 3000, &o);
    assert_int_equal(o.status, RESOLVER_OK);
    assert_int_equal(asked("ttl0.test"), 2);
    assert_int_equal(metrics_get(METRICS_DNS_CACHE_HITS) - hits, 1);
}

/* A repeat within the TTL is answered from the resolver's own copy: never
 * given to libunbound (nothing pending after resolver_query), still not
 * from inside the call, with the same records, rcode and what is left of
 * the TTL; another type of the same name is not. */
static void
test_loop_cache(void **state)
{
    uint64_t hits = metrics_get(METRICS_DNS_CACHE_HITS);
    struct outcome o, o2;
    uv_loop_t loop;
    struct resolver *r;

    (void)state;
    ask("loopcache.test", RESOLVER_TYPE_A, 3000, &o);
    assert_int_equal(o.status, RESOLVER_OK);
    assert_int_equal(asked("loopcache.test"), 1);
    memset(&o, 0, sizeof(o));
    memset(&o2, 0, sizeof(o2));
    assert_int_equal(uv_loop_init(&loop), 0);
    r = test_resolver(&loop);
    (void)resolver_query(r, "LoopCache.test.", RESOLVER_TYPE_A, 3000, on_answer, &o);
    assert_int_equal(resolver_pending(r), 0);
    assert_int_equal(o.calls, 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, RESOLVER_OK);
    assert_int_equal(o.sec, RESOLVER_SEC_INSECURE);
    assert_int_equal(o.naddrs, 1);
    assert_int_equal(last.rcode, 0);
    assert_in_range(last.ttl, 1, 300);
    assert_int_equal(metrics_get(METRICS_DNS_CACHE_HITS) - hits, 1);
    (void)resolver_query(r, "loopcache.test", RESOLVER_TYPE_TXT, 3000, on_answer, &o2);
    assert_int_equal(resolver_pending(r), 1);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(o2.calls, 1);
    assert_int_equal(o2.status, RESOLVER_NODATA);
    assert_int_equal(asked("loopcache.test"), 2);
}

/* 50 queries for a silent name, and one beside them: that one is answered
 * at once, the silent ones each after its own timeout. */
static void
test_silent_costs_only_itself(void **state)
{
    enum { N = 50 };
    uint64_t timeouts = metrics_get(METRICS_DNS_TIMEOUTS), t0;
    struct outcome silent[N], beside;
    uv_loop_t loop;
    struct resolver *r;

    (void)state;
    memset(silent, 0, sizeof(silent));
    memset(&beside, 0, sizeof(beside));
    assert_int_equal(uv_loop_init(&loop), 0);
    r = test_resolver(&loop);
    t0 = uv_hrtime();
    for (int i = 0; i < N; i++)
        (void)resolver_query(r, "silent.test", RESOLVER_TYPE_A, 800, on_answer, &silent[i]);
    (void)resolver_query(r, "beside.test", RESOLVER_TYPE_A, 800, on_answer, &beside);
    assert_int_equal(resolver_pending(r), N + 1);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(beside.calls, 1);
    assert_int_equal(beside.status, RESOLVER_OK);
    print_message("beside: %.1f ms; silent: %.1f ms\n", beside.ms, silent[0].ms);
    assert_true(beside.ms < 500);
    for (int i = 0; i < N; i++) {
        assert_int_equal(silent[i].calls, 1);
        assert_int_equal(silent[i].status, RESOLVER_TIMEOUT);
        assert_true(silent[i].ms >= 790 && silent[i].ms < 2000);
        assert_true(silent[i].at_ns > beside.at_ns);
    }
    assert_true(uv_hrtime() - t0 < 2000000000ull);
    assert_true(asked("silent.test") >= 1);
    assert_int_equal(metrics_get(METRICS_DNS_TIMEOUTS) - timeouts, N);
    assert_int_equal(resolver_pending(r), 0);
}

/* Names libunbound would answer itself by default (RFC 6761) reach the
 * configured server. */
static void
test_special_names_forwarded(void **state)
{
    static const char *const names[] = {"x.test", "x.invalid", "localhost"};
    struct outcome o;

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        print_message("%s\n", names[i]);
        ask(names[i], RESOLVER_TYPE_A, 3000, &o);
        assert_int_equal(o.status, RESOLVER_OK);
        assert_int_equal(asked(names[i]), 1);
    }
    ask("1.0.0.127.in-addr.arpa", RESOLVER_TYPE_PTR, 3000, &o);
    assert_int_equal(o.status, RESOLVER_OK);
    assert_int_equal(asked("1.0.0.127.in-addr.arpa"), 1);
    /* and an unknown name under test. is the server's NXDOMAIN */
    ask("unknown.test", RESOLVER_TYPE_A, 3000, &o);
    assert_int_equal(o.status, RESOLVER_NXDOMAIN);
    assert_true(atomic_load(&srv.other) >= 1);
}

static void
on_never(void *arg, const struct resolver_answer *a)
{
    (void)arg;
    (void)a;
    fail_msg("a cancelled query was called back");
}

struct canceller {
    struct resolver_query *victim;
    struct outcome o;
};

/* A callback that cancels another query still out. */
static void
on_cancel_other(void *arg, const struct resolver_answer *a)
{
    struct canceller *c = arg;

    on_answer(&c->o, a);
    resolver_cancel(c->victim);
}

static void
test_cancel(void **state)
{
    struct canceller c;
    uv_loop_t loop;
    struct resolver *r;
    struct resolver_query *q;
    uint64_t t0;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(uv_loop_init(&loop), 0);
    r = test_resolver(&loop);
    t0 = uv_hrtime();
    q = resolver_query(r, "cancel.test", RESOLVER_TYPE_A, 3000, on_never, NULL);
    resolver_cancel(q); /* before any answer */
    c.victim = resolver_query(r, "silent.test", RESOLVER_TYPE_A, 3000, on_never, NULL);
    (void)resolver_query(r, "beside.test", RESOLVER_TYPE_A, 3000, on_cancel_other, &c);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(c.o.calls, 1);
    assert_int_equal(resolver_pending(r), 0);
    /* the silent query did not keep the loop for its 3 s */
    assert_true(uv_hrtime() - t0 < 1000000000ull);
}

static void
test_timeout_until(void **state)
{
    uint64_t now = uv_hrtime();

    (void)state;
    assert_int_equal(resolver_timeout_until(0), 0);
    assert_int_equal(resolver_timeout_until(now - 1), 0);
    assert_int_equal(resolver_timeout_until(now + 60ull * 1000000000u), RESOLVER_TIMEOUT_MS);
    assert_in_range(resolver_timeout_until(now + 1000000000u), 900, 1000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statuses),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_loop_cache),
        cmocka_unit_test(test_silent_costs_only_itself),
        cmocka_unit_test(test_special_names_forwarded),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_timeout_until),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
