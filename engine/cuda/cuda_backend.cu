/*
 * cuda_backend.cu — the "cuda" engine backend (eng_cuda_backend): the same
 * contract and the same op order as the CPU float32 reference (forward.c
 * cpu_step), on the device.
 *
 * Placement: non-expert weights are uploaded once at open (matrices as bf16,
 * norms/biases/rotary frequencies as float32); routed experts come through the
 * engine's eng_expert_provider into the backend's GPU slots (expert_cache.cuh)
 * or live in engine/cache.c's device tier (slot_mem.cuh); each sequence owns
 * one device KV allocation (float32 or bf16, grown by doubling); activations
 * live in a per-engine workspace grown to the largest step.
 *
 * One step: upload token ids / positions / per-row KV descriptors; embed;
 * per layer: RMSNorm, q/k/v projections (+bias), fused q/k norm + RoPE + KV
 * write, attention (split-KV for small steps), o projection, fused residual +
 * RMSNorm, router logits (float32 GEMV), softmax+top-k on the device, the
 * routed experts, shared expert, fused combine + residual + next RMSNorm; then
 * final norm and lm_head for the rows whose logits are wanted, copied back.
 * Routed experts: with every expert resident the routing stays on the device
 * (moe_route.cuh, a device expert -> slot table; the routing reaches the host
 * once per step through a pinned ring) and decode steps replay a CUDA graph
 * per row bucket; otherwise the routing goes to the host every layer
 * (callback, substitute policy, grouping, loading only what is missing).
 *
 * Errors: every CUDA/cuBLAS call is checked; a failure drains the stream,
 * unpins the slots and returns the status to eng_step (no sequence advances).
 * A fault that corrupts the CUDA context (illegal address) makes every later
 * step fail too; the engine must then be reopened.
 */
#include "engine/cuda/common.cuh"
#include "engine/cuda/add.cuh"
#include "engine/cuda/attention.cuh"
#include "engine/cuda/embed.cuh"
#include "engine/cuda/expert_cache.cuh"
#include "engine/cuda/linear.cuh"
#include "engine/cuda/moe.cuh"
#include "engine/cuda/moe_quant.cuh"
#include "engine/cuda/moe_route.cuh"
#include "engine/cuda/rmsnorm.cuh"
#include "engine/cuda/rope.cuh"
#include "engine/cuda/qk_rope_kv.cuh"
#include "engine/cuda/router.cuh"
#include "engine/cuda/swiglu.cuh"
#include "engine/cuda/slot_mem.cuh"

extern "C" {
#include "engine/engine_internal.h"
#include "engine/moe_plan.h"
#include "engine/quant.h"
}

#include <stdio.h>
#include <stdlib.h>

#define LOGIT_ROWS 32      /* lm_head rows per chunk (bounds the logits buffer); >= GRAPH_MAX_T */
#define GRAPH_MAX_T 32     /* decode steps of up to this many rows may run as a CUDA graph */
#define GEMV_MAX_ROWS 8    /* T <= this: float32 GEMV instead of cuBLAS */

typedef struct cu_layer {
    float *attn_norm, *ffn_norm;  /* (dim) */
    cu_bf16 *wq, *wk, *wv, *wo;   /* (qd, dim) (kvd, dim) (kvd, dim) (dim, qd) */
    float *bq, *bk, *bv;          /* (qd) (kvd) (kvd) or NULL */
    float *q_norm, *k_norm;       /* (hd) per head or (qd)/(kvd) full, or NULL */
    cu_bf16 *router;              /* (n_experts, dim) */
    cu_bf16 *sh_gate, *sh_up;     /* (shared_ffn, dim) or NULL */
    cu_bf16 *sh_down;             /* (dim, shared_ffn) */
    cu_bf16 *sh_eg;               /* (1, dim) */
} cu_layer;

/* Device workspace for steps of up to T rows, and its pinned host mirrors. */
typedef struct cu_ws {
    int T;
    void *dev;                    /* one allocation, carved below */
    size_t dev_bytes;
    float *x, *h, *tmp, *moe;     /* (T, dim) */
    float *q, *att;               /* (T, qd) */
    float *k, *v;                 /* (T, kvd) */
    float *probs;                 /* (T, n_experts) */
    float *eo;                    /* (T*k, dim) */
    float *hmid;                  /* (T*k, ffn) */
    float *sg, *su;               /* (T, shared_ffn) */
    float *gl;                    /* (T) */
    float *logits;                /* (LOGIT_ROWS, vocab) */
    int32_t *tok;                 /* (T) */
    int *pos, *rowmap;            /* (T) */
    int *ids, *pair_row, *pair_of;/* (T*k) */
    float *rw;                    /* (T*k) */
    cu_att_row *rows;             /* (T) */
    cu_moe_expert *ex;            /* (n_experts) */
    cu_bf16 *xb;                  /* (T, max(dim, qd, shared_ffn)) */
    size_t xb_cap;
    void *host;                   /* pinned, carved below */
    int32_t *h_tok;
    int *h_pos, *h_rowmap, *h_ids, *h_pair_row, *h_pair_of;
    float *h_rw, *h_probs;
    cu_att_row *h_rows;
    cu_moe_expert *h_ex;
    float *att_part;              /* split-KV attention partials (min(T, 32) rows) */
    int *flags;                   /* (2) device route-plan flags (moe_route.cuh) */
    int *h_flags, *h_zero;        /* pinned: the flags read back once per step; a zero to clear them */
    int *h_rids;                  /* pinned routing ring: (n_layers, T, k) ids of the step */
    float *h_rws;                 /* (n_layers, T, k) their weights */
    eng_seq **row_seq;            /* (T) plain host */
    float **dest;                 /* (T) plain host: logits destination per wanted row */
} cu_ws;

typedef struct cu_state {
    int dev;
    cudaStream_t st;
    cublasHandle_t blas;
    cu_linear_ctx lin;
    cu_bf16 *embed, *lm_head;     /* (vocab, dim); lm_head == embed when tied */
    float *final_norm;            /* (dim) */
    float *inv_freq;              /* (hd/2) */
    cu_layer *L;                  /* (n_layers) */
    cu_ws ws;
    eng_moe_plan plan;
    cu_expert_cache ec;           /* the backend's own slots: used without a device-tier cache */
    int ec_ready;
    uint64_t ec_slots;            /* its size (slots), to recreate it after a cache detaches */
    cu_slot_mem *sm;              /* GPU memory of engine/cache.c's device tier, once one asked */
    cu_slot_mem *sm_prev;         /* the one before, of another format (a cache may still hold its slots) */
    int kv_bf16;                  /* [engine] kv_dtype = bf16: the KV cache is bf16 on the device */
    size_t kv_es;                 /* bytes per KV element */
    /* Device-side routing (fast path): a complete expert -> slot table. */
    const cu_bf16 **d_tab;        /* device (n_layers * n_experts) slot bases */
    const cu_bf16 **h_tab;        /* host mirror */
    int *all_ids;                 /* 0..n_experts-1 */
    int fast;                     /* d_tab is complete for fast_prov / fast_gen */
    int fast_qfmt;                /* the format of the experts d_tab points at (0 bf16, QUANT_Q8/Q4 packed) */
    int gx_qfmt;                  /* the format the captured graphs' MoE launches were built for */
    const eng_expert_provider *fast_prov;
    void *fast_ctx;
    int fast_gen, ec_gen;         /* ec_gen: bumped whenever the own slots are freed or recreated */
    int tier_pins;                /* fast path on the device-tier cache: every expert acquired (pinned) */
    uint64_t miss_hint;           /* the expert (layer*E + x) last found not resident: checked first */
    int opt_skip;                 /* own slots short of all experts: 1 = do not try a step device-routed */
    uint64_t opt_redos;           /* optimistic device-routed steps re-run on the host path (a miss) */
    /* CUDA graphs of decode steps, by row count (buckets 1..8, 16, 32). */
    int graphs;                   /* 0: never */
    cudaGraphExec_t gx[GRAPH_MAX_T + 1];
    int gx_failed[GRAPH_MAX_T + 1];
    void *pad_kv;                 /* KV of the padding rows of a graph bucket (capacity 1) */
    uint64_t graph_launches, fast_steps, slow_steps;
    uint64_t weights_bytes, kv_bytes, expert_bytes, peak_bytes;
} cu_state;

typedef struct cu_seq {
    void *kv;                     /* (n_layers, 2, cap, kvd) of the engine's KV dtype (f32 or bf16) */
    size_t bytes;
} cu_seq;

static void note_peak(cu_state *S)
{
    uint64_t now = S->weights_bytes + S->kv_bytes + S->expert_bytes + S->ws.dev_bytes;
    if (now > S->peak_bytes) S->peak_bytes = now;
}

/* ---- weights --------------------------------------------------------------- */

