/*
 * common.cuh — what every CUDA op of emoe shares: the checking macros (each
 * failure becomes an emoe_status with the expression, function, file and line
 * in emoe_err; nothing aborts), bf16 <-> float32 conversions done with integer
 * bit operations exactly as engine/tensor.h does on the host, and block/warp
 * reductions.
 *
 * Storage conventions of the CUDA backend: weights are bf16 (raw uint16_t
 * bits, cuBLAS sees them as CUDA_R_16BF), activations and the KV cache are
 * float32, accumulation is float32. No fast-math intrinsics (__expf etc.) in
 * tested code.
 */
#ifndef EMOE_CUDA_COMMON_CUH
#define EMOE_CUDA_COMMON_CUH

#ifdef EMOE_CUDA_EMU
/* The CPU emulation of the CUDA programming model used to execute these
 * kernels and the backend on machines without a GPU (tests/gpu/emu/). */
#include "tests/gpu/emu/cuda_emu.h"
#else
#include <cuda_runtime.h>
#include <cublas_v2.h>
/* Kernel launch and dynamic shared memory, spelled so the emulator can
 * provide its own versions. */
#define CU_LAUNCH(kernel, grid, block, shmem, stream, ...) kernel<<<(grid), (block), (shmem), (stream)>>>(__VA_ARGS__)
#define CU_DYN_SHARED(type, name) extern __shared__ type name[]
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "engine/common.h"
}

/* Records a CUDA runtime error; returns EMOE_EDEVICE (EMOE_ENOMEM for
 * cudaErrorMemoryAllocation, so callers can tell an out-of-memory apart). */
emoe_status cu_err_cuda(emoe_err *err, cudaError_t e, const char *expr, const char *func, const char *file, int line);
emoe_status cu_err_cublas(emoe_err *err, cublasStatus_t s, const char *expr, const char *func, const char *file, int line);

/* For functions returning emoe_status. */
#define CUDA_CHECK(err, expr)                                                                      \
    do {                                                                                           \
        cudaError_t cu_e_ = (expr);                                                                \
        if (cu_e_ != cudaSuccess) return cu_err_cuda((err), cu_e_, #expr, __func__, __FILE__, __LINE__); \
    } while (0)
#define CUBLAS_CHECK(err, expr)                                                                    \
    do {                                                                                           \
        cublasStatus_t cb_s_ = (expr);                                                             \
        if (cb_s_ != CUBLAS_STATUS_SUCCESS) return cu_err_cublas((err), cb_s_, #expr, __func__, __FILE__, __LINE__); \
    } while (0)
/* After every kernel launch: launch-configuration errors surface here;
 * asynchronous faults surface at the next synchronising call. */
#define CU_LAUNCH_CHECK(err, what) CUDA_CHECK((err), cudaGetLastError())

/* For `goto fail` cleanup: sets rc and jumps. */
#define CUDA_TRY(rc, err, expr, label)                                                             \
    do {                                                                                           \
        cudaError_t cu_e_ = (expr);                                                                \
        if (cu_e_ != cudaSuccess) { (rc) = cu_err_cuda((err), cu_e_, #expr, __func__, __FILE__, __LINE__); goto label; } \
    } while (0)

typedef uint16_t cu_bf16; /* raw bf16 bits */

__host__ __device__ static inline float cu_bf2f(cu_bf16 h)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float((uint32_t)h << 16);
#else
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

/* Round-to-nearest-even, NaN preserved (engine/tensor.h eng_f32_to_bf16). */
__device__ static inline cu_bf16 cu_f2bf(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (cu_bf16)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (cu_bf16)(u >> 16);
}

__device__ static inline float cu_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ static inline float cu_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets
 * the result. `sh` is 32 floats of shared memory; the block must reach every
 * call (no early return before it). */
__device__ static inline float cu_block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = cu_warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.0f;
    return cu_warp_sum(r);
}

__device__ static inline float cu_block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = cu_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : -INFINITY;
    return cu_warp_max(r);
}

__device__ static inline float cu_silu(float x) { return x / (1.0f + expf(-x)); }

static inline unsigned cu_blocks(size_t n, unsigned per)
{
    return (unsigned)((n + per - 1) / per);
}

#endif
