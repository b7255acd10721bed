-- mxd queue schema, version 2: held recipients can be due.
-- A backup domain's mail waits for its primary in state 'held', retried
-- with the queue backoff (next_attempt) and released at once by the
-- primary watcher; an operator's hold (mxctl hold) sets next_attempt to
-- the largest integer, so it is never due until released.
DROP INDEX message_rcpts_due;
CREATE INDEX message_rcpts_due ON message_rcpts(next_attempt)
    WHERE state IN ('queued', 'deferred', 'held');
