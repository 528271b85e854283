/*
 * store.c — expert store: CRC32C, the validating reader, the atomic writer, and
 * packing an engine's checkpoint. Format in store.h.
 */
#include "engine/store.h"
#include "engine/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libgen.h>
#include <pthread.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

/* ---- CRC32C ---------------------------------------------------------------- */

static uint32_t crc_table[8][256];
static int crc_hw = -1;

static void crc_init_tables(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= c;
        c = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^ crc_table[5][(v >> 16) & 0xff] ^
            crc_table[4][(v >> 24) & 0xff] ^ crc_table[3][(v >> 32) & 0xff] ^
            crc_table[2][(v >> 40) & 0xff] ^ crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw_run(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c64;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#endif

static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static void crc_setup(void)
{
    crc_init_tables();
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
    crc_hw = 0;
#endif
}

uint32_t store_crc32c(uint32_t crc, const void *buf, size_t n)
{
    pthread_once(&crc_once, crc_setup);
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (crc_hw) return ~crc_hw_run(c, buf, n);
#endif
    return ~crc_sw(c, buf, n);
}

/* ---- little-endian field helpers -------------------------------------------- */

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t align_up(uint64_t v) { return (v + STORE_ALIGN - 1) / STORE_ALIGN * STORE_ALIGN; }

/* CRC32C of the fixed header with its own CRC field read as zero. */
static uint32_t header_crc(const uint8_t *h)
{
    uint8_t tmp[STORE_HEADER_FIXED];
    memcpy(tmp, h, sizeof tmp);
    memset(tmp + 84, 0, 4);
    return store_crc32c(0, tmp, sizeof tmp);
}

/* Header field offsets. */
enum {
    H_MAGIC = 0, H_VERSION = 8, H_HDRBYTES = 12, H_FP = 16, H_DTYPE = 24, H_LAYERS = 28,
    H_EXPERTS = 32, H_DIM = 36, H_FFN = 40, H_EXTBYTES = 48, H_STRIDE = 56, H_DATAOFF = 64,
    H_FILESIZE = 72, H_TABLECRC = 80, H_HDRCRC = 84, H_FORMAT = 88,
};

/* Computes the derived layout fields of info from its shapes; EINVAL when they
 * are out of bounds or overflow. */
static emoe_status layout(store_info *info, uint64_t *hdr_bytes, const char *what, emoe_err *err)
{
    if (info->n_layers < 1 || info->n_layers > 4096 || info->n_experts < 1 || info->n_experts > 4096 ||
        info->dim < 1 || info->dim > (1 << 20) || info->expert_ffn < 1 || info->expert_ffn > (1 << 20))
        return emoe_errf(err, EMOE_EINVAL,
                         "%s: shapes out of bounds (layers %d, experts %d, dim %d, expert_ffn %d)", what,
                         info->n_layers, info->n_experts, info->dim, info->expert_ffn);
    size_t ds = eng_dtype_size(info->dtype);
    if ((int)info->dtype < 0 || ds == 0)
        return emoe_errf(err, EMOE_EINVAL, "%s: unknown dtype code %d", what, (int)info->dtype);
    uint64_t eb;
    if (info->format < 0 || info->format >= QUANT_N_FORMATS)
        return emoe_errf(err, EMOE_EINVAL, "%s: unknown expert format code %d", what, info->format);
    if (info->format != QUANT_NONE)
        eb = 2 * (uint64_t)info->expert_ffn * quant_row_bytes(info->format, info->dim) +
             (uint64_t)info->dim * quant_row_bytes(info->format, info->expert_ffn);
    else if (!emoe_mul_ok((uint64_t)info->dim * (uint64_t)info->expert_ffn, 3 * (uint64_t)ds, &eb))
        return emoe_errf(err, EMOE_EINVAL, "%s: extent size overflows", what);
    info->extent_bytes = eb;
    info->extent_stride = align_up(eb);
    uint64_t n = (uint64_t)info->n_layers * (uint64_t)info->n_experts;
    *hdr_bytes = align_up(STORE_HEADER_FIXED + n * STORE_ENTRY_BYTES);
    info->data_offset = *hdr_bytes;
    uint64_t data;
    if (!emoe_mul_ok(n, info->extent_stride, &data) || data > (UINT64_MAX >> 2))
        return emoe_errf(err, EMOE_EINVAL, "%s: store size overflows", what);
    info->file_size = info->data_offset + data;
    return EMOE_OK;
}

/* ---- reader ------------------------------------------------------------------ */

struct store_t {
    char path[PATH_MAX];
    store_info info;
    store_extent *ext; /* n_layers*n_experts, layer-major */
};

emoe_status store_open(const char *path, uint64_t expect_fp, store_t **out, emoe_err *err)
{
    *out = NULL;
    store_t *s = NULL;
    uint8_t *tbl = NULL;
    uint8_t h[STORE_HEADER_FIXED];
    emoe_status st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return emoe_errf(err, errno == ENOENT ? EMOE_ENOTFOUND : EMOE_EIO, "expert store %s: %s", path,
                         strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = emoe_errf(err, EMOE_EINVAL, "expert store %s: not a regular file", path);
        goto fail;
    }
    ssize_t r = pread(fd, h, sizeof h, 0);
    if (r != (ssize_t)sizeof h) {
        st = emoe_errf(err, EMOE_EINVAL, "expert store %s: truncated: %lld bytes, the header alone is %u",
                       path, (long long)sb.st_size, STORE_HEADER_FIXED);
        goto fail;
    }
    if (memcmp(h + H_MAGIC, STORE_MAGIC, 8) != 0) {
        st = emoe_errf(err, EMOE_EINVAL, "expert store %s: bad magic (not an emoe expert store)", path);
        goto fail;
    }
    if (get32(h + H_VERSION) != STORE_VERSION) {
        st = emoe_errf(err, EMOE_EUNSUP, "expert store %s: version %u, this build reads version %u (re-run emoe pack)",
                       path, get32(h + H_VERSION), STORE_VERSION);
        goto fail;
    }
    uint32_t hcrc = header_crc(h);
    if (hcrc != get32(h + H_HDRCRC)) {
        st = emoe_errf(err, EMOE_EINVAL, "expert store %s: header checksum mismatch (stored 0x%08x, computed 0x%08x): corrupted",
                       path, get32(h + H_HDRCRC), hcrc);
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (!s) { st = emoe_errf(err, EMOE_ENOMEM, "expert store %s: out of memory", path); goto fail; }
    snprintf(s->path, sizeof s->path, "%s", path);
    store_info *in = &s->info;
    in->fingerprint = get64(h + H_FP);
    in->dtype = (eng_dtype)get32(h + H_DTYPE);
    if (get32(h + H_FORMAT) >= QUANT_N_FORMATS) {
        st = emoe_errf(err, EMOE_EUNSUP, "expert store %s: unknown expert format code %u (a newer emoe wrote it?)",
                       path, get32(h + H_FORMAT));
        goto fail;
    }
    in->format = (int)get32(h + H_FORMAT);
    in->n_layers = (int)get32(h + H_LAYERS);
    in->n_experts = (int)get32(h + H_EXPERTS);
    in->dim = (int)get32(h + H_DIM);
    in->expert_ffn = (int)get32(h + H_FFN);
    if (get32(h + H_LAYERS) > 4096 || get32(h + H_EXPERTS) > 4096 || get32(h + H_DIM) > (1u << 20) ||
        get32(h + H_FFN) > (1u << 20) || get32(h + H_DTYPE) > 2) {
        st = emoe_errf(err, EMOE_EINVAL, "expert store %s: header fields out of bounds", path);
        goto fail;
    }
    uint64_t hdr_bytes;
    store_info want = *in;
    if ((st = layout(&want, &hdr_bytes, path, err)) != EMOE_OK) goto fail;
    const struct { const char *name; uint64_t got, want; } chk[] = {
        {"header_bytes", get32(h + H_HDRBYTES), hdr_bytes},
        {"extent_bytes", get64(h + H_EXTBYTES), want.extent_bytes},
        {"extent_stride", get64(h + H_STRIDE), want.extent_stride},
        {"data_offset", get64(h + H_DATAOFF), want.data_offset},
        {"file_size", get64(h + H_FILESIZE), want.file_size},
    };
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++)
        if (chk[i].got != chk[i].want) {
            st = emoe_errf(err, EMOE_EINVAL, "expert store %s: header field %s is %" PRIu64 ", the shapes imply %" PRIu64,
                           path, chk[i].name, chk[i].got, chk[i].want);
            goto fail;
        }
    *in = want;
    if ((uint64_t)sb.st_size != in->file_size) {
        st = emoe_errf(err, EMOE_EINVAL, "expert store %s: %s: the header says %" PRIu64 " bytes, the file has %lld",
                       path, (uint64_t)sb.st_size < in->file_size ? "truncated" : "trailing bytes",
                       in->file_size, (long long)sb.st_size);
        goto fail;
    }
    if (expect_fp && in->fingerprint != expect_fp) {
        st = emoe_errf(err, EMOE_EINVAL,
                       "expert store %s was packed from another model (store fingerprint %016" PRIx64
                       ", this model %016" PRIx64 "); re-run `emoe pack` for this model or pass the right --store",
                       path, in->fingerprint, expect_fp);
        goto fail;
    }
    size_t n = (size_t)in->n_layers * (size_t)in->n_experts;
    size_t tbytes = n * STORE_ENTRY_BYTES;
    tbl = malloc(tbytes);
    s->ext = calloc(n, sizeof *s->ext);
    if (!tbl || !s->ext) { st = emoe_errf(err, EMOE_ENOMEM, "expert store %s: out of memory", path); goto fail; }
    if (pread(fd, tbl, tbytes, STORE_HEADER_FIXED) != (ssize_t)tbytes) {
        st = emoe_errf(err, EMOE_EIO, "expert store %s: cannot read the extent table", path);
        goto fail;
    }
    uint32_t tcrc = store_crc32c(0, tbl, tbytes);
    if (tcrc != get32(h + H_TABLECRC)) {
        st = emoe_errf(err, EMOE_EINVAL, "expert store %s: extent table checksum mismatch (stored 0x%08x, computed 0x%08x): corrupted",
                       path, get32(h + H_TABLECRC), tcrc);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        store_extent *x = &s->ext[i];
        x->offset = get64(tbl + i * STORE_ENTRY_BYTES);
        x->length = get64(tbl + i * STORE_ENTRY_BYTES + 8);
        x->crc = get32(tbl + i * STORE_ENTRY_BYTES + 16);
        if (x->offset % STORE_ALIGN || x->offset < in->data_offset || x->length != in->extent_bytes ||
            x->offset > in->file_size - in->extent_stride) {
            st = emoe_errf(err, EMOE_EINVAL,
                           "expert store %s: extent (layer %zu, expert %zu) has offset %" PRIu64 " length %" PRIu64
                           ", outside the data area or misaligned",
                           path, i / (size_t)in->n_experts, i % (size_t)in->n_experts, x->offset, x->length);
            goto fail;
        }
    }
    free(tbl);
    close(fd);
    *out = s;
    return EMOE_OK;
fail:
    free(tbl);
    store_close(s);
    close(fd);
    return st;
}

void store_close(store_t *s)
{
    if (!s) return;
    free(s->ext);
    free(s);
}

const store_info *store_get_info(const store_t *s) { return &s->info; }

const char *store_default_name(int fmt)
{
    switch (fmt) {
    case QUANT_Q8: return "experts.q8.emoe";
    case QUANT_Q4: return "experts.q4.emoe";
    }
    return STORE_DEFAULT_NAME;
}

emoe_status store_check_format(const store_t *s, int fmt, emoe_err *err)
{
    if (s->info.format == fmt) return EMOE_OK;
    return emoe_errf(err, EMOE_EINVAL,
                     "expert store %s holds %s experts, %s were asked for; pack one with "
                     "`emoe pack -m DIR --expert-format %s` or pass the right --store",
                     s->path, quant_format_name(s->info.format), quant_format_name(fmt), quant_format_name(fmt));
}
const char *store_path(const store_t *s) { return s->path; }

const store_extent *store_extent_of(const store_t *s, int layer, int expert)
{
    if (layer < 0 || layer >= s->info.n_layers || expert < 0 || expert >= s->info.n_experts) return NULL;
    return &s->ext[(size_t)layer * (size_t)s->info.n_experts + (size_t)expert];
}

emoe_status store_verify_extent(const store_t *s, int layer, int expert, const void *buf, emoe_err *err)
{
    const store_extent *x = store_extent_of(s, layer, expert);
    if (!x) return emoe_errf(err, EMOE_EINVAL, "expert store %s: no extent (layer %d, expert %d)", s->path, layer, expert);
    uint32_t c = store_crc32c(0, buf, x->length);
    if (c != x->crc)
        return emoe_errf(err, EMOE_EIO,
                         "expert store %s: extent (layer %d, expert %d) at offset %" PRIu64
                         " checksum mismatch (stored 0x%08x, computed 0x%08x): the store is corrupted, re-run emoe pack",
                         s->path, layer, expert, x->offset, x->crc, c);
    return EMOE_OK;
}

/* ---- writer ------------------------------------------------------------------ */

static emoe_status write_all(int fd, const void *buf, size_t n, uint64_t off, const char *path, emoe_err *err)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return emoe_errf(err, EMOE_EIO, "writing %s: %s", path, w < 0 ? strerror(errno) : "short write");
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return EMOE_OK;
}

static void progress_draw(size_t done, size_t total, double t0)
{
    int w = 40, fill = total ? (int)((double)done * w / (double)total) : w;
    char bar[64];
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "\rpacking experts [%s] %zu/%zu %.1fs", bar, done, total, emoe_now() - t0);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

emoe_status store_write(const char *path, const store_info *info_in, store_fill_fn fill, void *user,
                        int progress, emoe_err *err)
{
    store_info info = *info_in;
    uint64_t hdr_bytes;
    emoe_status st = layout(&info, &hdr_bytes, path, err);
    if (st) return st;
    char tmp[PATH_MAX + 32];
    store_remove_stale_tmp(path); /* left by a pack that was killed (store_tmp.c) */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    size_t n = (size_t)info.n_layers * (size_t)info.n_experts;
    uint8_t *hdr = calloc(1, hdr_bytes);
    uint8_t *buf = aligned_alloc(STORE_ALIGN, info.extent_stride);
    int fd = -1;
    if (!hdr || !buf) { st = emoe_errf(err, EMOE_ENOMEM, "packing %s: out of memory", path); goto fail; }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { st = emoe_errf(err, EMOE_EIO, "packing: cannot create %s: %s", tmp, strerror(errno)); goto fail; }
    /* Header space first (zeros: no magic, so a partial file is never valid). */
    if ((st = write_all(fd, hdr, hdr_bytes, 0, tmp, err))) goto fail;
    double t0 = emoe_now(), last = 0;
    for (size_t i = 0; i < n; i++) {
        int l = (int)(i / (size_t)info.n_experts), x = (int)(i % (size_t)info.n_experts);
        memset(buf, 0, info.extent_stride);
        if ((st = fill(user, l, x, buf, err))) {
            emoe_err_prefix(err, "packing %s: layer %d expert %d", path, l, x);
            goto fail;
        }
        uint64_t off = info.data_offset + (uint64_t)i * info.extent_stride;
        if ((st = write_all(fd, buf, info.extent_stride, off, tmp, err))) goto fail;
        uint8_t *e = hdr + STORE_HEADER_FIXED + i * STORE_ENTRY_BYTES;
        put64(e, off);
        put64(e + 8, info.extent_bytes);
        put32(e + 16, store_crc32c(0, buf, info.extent_bytes));
        if (progress && (emoe_now() - last > 0.1 || i + 1 == n)) {
            last = emoe_now();
            progress_draw(i + 1, n, t0);
        }
    }
    memcpy(hdr + H_MAGIC, STORE_MAGIC, 8);
    put32(hdr + H_VERSION, STORE_VERSION);
    put32(hdr + H_HDRBYTES, (uint32_t)hdr_bytes);
    put64(hdr + H_FP, info.fingerprint);
    put32(hdr + H_DTYPE, (uint32_t)info.dtype);
    put32(hdr + H_FORMAT, (uint32_t)info.format);
    put32(hdr + H_LAYERS, (uint32_t)info.n_layers);
    put32(hdr + H_EXPERTS, (uint32_t)info.n_experts);
    put32(hdr + H_DIM, (uint32_t)info.dim);
    put32(hdr + H_FFN, (uint32_t)info.expert_ffn);
    put64(hdr + H_EXTBYTES, info.extent_bytes);
    put64(hdr + H_STRIDE, info.extent_stride);
    put64(hdr + H_DATAOFF, info.data_offset);
    put64(hdr + H_FILESIZE, info.file_size);
    put32(hdr + H_TABLECRC, store_crc32c(0, hdr + STORE_HEADER_FIXED, n * STORE_ENTRY_BYTES));
    put32(hdr + H_HDRCRC, header_crc(hdr));
    if ((st = write_all(fd, hdr, hdr_bytes, 0, tmp, err))) goto fail;
    if (fsync(fd) != 0) { st = emoe_errf(err, EMOE_EIO, "fsync %s: %s", tmp, strerror(errno)); goto fail; }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) { st = emoe_errf(err, EMOE_EIO, "rename %s -> %s: %s", tmp, path, strerror(errno)); goto fail; }
    {   /* Make the rename durable. */
        char dirbuf[PATH_MAX];
        snprintf(dirbuf, sizeof dirbuf, "%s", path);
        int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { (void)fsync(dfd); close(dfd); }
    }
    free(hdr);
    free(buf);
    return EMOE_OK;
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(hdr);
    free(buf);
    return st;
}

