/*
 * matmul.c — see matmul.h: the scalar reference kernels, the runtime dispatch
 * and the parallel driver. The SIMD variants live in matmul_avx2.c,
 * matmul_avx512.c (compiled with their own -m flags, mk/cpu.mk) and
 * matmul_neon.c; nothing here uses an instruction the baseline lacks.
 */
#include "engine/matmul.h"

#include <stdatomic.h>
#include <stdlib.h>

/* ---- scalar reference ------------------------------------------------------ */

/* Eight partial sums, added pairwise at the end (the original reference order). */
static float dot_f32_scalar(const float *a, const float *b, int n)
{
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static float dot_bf16_scalar(const float *a, const uint16_t *w, int n)
{
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * eng_bf16_to_f32(w[i + j]);
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * eng_bf16_to_f32(w[i]);
    return r;
}

static float dot_f16_scalar(const float *a, const uint16_t *w, int n)
{
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * eng_f16_to_f32(w[i + j]);
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * eng_f16_to_f32(w[i]);
    return r;
}

static void tile_f32_scalar(const float *x, size_t ldx, int T, const void *w, size_t ldw, int R, int K, float *y,
                             size_t ldy)
{
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * ldy + r] = dot_f32_scalar(x + (size_t)t * ldx, (const float *)w + (size_t)r * ldw, K);
}

static void tile_bf16_scalar(const float *x, size_t ldx, int T, const void *w, size_t ldw, int R, int K, float *y,
                             size_t ldy)
{
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * ldy + r] = dot_bf16_scalar(x + (size_t)t * ldx, (const uint16_t *)w + (size_t)r * ldw, K);
}

static void tile_f16_scalar(const float *x, size_t ldx, int T, const void *w, size_t ldw, int R, int K, float *y,
                             size_t ldy)
{
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * ldy + r] = dot_f16_scalar(x + (size_t)t * ldx, (const uint16_t *)w + (size_t)r * ldw, K);
}

const eng_mm_kernels eng_mm_scalar_kernels = {
    .name = "scalar",
    .tile = {[ENG_DT_F32] = tile_f32_scalar, [ENG_DT_F16] = tile_f16_scalar, [ENG_DT_BF16] = tile_bf16_scalar},
    .dot_f32 = dot_f32_scalar,
};

/* ---- dispatch ---------------------------------------------------------------- */

static const char *const isa_names[ENG_MM_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};

const char *eng_mm_isa_name(eng_mm_isa isa) { return (unsigned)isa < ENG_MM_ISA_COUNT ? isa_names[isa] : "?"; }

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>

/* 1 when the CPU has AVX2, FMA and F16C (and AVX-512F if want512) and the OS
 * saves the wide registers (XCR0); read from cpuid/xgetbv directly so that any
 * compiler version knows every feature. */
static int x86_has(int want512)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(fma && osxsave && avx && f16c)) return 0;
    unsigned lo, hi;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 0x6u) != 0x6u) return 0; /* SSE and AVX state */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
    if (!avx2) return 0;
    if (!want512) return 1;
    return avx512f && (lo & 0xe0u) == 0xe0u; /* opmask and upper ZMM state */
}
#endif

static int cpu_runs_detect(eng_mm_isa isa)
{
    switch (isa) {
    case ENG_MM_SCALAR: return 1;
#if defined(__x86_64__) && defined(__GNUC__)
    case ENG_MM_AVX2: return x86_has(0);
    case ENG_MM_AVX512: return x86_has(1);
#endif
#if defined(__aarch64__)
    case ENG_MM_NEON: return 1; /* Advanced SIMD is part of the arm64 baseline */
#endif
    default: return 0;
    }
}

/* cpuid traps to the hypervisor in a VM (microseconds each), and the driver
 * asks for the active kernels once per chunk: detect once, keep the answer. */
static _Atomic int isa_runs[ENG_MM_ISA_COUNT]; /* 0 unknown, 1 runs, 2 does not */

static int cpu_runs(eng_mm_isa isa)
{
    if ((unsigned)isa >= ENG_MM_ISA_COUNT) return 0;
    int v = atomic_load_explicit(&isa_runs[isa], memory_order_relaxed);
    if (!v) {
        v = cpu_runs_detect(isa) ? 1 : 2;
        atomic_store_explicit(&isa_runs[isa], v, memory_order_relaxed);
    }
    return v == 1;
}

const eng_mm_kernels *eng_mm_kernels_for(eng_mm_isa isa)
{
    if (!cpu_runs(isa)) return NULL;
    switch (isa) {
    case ENG_MM_SCALAR: return &eng_mm_scalar_kernels;
    case ENG_MM_AVX2: return eng_mm_avx2_kernels();
    case ENG_MM_AVX512: return eng_mm_avx512_kernels();
    case ENG_MM_NEON: return eng_mm_neon_kernels();
    default: return NULL;
    }
}

int eng_mm_isa_available(eng_mm_isa isa) { return eng_mm_kernels_for(isa) != NULL; }

