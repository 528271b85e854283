/*
 * test_kernels.cu — make test-gpu: every CUDA op of engine/cuda/ against a
 * float32/float64 CPU implementation at several shapes (odd sizes, experts
 * 8..128, top-k 1..8, batch 1..64), |out-ref| <= atol + rtol*|ref| (or a
 * bound scaled by the sum of |terms| for reductions), NaN/Inf position checks,
 * outputs poisoned with NaN before every launch and guard bytes around every
 * device buffer; the GPU expert cache against its contract; then the fixture
 * models end to end on the cuda backend against the Hugging Face reference
 * (../shared/fixtures/reference/models.json) and against the CPU backend.
 *
 * Exit: 0 all passed (or skipped: no device / no fixtures, with the reason on a
 * line starting with SKIP), 1 any failure. Closing line "N passed, N failed,
 * N skipped".
 */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/cuda/add.cuh"
#include "engine/cuda/attention.cuh"
#include "engine/cuda/embed.cuh"
#include "engine/cuda/expert_cache.cuh"
#include "engine/cuda/linear.cuh"
#include "engine/cuda/moe.cuh"
#include "engine/cuda/moe_quant.cuh"
#include "engine/cuda/moe_route.cuh"
#include "engine/cuda/rmsnorm.cuh"
#include "engine/cuda/rope.cuh"
#include "engine/cuda/qk_rope_kv.cuh"
#include "engine/cuda/router.cuh"
#include "engine/cuda/swiglu.cuh"

extern "C" {
#include "engine/cuda/device.h"
#include "engine/cache.h"
#include "engine/engine.h"
#include "engine/store.h"
#include "engine/moe_plan.h"
#include "engine/quant.h"
#include "engine/tensor.h"
}

static int g_pass, g_fail, g_skip;
#include "gbuf.cuh"
#ifdef EMOE_CUDA_EMU
/* Under the CPU emulator (make test-gpu-emu) a 150k-vocab lm_head costs
 * seconds: models with a large vocabulary run one case, two greedy steps. */
static const int g_emu = 1;
#else
static const int g_emu = 0;
#endif
#define EMU_BIG_VOCAB 4096
static cudaStream_t g_st;

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static double urand(void) /* [-1, 1) */
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}
static int irand(int n) { return (int)((urand() + 1.0) * 0.5 * n) % n; }

static void fill(float *a, size_t n, double scale) { for (size_t i = 0; i < n; i++) a[i] = (float)(urand() * scale); }
static void fill_bf16(cu_bf16 *a, size_t n, double scale) { for (size_t i = 0; i < n; i++) a[i] = eng_f32_to_bf16((float)(urand() * scale)); }


/* out vs ref with a per-element tolerance tol[i] (or atol + rtol*|ref|).
 * A non-finite output where the reference is finite fails at its position. */
static int compare(const char *what, const float *out, const double *ref, size_t n, const double *tol, double atol,
                   double rtol)
{
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double t = tol ? tol[i] : atol + rtol * fabs(ref[i]);
        double d = fabs((double)out[i] - ref[i]);
        int fin_o = isfinite(out[i]), fin_r = isfinite(ref[i]);
        if (fin_o != fin_r || (fin_r && !(d <= t))) {
            if (bad < 5)
                fprintf(stderr, "  %s[%zu]: got %.9g, want %.9g (tol %.3g)%s\n", what, i, out[i], ref[i], t,
                        fin_o ? "" : " NON-FINITE");
            bad++;
        }
        if (fin_r && fin_o && d > worst) worst = d;
    }
    if (bad) fprintf(stderr, "  %s: %d of %zu elements out of tolerance\n", what, bad, n);
    return bad == 0;
}

static void result(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void result(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "PASS" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (ok) g_pass++; else g_fail++;
}

static int st_ok(emoe_status rc, const emoe_err *err)
{
    if (rc == EMOE_OK) return 1;
    fprintf(stderr, "  launcher failed: %s\n", err->msg);
    return 0;
}

/* ---- elementwise and norms ------------------------------------------------------- */

static void test_embed(int vocab, int dim, int T)
{
    cu_bf16 *tab = (cu_bf16 *)malloc(sizeof(cu_bf16) * vocab * dim);
    fill_bf16(tab, (size_t)vocab * dim, 2.0);
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++) ids[t] = irand(vocab);
    double *ref = (double *)malloc(sizeof(double) * T * dim);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < dim; i++) ref[(size_t)t * dim + i] = eng_bf16_to_f32(tab[(size_t)ids[t] * dim + i]);
    gbuf gt = galloc(sizeof(cu_bf16) * vocab * dim, tab), gi = galloc(sizeof(int32_t) * T, ids), go = galloc(sizeof(float) * T * dim, NULL);
    emoe_err err = {};
    float *out = (float *)malloc(sizeof(float) * T * dim);
    int ok = st_ok(cu_embed(g_st, (float *)go.p, (cu_bf16 *)gt.p, (int32_t *)gi.p, T, dim, vocab, &err), &err) &&
             gfetch(&go, out, "embed") && compare("embed", out, ref, (size_t)T * dim, NULL, 0, 0);
    result(ok, "embed vocab=%d dim=%d T=%d", vocab, dim, T);
    gfree(&gt); gfree(&gi); gfree(&go);
    free(tab); free(ids); free(ref); free(out);
}

static void ref_rmsnorm(double *out, const float *x, const float *w, int n, float eps)
{
    /* float32 as the CPU reference (forward.c rmsnorm), but summed in double:
     * the GPU's reduction order differs anyway. */
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = (double)(w[i] * (x[i] * r));
}

static void test_rmsnorm(int rows, int n, int use_map, int in_place)
{
    int src_rows = use_map ? rows + 3 : rows;
    float *x = (float *)malloc(sizeof(float) * src_rows * n), *w = (float *)malloc(sizeof(float) * n);
    fill(x, (size_t)src_rows * n, 3.0);
    for (int i = 0; i < n; i++) w[i] = (float)(1.0 + 0.2 * urand());
    int *map = (int *)malloc(sizeof(int) * rows);
    for (int r = 0; r < rows; r++) map[r] = use_map ? irand(src_rows) : r;
    double *ref = (double *)malloc(sizeof(double) * rows * n);
    for (int r = 0; r < rows; r++) ref_rmsnorm(ref + (size_t)r * n, x + (size_t)map[r] * n, w, n, 1e-6f);
    gbuf gx = galloc(sizeof(float) * src_rows * n, x), gw = galloc(sizeof(float) * n, w), gm = galloc(sizeof(int) * rows, map);
    gbuf go = in_place ? gx : galloc(sizeof(float) * rows * n, NULL);
    emoe_err err = {};
    float *out = (float *)malloc(sizeof(float) * src_rows * n);
    int ok = st_ok(cu_rmsnorm(g_st, (float *)go.p, (float *)gx.p, use_map ? (int *)gm.p : NULL, (float *)gw.p, rows, n, 1e-6f, &err), &err) &&
             gfetch(&go, out, "rmsnorm") && compare("rmsnorm", out, ref, (size_t)rows * n, NULL, 1e-6, 1e-5);
    result(ok, "rmsnorm rows=%d n=%d rowmap=%d in_place=%d", rows, n, use_map, in_place);
    gfree(&gx); gfree(&gw); gfree(&gm);
    if (!in_place) gfree(&go);
    free(x); free(w); free(map); free(ref); free(out);
}

/* Fused residual add + RMSNorm: x and out bitwise what cu_add then cu_rmsnorm
 * give (which test_elementwise / test_rmsnorm check against the reference). */
static int all_finite_f(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) if (!isfinite(x[i])) return 0;
    return 1;
}

