/* dkim_probe: runs mxd's DKIM and DMARC modules (src/check/dkim.c,
 * dmarc.c) on a loop of its own, for the vector and table tests
 * (tests/integration/test_dkim_vectors.py):
 *
 *   dkim_probe verify IPV4:PORT FILE...
 *       verifies each message file (CRLF lines, as mxd gets them after
 *       dot-unstuffing) with the keys served at IPV4:PORT; prints one line
 *       per signature: "FILE<TAB>result<TAB>d<TAB>s<TAB>reason".
 *   dkim_probe orgdomain
 *       for each domain on stdin (one a line), its organizational domain
 *       (RFC 7489 3.2) or "null".
 *   dkim_probe dmarc IPV4:PORT
 *       for each stdin line
 *       "from1[,from2...]<TAB>spf result<TAB>spf domain<TAB>dkim result:d[,...]"
 *       (an empty field is "-"), evaluates DMARC; prints
 *       "verdict<TAB>domain<TAB>policy<TAB>applied<TAB>reject<TAB>why" then
 *       the same for each author, prefixed with "  ".
 * Each message or line gets a resolver of its own (an empty cache). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/dkim.h"
#include "check/dmarc.h"

static bool
server_of(const char *arg, char *out, size_t size)
{
    const char *colon = strrchr(arg, ':');

    if (colon == NULL)
        return false;
    snprintf(out, size, "%.*s@%d", (int)(colon - arg), arg, atoi(colon + 1));
    return true;
}

static void
on_dkim(void *arg, struct dkim_result *r)
{
    const char *file = arg;

    for (size_t i = 0; i < r->nsigs; i++)
        printf("%s\t%s\t%s\t%s\t%s\n", file, dkim_res_name(r->sigs[i].res), r->sigs[i].domain,
               r->sigs[i].selector, r->sigs[i].why);
    if (r->nsigs == 0)
        printf("%s\tnone\t\t\t\n", file);
    fflush(stdout);
}

static int
verify_file(uv_loop_t *loop, const char *server, const char *file)
{
    const char *servers[1] = {server};
    char buf[997]; /* an odd size: pieces end anywhere, as reads do */
    FILE *f = fopen(file, "rb");
    struct dkim_verifier *v = dkim_verifier_new(4);
    struct dkim_result out;
    struct resolver *res;
    size_t n;

    if (f == NULL) {
        perror(file);
        dkim_verifier_free(v);
        return 1;
    }
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        dkim_verifier_feed(v, buf, n);
    fclose(f);
    res = resolver_new(loop, servers, 1);
    dkim_verifier_finish_async(v, loop, res, uv_hrtime() + 3000000000ull, &out, on_dkim,
                               (void *)(uintptr_t)file);
    if (uv_run(loop, UV_RUN_DEFAULT) != 0)
        return 1;
    dkim_verifier_free(v);
    resolver_free(res);
    (void)uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}

static void
field(char *dst, size_t size, char **p)
{
    char *tab = strchr(*p, '\t');
    size_t n = tab != NULL ? (size_t)(tab - *p) : strlen(*p);

    if (n >= size)
        n = size - 1;
    memcpy(dst, *p, n);
    dst[n] = '\0';
    if (strcmp(dst, "-") == 0)
        dst[0] = '\0';
    *p += tab != NULL ? (size_t)(tab - *p) + 1 : strlen(*p);
}

static enum spf_res
spf_of(const char *s)
{
    for (int r = SPF_RES_NONE; r <= SPF_RES_PERMERROR; r++) {
        if (strcmp(spf_res_name((enum spf_res)r), s) == 0)
            return (enum spf_res)r;
    }
    return SPF_RES_NONE;
}

static enum dkim_res
dkim_of(const char *s, size_t n)
{
    for (int r = DKIM_RES_NONE; r <= DKIM_RES_POLICY; r++) {
        const char *name = dkim_res_name((enum dkim_res)r);

        if (strlen(name) == n && strncmp(name, s, n) == 0)
            return (enum dkim_res)r;
    }
    return DKIM_RES_NONE;
}

static void
print_author(const char *prefix, enum dmarc_res res, const char *domain, const char *policy,
             const char *applied, bool reject, const char *why)
{
    printf("%s%s\t%s\t%s\t%s\t%d\t%s\n", prefix, dmarc_res_name(res), domain,
           policy[0] ? policy : "-", applied[0] ? applied : "-", reject, why);
}

