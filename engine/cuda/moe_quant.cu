/*
 * moe_quant.cu — see moe_quant.cuh. Grid (output-row tiles of QM_WARPS rows,
 * experts): block y takes its expert from the table (block-uniform, so every
 * loop below is block-uniform and the __syncthreads are safe), each warp one
 * output row. Per chunk of up to CU_MOE_CHUNK pairs the warp's weight row(s)
 * are staged through shared memory 32 blocks at a time (16-byte loads when the
 * row and the chunk are 16-byte aligned, byte loads otherwise), then lane i
 * computes block i against each pair's activations and the warp sums.
 */
#include "engine/cuda/moe_quant.cuh"
#include "engine/cuda/quant_kernels.cuh"

#define QM_WARPS 4
#define QM_CHUNK 32 /* blocks staged per step: one per lane */
#define QM_STAGE (QM_CHUNK * 34 / 16) /* uint4 per staged row (q8, the larger block) */

/* Dot of one staged block (FMT 1 q8, 2 q4) with xb[0..kn). */
template <int FMT>
__device__ static inline float block_dot(const unsigned char *blk, const float *xb, int kn)
{
    float d = cu_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
    float s = 0.0f;
    if (kn == 32) {
#pragma unroll
        for (int i = 0; i < 32; i++) {
            float w = FMT == 1 ? (float)(int8_t)blk[2 + i] : (float)((i < 16 ? (blk[2 + i] & 15) : (blk[2 + i - 16] >> 4)) - 8);
            s += w * xb[i];
        }
    } else {
        for (int i = 0; i < kn; i++) {
            float w = FMT == 1 ? (float)(int8_t)blk[2 + i] : (float)((i < 16 ? (blk[2 + i] & 15) : (blk[2 + i - 16] >> 4)) - 8);
            s += w * xb[i];
        }
    }
    return d * s;
}

/* Stages bytes [0, bytes) of src into dst (a warp's part of shared memory). */
__device__ static inline void stage(uint4 *dst, const uint8_t *src, int bytes, int vec, int lane)
{
    if (vec && bytes % 16 == 0)
        for (int i = lane; i < bytes / 16; i += 32) dst[i] = ((const uint4 *)src)[i];
    else
        for (int i = lane; i < bytes; i += 32) ((unsigned char *)dst)[i] = src[i];
}

/* GU = 1: gate and up rows, out = silu(x.g) * (x.u) into hmid (P, N = ffn),
 * x rows gathered by pair_row. GU = 0: the down row, out = x.w into eo
 * (P, N = dim), x = hmid rows of the pairs themselves. K the row length. */
