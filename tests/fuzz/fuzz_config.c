/*
 * fuzz_config.c — libFuzzer target for the INI reader (config/ini_parse.c,
 * issue 14). Every input must either load or fail with a message naming the
 * file; a file that loads (and validates) must survive a round trip through
 * cfg_dump: dumping and re-reading gives the same value for every key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0; /* cfg_load_file refuses NUL bytes; here the text just ends there */
    emoe_config a, b;
    cfg_init(&a);
    emoe_err err = {0};
    emoe_status st = cfg_ini_apply(&a, "fuzz.conf", text, &err);
    free(text);
    if (st != EMOE_OK) {
        if (!strstr(err.msg, "fuzz.conf:")) { fprintf(stderr, "error without file:line: %s\n", err.msg); abort(); }
        return 0;
    }
    if (cfg_validate(&a, &err) != EMOE_OK) return 0;
    char *dump = NULL;
    size_t dlen = 0;
    FILE *f = open_memstream(&dump, &dlen);
    if (!f) return 0;
    cfg_dump(&a, f);
    fclose(f);
    cfg_init(&b);
    if (cfg_ini_apply(&b, "dump.conf", dump, &err) != EMOE_OK) {
        fprintf(stderr, "the dump of a valid config does not load: %s\n", err.msg);
        abort();
    }
    free(dump);
    size_t n;
    const cfg_entry *t = cfg_table(&n);
    for (size_t i = 0; i < n; i++) {
        char va[CFG_LIST_MAX + 16], vb[CFG_LIST_MAX + 16];
        cfg_format_value(&a, &t[i], va, sizeof va);
        cfg_format_value(&b, &t[i], vb, sizeof vb);
        if (strcmp(va, vb)) {
            fprintf(stderr, "round trip changed %s.%s: '%s' -> '%s'\n", t[i].section, t[i].key, va, vb);
            abort();
        }
    }
    return 0;
}
