/* tls: owns the GnuTLS credentials and priority cache (struct tls_creds,
 * loaded at start-up) and one gnutls_session_t per TLS connection with its
 * inbound ciphertext buffer. Loop thread only. The session never touches
 * a socket: ciphertext comes in through tls_conn_feed and goes out through
 * the push callback, so the handshake and every record are non-blocking
 * (GNUTLS_NONBLOCK, EAGAIN from the pull function when the buffer is
 * empty). Errors carry gnutls_strerror's text, or for a client session
 * the certificate verification status. Server sessions do not ask for
 * client certificates.
 *
 * Output is batched per call: GnuTLS pushes each record on its own (a
 * TLS 1.3 server's first flight is six: ServerHello, ChangeCipherSpec,
 * EncryptedExtensions, Certificate, CertificateVerify, Finished), and the
 * owner's push writes each to the socket. Inside tls_conn_handshake,
 * _read, _write and _bye the records are gathered (up to BATCH_MAX) and
 * handed to the push callback once at the end: one write, one segment on
 * the wire and one wake-up of the peer for the flight instead of six. */
#include "base/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

struct tls_creds {
    gnutls_certificate_credentials_t xcred;
    gnutls_priority_t prio;
    unsigned refs;   /* the owner's, plus one per session using them */
    int64_t expires; /* the certificate's notAfter, unix seconds; 0: none */
};

struct tls_conn {
    gnutls_session_t s;
    struct tls_creds *creds;
    tls_push_cb push;
    void *arg;
    char *in;
    size_t in_len, in_off, in_cap;
    int last_err;
    char *verify_err;      /* client: why the server's certificate failed */
    struct tls_dane *dane; /* client: DANE instead of PKIX (tls_dane.c) */
};

/* The records of the call in progress (loop thread only: one call at a
 * time; a push from another connection meanwhile goes straight out). */
#define BATCH_MAX (64 * 1024)
static struct {
    struct tls_conn *owner;
    char *p;
    size_t len, cap;
} batch;

/* Hands what is gathered to the owner's push; the buffer is set aside
 * meanwhile, so a push that came back here could not write into it. */
static void
batch_flush(void)
{
    struct tls_conn *t = batch.owner;
    char *p = batch.p;
    size_t n = batch.len, cap = batch.cap;

    if (n == 0)
        return;
    batch.p = NULL;
    batch.len = batch.cap = 0;
    t->push(t->arg, p, n);
    if (batch.p == NULL) {
        batch.p = p;
        batch.cap = cap;
    } else {
        free(p);
    }
}

/* True when t's records are gathered from now on (false: another call
 * gathers already; t's go straight out). */
static bool
batch_begin(struct tls_conn *t)
{
    if (batch.owner != NULL)
        return false;
    batch.owner = t;
    batch.len = 0;
    return true;
}

static void
batch_end(bool mine)
{
    if (!mine)
        return;
    batch_flush();
    batch.owner = NULL;
}

/* New credentials with the priority cache, no certificate and no trust
 * anchors yet; NULL with *err on failure. */
static struct tls_creds *
creds_new(const char *priority, char **err)
{
    struct tls_creds *c = xcalloc(1, sizeof(*c));
    const char *errpos = NULL;
    int rc = gnutls_certificate_allocate_credentials(&c->xcred);

    if (rc < 0) {
        *err = xasprintf("tls: cannot allocate credentials: %s", gnutls_strerror(rc));
        free(c);
        return NULL;
    }
    rc = gnutls_priority_init(&c->prio, priority, &errpos);
    if (rc < 0) {
        *err = xasprintf("tls: bad priority string near \"%s\": %s", errpos ? errpos : "",
                         gnutls_strerror(rc));
        gnutls_certificate_free_credentials(c->xcred);
        free(c);
        return NULL;
    }
    c->refs = 1;
    return c;
}

/* The notAfter of the (first) certificate just loaded into xcred. */
static int64_t
creds_expiry(gnutls_certificate_credentials_t xcred)
{
    gnutls_datum_t der = {NULL, 0};
    gnutls_x509_crt_t crt = NULL;
    int64_t t = 0;

    if (gnutls_certificate_get_crt_raw(xcred, 0, 0, &der) < 0)
        return 0;
    if (gnutls_x509_crt_init(&crt) == 0 &&
        gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER) == 0) {
        time_t e = gnutls_x509_crt_get_expiration_time(crt);

        t = e == (time_t)-1 ? 0 : (int64_t)e;
    }
    gnutls_x509_crt_deinit(crt);
    return t;
}

