/* rmsnorm.cu — see rmsnorm.cuh. One block per row. */
#include "engine/cuda/rmsnorm.cuh"

__global__ static void rmsnorm_kernel(float *out, const float *x, const int *rowmap, const float *w, int n, float eps)
{
    __shared__ float sh[32];
    int r = blockIdx.x;
    const float *xr = x + (size_t)(rowmap ? rowmap[r] : r) * n;
    float *o = out + (size_t)r * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = cu_block_sum(ss, sh);
    float rs = 1.0f / sqrtf(ss / (float)n + eps);
    /* Each thread rewrites only the elements it read: in place is safe. */
    for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = w[i] * (xr[i] * rs);
}

emoe_status cu_rmsnorm(cudaStream_t st, float *out, const float *x, const int *rowmap, const float *w, int rows, int n,
                       float eps, emoe_err *err)
{
    if (rows <= 0) return EMOE_OK;
    int threads = n >= 1024 ? 256 : n >= 256 ? 128 : 64;
    CU_LAUNCH(rmsnorm_kernel, rows, threads, 0, st, out, x, rowmap, w, n, eps);
    CU_LAUNCH_CHECK(err, "rmsnorm");
    return EMOE_OK;
}
