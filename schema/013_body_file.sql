-- mxd queue schema, version 13: large bodies in files (issue 22).
-- messages.body_file: NULL, or the name of the file in <dir of database>/bodies
--   that holds the stored body past the octets of messages.body (which then
--   holds only our trace header): the body read back is body || file. The
--   file was fdatasynced and its directory entry synced before the row was
--   committed; it is unlinked after the row's deletion committed. A column
--   after body costs nothing to read when NULL (the record header says so).
ALTER TABLE messages ADD COLUMN body_file TEXT;
