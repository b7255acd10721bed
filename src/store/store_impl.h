/* store internals shared by store.c (threads, queues, message commits,
 * lookups) and store_deliver.c (delivery and operator jobs). Not for other
 * modules. */
#ifndef MXD_STORE_IMPL_H
#define MXD_STORE_IMPL_H

#include <uv.h>

#include "store/qid.h"
#include "store/sdb.h"
#include "store/store.h"

/* Spool reads, blob writes and the original headers of a DSN go by this much. */
#define STORE_CHUNK (64 * 1024)

/* SQLite: a body of at least this many octets past our header is not copied
 * into the database: its spool file is fdatasynced on the threadpool (in
 * parallel, off the single writer), linked into <database dir>/bodies and
 * named by the row (schema 013). The copy costs the writer, which serialises
 * every commit, three writes of the body (blob, WAL, checkpoint); a file
 * costs an fdatasync, a link, a directory fsync and an unlink per message,
 * a few filesystem journal commits, but off that thread. 256 KiB: twice the
 * session's memory buffer (only spooled bodies qualify, and a body just past
 * 128 KiB is mostly copied from memory anyway), and where the copy's
 * ~768 KiB of sequential writes in the writer start to outweigh those
 * fixed per-file syncs. Not measured at its boundary: 10 MB bodies went
 * from 10-11 to 36-42 msg/s at c=10 (docs/performance.md, issue 22). */
#define STORE_BODY_FILE_MIN (256 * 1024)

/* The envelope of a stored message, read by both threads. */
#define STORE_SQL_ENVELOPE                                                                         \
    "SELECT m.qid, m.received, m.sender, m.size, m.smtputf8, m.body_8bit, "                        \
    "CASE WHEN m.smtputf8 THEN coalesce(f.utf8_needed, 1) ELSE 0 END, coalesce(f.hops, 0), "       \
    "coalesce(d.ret, 0), d.envid, coalesce(d.return_auth, 1), coalesce(d.warned, 0), "             \
    "coalesce(t.requiretls, 0), coalesce(t.tls_optional, 0), "                                     \
    "m.client_addr, m.helo, c.name, c.port, c.proto "                                              \
    "FROM messages m LEFT JOIN message_facts f ON f.message_id = m.id "                            \
    "LEFT JOIN message_client c ON c.message_id = m.id "                                           \
    "LEFT JOIN message_dsn d ON d.message_id = m.id "                                              \
    "LEFT JOIN message_tls t ON t.message_id = m.id WHERE m.id = ?1"

/* PostgreSQL: the envelopes of the due messages ?1 (an array) in one query,
 * the message id after STORE_SQL_ENVELOPE's columns. */
#define STORE_SQL_ENVELOPES_PG                                                                     \
    "SELECT m.qid, m.received, m.sender, m.size, m.smtputf8, m.body_8bit, "                        \
    "CASE WHEN m.smtputf8 <> 0 THEN coalesce(f.utf8_needed, 1) ELSE 0 END, coalesce(f.hops, 0), "  \
    "coalesce(d.ret, 0), d.envid, coalesce(d.return_auth, 1), coalesce(d.warned, 0), "             \
    "coalesce(t.requiretls, 0), coalesce(t.tls_optional, 0), "                                     \
    "m.client_addr, m.helo, c.name, c.port::text, c.proto, m.id "                                  \
    "FROM messages m LEFT JOIN message_facts f ON f.message_id = m.id "                            \
    "LEFT JOIN message_client c ON c.message_id = m.id "                                           \
    "LEFT JOIN message_dsn d ON d.message_id = m.id "                                              \
    "LEFT JOIN message_tls t ON t.message_id = m.id WHERE m.id = ANY (?1::bigint[])"

/* A greylisted triplet's row (schema 004), read by both threads. */
#define STORE_SQL_GREY_GET                                                                         \
    "SELECT first_seen, last_seen, passed, expires FROM greylist "                                 \
    "WHERE client = ?1 AND sender = ?2 AND rcpt = ?3"

/* id, label for error messages, SQLite's SQL, PostgreSQL's (NULL: the
 * same text): the writer's statements, then the reader's from R_LOOKUP on.
 * recipients.address is COLLATE NOCASE (PostgreSQL: citext), so the
 * lookup compares case-insensitively and uses the primary key for both
 * terms. Every query on due recipients repeats the partial index's
 * `state IN ('queued', 'deferred', 'held')` word for word so that SQLite
 * uses message_rcpts_due (schema 002); an operator's hold is next_attempt
 * = INT64_MAX, never due, and a flush leaves it alone. An outcome never
 * moves a final recipient, and a deferral leaves a held one held.
 * PostgreSQL (cluster mode, schema 012): the due query claims what it
 * returns with a lease (lease_owner ?3, lease_until ?1 + ?4), skipping
 * rows another node holds a live lease on or has locked and this node's
 * own in flight (?5, an array: R_LEASE_RENEW keeps their leases, and
 * claiming them again on every pick rewrote every row in flight); an
 * outcome or a bounce ends the lease; hold, release and flush leave it (a
 * delivery in flight keeps its claim). The next due time is the smaller of
 * two index scans, the first stopping at its first row (a MIN over a CASE,
 * or even a plain MIN the planner did not turn into a LIMIT, read every
 * pending row on every pick). Its integer flags are integers, not booleans. */
