/*
 * config.c — the settings table, value parsers, INI loading (libinih), dump
 * and markdown generation. See config.h.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define OFF(f) offsetof(emoe_config, f)
#define SZ(f) sizeof(((emoe_config *)0)->f)
#define KiB 1024.0
#define MiB (1024.0 * 1024.0)
#define GiB (1024.0 * 1024.0 * 1024.0)
#define TiB (1024.0 * GiB)

static const cfg_entry table[] = {
    /* [server] */
    {"server", "host", CFG_T_STRING, OFF(server.host), SZ(server.host), 0, 0, NULL, "127.0.0.1", 0,
     "Address to listen on (numeric IPv4 or IPv6; \"0.0.0.0\" for all IPv4 interfaces)."},
    {"server", "port", CFG_T_INT, OFF(server.port), 0, 0, 65535, NULL, "8080", 0,
     "TCP port to listen on (0 = pick a free port and log it)."},
    {"server", "api_keys", CFG_T_LIST, OFF(server.api_keys), SZ(server.api_keys), 0, 0, NULL, "", 1,
     "Comma-separated API keys accepted as `Authorization: Bearer <key>`. Empty (and no api_key_file) = no authentication."},
    {"server", "api_key_file", CFG_T_STRING, OFF(server.api_key_file), SZ(server.api_key_file), 0, 0, NULL, "", 1,
     "File with one API key per line (blank lines and lines starting with # ignored). Exclusive with api_keys; re-read on SIGHUP."},
    {"server", "max_body", CFG_T_SIZE, OFF(server.max_body), 0, 1024, 256 * MiB, NULL, "4MiB", 1,
     "Largest request body accepted; larger bodies get 413 without being buffered."},
    {"server", "connection_timeout", CFG_T_SECONDS, OFF(server.connection_timeout), 0, 1, 3600, NULL, "60s", 0,
     "Idle time after which a connection that sends nothing is closed (slow clients)."},
    {"server", "request_timeout", CFG_T_SECONDS, OFF(server.request_timeout), 0, 0, 86400, NULL, "600s", 1,
     "Longest time a request may run from arrival to its last token; 0 = no limit. Expired requests finish with what they have."},
    {"server", "drain_timeout", CFG_T_SECONDS, OFF(server.drain_timeout), 0, 0, 3600, NULL, "30s", 1,
     "On SIGTERM: stop accepting, let in-flight requests finish for this long, then cancel the rest and exit."},
    {"server", "max_connections", CFG_T_INT, OFF(server.max_connections), 0, 1, 100000, NULL, "256", 0,
     "Simultaneous HTTP connections (each is served by its own thread, so a request can wait for tokens without blocking others)."},
    {"server", "max_connections_per_ip", CFG_T_INT, OFF(server.max_connections_per_ip), 0, 0, 100000, NULL, "128", 0,
     "Simultaneous connections from one client address; further ones are refused at accept. 0 = no limit (set 0, or at least the proxy's connection count, behind a reverse proxy)."},
    {"server", "request_read_timeout", CFG_T_SECONDS, OFF(server.request_read_timeout), 0, 0.1, 3600, NULL, "30s", 1,
     "Time a client has to send a whole request (head and body), counted from the accept (keep-alive: from the head), however slowly bytes trickle in; then the connection is closed (slowloris)."},
    {"server", "keepalive_timeout", CFG_T_SECONDS, OFF(server.keepalive_timeout), 0, 0.1, 3600, NULL, "5s", 1,
     "Time a keep-alive connection may sit idle after a response before its next request head arrives; then it is closed."},
    {"server", "cors_origins", CFG_T_LIST, OFF(server.cors_origins), SZ(server.cors_origins), 0, 0, NULL, "", 1,
     "Origins allowed by CORS (`*` or a comma-separated list). Empty = no CORS headers."},
    {"server", "replica_id", CFG_T_STRING, OFF(server.replica_id), SZ(server.replica_id), 0, 0, NULL, "", 0,
     "This replica's name, sent as `X-Emoe-Replica` on every response (printable ASCII, no spaces). Empty = hostname:port."},
    /* [model] */
    {"model", "path", CFG_T_STRING, OFF(model.path), SZ(model.path), 0, 0, NULL, "", 0,
     "Hugging Face model directory (config.json, safetensors, tokenizer.json). Required by `emoe serve`."},
    {"model", "served_name", CFG_T_STRING, OFF(model.served_name), SZ(model.served_name), 0, 0, NULL, "", 0,
     "Model id clients send in `model` and that /v1/models lists. Empty = the directory's base name."},
    {"model", "context_length", CFG_T_INT, OFF(model.context_length), 0, 0, 1 << 24, NULL, "0", 0,
     "Longest sequence (prompt + output) in tokens; 0 = the model's max_position_embeddings."},
    {"model", "max_prompt_bytes", CFG_T_SIZE, OFF(model.max_prompt_bytes), 0, 0, 1024 * MiB, NULL, "0", 0,
     "Prompts (and rendered chat templates) longer than this are refused with 400 before tokenizing. 0 = automatic: the context length x the longest token's bytes x 4, which no prompt that fits the context exceeds."},
    /* [engine] */
    {"engine", "threads", CFG_T_INT, OFF(engine.threads), 0, 0, 1024, NULL, "0", 0,
     "Worker threads for matrix work; 0 = the number of physical cores this process may use."},
    {"engine", "backend", CFG_T_ENUM, OFF(engine.backend), 0, 0, 0, "cpu|auto|cuda", "cpu", 0,
     "Compute backend: `cpu` (float32 reference), `cuda` (fails at start without a device), `auto` (CUDA if present). Default cpu until make test-gpu passes on a GPU."},
    {"engine", "kv_dtype", CFG_T_ENUM, OFF(engine.kv_dtype), 0, 0, 0, "f32|f16|bf16", "f32", 0,
     "Element type of the KV cache: `f32` (the reference), or `f16`/`bf16` (half the memory, rounded; not yet measured to pay). The cuda backend takes f32 or bf16."},
    {"engine", "dense_format", CFG_T_ENUM, OFF(engine.dense_format), 0, 0, 0, "native|q8", "native", 0,
     "Dense matmul weights (attention q/k/v/o, shared expert, lm_head) on the cpu backend: `native` (the checkpoint's dtype, the reference) or `q8` (quantized at start to q8 blocks, ~0.53x their bf16 bytes, integer kernels; embeddings, norms and router stay native). docs/quant.md."},
    {"engine", "cuda_graphs", CFG_T_BOOL, OFF(engine.cuda_graphs), 0, 0, 1, NULL, "true", 0,
     "CUDA: run decode steps (up to 32 rows) as CUDA graph replays when every expert is resident in GPU memory (docs/cuda.md). false: always launch kernel by kernel."},
    /* [scheduler] */
    {"scheduler", "policy", CFG_T_ENUM, OFF(scheduler.policy), 0, 0, 0, "fifo|slo", "slo", 0,
     "Queue order. `slo`: least TTFT slack first, then priority, then arrival; preemption, TPOT guard, admission control (docs/api.md). `fifo`: first come, first served."},
    {"scheduler", "max_running", CFG_T_INT, OFF(scheduler.max_running), 0, 1, 4096, NULL, "16", 1,
     "Requests decoded together (the continuous batch)."},
    {"scheduler", "max_queued", CFG_T_INT, OFF(scheduler.max_queued), 0, 0, 1000000, NULL, "256", 1,
     "Requests waiting for a slot; beyond this new requests get 429 with Retry-After."},
    {"scheduler", "max_batch_tokens", CFG_T_INT, OFF(scheduler.max_batch_tokens), 0, 1, 1 << 20, NULL, "512", 1,
     "Tokens per engine step (decode tokens plus prefill chunks)."},
    {"scheduler", "prefill_chunk", CFG_T_INT, OFF(scheduler.prefill_chunk), 0, 1, 1 << 20, NULL, "256", 1,
     "Longest prefill piece of one request per step, so long prompts do not stall running decodes."},
    {"scheduler", "max_tokens_default", CFG_T_INT, OFF(scheduler.max_tokens_default), 0, 0, 1 << 24, NULL, "0", 1,
     "Output tokens when a request sets no max_tokens; 0 = up to the context length."},
    {"scheduler", "on_unattainable", CFG_T_ENUM, OFF(scheduler.on_unattainable), 0, 0, 0, "reject|best_effort", "reject", 0,
     "policy = slo, a TTFT SLO that cannot be met behind the requests the policy serves first: `reject` = 429 `slo_unattainable` + Retry-After; `best_effort` = serve without a deadline."},
    /* [cache] */
    {"cache", "device_budget", CFG_T_BUDGET, OFF(cache.device_budget), 0, 0, 64 * TiB, NULL, "100%", 0,
     "Accelerator memory for routed experts: bytes (20GiB) or a percentage of all experts' bytes (25%). Below 100% the server runs through the tiered expert cache."},
    {"cache", "host_budget", CFG_T_BUDGET, OFF(cache.host_budget), 0, 0, 64 * TiB, NULL, "0", 0,
     "Pinned host memory tier for experts: bytes or a percentage of all experts' bytes; 0 = no host tier."},
    {"cache", "miss_policy", CFG_T_ENUM, OFF(cache.miss_policy), 0, 0, 0, "exact|substitute|lowbit", "exact", 0,
     "On an expert-cache miss: `exact` loads it; `substitute` uses a resident expert (approximate); `lowbit` computes with a resident q4 copy of it (beside the budget) while it loads."},
    {"cache", "store_path", CFG_T_STRING, OFF(cache.store_path), SZ(cache.store_path), 0, 0, NULL, "", 0,
     "Expert store the cache reads from (`emoe pack`), built if missing. Empty = <model dir>/experts.emoe (~/.cache/emoe if the model folder is read-only)."},
    {"cache", "expert_format", CFG_T_ENUM, OFF(cache.expert_format), 0, 0, 0, "bf16|q8|q4", "bf16", 0,
     "Routed experts as in the checkpoint (`bf16`) or quantized `q8` / `q4` (docs/quant.md; cpu and cuda backends), from DIR/experts.q8.emoe etc. built on first use; budget % stay % of bf16 bytes."},
    {"cache", "lowbit_format", CFG_T_ENUM, OFF(cache.lowbit_format), 0, 0, 0, "q4|q8", "q4", 0,
     "Format of the resident low-bit copy of every expert used by miss_policy = lowbit."},
    {"cache", "io_queue_depth", CFG_T_INT, OFF(cache.io_queue_depth), 0, 1, 4096, NULL, "16", 0,
     "Expert reads handed to the kernel at once (io_uring queue depth); more wait in the loader's queue, where reads the engine waits for go first. Near the disk's knee is best (docs/performance.md: 16 on the development VM's virtio disk)."},
    /* [predictor] */
    {"predictor", "enabled", CFG_T_BOOL, OFF(predictor.enabled), 0, 0, 1, NULL, "true", 0,
     "Prefetch each request's experts as predicted from past requests of its task, before its prefill. Only with a [cache] device_budget below 100%."},
    {"predictor", "plan_every", CFG_T_INT, OFF(predictor.plan_every), 0, 1, 1000000, NULL, "8", 0,
     "Re-plan the expert prefetch set every N prompts of a task (the plan is reused in between)."},
    {"predictor", "prefetch_share", CFG_T_INT, OFF(predictor.prefetch_share), 0, 0, 100, NULL, "50", 0,
     "Percent of the device slots the plan selects and prefetches at admission (0 = no prefetch, eviction order only)."},
    {"predictor", "insensitive_tasks", CFG_T_LIST, OFF(predictor.insensitive_tasks), SZ(predictor.insensitive_tasks), 0, 0, NULL, "", 0,
     "Comma-separated task names that skip per-task prediction (insensitive to routing accuracy): they get the global popular set."},
    {"predictor", "max_tasks", CFG_T_INT, OFF(predictor.max_tasks), 0, 1, 65536, NULL, "64", 0,
     "Tasks whose statistics are kept (bounded memory; the least recently used task is forgotten first)."},
    {"predictor", "evict_hint", CFG_T_BOOL, OFF(predictor.evict_hint), 0, 0, 1, NULL, "true", 0,
     "Evict by the predictor's order (evict_order: the forecast by default, the visit order, or the expected reuse distance of `emoe replay --policy predictor`); off = LRU."},
    {"predictor", "evict_order", CFG_T_ENUM, OFF(predictor.evict_order), 0, 0, 0, "visit|reuse|forecast", "forecast", 0,
     "With evict_hint: `visit` evicts the expert whose next use is expected last on the engine's cyclic walk over the layers (layers to its layer's next visit plus L (1 - P) / P, P an EWMA over the layer's visits of its use by the batch, raised by lookahead predictions); speculative loads only evict an expert expected to be needed at least a step later. `reuse` = the tracker's per-token reuse distance (the order before issue 11's third session). `forecast` (the default) = the visit order with P replaced by a learned estimate of use at the layer's next visit (predictor/forecast.h: online logistic regression on the layer's recent use and the path memory's vote for the next step, trained at every visit on the union of the batch's rows; ~4% fewer loads than `visit` relative to OPT on the issue-11 benchmark, docs/performance.md; skipped when every expert fits)."},
    {"predictor", "next_step_min_use", CFG_T_INT, OFF(predictor.next_step_min_use), 0, 0, 100, NULL, "0", 0,
     "With evict_order = visit: when a layer's visit ends, load its experts whose use at the next step's visit is at least this likely (percent; at most the layer's share of the slots, only in place of an expert needed a step later). 0 = off (the default: on the issue-11 benchmark it only added loads, docs/performance.md)."},
    {"predictor", "lookahead_layers", CFG_T_INT, OFF(predictor.lookahead_layers), 0, 0, 8, NULL, "1", 0,
     "While layer l is routed, prefetch the experts predicted for layers l+1..l+d: their routers applied to layer l's input (CPU backend), else the predictor's cross-layer transitions. 0 = off."},
    {"predictor", "task_profile", CFG_T_STRING, OFF(predictor.task_profile), SZ(predictor.task_profile), 0, 0, NULL, "", 1,
     "Task profile written by `emoe profile` (per-task miss policy, insensitive tasks, expected output length); re-read on SIGHUP (a bad file keeps the old one). Empty = none."},
    {"predictor", "trace_path", CFG_T_STRING, OFF(predictor.trace_path), SZ(predictor.trace_path), 0, 0, NULL, "", 0,
     "Append the routing of every served request to this file in the trace format, for `emoe replay`. Empty = off."},
    {"predictor", "acquire_log", CFG_T_STRING, OFF(predictor.acquire_log), SZ(predictor.acquire_log), 0, 0, NULL, "", 0,
     "Diagnostic: append every expert the engine acquires, one line per engine step (`layer:expert ...` in acquire order), for tools/step_bound.py (the fewest loads any eviction order could do). Empty = off."},
    /* [log] */
    {"log", "level", CFG_T_ENUM, OFF(log.level), 0, 0, 0, "error|warn|info|debug", "info", 1,
     "Log level."},
    {"log", "log_prompts", CFG_T_BOOL, OFF(log.log_prompts), 0, 0, 1, NULL, "false", 1,
     "Log prompt and output text (off: request logs carry ids, sizes and timings only)."},
};

