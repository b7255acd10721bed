-- mxd queue schema, version 3: what is learnt about a message at accept
-- and delivery needs (issue 14), one row per message.
-- utf8_needed: it came with SMTPUTF8 and its envelope or header is not
-- ASCII, so it cannot go to a next hop without the extension (RFC 6531
-- 3.4; Dovecot 2.3's LMTP lacks it); one that came with SMTPUTF8 but is
-- all ASCII goes without the parameter.
-- hops: the Received: fields of the stored message, ours included; a
-- message that would leave for a primary with more than [server] max_hops
-- is bounced with 5.4.6 rather than forwarded (RFC 5321 6.3).
-- A message queued before this version has no row: it needs SMTPUTF8 when
-- it came with it, as it was treated then, and counts 0 hops.
-- A table of its own rather than columns of messages: a column added now
-- would come after body in every row, and reading the envelope would walk
-- the body's overflow pages.
CREATE TABLE message_facts (
    message_id  INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    utf8_needed INTEGER NOT NULL,
    hops        INTEGER NOT NULL
);
