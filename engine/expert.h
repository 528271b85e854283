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
    /* 0: the views are dense in their dtype. QUANT_Q8 / QUANT_Q4 (quant.h):
     * each view's data are rows of quantized blocks for its logical shape, and
     * the forward pass runs quant_matmul on them. Providers that never quantize
     * leave it 0 (the forward pass zeroes w before acquire). */
    int qfmt;
    /* 1: a low-bit stand-in served by miss_policy lowbit (counted per sequence). */
    int lowbit;
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
    /* Optional, with the substitute policy on: may the rows of the sequence
     * tagged `tag` (eng_seq_set_tag) be substituted? NULL = every row may (a
     * per-task miss policy answers 0 for the tasks that must stay exact). */
    int (*substitute_seq)(void *ctx, void *tag);
    /* Optional: n experts of one row of `layer` were just substituted. */
    void (*substituted)(void *ctx, void *tag, int layer, int n);
    /* Speculative gating (optional; CPU backend): when lookahead_layers > 0
     * and predicted is set, right after layer l is routed the engine applies
     * the routers of layers l+1..l+lookahead_layers to layer l's MoE input
     * and reports each row's top-k: predicted(tag, pos, l+d, experts, k),
     * for d = 1.. in turn, rows in batch order. Routing itself is unchanged. */
    int lookahead_layers;
    void (*predicted)(void *ctx, void *tag, int pos, int layer, const int *experts, int k);
    /* 1: acquire's views point into accelerator memory given by the backend
     * (eng_backend_slot_mem: the expert cache's device tier on CUDA), which only
     * that backend can read. 0: host memory. */
    int device_views;
} eng_expert_provider;

#endif
