/*
 * mxctl: the operator's tool. Owns one connection to the queue's database
 * (sdb_open on the engine the configuration names, store/dbconf.h, so it
 * also migrates the database) for the life of one command, and stdout.
 * Where the two engines' SQL differs, it keeps one text per engine and
 * picks it with sdb_engine(). SQLite: only `recipient add` creates a
 * database that does not exist (to list recipients before mxd first
 * starts), and says so; any other command on a path that does not exist is
 * refused, so a typo in -d or `database` does not leave an empty database
 * (and directories) behind. Single-threaded and blocking: it is not part
 * of the daemon.
 * Read-only commands and the recipients table use the database directly;
 * queue state changes (flush, hold, release, delete, bounce) and stats go to
 * the running mxd over its control socket (mxctl_json.c, as does --json).
 *
 * Errors: exit 0 on success; 1 on a refused operation (unknown queue id,
 * recipient not in the table) and on failures (configuration, database,
 * daemon unreachable, writing stdout); 2 on usage errors, usage on stderr.
 *
 * Does not: change queue state itself, or hold a transaction longer than one
 * command. Peer-supplied text (HELO, addresses, replies) is printed with
 * control characters escaped; `show` writes the body raw.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/conf.h"
#include "base/util.h"
#include "mxctl/mxctl_cluster.h"
#include "mxctl/mxctl_json.h"
#include "mxctl/mxctl_summary.h"
#include "store/dbconf.h"
#include "store/sdb.h"

#define MXCTL_CONF  "/etc/mxd/mxd.conf"
#define MXCTL_CHUNK (64 * 1024)

/* What a command's run() gets besides its arguments. */
struct mxctl_ctx {
    bool json;
    const char *verb;    /* the command's name */
    const char *control; /* the control socket's path (daemon commands) */
    int64_t lease_s;     /* cluster_lease, from the configuration (0: not read) */
};

