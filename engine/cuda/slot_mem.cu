/* slot_mem.cu — see slot_mem.cuh. */
#include "engine/cuda/slot_mem.cuh"
#include "engine/cuda/expert_cache.cuh"
#include "engine/cuda/moe_quant.cuh"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "engine/tensor.h"
}

typedef struct cu_slot {
    void *p;                  /* NULL = free entry (tombstone-free: open addressing, see find) */
    cudaEvent_t ready, read;
    int read_recorded;
    size_t persist;           /* > 0: a persistent block of that many bytes (persist hook), not a slot */
} cu_slot;

struct cu_slot_mem {
    cache_slot_mem ops;
    pthread_mutex_t mu;       /* the table, the counters, the engine flag */
    pthread_mutex_t stage_mu; /* the staging buffer */
    cudaStream_t copy;
    int dim, ffn;
    eng_dtype src;
    int qfmt;                 /* 0: bf16 slots (converted from src); QUANT_Q8/Q4: packed extents as stored */
    size_t slot_elems;        /* 3 * ffn * dim */
    size_t slot_bytes;        /* bytes of one slot: slot_elems bf16, or the packed extent */
    cu_bf16 *staging;         /* pinned, slot_elems; only for converting uploads */
    cu_slot *tab;             /* open addressing on the pointer, cap a power of two */
    int cap, n;
    int engine_gone;
    uint64_t alloc_bytes, upload_bytes, uploads;
    uint64_t persist_bytes;   /* persistent blocks (the lowbit policy's low-bit copy) */
    /* Pinned read buffers for store reads without a host-tier slot (kept for
     * reuse, at most CU_SM_READBUFS; guarded by mu). */
    void *readbuf[8];
    size_t readbuf_bytes;
    int n_readbuf;
    uint64_t readbuf_allocs;
};
#define CU_SM_READBUFS 8

static size_t hash_ptr(const void *p, int cap)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
    return (size_t)x & (size_t)(cap - 1);
}

/* Caller holds mu. The entry of p, or NULL. */
static cu_slot *find(cu_slot_mem *m, const void *p)
{
    if (!m->cap) return NULL;
    for (size_t i = hash_ptr(p, m->cap), k = 0; k < (size_t)m->cap; i = (i + 1) & (size_t)(m->cap - 1), k++) {
        if (m->tab[i].p == p) return &m->tab[i];
        if (!m->tab[i].p) return NULL;
    }
    return NULL;
}

static int insert(cu_slot_mem *m, const cu_slot *s);

static int grow(cu_slot_mem *m)
{
    int ncap = m->cap ? m->cap * 2 : 64;
    cu_slot *old = m->tab;
    int ocap = m->cap;
    m->tab = (cu_slot *)calloc((size_t)ncap, sizeof *m->tab);
    if (!m->tab) { m->tab = old; return -1; }
    m->cap = ncap;
    m->n = 0;
    for (int i = 0; i < ocap; i++)
        if (old[i].p) insert(m, &old[i]);
    free(old);
    return 0;
}

static int insert(cu_slot_mem *m, const cu_slot *s)
{
    if ((m->n + 1) * 2 > m->cap && grow(m) != 0) return -1;
    size_t i = hash_ptr(s->p, m->cap);
    while (m->tab[i].p) i = (i + 1) & (size_t)(m->cap - 1);
    m->tab[i] = *s;
    m->n++;
    return 0;
}

/* Removes entry e, re-inserting the rest of its probe run (no tombstones). */
static void erase(cu_slot_mem *m, cu_slot *e)
{
    size_t i = (size_t)(e - m->tab);
    m->tab[i].p = NULL;
    m->n--;
    for (size_t j = (i + 1) & (size_t)(m->cap - 1); m->tab[j].p; j = (j + 1) & (size_t)(m->cap - 1)) {
        cu_slot s = m->tab[j];
        m->tab[j].p = NULL;
        m->n--;
        insert(m, &s);
    }
}

