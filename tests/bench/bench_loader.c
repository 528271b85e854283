/* bench_loader.c — read bandwidth of the expert loader: reads `count` extents of
 * `size` bytes (4 KiB multiple) at shuffled aligned offsets of FILE with
 * `qd` reads in flight (each into its own buffer), through loader.h (io_uring + O_DIRECT by default), and
 * prints MB/s. Compare with `dd iflag=direct` on the same file (see
 * docs/performance.md). Usage: bench_loader FILE SIZE QD [COUNT] [pread] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/loader.h"

typedef struct ctx { pthread_mutex_t mu; pthread_cond_t cv; int done, errors; void **free_bufs; int n_free; } ctx;

static void on_done(void *user, loader_read *r, int status)
{
    ctx *c = user;
    pthread_mutex_lock(&c->mu);
    c->done++;
    c->free_bufs[c->n_free++] = r->buf; /* the buffer is free again */
    if (status) c->errors++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: bench_loader FILE SIZE QD [COUNT] [pread]\n"); return 2; }
    size_t size = strtoull(argv[2], NULL, 0);
    int qd = atoi(argv[3]);
    struct stat sb;
    if (stat(argv[1], &sb) != 0 || size == 0 || size % 4096 || qd < 1) { fprintf(stderr, "bad arguments\n"); return 2; }
    size_t slots = (size_t)sb.st_size / size;
    int count = argc > 4 ? atoi(argv[4]) : (int)slots;
    if (slots == 0 || count < 1) { fprintf(stderr, "file too small\n"); return 2; }
    loader_config cfg = {.queue_depth = qd, .no_uring = argc > 5 && !strcmp(argv[5], "pread")};
    loader_t *l;
    emoe_err err;
    if (loader_open(argv[1], &cfg, &l, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    /* qd buffers reused round-robin; offsets shuffled (xorshift) over the slots. */
    loader_read *rd = calloc((size_t)count, sizeof *rd);
    void **bufs = calloc((size_t)qd, sizeof *bufs);
    for (int i = 0; i < qd; i++) { bufs[i] = aligned_alloc(4096, size); memset(bufs[i], 0, size); }
    size_t *perm = malloc(sizeof(size_t) * slots);
    for (size_t i = 0; i < slots; i++) perm[i] = i;
    uint64_t s = 88172645463325252ull;
    for (size_t i = slots - 1; i > 0; i--) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        size_t j = s % (i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    ctx c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, calloc((size_t)qd, sizeof(void *)), 0};
    for (int i = 0; i < qd; i++) c.free_bufs[c.n_free++] = bufs[i];
    double t0 = emoe_now();
    int submitted = 0;
    pthread_mutex_lock(&c.mu);
    while (c.done < count) {
        /* keep qd in flight: submit whenever a buffer's previous read is done */
        while (submitted < count && c.n_free > 0) {
            loader_read *r = &rd[submitted];
            r->offset = (uint64_t)perm[(size_t)submitted % slots] * size;
            r->len = size;
            r->buf = c.free_bufs[--c.n_free];
            r->done = on_done;
            r->user = &c;
            submitted++;
            pthread_mutex_unlock(&c.mu);
            loader_submit(l, &r, 1);
            pthread_mutex_lock(&c.mu);
        }
        if (c.done < count) pthread_cond_wait(&c.cv, &c.mu);
    }
    pthread_mutex_unlock(&c.mu);
    double dt = emoe_now() - t0;
    printf("%s size=%zu qd=%d reads=%d errors=%d bytes=%.0f time=%.3fs bw=%.1f MB/s\n", loader_mode(l), size, qd, count,
           c.errors, (double)size * count, dt, (double)size * count / dt / 1e6);
    loader_close(l);
    for (int i = 0; i < qd; i++) free(bufs[i]);
    free(bufs);
    free(c.free_bufs);
    free(rd);
    free(perm);
    return c.errors ? 1 : 0;
}
