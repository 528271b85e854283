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
    {NULL, NULL, NULL},
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

/* The register-blocked tiles (quant_tile.h): AVX2 (maddubs + madd) and VNNI
 * (AVX-512 VNNI's dpbusd on 256-bit vectors, with AVX512VL). Both compute the
 * same integer sums, so their results are bitwise equal. */
#define QKNAME(x) qavx2_##x
#define QT_ATTR AVX2_FN
#define QDOT(acc, u, s) _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))
#include "engine/quant_tile.h"
#undef QKNAME
#undef QT_ATTR
#undef QDOT

#define QKNAME(x) qvnni_##x
#define QT_ATTR __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define QDOT(acc, u, s) _mm256_dpbusd_epi32((acc), (u), (s))
#include "engine/quant_tile.h"
#undef QKNAME
#undef QT_ATTR
#undef QDOT

/* The per-row dots above (two accumulator chains) stay for tests and
 * measurement as "avx2-dot"; the engine's variants use the tiles, whose
 * single-row dot is bitwise the tile's result for that row. */
static const quant_kernels k_avx2 = {
    "avx2",
    {NULL, v_dot_q8_f32, v_dot_q4_f32},
    {NULL, qavx2_dot_q8, qavx2_dot_q4},
    {NULL, qavx2_tile_q8, qavx2_tile_q4},
};

static const quant_kernels k_vnni = {
    "vnni",
    {NULL, v_dot_q8_f32, v_dot_q4_f32},
    {NULL, qvnni_dot_q8, qvnni_dot_q4},
    {NULL, qvnni_tile_q8, qvnni_tile_q4},
};

static const quant_kernels k_avx2_dot = {
    "avx2-dot",
    {NULL, v_dot_q8_f32, v_dot_q4_f32},
    {NULL, v_dot_q8_q8a, v_dot_q4_q8a},
    {NULL, NULL, NULL},
};
#endif

/* ---- dispatch ---------------------------------------------------------------- */

static int have_avx2 = -1, have_vnni = -1;
static int act_mode = QUANT_ACT_Q8;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void detect(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    have_vnni = have_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                __builtin_cpu_supports("avx512vnni");
#else
    have_avx2 = have_vnni = 0;
#endif
}

const quant_kernels *quant_kernels_isa(int isa)
{
    pthread_once(&once, detect);
    if (isa == QUANT_ISA_SCALAR) return &k_scalar;
#if defined(__x86_64__)
    if (isa == QUANT_ISA_AVX2 && have_avx2) return &k_avx2;
    if (isa == QUANT_ISA_VNNI && have_vnni) return &k_vnni;
    if (isa == QUANT_ISA_AVX2_DOT && have_avx2) return &k_avx2_dot;
#endif
    return NULL;
}

