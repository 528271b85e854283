/* fuzz_schema.c — libFuzzer target for constrained decoding (engine/gram_*.c):
 * the input is a JSON Schema, a NUL byte, then output bytes. The schema must
 * compile or fail with a message; the bytes are fed one at a time, and any
 * prefix the automaton accepts as complete must parse as JSON (the grammar
 * never admits invalid JSON). A small vocabulary mask runs on the final state
 * and must agree with feeding each token alone. Never a crash or a leak. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "engine/grammar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const toks[] = {"{", "}", "[", "]", "\"", ":", ",", "a", "1", "0", "-", ".", "true", "null",
                                   "\"a\"", "{\"", "\":", "12", "\xc3\xa9", "\\n", " "};
#define NT (int)(sizeof toks / sizeof toks[0])

static int tbytes(void *ctx, int id, emoe_buf *out)
{
    (void)ctx;
    out->n = 0;
    if (id < 0 || id >= NT) return -1;
    return emoe_buf_put(out, toks[id], strlen(toks[id]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *z = memchr(data, 0, size);
    size_t slen = z ? (size_t)(z - data) : size;
    json_error_t je;
    json_t *schema = json_loadb((const char *)data, slen, 0, &je);
    if (!schema) return 0;
    gram *g = NULL;
    emoe_err err = {0};
    emoe_status st = gram_compile_schema(schema, &g, &err);
    json_decref(schema);
    if (st != EMOE_OK) {
        if (g || !err.msg[0]) abort();
        return 0;
    }
    int eos = NT;
    gram_vocab *v = gram_vocab_new(NT + 1, tbytes, NULL, &eos, 1);
    gram_state *s = gram_state_new(g, v);
    const char *out = z ? (const char *)z + 1 : "";
    size_t n = z ? size - slen - 1 : 0, fed = 0;
    for (size_t i = 0; i < n; i++) {
        if (gram_state_feed(s, out + i, 1)) break; /* the accepted prefix is out[0..fed) */
        fed++;
        if (gram_state_can_end(s)) {
            json_t *val = json_loadb(out, fed, JSON_DECODE_ANY, &je);
            if (!val) abort();
            json_decref(val);
        }
    }
    float l[NT + 1];
    for (int i = 0; i <= NT; i++) l[i] = 0;
    int count = gram_state_mask(s, l, NT + 1), brute = 0;
    for (int id = 0; id < NT; id++) {
        gram_state *t = gram_state_new(g, v);
        int ok = gram_state_feed(t, out, fed) == 0 && gram_state_feed(t, toks[id], strlen(toks[id])) == 0;
        gram_state_free(t);
        if (ok != !isinf(l[id])) abort();
        brute += ok;
    }
    if (gram_state_can_end(s) != !isinf(l[NT])) abort();
    brute += gram_state_can_end(s);
    if (brute != count) abort();
    gram_state_free(s);
    gram_vocab_free(v);
    gram_release(g);
    return 0;
}
