/*
 * cuda_emu.h — a CPU emulation of the parts of the CUDA programming model and
 * runtime/cuBLAS API that emoe's CUDA backend uses, so the backend's kernels
 * and host code can be *executed* (and tested against the CPU reference) on a
 * machine without a GPU. Build with -DEMOE_CUDA_EMU and a C++ compiler
 * (make test-gpu-emu).
 *
 * Model: a launch runs its blocks one after another; the threads of a block
 * are coroutines on one OS thread (own stacks, a small assembly context switch,
 * x86-64 only), switched only at __syncthreads() and warp shuffles, which are
 * real barriers (block-wide / per warp of 32). A barrier that cannot complete
 * (divergent __syncthreads, shuffles with lanes elsewhere) aborts with a
 * message. __shared__ variables are static storage (blocks never overlap),
 * poisoned (0xFF) at every block start, dynamic shared memory too. Blocks run
 * in a random order and the threads of a block resume in a random order at
 * every round (seed: $EMOE_EMU_SEED, default 1; printed when set), so a
 * kernel that depends on block order or misses a __syncthreads shows.
 * Streams are deferred queues honouring events (see cuda_emu.cc: work runs
 * only when and as far as the host demands, so a missing event wait shows);
 * device memory is host memory.
 * cublasGemmEx is a plain column-major GEMM with float accumulation.
 *
 * What it cannot show: timing, races between blocks, memory-model and
 * coalescing effects, real launch limits beyond the ones checked, tensor-core
 * numerics, asynchronous copy overlap. It executes the same code paths.
 */
#ifndef EMOE_CUDA_EMU_H
#define EMOE_CUDA_EMU_H

#include <functional>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
/* __shared__ variables are static storage in one linker section, so the
 * emulator can poison all of them (0xFF bytes: NaN floats, -1 ints) at the
 * start of every block: a read before the block's own write shows. */
#define __shared__ static __attribute__((section("emu_shared"), aligned(16)))
#define __forceinline__ inline

struct emu_uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };

extern emu_uint3 emu_threadIdx, emu_blockIdx;
extern dim3 emu_blockDim, emu_gridDim;
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
#define blockDim emu_blockDim
#define gridDim emu_gridDim

void __syncthreads(void);
float __shfl_xor_sync(unsigned mask, float v, int lane_mask);
int __shfl_xor_sync(unsigned mask, int v, int lane_mask);
static inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline int min(int a, int b) { return a < b ? a : b; }
/* Threads of a block never run at once here: a plain read-modify-write. */
static inline int atomicOr(int *p, int v) { int o = *p; *p = o | v; return o; }

typedef struct emu_stream *cudaStream_t;
/* Runs a launch now (all blocks). */
void emu_launch(dim3 grid, dim3 block, size_t shmem, const std::function<void()> &fn);
/* Checks the configuration now, queues the launch on the stream. */
void emu_launch_on(cudaStream_t s, dim3 grid, dim3 block, size_t shmem, std::function<void()> fn);
/* The kernel's arguments are evaluated at the launch, as CUDA does. */
template <class K, class... A> static inline std::function<void()> emu_bind_args(K k, A... a)
{
    return [k, a...]() { k(a...); };
}
void *emu_dyn_shared(void);
#define CU_LAUNCH(kernel, grid, block, shmem, stream, ...) \
    emu_launch_on((stream), dim3(grid), dim3(block), (shmem), emu_bind_args(kernel, __VA_ARGS__))
#define CU_DYN_SHARED(type, name) type *name = (type *)emu_dyn_shared()

/* ---- runtime ---- */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureWrongThread = 908,
} cudaError_t;
typedef struct emu_event *cudaEvent_t;
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
#define cudaStreamNonBlocking 1u
#define cudaEventDisableTiming 2u
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
};

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaFreeHost(void *p);
#define cudaHostRegisterDefault 0u
cudaError_t cudaHostRegister(void *p, size_t n, unsigned flags);
cudaError_t cudaHostUnregister(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
/* Stream capture and graphs: while a stream captures, work queued on it is
 * recorded instead of queued (kernel arguments, copy pointers and cuBLAS
 * scalars fixed at capture, as in CUDA); a launch of the instantiated graph
 * queues the recorded work on the launch stream (deferred like any work).
 * Synchronising a capturing stream and pageable copies on it are errors that
 * invalidate the capture, as in CUDA; event records/waits on a capturing
 * stream are refused too (legal in CUDA; the backend uses none there). */
typedef struct emu_graph *cudaGraph_t;
typedef struct emu_graph *cudaGraphExec_t;
typedef enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
} cudaStreamCaptureMode;
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x);
/* Test hook: bytes of cudaMemcpyAsync host->device from pageable memory so far
 * (CUDA stages those through a pinned buffer of its own: a second copy). */
uint64_t emu_pageable_h2d_bytes(void);
/* Test hook: graph launches so far. */
uint64_t emu_graph_launch_count(void);

template <class T> static inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }

/* Test hook: the next n-th cudaMalloc from now fails (0 = off). */
void emu_fail_malloc_after(int n);
/* Number of launches so far (for tests of launch counts). */
uint64_t emu_launch_count(void);

/* ---- cuBLAS ---- */
typedef struct emu_blas *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t comp,
                            cublasGemmAlgo_t algo);
const char *cublasGetStatusName(cublasStatus_t s);
const char *cublasGetStatusString(cublasStatus_t s);

#endif