/* ---- engine glue ----------------------------------------------------------- */

static emoe_status check_tensor(const eng_tensor *t, const char *name, int64_t rows, int64_t cols, eng_dtype dt,
                                int layer, int expert, emoe_err *err)
{
    if (!t->data || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols || t->dtype != dt)
        return emoe_errf(err, EMOE_EINVAL,
                         "expert (layer %d, expert %d) %s: expected %s (%lld, %lld), got %s ndim %d (%lld, %lld)",
                         layer, expert, name, eng_dtype_name(dt), (long long)rows, (long long)cols,
                         eng_dtype_name(t->dtype), t->ndim, (long long)t->shape[0],
                         (long long)(t->ndim > 1 ? t->shape[1] : 0));
    return EMOE_OK;
}

emoe_status store_info_from_engine(eng_engine *e, store_info *info, emoe_err *err)
{
    return store_info_from_engine_format(e, QUANT_NONE, info, err);
}

emoe_status store_info_from_engine_format(eng_engine *e, int fmt, store_info *info, emoe_err *err)
{
    const eng_model_desc *d = eng_desc(e);
    eng_expert_weights w;
    emoe_status st = eng_checkpoint_expert(e, 0, 0, &w, err);
    if (st) return st;
    memset(info, 0, sizeof *info);
    info->dtype = w.gate.dtype;
    info->n_layers = d->n_layers;
    info->n_experts = d->n_experts;
    info->dim = d->dim;
    info->expert_ffn = d->expert_ffn;
    info->format = fmt;
    uint64_t hb;
    return layout(info, &hb, eng_model_dir(e), err);
}