static void test_add_rmsnorm(int rows, int n)
{
    float *x = (float *)malloc(sizeof(float) * rows * n), *a = (float *)malloc(sizeof(float) * rows * n), *w = (float *)malloc(sizeof(float) * n);
    fill(x, (size_t)rows * n, 1.0); fill(a, (size_t)rows * n, 1.0); fill(w, n, 1.0);
    gbuf gx1 = galloc(sizeof(float) * rows * n, x), gx2 = galloc(sizeof(float) * rows * n, x), ga = galloc(sizeof(float) * rows * n, a);
    gbuf gw = galloc(sizeof(float) * n, w), go1 = galloc(sizeof(float) * rows * n, NULL), go2 = galloc(sizeof(float) * rows * n, NULL);
    emoe_err err = {};
    float *x1 = (float *)malloc(sizeof(float) * rows * n), *x2 = (float *)malloc(sizeof(float) * rows * n);
    float *o1 = (float *)malloc(sizeof(float) * rows * n), *o2 = (float *)malloc(sizeof(float) * rows * n);
    int ok = st_ok(cu_add_rmsnorm(g_st, (float *)gx1.p, (float *)ga.p, (float *)go1.p, (float *)gw.p, rows, n, 1e-6f, &err), &err) &&
             st_ok(cu_add(g_st, (float *)gx2.p, (float *)ga.p, (size_t)rows * n, &err), &err) &&
             st_ok(cu_rmsnorm(g_st, (float *)go2.p, (float *)gx2.p, NULL, (float *)gw.p, rows, n, 1e-6f, &err), &err) &&
             gfetch(&gx1, x1, "add_rmsnorm x") && gfetch(&gx2, x2, "add x") && gfetch(&go1, o1, "add_rmsnorm out") &&
             gfetch(&go2, o2, "rmsnorm out");
    ok = ok && !memcmp(x1, x2, sizeof(float) * rows * n) && !memcmp(o1, o2, sizeof(float) * rows * n) && all_finite_f(o1, (size_t)rows * n);
    result(ok, "add_rmsnorm rows=%d n=%d: bitwise = add then rmsnorm", rows, n);
    gfree(&gx1); gfree(&gx2); gfree(&ga); gfree(&gw); gfree(&go1); gfree(&go2);
    free(x); free(a); free(w); free(x1); free(x2); free(o1); free(o2);
}

static void test_rope(int T, int heads, int hd, int extra)
{
    int stride = heads * hd + extra; /* rows may be wider than the heads roped */
    float *v = (float *)malloc(sizeof(float) * T * stride);
    fill(v, (size_t)T * stride, 1.0);
    int *pos = (int *)malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) pos[t] = t == 0 ? 0 : irand(8192);
    float *invf = (float *)malloc(sizeof(float) * hd / 2);
    for (int i = 0; i < hd / 2; i++) invf[i] = 1.0f / powf(1000000.0f, (float)(2 * i) / (float)hd);
    double *ref = (double *)malloc(sizeof(double) * T * stride);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < stride; c++) ref[(size_t)t * stride + c] = v[(size_t)t * stride + c];
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < hd / 2; i++) {
                float ang = (float)pos[t] * invf[i];
                float c = (float)cos((double)ang), s = (float)sin((double)ang);
                const float *x = v + (size_t)t * stride + (size_t)h * hd;
                double *o = ref + (size_t)t * stride + (size_t)h * hd;
                o[i] = x[i] * c - x[i + hd / 2] * s;
                o[i + hd / 2] = x[i + hd / 2] * c + x[i] * s;
            }
    gbuf gv = galloc(sizeof(float) * T * stride, v), gp = galloc(sizeof(int) * T, pos), gf = galloc(sizeof(float) * hd / 2, invf);
    emoe_err err = {};
    float *out = (float *)malloc(sizeof(float) * T * stride);
    int ok = st_ok(cu_rope(g_st, (float *)gv.p, T, heads, hd, stride, (int *)gp.p, (float *)gf.p, &err), &err) &&
             gfetch(&gv, out, "rope") && compare("rope", out, ref, (size_t)T * stride, NULL, 1e-6, 1e-6);
    result(ok, "rope T=%d heads=%d hd=%d stride=%d", T, heads, hd, stride);
    gfree(&gv); gfree(&gp); gfree(&gf);
    free(v); free(pos); free(invf); free(ref); free(out);
}

static void test_elementwise(int T, int n)
{
    size_t N = (size_t)T * n;
    float *a = (float *)malloc(sizeof(float) * N), *b = (float *)malloc(sizeof(float) * N), *g = (float *)malloc(sizeof(float) * T);
    float *bias = (float *)malloc(sizeof(float) * n), *out = (float *)malloc(sizeof(float) * N);
    double *ref = (double *)malloc(sizeof(double) * N);
    fill(a, N, 4.0); fill(b, N, 4.0); fill(g, T, 6.0); fill(bias, n, 1.0);
    emoe_err err = {};
    /* swiglu */
    gbuf ga = galloc(sizeof(float) * N, a), gb = galloc(sizeof(float) * N, b);
    for (size_t i = 0; i < N; i++) ref[i] = (double)((a[i] / (1.0f + expf(-a[i]))) * b[i]);
    int ok = st_ok(cu_swiglu(g_st, (float *)ga.p, (float *)gb.p, N, &err), &err) && gfetch(&ga, out, "swiglu") &&
             compare("swiglu", out, ref, N, NULL, 1e-6, 1e-6);
    result(ok, "swiglu n=%zu", N);
    gfree(&ga);
    /* add */
    ga = galloc(sizeof(float) * N, a);
    for (size_t i = 0; i < N; i++) ref[i] = (double)(a[i] + b[i]);
    ok = st_ok(cu_add(g_st, (float *)ga.p, (float *)gb.p, N, &err), &err) && gfetch(&ga, out, "add") &&
         compare("add", out, ref, N, NULL, 0, 0);
    result(ok, "add n=%zu", N);
    gfree(&ga);
    /* bias add */
    ga = galloc(sizeof(float) * N, a);
    gbuf gbias = galloc(sizeof(float) * n, bias);
    for (size_t i = 0; i < N; i++) ref[i] = (double)(a[i] + bias[i % n]);
    ok = st_ok(cu_bias_add(g_st, (float *)ga.p, (float *)gbias.p, T, n, &err), &err) && gfetch(&ga, out, "bias_add") &&
         compare("bias_add", out, ref, N, NULL, 0, 0);
    result(ok, "bias_add rows=%d n=%d", T, n);
    gfree(&ga); gfree(&gbias);
    /* gate add */
    ga = galloc(sizeof(float) * N, a);
    gbuf gg = galloc(sizeof(float) * T, g);
    for (size_t i = 0; i < N; i++) ref[i] = (double)a[i] + (1.0 / (1.0 + exp(-(double)g[i / n]))) * b[i];
    ok = st_ok(cu_gate_add(g_st, (float *)ga.p, (float *)gb.p, (float *)gg.p, T, n, &err), &err) &&
         gfetch(&ga, out, "gate_add") && compare("gate_add", out, ref, N, NULL, 1e-6, 1e-6);
    result(ok, "gate_add T=%d n=%d", T, n);
    gfree(&ga); gfree(&gg);
    /* f32 -> bf16: bit-exact against the host conversion, incl. specials */
    a[0] = NAN; if (N > 1) a[1] = INFINITY; if (N > 2) a[2] = -0.0f; if (N > 3) a[3] = 3.3895314e38f;
    ga = galloc(sizeof(float) * N, a);
    gbuf gh = galloc(sizeof(cu_bf16) * N, NULL);
    cu_bf16 *hb = (cu_bf16 *)malloc(sizeof(cu_bf16) * N);
    ok = st_ok(cu_f32_to_bf16(g_st, (cu_bf16 *)gh.p, (float *)ga.p, N, &err), &err) && gfetch(&gh, hb, "f32_to_bf16");
    for (size_t i = 0; ok && i < N; i++)
        if (hb[i] != eng_f32_to_bf16(a[i])) { fprintf(stderr, "  f32_to_bf16[%zu]: %04x want %04x\n", i, hb[i], eng_f32_to_bf16(a[i])); ok = 0; }
    result(ok, "f32_to_bf16 n=%zu", N);
    gfree(&ga); gfree(&gh); gfree(&gb);
    free(a); free(b); free(g); free(bias); free(out); free(ref); free(hb);
}

