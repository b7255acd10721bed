/* sts_policy: MTA-STS (RFC 8461) records and policies, pure (text in,
 * struct out; no I/O, no clock). */
#ifndef MXD_STS_POLICY_H
#define MXD_STS_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

#define STS_POLICY_MAX  65536    /* RFC 8461 3.3: a policy body is at most 64 KiB */
#define STS_MX_MAX      32       /* mx patterns kept; a policy with more is refused */
#define STS_NAME_MAX    254      /* a domain name, NUL included, no trailing dot */
#define STS_ID_MAX      32       /* RFC 8461 3.1: id = 1*32(ALPHA / DIGIT) */
#define STS_MAX_AGE_MAX 31557600 /* RFC 8461 3.2: at most a year */
#define STS_WHY_MAX     200

#define STS_MODES(X)        X(NONE, "none") X(TESTING, "testing") X(ENFORCE, "enforce")
#define STS_MODE_ENUM(e, s) STS_MODE_##e,
enum sts_mode { STS_MODES(STS_MODE_ENUM) };
#undef STS_MODE_ENUM
const char *sts_mode_name(enum sts_mode m);

struct sts_policy {
    enum sts_mode mode;
    uint32_t max_age; /* seconds, capped at STS_MAX_AGE_MAX */
    size_t nmx;
    char mx[STS_MX_MAX][STS_NAME_MAX]; /* lower case, "*.example.com" or "mx.example.com" */
};

/*
 * Parses the TXT record at _mta-sts.<domain> (RFC 8461 3.1), txt[0..len)
 * its strings joined. Returns 1 with id (STS_ID_MAX + 1 octets) set for a
 * valid STSv1 record, 0 for a record that does not start with "v=STSv1;"
 * (not ours: ignored), -1 for an STSv1 record that is malformed (why set).
 */
int sts_txt_parse(const char *txt, size_t len, char *id, char *why, size_t why_size);

/*
 * Parses a policy body (RFC 8461 3.2), text[0..len) (lines end in LF or
 * CRLF). 0 with *p filled, or MXD_EINVAL with why naming the line and
 * what is wrong with it ("line 3: mode: unknown value \"strict\""); a
 * body over STS_POLICY_MAX is refused. Unknown keys are ignored; of a key
 * other than mx given twice, the first counts (RFC 8461 3.2).
 */
int sts_policy_parse(const char *text, size_t len, struct sts_policy *p, char *why,
                     size_t why_size) MXD_WUR;

/* True when host (an MX host name; case and a trailing dot ignored)
 * matches one of p's mx patterns (RFC 8461 4.1: "*." matches exactly one
 * leftmost label). */
bool sts_policy_match(const struct sts_policy *p, const char *host);

#endif
