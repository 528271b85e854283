/*
 * expert.h — the one interface through which the forward pass reaches routed
 * expert weights. The default provider is the mmapped checkpoint; the tiered
 * expert cache implements the same interface.
 */
#ifndef EMOE_EXPERT_H
#define EMOE_EXPERT_H

#include "engine/common.h"
#include "engine/tensor.h"

typedef struct eng_expert_weights {
    eng_tensor gate;  /* (expert_ffn, dim) */
    eng_tensor up;    /* (expert_ffn, dim) */
    eng_tensor down;  /* (dim, expert_ffn) */
} eng_expert_weights;

typedef struct eng_expert_provider {
    void *ctx;
    /* Makes (layer, expert) available and fills w with views valid until the
     * matching release. Blocks only for what is missing. On failure returns a
     * status with err filled; the caller fails the step. Required. */
    emoe_status (*acquire)(void *ctx, int layer, int expert, eng_expert_weights *w, emoe_err *err);
    /* Unpins what acquire pinned. Optional. */
    void (*release)(void *ctx, int layer, int expert);
    /* Non-blocking: is (layer, expert) usable without a load? NULL = always.
     * Used by the substitute miss policy. */
    int (*is_resident)(void *ctx, int layer, int expert);
    /* Substitute policy on? (then the forward pass replaces non-resident experts
     * by the best-ranked resident ones and renormalises). NULL = exact. */
    int (*substitute)(void *ctx);
    /* Asynchronous, idempotent hint: these experts of `layer` are needed soon. Optional. */
    void (*prefetch)(void *ctx, int layer, const int *experts, int n);
    /* 1: acquire's views point into accelerator memory given by the backend
     * (eng_backend_slot_mem: the expert cache's device tier on CUDA), which only
     * that backend can read. 0: host memory. */
    int device_views;
} eng_expert_provider;

#endif
