/* args.c — see args.h. */
#include "tools/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

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

int arg_budget(const char *cmd, const char *opt, const char *s, int pct_only)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (n && s[n - 1] == '%') {
        char num[64];
        if (n - 1 == 0 || n - 1 >= sizeof num) goto bad;
        memcpy(num, s, n - 1);
        num[n - 1] = 0;
        char *end;
        errno = 0;
        double v = strtod(num, &end);
        if (errno || *end || !(v > 0.0 && v <= 100.0) || num[0] == '-' || num[0] == '+') {
            fprintf(stderr, "emoe %s: %s '%s': a percentage must be in (0%%, 100%%]\n", cmd, opt, s);
            return -1;
        }
        return 0;
    }
    if (n && s[n - 1] >= '0' && s[n - 1] <= '9') {
        fprintf(stderr, "emoe %s: %s '%s': a bare number is ambiguous; say %s%%%s\n", cmd, opt, s, s,
                pct_only ? "" : " (a share of all experts) or give a unit, e.g. 25MiB or 2GB");
        return -1;
    }
    if (pct_only) goto bad;
    uint64_t b;
    if (cfg_parse_size(s, &b) == 0) return 0;
bad:
    fprintf(stderr, "emoe %s: %s '%s': expected %s\n", cmd, opt, s,
            pct_only ? "a percentage such as 25%" : "a percentage (25%) or a size with a unit (25MiB, 2GB)");
    return -1;
}

int arg_budget_norm(const char *cmd, const char *opt, const char *s, char *out, size_t n)
{
    if (arg_budget(cmd, opt, s, 0)) return -1;
    uint64_t b;
    if (strchr(s, '%') || cfg_parse_size(s, &b)) snprintf(out, n, "%s", s);
    else snprintf(out, n, "%llu", (unsigned long long)b);
    return 0;
}
