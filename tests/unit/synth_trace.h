/* synth_trace.h — synthetic routing traces with known structure, shared by
 * test_predictor.c, test_replay.c and test_forecast.c: a task draws each
 * token's top-k at every layer from its own fixed subset (optionally with some
 * noise outside it); and the loader of the shared real trace sets. */
#ifndef EMOE_SYNTH_TRACE_H
#define EMOE_SYNTH_TRACE_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "predictor/trace.h"

typedef struct synth_rng { uint64_t s; } synth_rng;

static inline uint32_t synth_next(synth_rng *r)
{
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(r->s >> 33);
}

/* The subset of task `seed` at layer l: m distinct experts (deterministic). */
static inline void synth_subset(int seed, int l, int E, int m, int *out)
{
    synth_rng r = {(uint64_t)seed * 1000003ULL + (uint64_t)l * 7919ULL + 17};
    int n = 0;
    while (n < m) {
        int e = (int)(synth_next(&r) % (uint32_t)E), dup = 0;
        for (int i = 0; i < n; i++) dup |= out[i] == e;
        if (!dup) out[n++] = e;
    }
}

/* One request of n_tok decode tokens for a task whose layer-l subset is
 * synth_subset(subset_seed, l, E, m); with probability noise_pct/100 a pick
 * comes from all experts instead. */
static inline void synth_request(pred_trace_req *r, const char *task, int64_t id, int L, int E, int K,
                                 int n_tok, int subset_seed, int m, int noise_pct, synth_rng *rng)
{
    emoe_err err;
    ck_assert_int_eq(pred_req_begin(r, "synthetic", task, id, L, E, K, 0, &err), EMOE_OK);
    int sub[4096], pick[64];
    for (int t = 0; t < n_tok; t++) {
        int row = pred_req_add_token(r, PRED_PHASE_DECODE, t, &err);
        ck_assert_int_eq(row, t);
        for (int l = 0; l < L; l++) {
            synth_subset(subset_seed, l, E, m, sub);
            int n = 0;
            while (n < K) {
                int e = (int)(synth_next(rng) % 100) < noise_pct ? (int)(synth_next(rng) % (uint32_t)E)
                                                                 : sub[synth_next(rng) % (uint32_t)m];
                int dup = 0;
                for (int i = 0; i < n; i++) dup |= pick[i] == e;
                if (!dup) pick[n++] = e;
            }
            ck_assert_int_eq(pred_req_set_layer(r, row, l, pick, NULL, K, &err), EMOE_OK);
        }
    }
}

static inline void synth_append(pred_trace *t, const char *task, int L, int E, int K, int n_tok,
                                int subset_seed, int m, int noise_pct, synth_rng *rng)
{
    pred_trace_req r;
    emoe_err err;
    synth_request(&r, task, t->n_reqs, L, E, K, n_tok, subset_seed, m, noise_pct, rng);
    ck_assert_int_eq(pred_trace_append(t, &r, &err), EMOE_OK);
}

/* The shared real traces the replay tests check against (REAL_TRACE_SETS
 * sets): set 0 is tiny-moe-7task, set 1 the Mixtral gsm8k + humaneval pair.
 * Loads set s from dir/traces into t, points tp at them, sets *name to the
 * set's first file (for messages) and returns how many traces it loaded;
 * a load error fails the test. */
#define REAL_TRACE_SETS 2
static inline int real_trace_set_load(const char *dir, int s, pred_trace t[2], const pred_trace *tp[2],
                                      const char **name)
{
    static const char *const sets[REAL_TRACE_SETS][2] = {
        {"tiny-moe-7task.jsonl", NULL},
        {"mixtral-8x7b-instruct.gsm8k.jsonl", "mixtral-8x7b-instruct.humaneval.jsonl"}};
    int n = 0;
    for (; n < 2 && sets[s][n]; n++) {
        char p[4200];
        emoe_err err;
        snprintf(p, sizeof p, "%s/traces/%s", dir, sets[s][n]);
        pred_trace_init(&t[n]);
        ck_assert_msg(pred_trace_load(&t[n], p, &err) == EMOE_OK, "%s", err.msg);
        tp[n] = &t[n];
    }
    *name = sets[s][0];
    return n;
}

#endif
