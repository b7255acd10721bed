-- mxd queue schema, version 10: what a message asks of the TLS of its
-- onward delivery (RFC 8689, issue 19). One row only for a message that
-- asks something; no row: the destination's own policy applies.
--   requiretls: it came with MAIL ... REQUIRETLS: forwarded only over TLS
--     authenticated by DANE, MTA-STS or tls = verify, to a next hop that
--     offers REQUIRETLS, with REQUIRETLS; else it bounces (5.7.30). Its
--     DSNs carry it too.
--   tls_optional: its header has "TLS-Required: No" (RFC 8689 5) and it
--     did not come with REQUIRETLS: DANE (and MTA-STS) failures do not
--     stop its delivery, which falls back as opportunistic TLS does.
-- A table of its own, like message_facts: a column added to messages
-- would come after body.
CREATE TABLE message_tls (
    message_id   INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    requiretls   INTEGER NOT NULL DEFAULT 0,
    tls_optional INTEGER NOT NULL DEFAULT 0
);
