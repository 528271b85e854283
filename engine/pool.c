/* pool.c — see pool.h. One 64-bit atomic word holds (generation << 32 | next
 * chunk): a loop is published by storing a new generation, and a chunk is
 * claimed by a compare-and-swap that succeeds only within its generation, so a
 * worker that wakes late never runs a chunk of a loop that has moved on. The
 * loop's parameters are atomics too (a late worker may read them while the
 * next loop writes them; it then fails its claim). Workers and the caller
 * spin for POOL_SPIN_NS before sleeping on a condition variable; the
 * "sleepers"/"waiting" flags are written before the sleeper re-checks its
 * condition and read after the waker changed it (all seq_cst), so no wake-up
 * is lost. */
#include "engine/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POOL_SPIN_NS 200000 /* 0.2 ms: longer than the serial gaps between a step's loops */

struct eng_pool {
    int n; /* threads including the caller */
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    _Atomic uint64_t state; /* gen << 32 | next chunk */
    _Atomic(eng_pool_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t total, chunk, n_chunks;
    _Atomic int64_t done_chunks;
    _Atomic int sleepers;       /* workers blocked (or about to block) on go */
    _Atomic int caller_waiting; /* caller blocked (or about to block) on done */
    _Atomic int stop;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claims and runs chunks of generation g until none is left. */
static void run_chunks(eng_pool *p, uint32_t g)
{
    for (;;) {
        uint64_t s = atomic_load(&p->state);
        if ((uint32_t)(s >> 32) != g) return;
        int64_t idx = (int64_t)(uint32_t)s, nc = atomic_load_explicit(&p->n_chunks, memory_order_relaxed);
        if (idx >= nc) return;
        eng_pool_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&p->ctx, memory_order_relaxed);
        int64_t total = atomic_load_explicit(&p->total, memory_order_relaxed);
        int64_t chunk = atomic_load_explicit(&p->chunk, memory_order_relaxed);
        if (!atomic_compare_exchange_weak(&p->state, &s, s + 1)) continue;
        /* The claim succeeded within generation g, so the fields read above are g's. */
        int64_t b = idx * chunk, e = b + chunk;
        fn(ctx, b, e < total ? e : total);
        if (atomic_fetch_add(&p->done_chunks, 1) + 1 == nc && atomic_load(&p->caller_waiting)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker(void *arg)
{
    eng_pool *p = arg;
    uint32_t seen = (uint32_t)(atomic_load(&p->state) >> 32);
    for (;;) {
        uint32_t g = (uint32_t)(atomic_load(&p->state) >> 32);
        if (g == seen && !atomic_load(&p->stop)) {
            int64_t t0 = now_ns();
            for (int i = 1;; i++) {
                cpu_relax();
                g = (uint32_t)(atomic_load(&p->state) >> 32);
                if (g != seen || atomic_load(&p->stop)) break;
                if ((i & 255) == 0 && now_ns() - t0 > POOL_SPIN_NS) break;
            }
        }
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = (uint32_t)(atomic_load(&p->state) >> 32)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->go, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        run_chunks(p, g);
    }
    return NULL;
}

int eng_pool_default_threads(void)
{
    cpu_set_t set;
    int n_online = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n_online < 1) n_online = 1;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return n_online;
    /* Distinct (package, core) pairs among the CPUs we may run on. */
    enum { MAXC = 1024 };
    static long keys[MAXC];
    int nk = 0, ncpu = 0;
    for (int c = 0; c < CPU_SETSIZE && c < MAXC; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        ncpu++;
        long pkg = -1, core = -1;
        char path[128];
        FILE *f;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        if ((f = fopen(path, "r"))) { if (fscanf(f, "%ld", &pkg) != 1) pkg = -1; fclose(f); }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        if ((f = fopen(path, "r"))) { if (fscanf(f, "%ld", &core) != 1) core = -1; fclose(f); }
        if (pkg < 0 || core < 0) return ncpu > 0 ? CPU_COUNT(&set) : n_online; /* no topology: count CPUs */
        long key = pkg * 1000003L + core;
        int dup = 0;
        for (int i = 0; i < nk && !dup; i++) dup = keys[i] == key;
        if (!dup && nk < MAXC) keys[nk++] = key;
    }
    return nk > 0 ? nk : (ncpu > 0 ? ncpu : n_online);
}

eng_pool *eng_pool_new(int n)
{
    if (n <= 0) n = eng_pool_default_threads();
    if (n > 256) n = 256;
    eng_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->th = calloc((size_t)n, sizeof *p->th);
    if (!p->th) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->go);
        pthread_cond_destroy(&p->done);
        free(p);
        return NULL;
    }
    for (int i = 1; i < n; i++)
        if (pthread_create(&p->th[i], NULL, worker, p) != 0) { p->n = i; break; }
    return p;
}

void eng_pool_free(eng_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
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
    /* About 8 chunks per thread for balance, none below min_chunk, and a chunk
     * count that fits the 32-bit claim counter. */
    int64_t chunk = (n + (int64_t)p->n * 8 - 1) / ((int64_t)p->n * 8);
    if (chunk < min_chunk) chunk = min_chunk;
    if (chunk < n / ((int64_t)1 << 30) + 1) chunk = n / ((int64_t)1 << 30) + 1;
    int64_t nc = (n + chunk - 1) / chunk;
    if (nc <= 1 || p->n == 1) { fn(ctx, 0, n); return; }
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->total, n, memory_order_relaxed);
    atomic_store_explicit(&p->chunk, chunk, memory_order_relaxed);
    atomic_store_explicit(&p->n_chunks, nc, memory_order_relaxed);
    atomic_store(&p->done_chunks, 0);
    uint32_t g = (uint32_t)(atomic_load(&p->state) >> 32) + 1;
    atomic_store(&p->state, (uint64_t)g << 32); /* publishes the fields above */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
    }
    run_chunks(p, g);
    if (atomic_load(&p->done_chunks) < nc) {
        int64_t t0 = now_ns();
        for (int i = 1; atomic_load(&p->done_chunks) < nc; i++) {
            cpu_relax();
            if ((i & 255) == 0 && now_ns() - t0 > POOL_SPIN_NS) break;
        }
    }
    if (atomic_load(&p->done_chunks) < nc) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->caller_waiting, 1);
        while (atomic_load(&p->done_chunks) < nc) pthread_cond_wait(&p->done, &p->mu);
        atomic_store(&p->caller_waiting, 0);
        pthread_mutex_unlock(&p->mu);
    }
}