/* ---- linear ---------------------------------------------------------------------- */

static void test_linear(int T, int N, int K, int bias_on, int path /* 0 gemv, 1 cublas */, cublasHandle_t blas)
{
    float *x = (float *)malloc(sizeof(float) * T * K), *b = (float *)malloc(sizeof(float) * N);
    cu_bf16 *W = (cu_bf16 *)malloc(sizeof(cu_bf16) * N * K);
    fill(x, (size_t)T * K, 1.0); fill(b, N, 0.5); fill_bf16(W, (size_t)N * K, 0.2);
    double *ref = (double *)malloc(sizeof(double) * T * N), *tol = (double *)malloc(sizeof(double) * T * N);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double s = 0, a = 0;
            for (int k = 0; k < K; k++) {
                float xv = x[(size_t)t * K + k];
                if (path) xv = eng_bf16_to_f32(eng_f32_to_bf16(xv)); /* the cuBLAS path rounds activations */
                double term = (double)xv * eng_bf16_to_f32(W[(size_t)n * K + k]);
                s += term;
                a += fabs(term);
            }
            if (bias_on) s += b[n];
            ref[(size_t)t * N + n] = s;
            tol[(size_t)t * N + n] = 1e-6 + (path ? 1e-4 : 4e-6 * sqrt((double)K)) * a;
        }
    gbuf gx = galloc(sizeof(float) * T * K, x), gw = galloc(sizeof(cu_bf16) * N * K, W), gb = galloc(sizeof(float) * N, b);
    gbuf gy = galloc(sizeof(float) * T * N, NULL), gxb = galloc(sizeof(cu_bf16) * T * K, NULL);
    emoe_err err = {};
    emoe_status rc = path ? cu_linear_cublas(blas, g_st, (float *)gy.p, (float *)gx.p, (cu_bf16 *)gxb.p, (cu_bf16 *)gw.p,
                                             bias_on ? (float *)gb.p : NULL, T, N, K, &err)
                          : cu_linear_gemv(g_st, (float *)gy.p, (float *)gx.p, (cu_bf16 *)gw.p, bias_on ? (float *)gb.p : NULL,
                                           T, N, K, &err);
    float *out = (float *)malloc(sizeof(float) * T * N);
    int ok = st_ok(rc, &err) && gfetch(&gy, out, "linear") && gfetch(&gxb, NULL, "linear xb") &&
             compare("linear", out, ref, (size_t)T * N, tol, 0, 0);
    result(ok, "linear_%s T=%d N=%d K=%d bias=%d", path ? "cublas" : "gemv", T, N, K, bias_on);
    gfree(&gx); gfree(&gw); gfree(&gb); gfree(&gy); gfree(&gxb);
    free(x); free(b); free(W); free(ref); free(tol); free(out);
}

/* ---- router ------------------------------------------------------------------------ */

static void test_router(int T, int E, int k, int renorm, int ties)
{
    float *lg = (float *)malloc(sizeof(float) * T * E);
    /* Distinct logits with clear gaps (a shuffled ladder plus small noise), so
     * the top-k set is unambiguous. */
    for (int t = 0; t < T; t++) {
        int *perm = (int *)malloc(sizeof(int) * E);
        for (int x = 0; x < E; x++) perm[x] = x;
        for (int x = E - 1; x > 0; x--) { int j = irand(x + 1), tmp = perm[x]; perm[x] = perm[j]; perm[j] = tmp; }
        /* ties 1: pairs of exactly equal logits, 2: all equal; the lower expert index must come first */
        for (int x = 0; x < E; x++)
            lg[(size_t)t * E + x] = ties == 2 ? 0.25f : ties ? (float)((perm[x] / 2) * 0.07) : (float)(perm[x] * 0.07 + 0.01 * urand());
        free(perm);
    }
    /* Reference: forward.c route_rows in float32. */
    float *probs = (float *)malloc(sizeof(float) * T * E);
    int *rid = (int *)malloc(sizeof(int) * T * k);
    double *rw = (double *)malloc(sizeof(double) * T * k), *rp = (double *)malloc(sizeof(double) * T * E);
    for (int t = 0; t < T; t++) {
        float *p = probs + (size_t)t * E, mx = -INFINITY, sum = 0;
        memcpy(p, lg + (size_t)t * E, sizeof(float) * E);
        for (int x = 0; x < E; x++) mx = fmaxf(mx, p[x]);
        for (int x = 0; x < E; x++) { p[x] = expf(p[x] - mx); sum += p[x]; }
        for (int x = 0; x < E; x++) { p[x] /= sum; rp[(size_t)t * E + x] = p[x]; }
        int ids[CU_ROUTER_MAX_K];
        float w[CU_ROUTER_MAX_K];
        for (int j = 0; j < k; j++) { ids[j] = -1; w[j] = -1; }
        for (int x = 0; x < E; x++) {
            int j = k;
            while (j > 0 && (ids[j - 1] < 0 || p[x] > w[j - 1])) j--;
            if (j >= k) continue;
            for (int m = k - 1; m > j; m--) { ids[m] = ids[m - 1]; w[m] = w[m - 1]; }
            ids[j] = x; w[j] = p[x];
        }
        float ws = 0;
        for (int j = 0; j < k; j++) ws += w[j];
        for (int j = 0; j < k; j++) { rid[(size_t)t * k + j] = ids[j]; rw[(size_t)t * k + j] = renorm ? w[j] / ws : w[j]; }
    }
    gbuf gp = galloc(sizeof(float) * T * E, lg), gi = galloc(sizeof(int) * T * k, NULL), gw = galloc(sizeof(float) * T * k, NULL);
    emoe_err err = {};
    int *oid = (int *)malloc(sizeof(int) * T * k);
    float *ow = (float *)malloc(sizeof(float) * T * k), *op = (float *)malloc(sizeof(float) * T * E);
    int ok = st_ok(cu_router_topk(g_st, (float *)gp.p, (int *)gi.p, (float *)gw.p, T, E, k, renorm, &err), &err) &&
             gfetch(&gi, oid, "router ids") && gfetch(&gw, ow, "router w") && gfetch(&gp, op, "router probs");
    for (int i = 0; ok && i < T * k; i++)
        if (oid[i] != rid[i]) { fprintf(stderr, "  router ids[%d] = %d, want %d\n", i, oid[i], rid[i]); ok = 0; }
    ok = ok && compare("router probs", op, rp, (size_t)T * E, NULL, 1e-7, 1e-5) &&
         compare("router weights", ow, rw, (size_t)T * k, NULL, 1e-7, 1e-5);
    result(ok, "router_topk T=%d E=%d k=%d renorm=%d ties=%d", T, E, k, renorm, ties);
    gfree(&gp); gfree(&gi); gfree(&gw);
    free(lg); free(probs); free(rid); free(rw); free(rp); free(oid); free(ow); free(op);
}

/* Fused q/k norm + RoPE + KV write against a double reference of the three
 * steps: q rewritten, K (normed, roped) and V stored at each row's position
 * (other positions untouched: NaN stays NaN), f32 or bf16 KV. */