#define STORE_SQL_DUE_PG                                                                           \
    "WITH c AS (UPDATE message_rcpts r SET lease_owner = ?3, lease_until = ?1 + ?4 FROM "          \
    "(SELECT id, lease_owner AS prev_owner, lease_until AS prev_until FROM message_rcpts "         \
    "WHERE state IN ('queued', 'deferred', 'held') AND next_attempt <= ?1 AND (lease_until IS "    \
    "NULL OR lease_until < ?1 OR lease_owner = ?3) AND id <> ALL (?5::bigint[]) "                  \
    "ORDER BY next_attempt, id LIMIT ?2 "                                                          \
    "FOR UPDATE SKIP LOCKED) p WHERE r.id = p.id RETURNING r.id, r.message_id, "                   \
    "r.address::text AS address, r.domain, r.attempts, r.next_attempt, "                           \
    "CASE WHEN p.prev_until IS NOT NULL AND p.prev_owner <> ?3 THEN 1 ELSE 0 END AS taken) "       \
    "SELECT c.id, c.message_id, c.address, c.domain, c.attempts, d.notify, d.orcpt, c.taken "      \
    "FROM c LEFT JOIN rcpt_dsn d ON d.rcpt_id = c.id ORDER BY c.next_attempt, c.id"

#define STORE_SQL_ENVELOPE_PG                                                                      \
    "SELECT m.qid, m.received, m.sender, m.size, m.smtputf8, m.body_8bit, "                        \
    "CASE WHEN m.smtputf8 <> 0 THEN coalesce(f.utf8_needed, 1) ELSE 0 END, coalesce(f.hops, 0), "  \
    "coalesce(d.ret, 0), d.envid, coalesce(d.return_auth, 1), coalesce(d.warned, 0), "             \
    "coalesce(t.requiretls, 0), coalesce(t.tls_optional, 0), "                                     \
    "m.client_addr, m.helo, c.name, c.port::text, c.proto "                                        \
    "FROM messages m LEFT JOIN message_facts f ON f.message_id = m.id "                            \
    "LEFT JOIN message_client c ON c.message_id = m.id "                                           \
    "LEFT JOIN message_dsn d ON d.message_id = m.id "                                              \
    "LEFT JOIN message_tls t ON t.message_id = m.id WHERE m.id = ?1"

/* What an outcome returns after its recipient's message_id and address
 * (both engines): the recipient's NOTIFY and ORCPT (schema 007; 0 and NULL
 * without a row), its message's arrival and whether that was warned of a
 * delay already (0 without a row), so that a deferral needs no second
 * statement and no envelope read when no delay warning can be due. */
#define STORE_SQL_OUTCOME_MORE                                                                     \
    "coalesce((SELECT d.notify FROM rcpt_dsn d WHERE d.rcpt_id = message_rcpts.id), 0), "          \
    "(SELECT d.orcpt FROM rcpt_dsn d WHERE d.rcpt_id = message_rcpts.id), "                        \
    "(SELECT m.received FROM messages m WHERE m.id = message_rcpts.message_id), "                  \
    "coalesce((SELECT d.warned FROM message_dsn d "                                                \
    "WHERE d.message_id = message_rcpts.message_id), 0)"

/* store_pgbatch.c: the rows of many messages at once, from arrays (one
 * element a row; ?1 the message ids, for every per-message table). */
#define STORE_SQL_PGB_INSERT                                                                       \
    "WITH m AS (INSERT INTO messages (id, qid, received, client_addr, helo, sender, smtputf8, "    \
    "body_8bit, size) SELECT * FROM unnest(?1::bigint[], ?2::text[], ?3::bigint[], ?4::text[], "   \
    "?5::text[], ?6::text[], ?7::int[], ?8::int[], ?9::bigint[])), "                               \
    "f AS (INSERT INTO message_facts (message_id, utf8_needed, hops) "                             \
    "SELECT * FROM unnest(?1::bigint[], ?10::int[], ?11::int[])), "                                \
    "d AS (INSERT INTO message_dsn (message_id, ret, envid, return_auth) "                         \
    "SELECT * FROM unnest(?1::bigint[], ?12::int[], ?13::text[], ?14::int[])), "                   \
    "c AS (INSERT INTO message_client (message_id, name, port, proto) "                            \
    "SELECT * FROM unnest(?1::bigint[], ?15::text[], ?16::int[], ?17::text[])), "                  \
    "t AS (INSERT INTO message_tls (message_id, requiretls, tls_optional) "                        \
    "SELECT * FROM unnest(?18::bigint[], ?19::int[], ?20::int[])), "                               \
    "b AS (INSERT INTO message_body (message_id, seq, data) "                                      \
    "SELECT u.i, 0, u.d FROM unnest(?21::bigint[], ?22::bytea[]) AS u(i, d)), "                    \
    "r AS (INSERT INTO message_rcpts (id, message_id, address, domain, state, attempts, "          \
    "next_attempt, last_reply) SELECT u.i, u.m, u.a, u.d, u.s, u.t, u.n, u.l FROM unnest("         \
    "?23::bigint[], ?24::bigint[], ?25::text[], ?26::text[], ?27::text[], ?28::bigint[], "         \
    "?29::text[], ?33::int[]) AS u(i, m, a, d, s, n, l, t)), "                                     \
    "x AS (INSERT INTO rcpt_dsn (rcpt_id, notify, orcpt) "                                         \
    "SELECT * FROM unnest(?30::bigint[], ?31::int[], ?32::text[])) SELECT 1"