#define N_ENTRIES (sizeof table / sizeof table[0])

const cfg_entry *cfg_table(size_t *n)
{
    if (n) *n = N_ENTRIES;
    return table;
}

const cfg_entry *cfg_find(const char *section, const char *key)
{
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (!strcmp(table[i].section, section) && !strcmp(table[i].key, key)) return &table[i];
    return NULL;
}

static int section_known(const char *section)
{
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (!strcmp(table[i].section, section)) return 1;
    return 0;
}

/* ---- value parsers ---- */

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

/* Parses a non-negative decimal number (digits, optional fraction) at s; sets
 * *end. Refuses signs, exponents, hex, inf and nan so "1e99" can't sneak in. */
static int parse_unsigned_decimal(const char *s, double *out, const char **end)
{
    const char *p = s;
    if (!isdigit((unsigned char)*p)) return -1;
    while (isdigit((unsigned char)*p)) p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return -1;
        while (isdigit((unsigned char)*p)) p++;
    }
    if (p - s > 40) return -1;
    char buf[64];
    memcpy(buf, s, (size_t)(p - s));
    buf[p - s] = 0;
    *out = strtod(buf, NULL);
    *end = p;
    return 0;
}

static int suffix_eq(const char *a, size_t n, const char *b)
{
    return strlen(b) == n && strncasecmp(a, b, n) == 0;
}

