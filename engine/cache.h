/*
 * cache.h — the tiered expert cache, an eng_expert_provider backed by the
 * expert store:
 *   tier 0  device slots: fixed-size slots (one extent each) under a hard byte
 *           budget, in memory given by a cache_slot_mem (host memory for the
 *           CPU backend; GPU memory later for CUDA);
 *   tier 1  pinned host slots under their own budget (an inclusive staging
 *           tier: extents read from the store land here, then are uploaded);
 *   tier 2  the store on NVMe, read through the io_uring loader.
 * Exactness: acquire() of a missing expert loads it (waiting only for it), so
 * outputs are bitwise those of the all-resident run; only the substitute miss
 * policy changes results, and only through the forward pass's substitute path.
 * Eviction: the unpinned, not-loading slot with the lowest priority hint (when
 * a hint is set: the predictor's), ties and the default by least recent use.
 * Budgets: a percentage is of all experts as held in slots (n_layers*n_experts
 * extents of extent_stride bytes), i.e. of the expert count; bytes are bytes.
 * (cache_attach turns a percentage into bytes of the dense experts, so with a
 * q8/q4 store the same percentage holds more experts.)
 * All calls are thread-safe (one mutex); loads complete on the loader thread.
 */
#ifndef EMOE_CACHE_H
#define EMOE_CACHE_H

#include <stdint.h>
#include <jansson.h>

#include "engine/common.h"
#include "engine/expert.h"
#include "engine/engine.h"
#include "engine/loader.h"
#include "engine/store.h"

typedef enum cache_miss_policy {
    CACHE_MISS_EXACT = 0,      /* load on demand */
    CACHE_MISS_SUBSTITUTE = 1, /* forward pass uses resident experts instead */
    CACHE_MISS_LOWBIT = 2,     /* acquire serves the resident low-bit copy, loads the full one for later */
} cache_miss_policy;

/* Memory of the device tier. The host implementation (cache_slot_mem_host)
 * is host_addressable, so the loader reads straight into slots. */
typedef struct cache_slot_mem {
    void *ctx;
    int host_addressable;
    /* bytes is a multiple of 4096; returns NULL on failure. */
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p, size_t bytes);
    /* Copies n bytes of host memory into slot memory dst; the slot is READY
     * (readable by the backend) when it returns. */
    emoe_status (*upload)(void *ctx, void *dst, const void *src, size_t n, emoe_err *err);
    /* Optional: page-lock host memory for fast uploads (the host tier), and undo. */
    void (*host_register)(void *ctx, void *p, size_t bytes);
    void (*host_unregister)(void *ctx, void *p, size_t bytes);
    /* Optional: a page-aligned read buffer of `bytes` for store reads that
     * have no host-tier slot to land in (pinned on CUDA), and its release.
     * NULL: aligned_alloc/free. */
    void *(*staging_alloc)(void *ctx, size_t bytes);
    void (*staging_free)(void *ctx, void *p, size_t bytes);
    /* Optional (a tier that is not host addressable): a persistent, read-only
     * copy of `bytes` of host memory in the backend's memory, and its release
     * (the lowbit policy's low-bit copy on CUDA). NULL on failure. Without it
     * such a tier cannot serve the lowbit policy. */
    void *(*persist)(void *ctx, const void *src, size_t bytes);
    void (*persist_free)(void *ctx, void *p, size_t bytes);
} cache_slot_mem;

const cache_slot_mem *cache_slot_mem_host(void);

typedef struct cache_config {
    uint64_t device_budget;  /* bytes, >= one slot */
    uint64_t host_budget;    /* bytes; 0 = no host tier */
    cache_miss_policy miss_policy;
    int no_verify;           /* 1: skip the CRC32C check of each extent read */
    int expert_format;       /* quant_format the store must hold (0 = dense); another is refused */
    /* Low-bit copy for CACHE_MISS_LOWBIT: a store of format lowbit_format whose
     * every extent is read into memory at open (beside the budget: its bytes
     * are reported as lowbit_bytes). NULL = none (then lowbit acts as exact). */
    const char *lowbit_store;
    int lowbit_format;
    loader_config loader;
    const cache_slot_mem *slot_mem; /* NULL = cache_slot_mem_host() */
} cache_config;

#define CACHE_LAT_BUCKETS 12
/* Upper bounds (microseconds) of the load latency buckets; the last is +inf. */
extern const double cache_lat_bounds_us[CACHE_LAT_BUCKETS - 1];

typedef struct cache_stats {
    uint64_t hits[3], misses[3];  /* per tier: 0 device, 1 host, 2 store (hits = extents read ok, misses = failed reads) */
    uint64_t acquires;
    uint64_t bytes_read;          /* from the store */
    uint64_t loads;               /* device slots filled (from host or store) */
    uint64_t load_errors;
    uint64_t evictions;
    uint64_t prefetch_issued;     /* loads started by prefetch */
    uint64_t substitute_misses;   /* is_resident() answered no in substitute mode */
    uint64_t substituted;         /* experts the forward pass actually replaced (substitute policy) */
    uint64_t prefetch_by_source[4]; /* loads started by prefetch, by cache_pf_source */
    uint64_t prefetch_used[4];    /* of those, loads a later acquire found (ready or loading) before eviction */
    uint64_t lowbit_uses;         /* acquires served by the low-bit copy (lowbit mode) */
    uint64_t lowbit_bytes;        /* memory held by the low-bit copy */
    int lowbit_format;
    uint64_t lat_hist[CACHE_LAT_BUCKETS]; /* load latency (request to ready) */
    double load_seconds;          /* sum of load latencies */
    uint64_t steps;
    double stall_seconds;         /* time acquire() waited, all steps */
    double stall_last_step, stall_max_step;
    /* load queue (issue 11 measurements): loads in flight, time with at least
     * one in flight (disk busy), bytes that completed while an acquire waited */
    uint64_t inflight_max;        /* most loads in flight at once */
    uint64_t inflight_sum;        /* sum over load starts of the loads already in flight */
    double busy_seconds;          /* time with >= 1 load in flight */
    uint64_t stall_bytes;         /* bytes of loads that completed while an acquire was waiting */
    uint64_t slot_bytes;
    int device_slots, host_slots;
    uint64_t budget_bytes, host_budget_bytes;
    uint64_t resident_bytes, peak_resident_bytes;           /* device tier: slots holding an expert */
    uint64_t host_resident_bytes, host_peak_resident_bytes;
    uint64_t device_alloc_bytes;  /* slot memory allocated (lazily); <= budget_bytes */
    const char *loader_mode;
    int miss_policy;
} cache_stats;

