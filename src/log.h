/* log: one line per event on stderr, `key=value`, queue id on every line. */
#ifndef MXD_LOG_H
#define MXD_LOG_H

#include <stddef.h>

enum log_level { LOG_ERR = 3, LOG_WARN = 4, LOG_INFO = 6, LOG_DEBUG = 7 };

void log_set_level(enum log_level level);

/* Writes "<level> <qid or -> <component> <message>". qid may be NULL. */
void log_msg(enum log_level level, const char *qid, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Makes peer-supplied text safe for a log value: printable ASCII is kept,
 * quotes are added when it has spaces, `"` and `\` are escaped, everything
 * else becomes \xNN. Writes into buf (always NUL-terminated, truncated with
 * "..." when it does not fit) and returns buf. */
const char *log_esc(char *buf, size_t size, const char *s, size_t len);

#endif
