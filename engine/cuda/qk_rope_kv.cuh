/*
 * qk_rope_kv.cuh — fused q/k RMSNorm + RoPE + KV write (issue 12): one launch
 * per layer instead of five (q norm, k norm, q rope, k rope, KV store). Per
 * token row: the q and k norms (none, per head over head_dim as qwen3_moe,
 * or over the whole projection as olmoe), then the rotate-half RoPE of every
 * q and k head (rope.cuh's arithmetic: cos/sin in double, rounded to float),
 * q written back in place, k and v written into the row's KV cache at its
 * position (float32 or bf16 elements, attention.cuh's layout). The normed
 * value of an element is w * (x * rs) as rmsnorm.cuh computes it; only the
 * order of the sum of squares differs (warp per head, or block-wide).
 */
#ifndef EMOE_CUDA_QK_ROPE_KV_CUH
#define EMOE_CUDA_QK_ROPE_KV_CUH
#include "engine/cuda/common.cuh"
#include "engine/cuda/attention.cuh"

/* norm: 0 none, 1 per head (q_norm/k_norm of hd), 2 whole projection (qd / kvd).
 * q (T, n_heads*hd) in/out; k, v (T, n_kv_heads*hd) in; pos (T); rows (T). */
emoe_status cu_qk_rope_kv(cudaStream_t st, float *q, const float *k, const float *v, int T, int n_heads, int n_kv_heads,
                          int hd, int norm, const float *q_norm, const float *k_norm, float eps, const int *pos,
                          const float *inv_freq, const cu_att_row *rows, int layer, int kv_bf16, emoe_err *err);
#endif
