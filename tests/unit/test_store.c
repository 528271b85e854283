/* test_store.c — the expert store format (round trip, CRC32C, atomic writes,
 * refusal of truncated / corrupted / foreign stores, totality under random
 * corruption) and the io_uring loader (all modes and queue depths, fault
 * injection, EOF, the tmpfs fallback). */
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "testutil.h"
#include "cachetest.h"
#include "engine/loader.h"

static char dir[4096], path[4200];

static void setup(void)
{
    ct_tmpdir(dir, sizeof dir);
    ck_assert_msg(dir[0], "mkdtemp failed");
    snprintf(path, sizeof path, "%s/experts.emoe", dir);
}
static void teardown(void) { ct_rmtree(dir); }

START_TEST(test_crc32c_vectors)
{
    /* RFC 3720 / iSCSI check value, and chaining. */
    ck_assert_uint_eq(store_crc32c(0, "123456789", 9), 0xE3069283u);
    uint8_t zeros[32] = {0};
    ck_assert_uint_eq(store_crc32c(0, zeros, 32), 0x8A9136AAu);
    ck_assert_uint_eq(store_crc32c(store_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
    /* Odd lengths and offsets agree with a byte-at-a-time chain. */
    uint8_t buf[257];
    for (int i = 0; i < 257; i++) buf[i] = (uint8_t)(i * 7 + 3);
    uint32_t c = 0;
    for (int i = 0; i < 257; i++) c = store_crc32c(c, buf + i, 1);
    ck_assert_uint_eq(store_crc32c(0, buf, 257), c);
}
END_TEST

START_TEST(test_roundtrip)
{
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(path, 3, 5, 64, 24, 0x1234, &err), EMOE_OK);
    store_t *s;
    ck_assert_msg(store_open(path, 0x1234, &s, &err) == EMOE_OK, "%s", err.msg);
    const store_info *in = store_get_info(s);
    ck_assert_int_eq(in->n_layers, 3);
    ck_assert_int_eq(in->n_experts, 5);
    ck_assert_uint_eq(in->extent_bytes, 3 * 64 * 24 * 2);
    ck_assert_uint_eq(in->extent_stride % STORE_ALIGN, 0);
    ck_assert_uint_ge(in->extent_stride, in->extent_bytes);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq((uint64_t)sb.st_size, in->file_size);
    int fd = open(path, O_RDONLY);
    uint8_t *buf = malloc(in->extent_stride);
    for (int l = 0; l < 3; l++)
        for (int x = 0; x < 5; x++) {
            const store_extent *e = store_extent_of(s, l, x);
            ck_assert_ptr_nonnull(e);
            ck_assert_uint_eq(e->offset % STORE_ALIGN, 0);
            ck_assert_int_eq(pread(fd, buf, in->extent_stride, (off_t)e->offset), (ssize_t)in->extent_stride);
            ck_assert(ct_check_payload(buf, l, x, in->extent_bytes));
            for (uint64_t i = in->extent_bytes; i < in->extent_stride; i++) ck_assert_uint_eq(buf[i], 0);
            ck_assert_int_eq(store_verify_extent(s, l, x, buf, &err), EMOE_OK);
        }
    ck_assert_ptr_null(store_extent_of(s, 3, 0));
    ck_assert_ptr_null(store_extent_of(s, 0, -1));
    /* A flipped payload bit is caught, with the extent named. */
    pread(fd, buf, in->extent_stride, (off_t)store_extent_of(s, 1, 2)->offset);
    buf[17] ^= 0x10;
    ck_assert_int_eq(store_verify_extent(s, 1, 2, buf, &err), EMOE_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "layer 1, expert 2"));
    ck_assert_ptr_nonnull(strstr(err.msg, "checksum mismatch"));
    free(buf);
    close(fd);
    store_close(s);
    store_close(NULL);
}
END_TEST

