/* cachetest.h — helpers shared by test_store.c and test_cache.c: synthetic
 * expert extents (deterministic bytes per (layer, expert)) written into a real
 * store file in a temporary folder. */
#ifndef EMOE_CACHETEST_H
#define EMOE_CACHETEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/store.h"

/* Byte i of (layer, expert)'s payload. */
static inline uint8_t ct_byte(int layer, int expert, size_t i)
{
    uint64_t x = ((uint64_t)layer << 40) ^ ((uint64_t)expert << 20) ^ i ^ 0x9e3779b97f4a7c15ull;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint8_t)x;
}

typedef struct ct_fill_ctx {
    size_t bytes;
    int fail_at;  /* extent index whose fill fails; -1 none */
    int n_experts;
} ct_fill_ctx;

static inline emoe_status ct_fill(void *user, int layer, int expert, void *dst, emoe_err *err)
{
    ct_fill_ctx *c = user;
    if (layer * c->n_experts + expert == c->fail_at) return emoe_errf(err, EMOE_EIO, "synthetic fill failure");
    uint8_t *p = dst;
    for (size_t i = 0; i < c->bytes; i++) p[i] = ct_byte(layer, expert, i);
    return EMOE_OK;
}

/* A unique temp folder (mkdtemp under $TMPDIR or /tmp). */
static inline void ct_tmpdir(char *out, size_t cap)
{
    const char *t = getenv("TMPDIR");
    snprintf(out, cap, "%s/emoe-cachetest-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(out)) out[0] = 0;
}

/* Shapes: bf16 (ffn, dim) -> extent 3*ffn*dim*2 bytes. */
static inline emoe_status ct_make_store(const char *path, int layers, int experts, int dim, int ffn, uint64_t fp,
                                        emoe_err *err)
{
    store_info info = {0};
    info.fingerprint = fp;
    info.dtype = ENG_DT_BF16;
    info.n_layers = layers;
    info.n_experts = experts;
    info.dim = dim;
    info.expert_ffn = ffn;
    ct_fill_ctx c = {(size_t)3 * dim * ffn * 2, -1, experts};
    return store_write(path, &info, ct_fill, &c, 0, err);
}

static inline int ct_check_payload(const void *buf, int layer, int expert, size_t n)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < n; i++)
        if (p[i] != ct_byte(layer, expert, i)) return 0;
    return 1;
}

static inline void ct_rmtree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

#endif
