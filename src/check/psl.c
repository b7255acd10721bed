/* psl: the public suffix list's rules, and its algorithm
 * (https://publicsuffix.org/list/, "Formal algorithm"): the rule that
 * matches the most labels prevails, an exception rule ("!") prevails over
 * all and its suffix is the rule without its leftmost label, a wildcard
 * ("*.") matches any one label, and with no match the default rule "*"
 * (the top label) applies.
 *
 * libopendmarc 1.4's opendmarc_get_tld does not implement wildcards,
 * exceptions, the default rule or the private section (c.kobe.jp,
 * city.kobe.jp, example.example, uk.com): dmarc.c uses this instead.
 *
 * Owns the rules (one sorted array of strings in one pool). Pure: any
 * thread once built; lookups do not change it. */
#include "check/psl.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct psl {
    char *pool;
    char **rules; /* sorted: "x.y", "*.y" and "!x.y" as the list writes them */
    size_t n;
};

static int
rule_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool
space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

struct psl *
psl_new(const char *data, size_t len)
{
    struct psl *p = xcalloc(1, sizeof(*p));
    size_t cap = 0, used = 0;

    p->pool = xmalloc(len + 1);
    for (size_t i = 0; i < len;) {
        size_t start = i, end;

        while (i < len && data[i] != '\n')
            i++;
        end = i++;
        /* the rule is the line's first word; "//" starts a comment */
        while (start < end && space(data[start]))
            start++;
        if (end - start >= 2 && data[start] == '/' && data[start + 1] == '/')
            continue;
        for (size_t j = start; j < end; j++) {
            if (space(data[j]) || data[j] == '\0') {
                end = j;
                break;
            }
        }
        if (end == start)
            continue;
        if (p->n == cap) {
            cap = cap ? cap * 2 : 1024;
            p->rules = xrealloc(p->rules, cap * sizeof(*p->rules));
        }
        p->rules[p->n++] = p->pool + used;
        for (size_t j = start; j < end; j++) {
            char c = data[j];

            p->pool[used++] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
        }
        p->pool[used++] = '\0';
    }
    if (p->n > 0)
        qsort(p->rules, p->n, sizeof(*p->rules), rule_cmp);
    return p;
}

void
psl_free(struct psl *p)
{
    if (p == NULL)
        return;
    free(p->rules);
    free(p->pool);
    free(p);
}

static bool
has(const struct psl *p, const char *prefix, const char *name)
{
    char key[300];
    const char *k = key;
    size_t pl = strlen(prefix), nl = strlen(name);

    if (pl + nl >= sizeof(key))
        return false;
    memcpy(key, prefix, pl);
    memcpy(key + pl, name, nl + 1);
    return p->n > 0 && bsearch(&k, p->rules, p->n, sizeof(*p->rules), rule_cmp) != NULL;
}

int
psl_org_domain(const struct psl *p, const char *name, char *out, size_t size)
{
    const char *suffix = NULL, *prev, *s;
    size_t len = strlen(name);

    if (len == 0 || len > 253 || name[0] == '.' || name[len - 1] == '.' ||
        strstr(name, "..") != NULL)
        return MXD_ENOENT;
    /* from the whole name down to the top label: the first (longest)
     * match prevails; at one length an exception first */
    for (s = name; s != NULL; s = strchr(s, '.'), s = s != NULL ? s + 1 : NULL) {
        const char *rest = strchr(s, '.');

        if (has(p, "!", s)) {
            suffix = rest != NULL ? rest + 1 : NULL;
            break;
        }
        if (has(p, "", s) || (rest != NULL && has(p, "*.", rest + 1))) {
            suffix = s;
            break;
        }
    }
    if (s == NULL) { /* no rule: "*", the top label */
        suffix = strrchr(name, '.');
        suffix = suffix != NULL ? suffix + 1 : name;
    }
    if (suffix == NULL || suffix == name)
        return MXD_ENOENT; /* the name is a public suffix */
    /* one label more: the label before suffix */
    for (s = name, prev = name; s < suffix - 1; s++) {
        if (*s == '.')
            prev = s + 1;
    }
    if (strlen(prev) >= size)
        return MXD_ENOENT;
    memcpy(out, prev, strlen(prev) + 1);
    return 0;
}