START_TEST(test_truncated)
{
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(path, 2, 4, 32, 32, 7, &err), EMOE_OK);
    struct stat sb;
    stat(path, &sb);
    store_t *s = NULL;
    /* Cut inside the data, inside the table, inside the header, to zero. */
    off_t cuts[] = {sb.st_size - 1, sb.st_size - 4096, 200, 100, 0};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        ck_assert_int_eq(truncate(path, cuts[i]), 0);
        memset(&err, 0, sizeof err);
        ck_assert_int_ne(store_open(path, 0, &s, &err), EMOE_OK);
        ck_assert_ptr_null(s);
        ck_assert_msg(strstr(err.msg, "truncated") || strstr(err.msg, "bad magic") || strstr(err.msg, "checksum"),
                      "cut %lld: %s", (long long)cuts[i], err.msg);
        ck_assert_ptr_nonnull(strstr(err.msg, path));
    }
}
END_TEST

START_TEST(test_foreign_model)
{
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(path, 2, 4, 32, 32, 0xaaaa, &err), EMOE_OK);
    store_t *s = NULL;
    ck_assert_int_eq(store_open(path, 0xbbbb, &s, &err), EMOE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "another model"));
    ck_assert_int_eq(store_open(path, 0xaaaa, &s, &err), EMOE_OK);
    store_close(s);
    ck_assert_int_eq(store_open("/nonexistent/experts.emoe", 0, &s, &err), EMOE_ENOTFOUND);
}
END_TEST

START_TEST(test_atomic_write)
{
    emoe_err err = {0};
    store_info info = {0};
    info.fingerprint = 1;
    info.dtype = ENG_DT_BF16;
    info.n_layers = 2;
    info.n_experts = 3;
    info.dim = 16;
    info.expert_ffn = 16;
    ct_fill_ctx c = {3 * 16 * 16 * 2, 4, 3};
    ck_assert_int_eq(store_write(path, &info, ct_fill, &c, 0, &err), EMOE_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "layer 1 expert 1"));
    struct stat sb;
    ck_assert_int_ne(stat(path, &sb), 0); /* nothing at the final path */
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    ck_assert_int_ne(stat(tmp, &sb), 0); /* and no leftover */
    /* A good write replaces an old store atomically. */
    c.fail_at = -1;
    ck_assert_int_eq(store_write(path, &info, ct_fill, &c, 0, &err), EMOE_OK);
    info.fingerprint = 2;
    ck_assert_int_eq(store_write(path, &info, ct_fill, &c, 0, &err), EMOE_OK);
    store_t *s;
    ck_assert_int_eq(store_open(path, 2, &s, &err), EMOE_OK);
    store_close(s);
    /* Bad shapes are refused before anything is written. */
    info.n_layers = 0;
    ck_assert_int_eq(store_write(path, &info, ct_fill, &c, 0, &err), EMOE_EINVAL);
}
END_TEST

/* Issue 14: a pack killed before its rename left "<store>.tmp.<pid>" forever;
 * the next write removes those of dead processes and keeps a live one's. */
