/*
 * test_quant_kernels.cu — the CUDA q8/q4 kernels (engine/cuda/quant_kernels.cu)
 * against engine/quant's CPU reference: rows quantized by quant_row_quantize,
 * dequantized by quant_row_dequantize, a double-precision dot with the float
 * activations. Odd shapes (K not a multiple of 32, N not a multiple of the 4
 * rows per thread block, T not a multiple of the 8 tokens per weight read),
 * 16-byte-aligned rows (K a multiple of 256) and unaligned ones (byte loads),
 * a weight pointer off 16-byte alignment, grouped launches with empty groups.
 * Outputs are poisoned (NaN) and guarded (0xA5 bytes around every buffer);
 * rows of y no group owns must stay poisoned.
 *
 * make test-gpu-emu runs it on the CPU emulator (build-emu/); on a CUDA build
 * `make test-gpu-quant` runs it on the GPU. Exit 0 = all passed (or SKIP: no
 * device), 1 = a failure. Closing line "N passed, N failed, N skipped".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/moe_quant.cuh"
#include "engine/cuda/quant_kernels.cuh"

extern "C" {
#include "engine/moe_plan.h"
#include "engine/quant.h"
}

static int g_pass, g_fail;
#include "gbuf.cuh"
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static double urand(void) /* [-1, 1) */
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

static void result(int ok, const char *what)
{
    printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    fflush(stdout);
    if (ok) g_pass++; else g_fail++;
}

/* W (N, K) random, quantized; the reference y for rows [r0, r0 + nr) of x. */
static void make_weights(int fmt, int N, int K, uint8_t *Wq)
{
    size_t rb = quant_row_bytes(fmt, K);
    float *w = (float *)malloc(sizeof(float) * K);
    for (int n = 0; n < N; n++) {
        double scale = n % 7 == 3 ? 4.0 : 0.05;
        for (int k = 0; k < K; k++) w[k] = (float)(urand() * scale);
        if (n % 11 == 5) for (int k = 0; k < K; k++) w[k] = 0.0f; /* an all-zero row (scale 0) */
        quant_row_quantize(fmt, w, K, Wq + (size_t)n * rb);
    }
    free(w);
}

/* Compares y rows [r0, r0 + nr) against the reference; tolerance from the
 * magnitude of the terms (float accumulation in another order). */
static int check_rows(const char *what, int fmt, const uint8_t *Wq, const float *x, const float *y, int r0, int nr,
                      int N, int K)
{
    size_t rb = quant_row_bytes(fmt, K);
    float *wd = (float *)malloc(sizeof(float) * K);
    int bad = 0;
    for (int n = 0; n < N; n++) {
        quant_row_dequantize(fmt, Wq + (size_t)n * rb, K, wd);
        for (int t = r0; t < r0 + nr; t++) {
            double r = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                r += (double)wd[k] * x[(size_t)t * K + k];
                mag += fabs((double)wd[k] * x[(size_t)t * K + k]);
            }
            double got = y[(size_t)t * N + n];
            if (!(fabs(got - r) <= 2e-6 * mag + 1e-6)) {
                if (bad < 5) fprintf(stderr, "  %s: y[%d][%d] = %.9g, want %.9g\n", what, t, n, got, r);
                bad++;
            }
        }
    }
    free(wd);
    return bad == 0;
}

static void test_gemv(int fmt, int T, int N, int K, size_t wshift)
{
    char what[128];
    snprintf(what, sizeof what, "quant gemv %s T=%d N=%d K=%d%s", quant_format_name(fmt), T, N, K,
             wshift ? " (weights off 16-byte alignment)" : "");
    size_t rb = quant_row_bytes(fmt, K);
    uint8_t *Wq = (uint8_t *)malloc(rb * N);
    float *x = (float *)malloc(sizeof(float) * T * K), *y = (float *)malloc(sizeof(float) * T * N);
    make_weights(fmt, N, K, Wq);
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = (float)(urand() * 2.0);
    gbuf gw = galloc(rb * N, Wq, wshift), gx = galloc(sizeof(float) * T * K, x, 0), gy = galloc(sizeof(float) * T * N, NULL, 0);
    emoe_err err = {};
    emoe_status rc = cu_quant_gemv(0, (float *)gy.p, (const float *)gx.p, gw.p, fmt, T, N, K, &err);
    if (rc) fprintf(stderr, "  launcher failed: %s\n", err.msg);
    int ok = rc == EMOE_OK && gfetch(&gy, y, what) && gfetch(&gw, NULL, what) && check_rows(what, fmt, Wq, x, y, 0, T, N, K);
    result(ok, what);
    cudaFree(gw.base); cudaFree(gx.base); cudaFree(gy.base);
    free(Wq); free(x); free(y);
}

