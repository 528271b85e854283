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

#endif