START_TEST(test_stale_tmp_removed)
{
    emoe_err err = {0};
    store_info info = {0};
    info.fingerprint = 1;
    info.dtype = ENG_DT_BF16;
    info.n_layers = 1;
    info.n_experts = 2;
    info.dim = 16;
    info.expert_ffn = 16;
    ct_fill_ctx c = {3 * 16 * 16 * 2, -1, 2};
    pid_t child = fork();
    if (child == 0) _exit(0);
    ck_assert_int_gt(child, 0);
    ck_assert_int_eq(waitpid(child, NULL, 0), child); /* reaped: that pid is dead */
    char dead[4300], live[4300];
    snprintf(dead, sizeof dead, "%s.tmp.%ld", path, (long)child);
    snprintf(live, sizeof live, "%s.tmp.%ld", path, (long)getppid());
    FILE *f = fopen(dead, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    f = fopen(live, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ck_assert_int_eq(store_write(path, &info, ct_fill, &c, 0, &err), EMOE_OK);
    struct stat sb;
    ck_assert_msg(stat(dead, &sb) != 0, "%s (dead process) should be gone", dead);
    ck_assert_msg(stat(live, &sb) == 0, "%s (live process) should be kept", live);
    unlink(live);
    unlink(path);
}
END_TEST

/* Random corruption of header and table bytes: every open returns a status
 * (never crashes); any open that succeeds must still describe a sane layout. */
START_TEST(test_corruption_total)
{
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(path, 2, 3, 16, 16, 9, &err), EMOE_OK);
    size_t n;
    char *orig = tu_read_file(path, &n);
    ck_assert_ptr_nonnull(orig);
    uint64_t seed = 42;
    int refused = 0;
    for (int it = 0; it < 400; it++) {
        char *b = malloc(n);
        memcpy(b, orig, n);
        int flips = 1 + it % 4;
        for (int f = 0; f < flips; f++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (seed >> 33) % (it % 2 ? 128 : STORE_HEADER_FIXED + 6 * STORE_ENTRY_BYTES);
            b[at] ^= (char)(1 + ((seed >> 20) & 0x7f));
        }
        FILE *fp = fopen(path, "wb");
        fwrite(b, 1, n, fp);
        fclose(fp);
        store_t *s = NULL;
        memset(&err, 0, sizeof err);
        emoe_status st = store_open(path, 0, &s, &err);
        if (st == EMOE_OK) {
            const store_info *in = store_get_info(s);
            ck_assert_uint_le(in->file_size, n);
            store_close(s);
        } else {
            ck_assert_msg(err.msg[0], "refusal without a message");
            refused++;
        }
        free(b);
    }
    ck_assert_int_ge(refused, 390); /* checksums catch (nearly) every corruption */
    free(orig);
}
END_TEST

/* ---- loader ------------------------------------------------------------------ */

typedef struct rd_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, errors, last_err;
} rd_ctx;

static void rd_done(void *user, loader_read *r, int status)
{
    (void)r;
    rd_ctx *c = user;
    pthread_mutex_lock(&c->mu);
    c->done++;
    if (status) { c->errors++; c->last_err = status; }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Reads every extent of the store at `p` with cfg; returns the error count and
 * checks the payloads of the successful reads. */
static int read_all(const char *p, const loader_config *cfg, const char *want_mode, int *last_err)
{
    emoe_err err = {0};
    store_t *s;
    ck_assert_msg(store_open(p, 0, &s, &err) == EMOE_OK, "%s", err.msg);
    const store_info *in = store_get_info(s);
    int n = in->n_layers * in->n_experts;
    loader_t *l;
    ck_assert_msg(loader_open(p, cfg, &l, &err) == EMOE_OK, "%s", err.msg);
    if (want_mode) ck_assert_str_eq(loader_mode(l), want_mode);
    loader_read *rd = calloc((size_t)n, sizeof *rd);
    loader_read **pr = calloc((size_t)n, sizeof *pr);
    rd_ctx c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        rd[i].offset = store_extent_of(s, i / in->n_experts, i % in->n_experts)->offset;
        rd[i].len = in->extent_stride;
        rd[i].buf = aligned_alloc(4096, in->extent_stride);
        memset(rd[i].buf, 0xEE, in->extent_stride); /* poison */
        rd[i].done = rd_done;
        rd[i].user = &c;
        pr[i] = &rd[i];
    }
    /* Two batches, to exercise refills of the queue. */
    loader_submit(l, pr, n / 2);
    loader_submit(l, pr + n / 2, n - n / 2);
    pthread_mutex_lock(&c.mu);
    while (c.done < n) pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    int ok = 0;
    for (int i = 0; i < n; i++) ok += ct_check_payload(rd[i].buf, i / in->n_experts, i % in->n_experts, in->extent_bytes);
    ck_assert_int_ge(ok, n - c.errors); /* an injected failure may hit a read whose bytes arrived */
    loader_stats ls;
    loader_get_stats(l, &ls);
    ck_assert_uint_eq(ls.reads, (uint64_t)(n - c.errors));
    ck_assert_uint_eq(ls.errors, (uint64_t)c.errors);
    loader_close(l);
    for (int i = 0; i < n; i++) free(rd[i].buf);
    free(rd);
    free(pr);
    store_close(s);
    if (last_err) *last_err = c.last_err;
    return c.errors;
}

