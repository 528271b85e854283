/*
 * engine.c — opening a model directory (config + checkpoint + weight binding
 * with shape checks), the checkpoint's expert provider, and sequences (KV
 * caches grown in chunks as they fill).
 */
#include "engine/engine_internal.h"
#include "engine/dense_quant.h"
#include "engine/residency.h"

#include "engine/cuda_plugin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static emoe_status bind1(eng_engine *e, eng_tensor *t, const char *name, int64_t d0, const char *what, emoe_err *err)
{
    int64_t shape[1] = {d0};
    return ckpt_bind(e->ck, name, 1, shape, what, t, err);
}

static emoe_status bind2(eng_engine *e, eng_tensor *t, const char *name, int64_t d0, int64_t d1, const char *what, emoe_err *err)
{
    int64_t shape[2] = {d0, d1};
    return ckpt_bind(e->ck, name, 2, shape, what, t, err);
}

#define B(x) do { if ((rc = (x)) != EMOE_OK) return rc; } while (0)

static emoe_status bind_weights(eng_engine *e, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    emoe_status rc;
    char n[256];
    int64_t qd = (int64_t)d->n_heads * d->head_dim, kvd = (int64_t)d->n_kv_heads * d->head_dim;
    B(bind2(e, &e->w.embed, "model.embed_tokens.weight", d->vocab, d->dim, "(vocab_size, hidden_size)", err));
    B(bind1(e, &e->w.final_norm, "model.norm.weight", d->dim, "(hidden_size)", err));
    if (d->tied_embeddings) e->w.lm_head = e->w.embed;
    else B(bind2(e, &e->w.lm_head, "lm_head.weight", d->vocab, d->dim, "(vocab_size, hidden_size)", err));
    e->w.layers = emoe_calloc_array((size_t)d->n_layers, sizeof *e->w.layers);
    if (!e->w.layers) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    for (int l = 0; l < d->n_layers; l++) {
        eng_layer_weights *L = &e->w.layers[l];
#define NM(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
        B(bind1(e, &L->attn_norm, NM("input_layernorm.weight"), d->dim, "(hidden_size)", err));
        B(bind1(e, &L->ffn_norm, NM("post_attention_layernorm.weight"), d->dim, "(hidden_size)", err));
        B(bind2(e, &L->wq, NM("self_attn.q_proj.weight"), qd, d->dim, "(num_heads*head_dim, hidden_size)", err));
        B(bind2(e, &L->wk, NM("self_attn.k_proj.weight"), kvd, d->dim, "(num_kv_heads*head_dim, hidden_size)", err));
        B(bind2(e, &L->wv, NM("self_attn.v_proj.weight"), kvd, d->dim, "(num_kv_heads*head_dim, hidden_size)", err));
        B(bind2(e, &L->wo, NM("self_attn.o_proj.weight"), d->dim, qd, "(hidden_size, num_heads*head_dim)", err));
        if (d->qkv_bias) {
            B(bind1(e, &L->bq, NM("self_attn.q_proj.bias"), qd, "(num_heads*head_dim)", err));
            B(bind1(e, &L->bk, NM("self_attn.k_proj.bias"), kvd, "(num_kv_heads*head_dim)", err));
            B(bind1(e, &L->bv, NM("self_attn.v_proj.bias"), kvd, "(num_kv_heads*head_dim)", err));
        }
        if (d->qk_norm == ENG_QKNORM_PER_HEAD) {
            B(bind1(e, &L->q_norm, NM("self_attn.q_norm.weight"), d->head_dim, "(head_dim)", err));
            B(bind1(e, &L->k_norm, NM("self_attn.k_norm.weight"), d->head_dim, "(head_dim)", err));
        } else if (d->qk_norm == ENG_QKNORM_FULL) {
            B(bind1(e, &L->q_norm, NM("self_attn.q_norm.weight"), qd, "(num_heads*head_dim)", err));
            B(bind1(e, &L->k_norm, NM("self_attn.k_norm.weight"), kvd, "(num_kv_heads*head_dim)", err));
        }
        if (d->family == ENG_FAMILY_MIXTRAL)
            B(bind2(e, &L->router, NM("block_sparse_moe.gate.weight"), d->n_experts, d->dim, "(num_experts, hidden_size)", err));
        else
            B(bind2(e, &L->router, NM("mlp.gate.weight"), d->n_experts, d->dim, "(num_experts, hidden_size)", err));
        if (d->shared_ffn > 0) {
            B(bind2(e, &L->sh_gate, NM("mlp.shared_expert.gate_proj.weight"), d->shared_ffn, d->dim, "(shared_expert_intermediate_size, hidden_size)", err));
            B(bind2(e, &L->sh_up, NM("mlp.shared_expert.up_proj.weight"), d->shared_ffn, d->dim, "(shared_expert_intermediate_size, hidden_size)", err));
            B(bind2(e, &L->sh_down, NM("mlp.shared_expert.down_proj.weight"), d->dim, d->shared_ffn, "(hidden_size, shared_expert_intermediate_size)", err));
            B(bind2(e, &L->sh_expert_gate, NM("mlp.shared_expert_gate.weight"), 1, d->dim, "(1, hidden_size)", err));
        }
#undef NM
        /* Every routed expert must be present and well-shaped; checking the
         * headers touches no weight data. */
        for (int x = 0; x < d->n_experts; x++) {
            eng_expert_weights ew;
            B(eng_checkpoint_expert(e, l, x, &ew, err));
        }
    }
    return EMOE_OK;
}

