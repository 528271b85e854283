/* test_cache.c — the tiered expert cache: bytes served equal the store's, the
 * device budget is never exceeded (checked through a counting slot allocator and
 * the resident figures after every operation), pin exhaustion, idempotent
 * prefetch, eviction hints, injected I/O errors and corrupted extents failing
 * one acquire only, concurrent use; and, on the shared fixture models, logits of
 * the cache-backed engine bitwise equal to the all-resident run at 10/25/50%. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sys/stat.h>

#include "testutil.h"
#include "cachetest.h"
#include "engine/cache.h"

static char dir[4096], path[4200];
enum { L = 4, E = 8, DIM = 64, FFN = 40 };
#define EXT_BYTES ((size_t)3 * DIM * FFN * 2)

static void setup(void)
{
    emoe_log_set_level(EMOE_LOG_WARN);
    ct_tmpdir(dir, sizeof dir);
    ck_assert_msg(dir[0], "mkdtemp failed");
    snprintf(path, sizeof path, "%s/experts.emoe", dir);
    emoe_err err = {0};
    ck_assert_msg(ct_make_store(path, L, E, DIM, FFN, 77, &err) == EMOE_OK, "%s", err.msg);
}
static void teardown(void) { ct_rmtree(dir); }

/* Counting slot allocator: the device tier's real footprint, seen from outside. */
typedef struct counting_mem {
    pthread_mutex_t mu;
    uint64_t live, peak;
    int uploads;
} counting_mem;
static void *cm_alloc(void *ctx, size_t bytes)
{
    counting_mem *m = ctx;
    pthread_mutex_lock(&m->mu);
    m->live += bytes;
    if (m->live > m->peak) m->peak = m->live;
    pthread_mutex_unlock(&m->mu);
    void *p = aligned_alloc(4096, bytes);
    memset(p, 0xA5, bytes); /* poison: a slot never read into shows up */
    return p;
}
static void cm_free(void *ctx, void *p, size_t bytes)
{
    counting_mem *m = ctx;
    pthread_mutex_lock(&m->mu);
    m->live -= bytes;
    pthread_mutex_unlock(&m->mu);
    free(p);
}
static emoe_status cm_upload(void *ctx, void *dst, const void *src, size_t n, emoe_err *err)
{
    counting_mem *m = ctx;
    pthread_mutex_lock(&m->mu);
    m->uploads++;
    pthread_mutex_unlock(&m->mu);
    memcpy(dst, src, n);
    return EMOE_OK;
}

static uint64_t stride(void) { return (EXT_BYTES + 4095) / 4096 * 4096; }

static void check_bounds(cache_t *c, const counting_mem *m, uint64_t budget)
{
    cache_stats s;
    cache_get_stats(c, &s);
    ck_assert_uint_le(s.resident_bytes, budget);
    ck_assert_uint_le(s.peak_resident_bytes, budget);
    ck_assert_uint_le(s.device_alloc_bytes, budget);
    if (m) ck_assert_uint_le(m->peak, budget);
    ck_assert_uint_le(s.host_resident_bytes, s.host_budget_bytes);
}

static void acquire_ok(cache_t *c, int l, int x)
{
    emoe_err err = {0};
    eng_expert_weights w;
    memset(&w, 0, sizeof w);
    ck_assert_msg(cache_acquire(c, l, x, &w, &err) == EMOE_OK, "acquire (%d,%d): %s", l, x, err.msg);
    ck_assert_int_eq(w.gate.dtype, ENG_DT_BF16);
    ck_assert_int_eq(w.gate.shape[0], FFN);
    ck_assert_int_eq(w.gate.shape[1], DIM);
    ck_assert_int_eq(w.down.shape[0], DIM);
    ck_assert_int_eq(w.down.shape[1], FFN);
    ck_assert_ptr_eq((const uint8_t *)w.up.data, (const uint8_t *)w.gate.data + EXT_BYTES / 3);
    ck_assert_ptr_eq((const uint8_t *)w.down.data, (const uint8_t *)w.gate.data + 2 * EXT_BYTES / 3);
    ck_assert_msg(ct_check_payload(w.gate.data, l, x, EXT_BYTES), "wrong bytes for (%d,%d)", l, x);
    cache_release(c, l, x);
}

