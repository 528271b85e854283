/* add.cu — see add.cuh. Grid-stride loops. */
#include "engine/cuda/add.cuh"

#define GRID_LOOP(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ static void add_kernel(float *y, const float *x, size_t n) { GRID_LOOP(i, n) y[i] += x[i]; }
__global__ static void bias_kernel(float *y, const float *b, size_t total, int n) { GRID_LOOP(i, total) y[i] += b[i % n]; }
__global__ static void gate_add_kernel(float *y, const float *x, const float *g, size_t total, int n)
{
    GRID_LOOP(i, total) {
        float gt = 1.0f / (1.0f + expf(-g[i / n]));
        y[i] += gt * x[i];
    }
}
__global__ static void f2bf_kernel(cu_bf16 *out, const float *in, size_t n) { GRID_LOOP(i, n) out[i] = cu_f2bf(in[i]); }

static unsigned grid_of(size_t n)
{
    unsigned b = cu_blocks(n, 256);
    return b > 65535 ? 65535 : b ? b : 1;
}

emoe_status cu_add(cudaStream_t st, float *y, const float *x, size_t n, emoe_err *err)
{
    if (!n) return EMOE_OK;
    CU_LAUNCH(add_kernel, grid_of(n), 256, 0, st, y, x, n);
    CU_LAUNCH_CHECK(err, "add");
    return EMOE_OK;
}

emoe_status cu_bias_add(cudaStream_t st, float *y, const float *b, int rows, int n, emoe_err *err)
{
    size_t total = (size_t)rows * (size_t)n;
    if (!total) return EMOE_OK;
    CU_LAUNCH(bias_kernel, grid_of(total), 256, 0, st, y, b, total, n);
    CU_LAUNCH_CHECK(err, "bias_add");
    return EMOE_OK;
}

emoe_status cu_gate_add(cudaStream_t st, float *y, const float *x, const float *g, int T, int n, emoe_err *err)
{
    size_t total = (size_t)T * (size_t)n;
    if (!total) return EMOE_OK;
    CU_LAUNCH(gate_add_kernel, grid_of(total), 256, 0, st, y, x, g, total, n);
    CU_LAUNCH_CHECK(err, "gate_add");
    return EMOE_OK;
}

emoe_status cu_f32_to_bf16(cudaStream_t st, cu_bf16 *out, const float *in, size_t n, emoe_err *err)
{
    if (!n) return EMOE_OK;
    CU_LAUNCH(f2bf_kernel, grid_of(n), 256, 0, st, out, in, n);
    CU_LAUNCH_CHECK(err, "f32_to_bf16");
    return EMOE_OK;
}
