/* embed.cuh — embedding gather: out (T, dim) float32 = table[ids[t]] (bf16). */
#ifndef EMOE_CUDA_EMBED_CUH
#define EMOE_CUDA_EMBED_CUH
#include "engine/cuda/common.cuh"

/* table (vocab, dim) bf16; ids (T) device; out (T, dim). An id outside
 * [0, vocab) (eng_step rejects those before) gives a NaN row. */
emoe_status cu_embed(cudaStream_t st, float *out, const cu_bf16 *table, const int32_t *ids, int T, int dim, int vocab,
                     emoe_err *err);
#endif