/* Random access sequences at several budgets, with and without a host tier,
 * through the host-addressable path and a non-addressable (staging) one. */
START_TEST(test_exact_bytes_and_budget)
{
    double fracs[] = {0.10, 0.25, 0.50, 1.0};
    uint64_t total = (uint64_t)L * E * stride();
    for (int fi = 0; fi < 4; fi++)
        for (int host = 0; host < 2; host++)
            for (int addressable = 0; addressable < 2; addressable++) {
                counting_mem m = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
                cache_slot_mem sm = {&m, addressable, cm_alloc, cm_free, cm_upload, NULL, NULL, NULL, NULL, NULL, NULL};
                cache_config cfg = {0};
                emoe_err err = {0};
                char b[32];
                snprintf(b, sizeof b, "%g%%", fracs[fi] * 100);
                ck_assert_int_eq(cache_parse_budget(b, total, "budget", &cfg.device_budget, &err), EMOE_OK);
                if (host) cfg.host_budget = total / 4 * 3; /* inclusive tier: useful when larger than the device tier */
                cfg.slot_mem = &sm;
                cfg.loader.queue_depth = 4;
                cache_t *c;
                ck_assert_msg(cache_open(path, 77, &cfg, &c, &err) == EMOE_OK, "%s", err.msg);
                uint64_t seed = 5 + (uint64_t)fi;
                for (int it = 0; it < 300; it++) {
                    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                    int l = (int)((seed >> 33) % L), x = (int)((seed >> 40) % E);
                    if (it % 7 == 0) {
                        int pf[3] = {x, (x + 1) % E, (x + 3) % E};
                        cache_prefetch(c, l, pf, 3);
                    }
                    acquire_ok(c, l, x);
                    check_bounds(c, &m, cfg.device_budget);
                }
                cache_drain(c);
                cache_stats s;
                cache_get_stats(c, &s);
                ck_assert_uint_eq(s.acquires, 300);
                ck_assert_uint_eq(s.hits[0] + s.misses[0], 300);
                if (fracs[fi] < 1.0) ck_assert_uint_gt(s.misses[0], 0);
                if (fracs[fi] < 1.0) ck_assert_uint_gt(s.evictions, 0);
                if (fracs[fi] == 1.0) ck_assert_uint_eq(s.evictions, 0);
                ck_assert_uint_eq(s.device_slots, (int)(cfg.device_budget / stride()));
                ck_assert_uint_le(s.load_errors, 0);
                uint64_t hsum = 0;
                for (int i = 0; i < CACHE_LAT_BUCKETS; i++) hsum += s.lat_hist[i];
                ck_assert_uint_eq(hsum, s.loads);
                if (host && fracs[fi] < 1.0) ck_assert_uint_gt(s.hits[1], 0);
                if (!addressable || host) ck_assert_int_gt(m.uploads, 0);
                else ck_assert_int_eq(m.uploads, 0); /* read straight into the slots */
                check_bounds(c, &m, cfg.device_budget);
                cache_free(c);
                ck_assert_uint_eq(m.live, 0);
            }
}
END_TEST

