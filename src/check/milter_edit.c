/* milter_edit: owns a header's field list (one allocation per field) for
 * the content filters' edits, and the CRLF state of a replacement body.
 * Any thread, one at a time; pure. Errors: -MXD_EINVAL for a field name
 * that cannot be written; allocation failure panics. It does not decide
 * which edits are allowed (check_milter.c does). */
#include "check/milter_edit.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check/milter_proto.h"

struct field {
    char *text; /* "Name: value\r\n", continuation lines included */
    size_t len;
};

struct milter_head {
    struct field *f;
    size_t n, cap;
};

struct milter_head *
milter_head_new(void)
{
    return xcalloc(1, sizeof(struct milter_head));
}

static void
head_clear(struct milter_head *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->f[i].text);
    h->n = 0;
}

void
milter_head_free(struct milter_head *h)
{
    if (h == NULL)
        return;
    head_clear(h);
    free(h->f);
    free(h);
}

static void
head_put(struct milter_head *h, size_t at, const char *text, size_t len)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 32;
        h->f = xrealloc(h->f, h->cap * sizeof(*h->f));
    }
    if (at > h->n)
        at = h->n;
    memmove(h->f + at + 1, h->f + at, (h->n - at) * sizeof(*h->f));
    h->f[at].text = xmalloc(len + 1);
    memcpy(h->f[at].text, text, len);
    h->f[at].text[len] = '\0';
    h->f[at].len = len;
    h->n++;
}

void
milter_head_parse(struct milter_head *h, const char *raw, size_t len)
{
    size_t start = 0;

    head_clear(h);
    for (size_t i = 0; i < len; i++) {
        /* a line begins after each LF: a new field unless it is folded */
        if (raw[i] == '\n' && i + 1 < len && raw[i + 1] != ' ' && raw[i + 1] != '\t') {
            head_put(h, h->n, raw + start, i + 1 - start);
            start = i + 1;
        }
    }
    if (start < len)
        head_put(h, h->n, raw + start, len - start);
}

size_t
milter_head_count(const struct milter_head *h)
{
    return h->n;
}

/* The field's name is name (any case). */
static bool
named(const struct field *f, const char *name)
{
    size_t nl = strlen(name), i = nl;

    if (f->len < nl || strncasecmp(f->text, name, nl) != 0)
        return false;
    while (i < f->len && (f->text[i] == ' ' || f->text[i] == '\t'))
        i++;
    return i < f->len && f->text[i] == ':';
}

static char *
format(const char *name, const char *value, size_t *len)
{
    size_t size = strlen(name) + 2 * strlen(value) + 8;
    char *out = xmalloc(size);

    *len = milter_header_format(out, size, name, value);
    if (*len == 0) {
        free(out);
        return NULL;
    }
    return out;
}

static int
head_insert_at(struct milter_head *h, size_t at, const char *name, const char *value)
{
    size_t len;
    char *t = format(name, value, &len);

    if (t == NULL)
        return MXD_EINVAL;
    head_put(h, at, t, len);
    free(t);
    return 0;
}

int
milter_head_add(struct milter_head *h, const char *name, const char *value)
{
    return head_insert_at(h, h->n, name, value);
}

int
milter_head_insert(struct milter_head *h, size_t index, const char *name, const char *value)
{
    return head_insert_at(h, index, name, value);
}

int
milter_head_change(struct milter_head *h, size_t index, const char *name, const char *value)
{
    size_t seen = 0;

    if (index == 0)
        index = 1;
    for (size_t i = 0; i < h->n; i++) {
        size_t len;
        char *t;

        if (!named(&h->f[i], name) || ++seen != index)
            continue;
        if (value[0] == '\0') {
            free(h->f[i].text);
            memmove(h->f + i, h->f + i + 1, (h->n - i - 1) * sizeof(*h->f));
            h->n--;
            return 0;
        }
        if ((t = format(name, value, &len)) == NULL)
            return MXD_EINVAL;
        free(h->f[i].text);
        h->f[i].text = t;
        h->f[i].len = len;
        return 0;
    }
    return value[0] == '\0' ? 0 : milter_head_add(h, name, value);
}

char *
milter_head_text(const struct milter_head *h, size_t *len)
{
    size_t total = 0, w = 0;
    char *out;

    for (size_t i = 0; i < h->n; i++)
        total += h->f[i].len;
    out = xmalloc(total + 1);
    for (size_t i = 0; i < h->n; i++) {
        memcpy(out + w, h->f[i].text, h->f[i].len);
        w += h->f[i].len;
    }
    out[w] = '\0';
    *len = w;
    return out;
}

size_t
milter_crlf(struct milter_crlf *st, const char *in, size_t len, char *out)
{
    size_t w = 0;

    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\n' && !st->cr)
            out[w++] = '\r';
        out[w++] = in[i];
        st->cr = in[i] == '\r';
    }
    return w;
}
