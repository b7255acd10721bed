/* spf_probe: runs mxd's SPF check (spf_check_with, on a loop of its own)
 * for each line "ip<TAB>helo<TAB>sender" on stdin against the name server
 * given as argv[1] ("127.0.0.1:5353"), printing
 * "result<TAB>queries<TAB>voids<TAB>ms<TAB>comment<TAB>explanation" per
 * line. For the SPF test-suite and limit tests, which change the zone
 * between lines: each check gets a resolver of its own (an empty cache,
 * and no query of an earlier check still in flight inside libunbound). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/spf.h"

static void
field(char *dst, size_t size, char **p)
{
    char *tab = strchr(*p, '\t');
    size_t n = tab != NULL ? (size_t)(tab - *p) : strlen(*p);

    if (n >= size)
        n = size - 1;
    memcpy(dst, *p, n);
    dst[n] = '\0';
    *p += tab != NULL ? (size_t)(tab - *p) + 1 : strlen(*p);
}

static void
on_result(void *arg, struct spf_result *r)
{
    *(bool *)arg = true;
    printf("%s\t%u\t%u\t%.2f\t%s\t%s\n", spf_res_name(r->res), r->queries, r->voids, r->ms,
           r->comment, r->explanation);
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    char server[80], line[2048], *colon;
    const char *servers[1] = {server};
    struct in_addr ip;
    uv_loop_t loop;
    struct resolver *res;

    if (argc < 2 || (colon = strrchr(argv[1], ':')) == NULL) {
        fprintf(stderr, "usage: spf_probe IPV4:PORT [budget_ms]\n");
        return 2;
    }
    *colon = '\0';
    if (inet_pton(AF_INET, argv[1], &ip) != 1)
        return 2;
    snprintf(server, sizeof(server), "%s@%d", argv[1], atoi(colon + 1));
    if (uv_loop_init(&loop) != 0)
        return 1;
    while (fgets(line, sizeof(line), stdin) != NULL) {
        struct spf_query q;
        struct spf_result r;
        char *p = line;
        bool done = false;

        line[strcspn(line, "\r\n")] = '\0';
        memset(&q, 0, sizeof(q));
        field(q.ip, sizeof(q.ip), &p);
        field(q.helo, sizeof(q.helo), &p);
        field(q.sender, sizeof(q.sender), &p);
        snprintf(q.receiver, sizeof(q.receiver), "mx.test");
        q.budget_ms = argc > 2 ? (unsigned)atoi(argv[2]) : 0;
        res = resolver_new(&loop, servers, 1);
        spf_check_with(&loop, res, &q, &r, on_result, &done);
        if (uv_run(&loop, UV_RUN_DEFAULT) != 0 || !done)
            return 1;
        resolver_free(res);
    }
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