START_TEST(test_budget_parse)
{
    emoe_err err = {0};
    uint64_t v;
    ck_assert_int_eq(cache_parse_budget("25%", 1000, "b", &v, &err), EMOE_OK);
    ck_assert_uint_eq(v, 250);
    ck_assert_int_eq(cache_parse_budget("100%", 1000, "b", &v, &err), EMOE_OK);
    ck_assert_uint_eq(v, 1000);
    ck_assert_int_eq(cache_parse_budget("12345", 1000, "b", &v, &err), EMOE_OK);
    ck_assert_uint_eq(v, 12345);
    ck_assert_int_eq(cache_parse_budget("64K", 1000, "b", &v, &err), EMOE_OK);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(cache_parse_budget("1.5GiB", 1000, "b", &v, &err), EMOE_OK);
    ck_assert_uint_eq(v, 1610612736ull);
    const char *bad[] = {"", "abc", "-5%", "101%", "5%x", "12Q", "nan", "1e30G", "inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        ck_assert_msg(cache_parse_budget(bad[i], 1000, "--budget", &v, &err) == EMOE_EINVAL, "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(err.msg, "--budget"));
    }
    cache_miss_policy p;
    ck_assert_int_eq(cache_parse_miss_policy("substitute", &p), 0);
    ck_assert_int_eq(p, CACHE_MISS_SUBSTITUTE);
    ck_assert_int_eq(cache_parse_miss_policy("exact", &p), 0);
    ck_assert_int_eq(p, CACHE_MISS_EXACT);
    ck_assert_int_ne(cache_parse_miss_policy("lossy", &p), 0);
    /* A budget below one slot is refused with both sizes named. */
    cache_config cfg = {.device_budget = 100};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "holds no expert"));
}
END_TEST

START_TEST(test_pinned_exhaustion)
{
    cache_config cfg = {.device_budget = 2 * stride()};
    emoe_err err = {0};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    eng_expert_weights w1, w2, w3;
    ck_assert_int_eq(cache_acquire(c, 0, 1, &w1, &err), EMOE_OK);
    ck_assert_int_eq(cache_acquire(c, 0, 2, &w2, &err), EMOE_OK);
    ck_assert_int_eq(cache_acquire(c, 0, 3, &w3, &err), EMOE_ENOMEM);
    ck_assert_ptr_nonnull(strstr(err.msg, "pinned"));
    /* Pinned views stay valid and untouched. */
    ck_assert(ct_check_payload(w1.gate.data, 0, 1, EXT_BYTES));
    ck_assert(ct_check_payload(w2.gate.data, 0, 2, EXT_BYTES));
    /* Prefetch never evicts pinned slots. */
    int pf[2] = {5, 6};
    cache_prefetch(c, 1, pf, 2);
    ck_assert(ct_check_payload(w1.gate.data, 0, 1, EXT_BYTES));
    cache_release(c, 0, 1);
    ck_assert_int_eq(cache_acquire(c, 0, 3, &w3, &err), EMOE_OK);
    ck_assert(ct_check_payload(w3.gate.data, 0, 3, EXT_BYTES));
    ck_assert(ct_check_payload(w2.gate.data, 0, 2, EXT_BYTES));
    cache_release(c, 0, 3);
    cache_release(c, 0, 2);
    cache_release(c, 0, 2); /* extra release: harmless */
    ck_assert_int_eq(cache_acquire(c, L, 0, &w3, &err), EMOE_EINVAL);
    cache_free(c);
}
END_TEST

