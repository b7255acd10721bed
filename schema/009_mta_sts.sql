-- mxd queue schema, version 9: the MTA-STS (RFC 8461) policies of the
-- domains mxd delivers to (issue 19): forwarding of backup domains with
-- primary = mx, and DSNs to remote senders. RFC 8461 5.1: a policy is
-- cached for its max_age and used while its domain's _mta-sts TXT id is
-- unchanged (or the TXT record or the HTTPS fetch cannot be had), so an
-- attacker who blocks the fetch cannot downgrade a domain that had one;
-- kept here so restarts do not forget them.
-- domain: the policy domain, lower case, no trailing dot.
-- id: the id of the TXT record the policy was fetched for.
-- policy: the policy body as fetched (at most 64 KiB), parsed again on load.
-- fetched, expires: unix seconds; expires = fetched + max_age. An expired
--   row is a policy forgotten; write jobs delete a few at a time.
CREATE TABLE mta_sts (
    domain  TEXT    NOT NULL PRIMARY KEY,
    id      TEXT    NOT NULL,
    policy  TEXT    NOT NULL,
    fetched INTEGER NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX mta_sts_expires ON mta_sts(expires);
