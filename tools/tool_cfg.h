/* tool_cfg.h — `--config FILE` and `--set section.key=value` for every command
 * that runs a model (issue 14), read with the same check as `emoe serve`
 * (tools/config_check.c). Options given on the command line win; the file and
 * --set fill what they leave unset: [model] path, [engine] threads, kv_dtype and
 * backend, and the [cache] budgets, miss policy and store. */
#ifndef EMOE_TOOLS_TOOL_CFG_H
#define EMOE_TOOLS_TOOL_CFG_H

#include "config/config.h"
#include "engine/cache.h"
#include "engine/engine.h"

#define TOOL_CFG_MAX_SETS 64

typedef struct tool_cfg {
    const char *path;
    char *sets[TOOL_CFG_MAX_SETS];
    int n_sets;
    emoe_config c;
    int loaded;
    char budget[64], host_budget[64], miss[16];
} tool_cfg;

/* 1: argv[*i] was --config or --set (its value consumed); 0: not ours;
 * -1: error printed (missing value, too many --set). */
int tool_cfg_arg(const char *cmd, int argc, char **argv, int *i, tool_cfg *tc);
/* Loads the configuration when --config or --set was given (0 = fine, else
 * prints the error and returns -1), then fills what the command line left
 * unset. Any pointer may be NULL; model, threads, backend and co fields are only
 * written when still unset (NULL / 0 / ENG_BACKEND_CPU with backend_set 0). */
int tool_cfg_apply(const char *cmd, tool_cfg *tc, const char **model, long long *threads, eng_backend_kind *backend,
                   int backend_set, cache_cli_opts *co);
/* [engine] kv_dtype (an eng_dtype) into *kv_dtype when the command line left it
 * unset (< 0); float32 when no configuration was loaded either. Call after
 * tool_cfg_apply. */
void tool_cfg_kv_dtype(const tool_cfg *tc, int *kv_dtype);
/* An eng_dtype as [engine] kv_dtype spells it: "f32", "f16", "bf16". */
const char *tool_cfg_kv_dtype_name(int kv_dtype);

#endif
