/* tensor.c — dtype helpers for borrowed tensor views. */
#include "engine/tensor.h"

size_t eng_dtype_size(eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_F32: return 4;
    case ENG_DT_F16: return 2;
    case ENG_DT_BF16: return 2;
    }
    return 0;
}

const char *eng_dtype_name(eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_F32: return "F32";
    case ENG_DT_F16: return "F16";
    case ENG_DT_BF16: return "BF16";
    }
    return "?";
}

int64_t eng_tensor_numel(const eng_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

float eng_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) { mant <<= 1; exp--; }
            mant &= 0x3ffu;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void eng_tensor_read_f32(const eng_tensor *t, int64_t off, int64_t n, float *out)
{
    switch (t->dtype) {
    case ENG_DT_F32:
        memcpy(out, (const float *)t->data + off, (size_t)n * 4);
        break;
    case ENG_DT_BF16: {
        const uint16_t *p = (const uint16_t *)t->data + off;
        for (int64_t i = 0; i < n; i++) out[i] = eng_bf16_to_f32(p[i]);
        break;
    }
    case ENG_DT_F16: {
        const uint16_t *p = (const uint16_t *)t->data + off;
        for (int64_t i = 0; i < n; i++) out[i] = eng_f16_to_f32(p[i]);
        break;
    }
    }
}

uint16_t eng_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);                       /* >= 65520: infinity */
    if (a < 0x38800000u) {                                                         /* below 2^-14: subnormal */
        if (a <= 0x33000000u) return sign;                                         /* <= 2^-25: zero */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (a >> 13) - (112u << 10), rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}

void eng_f32_store(eng_dtype dt, const float *src, int64_t n, void *dst)
{
    switch (dt) {
    case ENG_DT_F32: memcpy(dst, src, (size_t)n * 4); break;
    case ENG_DT_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = eng_f32_to_bf16(src[i]);
        break;
    case ENG_DT_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = eng_f32_to_f16(src[i]);
        break;
    }
}
