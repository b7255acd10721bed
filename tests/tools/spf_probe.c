/* spf_probe: runs mxd's spf_check for each line "ip<TAB>helo<TAB>sender"
 * on stdin against the name server given as argv[1] ("127.0.0.1:5353"),
 * printing "result<TAB>queries<TAB>voids<TAB>ms<TAB>comment<TAB>explanation"
 * per line. For the SPF test-suite and limit tests. */
#include <arpa/inet.h>
#include <netinet/in.h>
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

int
main(int argc, char **argv)
{
    struct dns_servers sv;
    struct sockaddr_in *sin = (struct sockaddr_in *)&sv.addrs[0];
    char line[2048], *colon;

    if (argc < 2 || (colon = strrchr(argv[1], ':')) == NULL) {
        fprintf(stderr, "usage: spf_probe IPV4:PORT [budget_ms]\n");
        return 2;
    }
    memset(&sv, 0, sizeof(sv));
    sv.override = true;
    sv.n = 1;
    *colon = '\0';
    sin->sin_family = AF_INET;
    sin->sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, argv[1], &sin->sin_addr) != 1)
        return 2;
    while (fgets(line, sizeof(line), stdin) != NULL) {
        struct spf_query q;
        struct spf_result r;
        char *p = line;

        line[strcspn(line, "\r\n")] = '\0';
        memset(&q, 0, sizeof(q));
        field(q.ip, sizeof(q.ip), &p);
        field(q.helo, sizeof(q.helo), &p);
        field(q.sender, sizeof(q.sender), &p);
        snprintf(q.receiver, sizeof(q.receiver), "mx.test");
        q.budget_ms = argc > 2 ? (unsigned)atoi(argv[2]) : 0;
        spf_check(&sv, &q, &r);
        printf("%s\t%u\t%u\t%.2f\t%s\t%s\n", spf_res_name(r.res), r.queries, r.voids, r.ms,
               r.comment, r.explanation);
        fflush(stdout);
    }
    return 0;
}
