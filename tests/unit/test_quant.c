/* test_quant.c — q8/q4 formats: f16 conversion, per-block round-trip error
 * bounds, and every dispatched dot-product variant (scalar, AVX2) with float
 * and q8a activations against the float reference on odd shapes; the
 * quantized matmul against per-row dots. */
#include <math.h>

#include "testutil.h"
#include "engine/quant.h"
#include "engine/tensor.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}
static float grand(void) { return (frand() + frand() + frand()) * 0.577f; }

START_TEST(test_f16_roundtrip)
{
    /* Every finite f16 survives f16 -> f32 -> f16. */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u) continue; /* inf / NaN */
        ck_assert_uint_eq(quant_f32_to_f16(eng_f16_to_f32((uint16_t)h)), h);
    }
    /* Halfway cases round to even; overflow saturates; tiny values flush. */
    ck_assert_uint_eq(quant_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00u);       /* tie -> even (1.0) */
    ck_assert_uint_eq(quant_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02u);       /* tie -> even (up) */
    ck_assert_uint_eq(quant_f32_to_f16(1e9f), 0x7bffu);
    ck_assert_uint_eq(quant_f32_to_f16(-1e9f), 0xfbffu);
    ck_assert_uint_eq(quant_f32_to_f16(1e-10f), 0);
    ck_assert_uint_eq(quant_f32_to_f16(5.9604645e-8f), 1);                   /* 2^-24 */
    /* Nearest: |f16(x) - x| <= half an ulp, on random values. */
    for (int i = 0; i < 100000; i++) {
        float x = frand() * 1000.0f;
        float y = eng_f16_to_f32(quant_f32_to_f16(x));
        ck_assert_float_le(fabsf(y - x), fabsf(x) * (1.0f / 2048) + 6e-8f);
    }
}
END_TEST

START_TEST(test_format_names)
{
    quant_format f;
    ck_assert_int_eq(quant_format_parse("q8", &f), 0); ck_assert_int_eq(f, QUANT_Q8);
    ck_assert_int_eq(quant_format_parse("q4", &f), 0); ck_assert_int_eq(f, QUANT_Q4);
    ck_assert_int_eq(quant_format_parse("bf16", &f), 0); ck_assert_int_eq(f, QUANT_NONE);
    ck_assert_int_eq(quant_format_parse("q5", &f), -1);
    ck_assert_int_eq(quant_format_parse("", &f), -1);
    ck_assert_str_eq(quant_format_name(QUANT_Q4), "q4");
    ck_assert_uint_eq(quant_row_bytes(QUANT_Q8, 33), 2 * 34);
    ck_assert_uint_eq(quant_row_bytes(QUANT_Q4, 32), 18);
    ck_assert_uint_eq(quant_row_bytes(QUANT_NONE, 32), 0);
}
END_TEST

/* Per block: q8 elements within half a step (d/2, plus the f16 rounding of d
 * that can push the largest element just past 127 steps); q4 elements within
 * 1.5 steps (the clamp at +7 of a value of the opposite sign to the largest),
 * and the block's squared error no worse than plain Q4_0 (scale max/-8). */
static void check_blocks(int fmt, const float *x, int k)
{
    uint8_t buf[4096];
    float y[1024];
    quant_row_quantize(fmt, x, k, buf);
    quant_row_dequantize(fmt, buf, k, y);
    for (int b = 0; b * QUANT_BLOCK < k; b++) {
        int n = k - b * QUANT_BLOCK < QUANT_BLOCK ? k - b * QUANT_BLOCK : QUANT_BLOCK;
        const float *xb = x + b * QUANT_BLOCK, *yb = y + b * QUANT_BLOCK;
        float amax = 0, m = 0;
        for (int i = 0; i < n; i++) { amax = fmaxf(amax, fabsf(xb[i])); if (fabsf(xb[i]) > fabsf(m)) m = xb[i]; }
        if (fmt == QUANT_Q8) {
            float d = eng_f16_to_f32(((quant_block_q8 *)buf)[b].d);
            ck_assert_float_le(fabsf(d - amax / 127), amax / 127 / 1024 + 1e-7f);
            for (int i = 0; i < n; i++)
                ck_assert_msg(fabsf(xb[i] - yb[i]) <= 0.5f * d * 1.001f + 1e-7f,
                              "q8 k=%d block %d elem %d: %g vs %g (d %g)", k, b, i, xb[i], yb[i], d);
        } else {
            float d = fabsf(eng_f16_to_f32(((quant_block_q4 *)buf)[b].d));
            double sse = 0, sse0 = 0;
            float d0 = eng_f16_to_f32(quant_f32_to_f16(m / -8.0f));
            for (int i = 0; i < n; i++) {
                ck_assert_msg(fabsf(xb[i] - yb[i]) <= 1.5f * d * 1.001f + 1e-7f,
                              "q4 k=%d block %d elem %d: %g vs %g (d %g)", k, b, i, xb[i], yb[i], d);
                sse += ((double)xb[i] - yb[i]) * ((double)xb[i] - yb[i]);
                float q = d0 != 0 ? fminf(fmaxf(rintf(xb[i] / d0) + 8, 0), 15) : 8;
                double r = (double)xb[i] - (double)d0 * (q - 8);
                sse0 += r * r;
            }
            ck_assert_msg(sse <= sse0 * (1 + 1e-9) + 1e-18, "q4 block sse %g > Q4_0's %g", sse, sse0);
        }
    }
    /* Padding of the last block decodes to zero (a dot never sees garbage). */
    if (k % QUANT_BLOCK) {
        float full[1056];
        quant_row_dequantize(fmt, buf, quant_blocks(k) * QUANT_BLOCK, full);
        for (int64_t i = k; i < quant_blocks(k) * QUANT_BLOCK; i++) ck_assert_float_eq(full[i], 0);
    }
}