static void
usage(FILE *f)
{
    fputs("usage: mxctl [-c FILE] [-d DATABASE] COMMAND [ARG...] [--json]\n"
          "commands:\n"
          "  queue                      list queued messages and their recipients\n"
          "  queue --summary [--top N]  recipients waiting by domain and age (as qshape)\n"
          "  show QUEUE-ID              print a message's envelope, a blank line, the message\n"
          "  flush [DOMAIN]             retry deferred mail now (all, or DOMAIN's)\n"
          "  hold QUEUE-ID              stop delivering a message until released\n"
          "  release QUEUE-ID           deliver a held message again, now\n"
          "  delete QUEUE-ID            drop a message, without a bounce\n"
          "  bounce QUEUE-ID            fail a message's recipients and bounce it to the sender\n"
          "  stats                      counters of the running mxd and queue totals\n"
          "  reload                     make mxd re-read its configuration (as SIGHUP)\n"
          "  tls-policy DOMAIN          the outbound TLS that applies to DOMAIN now, and why\n"
          "  recipient add ADDRESS...   accept mail for ADDRESS (local@domain or @domain)\n"
          "  recipient del ADDRESS...   remove ADDRESS from the recipients table\n"
          "  recipient list             print the recipients table\n"
          "  cluster                    the cluster's nodes: heartbeat, alive or dead, leases\n"
          "options:\n"
          "  -c FILE      configuration file (default " MXCTL_CONF ")\n"
          "  -d DATABASE  use this SQLite database instead of the configuration's\n"
          "  --json       print queue, show, stats, tls-policy, recipient list and cluster\n"
          "               as JSON\n"
          "flush to tls-policy go to the running mxd through [server] control_socket.\n",
          f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("mxctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage(stderr);
    return MXCTL_USAGE;
}

/* Writes s with control characters, backslash (and `"` when quoted) escaped;
 * UTF-8 passes through. */
static void
put_safe(const char *s, bool quoted)
{
    if (quoted)
        putchar('"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            printf("\\x%02x", *p);
        else if (*p == '\\' || (quoted && *p == '"'))
            printf("\\%c", *p);
        else
            putchar(*p);
    }
    if (quoted)
        putchar('"');
}

/* "42s", "5m", "3h", "2d": the largest whole unit. */
static const char *
fmt_dur(char *buf, size_t size, int64_t secs)
{
    if (secs < 0)
        secs = 0;
    if (secs < 60)
        snprintf(buf, size, "%llds", (long long)secs);
    else if (secs < 3600)
        snprintf(buf, size, "%lldm", (long long)(secs / 60));
    else if (secs < 86400)
        snprintf(buf, size, "%lldh", (long long)(secs / 3600));
    else
        snprintf(buf, size, "%lldd", (long long)(secs / 86400));
    return buf;
}

static int
db_fail(struct sdb *db, const char *what)
{
    fprintf(stderr, "mxctl: %s: %s\n", what, sdb_errmsg(db));
    return MXCTL_REFUSED;
}

/* ---- recipient ---------------------------------------------------------- */

/* Minimal: "local@domain" or "@domain", no spaces or control characters. */
static bool
address_valid(const char *a)
{
    const char *at = strrchr(a, '@');

    if (at == NULL || at[1] == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)a; *p != '\0'; p++) {
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    }
    return true;
}

static int
recipient_check(int argc, char **argv)
{
    if (argc < 1)
        return usage_error("recipient: add, del or list");
    if (strcmp(argv[0], "list") == 0)
        return argc == 1 ? MXCTL_OK : usage_error("recipient list takes no argument");
    if (strcmp(argv[0], "add") != 0 && strcmp(argv[0], "del") != 0)
        return usage_error("recipient: unknown subcommand '%s'", argv[0]);
    if (argc < 2)
        return usage_error("recipient %s: no address given", argv[0]);
    for (int i = 1; i < argc; i++) {
        if (!address_valid(argv[i]))
            return usage_error("invalid address '%s' (want local@domain or @domain)", argv[i]);
    }
    return MXCTL_OK;
}

static int
recipient_list(struct sdb *db)
{
    struct sdb_stmt *s = NULL;
    int rc;

    if (sdb_prepare(db, "SELECT address FROM recipients ORDER BY address", &s) != 0)
        return db_fail(db, "recipient list");
    while ((rc = sdb_step(s)) == SDB_ROW) {
        put_safe(sdb_col_str(s, 0), false);
        putchar('\n');
    }
    sdb_finalize(s);
    return rc == SDB_DONE ? MXCTL_OK : db_fail(db, "recipient list");
}

/* add or del every address in one transaction; del of an absent address is
 * refused (exit 1) but does not stop the others. Both engines take these
 * texts (SQLite since 3.35); a row back from DELETE is one deleted. */
static int
recipient_change(struct sdb *db, bool add, int argc, char **argv)
{
    const char *sql = add ? "INSERT INTO recipients (address) VALUES (?1) ON CONFLICT DO NOTHING"
                          : "DELETE FROM recipients WHERE address = ?1 RETURNING address";
    struct sdb_stmt *s = NULL;
    int rc = MXCTL_OK, step;

    /* SQLite: take the write lock now, not half-way (no busy deadlock) */
    if (sdb_exec(db, sdb_engine(db) == SDB_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN") != 0 ||
        sdb_prepare(db, sql, &s) != 0)
        goto fail;
    for (int i = 0; i < argc; i++) {
        bool deleted;

        sdb_bind_text(s, 1, argv[i]);
        step = sdb_step(s);
        deleted = step == SDB_ROW;
        while (step == SDB_ROW)
            step = sdb_step(s);
        if (step != SDB_DONE)
            goto fail;
        sdb_reset(s);
        if (!add && !deleted) {
            fprintf(stderr, "mxctl: no such recipient: %s\n", argv[i]);
            rc = MXCTL_REFUSED;
        }
    }
    sdb_finalize(s);
    if (sdb_exec(db, "COMMIT") != 0)
        return db_fail(db, "recipient");
    return rc;
fail:
    rc = db_fail(db, add ? "recipient add" : "recipient del");
    sdb_finalize(s);
    dbconf_snapshot_end(db);
    return rc;
}

static int
recipient_run(const struct mxctl_ctx *ctx, struct sdb *db, int argc, char **argv)
{
    if (strcmp(argv[0], "list") == 0)
        return ctx->json ? mxctl_json_recipients(db) : recipient_list(db);
    return recipient_change(db, strcmp(argv[0], "add") == 0, argc - 1, argv + 1);
}

/* ---- queue and show ----------------------------------------------------- */

static const char *const rcpt_sql =
    "SELECT address, state, attempts, next_attempt, last_reply FROM message_rcpts "
    "WHERE message_id = ?1 ORDER BY id";

/* One line per recipient of message id, each after prefix. */
static int
print_rcpts(struct sdb *db, struct sdb_stmt *s, int64_t id, int64_t now, const char *prefix)
{
    char next[32], dur[24];
    int rc;

    sdb_bind_i64(s, 1, id);
    while ((rc = sdb_step(s)) == SDB_ROW) {
        const char *state = sdb_col_str(s, 1);
        bool pending = mxctl_rcpt_scheduled(state, sdb_col_i64(s, 3));
        int64_t due = sdb_col_i64(s, 3) - now;

        if (!pending)
            snprintf(next, sizeof(next), "-");
        else if (due <= 0)
            snprintf(next, sizeof(next), "now");
        else
            snprintf(next, sizeof(next), "in %s", fmt_dur(dur, sizeof(dur), due));
        fputs(prefix, stdout);
        putchar('<');
        put_safe(sdb_col_str(s, 0), false);
        printf("> %s attempts=%d next=%s last=", state, (int)sdb_col_i64(s, 2), next);
        if (sdb_col_null(s, 4))
            putchar('-');
        else
            put_safe(sdb_col_str(s, 4), true);
        putchar('\n');
    }
    sdb_reset(s);
    return rc == SDB_DONE ? MXCTL_OK : db_fail(db, "recipients");
}

/* queue [--summary [--top N]] */
static int
queue_opts(int argc, char **argv, bool *summary, size_t *top)
{
    bool top_given = false;
    char *end;

    *summary = false;
    *top = MXCTL_SUMMARY_TOP;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--summary") == 0) {
            *summary = true;
        } else if (strcmp(argv[i], "--top") == 0 && i + 1 < argc) {
            unsigned long long n = strtoull(argv[++i], &end, 10);

            if (*end != '\0' || end == argv[i] || argv[i][0] == '-' || n > 1000000)
                return usage_error("queue: --top wants a number, not '%s'", argv[i]);
            *top = (size_t)n;
            top_given = true;
        } else {
            return usage_error("queue: unexpected argument '%s'", argv[i]);
        }
    }
    if (top_given && !*summary)
        return usage_error("queue: --top goes with --summary");
    return MXCTL_OK;
}

