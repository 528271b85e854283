/*
 * expert_cache.cuh — the GPU tier of the expert cache: n_slots device slots
 * allocated once (the byte budget is a hard ceiling), each holding one expert
 * as bf16 [gate (ffn, dim) | up (ffn, dim) | down (dim, ffn)], keyed by
 * (layer, expert) in an eng_slot_table (LRU, pinning; engine/moe_plan.h).
 *
 * A miss acquires the expert from the engine's eng_expert_provider (the host
 * tiers: mmapped checkpoint, expert store, host cache), copies it (converting
 * to bf16 when stored otherwise) into one of CU_EC_STAGING pinned host staging
 * buffers, and queues the host->device copy on a dedicated copy stream,
 * recording an event per staging buffer (reused only after its copy has
 * finished). After the experts of a group are queued, one event recorded on
 * the copy stream is waited on by the compute stream: the compute stream waits
 * only for the copies of the experts it needs now, and hits cost nothing.
 * Slots pinned for a group are unpinned by the caller once the kernels that
 * read them have completed (the backend synchronises the compute stream
 * between groups and between layers).
 */
#ifndef EMOE_CUDA_EXPERT_CACHE_CUH
#define EMOE_CUDA_EXPERT_CACHE_CUH
#include "engine/cuda/common.cuh"
#include "engine/cuda/moe.cuh"

extern "C" {
#include "engine/expert.h"
#include "engine/moe_plan.h"
}

#define CU_EC_STAGING 4

typedef struct cu_expert_cache {
    eng_slot_table tab;        /* keys layer*n_experts + expert */
    cu_bf16 *slots;            /* device: n_slots * slot_elems */
    size_t slot_elems;         /* 3 * ffn * dim */
    int n_layers, n_experts, dim, ffn;
    cudaStream_t copy;
    cu_bf16 *staging[CU_EC_STAGING]; /* pinned host, slot_elems each */
    cudaEvent_t staged[CU_EC_STAGING];
    int staged_used[CU_EC_STAGING];
    int next_staging;
    cudaEvent_t ready;         /* recorded on `copy` after a group's uploads */
    uint64_t upload_bytes;
    double stall_s;
} cu_expert_cache;

/* Allocates n_slots slots (>= 1) and the staging buffers. On failure frees
 * what it allocated and returns a status. */
emoe_status cu_expert_cache_init(cu_expert_cache *c, int n_layers, int n_experts, int dim, int ffn, int n_slots,
                                 emoe_err *err);
void cu_expert_cache_free(cu_expert_cache *c);
/* Makes experts[0..n) of layer resident and pinned, fills tab[i].gate/up/down
 * with their slots' device pointers (start/count untouched), and makes
 * `compute` wait for any upload this needed. n must be <= the slots not
 * pinned. Errors: the provider's, a device error, or EMOE_ENOMEM when every
 * slot is pinned. */
emoe_status cu_expert_cache_fill(cu_expert_cache *c, const eng_expert_provider *p, int layer, const int *experts,
                                 int n, cu_moe_expert *tab, cudaStream_t compute, emoe_err *err);
/* dst (n) bf16 from a host tensor of any stored float dtype (memcpy for bf16). */
void cu_to_bf16(cu_bf16 *dst, const eng_tensor *t, size_t n);
#endif