int
tls_creds_load(const char *cert, const char *key, const char *priority, struct tls_creds **out,
               char **err)
{
    struct tls_creds *c = creds_new(priority, err);
    int rc;

    *out = NULL;
    if (c == NULL)
        return MXD_ECONFIG;
    if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
        const char *bad = access(cert, R_OK) != 0 ? cert : key;

        *err = xasprintf("tls: cannot read %s %s: %s", bad == cert ? "certificate" : "key", bad,
                         strerror(errno));
        goto fail;
    }
    /* GnuTLS checks that the key belongs to the certificate. */
    rc = gnutls_certificate_set_x509_key_file(c->xcred, cert, key, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
        *err = xasprintf("tls: cannot load certificate %s with key %s: %s", cert, key,
                         gnutls_strerror(rc));
        goto fail;
    }
    c->expires = creds_expiry(c->xcred);
    *out = c;
    return 0;
fail:
    tls_creds_free(c);
    return MXD_ECONFIG;
}

int64_t
tls_creds_expiry(const struct tls_creds *c)
{
    return c != NULL ? c->expires : 0;
}

int
tls_client_creds_load(bool trust, const char *ca_file, const char *priority, struct tls_creds **out,
                      char **err)
{
    struct tls_creds *c = creds_new(priority, err);
    int rc = 1;

    *out = NULL;
    if (c == NULL)
        return MXD_ECONFIG;
    if (trust && ca_file != NULL)
        rc = gnutls_certificate_set_x509_trust_file(c->xcred, ca_file, GNUTLS_X509_FMT_PEM);
    else if (trust)
        rc = gnutls_certificate_set_x509_system_trust(c->xcred);
    if (rc <= 0) {
        /* 0: the file held no certificate at all */
        *err = xasprintf("tls: cannot load trust anchors from %s: %s",
                         ca_file ? ca_file : "the system trust store",
                         rc < 0 ? gnutls_strerror(rc) : "no certificates found");
        tls_creds_free(c);
        return MXD_ECONFIG;
    }
    *out = c;
    return 0;
}

void
tls_creds_ref(struct tls_creds *c)
{
    c->refs++;
}

void
tls_creds_free(struct tls_creds *c)
{
    /* Sessions keep the credentials they started with (SIGHUP reload). */
    if (c == NULL || --c->refs > 0)
        return;
    gnutls_priority_deinit(c->prio);
    gnutls_certificate_free_credentials(c->xcred);
    free(c);
}

/* The validity period of the first certificate in the PEM file. */
static char *
cert_time_warning(const char *cert)
{
    gnutls_datum_t pem = {NULL, 0};
    gnutls_x509_crt_t crt = NULL;
    char *warn = NULL;
    time_t now = time(NULL);

    if (gnutls_load_file(cert, &pem) < 0)
        return NULL;
    if (gnutls_x509_crt_init(&crt) == 0 &&
        gnutls_x509_crt_import(crt, &pem, GNUTLS_X509_FMT_PEM) == 0) {
        if (gnutls_x509_crt_get_expiration_time(crt) < now)
            warn = xasprintf("tls: certificate %s has expired", cert);
        else if (gnutls_x509_crt_get_activation_time(crt) > now)
            warn = xasprintf("tls: certificate %s is not valid yet", cert);
    }
    gnutls_x509_crt_deinit(crt);
    gnutls_free(pem.data);
    return warn;
}

int
tls_creds_check(const char *cert, const char *key, const char *priority, char **err, char **warn)
{
    struct tls_creds *c = NULL;
    int rc = tls_creds_load(cert, key, priority, &c, err);

    *warn = NULL;
    if (rc != 0)
        return rc;
    tls_creds_free(c);
    *warn = cert_time_warning(cert);
    return 0;
}

static ssize_t
tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
    struct tls_conn *t = ptr;
    size_t n = t->in_len - t->in_off;

    if (n == 0) {
        gnutls_transport_set_errno(t->s, EAGAIN);
        return -1;
    }
    if (n > len)
        n = len;
    memcpy(buf, t->in + t->in_off, n);
    t->in_off += n;
    if (t->in_off == t->in_len)
        t->in_off = t->in_len = 0;
    return (ssize_t)n;
}

