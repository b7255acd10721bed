-- mxd queue schema, version 7: what the sender asked of our delivery
-- status notifications (RFC 3461), and whether it may get any (issue 18).
-- message_dsn: one row per message accepted since this version.
--   ret: 0 not given, 1 FULL, 2 HDRS (MAIL ... RET=).
--   envid: MAIL ... ENVID=, xtext decoded; NULL when not given.
--   return_auth: the return path was authenticated at accept (SPF pass
--     for the MAIL FROM domain, or a DKIM pass whose d= is aligned with
--     it, relaxed): with bounce_policy = authenticated only such a
--     message gets a DSN. A message from before this version has no row
--     and counts as authenticated (it bounces as it would have before).
--   warned: the delay warning went out (at most one per message).
-- rcpt_dsn: one row per recipient that came with NOTIFY or ORCPT.
--   notify: DSN_NOTIFY_* bits (1 NEVER, 2 SUCCESS, 4 FAILURE, 8 DELAY);
--     no row (or 0): FAILURE and DELAY.
--   orcpt: "type;address", decoded; NULL when not given.
-- Tables of their own, like message_facts: a column added to messages
-- would come after body.
CREATE TABLE message_dsn (
    message_id  INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    ret         INTEGER NOT NULL DEFAULT 0,
    envid       TEXT,
    return_auth INTEGER NOT NULL DEFAULT 1,
    warned      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE rcpt_dsn (
    rcpt_id INTEGER PRIMARY KEY REFERENCES message_rcpts(id) ON DELETE CASCADE,
    notify  INTEGER NOT NULL DEFAULT 0,
    orcpt   TEXT
);
