/* quant_kernels.cu — see quant_kernels.cuh. */
#include "engine/cuda/quant_kernels.cuh"

#define QK_WARPS 4  /* output rows (one per warp) per thread block */
#define QK_TOK 8    /* token rows per weight read */
#define QK_CHUNK 32 /* blocks staged per step: one per lane */
#define QK_Q8_BYTES 34
#define QK_Q4_BYTES 18

/* Grid (N / QK_WARPS, max rows / QK_TOK, groups). FMT 1 = q8, 2 = q4. One
 * matrix: Wg == NULL, W1 its rows, all T rows of x. */
template <int FMT>
__global__ static void quant_gemv_kernel(float *y, const float *x, const int *x_rows, const uint8_t *const *Wg,
                                         const uint8_t *W1, const int *row0, const int *rows, int T, int N, int K)
{
    const int BS = FMT == 1 ? QK_Q8_BYTES : QK_Q4_BYTES;
    __shared__ uint4 sh[QK_WARPS][QK_CHUNK * QK_Q8_BYTES / 16];
    int g = blockIdx.z;
    const uint8_t *W = Wg ? Wg[g] : W1;
    int r0 = row0 ? row0[g] : 0, nr = rows ? rows[g] : T;
    int t0 = blockIdx.y * QK_TOK, nt = min(QK_TOK, nr - t0);
    if (nt <= 0) return; /* the same for the whole thread block: before any barrier */
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int n = blockIdx.x * QK_WARPS + warp;
    int nb = (K + 31) / 32;
    size_t rb = (size_t)nb * BS;
    int vec = rb % 16 == 0 && ((uintptr_t)W % 16) == 0; /* 16-byte loads: rows and chunks aligned */
    const uint8_t *wr = W + (size_t)(n < N ? n : 0) * rb;
    int xrow[QK_TOK]; /* the x row of each output row (a gather for grouped expert pairs) */
#pragma unroll
    for (int t = 0; t < QK_TOK; t++) xrow[t] = t < nt ? (x_rows ? x_rows[r0 + t0 + t] : r0 + t0 + t) : 0;
    unsigned char *shb = (unsigned char *)sh[warp];
    float acc[QK_TOK];
#pragma unroll
    for (int t = 0; t < QK_TOK; t++) acc[t] = 0.0f;
    for (int c0 = 0; c0 < nb; c0 += QK_CHUNK) {
        int cn = min(QK_CHUNK, nb - c0);
        int bytes = cn * BS;
        __syncthreads(); /* the previous chunk is consumed */
        if (n < N) {
            const uint8_t *src = wr + (size_t)c0 * BS;
            if (vec && bytes % 16 == 0)
                for (int i = lane; i < bytes / 16; i += 32) sh[warp][i] = ((const uint4 *)src)[i];
            else
                for (int i = lane; i < bytes; i += 32) shb[i] = src[i];
        }
        __syncthreads();
        if (n < N && lane < cn) {
            const unsigned char *blk = shb + lane * BS;
            float d = cu_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
            int k0 = (c0 + lane) * 32, kn = min(32, K - k0);
            float wv[32];
#pragma unroll
            for (int i = 0; i < 32; i++)
                wv[i] = FMT == 1 ? (float)(int8_t)blk[2 + i]
                                 : (float)((i < 16 ? (blk[2 + i] & 15) : (blk[2 + i - 16] >> 4)) - 8);
#pragma unroll
            for (int t = 0; t < QK_TOK; t++)
                if (t < nt) {
                    const float *xb = x + (size_t)xrow[t] * K + k0;
                    float s = 0.0f;
                    if (kn == 32) {
#pragma unroll
                        for (int i = 0; i < 32; i++) s += wv[i] * xb[i];
                    } else {
                        for (int i = 0; i < kn; i++) s += wv[i] * xb[i];
                    }
                    acc[t] += d * s;
                }
        }
    }
    if (n < N) /* n is the same for the whole warp: the shuffles stay converged */
#pragma unroll
        for (int t = 0; t < QK_TOK; t++)
            if (t < nt) {
                float s = cu_warp_sum(acc[t]);
                if (lane == 0) y[(size_t)(r0 + t0 + t) * N + n] = s;
            }
}

static emoe_status check_args(int fmt, int N, int K, unsigned ty, int groups, emoe_err *err)
{
    if (fmt != 1 && fmt != 2) return emoe_errf(err, EMOE_EINVAL, "quantized matmul: unknown format %d", fmt);
    if (N <= 0 || K <= 0) return emoe_errf(err, EMOE_EINVAL, "quantized matmul: bad shape %d x %d", N, K);
    if (ty > 65535 || groups > 65535) return emoe_errf(err, EMOE_EUNSUP, "quantized matmul: too many rows or groups in one launch");
    return EMOE_OK;
}

emoe_status cu_quant_gemv(cudaStream_t st, float *y, const float *x, const void *W, int fmt, int T, int N, int K,
                          emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    unsigned ty = cu_blocks((size_t)T, QK_TOK);
    emoe_status rc = check_args(fmt, N, K, ty, 1, err);
    if (rc) return rc;
    dim3 grid(cu_blocks((size_t)N, QK_WARPS), ty, 1);
    const uint8_t *const *none = NULL;
    const int *nil = NULL;
    if (fmt == 1) CU_LAUNCH(quant_gemv_kernel<1>, grid, QK_WARPS * 32, 0, st, y, x, nil, none, (const uint8_t *)W, nil, nil, T, N, K);
    else CU_LAUNCH(quant_gemv_kernel<2>, grid, QK_WARPS * 32, 0, st, y, x, nil, none, (const uint8_t *)W, nil, nil, T, N, K);
    CU_LAUNCH_CHECK(err, "quant_gemv");
    return EMOE_OK;
}

emoe_status cu_quant_grouped(cudaStream_t st, float *y, const float *x, const int *x_rows, const void *const *W,
                             const int *row0, const int *rows, int n_groups, int max_rows, int fmt, int N, int K,
                             emoe_err *err)
{
    if (n_groups <= 0 || max_rows <= 0) return EMOE_OK;
    unsigned ty = cu_blocks((size_t)max_rows, QK_TOK);
    emoe_status rc = check_args(fmt, N, K, ty, n_groups, err);
    if (rc) return rc;
    dim3 grid(cu_blocks((size_t)N, QK_WARPS), ty, (unsigned)n_groups);
    const uint8_t *const *wg = (const uint8_t *const *)W;
    const uint8_t *one = NULL;
    if (fmt == 1) CU_LAUNCH(quant_gemv_kernel<1>, grid, QK_WARPS * 32, 0, st, y, x, x_rows, wg, one, row0, rows, 0, N, K);
    else CU_LAUNCH(quant_gemv_kernel<2>, grid, QK_WARPS * 32, 0, st, y, x, x_rows, wg, one, row0, rows, 0, N, K);
    CU_LAUNCH_CHECK(err, "quant_grouped");
    return EMOE_OK;
}
