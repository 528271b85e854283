/*
 * quant.c — q8/q4 block formats: names, sizes, quantization and the float
 * dequantization reference. Layout in quant.h and docs/quant.md.
 */
#include "engine/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tensor.h"

int quant_format_parse(const char *s, quant_format *out)
{
    if (!s) return -1;
    if (!strcmp(s, "bf16") || !strcmp(s, "none") || !strcmp(s, "dense")) { *out = QUANT_NONE; return 0; }
    if (!strcmp(s, "q8")) { *out = QUANT_Q8; return 0; }
    if (!strcmp(s, "q4")) { *out = QUANT_Q4; return 0; }
    return -1;
}

const char *quant_format_name(int f)
{
    switch (f) {
    case QUANT_NONE: return "bf16";
    case QUANT_Q8: return "q8";
    case QUANT_Q4: return "q4";
    }
    return "?";
}

size_t quant_row_bytes(int fmt, int64_t k)
{
    if (k <= 0) return 0;
    switch (fmt) {
    case QUANT_Q8: return (size_t)quant_blocks(k) * sizeof(quant_block_q8);
    case QUANT_Q4: return (size_t)quant_blocks(k) * sizeof(quant_block_q4);
    }
    return 0;
}

/* IEEE half, round to nearest even; overflow saturates to the largest finite
 * value (a scale must stay finite), NaN stays NaN. */
uint16_t quant_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7bffu); /* >= 65520 rounds past max: saturate */
    if (a < 0x38800000u) {                                   /* below 2^-14: subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;          /* < 2^-25: rounds to 0 */
        float af;
        memcpy(&af, &a, 4);
        uint32_t q = (uint32_t)lrintf(af * 16777216.0f); /* units of 2^-24, nearest even; 1024 = min normal */
        return (uint16_t)(sign | q);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u); /* round mantissa to 10 bits, nearest even */
    r -= 0x38000000u;                           /* rebias exponent 127 -> 15 */
    return (uint16_t)(sign | (r >> 13));
}

static void q8_block(const float *x, int n, quant_block_q8 *b)
{
    float amax = 0;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    b->d = quant_f32_to_f16(amax / 127.0f);
    float d = eng_f16_to_f32(b->d);
    float id = d > 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < QUANT_BLOCK; i++) {
        float v = i < n ? x[i] * id : 0.0f;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        b->qs[i] = (int8_t)lrintf(v);
    }
}

/* Squared error of x quantized as q4 with scale d (values d * (q - 8), q in [0, 15]). */
static double q4_sse(const float *x, int n, float d, uint8_t *q)
{
    double e = 0;
    float id = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) {
        float v = x[i] * id + 8.0f;
        v = v < 0 ? 0 : v > 15 ? 15 : v;
        int qi = (int)lrintf(v);
        if (q) q[i] = (uint8_t)qi;
        double r = (double)x[i] - (double)d * (qi - 8);
        e += r * r;
    }
    return e;
}

#define Q4_GRID 13 /* c = 6.5, 6.75, ..., 9.5 */

#if defined(__x86_64__)
#include <immintrin.h>
/* The squared errors of all grid scales at once, each candidate in its own
 * lane with exactly q4_sse's operations in q4_sse's order (float x*id + 8,
 * clamp, round to nearest even; double residual, squared, summed in element
 * order), so e[s] is bitwise q4_sse(x, n, d[s]). No FMA in the target: a
 * fused multiply-add would round differently. Finite x only. */
__attribute__((target("avx2"))) static void q4_sse_grid_avx2(const float *x, int n, const float *d, double *e)
{
    __m128 id[4];
    __m256d dd[4], acc[4];
    for (int g = 0; g < 4; g++) {
        float fi[4];
        double dv[4];
        for (int j = 0; j < 4; j++) {
            int s = 4 * g + j < Q4_GRID ? 4 * g + j : Q4_GRID - 1;
            fi[j] = d[s] != 0 ? 1.0f / d[s] : 0.0f;
            dv[j] = (double)d[s];
        }
        id[g] = _mm_loadu_ps(fi);
        dd[g] = _mm256_loadu_pd(dv);
        acc[g] = _mm256_setzero_pd();
    }
    const __m128 zero = _mm_setzero_ps(), eight = _mm_set1_ps(8.0f), fifteen = _mm_set1_ps(15.0f);
    const __m128i i8 = _mm_set1_epi32(8);
    for (int i = 0; i < n; i++) {
        __m128 xi = _mm_set1_ps(x[i]);
        __m256d xd = _mm256_set1_pd((double)x[i]);
        for (int g = 0; g < 4; g++) {
            __m128 v = _mm_add_ps(_mm_mul_ps(xi, id[g]), eight);
            v = _mm_min_ps(fifteen, _mm_max_ps(zero, v)); /* v < 0 ? 0 : v > 15 ? 15 : v */
            __m128i q = _mm_sub_epi32(_mm_cvtps_epi32(v), i8);
            __m256d r = _mm256_sub_pd(xd, _mm256_mul_pd(dd[g], _mm256_cvtepi32_pd(q)));
            acc[g] = _mm256_add_pd(acc[g], _mm256_mul_pd(r, r));
        }
    }
    double out[16];
    for (int g = 0; g < 4; g++) _mm256_storeu_pd(out + 4 * g, acc[g]);
    memcpy(e, out, sizeof(double) * Q4_GRID);
}