START_TEST(test_prefetch_idempotent)
{
    cache_config cfg = {.device_budget = 8 * stride()};
    emoe_err err = {0};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    int pf[4] = {0, 3, 3, 7};
    cache_prefetch(c, 2, pf, 4);
    cache_prefetch(c, 2, pf, 4); /* in flight or done: no new loads */
    cache_drain(c);
    cache_prefetch(c, 2, pf, 4);
    cache_stats s;
    cache_get_stats(c, &s);
    ck_assert_uint_eq(s.prefetch_issued, 3);
    ck_assert_uint_eq(s.hits[2], 3);
    ck_assert_uint_eq(s.bytes_read, 3 * stride());
    for (int i = 0; i < 4; i++) ck_assert(cache_is_resident(c, 2, pf[i]));
    ck_assert(!cache_is_resident(c, 2, 1));
    acquire_ok(c, 2, 3);
    acquire_ok(c, 2, 7);
    cache_get_stats(c, &s);
    ck_assert_uint_eq(s.hits[0], 2);
    ck_assert_uint_eq(s.misses[0], 0);
    /* More prefetches than slots: the ones of this call are not evicted by it. */
    int many[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    cache_prefetch(c, 0, many, 8);
    cache_drain(c); /* loading slots are never evicted: let them land */
    cache_prefetch(c, 1, many, 8);
    cache_drain(c);
    cache_get_stats(c, &s);
    ck_assert_uint_le(s.resident_bytes, cfg.device_budget);
    int r0 = 0;
    for (int i = 0; i < 8; i++) r0 += cache_is_resident(c, 1, i);
    ck_assert_int_eq(r0, 8);
    cache_prefetch(c, -1, many, 8); /* bad layer: ignored */
    cache_free(c);
}
END_TEST

/* Prefetch loads are counted by source; a prefetched slot counts as used at
 * its first acquire only; substitutions are counted where they happen. */
START_TEST(test_prefetch_sources)
{
    cache_config cfg = {.device_budget = 4 * stride()};
    emoe_err err = {0};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    int a[2] = {0, 1}, b[1] = {2}, x[1] = {3};
    cache_prefetch_from(c, CACHE_PF_QUEUE, 1, a, 2);
    cache_prefetch_from(c, CACHE_PF_LOOKAHEAD, 1, b, 1);
    cache_prefetch(c, 1, x, 1);
    cache_prefetch_from(c, CACHE_PF_PLAN, 1, a, 2); /* loading or resident: nothing new */
    cache_drain(c);
    cache_stats s;
    cache_get_stats(c, &s);
    ck_assert_uint_eq(s.prefetch_by_source[CACHE_PF_QUEUE], 2);
    ck_assert_uint_eq(s.prefetch_by_source[CACHE_PF_LOOKAHEAD], 1);
    ck_assert_uint_eq(s.prefetch_by_source[CACHE_PF_ENGINE], 1);
    ck_assert_uint_eq(s.prefetch_by_source[CACHE_PF_PLAN], 0);
    ck_assert_uint_eq(s.prefetch_issued, 4);
    acquire_ok(c, 1, 0);
    acquire_ok(c, 1, 0);
    acquire_ok(c, 1, 3);
    cache_get_stats(c, &s);
    ck_assert_uint_eq(s.prefetch_used[CACHE_PF_QUEUE], 1);
    ck_assert_uint_eq(s.prefetch_used[CACHE_PF_ENGINE], 1);
    ck_assert_uint_eq(s.prefetch_used[CACHE_PF_LOOKAHEAD], 0);
    /* an acquire-loaded expert is no prefetch */
    acquire_ok(c, 2, 5);
    cache_get_stats(c, &s);
    uint64_t used = 0;
    for (int i = 0; i < CACHE_PF_SOURCES; i++) used += s.prefetch_used[i];
    ck_assert_uint_eq(used, 2);
    ck_assert_str_eq(cache_pf_source_names[CACHE_PF_LOOKAHEAD], "lookahead");
    /* is_resident answers do not count as substitutions; the forward pass's reports do */
    cache_set_miss_policy(c, CACHE_MISS_SUBSTITUTE);
    for (int i = 0; i < E; i++) (void)cache_is_resident(c, 3, i);
    cache_get_stats(c, &s);
    ck_assert_uint_eq(s.substituted, 0);
    const eng_expert_provider *p = cache_provider(c);
    ck_assert_ptr_nonnull(p->substituted);
    p->substituted(p->ctx, NULL, 3, 2);
    cache_count_substituted(c, 1);
    cache_get_stats(c, &s);
    ck_assert_uint_eq(s.substituted, 3);
    cache_free(c);
}
END_TEST

static double prefer_even(void *user, int layer, int expert)
{
    (void)user;
    (void)layer;
    return expert % 2 == 0 ? 1.0 : 0.0;
}

START_TEST(test_evict_hint)
{
    cache_config cfg = {.device_budget = 4 * stride()};
    emoe_err err = {0};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    /* LRU: 0,2 loaded first are the first evicted. */
    int seq[6] = {0, 2, 1, 3, 5, 7};
    for (int i = 0; i < 6; i++) acquire_ok(c, 0, seq[i]);
    ck_assert(!cache_is_resident(c, 0, 0));
    ck_assert(!cache_is_resident(c, 0, 2));
    ck_assert(cache_is_resident(c, 0, 7));
    /* Hint: even experts are kept over odd ones regardless of recency. */
    cache_set_evict_hint(c, prefer_even, NULL);
    acquire_ok(c, 0, 0);
    acquire_ok(c, 0, 2);
    acquire_ok(c, 0, 4);
    acquire_ok(c, 0, 6);
    for (int x = 0; x < 8; x += 2) ck_assert(cache_is_resident(c, 0, x));
    acquire_ok(c, 0, 1); /* must evict an even one now (all slots even) */
    int even = 0;
    for (int x = 0; x < 8; x += 2) even += cache_is_resident(c, 0, x);
    ck_assert_int_eq(even, 3);
    acquire_ok(c, 0, 3); /* evicts the odd 1, not another even */
    ck_assert(!cache_is_resident(c, 0, 1));
    cache_set_evict_hint(c, NULL, NULL);
    cache_free(c);
}
END_TEST

static double keep_by_id(void *user, int layer, int expert)
{
    (void)user;
    (void)layer;
    return expert; /* higher experts are worth more */
}

/* cache_prefetch_gated: a free slot is always taken; a resident expert is
 * only evicted when its hint is below the prefetched expert's keep value. */
START_TEST(test_prefetch_gated)
{
    cache_config cfg = {.device_budget = 4 * stride()};
    emoe_err err = {0};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    cache_set_evict_hint(c, keep_by_id, NULL);
    int a[1] = {0};
    double low[1] = {-1e9};
    ck_assert_int_eq(cache_prefetch_gated(c, CACHE_PF_LOOKAHEAD, 1, a, low, 1), 1); /* a free slot */
    cache_drain(c);
    for (int x = 1; x <= 3; x++) acquire_ok(c, 1, x); /* slots: 0 1 2 3 */
    int b[2] = {7, 6};
    double k1[2] = {0.0, 0.5}; /* 7 is worth 0.0, not more than expert 0; 6 is worth more */
    ck_assert_int_eq(cache_prefetch_gated(c, CACHE_PF_LOOKAHEAD, 1, b, k1, 2), 1);
    cache_drain(c);
    ck_assert(!cache_is_resident(c, 1, 7));
    ck_assert(cache_is_resident(c, 1, 6));
    ck_assert(!cache_is_resident(c, 1, 0));
    ck_assert(cache_is_resident(c, 1, 1));
    int d[1] = {5};
    double k2[1] = {0.9}; /* the victim would be expert 1 (1.0): refused */
    ck_assert_int_eq(cache_prefetch_gated(c, CACHE_PF_QUEUE, 1, d, k2, 1), 0);
    ck_assert(cache_is_resident(c, 1, 1));
    double k3[1] = {1.1};
    ck_assert_int_eq(cache_prefetch_gated(c, CACHE_PF_QUEUE, 1, d, k3, 1), 1);
    cache_drain(c);
    ck_assert(cache_is_resident(c, 1, 5));
    ck_assert(!cache_is_resident(c, 1, 1));
    cache_stats s;
    cache_get_stats(c, &s);
    ck_assert_uint_eq(s.prefetch_by_source[CACHE_PF_LOOKAHEAD], 2);
    ck_assert_uint_eq(s.prefetch_by_source[CACHE_PF_QUEUE], 1);
    acquire_ok(c, 1, 6);
    acquire_ok(c, 1, 5);
    cache_free(c);
}
END_TEST

START_TEST(test_io_error_fails_one_acquire)
{
    for (int host = 0; host < 2; host++) {
        cache_config cfg = {.device_budget = 3 * stride(), .host_budget = host ? 2 * stride() : 0};
        cfg.loader.fail_nth_read = 2;
        emoe_err err = {0};
        cache_t *c;
        ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
        acquire_ok(c, 1, 1);
        eng_expert_weights w;
        ck_assert_int_eq(cache_acquire(c, 1, 2, &w, &err), EMOE_EIO);
        ck_assert_ptr_nonnull(strstr(err.msg, "layer 1, expert 2"));
        ck_assert_ptr_nonnull(strstr(err.msg, "Input/output error"));
        /* The cache keeps serving: other experts, and a retry of the failed one. */
        acquire_ok(c, 1, 3);
        acquire_ok(c, 1, 2);
        cache_stats s;
        cache_get_stats(c, &s);
        ck_assert_uint_eq(s.load_errors, 1);
        ck_assert_uint_eq(s.misses[2], 1);
        check_bounds(c, NULL, cfg.device_budget);
        cache_free(c);
    }
}
END_TEST

START_TEST(test_corrupt_extent)
{
    emoe_err err = {0};
    store_t *s;
    ck_assert_int_eq(store_open(path, 77, &s, &err), EMOE_OK);
    uint64_t off = store_extent_of(s, 2, 5)->offset;
    store_close(s);
    int fd = open(path, O_WRONLY);
    uint8_t b = 0x5a;
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off + 1000), 1);
    close(fd);
    cache_config cfg = {.device_budget = 2 * stride()};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    eng_expert_weights w;
    ck_assert_int_eq(cache_acquire(c, 2, 5, &w, &err), EMOE_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "checksum mismatch"));
    ck_assert_ptr_nonnull(strstr(err.msg, "layer 2, expert 5"));
    acquire_ok(c, 2, 4);
    ck_assert(!cache_is_resident(c, 2, 5));
    /* Without verification the corrupted bytes would be served: the check matters. */
    cache_free(c);
    cfg.no_verify = 1;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    ck_assert_int_eq(cache_acquire(c, 2, 5, &w, &err), EMOE_OK);
    ck_assert(!ct_check_payload(w.gate.data, 2, 5, EXT_BYTES));
    cache_release(c, 2, 5);
    cache_free(c);
    /* A store for another model / a truncated store: refused at open. */
    cfg.no_verify = 0;
    ck_assert_int_eq(cache_open(path, 78, &cfg, &c, &err), EMOE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "another model"));
    ck_assert_int_eq(truncate(path, (off_t)off), 0);
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
}
END_TEST