static int
queue_check(int argc, char **argv)
{
    bool summary;
    size_t top;

    return queue_opts(argc, argv, &summary, &top);
}

static int
queue_run(const struct mxctl_ctx *ctx, struct sdb *db, int argc, char **argv)
{
    const char *sql = "SELECT id, qid, received, size, sender FROM messages ORDER BY received, id";
    struct sdb_stmt *m = NULL, *r = NULL;
    int64_t now = (int64_t)time(NULL);
    int n = 0, rc = MXCTL_OK, step = SDB_DONE;
    char age[32];
    bool summary = false;
    size_t top;

    if (queue_opts(argc, argv, &summary, &top) == MXCTL_OK && summary)
        return mxctl_summary(db, now, top, ctx->json);
    if (ctx->json)
        return mxctl_json_queue(db);
    /* One read transaction: a consistent snapshot while mxd keeps writing. */
    if (dbconf_snapshot(db) != 0 || sdb_prepare(db, sql, &m) != 0 ||
        sdb_prepare(db, rcpt_sql, &r) != 0) {
        rc = db_fail(db, "queue");
        goto done;
    }
    while (rc == MXCTL_OK && (step = sdb_step(m)) == SDB_ROW) {
        if (n++ == 0)
            printf("%-24s %5s %10s  %s\n", "QUEUE-ID", "AGE", "SIZE", "SENDER");
        printf("%-24s %5s %10lld  <", sdb_col_str(m, 1),
               fmt_dur(age, sizeof(age), now - sdb_col_i64(m, 2)), (long long)sdb_col_i64(m, 3));
        put_safe(sdb_col_str(m, 4), false);
        puts(">");
        rc = print_rcpts(db, r, sdb_col_i64(m, 0), now, "    ");
    }
    if (rc == MXCTL_OK && step != SDB_DONE)
        rc = db_fail(db, "queue");
    if (rc == MXCTL_OK && n == 0)
        puts("queue is empty");
done:
    sdb_finalize(m);
    sdb_finalize(r);
    dbconf_snapshot_end(db);
    return rc;
}