static emoe_status up_bf16(cu_state *S, const eng_tensor *t, cu_bf16 **out, emoe_err *err)
{
    *out = NULL;
    if (!t->data) return EMOE_OK;
    size_t n = (size_t)eng_tensor_numel(t), bytes = n * sizeof(cu_bf16);
    const void *src = t->data;
    cu_bf16 *tmp = NULL;
    if (t->dtype != ENG_DT_BF16) {
        tmp = (cu_bf16 *)malloc(bytes ? bytes : 1);
        float *f = (float *)malloc(sizeof(float) * 4096);
        if (!tmp || !f) { free(tmp); free(f); return emoe_errf(err, EMOE_ENOMEM, "out of host memory converting a weight"); }
        for (size_t off = 0; off < n; off += 4096) {
            size_t m = n - off < 4096 ? n - off : 4096;
            eng_tensor_read_f32(t, (int64_t)off, (int64_t)m, f);
            for (size_t i = 0; i < m; i++) tmp[off + i] = eng_f32_to_bf16(f[i]);
        }
        free(f);
        src = tmp;
    }
    emoe_status rc = EMOE_OK;
    CUDA_TRY(rc, err, cudaMalloc((void **)out, bytes), done);
    S->weights_bytes += bytes;
    CUDA_TRY(rc, err, cudaMemcpy(*out, src, bytes, cudaMemcpyHostToDevice), done);
done:
    free(tmp);
    return rc;
}

static emoe_status up_f32(cu_state *S, const eng_tensor *t, float **out, emoe_err *err)
{
    *out = NULL;
    if (!t->data) return EMOE_OK;
    size_t n = (size_t)eng_tensor_numel(t), bytes = n * sizeof(float);
    float *tmp = (float *)malloc(bytes ? bytes : 1);
    if (!tmp) return emoe_errf(err, EMOE_ENOMEM, "out of host memory converting a weight");
    eng_tensor_read_f32(t, 0, (int64_t)n, tmp);
    emoe_status rc = EMOE_OK;
    CUDA_TRY(rc, err, cudaMalloc((void **)out, bytes), done);
    S->weights_bytes += bytes;
    CUDA_TRY(rc, err, cudaMemcpy(*out, tmp, bytes, cudaMemcpyHostToDevice), done);
done:
    free(tmp);
    return rc;
}

static void layer_free(cu_layer *L)
{
    void *p[] = {L->attn_norm, L->ffn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->q_norm, L->k_norm,
                 L->router, L->sh_gate, L->sh_up, L->sh_down, L->sh_eg};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) cudaFree(p[i]);
}

#define TRY(x) do { if ((rc = (x)) != EMOE_OK) return rc; } while (0)

static emoe_status upload_weights(eng_engine *e, cu_state *S, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    emoe_status rc;
    TRY(up_bf16(S, &e->w.embed, &S->embed, err));
    if (e->w.lm_head.data == e->w.embed.data) S->lm_head = S->embed;
    else TRY(up_bf16(S, &e->w.lm_head, &S->lm_head, err));
    TRY(up_f32(S, &e->w.final_norm, &S->final_norm, err));
    for (int l = 0; l < d->n_layers; l++) {
        const eng_layer_weights *W = &e->w.layers[l];
        cu_layer *L = &S->L[l];
        TRY(up_f32(S, &W->attn_norm, &L->attn_norm, err));
        TRY(up_f32(S, &W->ffn_norm, &L->ffn_norm, err));
        TRY(up_bf16(S, &W->wq, &L->wq, err));
        TRY(up_bf16(S, &W->wk, &L->wk, err));
        TRY(up_bf16(S, &W->wv, &L->wv, err));
        TRY(up_bf16(S, &W->wo, &L->wo, err));
        TRY(up_f32(S, &W->bq, &L->bq, err));
        TRY(up_f32(S, &W->bk, &L->bk, err));
        TRY(up_f32(S, &W->bv, &L->bv, err));
        TRY(up_f32(S, &W->q_norm, &L->q_norm, err));
        TRY(up_f32(S, &W->k_norm, &L->k_norm, err));
        TRY(up_bf16(S, &W->router, &L->router, err));
        TRY(up_bf16(S, &W->sh_gate, &L->sh_gate, err));
        TRY(up_bf16(S, &W->sh_up, &L->sh_up, err));
        TRY(up_bf16(S, &W->sh_down, &L->sh_down, err));
        TRY(up_bf16(S, &W->sh_expert_gate, &L->sh_eg, err));
    }
    size_t half = (size_t)d->head_dim / 2;
    CUDA_CHECK(err, cudaMalloc((void **)&S->inv_freq, half * sizeof(float)));
    S->weights_bytes += half * sizeof(float);
    CUDA_CHECK(err, cudaMemcpy(S->inv_freq, e->inv_freq, half * sizeof(float), cudaMemcpyHostToDevice));
    return EMOE_OK;
}

/* ---- workspace -------------------------------------------------------------- */

static void ws_free(cu_ws *w)
{
    cudaFree(w->dev);
    cudaFreeHost(w->host);
    free(w->row_seq);
    free(w->dest);
    memset(w, 0, sizeof *w);
}

/* Carves n elements of size sz at *off (256-byte aligned) from base (NULL: size only). */
static void *carve(void *base, size_t *off, size_t n, size_t sz)
{
    size_t at = (*off + 255) & ~(size_t)255;
    *off = at + n * sz;
    return base ? (char *)base + at : NULL;
}

static size_t ws_layout(cu_ws *w, void *dev, void *host, const eng_model_desc *d, int T, size_t *host_bytes)
{
    size_t t = (size_t)T, k = (size_t)d->top_k, dim = (size_t)d->dim;
    size_t qd = (size_t)d->n_heads * d->head_dim, kvd = (size_t)d->n_kv_heads * d->head_dim;
    size_t sf = d->shared_ffn > 0 ? (size_t)d->shared_ffn : 1, E = (size_t)d->n_experts;
    size_t kmax = dim > qd ? dim : qd;
    if (sf > kmax) kmax = sf;
    size_t o = 0;
#define D(field, n, type) w->field = (type *)carve(dev, &o, (n), sizeof(type))
    D(x, t * dim, float); D(h, t * dim, float); D(tmp, t * dim, float); D(moe, t * dim, float);
    D(q, t * qd, float); D(att, t * qd, float); D(k, t * kvd, float); D(v, t * kvd, float);
    D(probs, t * E, float); D(eo, t * k * dim, float); D(hmid, t * k * (size_t)d->expert_ffn, float);
    D(sg, t * sf, float); D(su, t * sf, float); D(gl, t, float);
    D(logits, (t < LOGIT_ROWS ? t : LOGIT_ROWS) * (size_t)d->vocab, float);
    D(tok, t, int32_t); D(pos, t, int); D(rowmap, t, int);
    D(ids, t * k, int); D(pair_row, t * k, int); D(pair_of, t * k, int); D(rw, t * k, float);
    D(rows, t, cu_att_row); D(ex, E, cu_moe_expert); D(xb, t * kmax, cu_bf16);
    {
        int ts = t < 32 ? (int)t : 32;
        D(att_part, cu_att_part_floats(ts, d->n_heads, d->head_dim, CU_ATT_MAX_SPLITS), float);
    }
    D(flags, 2, int);
#undef D
    w->xb_cap = t * kmax;
    size_t ho = 0;
#define H(field, n, type) w->field = (type *)carve(host, &ho, (n), sizeof(type))
    H(h_tok, t, int32_t); H(h_pos, t, int); H(h_rowmap, t, int); H(h_ids, t * k, int);
    H(h_pair_row, t * k, int); H(h_pair_of, t * k, int); H(h_rw, t * k, float); H(h_probs, t * E, float);
    H(h_rows, t, cu_att_row); H(h_ex, E, cu_moe_expert);
    H(h_flags, 2, int); H(h_zero, 2, int);
    H(h_rids, (size_t)d->n_layers * t * k, int); H(h_rws, (size_t)d->n_layers * t * k, float);
#undef H
    *host_bytes = ho;
    return o;
}

/* The graphs hold the workspace's pointers: dropped when it moves. */
static void graphs_drop(cu_state *S)
{
    for (int b = 0; b <= GRAPH_MAX_T; b++) {
        if (S->gx[b]) cudaGraphExecDestroy(S->gx[b]);
        S->gx[b] = NULL;
        S->gx_failed[b] = 0;
    }
}