eng_mm_isa eng_mm_isa_best(void)
{
    static const eng_mm_isa pref[] = {ENG_MM_AVX512, ENG_MM_AVX2, ENG_MM_NEON};
    for (size_t i = 0; i < sizeof pref / sizeof pref[0]; i++)
        if (eng_mm_isa_available(pref[i])) return pref[i];
    return ENG_MM_SCALAR;
}

static _Atomic int active_isa = -1;

int eng_mm_set_isa(eng_mm_isa isa)
{
    if (!eng_mm_isa_available(isa)) return -1;
    atomic_store(&active_isa, (int)isa);
    return 0;
}

eng_mm_isa eng_mm_isa_active(void)
{
    int a = atomic_load_explicit(&active_isa, memory_order_relaxed);
    if (a < 0) {
        int expect = -1;
        atomic_compare_exchange_strong(&active_isa, &expect, (int)eng_mm_isa_best());
        a = atomic_load(&active_isa);
    }
    return (eng_mm_isa)a;
}

const eng_mm_kernels *eng_mm_active(void) { return eng_mm_kernels_for(eng_mm_isa_active()); }

/* ---- driver --------------------------------------------------------------------- */

void eng_mm_job_rows(const eng_mm_job *j, int64_t r0, int64_t r1)
{
    if (r1 <= r0 || j->T <= 0) return;
    const eng_mm_kernels *k = eng_mm_active();
    size_t es = eng_dtype_size(j->W->dtype);
    const char *w = (const char *)j->W->data + (size_t)r0 * (size_t)j->K * es;
    k->tile[j->W->dtype](j->x, j->ldx, j->T, w, (size_t)j->K, (int)(r1 - r0), j->K, j->y + r0, j->ldy);
    if (j->bias && j->bias->data)
        for (int64_t r = r0; r < r1; r++) {
            float bv;
            eng_tensor_read_f32(j->bias, r, 1, &bv);
            for (int t = 0; t < j->T; t++) j->y[(size_t)t * j->ldy + (size_t)r] += bv;
        }
}

/* Work is counted in units of MM_UNIT rows so that chunk boundaries keep the
 * kernels' row blocks full. */
#define MM_UNIT 4
#define MM_MAX_JOBS_STACK 64

typedef struct mm_run_ctx {
    const eng_mm_job *jobs;
    int n_jobs;
    const int64_t *start; /* (n_jobs + 1) first unit of each job */
} mm_run_ctx;

static void mm_run_task(void *arg, int64_t b, int64_t e)
{
    const mm_run_ctx *c = arg;
    int lo = eng_pool_job_at(c->start, c->n_jobs, b);
    for (int j = lo; j < c->n_jobs && c->start[j] < e; j++) {
        int64_t ub = b > c->start[j] ? b : c->start[j], ue = e < c->start[j + 1] ? e : c->start[j + 1];
        if (ub >= ue) continue;
        int64_t n = c->jobs[j].W->shape[0];
        int64_t r0 = (ub - c->start[j]) * MM_UNIT, r1 = (ue - c->start[j]) * MM_UNIT;
        eng_mm_job_rows(&c->jobs[j], r0, r1 < n ? r1 : n);
    }
}

void eng_mm_run(eng_pool *p, const eng_mm_job *jobs, int n_jobs)
{
    if (n_jobs <= 0) return;
    int64_t stack[MM_MAX_JOBS_STACK + 1], *start = stack;
    if (n_jobs > MM_MAX_JOBS_STACK) {
        start = malloc(sizeof *start * ((size_t)n_jobs + 1));
        if (!start) { /* no memory for the index: run the jobs one by one */
            for (int j = 0; j < n_jobs; j++) eng_mm_run(p, &jobs[j], 1);
            return;
        }
    }
    int64_t units = 0, macs = 0;
    for (int j = 0; j < n_jobs; j++) {
        start[j] = units;
        int64_t n = jobs[j].T > 0 ? jobs[j].W->shape[0] : 0;
        units += (n + MM_UNIT - 1) / MM_UNIT;
        macs += n * jobs[j].T * (int64_t)jobs[j].K;
    }
    start[n_jobs] = units;
    if (units > 0) {
        /* Chunks of at least ~32k multiply-adds, so a claim costs little. */
        int64_t per_unit = macs / units + 1;
        int64_t min_chunk = 32768 / per_unit + 1;
        mm_run_ctx c = {jobs, n_jobs, start};
        if (p) eng_pool_run(p, units, min_chunk, mm_run_task, &c);
        else mm_run_task(&c, 0, units);
    }
    if (start != stack) free(start);
}

void eng_mm(eng_pool *p, const float *x, int T, int K, const eng_tensor *W, const eng_tensor *bias, float *y)
{
    eng_mm_job j = {x, (size_t)K, T, K, W, bias, y, (size_t)W->shape[0]};
    eng_mm_run(p, &j, 1);
}