static void test_qk_rope_kv(int T, int heads, int kvh, int hd, int norm, int kv_bf16)
{
    int qd = heads * hd, kvd = kvh * hd, half = hd / 2, cap = 41, layers = 2, layer = 1;
    float eps = 1e-6f;
    float *q = (float *)malloc(sizeof(float) * T * qd), *k = (float *)malloc(sizeof(float) * T * kvd), *v = (float *)malloc(sizeof(float) * T * kvd);
    fill(q, (size_t)T * qd, 2.0); fill(k, (size_t)T * kvd, 2.0); fill(v, (size_t)T * kvd, 1.0);
    int nq = norm == 1 ? hd : qd, nk = norm == 1 ? hd : kvd;
    float *wq = (float *)malloc(sizeof(float) * nq), *wk = (float *)malloc(sizeof(float) * nk);
    for (int i = 0; i < nq; i++) wq[i] = (float)(1.0 + 0.5 * urand());
    for (int i = 0; i < nk; i++) wk[i] = (float)(1.0 + 0.5 * urand());
    /* rows share one KV buffer at distinct positions (cap prime, T <= cap) */
    int *pos = (int *)malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) pos[t] = (t * 7 + 3) % cap;
    float *invf = (float *)malloc(sizeof(float) * half);
    for (int i = 0; i < half; i++) invf[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)hd);
    double *rq = (double *)malloc(sizeof(double) * T * qd), *rk = (double *)malloc(sizeof(double) * T * kvd);
    for (int t = 0; t < T; t++)
        for (int which = 0; which < 2; which++) {
            const float *x = which ? k + (size_t)t * kvd : q + (size_t)t * qd;
            double *o = which ? rk + (size_t)t * kvd : rq + (size_t)t * qd;
            const float *w = which ? wk : wq;
            int nh = which ? kvh : heads, n = nh * hd;
            double *xn = (double *)malloc(sizeof(double) * n);
            for (int h = 0; h < nh; h++) {
                double ss = 0;
                int lo = norm == 1 ? h * hd : 0, cnt = norm == 1 ? hd : n;
                for (int i = 0; i < cnt; i++) ss += (double)x[lo + i] * x[lo + i];
                double r = 1.0 / sqrt(ss / cnt + eps);
                for (int i = 0; i < hd; i++) {
                    int at = h * hd + i;
                    xn[at] = norm == 0 ? x[at] : (double)w[norm == 1 ? i : at] * (x[at] * r);
                }
            }
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < half; i++) {
                    float ang = (float)pos[t] * invf[i];
                    double c = (float)cos((double)ang), sn = (float)sin((double)ang);
                    double x1 = xn[h * hd + i], x2 = xn[h * hd + i + half];
                    o[h * hd + i] = x1 * c - x2 * sn;
                    o[h * hd + i + half] = x2 * c + x1 * sn;
                }
            free(xn);
        }
    size_t es = kv_bf16 ? 2 : 4, sz = (size_t)layers * 2 * cap * kvd;
    unsigned char *kv0 = (unsigned char *)malloc(es * sz);
    memset(kv0, 0xFF, es * sz); /* NaN in both element types */
    gbuf gq = galloc(sizeof(float) * T * qd, q), gk = galloc(sizeof(float) * T * kvd, k), gv = galloc(sizeof(float) * T * kvd, v);
    gbuf gwq = galloc(sizeof(float) * nq, wq), gwk = galloc(sizeof(float) * nk, wk), gp = galloc(sizeof(int) * T, pos);
    gbuf gf = galloc(sizeof(float) * half, invf), gkv = galloc(es * sz, kv0);
    cu_att_row *rows = (cu_att_row *)malloc(sizeof(cu_att_row) * T);
    for (int t = 0; t < T; t++) rows[t] = (cu_att_row){gkv.p, cap, pos[t]};
    gbuf gr = galloc(sizeof(cu_att_row) * T, rows);
    emoe_err err = {};
    int ok = st_ok(cu_qk_rope_kv(g_st, (float *)gq.p, (float *)gk.p, (float *)gv.p, T, heads, kvh, hd, norm,
                                 norm ? (float *)gwq.p : NULL, norm ? (float *)gwk.p : NULL, eps, (int *)gp.p, (float *)gf.p,
                                 (cu_att_row *)gr.p, layer, kv_bf16, &err), &err);
    float *oq = (float *)malloc(sizeof(float) * T * qd);
    unsigned char *okv = (unsigned char *)malloc(es * sz);
    ok = ok && gfetch(&gq, oq, "qk_rope_kv q") && gfetch(&gkv, okv, "qk_rope_kv kv") &&
         compare("qk_rope_kv q", oq, rq, (size_t)T * qd, NULL, 1e-5, 1e-5);
    /* the cache: K/V at each row's position of layer 1; everything else untouched */
    double kt = kv_bf16 ? 8e-3 : 1e-5;
    for (size_t e = 0; ok && e < sz; e++) {
        size_t m = e / ((size_t)cap * kvd), p = (e / kvd) % cap, i = e % kvd;
        int t = -1;
        for (int r = 0; r < T; r++) if (pos[r] == (int)p) t = r;
        float got = kv_bf16 ? eng_bf16_to_f32(((cu_bf16 *)okv)[e]) : ((float *)okv)[e];
        if ((int)m / 2 != layer || t < 0) {
            if (!isnan(got)) { fprintf(stderr, "  kv [%zu] written outside the rows' positions\n", e); ok = 0; }
            continue;
        }
        double want = m % 2 == 0 ? rk[(size_t)t * kvd + i] : (double)v[(size_t)t * kvd + i];
        if (kv_bf16 && m % 2 == 1) ok = ((cu_bf16 *)okv)[e] == eng_f32_to_bf16(v[(size_t)t * kvd + i]);
        else ok = fabs(got - want) <= kt * (1.0 + fabs(want));
        if (!ok) fprintf(stderr, "  kv [%zu] (%s row %d) = %g, want %g\n", e, m % 2 ? "V" : "K", t, got, want);
    }
    result(ok, "qk_rope_kv T=%d heads=%d kv_heads=%d hd=%d norm=%s kv=%s", T, heads, kvh, hd,
           norm == 0 ? "none" : norm == 1 ? "per-head" : "full", kv_bf16 ? "bf16" : "f32");
    free(oq); free(okv);
    gfree(&gq); gfree(&gk); gfree(&gv); gfree(&gwq); gfree(&gwk); gfree(&gp); gfree(&gf); gfree(&gkv); gfree(&gr);
    free(q); free(k); free(v); free(wq); free(wk); free(pos); free(invf); free(rq); free(rk); free(kv0); free(rows);
}

/* ---- attention ----------------------------------------------------------------------- */

/* Sequences with given (start position, new rows); layer 1 of 2 layers. KV
 * elements float32, or bf16 (kv_bf16: the reference sees the bf16-rounded
 * values, the stored cache must be their exact bits); splits > 1: split-KV
 * (slices of positions, then the merge kernel). */
