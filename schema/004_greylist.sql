-- mxd queue schema, version 4: greylisting (issue 16).
-- One row per (client, sender, recipient) triplet of a domain with
-- `greylist = on`, written by the store's writer thread, read by its
-- reader thread (store_greylist.c has the rules).
-- client: 'net:192.0.2.0/24' or 'net:2001:db8:1:2::/64' (the client's
--   network), or 'spf:example.org' when SPF passed for the sender's
--   domain, so a provider retrying from another address of its pool is
--   the same client.
-- sender: lower case, its VERP, BATV and SRS parts normalised; '' for <>.
-- rcpt: lower case.
-- first_seen: the first attempt; a retry passes from first_seen + delay.
-- last_seen: the last attempt the writer recorded (the first, the pass,
--   a refresh of a passed triplet); early retries and passes that need no
--   refresh are answered by the reader and not recorded.
-- passed: when the triplet first passed; NULL while it is greylisted.
-- expires: first_seen + window while greylisted, last_seen + ttl once
--   passed. An expired row is a triplet never seen: the next attempt
--   starts afresh; greylist jobs delete expired rows a few at a time.
CREATE TABLE greylist (
    client     TEXT    NOT NULL,
    sender     TEXT    NOT NULL,
    rcpt       TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,               -- unix seconds
    last_seen  INTEGER NOT NULL,
    passed     INTEGER,
    expires    INTEGER NOT NULL,
    PRIMARY KEY (client, sender, rcpt)
) WITHOUT ROWID;
CREATE INDEX greylist_expires ON greylist(expires);
