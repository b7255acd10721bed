/* Fuzz target: the config parser (conf_parse_string: inih, then every
 * key's value parser and the cross-checks). Checks: exactly one of a
 * config or an error text comes back, and domain lookups on the parsed
 * config work. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/conf.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    struct conf *conf = NULL;
    char *errors = NULL;
    int rc;

    memcpy(text, data, size);
    text[size] = '\0';
    rc = conf_parse_string(text, "fuzz.conf", &conf, &errors);
    if (rc == 0) {
        check(conf != NULL && errors == NULL);
        for (size_t i = 0; i < conf->ndomains; i++) {
            const char *name = conf->domains[i].name;

            check(conf_domain_find(conf, name, strlen(name)) != NULL);
        }
    } else {
        check(conf == NULL && errors != NULL);
    }
    conf_free(conf);
    free(errors);
    free(text);
    return 0;
}
