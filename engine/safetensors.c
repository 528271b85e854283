/*
 * safetensors.c — see safetensors.h. The mapping is read-only and keeps the
 * kernel's default readahead; the engine asks for what it needs in large
 * extents (engine/residency.h: the dense weights at open, an expert at its
 * first use). It used to be MADV_RANDOM, which made a cold start read every
 * 4 KiB page on its own. The header itself is read in exactly (st_open): a
 * fault on its first page would read ra_pages (8 MiB here) around it.
 */
#include "engine/safetensors.h"
#include "engine/residency.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { const char *name; size_t size; } dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1}, [ST_I8] = {"I8", 1},
    [ST_I16] = {"I16", 2}, [ST_U16] = {"U16", 2}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_I32] = {"I32", 4}, [ST_U32] = {"U32", 4},
    [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8}, [ST_I64] = {"I64", 8},
    [ST_U64] = {"U64", 8}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(st_dtype d) { return d < ST_DTYPE_COUNT ? dtypes[d].name : "?"; }
size_t st_dtype_size(st_dtype d) { return d < ST_DTYPE_COUNT ? dtypes[d].size : 0; }

int st_dtype_to_eng(st_dtype d, eng_dtype *out)
{
    switch (d) {
    case ST_F32: *out = ENG_DT_F32; return 0;
    case ST_F16: *out = ENG_DT_F16; return 0;
    case ST_BF16: *out = ENG_DT_BF16; return 0;
    default: return -1;
    }
}

static int parse_dtype(const char *s, st_dtype *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, dtypes[i].name) == 0) { *out = (st_dtype)i; return 0; }
    return -1;
}

static void st_free_partial(st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    free(f);
}

void st_close(st_file *f)
{
    if (!f) return;
    if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_len);
    if (f->fd >= 0) close(f->fd);
    st_free_partial(f);
}

static int cmp_begin(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* Reads a JSON integer that must be a non-negative value. */
static int get_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0) return -1;
    *out = (uint64_t)i;
    return 0;
}

