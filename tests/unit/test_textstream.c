/* test_textstream.c — stop strings across token boundaries are never leaked,
 * incomplete UTF-8 is held back, invalid bytes become U+FFFD; the result does
 * not depend on how the bytes were split into tokens. */
#include "tests/unit/testutil.h"
#include "scheduler/textstream.h"

/* Feeds text split at the given cut points; returns released text (malloc'd). */
static char *run_split(const char *text, size_t n, const size_t *cuts, int ncuts,
                       const char *const *stops, int nstop, int *stopped, size_t *outlen)
{
    sched_textstream ts;
    ck_assert_int_eq(sched_ts_init(&ts, stops, nstop), 0);
    sched_buf out = {0};
    size_t prev = 0;
    *stopped = 0;
    for (int c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : n;
        size_t before = out.n;
        int rc = sched_ts_push(&ts, text + prev, end - prev, &out);
        ck_assert_int_ge(rc, 0);
        /* Whatever has been released so far is valid UTF-8 and contains no stop. */
        ck_assert(sched_utf8_valid(out.p ? out.p : "", out.n));
        ck_assert(out.n >= before);
        prev = end;
        if (rc == 1) { *stopped = 1; break; }
    }
    if (!*stopped) ck_assert_int_eq(sched_ts_finish(&ts, &out), 0);
    sched_ts_free(&ts);
    *outlen = out.n;
    if (!out.p) return strdup("");
    return out.p;
}

START_TEST(stop_across_boundaries)
{
    const char *text = "Hello wor" "ld! The END is near. END";
    const char *stops[] = {"END", "xyz"};
    size_t n = strlen(text);
    /* Every single cut and every pair of cuts. */
    for (size_t a = 0; a <= n; a++)
        for (size_t b = a; b <= n; b++) {
            size_t cuts[2] = {a, b};
            int stopped;
            size_t len;
            char *o = run_split(text, n, cuts, 2, stops, 2, &stopped, &len);
            ck_assert_int_eq(stopped, 1);
            ck_assert_str_eq(o, "Hello world! The ");
            free(o);
        }
}
END_TEST

START_TEST(partial_stop_released_at_end)
{
    const char *stops[] = {"</s>"};
    size_t cuts[1] = {3};
    int stopped;
    size_t len;
    char *o = run_split("abc</", 5, cuts, 1, stops, 1, &stopped, &len);
    ck_assert_int_eq(stopped, 0);
    ck_assert_str_eq(o, "abc</");
    free(o);
    /* While the stream is open the "</" suffix must be held back. */
    sched_textstream ts;
    sched_ts_init(&ts, stops, 1);
    sched_buf out = {0};
    ck_assert_int_eq(sched_ts_push(&ts, "abc</", 5, &out), 0);
    ck_assert_uint_eq(out.n, 3);
    ck_assert_int_eq(sched_ts_push(&ts, "x", 1, &out), 0);
    ck_assert_str_eq(out.p, "abc</x");
    sched_ts_free(&ts);
    sched_buf_free(&out);
}
END_TEST

START_TEST(utf8_held_and_replaced)
{
    /* "é" = C3 A9, "€" = E2 82 AC, "😀" = F0 9F 98 80, split inside each. */
    const char *text = "a\xC3\xA9" "b\xE2\x82\xAC" "c\xF0\x9F\x98\x80" "d";
    size_t n = strlen(text);
    for (size_t a = 0; a <= n; a++) {
        size_t cuts[1] = {a};
        int stopped;
        size_t len;
        char *o = run_split(text, n, cuts, 1, NULL, 0, &stopped, &len);
        ck_assert_str_eq(o, text);
        free(o);
    }
    /* Invalid bytes: lone continuation, overlong, surrogate, truncated at end. */
    const char *bad = "x\x80y\xC0\xAFz\xED\xA0\x80w\xE2\x82";
    int stopped;
    size_t len, cuts[1] = {5};
    char *o = run_split(bad, strlen(bad), cuts, 1, NULL, 0, &stopped, &len);
    ck_assert(sched_utf8_valid(o, len));
    ck_assert_str_eq(o, "x\xEF\xBF\xBDy\xEF\xBF\xBD\xEF\xBF\xBDz\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDw\xEF\xBF\xBD");
    free(o);
}
END_TEST

/* Random byte strings with random splits: same result as one push. */
START_TEST(split_invariance_random)
{
    unsigned seed = 12345;
    const char *stops[] = {"\xC3\xA9z", "ab", "\xF0\x9F"};
    for (int iter = 0; iter < 3000; iter++) {
        char text[32];
        size_t n = (size_t)(rand_r(&seed) % 32);
        static const unsigned char alphabet[] = {'a', 'b', 'z', 0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80, 0xE2, 0x82, 0xFF};
        for (size_t i = 0; i < n; i++) text[i] = (char)alphabet[rand_r(&seed) % sizeof alphabet];
        int nstop = iter % 4;
        int st1, st2;
        size_t l1, l2;
        char *whole = run_split(text, n, NULL, 0, stops, nstop, &st1, &l1);
        size_t cuts[6];
        int nc = (int)(rand_r(&seed) % 6);
        size_t last = 0;
        for (int c = 0; c < nc; c++) {
            last += n > last ? (size_t)rand_r(&seed) % (n - last + 1) : 0;
            cuts[c] = last;
        }
        char *split = run_split(text, n, cuts, nc, stops, nstop, &st2, &l2);
        ck_assert_int_eq(st1, st2);
        ck_assert_uint_eq(l1, l2);
        ck_assert(!memcmp(whole, split, l1));
        for (int s = 0; s < nstop; s++) ck_assert(memmem(whole, l1, stops[s], strlen(stops[s])) == NULL);
        free(whole);
        free(split);
    }
}
END_TEST

static Suite *ts_suite(void)
{
    Suite *s = suite_create("textstream");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, stop_across_boundaries);
    tcase_add_test(tc, partial_stop_released_at_end);
    tcase_add_test(tc, utf8_held_and_replaced);
    tcase_add_test(tc, split_invariance_random);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(ts_suite)