START_TEST(test_loader_modes)
{
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(path, 4, 8, 64, 40, 3, &err), EMOE_OK);
    int qds[] = {1, 2, 7, 64};
    for (int i = 0; i < 4; i++) {
        loader_config cfg = {.queue_depth = qds[i]};
        ck_assert_int_eq(read_all(path, &cfg, NULL, NULL), 0);
        cfg.no_direct = 1;
        ck_assert_int_eq(read_all(path, &cfg, NULL, NULL), 0);
        cfg.no_uring = 1;
        ck_assert_int_eq(read_all(path, &cfg, "pread", NULL), 0);
    }
    loader_config bad = {.queue_depth = 5000};
    loader_t *l;
    ck_assert_int_eq(loader_open(path, &bad, &l, &err), EMOE_EINVAL);
    ck_assert_int_eq(loader_open("/nonexistent/x", NULL, &l, &err), EMOE_EIO);
    loader_close(NULL);
}
END_TEST

/* Completion order of the priority calls: with one read in flight, a read
 * promoted (or submitted urgently) while others are queued completes right
 * after the one in flight, not after the queue. */
typedef struct ord_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int idx[64];   /* completion index (1-based) of read i */
    loader_read *base;
} ord_ctx;

static void ord_done(void *user, loader_read *r, int status)
{
    ord_ctx *c = user;
    ck_assert_int_eq(status, 0);
    pthread_mutex_lock(&c->mu);
    c->idx[r - c->base] = ++c->done;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

START_TEST(test_loader_priority)
{
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(path, 4, 8, 64, 40, 3, &err), EMOE_OK);
    store_t *s;
    ck_assert_msg(store_open(path, 0, &s, &err) == EMOE_OK, "%s", err.msg);
    const store_info *in = store_get_info(s);
    enum { N = 32 };
    for (int mode = 0; mode < 4; mode++) { /* uring/pread x promote/urgent */
        loader_config cfg = {.queue_depth = 1, .no_uring = mode & 1};
        loader_t *l;
        ck_assert_msg(loader_open(path, &cfg, &l, &err) == EMOE_OK, "%s", err.msg);
        loader_read rd[N + 1];
        loader_read *pr[N + 1];
        memset(rd, 0, sizeof rd);
        ord_ctx c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}, rd};
        for (int i = 0; i <= N; i++) {
            rd[i].offset = store_extent_of(s, i % in->n_layers, i % in->n_experts)->offset;
            rd[i].len = in->extent_stride;
            rd[i].buf = aligned_alloc(4096, in->extent_stride);
            rd[i].done = ord_done;
            rd[i].user = &c;
            pr[i] = &rd[i];
        }
        loader_submit(l, pr, N);
        int target, moved = 1;
        if (mode < 2) {
            target = N - 1;
            moved = loader_promote(l, &rd[target]);
        } else {
            target = N;
            loader_submit_urgent(l, &pr[N], 1);
        }
        pthread_mutex_lock(&c.mu);
        int done_then = c.done;
        int total = mode < 2 ? N : N + 1;
        while (c.done < total) pthread_cond_wait(&c.cv, &c.mu);
        pthread_mutex_unlock(&c.mu);
        if (moved) /* at most the one in flight went before it */
            ck_assert_msg(c.idx[target] <= done_then + 2, "mode %d: read %d completed %d-th, %d were done when it was moved",
                          mode, target, c.idx[target], done_then);
        else /* it had been handed over already: everything before it was done by then */
            ck_assert_int_ge(done_then, N - 2);
        ck_assert_int_eq(loader_promote(l, &rd[0]), 0); /* completed: not queued */
        loader_close(l);
        for (int i = 0; i <= N; i++) free(rd[i].buf);
    }
    store_close(s);
}
END_TEST

