-- mxd queue schema, version 6 (issue 18 part 1): recipients a backup knows
-- and how fresh that knowledge is.
--
-- rcpt_sources: one row per recipients_source (the value as written in
--   mxd.conf, e.g. 'file:/etc/mxd/users' or an ldap:// URL) that was ever
--   read whole. synced: the last successful read, unix seconds (the
--   freshness contract: older than recipients_max_age, an unlisted
--   address gets 450 4.1.1 instead of 550 5.1.1); digest: of the list as
--   read, so an unchanged list only moves synced; count: its addresses.
-- rcpt_synced: the list itself, one row per address or '@domain'
--   catch-all. A sync replaces a source's rows and its rcpt_sources row in
--   one writer job (one savepoint of one transaction): a reader sees the
--   old list or the new one, never half.
CREATE TABLE rcpt_sources (
    source TEXT    NOT NULL PRIMARY KEY,
    synced INTEGER NOT NULL,
    digest TEXT    NOT NULL,
    count  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE rcpt_synced (
    source  TEXT NOT NULL,
    address TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (source, address)
) WITHOUT ROWID;

-- verify_cache: the answers of a backup domain's primary to callaheads
-- (recipients = primary), Postfix's address_verify_map: ok 1 (2xx) or 0
-- (5xx), verified when asked, expires = verified + verify_positive_ttl or
-- verify_negative_ttl. Kept across restarts, and used while the primary
-- cannot be asked. Each write deletes a few expired rows.
CREATE TABLE verify_cache (
    address  TEXT    NOT NULL COLLATE NOCASE PRIMARY KEY,
    ok       INTEGER NOT NULL,
    verified INTEGER NOT NULL,
    expires  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX verify_cache_expires ON verify_cache(expires);
