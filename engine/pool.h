/*
 * pool.h — a fixed set of worker threads for data-parallel loops. The calling
 * thread takes part in every loop, so a pool of n threads starts n-1 workers.
 * Work is claimed in chunks from a shared counter (a slow or descheduled thread
 * costs only its current chunk); between loops workers spin briefly, then
 * sleep, so back-to-back loops do not pay a wake-up each.
 */
#ifndef EMOE_POOL_H
#define EMOE_POOL_H

#include <stdint.h>

typedef struct eng_pool eng_pool;
/* Processes the half-open range [begin, end). */
typedef void (*eng_pool_fn)(void *ctx, int64_t begin, int64_t end);

/* n_threads <= 0: eng_pool_default_threads(). NULL on failure. */
eng_pool *eng_pool_new(int n_threads);
void eng_pool_free(eng_pool *p);
int eng_pool_size(const eng_pool *p);
/* Physical cores this process may run on (one thread per core: a second
 * hyperthread only competes for the same memory bandwidth), else online CPUs. */
int eng_pool_default_threads(void);
/* Runs fn over [0, n) in chunks of at least min_chunk items on all threads;
 * returns when all are done. Which thread runs which chunk varies from call to
 * call; fn must not depend on it. */
void eng_pool_run(eng_pool *p, int64_t n, int64_t min_chunk, eng_pool_fn fn, void *ctx);

/* Batched runs (several jobs in one eng_pool_run): job j owns the units
 * [start[j], start[j + 1]); returns the last job whose start <= unit, i.e.
 * the job a chunk beginning at `unit` starts in. start is ascending. */
static inline int eng_pool_job_at(const int64_t *start, int n_jobs, int64_t unit)
{
    int lo = 0, hi = n_jobs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (start[mid] <= unit) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

#endif
