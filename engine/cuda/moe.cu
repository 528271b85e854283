/*
 * moe.cu — see moe.cuh. Grid (output-row tiles, experts): block y picks the
 * expert from the table, each warp owns one output row (a row of gate/up, or
 * of down) and loops over the expert's pairs in chunks, accumulating in
 * registers; lanes stride the reduction dimension and reduce with shuffles.
 * CUDA-core float32 FMA on bf16 weights: right for decode (memory bound); a
 * tensor-core grouped GEMM for long prefills is future work (docs/cuda.md).
 */
#include "engine/cuda/moe.cuh"

#define MOE_WARPS 8

__global__ static void moe_gate_up_kernel(float *hmid, const float *x, const int *pair_row, const cu_moe_expert *ex,
                                          int dim, int ffn)
{
    cu_moe_expert e = ex[blockIdx.y];
    int lane = threadIdx.x & 31;
    int f = blockIdx.x * MOE_WARPS + (threadIdx.x >> 5);
    if (f >= ffn) return; /* whole warp leaves together: no block-wide sync below */
    const cu_bf16 *g = e.gate + (size_t)f * dim, *u = e.up + (size_t)f * dim;
    for (int c0 = 0; c0 < e.count; c0 += CU_MOE_CHUNK) {
        int nc = min(CU_MOE_CHUNK, e.count - c0);
        const float *xr[CU_MOE_CHUNK];
        float ag[CU_MOE_CHUNK], au[CU_MOE_CHUNK];
#pragma unroll
        for (int c = 0; c < CU_MOE_CHUNK; c++) {
            ag[c] = au[c] = 0.0f;
            xr[c] = c < nc ? x + (size_t)pair_row[e.start + c0 + c] * dim : x;
        }
        for (int i = lane; i < dim; i += 32) {
            float wg = cu_bf2f(g[i]), wu = cu_bf2f(u[i]);
#pragma unroll
            for (int c = 0; c < CU_MOE_CHUNK; c++)
                if (c < nc) {
                    float xv = xr[c][i];
                    ag[c] += xv * wg;
                    au[c] += xv * wu;
                }
        }
#pragma unroll
        for (int c = 0; c < CU_MOE_CHUNK; c++)
            if (c < nc) { /* warp-uniform */
                float sg = cu_warp_sum(ag[c]), su = cu_warp_sum(au[c]);
                if (lane == 0) hmid[(size_t)(e.start + c0 + c) * ffn + f] = cu_silu(sg) * su;
            }
    }
}

__global__ static void moe_down_kernel(float *eo, const float *hmid, const cu_moe_expert *ex, int dim, int ffn)
{
    cu_moe_expert e = ex[blockIdx.y];
    int lane = threadIdx.x & 31;
    int d = blockIdx.x * MOE_WARPS + (threadIdx.x >> 5);
    if (d >= dim) return;
    const cu_bf16 *w = e.down + (size_t)d * ffn;
    for (int c0 = 0; c0 < e.count; c0 += CU_MOE_CHUNK) {
        int nc = min(CU_MOE_CHUNK, e.count - c0);
        float acc[CU_MOE_CHUNK];
#pragma unroll
        for (int c = 0; c < CU_MOE_CHUNK; c++) acc[c] = 0.0f;
        const float *h0 = hmid + (size_t)(e.start + c0) * ffn;
        for (int i = lane; i < ffn; i += 32) {
            float wv = cu_bf2f(w[i]);
#pragma unroll
            for (int c = 0; c < CU_MOE_CHUNK; c++)
                if (c < nc) acc[c] += h0[(size_t)c * ffn + i] * wv;
        }
#pragma unroll
        for (int c = 0; c < CU_MOE_CHUNK; c++)
            if (c < nc) { /* warp-uniform */
                float s = cu_warp_sum(acc[c]);
                if (lane == 0) eo[(size_t)(e.start + c0 + c) * dim + d] = s;
            }
    }
}

__global__ static void moe_combine_kernel(float *out, const float *eo, const int *pair_of, const float *w, int k, int dim)
{
    int t = blockIdx.x;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) acc += w[(size_t)t * k + j] * eo[(size_t)pair_of[(size_t)t * k + j] * dim + i];
        out[(size_t)t * dim + i] = acc;
    }
}

static emoe_status check_grid(int n_ex, emoe_err *err)
{
    if (n_ex > 65535) return emoe_errf(err, EMOE_EUNSUP, "moe: %d experts in one launch (max 65535)", n_ex);
    return EMOE_OK;
}

emoe_status cu_moe_gate_up(cudaStream_t st, float *hmid, const float *x, const int *pair_row, const cu_moe_expert *ex,
                           int n_ex, int dim, int ffn, emoe_err *err)
{
    if (n_ex <= 0) return EMOE_OK;
    emoe_status rc = check_grid(n_ex, err);
    if (rc) return rc;
    dim3 grid(cu_blocks((size_t)ffn, MOE_WARPS), (unsigned)n_ex);
    CU_LAUNCH(moe_gate_up_kernel, grid, MOE_WARPS * 32, 0, st, hmid, x, pair_row, ex, dim, ffn);
    CU_LAUNCH_CHECK(err, "moe_gate_up");
    return EMOE_OK;
}

emoe_status cu_moe_down(cudaStream_t st, float *eo, const float *hmid, const cu_moe_expert *ex, int n_ex, int dim,
                        int ffn, emoe_err *err)
{
    if (n_ex <= 0) return EMOE_OK;
    emoe_status rc = check_grid(n_ex, err);
    if (rc) return rc;
    dim3 grid(cu_blocks((size_t)dim, MOE_WARPS), (unsigned)n_ex);
    CU_LAUNCH(moe_down_kernel, grid, MOE_WARPS * 32, 0, st, eo, hmid, ex, dim, ffn);
    CU_LAUNCH_CHECK(err, "moe_down");
    return EMOE_OK;
}

emoe_status cu_moe_combine(cudaStream_t st, float *out, const float *eo, const int *pair_of, const float *w, int T,
                           int k, int dim, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    CU_LAUNCH(moe_combine_kernel, T, 256, 0, st, out, eo, pair_of, w, k, dim);
    CU_LAUNCH_CHECK(err, "moe_combine");
    return EMOE_OK;
}
