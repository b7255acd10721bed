/*
 * mxctl_json: mxctl's JSON: the --json renderings of `queue`, `show` and
 * `recipient list` (read from the database handle mxctl.c opened), and the
 * client side of mxd's control socket (src/control.h: one request line out,
 * one JSON line back) for flush, hold, release, delete, bounce and stats.
 * Owns, for one call, a jansson tree and the control socket's fd. Blocking,
 * single-threaded: it is part of mxctl, not of the daemon.
 *
 * Errors: every function returns an exit status (mxctl_json.h) and has
 * already said why on stderr.
 *
 * Does not: change the database (state changes are the daemon's), or pass
 * peer-supplied text into JSON unchecked: strings that are not valid UTF-8
 * get U+FFFD for each bad sequence; a body that is not valid UTF-8 is given
 * whole as "body_base64" instead of "body".
 */
#include "mxctl/mxctl_json.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "store/dbconf.h"

#define CTL_TIMEOUT_S 30
#define CTL_REPLY_MAX (1024 * 1024)

bool
mxctl_rcpt_scheduled(const char *state, int64_t next_attempt)
{
    if (strcmp(state, "held") == 0)
        return next_attempt != INT64_MAX;
    return strcmp(state, "queued") == 0 || strcmp(state, "deferred") == 0;
}

static const char *const rcpt_json_sql =
    "SELECT address, domain, state, attempts, next_attempt, last_reply FROM message_rcpts "
    "WHERE message_id = ?1 ORDER BY id";

static int
db_fail(struct sdb *db, const char *what)
{
    fprintf(stderr, "mxctl: %s: %s\n", what, sdb_errmsg(db));
    return MXCTL_REFUSED;
}

static void
oom(json_t *j)
{
    if (j == NULL)
        mxd_panic("mxctl: out of memory building JSON");
}

/* ---- strings ------------------------------------------------------------ */

/* A JSON string of s[0..len); each octet that does not start a valid UTF-8
 * sequence becomes U+FFFD. */
static json_t *
str_json(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    json_t *j = json_stringn(s, len);
    char *buf, *o;

    if (j != NULL)
        return j;
    buf = o = xmalloc(len * 3 + 1);
    for (size_t i = 0; i < len;) {
        size_t n = utf8_char_len(p + i, len - i);

        if (n == 0) {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(o, p + i, n);
            o += n;
            i += n;
        }
    }
    j = json_stringn(buf, (size_t)(o - buf));
    free(buf);
    oom(j);
    return j;
}

static json_t *
col_json(struct sdb_stmt *s, int i)
{
    const char *t = sdb_col_text(s, i);

    if (t == NULL || sdb_col_null(s, i))
        return json_null();
    return str_json(t, strlen(t));
}

