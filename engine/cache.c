/*
 * cache.c — tiered expert cache (see cache.h for the model).
 *
 * Slot life cycle (device and host tiers alike): EMPTY -> LOADING -> READY,
 * or LOADING -> ERROR when the read/checksum/upload failed. LOADING slots are
 * never evicted (the loader writes into them); pinned READY slots neither.
 * An ERROR slot keeps its message until the next acquire of that expert
 * reports it and frees the slot, so a failed load fails exactly the step that
 * needs the expert and a later step retries.
 * Uploads (host tier -> device slot) and checksum checks run outside the lock,
 * on the loader thread for store reads and on the caller for host-tier hits.
 */
#include "engine/cache.h"
#include "engine/quant.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

typedef enum slot_state { SLOT_EMPTY = 0, SLOT_LOADING, SLOT_READY, SLOT_ERROR } slot_state;

typedef struct cslot {
    void *mem;        /* extent_stride bytes; NULL until first use (device tier) */
    int owner;        /* expert id (layer*n_experts+expert), -1 = none */
    slot_state state;
    int pins;
    uint64_t stamp;   /* last use, for LRU */
    emoe_err *err;    /* ERROR state: the message (owned) */
    int pf_src;       /* device tier: cache_pf_source of the prefetch that filled it, until first acquired; -1 none */
    loader_read *rd;  /* device tier, LOADING from the store: its read (an acquire that waits promotes it) */
} cslot;

typedef struct load_job {
    loader_read rd;
    struct cache_t *c;
    int id, dev, host;
    void *staging;    /* owned read buffer when neither a host slot nor direct reads */
    int from_host;    /* source is host slot `host` (tier-1 hit): copy only */
    double t0;
} load_job;

struct cache_t {
    store_t *store;
    loader_t *loader;
    cache_config cfg;
    cache_slot_mem mem;
    int n_layers, n_experts, n_ids;
    uint64_t slot_bytes, extent_bytes;
    int n_dev, n_host;
    cslot *dev, *host;
    int *map_dev, *map_host;
    uint8_t *host_arena;
    size_t host_arena_len;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t clock;
    int inflight;
    cache_evict_hint_fn hint;
    void *hint_user;
    eng_expert_provider prov;
    cache_stats st;
    double stall_cur;
    int waiters;      /* acquires waiting for a load */
    double busy_t0;   /* when inflight went from 0 to 1 */
    /* lowbit miss policy: every expert's low-bit extent, lb_stride apart */
    uint8_t *lb_mem;
    size_t lb_stride;
    store_info lb_info;
    uint32_t *lb_pins;  /* per expert id: acquires served from lb_mem not yet released */
    uint8_t *lb_dev;    /* the low-bit copy in the tier's memory (not host addressable: mem.persist), or NULL */
};

const double cache_lat_bounds_us[CACHE_LAT_BUCKETS - 1] = {50, 100, 200, 500, 1000, 2000,
                                                           5000, 10000, 20000, 50000, 100000};

/* ---- host slot memory ----------------------------------------------------- */

static void *host_alloc(void *ctx, size_t bytes) { (void)ctx; return aligned_alloc(4096, bytes); }
static void host_free(void *ctx, void *p, size_t bytes) { (void)ctx; (void)bytes; free(p); }
static emoe_status host_upload(void *ctx, void *dst, const void *src, size_t n, emoe_err *err)
{
    (void)ctx; (void)err;
    memcpy(dst, src, n);
    return EMOE_OK;
}
static const cache_slot_mem host_mem = {NULL, 1, host_alloc, host_free, host_upload, NULL, NULL, NULL, NULL, NULL, NULL};
const cache_slot_mem *cache_slot_mem_host(void) { return &host_mem; }

/* ---- parsing ----------------------------------------------------------------- */

emoe_status cache_parse_budget(const char *s, uint64_t total, const char *what, uint64_t *out, emoe_err *err)
{
    if (!s || !*s) return emoe_errf(err, EMOE_EINVAL, "%s: empty budget", what);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v < 0)
        return emoe_errf(err, EMOE_EINVAL, "%s: '%s' is not a budget (want e.g. 25%%, 512M, 1073741824)", what, s);
    double mult = 1;
    if (*end == '%') {
        if (v > 100) return emoe_errf(err, EMOE_EINVAL, "%s: '%s' is over 100%%", what, s);
        end++;
        if (*end) return emoe_errf(err, EMOE_EINVAL, "%s: trailing characters in '%s'", what, s);
        *out = (uint64_t)floor(v / 100.0 * (double)total + 1e-6);
        return EMOE_OK;
    }
    switch (*end) {
    case 0: break;
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: return emoe_errf(err, EMOE_EINVAL, "%s: unknown unit in '%s' (use %%, K, M, G, T)", what, s);
    }
    if (*end == 'i' || *end == 'B') end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end) return emoe_errf(err, EMOE_EINVAL, "%s: trailing characters in '%s'", what, s);
    double b = v * mult;
    if (b >= 1.8e19) return emoe_errf(err, EMOE_EINVAL, "%s: '%s' is too large", what, s);
    *out = (uint64_t)b;
    return EMOE_OK;
}

int cache_parse_miss_policy(const char *s, cache_miss_policy *out)
{
    if (!strcmp(s, "exact")) { *out = CACHE_MISS_EXACT; return 0; }
    if (!strcmp(s, "substitute")) { *out = CACHE_MISS_SUBSTITUTE; return 0; }
    if (!strcmp(s, "lowbit")) { *out = CACHE_MISS_LOWBIT; return 0; }
    return -1;
}

