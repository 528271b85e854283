/* embed.cu — see embed.cuh. */
#include "engine/cuda/embed.cuh"

__global__ static void embed_kernel(float *out, const cu_bf16 *table, const int32_t *ids, int dim, int vocab)
{
    int t = blockIdx.x;
    int id = ids[t];
    float *o = out + (size_t)t * dim;
    if (id < 0 || id >= vocab) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = NAN;
        return;
    }
    const cu_bf16 *row = table + (size_t)id * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = cu_bf2f(row[i]);
}

emoe_status cu_embed(cudaStream_t st, float *out, const cu_bf16 *table, const int32_t *ids, int T, int dim, int vocab,
                     emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    CU_LAUNCH(embed_kernel, T, 256, 0, st, out, table, ids, dim, vocab);
    CU_LAUNCH_CHECK(err, "embed");
    return EMOE_OK;
}
