/* test_conf: conf_parse_string/conf_load against tables of valid configs,
 * one case per error class (checking the "name:LINE:" of the report), the
 * size and duration parsers, domain lookup, CIDR matching, and the shipped
 * conf/mxd.conf. */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/conf.h"

/* Lines 1-3: the smallest valid config. */
#define BASE "[server]\nhostname = mx.example.test\ndatabase = /var/lib/mxd/queue.db\n"

static struct conf *
parse_ok(const char *text)
{
    struct conf *c = NULL;
    char *err = NULL;
    int rc = conf_parse_string(text, "t.conf", &c, &err);

    if (rc != 0)
        print_error("unexpected errors:\n%s", err != NULL ? err : "(none)\n");
    assert_int_equal(rc, 0);
    assert_null(err);
    assert_non_null(c);
    return c;
}

/* Whether errs has a line "<prefix>...<want>...". */
static bool
has_error(const char *errs, const char *prefix, const char *want)
{
    for (const char *l = errs; l != NULL && *l != '\0';) {
        const char *nl = strchr(l, '\n');
        size_t n = nl != NULL ? (size_t)(nl - l) : strlen(l);
        char *line = strndup(l, n);
        bool ok = strncmp(line, prefix, strlen(prefix)) == 0 && strstr(line, want) != NULL;

        free(line);
        if (ok)
            return true;
        l = nl != NULL ? nl + 1 : l + n;
    }
    return false;
}

static size_t
count_lines(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* ---- valid configs ---- */

struct ok_case {
    const char *name;
    const char *text;
    void (*check)(const struct conf *c);
};

static void
check_defaults(const struct conf *c)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&c->listen[0].ss;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&c->listen[1].ss;

    assert_string_equal(c->path, "t.conf");
    assert_string_equal(c->hostname, "mx.example.test");
    assert_null(c->user);
    assert_string_equal(c->database, "/var/lib/mxd/queue.db");
    assert_int_equal(c->nlisten, 2);
    assert_string_equal(c->listen[0].text, "0.0.0.0:25");
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 25);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_ANY);
    assert_int_equal(c->listen[0].sslen, sizeof(struct sockaddr_in));
    assert_string_equal(c->listen[1].text, "[::]:25");
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), 25);
    assert_memory_equal(&sin6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
    assert_int_equal(c->listen[1].sslen, sizeof(struct sockaddr_in6));
    assert_int_equal(c->max_message_size, 50 * 1024 * 1024);
    assert_int_equal(c->max_recipients, 100);
    assert_int_equal(c->max_connections, 10000);
    assert_int_equal(c->max_connections_per_ip, 20);
    assert_int_equal(c->ipv6_prefix_length, 64);
    assert_int_equal(c->command_timeout_ms, 5 * 60 * 1000);
    assert_int_equal(c->data_timeout_ms, 10 * 60 * 1000);
    assert_int_equal(c->ndns_servers, 0);
    assert_null(c->dns_servers);
    assert_int_equal(c->netrn_clients, 0);
    assert_int_equal(c->connection_rate_limit, 0);
    assert_int_equal(c->message_rate_limit, 0);
    assert_int_equal(c->recipient_rate_limit, 0);
    assert_int_equal(c->ntrusted_networks, 0);
    assert_null(c->trusted_networks);
    assert_int_equal(c->greylist_delay_s, 300);
    assert_int_equal(c->greylist_window_s, 86400);
    assert_int_equal(c->greylist_ttl_s, 35 * 86400);
    assert_null(c->metrics_listen.text);
    assert_null(c->control_socket);
    assert_null(c->tls_certificate);
    assert_null(c->tls_key);
    assert_string_equal(c->tls_priority, "NORMAL:-VERS-TLS1.0:-VERS-TLS1.1");
    assert_int_equal(c->retry_min_s, 60);
    assert_int_equal(c->retry_max_s, 3600);
    assert_int_equal(c->lifetime_s, 5 * 86400);
    assert_null(c->bounce_relay.text);
    assert_int_equal(c->spf, CONF_AUTH_TAG);
    assert_int_equal(c->dkim, CONF_AUTH_TAG);
    assert_int_equal(c->dmarc, CONF_AUTH_TAG);
    assert_int_equal(c->dkim_max_signatures, 5);
    assert_int_equal(c->dkim_timeout_ms, 5000);
    assert_int_equal(c->ndomains, 0);
}

static void
check_domain_defaults(const struct conf *c)
{
    const struct conf_domain *d = &c->domains[0];

    assert_int_equal(c->ndomains, 1);
    assert_string_equal(d->name, "example.test");
    assert_int_equal(d->mode, CONF_MODE_LOCAL);
    assert_null(d->lmtp.text);
    assert_int_equal(d->lmtp_concurrency, 8);
    assert_int_equal(d->recipients, CONF_RCPTS_ANY);
    assert_null(d->primary);
    assert_int_equal(d->nprimary, 0);
    assert_false(d->primary_mx);
    assert_int_equal(d->lifetime_s, 0);
    assert_int_equal(d->tls, CONF_TLS_OPPORTUNISTIC);
    assert_false(d->greylist);
    assert_null(d->ca_file);
}

static void
check_endpoints(const struct conf *c)
{
    const struct conf_domain *d = &c->domains[0];

    assert_int_equal(c->ndns_servers, 3);
    assert_string_equal(c->dns_servers[0].host, "127.0.0.1");
    assert_int_equal(c->dns_servers[0].port, 5353);
    assert_string_equal(c->dns_servers[1].host, "::1"); /* bare IPv6, port 53 */
    assert_int_equal(c->dns_servers[1].port, 53);
    assert_string_equal(c->dns_servers[2].text, "[2001:db8::53]:5300");
    assert_string_equal(c->dns_servers[2].host, "2001:db8::53");
    assert_int_equal(c->dns_servers[2].port, 5300);
    assert_false(c->dns_servers[2].is_unix);
    assert_string_equal(c->metrics_listen.host, "localhost");
    assert_int_equal(c->metrics_listen.port, 9125);
    assert_string_equal(c->bounce_relay.host, "relay.example.net");
    assert_int_equal(c->bounce_relay.port, 25); /* default */
    assert_true(d->lmtp.is_unix);
    assert_string_equal(d->lmtp.text, "unix:/run/dovecot/lmtp");
    assert_string_equal(d->lmtp.path, "/run/dovecot/lmtp");
    assert_null(d->lmtp.host);
    assert_false(c->domains[1].lmtp.is_unix);
    assert_string_equal(c->domains[1].lmtp.host, "::1");
    assert_int_equal(c->domains[1].lmtp.port, 24);
    assert_string_equal(c->domains[2].lmtp.host, "lmtp.example.test");
    assert_int_equal(c->domains[2].lmtp.port, 2424);
}

static void
check_backup(const struct conf *c)
{
    const struct conf_domain *d = &c->domains[0];

    assert_int_equal(c->ndomains, 2);
    assert_int_equal(d->mode, CONF_MODE_BACKUP);
    assert_int_equal(d->recipients, CONF_RCPTS_PRIMARY);
    assert_false(d->primary_mx);
    assert_int_equal(d->nprimary, 3);
    assert_string_equal(d->primary[0].host, "mx1.example.org");
    assert_int_equal(d->primary[0].port, 25);
    assert_string_equal(d->primary[1].host, "2001:db8::25");
    assert_int_equal(d->primary[1].port, 2525);
    assert_string_equal(d->primary[2].host, "192.0.2.25");
    assert_int_equal(d->primary[2].port, 587);
    assert_int_equal(d->lifetime_s, 10 * 86400);
    assert_int_equal(d->tls, CONF_TLS_VERIFY);
    assert_string_equal(d->ca_file, "/etc/ssl/ca.pem");
    assert_true(c->domains[1].primary_mx);
    assert_null(c->domains[1].primary);
    assert_int_equal(c->domains[1].recipients, CONF_RCPTS_TABLE);
    assert_int_equal(c->domains[1].tls, CONF_TLS_REQUIRED);
}

