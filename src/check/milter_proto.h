/* milter_proto: the MTA side of the milter protocol, version 6 (as
 * Sendmail 8.14+ and Postfix 3 speak it). Pure: commands in, packet bytes
 * out; reply bytes in, events out. No I/O, no clock.
 *
 * A packet is a 4-octet length in network order (the command byte and the
 * data) followed by the command byte and its data. The MTA drives: it
 * sends a command and, unless the negotiated protocol steps say the filter
 * does not answer it (SMFIP_NR_*), waits for the reply before the next
 * one. This object keeps that order itself: commands may be queued at any
 * time; milter_proto_output hands out only the bytes up to the first
 * command whose reply is still awaited, and a command the filter asked
 * not to see (SMFIP_NO*) is not queued at all. */
#ifndef MXD_MILTER_PROTO_H
#define MXD_MILTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

#define MILTER_VERSION   6
#define MILTER_CHUNK_MAX 65535u /* a body chunk (libmilter's MILTER_CHUNK_SIZE) */
#define MILTER_DATA_MAX  65535u /* a command's data that a filter reads by default */
/* A reply's command byte and data: a body replacement chunk and a little
 * more; anything longer is a protocol error, never an allocation. */
#define MILTER_REPLY_MAX   (65536u + 1024u)
#define MILTER_OUT_MAX     (1024u * 1024u) /* queued command bytes at most */
#define MILTER_SYMLIST_MAX 512u            /* a stage's macro list (SETSYMLIST) */
#define MILTER_TEXT_MAX    512u            /* a reply text, cleaned */

/* Actions the MTA offers and the filter asks for (SMFIF_*). */
#define MILTER_ACT_ADDHDRS     0x001u /* add and insert header fields */
#define MILTER_ACT_CHGBODY     0x002u
#define MILTER_ACT_ADDRCPT     0x004u
#define MILTER_ACT_DELRCPT     0x008u
#define MILTER_ACT_CHGHDRS     0x010u /* change and delete header fields */
#define MILTER_ACT_QUARANTINE  0x020u
#define MILTER_ACT_CHGFROM     0x040u
#define MILTER_ACT_ADDRCPT_PAR 0x080u
#define MILTER_ACT_SETSYMLIST  0x100u
#define MILTER_ACT_ALL         0x1ffu

/* Protocol steps (SMFIP_*): NO* the step is not sent, NR_* it is sent
 * without a reply. */
#define MILTER_P_NOCONNECT   0x00000001u
#define MILTER_P_NOHELO      0x00000002u
#define MILTER_P_NOMAIL      0x00000004u
#define MILTER_P_NORCPT      0x00000008u
#define MILTER_P_NOBODY      0x00000010u
#define MILTER_P_NOHDRS      0x00000020u
#define MILTER_P_NOEOH       0x00000040u
#define MILTER_P_NR_HDR      0x00000080u
#define MILTER_P_NOUNKNOWN   0x00000100u
#define MILTER_P_NODATA      0x00000200u
#define MILTER_P_SKIP        0x00000400u /* the MTA understands SMFIR_SKIP */
#define MILTER_P_RCPT_REJ    0x00000800u /* rejected recipients too (not offered) */
#define MILTER_P_NR_CONN     0x00001000u
#define MILTER_P_NR_HELO     0x00002000u
#define MILTER_P_NR_MAIL     0x00004000u
#define MILTER_P_NR_RCPT     0x00008000u
#define MILTER_P_NR_DATA     0x00010000u
#define MILTER_P_NR_UNKN     0x00020000u
#define MILTER_P_NR_EOH      0x00040000u
#define MILTER_P_NR_BODY     0x00080000u
#define MILTER_P_HDR_LEADSPC 0x00100000u
/* What this implementation can honour: every step but RCPT_REJ. */
#define MILTER_P_OFFER 0x001ff7ffu

/* Macro stages (SMFIM_*), the index in SETSYMLIST. */
enum milter_stage {
    MILTER_ST_CONNECT,
    MILTER_ST_HELO,
    MILTER_ST_MAIL,
    MILTER_ST_RCPT,
    MILTER_ST_DATA,
    MILTER_ST_EOM,
    MILTER_ST_EOH,
    MILTER_NSTAGES
};

