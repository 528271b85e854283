/* qk_rope_kv.cu — see qk_rope_kv.cuh. One block per token row. */
#include "engine/cuda/qk_rope_kv.cuh"

#define QRK_THREADS 256
#define QRK_MAX_HEADS 512 /* q heads + kv heads per row with per-head norms */

__device__ static inline void st_kv(float *p, float x) { *p = x; }
__device__ static inline void st_kv(cu_bf16 *p, float x) { *p = cu_f2bf(x); }

template <typename KT>
__global__ static void qk_rope_kv_kernel(float *q, const float *k, const float *v, int n_heads, int n_kv_heads, int hd,
                                         int norm, const float *q_norm, const float *k_norm, float eps, const int *pos,
                                         const float *inv_freq, const cu_att_row *rows, int layer)
{
    __shared__ float sh[32];
    __shared__ float rs[QRK_MAX_HEADS]; /* per head: q heads, then k heads */
    int t = blockIdx.x, half = hd / 2, qd = n_heads * hd, kvd = n_kv_heads * hd, H = n_heads + n_kv_heads;
    float *qr = q + (size_t)t * qd;
    const float *kr = k + (size_t)t * kvd, *vr = v + (size_t)t * kvd;
    /* 1. the norms' scales (every sum before any write: q is rewritten in place) */
    float rq = 1.0f, rk = 1.0f;
    if (norm == 2) {
        float a = 0.0f, b = 0.0f;
        for (int i = threadIdx.x; i < qd; i += blockDim.x) a += qr[i] * qr[i];
        for (int i = threadIdx.x; i < kvd; i += blockDim.x) b += kr[i] * kr[i];
        a = cu_block_sum(a, sh);
        b = cu_block_sum(b, sh);
        rq = 1.0f / sqrtf(a / (float)qd + eps);
        rk = 1.0f / sqrtf(b / (float)kvd + eps);
    } else if (norm == 1) {
        int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
        for (int h = w; h < H; h += nw) { /* warp-uniform loop: the shuffles stay converged */
            const float *x = h < n_heads ? qr + (size_t)h * hd : kr + (size_t)(h - n_heads) * hd;
            float a = 0.0f;
            for (int i = lane; i < hd; i += 32) a += x[i] * x[i];
            a = cu_warp_sum(a);
            if (lane == 0) rs[h] = 1.0f / sqrtf(a / (float)hd + eps);
        }
        __syncthreads();
    }
    /* 2. norm + rope per (head, i < hd/2); k and v into the KV cache */
    cu_att_row r = rows[t];
    KT *K = (KT *)r.kv + ((size_t)layer * 2) * (size_t)r.cap * kvd + (size_t)r.pos * kvd;
    KT *V = K + (size_t)r.cap * kvd;
    float p = (float)pos[t];
    for (int j = threadIdx.x; j < H * half; j += blockDim.x) {
        int h = j / half, i = j % half, isk = h >= n_heads, hh = isk ? h - n_heads : h;
        const float *x = isk ? kr + (size_t)hh * hd : qr + (size_t)hh * hd;
        float x1 = x[i], x2 = x[i + half];
        if (norm) {
            const float *nwt = isk ? k_norm : q_norm;
            float s = norm == 1 ? rs[h] : isk ? rk : rq;
            float w1 = norm == 1 ? nwt[i] : nwt[(size_t)hh * hd + i], w2 = norm == 1 ? nwt[i + half] : nwt[(size_t)hh * hd + i + half];
            x1 = w1 * (x1 * s);
            x2 = w2 * (x2 * s);
        }
        float ang = p * inv_freq[i];
        float c = (float)cos((double)ang), sn = (float)sin((double)ang);
        float o1 = x1 * c - x2 * sn, o2 = x2 * c + x1 * sn;
        if (isk) {
            st_kv(K + (size_t)hh * hd + i, o1);
            st_kv(K + (size_t)hh * hd + i + half, o2);
        } else {
            qr[(size_t)hh * hd + i] = o1;
            qr[(size_t)hh * hd + i + half] = o2;
        }
    }
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) st_kv(V + i, vr[i]);
}

emoe_status cu_qk_rope_kv(cudaStream_t st, float *q, const float *k, const float *v, int T, int n_heads, int n_kv_heads,
                          int hd, int norm, const float *q_norm, const float *k_norm, float eps, const int *pos,
                          const float *inv_freq, const cu_att_row *rows, int layer, int kv_bf16, emoe_err *err)
{
    if (T <= 0) return EMOE_OK;
    if (hd % 2 || norm < 0 || norm > 2 || (norm && (!q_norm || !k_norm)) || (norm == 1 && n_heads + n_kv_heads > QRK_MAX_HEADS))
        return emoe_errf(err, EMOE_EUNSUP, "qk_rope_kv: head_dim %d, norm %d, %d + %d heads not supported", hd, norm, n_heads,
                         n_kv_heads);
    if (kv_bf16)
        CU_LAUNCH(qk_rope_kv_kernel<cu_bf16>, T, QRK_THREADS, 0, st, q, k, v, n_heads, n_kv_heads, hd, norm, q_norm, k_norm, eps,
                  pos, inv_freq, rows, layer);
    else
        CU_LAUNCH(qk_rope_kv_kernel<float>, T, QRK_THREADS, 0, st, q, k, v, n_heads, n_kv_heads, hd, norm, q_norm, k_norm, eps,
                  pos, inv_freq, rows, layer);
    CU_LAUNCH_CHECK(err, "qk_rope_kv");
    return EMOE_OK;
}
