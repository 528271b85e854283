/*
 * cmd_pack.c — `emoe pack -m DIR [-o FILE]`: writes the expert store of a
 * checkpoint (engine/store.h) atomically; `--verify FILE` re-reads a store and
 * checks every extent's checksum and its fingerprint against the model.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/store.h"
#include "tools/args.h"
#include "tools/cmds.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: emoe pack -m DIR [-o FILE] [--verify]\n"
               "  -m, --model DIR   Hugging Face model directory\n"
               "  -o FILE           store to write (default DIR/" STORE_DEFAULT_NAME ")\n"
               "  --verify          do not write: check FILE's fingerprint and every extent checksum\n"
               "  --no-progress     no progress bar (default: a bar when stderr is a terminal)\n");
}

static int verify(eng_engine *e, const char *path)
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
           eng_dtype_name(in->dtype), in->fingerprint, bad ? "CORRUPTED" : "ok");
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
    int do_verify = 0, progress = isatty(2);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!(v = arg_value("pack", argc, argv, &i))) return 2; model = v; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { if (!(v = arg_value("pack", argc, argv, &i))) return 2; out = v; }
        else if (!strcmp(a, "--verify")) do_verify = 1;
        else if (!strcmp(a, "--no-progress")) progress = 0;
        else { fprintf(stderr, "emoe pack: unknown option '%s'\n", a); usage(stderr); return 2; }
    }
    if (!model) { fprintf(stderr, "emoe pack: -m DIR is required\n"); usage(stderr); return 2; }
    char def[4096];
    if (!out) {
        snprintf(def, sizeof def, "%s/%s", model, STORE_DEFAULT_NAME);
        out = def;
    }
    emoe_err err = {0};
    eng_engine *e = NULL;
    eng_open_opts oo = {.n_threads = 1};
    if (eng_open(model, &oo, &e, &err) != EMOE_OK) { fprintf(stderr, "emoe pack: %s\n", err.msg); return 1; }
    int rc;
    if (do_verify) {
        rc = verify(e, out);
    } else {
        double t0 = emoe_now();
        rc = store_pack_engine(e, out, progress, &err) == EMOE_OK ? 0 : 1;
        if (rc) fprintf(stderr, "emoe pack: %s\n", err.msg);
        else {
            store_t *s;
            if (store_open(out, 0, &s, &err) == EMOE_OK) {
                const store_info *in = store_get_info(s);
                printf("%s: %d layers x %d experts, %" PRIu64 " bytes per extent (stride %" PRIu64 "), %" PRIu64
                       " bytes, fingerprint %016" PRIx64 ", %.2f s\n",
                       out, in->n_layers, in->n_experts, in->extent_bytes, in->extent_stride, in->file_size,
                       in->fingerprint, emoe_now() - t0);
                store_close(s);
            }
        }
    }
    eng_free(e);
    return rc;
}
