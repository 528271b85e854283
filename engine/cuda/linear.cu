/* linear.cu — see linear.cuh. */
#include "engine/cuda/linear.cuh"
#include "engine/cuda/add.cuh"

#define LIN_WARPS 8
#define LIN_ROWS 8

/* Grid (N tiles of LIN_WARPS rows, T tiles of LIN_ROWS). VEC 2: K even and
 * the pointers 4/8-byte aligned, so two bf16 and two floats load at once.
 * VEC 8: K a multiple of 8 and both pointers 16-byte aligned: 8 bf16 (one
 * 16-byte load) and two float4 per lane and step. VEC 1: scalar. */
template <int VEC>
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
    if (VEC == 8) {
        /* unrolled: two 16-byte weight loads per lane can be in flight (same
         * accumulation order, so bitwise the same; 80 registers, no spill, sm_90) */
#pragma unroll 2
        for (int i = lane * 8; i < K; i += 32 * 8) {
            uint4 v = *(const uint4 *)(w + i);
            uint32_t u[4] = {v.x, v.y, v.z, v.w};
            float wf[8];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                wf[2 * j] = cu_bf2f((cu_bf16)(u[j] & 0xffffu));
                wf[2 * j + 1] = cu_bf2f((cu_bf16)(u[j] >> 16));
            }
#pragma unroll
            for (int r = 0; r < LIN_ROWS; r++)
                if (r < nt) {
                    const float4 *xv = (const float4 *)(x + (size_t)(t0 + r) * K + i);
                    float4 a = xv[0], b = xv[1];
                    acc[r] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + b.x * wf[4] + b.y * wf[5] +
                              b.z * wf[6] + b.w * wf[7];
                }
        }
    } else if (VEC == 2) {
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
    int vec8 = K % 8 == 0 && ((uintptr_t)W % 16) == 0 && ((uintptr_t)x % 16) == 0;
    int vec = K % 2 == 0 && ((uintptr_t)W % 4) == 0 && ((uintptr_t)x % 8) == 0;
    if (vec8) CU_LAUNCH(gemv_kernel<8>, grid, LIN_WARPS * 32, 0, st, y, x, W, bias, T, N, K);
    else if (vec) CU_LAUNCH(gemv_kernel<2>, grid, LIN_WARPS * 32, 0, st, y, x, W, bias, T, N, K);
    else CU_LAUNCH(gemv_kernel<1>, grid, LIN_WARPS * 32, 0, st, y, x, W, bias, T, N, K);
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