static char *
base64(const unsigned char *p, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = xmalloc((len + 2) / 3 * 4 + 1), *o = out;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;

        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = i + 1 < len ? tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Writes j (reference taken) as one line on stdout. */
static int
print_json(json_t *j)
{
    int rc = json_dumpf(j, stdout, JSON_COMPACT) == 0 && putchar('\n') != EOF;

    json_decref(j);
    if (!rc) {
        perror("mxctl: stdout");
        return MXCTL_REFUSED;
    }
    return MXCTL_OK;
}

/* ---- database renderings ------------------------------------------------ */

static void
set(json_t *obj, const char *key, json_t *val)
{
    oom(val);
    if (json_object_set_new(obj, key, val) != 0)
        mxd_panic("mxctl: cannot build JSON");
}

/* The recipients of message id as a JSON array, or NULL (said why). */
static json_t *
rcpts_json(struct sdb *db, struct sdb_stmt *s, int64_t id)
{
    json_t *arr = json_array();
    int step;

    oom(arr);
    sdb_bind_i64(s, 1, id);
    while ((step = sdb_step(s)) == SDB_ROW) {
        const char *state = sdb_col_text(s, 2);
        bool pending = state != NULL && mxctl_rcpt_scheduled(state, sdb_col_i64(s, 4));
        json_t *r = json_object();

        oom(r);
        set(r, "address", col_json(s, 0));
        set(r, "domain", col_json(s, 1));
        set(r, "state", col_json(s, 2));
        set(r, "attempts", json_integer(sdb_col_i64(s, 3)));
        set(r, "next_attempt", pending ? json_integer(sdb_col_i64(s, 4)) : json_null());
        set(r, "last_reply", col_json(s, 5));
        json_array_append_new(arr, r);
    }
    sdb_reset(s);
    if (step != SDB_DONE) {
        db_fail(db, "recipients");
        json_decref(arr);
        return NULL;
    }
    return arr;
}

int
mxctl_json_queue(struct sdb *db)
{
    const char *sql = "SELECT id, qid, received, size, sender FROM messages ORDER BY received, id";
    struct sdb_stmt *m = NULL, *r = NULL;
    int64_t now = (int64_t)time(NULL);
    json_t *msgs = json_array(), *rcpts = NULL;
    int rc = MXCTL_OK, step = SDB_DONE;

    oom(msgs);
    if (dbconf_snapshot(db) != 0 || sdb_prepare(db, sql, &m) != 0 ||
        sdb_prepare(db, rcpt_json_sql, &r) != 0) {
        rc = db_fail(db, "queue");
        goto done;
    }
    while ((step = sdb_step(m)) == SDB_ROW) {
        json_t *msg = json_object();

        oom(msg);
        json_array_append_new(msgs, msg);
        set(msg, "qid", col_json(m, 1));
        set(msg, "received", json_integer(sdb_col_i64(m, 2)));
        set(msg, "age", json_integer(now - sdb_col_i64(m, 2)));
        set(msg, "size", json_integer(sdb_col_i64(m, 3)));
        set(msg, "sender", col_json(m, 4));
        if ((rcpts = rcpts_json(db, r, sdb_col_i64(m, 0))) == NULL) {
            rc = MXCTL_REFUSED;
            goto done;
        }
        set(msg, "rcpts", rcpts);
    }
    if (step != SDB_DONE)
        rc = db_fail(db, "queue");
done:
    sdb_finalize(m);
    sdb_finalize(r);
    dbconf_snapshot_end(db);
    if (rc != MXCTL_OK) {
        json_decref(msgs);
        return rc;
    }
    return print_json(json_pack("{s:o}", "messages", msgs));
}

/* Sets "body" (valid UTF-8) or "body_base64" (anything else) to message
 * id's body, read whole (JSON holds it whole anyway). MXCTL_OK or said why. */
static int
set_body(struct sdb *db, json_t *obj, int64_t id)
{
    uint64_t total = 0;
    size_t len = 0, cap = 64 * 1024, got;
    char *body = xmalloc(cap), *b64;
    json_t *j;

    do {
        if (len == cap)
            body = xrealloc(body, cap *= 2);
        if (sdb_body_read(db, id, len, body + len, cap - len, &got, &total) != 0) {
            free(body);
            return db_fail(db, "show: body");
        }
        len += got;
    } while (got > 0 && len < total);
    if ((j = json_stringn(body, len)) != NULL) {
        set(obj, "body", j);
    } else {
        b64 = base64((const unsigned char *)body, len);
        set(obj, "body_base64", json_string(b64));
        free(b64);
    }
    free(body);
    return MXCTL_OK;
}

static json_t *
envelope_json(struct sdb_stmt *m)
{
    json_t *msg = json_object();

    oom(msg);
    set(msg, "qid", col_json(m, 0));
    set(msg, "received", json_integer(sdb_col_i64(m, 1)));
    set(msg, "client", col_json(m, 2));
    set(msg, "helo", col_json(m, 3));
    set(msg, "sender", col_json(m, 4));
    set(msg, "size", json_integer(sdb_col_i64(m, 7)));
    set(msg, "smtputf8", json_boolean(sdb_col_i64(m, 5)));
    set(msg, "body_8bit", json_boolean(sdb_col_i64(m, 6)));
    return msg;
}

int
mxctl_json_show(struct sdb *db, const char *qid)
{
    const char *sql = "SELECT qid, received, client_addr, helo, sender, smtputf8, body_8bit, "
                      "size, id FROM messages WHERE qid = ?1";
    struct sdb_stmt *m = NULL, *r = NULL;
    json_t *msg = NULL, *rcpts;
    int64_t id;
    int rc = MXCTL_OK, step;

    if (dbconf_snapshot(db) != 0 || sdb_prepare(db, sql, &m) != 0 ||
        sdb_prepare(db, rcpt_json_sql, &r) != 0) {
        rc = db_fail(db, "show");
        goto done;
    }
    sdb_bind_text(m, 1, qid);
    if ((step = sdb_step(m)) != SDB_ROW) {
        if (step == SDB_DONE)
            fprintf(stderr, "mxctl: no such message: %s\n", qid);
        rc = step == SDB_DONE ? MXCTL_REFUSED : db_fail(db, "show");
        goto done;
    }
    msg = envelope_json(m);
    id = sdb_col_i64(m, 8);
    sdb_reset(m); /* one statement at a time from here on */
    if ((rcpts = rcpts_json(db, r, id)) == NULL) {
        rc = MXCTL_REFUSED;
        goto done;
    }
    set(msg, "rcpts", rcpts);
    rc = set_body(db, msg, id);
done:
    sdb_finalize(m);
    sdb_finalize(r);
    dbconf_snapshot_end(db);
    if (rc != MXCTL_OK) {
        json_decref(msg);
        return rc;
    }
    return print_json(msg);
}

int
mxctl_json_recipients(struct sdb *db)
{
    struct sdb_stmt *s = NULL;
    json_t *arr = json_array();
    int step;

    oom(arr);
    if (sdb_prepare(db, "SELECT address FROM recipients ORDER BY address", &s) != 0) {
        json_decref(arr);
        return db_fail(db, "recipient list");
    }
    while ((step = sdb_step(s)) == SDB_ROW)
        json_array_append_new(arr, col_json(s, 0));
    sdb_finalize(s);
    if (step != SDB_DONE) {
        json_decref(arr);
        return db_fail(db, "recipient list");
    }
    return print_json(json_pack("{s:o}", "recipients", arr));
}

/* ---- the control socket ------------------------------------------------- */

static int
ctl_connect(const char *path, int *fdp)
{
    struct sockaddr_un sun;
    struct timeval tv = {.tv_sec = CTL_TIMEOUT_S};
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "mxctl: control socket path is too long: %s\n", path);
        return MXCTL_REFUSED;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0) {
        perror("mxctl: socket");
        return MXCTL_REFUSED;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (const struct sockaddr *)&sun, sizeof(sun)) != 0) {
        fprintf(stderr, "mxctl: cannot reach mxd at %s (is it running?): %s\n", path,
                strerror(errno));
        close(fd);
        return MXCTL_REFUSED;
    }
    *fdp = fd;
    return MXCTL_OK;
}