int cfg_parse_size(const char *s, uint64_t *out)
{
    double v;
    const char *p;
    s = skip_ws(s);
    if (parse_unsigned_decimal(s, &v, &p)) return -1;
    p = skip_ws(p);
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    double mul;
    if (n == 0 || suffix_eq(p, n, "b")) mul = 1;
    else if (suffix_eq(p, n, "k") || suffix_eq(p, n, "kib")) mul = KiB;
    else if (suffix_eq(p, n, "m") || suffix_eq(p, n, "mib")) mul = MiB;
    else if (suffix_eq(p, n, "g") || suffix_eq(p, n, "gib")) mul = GiB;
    else if (suffix_eq(p, n, "t") || suffix_eq(p, n, "tib")) mul = TiB;
    else if (suffix_eq(p, n, "kb")) mul = 1e3;
    else if (suffix_eq(p, n, "mb")) mul = 1e6;
    else if (suffix_eq(p, n, "gb")) mul = 1e9;
    else if (suffix_eq(p, n, "tb")) mul = 1e12;
    else return -1;
    double b = v * mul;
    if (b != floor(b) || b >= 18446744073709551616.0) return -1;
    *out = (uint64_t)b;
    return 0;
}

int cfg_parse_seconds(const char *s, double *out)
{
    double v;
    const char *p;
    s = skip_ws(s);
    if (parse_unsigned_decimal(s, &v, &p)) return -1;
    p = skip_ws(p);
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    if (n == 0 || suffix_eq(p, n, "s")) *out = v;
    else if (suffix_eq(p, n, "ms")) *out = v / 1000.0;
    else if (suffix_eq(p, n, "m") || suffix_eq(p, n, "min")) *out = v * 60.0;
    else if (suffix_eq(p, n, "h")) *out = v * 3600.0;
    else return -1;
    return 0;
}