/* Groups of an expert batch: group g owns rows [row0[g], row0[g] + rows[g]) of
 * x and y (an expert's tokens, contiguous as forward.c groups them); rows of
 * no group (a gap) stay NaN. */
static void test_grouped(int fmt, int N, int K, int G, const int *rows, int gather)
{
    char what[128];
    snprintf(what, sizeof what, "quant grouped %s N=%d K=%d groups=%d%s", quant_format_name(fmt), N, K, G,
             gather ? " (gathered x rows)" : "");
    size_t rb = quant_row_bytes(fmt, K);
    int row0[16], T = 0, maxr = 0;
    for (int g = 0; g < G; g++) {
        row0[g] = T;
        T += rows[g] + (g == 1); /* one unowned row after group 1 */
        if (rows[g] > maxr) maxr = rows[g];
    }
    uint8_t *Wq = (uint8_t *)malloc(rb * N * G);
    for (int g = 0; g < G; g++) make_weights(fmt, N, K, Wq + rb * N * g);
    float *x = (float *)malloc(sizeof(float) * T * K), *y = (float *)malloc(sizeof(float) * T * N);
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = (float)(urand() * 2.0);
    /* gather: output row p reads x row (p * 5 + 2) % T (rows repeat, as a token's picks do) */
    int *xr = (int *)malloc(sizeof(int) * T);
    float *xg = (float *)malloc(sizeof(float) * T * K); /* x as the kernel should see it, row by output row */
    for (int p = 0; p < T; p++) {
        xr[p] = gather ? (p * 5 + 2) % T : p;
        memcpy(xg + (size_t)p * K, x + (size_t)xr[p] * K, sizeof(float) * K);
    }
    gbuf gw = galloc(rb * N * G, Wq, 0), gx = galloc(sizeof(float) * T * K, x, 0), gy = galloc(sizeof(float) * T * N, NULL, 0);
    gbuf gxr = galloc(sizeof(int) * T, xr, 0);
    const void *wp[16];
    for (int g = 0; g < G; g++) wp[g] = (const uint8_t *)gw.p + rb * N * g;
    gbuf gp = galloc(sizeof wp, wp, 0), g0 = galloc(sizeof(int) * G, row0, 0), gr = galloc(sizeof(int) * G, rows, 0);
    emoe_err err = {};
    emoe_status rc = cu_quant_grouped(0, (float *)gy.p, (const float *)gx.p, gather ? (const int *)gxr.p : NULL,
                                      (const void *const *)gp.p, (const int *)g0.p, (const int *)gr.p, G, maxr, fmt, N, K, &err);
    if (rc) fprintf(stderr, "  launcher failed: %s\n", err.msg);
    int ok = rc == EMOE_OK && gfetch(&gy, y, what);
    for (int g = 0; ok && g < G; g++)
        ok = check_rows(what, fmt, Wq + rb * N * g, xg, y, row0[g], rows[g], N, K);
    if (ok && G > 1) /* the unowned row after group 1 */
        for (int n = 0; n < N; n++)
            if (!isnan(y[(size_t)(row0[1] + rows[1]) * N + n])) {
                fprintf(stderr, "  %s: a row of no group was written\n", what);
                ok = 0;
                break;
            }
    result(ok, what);
    cudaFree(gw.base); cudaFree(gx.base); cudaFree(gy.base); cudaFree(gp.base); cudaFree(g0.base); cudaFree(gr.base);
    cudaFree(gxr.base);
    free(Wq); free(x); free(y); free(xr); free(xg);
}

/* The backend's grouped q8/q4 MoE kernels (moe_quant.cuh): T tokens routed to
 * k of E experts, grouped by eng_moe_plan_build as the backend does; every
 * expert's [gate | up | down] quantized back to back in one extent (the
 * store's layout, odd byte offsets when dim/ffn are not multiples of 32), the
 * table's pointers at gate/up/down, unused table entries empty (count 0, NULL
 * pointers). hmid against silu(x.g)*(x.u) and eo against hmid.down in double
 * from the dequantized rows (down fed the kernel's own hmid, so each launch
 * is checked alone). Poisoned outputs: every pair's row must be written. */
