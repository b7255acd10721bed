-- mxd queue schema, version 5: the screening's memory of clients that
-- passed (issue 16 part 3, postscreen's cache): a client that passed a
-- test is not tested again until the pass expires, so a good sender pays
-- for the pre-greet wait once per [server] screen_ttl, restarts included.
-- Written by the store's writer thread (passes are batched: at most one
-- job in flight), read by its reader thread on a miss of the in-memory
-- cache in front of it (src/check/screen.c).
-- client: '192.0.2.1', or the client's IPv6 network as
--   '2001:db8:1:2::/64' ([server] ipv6_prefix_length), the key the
--   per-client limits use too.
-- test: the test passed: 'pregreet' (a DNSBL score will add 'dnsbl').
-- passed: the last pass, unix seconds; expires: passed + screen_ttl. An
--   expired row is a pass forgotten; record jobs delete a few at a time.
CREATE TABLE screen (
    client  TEXT    NOT NULL,
    test    TEXT    NOT NULL,
    passed  INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (client, test)
) WITHOUT ROWID;
CREATE INDEX screen_expires ON screen(expires);
