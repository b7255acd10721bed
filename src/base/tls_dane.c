/* tls_dane: DANE for SMTP (RFC 7672, RFC 7671) on top of GnuTLS's libdane.
 *
 * Owns struct tls_dane (the usable TLSA records of one next hop and the
 * names a DANE-TA chain may carry; reference-counted, so a connection
 * keeps what it started with) and the process's one dane_state_t, made at
 * the first verification and kept until exit (it looks nothing up: only
 * its flags are read by dane_raw_tlsa). Loop thread only.
 *
 * The records come from mxd's own validating resolver, DNSSEC-secure
 * (dns_tlsa_async); this file never queries DNS (no dane_query_tlsa,
 * which blocks). What libdane checks: a DANE-EE record against the
 * server's certificate (selector 0) or its key (selector 1); a DANE-TA
 * record against the issuer of the certificate before it. The RFC 7672
 * rules it leaves to us:
 *  - PKIX-TA(0) and PKIX-EE(1) are not used for SMTP (3.1.3), nor records
 *    with an unknown selector or matching type: unusable, dropped here;
 *  - DANE-EE(3): nothing but the key or certificate counts, neither the
 *    names nor the dates (3.1.1);
 *  - DANE-TA(2): the TA may be any certificate of the chain the server
 *    sent (3.1.2: servers must send it); the chain up to it is verified
 *    with the usual checks (signatures, dates, CA constraints), and the
 *    server's certificate must carry one of the names (3.2.2: the MX host
 *    name, or the next-hop domain).
 * Errors: 0, or MXD_EINVAL with the reason in *why (caller frees). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/dane.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "base/tls.h"

#define DANE_RECORDS_MAX 32
#define DANE_NAMES_MAX   4
#define DANE_CHAIN_MAX   16

#define USAGE_DANE_TA 2
#define USAGE_DANE_EE 3

struct tls_dane {
    unsigned refs;
    size_t n;
    unsigned char *rec[DANE_RECORDS_MAX]; /* RDATA: usage, selector, matching type, data */
    size_t len[DANE_RECORDS_MAX];
    size_t nnames;
    char *names[DANE_NAMES_MAX];
};

static dane_state_t dane_state; /* made at the first use, kept */

struct tls_dane *
tls_dane_new(void)
{
    struct tls_dane *d = xcalloc(1, sizeof(*d));

    d->refs = 1;
    return d;
}

void
tls_dane_ref(struct tls_dane *d)
{
    d->refs++;
}

void
tls_dane_free(struct tls_dane *d)
{
    if (d == NULL || --d->refs > 0)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->rec[i]);
    for (size_t i = 0; i < d->nnames; i++)
        free(d->names[i]);
    free(d);
}

bool
tls_dane_add_record(struct tls_dane *d, const unsigned char *rdata, size_t len)
{
    /* RFC 7672 3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP;
     * RFC 6698 2.1: selector 0 or 1, matching type 0 (full), 1 (SHA-256)
     * or 2 (SHA-512); anything else is unusable, not an error. */
    if (len < 4 || d->n >= DANE_RECORDS_MAX)
        return false;
    if ((rdata[0] != USAGE_DANE_TA && rdata[0] != USAGE_DANE_EE) || rdata[1] > 1 || rdata[2] > 2)
        return false;
    if ((rdata[2] == 1 && len != 3 + 32) || (rdata[2] == 2 && len != 3 + 64))
        return false; /* a digest of the wrong length matches nothing */
    d->rec[d->n] = xmalloc(len);
    memcpy(d->rec[d->n], rdata, len);
    d->len[d->n++] = len;
    return true;
}

void
tls_dane_add_name(struct tls_dane *d, const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;

    if (len == 0 || d->nnames >= DANE_NAMES_MAX)
        return;
    if (name[len - 1] == '.')
        len--;
    d->names[d->nnames++] = xstrndup(name, len);
}

size_t
tls_dane_usable(const struct tls_dane *d)
{
    return d != NULL ? d->n : 0;
}

/* A libdane query holding our records of one usage (NULL when none). */
static dane_query_t
query_for(const struct tls_dane *d, unsigned usage)
{
    char *data[DANE_RECORDS_MAX + 1];
    int lens[DANE_RECORDS_MAX + 1];
    dane_query_t q = NULL;
    size_t k = 0;

    for (size_t i = 0; i < d->n; i++) {
        if (d->rec[i][0] != usage)
            continue;
        data[k] = (char *)d->rec[i];
        lens[k++] = (int)d->len[i];
    }
    data[k] = NULL;
    lens[k] = 0;
    if (k == 0)
        return NULL;
    /* secure = 1: only DNSSEC-secure records reach a struct tls_dane */
    if (dane_raw_tlsa(dane_state, &q, data, lens, 1, 0) != DANE_E_SUCCESS) {
        if (q != NULL)
            dane_query_deinit(q);
        return NULL;
    }
    return q;
}

/* DANE-EE(3): the server's certificate or key matches a record. */
static bool
ee_match(const struct tls_dane *d, const gnutls_datum_t *chain, unsigned n)
{
    dane_query_t q = query_for(d, USAGE_DANE_EE);
    unsigned status = 0;
    bool ok;

    if (q == NULL)
        return false;
    ok = dane_verify_crt_raw(dane_state, chain, n, GNUTLS_CRT_X509, q, 0,
                             DANE_VFLAG_ONLY_CHECK_EE_USAGE, &status) == DANE_E_SUCCESS &&
         status == 0;
    dane_query_deinit(q);
    return ok;
}

