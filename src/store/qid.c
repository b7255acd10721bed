/* qid: owns nothing but the counter in struct qid_gen (one per server, loop
 * thread). Ids are 45 bits of milliseconds and 20 bits of a counter seeded
 * at random, so ids from one process never repeat and ids of a restarted
 * process differ by time; the database's UNIQUE constraint is the backstop
 * (a clash fails that commit with 451, it never overwrites). */
#include "store/qid.h"

#include <sys/random.h>

#include <string.h>

static const char qid_digits[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; /* Crockford */

void
qid_init(struct qid_gen *g)
{
    uint64_t seed = 0;

    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = (uint64_t)(uintptr_t)g;
    g->counter = seed;
}

void
qid_next(struct qid_gen *g, uint64_t now_ms, char *out)
{
    uint64_t c = g->counter++;

    for (int i = 8; i >= 0; i--) {
        out[i] = qid_digits[now_ms & 31];
        now_ms >>= 5;
    }
    for (int i = 12; i >= 9; i--) {
        out[i] = qid_digits[c & 31];
        c >>= 5;
    }
    out[QID_LEN] = '\0';
}
