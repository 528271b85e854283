/*
 * attention.cu — see attention.cuh. One block of ATT_WARPS warps per (token,
 * head, slice of positions). Each warp walks a strided subset of the slice's
 * positions with an online softmax (running max m, running sum l, accumulator
 * o of hd floats spread over the lanes), then the warps' partial results are
 * merged; with several slices a second kernel merges the slices' partials the
 * same way. A position's score is a warp-reduced dot product. Works for any
 * context length (no score array), exact float32 arithmetic (expf, no
 * fast-math) on float32 or bf16 KV elements.
 */
#include "engine/cuda/attention.cuh"

#define ATT_WARPS 4
#define ATT_PER_LANE (CU_ATT_MAX_HEAD_DIM / 32)

__device__ static inline float kv_ld(const float *p) { return *p; }
__device__ static inline float kv_ld(const cu_bf16 *p) { return cu_bf2f(*p); }
__device__ static inline void kv_st(float *p, float v) { *p = v; }
__device__ static inline void kv_st(cu_bf16 *p, float v) { *p = cu_f2bf(v); }

template <typename KT>
__global__ static void kv_store_kernel(const cu_att_row *rows, int layer, const float *k, const float *v, int kvd)
{
    int t = blockIdx.x;
    cu_att_row r = rows[t];
    KT *K = (KT *)r.kv + ((size_t)layer * 2) * (size_t)r.cap * kvd + (size_t)r.pos * kvd;
    KT *V = K + (size_t)r.cap * kvd;
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
        kv_st(K + i, k[(size_t)t * kvd + i]);
        kv_st(V + i, v[(size_t)t * kvd + i]);
    }
}

/* part == NULL: out gets the normalised result of all positions (gridDim.z
 * is 1). Else slice blockIdx.z of gridDim.z writes its partial to part:
 * [(t*H + h)*S + s] * (hd + 2): o[hd], m, l. */
template <typename KT>
__global__ static void attention_kernel(float *out, float *part, const float *q, const cu_att_row *rows, int layer,
                                        int n_heads, int n_kv_heads, int hd)
{
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float so[ATT_WARPS][CU_ATT_MAX_HEAD_DIM];
    int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int grp = n_heads / n_kv_heads, kh = h / grp, kvd = n_kv_heads * hd, qd = n_heads * hd;
    cu_att_row r = rows[t];
    const KT *K = (const KT *)r.kv + ((size_t)layer * 2) * (size_t)r.cap * kvd + (size_t)kh * hd;
    const KT *V = K + (size_t)r.cap * kvd;
    const float *qh = q + (size_t)t * qd + (size_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    int n = r.pos + 1, S = (int)gridDim.z, len = (n + S - 1) / S;
    int j0 = (int)blockIdx.z * len, j1 = min(n, j0 + len);
    float qr[ATT_PER_LANE], o[ATT_PER_LANE];
#pragma unroll
    for (int c = 0; c < ATT_PER_LANE; c++) {
        int i = lane + 32 * c;
        qr[c] = i < hd ? qh[i] : 0.0f;
        o[c] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = j0 + w; j < j1; j += ATT_WARPS) {
        const KT *kj = K + (size_t)j * kvd;
        float part_s = 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_PER_LANE; c++) {
            int i = lane + 32 * c;
            if (i < hd) part_s += qr[c] * kv_ld(kj + i);
        }
        float s = cu_warp_sum(part_s) * scale;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn); /* m = -inf on the first position: exp(-inf) = 0 */
        float p = expf(s - mn);
        l = l * corr + p;
        const KT *vj = V + (size_t)j * kvd;
#pragma unroll
        for (int c = 0; c < ATT_PER_LANE; c++) {
            int i = lane + 32 * c;
            if (i < hd) o[c] = o[c] * corr + p * kv_ld(vj + i);
        }
        m = mn;
    }
    if (lane == 0) { sm[w] = m; sl[w] = l; }
#pragma unroll
    for (int c = 0; c < ATT_PER_LANE; c++) {
        int i = lane + 32 * c;
        if (i < hd) so[w][i] = o[c];
    }
    __syncthreads();
    /* Merge the warps. Without slices warp 0 saw position 0, so M is finite;
     * an empty slice (or warp) has l = 0 and weight 0. */
    float M = -INFINITY;
    for (int q2 = 0; q2 < ATT_WARPS; q2++)
        if (sl[q2] > 0.0f) M = fmaxf(M, sm[q2]);
    float L = 0.0f, f[ATT_WARPS];
    for (int q2 = 0; q2 < ATT_WARPS; q2++) {
        f[q2] = sl[q2] > 0.0f ? expf(sm[q2] - M) : 0.0f;
        L += sl[q2] * f[q2];
    }
    if (!part) {
        float *oh = out + (size_t)t * qd + (size_t)h * hd;
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            float acc = 0.0f;
            for (int q2 = 0; q2 < ATT_WARPS; q2++) acc += so[q2][i] * f[q2];
            oh[i] = acc / L;
        }
        return;
    }
    float *ph = part + (((size_t)t * n_heads + h) * gridDim.z + blockIdx.z) * (size_t)(hd + 2);
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.0f;
        for (int q2 = 0; q2 < ATT_WARPS; q2++) acc += so[q2][i] * f[q2];
        ph[i] = acc;
    }
    if (threadIdx.x == 0) { ph[hd] = M; ph[hd + 1] = L; }
}

