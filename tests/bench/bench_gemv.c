/*
 * bench_gemv.c — the decode matmul (one token, bf16 weights) against a plain
 * read of the same bytes, on the same pool of threads, in one process,
 * alternating pass by pass, so that the ratio between the two is the kernel's
 * own efficiency whatever else the machine is doing (tools/bench-cpu.sh).
 *
 * The weights are SIZE_MB of bf16 split into (1024 x 2048) matrices — the
 * shape of an OLMoE expert's gate/up — run GROUP matrices per parallel region
 * as the decode does (all selected experts' gate+up in one region). They are
 * an anonymous buffer, or with FILE the first SIZE_MB of that file mapped the
 * way the engine maps a checkpoint (read-only, private, 4 KiB page-cache
 * pages; the file should be in the page cache).
 *
 * Usage: bench_gemv [SIZE_MB=1024] [THREADS=2] [REPS=7] [FILE] [GROUP=16]
 * Prints the best and the median pass of each, in GB/s, and gemv/read.
 */
#include "engine/matmul.h"
#include "engine/pool.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { ROWS = 1024, K = 2048 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct sum_ctx {
    const uint8_t *p;
    _Atomic uint64_t sum;
} sum_ctx;

/* The plain read, in 64 KiB units: four independent 64-bit sums per 32 bytes. */
typedef uint64_t v4 __attribute__((vector_size(32)));

static void sum_task(void *arg, int64_t b, int64_t e)
{
    sum_ctx *c = arg;
    const v4 *p = (const v4 *)(const void *)(c->p + (size_t)b * 65536);
    size_t n = (size_t)(e - b) * 65536 / sizeof(v4);
    v4 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (size_t i = 0; i + 4 <= n; i += 4) {
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
    }
    v4 s = a0 + a1 + a2 + a3;
    atomic_fetch_add(&c->sum, s[0] + s[1] + s[2] + s[3]);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    int nt = argc > 2 ? atoi(argv[2]) : 2, reps = argc > 3 ? atoi(argv[3]) : 7;
    const char *file = argc > 4 && argv[4][0] ? argv[4] : NULL;
    int group = argc > 5 ? atoi(argv[5]) : 16;
    size_t mat = (size_t)ROWS * K * 2, n_mat = (mb << 20) / mat;
    if (n_mat < 1 || nt < 1 || reps < 1 || reps > 99 || group < 1 || group > 64) {
        fprintf(stderr, "usage: bench_gemv [SIZE_MB>=4] [THREADS] [REPS<100] [FILE] [GROUP 1..64]\n");
        return 2;
    }
    size_t bytes = n_mat * mat;
    uint8_t *buf;
    if (file) {
        int fd = open(file, O_RDONLY);
        off_t len = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
        if (fd < 0 || len < (off_t)bytes) { fprintf(stderr, "bench_gemv: %s: cannot open or shorter than %zu MB\n", file, mb); return 1; }
        buf = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (buf == MAP_FAILED) { perror("bench_gemv: mmap"); return 1; }
        madvise(buf, bytes, MADV_WILLNEED);
    } else {
        buf = aligned_alloc(4096, bytes);
        if (!buf) { fprintf(stderr, "bench_gemv: cannot allocate %zu MB\n", mb); return 1; }
        uint16_t *w = (uint16_t *)(void *)buf;
        uint32_t s = 12345;
        for (size_t i = 0; i < bytes / 2; i++) {
            s = s * 1664525u + 1013904223u;
            w[i] = eng_f32_to_bf16(((float)(s >> 8) / 16777216.0f - 0.5f) * 0.1f);
        }
    }
    eng_pool *pool = eng_pool_new(nt);
    if (!pool) return 1;
    float x[K], *y = malloc(sizeof(float) * ROWS * n_mat);
    eng_tensor *W = calloc(n_mat, sizeof *W);
    eng_mm_job *jobs = calloc(n_mat, sizeof *jobs);
    if (!y || !W || !jobs) return 1;
    for (int i = 0; i < K; i++) x[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    for (size_t m = 0; m < n_mat; m++) {
        W[m] = (eng_tensor){buf + m * mat, ENG_DT_BF16, 2, {ROWS, K}};
        jobs[m] = (eng_mm_job){x, K, 1, K, &W[m], NULL, y + m * ROWS, ROWS};
    }
    double tr[100], tg[100];
    sum_ctx sc = {buf, 0};
    eng_pool_run(pool, (int64_t)(bytes / 65536), 1, sum_task, &sc); /* warm: faults, page tables */
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        eng_pool_run(pool, (int64_t)(bytes / 65536), 1, sum_task, &sc);
        double t1 = now();
        for (size_t m = 0; m < n_mat; m += (size_t)group)
            eng_mm_run(pool, jobs + m, (int)(n_mat - m < (size_t)group ? n_mat - m : (size_t)group));
        double t2 = now();
        tr[r] = bytes / (t1 - t0) / 1e9;
        tg[r] = bytes / (t2 - t1) / 1e9;
    }
    qsort(tr, (size_t)reps, sizeof *tr, cmp_d);
    qsort(tg, (size_t)reps, sizeof *tg, cmp_d);
    double ck = 0;
    for (size_t i = 0; i < ROWS * n_mat; i++) ck += y[i];
    printf("gemv threads=%d size_mb=%zu %s group=%d kernels=%s: read GB/s best %.2f median %.2f; "
           "gemv GB/s best %.2f median %.2f; gemv/read best %.2f median %.2f (checksum %.3g %llu)\n",
           nt, bytes >> 20, file ? "file" : "anon", group, eng_mm_isa_name(eng_mm_isa_active()), tr[reps - 1],
           tr[reps / 2], tg[reps - 1], tg[reps / 2], tg[reps - 1] / tr[reps - 1], tg[reps / 2] / tr[reps / 2], ck,
           (unsigned long long)(atomic_load(&sc.sum) & 0xff));
    eng_pool_free(pool);
    return 0;
}