static emoe_status ws_ensure(cu_state *S, const eng_model_desc *d, int T, emoe_err *err)
{
    cu_ws *w = &S->ws;
    if (T <= w->T) return EMOE_OK;
    int cap = GRAPH_MAX_T;
    while (cap < T) cap = cap > INT32_MAX / 2 ? T : cap * 2;
    if (S->st) cudaStreamSynchronize(S->st);
    graphs_drop(S);
    ws_free(w);
    S->lin.xb = NULL;
    S->lin.xb_cap = 0;
    size_t hb, db = ws_layout(w, NULL, NULL, d, cap, &hb);
    emoe_status rc = EMOE_OK;
    CUDA_TRY(rc, err, cudaMalloc(&w->dev, db), fail);
    CUDA_TRY(rc, err, cudaMallocHost(&w->host, hb), fail);
    w->row_seq = (eng_seq **)calloc((size_t)cap, sizeof *w->row_seq);
    w->dest = (float **)calloc((size_t)cap, sizeof *w->dest);
    if (!w->row_seq || !w->dest) { rc = emoe_errf(err, EMOE_ENOMEM, "out of host memory for a step"); goto fail; }
    ws_layout(w, w->dev, w->host, d, cap, &hb);
    w->h_zero[0] = w->h_zero[1] = 0;
    w->T = cap;
    w->dev_bytes = db;
    S->lin.xb = w->xb;
    S->lin.xb_cap = w->xb_cap;
    note_peak(S);
    return EMOE_OK;
fail:
    ws_free(w);
    emoe_err_prefix(err, "workspace for a step of %d tokens", T);
    return rc;
}

/* ---- engine hooks --------------------------------------------------------------- */

/* Leaves the fast path. The device-tier cache's pins are released only if
 * its provider is still the engine's (a detached cache may be gone: its pins
 * are then forgotten, never touched). The caller has synchronised the stream. */
static void fast_drop(eng_engine *e, cu_state *S)
{
    if (S->tier_pins && e->prov == S->fast_prov && e->prov->ctx == S->fast_ctx && e->prov->release)
        for (int l = 0; l < e->d.n_layers; l++)
            for (int x = 0; x < e->d.n_experts; x++) e->prov->release(e->prov->ctx, l, x);
    S->tier_pins = 0;
    S->fast = 0;
    S->fast_prov = NULL;
    S->fast_ctx = NULL;
}

static void cuda_engine_free(eng_engine *e)
{
    cu_state *S = (cu_state *)e->bs;
    if (!S) return;
    if (S->st) cudaStreamSynchronize(S->st);
    fast_drop(e, S);
    graphs_drop(S);
    cudaFree(S->d_tab);
    free(S->h_tab);
    free(S->all_ids);
    cudaFree(S->pad_kv);
    if (S->ec_ready) cu_expert_cache_free(&S->ec);
    cu_slot_mem_release(S->sm); /* lives on while the cache holds slots */
    cu_slot_mem_release(S->sm_prev);
    eng_moe_plan_free(&S->plan);
    ws_free(&S->ws);
    if (S->L) {
        for (int l = 0; l < e->d.n_layers; l++) layer_free(&S->L[l]);
        free(S->L);
    }
    if (S->lm_head != S->embed) cudaFree(S->lm_head);
    cudaFree(S->embed);
    cudaFree(S->final_norm);
    cudaFree(S->inv_freq);
    if (S->blas) cublasDestroy(S->blas);
    if (S->st) cudaStreamDestroy(S->st);
    free(S);
    e->bs = NULL;
}

static emoe_status check_limits(const eng_model_desc *d, emoe_err *err)
{
    if (d->head_dim > CU_ATT_MAX_HEAD_DIM || d->head_dim % 2)
        return emoe_errf(err, EMOE_EUNSUP, "head_dim %d (the CUDA attention kernel takes even head_dim <= %d)", d->head_dim,
                         CU_ATT_MAX_HEAD_DIM);
    if (d->top_k > CU_ROUTER_MAX_K || d->n_experts > CU_ROUTER_MAX_EXPERTS)
        return emoe_errf(err, EMOE_EUNSUP, "top-%d of %d experts (the CUDA router takes k <= %d, experts <= %d)", d->top_k,
                         d->n_experts, CU_ROUTER_MAX_K, CU_ROUTER_MAX_EXPERTS);
    if (d->n_heads % d->n_kv_heads) return emoe_errf(err, EMOE_EUNSUP, "heads %d not a multiple of kv heads %d", d->n_heads, d->n_kv_heads);
    return EMOE_OK;
}

static emoe_status cuda_init(eng_engine *e, const eng_open_opts *opts, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    emoe_status rc = check_limits(d, err);
    if (rc) return rc;
    cu_state *S = (cu_state *)calloc(1, sizeof *S);
    if (!S) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    e->bs = S;
    S->L = (cu_layer *)calloc((size_t)d->n_layers, sizeof *S->L);
    if (!S->L) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    S->dev = 0;
    CUDA_CHECK(err, cudaSetDevice(S->dev));
    CUDA_CHECK(err, cudaStreamCreateWithFlags(&S->st, cudaStreamNonBlocking));
    CUBLAS_CHECK(err, cublasCreate(&S->blas));
    CUBLAS_CHECK(err, cublasSetStream(S->blas, S->st));
    S->lin.blas = S->blas;
    S->lin.gemv_max_rows = GEMV_MAX_ROWS;
    if ((rc = upload_weights(e, S, err)) != EMOE_OK) return emoe_err_prefix(err, "uploading weights");
    if (e->kv_dtype != ENG_DT_F32 && e->kv_dtype != ENG_DT_BF16)
        return emoe_errf(err, EMOE_EUNSUP, "kv_dtype %s: the cuda backend keeps its KV cache in f32 or bf16",
                         eng_dtype_name(e->kv_dtype));
    S->kv_bf16 = e->kv_dtype == ENG_DT_BF16;
    S->kv_es = S->kv_bf16 ? sizeof(cu_bf16) : sizeof(float);
    {
        size_t nk = (size_t)d->n_layers * (size_t)d->n_experts;
        S->h_tab = (const cu_bf16 **)calloc(nk, sizeof *S->h_tab);
        S->all_ids = (int *)malloc(sizeof(int) * (size_t)d->n_experts);
        if (!S->h_tab || !S->all_ids) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
        for (int x = 0; x < d->n_experts; x++) S->all_ids[x] = x;
        CUDA_CHECK(err, cudaMalloc((void **)&S->d_tab, nk * sizeof *S->d_tab));
        size_t pad = (size_t)d->n_layers * 2 * (size_t)d->n_kv_heads * (size_t)d->head_dim * S->kv_es;
        CUDA_CHECK(err, cudaMalloc(&S->pad_kv, pad));
        CUDA_CHECK(err, cudaMemset(S->pad_kv, 0, pad));
        S->weights_bytes += nk * sizeof *S->d_tab + pad;
    }
    S->graphs = !(opts && opts->cuda_no_graphs); /* [engine] cuda_graphs, --cuda-graphs off */
    /* Expert slots: the budget (bytes) rounded down to whole slots. */
    size_t slot_bytes = (size_t)3 * (size_t)d->expert_ffn * (size_t)d->dim * sizeof(cu_bf16);
    uint64_t n_keys = (uint64_t)d->n_layers * (uint64_t)d->n_experts;
    uint64_t budget = opts ? opts->gpu_expert_budget : 0;
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(err, cudaMemGetInfo(&free_b, &total_b));
    if (budget == 0) {
        /* As many as fit, leaving room for KV caches and workspace. */
        uint64_t reserve = (uint64_t)512 << 20;
        reserve += total_b / 10;
        budget = free_b > reserve ? free_b - reserve : 0;
        if (budget > slot_bytes * n_keys) budget = slot_bytes * n_keys;
    }
    if (budget < slot_bytes)
        return emoe_errf(err, EMOE_EINVAL, "GPU expert budget of %llu bytes is smaller than one expert (%zu bytes; %zu bytes free on the device)",
                         (unsigned long long)budget, slot_bytes, free_b);
    uint64_t n_slots = budget / slot_bytes;
    if (n_slots > n_keys) n_slots = n_keys;
    if ((rc = cu_expert_cache_init(&S->ec, d->n_layers, d->n_experts, d->dim, d->expert_ffn, (int)n_slots, err)) != EMOE_OK)
        return emoe_err_prefix(err, "GPU expert cache of %llu slots", (unsigned long long)n_slots);
    S->ec_ready = 1;
    S->ec_slots = n_slots;
    S->expert_bytes = n_slots * slot_bytes;
    /* The uploads above ran on the legacy default stream, which the
     * non-blocking compute stream does not wait for: finish them now. */
    CUDA_CHECK(err, cudaDeviceSynchronize());
    note_peak(S);
    char desc[512];
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, S->dev) == cudaSuccess)
        snprintf(desc, sizeof desc, "%s (sm_%d%d)", p.name, p.major, p.minor);
    else
        snprintf(desc, sizeof desc, "device %d", S->dev);
    LOG_INFO("cuda backend on %s: weights %.1f MiB, expert slots %llu x %.2f MiB = %.1f MiB (%llu of %llu experts), device free %.1f of %.1f MiB",
             desc, S->weights_bytes / 1048576.0, (unsigned long long)n_slots, slot_bytes / 1048576.0,
             S->expert_bytes / 1048576.0, (unsigned long long)n_slots, (unsigned long long)n_keys, free_b / 1048576.0,
             total_b / 1048576.0);
    return EMOE_OK;
}

