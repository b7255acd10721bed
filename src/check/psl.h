/* psl: the public suffix list (publicsuffix.org's format and algorithm),
 * for the organizational domain of RFC 7489 3.2. Pure. */
#ifndef MXD_PSL_H
#define MXD_PSL_H

#include <stddef.h>

struct psl;

/* The rules of a list in the .dat format (len octets: comments, blank
 * lines, "*." wildcards, "!" exceptions; both sections). Caller frees;
 * never NULL (an empty list has only the default rule "*"). */
struct psl *psl_new(const char *data, size_t len);
void psl_free(struct psl *p);

/*
 * The registrable domain of name (lower-case labels as the list writes
 * them: ASCII or UTF-8 U-labels, no trailing dot) into out: the public
 * suffix and one label more. 0, or MXD_ENOENT when name is a public
 * suffix, empty or has an empty label.
 */
int psl_org_domain(const struct psl *p, const char *name, char *out, size_t size);

#endif