emoe_status eng_checkpoint_expert(eng_engine *e, int layer, int expert, eng_expert_weights *w, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    if (layer < 0 || layer >= d->n_layers || expert < 0 || expert >= d->n_experts)
        return emoe_errf(err, EMOE_EINVAL, "expert (%d, %d) out of range", layer, expert);
    char g[128], u[128], dn[128];
    eng_expert_tensor_names(d, layer, expert, g, u, dn);
    emoe_status rc;
    B(bind2(e, &w->gate, g, d->expert_ffn, d->dim, "(expert intermediate size, hidden_size)", err));
    B(bind2(e, &w->up, u, d->expert_ffn, d->dim, "(expert intermediate size, hidden_size)", err));
    B(bind2(e, &w->down, dn, d->dim, d->expert_ffn, "(hidden_size, expert intermediate size)", err));
    return EMOE_OK;
}

static emoe_status ck_acquire(void *ctx, int layer, int expert, eng_expert_weights *w, emoe_err *err)
{
    eng_engine *e = ctx;
    emoe_status rc = eng_checkpoint_expert(e, layer, expert, w, err);
    unsigned char *seen = rc == EMOE_OK && e->ck_touched ? &e->ck_touched[(size_t)layer * e->d.n_experts + expert] : NULL;
    if (seen && !*seen) { /* first use: read the whole expert in long extents now, not page by page in the matmul */
        *seen = 1;
        eng_tensor_populate(&w->gate);
        eng_tensor_populate(&w->up);
        eng_tensor_populate(&w->down);
    }
    return rc;
}

/* A layer's experts, right after routing: those never used before are queued
 * for the reader threads ahead of the dense weights, so that they are read in
 * parallel while ck_acquire takes them one by one. */
static void ck_prefetch(void *ctx, int layer, const int *experts, int n)
{
    eng_engine *e = ctx;
    if (!e->res || !e->ck_touched) return;
    for (int i = 0; i < n; i++) {
        eng_expert_weights w;
        if (e->ck_touched[(size_t)layer * e->d.n_experts + experts[i]]) continue;
        if (eng_checkpoint_expert(e, layer, experts[i], &w, NULL) != EMOE_OK) continue;
        eng_residency_tensor(e->res, &w.gate, 1);
        eng_residency_tensor(e->res, &w.up, 1);
        eng_residency_tensor(e->res, &w.down, 1);
    }
}

int eng_backend_parse(const char *s, eng_backend_kind *out)
{
    if (!s) return -1;
    if (!strcmp(s, "cpu")) *out = ENG_BACKEND_CPU;
    else if (!strcmp(s, "auto")) *out = ENG_BACKEND_AUTO;
    else if (!strcmp(s, "cuda")) *out = ENG_BACKEND_CUDA;
    else return -1;
    return 0;
}

/* Picks the backend named by kind: AUTO is CUDA only when the build has it and
 * a device answers; CUDA without either is an error naming the reason. */
