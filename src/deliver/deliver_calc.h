/* deliver_calc: the scheduler's arithmetic, pure (no loop, no store). */
#ifndef MXD_DELIVER_CALC_H
#define MXD_DELIVER_CALC_H

#include <stdint.h>

/* Seconds to wait before attempt number attempts+1 after a temporary
 * failure: retry_min doubled per earlier attempt, capped at retry_max, plus
 * up to 10% jitter from rand01 (0..1). Pure. */
uint64_t deliver_backoff(unsigned attempts, uint64_t retry_min_s, uint64_t retry_max_s,
                         double rand01);

#endif