static void destroy(cu_slot_mem *m)
{
    if (m->copy) { cudaStreamSynchronize(m->copy); cudaStreamDestroy(m->copy); }
    if (m->staging) cudaFreeHost(m->staging);
    for (int i = 0; i < m->n_readbuf; i++) cudaFreeHost(m->readbuf[i]);
    free(m->tab);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->stage_mu);
    free(m);
}

/* A new entry of the table: `size` bytes of device memory (filled with
 * src_bytes from src where src is set) and its two events, counted as a slot
 * or, with persist, as a persistent copy. NULL when any step fails, with
 * nothing left allocated. */
static void *slot_new(cu_slot_mem *m, size_t size, const void *src, size_t src_bytes, int persist)
{
    cu_slot s;
    memset(&s, 0, sizeof s);
    if (persist) s.persist = size;
    if (cudaMalloc(&s.p, size) != cudaSuccess) { cudaGetLastError(); return NULL; }
    if ((src && cudaMemcpy(s.p, src, src_bytes, cudaMemcpyHostToDevice) != cudaSuccess) ||
        cudaEventCreateWithFlags(&s.ready, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&s.read, cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        if (s.ready) cudaEventDestroy(s.ready);
        cudaFree(s.p);
        return NULL;
    }
    pthread_mutex_lock(&m->mu);
    int rc = insert(m, &s);
    if (rc == 0) {
        if (persist) m->persist_bytes += size;
        else m->alloc_bytes += size;
    }
    pthread_mutex_unlock(&m->mu);
    if (rc != 0) {
        cudaEventDestroy(s.ready);
        cudaEventDestroy(s.read);
        cudaFree(s.p);
        return NULL;
    }
    return s.p;
}

static void *sm_alloc(void *ctx, size_t bytes)
{
    cu_slot_mem *m = (cu_slot_mem *)ctx;
    (void)bytes; /* the store's extent stride; the slot holds bf16 whatever its dtype, or the packed extent */
    return slot_new(m, m->slot_bytes, NULL, 0, 0);
}

static void sm_free(void *ctx, void *p, size_t bytes)
{
    cu_slot_mem *m = (cu_slot_mem *)ctx;
    (void)bytes;
    pthread_mutex_lock(&m->mu);
    cu_slot *e = find(m, p);
    cu_slot s;
    memset(&s, 0, sizeof s);
    if (e) {
        s = *e;
        erase(m, e);
        if (s.persist) m->persist_bytes -= s.persist;
        else m->alloc_bytes -= m->slot_bytes;
    }
    int last = m->engine_gone && m->n == 0;
    pthread_mutex_unlock(&m->mu);
    if (s.p) {
        /* A kernel may still read it: wait for its last read before freeing. */
        if (s.read_recorded) cudaEventSynchronize(s.read);
        cudaEventDestroy(s.ready);
        cudaEventDestroy(s.read);
        cudaFree(s.p);
    }
    if (last) destroy(m);
}

/* A persistent read-only copy of host memory in device memory (the lowbit
 * policy's low-bit copy): an entry of the table like a slot (so the slot
 * memory lives until it is freed too), never uploaded to again. */
static void *sm_persist(void *ctx, const void *src, size_t bytes)
{
    return slot_new((cu_slot_mem *)ctx, bytes ? bytes : 1, src, bytes, 1);
}

static emoe_status sm_upload(void *ctx, void *dst, const void *src, size_t n, emoe_err *err)
{
    cu_slot_mem *m = (cu_slot_mem *)ctx;
    size_t bytes = m->slot_bytes;
    size_t want = m->qfmt ? m->slot_bytes : m->slot_elems * eng_dtype_size(m->src); /* packed: copied as stored */
    if (n < want) return emoe_errf(err, EMOE_EINVAL, "cuda slot upload: %zu bytes, an expert is %zu", n, want);
    pthread_mutex_lock(&m->mu);
    cu_slot *e = find(m, dst);
    cu_slot s;
    if (e) s = *e;
    pthread_mutex_unlock(&m->mu);
    if (!e) return emoe_errf(err, EMOE_EINVAL, "cuda slot upload: %p is not a slot", dst);
    emoe_status rc = EMOE_OK;
    int staged = !m->qfmt && m->src != ENG_DT_BF16;
    /* Never overwrite a slot while a kernel may read it: the copy waits for
     * the slot's last read (a no-op when none was recorded). */
    if (s.read_recorded) CUDA_TRY(rc, err, cudaStreamWaitEvent(m->copy, s.read, 0), out);
    if (staged) {
        pthread_mutex_lock(&m->stage_mu);
        eng_tensor t;
        memset(&t, 0, sizeof t);
        t.dtype = m->src;
        t.ndim = 1;
        t.shape[0] = (int64_t)m->slot_elems;
        t.data = src;
        cu_to_bf16(m->staging, &t, m->slot_elems);
        src = m->staging;
    }
    CUDA_TRY(rc, err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, m->copy), out);
    CUDA_TRY(rc, err, cudaEventRecord(s.ready, m->copy), out);
    /* READY when this returns (the cache then hands the slot out). */
    CUDA_TRY(rc, err, cudaEventSynchronize(s.ready), out);
    pthread_mutex_lock(&m->mu);
    m->upload_bytes += bytes;
    m->uploads++;
    pthread_mutex_unlock(&m->mu);
out:
    if (staged) pthread_mutex_unlock(&m->stage_mu);
    return rc;
}

