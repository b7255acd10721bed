/* check internals: what a check is, and what the pipeline gives it. For the
 * checks in src/check/ and the pipeline's tests; not for other modules.
 *
 * A check is a struct check_ops with a hook for each stage it takes part
 * in. A stage hook answers exactly once, now (inside the hook) or later
 * (from a callback of its own work), with check_pass or check_answer and
 * the ticket it was given; an answer with a ticket the pipeline no longer
 * waits for (the stage's budget was spent) is dropped. Work that will call
 * back later holds the pipeline (check_hold), so a check's state lives
 * until the work is back even when the connection is gone.
 *
 * A new check is one file with its struct check_ops, plus one line in
 * check_list.c where the order is set. */
#ifndef MXD_CHECK_IMPL_H
#define MXD_CHECK_IMPL_H

#include "base/addr.h"
#include "check/authres.h"
#include "check/check.h"
#include "check/dkim.h"
#include "check/dmarc.h"
#include "check/scache.h"
#include "check/spf.h"
#include "store/qid.h"

enum check_stage {
    CHECK_STAGE_CONNECT,
    CHECK_STAGE_HELO,
    CHECK_STAGE_MAIL,
    CHECK_STAGE_RCPT,
    CHECK_STAGE_END,
};

/* Answers the stage a hook was called for. */
struct check_ticket {
    struct check_session *cs;
    unsigned gen;
};

/* Where a filter passes the content on (the next filter or the sink). */
struct check_stream {
    struct check_session *cs;
    size_t next; /* index in the list of the check after this one */
};

/* What the pipeline knows of the connection and the transaction. */
struct check_info {
    const struct conf *conf; /* the connection's config (a reference) */
    struct check_env env;
    struct check_client client;
    uint64_t started_ms; /* the connection began (uv_now at check_session_new) */
    char helo[256];      /* "" before HELO/EHLO */
    char qid[QID_LEN + 1];
    const struct addr *sender; /* of the transaction, after MAIL (empty before) */
    char tls_version[32];      /* "" without TLS, else "TLS1.3" (check_tls) */
    char tls_cipher[64];
};

#define CHECK_EARLY_HEAD 64 /* octets of early input kept for the log */

/* The screening's facts about the connection (check_screen.c,
 * check_pregreet.c, check_dnsbl.c and the pipeline). Carried by every
 * connection, so the fields are ordered for the least padding (112 octets
 * with two tests). */
struct check_screen_facts {
    int64_t until[SCREEN_NTESTS]; /* the client's remembered pass of each test expires
                                     (unix seconds; 0: none) */
    /* input before the greeting (check_input_early) */
    size_t early_octets;
    uint64_t early_ms; /* when the first came, since the connection began */
    size_t early_head_len;
    char early_head[CHECK_EARLY_HEAD];
    bool early_eof;       /* the client closed before the greeting */
    bool looked_up;       /* the memory was asked (until is its answer) */
    bool pregreet_passed; /* the pre-greet test passed in this connection */
    bool pregreet_waited; /* the pre-greet test made the client wait (its timer ran) */
    bool allowlisted;     /* the DNSBL score is at or under dnsbl_allowlist_threshold */
};

/* What the checks learned of the connection, for the checks after them:
 * kept for its life, inside the session (small: a connection that never
 * sends MAIL costs no more). */
struct check_facts {
    /* The screening trusts the client: it passed every screening test
     * that is on (the pre-greet test, the DNSBL test) within screen_ttl,
     * in earlier connections (check_screen.c), or a DNSWL lists it now
     * (check_dnsbl.c): greylisting spares it. */
    bool client_trusted;
    /* The client's forward-confirmed reverse name, NULL when none
     * (check_dnsbl.c, with fcrdns = on, owns it): our Received: shows it. */
    const char *client_name;
    struct check_screen_facts screen;
};

/* What the checks learned of the transaction, for the checks after them
 * (and the header fields): reset at MAIL. About 16 KiB (DKIM results), so
 * allocated at the first MAIL only: 10,000 idle connections do not carry
 * it (tests/bench: RSS per idle connection). */
struct check_txn_facts {
    /* SPF (check_spf.c), once known */
    bool spf_done;
    struct spf_result spf;
    /* the header, read at the end of data (check_header.c) */
    unsigned received;          /* Received: fields in it */
    size_t nfrom_fields;        /* From: fields */
    const char *from_malformed; /* why the From: field cannot be used, or NULL */
    char from[DMARC_AUTHORS_MAX][AUTHRES_DOMAIN_MAX];
    size_t nfrom; /* the authors' domains */
    /* DKIM and DMARC (check_dkim.c), once verified */
    bool verified;
    struct dkim_result dkim;
    struct dmarc_result dmarc;
    /* a DKIM pass whose d= is relaxed-aligned with the MAIL FROM domain
     * (RFC 7489 3.1.1: the same organizational domain; check_dkim.c) */
    bool dkim_rp_aligned;
};

