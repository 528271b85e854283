/*
 * tensor.h — borrowed tensor views and the dtype conversions of the stored
 * weights (bf16/f16/f32). A view never owns its data: it points into a mapping
 * (safetensors file, expert-store slot) owned elsewhere.
 */
#ifndef EMOE_TENSOR_H
#define EMOE_TENSOR_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

typedef enum eng_dtype {
    ENG_DT_F32 = 0,
    ENG_DT_F16 = 1,
    ENG_DT_BF16 = 2,
} eng_dtype;

typedef struct eng_tensor {
    const void *data;  /* NULL: absent (optional tensor) */
    eng_dtype dtype;
    int ndim;
    int64_t shape[4];  /* row-major, shape[0] outermost */
} eng_tensor;

size_t eng_dtype_size(eng_dtype dt);
const char *eng_dtype_name(eng_dtype dt);
int64_t eng_tensor_numel(const eng_tensor *t);

static inline float eng_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round-to-nearest-even, NaN preserved (as torch does). */
static inline uint16_t eng_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float eng_f16_to_f32(uint16_t h);
/* Round-to-nearest-even, overflow to infinity, NaN kept (quiet). */
uint16_t eng_f32_to_f16(float f);
/* n float32 values into dt (F32: copied; F16/BF16: rounded to nearest even). */
void eng_f32_store(eng_dtype dt, const float *src, int64_t n, void *dst);

/* Converts n elements starting at element offset `off` of t into out (float32). */
void eng_tensor_read_f32(const eng_tensor *t, int64_t off, int64_t n, float *out);

#endif
