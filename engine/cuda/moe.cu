/*
 * moe.cu — see moe.cuh. Grid (output-row tiles, experts): block y picks the
 * expert from the table, each warp owns one output row (a row of gate/up, or
 * of down) and loops over the expert's pairs in chunks, accumulating in
 * registers; lanes stride the reduction dimension and reduce with shuffles.
 * CUDA-core float32 FMA on bf16 weights: right for decode (memory bound); a
 * tensor-core grouped GEMM for long prefills is future work (docs/cuda.md).
 */
#include "engine/cuda/moe.cuh"
#include "engine/cuda/rmsnorm.cuh"

#define MOE_WARPS 8

/* 16-byte loads: 8 bf16 weights per lane and load, several rows' activations
 * as float4. Used when the row length is a multiple of 8 and every pointer
 * involved is 16-byte aligned (checked in the kernel: warp-uniform, the
 * expert is the block's); otherwise 2-byte loads. */
__device__ static inline void bf16x8(const cu_bf16 *p, float *f)
{
    uint4 v = *(const uint4 *)p;
    uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        f[2 * j] = cu_bf2f((cu_bf16)(u[j] & 0xffffu));
        f[2 * j + 1] = cu_bf2f((cu_bf16)(u[j] >> 16));
    }
}

__device__ static inline float dot8(const float *x, const float *w)
{
    float4 a = ((const float4 *)x)[0], b = ((const float4 *)x)[1];
    return a.x * w[0] + a.y * w[1] + a.z * w[2] + a.w * w[3] + b.x * w[4] + b.y * w[5] + b.z * w[6] + b.w * w[7];
}

__device__ static inline bool al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

__global__ static void moe_gate_up_kernel(float *hmid, const float *x, const int *pair_row, const cu_moe_expert *ex,
                                          int dim, int ffn)
{
    cu_moe_expert e = ex[blockIdx.y];
    if (e.count <= 0) return; /* an empty entry of a device-built table: no pointers */
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
        if (dim % 8 == 0 && al16(g) && al16(u) && al16(x)) {
            /* unrolled: two 16-byte weight loads per lane can be in flight
             * (same accumulation order; 96 registers, no spill, sm_90) */
#pragma unroll 2
            for (int i = lane * 8; i < dim; i += 32 * 8) {
                float wg[8], wu[8];
                bf16x8(g + i, wg);
                bf16x8(u + i, wu);
#pragma unroll
                for (int c = 0; c < CU_MOE_CHUNK; c++)
                    if (c < nc) {
                        ag[c] += dot8(xr[c] + i, wg);
                        au[c] += dot8(xr[c] + i, wu);
                    }
            }
        } else {
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
    if (e.count <= 0) return;
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
        if (ffn % 8 == 0 && al16(w) && al16(hmid)) {
            for (int i = lane * 8; i < ffn; i += 32 * 8) {
                float wv[8];
                bf16x8(w + i, wv);
#pragma unroll
                for (int c = 0; c < CU_MOE_CHUNK; c++)
                    if (c < nc) acc[c] += dot8(h0 + (size_t)c * ffn + i, wv);
            }
        } else {
            for (int i = lane; i < ffn; i += 32) {
                float wv = cu_bf2f(w[i]);
#pragma unroll
                for (int c = 0; c < CU_MOE_CHUNK; c++)
                    if (c < nc) acc[c] += h0[(size_t)c * ffn + i] * wv;
            }
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

__global__ static void moe_combine_residual_kernel(float *x, const float *eo, const int *pair_of, const float *w,
                                                  const float *sh, const float *g, float *h, const float *nw, float eps, int k,
                                                  int dim)
{
    __shared__ float red[32];
    int t = blockIdx.x;
    float gt = sh ? 1.0f / (1.0f + expf(-g[t])) : 0.0f;
    float ss = 0.0f;
    float *xr = x + (size_t)t * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) acc += w[(size_t)t * k + j] * eo[(size_t)pair_of[(size_t)t * k + j] * dim + i];
        if (sh) acc += gt * sh[(size_t)t * dim + i];
        float v = xr[i] + acc;
        xr[i] = v;
        ss += v * v;
    }
    if (!nw) return; /* block-uniform */
    ss = cu_block_sum(ss, red);
    float rs = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) h[(size_t)t * dim + i] = nw[i] * (xr[i] * rs);
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

emoe_status cu_moe_combine_residual(cudaStream_t st, float *x, const float *eo, const int *pair_of, const float *w,
                                    const float *sh, const float *g, float *h, const float *nw, float eps, int T, int k,
                                    int dim, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    /* cu_rmsnorm's block shape: the norm sums in its order */
    CU_LAUNCH(moe_combine_residual_kernel, T, cu_rmsnorm_threads(dim), 0, st, x, eo, pair_of, w, sh, g, h, nw, eps, k, dim);
    CU_LAUNCH_CHECK(err, "moe_combine_residual");
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