START_TEST(test_substitute_policy)
{
    cache_config cfg = {.device_budget = 4 * stride(), .miss_policy = CACHE_MISS_SUBSTITUTE};
    emoe_err err = {0};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    const eng_expert_provider *p = cache_provider(c);
    ck_assert_ptr_eq(p->ctx, c);
    ck_assert(p->substitute(p->ctx));
    ck_assert(!p->is_resident(p->ctx, 0, 0));
    eng_expert_weights w;
    ck_assert_int_eq(p->acquire(p->ctx, 0, 0, &w, &err), EMOE_OK); /* acquire still loads exactly */
    ck_assert(ct_check_payload(w.gate.data, 0, 0, EXT_BYTES));
    p->release(p->ctx, 0, 0);
    ck_assert(p->is_resident(p->ctx, 0, 0));
    cache_stats s;
    cache_get_stats(c, &s);
    ck_assert_uint_eq(s.substitute_misses, 1);
    cache_set_miss_policy(c, CACHE_MISS_EXACT);
    ck_assert(!p->substitute(p->ctx));
    json_t *j = cache_stats_json(&s);
    ck_assert_ptr_nonnull(j);
    const char *keys[] = {"hits", "misses", "bytes_loaded", "peak_resident_bytes", "budget_bytes", "load_latency_hist"};
    for (int i = 0; i < 6; i++) ck_assert_msg(json_object_get(j, keys[i]) != NULL, "missing %s", keys[i]);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "budget_bytes")), (json_int_t)cfg.device_budget);
    json_decref(j);
    cache_free(c);
    cache_free(NULL);
}
END_TEST

