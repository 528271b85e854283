/*
 * model.c — config.json of qwen3_moe / qwen2_moe / mixtral / olmoe into one
 * family-neutral eng_model_desc. Defaults follow the families' Hugging Face
 * config classes; everything emoe does not implement is refused by name rather
 * than silently ignored (a model that runs wrong is worse than one that does not
 * load).
 */
#include "engine/model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *family_names[] = {"qwen3_moe", "qwen2_moe", "mixtral", "olmoe"};

const char *eng_family_name(eng_family f) { return (unsigned)f < 4 ? family_names[f] : "?"; }

int eng_family_from_name(const char *s, eng_family *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, family_names[i]) == 0) { *out = (eng_family)i; return 0; }
    return -1;
}

/* Integer field: required when def < 0 is not allowed... `req` says so. */
static emoe_status get_int(json_t *o, const char *path, const char *key, int req, long long def,
                           long long lo, long long hi, int *out, emoe_err *err)
{
    json_t *v = json_object_get(o, key);
    long long x;
    if (!v || json_is_null(v)) {
        if (req) return emoe_errf(err, EMOE_EINVAL, "%s: field '%s' is missing (an integer in %lld..%lld)", path, key, lo, hi);
        x = def;
    } else if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else {
        return emoe_errf(err, EMOE_EINVAL, "%s: field '%s' must be an integer", path, key);
    }
    if (x < lo || x > hi)
        return emoe_errf(err, EMOE_EINVAL, "%s: field '%s' is %lld, expected %lld..%lld", path, key, x, lo, hi);
    *out = (int)x;
    return EMOE_OK;
}

static emoe_status get_num(json_t *o, const char *path, const char *key, double def, double lo, double hi,
                           float *out, emoe_err *err)
{
    json_t *v = json_object_get(o, key);
    double x;
    if (!v || json_is_null(v)) x = def;
    else if (json_is_number(v)) x = json_number_value(v);
    else return emoe_errf(err, EMOE_EINVAL, "%s: field '%s' must be a number", path, key);
    if (!(x >= lo && x <= hi))
        return emoe_errf(err, EMOE_EINVAL, "%s: field '%s' is %g, expected %g..%g", path, key, x, lo, hi);
    *out = (float)x;
    return EMOE_OK;
}

static emoe_status get_bool(json_t *o, const char *path, const char *key, int def, int *out, emoe_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) { *out = def; return EMOE_OK; }
    if (!json_is_boolean(v)) return emoe_errf(err, EMOE_EINVAL, "%s: field '%s' must be true or false", path, key);
    *out = json_is_true(v);
    return EMOE_OK;
}

static int present(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v);
}

#define TRY(x) do { if ((rc = (x)) != EMOE_OK) goto out; } while (0)

