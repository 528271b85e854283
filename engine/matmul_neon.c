/*
 * matmul_neon.c — the arm64 Advanced SIMD variant of the matmul kernels
 * (matmul_tile.h): 4 floats a vector, 32 registers. NEON is part of the arm64
 * baseline, so no extra flags; on other targets this file only says "absent".
 * Not run on the development machine (x86-64): compile-checked only.
 */
#include "engine/matmul.h"

#if defined(__aarch64__)
#include <arm_neon.h>

static inline float32x4_t neon_bf16(const uint16_t *p)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

#define V float32x4_t
#define VW 4
#define VZERO() vdupq_n_f32(0.0f)
#define VLOAD(p) vld1q_f32(p)
#define VFMA(a, b, c) vfmaq_f32((c), (a), (b))
#define VADD(a, b) vaddq_f32((a), (b))
#define VHSUM(v) vaddvq_f32(v)
#define VLOAD_BF16(p) neon_bf16(p)
#define VLOAD_F16(p) vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)))
#define RB_FOR_TB(tb) 4
#define VPREFETCH(p) __builtin_prefetch((p))
#define KNAME(x) neon_##x
#include "engine/matmul_tile.h"

static const eng_mm_kernels neon_kernels = {
    .name = "neon",
    .tile = {[ENG_DT_F32] = neon_tile_f32, [ENG_DT_F16] = neon_tile_f16, [ENG_DT_BF16] = neon_tile_bf16},
    .dot_f32 = neon_dot_f32,
};

const eng_mm_kernels *eng_mm_neon_kernels(void) { return &neon_kernels; }
#else
const eng_mm_kernels *eng_mm_neon_kernels(void) { return NULL; }
#endif