static int
show_check(int argc, char **argv)
{
    (void)argv;
    return argc == 1 ? MXCTL_OK : usage_error("show: want one queue id");
}

static void
print_envelope(struct sdb_stmt *s)
{
    time_t t = (time_t)sdb_col_i64(s, 1);
    struct tm tm;
    char when[32] = "?";

    if (gmtime_r(&t, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    fputs("qid: ", stdout);
    put_safe(sdb_col_str(s, 0), false);
    printf("\nreceived: %s\nclient: ", when);
    put_safe(sdb_col_str(s, 2), false);
    fputs("\nhelo: ", stdout);
    put_safe(sdb_col_str(s, 3), false);
    fputs("\nsender: <", stdout);
    put_safe(sdb_col_str(s, 4), false);
    printf(">\nsize: %lld\n", (long long)sdb_col_i64(s, 7));
    if ((int)sdb_col_i64(s, 5) || (int)sdb_col_i64(s, 6))
        printf("options:%s%s\n", (int)sdb_col_i64(s, 5) ? " SMTPUTF8" : "",
               (int)sdb_col_i64(s, 6) ? " BODY=8BITMIME" : "");
}

/* Streams the body in chunks: a message may be far bigger than memory. */
static int
print_body(struct sdb *db, int64_t id)
{
    static unsigned char buf[MXCTL_CHUNK];
    uint64_t off = 0, total = 0;

    do {
        size_t got;

        if (sdb_body_read(db, id, off, buf, sizeof(buf), &got, &total) != 0)
            return db_fail(db, "show: body");
        if (got == 0 || fwrite(buf, 1, got, stdout) != got)
            break;
        off += got;
    } while (off < total);
    return MXCTL_OK;
}

static int
show_run(const struct mxctl_ctx *ctx, struct sdb *db, int argc, char **argv)
{
    const char *sql = "SELECT qid, received, client_addr, helo, sender, smtputf8, body_8bit, "
                      "size, id FROM messages WHERE qid = ?1";
    struct sdb_stmt *m = NULL, *r = NULL;
    int64_t id;
    int rc = MXCTL_OK, step;

    (void)argc;
    if (ctx->json)
        return mxctl_json_show(db, argv[0]);
    if (dbconf_snapshot(db) != 0 || sdb_prepare(db, sql, &m) != 0 ||
        sdb_prepare(db, rcpt_sql, &r) != 0) {
        rc = db_fail(db, "show");
        goto done;
    }
    sdb_bind_text(m, 1, argv[0]);
    if ((step = sdb_step(m)) != SDB_ROW) {
        if (step == SDB_DONE)
            fprintf(stderr, "mxctl: no such message: %s\n", argv[0]);
        rc = step == SDB_DONE ? MXCTL_REFUSED : db_fail(db, "show");
        goto done;
    }
    print_envelope(m);
    id = sdb_col_i64(m, 8);
    sdb_reset(m); /* one statement at a time from here on */
    rc = print_rcpts(db, r, id, (int64_t)time(NULL), "recipient: ");
    putchar('\n');
    if (rc == MXCTL_OK)
        rc = print_body(db, id);
done:
    sdb_finalize(m);
    sdb_finalize(r);
    dbconf_snapshot_end(db);
    return rc;
}

/* ---- commands for the daemon ------------------------------------------ */

/* A queue id or domain as the control protocol carries it: printable ASCII,
 * no spaces. */
static bool
word_valid(const char *w)
{
    if (*w == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)w; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    }
    return true;
}

static int
flush_check(int argc, char **argv)
{
    if (argc > 1)
        return usage_error("flush: at most one domain");
    if (argc == 1 && !word_valid(argv[0]))
        return usage_error("flush: invalid domain '%s'", argv[0]);
    return MXCTL_OK;
}

static int
domain_check(int argc, char **argv)
{
    if (argc != 1)
        return usage_error("want one domain");
    if (!word_valid(argv[0]))
        return usage_error("invalid domain '%s'", argv[0]);
    return MXCTL_OK;
}

static int
qid_check(int argc, char **argv)
{
    if (argc != 1)
        return usage_error("want one queue id");
    if (!word_valid(argv[0]))
        return usage_error("invalid queue id '%s'", argv[0]);
    return MXCTL_OK;
}

static int
none_check(int argc, char **argv)
{
    return argc == 0 ? MXCTL_OK : usage_error("unexpected argument '%s'", argv[0]);
}

/* flush, hold, release, delete, bounce: the command's name is the verb. */
static int
op_run(const struct mxctl_ctx *ctx, struct sdb *db, int argc, char **argv)
{
    (void)db;
    return mxctl_ctl_op(ctx->control, ctx->verb, argc > 0 ? argv[0] : NULL);
}

static int
stats_run(const struct mxctl_ctx *ctx, struct sdb *db, int argc, char **argv)
{
    (void)argc, (void)argv;
    return mxctl_ctl_stats(ctx->control, db, ctx->json);
}

static int
tls_policy_run(const struct mxctl_ctx *ctx, struct sdb *db, int argc, char **argv)
{
    (void)db, (void)argc;
    return mxctl_ctl_tls_policy(ctx->control, argv[0], ctx->json);
}

static int
cluster_run(const struct mxctl_ctx *ctx, struct sdb *db, int argc, char **argv)
{
    (void)argc, (void)argv;
    return mxctl_cluster(db, (int64_t)time(NULL), ctx->lease_s, ctx->json);
}

/* ---- main --------------------------------------------------------------- */

struct mxctl_cmd {
    const char *name;
    int (*check)(int argc, char **argv); /* arguments, before the database opens */
    int (*run)(const struct mxctl_ctx *ctx, struct sdb *db, int argc, char **argv);
    bool db;      /* opens the database */
    bool daemon;  /* talks to mxd over the control socket */
    bool cluster; /* store = postgresql only */
};

static const struct mxctl_cmd mxctl_cmds[] = {
    {"queue", queue_check, queue_run, true, false, false},
    {"show", show_check, show_run, true, false, false},
    {"recipient", recipient_check, recipient_run, true, false, false},
    {"flush", flush_check, op_run, false, true, false},
    {"hold", qid_check, op_run, false, true, false},
    {"release", qid_check, op_run, false, true, false},
    {"delete", qid_check, op_run, false, true, false},
    {"bounce", qid_check, op_run, false, true, false},
    {"stats", none_check, stats_run, true, true, false},
    {"reload", none_check, op_run, false, true, false},
    {"tls-policy", domain_check, tls_policy_run, false, true, false},
    {"cluster", none_check, cluster_run, true, false, true},
};

/* Where a command's database and control socket are. */
struct mxctl_where {
    struct conf *conf;    /* owned; NULL when not read */
    struct sdb_params db; /* its strings borrowed from conf or argv */
};

/* -d names a SQLite file and spares reading the configuration (unless the
 * command talks to the daemon); otherwise the configuration says which
 * engine and where (store/dbconf.h). MXCTL_OK or said why. */
static int
locate(const struct mxctl_cmd *cmd, const char *conf_path, const char *db_path,
       struct mxctl_where *w)
{
    char *errors = NULL;

    w->conf = NULL;
    w->db = (struct sdb_params){.engine = SDB_SQLITE, .path = db_path};
    if (!cmd->daemon && (db_path != NULL || !cmd->db))
        return MXCTL_OK;
    if (conf_load(conf_path, &w->conf, &errors) != 0) {
        fprintf(stderr, "%s", errors ? errors : "mxctl: cannot read the configuration\n");
        free(errors);
        return MXCTL_REFUSED;
    }
    if (cmd->daemon && w->conf->control_socket == NULL) {
        fprintf(stderr, "mxctl: control_socket is not set in %s\n", conf_path);
        return MXCTL_REFUSED;
    }
    if (db_path == NULL)
        w->db = dbconf_params(w->conf);
    return MXCTL_OK;
}

/* `recipient add` may be the first command on a new system. */
static bool
creates_db(const struct mxctl_cmd *cmd, int argc, char **argv)
{
    return strcmp(cmd->name, "recipient") == 0 && argc >= 1 && strcmp(argv[0], "add") == 0;
}

/* Opens the database at p for cmd: MXCTL_OK and *db, or said why. */
static int
open_db(const struct mxctl_cmd *cmd, const struct sdb_params *p, int argc, char **argv,
        struct sdb **db)
{
    struct stat st;
    bool existed = true;
    char *err = NULL;

    if (cmd->cluster && p->engine != SDB_POSTGRESQL) {
        fprintf(stderr, "mxctl: not a cluster (store = %s)\n", dbconf_engine_name(p->engine));
        return MXCTL_REFUSED;
    }
    if (p->engine == SDB_SQLITE && p->path != NULL)
        existed = stat(p->path, &st) == 0 || errno != ENOENT;
    if (!existed && !creates_db(cmd, argc, argv)) {
        fprintf(stderr,
                "mxctl: database %s does not exist (mxd creates it when it starts; "
                "check -d or `database` in the configuration)\n",
                p->path);
        return MXCTL_REFUSED;
    }
    if (sdb_open(p, db, &err) != 0) {
        fprintf(stderr, "mxctl: %s\n", err != NULL ? err : "cannot open the database");
        free(err);
        return MXCTL_REFUSED;
    }
    if (!existed)
        fprintf(stderr, "mxctl: created database %s\n", p->path);
    return MXCTL_OK;
}

static int
run(const struct mxctl_cmd *cmd, const char *conf_path, const char *db_path, bool json, int argc,
    char **argv)
{
    struct mxctl_ctx ctx = {.json = json, .verb = cmd->name};
    struct mxctl_where w = {NULL, {.engine = SDB_SQLITE}};
    struct sdb *db = NULL;
    int rc = cmd->check(argc, argv);

    if (rc == MXCTL_OK)
        rc = locate(cmd, conf_path, db_path, &w);
    if (rc == MXCTL_OK && w.conf != NULL) {
        ctx.control = w.conf->control_socket;
        ctx.lease_s = (int64_t)w.conf->cluster_lease_s;
    }
    if (rc == MXCTL_OK && cmd->db)
        rc = open_db(cmd, &w.db, argc, argv, &db);
    if (rc == MXCTL_OK)
        rc = cmd->run(&ctx, db, argc, argv);
    sdb_close(db);
    conf_free(w.conf);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("mxctl: stdout");
        rc = MXCTL_REFUSED;
    }
    return rc;
}

