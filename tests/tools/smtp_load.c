/* smtp_load: an SMTP load generator for the peer benchmarks
 * (tests/bench/peers_bench.py), plain or with STARTTLS on every
 * connection, which smtp-source cannot do.
 *
 *   smtp_load -p PORT -c SESSIONS -n MESSAGES -s SIZE -t RCPT [-T] [-N] [-f FILE]
 *   smtp_load -p PORT -n SESSIONS -I [-T]
 *
 * SESSIONS threads each run sessions of one message (connect, EHLO,
 * [STARTTLS, a new TLS 1.3 handshake, EHLO], MAIL, RCPT, DATA, the
 * message, QUIT) until MESSAGES were sent, on 127.0.0.1:PORT. Prints one
 * line: "messages N seconds S rate R p50_ms X p99_ms Y", the latency from
 * the final dot to the 250. Any reply that is not the expected one ends it
 * with exit status 1 and the reply on stderr. The server's certificate is
 * not verified (test certificates). -N prepends the message's number to
 * the recipient's local part (as smtp-source -N: one recipient per
 * message, spread over the mailboxes of an LMTP server).
 *
 * -f FILE: sends FILE as the message (From: bench@source.test, CRLF, no
 * line starting with a dot: a DKIM-signed one), -s is then ignored.
 *
 * -I: idle sessions. Opens SESSIONS sessions one after the other (greeted,
 * EHLO, with -T STARTTLS, the handshake and EHLO again), prints "idle N
 * seconds S" once all are open, keeps them open until its stdin ends, then
 * closes them. */
#include <sys/resource.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

static int port, nsessions, nmessages, msg_size, use_tls, spread;
static const char *rcpt, *file;
static atomic_int next_msg;
static char *body;
static size_t body_len;
static double *lat;
static gnutls_certificate_credentials_t creds;

struct conn {
    int fd;
    gnutls_session_t tls; /* NULL: plain */
    char buf[4096];
    size_t len, pos;
};

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what, const char *detail)
{
    fprintf(stderr, "smtp_load: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void
put(struct conn *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = c->tls ? gnutls_record_send(c->tls, data, len) : write(c->fd, data, len);

        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n <= 0)
            die("write failed", NULL);
        data += n;
        len -= (size_t)n;
    }
}

static int
getbyte(struct conn *c)
{
    if (c->pos == c->len) {
        ssize_t n;

        do
            n = c->tls ? gnutls_record_recv(c->tls, c->buf, sizeof(c->buf))
                       : read(c->fd, c->buf, sizeof(c->buf));
        while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
        if (n <= 0)
            return -1;
        c->len = (size_t)n;
        c->pos = 0;
    }
    return (unsigned char)c->buf[c->pos++];
}

/* The reply's code (its last line's), 0 on EOF. */
static int
reply(struct conn *c, char *line, size_t size)
{
    for (;;) {
        size_t n = 0;
        int ch;

        while ((ch = getbyte(c)) >= 0 && ch != '\n')
            if (n + 1 < size)
                line[n++] = (char)ch;
        line[n] = '\0';
        if (ch < 0)
            return 0;
        if (n < 4 || line[3] != '-')
            return atoi(line);
    }
}

static void
expect(struct conn *c, const char *cmd, int want)
{
    char line[1024];
    int code;

    if (cmd != NULL)
        put(c, cmd, strlen(cmd));
    code = reply(c, line, sizeof(line));
    if (code / 100 != want / 100)
        die(cmd ? cmd : "greeting", line);
}

static void
starttls(struct conn *c)
{
    int rc;

    expect(c, "STARTTLS\r\n", 220);
    if (c->pos != c->len)
        die("data after the 220 to STARTTLS", NULL);
    gnutls_init(&c->tls, GNUTLS_CLIENT);
    if (gnutls_priority_set_direct(c->tls, "NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL) < 0)
        die("gnutls priority", NULL);
    gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, creds);
    gnutls_transport_set_int(c->tls, c->fd);
    do
        rc = gnutls_handshake(c->tls);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc < 0)
        die("TLS handshake", gnutls_strerror(rc));
}

static void
one(size_t i)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct conn c = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
    char cmd[600];
    char line[1024];
    double t0;
    int on = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("connect failed", NULL);
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    expect(&c, NULL, 220);
    expect(&c, "EHLO load.invalid\r\n", 250);
    if (use_tls) {
        starttls(&c);
        expect(&c, "EHLO load.invalid\r\n", 250);
    }
    expect(&c, "MAIL FROM:<bench@source.test>\r\n", 250);
    if (spread)
        snprintf(cmd, sizeof(cmd), "RCPT TO:<%zu%s>\r\n", i, rcpt);
    else
        snprintf(cmd, sizeof(cmd), "RCPT TO:<%s>\r\n", rcpt);
    expect(&c, cmd, 250);
    expect(&c, "DATA\r\n", 354);
    put(&c, body, body_len);
    t0 = now();
    put(&c, ".\r\n", 3);
    if (reply(&c, line, sizeof(line)) != 250)
        die("end of data", line);
    lat[i] = now() - t0;
    expect(&c, "QUIT\r\n", 221);
    if (c.tls) {
        gnutls_bye(c.tls, GNUTLS_SHUT_WR);
        gnutls_deinit(c.tls);
    }
    close(c.fd);
}