START_TEST(test_roundtrip_bounds)
{
    static const int ks[] = {1, 7, 31, 32, 33, 95, 96, 100, 257, 1000};
    float x[1024];
    for (int f = QUANT_Q8; f <= QUANT_Q4; f++)
        for (size_t s = 0; s < sizeof ks / sizeof ks[0]; s++)
            for (int rep = 0; rep < 20; rep++) {
                float scale = rep < 10 ? 0.05f : 3.0f;
                for (int i = 0; i < ks[s]; i++) x[i] = grand() * scale;
                if (rep == 3) x[ks[s] / 2] = 40 * scale;            /* an outlier */
                if (rep == 4) for (int i = 0; i < ks[s]; i++) x[i] = 0; /* all zero */
                if (rep == 5) for (int i = 0; i < ks[s]; i++) x[i] = (i & 1) ? scale : -scale;
                check_blocks(f, x, ks[s]);
            }
    /* Whole-row relative RMS error on Gaussian weights: q8 well under 1%, q4 under 12%. */
    double e8 = 0, e4 = 0, ss = 0;
    uint8_t buf[4096];
    float y[1024];
    for (int rep = 0; rep < 50; rep++) {
        for (int i = 0; i < 1024; i++) x[i] = grand() * 0.02f;
        for (int f = QUANT_Q8; f <= QUANT_Q4; f++) {
            quant_row_quantize(f, x, 1024, buf);
            quant_row_dequantize(f, buf, 1024, y);
            for (int i = 0; i < 1024; i++) *(f == QUANT_Q8 ? &e8 : &e4) += (double)(x[i] - y[i]) * (x[i] - y[i]);
        }
        for (int i = 0; i < 1024; i++) ss += (double)x[i] * x[i];
    }
    ck_assert_msg(sqrt(e8 / ss) < 0.01, "q8 relative rms error %g", sqrt(e8 / ss));
    ck_assert_msg(sqrt(e4 / ss) < 0.12, "q4 relative rms error %g", sqrt(e4 / ss));
}
END_TEST

/* Reference: dequantize, then a double-precision dot. */
static double ref_dot(int fmt, const void *w, const float *x, int k)
{
    float y[2048];
    quant_row_dequantize(fmt, w, k, y);
    double s = 0;
    for (int i = 0; i < k; i++) s += (double)y[i] * x[i];
    return s;
}

