/*
 * quant.h — block-quantized formats for routed-expert weights (docs/quant.md).
 *
 * A quantized matrix (N, K) is N rows, each ceil(K/32) blocks of 32 weights
 * (the last block of a row zero-padded), rows back to back, no padding between
 * rows. Blocks (little-endian, byte-packed):
 *   q8   quant_block_q8  {f16 d; int8 qs[32]}       34 bytes, w = d * qs[i], qs in [-127, 127]
 *   q4   quant_block_q4  {f16 d; uint8 qs[16]}      18 bytes, w = d * (nibble - 8),
 *        element i (< 16) in the low nibble of qs[i], element i + 16 in its high nibble
 * Activations, when quantized (the "q8 activations" kernels), use
 *   quant_block_q8a {float d; int8 qs[32]}          36 bytes, per block of 32 of a row of x.
 *
 * The float reference (quant_row_dequantize + a float dot) is what every kernel
 * is tested against (tests/unit/test_quant.c). The kernels (quant_dot.c) come in
 * a scalar and an AVX2+FMA+F16C variant, chosen at run time.
 */
#ifndef EMOE_QUANT_H
#define EMOE_QUANT_H

#include <stdint.h>
#include <stddef.h>

#include "engine/pool.h"
#include "engine/tensor.h"

#define QUANT_BLOCK 32

/* Expert formats. QUANT_NONE: the checkpoint's dense dtype (bf16 here). */
typedef enum quant_format {
    QUANT_NONE = 0,
    QUANT_Q8 = 1,
    QUANT_Q4 = 2,
} quant_format;
#define QUANT_N_FORMATS 3

typedef struct quant_block_q8 { uint16_t d; int8_t qs[QUANT_BLOCK]; } quant_block_q8;
typedef struct quant_block_q4 { uint16_t d; uint8_t qs[QUANT_BLOCK / 2]; } quant_block_q4;
typedef struct quant_block_q8a { float d; int8_t qs[QUANT_BLOCK]; } quant_block_q8a;

#ifdef __cplusplus /* the CUDA tests include this header */
#define QUANT_STATIC_ASSERT static_assert
#else
#define QUANT_STATIC_ASSERT _Static_assert
#endif
QUANT_STATIC_ASSERT(sizeof(quant_block_q8) == 34, "q8 block is 34 bytes");
QUANT_STATIC_ASSERT(sizeof(quant_block_q4) == 18, "q4 block is 18 bytes");
QUANT_STATIC_ASSERT(sizeof(quant_block_q8a) == 36, "q8a block is 36 bytes");

/* "bf16" (also "none", "dense") -> QUANT_NONE, "q8", "q4". -1 on anything else. */
int quant_format_parse(const char *s, quant_format *out);
/* "bf16" for QUANT_NONE, "q8", "q4", "?" otherwise. */
const char *quant_format_name(int f);

static inline int64_t quant_blocks(int64_t k) { return (k + QUANT_BLOCK - 1) / QUANT_BLOCK; }
/* Bytes of one quantized row of k weights; 0 for QUANT_NONE or an unknown format. */
size_t quant_row_bytes(int fmt, int64_t k);

uint16_t quant_f32_to_f16(float f);

/* Quantizes k floats into one row of fmt (quant_row_bytes(fmt, k) bytes). */
void quant_row_quantize(int fmt, const float *x, int64_t k, void *dst);
/* Quantizes every row of a 2-D tensor t (any dtype) into dst, rows back to
 * back, on the pool's threads (p may be NULL). 0, or -1 on a bad format/shape
 * or out of memory. The bytes equal quant_row_quantize's row by row. */
int quant_tensor_quantize(eng_pool *p, int fmt, const eng_tensor *t, void *dst);
/* q4's scale search: the vectorised search (default, AVX2) or the scalar one
 * (0). Both give the same bytes (tests/unit/test_quant.c); for tests. */
void quant_q4_search_fast(int on);
/* Dequantizes one row back into k floats (the reference). */
void quant_row_dequantize(int fmt, const void *src, int64_t k, float *out);
/* Quantizes k activations into quant_blocks(k) q8a blocks (the tail zero-padded). */
void quant_act_quantize(const float *x, int64_t k, quant_block_q8a *dst);

