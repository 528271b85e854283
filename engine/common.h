/*
 * common.h — status codes, the error record every library call fills on failure,
 * and the levelled logger. Library code returns an emoe_status (0 = OK) and writes
 * a human-readable message naming the file/field/value that was wrong into an
 * emoe_err; it never exits and never asserts on user input.
 */
#ifndef EMOE_COMMON_H
#define EMOE_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef enum emoe_status {
    EMOE_OK = 0,
    EMOE_EINVAL = -1,   /* bad input: file, request, config */
    EMOE_EIO = -2,      /* I/O error */
    EMOE_ENOMEM = -3,   /* allocation failed / budget exceeded */
    EMOE_EUNSUP = -4,   /* valid but unsupported */
    EMOE_ECANCEL = -5,  /* cancelled */
    EMOE_EBUSY = -6,    /* queue full / not ready */
    EMOE_EDEVICE = -7,  /* accelerator error */
    EMOE_ENOTFOUND = -8,
} emoe_status;

typedef struct emoe_err {
    emoe_status code;
    char msg[1024];
} emoe_err;

/* Records code and a formatted message into err (NULL allowed); returns code. */
emoe_status emoe_errf(emoe_err *err, emoe_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes an existing message with more context ("loading X: <old>"). */
emoe_status emoe_err_prefix(emoe_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *emoe_status_str(emoe_status s);

typedef enum emoe_log_level {
    EMOE_LOG_ERROR = 0,
    EMOE_LOG_WARN = 1,
    EMOE_LOG_INFO = 2,
    EMOE_LOG_DEBUG = 3,
} emoe_log_level;

extern volatile int emoe_log_threshold;
void emoe_log_set_level(emoe_log_level lvl);
int emoe_log_parse_level(const char *s, emoe_log_level *out);
void emoe_log_write(emoe_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The level is checked before any argument is formatted. */
#define EMOE_LOG(lvl, ...) do { if ((int)(lvl) <= emoe_log_threshold) emoe_log_write((lvl), __VA_ARGS__); } while (0)
#define LOG_ERROR(...) EMOE_LOG(EMOE_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...)  EMOE_LOG(EMOE_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...)  EMOE_LOG(EMOE_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) EMOE_LOG(EMOE_LOG_DEBUG, __VA_ARGS__)

/* A growable byte string, always NUL-terminated once non-empty. Zero-init is
 * an empty buffer; the owner frees p. */
typedef struct emoe_buf {
    char *p;
    size_t n, cap;
} emoe_buf;
/* Appends n bytes of s; 0, or -1 when out of memory (b unchanged). */
int emoe_buf_put(emoe_buf *b, const void *s, size_t n);

/* Monotonic clock in seconds. */
double emoe_now(void);

/* Checked allocation helpers: return NULL on overflow or failure. */
void *emoe_calloc_array(size_t n, size_t size);
/* a*b with overflow detection; returns 0 on overflow. */
int emoe_mul_ok(uint64_t a, uint64_t b, uint64_t *out);

#endif