/* Issue 14 item 4: the DKIM budget's keys. */
static void
check_dkim_budget(const struct conf *c)
{
    assert_int_equal(c->dkim_max_signatures, CONF_DKIM_SIGS_MAX);
    assert_int_equal(c->dkim_timeout_ms, 30000);
}

static void
check_syntax(const struct conf *c)
{
    assert_string_equal(c->hostname, "mx.example.test");
    assert_string_equal(c->user, "mxd");
    assert_int_equal(c->max_recipients, 7);
    assert_int_equal(c->spf, CONF_AUTH_OFF);
    assert_int_equal(c->dmarc, CONF_AUTH_REJECT);
    assert_int_equal(c->ndomains, 1);
}

static void
check_bom(const struct conf *c)
{
    assert_string_equal(c->hostname, "mx.example.test");
    assert_string_equal(c->user, "mxd");
    assert_string_equal(c->database, "/var/lib/mxd/queue.db");
    assert_string_equal(c->domains[0].lmtp.path, "/l;x"); /* `;` needs a space before it */
}

static void
check_long_domain(const struct conf *c)
{
    assert_int_equal(c->ndomains, 2);
    assert_string_equal(c->domains[0].name,
                        "a-rather-long-label-for-a-test.and-another-long-label.example.test");
    assert_string_equal(c->domains[1].name,
                        "a-rather-long-label-for-a-test.and-another-long-label.example.org");
    assert_int_equal(c->domains[1].mode, CONF_MODE_BACKUP);
}

static void
check_etrn(const struct conf *c)
{
    assert_int_equal(c->netrn_clients, 3);
    assert_int_equal(c->etrn_clients[0].family, AF_INET);
    assert_int_equal(c->etrn_clients[0].prefix, 32);
    assert_int_equal(c->etrn_clients[1].family, AF_INET6);
    assert_int_equal(c->etrn_clients[1].prefix, 32);
    assert_int_equal(c->etrn_clients[2].prefix, 0);
}

static void
check_rate_limits(const struct conf *c)
{
    assert_int_equal(c->connection_rate_limit, 30);
    assert_int_equal(c->message_rate_limit, 1000000);
    assert_int_equal(c->recipient_rate_limit, 0);
    assert_int_equal(c->ntrusted_networks, 2);
    assert_int_equal(c->trusted_networks[0].family, AF_INET);
    assert_int_equal(c->trusted_networks[0].prefix, 24);
    assert_int_equal(c->trusted_networks[1].family, AF_INET6);
    assert_int_equal(c->trusted_networks[1].prefix, 48);
}

static void
check_greylist(const struct conf *c)
{
    assert_int_equal(c->ntrusted_networks, 2);
    assert_int_equal(c->trusted_networks[0].family, AF_INET);
    assert_int_equal(c->trusted_networks[0].prefix, 24);
    assert_int_equal(c->trusted_networks[1].family, AF_INET6);
    assert_int_equal(c->greylist_delay_s, 2);
    assert_int_equal(c->greylist_window_s, 3);
    assert_int_equal(c->greylist_ttl_s, 7 * 86400);
    assert_true(c->domains[0].greylist);
    assert_false(c->domains[1].greylist);
}

static void
check_limits(const struct conf *c)
{
    assert_int_equal(c->max_message_size, UINT64_C(16) << 30);
    assert_int_equal(c->max_recipients, 100000);
    assert_int_equal(c->max_connections, 1);
    assert_int_equal(c->command_timeout_ms, 1000);
    assert_int_equal(c->data_timeout_ms, 2 * 86400 * 1000);
    assert_int_equal(c->retry_min_s, 3600);
    assert_int_equal(c->retry_max_s, 3600);
    assert_int_equal(c->domains[0].lmtp_concurrency, 1000);
}

/* Issue 16: listeners marked proxy, the balancers' networks, the timeout. */
static void
check_proxy(const struct conf *c)
{
    assert_int_equal(c->nlisten, 3);
    assert_string_equal(c->listen[0].text, "0.0.0.0:25");
    assert_true(c->listen[0].proxy);
    assert_string_equal(c->listen[1].text, "[::1]:25");
    assert_true(c->listen[1].proxy);
    assert_string_equal(c->listen[2].text, "127.0.0.1:2525");
    assert_false(c->listen[2].proxy);
    assert_int_equal(c->nproxy_networks, 2);
    assert_int_equal(c->proxy_networks[0].prefix, 24);
    assert_int_equal(c->proxy_networks[1].family, AF_INET6);
    assert_int_equal(c->proxy_timeout_ms, 3000);
}

static void
check_greet(const struct conf *c)
{
    assert_int_equal(c->greet_action, CONF_GREET_DROP);
    assert_int_equal(c->greet_wait_ms, 3000);
    assert_int_equal(c->greet_stress_wait_ms, 1000);
    assert_int_equal(c->greet_banner, 0);
    assert_int_equal(c->screen_ttl_s, 3600);
}

static void
check_greet_default(const struct conf *c)
{
    assert_int_equal(c->greet_action, CONF_GREET_OFF);
    assert_int_equal(c->greet_wait_ms, 6000);
    assert_int_equal(c->greet_stress_wait_ms, 2000);
    assert_int_equal(c->greet_banner, 1);
    assert_int_equal(c->screen_ttl_s, 86400);
}

/* A greet_wait shorter than the default stress wait: the stress wait
 * counts as greet_wait (pregreet_wait_ms), no error. */
static void
check_greet_short(const struct conf *c)
{
    assert_int_equal(c->greet_action, CONF_GREET_REJECT);
    assert_int_equal(c->greet_wait_ms, 1000);
    assert_int_equal(c->greet_stress_wait_ms, 2000);
}

static void
check_proxy_default(const struct conf *c)
{
    assert_false(c->listen[0].proxy);
    assert_int_equal(c->nproxy_networks, 0);
    assert_int_equal(c->proxy_timeout_ms, 5000);
}

/* [milter NAME] sections (named before or after the lists that use them),
 * inline sockets with the [server] milter_* values, per-domain lists. */