static int close_rows(const char *what, const float *got, const double *want, const double *mag, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= 4e-6 * mag[i] + 1e-6)) {
            if (bad < 5) fprintf(stderr, "  %s: [%zu] = %.9g, want %.9g\n", what, i, got[i], want[i]);
            bad++;
        }
    return bad == 0;
}

static void test_moe_q(int fmt, int T, int E, int k, int dim, int ffn)
{
    char what[160];
    snprintf(what, sizeof what, "quant moe %s T=%d E=%d k=%d dim=%d ffn=%d", quant_format_name(fmt), T, E, k, dim, ffn);
    size_t rd = quant_row_bytes(fmt, dim), rf = quant_row_bytes(fmt, ffn);
    size_t ext = 2 * (size_t)ffn * rd + (size_t)dim * rf, P = (size_t)T * k;
    uint8_t *W = (uint8_t *)malloc(ext * E);
    for (int x = 0; x < E; x++) {
        make_weights(fmt, ffn, dim, W + ext * x);
        make_weights(fmt, ffn, dim, W + ext * x + (size_t)ffn * rd);
        make_weights(fmt, dim, ffn, W + ext * x + 2 * (size_t)ffn * rd);
    }
    int *ids = (int *)malloc(sizeof(int) * P);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e, dup;
            do {
                e = (int)((urand() + 1.0) * 0.5 * E) % E;
                dup = 0;
                for (int m = 0; m < j; m++) dup |= ids[t * k + m] == e;
            } while (dup);
            ids[t * k + j] = e;
        }
    eng_moe_plan plan = {};
    if (eng_moe_plan_build(&plan, ids, T, k, E) != 0) { result(0, what); free(W); free(ids); return; }
    float *x = (float *)malloc(sizeof(float) * T * dim);
    for (size_t i = 0; i < (size_t)T * dim; i++) x[i] = (float)(urand() * 2.0);
    gbuf gw = galloc(ext * E, W, 0), gx = galloc(sizeof(float) * T * dim, x, 0);
    gbuf gh = galloc(sizeof(float) * P * ffn, NULL, 0), ge = galloc(sizeof(float) * P * dim, NULL, 0);
    gbuf gpr = galloc(sizeof(int) * P, plan.pair_row, 0);
    int cap = E < (int)P ? E : (int)P;
    cu_moe_expert *tab = (cu_moe_expert *)calloc((size_t)cap, sizeof *tab);
    for (int u = 0; u < plan.n_used; u++) {
        const uint8_t *b = (const uint8_t *)gw.p + ext * plan.used[u];
        tab[u].gate = (const cu_bf16 *)b;
        tab[u].up = (const cu_bf16 *)(b + (size_t)ffn * rd);
        tab[u].down = (const cu_bf16 *)(b + 2 * (size_t)ffn * rd);
        tab[u].start = plan.start[u];
        tab[u].count = plan.count[u];
    }
    gbuf gt = galloc(sizeof *tab * cap, tab, 0);
    emoe_err err = {};
    emoe_status rc = cu_moe_gate_up_q(0, (float *)gh.p, (const float *)gx.p, (const int *)gpr.p, (const cu_moe_expert *)gt.p, cap,
                                      dim, ffn, fmt, &err);
    if (rc == EMOE_OK)
        rc = cu_moe_down_q(0, (float *)ge.p, (const float *)gh.p, (const cu_moe_expert *)gt.p, cap, dim, ffn, fmt, &err);
    if (rc) fprintf(stderr, "  launcher failed: %s\n", err.msg);
    float *h = (float *)malloc(sizeof(float) * P * ffn), *eo = (float *)malloc(sizeof(float) * P * dim);
    int ok = rc == EMOE_OK && gfetch(&gh, h, what) && gfetch(&ge, eo, what) && gfetch(&gw, NULL, what);
    double *wh = (double *)malloc(sizeof(double) * P * ffn), *mh = (double *)malloc(sizeof(double) * P * ffn);
    double *we = (double *)malloc(sizeof(double) * P * dim), *me = (double *)malloc(sizeof(double) * P * dim);
    float *g = (float *)malloc(sizeof(float) * dim), *u = (float *)malloc(sizeof(float) * dim), *dn = (float *)malloc(sizeof(float) * ffn);
    for (int uu = 0; ok && uu < plan.n_used; uu++) {
        const uint8_t *b = W + ext * plan.used[uu];
        for (int p = plan.start[uu]; p < plan.start[uu] + plan.count[uu]; p++) {
            const float *xr = x + (size_t)plan.pair_row[p] * dim;
            for (int f = 0; f < ffn; f++) {
                quant_row_dequantize(fmt, b + (size_t)f * rd, dim, g);
                quant_row_dequantize(fmt, b + (size_t)(ffn + f) * rd, dim, u);
                double sg = 0, su = 0, ag = 0, au = 0;
                for (int i = 0; i < dim; i++) {
                    sg += (double)g[i] * xr[i]; ag += fabs((double)g[i] * xr[i]);
                    su += (double)u[i] * xr[i]; au += fabs((double)u[i] * xr[i]);
                }
                double sl = sg / (1.0 + exp(-sg));
                wh[(size_t)p * ffn + f] = sl * su;
                mh[(size_t)p * ffn + f] = fabs(sl) * au + fabs(su) * ag + 1e-30; /* first-order error scale */
            }
            for (int dd = 0; dd < dim; dd++) {
                quant_row_dequantize(fmt, b + 2 * (size_t)ffn * rd + (size_t)dd * rf, ffn, dn);
                double s = 0, a = 0;
                for (int i = 0; i < ffn; i++) { s += (double)dn[i] * h[(size_t)p * ffn + i]; a += fabs((double)dn[i] * h[(size_t)p * ffn + i]); }
                we[(size_t)p * dim + dd] = s;
                me[(size_t)p * dim + dd] = a;
            }
        }
    }
    ok = ok && close_rows(what, h, wh, mh, P * ffn) && close_rows(what, eo, we, me, P * dim);
    result(ok, what);
    cudaFree(gw.base); cudaFree(gx.base); cudaFree(gh.base); cudaFree(ge.base); cudaFree(gpr.base); cudaFree(gt.base);
    eng_moe_plan_free(&plan);
    free(W); free(ids); free(x); free(tab); free(h); free(eo); free(wh); free(mh); free(we); free(me); free(g); free(u); free(dn);
}