static emoe_status pick_backend(int kind, const eng_backend_ops **be, emoe_err *err)
{
    *be = &eng_cpu_backend;
    if (kind == ENG_BACKEND_CPU) return EMOE_OK;
    if (kind != ENG_BACKEND_AUTO && kind != ENG_BACKEND_CUDA)
        return emoe_errf(err, EMOE_EINVAL, "unknown backend %d (expected cpu, cuda or auto)", kind);
    char why[1024] = "";
    const emoe_cuda_plugin *pl = eng_cuda_plugin(why, sizeof why, NULL);
    if (!pl) {
        if (kind == ENG_BACKEND_CUDA) return emoe_errf(err, EMOE_EUNSUP, "backend cuda: no CUDA support: %s", why);
        LOG_INFO("backend auto: no CUDA support (%s); using cpu", why);
        return EMOE_OK;
    }
    int nd = pl->device_count(why, sizeof why);
    if (nd > 0) { *be = pl->backend; return EMOE_OK; }
    if (kind == ENG_BACKEND_CUDA)
        return emoe_errf(err, EMOE_EUNSUP, "backend cuda: no usable CUDA device (%s)", why);
    LOG_INFO("backend auto: no usable CUDA device (%s); using cpu", why);
    return EMOE_OK;
}

emoe_status eng_open(const char *dir, const eng_open_opts *opts, eng_engine **out, emoe_err *err)
{
    *out = NULL;
    eng_engine *e = calloc(1, sizeof *e);
    if (!e) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    emoe_status rc;
    e->dir = strdup(dir);
    if ((rc = eng_desc_load(dir, &e->d, err)) != EMOE_OK) goto fail;
    if ((rc = ckpt_open(dir, &e->ck, err)) != EMOE_OK) goto fail;
    if ((rc = bind_weights(e, err)) != EMOE_OK) goto fail;
    /* Read the dense weights in the background, in the order the first token
     * uses them, at the disk's rate (engine/residency.h). */
    e->res = eng_residency_new(ENG_RESIDENCY_THREADS);
    eng_weights_populate(e->res, &e->w, &e->d);
    e->dense_ticket = eng_residency_ticket(e->res);
    e->ck_touched = calloc((size_t)e->d.n_layers * (size_t)e->d.n_experts, 1);
    if (!e->ck_touched) { rc = emoe_errf(err, EMOE_ENOMEM, "out of memory"); goto fail; }
    e->max_ctx = e->d.max_ctx;
    if (opts && opts->max_ctx > 0 && opts->max_ctx < e->max_ctx) e->max_ctx = opts->max_ctx;
    e->kv_dtype = ENG_DT_F32;
    if (opts && opts->kv_dtype) {
        if (opts->kv_dtype != ENG_DT_F16 && opts->kv_dtype != ENG_DT_BF16) {
            rc = emoe_errf(err, EMOE_EINVAL, "kv_dtype %d is not f32, f16 or bf16", opts->kv_dtype);
            goto fail;
        }
        e->kv_dtype = (eng_dtype)opts->kv_dtype;
    }
    e->pool = eng_pool_new(opts ? opts->n_threads : 0);
    int half = e->d.head_dim / 2;
    e->inv_freq = malloc(sizeof(float) * (size_t)half);
    if (!e->pool || !e->inv_freq) { rc = emoe_errf(err, EMOE_ENOMEM, "out of memory"); goto fail; }
    /* HF: 1 / base ** (arange(0, dim, 2).float() / dim), in float32. */
    for (int i = 0; i < half; i++) {
        float ex = (float)(2 * i) / (float)e->d.head_dim;
        e->inv_freq[i] = 1.0f / powf(e->d.rope_theta, ex);
    }
    e->ck_provider.ctx = e;
    e->ck_provider.acquire = ck_acquire;
    e->ck_provider.prefetch = ck_prefetch;
    e->prov = &e->ck_provider;
    e->be = &eng_cpu_backend;
    const eng_backend_ops *be;
    if ((rc = pick_backend(opts ? opts->backend : ENG_BACKEND_CPU, &be, err)) != EMOE_OK) goto fail;
    e->be = be;
    if (opts && opts->dense_format != DENSE_NATIVE) { /* engine/dense_quant.c */
        if (be != &eng_cpu_backend) { rc = emoe_errf(err, EMOE_EUNSUP, "dense_format %s: only the cpu backend, not %s", dense_format_name(opts->dense_format), be->name); goto fail; }
        if ((rc = dense_quant_build(e->pool, &e->w, &e->d, opts->dense_format, &e->dq, err)) != EMOE_OK) goto fail;
    }
    if (be->init && (rc = be->init(e, opts, err)) != EMOE_OK) {
        emoe_err_prefix(err, "backend %s", be->name);
        goto fail;
    }
    *out = e;
    return EMOE_OK;
fail:
    eng_free(e);
    return rc;
}

