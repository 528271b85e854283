/* bench_quant.c — kernel throughput of the quantized matmul (engine/quant.h):
 * y (T, N) = x (T, K) @ W^T for W in q8 / q4, each kernel variant (scalar,
 * AVX2) and activation mode (float, q8a), at OLMoE expert width by default
 * (N 1024, K 2048, one expert's gate projection). Prints GFLOP/s-equivalent
 * (2*T*N*K / s) and weight bytes streamed per second. Single thread.
 *   build/bench_quant [T] [N] [K] [reps]
 * Timing on a shared machine is noisy: compare variants within one run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common.h"
#include "engine/matmul.h"
#include "engine/pool.h"
#include "engine/quant.h"

/* moe mode: the routed-expert part of decode (or of a T-token prefill) at
 * OLMoE width, for bf16 (the engine's dense kernels, eng_mm_run), q8 and q4
 * (quant_matmul): per layer top_k experts drawn at random from E, gate and
 * up then down (no SwiGLU: the arithmetic is not what is timed). Experts are
 * copies of one random expert (the values do not change the speed), far more
 * bytes than the last-level cache. Prints ms per token step and weight bytes
 * streamed per second. */
static int bench_moe(int argc, char **argv)
{
    int dim = 2048, ffn = 1024, E = 16, k = 8, L = 4, T = 1, steps = 20, threads = 1, isa = -1;
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--dim")) dim = v;
        else if (!strcmp(argv[i], "--ffn")) ffn = v;
        else if (!strcmp(argv[i], "--experts")) E = v;
        else if (!strcmp(argv[i], "--top-k")) k = v;
        else if (!strcmp(argv[i], "--layers")) L = v;
        else if (!strcmp(argv[i], "--tokens")) T = v;
        else if (!strcmp(argv[i], "--steps")) steps = v;
        else if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--isa")) isa = v;
        else { fprintf(stderr, "bench_quant moe: unknown option %s\n", argv[i]); return 2; }
    }
    if (k > E) k = E;
    const quant_kernels *kern = isa < 0 ? quant_kernels_best() : quant_kernels_isa(isa);
    if (!kern) { fprintf(stderr, "bench_quant moe: kernel variant %d not available\n", isa); return 2; }
    eng_pool *p = eng_pool_new(threads);
    size_t nw = (size_t)3 * ffn * dim;
    float *wf = malloc(sizeof(float) * nw), *x = malloc(sizeof(float) * (size_t)T * (dim > ffn ? dim : ffn));
    float *y = malloc(sizeof(float) * (size_t)T * (dim > ffn ? dim : ffn) * 2);
    uint64_t s = 7;
    for (size_t i = 0; i < nw; i++) { s = s * 6364136223846793005ull + 1; wf[i] = ((float)((s >> 40) & 0xffff) / 65536.0f - 0.5f) * 0.05f; }
    for (size_t i = 0; i < (size_t)T * (dim > ffn ? dim : ffn); i++) { s = s * 6364136223846793005ull + 1; x[i] = (float)((s >> 40) & 0xffff) / 32768.0f - 1.0f; }
    printf("moe: dim %d, ffn %d, %d layers x %d experts, top-%d, %d token(s) per step, %d steps, %d thread(s), quant kernels %s\n", dim, ffn, L, E, k, T, steps, threads, kern->name);
    for (int f = QUANT_NONE; f <= QUANT_Q4; f++) {
        size_t rg = f ? quant_row_bytes(f, dim) : sizeof(uint16_t) * (size_t)dim, rd = f ? quant_row_bytes(f, ffn) : sizeof(uint16_t) * (size_t)ffn;
        size_t eb = 2 * (size_t)ffn * rg + (size_t)dim * rd;
        uint8_t *one = malloc(eb), *all = malloc(eb * (size_t)E * L);
        if (!one || !all) { fprintf(stderr, "bench_quant moe: out of memory\n"); return 1; }
        for (int m = 0; m < 3; m++) {
            int rows = m < 2 ? ffn : dim, cols = m < 2 ? dim : ffn;
            uint8_t *o = one + (size_t)m * ffn * rg;
            for (int r = 0; r < rows; r++) {
                const float *src = wf + (size_t)m * ffn * dim + (size_t)r * cols;
                if (f) quant_row_quantize(f, src, cols, o + (size_t)r * (m < 2 ? rg : rd));
                else eng_f32_store(ENG_DT_BF16, src, cols, o + (size_t)r * cols * 2);
            }
        }
        for (int e = 0; e < E * L; e++) memcpy(all + (size_t)e * eb, one, eb);
        double best = 1e30, sum = 0;
        for (int rep = -1; rep < steps; rep++) {
            double t0 = emoe_now();
            for (int l = 0; l < L; l++)
                for (int j = 0; j < k; j++) {
                    s = s * 6364136223846793005ull + 1;
                    int e = (int)((s >> 33) % (uint64_t)E);
                    const uint8_t *w = all + ((size_t)l * E + (size_t)e) * eb;
                    if (f) {
                        quant_mm_job jb[2] = {{x, (size_t)dim, T, dim, w, ffn, f, y, (size_t)ffn},
                                              {x, (size_t)dim, T, dim, w + (size_t)ffn * rg, ffn, f, y + (size_t)T * ffn, (size_t)ffn}};
                        quant_mm_run_with(p, kern, QUANT_ACT_Q8, jb, 2);
                        quant_mm_job jd = {y, (size_t)ffn, T, ffn, w + 2 * (size_t)ffn * rg, dim, f, y + (size_t)T * ffn, (size_t)dim};
                        quant_mm_run_with(p, kern, QUANT_ACT_Q8, &jd, 1);
                    } else {
                        eng_tensor g = {w, ENG_DT_BF16, 2, {ffn, dim}}, u = {w + (size_t)ffn * rg, ENG_DT_BF16, 2, {ffn, dim}};
                        eng_tensor d = {w + 2 * (size_t)ffn * rg, ENG_DT_BF16, 2, {dim, ffn}};
                        eng_mm_job jb[2] = {{x, (size_t)dim, T, dim, &g, NULL, y, (size_t)ffn},
                                            {x, (size_t)dim, T, dim, &u, NULL, y + (size_t)T * ffn, (size_t)ffn}};
                        eng_mm_run(p, jb, 2);
                        eng_mm(p, y, T, ffn, &d, NULL, y + (size_t)T * ffn);
                    }
                }
            double dt = emoe_now() - t0;
            if (rep < 0) continue;
            sum += dt;
            if (dt < best) best = dt;
        }
        double bytes = (double)eb * k * L;
        printf("%-4s: %7.2f ms per step (best %7.2f), %6.2f GB/s of expert weights (mean), %.0f MB per step\n", quant_format_name(f),
               sum / steps * 1e3, best * 1e3, bytes / (sum / steps) / 1e9, bytes / 1e6);
        free(one); free(all);
    }
    free(wf); free(x); free(y);
    eng_pool_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "moe")) return bench_moe(argc, argv);
    int T = argc > 1 ? atoi(argv[1]) : 1, N = argc > 2 ? atoi(argv[2]) : 1024, K = argc > 3 ? atoi(argv[3]) : 2048;
    int reps = argc > 4 ? atoi(argv[4]) : 50;
    if (T < 1 || N < 1 || K < 1 || reps < 1) { fprintf(stderr, "usage: bench_quant [T] [N] [K] [reps]\n"); return 2; }
    eng_pool *p = eng_pool_new(1);
    float *x = malloc(sizeof(float) * (size_t)T * K), *w = malloc(sizeof(float) * (size_t)K), *y = malloc(sizeof(float) * (size_t)T * N);
    uint8_t *W = malloc(quant_row_bytes(QUANT_Q8, K) * (size_t)N);
    uint64_t s = 1;
    for (size_t i = 0; i < (size_t)T * K; i++) { s = s * 6364136223846793005ull + 1; x[i] = (float)((s >> 40) & 0xffff) / 65536.0f - 0.5f; }
    printf("T %d, N %d, K %d, %d reps, single thread\n", T, N, K, reps);
    for (int f = QUANT_Q8; f <= QUANT_Q4; f++) {
        size_t rb = quant_row_bytes(f, K);
        for (int n = 0; n < N; n++) {
            for (int k = 0; k < K; k++) { s = s * 6364136223846793005ull + 1; w[k] = (float)((s >> 40) & 0xffff) / 65536.0f - 0.5f; }
            quant_row_quantize(f, w, K, W + (size_t)n * rb);
        }
        for (int isa = 0; isa < QUANT_N_ISA; isa++) {
            const quant_kernels *kern = quant_kernels_isa(isa);
            if (!kern) continue;
            for (int act = 0; act < 2; act++) {
                quant_matmul_with(p, kern, act, x, T, K, W, N, f, y); /* warm */
                double t0 = emoe_now();
                for (int r = 0; r < reps; r++) quant_matmul_with(p, kern, act, x, T, K, W, N, f, y);
                double dt = (emoe_now() - t0) / reps;
                printf("%-3s %-6s act %-3s: %8.3f ms  %7.2f GFLOP/s  %7.2f GB/s of weights\n", quant_format_name(f),
                       kern->name, act == QUANT_ACT_Q8 ? "q8" : "f32", dt * 1e3, 2.0 * T * N * K / dt / 1e9,
                       (double)rb * N / dt / 1e9);
            }
        }
    }
    free(x); free(w); free(y); free(W);
    eng_pool_free(p);
    return 0;
}