static ssize_t
tls_push(gnutls_transport_ptr_t ptr, const void *data, size_t len)
{
    struct tls_conn *t = ptr;

    if (batch.owner != t) {
        t->push(t->arg, data, len);
        return (ssize_t)len;
    }
    if (batch.len + len > BATCH_MAX) {
        batch_flush();
        if (len > BATCH_MAX) {
            t->push(t->arg, data, len);
            return (ssize_t)len;
        }
    }
    if (batch.len + len > batch.cap) {
        batch.cap = batch.len + len < 4096 ? 4096 : batch.len + len;
        batch.p = xrealloc(batch.p, batch.cap);
    }
    memcpy(batch.p + batch.len, data, len);
    batch.len += len;
    return (ssize_t)len;
}

static struct tls_conn *
conn_new(struct tls_creds *c, unsigned flags, tls_push_cb push, void *arg)
{
    struct tls_conn *t = xcalloc(1, sizeof(*t));

    if (gnutls_init(&t->s, flags | GNUTLS_NONBLOCK) < 0)
        mxd_panic("gnutls_init failed");
    gnutls_priority_set(t->s, c->prio);
    gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->xcred);
    gnutls_transport_set_ptr(t->s, t);
    gnutls_session_set_ptr(t->s, t);
    gnutls_transport_set_pull_function(t->s, tls_pull);
    gnutls_transport_set_push_function(t->s, tls_push);
    t->push = push;
    t->arg = arg;
    t->creds = c;
    c->refs++;
    return t;
}

struct tls_conn *
tls_conn_new(struct tls_creds *c, tls_push_cb push, void *arg)
{
    struct tls_conn *t = conn_new(c, GNUTLS_SERVER, push, arg);

    gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_IGNORE);
    return t;
}

static bool
is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

struct tls_conn *
tls_conn_new_client(struct tls_creds *c, const char *name, bool verify, const void *resume,
                    size_t resume_len, tls_push_cb push, void *arg)
{
    struct tls_conn *t = conn_new(c, GNUTLS_CLIENT, push, arg);
    bool ip = name != NULL && is_ip_literal(name);

    if (name != NULL && !ip)
        (void)gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, name, strlen(name));
    if (verify) {
        /* GnuTLS matches an IP literal against the iPAddress names. */
        gnutls_session_set_verify_cert(t->s, name, 0);
    }
    if (resume != NULL && resume_len > 0)
        (void)gnutls_session_set_data(t->s, resume, resume_len);
    return t;
}

/* GnuTLS's certificate check for a DANE session: 0 to go on. */
static int
dane_verify_cb(gnutls_session_t s)
{
    struct tls_conn *t = gnutls_session_get_ptr(s);
    const unsigned char *der[16];
    size_t len[16];
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
    char *why = NULL;

    if (certs == NULL || gnutls_certificate_type_get(s) != GNUTLS_CRT_X509)
        n = 0;
    if (n > 16)
        n = 16;
    for (unsigned i = 0; i < n; i++) {
        der[i] = certs[i].data;
        len[i] = certs[i].size;
    }
    if (tls_dane_verify_der(t->dane, der, len, n, &why) == 0)
        return 0;
    free(t->verify_err);
    t->verify_err = xasprintf("DANE verification failed: %s", why ? why : "no match");
    free(why);
    return GNUTLS_E_CERTIFICATE_ERROR;
}

void
tls_conn_set_dane(struct tls_conn *t, struct tls_dane *d)
{
    if (d == NULL || tls_dane_usable(d) == 0)
        return;
    tls_dane_ref(d);
    tls_dane_free(t->dane);
    t->dane = d;
    gnutls_session_set_verify_function(t->s, dane_verify_cb);
}

bool
tls_conn_resumed(const struct tls_conn *t)
{
    return gnutls_session_is_resumed(t->s) != 0;
}

int
tls_conn_session_data(const struct tls_conn *t, void **data, size_t *len)
{
    gnutls_datum_t d = {NULL, 0};

    /* TLS 1.3: without a ticket GnuTLS would wait for one (or return data
     * that cannot resume), so ask only once one has arrived. */
    if (gnutls_protocol_get_version(t->s) == GNUTLS_TLS1_3 &&
        !(gnutls_session_get_flags(t->s) & GNUTLS_SFLAGS_SESSION_TICKET))
        return MXD_ENOENT;
    if (gnutls_session_get_data2(t->s, &d) < 0 || d.size == 0) {
        gnutls_free(d.data);
        return MXD_ENOENT;
    }
    *data = xmalloc(d.size);
    memcpy(*data, d.data, d.size);
    *len = d.size;
    gnutls_free(d.data);
    return 0;
}

