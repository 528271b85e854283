/*
 * cmd_mkmodel.c — `emoe mkmodel`: writes a random-weight bf16 checkpoint of any
 * shape in the Hugging Face layout (config.json + model.safetensors, or shards
 * with model.safetensors.index.json when larger than --shard-size). Weights are
 * deterministic in --seed. Router weights are scaled up so that routing has
 * margins; norm weights are near 1. The text such a model writes is noise.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/model.h"
#include "tools/args.h"
#include "tools/cmds.h"

typedef struct shape {
    eng_family family;
    int dim, layers, heads, kv_heads, head_dim, experts, top_k, ffn, shared_ffn, vocab, ctx;
    int tied;
} shape;

typedef struct preset { const char *name; shape s; const char *help; } preset;

static const preset presets[] = {
    {"tiny", {ENG_FAMILY_QWEN3_MOE, 64, 2, 4, 2, 16, 8, 2, 64, 0, 512, 4096, 0}, "a few hundred KB, for tests"},
    {"small", {ENG_FAMILY_QWEN3_MOE, 256, 4, 8, 4, 32, 32, 4, 256, 0, 151936, 8192, 0}, "default model; Qwen3 vocabulary"},
    {"olmoe-1b-7b", {ENG_FAMILY_OLMOE, 2048, 16, 16, 16, 128, 64, 8, 1024, 0, 50304, 4096, 0}, "OLMoE-1B-7B shape (~14 GB)"},
    {"qwen3-30b-a3b", {ENG_FAMILY_QWEN3_MOE, 2048, 48, 32, 4, 128, 128, 8, 768, 0, 151936, 40960, 0}, "Qwen3-30B-A3B shape (~61 GB)"},
    {"mixtral-8x7b", {ENG_FAMILY_MIXTRAL, 4096, 32, 32, 8, 128, 8, 2, 14336, 0, 32000, 32768, 0}, "Mixtral-8x7B shape (~93 GB)"},
    {"qwen1.5-moe-a2.7b", {ENG_FAMILY_QWEN2_MOE, 2048, 24, 16, 16, 128, 60, 4, 1408, 5632, 151936, 8192, 0}, "Qwen1.5-MoE-A2.7B shape (~29 GB)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: emoe mkmodel [--family F] [--preset P] [shape options] [--seed S] -o DIR\n"
               "  --family F        qwen3_moe | qwen2_moe | mixtral | olmoe (default: the preset's)\n"
               "  --preset P        starting shape (default tiny):\n");
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        fprintf(f, "                      %-18s %s\n", presets[i].name, presets[i].help);
    fprintf(f, "  --dim N --layers N --heads N --kv-heads N --head-dim N --experts N --top-k N\n"
               "  --expert-ffn N --shared-ffn N --vocab N --ctx N --tied\n"
               "  --seed S          weights are a function of S (default 0)\n"
               "  --shard-size B    bytes per shard before splitting (default 4294967296)\n"
               "  --tokenizer DIR   copy tokenizer.json / tokenizer_config.json from DIR\n"
               "  -o DIR            output directory (created)\n");
}

/* ---- deterministic fast random bf16 ---------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

typedef struct tdesc {
    char name[160];
    int ndim;
    int64_t shape[2];
    float scale;   /* uniform in [center-scale, center+scale] */
    float center;
    uint64_t bytes, off;
    int shard;
} tdesc;

typedef struct tlist { tdesc *t; int n, cap; } tlist;

static int add_t(tlist *l, const char *name, int ndim, int64_t d0, int64_t d1, float scale, float center)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        tdesc *nt = realloc(l->t, sizeof *nt * (size_t)l->cap);
        if (!nt) return -1;
        l->t = nt;
    }
    tdesc *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->scale = scale;
    t->center = center;
    t->bytes = (uint64_t)d0 * (uint64_t)(ndim == 2 ? d1 : 1) * 2;
    return 0;
}

static float inv_sqrt(int n) { return 1.0f / sqrtf((float)n); }