typedef struct fill_ctx {
    eng_engine *e;
    int fmt;
    eng_pool *pool; /* quantized formats: threads for quant_tensor_quantize (NULL: this one) */
} fill_ctx;

/* Copies the three tensors of (layer, expert) into dst back to back (dense),
 * or quantizes them row by row. */
static emoe_status fill_format(void *user, int layer, int expert, void *dst, emoe_err *err)
{
    fill_ctx *fc = user;
    eng_engine *e = fc->e;
    const eng_model_desc *d = eng_desc(e);
    eng_expert_weights w;
    emoe_status st = eng_checkpoint_expert(e, layer, expert, &w, err);
    if (st) return st;
    eng_dtype dt = w.gate.dtype;
    if ((st = check_tensor(&w.gate, "gate", d->expert_ffn, d->dim, dt, layer, expert, err)) ||
        (st = check_tensor(&w.up, "up", d->expert_ffn, d->dim, dt, layer, expert, err)) ||
        (st = check_tensor(&w.down, "down", d->dim, d->expert_ffn, dt, layer, expert, err)))
        return st;
    if (fc->fmt != QUANT_NONE) { /* row by row, on the pool's threads (engine/quant.c) */
        const eng_tensor *t[3] = {&w.gate, &w.up, &w.down};
        uint8_t *o = dst;
        for (int i = 0; i < 3; i++) {
            if (quant_tensor_quantize(fc->pool, fc->fmt, t[i], o))
                return emoe_errf(err, EMOE_ENOMEM, "quantizing layer %d expert %d: out of memory", layer, expert);
            o += (size_t)t[i]->shape[0] * quant_row_bytes(fc->fmt, t[i]->shape[1]);
        }
        return EMOE_OK;
    }
    size_t one = (size_t)d->expert_ffn * (size_t)d->dim * eng_dtype_size(dt);
    memcpy(dst, w.gate.data, one);
    memcpy((uint8_t *)dst + one, w.up.data, one);
    memcpy((uint8_t *)dst + 2 * one, w.down.data, one);
    return EMOE_OK;
}