static emoe_status cuda_seq_init(eng_seq *s, emoe_err *err)
{
    s->be = calloc(1, sizeof(cu_seq));
    if (!s->be) return emoe_errf(err, EMOE_ENOMEM, "out of memory for a sequence");
    return EMOE_OK;
}

static void cuda_seq_free(eng_seq *s)
{
    cu_seq *q = (cu_seq *)s->be;
    if (!q) return;
    cu_state *S = (cu_state *)s->e->bs;
    if (q->kv) {
        if (S && S->st) cudaStreamSynchronize(S->st);
        cudaFree(q->kv);
        if (S) S->kv_bytes -= q->bytes;
    }
    free(q);
    s->be = NULL;
}

/* Grows the device KV cache to >= n positions (doubling, capped at max_len),
 * keeping what is stored. 0, or -1 with the reason logged. */
static int cuda_seq_reserve(eng_seq *s, int n)
{
    cu_seq *q = (cu_seq *)s->be;
    cu_state *S = (cu_state *)s->e->bs;
    const eng_model_desc *d = &s->e->d;
    int cap = s->cap ? s->cap : 64;
    while (cap < n) cap = cap > INT32_MAX / 2 ? n : cap * 2;
    if (cap > s->max_len) cap = s->max_len;
    size_t kvd = (size_t)d->n_kv_heads * d->head_dim, per = (size_t)cap * kvd;
    size_t es = S->kv_es, bytes = (size_t)d->n_layers * 2 * per * es;
    char *kv = NULL;
    cudaError_t ce = cudaMalloc((void **)&kv, bytes);
    if (ce != cudaSuccess) {
        LOG_ERROR("cuda: KV cache of %d positions (%zu bytes): %s", cap, bytes, cudaGetErrorString(ce));
        return -1;
    }
    if (q->kv) {
        size_t old_per = (size_t)s->cap * kvd;
        for (int m = 0; m < d->n_layers * 2 && ce == cudaSuccess; m++)
            ce = cudaMemcpyAsync(kv + (size_t)m * per * es, (char *)q->kv + (size_t)m * old_per * es, old_per * es,
                                 cudaMemcpyDeviceToDevice, S->st);
        if (ce == cudaSuccess) ce = cudaStreamSynchronize(S->st);
        if (ce != cudaSuccess) {
            LOG_ERROR("cuda: growing a KV cache: %s", cudaGetErrorString(ce));
            cudaFree(kv);
            return -1;
        }
        cudaFree(q->kv);
        S->kv_bytes -= q->bytes;
    }
    q->kv = kv;
    q->bytes = bytes;
    S->kv_bytes += bytes;
    s->cap = cap;
    note_peak(S);
    return 0;
}

/* Copies src's first len positions (every layer's K and V) into dst. */
static int cuda_seq_copy(eng_seq *dst, const eng_seq *src)
{
    const cu_seq *a = (const cu_seq *)src->be;
    cu_seq *b = (cu_seq *)dst->be;
    cu_state *S = (cu_state *)src->e->bs;
    if (src->len == 0) return 0;
    if (!a || !b || !a->kv || !b->kv || dst->cap < src->len) return -1;
    const eng_model_desc *d = &src->e->d;
    size_t kvd = (size_t)d->n_kv_heads * d->head_dim, es = S->kv_es;
    cudaError_t ce = cudaSuccess;
    for (int m = 0; m < d->n_layers * 2 && ce == cudaSuccess; m++)
        ce = cudaMemcpyAsync((char *)b->kv + (size_t)m * dst->cap * kvd * es, (const char *)a->kv + (size_t)m * src->cap * kvd * es,
                             (size_t)src->len * kvd * es, cudaMemcpyDeviceToDevice, S->st);
    if (ce == cudaSuccess) ce = cudaStreamSynchronize(S->st);
    if (ce != cudaSuccess) {
        LOG_ERROR("cuda: forking a KV cache: %s", cudaGetErrorString(ce));
        return -1;
    }
    return 0;
}

static void cuda_stats(const eng_engine *e, eng_backend_stats *st)
{
    const cu_state *S = (const cu_state *)e->bs;
    if (!S) return;
    st->has_device = 1;
    st->weights_bytes = S->weights_bytes;
    st->kv_bytes = S->kv_bytes;
    st->workspace_bytes = S->ws.dev_bytes;
    st->expert_budget_bytes = S->expert_bytes;
    if (S->sm && !S->ec_ready) {
        uint64_t ab, ub, n;
        cu_slot_mem_stats(S->sm, &ab, &ub, &n);
        st->expert_budget_bytes = ab;
        st->expert_upload_bytes = ub;
    }
    if (S->ec_ready) {
        st->expert_slot_bytes = S->ec.slot_elems * sizeof(cu_bf16);
        st->expert_slots = S->ec.tab.n_slots;
        st->expert_hits = S->ec.tab.hits;
        st->expert_misses = S->ec.tab.misses;
        st->expert_upload_bytes = S->ec.upload_bytes;
        st->expert_stall_s = S->ec.stall_s;
    }
    st->peak_bytes = S->peak_bytes;
    st->steps_device_routed = S->fast_steps;
    st->graph_launches = S->graph_launches;
}

/* ---- the step --------------------------------------------------------------- */

#define CK(x) do { if ((rc = (x)) != EMOE_OK) goto fail; } while (0)
#define CUDA_CK(x) CUDA_TRY(rc, err, (x), fail)

/* The experts of layer l straight from engine/cache.c's device tier (GPU
 * slots, slot_mem.cuh): acquire each used expert (the cache loads only what is
 * missing, prefetched just before), point the grouped kernels at the slots,
 * record each slot's last-read event after the kernels that read it, release.
 * When the layer needs more experts than the cache has slots, acquire fails
 * with everything pinned: the experts acquired so far run as one group, are
 * released (their slots can then be reloaded: the upload waits for the
 * last-read event on the copy stream, no host synchronisation) and the rest
 * follow. The group's table goes to a fresh part of the device table (offset
 * g0), so no host buffer is rewritten while its copy may be pending. */
static emoe_status mark_read(cu_state *S, const void *slot, cudaStream_t st, emoe_err *err)
{
    emoe_status rc = cu_slot_mem_mark_read(S->sm, slot, st, err);
    if (rc != EMOE_OK && S->sm_prev) rc = cu_slot_mem_mark_read(S->sm_prev, slot, st, err); /* a cache of the old format */
    return rc;
}

/* Launches the grouped kernels of format fmt over table entries [at, at + n). */
static emoe_status moe_group_run(cu_state *S, int at, int n, int fmt, int dim, int ffn, emoe_err *err)
{
    cu_ws *w = &S->ws;
    emoe_status rc;
    if (n <= 0) return EMOE_OK;
    if (fmt) {
        if ((rc = cu_moe_gate_up_q(S->st, w->hmid, w->h, w->pair_row, w->ex + at, n, dim, ffn, fmt, err)) != EMOE_OK) return rc;
        return cu_moe_down_q(S->st, w->eo, w->hmid, w->ex + at, n, dim, ffn, fmt, err);
    }
    if ((rc = cu_moe_gate_up(S->st, w->hmid, w->h, w->pair_row, w->ex + at, n, dim, ffn, err)) != EMOE_OK) return rc;
    return cu_moe_down(S->st, w->eo, w->hmid, w->ex + at, n, dim, ffn, err);
}

