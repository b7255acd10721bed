/* Unit tests for mx_select: which MX hosts a backup MX forwards to, and in
 * which order (RFC 5321 5.1). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dns/mx.h"

#define MAXH 8

struct rec {
    const char *name;
    unsigned pref;
};

struct select_case {
    const char *name;
    struct rec in[MAXH];
    size_t n;
    const char *self;
    bool want_listed;
    const char *want[MAXH]; /* kept names, in order (no shuffling) */
    size_t want_n;
};

static const struct select_case select_cases[] = {
    {"self not listed: all kept, sorted",
     {{"c.example", 30}, {"a.example", 10}, {"b.example", 20}},
     3,
     "backup.example",
     false,
     {"a.example", "b.example", "c.example"},
     3},
    {"self at 10, others 5 5 10 20: only the 5s",
     {{"p1.example", 5},
      {"backup.example", 10},
      {"peer.example", 10},
      {"p2.example", 5},
      {"worse.example", 20}},
     5,
     "backup.example",
     true,
     {"p1.example", "p2.example"},
     2},
    {"self is the best: nothing kept",
     {{"other.example", 10}, {"backup.example", 0}, {"third.example", 20}},
     3,
     "backup.example",
     true,
     {NULL},
     0},
    {"self shares the best preference: nothing kept",
     {{"other.example", 10}, {"backup.example", 10}},
     2,
     "backup.example",
     true,
     {NULL},
     0},
    {"case and trailing dot on the record",
     {{"BackUp.Example.", 20}, {"primary.example", 10}},
     2,
     "backup.example",
     true,
     {"primary.example"},
     1},
    {"trailing dot on self",
     {{"backup.example", 20}, {"primary.example", 10}},
     2,
     "BACKUP.EXAMPLE.",
     true,
     {"primary.example"},
     1},
    {"self listed twice: the lowest preference counts",
     {{"backup.example", 30},
      {"primary.example", 10},
      {"backup.example.", 15},
      {"mid.example", 20}},
     4,
     "backup.example",
     true,
     {"primary.example"},
     1},
    {"prefix of self is not self",
     {{"backup.exampl", 10}, {"backup.example.org", 20}, {"primary.example", 5}},
     3,
     "backup.example",
     false,
     {"primary.example", "backup.exampl", "backup.example.org"},
     3},
    {"equal preferences keep input order without rand_fn",
     {{"b.example", 10}, {"a.example", 10}, {"z.example", 5}, {"c.example", 10}},
     4,
     "self.example",
     false,
     {"z.example", "b.example", "a.example", "c.example"},
     4},
    {"empty input", {{NULL, 0}}, 0, "backup.example", false, {NULL}, 0},
    {"NULL self: all kept",
     {{"b.example", 2}, {"a.example", 1}},
     2,
     NULL,
     false,
     {"a.example", "b.example"},
     2},
};

static size_t
load(struct mx_host *hosts, const struct rec *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        strcpy(hosts[i].name, in[i].name);
        hosts[i].pref = in[i].pref;
    }
    return n;
}

static void
test_select_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(select_cases) / sizeof(select_cases[0]); i++) {
        const struct select_case *c = &select_cases[i];
        struct mx_host hosts[MAXH];
        bool listed = !c->want_listed;
        size_t n = load(hosts, c->in, c->n), kept;

        print_message("case %zu: %s\n", i, c->name);
        kept = mx_select(hosts, n, c->self, NULL, NULL, &listed);
        assert_int_equal(kept, c->want_n);
        assert_int_equal(listed, c->want_listed);
        for (size_t k = 0; k < kept; k++) {
            assert_string_equal(hosts[k].name, c->want[k]);
            if (k > 0)
                assert_true(hosts[k - 1].pref <= hosts[k].pref);
        }
    }
}

/* Replays a fixed sequence of "random" numbers and counts the calls. */
struct script {
    const unsigned *vals;
    size_t n, next;
};