/* FNV-1a 64 over bytes, continued from h. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}

emoe_status store_model_fingerprint(eng_engine *e, uint64_t *fp, emoe_err *err)
{
    store_info info;
    emoe_status st = store_info_from_engine(e, &info, err);
    if (st) return st;
    const eng_model_desc *d = eng_desc(e);
    uint64_t h = 0xcbf29ce484222325ull;
    int32_t f[6] = {(int32_t)d->family, (int32_t)info.dtype, info.n_layers, info.n_experts, info.dim, info.expert_ffn};
    h = fnv(h, f, sizeof f);
    h = fnv(h, d->model_type, strnlen(d->model_type, sizeof d->model_type));
    uint8_t *buf = malloc(info.extent_bytes);
    if (!buf) return emoe_errf(err, EMOE_ENOMEM, "fingerprint: out of memory");
    const int samples[3][2] = {{0, 0}, {info.n_layers / 2, info.n_experts / 2}, {info.n_layers - 1, info.n_experts - 1}};
    for (int i = 0; i < 3; i++) {
        fill_ctx fc = {e, QUANT_NONE, NULL};
        if ((st = fill_format(&fc, samples[i][0], samples[i][1], buf, err))) break;
        uint32_t c = store_crc32c(0, buf, info.extent_bytes);
        h = fnv(h, &c, sizeof c);
    }
    free(buf);
    if (st) return st;
    *fp = h ? h : 1; /* 0 means "don't check" to store_open */
    return EMOE_OK;
}