emoe_status st_parse(const char *path, const void *buf, size_t len, st_file **out, emoe_err *err)
{
    *out = NULL;
    const unsigned char *b = buf;
    if (len < 8)
        return emoe_errf(err, EMOE_EINVAL, "%s: file is %zu bytes, too small for a safetensors header length (8 bytes)", path, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    if (hlen < 2 || hlen > ST_MAX_HEADER)
        return emoe_errf(err, EMOE_EINVAL, "%s: header length %llu is out of bounds (2..%u)", path,
                         (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > len - 8)
        return emoe_errf(err, EMOE_EINVAL, "%s: header length %llu exceeds the file size %zu (truncated file?)",
                         path, (unsigned long long)hlen, len);
    const char *hdr = (const char *)b + 8;
    if (hdr[0] != '{')
        return emoe_errf(err, EMOE_EINVAL, "%s: header does not start with '{' (not a safetensors file?)", path);
    json_error_t jerr;
    json_t *root = json_loadb(hdr, (size_t)hlen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return emoe_errf(err, EMOE_EINVAL, "%s: header is not valid UTF-8 JSON: %s (at byte %d)", path, jerr.text, jerr.position);
    emoe_status rc = EMOE_EINVAL;
    st_tensor **order = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f) { json_decref(root); return emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", path); }
    f->fd = -1;
    f->path = strdup(path);
    if (!json_is_object(root)) { emoe_errf(err, EMOE_EINVAL, "%s: header is not a JSON object", path); goto fail; }
    size_t n = json_object_size(root);
    f->tensors = emoe_calloc_array(n, sizeof *f->tensors);
    if (!f->tensors || !f->path) { emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", path); goto fail; }
    f->data_off = 8 + hlen;
    uint64_t data_len = len - f->data_off;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) { emoe_errf(err, EMOE_EINVAL, "%s: __metadata__ is not an object", path); goto fail; }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    emoe_errf(err, EMOE_EINVAL, "%s: __metadata__ value for '%s' is not a string", path, mk);
                    goto fail;
                }
            }
            continue;
        }
        if (strlen(key) == 0 || strlen(key) > 1024) {
            emoe_errf(err, EMOE_EINVAL, "%s: tensor name of length %zu (must be 1..1024)", path, strlen(key));
            goto fail;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        if (!json_is_object(val)) { emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': entry is not an object", path, key); goto fail; }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"), *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd) || parse_dtype(json_string_value(jd), &t->dtype) != 0) {
            emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': dtype %s is missing or unknown", path, key,
                      json_is_string(jd) ? json_string_value(jd) : "(not a string)");
            goto fail;
        }
        if (!json_is_array(js) || json_array_size(js) > ST_MAX_NDIM) {
            emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': shape is missing, not an array, or has more than %d dims", path, key, ST_MAX_NDIM);
            goto fail;
        }
        uint64_t numel = 1;
        t->ndim = (int)json_array_size(js);
        for (int d = 0; d < t->ndim; d++) {
            uint64_t dim;
            if (get_u64(json_array_get(js, (size_t)d), &dim) != 0 || dim > (uint64_t)INT64_MAX) {
                emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, key, d);
                goto fail;
            }
            t->shape[d] = (int64_t)dim;
            if (!emoe_mul_ok(numel, dim, &numel)) {
                emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': shape product overflows", path, key);
                goto fail;
            }
        }
        uint64_t nbytes;
        if (!emoe_mul_ok(numel, st_dtype_size(t->dtype), &nbytes)) {
            emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': byte size overflows", path, key);
            goto fail;
        }
        if (!json_is_array(jo) || json_array_size(jo) != 2 || get_u64(json_array_get(jo, 0), &t->begin) != 0 ||
            get_u64(json_array_get(jo, 1), &t->end) != 0) {
            emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': data_offsets must be [begin, end] non-negative integers", path, key);
            goto fail;
        }
        if (t->end < t->begin) {
            emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': data_offsets end %llu < begin %llu", path, key,
                      (unsigned long long)t->end, (unsigned long long)t->begin);
            goto fail;
        }
        if (t->end - t->begin != nbytes) {
            emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': data_offsets span %llu bytes but shape x dtype %s needs %llu",
                      path, key, (unsigned long long)(t->end - t->begin), st_dtype_name(t->dtype), (unsigned long long)nbytes);
            goto fail;
        }
        if (t->end > data_len) {
            emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s': data_offsets end %llu is past the data area (%llu bytes; truncated file?)",
                      path, key, (unsigned long long)t->end, (unsigned long long)data_len);
            goto fail;
        }
        if ((f->data_off + t->begin) % st_dtype_size(t->dtype) != 0) {
            emoe_errf(err, EMOE_EUNSUP, "%s: tensor '%s': data is not aligned to its %zu-byte dtype", path, key, st_dtype_size(t->dtype));
            goto fail;
        }
        t->name = strdup(key);
        if (!t->name) { emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", path); goto fail; }
        t->data = b + f->data_off + t->begin;
        f->n_tensors++;
    }
    /* Offsets must tile the data area exactly: sorted by begin, each tensor starts
     * where the previous ended (no overlap, no gap), and the last ends at the end. */
    order = emoe_calloc_array((size_t)f->n_tensors, sizeof *order);
    if (!order) { emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", path); goto fail; }
    for (int i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_begin);
    uint64_t expect = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        if (order[i]->begin != expect) {
            if (order[i]->begin < expect)
                emoe_errf(err, EMOE_EINVAL, "%s: tensor '%s' overlaps the previous tensor (begins at %llu, previous ends at %llu)",
                          path, order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)expect);
            else
                emoe_errf(err, EMOE_EINVAL, "%s: gap in the data area before tensor '%s' (begins at %llu, expected %llu)",
                          path, order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)expect);
            goto fail;
        }
        expect = order[i]->end;
    }
    if (expect != data_len) {
        emoe_errf(err, EMOE_EINVAL, "%s: tensors cover %llu bytes but the data area holds %llu", path,
                  (unsigned long long)expect, (unsigned long long)data_len);
        goto fail;
    }
    free(order);
    json_decref(root);
    *out = f;
    return EMOE_OK;
fail:
    rc = err ? err->code : EMOE_EINVAL;
    free(order);
    json_decref(root);
    st_free_partial(f);
    return rc;
}

emoe_status st_open(const char *path, st_file **out, emoe_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return emoe_errf(err, EMOE_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return emoe_errf(err, EMOE_EINVAL, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    if (len < 8) {
        close(fd);
        return emoe_errf(err, EMOE_EINVAL, "%s: file is %zu bytes, too small for a safetensors header length (8 bytes)", path, len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        close(fd);
        return emoe_errf(err, EMOE_EIO, "%s: mmap failed: %s", path, strerror(errno));
    }
    /* Bring in the header's pages alone before parsing through the mapping:
     * a fault on an uncached page reads ra_pages around it, 8 MiB of the first
     * tensor (often the embedding table, of which a forward pass reads only
     * the prompt's rows) for each shard, before the engine's readers start. */
    eng_mem_populate(map, 8);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)((const unsigned char *)map)[i] << (8 * i);
    if (hlen > 0 && hlen < len - 8) eng_mem_populate(map, (size_t)(8 + hlen));
    st_file *f;
    emoe_status rc = st_parse(path, map, len, &f, err);
    if (rc != EMOE_OK) {
        munmap(map, len);
        close(fd);
        return rc;
    }
    f->fd = fd;
    f->map = map;
    f->map_len = len;
    *out = f;
    return EMOE_OK;
}