/* Reads up to the first LF or EOF into a new string (caller frees), or NULL
 * after saying why. */
static char *
ctl_read_line(int fd, const char *path)
{
    size_t len = 0, cap = 4096;
    char *buf = xmalloc(cap);

    for (;;) {
        ssize_t n;

        if (len + 1 == cap) {
            if (cap >= CTL_REPLY_MAX)
                break;
            buf = xrealloc(buf, cap *= 2);
        }
        n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "mxctl: no reply from mxd at %s: %s\n", path,
                    errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
            free(buf);
            return NULL;
        }
        if (n == 0 || memchr(buf + len, '\n', (size_t)n) != NULL) {
            len += (size_t)n;
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

/* Sends one request and parses the reply: *reply is an object (caller
 * decrefs) whose "ok" is true, or the status to exit with. */
static int
ctl_request(const char *path, const char *line, json_t **reply)
{
    json_error_t jerr;
    size_t len = strlen(line), off = 0;
    char *text;
    int fd = -1, rc = ctl_connect(path, &fd);

    if (rc != MXCTL_OK)
        return rc;
    while (off < len) {
        ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "mxctl: cannot send to mxd at %s: %s\n", path, strerror(errno));
            close(fd);
            return MXCTL_REFUSED;
        }
        off += (size_t)n;
    }
    text = ctl_read_line(fd, path);
    close(fd);
    if (text == NULL)
        return MXCTL_REFUSED;
    *reply = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (*reply == NULL || !json_is_object(*reply)) {
        fprintf(stderr, "mxctl: malformed reply from mxd at %s: %s\n", path,
                *reply == NULL ? jerr.text : "not an object");
        json_decref(*reply);
        free(text);
        return MXCTL_REFUSED;
    }
    free(text);
    return MXCTL_OK;
}

/* The reply's verdict: ok, or its error on stderr and the exit status. */
static int
ctl_verdict(json_t *reply, const char *what)
{
    const char *error = json_string_value(json_object_get(reply, "error"));

    if (json_is_true(json_object_get(reply, "ok")))
        return MXCTL_OK;
    fprintf(stderr, "mxctl: %s: %s\n", what, error != NULL ? error : "refused by mxd");
    return json_integer_value(json_object_get(reply, "code")) == 2 ? MXCTL_USAGE : MXCTL_REFUSED;
}

int
mxctl_ctl_op(const char *path, const char *verb, const char *arg)
{
    char *line = xasprintf("%s%s%s\n", verb, arg != NULL ? " " : "", arg != NULL ? arg : "");
    json_t *reply = NULL;
    int rc = ctl_request(path, line, &reply);

    line[strlen(line) - 1] = '\0'; /* "hold 01ABC: no such message" */
    if (rc == MXCTL_OK)
        rc = ctl_verdict(reply, line);
    json_decref(reply);
    free(line);
    return rc;
}