static void
check_milter_sections(const struct conf *c)
{
    const struct conf_milter *r, *inl, *clam;
    const struct conf_domain *a = conf_domain_find(c, "a.example", 9);
    const struct conf_domain *b = conf_domain_find(c, "b.example", 9);
    const struct conf_domain *d = conf_domain_find(c, "c.example", 9);

    assert_int_equal(c->nmilter_defs, 3);
    assert_int_equal(c->milters.n, 2);
    r = c->milters.v[0];
    inl = c->milters.v[1];
    assert_string_equal(r->name, "rspamd");
    assert_false(r->is_inline);
    assert_string_equal(r->socket.text, "inet:127.0.0.1:11332");
    assert_string_equal(r->socket.host, "127.0.0.1");
    assert_int_equal(r->socket.port, 11332);
    assert_int_equal(r->content_timeout_ms, 120000);
    assert_int_equal(r->command_timeout_ms, 10000); /* [server] milter_command_timeout */
    assert_int_equal(r->connect_timeout_ms, 30000);
    assert_int_equal(r->default_action, CONF_MILTER_REJECT);
    assert_string_equal(inl->name, "inet:127.0.0.1:7357");
    assert_true(inl->is_inline);
    assert_int_equal(inl->socket.port, 7357);
    assert_int_equal(inl->default_action, CONF_MILTER_ACCEPT);
    assert_int_equal(inl->command_timeout_ms, 10000);
    assert_int_equal(inl->content_timeout_ms, 300000);
    assert_true(a->milters_set);
    assert_int_equal(a->milters.n, 3);
    clam = a->milters.v[0];
    assert_string_equal(clam->name, "clam");
    assert_true(clam->socket.is_unix);
    assert_string_equal(clam->socket.path, "/run/clamav/milter.sock");
    assert_int_equal(clam->default_action, CONF_MILTER_TEMPFAIL);
    assert_ptr_equal(a->milters.v[1], r);   /* one entry per filter */
    assert_ptr_equal(a->milters.v[2], inl); /* the same socket: the same filter */
    for (size_t i = 0; i < c->nmilter_defs; i++)
        assert_int_equal(c->milter_defs[i].index, i);
    assert_true(b->milters_set);
    assert_int_equal(b->milters.n, 0);
    assert_false(d->milters_set);
    assert_int_equal(d->milters.n, 0);
}

/* The inline form of before the sections: every item a socket. */
static void
check_milter_inline(const struct conf *c)
{
    assert_int_equal(c->milters.n, 2);
    assert_int_equal(c->nmilter_defs, 2);
    assert_true(c->milters.v[0]->is_inline);
    assert_string_equal(c->milters.v[0]->name, "inet:127.0.0.1:11332");
    assert_true(c->milters.v[1]->socket.is_unix);
    assert_int_equal(c->milters.v[1]->default_action, CONF_MILTER_TEMPFAIL);
    assert_int_equal(c->milters.v[1]->connect_timeout_ms, 30000);
    assert_int_equal(c->milters.v[1]->content_timeout_ms, 300000);
}

static void
check_milter_none(const struct conf *c)
{
    assert_int_equal(c->milters.n, 0);
    assert_int_equal(c->nmilter_defs, 0);
    assert_null(c->milters.v);
}

static struct ok_case ok_cases[] = {
    {"milter sections",
     BASE "milters = rspamd, inet:127.0.0.1:7357\nmilter_default_action = accept\n"
          "milter_command_timeout = 10s\n"
          "[milter rspamd]\nsocket = inet:127.0.0.1:11332\ncontent_timeout = 2m\n"
          "default_action = reject\n"
          "[domain a.example]\nmilters = clam, rspamd, inet:127.0.0.1:7357\n"
          "[domain b.example]\nmilters = none\n[domain c.example]\n"
          "[milter clam]\nsocket = unix:/run/clamav/milter.sock\ndefault_action = tempfail\n",
     check_milter_sections},
    {"milters inline", BASE "milters = inet:127.0.0.1:11332 , unix:/run/f.sock\n",
     check_milter_inline},
    {"milters none", BASE "milters = none\n", check_milter_none},
    {"no milters", BASE, check_milter_none},

    {"proxy",
     BASE "listen = 0.0.0.0:25 proxy, [::1]:25\tproxy , 127.0.0.1:2525\n"
          "proxy_networks = 10.1.2.0/24, ::1\nproxy_timeout = 3s\n",
     check_proxy},
    {"proxy off by default", BASE, check_proxy_default},
    {"greet",
     BASE "greet_action = drop\ngreet_wait = 3s\ngreet_stress_wait = 1\n"
          "greet_banner = off\nscreen_ttl = 1h\n",
     check_greet},
    {"greet off by default", BASE, check_greet_default},
    {"greet short wait", BASE "greet_action = reject\ngreet_wait = 1\n", check_greet_short},
    {"defaults", BASE, check_defaults},
    {"empty sections", BASE "[tls]\n[queue]\n[auth]\n", check_defaults},
    {"domain defaults", BASE "[domain example.test]\n", check_domain_defaults},
    {"endpoints",
     BASE "dns_servers = 127.0.0.1:5353, ::1, [2001:db8::53]:5300\n"
          "metrics_listen = localhost:9125\n"
          "[queue]\nbounce_relay = relay.example.net\n"
          "[domain a.example]\nlmtp = unix:/run/dovecot/lmtp\n"
          "[domain b.example]\nlmtp = [::1]:24\n"
          "[domain c.example]\nlmtp = lmtp.example.test:2424\n",
     check_endpoints},
    {"backup domains",
     BASE "[domain example.org]\nmode = backup\n"
          "primary = mx1.example.org, [2001:db8::25]:2525,192.0.2.25:587\n"
          "recipients = primary\nlifetime = 10d\ntls = verify\nca_file = /etc/ssl/ca.pem\n"
          "[domain example.net]\nmode = backup\nprimary = mx\nrecipients = table\n"
          "tls = required\n",
     check_backup},
    /* BOM, CRLF, indentation, both comment styles, inline `;`, no final newline. */
    {"syntax",
     "\xef\xbb\xbf; comment\r\n# comment\r\n\r\n  [server]  ; inline\r\n"
     "\thostname=mx.example.test\r\n   user   =   mxd   ; inline comment\r\n"
     "database = /var/lib/mxd/queue.db\r\n[domain example.test]\r\nlmtp = unix:/l;x",
     check_bom},
    {"inline comments",
     BASE "user = mxd ; the user\nmax_recipients = 7    ; seven\n"
          "[ auth ] ; spaces inside brackets\nspf = off\ndmarc = reject ; honour p=reject\n"
          "[domain  example.test ]\n",
     check_syntax},
    {"long domain names",
     BASE "[domain a-rather-long-label-for-a-test.and-another-long-label.example.test]\n"
          "[domain A-rather-long-label-for-a-test.and-another-long-label.EXAMPLE.org]\n"
          "mode = backup\nprimary = mx\n",
     check_long_domain},
    {"etrn clients", BASE "etrn_clients = 192.0.2.10, 2001:db8::/32, 0.0.0.0/0\n", check_etrn},
    {"rate limits",
     BASE "connection_rate_limit = 30\nmessage_rate_limit = 1000000\nrecipient_rate_limit = 0\n"
          "trusted_networks = 192.0.2.0/24, 2001:db8:25::/48\n",
     check_rate_limits},
    {"greylist",
     BASE "trusted_networks = 192.0.2.0/24, 2001:db8::/32\ngreylist_delay = 2s\n"
          "greylist_window = 3\ngreylist_ttl = 7d\n"
          "[domain a.example]\ngreylist = on\n[domain b.example]\ngreylist = off\n",
     check_greylist},
    {"dkim budget", BASE "[auth]\ndkim_max_signatures = 20\ndkim_timeout = 30s\n",
     check_dkim_budget},
    {"limits",
     BASE "max_message_size = 16g\nmax_recipients = 100000\nmax_connections = 1\n"
          "command_timeout = 1\ndata_timeout = 2d\n"
          "[queue]\nretry_min = 1h\nretry_max = 60m\n"
          "[domain example.test]\nlmtp_concurrency = 1000\n",
     check_limits},
};

static void
test_ok_case(void **state)
{
    const struct ok_case *tc = *state;
    struct conf *c = parse_ok(tc->text);

    if (tc->check != NULL)
        tc->check(c);
    conf_free(c);
}

/* ---- errors: each must be reported as "t.conf:LINE: ...want..." ---- */