/* What a filter said, one event per reply packet. */
#define MILTER_EVENTS(X)                                                                           \
    X(NEGOTIATED, "negotiated")                                                                    \
    X(CONTINUE, "continue")                                                                        \
    X(ACCEPT, "accept")                                                                            \
    X(REJECT, "reject")                                                                            \
    X(TEMPFAIL, "tempfail")                                                                        \
    X(DISCARD, "discard")                                                                          \
    X(REPLYCODE, "replycode")                                                                      \
    X(SHUTDOWN, "shutdown")                                                                        \
    X(CONNFAIL, "conn_fail")                                                                       \
    X(SKIP, "skip")                                                                                \
    X(PROGRESS, "progress")                                                                        \
    X(ADDHEADER, "add_header")                                                                     \
    X(INSHEADER, "insert_header")                                                                  \
    X(CHGHEADER, "change_header")                                                                  \
    X(REPLBODY, "replace_body")                                                                    \
    X(ADDRCPT, "add_rcpt")                                                                         \
    X(DELRCPT, "delete_rcpt")                                                                      \
    X(CHGFROM, "change_from")                                                                      \
    X(QUARANTINE, "quarantine")
#define MILTER_EV_ENUM(id, name) MILTER_EV_##id,
enum milter_ev { MILTER_EVENTS(MILTER_EV_ENUM) MILTER_NEVENTS };
#undef MILTER_EV_ENUM

const char *milter_ev_name(enum milter_ev e);

/* One reply. Strings point into the object and stay valid until the next
 * milter_proto_next or _rbuf. */
struct milter_event {
    enum milter_ev type;
    char cmd;       /* the command it answers ('O', 'C', 'H', 'M', 'R', 'T', 'L', 'N', 'B', 'E') */
    bool final;     /* it ends the reply to cmd: the next command may go */
    bool permitted; /* a modification within the negotiated actions */
    int code;       /* REPLYCODE: 4xx or 5xx (class checked) */
    uint32_t index; /* INSHEADER: position; CHGHEADER: the n-th field of that name (1-based) */
    /* header name and value; recipient and ESMTP arguments (ADDRCPT_PAR,
     * CHGFROM, "" when none); quarantine reason; REPLYCODE text without
     * the code ("5.7.1 ...", controls removed, an enhanced code added or
     * its class set to the code's) */
    const char *a, *b;
    const char *data; /* REPLBODY: a chunk of the new body */
    size_t len;
};

/* MACRO: a name ("j", "{daemon_name}") and its value. */
struct milter_macro {
    const char *name;
    const char *value; /* NULL: not sent */
};

/* Address families of CONNECT (SMFIA_*). */
enum milter_family {
    MILTER_FAM_UNKNOWN = 'U',
    MILTER_FAM_UNIX = 'L',
    MILTER_FAM_INET = '4',
    MILTER_FAM_INET6 = '6',
};

/* What queuing a command did. */
enum milter_send {
    MILTER_SKIPPED, /* the filter asked not to see it (or it is done): nothing queued */
    MILTER_NOREPLY, /* queued, no reply will come */
    MILTER_AWAIT,   /* queued, a reply will come */
};

struct milter_proto;

/* A dialogue that offers actions and protocol steps (masked with what this
 * implementation knows). Caller frees. */
struct milter_proto *milter_proto_new(uint32_t actions, uint32_t steps);
void milter_proto_free(struct milter_proto *m);

/* Commands. Each returns enum milter_send, or -MXD_EINVAL (out of order,
 * malformed argument, after an error), -MXD_ETOOBIG (data over
 * MILTER_DATA_MAX, a body chunk over MILTER_CHUNK_MAX, or more than
 * MILTER_OUT_MAX queued). OPTNEG first, once. */
int milter_proto_optneg(struct milter_proto *m) MXD_WUR;
/* Macros for a stage, sent before its command; only those the filter
 * listed for it (SETSYMLIST), none for a stage it does not see. */