static void test_attention(int heads, int kv_heads, int hd, const int *starts, const int *counts, int n_seq, int kv_bf16 = 0,
                           int splits = 1)
{
    int layers = 2, layer = 1, kvd = kv_heads * hd, qd = heads * hd, T = 0;
    for (int s = 0; s < n_seq; s++) T += counts[s];
    float **kv_h = (float **)calloc(n_seq, sizeof(float *));
    gbuf *kv_g = (gbuf *)calloc(n_seq, sizeof(gbuf));
    int *cap = (int *)malloc(sizeof(int) * n_seq);
    cu_att_row *rows = (cu_att_row *)malloc(sizeof(cu_att_row) * T);
    float *q = (float *)malloc(sizeof(float) * T * qd), *k = (float *)malloc(sizeof(float) * T * kvd), *v = (float *)malloc(sizeof(float) * T * kvd);
    fill(q, (size_t)T * qd, 1.0); fill(k, (size_t)T * kvd, 1.0); fill(v, (size_t)T * kvd, 1.0);
    /* bf16 KV: what the reference sees is the rounded value. */
    float *kr = (float *)malloc(sizeof(float) * T * kvd), *vr = (float *)malloc(sizeof(float) * T * kvd);
    for (size_t i = 0; i < (size_t)T * kvd; i++) {
        kr[i] = kv_bf16 ? eng_bf16_to_f32(eng_f32_to_bf16(k[i])) : k[i];
        vr[i] = kv_bf16 ? eng_bf16_to_f32(eng_f32_to_bf16(v[i])) : v[i];
    }
    int r = 0;
    for (int s = 0; s < n_seq; s++) {
        cap[s] = starts[s] + counts[s] + 5;
        size_t sz = (size_t)layers * 2 * cap[s] * kvd;
        kv_h[s] = (float *)malloc(sizeof(float) * sz);
        /* Past positions random; positions at/after the new rows NaN: a kernel
         * reading beyond a row's position (non-causal) produces NaN. */
        for (size_t i = 0; i < sz; i++) kv_h[s][i] = NAN;
        for (int m = 0; m < layers * 2; m++)
            for (int p = 0; p < starts[s]; p++)
                for (int i = 0; i < kvd; i++) {
                    float x = (float)urand();
                    kv_h[s][((size_t)m * cap[s] + p) * kvd + i] = kv_bf16 ? eng_bf16_to_f32(eng_f32_to_bf16(x)) : x;
                }
        if (kv_bf16) {
            cu_bf16 *b = (cu_bf16 *)malloc(sizeof(cu_bf16) * sz);
            for (size_t i = 0; i < sz; i++) b[i] = eng_f32_to_bf16(kv_h[s][i]);
            kv_g[s] = galloc(sizeof(cu_bf16) * sz, b);
            free(b);
        } else {
            kv_g[s] = galloc(sizeof(float) * sz, kv_h[s]);
        }
        for (int j = 0; j < counts[s]; j++, r++) rows[r] = (cu_att_row){kv_g[s].p, cap[s], starts[s] + j};
    }
    /* Expected KV after the store, and attention in double. */
    r = 0;
    for (int s = 0; s < n_seq; s++)
        for (int j = 0; j < counts[s]; j++, r++) {
            float *K = kv_h[s] + ((size_t)layer * 2) * cap[s] * kvd, *V = K + (size_t)cap[s] * kvd;
            memcpy(K + (size_t)(starts[s] + j) * kvd, kr + (size_t)r * kvd, sizeof(float) * kvd);
            memcpy(V + (size_t)(starts[s] + j) * kvd, vr + (size_t)r * kvd, sizeof(float) * kvd);
        }
    double *ref = (double *)malloc(sizeof(double) * T * qd);
    r = 0;
    for (int s = 0; s < n_seq; s++)
        for (int j = 0; j < counts[s]; j++, r++) {
            int pos = starts[s] + j;
            const float *K = kv_h[s] + ((size_t)layer * 2) * cap[s] * kvd, *V = K + (size_t)cap[s] * kvd;
            for (int h = 0; h < heads; h++) {
                int kh = h / (heads / kv_heads);
                double *sc = (double *)malloc(sizeof(double) * (pos + 1)), mx = -INFINITY, sum = 0;
                for (int p = 0; p <= pos; p++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += (double)q[(size_t)r * qd + h * hd + i] * K[(size_t)p * kvd + kh * hd + i];
                    sc[p] = d / sqrt((double)hd);
                    if (sc[p] > mx) mx = sc[p];
                }
                for (int p = 0; p <= pos; p++) { sc[p] = exp(sc[p] - mx); sum += sc[p]; }
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int p = 0; p <= pos; p++) o += sc[p] / sum * V[(size_t)p * kvd + kh * hd + i];
                    ref[(size_t)r * qd + h * hd + i] = o;
                }
                free(sc);
            }
        }
    gbuf gq = galloc(sizeof(float) * T * qd, q), gk = galloc(sizeof(float) * T * kvd, k), gv = galloc(sizeof(float) * T * kvd, v);
    gbuf gr = galloc(sizeof(cu_att_row) * T, rows), go = galloc(sizeof(float) * T * qd, NULL);
    gbuf gp = galloc(sizeof(float) * (splits > 1 ? cu_att_part_floats(T, heads, hd, splits) : 1), NULL);
    emoe_err err = {};
    float *out = (float *)malloc(sizeof(float) * T * qd);
    int ok = st_ok(cu_kv_store(g_st, (cu_att_row *)gr.p, T, layer, (float *)gk.p, (float *)gv.p, kvd, kv_bf16, &err), &err) &&
             st_ok(cu_attention(g_st, (float *)go.p, (float *)gq.p, (cu_att_row *)gr.p, T, layer, heads, kv_heads, hd, kv_bf16,
                                splits, splits > 1 ? (float *)gp.p : NULL, &err), &err) &&
             gfetch(&go, out, "attention") && compare("attention", out, ref, (size_t)T * qd, NULL, 1e-5, 1e-4);
    /* The stored KV: exactly the expected buffer (NaN positions stay NaN, by bits). */
    for (int s = 0; ok && s < n_seq; s++) {
        size_t sz = (size_t)layers * 2 * cap[s] * kvd;
        float *got = (float *)malloc(sizeof(float) * sz);
        if (kv_bf16) {
            cu_bf16 *b = (cu_bf16 *)malloc(sizeof(cu_bf16) * sz);
            ok = gfetch(&kv_g[s], b, "kv");
            for (size_t i = 0; ok && i < sz; i++)
                if (b[i] != eng_f32_to_bf16(kv_h[s][i])) { fprintf(stderr, "  kv seq %d [%zu] differs\n", s, i); ok = 0; }
            free(b);
        } else {
            ok = gfetch(&kv_g[s], got, "kv");
            for (size_t i = 0; ok && i < sz; i++)
                if (memcmp(&got[i], &kv_h[s][i], 4)) { fprintf(stderr, "  kv seq %d [%zu] differs\n", s, i); ok = 0; }
        }
        free(got);
    }
    result(ok, "attention heads=%d kv_heads=%d hd=%d seqs=%d T=%d kv=%s splits=%d", heads, kv_heads, hd, n_seq, T,
           kv_bf16 ? "bf16" : "f32", splits);
    gfree(&gp);
    free(kr); free(vr);
    for (int s = 0; s < n_seq; s++) { gfree(&kv_g[s]); free(kv_h[s]); }
    gfree(&gq); gfree(&gk); gfree(&gv); gfree(&gr); gfree(&go);
    free(kv_h); free(kv_g); free(cap); free(rows); free(q); free(k); free(v); free(ref); free(out);
}

/* ---- grouped MoE ------------------------------------------------------------------------ */