static void
on_dmarc(void *arg, struct dmarc_result *r)
{
    *(bool *)arg = true;
    print_author("", r->res, r->domain, r->policy, r->applied, r->reject, r->why);
    for (size_t i = 0; i < r->nauthors; i++) {
        const struct dmarc_author *a = &r->authors[i];

        print_author("  ", a->res, a->domain, a->policy, a->applied, a->reject, a->why);
    }
    fflush(stdout);
}

/* "pass:example.com,fail:other.example" into d. */
static void
dkim_rows(char *list, struct dkim_result *d)
{
    memset(d, 0, sizeof(*d));
    for (char *p = list; *p != '\0' && d->nsigs < DKIM_SIGS_MAX;) {
        char *comma = strchr(p, ','), *colon = strchr(p, ':');
        size_t end = comma != NULL ? (size_t)(comma - p) : strlen(p);
        struct dkim_sig *s = &d->sigs[d->nsigs++];

        if (colon == NULL || (size_t)(colon - p) > end)
            break;
        s->res = dkim_of(p, (size_t)(colon - p));
        snprintf(s->domain, sizeof(s->domain), "%.*s", (int)(end - (size_t)(colon - p) - 1),
                 colon + 1);
        snprintf(s->selector, sizeof(s->selector), "sel");
        p += end + (comma != NULL);
    }
}

static int
dmarc_lines(uv_loop_t *loop, const char *server)
{
    const char *servers[1] = {server};
    char line[4096];

    while (fgets(line, sizeof(line), stdin) != NULL) {
        struct dmarc_input in;
        struct dmarc_result out;
        struct dkim_result d;
        char froms[1100], spf[32], dkim[1024], *p = line;
        struct resolver *res;
        bool done = false;

        line[strcspn(line, "\r\n")] = '\0';
        memset(&in, 0, sizeof(in));
        field(froms, sizeof(froms), &p);
        field(spf, sizeof(spf), &p);
        field(in.spf_domain, sizeof(in.spf_domain), &p);
        field(dkim, sizeof(dkim), &p);
        snprintf(in.ip, sizeof(in.ip), "192.0.2.1");
        for (char *f = strtok(froms, ","); f != NULL; f = strtok(NULL, ",")) {
            if (in.nfrom == DMARC_AUTHORS_MAX) {
                in.nfrom++;
                break;
            }
            snprintf(in.from_domains[in.nfrom++], sizeof(in.from_domains[0]), "%s", f);
        }
        in.from_bad = in.nfrom == 0;
        in.spf = spf_of(spf);
        dkim_rows(dkim, &d);
        in.dkim = &d;
        res = resolver_new(loop, servers, 1);
        dmarc_check_async(loop, res, &in, uv_hrtime() + 3000000000ull, &out, on_dmarc, &done);
        if (uv_run(loop, UV_RUN_DEFAULT) != 0 || !done)
            return 1;
        resolver_free(res);
        (void)uv_run(loop, UV_RUN_DEFAULT);
    }
    return 0;
}

static int
orgdomain_lines(void)
{
    char line[1100], org[256];

    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (dmarc_org_domain(line, org, sizeof(org)) == 0)
            printf("%s\n", org);
        else
            printf("null\n");
    }
    fflush(stdout);
    return 0;
}

int
main(int argc, char **argv)
{
    char server[80];
    uv_loop_t loop;
    int rc = 0;

    if (argc >= 2 && strcmp(argv[1], "orgdomain") == 0)
        return orgdomain_lines();
    if (argc < 3 || !server_of(argv[2], server, sizeof(server))) {
        fprintf(stderr, "usage: dkim_probe verify|dmarc IPV4:PORT [FILE...] | orgdomain\n");
        return 2;
    }
    if (uv_loop_init(&loop) != 0)
        return 1;
    if (strcmp(argv[1], "verify") == 0) {
        for (int i = 3; i < argc && rc == 0; i++)
            rc = verify_file(&loop, server, argv[i]);
    } else if (strcmp(argv[1], "dmarc") == 0) {
        rc = dmarc_lines(&loop, server);
    } else {
        rc = 2;
    }
    if (uv_loop_close(&loop) != 0)
        return 1;
    return rc;
}