/* Adds "queue": {"messages": N, "<state>": recipients in it, ...}. */
static int
queue_totals(struct sdb *db, json_t *stats)
{
    const char *sql = "SELECT 'messages', count(*) FROM messages UNION ALL "
                      "SELECT state, count(*) FROM message_rcpts GROUP BY state";
    static const char *const states[] = {"queued", "deferred", "held", "delivered", "bounced"};
    json_t *q = json_object();
    struct sdb_stmt *s = NULL;
    int step;

    oom(q);
    set(stats, "queue", q);
    set(q, "messages", json_integer(0));
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        set(q, states[i], json_integer(0));
    if (sdb_prepare(db, sql, &s) != 0)
        return db_fail(db, "stats");
    while ((step = sdb_step(s)) == SDB_ROW)
        set(q, sdb_col_str(s, 0), json_integer(sdb_col_i64(s, 1)));
    sdb_finalize(s);
    return step == SDB_DONE ? MXCTL_OK : db_fail(db, "stats");
}

/* The daemon's metrics, one "series value" line each, as the metrics
 * endpoint prints them. */
static void
print_metrics(json_t *obj)
{
    const char *key;
    json_t *val;

    json_object_foreach(obj, key, val)
    {
        if (json_is_integer(val))
            printf("%s %lld\n", key, (long long)json_integer_value(val));
        else if (json_is_real(val))
            printf("%s %.6g\n", key, json_real_value(val));
    }
}

/* "smtp.connections_total 12" per counter, nested objects flattened (the
 * metrics object is printed as the metrics endpoint has it). */
static void
print_counters(const char *prefix, json_t *obj)
{
    const char *key;
    json_t *val;

    json_object_foreach(obj, key, val)
    {
        if (prefix[0] == '\0' && strcmp(key, "metrics") == 0 && json_is_object(val)) {
            print_metrics(val);
        } else if (json_is_object(val)) {
            char *sub = xasprintf("%s%s.", prefix, key);

            print_counters(sub, val);
            free(sub);
        } else if (json_is_integer(val)) {
            printf("%s%s %lld\n", prefix, key, (long long)json_integer_value(val));
        }
    }
}

int
mxctl_ctl_stats(const char *path, struct sdb *db, bool json)
{
    json_t *reply = NULL, *stats;
    int rc = ctl_request(path, "stats\n", &reply);

    if (rc == MXCTL_OK)
        rc = ctl_verdict(reply, "stats");
    stats = json_object_get(reply, "stats");
    if (rc == MXCTL_OK && !json_is_object(stats)) {
        fprintf(stderr, "mxctl: malformed reply from mxd at %s: no stats\n", path);
        rc = MXCTL_REFUSED;
    }
    if (rc == MXCTL_OK && db != NULL)
        rc = queue_totals(db, stats);
    if (rc == MXCTL_OK && json)
        rc = print_json(json_incref(stats));
    else if (rc == MXCTL_OK)
        print_counters("", stats);
    json_decref(reply);
    return rc;
}

static const char *
jstr(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s != NULL ? s : "-";
}

int
mxctl_ctl_tls_policy(const char *path, const char *domain, bool json)
{
    char *line = xasprintf("tls-policy %s\n", domain);
    json_t *reply = NULL, *p, *hop;
    size_t i;
    int rc = ctl_request(path, line, &reply);

    if (rc == MXCTL_OK)
        rc = ctl_verdict(reply, "tls-policy");
    free(line);
    p = json_object_get(reply, "tls_policy");
    if (rc == MXCTL_OK && !json_is_object(p)) {
        fprintf(stderr, "mxctl: malformed reply from mxd at %s: no tls_policy\n", path);
        rc = MXCTL_REFUSED;
    }
    if (rc == MXCTL_OK && json) {
        rc = print_json(json_incref(p));
    } else if (rc == MXCTL_OK) {
        printf("domain: %s (%s)\npolicy: %s (from %s)\nnext hop: %s\nmx dnssec: %s\n",
               jstr(p, "domain"), jstr(p, "role"), jstr(p, "policy"), jstr(p, "source"),
               jstr(p, "next_hop"), jstr(p, "mx_dnssec"));
        json_array_foreach(json_object_get(p, "hops"), i, hop)
        {
            printf("hop: %s port %lld tlsa=%s records=%lld usable=%lld%s%s\n", jstr(hop, "host"),
                   (long long)json_integer_value(json_object_get(hop, "port")), jstr(hop, "tlsa"),
                   (long long)json_integer_value(json_object_get(hop, "records")),
                   (long long)json_integer_value(json_object_get(hop, "usable")),
                   jstr(hop, "why")[0] != '-' && jstr(hop, "why")[0] != '\0' ? " why: " : "",
                   jstr(hop, "why")[0] != '-' ? jstr(hop, "why") : "");
        }
        printf("applies: %s\nrequiretls: %s\nmta-sts: %s\n", jstr(p, "applies"),
               jstr(p, "requiretls"), jstr(p, "mta_sts"));
    }
    json_decref(reply);
    return rc;
}
