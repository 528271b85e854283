/*
 * test_matmul.c — every matmul kernel variant this machine runs (scalar, AVX2,
 * AVX-512, NEON; forced with eng_mm_set_isa) against a double-precision
 * reference at odd shapes (tokens, rows and K not multiples of any block or
 * vector width, strided x and y), for f32, f16 (subnormals included) and bf16
 * weights; the bound is the rigorous float32 summation bound K*2^-24*sum|x*w|,
 * far below the error of a dropped or misplaced element. Then the parallel
 * driver: a batch of jobs with bias gives bitwise the same result on 1 and 3
 * threads and matches the reference; y's padding is never written.
 */
#include "engine/matmul.h"
#include "tests/unit/testutil.h"

#include <math.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)(rng >> 11); }
static float rndf(void) { return (float)((double)rnd32() / 2147483648.0 - 1.0); } /* [-1, 1) */

static uint16_t rnd_weight_bits(eng_dtype dt)
{
    uint32_t s = rnd32();
    if (dt == ENG_DT_BF16) /* |w| in ~[2^-8, 2^4) */
        return (uint16_t)(((s & 1u) << 15) | ((119u + (s >> 1) % 12u) << 7) | ((s >> 5) & 0x7fu));
    /* f16: one in 16 subnormal, else exponent 10..19 */
    uint32_t e = (s >> 1) % 16u == 0 ? 0u : 10u + (s >> 5) % 10u;
    return (uint16_t)(((s & 1u) << 15) | (e << 10) | ((s >> 9) & 0x3ffu));
}

typedef struct wmat {
    eng_dtype dt;
    size_t ld;     /* row stride (elements) */
    void *data;    /* R*ld in dt */
    double *dec;   /* R*ld decoded */
} wmat;

static wmat make_w_ld(eng_dtype dt, int R, int K, size_t ld)
{
    wmat m = {dt, ld, malloc((size_t)R * ld * 4 + 4), malloc(sizeof(double) * ((size_t)R * ld + 1))};
    (void)K;
    for (size_t i = 0; i < (size_t)R * ld; i++) {
        if (dt == ENG_DT_F32) {
            float f = rndf() * 2.0f;
            ((float *)m.data)[i] = f;
            m.dec[i] = f;
        } else {
            uint16_t h = rnd_weight_bits(dt);
            ((uint16_t *)m.data)[i] = h;
            m.dec[i] = dt == ENG_DT_BF16 ? eng_bf16_to_f32(h) : eng_f16_to_f32(h);
        }
    }
    return m;
}

static wmat make_w(eng_dtype dt, int R, int K) { return make_w_ld(dt, R, K, (size_t)K); }

/* Checks y (T, R; ldy) against the reference; returns the worst error / bound. */
static double check_y(const float *x, size_t ldx, const wmat *w, int T, int R, int K, const float *bias, const float *y,
                      size_t ldy, const char *what)
{
    double worst = 0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) {
            double ref = bias ? bias[r] : 0, mag = bias ? fabs(bias[r]) : 0;
            for (int k = 0; k < K; k++) {
                double p = (double)x[(size_t)t * ldx + k] * w->dec[(size_t)r * w->ld + k];
                ref += p;
                mag += fabs(p);
            }
            double tol = (double)(K + 2) * ldexp(1.0, -24) * mag + 1e-30;
            double errv = fabs((double)y[(size_t)t * ldy + r] - ref);
            ck_assert_msg(errv <= tol, "%s: dtype %s T=%d R=%d K=%d: y[%d][%d] = %.9g, reference %.9g (error %g > bound %g)",
                          what, eng_dtype_name(w->dt), T, R, K, t, r, y[(size_t)t * ldy + r], ref, errv, tol);
            if (errv / tol > worst) worst = errv / tol;
        }
    return worst;
}

