/*
 * moe.cuh — the routed experts of one layer, grouped: every (token, pick) pair
 * of the step is computed in one launch per matrix, whatever the number of
 * experts used. The kernels read each expert's weight pointers from a device
 * table (cu_moe_expert, filled from the GPU expert cache's slot table), so a
 * layer costs two launches (gate+up fused with SiLU, then down) plus one for
 * the weighted combine, not one cuBLAS call per expert per matrix.
 *
 * The pairs are grouped per expert on the host (engine/moe_plan.h), or on
 * the device in the same order (moe_route.cuh, with an entry of count 0 for
 * every unused table slot: such blocks return at once): pairs
 * [start, start+count) belong to one expert; pair_row gives each pair's token
 * row. Within an expert, tokens are processed in chunks of CU_MOE_CHUNK so a
 * weight row is read once per chunk (decode: once).
 */
#ifndef EMOE_CUDA_MOE_CUH
#define EMOE_CUDA_MOE_CUH
#include "engine/cuda/common.cuh"

#define CU_MOE_CHUNK 8

typedef struct cu_moe_expert {
    const cu_bf16 *gate;  /* (ffn, dim) */
    const cu_bf16 *up;    /* (ffn, dim) */
    const cu_bf16 *down;  /* (dim, ffn) */
    int start, count;     /* its pairs in the grouped order */
} cu_moe_expert;

/* hmid (P, ffn) for the pairs of the n_ex experts in ex (device table):
 * hmid[p] = silu(x[pair_row[p]] . gate^T) * (x[pair_row[p]] . up^T). x (T, dim). */
emoe_status cu_moe_gate_up(cudaStream_t st, float *hmid, const float *x, const int *pair_row, const cu_moe_expert *ex,
                           int n_ex, int dim, int ffn, emoe_err *err);
/* eo (P, dim): eo[p] = hmid[p] . down^T, for the pairs of the experts in ex. */
emoe_status cu_moe_down(cudaStream_t st, float *eo, const float *hmid, const cu_moe_expert *ex, int n_ex, int dim,
                        int ffn, emoe_err *err);
/* out (T, dim) = sum_j w[t*k+j] * eo[pair_of[t*k+j]] (overwrites out). */
emoe_status cu_moe_combine(cudaStream_t st, float *out, const float *eo, const int *pair_of, const float *w, int T,
                           int k, int dim, emoe_err *err);
/* Fused weighted combine + shared expert gate + residual (+ the next RMSNorm)
 * (issue 12): x (T, dim) += m, m = sum_j w[t*k+j] * eo[pair_of[t*k+j]] +
 * (sh ? sigmoid(g[t]) * sh[t] : 0), with exactly the arithmetic of
 * cu_moe_combine, cu_gate_add, cu_add in turn; then, when nw is given,
 * h = RMSNorm(x) * nw bitwise as cu_rmsnorm computes it (the next layer's
 * attention norm). */
emoe_status cu_moe_combine_residual(cudaStream_t st, float *x, const float *eo, const int *pair_of, const float *w,
                                    const float *sh, const float *g, float *h, const float *nw, float eps, int T, int k,
                                    int dim, emoe_err *err);
#endif