/* Store reads land in pinned memory: the upload is one DMA from there. */
static void *sm_staging_alloc(void *ctx, size_t bytes)
{
    cu_slot_mem *m = (cu_slot_mem *)ctx;
    void *p = NULL;
    pthread_mutex_lock(&m->mu);
    if (m->n_readbuf > 0 && m->readbuf_bytes == bytes) p = m->readbuf[--m->n_readbuf];
    pthread_mutex_unlock(&m->mu);
    if (p) return p;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) { /* page-aligned, as O_DIRECT reads need */
        cudaGetLastError();
        return NULL; /* the cache reports it: out of memory for a staging buffer */
    }
    pthread_mutex_lock(&m->mu);
    m->readbuf_allocs++;
    pthread_mutex_unlock(&m->mu);
    return p;
}

static void sm_staging_free(void *ctx, void *p, size_t bytes)
{
    cu_slot_mem *m = (cu_slot_mem *)ctx;
    void *drop[CU_SM_READBUFS];
    int nd = 0;
    pthread_mutex_lock(&m->mu);
    if (m->readbuf_bytes != bytes) { /* one size per cache; a new size replaces the list */
        for (int i = 0; i < m->n_readbuf; i++) drop[nd++] = m->readbuf[i];
        m->n_readbuf = 0;
        m->readbuf_bytes = bytes;
    }
    if (m->n_readbuf < CU_SM_READBUFS) { m->readbuf[m->n_readbuf++] = p; p = NULL; }
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < nd; i++) cudaFreeHost(drop[i]); /* synchronises: outside the lock */
    if (p) cudaFreeHost(p);
}

static void sm_host_register(void *ctx, void *p, size_t bytes)
{
    (void)ctx;
    cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
    if (e != cudaSuccess) {
        cudaGetLastError();
        LOG_WARN("expert cache: cannot register the %zu-byte host tier with CUDA (%s); uploads from it are staged",
                 bytes, cudaGetErrorString(e));
    }
}

static void sm_host_unregister(void *ctx, void *p, size_t bytes)
{
    (void)ctx; (void)bytes;
    if (cudaHostUnregister(p) != cudaSuccess) cudaGetLastError();
}

