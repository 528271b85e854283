/* swiglu.cu — see swiglu.cuh. */
#include "engine/cuda/swiglu.cuh"

__global__ static void swiglu_kernel(float *g, const float *u, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        g[i] = cu_silu(g[i]) * u[i];
}

emoe_status cu_swiglu(cudaStream_t st, float *g, const float *u, size_t n, emoe_err *err)
{
    if (!n) return EMOE_OK;
    unsigned b = cu_blocks(n, 256);
    if (b > 65535) b = 65535;
    CU_LAUNCH(swiglu_kernel, b, 256, 0, st, g, u, n);
    CU_LAUNCH_CHECK(err, "swiglu");
    return EMOE_OK;
}
