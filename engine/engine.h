/*
 * engine.h — the engine's public API: open a model directory, create sequences
 * (each owns its KV cache), and run steps. A step takes several sequences, each
 * with one or more new tokens (a prefill chunk or one decode token), computes
 * them together (weights are read once per step for all rows) and returns each
 * item's last-position logits. The engine never sees HTTP; the scheduler is its
 * only caller in the server.
 *
 * Thread-safety: one thread drives an engine at a time (the scheduler's run
 * loop); the engine uses its own worker threads for matrix work.
 */
#ifndef EMOE_ENGINE_H
#define EMOE_ENGINE_H

#include "engine/common.h"
#include "engine/model.h"
#include "engine/expert.h"

typedef struct eng_engine eng_engine;
typedef struct eng_seq eng_seq;

typedef struct eng_open_opts {
    int n_threads;   /* worker threads for matrix work; 0 = number of online CPUs */
    int max_ctx;     /* cap on sequence length; 0 = the model's max_position_embeddings */
    /* Compute backend. ENG_BACKEND_CPU (the zero value) keeps the float32
     * reference; AUTO picks CUDA when the build has it and a device is present,
     * else CPU; CUDA fails at open with the reason when it cannot be used. */
    int backend;                 /* eng_backend_kind */
    uint64_t gpu_expert_budget;  /* CUDA: bytes of device expert slots; 0 = as many as fit */
    int kv_dtype;    /* CPU backend's KV cache: an eng_dtype; ENG_DT_F32 (the zero value) is the reference */
    int cuda_no_graphs;          /* CUDA: 1 = never run decode steps as CUDA graphs ([engine] cuda_graphs = false) */
    int dense_format;            /* CPU: dense matmul weights; DENSE_NATIVE (0, the checkpoint's) or DENSE_Q8 (engine/dense_quant.h) */
} eng_open_opts;

typedef enum eng_backend_kind {
    ENG_BACKEND_CPU = 0,
    ENG_BACKEND_AUTO = 1,
    ENG_BACKEND_CUDA = 2,
} eng_backend_kind;

/* "cpu" | "cuda" | "auto" -> kind; 0 on success, -1 if unknown. */
int eng_backend_parse(const char *s, eng_backend_kind *out);

/* Opens the Hugging Face model directory `dir` (config.json + safetensors,
 * single or sharded), validating everything. On success *out owns the mapping.
 * On failure returns a status and err names the file/field/tensor. */
emoe_status eng_open(const char *dir, const eng_open_opts *opts, eng_engine **out, emoe_err *err);
void eng_free(eng_engine *e);
/* eng_open returns while reader threads still bring the dense weights (every
 * layer's attention, norms, router, shared expert; lm_head) into memory
 * (engine/residency.h). This waits until they are resident — a server's
 * readiness — and returns the seconds it waited (0 when nothing was left). */
double eng_dense_wait(eng_engine *e);

const eng_model_desc *eng_desc(const eng_engine *e);
/* "cpu" (the float32 reference); other backends plug in behind the same step. */
const char *eng_backend_name(const eng_engine *e);
const char *eng_model_dir(const eng_engine *e);
int eng_max_ctx(const eng_engine *e);
/* The CPU backend's KV cache dtype (an eng_dtype) this engine was opened with. */
int eng_kv_dtype(const eng_engine *e);
/* [engine] dense_format this engine was opened with: DENSE_NATIVE or DENSE_Q8 (engine/dense_quant.c). */
int eng_dense_format(const eng_engine *e);

/* The checkpoint's own (mmapped) expert provider: always resident. */
const eng_expert_provider *eng_checkpoint_provider(eng_engine *e);
/* Replaces the expert provider (NULL: back to the checkpoint's). The provider
 * must outlive its use by the engine. */
void eng_set_expert_provider(eng_engine *e, const eng_expert_provider *p);
/* The memory an expert cache's device tier should use on this engine's
 * backend (engine/cache.h cache_slot_mem): GPU memory on the cuda backend,
 * NULL (host memory) on the CPU. A cache opened with it must be freed before
 * the process exits; it may outlive the engine. */
struct cache_slot_mem;
const struct cache_slot_mem *eng_backend_slot_mem(eng_engine *e);
/* The same for a cache whose store holds experts of quant format qfmt
 * (engine/quant.h: 0 dense, QUANT_Q8, QUANT_Q4): on the cuda backend its GPU
 * slots then hold the packed extents. eng_backend_slot_mem(e) is qfmt 0. */