START_TEST(every_variant_matches_reference)
{
    static const int Ts[] = {1, 2, 3, 4, 5, 7, 9};
    static const int Rs[] = {1, 3, 4, 5, 9};
    static const int Ks[] = {1, 3, 8, 15, 16, 17, 33, 64, 100, 257};
    static const eng_dtype dts[] = {ENG_DT_F32, ENG_DT_F16, ENG_DT_BF16};
    int n_variants = 0;
    for (int isa = 0; isa < ENG_MM_ISA_COUNT; isa++) {
        if (!eng_mm_isa_available((eng_mm_isa)isa)) {
            ck_assert_int_eq(eng_mm_set_isa((eng_mm_isa)isa), -1);
            fprintf(stderr, "matmul variant %s: not available here\n", eng_mm_isa_name((eng_mm_isa)isa));
            continue;
        }
        ck_assert_int_eq(eng_mm_set_isa((eng_mm_isa)isa), 0);
        ck_assert_int_eq(eng_mm_isa_active(), isa);
        const eng_mm_kernels *kn = eng_mm_active();
        ck_assert_ptr_nonnull(kn);
        ck_assert_str_eq(kn->name, eng_mm_isa_name((eng_mm_isa)isa));
        n_variants++;
        double worst = 0;
        for (size_t di = 0; di < 3; di++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++)
                for (size_t ri = 0; ri < sizeof Rs / sizeof Rs[0]; ri++)
                    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                        int T = Ts[ti], R = Rs[ri], K = Ks[ki];
                        size_t ldx = (size_t)K + 3, ldy = (size_t)R + 2;
                        size_t ldw = (size_t)K + (ti & 1 ? 0 : 5); /* half the cases strided (attention's K rows) */
                        wmat w = make_w_ld(dts[di], R, K, ldw);
                        float *x = malloc(sizeof(float) * ldx * (size_t)T);
                        float *y = malloc(sizeof(float) * ldy * (size_t)T);
                        for (size_t i = 0; i < ldx * (size_t)T; i++) x[i] = rndf();
                        for (size_t i = 0; i < ldy * (size_t)T; i++) y[i] = -12345.0f;
                        kn->tile[dts[di]](x, ldx, T, w.data, ldw, R, K, y, ldy);
                        double q = check_y(x, ldx, &w, T, R, K, NULL, y, ldy, kn->name);
                        if (q > worst) worst = q;
                        for (int t = 0; t < T; t++)
                            for (size_t r = (size_t)R; r < ldy; r++)
                                ck_assert_msg(y[(size_t)t * ldy + r] == -12345.0f, "%s wrote y padding", kn->name);
                        if (dts[di] == ENG_DT_F32 && T == 1) { /* the attention dot */
                            float d = kn->dot_f32(x, (const float *)w.data, K);
                            ck_assert_float_eq(d, kn->dot_f32(x, (const float *)w.data, K));
                            double ref = 0, mag = 0;
                            for (int k = 0; k < K; k++) { ref += (double)x[k] * w.dec[k]; mag += fabs((double)x[k] * w.dec[k]); }
                            ck_assert_msg(fabs(d - ref) <= (K + 2) * ldexp(1.0, -24) * mag + 1e-30, "%s dot_f32 K=%d", kn->name, K);
                        }
                        free(x);
                        free(y);
                        free(w.data);
                        free(w.dec);
                    }
        fprintf(stderr, "matmul variant %s: worst error %.3f of the bound\n", kn->name, worst);
    }
    ck_assert_int_ge(n_variants, 1);
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        ck_assert_msg(eng_mm_isa_available(ENG_MM_AVX2), "CPU has AVX2+FMA but the avx2 variant is missing");
    if (__builtin_cpu_supports("avx512f"))
        ck_assert_msg(eng_mm_isa_available(ENG_MM_AVX512), "CPU has AVX-512F but the avx512 variant is missing");
#endif
    ck_assert_int_eq(eng_mm_set_isa(ENG_MM_ISA_COUNT), -1);
    ck_assert_int_eq(eng_mm_set_isa(eng_mm_isa_best()), 0);
}
END_TEST

START_TEST(batch_is_thread_count_independent)
{
    /* Three jobs of one region: different dtypes, K, strides and a bias. */
    int T = 5;
    int Ks[3] = {67, 130, 19}, Ns[3] = {37, 9, 130};
    eng_dtype dts[3] = {ENG_DT_BF16, ENG_DT_F16, ENG_DT_F32};
    wmat w[3];
    eng_tensor W[3], bias;
    float *x[3], *y1[3], *y3[3];
    float bvals[130];
    uint16_t bbits[130];
    for (int i = 0; i < 130; i++) { bbits[i] = eng_f32_to_bf16(rndf()); bvals[i] = eng_bf16_to_f32(bbits[i]); }
    bias = (eng_tensor){bbits, ENG_DT_BF16, 1, {130}};
    eng_mm_job jobs1[3], jobs3[3];
    for (int j = 0; j < 3; j++) {
        w[j] = make_w(dts[j], Ns[j], Ks[j]);
        W[j] = (eng_tensor){w[j].data, dts[j], 2, {Ns[j], Ks[j]}};
        x[j] = malloc(sizeof(float) * (size_t)T * (Ks[j] + 1));
        for (int i = 0; i < T * (Ks[j] + 1); i++) x[j][i] = rndf();
        y1[j] = calloc((size_t)T * (Ns[j] + 1), sizeof(float));
        y3[j] = calloc((size_t)T * (Ns[j] + 1), sizeof(float));
        jobs1[j] = (eng_mm_job){x[j], (size_t)Ks[j] + 1, T, Ks[j], &W[j], j == 2 ? &bias : NULL, y1[j], (size_t)Ns[j] + 1};
        jobs3[j] = jobs1[j];
        jobs3[j].y = y3[j];
    }
    for (int isa = 0; isa < ENG_MM_ISA_COUNT; isa++) {
        if (eng_mm_set_isa((eng_mm_isa)isa) != 0) continue;
        eng_pool *p1 = eng_pool_new(1), *p3 = eng_pool_new(3);
        ck_assert_ptr_nonnull(p1);
        ck_assert_ptr_nonnull(p3);
        for (int rep = 0; rep < 20; rep++) { /* many regions back to back: wake-ups and reuse */
            eng_mm_run(p1, jobs1, 3);
            eng_mm_run(p3, jobs3, 3);
            for (int j = 0; j < 3; j++)
                ck_assert_msg(memcmp(y1[j], y3[j], sizeof(float) * (size_t)T * (Ns[j] + 1)) == 0,
                              "%s job %d: 1 and 3 threads differ", eng_mm_isa_name((eng_mm_isa)isa), j);
        }
        for (int j = 0; j < 3; j++)
            check_y(x[j], (size_t)Ks[j] + 1, &w[j], T, Ns[j], Ks[j], j == 2 ? bvals : NULL, y3[j], (size_t)Ns[j] + 1, "batch");
        eng_pool_free(p1);
        eng_pool_free(p3);
    }
    ck_assert_int_eq(eng_mm_set_isa(eng_mm_isa_best()), 0);
    for (int j = 0; j < 3; j++) { free(w[j].data); free(w[j].dec); free(x[j]); free(y1[j]); free(y3[j]); }
}
END_TEST

