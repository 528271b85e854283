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
    /* Optional hooks (NULL on the CPU backend). init runs at the end of eng_open
     * and keeps its state in e->bs; engine_free releases it (also after a failed
     * init). seq_init/seq_free create/destroy s->be; seq_reserve replaces the
     * host KV allocation of eng_seq_reserve (0 or -1). stats fills device figures. */
    emoe_status (*init)(eng_engine *e, const eng_open_opts *opts, emoe_err *err);
    void (*engine_free)(eng_engine *e);
    emoe_status (*seq_init)(eng_seq *s, emoe_err *err);
    void (*seq_free)(eng_seq *s);
    int (*seq_reserve)(eng_seq *s, int n);
    void (*stats)(const eng_engine *e, eng_backend_stats *st);
    /* Copies positions [0, src->len) of src's KV cache into dst (reserved to
     * at least src->len by the caller); 0 or -1. NULL with seq_init set: the
     * backend cannot fork sequences (eng_seq_fork fails with EMOE_EUNSUP). */
    int (*seq_copy)(eng_seq *dst, const eng_seq *src);
    /* Optional: memory for an expert cache's device tier (eng_backend_slot_mem):
     * slots for extents of quant format qfmt (0: the checkpoint's dense dtype;
     * QUANT_Q8/QUANT_Q4: the packed rows, uploaded as they are). NULL when the
     * backend cannot hold that format. */
    const struct cache_slot_mem *(*slot_mem)(eng_engine *e, int qfmt);
} eng_backend_ops;

extern const eng_backend_ops eng_cpu_backend;
#ifdef EMOE_CUDA
extern const eng_backend_ops eng_cuda_backend; /* engine/cuda/cuda_backend.cu */
#endif

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
    void *bs;                 /* backend state (be->init), NULL on the CPU backend */
    eng_dtype kv_dtype;       /* of eng_seq k/v (CPU backend) */
    unsigned char *ck_touched; /* (n_layers*n_experts) checkpoint experts used once (populated at first use) */
    struct eng_residency *res; /* reader threads populating the mapping (engine/residency.h); NULL: advice only */
    uint64_t dense_ticket;    /* res's ticket after the dense weights were queued at open (eng_dense_wait) */
    struct dense_quant *dq;   /* [engine] dense_format q8: quantized dense weights (engine/dense_quant.h); NULL = native */
};

struct eng_seq {
    eng_engine *e;
    int len;                  /* positions filled */
    int cap;                  /* positions allocated */
    int max_len;
    void **k, **v;            /* per layer: (cap, n_kv_heads*head_dim) in the engine's kv_dtype */
    void *tag;
    uint64_t substituted;
    uint64_t lowbit;          /* expert uses served by the low-bit copy (miss_policy lowbit) */
    void *be;                 /* backend per-sequence state (device KV cache), NULL on the CPU backend */
};

/* Grows s to hold at least n positions; 0 or -1 on allocation failure. */
int eng_seq_reserve(eng_seq *s, int n);

#endif