struct err_case {
    const char *name;
    const char *text;
    int line;
    const char *want;
};

static struct err_case err_cases[] = {
    {"milters unknown name", BASE "milters = rspamd\n", 4,
     "milters: no [milter NAME] section of that name (got 'rspamd')"},
    {"milters bad item", BASE "milters = a/b\n", 4,
     "milters: want a [milter NAME] section's name or a socket"},
    {"milters host name", BASE "milters = inet:localhost:11332\n", 4,
     "milters: not an IP address (got 'inet:localhost:11332')"},
    {"milters empty item", BASE "milters = inet:127.0.0.1:1,,unix:/a\n", 4, "milters: empty item"},
    {"milters none not alone", BASE "milters = none, inet:127.0.0.1:1\n", 4,
     "milters: 'none' must be alone"},
    {"milters named twice", BASE "milters = a, A\n[milter a]\nsocket = unix:/a\n", 4,
     "milters: 'A' is named twice"},
    {"milter bad socket", BASE "milters = a\n[milter a]\nsocket = tcp:192.0.2.1\n", 6, "socket: "},
    {"milter missing socket", BASE "milters = a\n[milter a]\ncontent_timeout = 1m\n", 5,
     "[milter a]: missing socket"},
    {"milter duplicate section",
     BASE "milters = a\n[milter a]\nsocket = unix:/a\n[milter A]\nsocket = unix:/b\n", 7,
     "duplicate [milter A] (first at line 5)"},
    {"milter unused section", BASE "[milter a]\nsocket = unix:/a\n", 4,
     "[milter a]: no milters list names it"},
    {"milter bad name", BASE "[milter a:b]\n", 4, "bad filter name in [milter a:b]"},
    {"milter without name", BASE "[milter]\n", 4, "missing NAME in [milter"},
    {"milter unknown key", BASE "milters = a\n[milter a]\nsocket = unix:/a\nfrob = 1\n", 7,
     "unknown key 'frob' in [milter]"},
    {"milter bad action", BASE "milters = a\n[milter a]\nsocket = unix:/a\ndefault_action = drop\n",
     7, "default_action: want accept|tempfail|reject"},
    {"milter server key", BASE "milters = a\n[milter a]\nsocket = unix:/a\nmilters = a\n", 7,
     "unknown key 'milters' in [milter]"},
    {"domain milters unknown", BASE "[domain a.example]\nmilters = x\n", 5,
     "milters: no [milter NAME] section of that name (got 'x')"},

