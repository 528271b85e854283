/* linear.cu — see linear.cuh. */
#include "engine/cuda/linear.cuh"
#include "engine/cuda/add.cuh"

#define LIN_WARPS 8
#define LIN_ROWS 8

/* Grid (N tiles of LIN_WARPS rows, T tiles of LIN_ROWS). VEC: K even and the
 * pointers 4/8-byte aligned, so two bf16 and two floats load at once. */
template <bool VEC>
__global__ static void gemv_kernel(float *y, const float *x, const cu_bf16 *W, const float *bias, int T, int N, int K)
{
    int lane = threadIdx.x & 31;
    int n = blockIdx.x * LIN_WARPS + (threadIdx.x >> 5);
    if (n >= N) return;
    int t0 = blockIdx.y * LIN_ROWS, nt = min(LIN_ROWS, T - t0);
    const cu_bf16 *w = W + (size_t)n * K;
    float acc[LIN_ROWS];
#pragma unroll
    for (int r = 0; r < LIN_ROWS; r++) acc[r] = 0.0f;
    if (VEC) {
        const uint32_t *w2 = (const uint32_t *)w;
        for (int i = lane; i < K / 2; i += 32) {
            uint32_t pw = w2[i];
            float wa = cu_bf2f((cu_bf16)(pw & 0xffffu)), wb = cu_bf2f((cu_bf16)(pw >> 16));
#pragma unroll
            for (int r = 0; r < LIN_ROWS; r++)
                if (r < nt) {
                    float2 xv = ((const float2 *)(x + (size_t)(t0 + r) * K))[i];
                    acc[r] += xv.x * wa + xv.y * wb;
                }
        }
    } else {
        for (int i = lane; i < K; i += 32) {
            float wv = cu_bf2f(w[i]);
#pragma unroll
            for (int r = 0; r < LIN_ROWS; r++)
                if (r < nt) acc[r] += x[(size_t)(t0 + r) * K + i] * wv;
        }
    }
    float b = bias ? bias[n] : 0.0f;
#pragma unroll
    for (int r = 0; r < LIN_ROWS; r++)
        if (r < nt) { /* nt is the same for the whole warp: the shuffles stay converged */
            float s = cu_warp_sum(acc[r]);
            if (lane == 0) y[(size_t)(t0 + r) * N + n] = s + b;
        }
}

emoe_status cu_linear_gemv(cudaStream_t st, float *y, const float *x, const cu_bf16 *W, const float *bias, int T,
                           int N, int K, emoe_err *err)
{
    if (T <= 0 || N <= 0) return EMOE_OK;
    unsigned ty = cu_blocks((size_t)T, LIN_ROWS);
    if (ty > 65535) return emoe_errf(err, EMOE_EUNSUP, "linear: %d rows in one launch", T);
    dim3 grid(cu_blocks((size_t)N, LIN_WARPS), ty);
    int vec = K % 2 == 0 && ((uintptr_t)W % 4) == 0 && ((uintptr_t)x % 8) == 0;
    if (vec) CU_LAUNCH(gemv_kernel<true>, grid, LIN_WARPS * 32, 0, st, y, x, W, bias, T, N, K);
    else CU_LAUNCH(gemv_kernel<false>, grid, LIN_WARPS * 32, 0, st, y, x, W, bias, T, N, K);
    CU_LAUNCH_CHECK(err, "linear_gemv");
    return EMOE_OK;
}

emoe_status cu_linear_cublas(cublasHandle_t h, cudaStream_t st, float *y, const float *x, cu_bf16 *xb,
                             const cu_bf16 *W, const float *bias, int T, int N, int K, emoe_err *err)
{
    if (T <= 0 || N <= 0) return EMOE_OK;
    emoe_status rc = cu_f32_to_bf16(st, xb, x, (size_t)T * K, err);
    if (rc) return rc;
    /* Column-major view: W is (K, N) with ld K, x is (K, T) with ld K, y is
     * (N, T) with ld N; y = W^T x. */
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(err, cublasSetStream(h, st));
    CUBLAS_CHECK(err, cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &alpha, W, CUDA_R_16BF, K, xb, CUDA_R_16BF, K,
                                   &beta, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias) return cu_bias_add(st, y, bias, T, N, err);
    return EMOE_OK;
}

emoe_status cu_linear(const cu_linear_ctx *c, cudaStream_t st, float *y, const float *x, const cu_bf16 *W,
                      const float *bias, int T, int N, int K, emoe_err *err)
{
    if (T <= c->gemv_max_rows || !c->xb || (size_t)T * (size_t)K > c->xb_cap)
        return cu_linear_gemv(st, y, x, W, bias, T, N, K, err);
    return cu_linear_cublas(c->blas, st, y, x, c->xb, W, bias, T, N, K, err);
}
