/* milter_filter: a test filter on libmilter (Debian libmilter-dev), for
 * tests/integration/test_milter.py and for recording real exchanges.
 *
 *   milter_filter -p SOCKET -m MODE [-l LOG] [-s SECONDS] [-n NAME]
 *
 * SOCKET is libmilter's form (inet:PORT@127.0.0.1, unix:/path). MODE says
 * what it does:
 *   accept           continue everywhere, accept at the end of message
 *   continue         continue everywhere, the end of message too (so that
 *                    libmilter takes a QUIT_NC after it: reuse = on)
 *   reject-connect   reject at connect
 *   reject-rcpt      reject recipients whose address contains "reject"
 *   tempfail-mail    tempfail at MAIL
 *   replycode        at the end of message: 554 5.7.0 with custom text
 *                    holding a control character and a wrong class
 *   addheader        add "X-Test-Filter: NAME" (-n, default "seen") and
 *                    insert a field at the top
 *   discard          discard at the end of message
 *   sleep            sleep -s SECONDS (default 5) at the end of message
 *   quarantine       quarantine with a reason
 *   chgheader        change the first Subject:, delete X-Drop:
 *   modify           every header and envelope change at once: Subject:
 *                    changed, X-Drop: deleted, the second X-Twice:
 *                    changed, X-Inserted: inserted at index 1, X-Added:
 *                    added at the end, recipients added (one with ESMTP
 *                    arguments, one in a domain mxd does not serve) and
 *                    del@example.test removed, the sender changed
 *   replbody         replace the body with LF-ended lines
 *   replbody-big     replace the body with -b OCTETS of "x" lines
 *   replbody-die     send half a new body, then exit (a filter that dies)
 *   slow             accept, sleeping -d MILLISECONDS on each body chunk
 *   progress         sleep -s SECONDS at the end of message, sending
 *                    PROGRESS every half second
 * The log (one line per callback: name and what it got, macros included)
 * lets a test see what the MTA sent. Runs until killed. */
#define _DEFAULT_SOURCE /* usleep */
#include <libmilter/mfapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *mode = "accept";
static FILE *log_file;
static unsigned sleep_s = 5;
static unsigned delay_ms;
static size_t big_len = 1024 * 1024;
static const char *header_value = "seen";

static void
logline(const char *what, const char *a, const char *b)
{
    if (log_file == NULL)
        return;
    fprintf(log_file, "%s %s %s\n", what, a ? a : "-", b ? b : "-");
    fflush(log_file);
}

static void
logmacro(SMFICTX *ctx, const char *name)
{
    char *v = smfi_getsymval(ctx, (char *)name);

    if (v != NULL)
        logline("macro", name, v);
}

static sfsistat
on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
    (void)sa;
    logline("connect", host, NULL);
    logmacro(ctx, "j");
    logmacro(ctx, "_");
    logmacro(ctx, "{daemon_name}");
    logmacro(ctx, "{client_addr}");
    logmacro(ctx, "{client_port}");
    logmacro(ctx, "{client_name}");
    if (strcmp(mode, "reject-connect") == 0)
        return SMFIS_REJECT;
    return SMFIS_CONTINUE;
}

static sfsistat
on_helo(SMFICTX *ctx, char *helo)
{
    (void)ctx;
    logline("helo", helo, NULL);
    return SMFIS_CONTINUE;
}

static sfsistat
on_mail(SMFICTX *ctx, char **argv)
{
    logline("mail", argv[0], argv[1]);
    logmacro(ctx, "i");
    logmacro(ctx, "{mail_addr}");
    logmacro(ctx, "{tls_version}");
    logmacro(ctx, "{cipher}");
    if (strcmp(mode, "tempfail-mail") == 0)
        return SMFIS_TEMPFAIL;
    return SMFIS_CONTINUE;
}

static sfsistat
on_rcpt(SMFICTX *ctx, char **argv)
{
    logline("rcpt", argv[0], NULL);
    logmacro(ctx, "{rcpt_addr}");
    logmacro(ctx, "{rcpt_mailer}");
    if (strcmp(mode, "reject-rcpt") == 0 && strstr(argv[0], "reject") != NULL)
        return SMFIS_REJECT;
    return SMFIS_CONTINUE;
}

static sfsistat
on_header(SMFICTX *ctx, char *name, char *value)
{
    (void)ctx;
    logline("header", name, value);
    return SMFIS_CONTINUE;
}

static sfsistat
on_eoh(SMFICTX *ctx)
{
    (void)ctx;
    logline("eoh", NULL, NULL);
    return SMFIS_CONTINUE;
}

static sfsistat
on_body(SMFICTX *ctx, unsigned char *data, size_t len)
{
    char n[32];

    (void)ctx;
    (void)data;
    snprintf(n, sizeof(n), "%zu", len);
    logline("body", n, NULL);
    if (delay_ms > 0)
        usleep(delay_ms * 1000);
    return SMFIS_CONTINUE;
}