/* Takes every "--json" out of argv (it may come anywhere); true if any. */
static bool
take_json(int *argc, char **argv)
{
    int n = 1;
    bool json = false;

    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            argv[n++] = argv[i];
    }
    *argc = n;
    argv[n] = NULL;
    return json;
}

int
main(int argc, char **argv)
{
    const char *conf_path = MXCTL_CONF, *db_path = NULL;
    bool json = take_json(&argc, argv);
    int i;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *opt = argv[i];

        if (strcmp(opt, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout);
            return MXCTL_OK;
        }
        if ((opt[1] != 'c' && opt[1] != 'd') || (opt[2] == '\0' && i + 1 >= argc))
            return usage_error("bad option '%s'", opt);
        if (opt[1] == 'c')
            conf_path = opt[2] != '\0' ? opt + 2 : argv[++i];
        else
            db_path = opt[2] != '\0' ? opt + 2 : argv[++i];
    }
    if (i >= argc)
        return usage_error("no command given");
    for (size_t c = 0; c < sizeof(mxctl_cmds) / sizeof(mxctl_cmds[0]); c++) {
        if (strcmp(argv[i], mxctl_cmds[c].name) == 0)
            return run(&mxctl_cmds[c], conf_path, db_path, json, argc - i - 1, argv + i + 1);
    }
    return usage_error("unknown command '%s'", argv[i]);
}
