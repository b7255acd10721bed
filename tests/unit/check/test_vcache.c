/* Unit tests for vcache: the callahead answer cache (expiry, stale use
 * while the primary is down, replacement, case, the size bound). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "check/vcache.h"

static void
test_vcache_expiry(void **state)
{
    struct vcache *c = vcache_new(100);

    (void)state;
    assert_int_equal(vcache_get(c, "a@example.org", 0, false), -1);
    vcache_put(c, "a@example.org", true, 1000, 500);
    vcache_put(c, "b@example.org", false, 1000, 200);
    assert_int_equal(vcache_get(c, "a@example.org", 1000, false), 1);
    assert_int_equal(vcache_get(c, "a@example.org", 1499, false), 1);
    assert_int_equal(vcache_get(c, "a@example.org", 1500, false), -1); /* expired */
    assert_int_equal(vcache_get(c, "b@example.org", 1199, false), 0);
    assert_int_equal(vcache_get(c, "b@example.org", 1200, false), -1);
    /* While the primary is down an expired answer still decides. */
    assert_int_equal(vcache_get(c, "a@example.org", 99999, true), 1);
    assert_int_equal(vcache_get(c, "b@example.org", 99999, true), 0);
    assert_int_equal(vcache_get(c, "c@example.org", 99999, true), -1);
    vcache_free(c);
}

static void
test_vcache_replace_and_case(void **state)
{
    struct vcache *c = vcache_new(100);

    (void)state;
    vcache_put(c, "User@Example.ORG", false, 0, 1000);
    assert_int_equal(vcache_get(c, "user@example.org", 10, false), 0);
    vcache_put(c, "user@example.org", true, 10, 1000); /* a newer answer wins */
    assert_int_equal(vcache_get(c, "USER@example.org", 20, false), 1);
    assert_int_equal(vcache_size(c), 1);
    vcache_free(c);
}

static void
test_vcache_bounded(void **state)
{
    struct vcache *c = vcache_new(3);
    char addr[32];

    (void)state;
    for (int i = 0; i < 10; i++) {
        snprintf(addr, sizeof(addr), "u%d@example.org", i);
        vcache_put(c, addr, true, 0, 1000);
        assert_true(vcache_size(c) <= 3);
    }
    assert_int_equal(vcache_get(c, "u9@example.org", 1, false), 1); /* the newest stays */
    vcache_free(c);
    vcache_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vcache_expiry),
        cmocka_unit_test(test_vcache_replace_and_case),
        cmocka_unit_test(test_vcache_bounded),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
