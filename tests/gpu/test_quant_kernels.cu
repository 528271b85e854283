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

#include "engine/cuda/quant_kernels.cuh"

extern "C" {
#include "engine/quant.h"
}

static int g_pass, g_fail;
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static double urand(void) /* [-1, 1) */
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

#define GUARD 256
typedef struct gbuf { unsigned char *base; size_t bytes; void *p; } gbuf;

static int dev_ok(cudaError_t e, const char *what, int line)
{
    if (e == cudaSuccess) return 1;
    fprintf(stderr, "FAIL: CUDA %s at line %d: %s\n", what, line, cudaGetErrorString(e));
    g_fail++;
    return 0;
}
#define DEV(x) dev_ok((x), #x, __LINE__)

/* shift: the payload starts that many bytes after a 16-byte boundary. */
static gbuf galloc(size_t bytes, const void *data, size_t shift)
{
    gbuf g = {NULL, bytes + shift, NULL};
    if (!DEV(cudaMalloc((void **)&g.base, g.bytes + 2 * GUARD))) { fprintf(stderr, "out of device memory\n"); exit(1); }
    DEV(cudaMemset(g.base, 0xA5, g.bytes + 2 * GUARD));
    g.p = g.base + GUARD + shift;
    if (data) DEV(cudaMemcpy(g.p, data, bytes, cudaMemcpyHostToDevice));
    else DEV(cudaMemset(g.p, 0xFF, bytes)); /* NaN floats */
    return g;
}

/* Copies the payload (after the shift) into out and checks the guards. */
static int gfetch(const gbuf *g, void *out, size_t shift, const char *what)
{
    unsigned char *h = (unsigned char *)malloc(g->bytes + 2 * GUARD);
    int ok = DEV(cudaDeviceSynchronize()) && DEV(cudaMemcpy(h, g->base, g->bytes + 2 * GUARD, cudaMemcpyDeviceToHost));
    for (size_t i = 0; ok && i < GUARD; i++)
        if (h[i] != 0xA5 || h[GUARD + g->bytes + i] != 0xA5) {
            fprintf(stderr, "FAIL %s: guard byte %s the buffer overwritten\n", what, h[i] != 0xA5 ? "before" : "after");
            ok = 0;
        }
    if (ok && out) memcpy(out, h + GUARD + shift, g->bytes - shift);
    free(h);
    return ok;
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
    int ok = rc == EMOE_OK && gfetch(&gy, y, 0, what) && gfetch(&gw, NULL, 0, what) && check_rows(what, fmt, Wq, x, y, 0, T, N, K);
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
    int ok = rc == EMOE_OK && gfetch(&gy, y, 0, what);
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

static void test_bad_args(void)
{
    emoe_err err = {};
    int ok = cu_quant_gemv(0, NULL, NULL, NULL, 3, 1, 4, 32, &err) == EMOE_EINVAL && strstr(err.msg, "format") &&
             cu_quant_gemv(0, NULL, NULL, NULL, 1, 1, 0, 32, &err) == EMOE_EINVAL &&
             cu_quant_gemv(0, NULL, NULL, NULL, 1, 0, 4, 32, &err) == EMOE_OK; /* nothing to do */
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
    }
    test_bad_args();
    printf("%d passed, %d failed, 0 skipped\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
