-- mxd queue schema, version 1.
-- messages: one row per accepted message; body is the message exactly as it
-- will be delivered (our trace header first), stored last in the row so
-- reading the envelope never touches the body's overflow pages.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    qid         TEXT    NOT NULL UNIQUE,
    received    INTEGER NOT NULL,              -- unix seconds
    client_addr TEXT    NOT NULL,
    helo        TEXT    NOT NULL,
    sender      TEXT    NOT NULL,              -- '' for <>
    smtputf8    INTEGER NOT NULL DEFAULT 0,
    body_8bit   INTEGER NOT NULL DEFAULT 0,
    size        INTEGER NOT NULL,              -- octets of body
    body        BLOB    NOT NULL
);

-- message_rcpts: one row per accepted recipient of a message; the delivery
-- state machine lives here.
CREATE TABLE message_rcpts (
    id           INTEGER PRIMARY KEY,
    message_id   INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    address      TEXT    NOT NULL,
    domain       TEXT    NOT NULL,             -- lower case, for routing
    state        TEXT    NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'deferred', 'held', 'delivered', 'bounced')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,             -- unix seconds
    last_reply   TEXT
);
CREATE INDEX message_rcpts_message ON message_rcpts(message_id);
-- The scheduler's query: due recipients, oldest first, never a full scan.
CREATE INDEX message_rcpts_due ON message_rcpts(next_attempt)
    WHERE state IN ('queued', 'deferred');
CREATE INDEX message_rcpts_domain ON message_rcpts(domain, state);

-- recipients: valid recipients for domains with `recipients = table`;
-- '@example.com' is a catch-all for the domain. Managed with mxctl.
CREATE TABLE recipients (
    address TEXT NOT NULL PRIMARY KEY COLLATE NOCASE
) WITHOUT ROWID;
