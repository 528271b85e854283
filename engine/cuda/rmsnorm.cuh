/*
 * rmsnorm.cuh — RMSNorm as Hugging Face computes it in float32:
 * out = w * (x * rsqrt(mean(x^2) + eps)). One launcher serves the layer norms
 * (rows = tokens, n = dim), the per-head q/k norm of qwen3_moe (rows =
 * tokens*heads, n = head_dim: the heads of a token are contiguous), the
 * whole-projection q/k norm of olmoe (rows = tokens, n = heads*head_dim) and
 * the final norm over a subset of rows (rowmap).
 */
#ifndef EMOE_CUDA_RMSNORM_CUH
#define EMOE_CUDA_RMSNORM_CUH
#include "engine/cuda/common.cuh"

/* out (rows, n) from x rows rowmap[r] (NULL: row r), w (n) float32. out == x
 * (in place) is allowed only without a rowmap. */
emoe_status cu_rmsnorm(cudaStream_t st, float *out, const float *x, const int *rowmap, const float *w, int rows, int n,
                       float eps, emoe_err *err);
/* Fused residual add + RMSNorm (issue 12): x += a, then out = RMSNorm(x) * w,
 * bitwise what cu_add then cu_rmsnorm compute (same block shape, same order). */
emoe_status cu_add_rmsnorm(cudaStream_t st, float *x, const float *a, float *out, const float *w, int rows, int n, float eps,
                           emoe_err *err);
/* The block size cu_rmsnorm uses for rows of n (fused kernels elsewhere that
 * end in an RMSNorm use it too, to sum in the same order). */
int cu_rmsnorm_threads(int n);
#endif
