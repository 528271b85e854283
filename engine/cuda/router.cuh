/*
 * router.cuh — the MoE router after its logits GEMM: softmax over all experts
 * (float32, max-subtracted), then top-k in descending probability (ties: the
 * lower expert index first, as the CPU reference and torch.topk on distinct
 * values), then optional renormalisation of the k weights to sum 1.
 */
#ifndef EMOE_CUDA_ROUTER_CUH
#define EMOE_CUDA_ROUTER_CUH
#include "engine/cuda/common.cuh"

#define CU_ROUTER_MAX_K 32
#define CU_ROUTER_MAX_EXPERTS 4096

/* probs (T, E): in router logits, out softmax probabilities. ids, w (T, k)
 * out. 1 <= k <= min(E, CU_ROUTER_MAX_K), E <= CU_ROUTER_MAX_EXPERTS. */
emoe_status cu_router_topk(cudaStream_t st, float *probs, int *ids, float *w, int T, int E, int k, int renorm,
                           emoe_err *err);
#endif