    {"unknown section", BASE "[bogus]\nfoo = 1\n", 4, "unknown section [bogus]"},
    {"unknown key", BASE "frob = 1\n", 4, "unknown key 'frob' in [server]"},
    {"unknown domain key", BASE "[domain a.example]\nspf = off\n", 5,
     "unknown key 'spf' in [domain]"},
    {"key of other section", BASE "[tls]\nhostname = x.example\n", 5,
     "unknown key 'hostname' in [tls]"},
    {"duplicate key", BASE "hostname = b.example\n", 4,
     "duplicate key 'hostname' (first at line 2)"},
    {"duplicate bad key", BASE "user =\nuser = x\n", 5, "duplicate key 'user' (first at line 4)"},
    {"duplicate domain key", BASE "[domain a.example]\nmode = local\nmode = local\n", 6,
     "duplicate key 'mode' (first at line 5)"},
    {"duplicate domain", BASE "[domain a.example]\n[domain A.Example]\n", 5,
     "duplicate [domain a.example] (first at line 4)"},
    {"duplicate section", BASE "[tls]\n[server]\n", 5, "duplicate [server] (first at line 1)"},
    {"bad domain name", BASE "[domain -a.example]\n", 4, "bad domain name"},
    {"domain with underscore", BASE "[domain a_b.example]\n", 4, "bad domain name"},
    {"domain numeric tld", BASE "[domain 192.0.2.1]\n", 4, "bad domain name"},
    {"domain without name", BASE "[domain]\n", 4, "missing NAME in [domain"},
    {"domain two names", BASE "[domain a.example b.example]\n", 4, "bad domain name"},
    {"key before section", "user = mxd\n" BASE, 1, "'user' before any [section]"},
    {"missing bracket", BASE "[tls\n", 4, "missing ']'"},
    {"text after bracket", BASE "[tls] x\n", 4, "unexpected text after ']'"},
    {"no equals", BASE "user\n", 4, "expected 'key = value'"},
    {"colon separator", BASE "user: mxd\n", 4, "expected 'key = value'"},
    {"missing key", BASE "= mxd\n", 4, "missing key before '='"},
    {"empty value", BASE "user =\n", 4, "user: empty value"},
    {"empty after comment", BASE "user = ; nobody\n", 4, "user: empty value"},
    {"hash is no inline comment", BASE "max_recipients = 5 # five\n", 4, "max_recipients: want"},
    {"hostname with underscore", "[server]\nhostname = mx_1.example\ndatabase = q.db\n", 2,
     "hostname: not a valid host name"},
    {"bad size suffix", BASE "max_message_size = 50x\n", 4, "max_message_size: want a size"},
    {"size with space", BASE "max_message_size = 50 m\n", 4, "max_message_size: want a size"},
    {"zero size", BASE "max_message_size = 0\n", 4, "max_message_size: must be greater than zero"},
    {"size overflow", BASE "max_message_size = 17179869184g\n", 4, "max_message_size: want a size"},
    {"bad duration", BASE "command_timeout = 5w\n", 4, "command_timeout: want a duration"},
    {"negative duration", BASE "command_timeout = -5s\n", 4, "command_timeout: want a duration"},
    {"zero timeout", BASE "data_timeout = 0s\n", 4, "data_timeout: must be greater than zero"},
    {"duration overflow", BASE "data_timeout = 18446744073709552\n", 4, "want a duration"},
    {"zero retry", BASE "[queue]\nretry_min = 0\n", 5, "retry_min: must be greater than zero"},
    {"zero domain lifetime", BASE "[domain a.example]\nlifetime = 0d\n", 5,
     "lifetime: must be greater than zero"},
    {"negative int", BASE "max_recipients = -1\n", 4,
     "max_recipients: want an integer from 1 to 100000"},
    {"plus sign", BASE "max_recipients = +5\n", 4, "max_recipients: want an integer"},
    {"zero int", BASE "max_recipients = 0\n", 4, "max_recipients: want an integer"},
    {"int over max", BASE "max_recipients = 100001\n", 4, "max_recipients: want an integer"},
    {"int junk", BASE "max_connections = 10x\n", 4, "max_connections: want an integer"},
    {"int overflow", BASE "max_connections_per_ip = 99999999999999999999999\n", 4,
     "max_connections_per_ip: want an integer"},
    {"ipv6 prefix too short", BASE "ipv6_prefix_length = 8\n", 4,
     "ipv6_prefix_length: want an integer from 16 to 128"},
    {"ipv6 prefix too long", BASE "ipv6_prefix_length = 129\n", 4,
     "ipv6_prefix_length: want an integer from 16 to 128"},
    {"concurrency over max", BASE "[domain a.example]\nlmtp_concurrency = 1001\n", 5,
     "lmtp_concurrency: want an integer from 1 to 1000"},
    /* issue 18: paced release */
    {"primary_concurrency 0", BASE "[domain a.example]\nprimary_concurrency = 0\n", 5,
     "primary_concurrency: want an integer from 1 to 1000"},
    {"release_rate negative", BASE "[domain a.example]\nrelease_rate = -1\n", 5,
     "release_rate: want an integer from 0 to 100000"},
    {"release_rate not a number", BASE "[domain a.example]\nrelease_rate = 5/s\n", 5,
     "release_rate: want an integer from 0 to 100000"},
    {"missing hostname", "[server]\ndatabase = q.db\n", 1,
     "missing required key 'hostname' in [server]"},
    {"missing database", "[server]\nhostname = mx.example.test\n", 1,
     "missing required key 'database' in [server]"},
    {"missing server", "\n\n[tls]\n", 3, "missing required key 'hostname' in [server]"},
    {"empty file", "", 1, "missing required key 'database' in [server]"},
    {"certificate without key", BASE "[tls]\ncertificate = /etc/mxd/cert.pem\n", 5,
     "set both certificate and key"},
    {"key without certificate", BASE "[tls]\npriority = NORMAL\nkey = /etc/mxd/key.pem\n", 6,
     "set both certificate and key"},
    {"retry_max below retry_min", BASE "[queue]\nretry_min = 2h\nretry_max = 1h\n", 6,
     "retry_max: must not be less than retry_min"},
    {"retry_min above default max", BASE "[queue]\nretry_min = 2h\n", 5,
     "retry_max: must not be less than retry_min"},
    {"listen without port", BASE "listen = 0.0.0.0\n", 4, "listen: missing :port"},
    {"listen v6 without brackets", BASE "listen = ::1:25\n", 4, "needs brackets"},
    {"listen name", BASE "listen = localhost:25\n", 4,
     "listen: not an IP address (got 'localhost:25')"},
    {"listen port 0", BASE "listen = 127.0.0.1:0\n", 4, "listen: the port must be"},
    {"listen port too big", BASE "listen = 127.0.0.1:65536\n", 4, "listen: the port must be"},
    {"listen empty item", BASE "listen = 127.0.0.1:25, \n", 4, "listen: empty item"},
    {"listen bad v6", BASE "listen = [::1::2]:25\n", 4, "listen: bad IPv6 address"},
    {"listen second item", BASE "listen = 127.0.0.1:25, [::1]25\n", 4, "'[::1]25'"},
    {"listen unix", BASE "listen = unix:/run/mxd.sock\n", 4, "not allowed here"},
    {"listen bad v4", BASE "listen = 127.0.0.256:25\n", 4, "listen: not an IP address"},
    {"dns server name", BASE "dns_servers = ns.example.net:53\n", 4,
     "dns_servers: not an IP address"},
    {"metrics without port", BASE "metrics_listen = 127.0.0.1\n", 4,
     "metrics_listen: missing :port"},
    {"bounce relay bad host", BASE "[queue]\nbounce_relay = relay..example:25\n", 5,
     "bounce_relay: bad host name"},
    {"listen unknown option", BASE "listen = 127.0.0.1:25 proxi\n", 4,
     "listen: unknown listen option (the only one is 'proxy') (got '127.0.0.1:25 proxi')"},
    {"listen two options", BASE "listen = 127.0.0.1:25 proxy proxy\n", 4,
     "listen: unknown listen option"},
    {"listen proxy bad address", BASE "listen = 127.0.0.1 proxy\n", 4, "listen: missing :port"},
    {"listen proxy without networks", BASE "max_recipients = 5\nlisten = 127.0.0.1:25 proxy\n", 5,
     "listen: an address marked proxy needs proxy_networks"},
    {"proxy networks without listener", BASE "proxy_networks = 10.0.0.0/8\n", 4,
     "proxy_networks: no listen address is marked proxy"},
    {"proxy networks bad", BASE "listen = 127.0.0.1:25 proxy\nproxy_networks = 10.0.0.1/8\n", 5,
     "proxy_networks: host bits set"},
    {"proxy networks name", BASE "listen = 127.0.0.1:25 proxy\nproxy_networks = lb.example\n", 5,
     "proxy_networks: bad IP address"},
    {"proxy timeout zero", BASE "proxy_timeout = 0s\n", 4, "proxy_timeout: must be greater"},
    {"greet action bad", BASE "greet_action = enforce\n", 4,
     "greet_action: want off|ignore|reject|drop (got 'enforce')"},
    {"greet wait too long", BASE "greet_wait = 2m\n", 4, "greet_wait: at most 60s"},
    {"greet wait over command timeout",
     BASE "greet_action = reject\ncommand_timeout = 10s\ngreet_wait = 10s\n", 6,
     "greet_wait: must be shorter than command_timeout"},
    {"greet stress longer", BASE "greet_wait = 3s\ngreet_stress_wait = 4s\n", 5,
     "greet_stress_wait: must not be longer than greet_wait"},
    {"greet banner bad", BASE "greet_banner = yes\n", 4, "greet_banner: want off|on"},
    {"screen ttl zero", BASE "screen_ttl = 0\n", 4, "screen_ttl: must be greater"},
    {"proxy timeout junk", BASE "proxy_timeout = soon\n", 4, "proxy_timeout: want a duration"},
    {"etrn host bits", BASE "etrn_clients = 192.0.2.1/24\n", 4, "host bits set"},
    {"trusted bad ip", BASE "trusted_networks = 192.0.2.0/24, nowhere\n", 4,
     "trusted_networks: bad IP address"},
    {"greylist yes", BASE "[domain a.example]\ngreylist = yes\n", 5,
     "greylist: want on or off (got 'yes')"},
    {"greylist window", BASE "greylist_delay = 1h\ngreylist_window = 30m\n", 5,
     "greylist_window: must be longer than greylist_delay"},
    {"greylist window default", BASE "greylist_delay = 2d\n", 4,
     "greylist_window: must be longer than greylist_delay"},
    {"greylist ttl zero", BASE "greylist_ttl = 0\n", 4, "greylist_ttl: must be greater than zero"},
    {"etrn bad prefix", BASE "etrn_clients = 10.0.0.0/33\n", 4, "bad prefix length"},
    {"etrn bad v6 prefix", BASE "etrn_clients = 2001:db8::/129\n", 4, "bad prefix length"},
    {"etrn bad ip", BASE "etrn_clients = 192.0.2\n", 4, "etrn_clients: bad IP address"},
    {"etrn hostname", BASE "etrn_clients = client.example\n", 4, "etrn_clients: bad IP address"},
    {"rate limit negative", BASE "connection_rate_limit = -1\n", 4,
     "connection_rate_limit: want an integer from 0 to 1000000 (got '-1')"},
    {"rate limit too big", BASE "message_rate_limit = 1000001\n", 4,
     "message_rate_limit: want an integer from 0 to 1000000"},
    {"rate limit word", BASE "recipient_rate_limit = lots\n", 4,
     "recipient_rate_limit: want an integer"},
    {"trusted host bits", BASE "trusted_networks = 192.0.2.1/24\n", 4, "host bits set"},
    {"trusted hostname", BASE "trusted_networks = 127.0.0.1, mx.example\n", 4,
     "trusted_networks: bad IP address"},
    {"rate limit in domain", BASE "[domain a.example]\nmessage_rate_limit = 5\n", 5,
     "unknown key 'message_rate_limit' in [domain]"},
    {"control socket too long",
     BASE "control_socket = /run/mxd/"
          "0123456789012345678901234567890123456789012345678901234567890123456789"
          "0123456789012345678901234567890123456789\n",
     4, "control_socket: socket path too long"},
    {"bad spf", BASE "[auth]\nspf = yes\n", 5, "spf: want off|tag|reject (got 'yes')"},
    {"dkim reject", BASE "[auth]\ndkim = reject\n", 5, "dkim: want off|tag (got 'reject')"},
    {"enum is case-sensitive", BASE "[auth]\ndmarc = Tag\n", 5, "dmarc: want"},
    {"no dkim signatures", BASE "[auth]\ndkim_max_signatures = 0\n", 5,
     "dkim_max_signatures: want an integer from 1 to 20 (got '0')"},
    {"too many dkim signatures", BASE "[auth]\ndkim_max_signatures = 21\n", 5,
     "dkim_max_signatures: want an integer from 1 to 20"},
    {"zero dkim timeout", BASE "[auth]\ndkim_timeout = 0\n", 5, "dkim_timeout: must be"},
    {"bad mode", BASE "[domain a.example]\nmode = primary\n", 5, "mode: want local|backup"},
    {"bad recipients", BASE "[domain a.example]\nrecipients = all\n", 5, "recipients: want"},
    {"bad tls", BASE "[domain a.example]\ntls = yes\n", 5, "tls: want opportunistic|"},
    {"backup without primary", BASE "[domain b.example]\nmode = backup\n", 4,
     "[domain b.example]: mode = backup needs primary"},
    {"primary with local", BASE "[domain a.example]\nprimary = mx\n", 5,
     "primary: only valid with mode = backup"},
    {"lmtp with backup", BASE "[domain b.example]\nmode = backup\nprimary = mx\nlmtp = unix:/l\n",
     7, "lmtp: only valid with mode = local"},
    {"recipients primary with local", BASE "[domain a.example]\nrecipients = primary\n", 5,
     "recipients = primary: only valid with mode = backup"},
    {"recipients lmtp with backup",
     BASE "[domain b.example]\nrecipients = lmtp\nmode = backup\nprimary = mx\n", 5,
     "recipients = lmtp: only valid with mode = local"},
    {"recipients lmtp without lmtp", BASE "[domain a.example]\nrecipients = lmtp\n", 5,
     "recipients = lmtp: needs lmtp"},
    {"lmtp relative path", BASE "[domain a.example]\nlmtp = unix:run/lmtp\n", 5,
     "lmtp: want unix:/absolute/path"},
    {"lmtp without port", BASE "[domain a.example]\nlmtp = lmtp.example\n", 5,
     "lmtp: missing :port"},
    {"lmtp empty host", BASE "[domain a.example]\nlmtp = :24\n", 5, "lmtp: missing host"},
    {"primary bad port", BASE "[domain b.example]\nmode = backup\nprimary = mx1.example:0\n", 6,
     "primary: the port must be"},
    {"primary bad item", BASE "[domain b.example]\nmode = backup\nprimary = a.example,,b.example\n",
     6, "primary: empty item"},
};

