/* Fuzz target: DATA framing (dotstuff_next) fed the same input whole and
 * split at an input-chosen point. Checks: content spans lie inside the
 * input, output never exceeds input, and the content, end position and
 * bare CR/LF flag do not depend on the split. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "smtp/dotstuff.h"

struct result {
    char *out;
    size_t olen;
    size_t end; /* offset just past <CRLF>.<CRLF>, or SIZE_MAX */
    bool bare;
};

/* Feeds in[0..len) in pieces of at most step octets (0: whole). */
static void
run(const char *in, size_t len, size_t step, struct result *r)
{
    struct dotstuff d;
    size_t pos = 0;

    dotstuff_init(&d);
    r->olen = 0;
    r->end = SIZE_MAX;
    while (pos < len) {
        size_t piece = step == 0 || len - pos < step ? len - pos : step, used = 0;
        const char *out = NULL;
        size_t outlen = 0;
        enum dotstuff_result res = dotstuff_next(&d, in + pos, piece, &used, &out, &outlen);

        check(used <= piece);
        if (res == DOTSTUFF_SPAN) {
            check(out >= in + pos && out + outlen <= in + pos + piece);
            memcpy(r->out + r->olen, out, outlen);
            r->olen += outlen;
            check(r->olen <= len);
        } else if (res == DOTSTUFF_END) {
            r->end = pos + used;
            pos += used;
            break;
        } else {
            check(used == piece);
        }
        check(used > 0);
        pos += used;
    }
    r->bare = d.bare;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct result a, b;
    size_t step;

    if (size < 1)
        return 0;
    step = data[0] % 9;
    a.out = malloc(size);
    b.out = malloc(size);
    run((const char *)data + 1, size - 1, 0, &a);
    run((const char *)data + 1, size - 1, step, &b);
    check(a.olen == b.olen && memcmp(a.out, b.out, a.olen) == 0);
    check(a.end == b.end && a.bare == b.bare);
    free(a.out);
    free(b.out);
    return 0;
}
