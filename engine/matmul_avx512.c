/*
 * matmul_avx512.c — the AVX-512F variant of the matmul kernels
 * (matmul_tile.h), 16 floats a vector and 32 registers: 4 tokens x 4 rows.
 * This file alone is compiled with -mavx512f -mavx2 -mfma -mf16c (mk/cpu.mk);
 * its functions run only after matmul.c's cpuid check.
 */
#include "engine/matmul.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#define V __m512
#define VW 16
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VHSUM(v) _mm512_reduce_add_ps(v)
#define VLOAD_BF16(p) \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p))), 16))
#define VLOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define RB_FOR_TB(tb) 4
#define VPREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#define KNAME(x) avx512_##x
#include "engine/matmul_tile.h"

static const eng_mm_kernels avx512_kernels = {
    .name = "avx512",
    .tile = {[ENG_DT_F32] = avx512_tile_f32, [ENG_DT_F16] = avx512_tile_f16, [ENG_DT_BF16] = avx512_tile_bf16},
    .dot_f32 = avx512_dot_f32,
};

const eng_mm_kernels *eng_mm_avx512_kernels(void) { return &avx512_kernels; }
#else
const eng_mm_kernels *eng_mm_avx512_kernels(void) { return NULL; }
#endif