static void
test_err_case(void **state)
{
    const struct err_case *tc = *state;
    struct conf *c = (struct conf *)1;
    char *err = NULL;
    char prefix[64];
    int rc = conf_parse_string(tc->text, "t.conf", &c, &err);

    snprintf(prefix, sizeof(prefix), "t.conf:%d: ", tc->line);
    assert_int_equal(rc, MXD_ECONFIG);
    assert_null(c);
    assert_non_null(err);
    if (!has_error(err, prefix, tc->want))
        print_error("want \"%s...%s\" in:\n%s", prefix, tc->want, err);
    assert_true(has_error(err, prefix, tc->want));
    assert_int_equal(err[strlen(err) - 1], '\n');
    free(err);
}

/* ---- tests that are not one table row ---- */

static void
test_all_errors_reported(void **state)
{
    const char *text = BASE "max_recipients = 0\n"         /* 4 */
                            "[bogus]\nignored = 1\n"       /* 5, 6: keys of a bad section */
                            "[domain a.example]\n"         /* 7 */
                            "mode = bogus\nprimary = mx\n" /* 8; 9 no noise: mode is bad */
                            "[auth]\nspf = maybe\n";       /* 11 */
    struct conf *c = NULL;
    char *err = NULL;

    (void)state;
    assert_int_equal(conf_parse_string(text, "t.conf", &c, &err), MXD_ECONFIG);
    assert_null(c);
    assert_true(has_error(err, "t.conf:4: ", "max_recipients"));
    assert_true(has_error(err, "t.conf:5: ", "unknown section"));
    assert_true(has_error(err, "t.conf:8: ", "mode: want"));
    assert_true(has_error(err, "t.conf:11: ", "spf: want"));
    assert_int_equal(count_lines(err), 4);
    free(err);
}

static void
test_long_line(void **state)
{
    char text[1024];
    struct conf *c = NULL;
    char *err = NULL;

    (void)state;
    snprintf(text, sizeof(text), BASE "user = %0300d\nmax_recipients = 0\n", 0);
    assert_int_equal(conf_parse_string(text, "t.conf", &c, &err), MXD_ECONFIG);
    assert_true(has_error(err, "t.conf:4: ", "line longer than"));
    assert_true(has_error(err, "t.conf:5: ", "max_recipients")); /* the count stays right */
    assert_int_equal(count_lines(err), 2);
    free(err);
}

/* Found by tests/fuzz (fuzz_conf): a comment line longer than inih's line
 * buffer was copied into it whole, overrunning inih's stack. */
static void
test_conf_issue9_long_comment(void **state)
{
    char text[4096];
    struct conf *c = NULL;
    char *err = NULL;

    (void)state;
    snprintf(text, sizeof(text), "# %03000d\n" BASE "; %0400d\nmax_recipients = 7\n#\n", 0, 0);
    assert_int_equal(conf_parse_string(text, "t.conf", &c, &err), 0);
    assert_null(err);
    assert_int_equal(c->max_recipients, 7);
    conf_free(c);
}

static void
test_bad_arguments(void **state)
{
    struct conf *c = NULL;
    char *err = NULL;
    uint64_t v = 7;

    (void)state;
    assert_int_equal(conf_parse_string(NULL, "t", &c, &err), MXD_EINVAL);
    assert_int_equal(conf_parse_string(BASE, NULL, &c, &err), MXD_EINVAL);
    assert_int_equal(conf_load(NULL, &c, &err), MXD_EINVAL);
    assert_int_equal(conf_parse_size(NULL, &v), MXD_EINVAL);
    assert_int_equal(conf_parse_duration_ms(NULL, &v), MXD_EINVAL);
    assert_int_equal(v, 7);
    conf_free(NULL);
    assert_null(conf_domain_find(NULL, "a", 1));
}

static void
test_load_missing(void **state)
{
    struct conf *c = (struct conf *)1;
    char *err = NULL;

    (void)state;
    assert_int_equal(conf_load("/nonexistent/mxd.conf", &c, &err), MXD_EIO);
    assert_null(c);
    assert_non_null(strstr(err, "/nonexistent/mxd.conf: cannot open: "));
    free(err);
    assert_int_equal(conf_load("/", &c, &err), MXD_EIO); /* a directory */
    assert_null(c);
    free(err);
}

static void
test_load_nul_byte(void **state)
{
    static const char text[] = BASE "user = a\0b\nmax_recipients = 0\n";
    char path[] = "/tmp/test_conf_XXXXXX";
    int fd = mkstemp(path);
    struct conf *c = NULL;
    char *err = NULL;
    char prefix[64];

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, sizeof(text) - 1), sizeof(text) - 1);
    close(fd);
    assert_int_equal(conf_load(path, &c, &err), MXD_ECONFIG);
    unlink(path);
    snprintf(prefix, sizeof(prefix), "%s:4: ", path);
    assert_true(has_error(err, prefix, "NUL byte"));
    snprintf(prefix, sizeof(prefix), "%s:5: ", path);
    assert_true(has_error(err, prefix, "max_recipients"));
    free(err);
}