static int build_list(const shape *s, tlist *l)
{
    char n[160];
    int qd = s->heads * s->head_dim, kvd = s->kv_heads * s->head_dim;
    float ws = 1.7f * inv_sqrt(s->dim);
    int r = 0;
    r |= add_t(l, "model.embed_tokens.weight", 2, s->vocab, s->dim, 1.0f, 0);
    for (int L = 0; L < s->layers; L++) {
#define N(fmt, ...) (snprintf(n, sizeof n, "model.layers.%d." fmt, L, ##__VA_ARGS__), n)
        r |= add_t(l, N("input_layernorm.weight"), 1, s->dim, 0, 0.1f, 1.0f);
        r |= add_t(l, N("post_attention_layernorm.weight"), 1, s->dim, 0, 0.1f, 1.0f);
        r |= add_t(l, N("self_attn.q_proj.weight"), 2, qd, s->dim, ws, 0);
        r |= add_t(l, N("self_attn.k_proj.weight"), 2, kvd, s->dim, ws, 0);
        r |= add_t(l, N("self_attn.v_proj.weight"), 2, kvd, s->dim, ws, 0);
        r |= add_t(l, N("self_attn.o_proj.weight"), 2, s->dim, qd, 1.7f * inv_sqrt(qd), 0);
        if (s->family == ENG_FAMILY_QWEN2_MOE) {
            r |= add_t(l, N("self_attn.q_proj.bias"), 1, qd, 0, 0.1f, 0);
            r |= add_t(l, N("self_attn.k_proj.bias"), 1, kvd, 0, 0.1f, 0);
            r |= add_t(l, N("self_attn.v_proj.bias"), 1, kvd, 0, 0.1f, 0);
        }
        if (s->family == ENG_FAMILY_QWEN3_MOE) {
            r |= add_t(l, N("self_attn.q_norm.weight"), 1, s->head_dim, 0, 0.1f, 1.0f);
            r |= add_t(l, N("self_attn.k_norm.weight"), 1, s->head_dim, 0, 0.1f, 1.0f);
        } else if (s->family == ENG_FAMILY_OLMOE) {
            r |= add_t(l, N("self_attn.q_norm.weight"), 1, qd, 0, 0.1f, 1.0f);
            r |= add_t(l, N("self_attn.k_norm.weight"), 1, kvd, 0, 0.1f, 1.0f);
        }
        int mix = s->family == ENG_FAMILY_MIXTRAL;
        r |= add_t(l, mix ? N("block_sparse_moe.gate.weight") : N("mlp.gate.weight"), 2, s->experts, s->dim, 8.0f * ws, 0);
        for (int e = 0; e < s->experts; e++) {
            if (mix) {
                r |= add_t(l, N("block_sparse_moe.experts.%d.w1.weight", e), 2, s->ffn, s->dim, ws, 0);
                r |= add_t(l, N("block_sparse_moe.experts.%d.w2.weight", e), 2, s->dim, s->ffn, 1.7f * inv_sqrt(s->ffn), 0);
                r |= add_t(l, N("block_sparse_moe.experts.%d.w3.weight", e), 2, s->ffn, s->dim, ws, 0);
            } else {
                r |= add_t(l, N("mlp.experts.%d.gate_proj.weight", e), 2, s->ffn, s->dim, ws, 0);
                r |= add_t(l, N("mlp.experts.%d.up_proj.weight", e), 2, s->ffn, s->dim, ws, 0);
                r |= add_t(l, N("mlp.experts.%d.down_proj.weight", e), 2, s->dim, s->ffn, 1.7f * inv_sqrt(s->ffn), 0);
            }
        }
        if (s->shared_ffn > 0) {
            r |= add_t(l, N("mlp.shared_expert.gate_proj.weight"), 2, s->shared_ffn, s->dim, ws, 0);
            r |= add_t(l, N("mlp.shared_expert.up_proj.weight"), 2, s->shared_ffn, s->dim, ws, 0);
            r |= add_t(l, N("mlp.shared_expert.down_proj.weight"), 2, s->dim, s->shared_ffn, 1.7f * inv_sqrt(s->shared_ffn), 0);
            r |= add_t(l, N("mlp.shared_expert_gate.weight"), 2, 1, s->dim, ws, 0);
        }
#undef N
    }
    r |= add_t(l, "model.norm.weight", 1, s->dim, 0, 0.1f, 1.0f);
    if (!s->tied) r |= add_t(l, "lm_head.weight", 2, s->vocab, s->dim, ws, 0);
    return r;
}

