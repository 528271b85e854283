/*
 * checkpoint.c — see checkpoint.h. Tensor lookup is an open-addressing hash over
 * all shards' names; a name present in two shards is an error, as is an index
 * entry whose shard does not hold it. Shard names are plain file names: no
 * directories, no "..", nothing absolute.
 */
#include "engine/checkpoint.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct eng_checkpoint {
    char *dir;
    int n_files;
    st_file **files;
    size_t hcap;            /* power of two */
    const st_tensor **slot; /* hash table of tensors */
    int *slot_file;
    int n_tensors;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int64_t find_slot(const eng_checkpoint *c, const char *name)
{
    size_t m = c->hcap - 1, i = (size_t)hash_str(name) & m;
    while (c->slot[i]) {
        if (strcmp(c->slot[i]->name, name) == 0) return (int64_t)i;
        i = (i + 1) & m;
    }
    return -1 - (int64_t)i;
}

const st_tensor *ckpt_find(const eng_checkpoint *c, const char *name)
{
    int64_t s = find_slot(c, name);
    return s >= 0 ? c->slot[s] : NULL;
}

const st_file *ckpt_file_of(const eng_checkpoint *c, const st_tensor *t)
{
    int64_t s = find_slot(c, t->name);
    return s >= 0 ? c->files[c->slot_file[s]] : NULL;
}

int ckpt_n_tensors(const eng_checkpoint *c) { return c->n_tensors; }