static char *
data_path(const char *rel)
{
    const char *dir = getenv("MXD_TEST_DATA");
    char *p;
    int n;

    if (dir == NULL)
        return NULL;
    n = snprintf(NULL, 0, "%s/%s", dir, rel);
    p = malloc((size_t)n + 1);
    assert_non_null(p);
    snprintf(p, (size_t)n + 1, "%s/%s", dir, rel);
    return p;
}

static struct conf *
load_ok(const char *path)
{
    struct conf *c = NULL;
    char *err = NULL;
    int rc = conf_load(path, &c, &err);

    if (rc != 0)
        print_error("%s: unexpected errors:\n%s", path, err != NULL ? err : "(none)\n");
    assert_int_equal(rc, 0);
    assert_null(err);
    return c;
}

/* The quick-start config in the source tree loads cleanly. */
static void
test_shipped_config(void **state)
{
    char *path = data_path("../../../conf/mxd.conf");
    const struct sockaddr_in *sin;
    const struct conf_domain *d;
    struct conf *c;

    (void)state;
    if (path == NULL)
        skip();
    c = load_ok(path);
    assert_string_equal(c->path, path);
    assert_string_equal(c->hostname, "mx.example.test");
    assert_null(c->user);
    assert_string_equal(c->database, "var/mxd/queue.db");
    assert_int_equal(c->nlisten, 1);
    sin = (const struct sockaddr_in *)&c->listen[0].ss;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 2525);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(c->max_message_size, 50 * 1024 * 1024);
    assert_null(c->tls_certificate);
    assert_null(c->tls_key);
    assert_int_equal(c->ndomains, 1);
    d = conf_domain_find(c, "example.test", strlen("example.test"));
    assert_non_null(d);
    assert_int_equal(d->mode, CONF_MODE_LOCAL);
    assert_int_equal(d->recipients, CONF_RCPTS_ANY);
    assert_true(d->lmtp.is_unix);
    assert_string_equal(d->lmtp.path, "/run/dovecot/lmtp");
    conf_free(c);
    free(path);
}

/* tests/unit/data/conf/full.conf sets every key. */
static void
test_full_config(void **state)
{
    char *path = data_path("conf/full.conf");
    struct conf *c;

    (void)state;
    if (path == NULL)
        skip();
    c = load_ok(path);
    assert_string_equal(c->hostname, "MX1.Example.NET");
    assert_string_equal(c->user, "mxd");
    assert_int_equal(c->nlisten, 2);
    assert_int_equal(c->listen[1].ss.ss_family, AF_INET6);
    assert_int_equal(c->max_message_size, 10 * 1024 * 1024);
    assert_int_equal(c->max_recipients, 1000);
    assert_int_equal(c->max_connections, 500);
    assert_int_equal(c->max_connections_per_ip, 5);
    assert_int_equal(c->command_timeout_ms, 300 * 1000);
    assert_int_equal(c->data_timeout_ms, 3600 * 1000);
    assert_int_equal(c->ndns_servers, 4);
    assert_int_equal(c->dns_servers[3].port, 53);
    assert_int_equal(c->netrn_clients, 3);
    assert_int_equal(c->ntrusted_networks, 1);
    assert_int_equal(c->greylist_delay_s, 60);
    assert_int_equal(c->greylist_window_s, 2 * 86400);
    assert_int_equal(c->greylist_ttl_s, 60 * 86400);
    assert_true(c->domains[0].greylist);
    assert_string_equal(c->metrics_listen.text, "127.0.0.1:9125");
    assert_string_equal(c->control_socket, "/run/mxd/control.sock");
    assert_string_equal(c->tls_certificate, "/etc/mxd/cert.pem");
    assert_string_equal(c->tls_key, "/etc/mxd/key.pem");
    assert_string_equal(c->tls_priority, "SECURE128:-VERS-TLS-ALL:+VERS-TLS1.3");
    assert_int_equal(c->retry_min_s, 30);
    assert_int_equal(c->retry_max_s, 7200);
    assert_int_equal(c->lifetime_s, 3 * 86400);
    assert_string_equal(c->bounce_relay.host, "smarthost.example.net");
    assert_int_equal(c->bounce_relay.port, 25);
    assert_int_equal(c->spf, CONF_AUTH_REJECT);
    assert_int_equal(c->dkim, CONF_AUTH_OFF);
    assert_int_equal(c->dmarc, CONF_AUTH_REJECT);
    assert_int_equal(c->ndomains, 3);
    assert_string_equal(c->domains[0].name, "example.com");
    assert_int_equal(c->domains[0].lmtp_concurrency, 16);
    assert_int_equal(c->domains[0].recipients, CONF_RCPTS_LMTP);
    assert_int_equal(c->domains[0].tls, CONF_TLS_REQUIRED);
    assert_int_equal(c->domains[1].nprimary, 3);
    assert_int_equal(c->domains[1].primary_concurrency, 12);
    assert_int_equal(c->domains[1].release_rate, 25);
    assert_int_equal(c->domains[2].primary_concurrency, 4); /* defaults */
    assert_int_equal(c->domains[2].release_rate, 0);
    assert_string_equal(c->domains[1].ca_file, "/etc/ssl/certs/ca-certificates.crt");
    assert_true(c->domains[2].primary_mx);
    conf_free(c);
    free(path);
}

/* ---- value parsers ---- */

struct num_case {
    const char *in;
    int rc;
    uint64_t want;
};

static const struct num_case size_cases[] = {
    {"0", 0, 0},
    {"1", 0, 1},
    {"007", 0, 7},
    {"1k", 0, 1024},
    {"1K", 0, 1024},
    {"50m", 0, 52428800},
    {"50M", 0, 52428800},
    {"2g", 0, UINT64_C(2147483648)},
    {"18446744073709551615", 0, UINT64_MAX},
    {"18446744073709551616", MXD_EINVAL, 0},
    {"99999999999999999999999", MXD_EINVAL, 0},
    {"18014398509481983k", 0, UINT64_C(18014398509481983) << 10},
    {"18014398509481984k", MXD_EINVAL, 0},
    {"17179869183g", 0, UINT64_C(17179869183) << 30},
    {"17179869184g", MXD_EINVAL, 0},
    {"", MXD_EINVAL, 0},
    {"k", MXD_EINVAL, 0},
    {"-1", MXD_EINVAL, 0},
    {"+1", MXD_EINVAL, 0},
    {" 1", MXD_EINVAL, 0},
    {"1 ", MXD_EINVAL, 0},
    {"1 k", MXD_EINVAL, 0},
    {"1kb", MXD_EINVAL, 0},
    {"1b", MXD_EINVAL, 0},
    {"1t", MXD_EINVAL, 0},
    {"0x10", MXD_EINVAL, 0},
    {"1.5m", MXD_EINVAL, 0},
    {"1s", MXD_EINVAL, 0},
};

