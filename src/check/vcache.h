/* vcache: the recipient-verification (callahead) answer cache: address ->
 * accepted or refused, with an expiry. Pure: the time is passed in. */
#ifndef MXD_VCACHE_H
#define MXD_VCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vcache;

/* At most max entries; when full the cache is emptied (only repeated
 * questions are lost). Caller frees. */
struct vcache *vcache_new(size_t max);
void vcache_free(struct vcache *c);

/* The answer for address (ASCII case-insensitive): 1 accepted, 0 refused,
 * -1 unknown or expired at now_ms. *fresh (may be NULL): the answer is
 * still fresh at now_ms (else it is only good while the server cannot be
 * asked again). */
int vcache_get(const struct vcache *c, const char *address, uint64_t now_ms, bool *fresh);

/* Records an answer, fresh until fresh_until_ms and kept until expires_ms,
 * replacing an older one. */
void vcache_put(struct vcache *c, const char *address, bool ok, uint64_t fresh_until_ms,
                uint64_t expires_ms);

size_t vcache_size(const struct vcache *c);

#endif
