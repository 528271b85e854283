/*
 * quant_dot.c — dot products of q8/q4 rows (quant.h) with float or q8a
 * activations: a portable scalar variant and an AVX2+FMA+F16C variant picked
 * at run time (__builtin_cpu_supports), and the quantized matmul the forward
 * pass calls for quantized expert views. No -ffast-math: the scalar variant's
 * float sums have a fixed order, so each variant is deterministic.
 */
#include "engine/quant.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "engine/tensor.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---- scalar -------------------------------------------------------------- */

static float s_dot_q8_f32(const void *wv, const float *x, int k)
{
    const quant_block_q8 *w = wv;
    float acc = 0;
    int nb = (int)quant_blocks(k);
    for (int b = 0; b < nb; b++) {
        int n = k - b * QUANT_BLOCK < QUANT_BLOCK ? k - b * QUANT_BLOCK : QUANT_BLOCK;
        const float *xb = x + b * QUANT_BLOCK;
        float s[4] = {0, 0, 0, 0};
        int i = 0;
        for (; i + 4 <= n; i += 4)
            for (int j = 0; j < 4; j++) s[j] += (float)w[b].qs[i + j] * xb[i + j];
        float t = (s[0] + s[1]) + (s[2] + s[3]);
        for (; i < n; i++) t += (float)w[b].qs[i] * xb[i];
        acc += eng_f16_to_f32(w[b].d) * t;
    }
    return acc;
}

static float s_dot_q4_f32(const void *wv, const float *x, int k)
{
    const quant_block_q4 *w = wv;
    float acc = 0;
    int nb = (int)quant_blocks(k);
    for (int b = 0; b < nb; b++) {
        int n = k - b * QUANT_BLOCK < QUANT_BLOCK ? k - b * QUANT_BLOCK : QUANT_BLOCK;
        const float *xb = x + b * QUANT_BLOCK;
        float t = 0;
        for (int i = 0; i < n; i++) {
            int q = i < 16 ? (w[b].qs[i] & 0xf) : (w[b].qs[i - 16] >> 4);
            t += (float)(q - 8) * xb[i];
        }
        acc += eng_f16_to_f32(w[b].d) * t;
    }
    return acc;
}

static float s_dot_q8_q8a(const void *wv, const quant_block_q8a *x, int nb)
{
    const quant_block_q8 *w = wv;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        int32_t s = 0;
        for (int i = 0; i < QUANT_BLOCK; i++) s += (int32_t)w[b].qs[i] * (int32_t)x[b].qs[i];
        acc += eng_f16_to_f32(w[b].d) * x[b].d * (float)s;
    }
    return acc;
}

static float s_dot_q4_q8a(const void *wv, const quant_block_q8a *x, int nb)
{
    const quant_block_q4 *w = wv;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        int32_t s = 0;
        for (int i = 0; i < 16; i++) {
            s += ((int32_t)(w[b].qs[i] & 0xf) - 8) * (int32_t)x[b].qs[i];
            s += ((int32_t)(w[b].qs[i] >> 4) - 8) * (int32_t)x[b].qs[i + 16];
        }
        acc += eng_f16_to_f32(w[b].d) * x[b].d * (float)s;
    }
    return acc;
}

static const quant_kernels k_scalar = {
    "scalar",
    {NULL, s_dot_q8_f32, s_dot_q4_f32},
    {NULL, s_dot_q8_q8a, s_dot_q4_q8a},
};

/* ---- AVX2 + FMA + F16C ------------------------------------------------------ */

#if defined(__x86_64__)
#define AVX2_FN __attribute__((target("avx2,fma,f16c")))

AVX2_FN static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_FN static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* 8 int8 at p -> 8 floats. */
AVX2_FN static inline __m256 i8x8_ps(const int8_t *p)
{
    int64_t v;
    memcpy(&v, p, 8);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v)));
}