int cfg_parse_bool(const char *s, int *out)
{
    static const char *t[] = {"1", "true", "yes", "on"}, *f[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i])) { *out = 1; return 0; }
        if (!strcasecmp(s, f[i])) { *out = 0; return 0; }
    }
    return -1;
}

static int parse_int(const char *s, long long *out)
{
    s = skip_ws(s);
    const char *p = s;
    if (*p == '-' || *p == '+') p++;
    if (!isdigit((unsigned char)*p)) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno) return -1;
    end = (char *)skip_ws(end);
    if (*end) return -1;
    *out = v;
    return 0;
}

static int enum_index(const char *names, const char *s)
{
    int idx = 0;
    const char *p = names;
    size_t n = strlen(s);
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, s, n)) return idx;
        idx++;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

static void enum_name(const char *names, int idx, char *buf, size_t n)
{
    const char *p = names;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) { snprintf(buf, n, "?"); return; }
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    snprintf(buf, n, "%.*s", (int)len, p);
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

emoe_status cfg_set(emoe_config *c, const char *section, const char *key,
                    const char *value, const char *where, emoe_err *err)
{
    if (!where) where = "config";
    if (!strcmp(section, "tasks")) return cfg_tasks_set(c, key, value, where, err);
    const cfg_entry *e = cfg_find(section, key);
    if (!e) {
        if (!section_known(section))
            return emoe_errf(err, EMOE_EINVAL, "%s: unknown section [%s] (key '%s')", where, section, key);
        return emoe_errf(err, EMOE_EINVAL, "%s: unknown key '%s' in section [%s]", where, key, section);
    }
    char *base = (char *)c;
    switch (e->type) {
    case CFG_T_BOOL: {
        int b;
        if (cfg_parse_bool(value, &b))
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: '%s' is not a boolean (true/false/yes/no/on/off/1/0)",
                             where, section, key, value);
        *(int *)(base + e->offset) = b;
        break;
    }
    case CFG_T_INT: {
        long long v;
        if (parse_int(value, &v))
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: '%s' is not an integer", where, section, key, value);
        if ((double)v < e->min || (double)v > e->max)
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: %lld is out of range [%.0f, %.0f]",
                             where, section, key, v, e->min, e->max);
        *(int *)(base + e->offset) = (int)v;
        break;
    }
    case CFG_T_SECONDS: {
        double v;
        if (cfg_parse_seconds(value, &v))
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: '%s' is not a duration (e.g. 30, 30s, 500ms, 2m)",
                             where, section, key, value);
        if (v < e->min || v > e->max)
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: %gs is out of range [%g, %g] seconds",
                             where, section, key, v, e->min, e->max);
        *(double *)(base + e->offset) = v;
        break;
    }
    case CFG_T_SIZE: {
        uint64_t v;
        if (cfg_parse_size(value, &v))
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: '%s' is not a size (e.g. 4096, 64KiB, 512MiB, 20GiB)",
                             where, section, key, value);
        if ((double)v < e->min || (double)v > e->max)
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: %llu bytes is out of range [%.0f, %.0f]",
                             where, section, key, (unsigned long long)v, e->min, e->max);
        *(uint64_t *)(base + e->offset) = v;
        break;
    }
    case CFG_T_BUDGET: {
        cfg_budget b = {0};
        const char *s = skip_ws(value);
        size_t n = strlen(s);
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
        if (n && s[n - 1] == '%') {
            char num[64];
            const char *end;
            if (n - 1 >= sizeof num) goto bad_budget;
            memcpy(num, s, n - 1);
            num[n - 1] = 0;
            size_t m = n - 1;
            while (m && (num[m - 1] == ' ' || num[m - 1] == '\t')) num[--m] = 0;
            if (parse_unsigned_decimal(num, &b.pct, &end) || *end) goto bad_budget;
            if (b.pct > 100.0)
                return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: %g%% is out of range [0%%, 100%%]",
                                 where, section, key, b.pct);
            b.is_pct = 1;
        } else {
            if (cfg_parse_size(value, &b.bytes)) goto bad_budget;
            if ((double)b.bytes > e->max)
                return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: %llu bytes is out of range [0, %.0f]",
                                 where, section, key, (unsigned long long)b.bytes, e->max);
        }
        *(cfg_budget *)(base + e->offset) = b;
        break;
    bad_budget:
        return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: '%s' is not a size or a percentage (e.g. 20GiB, 25%%)",
                         where, section, key, value);
    }
    case CFG_T_STRING:
    case CFG_T_LIST:
        if (strlen(value) >= e->size)
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: value is %zu bytes, longer than the limit %zu",
                             where, section, key, strlen(value), e->size - 1);
        if (has_ctl(value))
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: value contains control characters", where, section, key);
        snprintf(base + e->offset, e->size, "%s", value);
        break;
    case CFG_T_ENUM: {
        int idx = enum_index(e->enum_names, value);
        if (idx < 0)
            return emoe_errf(err, EMOE_EINVAL, "%s: [%s] %s: '%s' is not one of %s", where, section, key, value,
                             e->enum_names);
        *(int *)(base + e->offset) = idx;
        break;
    }
    }
    return EMOE_OK;
}