/* store_pgbatch.c: W_OUTCOME for many deferrals or holds at once (element i
 * of ?1..?4 is one outcome's ?1..?4; recipient ids distinct), returning
 * W_OUTCOME's columns and then the recipient's id. */
#define STORE_SQL_PGB_OUTCOMES                                                                     \
    "UPDATE message_rcpts SET state = CASE WHEN state = 'held' AND u.s = 'deferred' "              \
    "THEN 'held' ELSE u.s END, attempts = attempts + 1, next_attempt = CASE WHEN "                 \
    "state = 'held' AND next_attempt = 9223372036854775807 AND u.s IN ('deferred', "               \
    "'held') THEN next_attempt ELSE coalesce(u.n, next_attempt) END, "                             \
    "last_reply = u.l, lease_owner = NULL, lease_until = NULL FROM unnest(?1::bigint[], "          \
    "?2::text[], ?3::bigint[], ?4::text[]) AS u(i, s, n, l) WHERE message_rcpts.id = u.i "         \
    "AND state IN ('queued', 'deferred', 'held') RETURNING message_id, "                           \
    "address::text, " STORE_SQL_OUTCOME_MORE ", message_rcpts.id"

#define STORE_SQL(X)                                                                               \
    X(W_BEGIN, "begin", "BEGIN IMMEDIATE", "BEGIN")                                                \
    X(W_COMMIT, "commit", "COMMIT", NULL)                                                          \
    X(W_ROLLBACK, "rollback", "ROLLBACK", NULL)                                                    \
    X(W_SAVEPOINT, "savepoint", "SAVEPOINT msg", NULL)                                             \
    X(W_RELEASE, "release", "RELEASE msg", NULL)                                                   \
    X(W_ROLLBACK_TO, "rollback to savepoint", "ROLLBACK TO msg", NULL)                             \
    X(W_INSERT_MSG, "insert message",                                                              \
      "INSERT INTO messages (qid, received, client_addr, helo, sender, smtputf8, body_8bit, "      \
      "size, body, body_file) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",      \
      "INSERT INTO messages (qid, received, client_addr, helo, sender, smtputf8, body_8bit, "      \
      "size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id")                                \
    X(W_INSERT_FACTS, "insert message facts",                                                      \
      "INSERT OR REPLACE INTO message_facts (message_id, utf8_needed, hops) VALUES (?1, ?2, ?3)",  \
      "INSERT INTO message_facts (message_id, utf8_needed, hops) VALUES (?1, ?2, ?3) "             \
      "ON CONFLICT (message_id) DO UPDATE SET utf8_needed = excluded.utf8_needed, "                \
      "hops = excluded.hops")                                                                      \
    X(W_INSERT_RCPT, "insert recipient",                                                           \
      "INSERT INTO message_rcpts (message_id, address, domain, state, attempts, next_attempt) "    \
      "VALUES (?1, ?2, ?3, 'queued', 0, ?4) RETURNING id",                                         \
      NULL)                                                                                        \
    X(W_INSERT_RCPT_HELD, "insert held recipient",                                                 \
      "INSERT INTO message_rcpts (message_id, address, domain, state, attempts, next_attempt, "    \
      "last_reply) VALUES (?1, ?2, ?3, 'held', 0, 9223372036854775807, ?4) RETURNING id",          \
      NULL)                                                                                        \
    X(W_INSERT_RCPT_WAIT, "insert recipient held for its primary",                                 \
      "INSERT INTO message_rcpts (message_id, address, domain, state, attempts, next_attempt, "    \
      "last_reply) VALUES (?1, ?2, ?3, 'held', 1, ?4, ?5) RETURNING id",                           \
      NULL)                                                                                        \
    X(W_INSERT_DSN, "insert message dsn",                                                          \
      "INSERT INTO message_dsn (message_id, ret, envid, return_auth) VALUES (?1, ?2, ?3, ?4)",     \
      NULL)                                                                                        \
    X(W_INSERT_TLS, "insert message tls",                                                          \
      "INSERT INTO message_tls (message_id, requiretls, tls_optional) VALUES (?1, ?2, ?3)", NULL)  \
    X(W_INSERT_CLIENT, "insert message client",                                                    \
      "INSERT INTO message_client (message_id, name, port, proto) VALUES (?1, ?2, ?3, ?4)", NULL)  \
    X(W_INSERT_RCPT_DSN, "insert recipient dsn",                                                   \
      "INSERT INTO rcpt_dsn (rcpt_id, notify, orcpt) VALUES (?1, ?2, ?3)", NULL)                   \
    X(W_RCPT_DSN, "read recipient dsn", "SELECT notify, orcpt FROM rcpt_dsn WHERE rcpt_id = ?1",   \
      NULL)                                                                                        \
    X(W_WARNED, "record delay warning",                                                            \
      "INSERT INTO message_dsn (message_id, warned) VALUES (?1, 1) "                               \
      "ON CONFLICT (message_id) DO UPDATE SET warned = 1",                                         \
      NULL)                                                                                        \
    X(W_OUTCOME, "record outcome",                                                                 \
      "UPDATE message_rcpts SET state = CASE WHEN state = 'held' AND ?2 = 'deferred' THEN 'held' " \
      "ELSE ?2 END, attempts = attempts + 1, next_attempt = CASE WHEN state = 'held' AND "         \
      "next_attempt = 9223372036854775807 AND ?2 IN ('deferred', 'held') THEN next_attempt "       \
      "ELSE coalesce(?3, next_attempt) END, "                                                      \
      "last_reply = ?4 WHERE id = ?1 AND state IN ('queued', 'deferred', 'held') "                 \
      "RETURNING message_id, address, " STORE_SQL_OUTCOME_MORE,                                    \
      "UPDATE message_rcpts SET state = CASE WHEN state = 'held' AND ?2::text = 'deferred' "       \
      "THEN 'held' ELSE ?2::text END, attempts = attempts + 1, next_attempt = CASE WHEN "          \
      "state = 'held' AND next_attempt = 9223372036854775807 AND ?2::text IN ('deferred', "        \
      "'held') THEN next_attempt ELSE coalesce(?3::bigint, next_attempt) END, "                    \
      "last_reply = ?4, lease_owner = NULL, lease_until = NULL WHERE id = ?1 "                     \
      "AND state IN ('queued', 'deferred', 'held') RETURNING message_id, "                         \
      "address::text, " STORE_SQL_OUTCOME_MORE)                                                    \
    X(W_ENVELOPE, "read envelope", STORE_SQL_ENVELOPE, STORE_SQL_ENVELOPE_PG " FOR UPDATE OF m")   \
    X(W_MSG_BY_QID, "find queue id", "SELECT id FROM messages WHERE qid = ?1", NULL)               \
    X(W_PENDING, "count pending",                                                                  \
      "SELECT EXISTS (SELECT 1 FROM message_rcpts WHERE message_id = ?1 AND "                      \
      "state IN ('queued', 'deferred', 'held'))",                                                  \
      "SELECT CASE WHEN EXISTS (SELECT 1 FROM message_rcpts WHERE message_id = ?1 AND "            \
      "state IN ('queued', 'deferred', 'held')) THEN 1 ELSE 0 END")                                \
    X(W_DELETE_MSG, "delete message", "DELETE FROM messages WHERE id = ?1 RETURNING body_file",    \
      NULL)                                                                                        \
    X(W_FLUSH, "flush",                                                                            \
      "UPDATE message_rcpts SET next_attempt = ?1 WHERE state IN ('queued', 'deferred', 'held') "  \
      "AND next_attempt > ?1 AND next_attempt < 9223372036854775807 "                              \
      "AND (?2 IS NULL OR domain = ?2)",                                                           \
      "UPDATE message_rcpts SET next_attempt = ?1 WHERE state IN ('queued', 'deferred', 'held') "  \
      "AND next_attempt > ?1 AND next_attempt < 9223372036854775807 "                              \
      "AND (?2::text IS NULL OR domain = ?2::text)")                                               \
    X(W_HOLD, "hold",                                                                              \
      "UPDATE message_rcpts SET state = 'held', next_attempt = 9223372036854775807 "               \
      "WHERE message_id = ?1 AND state IN ('queued', 'deferred', 'held')",                         \
      NULL)                                                                                        \
    X(W_UNHOLD, "release",                                                                         \
      "UPDATE message_rcpts SET state = 'queued', next_attempt = ?2 WHERE message_id = ?1 AND "    \
      "state = 'held'",                                                                            \
      NULL)                                                                                        \
    X(W_BOUNCE, "bounce",                                                                          \
      "UPDATE message_rcpts SET state = 'bounced', last_reply = ?2 WHERE message_id = ?1 AND "     \
      "state IN ('queued', 'deferred', 'held') RETURNING id, address",                             \
      "UPDATE message_rcpts SET state = 'bounced', last_reply = ?2, lease_owner = NULL, "          \
      "lease_until = NULL WHERE message_id = ?1 AND state IN ('queued', 'deferred', 'held') "      \
      "RETURNING id, address::text")                                                               \
    X(W_SCREEN_PUT, "record screening pass",                                                       \
      "INSERT INTO screen (client, test, passed, expires) VALUES (?1, ?2, ?3, ?4) "                \
      "ON CONFLICT (client, test) DO UPDATE SET passed = max(passed, excluded.passed), "           \
      "expires = max(expires, excluded.expires)",                                                  \
      "INSERT INTO screen (client, test, passed, expires) VALUES (?1, ?2, ?3, ?4) "                \
      "ON CONFLICT (client, test) DO UPDATE SET passed = greatest(screen.passed, "                 \
      "excluded.passed), expires = greatest(screen.expires, excluded.expires)")                    \
    X(W_SCREEN_EXPIRE, "expire screening passes",                                                  \
      "DELETE FROM screen WHERE (client, test) IN (SELECT client, test FROM screen "               \
      "WHERE expires <= ?1 LIMIT ?2)",                                                             \
      NULL)                                                                                        \
    X(W_GREY_GET, "read greylist", STORE_SQL_GREY_GET, NULL)                                       \
    X(W_GREY_PUT, "write greylist",                                                                \
      "INSERT OR REPLACE INTO greylist (client, sender, rcpt, first_seen, last_seen, passed, "     \
      "expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",                                              \
      "INSERT INTO greylist (client, sender, rcpt, first_seen, last_seen, passed, expires) "       \
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (client, sender, rcpt) DO UPDATE SET "      \
      "first_seen = excluded.first_seen, last_seen = excluded.last_seen, "                         \
      "passed = excluded.passed, expires = excluded.expires")                                      \
    X(W_GREY_EXPIRE, "expire greylist",                                                            \
      "DELETE FROM greylist WHERE (client, sender, rcpt) IN (SELECT client, sender, rcpt "         \
      "FROM greylist WHERE expires <= ?1 LIMIT ?2)",                                               \
      NULL)                                                                                        \
    X(W_SYNC_DIGEST, "read synced list digest",                                                    \
      "SELECT digest FROM rcpt_sources WHERE source = ?1", NULL)                                   \
    X(W_SYNC_CLEAR, "clear synced list", "DELETE FROM rcpt_synced WHERE source = ?1", NULL)        \
    X(W_SYNC_ADD, "add synced recipient",                                                          \
      "INSERT OR IGNORE INTO rcpt_synced (source, address) VALUES (?1, ?2)",                       \
      "INSERT INTO rcpt_synced (source, address) VALUES (?1, ?2) ON CONFLICT DO NOTHING")          \
    X(W_SYNC_MARK, "mark synced list",                                                             \
      "INSERT OR REPLACE INTO rcpt_sources (source, synced, digest, count) "                       \
      "VALUES (?1, ?2, ?3, ?4)",                                                                   \
      "INSERT INTO rcpt_sources (source, synced, digest, count) VALUES (?1, ?2, ?3, ?4) "          \
      "ON CONFLICT (source) DO UPDATE SET synced = excluded.synced, digest = excluded.digest, "    \
      "count = excluded.count")                                                                    \
    X(W_VERIFY_PUT, "record callahead answer",                                                     \
      "INSERT OR REPLACE INTO verify_cache (address, ok, verified, expires) "                      \
      "VALUES (?1, ?2, ?3, ?4)",                                                                   \
      "INSERT INTO verify_cache (address, ok, verified, expires) VALUES (?1, ?2, ?3, ?4) "         \
      "ON CONFLICT (address) DO UPDATE SET ok = excluded.ok, verified = excluded.verified, "       \
      "expires = excluded.expires")                                                                \
    X(W_VERIFY_EXPIRE, "expire callahead answers",                                                 \
      "DELETE FROM verify_cache WHERE address IN (SELECT address FROM verify_cache "               \
      "WHERE expires <= ?1 LIMIT ?2)",                                                             \
      NULL)                                                                                        \
    X(W_STS_PUT, "record mta-sts policy",                                                          \
      "INSERT OR REPLACE INTO mta_sts (domain, id, policy, fetched, expires) "                     \
      "VALUES (?1, ?2, ?3, ?4, ?5)",                                                               \
      "INSERT INTO mta_sts (domain, id, policy, fetched, expires) VALUES (?1, ?2, ?3, ?4, ?5) "    \
      "ON CONFLICT (domain) DO UPDATE SET id = excluded.id, policy = excluded.policy, "            \
      "fetched = excluded.fetched, expires = excluded.expires")                                    \
    X(W_STS_EXPIRE, "expire mta-sts policies",                                                     \
      "DELETE FROM mta_sts WHERE domain IN (SELECT domain FROM mta_sts "                           \
      "WHERE expires <= ?1 LIMIT ?2)",                                                             \
      NULL)                                                                                        \
    X(W_PGB_IDS, "allocate ids", NULL,                                                             \
      "SELECT 0, nextval(pg_get_serial_sequence('messages', 'id')) "                               \
      "FROM generate_series(1, ?1::int) UNION ALL "                                                \
      "SELECT 1, nextval(pg_get_serial_sequence('message_rcpts', 'id')) "                          \
      "FROM generate_series(1, ?2::int)")                                                          \
    X(W_PGB_INSERT, "batched insert", NULL, STORE_SQL_PGB_INSERT)                                  \
    X(W_PGB_OUTCOMES, "batched outcomes", NULL, STORE_SQL_PGB_OUTCOMES)                            \
    X(R_LOOKUP, "lookup",                                                                          \
      "SELECT 1 FROM recipients WHERE address = ?1 OR address = '@' || ?2 LIMIT 1",                \
      "SELECT 1 FROM recipients WHERE address = ?1::citext OR "                                    \
      "address = ('@' || ?2::text)::citext LIMIT 1")                                               \
    X(R_BEGIN, "begin", "BEGIN", NULL)                                                             \
    X(R_COMMIT, "commit", "COMMIT", NULL)                                                          \
    X(R_DUE, "due recipients",                                                                     \
      "SELECT r.id, r.message_id, r.address, r.domain, r.attempts, d.notify, d.orcpt "             \
      "FROM message_rcpts r LEFT JOIN rcpt_dsn d ON d.rcpt_id = r.id "                             \
      "WHERE state IN ('queued', 'deferred', 'held') AND next_attempt <= ?1 "                      \
      "ORDER BY next_attempt, r.id LIMIT ?2",                                                      \
      STORE_SQL_DUE_PG)                                                                            \
    X(R_NEXT_DUE, "next due",                                                                      \
      "SELECT MIN(next_attempt) FROM message_rcpts "                                               \
      "WHERE state IN ('queued', 'deferred', 'held') AND next_attempt > ?1 "                       \
      "AND next_attempt < 9223372036854775807",                                                    \
      "SELECT LEAST((SELECT next_attempt FROM message_rcpts WHERE state IN ('queued', "            \
      "'deferred', 'held') AND next_attempt > ?1 AND next_attempt < 9223372036854775807 "          \
      "ORDER BY next_attempt LIMIT 1), (SELECT MIN(lease_until) + 1 FROM message_rcpts "           \
      "WHERE state IN ('queued', 'deferred', 'held') AND next_attempt <= ?1 "                      \
      "AND lease_until >= ?1))")                                                                   \
    X(R_ENVELOPE, "read envelope", STORE_SQL_ENVELOPE, STORE_SQL_ENVELOPE_PG)                      \
    X(R_ENVELOPES, "read envelopes", NULL, STORE_SQL_ENVELOPES_PG)                                 \
    X(R_SCREEN_GET, "read screening passes",                                                       \
      "SELECT client, test, passed, expires FROM screen WHERE client = ?1 AND expires > ?2", NULL) \
    X(R_GREY_GET, "read greylist", STORE_SQL_GREY_GET, NULL)                                       \
    X(R_SYNC_GET, "synced recipient lookup",                                                       \
      "SELECT s.synced, EXISTS (SELECT 1 FROM rcpt_synced r WHERE r.source = ?1 AND "              \
      "(r.address = ?2 OR r.address = '@' || ?3)) FROM rcpt_sources s WHERE s.source = ?1",        \
      "SELECT s.synced, CASE WHEN EXISTS (SELECT 1 FROM rcpt_synced r WHERE r.source = ?1 AND "    \
      "(r.address = ?2::citext OR r.address = ('@' || ?3::text)::citext)) THEN 1 ELSE 0 END "      \
      "FROM rcpt_sources s WHERE s.source = ?1")                                                   \
    X(R_VERIFY_GET, "read callahead answer",                                                       \
      "SELECT ok, verified, expires FROM verify_cache WHERE address = ?1 AND expires > ?2", NULL)  \
    X(R_STS_GET, "read mta-sts policy",                                                            \
      "SELECT id, policy, fetched, expires FROM mta_sts WHERE domain = ?1 AND expires > ?2", NULL) \
    X(R_NODE_BEAT, "cluster heartbeat", NULL,                                                      \
      "INSERT INTO cluster_nodes (name, started, heartbeat) VALUES (?1, ?2, ?3) "                  \
      "ON CONFLICT (name) DO UPDATE SET started = excluded.started, "                              \
      "heartbeat = excluded.heartbeat")                                                            \
    X(R_LEASE_RENEW, "renew leases", NULL,                                                         \
      "UPDATE message_rcpts SET lease_until = ?2 WHERE lease_owner = ?1 "                          \
      "AND lease_until IS NOT NULL AND state IN ('queued', 'deferred', 'held')")

#define STORE_STMT_ENUM(id, label, lite, pg) STORE_##id,

enum store_stmt { STORE_SQL(STORE_STMT_ENUM) STORE_NSTMT };

struct store__sql {
    const char *label;
    const char *sql;    /* SQLite; NULL: not used on SQLite */
    const char *sql_pg; /* PostgreSQL; NULL: sql */
};

/* Indexed by enum store_stmt (defined in store.c). */
extern const struct store__sql store__sql[STORE_NSTMT];

/* Recipients this node claimed from another node's expired lease (cluster
 * mode), until delivered or bounced: their delivery may be a duplicate. */
struct store_takeovers {
    uv_mutex_t mu;
    int64_t *ids;
    size_t n, cap;
};

/* A connection and its prepared statements [first, end), kept till closed
 * (a statement with no text for the engine stays NULL). down: the
 * connection was lost (PostgreSQL); the thread reconnects before its next
 * job, at most once per second, and fails the jobs meanwhile. */
struct store_conn {
    struct sdb *db;
    enum store_stmt first, end;
    struct sdb_stmt *stmt[STORE_NSTMT];
    bool down;
    uint64_t last_try; /* uv_hrtime() of the last reconnection attempt */
    const char *who;   /* "writer" or "reader", for logs */
    /* cluster (PostgreSQL): the store's, set before the threads start */
    const char *node;
    int64_t lease_s;
    struct store_takeovers *tk;
};

/* COMMIT and LOOKUP: store.c; SCREEN_*: store_screen.c; GREYLIST:
 * store_greylist.c; the others: store_deliver.c. */
enum store_job_kind {
    STORE_JOB_COMMIT,     /* writer */
    STORE_JOB_LOOKUP,     /* reader */
    STORE_JOB_DUE,        /* reader */
    STORE_JOB_BODY,       /* reader */
    STORE_JOB_OUTCOMES,   /* writer */
    STORE_JOB_OP,         /* writer */
    STORE_JOB_SCREEN_GET, /* reader */
    STORE_JOB_SCREEN_PUT, /* writer */
    STORE_JOB_GREYLIST,   /* reader, then the writer when it has to write */
    STORE_JOB_RCPT_GET,   /* reader: a synced list's lookup, a callahead answer */
    STORE_JOB_RCPT_PUT,   /* writer: a synced list, a callahead answer */
    STORE_JOB_STS_GET,    /* reader: an MTA-STS policy */
    STORE_JOB_STS_PUT,    /* writer: an MTA-STS policy */
    STORE_JOB_HEARTBEAT,  /* reader (PostgreSQL): cluster_nodes row, this node's leases */
};

/* store_deliver.c's part of a job: arguments and results (opaque here). */
struct store__djob;
/* store_screen.c's part of a job. */
struct store__sjob;
/* store_greylist.c's part of a job. */
struct store__gjob;
/* store_rcpt.c's part of a job. */
struct store__rjob;
/* store_sts.c's part of a job. */
struct store__tjob;

/* One request. Belongs to the loop until pushed, then to the worker thread,
 * then to the loop again from the done list until its callback ran. */
struct store_job {
    struct store_job *next;
    enum store_job_kind kind;
    int status;
    int64_t msg_id; /* commit: the new row; body read: the row read */
    bool batched;   /* commit (PostgreSQL): inserted by store__pg_batch */
    union {
        store_commit_cb commit;
        store_lookup_cb lookup;
        store_due_cb due;
        store_body_cb body;
        store_done_cb done;
        store_screen_cb screen;
        store_greylist_cb greylist;
        store_sts_cb sts;
    } cb;
    void *arg;
    struct store_msg *msg;  /* commit: owned until the batch is done */
    struct store__djob *d;  /* DUE, BODY, OUTCOMES, OP: owned, freed by store__complete */
    struct store__sjob *s;  /* SCREEN_*: owned, freed by store__screen_complete */
    struct store__gjob *g;  /* GREYLIST: owned, freed by store__greylist_complete */
    struct store__rjob *rj; /* RCPT_*: owned, freed by store__rcpt_complete */
    struct store__tjob *t;  /* STS_*: owned, freed by store__sts_complete */
    size_t domain_off;      /* lookup: the domain is at text + domain_off */
    char text[];            /* lookup: address NUL domain NUL */
};

struct store_queue {
    uv_mutex_t mu;
    uv_cond_t cv;
    struct store_job *head;
    struct store_job **tail;
    bool stop; /* drain, then exit */
};

/* Writer thread's private state. */
struct store_writer {
    struct store_conn c;
    unsigned char *buf; /* STORE_CHUNK octets */
    char reason[256];   /* first error of the current message or transaction */
    struct store_stats stats;
    struct qid_gen qids;          /* queue ids of the DSNs it inserts */
    char hostname[256];           /* copy of store.hostname taken with each batch */
    struct store_dsn_rules rules; /* copy of store.rules taken with each batch */
    /* SQLite: <database dir>/bodies, and the body files of the rows deleted
     * in the current transaction (unlinked once it committed) */
    char *bodies;
    char **gone;
    size_t ngone, capgone;
};

struct store {
    /* private, loop thread */
    uv_async_t async;
    uv_thread_t writer_tid, reader_tid;
    bool closing;
    bool writer_told; /* the writer was told to stop (after the reader closed) */
    store_closed_cb closed_cb;
    void *closed_arg;
    struct store_stats stats; /* as of the last delivery */
    unsigned npreps;          /* large bodies being made durable on the threadpool */
    /* private, writer thread once started */
    struct store_writer w;
    /* private, reader thread once started */
    struct store_conn r;
    /* cluster (PostgreSQL) */
    struct store_takeovers tk;
    char node[256];
    int64_t started;
    uv_timer_t beat; /* every lease_s / 3: a HEARTBEAT job */
    bool beat_on;
    /* shared, each under its own mutex */
    struct store_queue wq, rq;
    char hostname[256];           /* under wq.mu: store_set_hostname */
    struct store_dsn_rules rules; /* under wq.mu: store_set_dsn_rules */
    uv_mutex_t done_mu;
    struct store_job *done_head, **done_tail;
    struct store_stats done_stats;
    unsigned nexited; /* threads that have closed their connection */
};

/* ---- store.c, for store_deliver.c -------------------------------------- */

/* Loop thread: hands j to the writer (to_writer) or the reader thread; after
 * store_close it fails with MXD_ECLOSING instead, never from inside the call. */
void store__submit(struct store *st, struct store_job *j, bool to_writer);

/* Writer thread: records why the current job failed (the first reason wins). */
void store__writer_reason(struct store_writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Writer thread: steps a statement that returns no row and resets it; 0, or
 * MXD_ESTORE with the reason recorded. */
int store__writer_exec(struct store_writer *w, enum store_stmt i);

/* Writer thread: deletes message msg_id (W_DELETE_MSG); a body file it had
 * is unlinked once the transaction committed. 0 or MXD_ESTORE. */
int store__writer_delete_msg(struct store_writer *w, int64_t msg_id);

/* Writer thread: for a message that carried SMTPUTF8 (schema 003), records
 * whether it needs it; 0 or MXD_ESTORE. */
/* The message_facts row of message msg_id (schema 003). */
int store__writer_facts(struct store_writer *w, int64_t msg_id, bool utf8_needed, unsigned hops);
/* The message_tls row (schema 010), only when requiretls or tls_optional. */
int store__writer_tls(struct store_writer *w, int64_t msg_id, bool requiretls, bool tls_optional);

/* Either thread, after a job on c failed: notices a lost connection (logs
 * it once). */
void store__conn_check(struct store_conn *c);

/* Either thread, before a job on c: false while the connection is down and
 * could not be made again (the job fails with MXD_ESTORE at once). */
bool store__conn_ready(struct store_conn *c);

/* Cluster: recipient id was taken over from another node / whether it was
 * (forgetting it). Either thread. */
void store__takeover_add(struct store_takeovers *tk, int64_t id);
bool store__takeover_take(struct store_takeovers *tk, int64_t id);

/* Writer thread: steps statement i, which returns the new row's id. */
int store__writer_insert_id(struct store_writer *w, enum store_stmt i, int64_t *id);

/* Writer thread: reads the first spool_len octets of m's spool file through
 * w->buf, a STORE_CHUNK at a time, handing each to sink. 0, the sink's
 * error, or MXD_ESTORE with why[0..whylen) saying what failed (nothing is
 * recorded: the caller decides). */
int store__spool_each(struct store_writer *w, const struct store_msg *m,
                      int (*sink)(void *arg, const void *p, size_t n), void *arg, char *why,
                      size_t whylen);

/* Writer thread: the body files of the rows deleted since mark (w->ngone)
 * unlinked (their deletion committed) or forgotten (rolled back). */
void store__writer_gone(struct store_writer *w, size_t mark, bool committed);

/* Writer thread: m can be stored (every field the rows need is there). */
bool store__msg_valid(const struct store_msg *m);

/* ---- store_pgbatch.c, for store.c -------------------------------------- */

/* Writer thread, right after the batch's BEGIN (PostgreSQL; SQLite: nothing):
 * inserts the messages of [first, NULL) whose body fits one chunk, in a few
 * statements, marking them batched (msg_id set); on a failure rolls back
 * and begins again with nothing batched. 0, or MXD_ESTORE when the
 * transaction could not be begun again (w->reason says why). */
int store__pg_batch(struct store_writer *w, struct store_job *first) MXD_WUR;

/* ---- store_deliver.c, for store_pgbatch.c ----------------------------- */

/* Writer thread. An OUTCOMES job that has not failed and whose outcomes are
 * all deferrals or holds: store_pgbatch.c may record them with other jobs'
 * in one statement (W_PGB_OUTCOMES). */
bool store__outcomes_batchable(const struct store_job *j);
size_t store__outcomes_count(const struct store_job *j);
const struct store_outcome *store__outcome_at(const struct store_job *j, size_t k);
/* Before the statement: every outcome as if its recipient were final
 * already (no row returned); store__outcome_row: outcome k's row (the
 * columns of W_OUTCOME's RETURNING). */
void store__outcomes_begin(struct store_job *j);
void store__outcome_row(struct store_job *j, size_t k, struct sdb_stmt *s);
/* After it: settles the job's messages as writer_outcomes does (usually
 * nothing: a deferral without a delay warning due). */
int store__outcomes_settle(struct store_writer *w, struct store_job *j) MXD_WUR;
/* The batch fell back: forgets what the batched path recorded (DSN notes). */
void store__outcomes_unbatch(struct store_job *j);

/* ---- store_deliver.c, for store.c -------------------------------------- */

/* Reader thread: runs a DUE or BODY job; returns its status. */
int store__reader_run(struct store_conn *c, struct store_job *j) MXD_WUR;

/* Writer thread, inside the job's savepoint: runs an OUTCOMES or OP job;
 * returns its status (on failure the caller rolls the savepoint back). */
int store__writer_run(struct store_writer *w, struct store_job *j) MXD_WUR;

/* Writer thread: j failed with j->status (already set); logs why. */
void store__writer_failed(const struct store_job *j, const char *reason);

/* Writer thread, once j's transaction is over: logs what it committed. */
void store__writer_done(struct store_writer *w, struct store_job *j);

/* Loop thread: runs the callback of a DUE, BODY, OUTCOMES or OP job and
 * frees j->d (not j). */
void store__complete(struct store_job *j);

/* ---- store_screen.c, for store.c ------------------------------------- */

/* Reader thread: runs a SCREEN_GET job; returns its status. */
int store__screen_read(struct store_conn *c, struct store_job *j) MXD_WUR;

/* Writer thread, inside the job's savepoint: runs a SCREEN_PUT job;
 * returns its status. */
int store__screen_write(struct store_writer *w, struct store_job *j) MXD_WUR;

/* Loop thread: runs a SCREEN_* job's callback and frees j->s (not j). */
void store__screen_complete(struct store_job *j);

/* ---- store_greylist.c, for store.c ------------------------------------- */

/* Reader thread: answers a GREYLIST job that needs no write (true), or
 * leaves it for the writer (false). */
bool store__greylist_read(struct store_conn *c, struct store_job *j);

/* Writer thread, inside the job's savepoint: the GREYLIST job's decision
 * and write; returns its status. */
int store__greylist_write(struct store_writer *w, struct store_job *j) MXD_WUR;

/* Loop thread: runs a GREYLIST job's callback and frees j->g (not j). */
void store__greylist_complete(struct store_job *j);

/* ---- store_rcpt.c, for store.c ----------------------------------------- */

/* Reader thread: runs a RCPT_GET job; returns its status. */
int store__rcpt_read(struct store_conn *c, struct store_job *j) MXD_WUR;

/* Writer thread, inside the job's savepoint: runs a RCPT_PUT job; returns
 * its status. */
int store__rcpt_write(struct store_writer *w, struct store_job *j) MXD_WUR;

/* Writer thread: j failed with j->status; logs why. */
void store__rcpt_failed(const struct store_job *j, const char *reason);

/* Loop thread: runs a RCPT_* job's callback and frees j->rj (not j). */
void store__rcpt_complete(struct store_job *j);

/* ---- store_sts.c, for store.c ------------------------------------------ */

/* Reader thread: runs a STS_GET job; returns its status. */
int store__sts_read(struct store_conn *c, struct store_job *j) MXD_WUR;

/* Writer thread, inside the job's savepoint: runs a STS_PUT job. */
int store__sts_write(struct store_writer *w, struct store_job *j) MXD_WUR;

/* Loop thread: runs a STS_* job's callback and frees j->t (not j). */
void store__sts_complete(struct store_job *j);

#endif
