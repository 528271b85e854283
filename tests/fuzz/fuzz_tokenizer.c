/*
 * fuzz_tokenizer.c — libFuzzer target for the tokenizer.
 * Byte 0 picks the mode:
 *   even: the rest is a tokenizer.json (corrupted/mutated ones from the seed
 *         corpus); when it loads, encode and decode a fixed mixed text, decode
 *         every id, and stream-decode the encoded ids.
 *   odd:  the rest is text for a built-in byte-fallback tokenizer and a
 *         byte-level one (the corpus seeds): encode (valid UTF-8 or not),
 *         decode == stream-decode on the result, decode the raw bytes as ids.
 * Any crash, leak, or sanitizer report is a bug; errors are fine.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SAMPLE[] = "Hello wörld 123 <s> <|end|>  x-y \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\n\t<x>";

static void exercise(tok_tokenizer *t, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok_encode(t, text, len, (len & 1), &ids, &n, NULL) != EMOE_OK) return;
    char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0, bc = 0;
    if (tok_decode(t, ids, n, 0, &a, &al, NULL) == EMOE_OK) {
        tok_detok d;
        tok_detok_init(&d, t, 0);
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++) ok = tok_detok_push(&d, ids[i], &b, &bl, &bc, NULL) == EMOE_OK;
        if (ok && tok_detok_flush(&d, &b, &bl, &bc, NULL) == EMOE_OK) {
            /* exactness holds whenever the decoded text is valid UTF-8 without U+FFFD */
            if (!memmem(a, al, "\xef\xbf\xbd", 3) && (bl != al || memcmp(a, b, al))) {
                fprintf(stderr, "stream != decode\n");
                abort();
            }
        }
        tok_detok_free(&d);
    }
    free(a);
    free(b);
    free(ids);
}

static tok_tokenizer *builtin(const char *path)
{
    tok_tokenizer *t = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    tok_load_json(buf, n, NULL, 0, path, &t, NULL);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tok_tokenizer *sp, *bl;
    static int init;
    if (!init) {
        init = 1;
        sp = builtin("tests/fuzz/seeds/sentencepiece.json");
        bl = builtin("tests/fuzz/seeds/bytelevel.json");
    }
    if (size < 1) return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    if ((data[0] & 1) == 0) {
        tok_tokenizer *t = NULL;
        emoe_err err;
        if (tok_load_json(p, n, NULL, 0, "fuzz", &t, &err) != EMOE_OK) return 0;
        exercise(t, SAMPLE, sizeof SAMPLE - 1);
        int nv = tok_vocab_size(t);
        int32_t ids[64];
        int k = 0;
        for (int i = 0; i < nv && k < 64; i++) ids[k++] = i;
        char *o = NULL;
        size_t ol;
        tok_decode(t, ids, (size_t)k, data[0] & 2, &o, &ol, NULL);
        free(o);
        tok_free(t);
        return 0;
    }
    if (sp) exercise(sp, p, n);
    if (bl) exercise(bl, p, n);
    tok_tokenizer *t = (data[0] & 2) ? sp : bl;
    if (t && n >= 4) {
        int32_t ids[256];
        size_t k = 0;
        for (size_t i = 0; i + 4 <= n && k < 256; i += 4) {
            uint32_t v;
            memcpy(&v, p + i, 4);
            ids[k++] = (int32_t)(v % (uint32_t)(tok_vocab_size(t) + 2));
        }
        char *o = NULL, *s = NULL;
        size_t ol, sl = 0, sc = 0;
        tok_decode(t, ids, k, data[0] & 4, &o, &ol, NULL);
        tok_detok d;
        tok_detok_init(&d, t, data[0] & 4);
        for (size_t i = 0; i < k; i++) tok_detok_push(&d, ids[i], &s, &sl, &sc, NULL);
        tok_detok_flush(&d, &s, &sl, &sc, NULL);
        tok_detok_free(&d);
        free(o);
        free(s);
    }
    return 0;
}