int milter_proto_macros(struct milter_proto *m, enum milter_stage st, const struct milter_macro *mv,
                        size_t n) MXD_WUR;
/* addr is the numeric address (or the socket path for UNIX). */
int milter_proto_connect(struct milter_proto *m, const char *hostname, enum milter_family fam,
                         uint16_t port, const char *addr) MXD_WUR;
int milter_proto_helo(struct milter_proto *m, const char *helo) MXD_WUR;
/* args[0] is "<address>", then the ESMTP parameters. */
int milter_proto_mail(struct milter_proto *m, const char *const *args, size_t n) MXD_WUR;
int milter_proto_rcpt(struct milter_proto *m, const char *const *args, size_t n) MXD_WUR;
int milter_proto_data(struct milter_proto *m) MXD_WUR;
/* value as it follows the colon: with HDR_LEADSPC negotiated it is sent as
 * is, otherwise without its leading blanks. Folded lines end in LF. */
int milter_proto_header(struct milter_proto *m, const char *name, const char *value) MXD_WUR;
int milter_proto_eoh(struct milter_proto *m) MXD_WUR;
/* A chunk of the body (CRLF line ends), 1..MILTER_CHUNK_MAX octets. */
int milter_proto_body(struct milter_proto *m, const char *data, size_t len) MXD_WUR;
int milter_proto_eob(struct milter_proto *m) MXD_WUR;
int milter_proto_unknown(struct milter_proto *m, const char *line) MXD_WUR;
/* The transaction ends without a message: commands of it not yet handed
 * out are dropped, ABORT queued. */
int milter_proto_abort(struct milter_proto *m) MXD_WUR;
/* QUIT; or, new_conn, QUIT_NC: the filter ends the connection's dialogue
 * and a new one (CONNECT) follows on this socket, under the options
 * negotiated: the proto stays usable. */
int milter_proto_quit(struct milter_proto *m, bool new_conn) MXD_WUR;
/* Drops every queued command not yet handed out (a filter accepted or
 * refused the message: the rest of it is not sent). */
void milter_proto_drop_queued(struct milter_proto *m);

/* The bytes that may be written now; *len 0 when none. Then
 * milter_proto_taken with how many were copied out. */
const char *milter_proto_output(const struct milter_proto *m, size_t *len);
void milter_proto_taken(struct milter_proto *m, size_t n);
/* Octets queued and not answered yet (to bound what a session buffers). */
size_t milter_proto_pending(const struct milter_proto *m);
/* A reply is awaited for a command already handed out. */
bool milter_proto_awaiting(const struct milter_proto *m);
/* Input read from the filter and not yet consumed. */
bool milter_proto_unread(const struct milter_proto *m);

/* Reading: space to read into (at least one octet unless an error
 * happened), then how much was read. */
char *milter_proto_rbuf(struct milter_proto *m, size_t *avail);
void milter_proto_filled(struct milter_proto *m, size_t n);
/* Copies data in, as rbuf/filled would, up to the end of the first whole
 * packet not yet pulled: *taken says how much (pull events, then feed the
 * rest). -MXD_EINVAL after an error. */
int milter_proto_feed(struct milter_proto *m, const char *data, size_t len, size_t *taken) MXD_WUR;
/* The next event: 1 (*ev set), 0 (more input needed), or -MXD_EINVAL on a
 * protocol error (milter_proto_error says which); then the dialogue is
 * over. */
int milter_proto_next(struct milter_proto *m, struct milter_event *ev) MXD_WUR;
const char *milter_proto_error(const struct milter_proto *m);

/* What negotiation settled (0 before). */
uint32_t milter_proto_actions(const struct milter_proto *m);
uint32_t milter_proto_steps(const struct milter_proto *m);
unsigned milter_proto_version(const struct milter_proto *m);

/* "Name: value\r\n" for the stored message from a filter's header field
 * (name as given; each line of the value ended by CRLF, a continuation line
 * starting with a blank, other controls made spaces; a space after the
 * colon unless the value starts with a blank). Returns the length, or 0
 * when it does not fit in size (NUL included) or name is unusable. */
size_t milter_header_format(char *out, size_t size, const char *name, const char *value);

#endif
