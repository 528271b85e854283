/*
 * quant.c — q8/q4 block formats: names, sizes, quantization and the float
 * dequantization reference. Layout in quant.h and docs/quant.md.
 */
#include "engine/quant.h"

#include <math.h>
#include <string.h>

#include "engine/tensor.h"

int quant_format_parse(const char *s, quant_format *out)
{
    if (!s) return -1;
    if (!strcmp(s, "bf16") || !strcmp(s, "none") || !strcmp(s, "dense")) { *out = QUANT_NONE; return 0; }
    if (!strcmp(s, "q8")) { *out = QUANT_Q8; return 0; }
    if (!strcmp(s, "q4")) { *out = QUANT_Q4; return 0; }
    return -1;
}

const char *quant_format_name(int f)
{
    switch (f) {
    case QUANT_NONE: return "bf16";
    case QUANT_Q8: return "q8";
    case QUANT_Q4: return "q4";
    }
    return "?";
}

size_t quant_row_bytes(int fmt, int64_t k)
{
    if (k <= 0) return 0;
    switch (fmt) {
    case QUANT_Q8: return (size_t)quant_blocks(k) * sizeof(quant_block_q8);
    case QUANT_Q4: return (size_t)quant_blocks(k) * sizeof(quant_block_q4);
    }
    return 0;
}

/* IEEE half, round to nearest even; overflow saturates to the largest finite
 * value (a scale must stay finite), NaN stays NaN. */
uint16_t quant_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7bffu); /* >= 65520 rounds past max: saturate */
    if (a < 0x38800000u) {                                   /* below 2^-14: subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;          /* < 2^-25: rounds to 0 */
        float af;
        memcpy(&af, &a, 4);
        uint32_t q = (uint32_t)lrintf(af * 16777216.0f); /* units of 2^-24, nearest even; 1024 = min normal */
        return (uint16_t)(sign | q);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u); /* round mantissa to 10 bits, nearest even */
    r -= 0x38000000u;                           /* rebias exponent 127 -> 15 */
    return (uint16_t)(sign | (r >> 13));
}

static void q8_block(const float *x, int n, quant_block_q8 *b)
{
    float amax = 0;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    b->d = quant_f32_to_f16(amax / 127.0f);
    float d = eng_f16_to_f32(b->d);
    float id = d > 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < QUANT_BLOCK; i++) {
        float v = i < n ? x[i] * id : 0.0f;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        b->qs[i] = (int8_t)lrintf(v);
    }
}

/* Squared error of x quantized as q4 with scale d (values d * (q - 8), q in [0, 15]). */
static double q4_sse(const float *x, int n, float d, uint8_t *q)
{
    double e = 0;
    float id = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) {
        float v = x[i] * id + 8.0f;
        v = v < 0 ? 0 : v > 15 ? 15 : v;
        int qi = (int)lrintf(v);
        if (q) q[i] = (uint8_t)qi;
        double r = (double)x[i] - (double)d * (qi - 8);
        e += r * r;
    }
    return e;
}

/* q4: the scale maps the largest-magnitude value m to -c (c = 8 is llama.cpp's
 * Q4_0); c is chosen on a small grid around 8 for the least squared error of
 * the block, with the scale as stored (f16). */
static void q4_block(const float *x, int n, quant_block_q4 *b)
{
    float m = 0;
    for (int i = 0; i < n; i++) if (fabsf(x[i]) > fabsf(m)) m = x[i];
    uint16_t best = quant_f32_to_f16(m / -8.0f);
    double best_e = q4_sse(x, n, eng_f16_to_f32(best), NULL);
    for (int s = 0; s <= 12; s++) {
        float c = 6.5f + 0.25f * (float)s;
        uint16_t dh = quant_f32_to_f16(m / -c);
        double e = q4_sse(x, n, eng_f16_to_f32(dh), NULL);
        if (e < best_e) { best_e = e; best = dh; }
    }
    uint8_t q[QUANT_BLOCK];
    memset(q, 8, sizeof q); /* padding decodes to 0 */
    q4_sse(x, n, eng_f16_to_f32(best), q);
    b->d = best;
    for (int i = 0; i < QUANT_BLOCK / 2; i++) b->qs[i] = (uint8_t)(q[i] | (q[i + 16] << 4));
}

void quant_row_quantize(int fmt, const float *x, int64_t k, void *dst)
{
    int64_t nb = quant_blocks(k);
    for (int64_t i = 0; i < nb; i++) {
        int n = (int)(k - i * QUANT_BLOCK < QUANT_BLOCK ? k - i * QUANT_BLOCK : QUANT_BLOCK);
        if (fmt == QUANT_Q8) q8_block(x + i * QUANT_BLOCK, n, (quant_block_q8 *)dst + i);
        else if (fmt == QUANT_Q4) q4_block(x + i * QUANT_BLOCK, n, (quant_block_q4 *)dst + i);
    }
}

void quant_row_dequantize(int fmt, const void *src, int64_t k, float *out)
{
    for (int64_t i = 0; i < k; i++) {
        int64_t bi = i / QUANT_BLOCK;
        int j = (int)(i % QUANT_BLOCK);
        if (fmt == QUANT_Q8) {
            const quant_block_q8 *b = (const quant_block_q8 *)src + bi;
            out[i] = eng_f16_to_f32(b->d) * (float)b->qs[j];
        } else if (fmt == QUANT_Q4) {
            const quant_block_q4 *b = (const quant_block_q4 *)src + bi;
            int q = j < 16 ? (b->qs[j] & 0xf) : (b->qs[j - 16] >> 4);
            out[i] = eng_f16_to_f32(b->d) * (float)(q - 8);
        } else {
            out[i] = 0;
        }
    }
}

void quant_act_quantize(const float *x, int64_t k, quant_block_q8a *dst)
{
    int64_t nb = quant_blocks(k);
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QUANT_BLOCK;
        int n = (int)(k - i * QUANT_BLOCK < QUANT_BLOCK ? k - i * QUANT_BLOCK : QUANT_BLOCK);
        float amax = 0;
        for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        dst[i].d = d;
        for (int j = 0; j < QUANT_BLOCK; j++) {
            float v = j < n ? xb[j] * id : 0.0f;
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            dst[i].qs[j] = (int8_t)lrintf(v);
        }
    }
}
