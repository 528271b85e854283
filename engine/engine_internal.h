/* engine_internal.h — the engine's private state, shared by engine.c (open,
 * sequences) and forward.c (the CPU float32 reference forward pass). */
#ifndef EMOE_ENGINE_INTERNAL_H
#define EMOE_ENGINE_INTERNAL_H

#include "engine/engine.h"
#include "engine/checkpoint.h"
#include "engine/pool.h"

/* A compute backend: runs one validated step (T = total new tokens). The CPU
 * float32 backend (forward.c) is the reference; a CUDA backend implements the
 * same contract. On failure no sequence may be advanced (eng_step advances
 * lengths only after success). */
typedef struct eng_backend_ops {
    const char *name;
    emoe_status (*step)(eng_engine *e, eng_batch_item *items, int n, int T, emoe_err *err);
} eng_backend_ops;

extern const eng_backend_ops eng_cpu_backend;

struct eng_engine {
    const eng_backend_ops *be;
    char *dir;
    eng_model_desc d;
    eng_checkpoint *ck;
    eng_weights w;
    eng_pool *pool;
    int max_ctx;
    eng_expert_provider ck_provider;
    const eng_expert_provider *prov;
    eng_routing_cb cb;
    void *cb_user;
    float *inv_freq;          /* (head_dim/2) rotary frequencies, float32 as HF computes them */
};

struct eng_seq {
    eng_engine *e;
    int len;                  /* positions filled */
    int cap;                  /* positions allocated */
    int max_len;
    float **k, **v;           /* per layer: (cap, n_kv_heads*head_dim) */
    void *tag;
    uint64_t substituted;
};

/* Grows s to hold at least n positions; 0 or -1 on allocation failure. */
int eng_seq_reserve(eng_seq *s, int n);

#endif
