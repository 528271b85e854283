/*
 * matmul.h — the CPU matrix kernels: y (T, N) = x (T, K) @ W^T (+ bias) with W
 * (N, K) stored as float32, float16 or bfloat16, x and y float32.
 *
 * Kernels come in variants per instruction set (scalar reference, AVX2+FMA+F16C,
 * AVX-512, NEON), chosen once at startup from cpuid; eng_mm_set_isa() forces one
 * (tests). Every variant computes the same products in float32 with float32
 * accumulation; they differ only in the order of the additions.
 *
 * A variant supplies one tile function per weight dtype: all T tokens against
 * R weight rows, register-blocked (several tokens x several rows) so that each
 * weight element is loaded and converted once per block of tokens; T need not
 * be a multiple of the block (an expert's leftover tokens use the same tile).
 *
 * eng_mm_run() runs a list of independent matmuls as ONE parallel region on
 * the pool (e.g. all selected experts' gate and up projections), split into
 * dynamically claimed chunks of rows. Other kernels (quantized experts) plug in
 * by adding a dtype and a tile function.
 */
#ifndef EMOE_MATMUL_H
#define EMOE_MATMUL_H

#include "engine/pool.h"
#include "engine/tensor.h"

#include <stddef.h>
#include <stdint.h>

typedef enum eng_mm_isa {
    ENG_MM_SCALAR = 0, /* portable C, the reference */
    ENG_MM_AVX2,       /* x86-64 AVX2 + FMA + F16C */
    ENG_MM_AVX512,     /* x86-64 AVX-512F */
    ENG_MM_NEON,       /* arm64 Advanced SIMD */
    ENG_MM_ISA_COUNT
} eng_mm_isa;

/* y[t*ldy + r] = sum_k x[t*ldx + k] * w[r*ldw + k], t < T, r < R, k < K. w points
 * at row 0 of the R rows (row stride ldw >= K elements) in the tile's dtype. */
typedef void (*eng_mm_tile_fn)(const float *x, size_t ldx, int T, const void *w, size_t ldw, int R, int K, float *y,
                               size_t ldy);

typedef struct eng_mm_kernels {
    const char *name;
    eng_mm_tile_fn tile[3];                            /* indexed by eng_dtype */
    float (*dot_f32)(const float *a, const float *b, int n);
} eng_mm_kernels;

const char *eng_mm_isa_name(eng_mm_isa isa);
/* 1 when this build has the variant and this CPU runs it. */
int eng_mm_isa_available(eng_mm_isa isa);
/* The best available variant (what the engine uses unless forced). */
eng_mm_isa eng_mm_isa_best(void);
/* Forces a variant for the whole process; 0, or -1 when it is not available. */
int eng_mm_set_isa(eng_mm_isa isa);
eng_mm_isa eng_mm_isa_active(void);
/* The kernels of a variant (NULL when not available) and of the active one. */
const eng_mm_kernels *eng_mm_kernels_for(eng_mm_isa isa);
const eng_mm_kernels *eng_mm_active(void);

/* One matmul of a batch: y (T, N) (row stride ldy) = x (T, K) (row stride ldx)
 * @ W^T (+ bias (N) when bias and bias->data). N = W->shape[0]. */
typedef struct eng_mm_job {
    const float *x;
    size_t ldx;
    int T, K;
    const eng_tensor *W;
    const eng_tensor *bias;
    float *y;
    size_t ldy;
} eng_mm_job;

/* Rows [r0, r1) of one job on the calling thread with the active kernels. */
void eng_mm_job_rows(const eng_mm_job *j, int64_t r0, int64_t r1);
/* Runs all jobs as one parallel region; returns when all are done. Results do
 * not depend on the number of threads. */
void eng_mm_run(eng_pool *p, const eng_mm_job *jobs, int n_jobs);
/* Convenience: one job with dense x/y (ldx = K, ldy = N). */
void eng_mm(eng_pool *p, const float *x, int T, int K, const eng_tensor *W, const eng_tensor *bias, float *y);

/* Variant kernel tables (matmul_*.c); NULL where not compiled in. */
extern const eng_mm_kernels eng_mm_scalar_kernels;
const eng_mm_kernels *eng_mm_avx2_kernels(void);
const eng_mm_kernels *eng_mm_avx512_kernels(void);
const eng_mm_kernels *eng_mm_neon_kernels(void);

#endif
