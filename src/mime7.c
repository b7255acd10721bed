/* mime7: the header scan for SMTPUTF8 (RFC 6531 3.4: a message needs the
 * extension when its envelope or header is not ASCII) and the 8-bit to
 * 7-bit converter for next hops without 8BITMIME (RFC 6152 3). Pure: no
 * I/O, clock or allocation beyond the converter's fixed-size state. Any
 * thread. */
#include "mime7.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- header scan ------------------------------------------------------- */

enum { HS_BOL, HS_BOL_CR, HS_MID };

bool
mime7_has_8bit(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

void
mime7_hscan_feed(struct mime7_hscan *h, const char *data, size_t len)
{
    for (size_t i = 0; i < len && !h->done; i++) {
        unsigned char c = (unsigned char)data[i];

        if (c >= 0x80)
            h->eight = true;
        if (c == '\n') {
            /* an empty line (LF or CR LF alone) ends the header */
            h->done = h->st != HS_MID;
            h->st = HS_BOL;
        } else if (c == '\r' && h->st == HS_BOL) {
            h->st = HS_BOL_CR;
        } else {
            h->st = HS_MID;
        }
    }
}