void cfg_init(emoe_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_ENTRIES; i++) {
        emoe_err err;
        if (cfg_set(c, table[i].section, table[i].key, table[i].def, "default", &err) != EMOE_OK) {
            /* A broken table is a programming error; the test suite catches it. */
            fprintf(stderr, "emoe: internal error: %s\n", err.msg);
        }
    }
}

/* ---- INI loading ---- */

emoe_status cfg_load_file(emoe_config *c, const char *path, emoe_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f) return emoe_errf(err, EMOE_EIO, "%s: cannot open: %s", path, strerror(errno));
    /* Read it whole (NUL bytes are refused here), then parse it in one pass. */
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap + 1);
    if (!text) { fclose(f); return emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", path); }
    len = fread(text, 1, cap + 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) { free(text); return emoe_errf(err, EMOE_EIO, "%s: read error", path); }
    if (len > cap) { free(text); return emoe_errf(err, EMOE_EINVAL, "%s: larger than 1 MiB", path); }
    text[len] = 0;
    int line = 1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == 0) {
            free(text);
            return emoe_errf(err, EMOE_EINVAL, "%s:%d: NUL byte in file", path, line);
        }
        if (text[i] == '\n') line++;
    }
    /* config/ini_parse.c: every error in one pass, duplicates, inline comments. */
    emoe_status st = cfg_ini_apply(c, path, text, err);
    free(text);
    return st;
}

