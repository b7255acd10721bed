-- mxd queue schema, version 11: the rest of what is known about the
-- client a message came from (issue 18, provenance for the primary), for
-- Postfix's XFORWARD when the message is forwarded: its verified reverse
-- DNS name (NULL: none), its TCP port, and "ESMTP" or "SMTP". Its address
-- and HELO are in messages. No row: made here (a DSN: SOURCE=LOCAL), or
-- queued before this version.
CREATE TABLE message_client (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    name       TEXT,
    port       INTEGER NOT NULL,
    proto      TEXT    NOT NULL
);
