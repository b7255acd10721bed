/* Unit tests for dns_mx_async against a private dnsmasq on a loopback port
 * (MX selection, implicit MX, NXDOMAIN, null MX, REFUSED, IPv6 server) and
 * a scripted in-process UDP responder for SERVFAIL. Needs dnsmasq
 * (Debian: dnsmasq-base; MXD_DNSMASQ overrides the path) and fails
 * without it. Touches nothing beyond loopback: every lookup goes through
 * dns_servers. */
#include <sys/socket.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "base/conf.h"
#include "base/util.h"
#include "dns/dns.h"

extern char **environ;

/* The zone dnsmasq serves; --local makes unknown names NXDOMAIN. */
static const char *const zone_args[] = {
    "--local=/example.org/",
    "--mx-host=example.org,mx1.example.org,10",
    "--mx-host=example.org,backup.example.org,20",
    "--host-record=mx1.example.org,127.0.0.1",
    "--host-record=backup.example.org,127.0.0.3",
    "--host-record=nomx.example.org,127.0.0.2,::2",
    "--mx-host=eq.example.org,a1.example.org,10",
    "--mx-host=eq.example.org,a2.example.org,10",
    "--host-record=a1.example.org,127.0.0.11",
    "--host-record=a2.example.org,127.0.0.12",
    "--mx-host=dangling.example.org,ghost.example.org,10",
    "--mx-host=nullmx.example.org,.,0",
};

struct fixture {
    pid_t dnsmasq;
    uint16_t port;
    bool have_v6;
};

static struct fixture fx;

static bool
can_bind(int family, int type, uint16_t port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int fd = socket(family, type, 0), ok;

    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        sin6->sin6_addr = in6addr_loopback;
        len = sizeof(*sin6);
    }
    if (fd < 0)
        return false;
    ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
    close(fd);
    return ok;
}

/* A UDP socket on 127.0.0.1 with a kernel-chosen port; *port gets it. */
static int
udp_socket(uint16_t *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);

    assert_true(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* A port free for UDP and TCP on 127.0.0.1 (and ::1 when v6). */
static uint16_t
free_port(bool v6)
{
    for (int tries = 0; tries < 100; tries++) {
        uint16_t port;

        close(udp_socket(&port));
        if (can_bind(AF_INET, SOCK_STREAM, port) &&
            (!v6 ||
             (can_bind(AF_INET6, SOCK_DGRAM, port) && can_bind(AF_INET6, SOCK_STREAM, port))))
            return port;
    }
    fail_msg("no free port");
    return 0;
}

/* Sends a minimal MX query for example.org; true when anything answers. */
static bool
dns_ping(uint16_t port)
{
    static const unsigned char q[] = {0x12, 0x34, 1,   0,   0,   1,   0,   0,   0,   0,
                                      0,    0,    7,   'e', 'x', 'a', 'm', 'p', 'l', 'e',
                                      3,    'o',  'r', 'g', 0,   0,   15,  0,   1};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    unsigned char buf[512];
    uint16_t dummy;
    int fd = udp_socket(&dummy);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    bool ok;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&sin, sizeof(sin));
    ok = poll(&p, 1, 100) == 1 && recv(fd, buf, sizeof(buf), 0) > 12;
    close(fd);
    return ok;
}

static pid_t
spawn_dnsmasq(uint16_t port, bool v6)
{
    static const char *const paths[] = {"/usr/sbin/dnsmasq", "/sbin/dnsmasq", "dnsmasq"};
    const char *env = getenv("MXD_DNSMASQ");
    char port_arg[32];
    const char *argv[48];
    size_t argc = 0;
    pid_t pid = -1;

    snprintf(port_arg, sizeof(port_arg), "--port=%u", (unsigned)port);
    argv[argc++] = "dnsmasq";
    argv[argc++] = "--keep-in-foreground";
    argv[argc++] = "--conf-file=/dev/null";
    argv[argc++] = port_arg;
    argv[argc++] = "--listen-address=127.0.0.1";
    if (v6)
        argv[argc++] = "--listen-address=::1";
    argv[argc++] = "--bind-interfaces";
    argv[argc++] = "--no-resolv";
    argv[argc++] = "--no-hosts";
    argv[argc++] = "--pid-file=";
    argv[argc++] = "--log-facility=/dev/null";
    for (size_t i = 0; i < sizeof(zone_args) / sizeof(zone_args[0]); i++)
        argv[argc++] = zone_args[i];
    argv[argc] = NULL;
    for (size_t i = 0; i < 3 && pid < 0; i++) {
        const char *path = env != NULL ? env : paths[i];

        if (posix_spawnp(&pid, path, NULL, NULL, (char *const *)argv, environ) != 0)
            pid = -1;
        if (env != NULL)
            break;
    }
    if (pid < 0)
        fail_msg("cannot run dnsmasq (install dnsmasq-base, or set MXD_DNSMASQ)");
    return pid;
}