void
tls_conn_free(struct tls_conn *t)
{
    if (t == NULL)
        return;
    if (batch.owner == t) {
        batch.owner = NULL;
        batch.len = 0;
    }
    gnutls_deinit(t->s);
    tls_creds_free(t->creds);
    tls_dane_free(t->dane);
    free(t->verify_err);
    free(t->in);
    free(t);
}

void
tls_conn_feed(struct tls_conn *t, const char *data, size_t len)
{
    if (t->in_off > 0 && t->in_off == t->in_len)
        t->in_off = t->in_len = 0;
    if (t->in_len + len > t->in_cap) {
        if (t->in_off > 0) {
            memmove(t->in, t->in + t->in_off, t->in_len - t->in_off);
            t->in_len -= t->in_off;
            t->in_off = 0;
        }
        if (t->in_len + len > t->in_cap) {
            t->in_cap = t->in_len + len;
            t->in = xrealloc(t->in, t->in_cap);
        }
    }
    memcpy(t->in + t->in_len, data, len);
    t->in_len += len;
}

/* Keeps why the server's certificate was refused, for tls_conn_error. */
static void
verify_failed(struct tls_conn *t)
{
    gnutls_datum_t out = {NULL, 0};
    unsigned status = gnutls_session_get_verify_cert_status(t->s);

    if (t->verify_err != NULL ||
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) < 0)
        return;
    t->verify_err = xasprintf("certificate verification failed: %s", (char *)out.data);
    gnutls_free(out.data);
}

int
tls_conn_handshake(struct tls_conn *t)
{
    bool mine = batch_begin(t);
    int rc = gnutls_handshake(t->s);

    batch_end(mine);
    if (rc == GNUTLS_E_SUCCESS)
        return 0;
    /* An alert from the client during the handshake ends it, even one sent
     * at warning level (a client that does not trust us gives up). */
    if (rc != GNUTLS_E_WARNING_ALERT_RECEIVED &&
        (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(rc)))
        return 1;
    t->last_err = rc;
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR && t->dane == NULL)
        verify_failed(t);
    return MXD_EIO;
}

ssize_t
tls_conn_read(struct tls_conn *t, char *buf, size_t len)
{
    /* A record without application data (a TLS 1.3 session ticket, a
     * KeyUpdate) gives EAGAIN although whole records may still wait in
     * our buffer: read on while ciphertext is left. GnuTLS pulls a partial
     * record whole into its own buffer, so this ends; bounded anyway. */
    for (unsigned i = 0; i < 64; i++) {
        bool mine = batch_begin(t);
        ssize_t n = gnutls_record_recv(t->s, buf, len);

        batch_end(mine);
        if (n > 0)
            return n;
        if (n == 0 ||
            (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED && gnutls_error_is_fatal((int)n))) {
            t->last_err = n == 0 ? 0 : (int)n;
            return -1;
        }
        /* EAGAIN, or not fatal (a rehandshake request, an alert warning) */
        if (t->in_len == t->in_off)
            return 0;
    }
    return 0;
}

bool
tls_conn_pending(const struct tls_conn *t)
{
    /* Decrypted octets in GnuTLS, or ciphertext we were fed and it has
     * not pulled yet: either may hold whole records. */
    return gnutls_record_check_pending(t->s) > 0 || t->in_len > t->in_off;
}

int
tls_conn_write(struct tls_conn *t, const char *data, size_t len)
{
    bool mine = batch_begin(t);
    int rc = 0;

    while (len > 0) {
        ssize_t n = gnutls_record_send(t->s, data, len);

        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue; /* our push never blocks; this does not repeat */
        if (n < 0) {
            t->last_err = (int)n;
            rc = MXD_EIO;
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    batch_end(mine);
    return rc;
}

size_t
tls_conn_buffered(const struct tls_conn *t)
{
    return t->in_len - t->in_off;
}

void
tls_conn_bye(struct tls_conn *t)
{
    bool mine = batch_begin(t);

    /* SHUT_WR: send our alert, do not wait for the peer's. */
    (void)gnutls_bye(t->s, GNUTLS_SHUT_WR);
    batch_end(mine);
}

const char *
tls_conn_error(const struct tls_conn *t)
{
    if (t->verify_err != NULL)
        return t->verify_err;
    return t->last_err ? gnutls_strerror(t->last_err) : "connection closed";
}

void
tls_conn_describe(const struct tls_conn *t, char *buf, size_t size)
{
    const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
    const char *c = gnutls_cipher_get_name(gnutls_cipher_get(t->s));

    snprintf(buf, size, "%s %s", v ? v : "TLS", c ? c : "unknown-cipher");
}