static void
modify(SMFICTX *ctx)
{
    smfi_chgheader(ctx, "Subject", 1, "changed");
    smfi_chgheader(ctx, "X-Drop", 1, NULL);
    smfi_chgheader(ctx, "X-Twice", 2, "second changed");
    smfi_insheader(ctx, 1, "X-Inserted", "at1");
    smfi_addheader(ctx, "X-Added", "last");
    smfi_addrcpt(ctx, "<added@example.test>");
    smfi_addrcpt_par(ctx, "<par@example.test>", "NOTIFY=NEVER");
    smfi_addrcpt(ctx, "<x@not-served.test>");
    smfi_delrcpt(ctx, "<del@example.test>");
    smfi_chgfrom(ctx, "<new@sender.test>", NULL);
}

static sfsistat
replbody(SMFICTX *ctx)
{
    static char line[] =
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
    char buf[65536];
    size_t n = 0, total = 0;

    if (strcmp(mode, "replbody") == 0) {
        static char nb[] = "Replaced body\nline 2\r\n";

        smfi_replacebody(ctx, (unsigned char *)nb, (int)sizeof(nb) - 1);
        return SMFIS_ACCEPT;
    }
    /* replbody-big and replbody-die: big_len octets of lines */
    while (total < big_len) {
        size_t k = sizeof(line) - 1;

        if (k > big_len - total)
            k = big_len - total;
        if (n + k > sizeof(buf)) {
            smfi_replacebody(ctx, (unsigned char *)buf, (int)n);
            n = 0;
            if (strcmp(mode, "replbody-die") == 0 && total >= big_len / 2)
                _exit(1);
        }
        memcpy(buf + n, line, k);
        n += k;
        total += k;
    }
    if (n > 0)
        smfi_replacebody(ctx, (unsigned char *)buf, (int)n);
    return SMFIS_ACCEPT;
}

static sfsistat
on_eom(SMFICTX *ctx)
{
    logline("eom", NULL, NULL);
    if (strcmp(mode, "replycode") == 0) {
        smfi_setreply(ctx, "554", "4.7.0", "Go away\tplease\x01 now");
        return SMFIS_REJECT;
    }
    if (strcmp(mode, "addheader") == 0) {
        smfi_addheader(ctx, "X-Test-Filter", (char *)header_value);
        smfi_insheader(ctx, 0, "X-Test-Top", "first\n\tfolded");
    }
    if (strcmp(mode, "discard") == 0)
        return SMFIS_DISCARD;
    if (strcmp(mode, "continue") == 0)
        return SMFIS_CONTINUE;
    if (strcmp(mode, "sleep") == 0)
        sleep(sleep_s);
    if (strcmp(mode, "quarantine") == 0)
        smfi_quarantine(ctx, "test quarantine");
    if (strcmp(mode, "chgheader") == 0) {
        smfi_chgheader(ctx, "Subject", 1, "changed");
        smfi_chgheader(ctx, "X-Drop", 1, NULL);
    }
    if (strcmp(mode, "modify") == 0)
        modify(ctx);
    if (strncmp(mode, "replbody", 8) == 0)
        return replbody(ctx);
    if (strcmp(mode, "progress") == 0) {
        for (unsigned i = 0; i < sleep_s * 2; i++) {
            usleep(500000);
            smfi_progress(ctx);
        }
    }
    return SMFIS_ACCEPT;
}

static sfsistat
on_abort(SMFICTX *ctx)
{
    (void)ctx;
    logline("abort", NULL, NULL);
    return SMFIS_CONTINUE;
}

static sfsistat
on_close(SMFICTX *ctx)
{
    (void)ctx;
    logline("close", NULL, NULL);
    return SMFIS_CONTINUE;
}

static struct smfiDesc desc = {
    .xxfi_name = "mxd-test",
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE | SMFIF_CHGBODY | SMFIF_ADDRCPT |
                  SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_CHGFROM,
    .xxfi_connect = on_connect,
    .xxfi_helo = on_helo,
    .xxfi_envfrom = on_mail,
    .xxfi_envrcpt = on_rcpt,
    .xxfi_header = on_header,
    .xxfi_eoh = on_eoh,
    .xxfi_body = on_body,
    .xxfi_eom = on_eom,
    .xxfi_abort = on_abort,
    .xxfi_close = on_close,
};

int
main(int argc, char **argv)
{
    const char *sock = NULL;
    int c;

    while ((c = getopt(argc, argv, "p:m:l:s:d:b:n:")) != -1) {
        switch (c) {
        case 'p':
            sock = optarg;
            break;
        case 'm':
            mode = optarg;
            break;
        case 'l':
            log_file = fopen(optarg, "a");
            break;
        case 's':
            sleep_s = (unsigned)atoi(optarg);
            break;
        case 'd':
            delay_ms = (unsigned)atoi(optarg);
            break;
        case 'b':
            big_len = (size_t)atoll(optarg);
            break;
        case 'n':
            header_value = optarg;
            break;
        default:
            return 2;
        }
    }
    if (sock == NULL || smfi_setconn((char *)sock) == MI_FAILURE ||
        smfi_register(desc) == MI_FAILURE) {
        fprintf(stderr, "milter_filter: cannot set up %s\n", sock ? sock : "(no -p)");
        return 1;
    }
    if (smfi_opensocket(1) == MI_FAILURE) {
        fprintf(stderr, "milter_filter: cannot open %s\n", sock);
        return 1;
    }
    fprintf(stderr, "milter_filter: ready on %s mode %s\n", sock, mode);
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