emoe_status cfg_set_override(emoe_config *c, const char *assignment, emoe_err *err)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq)
        return emoe_errf(err, EMOE_EINVAL, "--set '%s': expected section.key=value", assignment);
    char section[64], key[64];
    size_t sl = (size_t)(dot - assignment), kl = (size_t)(eq - dot - 1);
    if (sl == 0 || kl == 0 || sl >= sizeof section || kl >= sizeof key)
        return emoe_errf(err, EMOE_EINVAL, "--set '%s': expected section.key=value", assignment);
    memcpy(section, assignment, sl);
    section[sl] = 0;
    memcpy(key, dot + 1, kl);
    key[kl] = 0;
    return cfg_set(c, section, key, eq + 1, "--set", err);
}

typedef struct key_check {
    int n;
    int bad;
} key_check;

static int check_key_word(const char *w, size_t len, void *user)
{
    key_check *k = user;
    k->n++;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)w[i] <= ' ' || (unsigned char)w[i] >= 0x7f) { k->bad = 1; return 1; }
    return 0;
}

emoe_status cfg_validate(const emoe_config *c, emoe_err *err)
{
    if (c->server.api_keys[0] && c->server.api_key_file[0])
        return emoe_errf(err, EMOE_EINVAL, "[server] api_keys and api_key_file are exclusive; set one");
    key_check k = {0};
    cfg_list_each(c->server.api_keys, check_key_word, &k);
    if (k.bad) return emoe_errf(err, EMOE_EINVAL, "[server] api_keys: keys must be printable ASCII without spaces");
    if (c->scheduler.prefill_chunk > c->scheduler.max_batch_tokens)
        return emoe_errf(err, EMOE_EINVAL, "[scheduler] prefill_chunk (%d) is larger than max_batch_tokens (%d)",
                         c->scheduler.prefill_chunk, c->scheduler.max_batch_tokens);
    if (c->scheduler.max_running > c->scheduler.max_batch_tokens)
        return emoe_errf(err, EMOE_EINVAL,
                         "[scheduler] max_running (%d) is larger than max_batch_tokens (%d): decodes could not all fit a step",
                         c->scheduler.max_running, c->scheduler.max_batch_tokens);
    if (!c->server.host[0]) return emoe_errf(err, EMOE_EINVAL, "[server] host is empty");
    k = (key_check){0};
    check_key_word(c->server.replica_id, strlen(c->server.replica_id), &k);
    if (k.bad) return emoe_errf(err, EMOE_EINVAL, "[server] replica_id: must be printable ASCII without spaces");
    return EMOE_OK;
}

/* ---- output ---- */

void cfg_format_value(const emoe_config *c, const cfg_entry *e, char *buf, size_t n)
{
    const char *base = (const char *)c;
    switch (e->type) {
    case CFG_T_BOOL: snprintf(buf, n, "%s", *(const int *)(base + e->offset) ? "true" : "false"); break;
    case CFG_T_INT: snprintf(buf, n, "%d", *(const int *)(base + e->offset)); break;
    case CFG_T_SECONDS: snprintf(buf, n, "%gs", *(const double *)(base + e->offset)); break;
    case CFG_T_SIZE: {
        uint64_t v = *(const uint64_t *)(base + e->offset);
        if (v && v % (1ull << 30) == 0) snprintf(buf, n, "%lluGiB", (unsigned long long)(v >> 30));
        else if (v && v % (1ull << 20) == 0) snprintf(buf, n, "%lluMiB", (unsigned long long)(v >> 20));
        else if (v && v % (1ull << 10) == 0) snprintf(buf, n, "%lluKiB", (unsigned long long)(v >> 10));
        else snprintf(buf, n, "%llu", (unsigned long long)v);
        break;
    }
    case CFG_T_BUDGET: {
        const cfg_budget *b = (const cfg_budget *)(base + e->offset);
        if (b->is_pct) snprintf(buf, n, "%g%%", b->pct);
        else {
            cfg_entry tmp = *e;
            tmp.type = CFG_T_SIZE;
            tmp.offset = e->offset + offsetof(cfg_budget, bytes);
            cfg_format_value(c, &tmp, buf, n);
        }
        break;
    }
    case CFG_T_STRING:
    case CFG_T_LIST: snprintf(buf, n, "%s", base + e->offset); break;
    case CFG_T_ENUM: enum_name(e->enum_names, *(const int *)(base + e->offset), buf, n); break;
    }
}