static int
setup(void **state)
{
    int wstatus;

    (void)state;
    fx.have_v6 = can_bind(AF_INET6, SOCK_DGRAM, 0);
    fx.port = free_port(fx.have_v6);
    fx.dnsmasq = spawn_dnsmasq(fx.port, fx.have_v6);
    for (int i = 0; i < 50; i++) {
        if (waitpid(fx.dnsmasq, &wstatus, WNOHANG) == fx.dnsmasq) {
            fx.dnsmasq = -1;
            fail_msg("dnsmasq exited at startup (status %d)", wstatus);
        }
        if (dns_ping(fx.port))
            return 0;
    }
    fail_msg("dnsmasq did not answer on 127.0.0.1:%u", (unsigned)fx.port);
    return -1;
}

static int
teardown(void **state)
{
    (void)state;
    if (fx.dnsmasq > 0) {
        kill(fx.dnsmasq, SIGTERM);
        waitpid(fx.dnsmasq, NULL, 0);
        fx.dnsmasq = -1;
    }
    return 0;
}

static struct conf *
conf_with_servers(const char *servers)
{
    struct conf *c = NULL;
    char *err = NULL;
    char *text = xasprintf("[server]\nhostname = backup.example.org\ndatabase = /nonexistent/q.db\n"
                           "dns_servers = %s\n",
                           servers);

    if (conf_parse_string(text, "t.conf", &c, &err) != 0)
        fail_msg("conf: %s", err != NULL ? err : "?");
    free(text);
    return c;
}

