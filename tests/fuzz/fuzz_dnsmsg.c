/* Fuzz target: DNS reply handling for MX routing: dnsmsg_mx and
 * dnsmsg_addrs on an arbitrary reply, then mx_select on the hosts found
 * (as dns.c does); and dnsmsg_txt (DKIM keys, DMARC records). Checks:
 * names fit, addresses stay within the array, mx_select keeps at most what
 * it was given in preference order, each TXT record is NUL-terminated at
 * its length and no longer than the reply. */
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dnsmsg.h"
#include "dns/mx.h"
#include "fuzz.h"

static unsigned
fixed_rand(void *arg)
{
    unsigned *x = arg;

    return *x = *x * 1103515245u + 12345u;
}

static void
on_txt(void *arg, const char *txt, size_t len)
{
    size_t *size = arg;

    check(len < *size && txt[len] == '\0');
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mx_host *hosts = NULL;
    struct sockaddr_storage addrs[8];
    size_t n = 0, null_mx = 0, naddrs = 0, kept;
    unsigned seed = 1;
    bool self_listed = false;

    if (dnsmsg_mx(data, size, &hosts, &n, &null_mx) == 0) {
        for (size_t i = 0; i < n; i++)
            check(strlen(hosts[i].name) < MX_NAME_MAX && hosts[i].pref <= 0xffff);
        kept = mx_select(hosts, n, "mx.fuzz.test", fixed_rand, &seed, &self_listed);
        check(kept <= n);
        for (size_t i = 1; i < kept; i++)
            check(hosts[i - 1].pref <= hosts[i].pref);
    }
    free(hosts);
    (void)dnsmsg_addrs(data, size, false, 25, addrs, &naddrs, 8);
    check(naddrs <= 8);
    (void)dnsmsg_addrs(data, size, true, 25, addrs, &naddrs, 8);
    check(naddrs <= 8);
    (void)dnsmsg_txt(data, size, on_txt, &size);
    return 0;
}