static const char *type_name(const cfg_entry *e)
{
    switch (e->type) {
    case CFG_T_BOOL: return "bool";
    case CFG_T_INT: return "integer";
    case CFG_T_SECONDS: return "duration";
    case CFG_T_SIZE: return "size";
    case CFG_T_BUDGET: return "size or %";
    case CFG_T_STRING: return "string";
    case CFG_T_LIST: return "list";
    case CFG_T_ENUM: return "enum";
    }
    return "?";
}

static void bounds_text(const cfg_entry *e, char *buf, size_t n)
{
    switch (e->type) {
    case CFG_T_INT: snprintf(buf, n, "%.0f .. %.0f", e->min, e->max); break;
    case CFG_T_SECONDS: snprintf(buf, n, "%gs .. %gs", e->min, e->max); break;
    case CFG_T_SIZE: snprintf(buf, n, "%.0f .. %.0f bytes", e->min, e->max); break;
    case CFG_T_BUDGET: snprintf(buf, n, "0 .. %.0f bytes, or 0%% .. 100%%", e->max); break;
    case CFG_T_ENUM: {
        size_t k = 0;
        for (const char *p = e->enum_names; *p && k + 4 < n; p++) {
            if (*p == '|') { buf[k++] = ' '; buf[k++] = '\\'; buf[k++] = '|'; buf[k++] = ' '; }
            else buf[k++] = *p;
        }
        buf[k] = 0;
        break;
    }
    case CFG_T_BOOL: snprintf(buf, n, "true \\| false"); break;
    case CFG_T_STRING: snprintf(buf, n, "up to %zu bytes", e->size - 1); break;
    case CFG_T_LIST: snprintf(buf, n, "comma-separated, up to %zu bytes", e->size - 1); break;
    }
}

void cfg_dump(const emoe_config *c, FILE *f)
{
    const char *sec = "";
    char val[CFG_LIST_MAX + 16];
    fprintf(f, "; emoe effective configuration (defaults included)\n");
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry *e = &table[i];
        if (strcmp(sec, e->section)) {
            fprintf(f, "\n[%s]\n", e->section);
            sec = e->section;
        }
        cfg_format_value(c, e, val, sizeof val);
        fprintf(f, "; %s%s\n%s = %s\n", e->help, e->reloadable ? " (reloadable)" : "", e->key, val);
    }
    cfg_tasks_dump(c, f);
}

void cfg_markdown(FILE *f)
{
    fprintf(f, "# Configuration\n\n"
               "<!-- Generated by `emoe config --markdown > docs/configuration.md`; do not edit by hand. -->\n\n"
               "emoe reads an INI file (`emoe serve --config FILE`); every key can also be set on the\n"
               "command line with `--set section.key=value`, which wins over the file. Unknown sections\n"
               "and keys, malformed values, values out of range, a key set twice and an unclosed\n"
               "`[section` are errors that name the file, line and key; every error in the file is\n"
               "reported at once. Comments: lines starting with `;` or `#`, and inline after whitespace\n"
               "(`port = 8080 # http`). `emoe config --check --config FILE` checks syntax and values;\n"
               "`emoe serve --check-config --config FILE` runs the same check and then opens the paths the\n"
               "file names (the model's config.json, the API key file); both exit 0 when valid.\n"
               "`emoe config --dump [--config FILE]` prints the effective configuration.\n\n"
               "Value syntax: sizes take `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` (binary) or\n"
               "`KB`, `MB`, `GB`, `TB` (decimal) suffixes; durations take `ms`, `s`, `m`, `h`; booleans\n"
               "are `true/false/yes/no/on/off/1/0`; lists are comma-separated. The expert-cache budgets\n"
               "also accept a percentage of the model's total routed-expert bytes (`25%%`).\n\n"
               "Settings marked *reloadable* take effect on `SIGHUP` (`systemctl reload emoe`); the\n"
               "others need a restart (a reload that changes them logs a warning and keeps the old value).\n"
               "A reload with an invalid file keeps the running configuration.\n");
    const char *sec = "";
    char bounds[256], def[256];
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry *e = &table[i];
        if (strcmp(sec, e->section)) {
            fprintf(f, "\n## [%s]\n\n| key | type | bounds | default | reloadable | description |\n"
                       "| --- | --- | --- | --- | --- | --- |\n", e->section);
            sec = e->section;
        }
        bounds_text(e, bounds, sizeof bounds);
        snprintf(def, sizeof def, "%s", e->def[0] ? e->def : "(empty)");
        fprintf(f, "| `%s` | %s | %s | `%s` | %s | %s |\n", e->key, type_name(e), bounds, def,
                e->reloadable ? "yes" : "no", e->help);
    }
    cfg_tasks_markdown(f);
}