emoe_status store_pack_engine(eng_engine *e, const char *path, int progress, emoe_err *err)
{
    return store_pack_engine_format(e, path, QUANT_NONE, progress, err);
}

emoe_status store_pack_engine_format(eng_engine *e, const char *path, int fmt, int progress, emoe_err *err)
{
    store_info info;
    emoe_status st = store_info_from_engine_format(e, fmt, &info, err);
    if (st) return st;
    if ((st = store_model_fingerprint(e, &info.fingerprint, err))) return st;
    fill_ctx fc = {e, fmt, fmt != QUANT_NONE ? eng_pool_new(0) : NULL};
    st = store_write(path, &info, fill_format, &fc, progress, err);
    if (fc.pool) eng_pool_free(fc.pool);
    return st;
}

/* The folder of path is writable: access() and, since root passes access()
 * regardless, at least one write permission bit (a folder shipped read-only,
 * like a shared model folder, is left alone even by root). */
static int dir_writable(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    const char *d = dirname(buf);
    struct stat sb;
    return access(d, W_OK) == 0 && stat(d, &sb) == 0 && (sb.st_mode & 0222);
}

static emoe_status open_check(const char *path, uint64_t fp, int fmt, emoe_err *err)
{
    store_t *s;
    emoe_status st = store_open(path, fp, &s, err);
    if (st == EMOE_OK) st = store_check_format(s, fmt, err);
    store_close(s);
    return st;
}

