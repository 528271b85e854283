/*
 * sampler.h — token sampling from logits: greedy (temperature 0), temperature,
 * top-k, top-p, min-p, presence/frequency penalties, reproducible by seed.
 */
#ifndef EMOE_SAMPLER_H
#define EMOE_SAMPLER_H

#include <stdint.h>
#include "engine/common.h"

typedef struct eng_sampling {
    float temperature;        /* 0 = greedy */
    float top_p;              /* 1 = off */
    int top_k;                /* 0 = off */
    float min_p;              /* 0 = off */
    float presence_penalty;   /* OpenAI semantics */
    float frequency_penalty;
    uint64_t seed;
} eng_sampling;

typedef struct eng_sampler eng_sampler;

/* Defaults: greedy, no penalties, seed 0. */
void eng_sampling_default(eng_sampling *s);
/* Validates ranges; err names the field. */
emoe_status eng_sampling_check(const eng_sampling *s, emoe_err *err);
eng_sampler *eng_sampler_new(const eng_sampling *s, int vocab);
void eng_sampler_free(eng_sampler *s);
/* Picks a token; logits are modified in place (penalties, temperature). */
int eng_sampler_sample(eng_sampler *s, float *logits);
/* Records an emitted (or prompt) token for the penalties. */
void eng_sampler_accept(eng_sampler *s, int token);

/* OpenAI logit_bias: bias[i] is added to logits[ids[i]] before sampling.
 * Replaces any earlier bias; ids outside [0, vocab) -> EMOE_EINVAL. */
emoe_status eng_sampler_set_bias(eng_sampler *s, const int32_t *ids, const float *bias, int n, emoe_err *err);
/* eng_sampler_sample in two halves, so a caller can mask logits (constrained
 * decoding) and read log-probabilities in between: prepare applies the
 * penalties and the bias in place; pick draws from the result (greedy at
 * temperature 0, else temperature, top-k, top-p, min-p). Tokens whose logit
 * is -INFINITY are never picked (at least one must be finite). */
void eng_sampler_prepare(eng_sampler *s, float *logits);
int eng_sampler_pick(eng_sampler *s, const float *logits);

/* Log-softmax of logits[0..vocab) at `token`, and the top_n (0..vocab) most
 * likely ids with their log-probabilities (descending; ties by lower id) into
 * top_ids/top_lp (may be NULL when top_n is 0). Returns the token's
 * log-probability (-INFINITY for a masked token). */
float eng_logprobs(const float *logits, int vocab, int token, int top_n, int32_t *top_ids, float *top_lp);

#endif
