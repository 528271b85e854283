/* expert_cache.cu — see expert_cache.cuh. */
#include "engine/cuda/expert_cache.cuh"

extern "C" {
#include "engine/tensor.h"
}

emoe_status cu_expert_cache_init(cu_expert_cache *c, int n_layers, int n_experts, int dim, int ffn, int n_slots,
                                 emoe_err *err)
{
    memset(c, 0, sizeof *c);
    emoe_status rc = EMOE_OK;
    c->n_layers = n_layers;
    c->n_experts = n_experts;
    c->dim = dim;
    c->ffn = ffn;
    c->slot_elems = (size_t)3 * (size_t)ffn * (size_t)dim;
    if (eng_slot_table_init(&c->tab, n_slots, n_layers * n_experts) != 0)
        return emoe_errf(err, EMOE_ENOMEM, "expert cache: out of host memory for %d slots", n_slots);
    CUDA_TRY(rc, err, cudaMalloc((void **)&c->slots, (size_t)n_slots * c->slot_elems * sizeof(cu_bf16)), fail);
    CUDA_TRY(rc, err, cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking), fail);
    CUDA_TRY(rc, err, cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming), fail);
    for (int i = 0; i < CU_EC_STAGING; i++) {
        CUDA_TRY(rc, err, cudaMallocHost((void **)&c->staging[i], c->slot_elems * sizeof(cu_bf16)), fail);
        CUDA_TRY(rc, err, cudaEventCreateWithFlags(&c->staged[i], cudaEventDisableTiming), fail);
    }
    return EMOE_OK;
fail:
    cu_expert_cache_free(c);
    return rc;
}

void cu_expert_cache_free(cu_expert_cache *c)
{
    if (!c) return;
    if (c->copy) cudaStreamSynchronize(c->copy);
    for (int i = 0; i < CU_EC_STAGING; i++) {
        if (c->staging[i]) cudaFreeHost(c->staging[i]);
        if (c->staged[i]) cudaEventDestroy(c->staged[i]);
    }
    if (c->ready) cudaEventDestroy(c->ready);
    if (c->copy) cudaStreamDestroy(c->copy);
    cudaFree(c->slots);
    eng_slot_table_free(&c->tab);
    memset(c, 0, sizeof *c);
}

/* dst (n) bf16 from a provider tensor of any stored float dtype. */
void cu_to_bf16(cu_bf16 *dst, const eng_tensor *t, size_t n)
{
    if (t->dtype == ENG_DT_BF16) {
        memcpy(dst, t->data, n * sizeof(cu_bf16));
        return;
    }
    float buf[1024];
    for (size_t off = 0; off < n; off += 1024) {
        size_t m = n - off < 1024 ? n - off : 1024;
        eng_tensor_read_f32(t, (int64_t)off, (int64_t)m, buf);
        for (size_t i = 0; i < m; i++) dst[off + i] = eng_f32_to_bf16(buf[i]);
    }
}

static emoe_status check_shape(const eng_tensor *t, int64_t r, int64_t cols, const char *what, int layer, int x,
                               emoe_err *err)
{
    if (!t->data || t->ndim != 2 || t->shape[0] != r || t->shape[1] != cols)
        return emoe_errf(err, EMOE_EINVAL, "expert (%d, %d): %s is not (%lld, %lld)", layer, x, what, (long long)r,
                         (long long)cols);
    return EMOE_OK;
}

/* Uploads (layer, x) into slot s. */
static emoe_status upload(cu_expert_cache *c, const eng_expert_provider *p, int layer, int x, int s, emoe_err *err)
{
    eng_expert_weights w = {};
    emoe_status rc = p->acquire(p->ctx, layer, x, &w, err);
    if (rc != EMOE_OK) return emoe_err_prefix(err, "layer %d expert %d", layer, x);
    if (w.qfmt || w.lowbit) { /* q8/q4 experts come through engine/cache.c's device tier (slot_mem.cu) */
        if (p->release) p->release(p->ctx, layer, x);
        return emoe_errf(err, EMOE_EUNSUP, "expert (%d, %d): quantized views need the expert cache's GPU tier", layer, x);
    }
    size_t fd = (size_t)c->ffn * (size_t)c->dim;
    if ((rc = check_shape(&w.gate, c->ffn, c->dim, "gate", layer, x, err)) ||
        (rc = check_shape(&w.up, c->ffn, c->dim, "up", layer, x, err)) ||
        (rc = check_shape(&w.down, c->dim, c->ffn, "down", layer, x, err))) {
        if (p->release) p->release(p->ctx, layer, x);
        return rc;
    }
    int b = c->next_staging;
    c->next_staging = (b + 1) % CU_EC_STAGING;
    if (c->staged_used[b]) { /* the previous copy out of this buffer must be done */
        cudaError_t e = cudaEventSynchronize(c->staged[b]);
        if (e != cudaSuccess) {
            if (p->release) p->release(p->ctx, layer, x);
            return cu_err_cuda(err, e, "cudaEventSynchronize(staged)", __func__, __FILE__, __LINE__);
        }
    }
    cu_bf16 *h = c->staging[b];
    cu_to_bf16(h, &w.gate, fd);
    cu_to_bf16(h + fd, &w.up, fd);
    cu_to_bf16(h + 2 * fd, &w.down, fd);
    if (p->release) p->release(p->ctx, layer, x); /* the host copy is ours now */
    CUDA_CHECK(err, cudaMemcpyAsync(c->slots + (size_t)s * c->slot_elems, h, c->slot_elems * sizeof(cu_bf16),
                                    cudaMemcpyHostToDevice, c->copy));
    CUDA_CHECK(err, cudaEventRecord(c->staged[b], c->copy));
    c->staged_used[b] = 1;
    c->upload_bytes += c->slot_elems * sizeof(cu_bf16);
    return EMOE_OK;
}

emoe_status cu_expert_cache_fill(cu_expert_cache *c, const eng_expert_provider *p, int layer, const int *experts,
                                 int n, cu_moe_expert *tab, cudaStream_t compute, emoe_err *err)
{
    double t0 = emoe_now();
    int uploaded = 0;
    emoe_status rc = EMOE_OK;
    size_t fd = (size_t)c->ffn * (size_t)c->dim;
    for (int i = 0; i < n; i++) {
        int x = experts[i], miss, evicted;
        int s = eng_slot_table_get(&c->tab, layer * c->n_experts + x, &miss, &evicted);
        if (s < 0) {
            rc = emoe_errf(err, EMOE_ENOMEM, "expert cache: no free slot for layer %d expert %d (%d slots, all in use)",
                           layer, x, c->tab.n_slots);
            break;
        }
        if (miss) {
            if ((rc = upload(c, p, layer, x, s, err)) != EMOE_OK) {
                eng_slot_table_drop(&c->tab, s);
                break;
            }
            uploaded++;
        }
        const cu_bf16 *base = c->slots + (size_t)s * c->slot_elems;
        tab[i].gate = base;
        tab[i].up = base + fd;
        tab[i].down = base + 2 * fd;
    }
    if (uploaded) {
        /* Even on failure, order the compute stream after what was queued. */
        cudaError_t e = cudaEventRecord(c->ready, c->copy);
        if (e == cudaSuccess) e = cudaStreamWaitEvent(compute, c->ready, 0);
        if (e != cudaSuccess && rc == EMOE_OK) rc = cu_err_cuda(err, e, "cudaStreamWaitEvent(ready)", __func__, __FILE__, __LINE__);
        c->stall_s += emoe_now() - t0;
    }
    return rc;
}