emoe_status cu_slot_mem_new(int dim, int ffn, eng_dtype src, int qfmt, cu_slot_mem **out, emoe_err *err)
{
    *out = NULL;
    if (eng_dtype_size(src) == 0) return emoe_errf(err, EMOE_EUNSUP, "cuda slot memory: unsupported expert dtype");
    if (qfmt != 0 && cu_quant_row_bytes(qfmt, 1) == 0)
        return emoe_errf(err, EMOE_EUNSUP, "cuda slot memory: unknown expert format %d", qfmt);
    cu_slot_mem *m = (cu_slot_mem *)calloc(1, sizeof *m);
    if (!m) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->stage_mu, NULL);
    m->dim = dim;
    m->ffn = ffn;
    m->src = src;
    m->qfmt = qfmt;
    m->slot_elems = (size_t)3 * (size_t)ffn * (size_t)dim;
    m->slot_bytes = qfmt ? 2 * (size_t)ffn * cu_quant_row_bytes(qfmt, dim) + (size_t)dim * cu_quant_row_bytes(qfmt, ffn)
                         : m->slot_elems * sizeof(cu_bf16);
    emoe_status rc = EMOE_OK;
    CUDA_TRY(rc, err, cudaStreamCreateWithFlags(&m->copy, cudaStreamNonBlocking), fail);
    if (!qfmt && src != ENG_DT_BF16)
        CUDA_TRY(rc, err, cudaMallocHost((void **)&m->staging, m->slot_elems * sizeof(cu_bf16)), fail);
    m->ops.ctx = m;
    m->ops.host_addressable = 0;
    m->ops.alloc = sm_alloc;
    m->ops.free = sm_free;
    m->ops.upload = sm_upload;
    m->ops.host_register = sm_host_register;
    m->ops.host_unregister = sm_host_unregister;
    m->ops.staging_alloc = sm_staging_alloc;
    m->ops.staging_free = sm_staging_free;
    m->ops.persist = sm_persist;
    m->ops.persist_free = sm_free;
    *out = m;
    return EMOE_OK;
fail:
    destroy(m);
    return rc;
}

const cache_slot_mem *cu_slot_mem_ops(cu_slot_mem *m) { return &m->ops; }
int cu_slot_mem_format(const cu_slot_mem *m) { return m->qfmt; }

void cu_slot_mem_release(cu_slot_mem *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->engine_gone = 1;
    int last = m->n == 0;
    pthread_mutex_unlock(&m->mu);
    if (last) destroy(m);
}

emoe_status cu_slot_mem_mark_read(cu_slot_mem *m, const void *p, cudaStream_t compute, emoe_err *err)
{
    pthread_mutex_lock(&m->mu);
    cu_slot *e = find(m, p);
    cudaError_t ce = cudaSuccess;
    if (e) {
        ce = cudaEventRecord(e->read, compute);
        if (ce == cudaSuccess) e->read_recorded = 1;
    }
    pthread_mutex_unlock(&m->mu);
    if (!e) return emoe_errf(err, EMOE_EINVAL, "cuda slot memory: %p is not a slot", p);
    if (ce != cudaSuccess) return cu_err_cuda(err, ce, "cudaEventRecord(read)", __func__, __FILE__, __LINE__);
    return EMOE_OK;
}

uint64_t cu_slot_mem_readbuf_allocs(cu_slot_mem *m)
{
    pthread_mutex_lock(&m->mu);
    uint64_t n = m->readbuf_allocs;
    pthread_mutex_unlock(&m->mu);
    return n;
}

void cu_slot_mem_stats(cu_slot_mem *m, uint64_t *alloc_bytes, uint64_t *upload_bytes, uint64_t *uploads)
{
    pthread_mutex_lock(&m->mu);
    *alloc_bytes = m->alloc_bytes;
    *upload_bytes = m->upload_bytes;
    *uploads = m->uploads;
    pthread_mutex_unlock(&m->mu);
}
