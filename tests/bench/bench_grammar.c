/* bench_grammar.c — cost of constrained decoding per token: indexes a real
 * tokenizer's vocabulary (default: the Qwen3 tokenizer of tiny-qwen3-moe,
 * 151,669 tokens) and times gram_state_mask (the per-step work) at states
 * typical of a JSON output, and gram_state_accept_token.
 * Usage: bench_grammar [TOKENIZER_DIR] (make bench-grammar). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/grammar.h"
#include "engine/tokenizer.h"

static int tbytes(void *ctx, int id, emoe_buf *out)
{
    const tok_tokenizer *t = ctx;
    out->n = 0;
    if (tok_is_special(t, id)) return -1;
    return tok_token_bytes(t, id, out);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "../shared/fixtures/models/tiny-qwen3-moe";
    tok_tokenizer *t = NULL;
    emoe_err err = {0};
    if (tok_load_dir(dir, &t, &err) != EMOE_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
    int V = tok_vocab_size(t), eos = tok_eos(t);
    double t0 = emoe_now();
    gram_vocab *v = gram_vocab_new(V, tbytes, t, &eos, 1);
    printf("vocabulary: %d tokens indexed in %.1f ms\n", V, (emoe_now() - t0) * 1e3);
    json_error_t je;
    json_t *schema = json_loads("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":40},"
                                "\"color\":{\"enum\":[\"red\",\"green\",\"blue\"]},\"count\":{\"type\":\"integer\","
                                "\"minimum\":0,\"maximum\":1000},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
                                "\"required\":[\"name\",\"color\",\"count\",\"tags\"],\"additionalProperties\":false}",
                                0, &je);
    gram *g = NULL;
    if (gram_compile_schema(schema, &g, &err) != EMOE_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
    static const struct { const char *what, *prefix; } at[] = {
        {"start of the value", ""},
        {"object key", "{"},
        {"inside a free string", "{\"name\":\"hello wor"},
        {"enum value", "{\"name\":\"x\",\"color\":\""},
        {"bounded integer", "{\"name\":\"x\",\"color\":\"red\",\"count\":1"},
        {"array of strings", "{\"name\":\"x\",\"color\":\"red\",\"count\":1,\"tags\":[\"a\","},
    };
    float *logits = malloc(sizeof(float) * (size_t)V);
    double total = 0;
    int nat = (int)(sizeof at / sizeof at[0]);
    for (int i = 0; i < nat; i++) {
        gram_state *s = gram_state_new(g, v);
        if (gram_state_feed(s, at[i].prefix, strlen(at[i].prefix))) { fprintf(stderr, "bad prefix\n"); return 1; }
        int reps = 20, allowed = 0;
        double best = 1e9;
        for (int r = 0; r < reps; r++) {
            for (int k = 0; k < V; k++) logits[k] = 0;
            double a = emoe_now();
            allowed = gram_state_mask(s, logits, V);
            double d = emoe_now() - a;
            if (d < best) best = d;
        }
        total += best;
        printf("mask at %-22s %8.3f ms  (%6d tokens allowed)\n", at[i].what, best * 1e3, allowed);
        gram_state_free(s);
    }
    printf("mean mask time per token: %.3f ms\n", total / nat * 1e3);
    free(logits);
    gram_release(g);
    json_decref(schema);
    gram_vocab_free(v);
    tok_free(t);
    return 0;
}