/* ---- internals (mu held unless said otherwise) ------------------------------- */

static void fill_views(const cache_t *c, const void *mem, eng_expert_weights *w)
{
    cache_fill_views(store_get_info(c->store), mem, w);
}

void cache_fill_views(const store_info *in, const void *mem, eng_expert_weights *w)
{
    size_t one = (size_t)in->expert_ffn * (size_t)in->dim * eng_dtype_size(in->dtype);
    size_t down_off = 2 * one;
    if (in->format != QUANT_NONE) {
        one = (size_t)in->expert_ffn * quant_row_bytes(in->format, in->dim);
        down_off = 2 * one;
    }
    memset(w, 0, sizeof *w);
    w->qfmt = in->format;
    eng_tensor *t[3] = {&w->gate, &w->up, &w->down};
    for (int i = 0; i < 3; i++) {
        t[i]->data = (const uint8_t *)mem + (i < 2 ? (size_t)i * one : down_off);
        t[i]->dtype = in->dtype;
        t[i]->ndim = 2;
        t[i]->shape[0] = i < 2 ? in->expert_ffn : in->dim;
        t[i]->shape[1] = i < 2 ? in->dim : in->expert_ffn;
    }
}

static void update_resident(cache_t *c)
{
    uint64_t nd = 0, nh = 0;
    for (int i = 0; i < c->n_dev; i++) nd += c->dev[i].owner >= 0;
    for (int i = 0; i < c->n_host; i++) nh += c->host[i].owner >= 0;
    c->st.resident_bytes = nd * c->slot_bytes;
    c->st.host_resident_bytes = nh * c->slot_bytes;
    if (c->st.resident_bytes > c->st.peak_resident_bytes) c->st.peak_resident_bytes = c->st.resident_bytes;
    if (c->st.host_resident_bytes > c->st.host_peak_resident_bytes)
        c->st.host_peak_resident_bytes = c->st.host_resident_bytes;
}

/* Victim slot: EMPTY first, then ERROR, then the unpinned READY slot with the
 * lowest (hint, stamp). Slots with stamp >= fresh (filled by the current
 * prefetch) are skipped. -1 when none. */
static int pick_victim_score(cache_t *c, cslot *s, int n, uint64_t fresh, double *score_out);
static int pick_victim(cache_t *c, cslot *s, int n, uint64_t fresh)
{
    return pick_victim_score(c, s, n, fresh, NULL);
}

/* pick_victim, and the victim's hint (-inf for an EMPTY or ERROR slot). */
static int pick_victim_score(cache_t *c, cslot *s, int n, uint64_t fresh, double *score_out)
{
    int best = -1;
    if (score_out) *score_out = -INFINITY;
    double best_score = 0;
    uint64_t best_stamp = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].state == SLOT_EMPTY) return i;
        if (s[i].state == SLOT_ERROR && s[i].pins == 0) return i;
    }
    for (int i = 0; i < n; i++) {
        if (s[i].state != SLOT_READY || s[i].pins > 0 || s[i].stamp >= fresh) continue;
        double score = c->hint ? c->hint(c->hint_user, s[i].owner / c->n_experts, s[i].owner % c->n_experts) : 0;
        if (best < 0 || score < best_score || (score == best_score && s[i].stamp < best_stamp)) {
            best = i;
            best_score = score;
            best_stamp = s[i].stamp;
        }
    }
    if (score_out && best >= 0) *score_out = best_score;
    return best;
}

/* A prefetched device slot is used for the first time: counts it under its source. */
static void prefetch_note_used(cache_t *c, cslot *s)
{
    if (s->pf_src >= 0 && s->pf_src < CACHE_PF_SOURCES) c->st.prefetch_used[s->pf_src]++;
    s->pf_src = -1;
}

static void slot_clear(cslot *s, int *map, uint64_t *evictions)
{
    if (s->owner >= 0) {
        map[s->owner] = -1;
        if (s->state == SLOT_READY && evictions) (*evictions)++;
    }
    s->owner = -1;
    s->state = SLOT_EMPTY;
    s->pf_src = -1;
    s->rd = NULL;
    free(s->err);
    s->err = NULL;
}

static void record_latency(cache_t *c, double dt)
{
    double us = dt * 1e6;
    int b = 0;
    while (b < CACHE_LAT_BUCKETS - 1 && us > cache_lat_bounds_us[b]) b++;
    c->st.lat_hist[b]++;
    c->st.load_seconds += dt;
}

/* Finishes a load: publishes the device slot (READY or ERROR), settles the
 * host slot, wakes waiters. Takes mu. Frees job. */
static void load_finish(load_job *j, emoe_status st, const emoe_err *e)
{
    cache_t *c = j->c;
    pthread_mutex_lock(&c->mu);
    cslot *d = &c->dev[j->dev];
    d->rd = NULL;
    if (st == EMOE_OK) {
        d->state = SLOT_READY;
        c->st.loads++;
    } else {
        d->state = SLOT_ERROR;
        d->err = malloc(sizeof *d->err);
        if (d->err) *d->err = *e;
        c->st.load_errors++;
    }
    d->stamp = ++c->clock;
    if (j->host >= 0) {
        cslot *h = &c->host[j->host];
        h->pins--;
        if (!j->from_host) {
            if (st == EMOE_OK) h->state = SLOT_READY;
            else slot_clear(h, c->map_host, NULL); /* never keep what failed */
        }
    }
    if (!j->from_host) {
        if (st == EMOE_OK) { c->st.hits[2]++; c->st.bytes_read += c->slot_bytes; }
        else c->st.misses[2]++;
    }
    double now = emoe_now();
    record_latency(c, now - j->t0);
    if (c->waiters > 0 && st == EMOE_OK) c->st.stall_bytes += c->slot_bytes;
    c->inflight--;
    if (c->inflight == 0) c->st.busy_seconds += now - c->busy_t0;
    update_resident(c);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (j->staging && c->mem.staging_free) c->mem.staging_free(c->mem.ctx, j->staging, c->slot_bytes);
    else free(j->staging);
    free(j);
}