int cfg_apply_reloadable(emoe_config *to, const emoe_config *from, char *changed_fixed, size_t n)
{
    int changed = 0;
    size_t used = 0;
    if (changed_fixed && n) changed_fixed[0] = 0;
    if (memcmp(&to->tasks, &from->tasks, sizeof to->tasks)) {
        to->tasks = from->tasks;
        changed++;
    }
    char a[CFG_LIST_MAX + 16], b[CFG_LIST_MAX + 16];
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry *e = &table[i];
        cfg_format_value(to, e, a, sizeof a);
        cfg_format_value(from, e, b, sizeof b);
        if (!strcmp(a, b)) continue;
        if (e->reloadable) {
            size_t sz;
            switch (e->type) {
            case CFG_T_BOOL: case CFG_T_INT: case CFG_T_ENUM: sz = sizeof(int); break;
            case CFG_T_SECONDS: sz = sizeof(double); break;
            case CFG_T_SIZE: sz = sizeof(uint64_t); break;
            case CFG_T_BUDGET: sz = sizeof(cfg_budget); break;
            default: sz = e->size; break;
            }
            memcpy((char *)to + e->offset, (const char *)from + e->offset, sz);
            changed++;
        } else if (changed_fixed && n) {
            int w = snprintf(changed_fixed + used, n - used, "%s%s.%s", used ? ", " : "", e->section, e->key);
            if (w > 0 && used + (size_t)w < n) used += (size_t)w;
        }
    }
    return changed;
}

uint64_t cfg_budget_bytes(const cfg_budget *b, uint64_t total)
{
    if (!b->is_pct) return b->bytes;
    return (uint64_t)((double)total * b->pct / 100.0);
}

int cfg_list_each(const char *list, int (*fn)(const char *word, size_t len, void *user), void *user)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) break;
        const char *s = p;
        while (*p && *p != ',') p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (e > s) {
            int rc = fn(s, (size_t)(e - s), user);
            if (rc) return rc;
        }
    }
    return 0;
}

typedef struct has_ctx {
    const char *w;
    size_t n;
} has_ctx;

static int has_fn(const char *w, size_t len, void *user)
{
    has_ctx *h = user;
    return len == h->n && !memcmp(w, h->w, len);
}

int cfg_list_has(const char *list, const char *word)
{
    has_ctx h = {word, strlen(word)};
    return cfg_list_each(list, has_fn, &h) ? 1 : 0;
}

typedef struct keys_out {
    char *out;
    size_t n, used;
    int overflow;
} keys_out;

static int add_key(const char *w, size_t len, void *user)
{
    keys_out *k = user;
    if (k->used + len + 2 > k->n) { k->overflow = 1; return 1; }
    memcpy(k->out + k->used, w, len);
    k->used += len;
    k->out[k->used++] = '\n';
    k->out[k->used] = 0;
    return 0;
}

emoe_status cfg_read_api_keys(const emoe_config *c, char *out, size_t n, emoe_err *err)
{
    keys_out k = {out, n, 0, 0};
    if (n) out[0] = 0;
    if (!c->server.api_key_file[0]) {
        cfg_list_each(c->server.api_keys, add_key, &k);
        if (k.overflow) return emoe_errf(err, EMOE_EINVAL, "[server] api_keys: too many keys");
        return EMOE_OK;
    }
    FILE *f = fopen(c->server.api_key_file, "r");
    if (!f) return emoe_errf(err, EMOE_EIO, "[server] api_key_file %s: %s", c->server.api_key_file, strerror(errno));
    char line[1024];
    int lineno = 0;
    emoe_status st = EMOE_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
            line[--len] = 0;
        const char *s = skip_ws(line);
        if (!*s || *s == '#') continue;
        for (const char *p = s; *p; p++)
            if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f) {
                st = emoe_errf(err, EMOE_EINVAL, "%s:%d: API keys must be printable ASCII without spaces",
                               c->server.api_key_file, lineno);
                goto done;
            }
        if (add_key(s, strlen(s), &k)) {
            st = emoe_errf(err, EMOE_EINVAL, "%s: too many keys", c->server.api_key_file);
            goto done;
        }
    }
    if (!out[0]) st = emoe_errf(err, EMOE_EINVAL, "%s: no API keys in file", c->server.api_key_file);
done:
    fclose(f);
    return st;
}
