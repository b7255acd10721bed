-- mxd queue schema, version 12: cluster mode (issue 21). Several mxd nodes
-- share one queue (on PostgreSQL; SQLite databases carry the same columns
-- so the version numbers of both engines stay one).
-- message_rcpts.lease_owner, lease_until: the node that claimed the
--   recipient for a delivery attempt (its node_name) and until when (unix
--   seconds); NULL both when nobody holds it. A lease not renewed by then
--   is free for another node to take.
-- cluster_nodes: one row per node that ever ran on this queue: when it
--   started (this run) and its last heartbeat (unix seconds).
ALTER TABLE message_rcpts ADD COLUMN lease_owner TEXT;
ALTER TABLE message_rcpts ADD COLUMN lease_until INTEGER;
CREATE TABLE cluster_nodes (
    name      TEXT    NOT NULL PRIMARY KEY,
    started   INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL
) WITHOUT ROWID;
