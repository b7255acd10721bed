/* fuzz: what every libFuzzer target here shares: the entry point's
 * prototype and check(), which aborts (a crash libFuzzer reports, with the
 * input) when a property of the module under test does not hold. */
#ifndef MXD_FUZZ_H
#define MXD_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline void
check(bool ok)
{
    if (!ok)
        abort();
}

#endif
