#!/usr/bin/env bash
# Installs every Debian 12 package that building mxd and running its whole
# test suite need. Non-interactive; run as root (or via sudo).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    echo "deps.sh: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

packages=(
    # build
    meson ninja-build pkg-config gcc
    libuv1-dev libgnutls28-dev libsqlite3-dev libspf2-dev libcmocka-dev libinih-dev libjansson-dev
    libsystemd-dev scdoc
    # the asynchronous DNS engine (issue 16)
    libunbound-dev
    # MTA-STS policy fetches over HTTPS (issue 19)
    libcurl4-gnutls-dev
    # tests and tools
    python3 sqlite3 swaks postfix gnutls-bin clang-format dovecot-core dovecot-lmtpd
    dnsmasq-base python3-aiosmtpd
    systemd curl
    # benchmark (tests/bench): fsync counting
    strace
    # sender authentication (issue 6): DKIM/DMARC libraries, the public suffix
    # list, and for the tests scripted DNS, the RFC 7208 suite, a DKIM signer,
    # pyspf (its RFC 4408 suite and the cross-check in test_spf_suite.py)
    python3-dnslib python3-yaml python3-dkim python3-spf openssl
    libopendkim-dev publicsuffix
    # the public suffix list's IDN rules (issue 20: A-labels to U-labels)
    libidn2-dev
    # fuzzing (libFuzzer, tests/fuzz) and memcheck
    clang libclang-rt-14-dev valgrind
    # disk-full test on a loop-mounted ext4 image (test_faults.py)
    e2fsprogs mount
    # PROXY protocol in front of mxd (test_proxy.py)
    haproxy
    # content filters over milter (issue 17): the libmilter test filter, rspamd
    libmilter-dev rspamd
    # Exim's stack in the peers bench (issue 22, tests/bench/exim_stack.py):
    # exim4-daemon-heavy is unpacked privately; the libraries it links are not
    libspf2-2 libmariadb3 libpq5 libperl5.36 libgnutls-dane0 libsasl2-2 libdb5.3
    # workload 3 of tests/bench/peers_bench.py (issue 22): Postfix's SPF policy server
    postfix-policyd-spf-python
    # recipients = sync from LDAP (issue 18): libldap, and a private slapd in the tests
    libldap-dev slapd ldap-utils
    # the shipped alert rules and fail2ban filter, checked with the real tools
    # (issue 23): promtool, fail2ban-regex
    prometheus fail2ban
    # DANE (issue 19): the root trust anchor; a signed test zone served by a
    # private validating-capable unbound (test_dane.py)
    dns-root-data ldnsutils unbound
    # cluster mode (issue 21): the store on PostgreSQL (libpq), and private
    # PostgreSQL 15 primaries and standbys in the tests
    libpq-dev postgresql-15
    # their client and the Python one the tests read the queue with
    postgresql-client-15 python3-psycopg2
)

apt-get update
# Postfix asks how it should be configured; the tests run private instances.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get install -y "${packages[@]}"
