/*
 * slot_mem.cuh — the expert cache's device tier in GPU memory: a
 * cache_slot_mem (engine/cache.h) whose slots are device allocations holding
 * one expert each as bf16 [gate (ffn, dim) | up (ffn, dim) | down (dim, ffn)]
 * at the slot's start, whatever the store's dtype (f16/f32 extents are
 * converted on upload), or, for a q8/q4 store (one format per slot memory),
 * the packed extent exactly as stored (quantized rows, moe_quant.cuh),
 * uploaded as it is. With it, engine/cache.c is the only expert cache: its
 * device budget is GPU memory, its residency answers substitute mode, its
 * prefetches and eviction order (the predictor's) fill GPU slots.
 *
 * Ordering (no per-layer host synchronisation needed for slot reuse):
 *  - every slot has a last-read event, recorded on the compute stream by
 *    cu_slot_mem_mark_read after the kernels that read the slot were queued
 *    (before the backend releases the expert to the cache);
 *  - an upload into a slot first makes the copy stream wait for that event, so
 *    a slot is never overwritten while a kernel may still read it;
 *  - then it copies on the copy stream and records the slot's ready event, and
 *    waits for it on the uploading (loader) thread: when upload returns the
 *    cache marks the slot READY and acquire hands it out, the data is there.
 * The host tier is page-locked with cudaHostRegister (host_register), so its
 * uploads are DMA; reads straight from the store (no host tier) land in pinned
 * read buffers (staging_alloc: cudaMallocHost, up to 8 kept for reuse), so
 * their upload is one DMA too, no second copy through a pageable buffer.
 *
 * Lifetime: created by the backend when a cache asks for it
 * (eng_backend_slot_mem); it outlives the engine until the cache has freed
 * its last slot (tools free the engine first).
 */
#ifndef EMOE_CUDA_SLOT_MEM_CUH
#define EMOE_CUDA_SLOT_MEM_CUH
#include "engine/cuda/common.cuh"

extern "C" {
#include "engine/cache.h"
}

typedef struct cu_slot_mem cu_slot_mem;

/* dim/ffn of the model, src the dtype of the store's extents (the checkpoint's),
 * qfmt the store's quant format (0 dense, QUANT_Q8 = 1, QUANT_Q4 = 2). */
emoe_status cu_slot_mem_new(int dim, int ffn, eng_dtype src, int qfmt, cu_slot_mem **out, emoe_err *err);
const cache_slot_mem *cu_slot_mem_ops(cu_slot_mem *m);
int cu_slot_mem_format(const cu_slot_mem *m);
/* The engine goes away: freed now if no slot is allocated, else with the last. */
void cu_slot_mem_release(cu_slot_mem *m);
/* Records slot p's last-read event on `compute` (p: a slot base from acquire). */
emoe_status cu_slot_mem_mark_read(cu_slot_mem *m, const void *p, cudaStream_t compute, emoe_err *err);
/* Pinned read buffers allocated for store reads (the cache's staging_alloc hook). */
uint64_t cu_slot_mem_readbuf_allocs(cu_slot_mem *m);
/* Figures: bytes of slots allocated, bytes uploaded, uploads. */
void cu_slot_mem_stats(cu_slot_mem *m, uint64_t *alloc_bytes, uint64_t *upload_bytes, uint64_t *uploads);
#endif
