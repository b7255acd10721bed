/* dmarc_record: a DMARC policy record checked by RFC 7489 6.3 and 6.4,
 * and the policy it asks for (6.6.3, 6.6.4). Pure. */
#ifndef MXD_DMARC_RECORD_H
#define MXD_DMARC_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#define DMARC_POLICIES(X)                                                                          \
    X(UNSET, "") X(NONE, "none") X(QUARANTINE, "quarantine") X(REJECT, "reject")
#define DMARC_P_ENUM(e, s) DMARC_P_##e,
enum dmarc_policy { DMARC_POLICIES(DMARC_P_ENUM) };
#undef DMARC_P_ENUM
const char *dmarc_policy_name(enum dmarc_policy p);

struct dmarc_record {
    enum dmarc_policy p;
    enum dmarc_policy sp; /* UNSET: p applies to subdomains too */
    bool adkim_strict, aspf_strict;
    unsigned pct; /* 0 to 100 */
    bool rua;     /* a syntactically valid rua= URI */
};

/* RFC 7489 6.6.3 step 5: true when the TXT string (len octets, NULs
 * included) starts with the v=DMARC1 version tag; others are discarded. */
bool dmarc_record_is_dmarc(const char *txt, size_t len);

/*
 * Parses a TXT string that dmarc_record_is_dmarc accepted into *out: 0, or
 * MXD_EINVAL when it asks for no DMARC processing (6.6.3 step 6: no valid
 * p= or an invalid sp=, and no valid rua=; why says which). With a rua=,
 * an invalid p= reads as p=none (step 6.1). Unknown tags are ignored (6.3),
 * an invalid adkim=, aspf= or pct= value is taken as the tag's absence.
 */
int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out, const char **why);

/* The record in the form libopendmarc is handed ("v=DMARC1; p=...; ..."):
 * only the tags it decides with, each valid. */
void dmarc_record_format(const struct dmarc_record *r, char *buf, size_t size);

/*
 * The policy to apply to a message that fails (RFC 7489 6.6.4): sp= for
 * a From: domain below the organizational domain whose record it is
 * (subdomain true), else p=; when the message is outside the pct= sample
 * (sample, 0 to 99, not below pct), the next policy down: reject becomes
 * quarantine, quarantine none.
 */
enum dmarc_policy dmarc_record_policy(const struct dmarc_record *r, bool subdomain,
                                      unsigned sample);

#endif