static json_t *config_json(const shape *s)
{
    json_t *o = json_object();
    static const char *arch[] = {"Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "MixtralForCausalLM", "OlmoeForCausalLM"};
    json_t *a = json_array();
    json_array_append_new(a, json_string(arch[s->family]));
    json_object_set_new(o, "architectures", a);
    json_object_set_new(o, "model_type", json_string(eng_family_name(s->family)));
    json_object_set_new(o, "vocab_size", json_integer(s->vocab));
    json_object_set_new(o, "hidden_size", json_integer(s->dim));
    json_object_set_new(o, "num_hidden_layers", json_integer(s->layers));
    json_object_set_new(o, "num_attention_heads", json_integer(s->heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(s->kv_heads));
    json_object_set_new(o, "head_dim", json_integer(s->head_dim));
    json_object_set_new(o, s->family == ENG_FAMILY_MIXTRAL ? "num_local_experts" : "num_experts", json_integer(s->experts));
    json_object_set_new(o, "num_experts_per_tok", json_integer(s->top_k));
    if (s->family == ENG_FAMILY_QWEN3_MOE || s->family == ENG_FAMILY_QWEN2_MOE) {
        json_object_set_new(o, "moe_intermediate_size", json_integer(s->ffn));
        json_object_set_new(o, "intermediate_size", json_integer(s->ffn * 4));
        json_object_set_new(o, "decoder_sparse_step", json_integer(1));
        json_object_set_new(o, "mlp_only_layers", json_array());
        json_object_set_new(o, "use_sliding_window", json_false());
        json_object_set_new(o, "norm_topk_prob", json_boolean(s->family == ENG_FAMILY_QWEN3_MOE));
    } else {
        json_object_set_new(o, "intermediate_size", json_integer(s->ffn));
    }
    if (s->family == ENG_FAMILY_QWEN2_MOE) {
        json_object_set_new(o, "shared_expert_intermediate_size", json_integer(s->shared_ffn));
        json_object_set_new(o, "qkv_bias", json_true());
    }
    if (s->family == ENG_FAMILY_OLMOE) json_object_set_new(o, "norm_topk_prob", json_false());
    json_object_set_new(o, "max_position_embeddings", json_integer(s->ctx));
    json_object_set_new(o, "rms_norm_eps", json_real(1e-6));
    json_object_set_new(o, "rope_theta", json_real(s->family == ENG_FAMILY_OLMOE ? 10000.0 : 1000000.0));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(s->tied));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "torch_dtype", json_string("bfloat16"));
    int bos = s->vocab > 151643 ? 151643 : 1, eos = s->vocab > 151645 ? 151645 : 2;
    json_object_set_new(o, "bos_token_id", json_integer(bos < s->vocab ? bos : 0));
    json_object_set_new(o, "eos_token_id", json_integer(eos < s->vocab ? eos : 0));
    return o;
}

static int fill_tensor(FILE *f, const tdesc *t, uint64_t seed, uint16_t *buf, size_t bufn)
{
    uint64_t st = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    for (const char *p = t->name; *p; p++) st = (st ^ (unsigned char)*p) * 0x100000001b3ull;
    if (!st) st = 1;
    uint64_t n = t->bytes / 2, done = 0;
    while (done < n) {
        size_t k = n - done < bufn ? (size_t)(n - done) : bufn;
        for (size_t i = 0; i < k; i++) {
            uint64_t r = rng_next(&st);
            float u = (float)(int32_t)(uint32_t)r * (1.0f / 2147483648.0f); /* [-1, 1) */
            buf[i] = eng_f32_to_bf16(t->center + t->scale * u);
        }
        if (fwrite(buf, 2, k, f) != k) return -1;
        done += k;
    }
    return 0;
}

