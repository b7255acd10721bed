/* milter_edit: what content filters change in a message, applied to the
 * message's header in memory: the fields as a list, changed, deleted and
 * inserted by the milter protocol's index rules (Sendmail's smfi_chgheader
 * and smfi_insheader, as Postfix applies them); and a replacement body's
 * line ends made CRLF. Pure: no I/O. */
#ifndef MXD_MILTER_EDIT_H
#define MXD_MILTER_EDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

/* A header: its fields in order, each with its CRLF line ends. */
struct milter_head;

struct milter_head *milter_head_new(void);
void milter_head_free(struct milter_head *h);
/* Replaces the fields with those of raw[0..len) (CRLF-ended lines, the
 * empty line excluded): a field starts at a line that does not start
 * with a blank; a line without a colon is kept as a field of no name. */
void milter_head_parse(struct milter_head *h, const char *raw, size_t len);
size_t milter_head_count(const struct milter_head *h);
/* ADDHEADER: after the last field. -MXD_EINVAL for an unusable name. */
int milter_head_add(struct milter_head *h, const char *name, const char *value) MXD_WUR;
/* INSHEADER: before the field at index (0 the first; past the end: last). */
int milter_head_insert(struct milter_head *h, size_t index, const char *name,
                       const char *value) MXD_WUR;
/* CHGHEADER: the index-th field named name (1-based, any case; 0 counts
 * as 1) gets value, or goes when value is empty; when there is no such
 * field, a non-empty value is added at the end. */
int milter_head_change(struct milter_head *h, size_t index, const char *name,
                       const char *value) MXD_WUR;
/* The header as stored: the fields one after another. *len its length;
 * caller frees. */
char *milter_head_text(const struct milter_head *h, size_t *len);

/* A replacement body's line ends: a bare LF becomes CRLF, across chunks
 * (cr: the last octet seen was a CR). out has room for 2 * len octets;
 * returns what was written. */
struct milter_crlf {
    bool cr;
};
size_t milter_crlf(struct milter_crlf *st, const char *in, size_t len, char *out);

#endif