typedef struct worker { cache_t *c; int id; int bad; } worker;
static void *worker_run(void *arg)
{
    worker *wk = arg;
    uint64_t seed = 99 + (uint64_t)wk->id;
    for (int it = 0; it < 200; it++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int l = (int)((seed >> 33) % L), x = (int)((seed >> 40) % E);
        eng_expert_weights w;
        emoe_err err;
        if (it % 5 == 0) cache_prefetch(wk->c, l, &x, 1);
        emoe_status st = cache_acquire(wk->c, l, x, &w, &err);
        if (st == EMOE_ENOMEM) continue; /* both threads pinned everything: allowed */
        if (st != EMOE_OK || !ct_check_payload(w.gate.data, l, x, EXT_BYTES)) wk->bad++;
        if (st == EMOE_OK) cache_release(wk->c, l, x);
    }
    return NULL;
}

START_TEST(test_concurrent)
{
    cache_config cfg = {.device_budget = 3 * stride(), .host_budget = 4 * stride()};
    cfg.loader.queue_depth = 2;
    emoe_err err = {0};
    cache_t *c;
    ck_assert_int_eq(cache_open(path, 77, &cfg, &c, &err), EMOE_OK);
    pthread_t t[3];
    worker w[3] = {{c, 0, 0}, {c, 1, 0}, {c, 2, 0}};
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker_run, &w[i]);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(w[i].bad, 0);
    check_bounds(c, NULL, cfg.device_budget);
    cache_free(c);
}
END_TEST

