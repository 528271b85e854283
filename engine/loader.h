/*
 * loader.h — asynchronous reads of expert extents from one file through
 * io_uring, with O_DIRECT (no page cache) into caller-owned, aligned (ideally
 * registered, pinned) buffers. A loader owns one ring and one completion thread;
 * any thread may submit, and callbacks run on the completion thread.
 *
 * Per read: short reads are continued and -EAGAIN/-EINTR retried; any other
 * error (or EOF before the requested length) completes the read with -errno,
 * which the caller turns into an error of the waiting request only.
 * Where io_uring is unavailable (kernel, seccomp) or the file system refuses
 * O_DIRECT (tmpfs), the loader falls back (with a warning) to buffered pread on
 * its thread. For tests, fail_nth_read makes the Nth completed read fail.
 */
#ifndef EMOE_LOADER_H
#define EMOE_LOADER_H

#include <stdint.h>
#include <stddef.h>

#include "engine/common.h"

typedef struct loader_config {
    int queue_depth;    /* reads in flight at once, 1..4096; 0 = 32 */
    int no_direct;      /* 1: buffered reads (page cache) */
    int no_uring;       /* 1: pread fallback even where io_uring works */
    int fail_nth_read;  /* fault injection: the Nth read (1-based, in completion order) fails; 0 = off */
    int fail_errno;     /* errno of the injected failure; 0 = EIO */
} loader_config;

typedef struct loader_read loader_read;
/* Completion: status 0 or -errno. Runs on the loader thread; must not block long. */
typedef void (*loader_done_fn)(void *user, loader_read *r, int status);

struct loader_read {
    uint64_t offset;  /* file offset, STORE_ALIGN-aligned for O_DIRECT */
    size_t len;       /* multiple of 4096 for O_DIRECT */
    void *buf;        /* 4096-aligned, len bytes */
    loader_done_fn done;
    void *user;
    /* private to the loader */
    size_t got;
    int retries;
    loader_read *next;
};

typedef struct loader_stats {
    uint64_t reads;       /* completed successfully */
    uint64_t errors;      /* completed with an error */
    uint64_t retries;     /* resubmissions: short reads, EAGAIN, EINTR */
    uint64_t bytes;       /* bytes read */
    uint64_t submits;     /* io_uring_submit calls (batches) */
} loader_stats;

typedef struct loader_t loader_t;

/* Opens path for reading and starts the completion thread. */
emoe_status loader_open(const char *path, const loader_config *cfg, loader_t **out, emoe_err *err);
/* Waits for every submitted read to complete, then frees. NULL allowed. */
void loader_close(loader_t *l);
/* Registers [base, base+len) with the ring (fixed buffers: the kernel pins them
 * once instead of per read). Reads whose buffer lies inside use READ_FIXED.
 * Failure (e.g. RLIMIT_MEMLOCK) is returned; the loader keeps working without. */
emoe_status loader_register_buffer(loader_t *l, void *base, size_t len, emoe_err *err);
/* Queues n reads; submits up to queue_depth at once, in one batch. Never blocks
 * on I/O. Each read completes exactly once through its done callback. */
void loader_submit(loader_t *l, loader_read **reads, int n);
/* The same, ahead of every read not yet handed to the kernel (reads the
 * caller is waiting for; queue_depth bounds what is already in flight). */
void loader_submit_urgent(loader_t *l, loader_read **reads, int n);
/* Moves r, if it is still queued (not yet handed to the kernel), to the front
 * of the queue. Returns 1 if r was queued. r must be a submitted read whose
 * done callback has not run. */
int loader_promote(loader_t *l, loader_read *r);
/* "io_uring+O_DIRECT", "io_uring", "pread+O_DIRECT" or "pread". */
const char *loader_mode(const loader_t *l);
int loader_is_direct(const loader_t *l);
void loader_get_stats(loader_t *l, loader_stats *out);

#endif