/* Merges the S slices of (t, h): slice 0 is never empty (it holds position 0). */
__global__ static void attention_merge_kernel(float *out, const float *part, int n_heads, int hd, int S)
{
    int t = blockIdx.x, h = blockIdx.y, qd = n_heads * hd;
    const float *p0 = part + ((size_t)t * n_heads + h) * (size_t)S * (size_t)(hd + 2);
    float M = -INFINITY, L = 0.0f;
    for (int s = 0; s < S; s++) {
        const float *ps = p0 + (size_t)s * (hd + 2);
        if (ps[hd + 1] > 0.0f) M = fmaxf(M, ps[hd]);
    }
    for (int s = 0; s < S; s++) {
        const float *ps = p0 + (size_t)s * (hd + 2);
        if (ps[hd + 1] > 0.0f) L += ps[hd + 1] * expf(ps[hd] - M);
    }
    float *oh = out + (size_t)t * qd + (size_t)h * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < S; s++) {
            const float *ps = p0 + (size_t)s * (hd + 2);
            if (ps[hd + 1] > 0.0f) acc += ps[i] * expf(ps[hd] - M);
        }
        oh[i] = acc / L;
    }
}

int cu_att_splits(int T, int n_heads)
{
    if (T <= 0 || T > 32 || n_heads <= 0) return 1;
    int s = (264 + T * n_heads - 1) / (T * n_heads);
    return s < 1 ? 1 : s > CU_ATT_MAX_SPLITS ? CU_ATT_MAX_SPLITS : s;
}

emoe_status cu_kv_store(cudaStream_t st, const cu_att_row *rows, int T, int layer, const float *k, const float *v,
                        int kvd, int kv_bf16, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    if (kv_bf16) CU_LAUNCH(kv_store_kernel<cu_bf16>, T, 128, 0, st, rows, layer, k, v, kvd);
    else CU_LAUNCH(kv_store_kernel<float>, T, 128, 0, st, rows, layer, k, v, kvd);
    CU_LAUNCH_CHECK(err, "kv_store");
    return EMOE_OK;
}

emoe_status cu_attention(cudaStream_t st, float *out, const float *q, const cu_att_row *rows, int T, int layer,
                         int n_heads, int n_kv_heads, int hd, int kv_bf16, int splits, float *part, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    if (hd <= 0 || hd > CU_ATT_MAX_HEAD_DIM || n_kv_heads <= 0 || n_heads % n_kv_heads)
        return emoe_errf(err, EMOE_EUNSUP, "attention: head_dim %d (max %d) / heads %d / kv heads %d not supported", hd,
                         CU_ATT_MAX_HEAD_DIM, n_heads, n_kv_heads);
    if (n_heads > 65535) return emoe_errf(err, EMOE_EUNSUP, "attention: %d heads", n_heads);
    if (splits < 1 || splits > CU_ATT_MAX_SPLITS || (splits > 1 && !part))
        return emoe_errf(err, EMOE_EINVAL, "attention: %d KV splits (1..%d, > 1 needs a partials buffer)", splits, CU_ATT_MAX_SPLITS);
    float *pp = splits > 1 ? part : NULL;
    dim3 grid((unsigned)T, (unsigned)n_heads, (unsigned)splits);
    if (kv_bf16) CU_LAUNCH(attention_kernel<cu_bf16>, grid, ATT_WARPS * 32, 0, st, out, pp, q, rows, layer, n_heads, n_kv_heads, hd);
    else CU_LAUNCH(attention_kernel<float>, grid, ATT_WARPS * 32, 0, st, out, pp, q, rows, layer, n_heads, n_kv_heads, hd);
    CU_LAUNCH_CHECK(err, "attention");
    if (splits > 1) {
        CU_LAUNCH(attention_merge_kernel, dim3((unsigned)T, (unsigned)n_heads), 128, 0, st, out, (const float *)part, n_heads,
                  hd, splits);
        CU_LAUNCH_CHECK(err, "attention_merge");
    }
    return EMOE_OK;
}
