/* Unit tests for clru.c: the bounded per-client table: insert and find
 * (peek leaves the order alone, get and put make the most recent), the
 * order of use, eviction past max (the oldest goes, its place comes back
 * zeroed), a chain of keys whose hashes collide (found with a fixed seed),
 * drop, and freeing a full table. */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/clru.h"
#include "base/iptab.h"

struct tv {
    struct clru_entry h;
    uint64_t v;
};

static void
key4(uint32_t ip, unsigned char key[IPTAB_KEY_LEN])
{
    struct sockaddr_in sin = {.sin_family = AF_INET};

    sin.sin_addr.s_addr = htonl(ip);
    iptab_key((const struct sockaddr *)&sin, 64, key);
}

static struct tv *
put(struct clru *t, uint32_t ip, bool want_added)
{
    unsigned char k[IPTAB_KEY_LEN];
    bool added = !want_added;
    struct tv *e;

    key4(ip, k);
    e = (struct tv *)clru_put(t, k, &added);
    assert_non_null(e);
    assert_int_equal(added, want_added);
    assert_memory_equal(e->h.key, k, IPTAB_KEY_LEN);
    return e;
}

static struct tv *
peek(const struct clru *t, uint32_t ip)
{
    unsigned char k[IPTAB_KEY_LEN];

    key4(ip, k);
    return (struct tv *)clru_peek(t, k);
}

/* The values (v) from the least to the most recently used, walking the
 * list both ways: "" when empty. */
static void
assert_order(const struct clru *t, const char *want)
{
    char fwd[64] = "", back[64] = "";
    const struct clru_entry *e, *last = NULL;
    size_t n = 0;

    for (e = clru_oldest(t); e != NULL; e = e->prev, n++) {
        snprintf(fwd + strlen(fwd), sizeof(fwd) - strlen(fwd), "%llu",
                 (unsigned long long)((const struct tv *)e)->v);
        last = e;
    }
    for (e = last; e != NULL; e = e->next)
        snprintf(back + strlen(back), sizeof(back) - strlen(back), "%llu",
                 (unsigned long long)((const struct tv *)e)->v);
    assert_string_equal(fwd, want);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(back[i], fwd[n - 1 - i]);
    assert_int_equal(n, clru_size(t));
}

static void
test_clru_insert_find(void **state)
{
    struct clru *t = clru_new(4, sizeof(struct tv), 42);
    unsigned char k[IPTAB_KEY_LEN];
    struct tv *a, *b;

    (void)state;
    assert_null(peek(t, 0xc0000201));
    key4(0xc0000201, k);
    assert_null(clru_get(t, k));
    assert_null(clru_oldest(t));
    assert_int_equal(clru_size(t), 0);
    a = put(t, 0xc0000201, true);
    assert_int_equal(a->v, 0); /* zeroed past the header */
    a->v = 1;
    b = put(t, 0xc0000202, true);
    b->v = 2;
    assert_ptr_equal(put(t, 0xc0000201, false), a); /* the same entry, kept */
    assert_int_equal(a->v, 1);
    assert_ptr_equal(peek(t, 0xc0000202), b);
    assert_ptr_equal(clru_get(t, k), &a->h);
    assert_ptr_equal(clru_put(t, k, NULL), &a->h); /* added may be NULL */
    assert_int_equal(clru_size(t), 2);
    clru_free(t);
    clru_free(NULL);
}

static void
test_clru_order(void **state)
{
    struct clru *t = clru_new(8, sizeof(struct tv), 1);
    unsigned char k[IPTAB_KEY_LEN];

    (void)state;
    for (uint32_t i = 1; i <= 4; i++)
        put(t, i, true)->v = i;
    assert_order(t, "1234");
    /* peek changes nothing */
    assert_non_null(peek(t, 1));
    assert_order(t, "1234");
    /* get: the most recent */
    key4(2, k);
    assert_non_null(clru_get(t, k));
    assert_order(t, "1342");
    /* put of a known key too, the newest and the oldest alike */
    put(t, 2, false);
    assert_order(t, "1342");
    put(t, 1, false);
    assert_order(t, "3421");
    /* drop: from the middle, the oldest, the newest */
    clru_drop(t, &peek(t, 4)->h);
    assert_order(t, "321");
    clru_drop(t, clru_oldest(t));
    assert_order(t, "21");
    clru_drop(t, &peek(t, 1)->h);
    assert_order(t, "2");
    clru_drop(t, clru_oldest(t));
    assert_order(t, "");
    assert_null(peek(t, 2));
    put(t, 5, true)->v = 5;
    assert_order(t, "5");
    clru_free(t);
}

