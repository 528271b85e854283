/* pool.c — see pool.h. One generation counter per loop; workers sleep on a
 * condition variable between loops. */
#include "engine/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct eng_pool {
    int n;                 /* threads including the caller */
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t gen;
    int stop;
    int pending;
    eng_pool_fn fn;
    void *ctx;
    int64_t total, parts;
};

typedef struct worker_arg { eng_pool *p; int idx; } worker_arg;

static void run_part(eng_pool *p, int64_t idx)
{
    int64_t per = (p->total + p->parts - 1) / p->parts;
    int64_t b = idx * per, e = b + per;
    if (e > p->total) e = p->total;
    if (b < e) p->fn(p->ctx, b, e);
}

static void *worker(void *arg)
{
    worker_arg a = *(worker_arg *)arg;
    free(arg);
    eng_pool *p = a.p;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen) pthread_cond_wait(&p->go, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        int64_t parts = p->parts;
        pthread_mutex_unlock(&p->mu);
        if (a.idx < parts) run_part(p, a.idx);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

eng_pool *eng_pool_new(int n)
{
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    if (n > 256) n = 256;
    eng_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->th = calloc((size_t)n, sizeof *p->th);
    if (!p->th) { free(p); return NULL; }
    for (int i = 1; i < n; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) { p->n = i; break; }
        a->p = p;
        a->idx = i;
        if (pthread_create(&p->th[i], NULL, worker, a) != 0) { free(a); p->n = i; break; }
    }
    return p;
}

void eng_pool_free(eng_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    free(p->th);
    free(p);
}

int eng_pool_size(const eng_pool *p) { return p->n; }

void eng_pool_run(eng_pool *p, int64_t n, int64_t min_chunk, eng_pool_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (min_chunk < 1) min_chunk = 1;
    int64_t parts = n / min_chunk;
    if (parts > p->n) parts = p->n;
    if (parts <= 1 || p->n == 1) { fn(ctx, 0, n); return; }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->total = n;
    p->parts = parts;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    run_part(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
