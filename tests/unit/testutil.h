/* testutil.h — helpers shared by the Check suites: locating ../shared, reading files. */
#ifndef EMOE_TESTUTIL_H
#define EMOE_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The shared fixtures folder: $EMOE_SHARED, else ../shared beside the checkout
 * (tests run from the repository root). Returns NULL if absent. */
static inline const char *tu_shared_dir(void)
{
    static char buf[4096];
    const char *env = getenv("EMOE_SHARED");
    snprintf(buf, sizeof buf, "%s", env && *env ? env : "../shared");
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
    return buf;
}

/* Joins shared dir and a relative path into a static buffer; NULL if shared absent. */
static inline const char *tu_shared_path(const char *rel)
{
    static char buf[4096];
    const char *d = tu_shared_dir();
    if (!d) return NULL;
    snprintf(buf, sizeof buf, "%s/%s", d, rel);
    return buf;
}

static inline char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    if (b) b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

/* A little-endian float32 file (the fixtures' reference logits); *n floats. */
static inline float *tu_read_f32(const char *path, size_t *n)
{
    size_t len;
    char *b = tu_read_file(path, &len);
    if (b) *n = len / 4;
    return (float *)b;
}

/* ||a - b|| / ||b|| in double. */
static inline double tu_rel_err(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); den += (double)b[i] * b[i]; }
    return sqrt(num / den);
}

/* Index of the largest value (the first of equals). */
static inline int tu_argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* Prints a clear skip message once per suite. */
#define TU_SKIP_NO_SHARED(what) \
    fprintf(stderr, "SKIP: %s needs ../shared (set EMOE_SHARED); it is absent\n", (what))

/* Standard main: runs the suite returned by make_suite(), exits non-zero on failure. */
#define TU_MAIN(make_suite)                                              \
    int main(void)                                                       \
    {                                                                    \
        SRunner *sr = srunner_create(make_suite());                      \
        srunner_run_all(sr, CK_NORMAL);                                  \
        int nf = srunner_ntests_failed(sr);                              \
        srunner_free(sr);                                                \
        return nf == 0 ? 0 : 1;                                          \
    }

#endif
