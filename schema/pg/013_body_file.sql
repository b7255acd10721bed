-- mxd queue schema, version 13 on PostgreSQL: the column of
-- schema/013_body_file.sql, always NULL here: PostgreSQL keeps every body in
-- message_body (cluster nodes share no disk).
ALTER TABLE messages ADD COLUMN body_file text;
