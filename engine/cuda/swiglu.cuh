/* swiglu.cuh — g = silu(g) * u elementwise (silu(x) = x / (1 + exp(-x))), the
 * activation of the shared expert (the routed experts fuse it, moe.cuh). */
#ifndef EMOE_CUDA_SWIGLU_CUH
#define EMOE_CUDA_SWIGLU_CUH
#include "engine/cuda/common.cuh"

emoe_status cu_swiglu(cudaStream_t st, float *g, const float *u, size_t n, emoe_err *err);
#endif