const struct cache_slot_mem *eng_backend_slot_mem_format(eng_engine *e, int qfmt);
/* Direct expert views in the checkpoint (for packers / the cache's backing reads). */
emoe_status eng_checkpoint_expert(eng_engine *e, int layer, int expert, eng_expert_weights *w, emoe_err *err);
/* Total bytes of all routed experts' weights as stored. */
uint64_t eng_expert_bytes_total(const eng_engine *e);
uint64_t eng_expert_bytes_one(const eng_engine *e);

/* Routing callback: called for every token of every step, per layer, with the
 * top-k experts (highest weight first) and the weights the model applies.
 * `tag` is the sequence's tag (eng_seq_set_tag). `substituted` counts experts
 * replaced by the substitute policy for this token/layer. */
typedef void (*eng_routing_cb)(void *user, void *tag, int pos, int layer,
                               const int *experts, const float *weights, int k);
void eng_set_routing_cb(eng_engine *e, eng_routing_cb cb, void *user);

/* Sequences. max_len 0 = the engine's max context. KV memory is allocated lazily
 * in chunks as the sequence grows. */
eng_seq *eng_seq_new(eng_engine *e, int max_len, emoe_err *err);
void eng_seq_free(eng_seq *s);
int eng_seq_len(const eng_seq *s);
void eng_seq_set_tag(eng_seq *s, void *tag);
void *eng_seq_tag(const eng_seq *s);
/* Drops positions >= len (e.g. to reuse a prefix). */
void eng_seq_truncate(eng_seq *s, int len);
/* A new sequence (capacity max_len, 0 = the engine's context) holding a copy
 * of src's KV cache, so it continues from src's length independently (n > 1
 * choices: prefill once, then fork). NULL with err set on failure (EMOE_EUNSUP
 * when the backend cannot copy a KV cache). */
eng_seq *eng_seq_fork(const eng_seq *src, int max_len, emoe_err *err);
/* Experts replaced by the substitute policy in this sequence so far. */
uint64_t eng_seq_substituted(const eng_seq *s);
/* Expert uses computed with the low-bit copy (miss_policy lowbit) so far. */
uint64_t eng_seq_lowbit(const eng_seq *s);

typedef struct eng_batch_item {
    eng_seq *seq;
    const int32_t *ids;   /* new tokens appended to seq */
    int n_ids;            /* >= 1 */
    float *logits;        /* out: vocab floats of the last new token; NULL = not needed */
    float *all_logits;    /* out (optional): n_ids*vocab floats, every new position */
} eng_batch_item;

/* Runs one step over n items. Token ids are checked against the vocabulary and
 * lengths against the sequence capacity before anything runs. On failure no
 * sequence is advanced. */
emoe_status eng_step(eng_engine *e, eng_batch_item *items, int n, emoe_err *err);

/* Convenience: one sequence, several tokens. */
emoe_status eng_forward(eng_engine *e, eng_seq *s, const int32_t *ids, int n,
                        float *last_logits, emoe_err *err);

/* Device memory and expert-cache figures of a backend (all zero on the CPU
 * backend, which keeps no device state). */
typedef struct eng_backend_stats {
    int has_device;               /* 1: the figures below describe device memory */
    uint64_t weights_bytes;       /* non-expert weights on the device */
    uint64_t kv_bytes;            /* KV caches of live sequences */
    uint64_t workspace_bytes;     /* per-step activations, routing tables, cuBLAS workspace */
    uint64_t expert_budget_bytes; /* expert slots allocated (the budget, rounded to slots) */
    uint64_t expert_slot_bytes;   /* one slot */
    int expert_slots;
    uint64_t expert_hits, expert_misses;
    uint64_t expert_upload_bytes;
    double expert_stall_s;        /* host time blocked loading experts into slots */
    uint64_t peak_bytes;          /* high-water mark of the sum of the four categories */
    uint64_t steps_device_routed; /* CUDA: steps whose routing stayed on the device (every expert resident) */
    uint64_t graph_launches;      /* CUDA: steps run as a CUDA graph replay */
} eng_backend_stats;

/* Fills st (zeroed first). */
void eng_backend_stats_get(const eng_engine *e, eng_backend_stats *st);

#endif
