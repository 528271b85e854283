/*
 * quant_tile.h — the register-blocked q8/q4 x q8a tile, written once for the
 * x86 variants of quant_mm.c (AVX2 with maddubs/madd, and VNNI with dpbusd).
 * Included by quant_mm.c after it defines:
 *
 *   QKNAME(x)          a name prefix, e.g. qavx2_##x
 *   QT_ATTR            the target attribute of every function here
 *   QDOT(acc, u, s)    acc (8 x int32) + the sums of 4 adjacent products of
 *                      unsigned bytes u and signed bytes s (dpbusd's meaning)
 *
 * A tile computes y[t*ldy + r] = sum over blocks b of
 *     d_w(r, b) * d_x(t, b) * sum_i w(r, b, i) * x(t, b, i)
 * for TB tokens x RB weight rows at once: each weight block is loaded (and
 * its scale converted) once per block of tokens, each activation block once
 * per block of rows. Every (token, row) pair keeps its own accumulator, added
 * to in block order with the same operations whatever TB and RB are, so a
 * result does not depend on the blocking (nor on how rows are split between
 * threads): the variant's single-row dot (TB = RB = 1) is bitwise the tile's.
 *
 * q8 rows are signed bytes: |w| (unsigned) times x with w's sign. q4 rows are
 * nibbles q in [0, 15] meaning q - 8: sum q*x - sum 8*x, the second sum
 * shared by all rows of the block (started from its negation).
 */
#ifndef QKNAME
#error "define QKNAME, QT_ATTR and QDOT before including quant_tile.h"
#endif

#define QT_INLINE QT_ATTR static inline __attribute__((always_inline))

/* Decode (one token): the rows QT_PF_BLOCKS row blocks ahead are prefetched,
 * one line per block of each row. Without it the 4-row tile streams its
 * weights at a quarter of the read bandwidth (the hardware prefetchers lose 4
 * interleaved streams at page boundaries); 2-4 blocks ahead measured best on
 * the development VM (`bench_quant moe`, docs/performance.md). */
#ifndef QT_PF_BLOCKS
#define QT_PF_BLOCKS 4
#endif

QT_INLINE float QKNAME(hsum)(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 32 nibbles of a q4 block as bytes 0..15 (low nibbles) then 16..31 (high). */
QT_INLINE __m256i QKNAME(q4_bytes)(const uint8_t *qs)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)(const void *)qs);
    __m128i m = _mm_set1_epi8(0xf);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m), _mm_and_si128(raw, m));
}

/* TB tokens (activation rows of ldxq blocks) x RB weight rows (rb bytes apart). */
QT_INLINE void QKNAME(block)(const int fmt, const quant_block_q8a *xq, size_t ldxq, const uint8_t *w, size_t rb, int nb,
                             float *y, size_t ldy, const int TB, const int RB, const int pf)
{
    const size_t bs = fmt == QUANT_Q8 ? sizeof(quant_block_q8) : sizeof(quant_block_q4);
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int t = 0; t < TB; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++) acc[t][r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i xv[4], x0[4];
        __m256 dx[4];
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++) {
            const quant_block_q8a *xb = xq + (size_t)t * ldxq + (size_t)b;
            xv[t] = _mm256_loadu_si256((const __m256i *)(const void *)xb->qs);
            dx[t] = _mm256_set1_ps(xb->d);
            if (fmt == QUANT_Q4) x0[t] = _mm256_sub_epi32(_mm256_setzero_si256(), QDOT(_mm256_setzero_si256(), _mm256_set1_epi8(8), xv[t]));
        }
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++) {
            const uint8_t *wb = w + (size_t)r * rb + (size_t)b * bs;
            if (pf && (fmt == QUANT_Q8 || !(b & 1))) /* q8: 34 bytes a block; q4: 36 per two */
                _mm_prefetch((const char *)(wb + (size_t)QT_PF_BLOCKS * RB * rb), _MM_HINT_T0);
            uint16_t dh;
            memcpy(&dh, wb, 2);
            __m256 dw = _mm256_cvtph_ps(_mm_set1_epi16((short)dh));
            if (fmt == QUANT_Q8) {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(const void *)(wb + 2));
                __m256i aw = _mm256_sign_epi8(wv, wv);
#pragma GCC unroll 4
                for (int t = 0; t < TB; t++) {
                    __m256i p = QDOT(_mm256_setzero_si256(), aw, _mm256_sign_epi8(xv[t], wv));
                    acc[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw, dx[t]), acc[t][r]);
                }
            } else {
                __m256i qv = QKNAME(q4_bytes)(wb + 2);
#pragma GCC unroll 4
                for (int t = 0; t < TB; t++) {
                    __m256i p = QDOT(x0[t], qv, xv[t]);
                    acc[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw, dx[t]), acc[t][r]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < TB; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++) y[(size_t)t * ldy + (size_t)r] = QKNAME(hsum)(acc[t][r]);
}

