/*
 * safetensors.h — a validating, mmapping reader of one .safetensors file.
 * The header is checked the way the reference implementation does: length
 * bounds, a UTF-8 JSON object, no duplicate names, known dtypes, shape
 * products without overflow, end-begin == numel*dtype_size, offsets inside the
 * data area, contiguous and non-overlapping, and dtype-aligned data.
 */
#ifndef EMOE_SAFETENSORS_H
#define EMOE_SAFETENSORS_H

#include "engine/common.h"
#include "engine/tensor.h"

#define ST_MAX_HEADER (100u * 1000u * 1000u)  /* same bound as the reference */
#define ST_MAX_NDIM 8

typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32,
    ST_F32, ST_F64, ST_I64, ST_U64, ST_F8_E4M3, ST_F8_E5M2, ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_NDIM];
    uint64_t begin, end;      /* relative to the data area */
    const void *data;         /* into the mapping */
} st_tensor;

typedef struct st_file {
    char *path;
    int fd;
    void *map;
    size_t map_len;
    uint64_t data_off;        /* 8 + header length */
    int n_tensors;
    st_tensor *tensors;
} st_file;

/* Opens and validates path; on success *out is owned by the caller (st_close). */
emoe_status st_open(const char *path, st_file **out, emoe_err *err);
/* Validates an in-memory file image (used by st_open and the fuzzer). Tensors'
 * data pointers point into buf. */
emoe_status st_parse(const char *path, const void *buf, size_t len, st_file **out, emoe_err *err);
void st_close(st_file *f);
const char *st_dtype_name(st_dtype d);
size_t st_dtype_size(st_dtype d);
/* Maps a safetensors dtype onto a compute dtype; -1 if not a float weight type. */
int st_dtype_to_eng(st_dtype d, eng_dtype *out);

#endif