static void test_bad_args(void)
{
    emoe_err err = {};
    int ok = cu_quant_gemv(0, NULL, NULL, NULL, 3, 1, 4, 32, &err) == EMOE_EINVAL && strstr(err.msg, "format") &&
             cu_quant_gemv(0, NULL, NULL, NULL, 1, 1, 0, 32, &err) == EMOE_EINVAL &&
             cu_quant_gemv(0, NULL, NULL, NULL, 1, 0, 4, 32, &err) == EMOE_OK && /* nothing to do */
             cu_moe_gate_up_q(0, NULL, NULL, NULL, NULL, 1, 64, 32, 0, &err) == EMOE_EINVAL &&
             cu_moe_down_q(0, NULL, NULL, NULL, 1, 0, 32, 2, &err) == EMOE_EINVAL &&
             cu_moe_down_q(0, NULL, NULL, NULL, 0, 64, 32, 2, &err) == EMOE_OK;
    result(ok, "quant launchers refuse a bad format or shape");
}

int main(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("SKIP: no CUDA device\n0 passed, 0 failed, 1 skipped\n");
        return 0;
    }
    static const int shapes[][3] = {
        /* T, N, K */
        {1, 13, 31}, {1, 64, 2048}, {3, 70, 97}, {8, 33, 256}, {9, 37, 1000}, {17, 5, 512}, {2, 6, 33}, {1, 1, 1},
    };
    for (int fmt = QUANT_Q8; fmt <= QUANT_Q4; fmt++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            test_gemv(fmt, shapes[s][0], shapes[s][1], shapes[s][2], 0);
        test_gemv(fmt, 3, 9, 2048, 2); /* byte loads on an aligned width */
        static const int rows_a[] = {3, 0, 1, 9, 2}, rows_b[] = {1, 1, 1};
        test_grouped(fmt, 21, 288, 5, rows_a, 0);
        test_grouped(fmt, 21, 288, 5, rows_a, 1);
        test_grouped(fmt, 8, 1024, 3, rows_b, 1);
        /* grouped MoE (the backend's expert path): odd widths (byte loads,
         * odd byte offsets), 256-multiples (16-byte loads), > 8 pairs of an
         * expert (several chunks), more blocks than one staging round */
        test_moe_q(fmt, 1, 8, 2, 64, 32);
        test_moe_q(fmt, 3, 8, 2, 97, 40);
        test_moe_q(fmt, 5, 16, 4, 256, 512);
        test_moe_q(fmt, 19, 4, 2, 33, 1100);
        test_moe_q(fmt, 2, 64, 8, 1024, 48);
    }
    test_bad_args();
    printf("%d passed, %d failed, 0 skipped\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