static emoe_status moe_experts_from_cache(eng_engine *e, cu_state *S, int l, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    const eng_expert_provider *p = e->prov;
    cu_ws *w = &S->ws;
    cudaStream_t st = S->st;
    int dim = d->dim, ffn = d->expert_ffn, n = S->plan.n_used;
    size_t fd = (size_t)ffn * (size_t)dim;
    emoe_status rc = EMOE_OK;
    int g0 = 0, qfmt = S->sm ? cu_slot_mem_format(S->sm) : 0, lbfmt = 0;
    /* per entry of a group: its expert and whether it is a low-bit stand-in
     * (miss_policy lowbit: the cache's low-bit copy in GPU memory, another
     * format, run after the group's slot experts and never marked read) */
    int *gx = (int *)malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    unsigned char *glb = (unsigned char *)malloc((size_t)(n > 0 ? n : 1));
    if (!gx || !glb) { free(gx); free(glb); return emoe_errf(err, EMOE_ENOMEM, "layer %d: out of host memory", l); }
    while (g0 < n) {
        int gn = 0, nm = 0;
        for (int i = g0; i < n; i++) {
            eng_expert_weights ew = {}; /* providers that never quantize leave qfmt/lowbit as they are */
            emoe_err e2 = {};
            emoe_status r = p->acquire(p->ctx, l, S->plan.used[i], &ew, &e2);
            if (r == EMOE_ENOMEM && gn > 0) break; /* slots all pinned: run this group first */
            if (r != EMOE_OK) {
                *err = e2;
                rc = emoe_err_prefix(err, "layer %d expert %d", l, S->plan.used[i]);
                goto release;
            }
            cu_moe_expert &x = w->h_ex[g0 + gn];
            x.gate = (const cu_bf16 *)ew.gate.data;
            x.up = x.down = NULL;
            x.start = S->plan.start[i];
            x.count = S->plan.count[i];
            gx[gn] = S->plan.used[i];
            glb[gn] = (unsigned char)(ew.lowbit != 0);
            gn++;
            if (ew.lowbit ? (!ew.qfmt || (lbfmt && ew.qfmt != lbfmt)) : ew.qfmt != qfmt) {
                rc = emoe_errf(err, EMOE_EUNSUP, "layer %d expert %d: %s%s expert views, the GPU slots hold %s", l,
                               S->plan.used[i], ew.lowbit ? "low-bit " : "", quant_format_name(ew.qfmt), quant_format_name(qfmt));
                goto release;
            }
            if (ew.lowbit) lbfmt = ew.qfmt;
            if (ew.qfmt) { /* packed rows: the views' own offsets (engine/cache.c cache_fill_views) */
                x.up = (const cu_bf16 *)ew.up.data;
                x.down = (const cu_bf16 *)ew.down.data;
            } else { /* bf16 slot (converted on upload whatever the store's dtype) */
                x.up = x.gate + fd;
                x.down = x.gate + 2 * fd;
            }
        }
        /* slot experts first, then the low-bit stand-ins (stable) */
        for (int i = 0; i < gn; i++)
            if (!glb[i]) {
                cu_moe_expert x = w->h_ex[g0 + i];
                int xi = gx[i];
                for (int j = i; j > nm; j--) { w->h_ex[g0 + j] = w->h_ex[g0 + j - 1]; gx[j] = gx[j - 1]; glb[j] = glb[j - 1]; }
                w->h_ex[g0 + nm] = x;
                gx[nm] = xi;
                glb[nm] = 0;
                nm++;
            }
        for (int i = nm; i < gn; i++) /* per sequence: token x expert uses served low-bit (as forward.c counts) */
            for (int q = w->h_ex[g0 + i].start; q < w->h_ex[g0 + i].start + w->h_ex[g0 + i].count; q++)
                w->row_seq[S->plan.pair_row[q]]->lowbit++;
        CUDA_TRY(rc, err, cudaMemcpyAsync(w->ex + g0, w->h_ex + g0, sizeof(cu_moe_expert) * (size_t)gn,
                                          cudaMemcpyHostToDevice, st), release);
        if ((rc = moe_group_run(S, g0, nm, qfmt, dim, ffn, err)) != EMOE_OK) goto release;
        if ((rc = moe_group_run(S, g0 + nm, gn - nm, lbfmt, dim, ffn, err)) != EMOE_OK) goto release;
    release:
        for (int i = 0; i < gn; i++) {
            emoe_err e3 = {};
            /* Record the last read even on failure: the queued kernels may run.
             * (The low-bit copy is never overwritten: no event.) */
            if (!glb[i] && mark_read(S, w->h_ex[g0 + i].gate, st, &e3) != EMOE_OK) {
                cudaStreamSynchronize(st); /* cannot order the reuse: make it safe the slow way */
                if (rc == EMOE_OK) { *err = e3; rc = e3.code ? (emoe_status)e3.code : EMOE_EDEVICE; }
            }
            if (p->release) p->release(p->ctx, l, gx[i]);
        }
        if (rc != EMOE_OK) break;
        g0 += gn;
    }
    free(gx);
    free(glb);
    return rc;
}

/* After the routed experts: the shared expert (its SwiGLU output and gate
 * logit), then one fused launch adds the weighted combine of the routed
 * experts and the gated shared expert to the residual stream x. */
static emoe_status moe_tail(eng_engine *e, cu_state *S, int l, int T, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    const cu_layer *L = &S->L[l];
    cu_ws *w = &S->ws;
    cudaStream_t st = S->st;
    int dim = d->dim;
    emoe_status rc = EMOE_OK;
    int shared = d->shared_ffn > 0;
    const float *next_norm = l + 1 < d->n_layers ? S->L[l + 1].attn_norm : NULL;
    if (shared) {
        int sf = d->shared_ffn;
        CK(cu_linear(&S->lin, st, w->sg, w->h, L->sh_gate, NULL, T, sf, dim, err));
        CK(cu_linear(&S->lin, st, w->su, w->h, L->sh_up, NULL, T, sf, dim, err));
        CK(cu_swiglu(st, w->sg, w->su, (size_t)T * sf, err));
        CK(cu_linear(&S->lin, st, w->tmp, w->sg, L->sh_down, NULL, T, dim, sf, err));
        CK(cu_linear_gemv(st, w->gl, w->h, L->sh_eg, NULL, T, 1, dim, err));
    }
    /* ... and the next layer's attention RMSNorm into w->h (not after the last layer) */
    CK(cu_moe_combine_residual(st, w->x, w->eo, w->pair_of, w->rw, shared ? w->tmp : NULL, shared ? w->gl : NULL, w->h, next_norm,
                               d->eps, T, d->top_k, dim, err));
fail:
    return rc;
}

static emoe_status own_slots_ensure(eng_engine *e, cu_state *S, emoe_err *err);

/* Router, routing to the host (callback, substitute policy), grouping, experts
 * via the slot cache, grouped kernels, combine, shared expert: S->ws.moe. */
static emoe_status moe_layer(eng_engine *e, cu_state *S, int l, int T, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    const cu_layer *L = &S->L[l];
    cu_ws *w = &S->ws;
    cudaStream_t st = S->st;
    int E = d->n_experts, k = d->top_k, dim = d->dim, ffn = d->expert_ffn, P = T * k;
    const eng_expert_provider *p = e->prov;
    emoe_status rc = EMOE_OK;
    unsigned char *allowed = NULL;
    CK(cu_linear_gemv(st, w->probs, w->h, L->router, NULL, T, E, dim, err));
    CK(cu_router_topk(st, w->probs, w->ids, w->rw, T, E, k, d->norm_topk, err));
    {
        int subst = p->substitute && p->substitute(p->ctx) && p->is_resident;
        if (subst) {
            allowed = (unsigned char *)malloc((size_t)E);
            if (allowed) {
                int any = 0;
                for (int x = 0; x < E; x++) any += (allowed[x] = p->is_resident(p->ctx, l, x) ? 1 : 0);
                if (any < k) { free(allowed); allowed = NULL; }
            }
        }
        CUDA_CK(cudaMemcpyAsync(w->h_ids, w->ids, sizeof(int) * (size_t)P, cudaMemcpyDeviceToHost, st));
        CUDA_CK(cudaMemcpyAsync(w->h_rw, w->rw, sizeof(float) * (size_t)P, cudaMemcpyDeviceToHost, st));
        if (allowed)
            CUDA_CK(cudaMemcpyAsync(w->h_probs, w->probs, sizeof(float) * (size_t)T * E, cudaMemcpyDeviceToHost, st));
        /* The one synchronisation of the layer: every earlier kernel (and so
         * every read of the expert slots) has completed after it. */
        CUDA_CK(cudaStreamSynchronize(st));
        int changed = 0;
        for (int t = 0; t < T; t++) {
            int *ids = w->h_ids + (size_t)t * k;
            float *rw = w->h_rw + (size_t)t * k;
            for (int j = 0; j < k; j++)
                if (ids[j] < 0 || ids[j] >= E) {
                    rc = emoe_errf(err, EMOE_EDEVICE, "layer %d: the router produced no valid expert for token %d (non-finite router logits?)", l, t);
                    goto fail;
                }
            if (e->cb) e->cb(e->cb_user, w->row_seq[t]->tag, w->h_pos[t], l, ids, rw, k);
            if (!allowed || (p->substitute_seq && !p->substitute_seq(p->ctx, w->row_seq[t]->tag))) continue;
            int missing[64], nm = 0;
            for (int j = 0; j < k; j++)
                if (!allowed[ids[j]] && nm < 64) missing[nm++] = ids[j];
            if (!nm) continue;
            if (p->prefetch) p->prefetch(p->ctx, l, missing, nm);
            float wsum = 0;
            for (int j = 0; j < k; j++) wsum += rw[j];
            float target = d->norm_topk ? 1.0f : wsum;
            eng_route_topk(w->h_probs + (size_t)t * E, E, k, allowed, ids, rw);
            float s2 = 0;
            for (int j = 0; j < k; j++) s2 += rw[j];
            for (int j = 0; j < k; j++) rw[j] = rw[j] / s2 * target;
            w->row_seq[t]->substituted += (uint64_t)nm;
            if (p->substituted) p->substituted(p->ctx, w->row_seq[t]->tag, l, nm);
            changed = 1;
        }
        if (changed) CUDA_CK(cudaMemcpyAsync(w->rw, w->h_rw, sizeof(float) * (size_t)P, cudaMemcpyHostToDevice, st));
    }
    if (eng_moe_plan_build(&S->plan, w->h_ids, T, k, E) != 0) {
        rc = emoe_errf(err, EMOE_ENOMEM, "layer %d: out of memory grouping the routing", l);
        goto fail;
    }
    memcpy(w->h_pair_row, S->plan.pair_row, sizeof(int) * (size_t)P);
    memcpy(w->h_pair_of, S->plan.pair_of, sizeof(int) * (size_t)P);
    CUDA_CK(cudaMemcpyAsync(w->pair_row, w->h_pair_row, sizeof(int) * (size_t)P, cudaMemcpyHostToDevice, st));
    CUDA_CK(cudaMemcpyAsync(w->pair_of, w->h_pair_of, sizeof(int) * (size_t)P, cudaMemcpyHostToDevice, st));
    if (p->prefetch) p->prefetch(p->ctx, l, S->plan.used, S->plan.n_used);
    if (p->device_views) {
        CK(moe_experts_from_cache(e, S, l, err));
    } else {
        CK(own_slots_ensure(e, S, err)); /* a device-tier cache was detached: own slots again */
        int G = S->ec.tab.n_slots;
        for (int g0 = 0; g0 < S->plan.n_used; g0 += G) {
            int gn = S->plan.n_used - g0 < G ? S->plan.n_used - g0 : G;
            /* Slots pinned by the previous group (or layer) are free again once
             * the kernels that read them are done. */
            if (g0 > 0) CUDA_CK(cudaStreamSynchronize(st));
            eng_slot_table_unpin_all(&S->ec.tab);
            CK(cu_expert_cache_fill(&S->ec, p, l, S->plan.used + g0, gn, w->h_ex, st, err));
            for (int i = 0; i < gn; i++) {
                w->h_ex[i].start = S->plan.start[g0 + i];
                w->h_ex[i].count = S->plan.count[g0 + i];
            }
            CUDA_CK(cudaMemcpyAsync(w->ex, w->h_ex, sizeof(cu_moe_expert) * (size_t)gn, cudaMemcpyHostToDevice, st));
            CK(cu_moe_gate_up(st, w->hmid, w->h, w->pair_row, w->ex, gn, dim, ffn, err));
            CK(cu_moe_down(st, w->eo, w->hmid, w->ex, gn, dim, ffn, err));
        }
    }
    CK(moe_tail(e, S, l, T, err));
fail:
    free(allowed);
    return rc;
}

