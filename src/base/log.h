/* log: one line per event, `key=value`, queue id on every line: on stderr,
 * or to the journal with structured fields when systemd connected stderr
 * to it. */
#ifndef MXD_LOG_H
#define MXD_LOG_H

#include <stddef.h>

enum log_level { LOG_ERR = 3, LOG_WARN = 4, LOG_INFO = 6, LOG_DEBUG = 7 };

void log_set_level(enum log_level level);

/* Call once at start-up, before any thread logs: uses the journal
 * (sd_journal_send) when JOURNAL_STREAM names our stderr. */
void log_init(void);

/* From now on the calling thread's stderr lines are collected and written
 * together by log_flush (err and warn lines at once); other threads still
 * write each line as it comes. log_batch_end flushes and stops. */
void log_batch_begin(void);
void log_flush(void);
void log_batch_end(void);

/* For tests: one "key=value" field of a log line: slices of the line. */
struct log_field {
    const char *key, *val;
    size_t klen, vlen;
};

/* Splits "event k=v k2=\"v 2\" ..." into the event (*event, *elen) and
 * up to max fields; returns how many. Keys are [a-z0-9_]; quoted values
 * lose their quotes (escapes stay). Words that are not key=value are
 * skipped. Pure. */
size_t log__fields(const char *line, const char **event, size_t *elen, struct log_field *out,
                   size_t max);

/* Writes "<level> <qid or -> <component> <message>". qid may be NULL. */
void log_msg(enum log_level level, const char *qid, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Makes peer-supplied text safe for a log value: printable ASCII is kept,
 * quotes are added when it has spaces, `"` and `\` are escaped, everything
 * else becomes \xNN. Writes into buf (always NUL-terminated, truncated with
 * "..." when it does not fit) and returns buf. */
const char *log_esc(char *buf, size_t size, const char *s, size_t len);

/* An envelope address as a log value: "<addr>" escaped as log_esc does,
 * the whole value quoted (brackets inside the quotes) when it needs
 * quotes, so a quoted local part is one field. Returns buf. */
const char *log_addr(char *buf, size_t size, const char *addr);

#endif