START_TEST(test_dots_vs_reference)
{
    static const int ks[] = {1, 5, 31, 32, 33, 63, 64, 96, 97, 255, 256, 1000, 2048};
    int variants = 0;
    for (int isa = 0; isa < QUANT_N_ISA; isa++) {
        const quant_kernels *kern = quant_kernels_isa(isa);
        if (!kern) { fprintf(stderr, "test_quant: variant %d not supported by this CPU, skipped\n", isa); continue; }
        variants++;
        for (int f = QUANT_Q8; f <= QUANT_Q4; f++)
            for (size_t s = 0; s < sizeof ks / sizeof ks[0]; s++) {
                int k = ks[s];
                static float w[2048], x[2048], xd[2048];
                static uint8_t wq[2048 / 32 * 34 + 64];
                static quant_block_q8a xq[2048 / 32 + 1];
                for (int rep = 0; rep < 8; rep++) {
                    double xabs = 0;
                    for (int i = 0; i < k; i++) { w[i] = grand() * 0.05f; x[i] = grand() * (rep + 1); xabs += fabs(x[i]); }
                    quant_row_quantize(f, w, k, wq);
                    /* Float activations: only float rounding separates kernel and reference. */
                    double r = ref_dot(f, wq, x, k);
                    float got = kern->dot_f32[f](wq, x, k);
                    double tol = 1e-5 * xabs * 0.2 + 1e-6;
                    ck_assert_msg(fabs(got - r) <= tol, "%s %s k=%d f32: %g vs ref %g", kern->name,
                                  quant_format_name(f), k, got, r);
                    /* q8a activations: equal to the reference on the dequantized activations. */
                    int nb = (int)quant_blocks(k);
                    quant_act_quantize(x, k, xq);
                    for (int b = 0; b < nb; b++)
                        for (int j = 0; j < 32 && b * 32 + j < k; j++) xd[b * 32 + j] = xq[b].d * xq[b].qs[j];
                    double rq = ref_dot(f, wq, xd, k);
                    float gq = kern->dot_q8a[f](wq, xq, nb);
                    ck_assert_msg(fabs(gq - rq) <= tol, "%s %s k=%d q8a: %g vs ref %g", kern->name,
                                  quant_format_name(f), k, gq, rq);
                    /* and close to the float-activation result (activation rounding only). */
                    ck_assert_msg(fabs(gq - r) <= 0.01 * xabs * 0.2 + 1e-5, "%s %s k=%d q8a vs f32: %g vs %g",
                                  kern->name, quant_format_name(f), k, gq, r);
                }
            }
    }
    ck_assert_int_ge(variants, 1);
}
END_TEST

START_TEST(test_variants_agree)
{
    /* The SIMD variant and the scalar one agree closely (not bitwise: sum order). */
    const quant_kernels *a = quant_kernels_isa(QUANT_ISA_SCALAR), *b = quant_kernels_isa(QUANT_ISA_AVX2);
    ck_assert_ptr_nonnull(a);
    const quant_kernels *v = quant_kernels_isa(QUANT_ISA_VNNI);
    ck_assert_ptr_eq(quant_kernels_best(), v ? v : b ? b : a);
    if (!b) { fprintf(stderr, "test_quant: no AVX2 here, agreement test skipped\n"); return; }
    float w[777], x[777];
    uint8_t wq[1024];
    quant_block_q8a xq[25];
    for (int f = QUANT_Q8; f <= QUANT_Q4; f++)
        for (int rep = 0; rep < 50; rep++) {
            for (int i = 0; i < 777; i++) { w[i] = grand(); x[i] = grand(); }
            quant_row_quantize(f, w, 777, wq);
            quant_act_quantize(x, 777, xq);
            float s1 = a->dot_f32[f](wq, x, 777), s2 = b->dot_f32[f](wq, x, 777);
            ck_assert_float_le(fabsf(s1 - s2), 1e-3f * (1 + fabsf(s1)));
            s1 = a->dot_q8a[f](wq, xq, 25);
            s2 = b->dot_q8a[f](wq, xq, 25);
            ck_assert_float_le(fabsf(s1 - s2), 1e-3f * (1 + fabsf(s1)));
        }
}
END_TEST

START_TEST(test_matmul)
{
    eng_pool *p = eng_pool_new(2);
    ck_assert_ptr_nonnull(p);
    const int T = 5, K = 97, N = 70;
    static float x[5 * 97], w[70 * 97], y[5 * 70];
    static uint8_t W[70 * 4 * 34];
    for (int i = 0; i < T * K; i++) x[i] = grand();
    for (int i = 0; i < N * K; i++) w[i] = grand() * 0.1f;
    for (int f = QUANT_Q8; f <= QUANT_Q4; f++) {
        size_t rb = quant_row_bytes(f, K);
        for (int n = 0; n < N; n++) quant_row_quantize(f, w + n * K, K, W + n * rb);
        for (int isa = 0; isa < QUANT_N_ISA; isa++) {
            const quant_kernels *kern = quant_kernels_isa(isa);
            if (!kern) continue;
            for (int act = 0; act < 2; act++) {
                quant_matmul_with(p, kern, act, x, T, K, W, N, f, y);
                quant_block_q8a xq[4];
                for (int t = 0; t < T; t++) {
                    quant_act_quantize(x + t * K, K, xq);
                    for (int n = 0; n < N; n++) {
                        float want = act == QUANT_ACT_Q8 ? kern->dot_q8a[f](W + n * rb, xq, 4)
                                                         : kern->dot_f32[f](W + n * rb, x + t * K, K);
                        ck_assert_msg(y[t * N + n] == want, "matmul %s act %d (%d,%d): %g vs %g", kern->name, act,
                                      t, n, y[t * N + n], want);
                    }
                }
            }
        }
    }
    eng_pool_free(p);
}
END_TEST

