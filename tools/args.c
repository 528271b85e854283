/* args.c — see args.h. */
#include "tools/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int arg_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "emoe %s: %s: '%s' is not an integer in %lld..%lld\n", cmd, opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "emoe %s: %s: '%s' is not a number in %g..%g\n", cmd, opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_ids(const char *cmd, const char *opt, const char *s, int32_t **ids, int *n)
{
    int cap = 16, k = 0;
    int32_t *a = malloc(sizeof *a * (size_t)cap);
    const char *p = s;
    if (!a) return -1;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "emoe %s: %s: '%s' is not a comma-separated list of token ids\n", cmd, opt, s);
            free(a);
            return -1;
        }
        if (k == cap) {
            cap *= 2;
            int32_t *b = realloc(a, sizeof *a * (size_t)cap);
            if (!b) { free(a); return -1; }
            a = b;
        }
        a[k++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (k == 0) {
        fprintf(stderr, "emoe %s: %s: empty list of token ids\n", cmd, opt);
        free(a);
        return -1;
    }
    *ids = a;
    *n = k;
    return 0;
}

const char *arg_value(const char *cmd, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "emoe %s: option %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}
