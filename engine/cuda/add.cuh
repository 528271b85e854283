/*
 * add.cuh — elementwise helpers: residual add, bias add, the sigmoid-gated add
 * of the shared expert, and float32 -> bf16 conversion of activations for the
 * cuBLAS path (round-to-nearest-even).
 */
#ifndef EMOE_CUDA_ADD_CUH
#define EMOE_CUDA_ADD_CUH
#include "engine/cuda/common.cuh"

/* y (n) += x (n). */
emoe_status cu_add(cudaStream_t st, float *y, const float *x, size_t n, emoe_err *err);
/* y (rows, n) += b (n) per row. */
emoe_status cu_bias_add(cudaStream_t st, float *y, const float *b, int rows, int n, emoe_err *err);
/* y (T, n) += sigmoid(g[t]) * x (T, n). */
emoe_status cu_gate_add(cudaStream_t st, float *y, const float *x, const float *g, int T, int n, emoe_err *err);
/* out (n) bf16 = in (n) float32. */
emoe_status cu_f32_to_bf16(cudaStream_t st, cu_bf16 *out, const float *in, size_t n, emoe_err *err);
#endif
