/* rope.cu — see rope.cuh. One block per token row; threads over (head, i). */
#include "engine/cuda/rope.cuh"

__global__ static void rope_kernel(float *v, int n_heads, int hd, int stride, const int *pos, const float *inv_freq)
{
    int t = blockIdx.x, half = hd / 2;
    float p = (float)pos[t];
    float *row = v + (size_t)t * stride;
    for (int j = threadIdx.x; j < n_heads * half; j += blockDim.x) {
        int h = j / half, i = j % half;
        float ang = p * inv_freq[i];
        float c = (float)cos((double)ang), s = (float)sin((double)ang);
        float *x = row + (size_t)h * hd;
        float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c - x2 * s;
        x[i + half] = x2 * c + x1 * s;
    }
}

emoe_status cu_rope(cudaStream_t st, float *v, int T, int n_heads, int hd, int stride, const int *pos,
                    const float *inv_freq, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    if (hd % 2) return emoe_errf(err, EMOE_EUNSUP, "rope: odd head_dim %d", hd);
    CU_LAUNCH(rope_kernel, T, 128, 0, st, v, n_heads, hd, stride, pos, inv_freq);
    CU_LAUNCH_CHECK(err, "rope");
    return EMOE_OK;
}
