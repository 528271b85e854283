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
#include "engine/pool.h"
#include "engine/quant.h"

int main(int argc, char **argv)
{
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