double eng_dense_wait(eng_engine *e)
{
    if (!e || !e->res) return 0.0;
    double t0 = emoe_now();
    eng_residency_wait(e->res, e->dense_ticket);
    return emoe_now() - t0;
}

void eng_free(eng_engine *e)
{
    if (!e) return;
    if (e->be && e->be->engine_free) e->be->engine_free(e);
    eng_residency_free(e->res); /* before the mapping goes */
    eng_pool_free(e->pool);
    dense_quant_free(e->dq);
    ckpt_close(e->ck);
    free(e->w.layers);
    free(e->inv_freq);
    free(e->ck_touched);
    free(e->dir);
    free(e);
}

const eng_model_desc *eng_desc(const eng_engine *e) { return &e->d; }
const char *eng_model_dir(const eng_engine *e) { return e->dir; }
int eng_max_ctx(const eng_engine *e) { return e->max_ctx; }
int eng_kv_dtype(const eng_engine *e) { return (int)e->kv_dtype; }
int eng_dense_format(const eng_engine *e) { return e->dq ? DENSE_Q8 : DENSE_NATIVE; }
const eng_expert_provider *eng_checkpoint_provider(eng_engine *e) { return &e->ck_provider; }
void eng_set_expert_provider(eng_engine *e, const eng_expert_provider *p) { e->prov = p ? p : &e->ck_provider; }

const struct cache_slot_mem *eng_backend_slot_mem(eng_engine *e) { return eng_backend_slot_mem_format(e, 0); }
const struct cache_slot_mem *eng_backend_slot_mem_format(eng_engine *e, int qfmt)
{
    return e->be->slot_mem ? e->be->slot_mem(e, qfmt) : NULL;
}
void eng_set_routing_cb(eng_engine *e, eng_routing_cb cb, void *user) { e->cb = cb; e->cb_user = user; }

uint64_t eng_expert_bytes_one(const eng_engine *e)
{
    const eng_model_desc *d = &e->d;
    eng_expert_weights w;
    if (eng_checkpoint_expert((eng_engine *)e, 0, 0, &w, NULL) != EMOE_OK) return 0;
    return (uint64_t)d->expert_ffn * (uint64_t)d->dim *
           (eng_dtype_size(w.gate.dtype) + eng_dtype_size(w.up.dtype) + eng_dtype_size(w.down.dtype));
}

uint64_t eng_expert_bytes_total(const eng_engine *e)
{
    return eng_expert_bytes_one(e) * (uint64_t)e->d.n_layers * (uint64_t)e->d.n_experts;
}

eng_seq *eng_seq_new(eng_engine *e, int max_len, emoe_err *err)
{
    eng_seq *s = calloc(1, sizeof *s);
    if (s) {
        s->k = calloc((size_t)e->d.n_layers, sizeof *s->k);
        s->v = calloc((size_t)e->d.n_layers, sizeof *s->v);
    }
    if (!s || !s->k || !s->v) {
        eng_seq_free(s);
        emoe_errf(err, EMOE_ENOMEM, "out of memory for a sequence");
        return NULL;
    }
    s->e = e;
    s->max_len = max_len > 0 && max_len < e->max_ctx ? max_len : e->max_ctx;
    if (e->be->seq_init && e->be->seq_init(s, err) != EMOE_OK) {
        eng_seq_free(s);
        return NULL;
    }
    return s;
}

void eng_seq_free(eng_seq *s)
{
    if (!s) return;
    if (s->e && s->e->be->seq_free) s->e->be->seq_free(s);
    if (s->k && s->v)
        for (int l = 0; l < s->e->d.n_layers; l++) { free(s->k[l]); free(s->v[l]); }
    free(s->k);
    free(s->v);
    free(s);
}

int eng_seq_reserve(eng_seq *s, int n)
{
    if (n <= s->cap) return 0;
    if (n > s->max_len) return -1;
    if (s->e->be->seq_reserve) return s->e->be->seq_reserve(s, n); /* sets s->cap */
    int cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    if (cap > s->max_len) cap = s->max_len;
    size_t kvd = (size_t)s->e->d.n_kv_heads * (size_t)s->e->d.head_dim, es = eng_dtype_size(s->e->kv_dtype);
    for (int l = 0; l < s->e->d.n_layers; l++) {
        void *k = realloc(s->k[l], es * kvd * (size_t)cap);
        if (!k) return -1;
        s->k[l] = k;
        void *v = realloc(s->v[l], es * kvd * (size_t)cap);
        if (!v) return -1;
        s->v[l] = v;
    }
    s->cap = cap;
    return 0;
}

