/* qid: queue ids, unique per message, sortable by time. */
#ifndef MXD_QID_H
#define MXD_QID_H

#include <stdint.h>

#define QID_LEN 13 /* characters, without the NUL */

struct qid_gen {
    uint64_t counter;
};

/* Seeds the generator (from the kernel's random source). */
void qid_init(struct qid_gen *g);
/* Writes a new id ("0JF4Q2ZK8X1MC": 9 Crockford base32 digits of
 * milliseconds, 4 of a counter) into out[QID_LEN + 1]. now_ms is the time. */
void qid_next(struct qid_gen *g, uint64_t now_ms, char *out);

#endif