static void test_moe(int T, int E, int k, int dim, int ffn, int groups)
{
    int *ids = (int *)malloc(sizeof(int) * T * k);
    float *rw = (float *)malloc(sizeof(float) * T * k), *x = (float *)malloc(sizeof(float) * T * dim);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e, dup;
            do { e = irand(E); dup = 0; for (int m = 0; m < j; m++) dup |= ids[t * k + m] == e; } while (dup);
            ids[t * k + j] = e;
            rw[t * k + j] = (float)(0.5 + 0.5 * urand());
        }
    fill(x, (size_t)T * dim, 1.0);
    size_t fd = (size_t)ffn * dim, slot = 3 * fd;
    cu_bf16 *wts = (cu_bf16 *)malloc(sizeof(cu_bf16) * slot * E); /* expert e in "slot" (E-1-e): not in id order */
    fill_bf16(wts, slot * E, 0.3);
    eng_moe_plan plan = {};
    if (eng_moe_plan_build(&plan, ids, T, k, E) != 0) { result(0, "moe plan"); return; }
    gbuf gw = galloc(sizeof(cu_bf16) * slot * E, wts);
    const cu_bf16 *dw = (const cu_bf16 *)gw.p;
    cu_moe_expert *tab = (cu_moe_expert *)malloc(sizeof(cu_moe_expert) * plan.n_used);
    for (int u = 0; u < plan.n_used; u++) {
        const cu_bf16 *b = dw + (size_t)(E - 1 - plan.used[u]) * slot;
        tab[u] = (cu_moe_expert){b, b + fd, b + 2 * fd, plan.start[u], plan.count[u]};
    }
    /* Reference per token. */
    double *ref = (double *)calloc((size_t)T * dim, sizeof(double)), *tol = (double *)calloc((size_t)T * dim, sizeof(double));
    float *hm = (float *)malloc(sizeof(float) * ffn);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            const cu_bf16 *b = wts + (size_t)(E - 1 - ids[t * k + j]) * slot;
            for (int f = 0; f < ffn; f++) {
                double g = 0, u = 0;
                for (int i = 0; i < dim; i++) {
                    g += (double)x[(size_t)t * dim + i] * eng_bf16_to_f32(b[(size_t)f * dim + i]);
                    u += (double)x[(size_t)t * dim + i] * eng_bf16_to_f32(b[fd + (size_t)f * dim + i]);
                }
                hm[f] = (float)(g / (1.0 + exp(-g)) * u);
            }
            for (int d = 0; d < dim; d++) {
                double s = 0, a = 0;
                for (int f = 0; f < ffn; f++) {
                    double term = (double)hm[f] * eng_bf16_to_f32(b[2 * fd + (size_t)d * ffn + f]);
                    s += term; a += fabs(term);
                }
                ref[(size_t)t * dim + d] += rw[t * k + j] * s;
                tol[(size_t)t * dim + d] += rw[t * k + j] * (1e-4 * a) + 1e-6;
            }
        }
    gbuf gx = galloc(sizeof(float) * T * dim, x), gpr = galloc(sizeof(int) * T * k, plan.pair_row);
    gbuf gpo = galloc(sizeof(int) * T * k, plan.pair_of), grw = galloc(sizeof(float) * T * k, rw);
    gbuf gtab = galloc(sizeof(cu_moe_expert) * plan.n_used, tab);
    gbuf gh = galloc(sizeof(float) * T * k * ffn, NULL), geo = galloc(sizeof(float) * T * k * dim, NULL);
    gbuf go = galloc(sizeof(float) * T * dim, NULL);
    emoe_err err = {};
    int ok = 1;
    /* Split the used experts into `groups` launches, as the backend does when
     * the slot budget is smaller than a layer's set. */
    int per = (plan.n_used + groups - 1) / groups;
    for (int g0 = 0; ok && g0 < plan.n_used; g0 += per) {
        int gn = plan.n_used - g0 < per ? plan.n_used - g0 : per;
        const cu_moe_expert *tg = (const cu_moe_expert *)gtab.p + g0;
        ok = st_ok(cu_moe_gate_up(g_st, (float *)gh.p, (float *)gx.p, (int *)gpr.p, tg, gn, dim, ffn, &err), &err) &&
             st_ok(cu_moe_down(g_st, (float *)geo.p, (float *)gh.p, tg, gn, dim, ffn, &err), &err);
    }
    ok = ok && st_ok(cu_moe_combine(g_st, (float *)go.p, (float *)geo.p, (int *)gpo.p, (float *)grw.p, T, k, dim, &err), &err);
    float *out = (float *)malloc(sizeof(float) * T * dim);
    ok = ok && gfetch(&gh, NULL, "moe hmid") && gfetch(&geo, NULL, "moe eo") && gfetch(&go, out, "moe out") &&
         compare("moe", out, ref, (size_t)T * dim, tol, 0, 0);
    /* The fused combine + shared gate + residual: x0 + routed + sigmoid(g) * sh. */
    {
        float *x0 = (float *)malloc(sizeof(float) * T * dim), *sh = (float *)malloc(sizeof(float) * T * dim);
        float *g = (float *)malloc(sizeof(float) * T), *got = (float *)malloc(sizeof(float) * T * dim);
        fill(x0, (size_t)T * dim, 1.0); fill(sh, (size_t)T * dim, 1.0); fill(g, T, 2.0);
        double *r2 = (double *)malloc(sizeof(double) * T * dim), *t2 = (double *)malloc(sizeof(double) * T * dim);
        for (int t = 0; t < T; t++)
            for (int d = 0; d < dim; d++) {
                size_t at = (size_t)t * dim + d;
                double gt = groups % 2 ? 1.0 / (1.0 + exp(-(double)g[t])) : 0.0; /* odd groups: with a shared expert */
                r2[at] = x0[at] + ref[at] + gt * sh[at];
                t2[at] = tol[at] + 1e-6 * (fabs(x0[at]) + fabs(gt * sh[at]));
            }
        gbuf gx0 = galloc(sizeof(float) * T * dim, x0), gsh = galloc(sizeof(float) * T * dim, sh), gg = galloc(sizeof(float) * T, g);
        int with_sh = groups % 2;
        /* and the next RMSNorm of the new x, bitwise as cu_rmsnorm computes it from that x */
        float *nw = (float *)malloc(sizeof(float) * dim), *hg = (float *)malloc(sizeof(float) * T * dim), *hr = (float *)malloc(sizeof(float) * T * dim);
        for (int i = 0; i < dim; i++) nw[i] = (float)(1.0 + 0.5 * urand());
        gbuf gnw = galloc(sizeof(float) * dim, nw), gh2 = galloc(sizeof(float) * T * dim, NULL), gh3 = galloc(sizeof(float) * T * dim, NULL);
        ok = ok && st_ok(cu_moe_combine_residual(g_st, (float *)gx0.p, (float *)geo.p, (int *)gpo.p, (float *)grw.p,
                                                 with_sh ? (float *)gsh.p : NULL, with_sh ? (float *)gg.p : NULL, (float *)gh2.p,
                                                 (float *)gnw.p, 1e-5f, T, k, dim, &err), &err) &&
             gfetch(&gx0, got, "moe combine+residual") && compare("moe combine+residual", got, r2, (size_t)T * dim, t2, 0, 0) &&
             st_ok(cu_rmsnorm(g_st, (float *)gh3.p, (float *)gx0.p, NULL, (float *)gnw.p, T, dim, 1e-5f, &err), &err) &&
             gfetch(&gh2, hg, "fused norm") && gfetch(&gh3, hr, "norm");
        if (ok && memcmp(hg, hr, sizeof(float) * T * dim)) { fprintf(stderr, "  fused next-layer norm differs from cu_rmsnorm\n"); ok = 0; }
        gfree(&gnw); gfree(&gh2); gfree(&gh3);
        free(nw); free(hg); free(hr);
        gfree(&gx0); gfree(&gsh); gfree(&gg);
        free(x0); free(sh); free(g); free(got); free(r2); free(t2);
    }
    result(ok, "moe_grouped T=%d E=%d k=%d dim=%d ffn=%d used=%d launches/matrix=%d (+ fused combine/residual%s)", T, E, k, dim, ffn,
           plan.n_used, groups, groups % 2 ? " with shared expert" : "");
    gfree(&gw); gfree(&gx); gfree(&gpr); gfree(&gpo); gfree(&grw); gfree(&gtab); gfree(&gh); gfree(&geo); gfree(&go);
    eng_moe_plan_free(&plan);
    free(ids); free(rw); free(x); free(wts); free(tab); free(ref); free(tol); free(hm); free(out);
}

/* ---- device-side routing: the route plan kernel ------------------------------------------ */

/* cu_moe_route_plan against the host's eng_moe_plan_build: the same pair
 * order (pair_row, pair_of), the table in the same expert order with the
 * slot pointers of the device table, empty entries after the used ones;
 * flags: 0 when every used expert has a slot, MISSING (and that expert's
 * count 0) when one has none, BAD_ID for an id outside [0, E). */
