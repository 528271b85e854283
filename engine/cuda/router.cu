/* router.cu — see router.cuh. One block per token; top-k as k rounds of a
 * block arg-max over the experts not yet taken (k is small). */
#include "engine/cuda/router.cuh"

__global__ static void router_kernel(float *probs, int *ids, float *w, int E, int k, int renorm)
{
    CU_DYN_SHARED(unsigned char, taken); /* (E) */
    __shared__ float sh[32];
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ float picked_w[CU_ROUTER_MAX_K];
    __shared__ int picked_i[CU_ROUTER_MAX_K];
    int t = blockIdx.x, lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    float *p = probs + (size_t)t * E;
    float mx = -INFINITY;
    for (int x = threadIdx.x; x < E; x += blockDim.x) { mx = fmaxf(mx, p[x]); taken[x] = 0; }
    mx = cu_block_max(mx, sh);
    float s = 0.0f;
    for (int x = threadIdx.x; x < E; x += blockDim.x) { float e = expf(p[x] - mx); p[x] = e; s += e; }
    s = cu_block_sum(s, sh);
    for (int x = threadIdx.x; x < E; x += blockDim.x) p[x] = p[x] / s;
    __syncthreads();
    for (int j = 0; j < k; j++) {
        float bv = -INFINITY;
        int bi = 0x7fffffff;
        for (int x = threadIdx.x; x < E; x += blockDim.x) {
            if (taken[x]) continue;
            float v = p[x];
            if (v > bv || (v == bv && x < bi)) { bv = v; bi = x; }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) { sv[wid] = bv; si[wid] = bi; }
        __syncthreads();
        if (threadIdx.x == 0) {
            float b = sv[0];
            int i = si[0];
            for (int q = 1; q < nw; q++)
                if (sv[q] > b || (sv[q] == b && si[q] < i)) { b = sv[q]; i = si[q]; }
            picked_w[j] = b;
            picked_i[j] = i;
            if (i >= 0 && i < E) taken[i] = 1;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float ws = 0.0f;
        for (int j = 0; j < k; j++) ws += picked_w[j];
        for (int j = 0; j < k; j++) {
            ids[(size_t)t * k + j] = picked_i[j];
            w[(size_t)t * k + j] = renorm ? picked_w[j] / ws : picked_w[j];
        }
    }
}

emoe_status cu_router_topk(cudaStream_t st, float *probs, int *ids, float *w, int T, int E, int k, int renorm,
                           emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    if (k < 1 || k > E || k > CU_ROUTER_MAX_K || E > CU_ROUTER_MAX_EXPERTS)
        return emoe_errf(err, EMOE_EUNSUP, "router: top-%d of %d experts is outside the kernel's limits (k <= %d, experts <= %d)",
                         k, E, CU_ROUTER_MAX_K, CU_ROUTER_MAX_EXPERTS);
    int threads = E >= 256 ? 256 : E > 64 ? 128 : 64;
    CU_LAUNCH(router_kernel, T, threads, (size_t)E, st, probs, ids, w, E, k, renorm);
    CU_LAUNCH_CHECK(err, "router_topk");
    return EMOE_OK;
}