/* Loader thread: a store read completed. Checks, uploads, finishes. */
static void on_read_done(void *user, loader_read *r, int status)
{
    load_job *j = user;
    cache_t *c = j->c;
    int layer = j->id / c->n_experts, expert = j->id % c->n_experts;
    emoe_err e = {0};
    emoe_status st = EMOE_OK;
    if (status < 0)
        st = emoe_errf(&e, EMOE_EIO, "expert store %s: reading extent (layer %d, expert %d) at offset %" PRIu64 ": %s",
                       store_path(c->store), layer, expert, r->offset, strerror(-status));
    else if (!c->cfg.no_verify)
        st = store_verify_extent(c->store, layer, expert, r->buf, &e);
    if (st == EMOE_OK && r->buf != c->dev[j->dev].mem) {
        st = c->mem.upload(c->mem.ctx, c->dev[j->dev].mem, r->buf, c->extent_bytes, &e);
        if (st) emoe_err_prefix(&e, "uploading expert (layer %d, expert %d)", layer, expert);
    }
    load_finish(j, st, &e);
}

/* Host-tier hit: copies host slot -> device slot on the calling thread. */
static void run_copy(load_job *j)
{
    cache_t *c = j->c;
    emoe_err e = {0};
    emoe_status st = c->mem.upload(c->mem.ctx, c->dev[j->dev].mem, c->host[j->host].mem, c->extent_bytes, &e);
    if (st) emoe_err_prefix(&e, "uploading expert (layer %d, expert %d) from the host tier",
                            j->id / c->n_experts, j->id % c->n_experts);
    load_finish(j, st, &e);
}

/* Claims device slot v for expert id and prepares its load. Returns the job
 * (a copy job when the host tier has the expert, else a store read), or NULL
 * with *st set (allocation failure: the slot is left EMPTY). */
static load_job *start_load(cache_t *c, int id, int v, emoe_status *st, emoe_err *err)
{
    cslot *d = &c->dev[v];
    slot_clear(d, c->map_dev, &c->st.evictions);
    if (!d->mem) {
        d->mem = c->mem.alloc(c->mem.ctx, c->slot_bytes);
        if (!d->mem) {
            *st = emoe_errf(err, EMOE_ENOMEM, "expert cache: cannot allocate a %" PRIu64 "-byte device slot", c->slot_bytes);
            return NULL;
        }
        c->st.device_alloc_bytes += c->slot_bytes;
    }
    load_job *j = calloc(1, sizeof *j);
    if (!j) { *st = emoe_errf(err, EMOE_ENOMEM, "expert cache: out of memory"); return NULL; }
    j->c = c;
    j->id = id;
    j->dev = v;
    j->host = -1;
    j->t0 = emoe_now();
    int h = c->map_host[id];
    if (h >= 0 && c->host[h].state == SLOT_READY) {
        c->st.hits[1]++;
        j->from_host = 1;
        j->host = h;
        c->host[h].pins++;
        c->host[h].stamp = ++c->clock;
    } else {
        if (c->n_host) c->st.misses[1]++;
        void *dst = NULL;
        if (c->n_host) {
            h = pick_victim(c, c->host, c->n_host, UINT64_MAX);
            if (h >= 0) {
                cslot *hs = &c->host[h];
                slot_clear(hs, c->map_host, NULL);
                hs->owner = id;
                hs->state = SLOT_LOADING;
                hs->pins = 1;
                hs->stamp = ++c->clock;
                c->map_host[id] = h;
                j->host = h;
                dst = hs->mem;
            }
        }
        if (!dst && c->mem.host_addressable) dst = d->mem;
        if (!dst) {
            /* Pinned where the slot memory offers it (CUDA): the read lands
             * where the upload's DMA reads it, no second copy. */
            dst = j->staging = c->mem.staging_alloc ? c->mem.staging_alloc(c->mem.ctx, c->slot_bytes)
                                                    : aligned_alloc(4096, c->slot_bytes);
            if (!dst) {
                free(j);
                *st = emoe_errf(err, EMOE_ENOMEM, "expert cache: out of memory for a staging buffer");
                return NULL;
            }
        }
        const store_extent *x = store_extent_of(c->store, id / c->n_experts, id % c->n_experts);
        j->rd.offset = x->offset;
        j->rd.len = c->slot_bytes;
        j->rd.buf = dst;
        j->rd.done = on_read_done;
        j->rd.user = j;
        d->rd = &j->rd;
    }
    d->owner = id;
    d->state = SLOT_LOADING;
    d->stamp = ++c->clock;
    c->map_dev[id] = v;
    c->st.inflight_sum += (uint64_t)c->inflight;
    if (c->inflight == 0) c->busy_t0 = j->t0;
    c->inflight++;
    if ((uint64_t)c->inflight > c->st.inflight_max) c->st.inflight_max = (uint64_t)c->inflight;
    update_resident(c);
    return j;
}

