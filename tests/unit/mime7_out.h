/* mime7_out: a growing buffer that collects a mime7 converter's output,
 * shared by test_mime7 and the fuzz target fuzz_mime7 (static helpers for
 * one program). An empty emit or no memory aborts. */
#ifndef MXD_TEST_MIME7_OUT_H
#define MXD_TEST_MIME7_OUT_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "msg/mime7.h"

struct m7out {
    char *data; /* NUL-terminated once anything was collected */
    size_t len, cap;
};

static void
m7out_collect(void *arg, const char *data, size_t len)
{
    struct m7out *o = arg;

    if (len == 0)
        abort();
    if (o->len + len + 1 > o->cap) {
        o->cap = 2 * (o->len + len + 1);
        o->data = realloc(o->data, o->cap);
        if (o->data == NULL)
            abort();
    }
    memcpy(o->data + o->len, data, len);
    o->len += len;
    o->data[o->len] = '\0';
}

/* Converts in[0..len) fed in pieces of step octets (0: whole) into *o
 * (o->data is never NULL after). Returns mime7_finish's result, with the
 * error and whether 8-bit octets were seen. Aborts when the result and the
 * error disagree. */
static int
m7out_convert(const char *in, size_t len, size_t step, struct m7out *o, const char **err,
              bool *saw8)
{
    struct mime7 *m = mime7_new(m7out_collect, o);
    size_t pos = 0;
    int rc;

    while (pos < len) {
        size_t n = step == 0 || len - pos < step ? len - pos : step;

        mime7_feed(m, in + pos, n);
        pos += n;
    }
    rc = mime7_finish(m);
    *err = mime7_error(m);
    *saw8 = mime7_saw_8bit(m);
    mime7_free(m);
    if ((rc == 0) != (*err == NULL))
        abort();
    if (o->data == NULL) {
        o->data = calloc(1, 1);
        if (o->data == NULL)
            abort();
    }
    return rc;
}

#endif
