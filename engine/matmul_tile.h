/*
 * matmul_tile.h — the register-blocked tile, written once for every SIMD
 * variant. Included by matmul_avx2.c, matmul_avx512.c and matmul_neon.c after
 * they define:
 *
 *   V, VW               vector type of float32 and its lane count
 *   VZERO()             a zero vector
 *   VLOAD(p)            VW floats from p (unaligned)
 *   VFMA(a, b, c)       a*b + c (fused)
 *   VADD(a, b), VHSUM(v)
 *   VLOAD_BF16(p)       VW bfloat16 at p, widened to float32
 *   VLOAD_F16(p)        VW float16 at p, widened to float32
 *   RB_FOR_TB(tb)       rows per block for tb (1..4) tokens: a divisor of 4
 *                       chosen so that tb*rb accumulators fit the registers
 *   KNAME(x)            a name prefix, e.g. avx2_##x
 *   VPREFETCH(p)        (optional) prefetch the cache line at p
 *
 * Block: TB tokens x RB rows, U-way unrolled over K (U independent
 * accumulator sets, used when TB*RB alone gives too few to hide the FMA
 * latency: decode). Each weight vector is loaded and converted once per
 * block and used for all TB tokens. Products and sums are float32; the tail
 * (K not a multiple of VW) is done in scalar code.
 */
#ifndef KNAME
#error "define the variant macros before including matmul_tile.h"
#endif

#include "engine/tensor.h"

#include <stddef.h>
#include <stdint.h>

#define TILE_INLINE static inline __attribute__((always_inline))

TILE_INLINE V KNAME(loadw)(int dt, const void *w, size_t i)
{
    if (dt == ENG_DT_BF16) return VLOAD_BF16((const uint16_t *)w + i);
    if (dt == ENG_DT_F16) return VLOAD_F16((const uint16_t *)w + i);
    return VLOAD((const float *)w + i);
}

TILE_INLINE float KNAME(convw)(int dt, const void *w, size_t i)
{
    if (dt == ENG_DT_BF16) return eng_bf16_to_f32(((const uint16_t *)w)[i]);
    if (dt == ENG_DT_F16) return eng_f16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

/* y[t*ldy + r] = x_t . w_r for t < TB, r < RB; rows of w have stride ldw. */
TILE_INLINE void KNAME(block)(const float *x, size_t ldx, const void *w, size_t ldw, int K, float *y, size_t ldy,
                              const int TB, const int RB, const int U, const int dt)
{
    V acc[4][4][4];
#pragma GCC unroll 4
    for (int u = 0; u < U; u++)
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++)
#pragma GCC unroll 4
            for (int r = 0; r < RB; r++) acc[u][t][r] = VZERO();
    int k = 0;
    for (; k + U * VW <= K; k += U * VW) {
#ifdef VPREFETCH
        /* One token (decode): the rows of the next block are the next bytes of
         * memory this thread reads. A row is often one 4 KiB page, where the
         * hardware prefetchers stop, so ask for them one block ahead. */
        if (TB == 1) {
#pragma GCC unroll 4
            for (int r = 0; r < RB; r++) {
                size_t i = (size_t)(RB + r) * ldw + (size_t)k;
                VPREFETCH(dt == ENG_DT_F32 ? (const void *)((const float *)w + i) : (const void *)((const uint16_t *)w + i));
            }
        }
#endif
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            V wv[4];
#pragma GCC unroll 4
            for (int r = 0; r < RB; r++) wv[r] = KNAME(loadw)(dt, w, (size_t)r * ldw + (size_t)(k + u * VW));
#pragma GCC unroll 4
            for (int t = 0; t < TB; t++) {
                V xv = VLOAD(x + (size_t)t * ldx + (size_t)(k + u * VW));
#pragma GCC unroll 4
                for (int r = 0; r < RB; r++) acc[u][t][r] = VFMA(xv, wv[r], acc[u][t][r]);
            }
        }
    }
    if (U > 1)
        for (; k + VW <= K; k += VW) {
            V wv[4];
#pragma GCC unroll 4
            for (int r = 0; r < RB; r++) wv[r] = KNAME(loadw)(dt, w, (size_t)r * ldw + (size_t)k);
#pragma GCC unroll 4
            for (int t = 0; t < TB; t++) {
                V xv = VLOAD(x + (size_t)t * ldx + (size_t)k);
#pragma GCC unroll 4
                for (int r = 0; r < RB; r++) acc[0][t][r] = VFMA(xv, wv[r], acc[0][t][r]);
            }
        }
