-- mxd queue schema, version 3: the hop count (RFC 5321 6.3).
-- hops: the Received: fields of the stored message, ours included; a
-- message that would leave for a primary with more than [server] max_hops
-- is bounced with 5.4.6 rather than forwarded. Rows from before this
-- version (and DSNs, which start afresh) count 0.
ALTER TABLE messages ADD COLUMN hops INTEGER NOT NULL DEFAULT 0;
