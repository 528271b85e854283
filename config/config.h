/*
 * config.h — every emoe setting in one table (section, key, type, bounds,
 * default, help, reloadable), a typed struct that holds the effective values,
 * an INI loader (libinih) and `section.key=value` overrides.
 *
 * Design: the table is the single source of truth. Defaults are strings in the
 * table and go through the same parser as the file, so a default can never be
 * out of its own bounds unnoticed (cfg_init checks them). The struct is plain
 * data (fixed-size strings), so a reload builds a complete new struct and the
 * caller copies it over the old one under its own lock.
 */
#ifndef EMOE_CONFIG_H
#define EMOE_CONFIG_H

#include <stdint.h>
#include <stdio.h>
#include "engine/common.h"

#define CFG_STR_MAX 1024
#define CFG_LIST_MAX 4096

/* A byte budget: absolute bytes or a percentage of some total (the experts'
 * total bytes for the expert-cache budgets). */
typedef struct cfg_budget {
    int is_pct;       /* 1: pct is set, bytes unused */
    double pct;       /* 0..100 */
    uint64_t bytes;
} cfg_budget;

typedef enum cfg_miss_policy {
    CFG_MISS_EXACT = 0,
    CFG_MISS_SUBSTITUTE = 1,
    CFG_MISS_LOWBIT = 2,
} cfg_miss_policy;

typedef enum cfg_sched_policy {
    CFG_SCHED_FIFO = 0,
    CFG_SCHED_SLO = 1,
} cfg_sched_policy;

/* Per-task defaults: the [tasks] section, keys `<task>.<field>` (config/config_tasks.c). */
#define CFG_MAX_TASKS 32
typedef struct cfg_task {
    char name[64];
    double ttft_ms, tpot_ms;   /* 0 = none */
    int priority, has_priority;
    int output_tokens;         /* expected output length prior; 0 = unknown */
} cfg_task;

typedef struct emoe_config {
    struct {
        char host[CFG_STR_MAX];
        int port;
        char api_keys[CFG_LIST_MAX];      /* comma-separated; empty = no auth */
        char api_key_file[CFG_STR_MAX];   /* one key per line; exclusive with api_keys */
        uint64_t max_body;                /* bytes */
        double connection_timeout;        /* seconds of inactivity before a connection is closed */
        double request_timeout;           /* seconds a request may run in total; 0 = none */
        double drain_timeout;             /* seconds SIGTERM waits for in-flight requests */
        int max_connections;
        int max_connections_per_ip;       /* 0 = no per-address limit */
        double request_read_timeout;      /* seconds to receive a whole request (head + body) */
        double keepalive_timeout;         /* seconds a keep-alive connection may sit idle */
        char cors_origins[CFG_LIST_MAX];  /* empty = no CORS headers; "*" or a list */
        char replica_id[CFG_STR_MAX];     /* X-Emoe-Replica; empty = hostname:port */
    } server;
    struct {
        char path[CFG_STR_MAX];
        char served_name[CFG_STR_MAX];    /* empty = the model directory's base name */
        int context_length;               /* 0 = the model's max_position_embeddings */
        uint64_t max_prompt_bytes;        /* 0 = context x longest token x 4 */
    } model;
    struct {
        int threads;                      /* 0 = physical cores */
        int backend;                      /* eng_backend_kind: 0 cpu, 1 auto, 2 cuda */
        int kv_dtype;                     /* eng_dtype: 0 f32, 1 f16, 2 bf16 */
        int dense_format;                 /* engine/dense_quant.h: 0 native, 1 q8 */
        int cuda_graphs;                  /* CUDA: decode steps as graph replays */
    } engine;
    struct {
        int policy;                       /* cfg_sched_policy */
        int max_running;
        int max_queued;
        int max_batch_tokens;
        int prefill_chunk;
        int max_tokens_default;           /* max_tokens when a request gives none; 0 = up to context */
        int on_unattainable;              /* 0 reject, 1 best_effort */
    } scheduler;
    struct {
        cfg_budget device_budget;
        cfg_budget host_budget;
        int miss_policy;                  /* cfg_miss_policy */
        char store_path[CFG_STR_MAX];
        int io_queue_depth;
        int expert_format;                /* quant_format: 0 bf16, 1 q8, 2 q4 */
        int lowbit_format;                /* 0 q4, 1 q8 (the lowbit miss policy's resident copy) */
    } cache;
    struct {
        int enabled;                      /* 1: prefetch by the predictor (only with a cache budget) */
        int plan_every;
        int prefetch_share;               /* percent of the device slots a plan prefetches */
        char insensitive_tasks[CFG_LIST_MAX]; /* comma-separated task names */
        int max_tasks;
        int evict_hint;                   /* 1: the cache evicts by the predictor's reuse distance */
        int lookahead_layers;             /* prefetch the predicted experts of the next d layers */
        int evict_order;                  /* 0 visit (cyclic time to next use), 1 reuse (tracker) */
        int next_step_min_use;            /* percent: next-step prefetch of experts this likely used; 0 = off */
        char task_profile[CFG_STR_MAX];   /* `emoe profile` output; "" = none */
        char trace_path[CFG_STR_MAX];     /* record served routing here; "" = off */
        char acquire_log[CFG_STR_MAX];    /* diagnostic: every acquire, per step; "" = off */
    } predictor;
    struct {
        int level;                        /* emoe_log_level */
        int log_prompts;
    } log;
    struct {
        int n;
        cfg_task t[CFG_MAX_TASKS];
    } tasks;                              /* [tasks]: reloadable */
} emoe_config;