emoe_status store_find_or_build(eng_engine *e, const char *configured, char *out_path, size_t cap,
                                uint64_t *fp_out, emoe_err *err)
{
    return store_find_or_build_format(e, configured, QUANT_NONE, out_path, cap, fp_out, err);
}

emoe_status store_find_or_build_format(eng_engine *e, const char *configured, int fmt, char *out_path,
                                       size_t cap, uint64_t *fp_out, emoe_err *err)
{
    uint64_t fp;
    emoe_status st = store_model_fingerprint(e, &fp, err);
    if (st) return st;
    if (fp_out) *fp_out = fp;
    char path[PATH_MAX];
    struct stat sb;
    int progress = isatty(2);
    if (configured && *configured) {
        snprintf(path, sizeof path, "%s", configured);
    } else {
        snprintf(path, sizeof path, "%s/%s", eng_model_dir(e), store_default_name(fmt));
        if (stat(path, &sb) != 0 && !dir_writable(path)) {
            const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
            char dir[PATH_MAX - 64];
            if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/emoe", xdg);
            else if (home && *home) snprintf(dir, sizeof dir, "%s/.cache/emoe", home);
            else return emoe_errf(err, EMOE_EINVAL, "no expert store for %s: the model folder is read-only and "
                                  "neither XDG_CACHE_HOME nor HOME is set; run `emoe pack -m DIR -o FILE` and pass --store FILE",
                                  eng_model_dir(e));
            for (char *q = dir + 1; *q; q++) /* mkdir -p */
                if (*q == '/') { *q = 0; (void)mkdir(dir, 0755); *q = '/'; }
            (void)mkdir(dir, 0755);
            if (fmt == QUANT_NONE) snprintf(path, sizeof path, "%s/%016" PRIx64 ".emoe", dir, fp);
            else snprintf(path, sizeof path, "%s/%016" PRIx64 ".%s.emoe", dir, fp, quant_format_name(fmt));
        }
    }
    if (strlen(path) + 1 > cap) return emoe_errf(err, EMOE_EINVAL, "store path too long: %s", path);
    if (stat(path, &sb) != 0) {
        LOG_INFO("no %s expert store at %s: packing it from %s (one time)", quant_format_name(fmt), path,
                 eng_model_dir(e));
        if ((st = store_pack_engine_format(e, path, fmt, progress, err))) return st;
    }
    if ((st = open_check(path, fp, fmt, err))) return st;
    snprintf(out_path, cap, "%s", path);
    return EMOE_OK;
}
