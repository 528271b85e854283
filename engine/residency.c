/* residency.c — see residency.h. */
#include "engine/residency.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older headers lack the name */
#endif

/* Queued ranges are split into chunks of this size: small enough that several
 * readers share one large tensor and an urgent range waits at most a chunk,
 * large enough that each call reads a long extent. */
#define RES_CHUNK ((size_t)4 << 20)

static size_t page_size(void)
{
    static _Atomic size_t page; /* the readers may ask first, several at once */
    size_t pg = atomic_load_explicit(&page, memory_order_relaxed);
    if (!pg) {
        long p = sysconf(_SC_PAGESIZE);
        pg = p > 0 ? (size_t)p : 4096;
        atomic_store_explicit(&page, pg, memory_order_relaxed);
    }
    return pg;
}

/* [*a, *b): the pages enclosing [p, p+n). */
static void page_range(const void *p, size_t n, uintptr_t *a, uintptr_t *b)
{
    uintptr_t pg = (uintptr_t)page_size();
    *a = (uintptr_t)p & ~(pg - 1);
    *b = (uintptr_t)p + n;
}

void eng_mem_willneed(const void *p, size_t n)
{
    if (!p || n == 0) return;
    uintptr_t a, b;
    page_range(p, n, &a, &b);
    /* Advice only: a failure (not a file mapping, old kernel) changes nothing. */
    (void)madvise((void *)a, b - a, MADV_WILLNEED);
}

void eng_tensor_willneed(const eng_tensor *t)
{
    if (t && t->data) eng_mem_willneed(t->data, (size_t)eng_tensor_numel(t) * eng_dtype_size(t->dtype));
}

static _Atomic int populate_missing; /* the kernel said EINVAL once: use the fallback */

/* 1 when every page of [a, b) is in the page cache (mincore); a warm start
 * then leaves the pages to the faults of the first matmul, as before. */
static int all_resident(uintptr_t a, uintptr_t b)
{
    unsigned char vec[256];
    size_t pg = page_size();
    for (uintptr_t x = a; x < b;) {
        size_t np = (size_t)((b - x + pg - 1) / pg);
        if (np > sizeof vec) np = sizeof vec;
        if (mincore((void *)x, np * pg, vec) != 0) return 0;
        for (size_t i = 0; i < np; i++)
            if (!(vec[i] & 1)) return 0;
        x += np * pg;
    }
    return 1;
}

void eng_mem_populate(const void *p, size_t n)
{
    if (!p || n == 0) return;
    uintptr_t a, b;
    page_range(p, n, &a, &b);
    if (all_resident(a, b)) return;
    /* WILLNEED first: it reads exactly these pages. POPULATE_READ alone would
     * fault them in, and a fault on an uncached page reads ra_pages (8 MiB
     * here) around it: twice the bytes for the first token of a 16-layer
     * OLMoE, whose small tensors (norms, router) sit between the experts.
     * Pages already in the page cache (or under I/O) fault without readahead. */
    (void)madvise((void *)a, b - a, MADV_WILLNEED);
    if (!atomic_load_explicit(&populate_missing, memory_order_relaxed)) {
        if (madvise((void *)a, b - a, MADV_POPULATE_READ) == 0) return;
        if (errno != EINVAL) return; /* EFAULT/ENOMEM/EINTR: advice only, the reads will fault */
        atomic_store_explicit(&populate_missing, 1, memory_order_relaxed);
    }
    volatile const unsigned char *q = (const unsigned char *)a;
    unsigned char s = 0;
    for (uintptr_t x = 0; x < b - a; x += (uintptr_t)page_size()) s ^= q[x];
    (void)s;
}

void eng_tensor_populate(const eng_tensor *t)
{
    if (t && t->data) eng_mem_populate(t->data, (size_t)eng_tensor_numel(t) * eng_dtype_size(t->dtype));
}

/* ---- background readers ----------------------------------------------------- */

typedef struct res_chunk {
    const char *p;
    size_t n;
    uint64_t seq; /* order of queueing, across both queues (eng_residency_ticket) */
} res_chunk;

typedef struct res_queue {
    res_chunk *v;
    size_t head, len, cap; /* entries [head, len) are pending */
} res_queue;

typedef struct res_reader {
    struct eng_residency *r;
    int i; /* index into r->cur */
} res_reader;

struct eng_residency {
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    res_queue urgent, bg;
    int busy, stop, n;
    uint64_t next_seq;    /* the seq the next queued chunk gets */
    uint64_t cur[16];     /* each reader's chunk in flight (its seq), UINT64_MAX when none */
    _Atomic size_t done;
    pthread_t th[16];
    res_reader rd[16];    /* res_worker's arguments */
};

static int q_push(res_queue *q, const char *p, size_t n, uint64_t seq)
{
    if (q->head > 0 && q->head == q->len) q->head = q->len = 0;
    if (q->len == q->cap) {
        if (q->head > 0) { /* slide the pending entries down before growing */
            for (size_t i = q->head; i < q->len; i++) q->v[i - q->head] = q->v[i];
            q->len -= q->head;
            q->head = 0;
        }
        if (q->len == q->cap) {
            size_t nc = q->cap ? q->cap * 2 : 256;
            res_chunk *nv = realloc(q->v, nc * sizeof *nv);
            if (!nv) return -1;
            q->v = nv;
            q->cap = nc;
        }
    }
    q->v[q->len++] = (res_chunk){p, n, seq};
    return 0;
}

static int q_empty(const res_queue *q) { return q->head == q->len; }

