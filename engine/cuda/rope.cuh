/*
 * rope.cuh — rotary position embedding, rotate-half convention (Hugging Face
 * Llama/Qwen/Mixtral/OLMoE): for i < hd/2, with ang = pos * inv_freq[i]
 * (float32 product; inv_freq computed on the host exactly as engine.c does),
 * cos/sin evaluated in double and rounded to float as the CPU reference does:
 *   v[i] = x1*c - x2*s;  v[i+hd/2] = x2*c + x1*s.
 */
#ifndef EMOE_CUDA_ROPE_CUH
#define EMOE_CUDA_ROPE_CUH
#include "engine/cuda/common.cuh"

/* v: T rows of `stride` floats, each holding n_heads heads of hd; pos (T)
 * device; inv_freq (hd/2) device. In place. hd must be even. */
emoe_status cu_rope(cudaStream_t st, float *v, int T, int n_heads, int hd, int stride, const int *pos,
                    const float *inv_freq, emoe_err *err);
#endif