/* The tiles: every variant's quant_mm_run over several jobs (an expert's gate
 * and up sharing x, odd T and N, row strides) equals its own single-row dot
 * bitwise, whatever the thread count; avx2 and vnni are bitwise equal (same
 * integer sums); and the result is close to the float reference. */
START_TEST(test_tiles_batched)
{
    eng_pool *p1 = eng_pool_new(1), *p3 = eng_pool_new(3);
    ck_assert_ptr_nonnull(p1);
    ck_assert_ptr_nonnull(p3);
    static const int Ts[] = {1, 2, 3, 4, 5, 6, 7, 9};
    static const int Ks[] = {31, 64, 97, 2048};
    enum { NMAX = 45, TMAX = 9, KMAX = 2048 };
    static float x[TMAX * (KMAX + 3)], w[NMAX * KMAX], y[3][TMAX * (NMAX + 5)];
    static uint8_t W[3][NMAX * (KMAX / 32 + 1) * 34];
    static quant_block_q8a xq[KMAX / 32 + 1];
    for (int f = QUANT_Q8; f <= QUANT_Q4; f++)
        for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++)
            for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                int K = Ks[ki], T = Ts[ti], N = ki % 2 ? 45 : 13, ldx = K + 3, ldy = N + 5, nb = (int)quant_blocks(K);
                size_t rb = quant_row_bytes(f, K);
                for (int i = 0; i < T * ldx; i++) x[i] = grand();
                for (int m = 0; m < 3; m++) {
                    for (int i = 0; i < N * K; i++) w[i] = grand() * 0.1f;
                    for (int n = 0; n < N; n++) quant_row_quantize(f, w + n * K, K, W[m] + n * rb);
                }
                const quant_kernels *avx2 = quant_kernels_isa(QUANT_ISA_AVX2);
                for (int isa = 0; isa < QUANT_N_ISA; isa++) {
                    const quant_kernels *kern = quant_kernels_isa(isa);
                    if (!kern) continue;
                    for (int pi = 0; pi < 2; pi++) {
                        /* gate and up share x (one q8a copy), the third job has its own x */
                        quant_mm_job jobs[3] = {
                            {x, (size_t)ldx, T, K, W[0], N, f, y[0], (size_t)ldy},
                            {x, (size_t)ldx, T, K, W[1], N, f, y[1], (size_t)ldy},
                            {x + 1, (size_t)ldx, T, K, W[2], N, f, y[2], (size_t)ldy},
                        };
                        for (int m = 0; m < 3; m++)
                            for (int i = 0; i < TMAX * (NMAX + 5); i++) y[m][i] = 12345.0f;
                        quant_mm_run_with(pi ? p3 : p1, kern, QUANT_ACT_Q8, jobs, 3);
                        for (int m = 0; m < 3; m++)
                            for (int t = 0; t < T; t++) {
                                quant_act_quantize(x + (m == 2) + t * ldx, K, xq);
                                for (int n = 0; n < N; n++) {
                                    float want = kern->dot_q8a[f](W[m] + n * rb, xq, nb);
                                    ck_assert_msg(y[m][t * ldy + n] == want, "%s %s T=%d K=%d job %d (%d,%d): %.9g vs dot %.9g",
                                                  kern->name, quant_format_name(f), T, K, m, t, n, y[m][t * ldy + n], want);
                                    if (isa == QUANT_ISA_VNNI && avx2) {
                                        float a2 = avx2->dot_q8a[f](W[m] + n * rb, xq, nb);
                                        ck_assert_msg(y[m][t * ldy + n] == a2, "vnni vs avx2 %s T=%d K=%d: %.9g vs %.9g",
                                                      quant_format_name(f), T, K, y[m][t * ldy + n], a2);
                                    }
                                    /* against the reference on the dequantized activations */
                                    float xd[KMAX], wd[KMAX];
                                    for (int i = 0; i < K; i++) xd[i] = xq[i / 32].d * xq[i / 32].qs[i % 32];
                                    quant_row_dequantize(f, W[m] + n * rb, K, wd);
                                    double r = 0, mag = 0;
                                    for (int i = 0; i < K; i++) { r += (double)wd[i] * xd[i]; mag += fabs((double)wd[i] * xd[i]); }
                                    ck_assert_msg(fabs(y[m][t * ldy + n] - r) <= 1e-5 * mag + 1e-6, "%s %s T=%d K=%d: %.9g vs ref %.9g",
                                                  kern->name, quant_format_name(f), T, K, y[m][t * ldy + n], r);
                                }
                            }
                        /* the padding between rows of y is left alone */
                        for (int m = 0; m < 3; m++)
                            for (int t = 0; t < T; t++)
                                for (int n = N; n < ldy; n++) ck_assert_float_eq(y[m][t * ldy + n], 12345.0f);
                    }
                }
            }
    eng_pool_free(p1);
    eng_pool_free(p3);
}
END_TEST