static void *
worker(void *arg)
{
    int i;

    (void)arg;
    while ((i = atomic_fetch_add(&next_msg, 1)) < nmessages)
        one((size_t)i);
    return NULL;
}

/* -I: n sessions opened and held until stdin ends */
static int
idle(int n)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct conn *c = calloc((size_t)n, sizeof(*c));
    struct rlimit rl;
    char buf[256];
    double t0 = now();
    int on = 1;

    if (c == NULL)
        die("out of memory", NULL);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < n; i++) {
        c[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c[i].fd < 0 || connect(c[i].fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
            die("connect failed", NULL);
        setsockopt(c[i].fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
        expect(&c[i], NULL, 220);
        expect(&c[i], "EHLO load.invalid\r\n", 250);
        if (use_tls) {
            starttls(&c[i]);
            expect(&c[i], "EHLO load.invalid\r\n", 250);
        }
    }
    printf("idle %d seconds %.3f\n", n, now() - t0);
    fflush(stdout);
    while (read(0, buf, sizeof(buf)) > 0)
        ;
    for (int i = 0; i < n; i++) {
        if (c[i].tls)
            gnutls_deinit(c[i].tls);
        close(c[i].fd);
    }
    free(c);
    return 0;
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    static const char line[] =
        "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    pthread_t *th;
    double t0, dt;
    int opt, idle_mode = 0;

    while ((opt = getopt(argc, argv, "p:c:n:s:t:f:TNI")) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            nsessions = atoi(optarg);
            break;
        case 'n':
            nmessages = atoi(optarg);
            break;
        case 's':
            msg_size = atoi(optarg);
            break;
        case 't':
            rcpt = optarg;
            break;
        case 'T':
            use_tls = 1;
            break;
        case 'f':
            file = optarg;
            break;
        case 'N':
            spread = 1;
            break;
        case 'I':
            idle_mode = 1;
            break;
        default:
            die("usage: smtp_load -p PORT -c SESSIONS -n MESSAGES -s SIZE -t RCPT [-T] [-N] [-f "
                "FILE]\n"
                "       smtp_load -p PORT -n SESSIONS -I [-T]",
                NULL);
        }
    }
    if (idle_mode && port > 0 && nmessages > 0) {
        gnutls_global_init();
        gnutls_certificate_allocate_credentials(&creds);
        return idle(nmessages);
    }
    if (port <= 0 || nsessions <= 0 || nmessages <= 0 || msg_size < 0 || rcpt == NULL)
        die("usage: smtp_load -p PORT -c SESSIONS -n MESSAGES -s SIZE -t RCPT [-T] [-N] [-f FILE]\n"
            "       smtp_load -p PORT -n SESSIONS -I [-T]",
            NULL);
    body_len = (size_t)msg_size + 200;
    body = malloc(body_len + sizeof(line));
    lat = calloc((size_t)nmessages, sizeof(*lat));
    if (body == NULL || lat == NULL)
        die("out of memory", NULL);
    if (file != NULL) { /* the message as it is (CRLF, no line starting with a dot) */
        FILE *f = fopen(file, "rb");

        free(body);
        body = malloc(1 << 24);
        if (f == NULL || body == NULL)
            die("cannot read", file);
        body_len = fread(body, 1, 1 << 24, f);
        fclose(f);
        msg_size = 0;
    } else
        body_len = (size_t)snprintf(
            body, 200, "From: <bench@source.test>\r\nTo: <%s>\r\nSubject: load\r\n\r\n", rcpt);
    while (body_len < (size_t)msg_size) {
        memcpy(body + body_len, line, sizeof(line) - 1);
        body_len += sizeof(line) - 1;
    }
    gnutls_global_init();
    gnutls_certificate_allocate_credentials(&creds);
    th = calloc((size_t)nsessions, sizeof(*th));
    if (th == NULL)
        die("out of memory", NULL);
    t0 = now();
    for (int i = 0; i < nsessions; i++)
        if (pthread_create(&th[i], NULL, worker, NULL) != 0)
            die("pthread_create failed", NULL);
    for (int i = 0; i < nsessions; i++)
        pthread_join(th[i], NULL);
    dt = now() - t0;
    qsort(lat, (size_t)nmessages, sizeof(*lat), cmp);
    printf("messages %d seconds %.3f rate %.1f p50_ms %.2f p99_ms %.2f\n", nmessages, dt,
           nmessages / dt, lat[nmessages / 2] * 1000,
           lat[(size_t)(nmessages * 0.99) < (size_t)nmessages ? (size_t)(nmessages * 0.99)
                                                              : (size_t)nmessages - 1] *
               1000);
    gnutls_certificate_free_credentials(creds);
    free(th);
    free(body);
    free(lat);
    return 0;
}
