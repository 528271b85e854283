/*
 * bench_membw.c — a STREAM-like read-bandwidth probe: THREADS threads each sum
 * their slice of a SIZE_MB buffer (64-bit integer adds over 32-byte vectors,
 * four independent sums), REPS times; prints the best pass as GB/s. This is
 * the memory floor the CPU engine is measured against (tools/bench-cpu.sh).
 * Also prints GB per second of the readers' CPU time (see below).
 * Usage: bench_membw [SIZE_MB=1024] [THREADS=1] [REPS=5]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef uint64_t v4 __attribute__((vector_size(32)));

typedef struct part { const v4 *p; size_t n; uint64_t sum; double cpu; pthread_barrier_t *bar; } part;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *reader(void *arg)
{
    part *pt = arg;
    pthread_barrier_wait(pt->bar);
    double c0 = thread_cpu();
    v4 a = {0}, b = {0}, c = {0}, d = {0};
    for (size_t i = 0; i + 4 <= pt->n; i += 4) {
        a += pt->p[i];
        b += pt->p[i + 1];
        c += pt->p[i + 2];
        d += pt->p[i + 3];
    }
    v4 s = a + b + c + d;
    pt->sum = s[0] + s[1] + s[2] + s[3];
    pt->cpu = thread_cpu() - c0;
    pthread_barrier_wait(pt->bar);
    return NULL;
}

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    int nt = argc > 2 ? atoi(argv[2]) : 1, reps = argc > 3 ? atoi(argv[3]) : 5;
    if (mb < 1 || nt < 1 || nt > 256 || reps < 1) { fprintf(stderr, "usage: bench_membw [SIZE_MB] [THREADS] [REPS]\n"); return 2; }
    size_t bytes = mb << 20, nv = bytes / sizeof(v4);
    v4 *buf = aligned_alloc(64, bytes);
    if (!buf) { fprintf(stderr, "bench_membw: cannot allocate %zu MB\n", mb); return 1; }
    memset(buf, 1, bytes);
    double best = 1e30, best_cpu = 1e30;
    uint64_t check = 0;
    for (int r = 0; r < reps; r++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)nt + 1);
        pthread_t th[256];
        part pt[256];
        size_t per = (nv / (size_t)nt) & ~(size_t)3;
        for (int t = 0; t < nt; t++) {
            pt[t] = (part){buf + (size_t)t * per, per, 0, 0, &bar};
            pthread_create(&th[t], NULL, reader, &pt[t]);
        }
        pthread_barrier_wait(&bar);
        double t0 = now();
        pthread_barrier_wait(&bar);
        double dt = now() - t0;
        double cpu = 0;
        for (int t = 0; t < nt; t++) { pthread_join(th[t], NULL); check += pt[t].sum; cpu += pt[t].cpu; }
        if (cpu < best_cpu) best_cpu = cpu;
        pthread_barrier_destroy(&bar);
        if (dt < best) best = dt;
    }
    size_t read = (nv / (size_t)nt & ~(size_t)3) * (size_t)nt * sizeof(v4);
    /* GB/cpu-s: bytes per second of the readers' own CPU time, i.e. what a
     * core reads while it runs; on a shared machine the wall figure also counts
     * the time the threads waited for a core. */
    printf("read_bandwidth threads=%d size_mb=%zu best_of=%d GB/s=%.2f GB/cpu-s=%.2f (checksum %llu)\n", nt, mb, reps,
           read / best / 1e9, read / best_cpu / 1e9, (unsigned long long)(check & 0xffff));
    free(buf);
    return 0;
}