emoe_status eng_desc_parse(const char *text, size_t len, const char *path, eng_model_desc *d, emoe_err *err)
{
    memset(d, 0, sizeof *d);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) return emoe_errf(err, EMOE_EINVAL, "%s: invalid JSON: %s (line %d, column %d)", path, je.text, je.line, je.column);
    emoe_status rc = EMOE_OK;
    if (!json_is_object(o)) { rc = emoe_errf(err, EMOE_EINVAL, "%s: not a JSON object", path); goto out; }
    json_t *mt = json_object_get(o, "model_type");
    if (!json_is_string(mt)) { rc = emoe_errf(err, EMOE_EINVAL, "%s: field 'model_type' is missing or not a string", path); goto out; }
    if (eng_family_from_name(json_string_value(mt), &d->family) != 0) {
        rc = emoe_errf(err, EMOE_EUNSUP, "%s: model_type '%s' is not supported (supported: qwen3_moe, qwen2_moe, mixtral, olmoe)",
                       path, json_string_value(mt));
        goto out;
    }
    snprintf(d->model_type, sizeof d->model_type, "%s", json_string_value(mt));
    if (present(o, "rope_scaling")) {
        rc = emoe_errf(err, EMOE_EUNSUP, "%s: field 'rope_scaling' is set; emoe supports only unscaled rotary embeddings", path);
        goto out;
    }
    json_t *rp = json_object_get(o, "rope_parameters");
    if (json_is_object(rp)) {
        json_t *ty = json_object_get(rp, "rope_type");
        if (ty && !(json_is_string(ty) && strcmp(json_string_value(ty), "default") == 0)) {
            rc = emoe_errf(err, EMOE_EUNSUP, "%s: rope_parameters.rope_type is not 'default'; emoe supports only unscaled rotary embeddings", path);
            goto out;
        }
    }
    json_t *act = json_object_get(o, "hidden_act");
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0)) {
        rc = emoe_errf(err, EMOE_EUNSUP, "%s: hidden_act must be \"silu\"", path);
        goto out;
    }
    TRY(get_int(o, path, "hidden_size", 1, 0, 1, 65536, &d->dim, err));
    TRY(get_int(o, path, "num_hidden_layers", 1, 0, 1, 1024, &d->n_layers, err));
    TRY(get_int(o, path, "num_attention_heads", 1, 0, 1, 1024, &d->n_heads, err));
    TRY(get_int(o, path, "num_key_value_heads", 0, d->n_heads, 1, d->n_heads, &d->n_kv_heads, err));
    if (d->n_heads % d->n_kv_heads != 0) {
        rc = emoe_errf(err, EMOE_EINVAL, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                       d->n_heads, d->n_kv_heads);
        goto out;
    }
    int def_hd = d->dim / d->n_heads;
    TRY(get_int(o, path, "head_dim", 0, def_hd, 2, 1024, &d->head_dim, err));
    if (d->head_dim % 2) { rc = emoe_errf(err, EMOE_EINVAL, "%s: head_dim %d must be even (rotary embedding)", path, d->head_dim); goto out; }
    if (!present(o, "head_dim") && d->dim % d->n_heads) {
        rc = emoe_errf(err, EMOE_EINVAL, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, d->dim, d->n_heads);
        goto out;
    }
    TRY(get_int(o, path, "vocab_size", 1, 0, 1, 1 << 24, &d->vocab, err));
    TRY(get_int(o, path, "max_position_embeddings", 0, 4096, 1, 1 << 24, &d->max_ctx, err));
    TRY(get_num(o, path, "rms_norm_eps", 1e-6, 1e-12, 1e-1, &d->eps, err));
    float theta_def = 10000.0f;
    if (json_is_object(rp) && json_is_number(json_object_get(rp, "rope_theta")))
        theta_def = (float)json_number_value(json_object_get(rp, "rope_theta"));
    TRY(get_num(o, path, "rope_theta", theta_def, 1.0, 1e12, &d->rope_theta, err));
    TRY(get_bool(o, path, "tie_word_embeddings", 0, &d->tied_embeddings, err));
    const char *nexp_key = d->family == ENG_FAMILY_MIXTRAL ? "num_local_experts" : "num_experts";
    TRY(get_int(o, path, nexp_key, 1, 0, 1, 4096, &d->n_experts, err));
    TRY(get_int(o, path, "num_experts_per_tok", 1, 0, 1, d->n_experts, &d->top_k, err));
    const char *ffn_key = (d->family == ENG_FAMILY_QWEN3_MOE || d->family == ENG_FAMILY_QWEN2_MOE) ? "moe_intermediate_size" : "intermediate_size";
    TRY(get_int(o, path, ffn_key, 1, 0, 1, 1 << 20, &d->expert_ffn, err));
    switch (d->family) {
    case ENG_FAMILY_MIXTRAL:
        d->norm_topk = 1;
        if (present(o, "sliding_window")) {
            rc = emoe_errf(err, EMOE_EUNSUP, "%s: field 'sliding_window' is set; emoe supports only full attention", path);
            goto out;
        }
        break;
    case ENG_FAMILY_OLMOE:
        d->qk_norm = ENG_QKNORM_FULL;
        TRY(get_bool(o, path, "norm_topk_prob", 0, &d->norm_topk, err));
        TRY(get_bool(o, path, "attention_bias", 0, &d->qkv_bias, err));
        if (present(o, "clip_qkv")) { rc = emoe_errf(err, EMOE_EUNSUP, "%s: field 'clip_qkv' is set; not supported", path); goto out; }
        break;
    case ENG_FAMILY_QWEN3_MOE:
    case ENG_FAMILY_QWEN2_MOE: {
        int usw = 0;
        TRY(get_bool(o, path, "use_sliding_window", 0, &usw, err));
        if (usw) { rc = emoe_errf(err, EMOE_EUNSUP, "%s: use_sliding_window is true; emoe supports only full attention", path); goto out; }
        TRY(get_bool(o, path, "norm_topk_prob", 0, &d->norm_topk, err));
        int step = 1;
        TRY(get_int(o, path, "decoder_sparse_step", 0, 1, 1, 1024, &step, err));
        json_t *mlo = json_object_get(o, "mlp_only_layers");
        if (step != 1 || (mlo && !(json_is_array(mlo) && json_array_size(mlo) == 0))) {
            rc = emoe_errf(err, EMOE_EUNSUP, "%s: dense (non-MoE) layers via decoder_sparse_step/mlp_only_layers are not supported", path);
            goto out;
        }
        if (d->family == ENG_FAMILY_QWEN3_MOE) {
            d->qk_norm = ENG_QKNORM_PER_HEAD;
            TRY(get_bool(o, path, "attention_bias", 0, &d->qkv_bias, err));
        } else {
            TRY(get_bool(o, path, "qkv_bias", 1, &d->qkv_bias, err));
            TRY(get_int(o, path, "shared_expert_intermediate_size", 0, 0, 0, 1 << 20, &d->shared_ffn, err));
            d->shared_gate = d->shared_ffn > 0;
        }
        break;
    }
    }
    json_t *bos = json_object_get(o, "bos_token_id");
    d->bos_id = json_is_integer(bos) ? (int)json_integer_value(bos) : -1;
    json_t *eos = json_object_get(o, "eos_token_id");
    if (json_is_integer(eos)) {
        d->eos_ids[d->n_eos++] = (int)json_integer_value(eos);
    } else if (json_is_array(eos)) {
        size_t i;
        json_t *e;
        json_array_foreach(eos, i, e) if (json_is_integer(e) && d->n_eos < ENG_MAX_EOS) d->eos_ids[d->n_eos++] = (int)json_integer_value(e);
    }
    for (int i = 0; i < d->n_eos; i++)
        if (d->eos_ids[i] < 0 || d->eos_ids[i] >= d->vocab) {
            rc = emoe_errf(err, EMOE_EINVAL, "%s: eos_token_id %d is outside the vocabulary (%d)", path, d->eos_ids[i], d->vocab);
            goto out;
        }
    if (d->bos_id >= d->vocab) d->bos_id = -1;
out:
    json_decref(o);
    return rc;
}

emoe_status eng_desc_load(const char *dir, eng_model_desc *d, emoe_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return emoe_errf(err, EMOE_ENOTFOUND, "%s: cannot open (is '%s' a Hugging Face model directory?)", path, dir);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > (16u << 20)) { free(buf); fclose(f); return emoe_errf(err, EMOE_EINVAL, "%s: larger than 16 MiB", path); }
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", path); }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        if (r == 0) break;
        len += r;
    }
    fclose(f);
    emoe_status rc = eng_desc_parse(buf, len, path, d, err);
    free(buf);
    return rc;
}

void eng_expert_tensor_names(const eng_model_desc *d, int l, int e, char gate[128], char up[128], char down[128])
{
    if (d->family == ENG_FAMILY_MIXTRAL) {
        snprintf(gate, 128, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
        snprintf(up, 128, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
        snprintf(down, 128, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
    } else {
        snprintf(gate, 128, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
        snprintf(up, 128, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
        snprintf(down, 128, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
    }
}