/* Verifies chain[0..k) up to the trust anchor chain[k] (signatures, dates,
 * constraints) and the names; 0 or MXD_EINVAL with *why. */
static int
ta_chain_verify(const struct tls_dane *d, const gnutls_datum_t *chain, unsigned k, char **why)
{
    gnutls_x509_trust_list_t tl = NULL;
    gnutls_x509_crt_t ta = NULL, crts[DANE_CHAIN_MAX];
    unsigned status = 0, ncrts = 0;
    int rc = MXD_EINVAL;
    bool named = false;

    if (gnutls_x509_trust_list_init(&tl, 0) < 0 || gnutls_x509_crt_init(&ta) < 0 ||
        gnutls_x509_crt_import(ta, &chain[k], GNUTLS_X509_FMT_DER) < 0) {
        *why = xstrdup("cannot read the trust anchor certificate");
        gnutls_x509_crt_deinit(ta);
        goto done;
    }
    if (gnutls_x509_trust_list_add_cas(tl, &ta, 1, 0) != 1) { /* the list owns ta now */
        *why = xstrdup("cannot use the trust anchor certificate");
        gnutls_x509_crt_deinit(ta);
        goto done;
    }
    for (; ncrts < k; ncrts++) {
        if (gnutls_x509_crt_init(&crts[ncrts]) < 0)
            break;
        if (gnutls_x509_crt_import(crts[ncrts], &chain[ncrts], GNUTLS_X509_FMT_DER) < 0) {
            gnutls_x509_crt_deinit(crts[ncrts]);
            break;
        }
    }
    if (ncrts < k) {
        *why = xstrdup("cannot read the server's certificate chain");
        goto done;
    }
    if (gnutls_x509_trust_list_verify_crt(tl, crts, k, 0, &status, NULL) < 0 || status != 0) {
        gnutls_datum_t out = {NULL, 0};

        (void)gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
        *why =
            xasprintf("DANE-TA chain does not verify: %s", out.data ? (char *)out.data : "error");
        gnutls_free(out.data);
        goto done;
    }
    for (size_t i = 0; i < d->nnames && !named; i++)
        named = gnutls_x509_crt_check_hostname2(crts[0], d->names[i], 0) != 0;
    if (!named) {
        *why = xasprintf("DANE-TA: the certificate does not name %s%s%s",
                         d->nnames > 0 ? d->names[0] : "the host", d->nnames > 1 ? " or " : "",
                         d->nnames > 1 ? d->names[1] : "");
        goto done;
    }
    rc = 0;
done:
    for (unsigned i = 0; i < ncrts; i++)
        gnutls_x509_crt_deinit(crts[i]);
    if (tl != NULL)
        gnutls_x509_trust_list_deinit(tl, 1);
    return rc;
}

/* DANE-TA(2): a certificate of the chain matches a record and issued the
 * one before it (libdane), then the chain up to it verifies. -1: no TA
 * record matched; else 0 or MXD_EINVAL with *why. */
static int
ta_verify(const struct tls_dane *d, const gnutls_datum_t *chain, unsigned n, char **why)
{
    dane_query_t q = query_for(d, USAGE_DANE_TA);
    int rc = -1;

    if (q == NULL)
        return -1;
    for (unsigned k = 1; k < n && rc == -1; k++) {
        unsigned status = 0;

        if (dane_verify_crt_raw(dane_state, chain + k - 1, 2, GNUTLS_CRT_X509, q, 0,
                                DANE_VFLAG_ONLY_CHECK_CA_USAGE, &status) == DANE_E_SUCCESS &&
            status == 0)
            rc = ta_chain_verify(d, chain, k, why);
    }
    dane_query_deinit(q);
    return rc;
}

int
tls_dane_verify_der(const struct tls_dane *d, const unsigned char *const *der, const size_t *len,
                    size_t n, char **why)
{
    gnutls_datum_t chain[DANE_CHAIN_MAX];
    int rc;

    *why = NULL;
    if (n == 0) {
        *why = xstrdup("the server sent no certificate");
        return MXD_EINVAL;
    }
    if (dane_state == NULL &&
        dane_state_init(&dane_state, DANE_F_IGNORE_LOCAL_RESOLVER | DANE_F_IGNORE_DNSSEC |
                                         DANE_F_INSECURE) != DANE_E_SUCCESS) {
        dane_state = NULL;
        *why = xstrdup("cannot initialise libdane");
        return MXD_EINVAL;
    }
    if (n > DANE_CHAIN_MAX)
        n = DANE_CHAIN_MAX;
    for (size_t i = 0; i < n; i++) {
        chain[i].data = (unsigned char *)der[i];
        chain[i].size = (unsigned)len[i];
    }
    if (ee_match(d, chain, (unsigned)n))
        return 0; /* RFC 7672 3.1.1: names and dates do not matter */
    rc = ta_verify(d, chain, (unsigned)n, why);
    if (rc == 0)
        return 0;
    if (rc == -1)
        *why = xstrdup("no TLSA record matches the server's certificate chain");
    return MXD_EINVAL;
}