typedef enum cfg_type {
    CFG_T_BOOL = 0,
    CFG_T_INT,
    CFG_T_SECONDS,   /* double seconds; accepts 30, 30s, 500ms, 2m */
    CFG_T_SIZE,      /* uint64 bytes; accepts 4096, 64KiB, 512MiB, 20GiB, 1GB */
    CFG_T_BUDGET,    /* cfg_budget: a size or a percentage "25%" */
    CFG_T_STRING,
    CFG_T_LIST,      /* comma-separated words */
    CFG_T_ENUM,
} cfg_type;

typedef struct cfg_entry {
    const char *section;
    const char *key;
    cfg_type type;
    size_t offset;           /* into emoe_config */
    size_t size;             /* of the string buffer (STRING, LIST) */
    double min, max;         /* bounds for INT, SECONDS, SIZE (bytes), BUDGET (bytes) */
    const char *enum_names;  /* ENUM: "a|b|c", value = index */
    const char *def;         /* default, as text */
    int reloadable;          /* applied on SIGHUP */
    const char *help;
} cfg_entry;

/* The table, in documentation order. */
const cfg_entry *cfg_table(size_t *n);
const cfg_entry *cfg_find(const char *section, const char *key);

/* Fills every field with its default. Never fails (the defaults are tested). */
void cfg_init(emoe_config *c);

/* Sets one field from text. `where` prefixes the error ("file:line" or
 * "--set"). Unknown section/key, bad syntax and out-of-range values are
 * EMOE_EINVAL with a message naming where, section and key. */
emoe_status cfg_set(emoe_config *c, const char *section, const char *key,
                    const char *value, const char *where, emoe_err *err);

/* Loads an INI file over c (values not in the file keep what c has). On
 * errors returns EMOE_EINVAL with all of them (duplicate keys, unclosed
 * sections, bad values...), each naming file, line and key; c may then be
 * partially updated, so load into a scratch copy when that matters. Inline
 * comments: `;` or `#` after whitespace. */
emoe_status cfg_load_file(emoe_config *c, const char *path, emoe_err *err);

/* The INI text of path (NUL-terminated, modified in place) applied over c;
 * every error in one message, one "file:line: ..." line each. Used by
 * cfg_load_file (config/ini_parse.c). */
emoe_status cfg_ini_apply(emoe_config *c, const char *path, char *text, emoe_err *err);

/* "section.key=value" (as given to --set). */
emoe_status cfg_set_override(emoe_config *c, const char *assignment, emoe_err *err);

/* Cross-field checks (e.g. api_keys together with api_key_file). */
emoe_status cfg_validate(const emoe_config *c, emoe_err *err);

/* Writes the effective config as an INI file (every key, with its help). */
void cfg_dump(const emoe_config *c, FILE *f);
/* Writes docs/configuration.md from the table. */
void cfg_markdown(FILE *f);

/* Formats one field's current value as config text into buf. */
void cfg_format_value(const emoe_config *c, const cfg_entry *e, char *buf, size_t n);

/* Copies the reloadable fields of `from` into `to`. Fills `changed_fixed`
 * (may be NULL) with a comma-separated list of non-reloadable keys whose
 * values differ (they keep their old value until restart). Returns the
 * number of reloadable fields that changed. */
int cfg_apply_reloadable(emoe_config *to, const emoe_config *from, char *changed_fixed, size_t n);

/* [tasks] (config/config_tasks.c): sets `<task>.<field>` (field: ttft_ms,
 * tpot_ms, priority, output_tokens); finds a task's entry (NULL = none);
 * writes the section for cfg_dump / its documentation for cfg_markdown. */
emoe_status cfg_tasks_set(emoe_config *c, const char *key, const char *value, const char *where, emoe_err *err);
const cfg_task *cfg_task_find(const emoe_config *c, const char *name);
void cfg_tasks_dump(const emoe_config *c, FILE *f);
void cfg_tasks_markdown(FILE *f);

/* Resolves a budget against `total` bytes (for percentages). */
uint64_t cfg_budget_bytes(const cfg_budget *b, uint64_t total);

/* Parsers shared with other modules (return 0 on success, -1 on bad text). */
int cfg_parse_size(const char *s, uint64_t *out);
int cfg_parse_seconds(const char *s, double *out);
int cfg_parse_bool(const char *s, int *out);

/* Splits a comma-separated list: calls fn for each trimmed non-empty word;
 * stops and returns fn's non-zero value. */
int cfg_list_each(const char *list, int (*fn)(const char *word, size_t len, void *user), void *user);
/* 1 if word is an element of the list. */
int cfg_list_has(const char *list, const char *word);

/* The API keys in effect: api_keys, or the lines of api_key_file (read now).
 * Writes a comma-free newline-separated list into out. */
emoe_status cfg_read_api_keys(const emoe_config *c, char *out, size_t n, emoe_err *err);

#endif
