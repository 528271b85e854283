/*
 * gbuf.cuh — guarded device buffers for the GPU test harnesses
 * (test_kernels.cu, test_quant_kernels.cu): GUARD bytes of 0xA5 on both
 * sides of every buffer, the payload poisoned with 0xFF bytes (a float NaN)
 * unless data is given, and a fetch that checks both guards. The including
 * file defines `static int g_fail` (CUDA errors count as failures) first.
 */
#ifndef EMOE_TESTS_GPU_GBUF_CUH
#define EMOE_TESTS_GPU_GBUF_CUH

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 256
/* base: the allocation; bytes: what lies between the guards (shift + the
 * payload); p: the payload. */
typedef struct gbuf { unsigned char *base; size_t bytes; void *p; } gbuf;

static inline int dev_ok(cudaError_t e, const char *what, int line)
{
    if (e == cudaSuccess) return 1;
    fprintf(stderr, "FAIL: CUDA %s at line %d: %s\n", what, line, cudaGetErrorString(e));
    g_fail++;
    return 0;
}
#define DEV(x) dev_ok((x), #x, __LINE__)

/* shift: the payload starts that many bytes after the front guard (to test
 * unaligned pointers). */
static inline gbuf galloc(size_t bytes, const void *data, size_t shift = 0)
{
    gbuf g = {NULL, bytes + shift, NULL};
    if (!DEV(cudaMalloc((void **)&g.base, g.bytes + 2 * GUARD))) { fprintf(stderr, "out of device memory\n"); exit(1); }
    DEV(cudaMemset(g.base, 0xA5, GUARD));
    DEV(cudaMemset(g.base + GUARD + g.bytes, 0xA5, GUARD));
    if (shift) DEV(cudaMemset(g.base + GUARD, 0xA5, shift));
    g.p = g.base + GUARD + shift;
    if (data) DEV(cudaMemcpy(g.p, data, bytes, cudaMemcpyHostToDevice));
    else DEV(cudaMemset(g.p, 0xFF, bytes));
    return g;
}

/* Copies the payload back into out (if given) and checks both guards. */
static inline int gfetch(const gbuf *g, void *out, const char *what)
{
    unsigned char *h = (unsigned char *)malloc(g->bytes + 2 * GUARD);
    int ok = DEV(cudaDeviceSynchronize()) && DEV(cudaMemcpy(h, g->base, g->bytes + 2 * GUARD, cudaMemcpyDeviceToHost));
    for (size_t i = 0; ok && i < GUARD; i++)
        if (h[i] != 0xA5 || h[GUARD + g->bytes + i] != 0xA5) {
            fprintf(stderr, "FAIL %s: guard byte %s the buffer overwritten (offset %zu)\n", what,
                    h[i] != 0xA5 ? "before" : "after", i);
            ok = 0;
        }
    size_t at = (size_t)((unsigned char *)g->p - g->base);
    if (ok && out) memcpy(out, h + at, g->bytes - (at - GUARD));
    free(h);
    return ok;
}

static inline void gfree(gbuf *g) { cudaFree(g->base); g->base = NULL; }

#endif
