/*
 * residency.h — bringing the mmapped checkpoint into memory fast. A cold
 * start used to fault the weights in 4 KiB at a time (MADV_RANDOM), then
 * asked the page cache for large extents (MADV_WILLNEED); both go through the
 * kernel's buffered readahead, which on the development VM reads ~330 MB/s
 * where the disk delivers ~650-750 MB/s. MADV_POPULATE_READ (Linux 5.14)
 * reads and maps a range in one call at about the disk's rate, so:
 *
 *   - at open, a few reader threads (eng_residency) populate the dense weights
 *     in the order the first token uses them (layer by layer, lm_head last)
 *     while the caller goes on: the forward pass follows behind the readers;
 *   - when a layer's routing picks experts never used before, their ranges
 *     are queued ahead of the dense ones (eng_residency_populate urgent), and
 *     the first use itself populates synchronously (waiting for what the
 *     readers have in flight, reading what is left), so the matmul never
 *     faults page by page.
 *
 * Where MADV_POPULATE_READ is missing, MADV_WILLNEED plus a read of one byte
 * per page does the same, more slowly. All of it is advice: a failure changes
 * only the speed.
 */
#ifndef EMOE_RESIDENCY_H
#define EMOE_RESIDENCY_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"

/* Starts reading [p, p+n) of a file mapping into the page cache
 * (MADV_WILLNEED on the enclosing pages); returns without waiting. */
void eng_mem_willneed(const void *p, size_t n);
/* Same for the bytes of a tensor view (nothing when it has no data). */
void eng_tensor_willneed(const eng_tensor *t);
/* Reads [p, p+n) of a file mapping into memory and maps it (the enclosing
 * pages), returning when done. */
void eng_mem_populate(const void *p, size_t n);
void eng_tensor_populate(const eng_tensor *t);

/* Reader threads that populate queued ranges in the background, in chunks
 * (several threads work on one large tensor), urgent ranges first. */
typedef struct eng_residency eng_residency;
/* The engine's readers: I/O-bound, so more than the cores; the virtio disk
 * here reads no faster with more than ~4 requests in flight. */
#define ENG_RESIDENCY_THREADS 4
/* n_threads reader threads (1..16); NULL when out of memory or threads. */
eng_residency *eng_residency_new(int n_threads);
/* Stops the readers after their current chunk (what is still queued is
 * dropped) and joins them. NULL is a no-op. */
void eng_residency_free(eng_residency *r);
/* Queues [p, p+n); returns at once. urgent: ahead of everything not urgent. */
void eng_residency_populate(eng_residency *r, const void *p, size_t n, int urgent);
void eng_residency_tensor(eng_residency *r, const eng_tensor *t, int urgent);
/* Waits until the queue is empty and no reader is busy (tests, benchmarks). */
void eng_residency_drain(eng_residency *r);
/* A ticket for what is queued so far: eng_residency_wait(r, ticket) returns
 * once every range queued before eng_residency_ticket was called is in memory,
 * whatever was queued after it (0 for NULL). */
uint64_t eng_residency_ticket(eng_residency *r);
/* Waits for the ranges queued before ticket (see above); NULL: returns. */
void eng_residency_wait(eng_residency *r, uint64_t ticket);
/* Bytes populated by the readers so far. */
size_t eng_residency_done_bytes(const eng_residency *r);

#include "engine/model.h"
/* The dense weights of a model: every layer's attention, norms, router and
 * shared expert, the final norm and lm_head. The embedding table is left to
 * demand paging unless tied to lm_head (only the prompt's rows are read). */
void eng_weights_willneed(const eng_weights *w, const eng_model_desc *d);
/* The same tensors queued on r (not urgent), in the order a forward pass
 * reads them: layer by layer, then the final norm and lm_head. */
void eng_weights_populate(eng_residency *r, const eng_weights *w, const eng_model_desc *d);

#endif
