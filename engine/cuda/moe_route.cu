/* moe_route.cu — see moe_route.cuh. One block: a counting sort of the pairs
 * by expert (dynamic shared memory: count and start per expert), every step
 * deterministic (no atomics), so the grouping equals the host's. */
#include "engine/cuda/moe_route.cuh"

#define ROUTE_THREADS 256

__global__ static void route_plan_kernel(cu_moe_expert *ex, int ex_cap, int *pair_row, int *pair_of, const int *ids,
                                         int P, int k, int E, const cu_bf16 *const *slot_tab, size_t up_off,
                                         size_t down_off, int *flags)
{
    CU_DYN_SHARED(int, sh); /* cnt (E), start (E) */
    __shared__ int n_used;
    int *cnt = sh, *start = sh + E;
    for (int x = threadIdx.x; x < E; x += blockDim.x) {
        int c = 0;
        for (int p = 0; p < P; p++) c += ids[p] == x;
        cnt[x] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int acc = 0, nu = 0;
        for (int x = 0; x < E; x++) { start[x] = acc; acc += cnt[x]; nu += cnt[x] > 0; }
        n_used = nu;
        int bad = 0;
        for (int p = 0; p < P; p++) bad |= ids[p] < 0 || ids[p] >= E;
        if (bad) atomicOr(flags, CU_ROUTE_BAD_ID);
    }
    __syncthreads();
    /* One thread per expert: its pairs in token order, its table entry at its
     * rank among the used experts. */
    for (int x = threadIdx.x; x < E; x += blockDim.x) {
        if (!cnt[x]) continue;
        int at = start[x], rank = 0;
        for (int y = 0; y < x; y++) rank += cnt[y] > 0;
        for (int p = 0; p < P; p++)
            if (ids[p] == x) { pair_row[at] = p / k; pair_of[p] = at; at++; }
        const cu_bf16 *base = slot_tab[x];
        cu_moe_expert e;
        e.start = start[x];
        e.count = base ? cnt[x] : 0;
        e.gate = base;
        e.up = base ? (const cu_bf16 *)((const char *)base + up_off) : NULL;
        e.down = base ? (const cu_bf16 *)((const char *)base + down_off) : NULL;
        if (!base) atomicOr(flags, CU_ROUTE_MISSING);
        ex[rank] = e;
    }
    for (int p = threadIdx.x; p < P; p += blockDim.x)
        if (ids[p] < 0 || ids[p] >= E) pair_of[p] = 0;
    for (int u = n_used + (int)threadIdx.x; u < ex_cap; u += blockDim.x) {
        cu_moe_expert e;
        e.gate = e.up = e.down = NULL;
        e.start = e.count = 0;
        ex[u] = e;
    }
}

emoe_status cu_moe_route_plan(cudaStream_t st, cu_moe_expert *ex, int ex_cap, int *pair_row, int *pair_of,
                              const int *ids, int T, int k, int E, const cu_bf16 *const *slot_tab, size_t up_off,
                              size_t down_off, int *flags, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    if (E <= 0 || (size_t)E * 2 * sizeof(int) > 40 * 1024)
        return emoe_errf(err, EMOE_EUNSUP, "moe route plan: %d experts (max %d)", E, (int)(40 * 1024 / (2 * sizeof(int))));
    CU_LAUNCH(route_plan_kernel, 1, ROUTE_THREADS, (size_t)E * 2 * sizeof(int), st, ex, ex_cap, pair_row, pair_of, ids,
              T * k, k, E, slot_tab, up_off, down_off, flags);
    CU_LAUNCH_CHECK(err, "moe_route_plan");
    return EMOE_OK;
}
