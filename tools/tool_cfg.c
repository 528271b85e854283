/* tool_cfg.c — see tool_cfg.h. */
#include "tools/tool_cfg.h"
#include "engine/quant.h"

#include <stdio.h>
#include <string.h>

#include "tools/config_check.h"

int tool_cfg_arg(const char *cmd, int argc, char **argv, int *i, tool_cfg *tc)
{
    const char *a = argv[*i];
    if (strcmp(a, "--config") && strcmp(a, "--set")) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "emoe %s: %s needs a value\n", cmd, a);
        return -1;
    }
    const char *v = argv[++*i];
    if (!strcmp(a, "--config")) {
        tc->path = v;
        return 1;
    }
    if (tc->n_sets == TOOL_CFG_MAX_SETS) {
        fprintf(stderr, "emoe %s: at most %d --set options\n", cmd, TOOL_CFG_MAX_SETS);
        return -1;
    }
    tc->sets[tc->n_sets++] = (char *)v;
    return 1;
}

static void budget_text(const cfg_budget *b, char *buf, size_t n)
{
    if (b->is_pct) snprintf(buf, n, "%g%%", b->pct);
    else snprintf(buf, n, "%llu", (unsigned long long)b->bytes);
}

int tool_cfg_apply(const char *cmd, tool_cfg *tc, const char **model, long long *threads, eng_backend_kind *backend,
                   int backend_set, cache_cli_opts *co)
{
    if (!tc->path && !tc->n_sets) return 0;
    emoe_err err = {0};
    if (config_build(tc->path, tc->sets, tc->n_sets, &tc->c, &err) != EMOE_OK) {
        fprintf(stderr, "emoe %s: configuration error: %s\n", cmd, err.msg);
        return -1;
    }
    tc->loaded = 1;
    const emoe_config *c = &tc->c;
    if (model && !*model && c->model.path[0]) *model = c->model.path;
    if (threads && !*threads) *threads = c->engine.threads;
    if (backend && !backend_set) *backend = (eng_backend_kind)c->engine.backend;
    if (co && !co->budget) {
        const cfg_budget *d = &c->cache.device_budget;
        if (!(d->is_pct && d->pct >= 100.0)) { /* below 100%: through the expert cache, as serve */
            budget_text(d, tc->budget, sizeof tc->budget);
            co->budget = tc->budget;
            if (!co->host_budget) {
                budget_text(&c->cache.host_budget, tc->host_budget, sizeof tc->host_budget);
                co->host_budget = tc->host_budget;
            }
            if (!co->miss_policy) {
                snprintf(tc->miss, sizeof tc->miss, "%s", c->cache.miss_policy == CFG_MISS_SUBSTITUTE ? "substitute"
                                                          : c->cache.miss_policy == CFG_MISS_LOWBIT   ? "lowbit"
                                                                                                      : "exact");
                co->miss_policy = tc->miss;
            }
            if (!co->store && c->cache.store_path[0]) co->store = c->cache.store_path;
        }
    }
    if (co) { /* quantized experts run through the cache at any budget (docs/quant.md) */
        if (!co->expert_format && c->cache.expert_format != 0) co->expert_format = quant_format_name(c->cache.expert_format);
        if (!co->lowbit_format && c->cache.lowbit_format == 1) co->lowbit_format = "q8";
    }
    return 0;
}

void tool_cfg_kv_dtype(const tool_cfg *tc, int *kv_dtype)
{
    if (*kv_dtype >= 0) return;
    /* the config's enum "f32|f16|bf16" is indexed as eng_dtype */
    *kv_dtype = tc && tc->loaded ? tc->c.engine.kv_dtype : ENG_DT_F32;
}

const char *tool_cfg_kv_dtype_name(int kv_dtype)
{
    return kv_dtype == ENG_DT_F16 ? "f16" : kv_dtype == ENG_DT_BF16 ? "bf16" : kv_dtype == ENG_DT_F32 ? "f32" : "?";
}
