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
    bool fresh = true;

    (void)state;
    assert_int_equal(vcache_get(c, "a@example.org", 0, &fresh), -1);
    assert_false(fresh);
    vcache_put(c, "a@example.org", true, 1500, 1500);
    vcache_put(c, "b@example.org", false, 1200, 1200);
    assert_int_equal(vcache_get(c, "a@example.org", 1000, NULL), 1);
    assert_int_equal(vcache_get(c, "a@example.org", 1499, &fresh), 1);
    assert_true(fresh);
    assert_int_equal(vcache_get(c, "a@example.org", 1500, NULL), -1); /* expired */
    assert_int_equal(vcache_get(c, "b@example.org", 1199, NULL), 0);
    assert_int_equal(vcache_get(c, "b@example.org", 1200, NULL), -1);
    /* fresh until 2000, then kept (stale) until 9000: a primary that
     * cannot be asked is answered from it */
    vcache_put(c, "c@example.org", true, 2000, 9000);
    assert_int_equal(vcache_get(c, "c@example.org", 1999, &fresh), 1);
    assert_true(fresh);
    assert_int_equal(vcache_get(c, "c@example.org", 2000, &fresh), 1);
    assert_false(fresh);
    assert_int_equal(vcache_get(c, "c@example.org", 9000, &fresh), -1);
    assert_false(fresh);
    /* fresh never outlives the entry */
    vcache_put(c, "d@example.org", false, 5000, 3000);
    assert_int_equal(vcache_get(c, "d@example.org", 3000, &fresh), -1);
    vcache_free(c);
}

static void
test_vcache_replace_and_case(void **state)
{
    struct vcache *c = vcache_new(100);

    (void)state;
    vcache_put(c, "User@Example.ORG", false, 1000, 1000);
    assert_int_equal(vcache_get(c, "user@example.org", 10, NULL), 0);
    vcache_put(c, "user@example.org", true, 1010, 1010); /* a newer answer wins */
    assert_int_equal(vcache_get(c, "USER@example.org", 20, NULL), 1);
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
        vcache_put(c, addr, true, 1000, 1000);
        assert_true(vcache_size(c) <= 3);
    }
    assert_int_equal(vcache_get(c, "u9@example.org", 1, NULL), 1); /* the newest stays */
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