/* ---- engine level: the shared fixture models ----------------------------------- */

static const char *fixture_models[] = {"tiny-mixtral", "tiny-olmoe", "tiny-qwen2-moe", "tiny-qwen3-moe"};

/* Runs a prompt of n tokens then `dec` greedy decode steps, recording every
 * step's logits into out ((1+dec) * vocab floats). */
static void run_model(eng_engine *e, const int32_t *prompt, int n, int dec, float *out, cache_t *c)
{
    emoe_err err = {0};
    const eng_model_desc *d = eng_desc(e);
    eng_seq *s = eng_seq_new(e, 0, &err);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < (1 + dec) * d->vocab; i++) out[i] = NAN; /* poison */
    ck_assert_msg(eng_forward(e, s, prompt, n, out, &err) == EMOE_OK, "%s", err.msg);
    if (c) cache_step_end(c);
    for (int t = 0; t < dec; t++) {
        const float *lg = out + (size_t)t * d->vocab;
        int32_t best = 0;
        for (int v = 1; v < d->vocab; v++) if (lg[v] > lg[best]) best = v;
        ck_assert_msg(eng_forward(e, s, &best, 1, out + (size_t)(t + 1) * d->vocab, &err) == EMOE_OK, "%s", err.msg);
        if (c) cache_step_end(c);
    }
    eng_seq_free(s);
}