static unsigned
script_rand(void *arg)
{
    struct script *s = arg;
    unsigned v = s->vals[s->next % s->n];

    s->next++;
    return v;
}

static void
test_select_shuffle_deterministic(void **state)
{
    static const struct rec in[] = {{"a.example", 10}, {"b.example", 10}, {"c.example", 10},
                                    {"x.example", 5},  {"y.example", 5},  {"solo.example", 20}};
    /* Sorted: x y | a b c | solo. Fisher-Yates per group: {x,y}: k=1, r=0
     * swaps -> y x. {a,b,c}: k=2, r=1 swaps b,c -> a c b; k=1, r=0 swaps
     * a,c -> c a b. The single-host group draws nothing. */
    static const unsigned vals[] = {0, 1, 0};
    struct script s = {vals, 3, 0};
    struct mx_host hosts[MAXH];
    size_t n = load(hosts, in, 6);
    bool listed = true;

    (void)state;
    assert_int_equal(mx_select(hosts, n, "backup.example", script_rand, &s, &listed), 6);
    assert_false(listed);
    assert_string_equal(hosts[0].name, "y.example");
    assert_string_equal(hosts[1].name, "x.example");
    assert_string_equal(hosts[2].name, "c.example");
    assert_string_equal(hosts[3].name, "a.example");
    assert_string_equal(hosts[4].name, "b.example");
    assert_string_equal(hosts[5].name, "solo.example");
    assert_int_equal(s.next, 3); /* (3-1) + (2-1) draws */
}

static unsigned
lcg_rand(void *arg)
{
    unsigned *x = arg;

    *x = *x * 1103515245u + 12345u;
    return *x >> 8;
}

/* Every permutation of an equal-preference group shows up, and shuffling
 * never crosses preference groups. */
static void
test_select_shuffle_covers_all(void **state)
{
    static const struct rec in[] = {{"a", 10}, {"b", 10}, {"c", 10}, {"z", 1}};
    bool seen[3][3][3] = {{{false}}};
    unsigned seed = 42, distinct = 0;

    (void)state;
    for (int round = 0; round < 600; round++) {
        struct mx_host hosts[MAXH];
        size_t n = load(hosts, in, 4);

        assert_int_equal(mx_select(hosts, n, "self", lcg_rand, &seed, NULL), 4);
        assert_string_equal(hosts[0].name, "z");
        seen[hosts[1].name[0] - 'a'][hosts[2].name[0] - 'a'][hosts[3].name[0] - 'a'] = true;
    }
    for (int i = 0; i < 27; i++)
        distinct += seen[i / 9][(i / 3) % 3][i % 3];
    assert_int_equal(distinct, 6);
}

/* Hosts worse than self are dropped before shuffling: rand_fn only sees the
 * kept groups. */
static void
test_select_shuffle_only_kept(void **state)
{
    static const struct rec in[] = {
        {"self.example", 10}, {"p.example", 5}, {"w1.example", 20}, {"w2.example", 20}};
    static const unsigned vals[] = {0};
    struct script s = {vals, 1, 0};
    struct mx_host hosts[MAXH];
    size_t n = load(hosts, in, 4);
    bool listed = false;

    (void)state;
    assert_int_equal(mx_select(hosts, n, "self.example", script_rand, &s, &listed), 1);
    assert_true(listed);
    assert_string_equal(hosts[0].name, "p.example");
    assert_int_equal(s.next, 0);
}

/* ---- ourselves by address (issue 14) ----------------------------------- */

/* "ip" or "ip#port" into a sockaddr_storage. */
static struct sockaddr_storage
sa(const char *text)
{
    struct sockaddr_storage ss;
    char ip[64];
    const char *hash = strchr(text, '#');
    unsigned port = hash ? (unsigned)atoi(hash + 1) : 25;
    size_t n = hash ? (size_t)(hash - text) : strlen(text);

    memset(&ss, 0, sizeof(ss));
    memcpy(ip, text, n);
    ip[n] = '\0';
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return ss;
}

