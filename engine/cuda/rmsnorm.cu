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

__global__ static void add_rmsnorm_kernel(float *x, const float *a, float *out, const float *w, int n, float eps)
{
    __shared__ float sh[32];
    int r = blockIdx.x;
    float *xr = x + (size_t)r * n;
    const float *ar = a + (size_t)r * n;
    float *o = out + (size_t)r * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i] + ar[i];
        xr[i] = v;
        ss += v * v;
    }
    ss = cu_block_sum(ss, sh);
    float rs = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = w[i] * (xr[i] * rs);
}

int cu_rmsnorm_threads(int n) { return n >= 1024 ? 256 : n >= 256 ? 128 : 64; }

emoe_status cu_add_rmsnorm(cudaStream_t st, float *x, const float *a, float *out, const float *w, int rows, int n, float eps,
                           emoe_err *err)
{
    if (rows <= 0) return EMOE_OK;
    CU_LAUNCH(add_rmsnorm_kernel, rows, cu_rmsnorm_threads(n), 0, st, x, a, out, w, n, eps);
    CU_LAUNCH_CHECK(err, "add_rmsnorm");
    return EMOE_OK;
}

emoe_status cu_rmsnorm(cudaStream_t st, float *out, const float *x, const int *rowmap, const float *w, int rows, int n,
                       float eps, emoe_err *err)
{
    if (rows <= 0) return EMOE_OK;
    int threads = cu_rmsnorm_threads(n);
    CU_LAUNCH(rmsnorm_kernel, rows, threads, 0, st, out, x, rowmap, w, n, eps);
    CU_LAUNCH_CHECK(err, "rmsnorm");
    return EMOE_OK;
}