/* The vectorised q4 scale search gives the bytes of the scalar one (the
 * search the format was defined with), on many blocks of different shapes;
 * quant_tensor_quantize on a pool gives the bytes of row-by-row quantization. */
START_TEST(test_q4_search_and_tensor_bytes)
{
    enum { K = 1000, ROWS = 64 };
    static float w[ROWS * K];
    static uint16_t wb[ROWS * K];
    static uint8_t a[ROWS * 32 * 18], b[ROWS * 32 * 18];
    size_t rb = quant_row_bytes(QUANT_Q4, K);
    for (int rep = 0; rep < 6; rep++) {
        for (int i = 0; i < ROWS * K; i++) {
            float v = grand();
            switch (rep) {
            case 0: break;
            case 1: v *= 1e-3f; break;                                /* small */
            case 2: v *= (i % 97 == 0) ? 40.0f : 0.01f; break;        /* outliers */
            case 3: v = (i % 5) ? 0.0f : v; break;                    /* mostly zeros */
            case 4: v *= 1e-6f; break;                                /* f16 subnormal scales */
            default: v = (float)((i * 7) % 16 - 8) * 0.125f; break;  /* exactly representable, ties */
            }
            w[i] = v;
        }
        quant_q4_search_fast(0);
        for (int r = 0; r < ROWS; r++) quant_row_quantize(QUANT_Q4, w + r * K, K, a + r * rb);
        quant_q4_search_fast(1);
        for (int r = 0; r < ROWS; r++) quant_row_quantize(QUANT_Q4, w + r * K, K, b + r * rb);
        ck_assert_msg(memcmp(a, b, ROWS * rb) == 0, "q4 fast search differs from the scalar one (case %d)", rep);
    }
    /* a bf16 tensor quantized on 3 threads == row by row */
    eng_pool *p = eng_pool_new(3);
    ck_assert_ptr_nonnull(p);
    eng_f32_store(ENG_DT_BF16, w, ROWS * K, wb);
    eng_tensor t = {wb, ENG_DT_BF16, 2, {ROWS, K}};
    for (int f = QUANT_Q8; f <= QUANT_Q4; f++) {
        size_t rf = quant_row_bytes(f, K);
        static uint8_t c[ROWS * 32 * 34], d[ROWS * 32 * 34 + 64];
        float row[K];
        for (int r = 0; r < ROWS; r++) {
            eng_tensor_read_f32(&t, (int64_t)r * K, K, row);
            quant_row_quantize(f, row, K, c + r * rf);
        }
        memset(d, 0xee, sizeof d);
        ck_assert_int_eq(quant_tensor_quantize(p, f, &t, d), 0);
        ck_assert_msg(memcmp(c, d, ROWS * rf) == 0, "%s: tensor quantization differs", quant_format_name(f));
        ck_assert_int_eq(d[ROWS * rf], 0xee); /* nothing written past the rows */
    }
    ck_assert_int_eq(quant_tensor_quantize(p, QUANT_NONE, &t, b), -1);
    eng_pool_free(p);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_f16_roundtrip);
    tcase_add_test(tc, test_format_names);
    tcase_add_test(tc, test_roundtrip_bounds);
    tcase_add_test(tc, test_dots_vs_reference);
    tcase_add_test(tc, test_variants_agree);
    tcase_add_test(tc, test_matmul);
    tcase_add_test(tc, test_tiles_batched);
    tcase_add_test(tc, test_q4_search_and_tensor_bytes);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