struct local_case {
    const char *name;
    const char *listen[4];
    const char *probe; /* an MX target address */
    unsigned port;     /* the port forwarding would use */
    bool want;
};

static const char *const ifaces[] = {"127.0.0.1", "192.0.2.7", "::1", "2001:db8::7", NULL};

static const struct local_case local_cases[] = {
    {"listen address itself", {"127.0.0.1#25"}, "127.0.0.1", 25, true},
    {"other port is not us", {"127.0.0.1#2525"}, "127.0.0.1", 25, false},
    {"other address", {"127.0.0.1#25"}, "127.0.0.2", 25, false},
    {"v4 wildcard: an interface address", {"0.0.0.0#25"}, "192.0.2.7", 25, true},
    {"v4 wildcard: not an interface address", {"0.0.0.0#25"}, "192.0.2.8", 25, false},
    {"v4 wildcard takes no v6", {"0.0.0.0#25"}, "2001:db8::7", 25, false},
    {"v6 wildcard: a v6 interface", {"::#25"}, "2001:db8::7", 25, true},
    {"v6 wildcard: dual stack, a v4 interface", {"::#25"}, "192.0.2.7", 25, true},
    {"v4-mapped target", {"192.0.2.7#25"}, "::ffff:192.0.2.7", 25, true},
    {"second listener", {"127.0.0.1#2525", "[::1]#25"}, "::1", 25, true},
    {"no listeners", {NULL}, "127.0.0.1", 25, false},
};

static void
test_local_table(void **state)
{
    struct sockaddr_storage ifs[4], listen[4];
    size_t nifs = 0;

    (void)state;
    for (; ifaces[nifs] != NULL; nifs++)
        ifs[nifs] = sa(ifaces[nifs]);
    for (size_t c = 0; c < sizeof(local_cases) / sizeof(local_cases[0]); c++) {
        const struct local_case *lc = &local_cases[c];
        struct mx_local l;
        struct sockaddr_storage probe = sa(lc->probe);
        size_t n = 0;

        for (; n < 4 && lc->listen[n] != NULL; n++) {
            const char *t = lc->listen[n];
            char buf[64];

            /* "[::1]#25": the brackets are the test's notation only */
            if (t[0] == '[') {
                snprintf(buf, sizeof(buf), "%.*s%s", (int)(strchr(t, ']') - t - 1), t + 1,
                         strchr(t, ']') + 1);
                t = buf;
            }
            listen[n] = sa(t);
        }
        mx_local_set(&l, listen, n, ifs, nifs);
        print_message("%s\n", lc->name);
        assert_int_equal(mx_local_has(&l, (struct sockaddr *)&probe, (uint16_t)lc->port), lc->want);
        mx_local_free(&l);
    }
}

static void
test_cut_self(void **state)
{
    static const unsigned prefs[] = {5, 5, 10, 10, 20};
    bool none[5] = {false, false, false, false, false};
    bool at10[5] = {false, false, false, true, false};
    bool at5[5] = {false, true, false, false, false};
    bool at20[5] = {false, false, false, false, true};

    (void)state;
    assert_int_equal(mx_cut_self(prefs, none, 5), 5);
    /* us at 10: only the 5s (the other 10 is not strictly better) */
    assert_int_equal(mx_cut_self(prefs, at10, 5), 2);
    /* us among the best: nothing, a loop */
    assert_int_equal(mx_cut_self(prefs, at5, 5), 0);
    assert_int_equal(mx_cut_self(prefs, at20, 5), 4);
    assert_int_equal(mx_cut_self(prefs, none, 0), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_table),
        cmocka_unit_test(test_select_shuffle_deterministic),
        cmocka_unit_test(test_select_shuffle_covers_all),
        cmocka_unit_test(test_select_shuffle_only_kept),
        cmocka_unit_test(test_local_table),
        cmocka_unit_test(test_cut_self),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