static int write_shard(const char *dir, const char *fname, tlist *l, int shard, uint64_t seed)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, fname);
    json_t *h = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(h, "__metadata__", meta);
    uint64_t off = 0;
    for (int i = 0; i < l->n; i++) {
        tdesc *t = &l->t[i];
        if (t->shard != shard) continue;
        json_t *e = json_object(), *sh = json_array(), *of = json_array();
        json_object_set_new(e, "dtype", json_string("BF16"));
        for (int d = 0; d < t->ndim; d++) json_array_append_new(sh, json_integer(t->shape[d]));
        json_object_set_new(e, "shape", sh);
        t->off = off;
        json_array_append_new(of, json_integer((json_int_t)off));
        json_array_append_new(of, json_integer((json_int_t)(off + t->bytes)));
        json_object_set_new(e, "data_offsets", of);
        json_object_set_new(h, t->name, e);
        off += t->bytes;
    }
    char *hs = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!hs) return -1;
    size_t hl = strlen(hs), pad = (8 - (hl % 8)) % 8;
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "emoe mkmodel: %s: %s\n", path, strerror(errno)); free(hs); return -1; }
    uint64_t total = hl + pad;
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)(total >> (8 * i));
    int rc = fwrite(lenb, 1, 8, f) == 8 && fwrite(hs, 1, hl, f) == hl ? 0 : -1;
    for (size_t i = 0; i < pad && rc == 0; i++) rc = fputc(' ', f) == EOF ? -1 : 0;
    free(hs);
    size_t bufn = 1 << 20;
    uint16_t *buf = malloc(bufn * 2);
    if (!buf) rc = -1;
    for (int i = 0; i < l->n && rc == 0; i++)
        if (l->t[i].shard == shard) rc = fill_tensor(f, &l->t[i], seed, buf, bufn);
    free(buf);
    if (fclose(f) != 0) rc = -1;
    if (rc) fprintf(stderr, "emoe mkmodel: writing %s failed: %s\n", path, strerror(errno));
    return rc;
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (!in) return -1;
    FILE *out = fopen(dst, "wb");
    if (!out) { fclose(in); return -1; }
    char buf[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) { rc = -1; break; }
    fclose(in);
    if (fclose(out) != 0) rc = -1;
    return rc;
}