static void *res_worker(void *arg)
{
    eng_residency *r = ((res_reader *)arg)->r;
    int i = ((res_reader *)arg)->i;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->stop && q_empty(&r->urgent) && q_empty(&r->bg)) pthread_cond_wait(&r->work, &r->mu);
        if (r->stop) break;
        res_queue *q = !q_empty(&r->urgent) ? &r->urgent : &r->bg;
        res_chunk c = q->v[q->head++];
        r->busy++;
        r->cur[i] = c.seq;
        pthread_mutex_unlock(&r->mu);
        eng_mem_populate(c.p, c.n);
        atomic_fetch_add(&r->done, c.n);
        pthread_mutex_lock(&r->mu);
        r->busy--;
        r->cur[i] = UINT64_MAX;
        /* every chunk: eng_residency_wait may be waiting for this one */
        pthread_cond_broadcast(&r->idle);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

eng_residency *eng_residency_new(int n_threads)
{
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 16) n_threads = 16;
    eng_residency *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->work, NULL);
    pthread_cond_init(&r->idle, NULL);
    for (int i = 0; i < 16; i++) r->cur[i] = UINT64_MAX;
    for (int i = 0; i < n_threads; i++) {
        r->rd[i] = (res_reader){r, i};
        if (pthread_create(&r->th[i], NULL, res_worker, &r->rd[i]) != 0) break;
        r->n++;
    }
    if (r->n == 0) {
        eng_residency_free(r);
        return NULL;
    }
    return r;
}

void eng_residency_free(eng_residency *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->work);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n; i++) pthread_join(r->th[i], NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->work);
    pthread_cond_destroy(&r->idle);
    free(r->urgent.v);
    free(r->bg.v);
    free(r);
}

void eng_residency_populate(eng_residency *r, const void *p, size_t n, int urgent)
{
    if (!p || n == 0) return;
    if (!r) {
        eng_mem_willneed(p, n);
        return;
    }
    const char *c = p, *end = c + n;
    pthread_mutex_lock(&r->mu);
    res_queue *q = urgent ? &r->urgent : &r->bg;
    for (; c < end; c += RES_CHUNK) {
        size_t len = (size_t)(end - c) < RES_CHUNK ? (size_t)(end - c) : RES_CHUNK;
        if (q_push(q, c, len, r->next_seq) != 0) { /* no memory for the queue: plain advice */
            eng_mem_willneed(c, (size_t)(end - c));
            break;
        }
        r->next_seq++;
    }
    pthread_cond_broadcast(&r->work);
    pthread_mutex_unlock(&r->mu);
}

void eng_residency_tensor(eng_residency *r, const eng_tensor *t, int urgent)
{
    if (t && t->data) eng_residency_populate(r, t->data, (size_t)eng_tensor_numel(t) * eng_dtype_size(t->dtype), urgent);
}

void eng_residency_drain(eng_residency *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    while (r->busy || !q_empty(&r->urgent) || !q_empty(&r->bg)) pthread_cond_wait(&r->idle, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

uint64_t eng_residency_ticket(eng_residency *r)
{
    if (!r) return 0;
    pthread_mutex_lock(&r->mu);
    uint64_t t = r->next_seq;
    pthread_mutex_unlock(&r->mu);
    return t;
}

/* 1 when no chunk with seq < ticket is queued or in flight (r->mu held). Each
 * queue is in seq order, so its head is its oldest pending chunk. */
static int before_done(const eng_residency *r, uint64_t ticket)
{
    if (!q_empty(&r->urgent) && r->urgent.v[r->urgent.head].seq < ticket) return 0;
    if (!q_empty(&r->bg) && r->bg.v[r->bg.head].seq < ticket) return 0;
    for (int i = 0; i < r->n; i++)
        if (r->cur[i] < ticket) return 0;
    return 1;
}

void eng_residency_wait(eng_residency *r, uint64_t ticket)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    while (!r->stop && !before_done(r, ticket)) pthread_cond_wait(&r->idle, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

size_t eng_residency_done_bytes(const eng_residency *r)
{
    return r ? atomic_load(&((eng_residency *)r)->done) : 0;
}

/* ---- the dense weights --------------------------------------------------------- */

/* Calls fn on every dense tensor, in the order a forward pass reads them. */
static void dense_each(const eng_weights *w, const eng_model_desc *d, void (*fn)(const eng_tensor *, void *), void *arg)
{
    for (int l = 0; l < d->n_layers; l++) {
        const eng_layer_weights *L = &w->layers[l];
        const eng_tensor *ts[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->bq, &L->bk, &L->bv, &L->q_norm,
                                  &L->k_norm, &L->wo, &L->ffn_norm, &L->router, &L->sh_gate, &L->sh_up,
                                  &L->sh_expert_gate, &L->sh_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) fn(ts[i], arg);
    }
    fn(&w->final_norm, arg);
    fn(&w->lm_head, arg);
}

static void willneed_fn(const eng_tensor *t, void *arg)
{
    (void)arg;
    eng_tensor_willneed(t);
}

void eng_weights_willneed(const eng_weights *w, const eng_model_desc *d) { dense_each(w, d, willneed_fn, NULL); }

static void populate_fn(const eng_tensor *t, void *arg) { eng_residency_tensor(arg, t, 0); }

void eng_weights_populate(eng_residency *r, const eng_weights *w, const eng_model_desc *d)
{
    if (!r) {
        eng_weights_willneed(w, d);
        return;
    }
    dense_each(w, d, populate_fn, r);
}
