/* Fuzz target: the DMARC record check (dmarc_record.c) and the public
 * suffix list (psl.c) fed any octets. Checks: a string that is not a
 * DMARC record is never parsed as one; a parsed record formats into a
 * record that parses to the same policy; the input read as a suffix list
 * builds, and every line of it looked up as a name gives a registrable
 * domain that ends the name and is no longer than it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check/dmarc_record.h"
#include "check/psl.h"
#include "fuzz.h"

static void
record(const char *in, size_t len)
{
    struct dmarc_record r, again;
    const char *why = NULL;
    char buf[128];

    if (dmarc_record_parse(in, len, &r, &why) != 0) {
        check(why != NULL);
        return;
    }
    check(dmarc_record_is_dmarc(in, len) && r.pct <= 100 && r.p != DMARC_P_UNSET);
    dmarc_record_format(&r, buf, sizeof(buf));
    check(dmarc_record_parse(buf, strlen(buf), &again, &why) == 0);
    check(again.p == r.p && again.sp == r.sp && again.adkim_strict == r.adkim_strict &&
          again.aspf_strict == r.aspf_strict);
}

static void
suffixes(const char *in, size_t len)
{
    struct psl *p = psl_new(in, len);
    char name[300], out[256];

    for (size_t i = 0; i < len;) {
        size_t j = i;

        while (j < len && in[j] != '\n')
            j++;
        if (j - i < sizeof(name) && memchr(in + i, '\0', j - i) == NULL) {
            memcpy(name, in + i, j - i);
            name[j - i] = '\0';
            if (psl_org_domain(p, name, out, sizeof(out)) == 0) {
                size_t n = strlen(name), o = strlen(out);

                check(o > 0 && o <= n && strcmp(name + n - o, out) == 0);
            }
        }
        i = j + 1;
    }
    psl_free(p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    record((const char *)data, size);
    suffixes((const char *)data, size);
    return 0;
}
