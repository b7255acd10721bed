/* pregreet: the arithmetic of the pre-greet test (check_pregreet.c). Pure:
 * the load is passed in. */
#ifndef MXD_PREGREET_H
#define MXD_PREGREET_H

#include <stddef.h>
#include <stdint.h>

/* Where the wait shrinks, in tenths of max_connections: postscreen's
 * stress thresholds (it enters stress at 90% of its queue limit and
 * leaves it at 70%). */
#define PREGREET_LOAD_LOW  7
#define PREGREET_LOAD_HIGH 9

/* The pre-greet wait of a new connection when open connections are open
 * (this one included) of at most max: wait_ms up to 70% of max, stress_ms
 * from 90% on, and in between a straight line from one to the other, so
 * the wait shrinks as the load grows, with no step to flap around.
 * stress_ms above wait_ms counts as wait_ms; max 0 as no load. */
uint64_t pregreet_wait_ms(uint64_t wait_ms, uint64_t stress_ms, size_t open, size_t max);

#endif
