/* rcptsync_read: reading one recipients_source whole, on a lookup thread
 * (src/dns/lookup.c): a file (at most RCPTSYNC_FILE_MAX octets), or an
 * anonymous LDAP search (libldap, synchronous calls bounded by
 * RCPTSYNC_LDAP_TIMEOUT_S; the results paged, RFC 2696, so a server's
 * size limit does not cut the list). Owns nothing past the call: the list
 * goes back in the struct rcptsync_read. Errors: status MXD_EIO (the
 * source cannot be read: the old list stays) or MXD_EINVAL (it can, but
 * is broken), with err saying why. Does not: touch the loop or the store. */
#include <sys/stat.h>
#include <sys/time.h>

#include <errno.h>
#include <fcntl.h>
#include <lber.h>
#include <ldap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check/rcptsync_impl.h"

#define RCPTSYNC_FILE_MAX       (256u * 1024 * 1024)
#define RCPTSYNC_LDAP_TIMEOUT_S 20
#define RCPTSYNC_LDAP_PAGE      100

static int
read_file(struct rcptsync_read *r)
{
    struct stat st;
    char *text = NULL;
    size_t got = 0;
    int fd = open(r->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(r->err, sizeof(r->err), "%s: %s", r->path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > RCPTSYNC_FILE_MAX) {
        snprintf(r->err, sizeof(r->err), "%s: not a regular file of at most %u octets", r->path,
                 RCPTSYNC_FILE_MAX);
        goto fail;
    }
    text = xmalloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, text + got, (size_t)st.st_size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    fd = -1;
    if (got != (size_t)st.st_size) {
        snprintf(r->err, sizeof(r->err), "%s: changed size while read", r->path);
        goto fail;
    }
    if (rcptlist_parse(&r->list, text, got, r->err, sizeof(r->err)) != 0) {
        free(text);
        return MXD_EINVAL;
    }
    free(text);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    free(text);
    return MXD_EIO;
}

static int
ldap_fail(struct rcptsync_read *r, LDAP *ld, const char *what, int rc)
{
    snprintf(r->err, sizeof(r->err), "%s: %s", what, ldap_err2string(rc));
    if (ld != NULL)
        ldap_unbind_ext_s(ld, NULL, NULL);
    return MXD_EIO;
}

/* The values of r->attr in one page of results into r->list; entries
 * whose value is not an address are counted in r->skipped. */
static int
ldap_take(struct rcptsync_read *r, LDAP *ld, LDAPMessage *res)
{
    for (LDAPMessage *e = ldap_first_entry(ld, res); e != NULL; e = ldap_next_entry(ld, e)) {
        struct berval **vals = ldap_get_values_len(ld, e, r->attr);

        for (size_t i = 0; vals != NULL && vals[i] != NULL; i++) {
            int rc = rcptlist_add(&r->list, vals[i]->bv_val, vals[i]->bv_len);

            if (rc == MXD_ETOOBIG) {
                ldap_value_free_len(vals);
                snprintf(r->err, sizeof(r->err), "more than %u entries", RCPTLIST_MAX);
                return MXD_EINVAL;
            }
            r->skipped += rc != 0;
        }
        ldap_value_free_len(vals);
    }
    return 0;
}

static const int scopes[] = {
    [CONF_LDAP_BASE] = LDAP_SCOPE_BASE,
    [CONF_LDAP_ONE] = LDAP_SCOPE_ONELEVEL,
    [CONF_LDAP_SUB] = LDAP_SCOPE_SUBTREE,
};

/* One page: search with the paged-results control (cookie from the last
 * page), take the values, and the next cookie (empty: done). */
static int
ldap_page(struct rcptsync_read *r, LDAP *ld, struct berval *cookie, bool *more)
{
    struct timeval tv = {RCPTSYNC_LDAP_TIMEOUT_S, 0};
    char *attrs[] = {r->attr, NULL};
    LDAPControl *page = NULL, *ctrls[2] = {NULL, NULL}, **rctrls = NULL;
    LDAPMessage *res = NULL;
    int rc, err = LDAP_SUCCESS;

    rc = ldap_create_page_control(ld, RCPTSYNC_LDAP_PAGE, cookie->bv_len > 0 ? cookie : NULL, 0,
                                  &page);
    if (rc != LDAP_SUCCESS)
        return ldap_fail(r, NULL, "paged results", rc);
    ctrls[0] = page;
    rc = ldap_search_ext_s(ld, r->base, scopes[r->scope], r->filter, attrs, 0, ctrls, NULL, &tv,
                           LDAP_NO_LIMIT, &res);
    ldap_control_free(page);
    if (rc == LDAP_SUCCESS)
        rc = ldap_parse_result(ld, res, &err, NULL, NULL, NULL, &rctrls, 0);
    if (rc == LDAP_SUCCESS && err != LDAP_SUCCESS)
        rc = err;
    if (rc == LDAP_SUCCESS)
        rc = ldap_take(r, ld, res) == 0 ? LDAP_SUCCESS : LDAP_OTHER;
    *more = false;
    if (rc == LDAP_SUCCESS) {
        LDAPControl *pc = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL);
        ber_int_t count = 0;

        ber_memfree(cookie->bv_val);
        cookie->bv_val = NULL;
        cookie->bv_len = 0;
        if (pc != NULL && ldap_parse_pageresponse_control(ld, pc, &count, cookie) == LDAP_SUCCESS)
            *more = cookie->bv_len > 0;
    }
    ldap_controls_free(rctrls);
    ldap_msgfree(res);
    if (rc == LDAP_OTHER && r->err[0] != '\0')
        return MXD_EINVAL;
    return rc == LDAP_SUCCESS ? 0 : ldap_fail(r, NULL, "search", rc);
}

static int
read_ldap(struct rcptsync_read *r)
{
    struct timeval tv = {RCPTSYNC_LDAP_TIMEOUT_S, 0};
    struct berval cred = {0, NULL}, cookie = {0, NULL};
    int v3 = LDAP_VERSION3, rc;
    LDAP *ld = NULL;
    bool more = true;
    char uri[600];

    snprintf(uri, sizeof(uri), strchr(r->host, ':') != NULL ? "ldap://[%s]:%u" : "ldap://%s:%u",
             r->host, r->port);
    if ((rc = ldap_initialize(&ld, uri)) != LDAP_SUCCESS)
        return ldap_fail(r, NULL, "initialize", rc);
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    rc = ldap_sasl_bind_s(ld, NULL, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    if (rc != LDAP_SUCCESS)
        return ldap_fail(r, ld, "anonymous bind", rc);
    while (more && rc == 0)
        rc = ldap_page(r, ld, &cookie, &more);
    ber_memfree(cookie.bv_val);
    ldap_unbind_ext_s(ld, NULL, NULL);
    return rc;
}

void
rcptsync__read(struct rcptsync_read *r)
{
    r->status = r->ldap ? read_ldap(r) : read_file(r);
    if (r->status == 0)
        rcptlist_digest(&r->list, r->digest);
}