static void test_route_plan(int T, int E, int k, int missing, int bad, int qfmt = 0)
{
    int P = T * k, ex_cap = E < P ? E : P, dim = 8, ffn = 4;
    size_t fd = (size_t)ffn * dim;
    /* slot layout: bf16, or a quantized extent's rows (odd byte offsets) */
    size_t up_off = qfmt ? (size_t)ffn * cu_quant_row_bytes(qfmt, dim) : fd * sizeof(cu_bf16), down_off = 2 * up_off;
    int *ids = (int *)malloc(sizeof(int) * P);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e, dup;
            do { e = irand(E); dup = 0; for (int m = 0; m < j; m++) dup |= ids[t * k + m] == e; } while (dup);
            ids[t * k + j] = e;
        }
    if (bad) ids[P / 2] = E + 3;
    /* A fake device table: distinct, never dereferenced pointers. */
    const cu_bf16 **tab = (const cu_bf16 **)malloc(sizeof(*tab) * E);
    for (int x = 0; x < E; x++) tab[x] = (const cu_bf16 *)(uintptr_t)(0x10000000u + (uintptr_t)(E - x) * 4096u);
    int miss_x = missing ? ids[0] : -1;
    if (missing) tab[miss_x] = NULL;
    gbuf gi = galloc(sizeof(int) * P, ids), gt = galloc(sizeof(*tab) * E, tab);
    gbuf gex = galloc(sizeof(cu_moe_expert) * ex_cap, NULL), gpr = galloc(sizeof(int) * P, NULL), gpo = galloc(sizeof(int) * P, NULL);
    int zero[2] = {0, 0};
    gbuf gf = galloc(sizeof zero, zero);
    emoe_err err = {};
    int ok = st_ok(cu_moe_route_plan(g_st, (cu_moe_expert *)gex.p, ex_cap, (int *)gpr.p, (int *)gpo.p, (const int *)gi.p, T, k, E,
                                     (const cu_bf16 *const *)gt.p, up_off, down_off, (int *)gf.p, &err), &err);
    cu_moe_expert *ex = (cu_moe_expert *)malloc(sizeof(cu_moe_expert) * ex_cap);
    int *pr = (int *)malloc(sizeof(int) * P), *po = (int *)malloc(sizeof(int) * P), fl[2];
    ok = ok && gfetch(&gex, ex, "route ex") && gfetch(&gpr, pr, "route pair_row") && gfetch(&gpo, po, "route pair_of") &&
         gfetch(&gf, fl, "route flags");
    if (ok && bad) {
        ok = (fl[0] & CU_ROUTE_BAD_ID) && po[P / 2] >= 0 && po[P / 2] < P;
    } else if (ok) {
        eng_moe_plan plan = {};
        ok = eng_moe_plan_build(&plan, ids, T, k, E) == 0;
        ok = ok && !memcmp(pr, plan.pair_row, sizeof(int) * P) && !memcmp(po, plan.pair_of, sizeof(int) * P);
        for (int u = 0; ok && u < ex_cap; u++) {
            if (u < plan.n_used) {
                int x = plan.used[u], want = x == miss_x ? 0 : plan.count[u];
                const cu_bf16 *b = tab[x];
                ok = ex[u].start == plan.start[u] && ex[u].count == want && ex[u].gate == b &&
                     (const char *)ex[u].up == (b ? (const char *)b + up_off : NULL) &&
                     (const char *)ex[u].down == (b ? (const char *)b + down_off : NULL);
            } else {
                ok = ex[u].count == 0 && !ex[u].gate;
            }
            if (!ok) fprintf(stderr, "  route table entry %d differs\n", u);
        }
        ok = ok && fl[0] == (missing ? CU_ROUTE_MISSING : 0);
        eng_moe_plan_free(&plan);
    }
    result(ok, "route_plan T=%d E=%d k=%d%s%s%s: device grouping = host grouping, flags %d", T, E, k, missing ? " missing" : "",
           bad ? " bad-id" : "", qfmt == 1 ? " q8 slots" : qfmt == 2 ? " q4 slots" : "", fl[0]);
    gfree(&gi); gfree(&gt); gfree(&gex); gfree(&gpr); gfree(&gpo); gfree(&gf);
    free(ids); free(tab); free(ex); free(pr); free(po);
}

/* ---- GPU expert cache ------------------------------------------------------------------- */

typedef struct fake_prov {
    int layers, E, dim, ffn;
    float *w;          /* (layers*E, 3, ffn*dim) float32: stored as F32 to exercise the conversion */
    int acquired, released, fail_key;
} fake_prov;

static emoe_status fake_acquire(void *ctx, int layer, int x, eng_expert_weights *w, emoe_err *err)
{
    fake_prov *p = (fake_prov *)ctx;
    if (layer * p->E + x == p->fail_key) return emoe_errf(err, EMOE_EIO, "injected read failure");
    size_t fd = (size_t)p->ffn * p->dim;
    const float *b = p->w + (size_t)(layer * p->E + x) * 3 * fd;
    eng_tensor t = {b, ENG_DT_F32, 2, {p->ffn, p->dim, 0, 0}};
    w->gate = t;
    t.data = b + fd; w->up = t;
    t.data = b + 2 * fd; t.shape[0] = p->dim; t.shape[1] = p->ffn; w->down = t;
    p->acquired++;
    return EMOE_OK;
}
static void fake_release(void *ctx, int layer, int x) { (void)layer; (void)x; ((fake_prov *)ctx)->released++; }

static void test_expert_cache(void)
{
    fake_prov fp = {3, 8, 24, 10, NULL, 0, 0, -1};
    size_t fd = (size_t)fp.ffn * fp.dim;
    fp.w = (float *)malloc(sizeof(float) * fp.layers * fp.E * 3 * fd);
    fill(fp.w, (size_t)fp.layers * fp.E * 3 * fd, 1.0);
    eng_expert_provider prov = {};
    prov.ctx = &fp; prov.acquire = fake_acquire; prov.release = fake_release;
    cu_expert_cache c;
    emoe_err err = {};
    int ok = st_ok(cu_expert_cache_init(&c, fp.layers, fp.E, fp.dim, fp.ffn, 3, &err), &err);
    cu_moe_expert tab[3];
    int set1[3] = {5, 1, 7}, set2[2] = {1, 2};
    ok = ok && st_ok(cu_expert_cache_fill(&c, &prov, 2, set1, 3, tab, g_st, &err), &err);
    /* Every slot holds exactly bf16(weights) of its expert. */
    cu_bf16 *got = (cu_bf16 *)malloc(sizeof(cu_bf16) * 3 * fd);
    for (int i = 0; ok && i < 3; i++) {
        ok = DEV(cudaStreamSynchronize(g_st)) && DEV(cudaMemcpy(got, tab[i].gate, sizeof(cu_bf16) * 3 * fd, cudaMemcpyDeviceToHost));
        const float *src = fp.w + (size_t)(2 * fp.E + set1[i]) * 3 * fd;
        for (size_t j = 0; ok && j < 3 * fd; j++)
            if (got[j] != eng_f32_to_bf16(src[j])) { fprintf(stderr, "  slot of expert %d [%zu] differs\n", set1[i], j); ok = 0; }
        ok = ok && tab[i].up == tab[i].gate + fd && tab[i].down == tab[i].gate + 2 * fd;
    }
    ok = ok && c.tab.misses == 3 && c.tab.hits == 0 && fp.acquired == 3 && fp.released == 3;
    /* All 3 slots pinned: a 4th expert cannot be placed. */
    int one = 0;
    emoe_status rc = cu_expert_cache_fill(&c, &prov, 0, &one, 1, tab, g_st, &err);
    ok = ok && rc == EMOE_ENOMEM;
    /* Unpinned: 1 hits, 2 evicts the least recently used (5). */
    eng_slot_table_unpin_all(&c.tab);
    ok = ok && st_ok(cu_expert_cache_fill(&c, &prov, 2, set2, 2, tab, g_st, &err), &err);
    ok = ok && c.tab.hits == 1 && eng_slot_table_peek(&c.tab, 2 * fp.E + 5) < 0 && eng_slot_table_peek(&c.tab, 2 * fp.E + 2) >= 0;
    /* A provider failure is reported and leaves no half-filled slot behind. */
    eng_slot_table_unpin_all(&c.tab);
    fp.fail_key = 1 * fp.E + 3;
    int bad = 3;
    rc = cu_expert_cache_fill(&c, &prov, 1, &bad, 1, tab, g_st, &err);
    ok = ok && rc == EMOE_EIO && strstr(err.msg, "injected") && eng_slot_table_peek(&c.tab, fp.fail_key) < 0;
    ok = ok && c.upload_bytes == (uint64_t)4 * 3 * fd * sizeof(cu_bf16);
    result(ok, "expert_cache slots=3 (upload+bf16 conversion, pinning, LRU, provider failure)");
    cu_expert_cache_free(&c);
    free(got); free(fp.w);
}

#include "tests/gpu/test_models.cuh" /* the model-level tests */
#include "tests/gpu/test_quant_models.cuh" /* q8/q4 experts on the cuda backend */