struct check_ops {
    const char *name; /* for logs */
    /* State for one connection (NULL: none); freed by stop once the
     * connection is gone and no held work is out. */
    void *(*start)(struct check_session *cs);
    void (*stop)(void *st);
    /* Stage hooks (NULL: the check does not take part). */
    void (*connect)(void *st, struct check_ticket t);
    void (*helo)(void *st, struct check_ticket t);
    void (*mail)(void *st, struct check_ticket t);
    void (*rcpt)(void *st, struct check_ticket t, const struct addr *rcpt);
    void (*end)(void *st, struct check_ticket t);
    /* The content begins (hooks run last to first); a filter passes what
     * it keeps to out. */
    void (*data)(void *st, struct check_stream out);
    /* The content as received (all observers see it before any filter). */
    void (*observe)(void *st, const char *data, size_t len);
    /* The content on its way to the store: what goes on, through
     * check_emit(out, ...), may differ. */
    void (*filter)(void *st, const char *data, size_t len);
    /* The transaction is over (RSET, a new MAIL, an error, or after the
     * end's answer). */
    void (*reset)(void *st);
    /* Input arrived before the greeting, or the client closed, while the
     * connect stage runs (check_input_early; the facts have it). May
     * answer the connect stage with a ticket its hook kept. */
    void (*early)(void *st);
};

/* The registered checks, in order (check_list.c). */
extern const struct check_ops *const check_list[];
extern const size_t check_list_len;

/* check_session_new with another list (the pipeline's tests). */
struct check_session *check_session_new_list(const struct check_env *env, const struct conf *conf,
                                             const struct check_client *client, check_sink_cb sink,
                                             void *sink_arg, const struct check_ops *const *list,
                                             size_t n, uint64_t budget_ms);

const struct check_info *check_info(const struct check_session *cs);
/* The state of the registered check ops in this pipeline (what its start
 * returned), or NULL when it is not in the list: for a check with two
 * places in the list (check_dnsbl.c). Valid from the start of the checks
 * after ops. */
void *check_state(struct check_session *cs, const struct check_ops *ops);
struct check_facts *check_facts(struct check_session *cs);
/* The transaction's facts (allocated at first use, reset at MAIL). */
struct check_txn_facts *check_txn_facts(struct check_session *cs);

/* True while the pipeline waits for t's answer (not after the budget
 * answered for it, nor once the connection is gone). cs must be alive
 * (held, or inside a hook). */
bool check_ticket_live(struct check_ticket t);
/* The check accepts: the next one runs. */
void check_pass(struct check_ticket t);
/* The check decides: code and text ("5.7.1 ..."), or CHECK_ACCEPT. */
void check_answer(struct check_ticket t, enum check_action action, int code, const char *text);
/* End of data, accepting: fields to add above Received: (CRLF-ended). */
void check_add_fields(struct check_session *cs, const char *fields, size_t len);
/* The transaction's edits for the verdict at the end of data (emptied at
 * MAIL, DATA and a reset); a check fills it with owned strings
 * (xstrdup), the pipeline frees them. */
struct check_edits *check_edits(struct check_session *cs);
/* The content the sink received is void, what follows replaces it (a
 * body replacement). False when the session cannot. */
bool check_rewind(struct check_session *cs);
/* A filter is behind (busy) or caught up: the session stops or resumes
 * feeding content (check_busy, check_resume_cb). */
void check_set_busy(struct check_session *cs, bool busy);
/* Passes content on from a filter. */
void check_emit(struct check_stream out, const char *data, size_t len);
/* The connect stage's checks: begin the greeting now with "220-<text>"
 * (check.h, check_teaser_cb); at most once a connection. False when no
 * teaser can be sent (the session takes none). */
bool check_teaser(struct check_session *cs, const char *text);

/* The screening: the DNSBL check found the client allowlisted
 * (facts.screen.allowlisted). A pre-greet wait still running ends at the
 * next turn of the loop, as a pass (check_pregreet.c; postscreen ends its
 * greet wait for an allowlisted client too). No-op otherwise. */
void check_pregreet_allowlisted(struct check_session *cs);

/* Work that will call back is out: the pipeline and every check's state
 * stay until check_unhold. */
void check_hold(struct check_session *cs);
/* The work came back. True when the connection is gone: then cs may be
 * freed already, and the caller must not touch it or its state. */
bool check_unhold(struct check_session *cs);

#endif
