-- mxd queue schema, version 8: indexes for the queue's shape (issue 23,
-- `mxctl queue --summary`: recipients waiting, by destination domain, state
-- and the age of their message).
-- The summary reads both indexes in message order, one covering scan each,
-- never a row of either table: messages_received gives each message's
-- arrival (a few bytes per message, where a row of messages holds the
-- body), message_rcpts_shape each waiting recipient's domain and state (a
-- partial index: delivered and bounced recipients are not in it). 1,000,000
-- waiting recipients are summarised in under a second (docs/performance.md);
-- without them the same query walks both tables at random, 12 s.
-- Each costs one more index entry per message or waiting recipient written.
CREATE INDEX messages_received ON messages(id, received);
CREATE INDEX message_rcpts_shape ON message_rcpts(message_id, domain, state)
    WHERE state IN ('queued', 'deferred', 'held');