START_TEST(test_fixture_models_exact)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("fixture-model exactness"); return; }
    const char *m = fixture_models[_i];
    char mdir[4300];
    snprintf(mdir, sizeof mdir, "%s/fixtures/models/%s", tu_shared_dir(), m);
    emoe_err err = {0};
    eng_engine *e;
    eng_open_opts oo = {.n_threads = 1};
    ck_assert_msg(eng_open(mdir, &oo, &e, &err) == EMOE_OK, "%s: %s", m, err.msg);
    const eng_model_desc *d = eng_desc(e);
    ck_assert_int_eq(store_pack_engine(e, path, 0, &err), EMOE_OK);
    uint64_t fp;
    ck_assert_int_eq(store_model_fingerprint(e, &fp, &err), EMOE_OK);
    /* The packed store holds exactly the checkpoint's bytes. */
    store_t *st;
    ck_assert_msg(store_open(path, fp, &st, &err) == EMOE_OK, "%s", err.msg);
    store_close(st);
    int32_t prompt[12];
    for (int i = 0; i < 12; i++) prompt[i] = (int32_t)((i * 37 + 11) % d->vocab);
    int dec = 6;
    size_t nl = (size_t)(1 + dec) * d->vocab;
    float *ref = malloc(nl * sizeof(float)), *got = malloc(nl * sizeof(float));
    run_model(e, prompt, 12, dec, ref, NULL);
    const char *budgets[] = {"10%", "25%", "50%"};
    for (int b = 0; b < 3; b++)
        for (int host = 0; host < 2; host++) {
            counting_mem cm = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
            cache_slot_mem sm = {&cm, 1, cm_alloc, cm_free, cm_upload, NULL, NULL, NULL, NULL, NULL, NULL};
            store_info info;
            ck_assert_int_eq(store_info_from_engine(e, &info, &err), EMOE_OK);
            uint64_t total = (uint64_t)info.n_layers * info.n_experts * info.extent_stride;
            cache_config cfg = {0};
            ck_assert_int_eq(cache_parse_budget(budgets[b], total, "budget", &cfg.device_budget, &err), EMOE_OK);
            if (host) cfg.host_budget = total / 5;
            cfg.slot_mem = &sm;
            cache_t *c;
            ck_assert_msg(cache_open(path, fp, &cfg, &c, &err) == EMOE_OK, "%s %s: %s", m, budgets[b], err.msg);
            eng_set_expert_provider(e, cache_provider(c));
            run_model(e, prompt, 12, dec, got, c);
            eng_set_expert_provider(e, NULL);
            ck_assert_msg(memcmp(ref, got, nl * sizeof(float)) == 0, "%s at %s (host tier %d): logits differ", m,
                          budgets[b], host);
            cache_stats s;
            cache_get_stats(c, &s);
            ck_assert_uint_gt(s.misses[0], 0);
            ck_assert_uint_gt(s.evictions, 0); /* the budget really constrained the run */
            ck_assert_uint_le(s.peak_resident_bytes, cfg.device_budget);
            ck_assert_uint_le(cm.peak, cfg.device_budget);
            ck_assert_uint_eq(s.steps, (uint64_t)(1 + dec));
            fprintf(stderr, "%s %s host=%d: slots %d, hits %llu misses %llu evictions %llu peak %llu / budget %llu\n", m,
                    budgets[b], host, s.device_slots, (unsigned long long)s.hits[0], (unsigned long long)s.misses[0],
                    (unsigned long long)s.evictions, (unsigned long long)s.peak_resident_bytes,
                    (unsigned long long)cfg.device_budget);
            cache_free(c);
        }
    free(ref);
    free(got);
    eng_free(e);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("cache");
    TCase *tc = tcase_create("cache");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_exact_bytes_and_budget);
    tcase_add_test(tc, test_budget_parse);
    tcase_add_test(tc, test_pinned_exhaustion);
    tcase_add_test(tc, test_prefetch_idempotent);
    tcase_add_test(tc, test_evict_hint);
    tcase_add_test(tc, test_prefetch_gated);
    tcase_add_test(tc, test_prefetch_sources);
    tcase_add_test(tc, test_io_error_fails_one_acquire);
    tcase_add_test(tc, test_corrupt_extent);
    tcase_add_test(tc, test_substitute_policy);
    tcase_add_test(tc, test_concurrent);
    tcase_add_loop_test(tc, test_fixture_models_exact, 0, 4);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