void ckpt_close(eng_checkpoint *c)
{
    if (!c) return;
    for (int i = 0; i < c->n_files; i++) st_close(c->files[i]);
    free(c->files);
    free(c->slot);
    free(c->slot_file);
    free(c->dir);
    free(c);
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int shard_name_ok(const char *s)
{
    if (!*s || strlen(s) > 255) return 0;
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
    return strchr(s, '/') == NULL && strchr(s, '\\') == NULL;
}

static emoe_status add_file(eng_checkpoint *c, const char *name, emoe_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", c->dir, name) >= (int)sizeof path)
        return emoe_errf(err, EMOE_EINVAL, "%s: path too long", name);
    st_file *f;
    emoe_status rc = st_open(path, &f, err);
    if (rc != EMOE_OK) return rc;
    c->files[c->n_files++] = f;
    return EMOE_OK;
}

/* Largest model.safetensors.index.json read (issue 14; DeepSeek-V3's, with
 * ~91k tensors, is ~9 MB) and most distinct shards an index may name. */
#define INDEX_MAX_BYTES (64u << 20)
#define INDEX_MAX_SHARDS 16384

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Reads the index whole, refusing one larger than INDEX_MAX_BYTES. */
static json_t *load_index(const char *path, emoe_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) { emoe_errf(err, EMOE_EIO, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0 || (uint64_t)sb.st_size > INDEX_MAX_BYTES) {
        fclose(f);
        emoe_errf(err, EMOE_EINVAL, "%s: larger than %u MiB", path, INDEX_MAX_BYTES >> 20);
        return NULL;
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) { fclose(f); emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", path); return NULL; }
    size_t got = fread(buf, 1, n + 1, f);
    fclose(f);
    if (got > INDEX_MAX_BYTES) { free(buf); emoe_errf(err, EMOE_EINVAL, "%s: larger than %u MiB", path, INDEX_MAX_BYTES >> 20); return NULL; }
    json_error_t je;
    json_t *o = json_loadb(buf, got, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!o) emoe_errf(err, EMOE_EINVAL, "%s: invalid JSON: %s (line %d)", path, je.text, je.line);
    return o;
}

static emoe_status build_index(eng_checkpoint *c, emoe_err *err)
{
    size_t total = 0;
    for (int i = 0; i < c->n_files; i++) total += (size_t)c->files[i]->n_tensors;
    c->hcap = 16;
    while (c->hcap < total * 2 + 16) c->hcap <<= 1;
    c->slot = calloc(c->hcap, sizeof *c->slot);
    c->slot_file = calloc(c->hcap, sizeof *c->slot_file);
    if (!c->slot || !c->slot_file) return emoe_errf(err, EMOE_ENOMEM, "out of memory indexing tensors");
    for (int i = 0; i < c->n_files; i++) {
        for (int j = 0; j < c->files[i]->n_tensors; j++) {
            const st_tensor *t = &c->files[i]->tensors[j];
            int64_t s = find_slot(c, t->name);
            if (s >= 0)
                return emoe_errf(err, EMOE_EINVAL, "tensor '%s' appears in both %s and %s", t->name,
                                 c->files[c->slot_file[s]]->path, c->files[i]->path);
            size_t at = (size_t)(-1 - s);
            c->slot[at] = t;
            c->slot_file[at] = i;
            c->n_tensors++;
        }
    }
    return EMOE_OK;
}

emoe_status ckpt_open(const char *dir, eng_checkpoint **out, emoe_err *err)
{
    *out = NULL;
    char path[4096];
    json_t *idx = NULL;
    eng_checkpoint *c = calloc(1, sizeof *c);
    if (!c) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    c->dir = strdup(dir);
    emoe_status rc;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (file_exists(path)) {
        idx = load_index(path, err);
        if (!idx) { rc = err ? err->code : EMOE_EINVAL; goto fail; }
        json_t *wm = json_object_get(idx, "weight_map");
        if (!json_is_object(wm) || json_object_size(wm) == 0) {
            rc = emoe_errf(err, EMOE_EINVAL, "%s: 'weight_map' is missing, empty or not an object", path);
            goto fail;
        }
        /* Unique shard names, in first-seen order; a hash set keeps this
         * linear (80k entries naming 80k shards took 75 s quadratically). */
        size_t nw = json_object_size(wm);
        size_t hcap = 16;
        while (hcap < nw * 2) hcap <<= 1;
        const char **names = calloc(nw, sizeof *names);
        const char **hset = calloc(hcap, sizeof *hset);
        c->files = calloc(nw, sizeof *c->files);
        if (!names || !hset || !c->files) {
            free(names);
            free(hset);
            rc = emoe_errf(err, EMOE_ENOMEM, "out of memory");
            goto fail;
        }
        int nn = 0;
        const char *k;
        json_t *v;
        json_object_foreach(wm, k, v) {
            if (!json_is_string(v)) {
                free(names);
                free(hset);
                rc = emoe_errf(err, EMOE_EINVAL, "%s: weight_map['%s'] is not a string", path, k);
                goto fail;
            }
            const char *s = json_string_value(v);
            if (!shard_name_ok(s)) {
                free(names);
                free(hset);
                rc = emoe_errf(err, EMOE_EINVAL, "%s: weight_map['%s'] names shard '%s': shard names must be plain file names (no '/', '..' or absolute paths)", path, k, s);
                goto fail;
            }
            size_t h = (size_t)name_hash(s) & (hcap - 1);
            while (hset[h] && strcmp(hset[h], s)) h = (h + 1) & (hcap - 1);
            if (!hset[h]) {
                if (nn == INDEX_MAX_SHARDS) {
                    free(names);
                    free(hset);
                    rc = emoe_errf(err, EMOE_EINVAL, "%s: weight_map names more than %d shards", path, INDEX_MAX_SHARDS);
                    goto fail;
                }
                hset[h] = s;
                names[nn++] = s;
            }
        }
        free(hset);
        for (int i = 0; i < nn; i++) {
            if ((rc = add_file(c, names[i], err)) != EMOE_OK) { free(names); goto fail; }
        }
        free(names);
        if ((rc = build_index(c, err)) != EMOE_OK) goto fail;
        json_object_foreach(wm, k, v) {
            const st_tensor *t = ckpt_find(c, k);
            const char *s = json_string_value(v);
            if (!t || strcmp(strrchr(ckpt_file_of(c, t)->path, '/') + 1, s) != 0) {
                rc = emoe_errf(err, EMOE_EINVAL, "%s: weight_map says tensor '%s' is in %s, but that shard does not hold it", path, k, s);
                goto fail;
            }
        }
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (!file_exists(path)) {
            rc = emoe_errf(err, EMOE_ENOTFOUND, "%s: no model.safetensors or model.safetensors.index.json", dir);
            goto fail;
        }
        c->files = calloc(1, sizeof *c->files);
        if (!c->files) { rc = emoe_errf(err, EMOE_ENOMEM, "out of memory"); goto fail; }
        if ((rc = add_file(c, "model.safetensors", err)) != EMOE_OK) goto fail;
        if ((rc = build_index(c, err)) != EMOE_OK) goto fail;
    }
    json_decref(idx);
    *out = c;
    return EMOE_OK;
fail:
    json_decref(idx);
    ckpt_close(c);
    return rc;
}

emoe_status ckpt_bind(const eng_checkpoint *c, const char *name, int ndim, const int64_t *shape,
                      const char *what, eng_tensor *out, emoe_err *err)
{
    memset(out, 0, sizeof *out);
    const st_tensor *t = ckpt_find(c, name);
    if (!t) return emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s' is missing (expected shape %s)", c->dir, name, what);
    const st_file *f = ckpt_file_of(c, t);
    if (st_dtype_to_eng(t->dtype, &out->dtype) != 0)
        return emoe_errf(err, EMOE_EUNSUP, "%s: tensor '%s' has dtype %s; supported: BF16, F16, F32", f->path, name,
                         st_dtype_name(t->dtype));
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128] = "[", want[128] = "[";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "", (long long)shape[i]);
        strcat(got, "]");
        strcat(want, "]");
        return emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s' has shape %s, expected %s %s", f->path, name, got, want, what);
    }
    out->data = t->data;
    out->ndim = ndim;
    for (int i = 0; i < ndim; i++) out->shape[i] = shape[i];
    return EMOE_OK;
}