AVX2_FN static float v_dot_q8_f32(const void *wv, const float *x, int k)
{
    const quant_block_q8 *w = wv;
    int full = k / QUANT_BLOCK;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < full; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        __m256 s = _mm256_mul_ps(i8x8_ps(w[b].qs), _mm256_loadu_ps(xb));
        s = _mm256_fmadd_ps(i8x8_ps(w[b].qs + 8), _mm256_loadu_ps(xb + 8), s);
        s = _mm256_fmadd_ps(i8x8_ps(w[b].qs + 16), _mm256_loadu_ps(xb + 16), s);
        s = _mm256_fmadd_ps(i8x8_ps(w[b].qs + 24), _mm256_loadu_ps(xb + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d)), s, acc);
    }
    float r = hsum8(acc);
    if (full * QUANT_BLOCK < k) r += s_dot_q8_f32(w + full, x + full * QUANT_BLOCK, k - full * QUANT_BLOCK);
    return r;
}

/* 32 q4 weights of block b as two 16-byte halves of signed values in [-8, 7]. */
AVX2_FN static inline __m256i q4_unpack(const quant_block_q4 *b)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(0xf));
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0xf));
    __m256i v = _mm256_set_m128i(hi, lo); /* elements 0..15 then 16..31 */
    return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
}

AVX2_FN static float v_dot_q4_f32(const void *wv, const float *x, int k)
{
    const quant_block_q4 *w = wv;
    int full = k / QUANT_BLOCK;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < full; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        int8_t q[32];
        _mm256_storeu_si256((__m256i *)q, q4_unpack(&w[b]));
        __m256 s = _mm256_mul_ps(i8x8_ps(q), _mm256_loadu_ps(xb));
        s = _mm256_fmadd_ps(i8x8_ps(q + 8), _mm256_loadu_ps(xb + 8), s);
        s = _mm256_fmadd_ps(i8x8_ps(q + 16), _mm256_loadu_ps(xb + 16), s);
        s = _mm256_fmadd_ps(i8x8_ps(q + 24), _mm256_loadu_ps(xb + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d)), s, acc);
    }
    float r = hsum8(acc);
    if (full * QUANT_BLOCK < k) r += s_dot_q4_f32(w + full, x + full * QUANT_BLOCK, k - full * QUANT_BLOCK);
    return r;
}

/* Sum of 32 int8 products w*x as 8 int32 lanes -> floats (|w|,|x| <= 127 so
 * maddubs never saturates: 2 * 127 * 127 < 32767; q4 values are in [-8, 7]). */
AVX2_FN static inline __m256 dot32_i8(__m256i w, __m256i x)
{
    __m256i aw = _mm256_sign_epi8(w, w);
    __m256i sx = _mm256_sign_epi8(x, w);
    __m256i p16 = _mm256_maddubs_epi16(aw, sx);
    __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    return _mm256_cvtepi32_ps(p32);
}

AVX2_FN static float v_dot_q8_q8a(const void *wv, const quant_block_q8a *x, int nb)
{
    const quant_block_q8 *w = wv;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) { /* two independent chains hide the FMA latency */
        __m256i w0 = _mm256_loadu_si256((const __m256i *)w[b].qs), x0 = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256i w1 = _mm256_loadu_si256((const __m256i *)w[b + 1].qs), x1 = _mm256_loadu_si256((const __m256i *)x[b + 1].qs);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x[b].d), dot32_i8(w0, x0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b + 1].d) * x[b + 1].d), dot32_i8(w1, x1), acc1);
    }
    for (; b < nb; b++) {
        __m256i wq = _mm256_loadu_si256((const __m256i *)w[b].qs);
        __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].qs);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x[b].d), dot32_i8(wq, xq), acc0);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
}

AVX2_FN static float v_dot_q4_q8a(const void *wv, const quant_block_q8a *x, int nb)
{
    const quant_block_q4 *w = wv;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)x[b].qs), x1 = _mm256_loadu_si256((const __m256i *)x[b + 1].qs);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x[b].d), dot32_i8(q4_unpack(&w[b]), x0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b + 1].d) * x[b + 1].d), dot32_i8(q4_unpack(&w[b + 1]), x1), acc1);
    }
    for (; b < nb; b++) {
        __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].qs);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x[b].d), dot32_i8(q4_unpack(&w[b]), xq), acc0);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
}