template <int V> /* V = FMT + 4 * GU (one template argument: CU_LAUNCH is a macro) */
__global__ static void moe_quant_kernel(float *out, const float *x, const int *pair_row, const cu_moe_expert *ex, int N,
                                        int K)
{
    const int FMT = V & 3, GU = V >> 2;
    const int BS = FMT == 1 ? 34 : 18;
    __shared__ uint4 sh[QM_WARPS][GU ? 2 : 1][QM_STAGE];
    cu_moe_expert e = ex[blockIdx.y];
    if (e.count <= 0) return; /* block-uniform: before any barrier */
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int n = blockIdx.x * QM_WARPS + warp;
    int nb = (K + 31) / 32;
    size_t rb = (size_t)nb * BS;
    const uint8_t *w0 = (const uint8_t *)(GU ? (const void *)e.gate : (const void *)e.down);
    const uint8_t *w1 = GU ? (const uint8_t *)(const void *)e.up : w0;
    int vec = rb % 16 == 0 && ((uintptr_t)w0 % 16) == 0 && ((uintptr_t)w1 % 16) == 0;
    const uint8_t *r0 = w0 + (size_t)(n < N ? n : 0) * rb, *r1 = w1 + (size_t)(n < N ? n : 0) * rb;
    for (int c0 = 0; c0 < e.count; c0 += CU_MOE_CHUNK) {
        int nc = min(CU_MOE_CHUNK, e.count - c0);
        const float *xr[CU_MOE_CHUNK];
        float a0[CU_MOE_CHUNK], a1[CU_MOE_CHUNK];
#pragma unroll
        for (int c = 0; c < CU_MOE_CHUNK; c++) {
            a0[c] = a1[c] = 0.0f;
            int p = e.start + c0 + c;
            xr[c] = c < nc ? x + (size_t)(GU ? pair_row[p] : p) * K : x;
        }
        for (int b0 = 0; b0 < nb; b0 += QM_CHUNK) {
            int bn = min(QM_CHUNK, nb - b0), bytes = bn * BS;
            __syncthreads(); /* the previous blocks are consumed */
            if (n < N) {
                stage(sh[warp][0], r0 + (size_t)b0 * BS, bytes, vec, lane);
                if (GU) stage(sh[warp][GU ? 1 : 0], r1 + (size_t)b0 * BS, bytes, vec, lane);
            }
            __syncthreads();
            if (n < N && lane < bn) {
                const unsigned char *g = (const unsigned char *)sh[warp][0] + lane * BS;
                const unsigned char *u = (const unsigned char *)sh[warp][GU ? 1 : 0] + lane * BS;
                int k0 = (b0 + lane) * 32, kn = min(32, K - k0);
#pragma unroll
                for (int c = 0; c < CU_MOE_CHUNK; c++)
                    if (c < nc) {
                        a0[c] += block_dot<V & 3>(g, xr[c] + k0, kn);
                        if (GU) a1[c] += block_dot<V & 3>(u, xr[c] + k0, kn);
                    }
            }
        }
        if (n < N) /* warp-uniform: the shuffles stay converged */
#pragma unroll
            for (int c = 0; c < CU_MOE_CHUNK; c++)
                if (c < nc) {
                    float s0 = cu_warp_sum(a0[c]);
                    float s1 = GU ? cu_warp_sum(a1[c]) : 0.0f;
                    if (lane == 0) out[(size_t)(e.start + c0 + c) * N + n] = GU ? cu_silu(s0) * s1 : s0;
                }
    }
}

static emoe_status check(int n_ex, int fmt, int dim, int ffn, emoe_err *err)
{
    if (fmt != 1 && fmt != 2) return emoe_errf(err, EMOE_EINVAL, "quantized moe: unknown format %d", fmt);
    if (dim <= 0 || ffn <= 0) return emoe_errf(err, EMOE_EINVAL, "quantized moe: bad shape %d x %d", dim, ffn);
    if (n_ex > 65535) return emoe_errf(err, EMOE_EUNSUP, "quantized moe: %d experts in one launch (max 65535)", n_ex);
    return EMOE_OK;
}

emoe_status cu_moe_gate_up_q(cudaStream_t st, float *hmid, const float *x, const int *pair_row, const cu_moe_expert *ex,
                             int n_ex, int dim, int ffn, int fmt, emoe_err *err)
{
    if (n_ex <= 0) return EMOE_OK;
    emoe_status rc = check(n_ex, fmt, dim, ffn, err);
    if (rc) return rc;
    dim3 grid(cu_blocks((size_t)ffn, QM_WARPS), (unsigned)n_ex);
    if (fmt == 1) CU_LAUNCH(moe_quant_kernel<5>, grid, QM_WARPS * 32, 0, st, hmid, x, pair_row, ex, ffn, dim);
    else CU_LAUNCH(moe_quant_kernel<6>, grid, QM_WARPS * 32, 0, st, hmid, x, pair_row, ex, ffn, dim);
    CU_LAUNCH_CHECK(err, "moe_gate_up_q");
    return EMOE_OK;
}

emoe_status cu_moe_down_q(cudaStream_t st, float *eo, const float *hmid, const cu_moe_expert *ex, int n_ex, int dim,
                          int ffn, int fmt, emoe_err *err)
{
    if (n_ex <= 0) return EMOE_OK;
    emoe_status rc = check(n_ex, fmt, dim, ffn, err);
    if (rc) return rc;
    dim3 grid(cu_blocks((size_t)dim, QM_WARPS), (unsigned)n_ex);
    const int *none = NULL;
    if (fmt == 1) CU_LAUNCH(moe_quant_kernel<1>, grid, QM_WARPS * 32, 0, st, eo, hmid, none, ex, dim, ffn);
    else CU_LAUNCH(moe_quant_kernel<2>, grid, QM_WARPS * 32, 0, st, eo, hmid, none, ex, dim, ffn);
    CU_LAUNCH_CHECK(err, "moe_down_q");
    return EMOE_OK;
}
