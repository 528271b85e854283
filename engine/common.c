/* common.c — error records, logger, small helpers shared by every module. */
#include "engine/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>

emoe_status emoe_errf(emoe_err *err, emoe_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

emoe_status emoe_err_prefix(emoe_err *err, const char *fmt, ...)
{
    if (!err) return EMOE_EINVAL;
    char pre[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
    memcpy(err->msg, pre, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3, ol = strlen(old);
    if (ol > rest) ol = rest;
    memcpy(err->msg + n + 2, old, ol);
    err->msg[n + 2 + ol] = 0;
    return err->code;
}

const char *emoe_status_str(emoe_status s)
{
    switch (s) {
    case EMOE_OK: return "ok";
    case EMOE_EINVAL: return "invalid input";
    case EMOE_EIO: return "I/O error";
    case EMOE_ENOMEM: return "out of memory";
    case EMOE_EUNSUP: return "unsupported";
    case EMOE_ECANCEL: return "cancelled";
    case EMOE_EBUSY: return "busy";
    case EMOE_EDEVICE: return "device error";
    case EMOE_ENOTFOUND: return "not found";
    }
    return "unknown";
}

volatile int emoe_log_threshold = EMOE_LOG_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void emoe_log_set_level(emoe_log_level lvl) { emoe_log_threshold = (int)lvl; }

int emoe_log_parse_level(const char *s, emoe_log_level *out)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) { *out = (emoe_log_level)i; return 0; }
    return -1;
}

void emoe_log_write(emoe_log_level lvl, const char *fmt, ...)
{
    static const char *tags[] = {"error", "warn", "info", "debug"};
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ emoe[%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, tags[lvl]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && n < (int)sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mu);
    fprintf(stderr, "%s\n", line);
    pthread_mutex_unlock(&log_mu);
}

int emoe_buf_put(emoe_buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (nc < b->n + n + 1) nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q) return -1;
        b->p = q;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

double emoe_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void *emoe_calloc_array(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

int emoe_mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}
