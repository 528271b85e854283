/*
 * quant_kernels.cuh — CUDA kernels for q8/q4 expert weights (docs/quant.md):
 * y (T, N) = x (T, K) . W^T with W (N, K) in the block formats of
 * engine/quant.h (rows of ceil(K/32) blocks, q8 {f16 d; int8 qs[32]} 34 bytes,
 * q4 {f16 d; uint8 qs[16]} 18 bytes, rows back to back), x and y float32.
 *
 * Activations stay float32 on the GPU (no q8a rounding): a warp per output
 * row, up to 8 token rows per weight read. The weight bytes of a warp's row
 * are staged through shared memory 32 blocks at a time with 16-byte loads
 * when the row and chunk are 16-byte aligned (K a multiple of 256: every
 * OLMoE/Mixtral/Qwen expert width), byte loads otherwise; each lane then
 * computes one block. float32 accumulation; the f16 scales are converted with
 * integer operations (exactly, as engine/tensor.h does on the host).
 *
 * Two launchers: cu_quant_gemv (one matrix) and cu_quant_grouped (several
 * experts in one launch: group g computes rows [row0[g], row0[g] + rows[g])
 * of y with its own W[g], from the same rows of x or, through x_rows, from
 * gathered ones). Tested against the CPU
 * reference (quant_row_dequantize + a double dot) under the emulator
 * (tests/gpu/test_quant_kernels.cu).
 */
#ifndef EMOE_CUDA_QUANT_KERNELS_CUH
#define EMOE_CUDA_QUANT_KERNELS_CUH
#include "engine/cuda/common.cuh"

/* fmt: 1 = q8, 2 = q4 (engine/quant.h's QUANT_Q8 / QUANT_Q4). */
emoe_status cu_quant_gemv(cudaStream_t st, float *y, const float *x, const void *W, int fmt, int T, int N, int K,
                          emoe_err *err);

/* n_groups groups, all with the same N, K and fmt; W, row0 and rows are DEVICE
 * arrays of n_groups entries; max_rows >= every rows[g] (sizes the grid). x and
 * y have K and N columns. Output row p of group g (row0[g] <= p < row0[g] +
 * rows[g]) reads x row x_rows[p] (a device array; NULL: row p), as the
 * backend's grouped (token, pick) pairs read their token's row. */
emoe_status cu_quant_grouped(cudaStream_t st, float *y, const float *x, const int *x_rows, const void *const *W,
                             const int *row0, const int *rows, int n_groups, int max_rows, int fmt, int N, int K,
                             emoe_err *err);

/* Host/device f16 -> float32 (exact; NaN/Inf kept). */
__host__ __device__ static inline float cu_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0x1f) u = sign | 0x7f800000u | (m << 13);
    else if (e != 0) u = sign | ((e + 112u) << 23) | (m << 13);
    else if (m == 0) u = sign;
    else { /* subnormal: normalise */
        int s = 0;
        while (!(m & 0x400u)) { m <<= 1; s++; }
        u = sign | ((uint32_t)(113 - s) << 23) | ((m & 0x3ffu) << 13);
    }
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}
#endif