/* ---- public ------------------------------------------------------------------ */

static emoe_status prov_acquire(void *ctx, int layer, int expert, eng_expert_weights *w, emoe_err *err)
{
    return cache_acquire(ctx, layer, expert, w, err);
}
static void prov_release(void *ctx, int layer, int expert) { cache_release(ctx, layer, expert); }
static int prov_is_resident(void *ctx, int layer, int expert) { return cache_is_resident(ctx, layer, expert); }
static int prov_substitute(void *ctx)
{
    cache_t *c = ctx;
    pthread_mutex_lock(&c->mu);
    int s = c->cfg.miss_policy == CACHE_MISS_SUBSTITUTE;
    pthread_mutex_unlock(&c->mu);
    return s;
}
static void prov_prefetch(void *ctx, int layer, const int *experts, int n) { cache_prefetch(ctx, layer, experts, n); }
static void prov_substituted(void *ctx, void *tag, int layer, int n) { (void)tag; (void)layer; cache_count_substituted(ctx, n); }

/* Reads every extent of the low-bit store at path into memory (checksummed),
 * for the lowbit miss policy. The store must be of format fmt and of the
 * same model (fingerprint) and shapes as the cache's store. */
static emoe_status cache_lowbit_load(cache_t *c, const char *path, uint64_t expect_fp, int fmt, emoe_err *err)
{
    store_t *s = NULL;
    emoe_status st = store_open(path, expect_fp, &s, err);
    if (st) return st;
    if ((st = store_check_format(s, fmt, err))) goto out;
    const store_info *in = store_get_info(s), *main_in = store_get_info(c->store);
    if (in->n_layers != main_in->n_layers || in->n_experts != main_in->n_experts || in->dim != main_in->dim ||
        in->expert_ffn != main_in->expert_ffn) {
        st = emoe_errf(err, EMOE_EINVAL, "low-bit expert store %s: shapes differ from the store %s", path,
                       store_path(c->store));
        goto out;
    }
    c->lb_info = *in;
    c->lb_stride = (in->extent_bytes + 63) / 64 * 64;
    c->lb_mem = aligned_alloc(64, c->lb_stride * (size_t)c->n_ids);
    c->lb_pins = calloc((size_t)c->n_ids, sizeof *c->lb_pins);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (!c->lb_mem || !c->lb_pins || fd < 0) {
        if (fd >= 0) close(fd);
        st = emoe_errf(err, fd < 0 ? EMOE_EIO : EMOE_ENOMEM, "low-bit expert store %s: cannot %s", path,
                       fd < 0 ? "open it" : "allocate memory for it");
        goto out;
    }
    for (int id = 0; id < c->n_ids && st == EMOE_OK; id++) {
        int l = id / c->n_experts, x = id % c->n_experts;
        const store_extent *xt = store_extent_of(s, l, x);
        uint8_t *dst = c->lb_mem + (size_t)id * c->lb_stride;
        size_t got = 0;
        while (got < xt->length) {
            ssize_t r = pread(fd, dst + got, xt->length - got, (off_t)(xt->offset + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            got += (size_t)r;
        }
        if (got != xt->length)
            st = emoe_errf(err, EMOE_EIO, "low-bit expert store %s: short read of extent (layer %d, expert %d)", path, l, x);
        else if (!c->cfg.no_verify)
            st = store_verify_extent(s, l, x, dst, err);
    }
    close(fd);
    if (st == EMOE_OK) {
        c->st.lowbit_bytes = (uint64_t)c->lb_stride * (uint64_t)c->n_ids;
        c->st.lowbit_format = fmt;
    }
out:
    store_close(s);
    return st;
}

emoe_status cache_open(const char *store_file, uint64_t expect_fp, const cache_config *cfg, cache_t **out,
                       emoe_err *err)
{
    *out = NULL;
    emoe_status st;
    cache_t *c = calloc(1, sizeof *c);
    if (!c) return emoe_errf(err, EMOE_ENOMEM, "expert cache: out of memory");
    c->cfg = *cfg;
    c->mem = *(cfg->slot_mem ? cfg->slot_mem : cache_slot_mem_host());
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if ((st = store_open(store_file, expect_fp, &c->store, err))) goto fail;
    if ((st = store_check_format(c->store, cfg->expert_format, err))) goto fail;
    const store_info *in = store_get_info(c->store);
    c->n_layers = in->n_layers;
    c->n_experts = in->n_experts;
    c->n_ids = in->n_layers * in->n_experts;
    c->slot_bytes = in->extent_stride;
    c->extent_bytes = in->extent_bytes;
    if (cfg->device_budget < c->slot_bytes) {
        st = emoe_errf(err, EMOE_EINVAL,
                       "expert cache: device budget %" PRIu64 " bytes holds no expert (one expert slot is %" PRIu64 " bytes)",
                       cfg->device_budget, c->slot_bytes);
        goto fail;
    }
    uint64_t nd = cfg->device_budget / c->slot_bytes, nh = cfg->host_budget / c->slot_bytes;
    c->n_dev = (int)(nd < (uint64_t)c->n_ids ? nd : (uint64_t)c->n_ids);
    c->n_host = (int)(nh < (uint64_t)c->n_ids ? nh : (uint64_t)c->n_ids);
    c->dev = calloc((size_t)c->n_dev, sizeof *c->dev);
    c->host = calloc((size_t)c->n_host + 1, sizeof *c->host);
    c->map_dev = malloc((size_t)c->n_ids * sizeof *c->map_dev);
    c->map_host = malloc((size_t)c->n_ids * sizeof *c->map_host);
    if (!c->dev || !c->host || !c->map_dev || !c->map_host) {
        st = emoe_errf(err, EMOE_ENOMEM, "expert cache: out of memory");
        goto fail;
    }
    for (int i = 0; i < c->n_ids; i++) c->map_dev[i] = c->map_host[i] = -1;
    for (int i = 0; i < c->n_dev; i++) c->dev[i].owner = c->dev[i].pf_src = -1;
    for (int i = 0; i < c->n_host; i++) c->host[i].owner = -1;
    if ((st = loader_open(store_file, &cfg->loader, &c->loader, err))) goto fail;
    if (c->n_host) {
        c->host_arena_len = (size_t)c->n_host * c->slot_bytes;
        void *p = mmap(NULL, c->host_arena_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            st = emoe_errf(err, EMOE_ENOMEM, "expert cache: cannot map %zu bytes for the host tier", c->host_arena_len);
            goto fail;
        }
        c->host_arena = p;
        if (mlock(p, c->host_arena_len) != 0)
            LOG_WARN("expert cache: cannot pin the %zu-byte host tier (mlock: %s); it may be swapped",
                     c->host_arena_len, strerror(errno));
        emoe_err re;
        if (loader_register_buffer(c->loader, p, c->host_arena_len, &re) != EMOE_OK)
            LOG_INFO("expert cache: host tier not registered with io_uring (%s); plain reads", re.msg);
        for (int i = 0; i < c->n_host; i++) c->host[i].mem = c->host_arena + (size_t)i * c->slot_bytes;
        if (c->mem.host_register) c->mem.host_register(c->mem.ctx, p, c->host_arena_len);
    }
    if (cfg->lowbit_store && (st = cache_lowbit_load(c, cfg->lowbit_store, expect_fp, cfg->lowbit_format, err)))
        goto fail;
    if (c->lb_mem && !c->mem.host_addressable) { /* the backend reads the low-bit copy from its own memory */
        size_t lbb = c->lb_stride * (size_t)c->n_ids;
        c->lb_dev = c->mem.persist ? c->mem.persist(c->mem.ctx, c->lb_mem, lbb) : NULL;
        if (!c->lb_dev) {
            st = emoe_errf(err, c->mem.persist ? EMOE_ENOMEM : EMOE_EUNSUP,
                           "lowbit miss policy: cannot place the %zu-byte low-bit copy in the device tier's memory", lbb);
            goto fail;
        }
    }
    c->st.slot_bytes = c->slot_bytes;
    c->st.device_slots = c->n_dev;
    c->st.host_slots = c->n_host;
    c->st.budget_bytes = cfg->device_budget;
    c->st.host_budget_bytes = cfg->host_budget;
    c->st.loader_mode = loader_mode(c->loader);
    c->prov = (eng_expert_provider){c, prov_acquire, prov_release, prov_is_resident, prov_substitute, prov_prefetch,
                                    NULL, prov_substituted, 0, NULL, !c->mem.host_addressable};
    LOG_INFO("expert cache: %d device slots (%" PRIu64 " of %" PRIu64 " budget bytes), %d host slots, %d experts, store %s, %s",
             c->n_dev, (uint64_t)c->n_dev * c->slot_bytes, cfg->device_budget, c->n_host, c->n_ids, store_file,
             loader_mode(c->loader));
    *out = c;
    return EMOE_OK;
fail:
    cache_free(c);
    return st;
}

void cache_drain(cache_t *c)
{
    pthread_mutex_lock(&c->mu);
    while (c->inflight > 0) pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

void cache_free(cache_t *c)
{
    if (!c) return;
    if (c->loader) {
        cache_drain(c);
        loader_close(c->loader);
    }
    for (int i = 0; c->dev && i < c->n_dev; i++) {
        if (c->dev[i].mem) c->mem.free(c->mem.ctx, c->dev[i].mem, c->slot_bytes);
        free(c->dev[i].err);
    }
    for (int i = 0; c->host && i < c->n_host; i++) free(c->host[i].err);
    if (c->host_arena && c->mem.host_unregister) c->mem.host_unregister(c->mem.ctx, c->host_arena, c->host_arena_len);
    if (c->host_arena) munmap(c->host_arena, c->host_arena_len);
    free(c->dev);
    free(c->host);
    free(c->map_dev);
    free(c->map_host);
    if (c->lb_dev && c->mem.persist_free) c->mem.persist_free(c->mem.ctx, c->lb_dev, c->lb_stride * (size_t)c->n_ids);
    free(c->lb_mem);
    free(c->lb_pins);
    store_close(c->store);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

const eng_expert_provider *cache_provider(cache_t *c) { return &c->prov; }
const store_t *cache_store(const cache_t *c) { return c->store; }

emoe_status cache_acquire(cache_t *c, int layer, int expert, eng_expert_weights *w, emoe_err *err)
{
    if (layer < 0 || layer >= c->n_layers || expert < 0 || expert >= c->n_experts)
        return emoe_errf(err, EMOE_EINVAL, "expert cache: no expert (layer %d, expert %d)", layer, expert);
    int id = layer * c->n_experts + expert;
    int missed = 0;
    double waited = 0;
    emoe_status st = EMOE_OK;
    pthread_mutex_lock(&c->mu);
    c->st.acquires++;
    for (;;) {
        int d = c->map_dev[id];
        if (d >= 0 && c->dev[d].state == SLOT_READY) {
            cslot *s = &c->dev[d];
            if (!missed) c->st.hits[0]++;
            prefetch_note_used(c, s);
            s->pins++;
            s->stamp = ++c->clock;
            fill_views(c, s->mem, w);
            break;
        }
        if (!missed) { c->st.misses[0]++; missed = 1; }
        if (c->cfg.miss_policy == CACHE_MISS_LOWBIT && c->lb_mem && (d < 0 || c->dev[d].state == SLOT_LOADING)) {
            /* Serve the low-bit copy now; start the full expert's load for later tokens. */
            if (d < 0) {
                int v = pick_victim(c, c->dev, c->n_dev, UINT64_MAX);
                load_job *j = v >= 0 ? start_load(c, id, v, &st, err) : NULL;
                st = EMOE_OK;
                if (j && j->from_host) {
                    pthread_mutex_unlock(&c->mu);
                    run_copy(j);
                    pthread_mutex_lock(&c->mu);
                    continue; /* now READY (or ERROR): take it from the top */
                }
                if (j) {
                    loader_read *r = &j->rd;
                    loader_submit(c->loader, &r, 1);
                }
            }
            cache_fill_views(&c->lb_info, (c->lb_dev ? c->lb_dev : c->lb_mem) + (size_t)id * c->lb_stride, w);
            w->lowbit = 1;
            c->lb_pins[id]++;
            c->st.lowbit_uses++;
            break;
        }
        if (d >= 0 && c->dev[d].state == SLOT_LOADING) {
            prefetch_note_used(c, &c->dev[d]);
            if (c->dev[d].rd) loader_promote(c->loader, c->dev[d].rd); /* needed now: ahead of the prefetches */
            double t = emoe_now();
            c->dev[d].pins++;
            c->waiters++;
            while (c->dev[d].state == SLOT_LOADING) pthread_cond_wait(&c->cv, &c->mu);
            c->waiters--;
            c->dev[d].pins--;
            waited += emoe_now() - t;
            continue;
        }
        if (d >= 0) { /* ERROR: report once, free the slot so a later acquire retries */
            cslot *s = &c->dev[d];
            if (s->err) st = emoe_errf(err, s->err->code ? s->err->code : EMOE_EIO, "%s", s->err->msg);
            else st = emoe_errf(err, EMOE_EIO, "expert cache: loading (layer %d, expert %d) failed", layer, expert);
            slot_clear(s, c->map_dev, NULL);
            update_resident(c);
            break;
        }
        int v = pick_victim(c, c->dev, c->n_dev, UINT64_MAX);
        if (v < 0) {
            if (c->inflight > 0) { /* slots busy loading (prefetch): wait for one */
                double t = emoe_now();
                c->waiters++;
                pthread_cond_wait(&c->cv, &c->mu);
                c->waiters--;
                waited += emoe_now() - t;
                continue;
            }
            st = emoe_errf(err, EMOE_ENOMEM,
                           "expert cache: all %d device slots (budget %" PRIu64 " bytes) are pinned by the running step; "
                           "cannot load (layer %d, expert %d): raise the budget",
                           c->n_dev, c->cfg.device_budget, layer, expert);
            break;
        }
        load_job *j = start_load(c, id, v, &st, err);
        if (!j) break;
        if (j->from_host) {
            pthread_mutex_unlock(&c->mu);
            run_copy(j);
            pthread_mutex_lock(&c->mu);
        } else {
            loader_read *r = &j->rd;
            loader_submit_urgent(c->loader, &r, 1);
        }
    }
    c->stall_cur += waited;
    pthread_mutex_unlock(&c->mu);
    return st;
}

void cache_release(cache_t *c, int layer, int expert)
{
    if (layer < 0 || layer >= c->n_layers || expert < 0 || expert >= c->n_experts) return;
    pthread_mutex_lock(&c->mu);
    int id = layer * c->n_experts + expert;
    int d = c->map_dev[id];
    if (c->lb_pins && c->lb_pins[id] > 0) c->lb_pins[id]--;
    else if (d >= 0 && c->dev[d].pins > 0) c->dev[d].pins--;
    pthread_mutex_unlock(&c->mu);
}

int cache_is_resident(cache_t *c, int layer, int expert)
{
    if (layer < 0 || layer >= c->n_layers || expert < 0 || expert >= c->n_experts) return 0;
    pthread_mutex_lock(&c->mu);
    int d = c->map_dev[layer * c->n_experts + expert];
    int r = d >= 0 && c->dev[d].state == SLOT_READY;
    if (!r && c->cfg.miss_policy == CACHE_MISS_SUBSTITUTE) c->st.substitute_misses++;
    pthread_mutex_unlock(&c->mu);
    return r;
}

const char *const cache_pf_source_names[CACHE_PF_SOURCES] = {"engine", "plan", "queue", "lookahead"};

void cache_count_substituted(cache_t *c, int n)
{
    if (n <= 0) return;
    pthread_mutex_lock(&c->mu);
    c->st.substituted += (uint64_t)n;
    pthread_mutex_unlock(&c->mu);
}

void cache_prefetch(cache_t *c, int layer, const int *experts, int n)
{
    cache_prefetch_from(c, CACHE_PF_ENGINE, layer, experts, n);
}

static int prefetch_some(cache_t *c, cache_pf_source src, int layer, const int *experts, const double *keep, int n);

void cache_prefetch_from(cache_t *c, cache_pf_source src, int layer, const int *experts, int n)
{
    prefetch_some(c, src, layer, experts, NULL, n);
}

int cache_prefetch_gated(cache_t *c, cache_pf_source src, int layer, const int *experts, const double *keep, int n)
{
    return prefetch_some(c, src, layer, experts, keep, n);
}

static int prefetch_some(cache_t *c, cache_pf_source src, int layer, const int *experts, const double *keep, int n)
{
    if ((int)src < 0 || src >= CACHE_PF_SOURCES) src = CACHE_PF_ENGINE;
    if (layer < 0 || layer >= c->n_layers || n <= 0) return 0;
    loader_read **reads = malloc((size_t)n * sizeof *reads);
    load_job **copies = malloc((size_t)n * sizeof *copies);
    if (!reads || !copies) { free(reads); free(copies); return 0; }
    int nr = 0, nc = 0;
    pthread_mutex_lock(&c->mu);
    uint64_t fresh = c->clock + 1;
    for (int i = 0; i < n; i++) {
        if (experts[i] < 0 || experts[i] >= c->n_experts) continue;
        int id = layer * c->n_experts + experts[i];
        if (c->map_dev[id] >= 0) continue; /* resident, loading, or failed: nothing to do */
        double vs;
        int v = pick_victim_score(c, c->dev, c->n_dev, fresh, &vs);
        if (v < 0) break;
        if (keep && c->dev[v].state == SLOT_READY && !(vs < keep[i])) continue; /* worth less than the victim */
        emoe_status st;
        emoe_err e;
        load_job *j = start_load(c, id, v, &st, &e);
        if (!j) break;
        c->st.prefetch_issued++;
        c->st.prefetch_by_source[src]++;
        c->dev[v].pf_src = (int)src;
        if (j->from_host) copies[nc++] = j;
        else reads[nr++] = &j->rd;
    }
    /* The forward pass's own prefetch is what it acquires next: ahead of the
     * speculative ones. */
    if (nr && src == CACHE_PF_ENGINE) loader_submit_urgent(c->loader, reads, nr);
    else if (nr) loader_submit(c->loader, reads, nr);
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < nc; i++) run_copy(copies[i]);
    free(reads);
    free(copies);
    return nr + nc;
}

void cache_set_evict_hint(cache_t *c, cache_evict_hint_fn fn, void *user)
{
    pthread_mutex_lock(&c->mu);
    c->hint = fn;
    c->hint_user = user;
    pthread_mutex_unlock(&c->mu);
}

void cache_set_miss_policy(cache_t *c, cache_miss_policy p)
{
    pthread_mutex_lock(&c->mu);
    c->cfg.miss_policy = p;
    pthread_mutex_unlock(&c->mu);
}

void cache_step_end(cache_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->st.steps++;
    c->st.stall_seconds += c->stall_cur;
    c->st.stall_last_step = c->stall_cur;
    if (c->stall_cur > c->st.stall_max_step) c->st.stall_max_step = c->stall_cur;
    c->stall_cur = 0;
    pthread_mutex_unlock(&c->mu);
}

void cache_get_stats(cache_t *c, cache_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    out->stall_seconds += c->stall_cur;
    if (c->inflight > 0) out->busy_seconds += emoe_now() - c->busy_t0;
    out->miss_policy = (int)c->cfg.miss_policy;
    pthread_mutex_unlock(&c->mu);
}

json_t *cache_stats_json(const cache_stats *s)
{
    json_t *o = json_object(), *hist = json_array(), *bounds = json_array(), *tiers = json_array();
    if (!o || !hist || !bounds || !tiers) goto fail;
    for (int i = 0; i < CACHE_LAT_BUCKETS; i++) json_array_append_new(hist, json_integer((json_int_t)s->lat_hist[i]));
    for (int i = 0; i < CACHE_LAT_BUCKETS - 1; i++) json_array_append_new(bounds, json_real(cache_lat_bounds_us[i]));
    static const char *names[3] = {"device", "host", "store"};
    for (int i = 0; i < 3; i++)
        json_array_append_new(tiers, json_pack("{s:s,s:I,s:I}", "tier", names[i], "hits", (json_int_t)s->hits[i],
                                               "misses", (json_int_t)s->misses[i]));
    json_object_set_new(o, "hits", json_integer((json_int_t)s->hits[0]));
    json_object_set_new(o, "misses", json_integer((json_int_t)s->misses[0]));
    json_object_set_new(o, "bytes_loaded", json_integer((json_int_t)s->bytes_read));
    json_object_set_new(o, "peak_resident_bytes", json_integer((json_int_t)s->peak_resident_bytes));
    json_object_set_new(o, "budget_bytes", json_integer((json_int_t)s->budget_bytes));
    json_object_set_new(o, "host_budget_bytes", json_integer((json_int_t)s->host_budget_bytes));
    json_object_set_new(o, "host_peak_resident_bytes", json_integer((json_int_t)s->host_peak_resident_bytes));
    json_object_set_new(o, "device_slots", json_integer(s->device_slots));
    json_object_set_new(o, "host_slots", json_integer(s->host_slots));
    json_object_set_new(o, "slot_bytes", json_integer((json_int_t)s->slot_bytes));
    json_object_set_new(o, "loads", json_integer((json_int_t)s->loads));
    json_object_set_new(o, "load_errors", json_integer((json_int_t)s->load_errors));
    json_object_set_new(o, "evictions", json_integer((json_int_t)s->evictions));
    json_object_set_new(o, "prefetch_issued", json_integer((json_int_t)s->prefetch_issued));
    json_object_set_new(o, "substitute_misses", json_integer((json_int_t)s->substitute_misses));
    json_object_set_new(o, "substituted", json_integer((json_int_t)s->substituted));
    json_object_set_new(o, "miss_policy", json_string(s->miss_policy == CACHE_MISS_SUBSTITUTE ? "substitute"
                                                      : s->miss_policy == CACHE_MISS_LOWBIT   ? "lowbit"
                                                                                              : "exact"));
    json_object_set_new(o, "lowbit_uses", json_integer((json_int_t)s->lowbit_uses));
    json_object_set_new(o, "lowbit_bytes", json_integer((json_int_t)s->lowbit_bytes));
    json_object_set_new(o, "loader", json_string(s->loader_mode ? s->loader_mode : "?"));
    json_object_set_new(o, "load_seconds", json_real(s->load_seconds));
    json_object_set_new(o, "stall_seconds", json_real(s->stall_seconds));
    json_object_set_new(o, "stall_max_step_seconds", json_real(s->stall_max_step));
    json_object_set_new(o, "stall_last_step_seconds", json_real(s->stall_last_step));
    json_object_set_new(o, "steps", json_integer((json_int_t)s->steps));
    json_object_set_new(o, "tiers", tiers);
    json_object_set_new(o, "load_latency_us_bounds", bounds);
    json_object_set_new(o, "load_latency_hist", hist);
    return o;
fail:
    json_decref(o);
    json_decref(hist);
    json_decref(bounds);
    json_decref(tiers);
    return NULL;
}

emoe_status cache_attach(eng_engine *e, const cache_cli_opts *o, cache_t **out, emoe_err *err)
{
    *out = NULL;
    char path[4096], lbpath[4096];
    uint64_t fp;
    quant_format fmt = QUANT_NONE, lbfmt = QUANT_Q4;
    cache_config cfg = {0};
    if (o->expert_format && quant_format_parse(o->expert_format, &fmt) != 0)
        return emoe_errf(err, EMOE_EINVAL, "--expert-format: '%s' is not bf16, q8 or q4", o->expert_format);
    if (o->miss_policy && cache_parse_miss_policy(o->miss_policy, &cfg.miss_policy) != 0)
        return emoe_errf(err, EMOE_EINVAL, "--miss-policy: '%s' is not exact, substitute or lowbit", o->miss_policy);
    if (o->lowbit_format && (quant_format_parse(o->lowbit_format, &lbfmt) != 0 || lbfmt == QUANT_NONE))
        return emoe_errf(err, EMOE_EINVAL, "lowbit format: '%s' is not q8 or q4", o->lowbit_format);
    /* q8/q4 experts and lowbit: the CPU, and the cuda backend's device tier
     * (packed GPU slots, engine/cuda/moe_quant.cu; the low-bit copy in GPU
     * memory through the slot memory's persist hook). */
    if (cfg.miss_policy == CACHE_MISS_LOWBIT && strcmp(eng_backend_name(e), "cpu") != 0 &&
        strcmp(eng_backend_name(e), "cuda") != 0)
        return emoe_errf(err, EMOE_EUNSUP, "miss policy lowbit runs on the cpu and cuda backends, not %s",
                         eng_backend_name(e));
    if (fmt != QUANT_NONE && strcmp(eng_backend_name(e), "cpu") != 0 && strcmp(eng_backend_name(e), "cuda") != 0)
        return emoe_errf(err, EMOE_EUNSUP, "quantized experts (--expert-format %s) run on the cpu and cuda backends, "
                         "not %s", quant_format_name(fmt), eng_backend_name(e));
    emoe_status st = store_find_or_build_format(e, o->store, (int)fmt, path, sizeof path, &fp, err);
    if (st) return st;
    if (cfg.miss_policy == CACHE_MISS_LOWBIT &&
        (st = store_find_or_build_format(e, NULL, (int)lbfmt, lbpath, sizeof lbpath, NULL, err)))
        return emoe_err_prefix(err, "lowbit miss policy");
    store_info info;
    if ((st = store_info_from_engine(e, &info, err))) return st;
    /* Percentages are of the dense (checkpoint dtype) experts' bytes. */
    uint64_t total = (uint64_t)info.n_layers * (uint64_t)info.n_experts * info.extent_stride;
    if ((st = cache_parse_budget(o->budget ? o->budget : "100%", total, "--budget", &cfg.device_budget, err))) return st;
    if (o->host_budget && (st = cache_parse_budget(o->host_budget, total, "--host-budget", &cfg.host_budget, err)))
        return st;
    cfg.expert_format = (int)fmt;
    if (cfg.miss_policy == CACHE_MISS_LOWBIT) {
        cfg.lowbit_store = lbpath;
        cfg.lowbit_format = (int)lbfmt;
    }
    cfg.loader.queue_depth = o->queue_depth;
    cfg.loader.fail_nth_read = o->fail_nth_read;
    cfg.slot_mem = (const cache_slot_mem *)eng_backend_slot_mem_format(e, (int)fmt); /* GPU memory on CUDA */
    if (!cfg.slot_mem && fmt != QUANT_NONE && strcmp(eng_backend_name(e), "cpu") != 0)
        return emoe_errf(err, EMOE_EUNSUP, "the %s backend has no memory for %s expert slots", eng_backend_name(e),
                         quant_format_name(fmt));
    if ((st = cache_open(path, fp, &cfg, out, err))) return st;
    eng_set_expert_provider(e, cache_provider(*out));
    return EMOE_OK;
}