#pragma GCC unroll 4
    for (int t = 0; t < TB; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++) {
            V s = acc[0][t][r];
#pragma GCC unroll 4
            for (int u = 1; u < U; u++) s = VADD(s, acc[u][t][r]);
            float f = VHSUM(s);
            for (int i = k; i < K; i++) f += x[(size_t)t * ldx + (size_t)i] * KNAME(convw)(dt, w, (size_t)r * ldw + (size_t)i);
            y[(size_t)t * ldy + (size_t)r] = f;
        }
}

/* All T tokens against R rows: blocks of 4 rows x 4 tokens, then the leftover
 * 1-3 tokens of each row block with narrower blocks, then leftover rows. */
TILE_INLINE void KNAME(tile)(const float *x, size_t ldx, int T, const void *w, size_t ldw, int R, int K, float *y,
                             size_t ldy, const int dt)
{
    size_t es = dt == ENG_DT_F32 ? 4 : 2;
    int r = 0;
    for (; r + 4 <= R; r += 4) {
        int t = 0;
        for (; t + 4 <= T; t += 4)
            for (int rr = 0; rr < 4; rr += RB_FOR_TB(4))
                KNAME(block)(x + (size_t)t * ldx, ldx, (const char *)w + (size_t)(r + rr) * ldw * es, ldw, K,
                             y + (size_t)t * ldy + (size_t)(r + rr), ldy, 4, RB_FOR_TB(4), 1, dt);
        const float *xt = x + (size_t)t * ldx;
        float *yt = y + (size_t)t * ldy;
        switch (T - t) {
        case 3:
            for (int rr = 0; rr < 4; rr += RB_FOR_TB(3))
                KNAME(block)(xt, ldx, (const char *)w + (size_t)(r + rr) * ldw * es, ldw, K, yt + r + rr, ldy, 3,
                             RB_FOR_TB(3), 1, dt);
            break;
        case 2:
            for (int rr = 0; rr < 4; rr += RB_FOR_TB(2))
                KNAME(block)(xt, ldx, (const char *)w + (size_t)(r + rr) * ldw * es, ldw, K, yt + r + rr, ldy, 2,
                             RB_FOR_TB(2), 1, dt);
            break;
        case 1:
            for (int rr = 0; rr < 4; rr += RB_FOR_TB(1))
                KNAME(block)(xt, ldx, (const char *)w + (size_t)(r + rr) * ldw * es, ldw, K, yt + r + rr, ldy, 1,
                             RB_FOR_TB(1), 2, dt);
            break;
        default: break;
        }
    }
    for (; r < R; r++) {
        const char *wr = (const char *)w + (size_t)r * ldw * es;
        int t = 0;
        for (; t + 4 <= T; t += 4) KNAME(block)(x + (size_t)t * ldx, ldx, wr, ldw, K, y + (size_t)t * ldy + r, ldy, 4, 1, 2, dt);
        for (; t < T; t++) KNAME(block)(x + (size_t)t * ldx, ldx, wr, ldw, K, y + (size_t)t * ldy + r, ldy, 1, 1, 4, dt);
    }
}

static void KNAME(tile_f32)(const float *x, size_t ldx, int T, const void *w, size_t ldw, int R, int K, float *y,
                             size_t ldy)
{
    KNAME(tile)(x, ldx, T, w, ldw, R, K, y, ldy, ENG_DT_F32);
}

static void KNAME(tile_bf16)(const float *x, size_t ldx, int T, const void *w, size_t ldw, int R, int K, float *y,
                             size_t ldy)
{
    KNAME(tile)(x, ldx, T, w, ldw, R, K, y, ldy, ENG_DT_BF16);
}

static void KNAME(tile_f16)(const float *x, size_t ldx, int T, const void *w, size_t ldw, int R, int K, float *y,
                             size_t ldy)
{
    KNAME(tile)(x, ldx, T, w, ldw, R, K, y, ldy, ENG_DT_F16);
}

static float KNAME(dot_f32)(const float *a, const float *b, int n)
{
    float out;
    KNAME(block)(a, 0, b, (size_t)n, n, &out, 0, 1, 1, 4, ENG_DT_F32);
    return out;
}
