/*
 * residency.h — page-cache advice for the mmapped checkpoint. The dense
 * weights (read for every token) are asked for in one go at open, and a
 * routed expert's three tensors at its first use, so a cold start reads large
 * extents instead of faulting in one 4 KiB page at a time.
 */
#ifndef EMOE_RESIDENCY_H
#define EMOE_RESIDENCY_H

#include <stddef.h>

#include "engine/tensor.h"

/* Starts reading [p, p+n) of a file mapping into the page cache
 * (MADV_WILLNEED on the enclosing pages); returns without waiting. */
void eng_mem_willneed(const void *p, size_t n);
/* Same for the bytes of a tensor view (nothing when it has no data). */
void eng_tensor_willneed(const eng_tensor *t);

#include "engine/model.h"
/* The dense weights of a model: every layer's attention, norms, router and
 * shared expert, the final norm and lm_head. The embedding table is left to
 * demand paging unless tied to lm_head (only the prompt's rows are read). */
void eng_weights_willneed(const eng_weights *w, const eng_model_desc *d);

#endif
