/*
 * moe_route.cuh — device-side grouping of a layer's routing (issue 12): the
 * top-k expert ids written by cu_router_topk stay on the device; this kernel
 * groups the (token, pick) pairs per expert exactly as the host's
 * eng_moe_plan_build does (experts ascending, pairs in token order within an
 * expert) and fills the grouped MoE kernels' table from a device table
 * expert -> slot (the layer's row of the backend's expert -> slot table, a
 * slot being one expert's [gate | up | down], bf16 or quantized rows). No host round trip: with
 * every expert resident a layer needs no host synchronisation.
 *
 * The table ex has ex_cap = min(E, T*k) entries: the used experts first, then
 * entries with count 0 (the grouped kernels launch ex_cap blocks in y and the
 * empty ones return at once). Errors are flags in *flags (read by the host
 * once per step): bit 0 a used expert without a slot (its pairs are skipped),
 * bit 1 an expert id outside [0, E) (non-finite router logits; the pair is
 * sent to pair 0 so nothing reads out of bounds).
 */
#ifndef EMOE_CUDA_MOE_ROUTE_CUH
#define EMOE_CUDA_MOE_ROUTE_CUH
#include "engine/cuda/common.cuh"
#include "engine/cuda/moe.cuh"

#define CU_ROUTE_MISSING 1
#define CU_ROUTE_BAD_ID 2

/* ids (T*k) device; slot_tab (E) device pointers (NULL: not resident); ex
 * (ex_cap), pair_row (T*k), pair_of (T*k) out; flags: OR-ed, never cleared here.
 * A slot is gate at its base, up at base + up_off bytes, down at base +
 * down_off bytes (bf16: ffn*dim*2 and 2*ffn*dim*2; a quantized extent:
 * ffn rows of dim and 2*ffn rows of dim, moe_quant.cuh).
 * E <= CU_ROUTER_MAX_EXPERTS (router.cuh). */
emoe_status cu_moe_route_plan(cudaStream_t st, cu_moe_expert *ex, int ex_cap, int *pair_row, int *pair_of,
                              const int *ids, int T, int k, int E, const cu_bf16 *const *slot_tab, size_t up_off,
                              size_t down_off, int *flags, emoe_err *err);
#endif