int cmd_mkmodel(int argc, char **argv)
{
    const char *out = NULL, *tokdir = NULL, *fam = NULL, *pre = "tiny";
    long long seed = 0, shard_size = 4294967296LL, v;
    struct { const char *opt; int *field; long long lo, hi; } ov[] = {
        {"--dim", NULL, 2, 65536}, {"--layers", NULL, 1, 1024}, {"--heads", NULL, 1, 1024}, {"--kv-heads", NULL, 1, 1024},
        {"--head-dim", NULL, 2, 1024}, {"--experts", NULL, 1, 4096}, {"--top-k", NULL, 1, 4096}, {"--expert-ffn", NULL, 1, 1 << 20},
        {"--shared-ffn", NULL, 0, 1 << 20}, {"--vocab", NULL, 3, 1 << 24}, {"--ctx", NULL, 1, 1 << 24},
    };
    long long ovv[sizeof ov / sizeof ov[0]];
    int ovset[sizeof ov / sizeof ov[0]] = {0};
    int tied = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
#define VAL() do { if (!(val = arg_value("mkmodel", argc, argv, &i))) return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-o")) { VAL(); out = val; }
        else if (!strcmp(a, "--family")) { VAL(); fam = val; }
        else if (!strcmp(a, "--preset")) { VAL(); pre = val; }
        else if (!strcmp(a, "--tokenizer")) { VAL(); tokdir = val; }
        else if (!strcmp(a, "--tied")) tied = 1;
        else if (!strcmp(a, "--seed")) { VAL(); if (arg_int("mkmodel", a, val, 0, INT64_MAX, &seed)) return 2; }
        else if (!strcmp(a, "--shard-size")) { VAL(); if (arg_int("mkmodel", a, val, 1 << 20, INT64_MAX, &shard_size)) return 2; }
        else {
            size_t k = 0;
            for (; k < sizeof ov / sizeof ov[0]; k++) if (!strcmp(a, ov[k].opt)) break;
            if (k == sizeof ov / sizeof ov[0]) { fprintf(stderr, "emoe mkmodel: unknown option '%s'\n", a); usage(stderr); return 2; }
            VAL();
            if (arg_int("mkmodel", a, val, ov[k].lo, ov[k].hi, &v)) return 2;
            ovv[k] = v;
            ovset[k] = 1;
        }
#undef VAL
    }
    if (!out) { fprintf(stderr, "emoe mkmodel: -o DIR is required\n"); usage(stderr); return 2; }
    shape s;
    size_t pi = 0;
    for (; pi < sizeof presets / sizeof presets[0]; pi++) if (!strcmp(presets[pi].name, pre)) break;
    if (pi == sizeof presets / sizeof presets[0]) { fprintf(stderr, "emoe mkmodel: unknown preset '%s'\n", pre); usage(stderr); return 2; }
    s = presets[pi].s;
    if (fam && eng_family_from_name(fam, &s.family) != 0) {
        fprintf(stderr, "emoe mkmodel: unknown family '%s' (qwen3_moe, qwen2_moe, mixtral, olmoe)\n", fam);
        return 2;
    }
    int *fields[] = {&s.dim, &s.layers, &s.heads, &s.kv_heads, &s.head_dim, &s.experts, &s.top_k, &s.ffn, &s.shared_ffn, &s.vocab, &s.ctx};
    for (size_t k = 0; k < sizeof ov / sizeof ov[0]; k++) if (ovset[k]) *fields[k] = (int)ovv[k];
    if (tied >= 0) s.tied = tied;
    if (s.family == ENG_FAMILY_QWEN2_MOE && !ovset[8] && s.shared_ffn == 0) s.shared_ffn = 2 * s.ffn;
    if (s.family != ENG_FAMILY_QWEN2_MOE) s.shared_ffn = 0;
    if (s.heads % s.kv_heads || s.top_k > s.experts || s.head_dim % 2) {
        fprintf(stderr, "emoe mkmodel: inconsistent shape: heads must be a multiple of kv-heads, top-k <= experts, head-dim even\n");
        return 2;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) { fprintf(stderr, "emoe mkmodel: %s: %s\n", out, strerror(errno)); return 1; }
    tlist l = {0};
    if (build_list(&s, &l)) { fprintf(stderr, "emoe mkmodel: out of memory\n"); free(l.t); return 1; }
    uint64_t acc = 0, total = 0;
    int shard = 0;
    for (int i = 0; i < l.n; i++) {
        if (acc > 0 && acc + l.t[i].bytes > (uint64_t)shard_size) { shard++; acc = 0; }
        l.t[i].shard = shard;
        acc += l.t[i].bytes;
        total += l.t[i].bytes;
    }
    int nsh = shard + 1, rc = 0;
    char path[4096], fname[128];
    for (int k = 0; k < nsh && rc == 0; k++) {
        if (nsh == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", k + 1, nsh);
        if (isatty(2)) fprintf(stderr, "\remoe mkmodel: writing %s (%d/%d)", fname, k + 1, nsh);
        rc = write_shard(out, fname, &l, k, (uint64_t)seed);
    }
    if (isatty(2)) fputc('\n', stderr);
    if (rc == 0 && nsh > 1) {
        json_t *idx = json_object(), *meta = json_object(), *wm = json_object();
        json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
        for (int i = 0; i < l.n; i++) {
            snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", l.t[i].shard + 1, nsh);
            json_object_set_new(wm, l.t[i].name, json_string(fname));
        }
        json_object_set_new(idx, "metadata", meta);
        json_object_set_new(idx, "weight_map", wm);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
        rc = json_dump_file(idx, path, JSON_INDENT(2));
        json_decref(idx);
    } else if (rc == 0) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
        unlink(path); /* a stale index from an earlier, sharded run would win */
    }
    if (rc == 0) {
        json_t *cfg = config_json(&s);
        snprintf(path, sizeof path, "%s/config.json", out);
        rc = json_dump_file(cfg, path, JSON_INDENT(2));
        json_decref(cfg);
    }
    if (rc == 0 && tokdir) {
        const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
        for (int k = 0; k < 2 && rc == 0; k++) {
            char src[4096];
            snprintf(src, sizeof src, "%s/%s", tokdir, files[k]);
            snprintf(path, sizeof path, "%s/%s", out, files[k]);
            if ((rc = copy_file(src, path)) != 0) fprintf(stderr, "emoe mkmodel: cannot copy %s: %s\n", src, strerror(errno));
        }
    }
    free(l.t);
    if (rc) { fprintf(stderr, "emoe mkmodel: failed\n"); return 1; }
    fprintf(stderr, "emoe mkmodel: wrote %s: %s, %d layers, %d experts (top-%d), %.1f MB in %d file(s)\n", out,
            eng_family_name(s.family), s.layers, s.experts, s.top_k, (double)total / 1e6, nsh);
    return 0;
}
