/* log: owns the log level (process-wide, set once at start-up). Any thread:
 * each line is written with one stdio call, so lines from the writer thread
 * and the loop thread do not interleave. Under systemd (JOURNAL_STREAM set)
 * lines carry a <N> priority prefix that journald understands, elsewhere a
 * UTC timestamp. Never logs bodies or secrets: callers pass escaped values. */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum log_level log_level_max = LOG_INFO;

void
log_set_level(enum log_level level)
{
    log_level_max = level;
}

static const char *
log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_ERR:
        return "err";
    case LOG_WARN:
        return "warn";
    case LOG_INFO:
        return "info";
    case LOG_DEBUG:
        return "debug";
    }
    return "info";
}

void
log_msg(enum log_level level, const char *qid, const char *component, const char *fmt, ...)
{
    char line[4096];
    char prefix[64];
    size_t n;
    va_list ap;

    if (level > log_level_max)
        return;
    if (getenv("JOURNAL_STREAM") != NULL) {
        snprintf(prefix, sizeof(prefix), "<%d>", (int)level);
    } else {
        struct timespec ts;
        struct tm tm;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(prefix, sizeof(prefix), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(prefix + n, sizeof(prefix) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s%s %s %s %s\n", prefix, log_level_name(level), qid ? qid : "-", component,
            line);
}

const char *
log_esc(char *buf, size_t size, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    bool quote = len == 0;
    size_t o = 0;

    if (size < 8) {
        if (size > 0)
            buf[0] = '\0';
        return buf;
    }
    for (size_t i = 0; i < len && !quote; i++)
        quote = s[i] == ' ' || s[i] == '=' || s[i] == '"';
    if (quote)
        buf[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[4];
        size_t tn = 0;

        if (c == '"' || c == '\\') {
            tmp[tn++] = '\\';
            tmp[tn++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            tmp[tn++] = (char)c;
        } else {
            tmp[tn++] = '\\';
            tmp[tn++] = 'x';
            tmp[tn++] = hex[c >> 4];
            tmp[tn++] = hex[c & 15];
        }
        if (o + tn + 5 > size) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(buf + o, tmp, tn);
        o += tn;
    }
    if (quote)
        buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