static const struct num_case duration_cases[] = {
    {"0", 0, 0},
    {"1", 0, 1000},
    {"30s", 0, 30000},
    {"30S", 0, 30000},
    {"5m", 0, 300000},
    {"1h", 0, 3600000},
    {"5d", 0, 432000000},
    {"18446744073709551", 0, UINT64_C(18446744073709551000)},
    {"18446744073709551s", 0, UINT64_C(18446744073709551000)},
    {"18446744073709552", MXD_EINVAL, 0},
    {"307445734561825m", 0, UINT64_C(307445734561825) * 60000},
    {"307445734561826m", MXD_EINVAL, 0},
    {"213503982334d", 0, UINT64_C(213503982334) * 86400000},
    {"213503982335d", MXD_EINVAL, 0},
    {"18446744073709551616", MXD_EINVAL, 0},
    {"", MXD_EINVAL, 0},
    {"s", MXD_EINVAL, 0},
    {"1w", MXD_EINVAL, 0},
    {"1ms", MXD_EINVAL, 0},
    {"1k", MXD_EINVAL, 0},
    {"-5s", MXD_EINVAL, 0},
    {"1.5h", MXD_EINVAL, 0},
    {"1h30m", MXD_EINVAL, 0},
    {"5 m", MXD_EINVAL, 0},
};

static void
run_num_cases(const struct num_case *cases, size_t n, int (*fn)(const char *, uint64_t *))
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 12345;
        int rc = fn(cases[i].in, &v);

        if (rc != cases[i].rc || (rc == 0 && v != cases[i].want) || (rc != 0 && v != 12345))
            print_error("case \"%s\": rc %d value %ju\n", cases[i].in, rc, (uintmax_t)v);
        assert_int_equal(rc, cases[i].rc);
        assert_int_equal(v, rc == 0 ? cases[i].want : 12345);
    }
}

static void
test_parse_size(void **state)
{
    (void)state;
    run_num_cases(size_cases, sizeof(size_cases) / sizeof(size_cases[0]), conf_parse_size);
}

static void
test_parse_duration(void **state)
{
    (void)state;
    run_num_cases(duration_cases, sizeof(duration_cases) / sizeof(duration_cases[0]),
                  conf_parse_duration_ms);
}

/* ---- lookups ---- */

static const struct {
    const char *query;
    size_t len;       /* 0: strlen(query) */
    const char *want; /* NULL: not found */
} find_cases[] = {
    {"example.test", 0, "example.test"},
    {"EXAMPLE.Test", 0, "example.test"},
    {"sub.example.org", 0, "sub.example.org"},
    {"SUB.EXAMPLE.ORG", 0, "sub.example.org"},
    {"example.org", 0, NULL},    /* no parent match */
    {"a.example.test", 0, NULL}, /* no subdomain match */
    {"example.tes", 0, NULL},
    {"example.test.", 0, NULL},
    {"xexample.test", 0, NULL},
    {"example.testing", 12, "example.test"}, /* only len bytes count */
    {"example.test", 11, NULL},
    {"", 0, NULL},
};

static void
test_domain_find(void **state)
{
    struct conf *c = parse_ok(BASE "[domain example.test]\n[domain Sub.Example.ORG]\n");

    (void)state;
    for (size_t i = 0; i < sizeof(find_cases) / sizeof(find_cases[0]); i++) {
        const char *q = find_cases[i].query;
        const struct conf_domain *d =
            conf_domain_find(c, q, find_cases[i].len ? find_cases[i].len : strlen(q));

        if ((d == NULL) != (find_cases[i].want == NULL))
            print_error("case \"%s\": got %s\n", q, d != NULL ? d->name : "NULL");
        if (find_cases[i].want == NULL) {
            assert_null(d);
        } else {
            assert_non_null(d);
            assert_string_equal(d->name, find_cases[i].want);
        }
    }
    conf_free(c);
}

static const struct {
    const char *cidrs;
    const char *ip;
    bool want;
} cidr_cases[] = {
    {"192.0.2.10", "192.0.2.10", true},
    {"192.0.2.10", "192.0.2.11", false},
    {"192.0.2.10", "::ffff:192.0.2.10", true}, /* v4 client on a [::] socket */
    {"192.0.2.0/24", "192.0.2.255", true},
    {"192.0.2.0/24", "192.0.3.0", false},
    {"192.0.2.0/25", "192.0.2.127", true},
    {"192.0.2.0/25", "192.0.2.128", false},
    {"10.0.0.0/8", "10.255.1.2", true},
    {"10.0.0.0/8", "11.0.0.1", false},
    {"0.0.0.0/0", "203.0.113.5", true},
    {"0.0.0.0/0", "2001:db8::1", false},
    {"::/0", "192.0.2.1", false},
    {"::/0", "2001:db8::1", true},
    {"2001:db8::/32", "2001:db8:ffff::1", true},
    {"2001:db8::/32", "2001:db9::1", false},
    {"2001:db8::/33", "2001:db8:7fff::1", true},
    {"2001:db8::/33", "2001:db8:8000::1", false},
    {"::1", "::1", true},
    {"::1", "::2", false},
    {"::1", "127.0.0.1", false},
    {"2001:db8::/32, 192.0.2.0/24", "192.0.2.1", true},
    {"2001:db8::/32, 192.0.2.0/24", "2001:db8::1", true},
    {"2001:db8::/32, 192.0.2.0/24", "198.51.100.1", false},
};

static void
test_cidr_match(void **state)
{
    struct sockaddr other = {.sa_family = AF_UNIX};

    (void)state;
    for (size_t i = 0; i < sizeof(cidr_cases) / sizeof(cidr_cases[0]); i++) {
        char text[256];
        struct sockaddr_storage ss = {0};
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        struct conf *c;
        bool got;

        snprintf(text, sizeof(text), BASE "etrn_clients = %s\n", cidr_cases[i].cidrs);
        c = parse_ok(text);
        if (inet_pton(AF_INET, cidr_cases[i].ip, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
        } else {
            assert_int_equal(inet_pton(AF_INET6, cidr_cases[i].ip, &sin6->sin6_addr), 1);
            sin6->sin6_family = AF_INET6;
        }
        got = conf_cidr_match(c->etrn_clients, c->netrn_clients, (struct sockaddr *)&ss);
        if (got != cidr_cases[i].want)
            print_error("case %s in %s: got %d\n", cidr_cases[i].ip, cidr_cases[i].cidrs, got);
        assert_int_equal(got, cidr_cases[i].want);
        assert_false(conf_cidr_match(c->etrn_clients, 0, (struct sockaddr *)&ss));
        assert_false(conf_cidr_match(c->etrn_clients, c->netrn_clients, &other));
        conf_free(c);
    }
}

int
main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_conf_issue9_long_comment),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_load_missing),
        cmocka_unit_test(test_load_nul_byte),
        cmocka_unit_test(test_shipped_config),
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_domain_find),
        cmocka_unit_test(test_cidr_match),
    };
    enum { NOK = sizeof(ok_cases) / sizeof(ok_cases[0]) };
    enum { NERR = sizeof(err_cases) / sizeof(err_cases[0]) };
    enum { NFIXED = sizeof(fixed) / sizeof(fixed[0]) };
    static struct CMUnitTest tests[NOK + NERR + NFIXED];
    size_t n = 0;

    /* One named test per table row. */
    for (size_t i = 0; i < NOK; i++)
        tests[n++] = (struct CMUnitTest){
            .name = ok_cases[i].name, .test_func = test_ok_case, .initial_state = &ok_cases[i]};
    for (size_t i = 0; i < NERR; i++)
        tests[n++] = (struct CMUnitTest){
            .name = err_cases[i].name, .test_func = test_err_case, .initial_state = &err_cases[i]};
    memcpy(tests + n, fixed, sizeof(fixed));
    n += NFIXED;
    return _cmocka_run_group_tests("conf", tests, n, NULL, NULL);
}
