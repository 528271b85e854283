/*
 * dense_quant.h — `[engine] dense_format = q8`: the dense matmul weights (the
 * attention projections q/k/v/o, the shared expert's gate/up/down, the lm_head)
 * quantized at engine open to engine/quant.h's q8 rows (blocks of 32 int8 and
 * an f16 scale) and multiplied with engine/quant's kernels (q8 activations,
 * the tiles chosen by cpuid). The embedding lookup, the norms, the router and
 * the shared expert's gate logit stay in the checkpoint's dtype. The mmapped
 * checkpoint keeps its copy (no longer read by the CPU step). docs/quant.md.
 *
 * A NULL dense_quant (`native`, the default) makes dense_mm_run exactly
 * eng_mm_run: the results are bitwise those of the float reference path.
 */
#ifndef EMOE_DENSE_QUANT_H
#define EMOE_DENSE_QUANT_H

#include <stddef.h>

#include "engine/common.h"
#include "engine/matmul.h"
#include "engine/model.h"
#include "engine/pool.h"

/* Values of eng_open_opts.dense_format and [engine] dense_format's index. */
enum { DENSE_NATIVE = 0, DENSE_Q8 = 1 };

typedef struct dense_quant dense_quant;

/* "native" (also "bf16": the checkpoints' dtype) -> DENSE_NATIVE, "q8" ->
 * DENSE_Q8; -1 on anything else. */
int dense_format_parse(const char *s, int *out);
/* "native" or "q8" ("?" otherwise). */
const char *dense_format_name(int f);

/* Quantizes w's dense matmul weights into fmt (DENSE_Q8) on p's threads.
 * DENSE_NATIVE: *out = NULL, EMOE_OK. Anything else: EMOE_EINVAL naming it. */
emoe_status dense_quant_build(eng_pool *p, const eng_weights *w, const eng_model_desc *d, int fmt, dense_quant **out,
                              emoe_err *err);
void dense_quant_free(dense_quant *q);
/* Bytes of the quantized copies (0 for NULL). */
size_t dense_quant_bytes(const dense_quant *q);
/* Tensors quantized (0 for NULL). */
int dense_quant_count(const dense_quant *q);

/* eng_mm_run, with every job whose weight has a quantized copy in q run through
 * quant_mm_run instead (bias added after, as eng_mm_run does). q NULL: eng_mm_run. */
void dense_mm_run(const dense_quant *q, eng_pool *p, const eng_mm_job *jobs, int n_jobs);
/* One job with dense x/y, as eng_mm. */
void dense_mm(const dense_quant *q, eng_pool *p, const float *x, int T, int K, const eng_tensor *W,
              const eng_tensor *bias, float *y);

#endif
