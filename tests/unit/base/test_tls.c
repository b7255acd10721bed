/* Unit tests for base/tls.c: a server and a client tls_conn in memory
 * (each one's pushes fed to the other), with a key and self-signed
 * certificate made at start. What is tested: the records of one call go
 * to the push callback at once (the server's first flight in one push, a
 * reply in one), and the data gets through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "base/tls.h"

struct side {
    struct tls_conn *t;
    struct side *peer;
    unsigned pushes; /* push callbacks */
    size_t octets;   /* octets pushed */
};

static char dir[] = "/tmp/mxd-test-tls-XXXXXX";
static char cert_path[64], key_path[64];

static void
on_push(void *arg, const char *data, size_t len)
{
    struct side *s = arg;

    s->pushes++;
    s->octets += len;
    tls_conn_feed(s->peer->t, data, len);
}

static void
write_datum(const char *path, const gnutls_datum_t *d)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(d->data, 1, d->size, f), d->size);
    assert_int_equal(fclose(f), 0);
}

static int
setup(void **state)
{
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
    gnutls_datum_t out;
    unsigned char serial = 1;
    time_t now = time(NULL);

    (void)state;
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
    if (gnutls_x509_privkey_init(&key) < 0 ||
        gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                     GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) < 0 ||
        gnutls_x509_crt_init(&crt) < 0)
        return -1;
    gnutls_x509_crt_set_version(crt, 3);
    gnutls_x509_crt_set_serial(crt, &serial, 1);
    gnutls_x509_crt_set_activation_time(crt, now - 3600);
    gnutls_x509_crt_set_expiration_time(crt, now + 86400);
    gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "mx.test", 7);
    gnutls_x509_crt_set_key(crt, key);
    if (gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) < 0)
        return -1;
    assert_int_equal(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out), 0);
    write_datum(cert_path, &out);
    gnutls_free(out.data);
    assert_int_equal(gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &out), 0);
    write_datum(key_path, &out);
    gnutls_free(out.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    unlink(cert_path);
    unlink(key_path);
    rmdir(dir);
    return 0;
}

/* The handshake between srv and cli; the number of server calls. */
static unsigned
handshake(struct side *srv, struct side *cli)
{
    int rs = 1, rc = 1;
    unsigned calls = 0;

    for (int i = 0; i < 20 && (rs != 0 || rc != 0); i++) {
        if (rc != 0)
            rc = tls_conn_handshake(cli->t);
        assert_true(rc >= 0);
        if (rs != 0) {
            unsigned before = srv->pushes;

            rs = tls_conn_handshake(srv->t);
            assert_true(rs >= 0);
            /* each server step hands its records over in one push */
            assert_in_range(srv->pushes - before, 0, 1);
            calls++;
        }
    }
    assert_int_equal(rs, 0);
    assert_int_equal(rc, 0);
    return calls;
}

static void
test_flight_in_one_push(void **state)
{
    struct tls_creds *sc = NULL, *cc = NULL;
    struct side srv = {0}, cli = {0};
    char *err = NULL, buf[64];
    unsigned before;
    ssize_t n;

    (void)state;
    assert_int_equal(tls_creds_load(cert_path, key_path, NULL, &sc, &err), 0);
    assert_int_equal(tls_client_creds_load(false, NULL, NULL, &cc, &err), 0);
    srv.peer = &cli;
    cli.peer = &srv;
    srv.t = tls_conn_new(sc, on_push, &srv);
    cli.t = tls_conn_new_client(cc, "mx.test", false, NULL, 0, on_push, &cli);
    (void)handshake(&srv, &cli);
    /* the first flight (ServerHello ... Finished: six records in TLS 1.3)
     * in one push (handshake() checks each call), a session ticket after
     * the client's Finished in another when one is sent */
    assert_in_range(srv.pushes, 1, 2);
    assert_true(srv.octets > 500);

    /* a reply: one push; the client reads it whole */
    before = srv.pushes;
    assert_int_equal(tls_conn_write(srv.t, "250 2.0.0 OK\r\n", 14), 0);
    assert_int_equal(srv.pushes - before, 1);
    n = tls_conn_read(cli.t, buf, sizeof(buf));
    assert_int_equal(n, 14);
    assert_memory_equal(buf, "250 2.0.0 OK\r\n", 14);

    /* a write of several records (40 KiB: three), still one push */
    {
        size_t big = 40 * 1024, got = 0;
        char *data = calloc(1, big), *in = malloc(big);

        before = srv.pushes;
        assert_int_equal(tls_conn_write(srv.t, data, big), 0);
        assert_int_equal(srv.pushes - before, 1);
        while (got < big && (n = tls_conn_read(cli.t, in + got, big - got)) > 0)
            got += (size_t)n;
        assert_int_equal(got, big);
        free(data);
        free(in);
    }

    /* the client's data the other way, and the alert at the end */
    assert_int_equal(tls_conn_write(cli.t, "QUIT\r\n", 6), 0);
    n = tls_conn_read(srv.t, buf, sizeof(buf));
    assert_int_equal(n, 6);
    before = srv.pushes;
    tls_conn_bye(srv.t);
    assert_int_equal(srv.pushes - before, 1);
    assert_int_equal(tls_conn_read(cli.t, buf, sizeof(buf)), -1); /* close_notify */

    tls_conn_free(srv.t);
    tls_conn_free(cli.t);
    tls_creds_free(sc);
    tls_creds_free(cc);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flight_in_one_push),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