/* ---- device-side routing (the fast path) ---------------------------------------
 * When every expert of the model is resident (the backend's own slots hold
 * them all, or engine/cache.c's device tier holds them all and the backend
 * has pinned them), d_tab (layer, expert) -> slot is complete: top-k ids stay
 * on the device, cu_moe_route_plan groups them and points the grouped kernels
 * at the slots, and no layer synchronises with the host. The routing reaches
 * the host once per step, through the pinned ring h_rids/h_rws (routing
 * callback: the predictor, traces, metrics). Anything else (a miss possible,
 * substitute decisions to take) runs moe_layer above: routing to the host per
 * layer, loading only what is missing. */

/* Own slots again after a device-tier cache was detached. */
static emoe_status own_slots_ensure(eng_engine *e, cu_state *S, emoe_err *err)
{
    if (S->ec_ready) return EMOE_OK;
    const eng_model_desc *d = &e->d;
    emoe_status rc = cu_expert_cache_init(&S->ec, d->n_layers, d->n_experts, d->dim, d->expert_ffn, (int)S->ec_slots, err);
    if (rc) return rc;
    S->ec_ready = 1;
    S->ec_gen++;
    S->expert_bytes = S->ec_slots * S->ec.slot_elems * sizeof(cu_bf16);
    note_peak(S);
    return EMOE_OK;
}

/* *fast = 1 when d_tab is complete for the current provider (building it if
 * every expert is resident now). A failure of the own slots' fill is the
 * step's error; anything the device tier refuses just means the slow path. */
static emoe_status fast_check(eng_engine *e, cu_state *S, int *fast, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    const eng_expert_provider *p = e->prov;
    cu_ws *w = &S->ws;
    int L = d->n_layers, E = d->n_experts;
    emoe_status rc = EMOE_OK;
    *fast = 0;
    if (S->fast && S->fast_prov == p && S->fast_ctx == p->ctx && (p->device_views || S->fast_gen == S->ec_gen)) {
        *fast = 1;
        return EMOE_OK;
    }
    if (S->fast) {
        CUDA_CHECK(err, cudaStreamSynchronize(S->st));
        fast_drop(e, S);
    }
    if (p->device_views) {
        if (!S->sm || !p->is_resident) return EMOE_OK;
        uint64_t nk = (uint64_t)L * (uint64_t)E, h = S->miss_hint < nk ? S->miss_hint : 0;
        if (!p->is_resident(p->ctx, (int)(h / E), (int)(h % E))) return EMOE_OK; /* usually still missing: O(1) */
        for (uint64_t i = 0; i < nk; i++)
            if (!p->is_resident(p->ctx, (int)(i / E), (int)(i % E))) { S->miss_hint = i; return EMOE_OK; }
        int qfmt = cu_slot_mem_format(S->sm);
        for (int l = 0; l < L; l++)
            for (int x = 0; x < E; x++) {
                eng_expert_weights ew = {}; /* providers that never quantize leave qfmt/lowbit as they are */
                emoe_err e2 = {};
                int got = p->acquire(p->ctx, l, x, &ew, &e2) == EMOE_OK;
                if (!got || ew.qfmt != qfmt || ew.lowbit) { /* evicted meanwhile (or not our slots): stay slow */
                    for (int i = l * E + x - !got; i >= 0 && p->release; i--) p->release(p->ctx, i / E, i % E);
                    return EMOE_OK;
                }
                S->h_tab[(size_t)l * E + x] = (const cu_bf16 *)ew.gate.data;
            }
        S->tier_pins = 1;
        S->fast_qfmt = qfmt;
    } else {
        if ((rc = own_slots_ensure(e, S, err)) != EMOE_OK) return rc;
        if ((uint64_t)S->ec.tab.n_slots < (uint64_t)L * (uint64_t)E) {
            /* Optimistic: the table of what the slots hold now (only this
             * thread evicts them, between steps); a step that needs a
             * missing expert sees the flag and is re-run on the host path. */
            if (S->opt_skip || (p->substitute && p->substitute(p->ctx))) return EMOE_OK;
            S->fast_qfmt = 0;
            if (S->gx_qfmt != 0) { graphs_drop(S); S->gx_qfmt = 0; }
            size_t fd3 = S->ec.slot_elems;
            for (int key = 0; key < L * E; key++) {
                int sl = eng_slot_table_peek(&S->ec.tab, key);
                S->h_tab[key] = sl >= 0 ? S->ec.slots + (size_t)sl * fd3 : NULL;
            }
            CUDA_CHECK(err, cudaMemcpyAsync(S->d_tab, S->h_tab, sizeof *S->h_tab * (size_t)L * E, cudaMemcpyHostToDevice, S->st));
            *fast = 2;
            return EMOE_OK;
        }
        /* Load every expert once (the slots hold them all: nothing is ever
         * evicted afterwards). */
        for (int l = 0; l < L; l++) {
            eng_slot_table_unpin_all(&S->ec.tab);
            if ((rc = cu_expert_cache_fill(&S->ec, p, l, S->all_ids, E, w->h_ex, S->st, err)) != EMOE_OK) {
                eng_slot_table_unpin_all(&S->ec.tab);
                return emoe_err_prefix(err, "layer %d: loading every expert", l);
            }
            for (int x = 0; x < E; x++) S->h_tab[(size_t)l * E + x] = w->h_ex[x].gate;
        }
        eng_slot_table_unpin_all(&S->ec.tab);
        S->fast_qfmt = 0; /* own slots: bf16 */
    }
    /* The graphs' MoE launches are per format: recapture after a change. */
    if (S->gx_qfmt != S->fast_qfmt) {
        graphs_drop(S);
        S->gx_qfmt = S->fast_qfmt;
    }
    /* Pageable source: staged at the call (the host table may change later). */
    CUDA_CHECK(err, cudaMemcpyAsync(S->d_tab, S->h_tab, sizeof *S->h_tab * (size_t)L * E, cudaMemcpyHostToDevice, S->st));
    S->fast = 1;
    S->fast_prov = p;
    S->fast_ctx = p->ctx;
    S->fast_gen = S->ec_gen;
    *fast = 1;
    LOG_INFO("cuda: every expert resident (%s): routing stays on the device, no per-layer host synchronisation",
             p->device_views ? "expert cache device tier" : "backend slots");
    return EMOE_OK;
}

