/*
 * moe_quant.cuh — the routed experts of one layer, grouped, with q8/q4 expert
 * weights (docs/quant.md): the same contract as moe.cuh's cu_moe_gate_up and
 * cu_moe_down (one launch per matrix per layer, the same cu_moe_expert table,
 * pair layout and empty entries), but the table's gate/up/down pointers point
 * at rows of quantized blocks (engine/quant.h: a row of K weights is
 * ceil(K/32) blocks, q8 {f16 d; int8 qs[32]} 34 bytes, q4 {f16 d; uint8
 * qs[16]} 18 bytes, rows back to back), as a quantized expert store's extent
 * holds them: gate (ffn rows of dim) | up (ffn rows of dim) | down (dim rows
 * of ffn). Activations float32 (no q8a rounding), float32 accumulation, the
 * block arithmetic of quant_kernels.cu (each lane one 32-weight block, then a
 * warp sum), SiLU(gate) * up fused into the gate/up launch.
 */
#ifndef EMOE_CUDA_MOE_QUANT_CUH
#define EMOE_CUDA_MOE_QUANT_CUH
#include "engine/cuda/common.cuh"
#include "engine/cuda/moe.cuh"

/* Bytes of one quantized row of k weights (fmt 1 = q8, 2 = q4; 0 otherwise),
 * engine/quant.h's quant_row_bytes. */
static inline size_t cu_quant_row_bytes(int fmt, int k)
{
    size_t nb = ((size_t)k + 31) / 32;
    return fmt == 1 ? nb * 34 : fmt == 2 ? nb * 18 : 0;
}

/* hmid (P, ffn) = silu(x[pair_row[p]] . gate^T) * (x[pair_row[p]] . up^T). */
emoe_status cu_moe_gate_up_q(cudaStream_t st, float *hmid, const float *x, const int *pair_row, const cu_moe_expert *ex,
                             int n_ex, int dim, int ffn, int fmt, emoe_err *err);
/* eo (P, dim) = hmid[p] . down^T. */
emoe_status cu_moe_down_q(cudaStream_t st, float *eo, const float *hmid, const cu_moe_expert *ex, int n_ex, int dim,
                          int ffn, int fmt, emoe_err *err);
#endif