eng_seq *eng_seq_fork(const eng_seq *src, int max_len, emoe_err *err)
{
    eng_engine *e = src->e;
    if (e->be->seq_init && !e->be->seq_copy) {
        emoe_errf(err, EMOE_EUNSUP, "the %s backend cannot fork a sequence", e->be->name);
        return NULL;
    }
    eng_seq *s = eng_seq_new(e, max_len, err);
    if (!s) return NULL;
    if (src->len > s->max_len || eng_seq_reserve(s, src->len > 0 ? src->len : 1)) {
        eng_seq_free(s);
        emoe_errf(err, EMOE_ENOMEM, "out of memory forking a sequence of %d positions", src->len);
        return NULL;
    }
    if (e->be->seq_copy) {
        if (e->be->seq_copy(s, src)) {
            eng_seq_free(s);
            emoe_errf(err, EMOE_EIO, "%s: copying a KV cache failed", e->be->name);
            return NULL;
        }
    } else {
        size_t row = eng_dtype_size(e->kv_dtype) * (size_t)e->d.n_kv_heads * (size_t)e->d.head_dim * (size_t)src->len;
        for (int l = 0; l < e->d.n_layers && row; l++) {
            memcpy(s->k[l], src->k[l], row);
            memcpy(s->v[l], src->v[l], row);
        }
    }
    s->len = src->len;
    return s;
}

int eng_seq_len(const eng_seq *s) { return s->len; }
void eng_seq_set_tag(eng_seq *s, void *tag) { s->tag = tag; }
void *eng_seq_tag(const eng_seq *s) { return s->tag; }
void eng_seq_truncate(eng_seq *s, int len) { if (len >= 0 && len < s->len) s->len = len; }
uint64_t eng_seq_substituted(const eng_seq *s) { return s->substituted; }
uint64_t eng_seq_lowbit(const eng_seq *s) { return s->lowbit; }

const char *eng_backend_name(const eng_engine *e) { return e->be->name; }

void eng_backend_stats_get(const eng_engine *e, eng_backend_stats *st)
{
    memset(st, 0, sizeof *st);
    if (e->be->stats) e->be->stats(e, st);
}

emoe_status eng_step(eng_engine *e, eng_batch_item *items, int n, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    if (n <= 0) return emoe_errf(err, EMOE_EINVAL, "empty step");
    int T = 0;
    for (int i = 0; i < n; i++) {
        eng_batch_item *it = &items[i];
        if (!it->seq || !it->ids || it->n_ids <= 0) return emoe_errf(err, EMOE_EINVAL, "step item %d has no tokens", i);
        for (int j = 0; j < n; j++)
            if (j != i && items[j].seq == it->seq) return emoe_errf(err, EMOE_EINVAL, "a sequence appears twice in one step");
        for (int j = 0; j < it->n_ids; j++)
            if (it->ids[j] < 0 || it->ids[j] >= d->vocab)
                return emoe_errf(err, EMOE_EINVAL, "token id %d is outside the vocabulary (0..%d)", it->ids[j], d->vocab - 1);
        if (it->n_ids > it->seq->max_len - it->seq->len)
            return emoe_errf(err, EMOE_EINVAL, "sequence of %d tokens would exceed its context of %d",
                             it->seq->len + it->n_ids, it->seq->max_len);
        if (T > INT32_MAX / 2 - it->n_ids) return emoe_errf(err, EMOE_EINVAL, "step too large");
        T += it->n_ids;
    }
    for (int i = 0; i < n; i++)
        if (eng_seq_reserve(items[i].seq, items[i].seq->len + items[i].n_ids) != 0)
            return emoe_errf(err, EMOE_ENOMEM, "out of memory growing a KV cache");
    emoe_status rc = e->be->step(e, items, n, T, err);
    if (rc == EMOE_OK)
        for (int i = 0; i < n; i++) items[i].seq->len += items[i].n_ids;
    return rc;
}

emoe_status eng_forward(eng_engine *e, eng_seq *s, const int32_t *ids, int n, float *last_logits, emoe_err *err)
{
    eng_batch_item it = {.seq = s, .ids = ids, .n_ids = n, .logits = last_logits};
    return eng_step(e, &it, 1, err);
}
