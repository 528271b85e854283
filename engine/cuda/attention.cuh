/*
 * attention.cuh — causal multi-head attention with grouped KV heads over each
 * token's own sequence's float32 KV cache; one launch serves a whole step
 * (prefill chunks and decode tokens of several sequences mixed).
 *
 * KV layout of a sequence on the device (one allocation, engine/cuda
 * cuda_backend.cu): kv[layer][0=K,1=V][cap][n_kv_heads*head_dim].
 */
#ifndef EMOE_CUDA_ATTENTION_CUH
#define EMOE_CUDA_ATTENTION_CUH
#include "engine/cuda/common.cuh"

#define CU_ATT_MAX_HEAD_DIM 256

/* Per token row of a step: its sequence's KV buffer, capacity, and position. */
typedef struct cu_att_row {
    float *kv;
    int cap;
    int pos;
} cu_att_row;

/* Writes k, v (T, kvd) into each row's KV at (layer, pos). */
emoe_status cu_kv_store(cudaStream_t st, const cu_att_row *rows, int T, int layer, const float *k, const float *v,
                        int kvd, emoe_err *err);
/* out (T, n_heads*hd) = softmax(q k^T / sqrt(hd)) v over positions 0..pos of
 * the row's sequence (the KV of this step must be stored first). q (T,
 * n_heads*hd), already normed and roped. hd <= CU_ATT_MAX_HEAD_DIM,
 * n_heads % n_kv_heads == 0. */
emoe_status cu_attention(cudaStream_t st, float *out, const float *q, const cu_att_row *rows, int T, int layer,
                         int n_heads, int n_kv_heads, int hd, emoe_err *err);
#endif
