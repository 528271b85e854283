/* test_reuse.c — the visit order (scheduler/reuse.c): keep-scores on a
 * cyclic layer walk (the visit in progress pinned, a nearer layer kept over a
 * farther one at equal probability, a likelier expert over a less likely one
 * at the same layer), the EWMA over visits, predictions for the coming visit
 * that lapse once the visit has run, bad shapes refused; and a small cache
 * simulation on a cyclic workload larger than the cache where LRU reloads
 * every expert each step and the visit order keeps the experts every step
 * uses. */
#include "tests/unit/testutil.h"
#include "scheduler/reuse.h"

#include <math.h>

static void visit(reuse_order *r, int layer, const int *ex, int n)
{
    for (int j = 0; j < n; j++) reuse_route(r, layer, ex + j, 1);
}

START_TEST(test_shape_refused)
{
    reuse_order r;
    emoe_err err = {0};
    ck_assert_int_eq(reuse_init(&r, 0, 8, 0.25f, &err), EMOE_EINVAL);
    ck_assert_int_eq(reuse_init(&r, 4, 8, 0.0f, &err), EMOE_EINVAL);
    ck_assert_int_eq(reuse_init(&r, 4, 8, 1.5f, &err), EMOE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "alpha"));
    reuse_free(NULL);
}
END_TEST

START_TEST(test_keep_order)
{
    reuse_order r;
    emoe_err err = {0};
    ck_assert_int_eq(reuse_init(&r, 4, 8, 0.5f, &err), EMOE_OK);
    int a[2] = {1, 2};
    /* step 1: every layer uses experts 1 and 2 */
    for (int l = 0; l < 4; l++) visit(&r, l, a, 2);
    reuse_step_end(&r);
    /* after one visit with alpha 0.5: P = 0.5 for 1 and 2, 0 for the rest */
    ck_assert_float_eq_tol(reuse_prob(&r, 0, 1), 0.5f, 1e-6f);
    ck_assert_float_eq_tol(reuse_prob(&r, 3, 2), 0.5f, 1e-6f);
    ck_assert_float_eq_tol(reuse_prob(&r, 0, 3), 0.0f, 1e-6f);
    /* step 2, layer 1 in progress, routed to 1 only */
    visit(&r, 0, a, 2);
    visit(&r, 1, a, 1);
    /* the visit in progress: expert 1 pinned, expert 2 of the same layer not */
    ck_assert(reuse_keep(&r, 1, 1) > 1e20);
    ck_assert(reuse_keep(&r, 1, 2) < 0);
    /* equal P: layer 2 (next) is kept over layer 3 (one further) */
    ck_assert(reuse_keep(&r, 2, 1) > reuse_keep(&r, 3, 1));
    /* same layer: the used expert over the unused one */
    ck_assert(reuse_keep(&r, 2, 1) > reuse_keep(&r, 2, 5));
    /* exact value: layer 2 is d = 1 away, P = 0.5: 1 + 4 * 0.5 / 0.5 = 5 */
    ck_assert_double_eq_tol(reuse_keep(&r, 2, 1), -5.0, 1e-9);
    /* layer 0 was visited again (P = 0.75): d = 3: 3 + 4 * 0.25 / 0.75 */
    ck_assert_double_eq_tol(reuse_keep(&r, 0, 1), -(3.0 + 4.0 * 0.25 / 0.75), 1e-6);
    /* layer 1's unrouted expert 2 as folded at the visit's end: 0.25 */
    ck_assert_float_eq_tol(reuse_prob(&r, 1, 2), 0.25f, 1e-6f);
    /* keep_at is increasing in q */
    ck_assert(reuse_keep_at(&r, 3, 0.9f) > reuse_keep_at(&r, 3, 0.5f));
    ck_assert(isfinite(reuse_keep_at(&r, 3, 0.0f)));
    /* a prediction for layer 3's coming visit raises expert 6 ... */
    double before = reuse_keep(&r, 3, 6);
    reuse_expect(&r, 3, 6, 0.8f);
    reuse_expect(&r, 3, 6, 0.3f); /* the largest prediction of the visit stays */
    ck_assert_float_eq_tol(reuse_prob(&r, 3, 6), 0.8f, 1e-6f);
    ck_assert(reuse_keep(&r, 3, 6) > before);
    /* ... until layer 3 has been visited (routed elsewhere): then only the EWMA is left */
    visit(&r, 2, a, 2);
    visit(&r, 3, a, 2);
    ck_assert_float_eq_tol(reuse_prob(&r, 3, 6), 0.0f, 1e-6f);
    reuse_step_end(&r);
    ck_assert(reuse_keep(&r, 3, 1) < 1e20); /* the step ended: nothing pinned */
    /* a prediction made during a layer's own visit is for its next visit */
    visit(&r, 0, a, 2);
    reuse_expect(&r, 0, 7, 0.6f);
    ck_assert_float_eq_tol(reuse_prob(&r, 0, 7), 0.6f, 1e-6f);
    reuse_free(&r);
}
END_TEST

/* A cache of `slots` (layer, expert) pairs walking `steps` steps: each layer
 * uses experts 0 and 1 at every step and two of the others at random.
 * Returns the loads; visit order when r != NULL, else LRU. */
static int simulate(reuse_order *r, int L, int E, int slots, int steps)
{
    int res[64], n = 0, loads = 0;
    uint64_t last[64], clock = 0, rng = 12345;
    for (int s = 0; s < steps; s++) {
        for (int l = 0; l < L; l++) {
            int use[4] = {0, 1, 0, 0};
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            use[2] = 2 + (int)((rng >> 33) % (uint64_t)(E - 2));
            do {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                use[3] = 2 + (int)((rng >> 33) % (uint64_t)(E - 2));
            } while (use[3] == use[2]);
            if (r) visit(r, l, use, 4);
            for (int j = 0; j < 4; j++) {
                int id = l * E + use[j], at = -1;
                for (int i = 0; i < n; i++)
                    if (res[i] == id) at = i;
                if (at < 0) {
                    loads++;
                    if (n < slots) {
                        at = n++;
                    } else { /* victim: lowest keep (visit) or oldest (LRU), never one of this visit's */
                        double best = INFINITY;
                        for (int i = 0; i < n; i++) {
                            double k = r ? reuse_keep(r, res[i] / E, res[i] % E) : (double)last[i];
                            int mine = 0;
                            for (int u = 0; u < 4; u++) mine |= res[i] == l * E + use[u];
                            if (!mine && k < best) { best = k; at = i; }
                        }
                    }
                    res[at] = id;
                }
                last[at] = ++clock;
            }
        }
        if (r) reuse_step_end(r);
    }
    return loads;
}

START_TEST(test_cyclic_beats_lru)
{
    reuse_order r;
    emoe_err err = {0};
    ck_assert_int_eq(reuse_init(&r, 4, 8, 0.25f, &err), EMOE_OK);
    int lru = simulate(NULL, 4, 8, 12, 200), vis = simulate(&r, 4, 8, 12, 200);
    /* 16 distinct pairs per step over 12 slots: LRU reloads every one */
    ck_assert_int_ge(lru, 16 * 200 - 16);
    /* the visit order keeps the 8 hot pairs and streams the rest through 4 slots */
    ck_assert_msg(vis < lru * 6 / 10, "visit order %d loads, LRU %d", vis, lru);
    reuse_free(&r);
}
END_TEST

static Suite *reuse_suite(void)
{
    Suite *s = suite_create("reuse");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_shape_refused);
    tcase_add_test(tc, test_keep_order);
    tcase_add_test(tc, test_cyclic_beats_lru);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(reuse_suite)