START_TEST(test_loader_fault_injection)
{
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(path, 2, 8, 32, 32, 3, &err), EMOE_OK);
    for (int mode = 0; mode < 2; mode++) {
        loader_config cfg = {.queue_depth = 4, .fail_nth_read = 5, .no_uring = mode};
        int last = 0;
        ck_assert_int_eq(read_all(path, &cfg, NULL, &last), 1);
        ck_assert_int_eq(last, -EIO);
        cfg.fail_errno = ENOSPC;
        ck_assert_int_eq(read_all(path, &cfg, NULL, &last), 1);
        ck_assert_int_eq(last, -ENOSPC);
        /* EAGAIN is retried, not reported. */
        cfg.fail_errno = EAGAIN;
        ck_assert_int_eq(read_all(path, &cfg, NULL, &last), 0);
    }
}
END_TEST

START_TEST(test_loader_eof)
{
    /* A read past the end of the file (a store truncated after it was opened)
     * completes with an error, not a hang or partial success. */
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(path, 1, 2, 32, 32, 3, &err), EMOE_OK);
    struct stat sb;
    stat(path, &sb);
    for (int mode = 0; mode < 2; mode++) {
        loader_t *l;
        loader_config cfg = {.no_uring = mode};
        ck_assert_int_eq(loader_open(path, &cfg, &l, &err), EMOE_OK);
        rd_ctx c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
        loader_read r = {.offset = (uint64_t)sb.st_size - 4096, .len = 8192, .done = rd_done, .user = &c};
        r.buf = aligned_alloc(4096, 8192);
        loader_read *pr = &r;
        loader_submit(l, &pr, 1);
        pthread_mutex_lock(&c.mu);
        while (c.done < 1) pthread_cond_wait(&c.cv, &c.mu);
        pthread_mutex_unlock(&c.mu);
        ck_assert_int_eq(c.errors, 1);
        ck_assert_int_eq(c.last_err, -EIO);
        loader_close(l);
        free(r.buf);
    }
}
END_TEST

START_TEST(test_loader_tmpfs_fallback)
{
    struct stat sb;
    if (stat("/dev/shm", &sb) != 0 || !S_ISDIR(sb.st_mode) || access("/dev/shm", W_OK) != 0) {
        fprintf(stderr, "SKIP: /dev/shm not available for the tmpfs fallback test\n");
        return;
    }
    char p[256];
    snprintf(p, sizeof p, "/dev/shm/emoe-test-%ld.emoe", (long)getpid());
    emoe_err err = {0};
    ck_assert_int_eq(ct_make_store(p, 2, 4, 32, 32, 3, &err), EMOE_OK);
    loader_config cfg = {.queue_depth = 8};
    /* tmpfs refuses O_DIRECT before Linux 6.6: the loader then falls back to
     * buffered reads; either way the bytes must arrive. */
    int e = read_all(p, &cfg, NULL, NULL);
    loader_t *l;
    ck_assert_int_eq(loader_open(p, &cfg, &l, &err), EMOE_OK);
    fprintf(stderr, "tmpfs loader mode: %s\n", loader_mode(l));
    loader_close(l);
    unlink(p);
    ck_assert_int_eq(e, 0);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_crc32c_vectors);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_truncated);
    tcase_add_test(tc, test_foreign_model);
    tcase_add_test(tc, test_atomic_write);
    tcase_add_test(tc, test_stale_tmp_removed);
    tcase_add_test(tc, test_corruption_total);
    tcase_add_test(tc, test_loader_modes);
    tcase_add_test(tc, test_loader_fault_injection);
    tcase_add_test(tc, test_loader_priority);
    tcase_add_test(tc, test_loader_eof);
    tcase_add_test(tc, test_loader_tmpfs_fallback);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