/* Kernels. dot_f32: a quantized row against float activations (k of them).
 * dot_q8a: a quantized row against q8a-quantized activations (nb blocks). */
typedef float (*quant_dot_f32_fn)(const void *w, const float *x, int k);
typedef float (*quant_dot_q8a_fn)(const void *w, const quant_block_q8a *x, int nb);
/* tile: y[t*ldy + r] = row r of w (rows rb bytes apart) . activations of token
 * t (xq + t*ldxq, nb blocks), for t < T, r < R; register-blocked
 * (quant_tile.h); each result is bitwise the variant's dot_q8a of that row. */
typedef void (*quant_tile_fn)(const quant_block_q8a *xq, size_t ldxq, int T, const void *w, size_t rb, int R, int nb,
                              float *y, size_t ldy);
typedef struct quant_kernels {
    const char *name;  /* "scalar", "avx2", "vnni", "avx2-dot" */
    quant_dot_f32_fn dot_f32[QUANT_N_FORMATS];  /* [QUANT_Q8], [QUANT_Q4] */
    quant_dot_q8a_fn dot_q8a[QUANT_N_FORMATS];
    quant_tile_fn tile_q8a[QUANT_N_FORMATS];    /* NULL: row by row with dot_q8a */
} quant_kernels;

/* scalar: portable C, the reference order. avx2: AVX2+FMA+F16C tiles (maddubs).
 * vnni: the same tiles with AVX-512 VNNI's dpbusd (256-bit, AVX512VL), bitwise
 * equal to avx2. avx2-dot: the earlier per-row AVX2 dots (two accumulator
 * chains, no tile), kept for measurement. */
enum { QUANT_ISA_SCALAR = 0, QUANT_ISA_AVX2 = 1, QUANT_ISA_VNNI = 2, QUANT_ISA_AVX2_DOT = 3, QUANT_N_ISA = 4 };
/* The kernels of one variant; NULL when this CPU lacks it. */
const quant_kernels *quant_kernels_isa(int isa);
/* The best variant this CPU runs (vnni, else avx2, else scalar). */
const quant_kernels *quant_kernels_best(void);

/* Activation handling of quant_matmul: QUANT_ACT_Q8 (default) quantizes each
 * row of x to q8a blocks and runs integer dot products; QUANT_ACT_F32 keeps x
 * in float. quant_act_mode_set switches the process-wide default (`emoe
 * perplexity --quant-act f32`, a measurement switch, docs/quant.md). */
enum { QUANT_ACT_Q8 = 0, QUANT_ACT_F32 = 1 };
int quant_act_mode(void);
void quant_act_mode_set(int act);

/* One matmul of a batch: y (T, N) (row stride ldy) = x (T, K) (row stride
 * ldx) @ W^T, W (N, K) quantized in fmt (rows of quant_row_bytes(fmt, K)). */
typedef struct quant_mm_job {
    const float *x;
    size_t ldx;
    int T, K;
    const void *W;
    int N, fmt;
    float *y;
    size_t ldy;
} quant_mm_job;
/* Runs all jobs as one parallel region (like eng_mm_run) with the best
 * kernels and the process-wide activation mode. Activations are quantized once
 * per job, or once for consecutive jobs with the same x, T and K (an expert's
 * gate and up). Results do not depend on the number of threads. */
void quant_mm_run(eng_pool *p, const quant_mm_job *jobs, int n_jobs);
/* The same with given kernels (NULL = best) and activation mode (QUANT_ACT_*). */
void quant_mm_run_with(eng_pool *p, const quant_kernels *kern, int act, const quant_mm_job *jobs, int n_jobs);

/* y (T, N) = x (T, K) @ W^T with W (N, K) quantized in fmt (rows of
 * quant_row_bytes(fmt, K) bytes). act: QUANT_ACT_*; kern NULL = best. */
void quant_matmul(eng_pool *p, const float *x, int T, int K, const void *W, int N, int fmt, float *y);
void quant_matmul_with(eng_pool *p, const quant_kernels *kern, int act, const float *x, int T, int K,
                       const void *W, int N, int fmt, float *y);

#endif