int main(int argc, char **argv)
{
    int kernels_only = argc > 1 && !strcmp(argv[1], "--kernels-only");
    /* --quant-only: the q8/q4 expert runs on the fixture models alone
     * (test_quant_models.cuh; tools/gpu-check.sh runs it on a GPU) */
    int quant_only = argc > 1 && !strcmp(argv[1], "--quant-only");
    char why[256] = "";
    int nd = emoe_cuda_device_count(why, sizeof why);
    if (nd <= 0) {
        printf("SKIP: no CUDA device (%s): the GPU tests did not run\n", why);
        printf("0 passed, 0 failed, 1 skipped\n");
        return 0;
    }
    char line[512];
    emoe_cuda_device_describe(0, line, sizeof line);
    printf("%s\n", line);
    cudaSetDevice(0);
    if (!DEV(cudaStreamCreate(&g_st))) return 1;
    cublasHandle_t blas;
    if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) { printf("FAIL cublasCreate\n"); return 1; }

    if (quant_only) goto models;
    {
    int emb[][3] = {{37, 19, 1}, {1000, 64, 5}, {50, 130, 64}};
    for (auto &s : emb) test_embed(s[0], s[1], s[2]);
    int rms[][4] = {{1, 19, 0, 0}, {7, 128, 0, 0}, {64, 257, 0, 1}, {5, 2048, 1, 0}, {64 * 8, 64, 0, 1}, {3, 4096, 0, 0}};
    for (auto &s : rms) test_rmsnorm(s[0], s[1], s[2], s[3]);
    test_add_rmsnorm(1, 19);
    test_add_rmsnorm(7, 300);
    test_add_rmsnorm(3, 2048);
    int rp[][4] = {{1, 1, 8, 0}, {5, 4, 64, 0}, {64, 3, 128, 32}, {9, 2, 256, 0}, {17, 8, 40, 6}};
    for (auto &s : rp) test_rope(s[0], s[1], s[2], s[3]);
    int qrk[][6] = {{1, 4, 2, 64, 0, 0}, {3, 4, 2, 64, 1, 0}, {5, 16, 4, 128, 2, 0}, {7, 8, 8, 40, 1, 1}, {2, 6, 3, 16, 2, 1},
                    {33, 2, 1, 8, 1, 0}};
    for (auto &c : qrk) test_qk_rope_kv(c[0], c[1], c[2], c[3], c[4], c[5]);
    test_elementwise(1, 19);
    test_elementwise(7, 300);
    test_elementwise(64, 1024);
    int lin[][3] = {{1, 1, 19}, {1, 7, 64}, {3, 33, 255}, {8, 256, 1024}, {9, 100, 96}, {17, 31, 130}, {64, 129, 512}};
    for (auto &s : lin) {
        test_linear(s[0], s[1], s[2], 0, 0, blas);
        test_linear(s[0], s[1], s[2], 1, 0, blas);
        test_linear(s[0], s[1], s[2], s[0] % 2, 1, blas);
    }
    int rt[][3] = {{1, 8, 1}, {1, 8, 2}, {5, 16, 4}, {64, 60, 4}, {33, 64, 6}, {17, 128, 8}, {64, 128, 8}, {2, 100, 3}, {3, 512, 8}, {4, 300, 2}};
    for (auto &s : rt) {
        test_router(s[0], s[1], s[2], 0, 0);
        test_router(s[0], s[1], s[2], 1, 0);
        test_router(s[0], s[1], s[2], 1, 1);
        test_router(s[0], s[1], s[2], 0, 2); /* all equal: experts 0..k-1 */
    }
    {
        int st1[] = {0}, c1[] = {1};
        test_attention(4, 2, 64, st1, c1, 1);
        int st2[] = {0, 37, 100}, c2[] = {5, 1, 9};
        test_attention(8, 1, 128, st2, c2, 3);
        test_attention(3, 3, 40, st2, c2, 3);
        test_attention(16, 4, 256, st2, c2, 3);
        int st3[] = {0, 1, 2, 3, 500, 1000, 0, 7}, c3[] = {8, 1, 1, 1, 1, 1, 64, 1};
        test_attention(4, 4, 8, st3, c3, 8);
        /* bf16 KV; split-KV decode (slices longer, shorter and more numerous
         * than the positions: empty slices), both together. */
        test_attention(4, 2, 64, st2, c2, 3, 1, 1);
        int st4[] = {0, 3, 300, 1000}, c4[] = {1, 1, 1, 1};
        test_attention(8, 2, 64, st4, c4, 4, 0, 5);
        test_attention(4, 4, 128, st4, c4, 4, 0, CU_ATT_MAX_SPLITS);
        test_attention(8, 1, 128, st4, c4, 4, 1, 3);
        test_attention(4, 2, 40, st2, c2, 3, 1, 7);
    }
    int moe[][6] = {{1, 8, 1, 19, 11, 1}, {1, 8, 2, 64, 32, 1}, {5, 16, 4, 64, 96, 2}, {64, 60, 4, 128, 48, 3},
                    {33, 64, 8, 65, 33, 1}, {17, 128, 8, 128, 64, 4}, {64, 128, 8, 32, 16, 7}, {9, 8, 8, 16, 24, 8}};
    for (auto &s : moe) test_moe(s[0], s[1], s[2], s[3], s[4], s[5]);
    int rpl[][3] = {{1, 8, 2}, {1, 64, 8}, {5, 16, 4}, {32, 64, 8}, {3, 128, 8}, {64, 60, 4}, {200, 8, 2}};
    for (auto &s : rpl) test_route_plan(s[0], s[1], s[2], 0, 0);
    test_route_plan(4, 16, 4, 1, 0);
    test_route_plan(4, 16, 4, 0, 1);
    test_route_plan(5, 16, 4, 0, 0, 1);
    test_route_plan(3, 64, 8, 1, 0, 2);
    test_expert_cache();
    }

models:
    const char *sh = kernels_only ? NULL : shared_dir();
    json_t *root = NULL;
    if (sh) {
        char p[4096];
        snprintf(p, sizeof p, "%s/fixtures/reference/models.json", sh);
        json_error_t je;
        root = json_load_file(p, 0, &je);
    }
    if (!root) {
        printf("SKIP: fixture models: %s\n", kernels_only ? "--kernels-only" : "../shared/fixtures absent (set EMOE_SHARED)");
        g_skip++;
    } else {
        const char *name;
        json_t *md;
        json_object_foreach(json_object_get(root, "models"), name, md) {
            if (quant_only) {
                test_quant_models(sh, name, md);
                test_quant_lowbit(sh, name, md);
                test_quant_switch(sh, name);
                continue;
            }
            test_model(sh, name, md, 0, "full budget");
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/fixtures/models/%s", sh, name);
            eng_engine *e0;
            emoe_err err = {};
            if (eng_open(dir, NULL, &e0, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); result(0, "open %s", name); continue; }
            uint64_t one = eng_expert_bytes_one(e0);
            int vocab = eng_desc(e0)->vocab;
            eng_free(e0);
            if (g_emu && vocab > EMU_BIG_VOCAB) {
                printf("SKIP %s: 3-slot and batched runs skipped under the emulator (vocabulary %d)\n", name, vocab);
                g_skip++;
                continue;
            }
            /* Three slots: forces grouping (several launches per layer),
             * eviction and re-upload on every layer. bf16 slots: one stored
             * expert is bf16 in every fixture. */
            test_model(sh, name, md, 3 * one, "3 slots");
            test_fork(sh, name);
            test_batched(sh, name);
            test_device_tier(sh, name, md);
            test_graphs(sh, name);
            test_provider_switch(sh, name);
            test_partial_own(sh, name, md);
            test_kv_bf16(sh, name);
            test_quant_models(sh, name, md);
            test_quant_lowbit(sh, name, md);
            test_quant_switch(sh, name);
        }
        json_decref(root);
#ifdef EMOE_CUDA_EMU
        if (!quant_only) {
            test_launch_count(sh);
            test_device_oom(sh);
        }
#endif
    }
    cublasDestroy(blas);
    cudaStreamDestroy(g_st);
    printf("%d passed, %d failed, %d skipped\n", g_pass, g_fail, g_skip);
    return g_fail ? 1 : 0;
}
