/* Fuzz target: the SPF record check and rewrite (spf_record.c) fed any
 * octets, as a TXT string. Checks: a string that is not an SPF record is
 * never valid; an invalid record has a reason and is never rewritten; a
 * valid one is rewritten for both families into a valid record of
 * printable ASCII with no unknown modifier left, which rewrites to itself
 * (the rewrite is complete in one pass); a short buffer is refused or
 * holds a NUL-ended record that fits. */
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check/spf_record.h"
#include "fuzz.h"

static void
check_rewrite(const char *in, size_t len, int family, size_t small)
{
    size_t size = 16 * len + 64;
    char *out = malloc(size), *again = malloc(size), *tight = malloc(small + 1);
    const char *why = NULL;
    int n, m;

    check(out != NULL && again != NULL && tight != NULL);
    n = spf_record_rewrite(in, len, family, out, size);
    check(n > 0 && (size_t)n < size && strlen(out) == (size_t)n);
    for (int i = 0; i < n; i++)
        check(out[i] >= 0x20 && out[i] < 0x7f);
    check(spf_record_is_spf(out, (size_t)n) && strncmp(out, "v=spf1", 6) == 0);
    check(spf_record_check(out, (size_t)n, &why) == 0);
    m = spf_record_rewrite(out, (size_t)n, family, again, size);
    check(m == n && memcmp(out, again, (size_t)n + 1) == 0);
    m = spf_record_rewrite(in, len, family, tight, small);
    check(m == MXD_ETOOBIG || (m == n && (size_t)m < small && strcmp(tight, out) == 0));
    free(out);
    free(again);
    free(tight);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *why = NULL;
    char buf[8];
    int rc = spf_record_check(in, size, &why);

    check(rc == 0 || rc == MXD_EINVAL);
    check(rc == 0 || why != NULL);
    check(rc != 0 || spf_record_is_spf(in, size));
    if (rc != 0) {
        check(spf_record_rewrite(in, size, AF_INET, buf, sizeof(buf)) == MXD_EINVAL);
        return 0;
    }
    check_rewrite(in, size, AF_INET, size > 0 ? data[0] : 0);
    check_rewrite(in, size, AF_INET6, size > 1 ? data[1] : 0);
    return 0;
}
