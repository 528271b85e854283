/*
 * cmd_pack.c — `emoe pack -m DIR [--expert-format bf16|q8|q4] [-o FILE]`: writes
 * the expert store of a checkpoint (engine/store.h) atomically, dense or
 * quantized (engine/quant.h); `--verify FILE` re-reads a store and
 * checks every extent's checksum and its fingerprint against the model.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/store.h"
#include "engine/quant.h"
#include "tools/args.h"
#include "tools/cmds.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: emoe pack -m DIR [--expert-format bf16|q8|q4] [-o FILE] [--verify]\n"
               "  -m, --model DIR   Hugging Face model directory\n"
               "  --expert-format F bf16 (the checkpoint's dtype, default) | q8 | q4 (docs/quant.md)\n"
               "  -o FILE           store to write (default DIR/experts.emoe, DIR/experts.q8.emoe, DIR/experts.q4.emoe)\n"
               "  --verify          do not write: check FILE's fingerprint and every extent checksum\n"
               "  --no-progress     no progress bar (default: a bar when stderr is a terminal)\n");
}

static int verify(eng_engine *e, const char *path, int fmt, int fmt_given)
{
    emoe_err err = {0};
    uint64_t fp;
    store_t *s = NULL;
    uint8_t *buf = NULL;
    FILE *f = NULL;
    int rc = 1;
    if (store_model_fingerprint(e, &fp, &err) || store_open(path, fp, &s, &err)) {
        fprintf(stderr, "emoe pack: %s\n", err.msg);
        goto out;
    }
    if (fmt_given && store_check_format(s, fmt, &err)) {
        fprintf(stderr, "emoe pack: %s\n", err.msg);
        goto out;
    }
    const store_info *in = store_get_info(s);
    buf = malloc(in->extent_bytes);
    f = fopen(path, "rb");
    if (!buf || !f) { fprintf(stderr, "emoe pack: cannot read %s\n", path); goto out; }
    int bad = 0;
    for (int l = 0; l < in->n_layers; l++)
        for (int x = 0; x < in->n_experts; x++) {
            const store_extent *xt = store_extent_of(s, l, x);
            if (fseeko(f, (off_t)xt->offset, SEEK_SET) || fread(buf, 1, in->extent_bytes, f) != in->extent_bytes ||
                store_verify_extent(s, l, x, buf, &err)) {
                fprintf(stderr, "emoe pack: %s\n", err.msg[0] ? err.msg : "short read");
                bad++;
                memset(&err, 0, sizeof err);
            }
        }
    printf("%s: %d extents, %s, fingerprint %016" PRIx64 ": %s\n", path, in->n_layers * in->n_experts,
           in->format ? quant_format_name(in->format) : eng_dtype_name(in->dtype), in->fingerprint,
           bad ? "CORRUPTED" : "ok");
    rc = bad ? 1 : 0;
out:
    if (f) fclose(f);
    free(buf);
    store_close(s);
    return rc;
}

int cmd_pack(int argc, char **argv)
{
    const char *model = NULL, *out = NULL;
    int do_verify = 0, progress = isatty(2), fmt_given = 0;
    quant_format fmt = QUANT_NONE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!(v = arg_value("pack", argc, argv, &i))) return 2; model = v; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { if (!(v = arg_value("pack", argc, argv, &i))) return 2; out = v; }
        else if (!strcmp(a, "--verify")) do_verify = 1;
        else if (!strcmp(a, "--expert-format")) {
            if (!(v = arg_value("pack", argc, argv, &i))) return 2;
            if (quant_format_parse(v, &fmt)) { fprintf(stderr, "emoe pack: --expert-format: '%s' is not bf16, q8 or q4\n", v); return 2; }
            fmt_given = 1;
        }
        else if (!strcmp(a, "--no-progress")) progress = 0;
        else { fprintf(stderr, "emoe pack: unknown option '%s'\n", a); usage(stderr); return 2; }
    }
    if (!model) { fprintf(stderr, "emoe pack: -m DIR is required\n"); usage(stderr); return 2; }
    char def[4096];
    if (!out) {
        snprintf(def, sizeof def, "%s/%s", model, store_default_name(fmt));
        out = def;
    }
    emoe_err err = {0};
    eng_engine *e = NULL;
    eng_open_opts oo = {.n_threads = 1};
    if (eng_open(model, &oo, &e, &err) != EMOE_OK) { fprintf(stderr, "emoe pack: %s\n", err.msg); return 1; }
    int rc;
    if (do_verify) {
        rc = verify(e, out, fmt, fmt_given);
    } else {
        double t0 = emoe_now();
        rc = store_pack_engine_format(e, out, fmt, progress, &err) == EMOE_OK ? 0 : 1;
        if (rc) fprintf(stderr, "emoe pack: %s\n", err.msg);
        else {
            store_t *s;
            if (store_open(out, 0, &s, &err) == EMOE_OK) {
                const store_info *in = store_get_info(s);
                printf("%s: %s, %d layers x %d experts, %" PRIu64 " bytes per extent (stride %" PRIu64 "), %" PRIu64
                       " bytes, fingerprint %016" PRIx64 ", %.2f s\n",
                       out, in->format ? quant_format_name(in->format) : eng_dtype_name(in->dtype), in->n_layers,
                       in->n_experts, in->extent_bytes, in->extent_stride, in->file_size,
                       in->fingerprint, emoe_now() - t0);
                store_close(s);
            }
        }
    }
    eng_free(e);
    return rc;
}
