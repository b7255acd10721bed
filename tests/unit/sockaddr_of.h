/* sockaddr_of: a numeric IPv4 or IPv6 address as a sockaddr, for unit
 * tests of per-client code (test_greylist, test_dnsbl). Static, for one
 * test program; a bad address fails the test. */
#ifndef MXD_TEST_SOCKADDR_OF_H
#define MXD_TEST_SOCKADDR_OF_H

#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static struct sockaddr_storage
sa_of(const char *ip)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return ss;
}

#endif