/* Many tiny regions with uneven work on more threads than cores: the pool's
 * spin-then-sleep hand-off and its dynamic chunks lose or repeat nothing. */
typedef struct count_ctx { int *hits; } count_ctx;
static void count_task(void *arg, int64_t b, int64_t e)
{
    count_ctx *c = arg;
    for (int64_t i = b; i < e; i++) c->hits[i]++;
}

START_TEST(pool_covers_every_item_once)
{
    eng_pool *p = eng_pool_new(4);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(eng_pool_size(p), 4);
    int *hits = calloc(5000, sizeof(int));
    count_ctx c = {hits};
    for (int rep = 0; rep < 300; rep++) {
        int64_t n = 1 + (int64_t)(rnd32() % 4999);
        memset(hits, 0, sizeof(int) * 5000);
        eng_pool_run(p, n, 1 + (int64_t)(rnd32() % 7), count_task, &c);
        for (int64_t i = 0; i < 5000; i++) ck_assert_int_eq(hits[i], i < n ? 1 : 0);
    }
    free(hits);
    eng_pool_free(p);
    ck_assert_int_ge(eng_pool_default_threads(), 1);
}
END_TEST

/* The KV cache's f32 -> f16 rounding: every finite f16 survives the round
 * trip, halfway cases go to the even neighbour, overflow gives infinity,
 * tiny values flush or round into subnormals like IEEE does. */
START_TEST(f16_rounding)
{
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaN */
        ck_assert_uint_eq(eng_f32_to_f16(eng_f16_to_f32((uint16_t)h)), h);
        if ((h & 0x7fffu) < 0x7bffu) { /* the midpoint to the next f16 rounds to the even one */
            double a = eng_f16_to_f32((uint16_t)h), b = eng_f16_to_f32((uint16_t)(h + 1));
            uint16_t even = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
            ck_assert_uint_eq(eng_f32_to_f16((float)((a + b) / 2)), even);
            ck_assert_uint_eq(eng_f32_to_f16((float)(a + (b - a) * 0.75)), (uint16_t)(h + 1));
            ck_assert_uint_eq(eng_f32_to_f16((float)(a + (b - a) * 0.25)), (uint16_t)h);
        }
    }
    ck_assert_uint_eq(eng_f32_to_f16(65520.0f), 0x7c00u);
    ck_assert_uint_eq(eng_f32_to_f16(-1e9f), 0xfc00u);
    ck_assert_uint_eq(eng_f32_to_f16(65519.0f), 0x7bffu);
    ck_assert_uint_eq(eng_f32_to_f16(ldexpf(1.0f, -25)), 0u);          /* tie to even zero */
    ck_assert_uint_eq(eng_f32_to_f16(ldexpf(1.5f, -25)), 1u);
    ck_assert_uint_eq(eng_f32_to_f16(NAN) & 0x7e00u, 0x7e00u);
    float v[3] = {1.0f, -2.5f, 3.0e-3f};
    uint16_t o[3];
    eng_f32_store(ENG_DT_BF16, v, 3, o);
    for (int i = 0; i < 3; i++) ck_assert_uint_eq(o[i], eng_f32_to_bf16(v[i]));
    eng_f32_store(ENG_DT_F16, v, 3, o);
    for (int i = 0; i < 3; i++) ck_assert_uint_eq(o[i], eng_f32_to_f16(v[i]));
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("matmul");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_variant_matches_reference);
    tcase_add_test(tc, batch_is_thread_count_independent);
    tcase_add_test(tc, pool_covers_every_item_once);
    tcase_add_test(tc, f16_rounding);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
