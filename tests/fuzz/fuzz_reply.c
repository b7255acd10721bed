/* Fuzz target: the SMTP/LMTP reply parser (reply_parse) fed a server byte
 * stream whole and one octet at a time; plus reply_has_keyword and
 * reply_summary on each reply. Checks: codes in 200..599, text
 * NUL-terminated, the same replies whatever the split. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/reply.h"
#include "fuzz.h"

/* Returns a digest of the replies parsed (codes and text lengths) and
 * whether the stream ended in an error. */
static uint64_t
run(const char *in, size_t len, size_t step, bool *error)
{
    static struct reply_parser rp;
    static struct reply r;
    uint64_t digest = 1469598103934665603ull;
    size_t pos = 0;

    reply_parser_init(&rp);
    *error = false;
    while (pos < len) {
        size_t piece = step == 0 || len - pos < step ? len - pos : step, used = 0;
        enum reply_result res = reply_parse(&rp, in + pos, piece, &used, &r);
        char sum[128];
        const char *param = NULL;
        size_t plen = 0;

        check(used <= piece);
        pos += used;
        if (res == REPLY_ERROR) {
            *error = true;
            break;
        }
        if (res == REPLY_NEED) {
            check(used == piece);
            continue;
        }
        check(r.code >= 200 && r.code <= 599);
        check(memchr(r.text, '\0', sizeof(r.text)) != NULL);
        check(memchr(r.enh, '\0', sizeof(r.enh)) != NULL);
        if (reply_has_keyword(&r, "SIZE", &param, &plen))
            check(param >= r.text && param + plen <= r.text + strlen(r.text));
        check(reply_summary(&r, sum, sizeof(sum)) == sum && strlen(sum) < sizeof(sum));
        digest = (digest ^ (uint64_t)r.code ^ (strlen(r.text) << 12) ^ ((uint64_t)r.nlines << 32)) *
                 1099511628211ull;
    }
    return digest;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool e1, e2;
    uint64_t a = run((const char *)data, size, 0, &e1);
    uint64_t b = run((const char *)data, size, 1, &e2);

    check(e1 == e2);
    if (!e1)
        check(a == b);
    return 0;
}
