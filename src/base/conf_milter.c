/*
 * conf_milter: content filters in the configuration: the items of a
 * milters list (a [milter NAME] section's name, an inline socket, or
 * `none`) resolved into struct conf_milter entries of conf->milter_defs.
 * Owns the strings of the entries it appends (freed by
 * conf__milter_free). Pure: no I/O, any thread. Errors: MXD_EINVAL with
 * *why a static message; conf.c adds the file and line and decides what
 * is an error across lists (unknown names, sections no list uses).
 */
#include <stdlib.h>
#include <string.h>

#include "base/conf.h"
#include "base/conf_value.h"

#define NAME_MAX_LEN 64

bool
conf__is_milter_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > NAME_MAX_LEN || strcmp(s, "none") == 0)
        return false;
    for (; *s != '\0'; s++) {
        char c = *s;

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* An item with a colon or a bracket is a socket, else a section's name. */
static bool
is_socket(const char *item)
{
    return strchr(item, ':') != NULL || item[0] == '[';
}

int
conf__milter_item(struct conf *c, size_t nsections, const char *item, size_t *index,
                  const char **why)
{
    struct conf_milter m = {0};

    if (!is_socket(item)) {
        for (size_t i = 0; i < nsections; i++) {
            if (ascii_casecmp(c->milter_defs[i].name, item) == 0) {
                *index = i;
                return 0;
            }
        }
        *why = conf__is_milter_name(item) ? "no [milter NAME] section of that name"
                                          : "want a [milter NAME] section's name or a socket";
        return MXD_EINVAL;
    }
    /* the same socket written twice is one filter (one connection a session) */
    for (size_t i = nsections; i < c->nmilter_defs; i++) {
        if (strcmp(c->milter_defs[i].name, item) == 0) {
            *index = i;
            return 0;
        }
    }
    if (conf__parse_milter(item, NULL, &m.socket, why) < 0)
        return MXD_EINVAL;
    m.name = xstrdup(item);
    m.is_inline = true;
    m.connect_timeout_ms = c->milter_connect_timeout_ms;
    m.command_timeout_ms = c->milter_command_timeout_ms;
    m.content_timeout_ms = c->milter_content_timeout_ms;
    m.default_action = c->milter_default_action;
    m.reuse = c->milter_reuse;
    m.index = c->nmilter_defs;
    c->milter_defs = xrealloc(c->milter_defs, (c->nmilter_defs + 1) * sizeof(*c->milter_defs));
    c->milter_defs[c->nmilter_defs] = m;
    *index = c->nmilter_defs++;
    return 0;
}

void
conf__milter_list_finish(const struct conf *c, struct conf_milters *l, const size_t *ix, size_t n)
{
    const struct conf_milter **v = n > 0 ? xcalloc(n, sizeof(*v)) : NULL;

    for (size_t i = 0; i < n; i++)
        v[i] = &c->milter_defs[ix[i]];
    l->v = v;
    l->n = n;
}

void
conf__milter_free(struct conf_milter *m)
{
    free(m->name);
    conf__endpoint_free(&m->socket);
}
