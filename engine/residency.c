/* residency.c — see residency.h. */
#include "engine/residency.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

void eng_mem_willneed(const void *p, size_t n)
{
    if (!p || n == 0) return;
    static long page;
    if (!page) page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    uintptr_t a = (uintptr_t)p & ~((uintptr_t)page - 1), b = (uintptr_t)p + n;
    /* Advice only: a failure (not a file mapping, old kernel) changes nothing. */
    (void)madvise((void *)a, b - a, MADV_WILLNEED);
}

void eng_tensor_willneed(const eng_tensor *t)
{
    if (t && t->data) eng_mem_willneed(t->data, (size_t)eng_tensor_numel(t) * eng_dtype_size(t->dtype));
}

void eng_weights_willneed(const eng_weights *w, const eng_model_desc *d)
{
    for (int l = 0; l < d->n_layers; l++) {
        const eng_layer_weights *L = &w->layers[l];
        const eng_tensor *ts[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq, &L->bk, &L->bv, &L->q_norm,
                                  &L->k_norm, &L->ffn_norm, &L->router, &L->sh_gate, &L->sh_up, &L->sh_down,
                                  &L->sh_expert_gate};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) eng_tensor_willneed(ts[i]);
    }
    eng_tensor_willneed(&w->final_norm);
    eng_tensor_willneed(&w->lm_head);
}
