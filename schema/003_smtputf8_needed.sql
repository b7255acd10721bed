-- mxd queue schema, version 3: whether a message really needs SMTPUTF8.
-- A message that came with the SMTPUTF8 parameter but whose envelope and
-- header are all ASCII is delivered without it to a next hop that lacks
-- the extension (RFC 6531 3.4; Dovecot 2.3's LMTP does not offer it); only
-- one that needs it is bounced there. One row per message that carried
-- SMTPUTF8 (none for the others); a message queued before this version has
-- no row and counts as needing it, as it was treated then.
-- A table of its own rather than a column of messages: a column added now
-- would come after body in every new row, and reading the envelope would
-- walk the body's overflow pages.
CREATE TABLE message_smtputf8 (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    needed     INTEGER NOT NULL              -- 1: non-ASCII envelope or header
);
