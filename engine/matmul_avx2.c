/*
 * matmul_avx2.c — the AVX2 + FMA + F16C variant of the matmul kernels
 * (matmul_tile.h). This file alone is compiled with -mavx2 -mfma -mf16c
 * (mk/cpu.mk); its functions run only after matmul.c's cpuid check.
 */
#include "engine/matmul.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline float avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define V __m256
#define VW 8
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VHSUM(v) avx2_hsum(v)
#define VLOAD_BF16(p) \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))), 16))
#define VLOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
/* 16 ymm registers: 4 tokens x 2 rows (8 accumulators), 1-2 tokens x 4 rows. */
#define RB_FOR_TB(tb) ((tb) >= 3 ? 2 : 4)
#define VPREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#define KNAME(x) avx2_##x
#include "engine/matmul_tile.h"

static const eng_mm_kernels avx2_kernels = {
    .name = "avx2",
    .tile = {[ENG_DT_F32] = avx2_tile_f32, [ENG_DT_F16] = avx2_tile_f16, [ENG_DT_BF16] = avx2_tile_bf16},
    .dot_f32 = avx2_dot_f32,
};

const eng_mm_kernels *eng_mm_avx2_kernels(void) { return &avx2_kernels; }
#else
const eng_mm_kernels *eng_mm_avx2_kernels(void) { return NULL; }
#endif