static int have_avx2(void)
{
    static int h = -1;
    int v = __atomic_load_n(&h, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&h, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

static int quant_q4_fast = 1;
void quant_q4_search_fast(int on) { __atomic_store_n(&quant_q4_fast, on ? 1 : 0, __ATOMIC_RELAXED); }

/* q4: the scale maps the largest-magnitude value m to -c (c = 8 is llama.cpp's
 * Q4_0); c is chosen on a small grid around 8 for the least squared error of
 * the block, with the scale as stored (f16). Ties keep the earlier candidate
 * (Q4_0's c = 8 first, then the grid in order). */
static void q4_block(const float *x, int n, quant_block_q4 *b)
{
    float m = 0;
    int finite = 1;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > fabsf(m)) m = x[i];
        finite &= isfinite(x[i]) != 0;
    }
    uint16_t dh[Q4_GRID];
    float d[Q4_GRID];
    for (int s = 0; s < Q4_GRID; s++) {
        float c = 6.5f + 0.25f * (float)s;
        dh[s] = quant_f32_to_f16(m / -c);
        d[s] = eng_f16_to_f32(dh[s]);
    }
    double e[Q4_GRID];
    int done = 0;
#if defined(__x86_64__)
    if (finite && __atomic_load_n(&quant_q4_fast, __ATOMIC_RELAXED) && have_avx2()) {
        q4_sse_grid_avx2(x, n, d, e);
        done = 1;
    }
#else
    (void)finite;
#endif
    if (!done)
        for (int s = 0; s < Q4_GRID; s++) e[s] = q4_sse(x, n, d[s], NULL);
    /* Q4_0 (c = 8: grid point 6, the same scale) first, then the grid. */
    uint16_t best = dh[6];
    double best_e = e[6];
    for (int s = 0; s < Q4_GRID; s++)
        if (e[s] < best_e) { best_e = e[s]; best = dh[s]; }
    uint8_t q[QUANT_BLOCK];
    memset(q, 8, sizeof q); /* padding decodes to 0 */
    q4_sse(x, n, eng_f16_to_f32(best), q);
    b->d = best;
    for (int i = 0; i < QUANT_BLOCK / 2; i++) b->qs[i] = (uint8_t)(q[i] | (q[i + 16] << 4));
}

void quant_row_quantize(int fmt, const float *x, int64_t k, void *dst)
{
    int64_t nb = quant_blocks(k);
    for (int64_t i = 0; i < nb; i++) {
        int n = (int)(k - i * QUANT_BLOCK < QUANT_BLOCK ? k - i * QUANT_BLOCK : QUANT_BLOCK);
        if (fmt == QUANT_Q8) q8_block(x + i * QUANT_BLOCK, n, (quant_block_q8 *)dst + i);
        else if (fmt == QUANT_Q4) q4_block(x + i * QUANT_BLOCK, n, (quant_block_q4 *)dst + i);
    }
}

void quant_row_dequantize(int fmt, const void *src, int64_t k, float *out)
{
    for (int64_t i = 0; i < k; i++) {
        int64_t bi = i / QUANT_BLOCK;
        int j = (int)(i % QUANT_BLOCK);
        if (fmt == QUANT_Q8) {
            const quant_block_q8 *b = (const quant_block_q8 *)src + bi;
            out[i] = eng_f16_to_f32(b->d) * (float)b->qs[j];
        } else if (fmt == QUANT_Q4) {
            const quant_block_q4 *b = (const quant_block_q4 *)src + bi;
            int q = j < 16 ? (b->qs[j] & 0xf) : (b->qs[j - 16] >> 4);
            out[i] = eng_f16_to_f32(b->d) * (float)(q - 8);
        } else {
            out[i] = 0;
        }
    }
}

void quant_act_quantize(const float *x, int64_t k, quant_block_q8a *dst)
{
    int64_t nb = quant_blocks(k);
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QUANT_BLOCK;
        int n = (int)(k - i * QUANT_BLOCK < QUANT_BLOCK ? k - i * QUANT_BLOCK : QUANT_BLOCK);
        float amax = 0;
        for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        dst[i].d = d;
        for (int j = 0; j < QUANT_BLOCK; j++) {
            float v = j < n ? xb[j] * id : 0.0f;
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            dst[i].qs[j] = (int8_t)lrintf(v);
        }
    }
}

typedef struct qt_ctx {
    int fmt;
    const eng_tensor *t;
    int64_t cols;
    size_t rb;
    uint8_t *dst;
    int failed;
} qt_ctx;

static void qt_task(void *arg, int64_t r0, int64_t r1)
{
    qt_ctx *c = arg;
    float *row = malloc(sizeof(float) * (size_t)c->cols);
    if (!row) { __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED); return; }
    for (int64_t r = r0; r < r1; r++) {
        eng_tensor_read_f32(c->t, r * c->cols, c->cols, row);
        quant_row_quantize(c->fmt, row, c->cols, c->dst + (size_t)r * c->rb);
    }
    free(row);
}

int quant_tensor_quantize(eng_pool *p, int fmt, const eng_tensor *t, void *dst)
{
    if ((fmt != QUANT_Q8 && fmt != QUANT_Q4) || t->ndim != 2 || t->shape[1] <= 0) return -1;
    qt_ctx c = {fmt, t, t->shape[1], quant_row_bytes(fmt, t->shape[1]), dst, 0};
    /* chunks of >= 16k weights: a claim costs little next to quantizing them */
    int64_t min_rows = 16384 / c.cols + 1;
    if (p) eng_pool_run(p, t->shape[0], min_rows, qt_task, &c);
    else qt_task(&c, 0, t->shape[0]);
    return c.failed ? -1 : 0;
}
