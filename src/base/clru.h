/* clru: a bounded table of clients (iptab keys) in order of use, the least
 * recently used going first when it is full: the one structure under the
 * per-client tables (check/anvil's rates, check/scache's screening passes).
 * Pure: the hash seed is passed in; no clock, no I/O. */
#ifndef MXD_CLRU_H
#define MXD_CLRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/iptab.h"

/* The header of an entry: the first member of the user's entry struct
 * (struct x { struct clru_entry h; ...values }), so a struct clru_entry *
 * the table returns converts to the user's struct. Read-only to users:
 * key, and next / prev (towards the least / most recently used). */
struct clru_entry {
    struct clru_entry *hnext;       /* hash chain */
    struct clru_entry *prev, *next; /* order of use: prev is more recent */
    unsigned char key[IPTAB_KEY_LEN];
};

struct clru;

/* At most max_clients (>= 1) entries of entry_size bytes each (>= sizeof
 * (struct clru_entry), the header first); seed keys the hash (pass a
 * random value: clients choose their addresses). Caller frees. */
struct clru *clru_new(size_t max_clients, size_t entry_size, uint64_t seed);
/* Frees the table and every entry in it. */
void clru_free(struct clru *t);

/* key's entry, or NULL. Changes nothing (not even the order of use). */
struct clru_entry *clru_peek(const struct clru *t, const unsigned char key[IPTAB_KEY_LEN]);
/* key's entry, made the most recently used; NULL when absent. */
struct clru_entry *clru_get(struct clru *t, const unsigned char key[IPTAB_KEY_LEN]);
/* key's entry, made the most recently used; when absent a new one, zeroed
 * past the header (*added true; added may be NULL), which evicts the least
 * recently used entry when the table is full. Borrowed: valid until it is
 * dropped or evicted. */
struct clru_entry *clru_put(struct clru *t, const unsigned char key[IPTAB_KEY_LEN], bool *added);

/* The least recently used entry (NULL when empty). */
struct clru_entry *clru_oldest(const struct clru *t);
/* Removes e from the table and frees it. */
void clru_drop(struct clru *t, struct clru_entry *e);

/* Entries in the table now. */
size_t clru_size(const struct clru *t);

/* key's hash under t's seed (its slot is the low bits): for tests. */
uint64_t clru_hash(const struct clru *t, const unsigned char key[IPTAB_KEY_LEN]);

#endif
