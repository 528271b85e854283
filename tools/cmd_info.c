/* cmd_info.c — `emoe info [-m DIR]`: the build's features and, with -m, the
 * model's description as emoe understands it (after full validation). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/cuda_plugin.h"
#include "tools/args.h"
#include "tools/cmds.h"

int cmd_info(int argc, char **argv)
{
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (!(model = arg_value("info", argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: emoe info [-m DIR]\n");
            return 0;
        } else {
            fprintf(stderr, "emoe info: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    char msg[1024] = "";
    const char *where = NULL;
    const emoe_cuda_plugin *pl = eng_cuda_plugin(msg, sizeof msg, &where);
    if (pl) {
        int nd = pl->device_count(msg, sizeof msg);
        /* Without an NVIDIA driver the CUDA runtime says "CUDA driver version is
         * insufficient for CUDA runtime version", which reads like an upgrade is
         * due; on a machine with no GPU at all, say so (issue 14). */
        if (!nd && access("/proc/driver/nvidia/version", F_OK) != 0 && access("/dev/nvidia0", F_OK) != 0)
            snprintf(msg, sizeof msg, "no GPU (no NVIDIA driver or device found); the CPU backend is used");
        printf("build: CUDA support compiled in (plugin: %s); %d device(s)%s%s\n", where, nd, nd ? "" : ": ", nd ? "" : msg);
        for (int i = 0; i < nd; i++) {
            char line[512];
            pl->device_describe(i, line, sizeof line);
            printf("  %s\n", line);
        }
    } else {
        printf("build: CPU only (no CUDA plugin: %s)\n", msg);
    }
    if (!model) return 0;
    eng_engine *e;
    emoe_err err = {0};
    if (eng_open(model, NULL, &e, &err) != EMOE_OK) { fprintf(stderr, "emoe info: %s\n", err.msg); return 1; }
    const eng_model_desc *d = eng_desc(e);
    printf("model: %s (%s)\n", model, d->model_type);
    printf("  hidden %d, layers %d, heads %d (kv %d, head_dim %d), vocab %d, context %d\n", d->dim, d->n_layers,
           d->n_heads, d->n_kv_heads, d->head_dim, d->vocab, d->max_ctx);
    printf("  experts %d per layer, top-%d%s, expert ffn %d, shared expert ffn %d\n", d->n_experts, d->top_k,
           d->norm_topk ? " (renormalised)" : "", d->expert_ffn, d->shared_ffn);
    printf("  expert bytes: %.1f MB each, %.1f MB in all\n", eng_expert_bytes_one(e) / 1e6, eng_expert_bytes_total(e) / 1e6);
    eng_free(e);
    return 0;
}