/* The MoE block of layer l for T rows with the routing on the device. Safe to
 * capture in a CUDA graph (no host synchronisation, pinned copies only). */
static emoe_status moe_layer_fast(eng_engine *e, cu_state *S, int l, int T, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    const cu_layer *Ly = &S->L[l];
    cu_ws *w = &S->ws;
    cudaStream_t st = S->st;
    int E = d->n_experts, k = d->top_k, dim = d->dim, ffn = d->expert_ffn, P = T * k;
    int ex_cap = E < P ? E : P;
    int qf = S->fast_qfmt;
    /* slot layout: bf16 [gate | up | down], or the packed extent's rows */
    size_t up_off = qf ? (size_t)ffn * cu_quant_row_bytes(qf, dim) : (size_t)ffn * (size_t)dim * sizeof(cu_bf16);
    emoe_status rc = EMOE_OK;
    CK(cu_linear_gemv(st, w->probs, w->h, Ly->router, NULL, T, E, dim, err));
    CK(cu_router_topk(st, w->probs, w->ids, w->rw, T, E, k, d->norm_topk, err));
    CK(cu_moe_route_plan(st, w->ex, ex_cap, w->pair_row, w->pair_of, w->ids, T, k, E, S->d_tab + (size_t)l * E, up_off,
                         2 * up_off, w->flags, err));
    {
        size_t at = (size_t)l * (size_t)w->T * (size_t)k;
        CUDA_CK(cudaMemcpyAsync(w->h_rids + at, w->ids, sizeof(int) * (size_t)P, cudaMemcpyDeviceToHost, st));
        CUDA_CK(cudaMemcpyAsync(w->h_rws + at, w->rw, sizeof(float) * (size_t)P, cudaMemcpyDeviceToHost, st));
    }
    if (qf) {
        CK(cu_moe_gate_up_q(st, w->hmid, w->h, w->pair_row, w->ex, ex_cap, dim, ffn, qf, err));
        CK(cu_moe_down_q(st, w->eo, w->hmid, w->ex, ex_cap, dim, ffn, qf, err));
    } else {
        CK(cu_moe_gate_up(st, w->hmid, w->h, w->pair_row, w->ex, ex_cap, dim, ffn, err));
        CK(cu_moe_down(st, w->eo, w->hmid, w->ex, ex_cap, dim, ffn, err));
    }
    CK(moe_tail(e, S, l, T, err));
fail:
    return rc;
}

/* Embedding and every layer for the T rows uploaded to the workspace; fast:
 * device-side routing (capturable), else per-layer host routing. */
static emoe_status run_layers(eng_engine *e, cu_state *S, int T, int fast, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    cu_ws *w = &S->ws;
    cudaStream_t st = S->st;
    emoe_status rc = EMOE_OK;
    int dim = d->dim, hd = d->head_dim, qd = d->n_heads * hd, kvd = d->n_kv_heads * hd;
    int splits = cu_att_splits(T, d->n_heads);
    if (fast) CUDA_CK(cudaMemcpyAsync(w->flags, w->h_zero, sizeof(int) * 2, cudaMemcpyHostToDevice, st));
    CK(cu_embed(st, w->x, S->embed, w->tok, T, dim, d->vocab, err));
    CK(cu_rmsnorm(st, w->h, w->x, NULL, S->L[0].attn_norm, T, dim, d->eps, err));
    for (int l = 0; l < d->n_layers; l++) {
        const cu_layer *L = &S->L[l];
        /* w->h = RMSNorm(x) * attn_norm: layer 0 above, the others from the
         * previous layer's fused combine (moe_tail) */
        CK(cu_linear(&S->lin, st, w->q, w->h, L->wq, L->bq, T, qd, dim, err));
        CK(cu_linear(&S->lin, st, w->k, w->h, L->wk, L->bk, T, kvd, dim, err));
        CK(cu_linear(&S->lin, st, w->v, w->h, L->wv, L->bv, T, kvd, dim, err));
        /* q/k norm + RoPE + KV write: one fused launch (qk_rope_kv.cuh) */
        {
            int nm = d->qk_norm == ENG_QKNORM_PER_HEAD ? 1 : d->qk_norm == ENG_QKNORM_FULL ? 2 : 0;
            CK(cu_qk_rope_kv(st, w->q, w->k, w->v, T, d->n_heads, d->n_kv_heads, hd, nm, L->q_norm, L->k_norm, d->eps, w->pos,
                             S->inv_freq, w->rows, l, S->kv_bf16, err));
        }
        CK(cu_attention(st, w->att, w->q, w->rows, T, l, d->n_heads, d->n_kv_heads, hd, S->kv_bf16, splits, w->att_part, err));
        CK(cu_linear(&S->lin, st, w->tmp, w->att, L->wo, NULL, T, dim, qd, err));
        CK(cu_add_rmsnorm(st, w->x, w->tmp, w->h, L->ffn_norm, T, dim, d->eps, err)); /* residual + ffn norm, fused */
        /* the MoE block adds its output to x itself (moe_tail) */
        if ((rc = fast ? moe_layer_fast(e, S, l, T, err) : moe_layer(e, S, l, T, err)) != EMOE_OK) {
            emoe_err_prefix(err, "layer %d", l);
            goto fail;
        }
    }
    if (fast) CUDA_CK(cudaMemcpyAsync(w->h_flags, w->flags, sizeof(int) * 2, cudaMemcpyDeviceToHost, st));
fail:
    return rc;
}

/* Final norm + lm_head of cnt rows (rowmap: device row indices) into w->logits. */
static emoe_status run_head(eng_engine *e, cu_state *S, const int *rowmap, int cnt, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    cu_ws *w = &S->ws;
    emoe_status rc = EMOE_OK;
    CK(cu_rmsnorm(S->st, w->h, w->x, rowmap, S->final_norm, cnt, d->dim, d->eps, err));
    CK(cu_linear(&S->lin, S->st, w->logits, w->h, S->lm_head, NULL, cnt, d->vocab, d->dim, err));
fail:
    return rc;
}

/* Rows of the graph for a decode step of T rows: T up to 8 (the GEMV path
 * takes them one by one), else 16 or 32 (padding rows computed and dropped). */
static int graph_bucket(int T) { return T <= 8 ? T : T <= 16 ? 16 : 32; }

/* Captures the step body for B rows into S->gx[B]. */
static emoe_status graph_capture(eng_engine *e, cu_state *S, int B, emoe_err *err)
{
    cudaGraph_t g = NULL;
    CUDA_CHECK(err, cudaStreamBeginCapture(S->st, cudaStreamCaptureModeRelaxed));
    emoe_status rc = run_layers(e, S, B, 1, err);
    if (rc == EMOE_OK) rc = run_head(e, S, S->ws.rowmap, B, err);
    cudaError_t ce = cudaStreamEndCapture(S->st, &g);
    if (rc == EMOE_OK && ce != cudaSuccess) rc = cu_err_cuda(err, ce, "cudaStreamEndCapture", __func__, __FILE__, __LINE__);
    if (rc == EMOE_OK) {
        ce = cudaGraphInstantiate(&S->gx[B], g, 0);
        if (ce != cudaSuccess) { S->gx[B] = NULL; rc = cu_err_cuda(err, ce, "cudaGraphInstantiate", __func__, __FILE__, __LINE__); }
    }
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    return rc;
}

