/*
 * attention.cu — see attention.cuh. One block of ATT_WARPS warps per (token,
 * head). Each warp walks a strided subset of the positions with an online
 * softmax (running max m, running sum l, accumulator o of hd floats spread
 * over the lanes), then the warps' partial results are merged. A position's
 * score is a warp-reduced dot product. Works for any context length (no
 * score array), exact float32 (expf, no fast-math).
 */
#include "engine/cuda/attention.cuh"

#define ATT_WARPS 4
#define ATT_PER_LANE (CU_ATT_MAX_HEAD_DIM / 32)

__global__ static void kv_store_kernel(const cu_att_row *rows, int layer, const float *k, const float *v, int kvd)
{
    int t = blockIdx.x;
    cu_att_row r = rows[t];
    float *K = r.kv + ((size_t)layer * 2) * (size_t)r.cap * kvd + (size_t)r.pos * kvd;
    float *V = K + (size_t)r.cap * kvd;
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
        K[i] = k[(size_t)t * kvd + i];
        V[i] = v[(size_t)t * kvd + i];
    }
}

__global__ static void attention_kernel(float *out, const float *q, const cu_att_row *rows, int layer, int n_heads,
                                        int n_kv_heads, int hd)
{
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float so[ATT_WARPS][CU_ATT_MAX_HEAD_DIM];
    int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int grp = n_heads / n_kv_heads, kh = h / grp, kvd = n_kv_heads * hd, qd = n_heads * hd;
    cu_att_row r = rows[t];
    const float *K = r.kv + ((size_t)layer * 2) * (size_t)r.cap * kvd + (size_t)kh * hd;
    const float *V = K + (size_t)r.cap * kvd;
    const float *qh = q + (size_t)t * qd + (size_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    float qr[ATT_PER_LANE], o[ATT_PER_LANE];
#pragma unroll
    for (int c = 0; c < ATT_PER_LANE; c++) {
        int i = lane + 32 * c;
        qr[c] = i < hd ? qh[i] : 0.0f;
        o[c] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = w; j <= r.pos; j += ATT_WARPS) {
        const float *kj = K + (size_t)j * kvd;
        float part = 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_PER_LANE; c++) {
            int i = lane + 32 * c;
            if (i < hd) part += qr[c] * kj[i];
        }
        float s = cu_warp_sum(part) * scale;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn); /* m = -inf on the first position: exp(-inf) = 0 */
        float p = expf(s - mn);
        l = l * corr + p;
        const float *vj = V + (size_t)j * kvd;
#pragma unroll
        for (int c = 0; c < ATT_PER_LANE; c++) {
            int i = lane + 32 * c;
            if (i < hd) o[c] = o[c] * corr + p * vj[i];
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
    /* Merge: warp 0 always saw position 0, so M is finite. */
    float M = sm[0];
    for (int q2 = 1; q2 < ATT_WARPS; q2++) M = fmaxf(M, sm[q2]);
    float L = 0.0f, f[ATT_WARPS];
    for (int q2 = 0; q2 < ATT_WARPS; q2++) {
        f[q2] = sl[q2] > 0.0f ? expf(sm[q2] - M) : 0.0f;
        L += sl[q2] * f[q2];
    }
    float *oh = out + (size_t)t * qd + (size_t)h * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.0f;
        for (int q2 = 0; q2 < ATT_WARPS; q2++) acc += so[q2][i] * f[q2];
        oh[i] = acc / L;
    }
}

emoe_status cu_kv_store(cudaStream_t st, const cu_att_row *rows, int T, int layer, const float *k, const float *v,
                        int kvd, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    CU_LAUNCH(kv_store_kernel, T, 128, 0, st, rows, layer, k, v, kvd);
    CU_LAUNCH_CHECK(err, "kv_store");
    return EMOE_OK;
}

emoe_status cu_attention(cudaStream_t st, float *out, const float *q, const cu_att_row *rows, int T, int layer,
                         int n_heads, int n_kv_heads, int hd, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    if (hd <= 0 || hd > CU_ATT_MAX_HEAD_DIM || n_kv_heads <= 0 || n_heads % n_kv_heads)
        return emoe_errf(err, EMOE_EUNSUP, "attention: head_dim %d (max %d) / heads %d / kv heads %d not supported", hd,
                         CU_ATT_MAX_HEAD_DIM, n_heads, n_kv_heads);
    if (n_heads > 65535) return emoe_errf(err, EMOE_EUNSUP, "attention: %d heads", n_heads);
    dim3 grid((unsigned)T, (unsigned)n_heads);
    CU_LAUNCH(attention_kernel, grid, ATT_WARPS * 32, 0, st, out, q, rows, layer, n_heads, n_kv_heads, hd);
    CU_LAUNCH_CHECK(err, "attention");
    return EMOE_OK;
}
