/* Fuzz target: the MTA-STS (RFC 8461) parsers (sts_policy) fed arbitrary
 * bytes as a TXT record and as a policy body. Checks: an accepted id is 1
 * to 32 letters and digits; an accepted policy has a known mode, a capped
 * max_age, mx patterns (required unless mode none) that are lower-case
 * host names with at most a leading "*.", each matching a host made from
 * it; a refusal always says why. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "deliver/sts_policy.h"
#include "fuzz.h"

static void
pattern_props(const struct sts_policy *p, const char *pat)
{
    char host[STS_NAME_MAX + 8];
    size_t n = strlen(pat);

    check(n > 0 && n < STS_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];

        check((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
              (c == '*' && i == 0));
    }
    snprintf(host, sizeof(host), "%s%s", pat[0] == '*' ? "x" : "", pat[0] == '*' ? pat + 1 : pat);
    check(sts_policy_match(p, host));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char id[STS_ID_MAX + 1], why[STS_WHY_MAX];
    struct sts_policy p;
    int rc;

    why[0] = '\0';
    rc = sts_txt_parse(s, size, id, why, sizeof(why));
    check(rc >= -1 && rc <= 1);
    if (rc == 1) {
        check(strlen(id) >= 1 && strlen(id) <= STS_ID_MAX);
    } else if (rc == -1) {
        check(why[0] != '\0' && strlen(why) < sizeof(why));
    }
    why[0] = '\0';
    if (sts_policy_parse(s, size, &p, why, sizeof(why)) != 0) {
        check(why[0] != '\0');
        return 0;
    }
    check(p.mode <= STS_MODE_ENFORCE && p.max_age <= STS_MAX_AGE_MAX);
    check(p.nmx <= STS_MX_MAX && (p.mode == STS_MODE_NONE || p.nmx > 0));
    for (size_t i = 0; i < p.nmx; i++)
        pattern_props(&p, p.mx[i]);
    return 0;
}