static void
test_clru_evict(void **state)
{
    struct clru *t = clru_new(3, sizeof(struct tv), 9);
    struct tv *e;
    unsigned char k[IPTAB_KEY_LEN];

    (void)state;
    for (uint32_t i = 1; i <= 3; i++)
        put(t, i, true)->v = i;
    key4(1, k);
    clru_get(t, k); /* 1 is used: 2 is the oldest */
    e = put(t, 4, true);
    assert_int_equal(e->v, 0); /* the evicted entry's place, zeroed */
    e->v = 4;
    assert_null(peek(t, 2));
    assert_order(t, "314");
    put(t, 5, true)->v = 5;
    put(t, 6, true)->v = 6;
    assert_order(t, "456");
    for (uint32_t i = 1; i <= 3; i++)
        assert_null(peek(t, i));
    for (uint32_t i = 4; i <= 6; i++)
        assert_int_equal(peek(t, i)->v, i);
    /* a table of one */
    clru_free(t);
    t = clru_new(1, sizeof(struct tv), 9);
    put(t, 1, true)->v = 1;
    put(t, 2, true)->v = 2;
    assert_order(t, "2");
    assert_null(peek(t, 1));
    clru_free(t); /* frees what is left (LeakSanitizer) */
}

/* Keys of 10.0.0.0/16 in the first slot of a 16-slot table under seed. */
static size_t
colliding(const struct clru *t, uint32_t *ips, size_t want)
{
    unsigned char k[IPTAB_KEY_LEN];
    size_t n = 0;

    for (uint32_t ip = 0x0a000000; ip < 0x0a010000 && n < want; ip++) {
        key4(ip, k);
        if ((clru_hash(t, k) & 15) == 0)
            ips[n++] = ip;
    }
    return n;
}

static void
test_clru_chain(void **state)
{
    /* max 4: 16 slots, so 5 keys of one slot share a chain */
    struct clru *t = clru_new(4, sizeof(struct tv), UINT64_C(0x0123456789abcdef));
    struct clru *other = clru_new(4, sizeof(struct tv), UINT64_C(0xfedcba9876543210));
    uint32_t ip[5];
    unsigned char k[IPTAB_KEY_LEN];
    size_t same = 0;

    (void)state;
    assert_int_equal(colliding(t, ip, 5), 5);
    /* the seed moves them: under another one they do not all collide */
    for (size_t i = 0; i < 5; i++) {
        unsigned char k0[IPTAB_KEY_LEN];

        key4(ip[0], k0);
        key4(ip[i], k);
        same += (clru_hash(other, k) & 15) == (clru_hash(other, k0) & 15);
        assert_true(clru_hash(other, k) != clru_hash(t, k));
    }
    assert_true(same < 5);
    for (size_t i = 0; i < 4; i++)
        put(t, ip[i], true)->v = i + 1;
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(peek(t, ip[i])->v, i + 1);
    /* out of the middle of the chain */
    clru_drop(t, &peek(t, ip[1])->h);
    assert_null(peek(t, ip[1]));
    assert_int_equal(peek(t, ip[0])->v, 1);
    assert_int_equal(peek(t, ip[2])->v, 3);
    assert_int_equal(peek(t, ip[3])->v, 4);
    put(t, ip[1], true)->v = 2;
    assert_order(t, "1342");
    /* eviction within the chain: the oldest (ip[0]) leaves it, ip[4] joins */
    put(t, ip[4], true)->v = 5;
    assert_null(peek(t, ip[0]));
    assert_order(t, "3425");
    for (size_t i = 1; i < 5; i++)
        assert_int_equal(peek(t, ip[i])->v, i + 1);
    key4(ip[2], k);
    assert_int_equal(((struct tv *)clru_get(t, k))->v, 3);
    assert_order(t, "4253");
    clru_free(other);
    clru_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clru_insert_find),
        cmocka_unit_test(test_clru_order),
        cmocka_unit_test(test_clru_evict),
        cmocka_unit_test(test_clru_chain),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
