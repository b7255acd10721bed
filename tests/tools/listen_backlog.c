/* listen_backlog: an LD_PRELOAD shim for the peer benchmarks. OpenSMTPD
 * 6.8 listens with a backlog of 5 (compiled in), so at 50 concurrent
 * connections the kernel drops SYNs and its clients wait a second for
 * each retry; the comparison would be unfair to it. This raises every
 * listen() backlog of the process to 1024. */
#define _GNU_SOURCE
#include <sys/socket.h>

#include <dlfcn.h>
#include <stddef.h>

int
listen(int fd, int backlog)
{
    static int (*real)(int, int);

    (void)backlog;
    if (real == NULL)
        real = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
    return real(fd, 1024);
}