static const quant_kernels k_avx2 = {
    "avx2",
    {NULL, v_dot_q8_f32, v_dot_q4_f32},
    {NULL, v_dot_q8_q8a, v_dot_q4_q8a},
};
#endif

/* ---- dispatch ---------------------------------------------------------------- */

static int have_avx2 = -1;
static int act_mode = QUANT_ACT_Q8;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void detect(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    have_avx2 = 0;
#endif
}

const quant_kernels *quant_kernels_isa(int isa)
{
    pthread_once(&once, detect);
    if (isa == QUANT_ISA_SCALAR) return &k_scalar;
#if defined(__x86_64__)
    if (isa == QUANT_ISA_AVX2 && have_avx2) return &k_avx2;
#endif
    return NULL;
}

const quant_kernels *quant_kernels_best(void)
{
    const quant_kernels *k = quant_kernels_isa(QUANT_ISA_AVX2);
    return k ? k : &k_scalar;
}

int quant_act_mode(void)
{
    return __atomic_load_n(&act_mode, __ATOMIC_RELAXED);
}

void quant_act_mode_set(int act)
{
    __atomic_store_n(&act_mode, act == QUANT_ACT_F32 ? QUANT_ACT_F32 : QUANT_ACT_Q8, __ATOMIC_RELAXED);
}

/* ---- matmul ------------------------------------------------------------------- */

typedef struct qmm_ctx {
    const quant_kernels *k;
    const float *x;
    const quant_block_q8a *xq; /* (T, nb) when activations are quantized */
    int T, K, N, nb, fmt;
    const uint8_t *W;
    size_t row_bytes;
    float *y;
} qmm_ctx;

static void qmm_task(void *arg, int64_t b, int64_t e)
{
    qmm_ctx *c = arg;
    for (int64_t n = b; n < e; n++) {
        const void *w = c->W + (size_t)n * c->row_bytes;
        if (c->xq) {
            quant_dot_q8a_fn f = c->k->dot_q8a[c->fmt];
            for (int t = 0; t < c->T; t++) c->y[(size_t)t * c->N + n] = f(w, c->xq + (size_t)t * c->nb, c->nb);
        } else {
            quant_dot_f32_fn f = c->k->dot_f32[c->fmt];
            for (int t = 0; t < c->T; t++) c->y[(size_t)t * c->N + n] = f(w, c->x + (size_t)t * c->K, c->K);
        }
    }
}

void quant_matmul_with(eng_pool *p, const quant_kernels *kern, int act, const float *x, int T, int K,
                       const void *W, int N, int fmt, float *y)
{
    if (!kern) kern = quant_kernels_best();
    if (fmt != QUANT_Q8 && fmt != QUANT_Q4) {
        for (size_t i = 0; i < (size_t)T * N; i++) y[i] = NAN;
        return;
    }
    int nb = (int)quant_blocks(K);
    qmm_ctx c = {kern, x, NULL, T, K, N, nb, fmt, W, quant_row_bytes(fmt, K), y};
    quant_block_q8a *xq = NULL;
    if (act == QUANT_ACT_Q8) {
        xq = malloc(sizeof *xq * (size_t)T * (size_t)nb);
        if (!xq) { /* out of memory: poison, as the dense matmul does */
            for (size_t i = 0; i < (size_t)T * N; i++) y[i] = NAN;
            return;
        }
        for (int t = 0; t < T; t++) quant_act_quantize(x + (size_t)t * K, K, xq + (size_t)t * nb);
        c.xq = xq;
    }
    int64_t work = (int64_t)T * K;
    int64_t min_rows = work >= 65536 ? 1 : (65536 / (work ? work : 1)) + 1;
    eng_pool_run(p, N, min_rows, qmm_task, &c);
    free(xq);
}

void quant_matmul(eng_pool *p, const float *x, int T, int K, const void *W, int N, int fmt, float *y)
{
    quant_matmul_with(p, NULL, quant_act_mode(), x, T, K, W, N, fmt, y);
}
