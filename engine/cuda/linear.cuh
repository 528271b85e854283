/*
 * linear.cuh — dense projections y (T, N) = x (T, K) . W^T (+ bias), W (N, K)
 * bf16 row-major as stored in the checkpoint, x and y float32.
 *
 * Two paths, one launcher (cu_linear):
 *  - T <= gemv_max_rows (decode, small batches) and the router: cu_linear_gemv,
 *    a warp-per-output-row kernel that reads each weight row once for up to 8
 *    token rows, float32 activations, float32 accumulation;
 *  - larger T (prefill): cuBLAS. The choice made here: activations are
 *    converted to bf16 (round-to-nearest-even) and multiplied with the bf16
 *    weights by cublasGemmEx with CUBLAS_COMPUTE_32F and a float32 output
 *    (tensor cores, float32 accumulation). cuBLAS has no bf16 x f32 mixed
 *    input, and upcasting the weights to f32 would double their memory; the
 *    bf16 rounding of activations (~2^-9 relative) is what the 2e-2 logits
 *    tolerance of a bf16 GPU implementation allows for. The router always
 *    takes the f32 GEMV path, so routing decisions see float32 activations.
 */
#ifndef EMOE_CUDA_LINEAR_CUH
#define EMOE_CUDA_LINEAR_CUH
#include "engine/cuda/common.cuh"

typedef struct cu_linear_ctx {
    cublasHandle_t blas;   /* bound to the compute stream */
    cu_bf16 *xb;           /* scratch: bf16 activations */
    size_t xb_cap;         /* elements of xb */
    int gemv_max_rows;     /* T <= this: GEMV path */
} cu_linear_ctx;

/* Always the float32-activation kernel (any T). bias (N) float32 or NULL. */
emoe_status cu_linear_gemv(cudaStream_t st, float *y, const float *x, const cu_bf16 *W, const float *bias, int T,
                           int N, int K, emoe_err *err);
/* Always cuBLAS (x converted to bf16 into xb, which must hold T*K). */
emoe_status cu_linear_cublas(cublasHandle_t h, cudaStream_t st, float *y, const float *x, cu_bf16 *xb,
                             const cu_bf16 *W, const float *bias, int T, int N, int K, emoe_err *err);
/* Picks the path by T (see above). */
emoe_status cu_linear(const cu_linear_ctx *c, cudaStream_t st, float *y, const float *x, const cu_bf16 *W,
                      const float *bias, int T, int N, int K, emoe_err *err);
#endif
