-- mxd queue schema, version 12 on PostgreSQL: cluster mode (issue 21), as
-- schema/012_cluster.sql says.
ALTER TABLE message_rcpts ADD COLUMN lease_owner text;
ALTER TABLE message_rcpts ADD COLUMN lease_until bigint;
CREATE TABLE cluster_nodes (
    name      text   NOT NULL PRIMARY KEY,
    started   bigint NOT NULL,
    heartbeat bigint NOT NULL
);
