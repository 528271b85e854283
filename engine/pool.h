/*
 * pool.h — a fixed set of worker threads for data-parallel loops. The calling
 * thread takes part in every loop, so a pool of n threads starts n-1 workers.
 */
#ifndef EMOE_POOL_H
#define EMOE_POOL_H

#include <stdint.h>

typedef struct eng_pool eng_pool;
/* Processes the half-open range [begin, end). */
typedef void (*eng_pool_fn)(void *ctx, int64_t begin, int64_t end);

/* n_threads <= 0: number of online CPUs. NULL on failure. */
eng_pool *eng_pool_new(int n_threads);
void eng_pool_free(eng_pool *p);
int eng_pool_size(const eng_pool *p);
/* Splits [0, n) into at most size() contiguous ranges of at least min_chunk
 * items and runs fn on them in parallel; returns when all are done. */
void eng_pool_run(eng_pool *p, int64_t n, int64_t min_chunk, eng_pool_fn fn, void *ctx);

#endif