const quant_kernels *quant_kernels_best(void)
{
    const quant_kernels *k = quant_kernels_isa(QUANT_ISA_VNNI);
    if (!k) k = quant_kernels_isa(QUANT_ISA_AVX2);
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

/* Work is claimed in units of QMM_UNIT rows, so the tiles' 4-row blocks stay
 * whole (and a row's result never depends on the split). */
#define QMM_UNIT 4
#define QMM_STACK 64

typedef struct qmm_run {
    const quant_kernels *k;
    const quant_mm_job *jobs;
    int n_jobs;
    const quant_block_q8a *const *xq; /* per job: its quantized activations (T, nb), or NULL (float) */
    const int64_t *start;              /* (n_jobs + 1) first unit of each job */
} qmm_run;

static void qmm_rows(const qmm_run *c, const quant_mm_job *j, const quant_block_q8a *xq, int64_t r0, int64_t r1)
{
    int nb = (int)quant_blocks(j->K);
    size_t rb = quant_row_bytes(j->fmt, j->K);
    const uint8_t *W = (const uint8_t *)j->W + (size_t)r0 * rb;
    if (xq && c->k->tile_q8a[j->fmt]) {
        c->k->tile_q8a[j->fmt](xq, (size_t)nb, j->T, W, rb, (int)(r1 - r0), nb, j->y + r0, j->ldy);
        return;
    }
    for (int64_t n = r0; n < r1; n++, W += rb)
        for (int t = 0; t < j->T; t++)
            j->y[(size_t)t * j->ldy + (size_t)n] = xq ? c->k->dot_q8a[j->fmt](W, xq + (size_t)t * nb, nb)
                                                       : c->k->dot_f32[j->fmt](W, j->x + (size_t)t * j->ldx, j->K);
}

static void qmm_task(void *arg, int64_t b, int64_t e)
{
    const qmm_run *c = arg;
    int lo = eng_pool_job_at(c->start, c->n_jobs, b);
    for (int j = lo; j < c->n_jobs && c->start[j] < e; j++) {
        int64_t ub = b > c->start[j] ? b : c->start[j], ue = e < c->start[j + 1] ? e : c->start[j + 1];
        if (ub >= ue) continue;
        int64_t n = c->jobs[j].N, r0 = (ub - c->start[j]) * QMM_UNIT, r1 = (ue - c->start[j]) * QMM_UNIT;
        qmm_rows(c, &c->jobs[j], c->xq[j], r0, r1 < n ? r1 : n);
    }
}

static void poison(const quant_mm_job *j)
{
    for (int t = 0; t < j->T; t++)
        for (int n = 0; n < j->N; n++) j->y[(size_t)t * j->ldy + (size_t)n] = NAN;
}

static int job_valid(const quant_mm_job *j) { return j->fmt == QUANT_Q8 || j->fmt == QUANT_Q4; }

/* Job j reads the same activations as job j - 1 (valid too): reuse its q8a copy. */
static int shares_x(const quant_mm_job *jobs, int j)
{
    return j > 0 && job_valid(&jobs[j - 1]) && jobs[j].x == jobs[j - 1].x && jobs[j].ldx == jobs[j - 1].ldx &&
           jobs[j].T == jobs[j - 1].T && jobs[j].K == jobs[j - 1].K;
}

void quant_mm_run_with(eng_pool *p, const quant_kernels *kern, int act, const quant_mm_job *jobs, int n_jobs)
{
    if (n_jobs <= 0) return;
    if (!kern) kern = quant_kernels_best();
    int64_t s_start[QMM_STACK + 1];
    const quant_block_q8a *s_xq[QMM_STACK];
    int64_t *start = s_start;
    const quant_block_q8a **xq = s_xq;
    quant_block_q8a *buf = NULL;
    if (n_jobs > QMM_STACK) {
        start = malloc(sizeof *start * ((size_t)n_jobs + 1));
        xq = malloc(sizeof *xq * (size_t)n_jobs);
        if (!start || !xq) goto oom;
    }
    /* Activations: quantized once per distinct input (gate and up share x). */
    size_t need = 0;
    for (int j = 0; j < n_jobs; j++) {
        xq[j] = NULL;
        if (act == QUANT_ACT_Q8 && job_valid(&jobs[j]) && !shares_x(jobs, j))
            need += (size_t)jobs[j].T * (size_t)quant_blocks(jobs[j].K);
    }
    if (need && !(buf = malloc(sizeof *buf * need))) goto oom;
    int64_t units = 0, macs = 0;
    size_t at = 0;
    for (int j = 0; j < n_jobs; j++) {
        const quant_mm_job *jb = &jobs[j];
        start[j] = units;
        if (!job_valid(jb)) { poison(jb); continue; }
        units += jb->T > 0 ? (jb->N + QMM_UNIT - 1) / QMM_UNIT : 0;
        macs += (int64_t)jb->N * jb->T * jb->K;
        if (act != QUANT_ACT_Q8) continue;
        if (shares_x(jobs, j)) {
            xq[j] = xq[j - 1];
            continue;
        }
        int64_t nb = quant_blocks(jb->K);
        for (int t = 0; t < jb->T; t++) quant_act_quantize(jb->x + (size_t)t * jb->ldx, jb->K, buf + at + (size_t)t * nb);
        xq[j] = buf + at;
        at += (size_t)jb->T * (size_t)nb;
    }
    start[n_jobs] = units;
    if (units > 0) {
        int64_t per_unit = macs / units + 1, min_chunk = 65536 / per_unit + 1;
        qmm_run c = {kern, jobs, n_jobs, xq, start};
        if (p) eng_pool_run(p, units, min_chunk, qmm_task, &c);
        else qmm_task(&c, 0, units);
    }
    goto done;
oom: /* out of memory: poison, as the dense matmul does */
    for (int j = 0; j < n_jobs; j++) poison(&jobs[j]);
done:
    free(buf);
    if (start != s_start) free(start);
    if (xq != s_xq) free(xq);
}

void quant_mm_run(eng_pool *p, const quant_mm_job *jobs, int n_jobs)
{
    quant_mm_run_with(p, NULL, quant_act_mode(), jobs, n_jobs);
}

void quant_matmul_with(eng_pool *p, const quant_kernels *kern, int act, const float *x, int T, int K,
                       const void *W, int N, int fmt, float *y)
{
    quant_mm_job j = {x, (size_t)K, T, K, W, N, fmt, y, (size_t)N};
    quant_mm_run_with(p, kern, act, &j, 1);
}

void quant_matmul(eng_pool *p, const float *x, int T, int K, const void *W, int N, int fmt, float *y)
{
    quant_matmul_with(p, NULL, quant_act_mode(), x, T, K, W, N, fmt, y);
}