typedef struct cache_t cache_t;

/* Parses "25%", "0.5%", "123456", "64K", "1.5M", "2G" (binary units). A
 * percentage is of `total` bytes. EINVAL naming `what` on anything else. */
emoe_status cache_parse_budget(const char *s, uint64_t total, const char *what, uint64_t *out, emoe_err *err);
int cache_parse_miss_policy(const char *s, cache_miss_policy *out);

/* Opens the store (checking fingerprint expect_fp unless 0), sizes the tiers
 * and starts the loader. Slot memory is allocated lazily. */
emoe_status cache_open(const char *store_file, uint64_t expect_fp, const cache_config *cfg, cache_t **out,
                       emoe_err *err);
void cache_free(cache_t *c);

/* The provider for eng_set_expert_provider; valid while c lives. */
const eng_expert_provider *cache_provider(cache_t *c);

/* Provider operations (also callable directly). acquire: views valid until the
 * matching release; on failure (I/O error, checksum, all slots pinned) returns
 * the status with err filled; the cache stays usable and a later acquire
 * retries the load. */
emoe_status cache_acquire(cache_t *c, int layer, int expert, eng_expert_weights *w, emoe_err *err);
void cache_release(cache_t *c, int layer, int expert);
int cache_is_resident(cache_t *c, int layer, int expert);
/* Asynchronous and idempotent: starts loads for the experts not resident or
 * loading, into slots that are free or evictable (never pinned ones, never ones
 * filled by this same call). */
void cache_prefetch(cache_t *c, int layer, const int *experts, int n);
/* Who asked for a prefetch (per-source load counters). cache_prefetch is
 * CACHE_PF_ENGINE (the forward pass's own prefetch of the experts it is about
 * to use). */
typedef enum cache_pf_source {
    CACHE_PF_ENGINE = 0,
    CACHE_PF_PLAN,       /* a request's plan, at admission */
    CACHE_PF_QUEUE,      /* a queued request's plan, before admission */
    CACHE_PF_LOOKAHEAD,  /* predicted experts of the next layers */
    CACHE_PF_SOURCES
} cache_pf_source;
extern const char *const cache_pf_source_names[CACHE_PF_SOURCES]; /* "engine", "plan", "queue", "lookahead" */
/* cache_prefetch, with its loads counted under src. */
void cache_prefetch_from(cache_t *c, cache_pf_source src, int layer, const int *experts, int n);
/* cache_prefetch_from, gated: experts[i] is loaded only into a free slot or
 * in place of one whose eviction hint is below keep[i] (its own hint once
 * resident): a speculative load never evicts what is worth more. Returns the
 * loads started. */
int cache_prefetch_gated(cache_t *c, cache_pf_source src, int layer, const int *experts, const double *keep, int n);
/* Counts n experts replaced by the substitute miss policy. */
void cache_count_substituted(cache_t *c, int n);
/* Waits until no load is in flight. */
void cache_drain(cache_t *c);

/* Eviction priority hint: higher = keep longer. NULL fn = LRU only. */
typedef double (*cache_evict_hint_fn)(void *user, int layer, int expert);
void cache_set_evict_hint(cache_t *c, cache_evict_hint_fn fn, void *user);
void cache_set_miss_policy(cache_t *c, cache_miss_policy p);

/* Closes a step for the per-step stall figures. */
void cache_step_end(cache_t *c);
void cache_get_stats(cache_t *c, cache_stats *out);
/* JSON object of the stats ({hits, misses, bytes_loaded, peak_resident_bytes,
 * budget_bytes, ...}); new reference, NULL on allocation failure. */
json_t *cache_stats_json(const cache_stats *s);
const store_t *cache_store(const cache_t *c);
/* Views of the extent at mem of a store described by in (dense or quantized). */
void cache_fill_views(const store_info *in, const void *mem, eng_expert_weights *w);

/* Command-line glue for `emoe run` / `emoe perplexity` / serve: resolves (or
 * builds) the store of engine e, parses budgets (NULL host_budget = 0, NULL
 * miss_policy = exact), opens the cache and installs it as e's provider.
 * The caller frees the cache after the engine stops using it (or calls
 * eng_set_expert_provider(e, NULL) first). */
typedef struct cache_cli_opts {
    const char *budget;       /* "25%" or bytes; required */
    const char *host_budget;
    const char *miss_policy;  /* "exact" | "substitute" | "lowbit" */
    const char *expert_format; /* "bf16" (NULL) | "q8" | "q4": the store's format */
    const char *lowbit_format; /* lowbit policy: format of the resident copy, "q4" (NULL) | "q8" */
    const char *store;        /* NULL: beside the model (built if missing) */
    int queue_depth;
    int fail_nth_read;        /* fault injection (tests) */
} cache_cli_opts;
emoe_status cache_attach(eng_engine *e, const cache_cli_opts *o, cache_t **out, emoe_err *err);

#endif
