/*
 * store.h — the expert store: one file holding every routed expert's weights
 * (gate, up, down, in the checkpoint's dtype) as one contiguous extent per
 * (layer, expert), each starting on a 4 KiB boundary and padded to a 4 KiB
 * multiple so it can be read with O_DIRECT in a single request.
 *
 * On-disk layout (little-endian), version 1:
 *   [0, 128)            header (magic "EMOESTOR", version, model fingerprint,
 *                       dtype, shapes, extent size/stride, data offset, file
 *                       size, CRC32C of the table, CRC32C of these 128 bytes
 *                       with the CRC field read as zero)
 *   [128, header_bytes) extent table: n_layers*n_experts entries of 24 bytes
 *                       {u64 offset, u64 length, u32 crc32c, u32 reserved},
 *                       layer-major; header_bytes is a multiple of 4096
 *   [data_offset, ...)  extents, stride extent_stride, zero padded
 * An extent is gate (ffn,dim) | up (ffn,dim) | down (dim,ffn), row-major, in
 * the header's format: 0 = dense in `dtype`, 1 = q8, 2 = q4 (rows of
 * quant.h blocks, docs/quant.md; `dtype` then names the checkpoint's dtype).
 * The format is a u32 at byte 88 of the header (zero in stores written before
 * it existed, which are dense), covered by the header CRC.
 *
 * The writer is atomic: it writes "<path>.tmp.<pid>", fsyncs, renames over
 * <path> and fsyncs the folder, so a crash never leaves a file at <path>
 * that looks valid but is not. The reader validates every field and refuses
 * a truncated file, a corrupted header/table, and (when asked) a store whose
 * model fingerprint differs from the model's.
 */
#ifndef EMOE_STORE_H
#define EMOE_STORE_H

#include <stdint.h>
#include <stddef.h>

#include "engine/common.h"
#include "engine/tensor.h"
#include "engine/engine.h"

#define STORE_MAGIC "EMOESTOR"
#define STORE_VERSION 1u
#define STORE_ALIGN 4096u
#define STORE_HEADER_FIXED 128u
#define STORE_ENTRY_BYTES 24u
#define STORE_DEFAULT_NAME "experts.emoe"
/* Default file name of a store of format fmt (quant_format): "experts.emoe"
 * for dense, "experts.q8.emoe", "experts.q4.emoe". */
const char *store_default_name(int fmt);

typedef struct store_extent {
    uint64_t offset;  /* byte offset in the file, multiple of STORE_ALIGN */
    uint64_t length;  /* == extent_bytes */
    uint32_t crc;     /* CRC32C of the `length` payload bytes */
} store_extent;

typedef struct store_info {
    uint64_t fingerprint;   /* model fingerprint (store_model_fingerprint) */
    eng_dtype dtype;        /* the checkpoint's dtype (of the extents when format is 0) */
    int format;             /* quant_format: 0 dense, QUANT_Q8, QUANT_Q4 */
    int n_layers;
    int n_experts;
    int dim;
    int expert_ffn;
    uint64_t extent_bytes;  /* dense: 3 * expert_ffn * dim * dtype size; quantized: the rows' bytes */
    uint64_t extent_stride; /* extent_bytes rounded up to STORE_ALIGN */
    uint64_t data_offset;   /* first extent */
    uint64_t file_size;
} store_info;

typedef struct store_t store_t;

/* CRC32C (Castagnoli), hardware-accelerated where SSE4.2 is present.
 * Start with crc = 0; chaining store_crc32c(store_crc32c(0,a),b) equals the CRC
 * of a||b. */
uint32_t store_crc32c(uint32_t crc, const void *buf, size_t n);

/* Opens and validates the store at path (header, table, extents inside the
 * file, file size). expect_fp != 0: refuse a store whose fingerprint differs.
 * On success *out owns the descriptor; on failure err names the file and field. */
emoe_status store_open(const char *path, uint64_t expect_fp, store_t **out, emoe_err *err);
void store_close(store_t *s);
const store_info *store_get_info(const store_t *s);
const char *store_path(const store_t *s);
/* The extent of (layer, expert); NULL when out of range. */
const store_extent *store_extent_of(const store_t *s, int layer, int expert);
/* Checks buf (extent payload of (layer, expert)) against its stored CRC.
 * EMOE_EIO with a message naming the extent on mismatch. */
/* EINVAL naming the file and both formats when s is not of format fmt. */
emoe_status store_check_format(const store_t *s, int fmt, emoe_err *err);
emoe_status store_verify_extent(const store_t *s, int layer, int expert, const void *buf,
                                emoe_err *err);

/* Writer. fill() copies the extent_bytes payload of (layer, expert) into dst
 * (zeroed, extent_stride bytes available). info: fingerprint, dtype and shapes
 * set; the rest is computed. progress != 0 draws a bar on stderr. */
typedef emoe_status (*store_fill_fn)(void *user, int layer, int expert, void *dst, emoe_err *err);
emoe_status store_write(const char *path, const store_info *info, store_fill_fn fill, void *user,
                        int progress, emoe_err *err);
/* Unlinks "<path>.tmp.<pid>" temporaries whose process is gone (a pack killed
 * before its rename); store_write calls it first. Returns how many. */
int store_remove_stale_tmp(const char *path);

/* Fills the shape fields of info (dtype, n_layers, n_experts, dim, expert_ffn,
 * extent_bytes, extent_stride) from an open engine; checks that every expert
 * has the same dtype/shape. */
emoe_status store_info_from_engine(eng_engine *e, store_info *info, emoe_err *err);
/* The same for a store of format fmt (extent sizes of the quantized rows). */
emoe_status store_info_from_engine_format(eng_engine *e, int fmt, store_info *info, emoe_err *err);

/* The model fingerprint: a 64-bit hash of the family, the shapes and dtype,
 * and the full bytes of a few sampled experts (first, middle, last). It tells
 * models of the same shape but different weights apart without reading all
 * experts; a checkpoint differing only in unsampled experts is not detected. */
emoe_status store_model_fingerprint(eng_engine *e, uint64_t *fp, emoe_err *err);

/* Writes the store of the engine's checkpoint to path (atomically). */
emoe_status store_pack_engine(eng_engine *e, const char *path, int progress, emoe_err *err);
/* The same in format fmt (dense, or quantized from the checkpoint's rows). */
emoe_status store_pack_engine_format(eng_engine *e, const char *path, int fmt, int progress, emoe_err *err);

/* Resolves the store for an engine: `configured` if non-NULL (built there if
 * missing), else <model dir>/experts.emoe if it exists, else built there, or if
 * the model folder is read-only in $XDG_CACHE_HOME/emoe (~/.cache/emoe)/
 * <fingerprint>.emoe. The store found is validated against the model's
 * fingerprint (a mismatching one is refused, not rebuilt). Writes the path
 * into out_path. */
emoe_status store_find_or_build(eng_engine *e, const char *configured, char *out_path,
                                size_t cap, uint64_t *fp_out, emoe_err *err);
/* The same for format fmt: default DIR/store_default_name(fmt), or
 * <fingerprint>.q8.emoe / .q4.emoe in the cache folder; a store found of
 * another format (or model) is refused with a clear error, never rebuilt. */
emoe_status store_find_or_build_format(eng_engine *e, const char *configured, int fmt, char *out_path,
                                       size_t cap, uint64_t *fp_out, emoe_err *err);

#endif