/* Rows per block for tb tokens: tb * rb accumulators, plus the activations. */
#define QT_RB(tb) ((tb) >= 3 ? 2 : 4)

/* All T tokens against R rows: blocks of 4 rows x 4 tokens (as 2-row halves),
 * the leftover 1-3 tokens with narrower blocks, then the leftover rows. */
QT_INLINE void QKNAME(tile)(const int fmt, const quant_block_q8a *xq, size_t ldxq, int T, const uint8_t *w, size_t rb,
                            int R, int nb, float *y, size_t ldy)
{
    int r = 0;
    for (; r + 4 <= R; r += 4) {
        const uint8_t *wr = w + (size_t)r * rb;
        int t = 0;
        for (; t + 4 <= T; t += 4)
            for (int rr = 0; rr < 4; rr += QT_RB(4))
                QKNAME(block)(fmt, xq + (size_t)t * ldxq, ldxq, wr + (size_t)rr * rb, rb, nb, y + (size_t)t * ldy + r + rr,
                              ldy, 4, QT_RB(4), 0);
        const quant_block_q8a *xt = xq + (size_t)t * ldxq;
        float *yt = y + (size_t)t * ldy + r;
        switch (T - t) {
        case 3:
            for (int rr = 0; rr < 4; rr += QT_RB(3))
                QKNAME(block)(fmt, xt, ldxq, wr + (size_t)rr * rb, rb, nb, yt + rr, ldy, 3, QT_RB(3), 0);
            break;
        case 2: QKNAME(block)(fmt, xt, ldxq, wr, rb, nb, yt, ldy, 2, 4, 0); break;
        case 1: QKNAME(block)(fmt, xt, ldxq, wr, rb, nb, yt, ldy, 1, 4, 1); break; /* decode: prefetch the next rows */
        default: break;
        }
    }
    for (; r < R; r++)
        for (int t = 0; t < T; t++)
            QKNAME(block)(fmt, xq + (size_t)t * ldxq, ldxq, w + (size_t)r * rb, rb, nb, y + (size_t)t * ldy + r, ldy, 1, 1, 0);
}

QT_ATTR static void QKNAME(tile_q8)(const quant_block_q8a *xq, size_t ldxq, int T, const void *w, size_t rb, int R,
                                    int nb, float *y, size_t ldy)
{
    QKNAME(tile)(QUANT_Q8, xq, ldxq, T, w, rb, R, nb, y, ldy);
}

QT_ATTR static void QKNAME(tile_q4)(const quant_block_q8a *xq, size_t ldxq, int T, const void *w, size_t rb, int R,
                                    int nb, float *y, size_t ldy)
{
    QKNAME(tile)(QUANT_Q4, xq, ldxq, T, w, rb, R, nb, y, ldy);
}

QT_ATTR static float QKNAME(dot_q8)(const void *w, const quant_block_q8a *x, int nb)
{
    float y;
    QKNAME(block)(QUANT_Q8, x, 0, w, 0, nb, &y, 0, 1, 1, 0);
    return y;
}

QT_ATTR static float QKNAME(dot_q4)(const void *w, const quant_block_q8a *x, int nb)
{
    float y;
    QKNAME(block)(QUANT_Q4, x, 0, w, 0, nb, &y, 0, 1, 1, 0);
    return y;
}

#undef QT_INLINE
#undef QT_RB