static emoe_status cuda_step(eng_engine *e, eng_batch_item *items, int n, int T, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    cu_state *S = (cu_state *)e->bs;
    cu_ws *w = &S->ws;
    cudaStream_t st = S->st;
    emoe_status rc = EMOE_OK;
    int R = 0, fast = 0, decode = 1;
    uint64_t up0 = 0;
    CUDA_CK(cudaSetDevice(S->dev));
    CK(ws_ensure(S, d, T, err));
    {
        int r = 0;
        for (int i = 0; i < n; i++) {
            cu_seq *q = (cu_seq *)items[i].seq->be;
            decode &= items[i].n_ids == 1 && (items[i].logits || items[i].all_logits);
            for (int j = 0; j < items[i].n_ids; j++, r++) {
                w->h_tok[r] = items[i].ids[j];
                w->h_pos[r] = items[i].seq->len + j;
                w->h_rows[r].kv = q->kv;
                w->h_rows[r].cap = items[i].seq->cap;
                w->h_rows[r].pos = w->h_pos[r];
                w->row_seq[r] = items[i].seq;
            }
        }
    }
    up0 = S->ec_ready ? S->ec.upload_bytes : 0;
    CK(fast_check(e, S, &fast, err));
    /* Which rows want logits, and where they go. */
    for (int i = 0, r = 0; i < n; i++) {
        eng_batch_item *it = &items[i];
        int first = it->all_logits ? 0 : it->n_ids - 1;
        if (it->all_logits || it->logits)
            for (int j = first; j < it->n_ids; j++) {
                w->h_rowmap[R] = r + j;
                w->dest[R] = it->all_logits ? it->all_logits + (size_t)(j - first) * d->vocab : it->logits;
                R++;
            }
        r += it->n_ids;
    }
    {
        int B = graph_bucket(T);
        /* optimistic steps: no padding rows (their experts could miss) */
        int use_graph = fast && S->graphs && decode && T <= GRAPH_MAX_T && !S->gx_failed[B] && (fast == 1 || B == T);
        int rows = use_graph ? B : T;
        if (use_graph)
            for (int r = T; r < B; r++) { /* padding rows: token 0 at position 0 of a scratch KV */
                w->h_tok[r] = 0;
                w->h_pos[r] = 0;
                w->h_rows[r].kv = S->pad_kv;
                w->h_rows[r].cap = 1;
                w->h_rows[r].pos = 0;
                w->h_rowmap[r] = r;
            }
        CUDA_CK(cudaMemcpyAsync(w->tok, w->h_tok, sizeof(int32_t) * (size_t)rows, cudaMemcpyHostToDevice, st));
        CUDA_CK(cudaMemcpyAsync(w->pos, w->h_pos, sizeof(int) * (size_t)rows, cudaMemcpyHostToDevice, st));
        CUDA_CK(cudaMemcpyAsync(w->rows, w->h_rows, sizeof(cu_att_row) * (size_t)rows, cudaMemcpyHostToDevice, st));
        if (R > 0) CUDA_CK(cudaMemcpyAsync(w->rowmap, w->h_rowmap, sizeof(int) * (size_t)(use_graph ? B : R), cudaMemcpyHostToDevice, st));
        if (use_graph && !S->gx[B]) {
            emoe_err ge = {};
            if (graph_capture(e, S, B, &ge) != EMOE_OK) {
                S->gx_failed[B] = 1; /* eager from now on for this bucket */
                LOG_WARN("cuda: CUDA graph for %d rows not usable, running eagerly: %s", B, ge.msg);
                use_graph = 0;
            }
        }
        if (use_graph) {
            CUDA_CK(cudaGraphLaunch(S->gx[B], st));
            S->graph_launches++;
            for (int i = 0; i < R; i++)
                CUDA_CK(cudaMemcpyAsync(w->dest[i], w->logits + (size_t)i * d->vocab, sizeof(float) * (size_t)d->vocab,
                                        cudaMemcpyDeviceToHost, st));
        } else {
            CK(run_layers(e, S, T, fast, err));
            for (int c0 = 0; c0 < R; c0 += LOGIT_ROWS) {
                int cnt = R - c0 < LOGIT_ROWS ? R - c0 : LOGIT_ROWS;
                CK(run_head(e, S, w->rowmap + c0, cnt, err));
                for (int i = 0; i < cnt; i++)
                    CUDA_CK(cudaMemcpyAsync(w->dest[c0 + i], w->logits + (size_t)i * d->vocab, sizeof(float) * (size_t)d->vocab,
                                            cudaMemcpyDeviceToHost, st));
                /* The next chunk reuses w->logits (stream order keeps it safe; the
                 * sync also bounds how much pageable copying is in flight). */
                CUDA_CK(cudaStreamSynchronize(st));
            }
        }
    }
    CUDA_CK(cudaStreamSynchronize(st));
    if (fast) {
        if ((w->h_flags[0] & CU_ROUTE_MISSING) && fast == 2) {
            /* (checked first: after a skipped expert later layers may see
             * garbage, even non-finite router logits) */
            /* An optimistic step needed an expert its slots lack: re-run it
             * on the host path, which loads what is missing (this step's KV
             * rows are rewritten; nothing was reported). Host path until a
             * step needs no load. */
            S->opt_skip = 1;
            S->opt_redos++;
            return cuda_step(e, items, n, T, err);
        }
        if (w->h_flags[0] & CU_ROUTE_BAD_ID) {
            rc = emoe_errf(err, EMOE_EDEVICE, "the router produced no valid expert (non-finite router logits?)");
            goto fail;
        }
        if (w->h_flags[0] & CU_ROUTE_MISSING) { /* cannot happen while the pins/slots hold: a bug */
            fast_drop(e, S);
            rc = emoe_errf(err, EMOE_EDEVICE, "device expert table incomplete (an expert without a slot)");
            goto fail;
        }
        S->fast_steps++; /* a step that ran device-routed to the end */
        if (fast == 2) { /* the slots' LRU sees the experts this step used */
            const int *ids = w->h_rids;
            for (int l = 0; l < d->n_layers; l++)
                for (int t = 0; t < T; t++)
                    for (int j = 0; j < d->top_k; j++) {
                        int key = l * d->n_experts + ids[((size_t)l * (size_t)w->T + (size_t)t) * (size_t)d->top_k + j], miss, ev;
                        if (eng_slot_table_peek(&S->ec.tab, key) >= 0) eng_slot_table_get(&S->ec.tab, key, &miss, &ev);
                    }
            eng_slot_table_unpin_all(&S->ec.tab);
        }
        /* The routing of the step, once, in the CPU's order (layer, row). */
        if (e->cb)
            for (int l = 0; l < d->n_layers; l++)
                for (int t = 0; t < T; t++) {
                    size_t at = ((size_t)l * (size_t)w->T + (size_t)t) * (size_t)d->top_k;
                    e->cb(e->cb_user, w->row_seq[t]->tag, w->h_pos[t], l, w->h_rids + at, w->h_rws + at, d->top_k);
                }
    } else {
        S->slow_steps++;
        /* own slots short of all experts: try device routing again once a
         * host-routed step needed no upload */
        if (!e->prov->device_views && S->ec_ready) {
            if (S->ec.upload_bytes == up0) S->opt_skip = 0;
        }
    }
    for (int i = 0; i < n; i++) {
        eng_batch_item *it = &items[i];
        if (it->all_logits && it->logits)
            memcpy(it->logits, it->all_logits + (size_t)(it->n_ids - 1) * d->vocab, sizeof(float) * (size_t)d->vocab);
    }
    return EMOE_OK;
fail:
    /* Drain what was queued before reporting (buffers and slots are reused by
     * the next step); a sticky fault makes this fail too, which is ignored. */
    cudaStreamSynchronize(st);
    cudaGetLastError();
    if (S->ec_ready) eng_slot_table_unpin_all(&S->ec.tab);
    return rc;
}
/* eng_backend_slot_mem: the cache's device tier becomes the GPU's expert
 * memory; the backend's own slots are freed (recreated if the cache detaches). */
static const cache_slot_mem *cuda_slot_mem(eng_engine *e, int qfmt)
{
    cu_state *S = (cu_state *)e->bs;
    if (!S) return NULL;
    if (qfmt != 0 && cu_quant_row_bytes(qfmt, 1) == 0) {
        LOG_ERROR("cuda: expert cache slot memory: unknown expert format %d", qfmt);
        return NULL;
    }
    if (S->sm && cu_slot_mem_format(S->sm) != qfmt) {
        /* One format per slot memory: a new one; the old one lives on while
         * its cache holds slots (kept until the next change or engine free). */
        cu_slot_mem_release(S->sm_prev);
        S->sm_prev = S->sm;
        S->sm = NULL;
    }
    if (!S->sm) {
        eng_expert_weights w = {};
        emoe_err err = {};
        if (e->ck_provider.acquire(e->ck_provider.ctx, 0, 0, &w, &err) != EMOE_OK) {
            LOG_ERROR("cuda: expert dtype: %s", err.msg);
            return NULL;
        }
        eng_dtype dt = w.gate.dtype;
        if (e->ck_provider.release) e->ck_provider.release(e->ck_provider.ctx, 0, 0);
        if (cu_slot_mem_new(e->d.dim, e->d.expert_ffn, dt, qfmt, &S->sm, &err) != EMOE_OK) {
            LOG_ERROR("cuda: expert cache slot memory: %s", err.msg);
            return NULL;
        }
    }
    if (S->ec_ready) {
        cudaStreamSynchronize(S->st);
        cu_expert_cache_free(&S->ec);
        S->ec_ready = 0;
        S->ec_gen++;
        S->expert_bytes = 0;
        LOG_INFO("cuda: expert slots now belong to the expert cache's device tier (GPU memory)");
    }
    return cu_slot_mem_ops(S->sm);
}

extern "C" const eng_backend_ops eng_cuda_backend = {
    "cuda", cuda_step, cuda_init, cuda_engine_free, cuda_seq_init, cuda_seq_free, cuda_seq_reserve, cuda_stats,
    cuda_seq_copy, cuda_slot_mem,
};