static struct conf *
conf_port(const char *host, uint16_t port)
{
    char buf[80];

    snprintf(buf, sizeof(buf), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
    return conf_with_servers(buf);
}

struct outcome {
    int calls;
    int status;
    struct dns_mx_result *res;
};

static void
outcome_cb(void *arg, int status, struct dns_mx_result *res)
{
    struct outcome *o = arg;

    o->calls++;
    o->status = status;
    o->res = res;
}

/* One lookup on a fresh loop; the caller frees out->res. */
static void
run_lookup(const struct conf *c, const char *domain, const char *self, struct outcome *out)
{
    uv_loop_t loop;

    memset(out, 0, sizeof(*out));
    assert_int_equal(uv_loop_init(&loop), 0);
    dns_mx_async(&loop, c, domain, self, outcome_cb, out);
    assert_int_equal(out->calls, 0); /* never called back synchronously */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(out->calls, 1);
    assert_non_null(out->res);
}

static void
assert_addr(const struct sockaddr_storage *ss, const char *ip)
{
    char buf[INET6_ADDRSTRLEN];
    const void *a;
    uint16_t port;

    if (ss->ss_family == AF_INET) {
        a = &((const struct sockaddr_in *)ss)->sin_addr;
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    } else {
        assert_int_equal(ss->ss_family, AF_INET6);
        a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    }
    assert_non_null(inet_ntop(ss->ss_family, a, buf, sizeof(buf)));
    assert_string_equal(buf, ip);
    assert_int_equal(port, 25);
}

struct want_target {
    const char *name;
    unsigned pref;
    const char *addrs[3];
    size_t naddrs;
};

struct lookup_case {
    const char *name;
    const char *domain, *self;
    int want_status;
    bool want_listed;
    struct want_target want[2];
    size_t want_n;
};

static const struct lookup_case lookup_cases[] = {
    {"backup as self: only the better MX",
     "example.org",
     "backup.example.org",
     0,
     true,
     {{"mx1.example.org", 10, {"127.0.0.1"}, 1}},
     1},
    {"self matched case-insensitively with a trailing dot",
     "Example.Org.",
     "BACKUP.example.org.",
     0,
     true,
     {{"mx1.example.org", 10, {"127.0.0.1"}, 1}},
     1},
    {"self is the best MX: loops back", "example.org", "mx1.example.org", 0, true, {{NULL}}, 0},
    {"self not listed: every MX in order",
     "example.org",
     "other.example.net",
     0,
     false,
     {{"mx1.example.org", 10, {"127.0.0.1"}, 1}, {"backup.example.org", 20, {"127.0.0.3"}, 1}},
     2},
    {"no MX, A and AAAA: implicit MX",
     "nomx.example.org",
     "backup.example.org",
     0,
     false,
     {{"nomx.example.org", 0, {"127.0.0.2", "::2"}, 2}},
     1},
    {"implicit MX naming self: loops back",
     "nomx.example.org",
     "nomx.example.org",
     0,
     true,
     {{NULL}},
     0},
    {"NXDOMAIN", "nx.example.org", "backup.example.org", MXD_ENOENT, false, {{NULL}}, 0},
    {"MX host does not exist",
     "dangling.example.org",
     "backup.example.org",
     MXD_ENOENT,
     false,
     {{NULL}},
     0},
    {"null MX (RFC 7505)",
     "nullmx.example.org",
     "backup.example.org",
     MXD_ENOENT,
     false,
     {{NULL}},
     0},
    {"REFUSED (no upstream for the name)",
     "elsewhere.test",
     "backup.example.org",
     MXD_EIO,
     false,
     {{NULL}},
     0},
    {"empty domain", "", "backup.example.org", MXD_ENOENT, false, {{NULL}}, 0},
};

static void
check_outcome(const struct lookup_case *c, const struct outcome *o)
{
    assert_int_equal(o->status, c->want_status);
    assert_int_equal(o->res->self_listed, c->want_listed);
    assert_int_equal(o->res->ntargets, c->want_n);
    for (size_t i = 0; i < c->want_n; i++) {
        const struct dns_target *t = &o->res->targets[i];
        const struct want_target *w = &c->want[i];

        assert_string_equal(t->mx.name, w->name);
        assert_int_equal(t->mx.pref, w->pref);
        assert_int_equal(t->naddrs, w->naddrs);
        for (size_t k = 0; k < w->naddrs; k++)
            assert_addr(&t->addrs[k], w->addrs[k]);
    }
}

static void
test_lookup_table(void **state)
{
    struct conf *c = conf_port("127.0.0.1", fx.port);

    (void)state;
    for (size_t i = 0; i < sizeof(lookup_cases) / sizeof(lookup_cases[0]); i++) {
        struct outcome o;

        print_message("case %zu: %s\n", i, lookup_cases[i].name);
        run_lookup(c, lookup_cases[i].domain, lookup_cases[i].self, &o);
        check_outcome(&lookup_cases[i], &o);
        free(o.res);
    }
    conf_free(c);
}

/* Equal preferences come back in both orders over enough lookups. */
static void
test_lookup_equal_prefs_shuffled(void **state)
{
    struct conf *c = conf_port("127.0.0.1", fx.port);
    int first_a1 = 0, rounds = 40;

    (void)state;
    for (int i = 0; i < rounds; i++) {
        struct outcome o;

        run_lookup(c, "eq.example.org", "backup.example.org", &o);
        assert_int_equal(o.status, 0);
        assert_int_equal(o.res->ntargets, 2);
        assert_int_equal(o.res->targets[0].mx.pref, 10);
        assert_int_equal(o.res->targets[1].mx.pref, 10);
        first_a1 += strcmp(o.res->targets[0].mx.name, "a1.example.org") == 0;
        assert_addr(&o.res->targets[0].addrs[0],
                    strcmp(o.res->targets[0].mx.name, "a1.example.org") == 0 ? "127.0.0.11"
                                                                             : "127.0.0.12");
        free(o.res);
    }
    assert_true(first_a1 > 0 && first_a1 < rounds);
    conf_free(c);
}

/* The resolver talks to an IPv6 dns_servers entry. */
static void
test_lookup_ipv6_server(void **state)
{
    struct conf *c;
    struct outcome o;

    (void)state;
    if (!fx.have_v6)
        skip();
    c = conf_port("::1", fx.port);
    run_lookup(c, "example.org", "backup.example.org", &o);
    check_outcome(&lookup_cases[0], &o);
    free(o.res);
    conf_free(c);
}

/* A dead server first, then dnsmasq: the resolver moves on. */
static void
test_lookup_second_server(void **state)
{
    uint16_t dead;
    int fd = udp_socket(&dead);
    struct outcome o;
    struct conf *c;
    char servers[80];

    (void)state;
    close(fd); /* nothing listens there now: ICMP port unreachable */
    snprintf(servers, sizeof(servers), "127.0.0.1:%u, 127.0.0.1:%u", (unsigned)dead,
             (unsigned)fx.port);
    c = conf_with_servers(servers);
    run_lookup(c, "example.org", "backup.example.org", &o);
    check_outcome(&lookup_cases[0], &o);
    free(o.res);
    conf_free(c);
}

static void
test_lookup_no_server(void **state)
{
    uint16_t dead;
    int fd = udp_socket(&dead);
    struct outcome o;
    struct conf *c;

    (void)state;
    close(fd);
    c = conf_port("127.0.0.1", dead);
    run_lookup(c, "example.org", "backup.example.org", &o);
    assert_int_equal(o.status, MXD_EIO);
    assert_int_equal(o.res->ntargets, 0);
    free(o.res);
    conf_free(c);
}

/* Answers every query with SERVFAIL (dnsmasq cannot be told to). */
struct servfail {
    int fd;
    uint16_t port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int answered;
};

static void *
servfail_run(void *arg)
{
    struct servfail *s = arg;
    unsigned char buf[512];

    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        ssize_t n, end = 12;

        if (poll(&p, 1, 50) != 1)
            continue;
        n = recvfrom(s->fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
        while (end < n && buf[end] != 0) /* skip the question name */
            end += buf[end] + 1;
        if (n < 12 || end + 5 > n)
            continue;
        buf[2] = (unsigned char)(0x80 | (buf[2] & 0x79)); /* QR; opcode, RD kept */
        buf[3] = 0x80 | 2;                                /* RA, rcode SERVFAIL */
        memset(buf + 6, 0, 6);                            /* only the question */
        (void)sendto(s->fd, buf, (size_t)end + 5, 0, (struct sockaddr *)&from, flen);
        atomic_fetch_add(&s->answered, 1);
    }
    return NULL;
}

static void
test_lookup_servfail(void **state)
{
    struct servfail s = {.fd = -1};
    struct outcome o;
    struct conf *c;

    (void)state;
    s.fd = udp_socket(&s.port);
    atomic_init(&s.stop, false);
    atomic_init(&s.answered, 0);
    assert_int_equal(pthread_create(&s.thread, NULL, servfail_run, &s), 0);
    c = conf_port("127.0.0.1", s.port);
    run_lookup(c, "example.org", "backup.example.org", &o);
    atomic_store(&s.stop, true);
    assert_int_equal(pthread_join(s.thread, NULL), 0);
    close(s.fd);
    assert_int_equal(o.status, MXD_EIO);
    assert_int_equal(o.res->ntargets, 0);
    assert_true(atomic_load(&s.answered) >= 1);
    free(o.res);
    conf_free(c);
}

/* Many lookups in flight on one loop: each callback exactly once. */
static void
test_lookup_concurrent(void **state)
{
    enum { N = 24 };
    struct conf *c = conf_port("127.0.0.1", fx.port);
    struct outcome o[N];
    uv_loop_t loop;

    (void)state;
    memset(o, 0, sizeof(o));
    assert_int_equal(uv_loop_init(&loop), 0);
    for (int i = 0; i < N; i++)
        dns_mx_async(&loop, c, i % 2 ? "example.org" : "nx.example.org", "backup.example.org",
                     outcome_cb, &o[i]);
    conf_free(c); /* dns_mx_async copied what it needs */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, i % 2 ? 0 : MXD_ENOENT);
        assert_int_equal(o[i].res->ntargets, i % 2 ? 1 : 0);
        free(o[i].res);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_table),
        cmocka_unit_test(test_lookup_equal_prefs_shuffled),
        cmocka_unit_test(test_lookup_ipv6_server),
        cmocka_unit_test(test_lookup_second_server),
        cmocka_unit_test(test_lookup_no_server),
        cmocka_unit_test(test_lookup_servfail),
        cmocka_unit_test(test_lookup_concurrent),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
