/*
 * attention.cuh — causal multi-head attention with grouped KV heads over each
 * token's own sequence's KV cache (float32 or bf16); one launch serves a whole
 * step (prefill chunks and decode tokens of several sequences mixed).
 *
 * KV layout of a sequence on the device (one allocation, engine/cuda
 * cuda_backend.cu): kv[layer][0=K,1=V][cap][n_kv_heads*head_dim], elements
 * float32 or bf16 (`[engine] kv_dtype`; bf16 rounded to nearest even as the
 * CPU backend's bf16 KV cache, engine/tensor.h).
 *
 * Split-KV (decode): with splits > 1 every (token, head) gets `splits` blocks,
 * each over one slice of the positions 0..pos (slice = ceil((pos+1)/splits),
 * computed on the device from the row's position, so a CUDA graph can replay
 * it at any position), writing a partial (max, sum, unnormalised output) to
 * `part`; a second kernel merges the slices. splits = 1: one block per
 * (token, head), no partials.
 */
#ifndef EMOE_CUDA_ATTENTION_CUH
#define EMOE_CUDA_ATTENTION_CUH
#include "engine/cuda/common.cuh"

#define CU_ATT_MAX_HEAD_DIM 256
#define CU_ATT_MAX_SPLITS 16

/* Per token row of a step: its sequence's KV buffer, capacity, and position. */
typedef struct cu_att_row {
    void *kv;       /* float or cu_bf16 elements (the engine's kv dtype) */
    int cap;
    int pos;
} cu_att_row;

/* Floats of `part` needed for T rows, n_heads heads and `splits` slices. */
static inline size_t cu_att_part_floats(int T, int n_heads, int hd, int splits)
{
    return (size_t)T * (size_t)n_heads * (size_t)splits * ((size_t)hd + 2);
}
/* The split count the backend uses for a step of T rows (0 < T): enough
 * blocks to fill a large GPU (~264) without slicing short contexts to
 * nothing; 1 for T > 32 (prefill: T*heads blocks suffice). Depends on T and
 * n_heads only (a graph bucket fixes both). */
int cu_att_splits(int T, int n_heads);

/* Writes k, v (T, kvd) into each row's KV at (layer, pos); kv_bf16: the KV
 * elements are bf16 (rounded), else float32. */
emoe_status cu_kv_store(cudaStream_t st, const cu_att_row *rows, int T, int layer, const float *k, const float *v,
                        int kvd, int kv_bf16, emoe_err *err);
/* out (T, n_heads*hd) = softmax(q k^T / sqrt(hd)) v over positions 0..pos of
 * the row's sequence (the KV of this step must be stored first). q (T,
 * n_heads*hd), already normed and roped. hd <= CU_ATT_MAX_HEAD_DIM,
 * n_heads % n_kv_heads == 0. splits in 1..CU_ATT_MAX_SPLITS; > 1 needs
 * `part` of cu_att_part_floats(T, n_heads, hd, splits) floats. */
emoe_status cu_attention(cudaStream_t st, float *out, const float *q, const cu_att_row *rows, int T, int layer,
                         int n_heads, int n_kv_heads, int hd, int kv_bf16, int splits, float *part, emoe_err *err);
#endif
