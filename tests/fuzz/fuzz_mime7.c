/* Fuzz target: the 8-bit to 7-bit converter (mime7) fed the same message
 * whole and in pieces of an input-chosen size. Checks: the outcome and the
 * output do not depend on the pieces (delivery sizes BDAT from a first
 * pass); a converted message is 7-bit; a message without 8-bit octets
 * always converts; the header scan agrees fed whole and octet by octet. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/mime7_out.h"
#include "fuzz.h"
#include "msg/mime7.h"

static int
run(const char *in, size_t len, size_t step, struct m7out *o)
{
    const char *err;
    bool saw8;
    int rc = m7out_convert(in, len, step, o, &err, &saw8);

    check(saw8 == mime7_has_8bit(in, len));
    return rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct m7out a = {0}, b = {0};
    struct mime7_hscan whole = {0}, bytes = {0};
    const char *in = (const char *)data + 1;
    size_t len;
    int ra, rb;

    if (size < 1)
        return 0;
    len = size - 1;
    ra = run(in, len, 0, &a);
    rb = run(in, len, (size_t)data[0] % 17 + 1, &b);
    check(ra == rb);
    if (ra == 0) {
        check(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
        check(!mime7_has_8bit(a.data, a.len));
    }
    if (!mime7_has_8bit(in, len))
        check(ra == 0);
    mime7_hscan_feed(&whole, in, len);
    for (size_t i = 0; i < len; i++)
        mime7_hscan_feed(&bytes, in + i, 1);
    check(whole.eight == bytes.eight && whole.done == bytes.done);
    free(a.data);
    free(b.data);
    return 0;
}
