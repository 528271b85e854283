/* test_forecast.c — the forecast policy of `emoe replay` and its parts: the
 * routing-path memory (exact votes on hand-made paths, successors, a reused
 * ring slot), the learned next-visit estimate (it learns a persistent routing
 * and is calibrated on it), the policy on synthetic traces (it beats LRU where
 * LRU thrashes by construction; demand-only, Belady is never beaten; the
 * prefetch budget of a shadow LRU holds), and the acceptance criterion
 * on the real traces in ../shared/traces when present. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predictor/forecast.h"
#include "predictor/pathmem.h"
#include "predictor/replay.h"
#include "testutil.h"
#include "synth_trace.h"

/* Path memory: 3 layers, 8 experts, top-1; paths P0 = (0, 1, 2) and
 * P1 = (4, 5, 6) alternate. */
static void path_token(pred_pathmem *m, const int *path, int L)
{
    for (int l = 0; l < L; l++) pred_pathmem_layer(m, l, &path[l], 1);
    pred_pathmem_end_token(m);
}

START_TEST(pathmem_votes)
{
    const int L = 3, E = 8;
    pred_pathmem m;
    emoe_err err;
    ck_assert_int_eq(pred_pathmem_init(&m, L, E, 1, 16, 4, 0.5f, &err), EMOE_OK);
    int p0[3] = {0, 1, 2}, p1[3] = {4, 5, 6};
    float v[8];
    /* nothing remembered: no vote */
    pred_pathmem_begin_request(&m);
    pred_pathmem_layer(&m, 0, &p0[0], 1);
    ck_assert_int_eq(pred_pathmem_predict(&m, 1, v), 0);
    for (int e = 0; e < E; e++) ck_assert(v[e] == 0.0f);
    pred_pathmem_layer(&m, 1, &p0[1], 1);
    pred_pathmem_layer(&m, 2, &p0[2], 1);
    pred_pathmem_end_token(&m);
    /* P0 P1 P0 P1 remembered (after the first P0 above) */
    path_token(&m, p1, L);
    path_token(&m, p0, L);
    path_token(&m, p1, L);
    /* a token starting like P0 continues like P0: all the mass (top_k = 1) on 1, then 2 */
    pred_pathmem_layer(&m, 0, &p0[0], 1);
    ck_assert_int_eq(pred_pathmem_predict(&m, 1, v), 2); /* the two P0 tokens match */
    for (int e = 0; e < E; e++) ck_assert_float_eq_tol(v[e], e == 1 ? 1.0f : 0.0f, 1e-6f);
    ck_assert_int_gt(pred_pathmem_predict(&m, 2, v), 0);
    ck_assert_float_eq_tol(v[2], 1.0f, 1e-6f);
    /* only later layers are predicted */
    ck_assert_int_eq(pred_pathmem_predict(&m, 0, v), 0);
    /* ... and the next token is P1 at every layer (the successors of P0 tokens) */
    for (int l = 0; l < L; l++) {
        ck_assert_int_gt(pred_pathmem_predict_next(&m, l, v), 0);
        for (int e = 0; e < E; e++) ck_assert_float_eq_tol(v[e], e == p1[l] ? 1.0f : 0.0f, 1e-6f);
    }
    pred_pathmem_free(&m);

    /* A ring of 2: the oldest token's slot is reused, with its links. */
    ck_assert_int_eq(pred_pathmem_init(&m, L, E, 1, 2, 4, 0.5f, &err), EMOE_OK);
    pred_pathmem_begin_request(&m);
    path_token(&m, p0, L); /* slot 0 */
    path_token(&m, p1, L); /* slot 1, the successor of slot 0 */
    path_token(&m, p0, L); /* slot 0 again, the successor of slot 1 */
    ck_assert_int_eq(m.n, 2);
    /* a P0-like token matches the newest P0, which has no successor yet: the
     * first P0's link to P1 went with its slot */
    pred_pathmem_layer(&m, 0, &p0[0], 1);
    ck_assert_int_eq(pred_pathmem_predict_next(&m, 0, v), 0);
    ck_assert_int_eq(pred_pathmem_predict(&m, 1, v), 1);
    ck_assert_float_eq_tol(v[1], 1.0f, 1e-6f);
    pred_pathmem_free(&m);
    /* a P1-like token: P1 was followed by P0 (a link into a reused slot that
     * is still valid) */
    ck_assert_int_eq(pred_pathmem_init(&m, L, E, 1, 2, 4, 0.5f, &err), EMOE_OK);
    pred_pathmem_begin_request(&m);
    path_token(&m, p0, L);
    path_token(&m, p1, L);
    path_token(&m, p0, L);
    pred_pathmem_layer(&m, 0, &p1[0], 1);
    ck_assert_int_eq(pred_pathmem_predict_next(&m, 0, v), 1);
    ck_assert_float_eq_tol(v[0], 1.0f, 1e-6f);
    pred_pathmem_free(&m);
    /* a ring of 1 never links a token to itself */
    ck_assert_int_eq(pred_pathmem_init(&m, L, E, 1, 1, 4, 0.5f, &err), EMOE_OK);
    pred_pathmem_begin_request(&m);
    path_token(&m, p0, L);
    path_token(&m, p0, L);
    pred_pathmem_layer(&m, 0, &p0[0], 1);
    ck_assert_int_eq(pred_pathmem_predict(&m, 1, v), 1);
    ck_assert_int_eq(pred_pathmem_predict_next(&m, 0, v), 0);
    pred_pathmem_free(&m);
    /* a new request: its first token is nobody's successor */
    ck_assert_int_eq(pred_pathmem_init(&m, L, E, 1, 8, 4, 0.5f, &err), EMOE_OK);
    pred_pathmem_begin_request(&m);
    path_token(&m, p0, L);
    pred_pathmem_begin_request(&m);
    path_token(&m, p1, L);
    pred_pathmem_layer(&m, 0, &p0[0], 1);
    ck_assert_int_eq(pred_pathmem_predict_next(&m, 0, v), 0);
    pred_pathmem_free(&m);

    ck_assert_int_ne(pred_pathmem_init(&m, L, E, 1, 0, 4, 0.5f, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "history"));
}
END_TEST

/* The estimate learns a persistent routing: at every layer the token reuses
 * the previous token's expert with probability 0.9, else a random one. The
 * estimate for "used last time" must approach 0.9 and the others stay low;
 * the log-loss must beat the best constant's. */
START_TEST(forecast_learns_persistence)
{
    const int L = 4, E = 16;
    pred_forecast f;
    emoe_err err;
    ck_assert_int_eq(pred_forecast_init(&f, L, E, NULL, &err), EMOE_OK);
    pred_forecast_reset(&f, NULL);
    synth_rng rng = {7};
    int cur[4] = {0, 1, 2, 3};
    for (int t = 0; t < 4000; t++)
        for (int l = 0; l < L; l++) {
            if ((int)(synth_next(&rng) % 100) >= 90) cur[l] = (int)(synth_next(&rng) % (uint32_t)E);
            pred_forecast_observe(&f, l, &cur[l], 1);
        }
    double p_used = 0.0, p_other = 0.0;
    for (int l = 0; l < L; l++)
        for (int e = 0; e < E; e++) {
            if (e == cur[l]) p_used += pred_forecast_p(&f, l, e) / L;
            else p_other = fmax(p_other, pred_forecast_p(&f, l, e));
        }
    fprintf(stderr, "persistence: p(used last) %.3f, max p(other) %.3f, log-loss %.4f\n", p_used, p_other,
            f.logloss_far / (double)f.n_far);
    ck_assert(p_used > 0.75 && p_used < 0.99);
    ck_assert(p_other < 0.1);
    /* the best constant (1/E per expert and token) has log-loss H(1/16) = 0.234 */
    ck_assert(f.logloss_far / (double)f.n_far < 0.15);
    /* the reuse distance ranks the persistent expert first, and a layer
     * further ahead later */
    int l = 2;
    double d_used = pred_forecast_reuse(&f, 1, l, cur[l]);
    for (int e = 0; e < E; e++)
        if (e != cur[l]) ck_assert(pred_forecast_reuse(&f, 1, l, e) > d_used);
    ck_assert(pred_forecast_reuse(&f, 0, l, cur[l]) > d_used);
    pred_forecast_free(&f);
    pred_forecast_cfg c;
    pred_forecast_cfg_default(&c);
    c.depth = 0;
    ck_assert_int_ne(pred_forecast_init(&f, L, E, &c, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "depth"));
}
END_TEST

/* One request of n tokens cycling through `np` fixed paths (top-1): token t
 * uses expert (t % np) at every layer. With np paths of L experts each and a
 * cache smaller than np*L slots, LRU evicts each expert just before its next
 * use (a cyclic pattern larger than the cache) and never hits. */
static void cyclic_trace(pred_trace *t, int L, int E, int np, int n_req, int n_tok)
{
    emoe_err err;
    pred_trace_init(t);
    for (int r = 0; r < n_req; r++) {
        pred_trace_req q;
        ck_assert_int_eq(pred_req_begin(&q, "cyclic", "c", r, L, E, 1, 0, &err), EMOE_OK);
        for (int i = 0; i < n_tok; i++) {
            int row = pred_req_add_token(&q, PRED_PHASE_DECODE, i, &err);
            ck_assert_int_ge(row, 0);
            int e = i % np;
            for (int l = 0; l < L; l++) ck_assert_int_eq(pred_req_set_layer(&q, row, l, &e, NULL, 1, &err), EMOE_OK);
        }
        ck_assert_int_eq(pred_trace_append(t, &q, &err), EMOE_OK);
    }
}

static pred_replay_result fc_run(const pred_trace *t, pred_replay_policy pol, double budget, int demand_only)
{
    pred_replay_opts o;
    pred_replay_opts_default(&o);
    o.policy = pol;
    o.order = PRED_REPLAY_ORDER_FILE;
    o.budget = budget;
    if (demand_only) {
        o.fc_threshold = 2.0;
        o.fc_precision = 0.0;
    }
    pred_replay_result r;
    emoe_err err;
    const pred_trace *tp[1] = {t};
    ck_assert_msg(pred_replay_run(tp, 1, &o, &r, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_uint_eq(r.hits + r.misses, r.accesses);
    ck_assert_uint_eq(r.loads, r.misses + r.prefetches);
    ck_assert_uint_le(r.prefetch_used, r.prefetches);
    return r;
}

START_TEST(forecast_beats_lru_on_cycles)
{
    const int L = 4, E = 8, np = 3;
    pred_trace t;
    cyclic_trace(&t, L, E, np, 4, 60);
    /* 25% of 32 slots = 8 < the 12 the cycle needs */
    pred_replay_result lru = fc_run(&t, PRED_REPLAY_LRU, 0.25, 0);
    pred_replay_result bel = fc_run(&t, PRED_REPLAY_BELADY, 0.25, 0);
    pred_replay_result dem = fc_run(&t, PRED_REPLAY_FORECAST, 0.25, 1);
    pred_replay_result fc = fc_run(&t, PRED_REPLAY_FORECAST, 0.25, 0);
    fprintf(stderr, "cycles: lru %.3f (%llu loads) belady %.3f forecast demand %.3f forecast %.3f (%llu loads, %llu prefetches)\n",
            lru.hit_rate, (unsigned long long)lru.loads, bel.hit_rate, dem.hit_rate, fc.hit_rate,
            (unsigned long long)fc.loads, (unsigned long long)fc.prefetches);
    ck_assert_uint_eq(lru.hits, 0);
    ck_assert_uint_eq(dem.prefetches, 0);
    ck_assert_uint_le(dem.hits, bel.hits); /* Belady is the demand-fetch optimum */
    ck_assert(dem.hit_rate > 0.5 * bel.hit_rate);
    ck_assert(fc.hit_rate > lru.hit_rate + 0.3);
    ck_assert_uint_le(fc.loads, lru.loads); /* within LRU's loads */
    pred_replay_result_free(&lru);
    pred_replay_result_free(&bel);
    pred_replay_result_free(&dem);
    pred_replay_result_free(&fc);
    pred_trace_free(&t);
}
END_TEST

/* On the synthetic kinds of test_replay.c (fixed subsets, alternating tasks,
 * drift, pure noise), demand-only forecast never beats Belady; with prefetch,
 * the shadow-LRU budget keeps its loads at LRU's (a slack of a few loads: the
 * budget is checked at each prefetch, and demand misses come after); on the
 * structured kinds it beats LRU where the cache is tight. */
START_TEST(forecast_synth_bounds)
{
    const int L = 4, E = 16, K = 2;
    const double budgets[] = {0.25, 0.5};
    for (int kind = 0; kind < 4; kind++) {
        pred_trace t;
        pred_trace_init(&t);
        synth_rng rng = {(uint64_t)kind + 10};
        for (int i = 0; i < 12; i++) {
            switch (kind) {
            case 0: synth_append(&t, "fixed", L, E, K, 30, 1, E / 4, 3, &rng); break;
            case 1: synth_append(&t, i % 2 ? "b" : "a", L, E, K, 30, i % 2 ? 2 : 3, E / 4, 3, &rng); break;
            case 2: synth_append(&t, "drift", L, E, K, 30, 100 + i / 3, E / 4, 3, &rng); break;
            default: synth_append(&t, "noise", L, E, K, 30, 1, E / 4, 100, &rng); break;
            }
        }
        for (int b = 0; b < 2; b++) {
            pred_replay_result lru = fc_run(&t, PRED_REPLAY_LRU, budgets[b], 0);
            pred_replay_result bel = fc_run(&t, PRED_REPLAY_BELADY, budgets[b], 0);
            pred_replay_result dem = fc_run(&t, PRED_REPLAY_FORECAST, budgets[b], 1);
            pred_replay_result fc = fc_run(&t, PRED_REPLAY_FORECAST, budgets[b], 0);
            fprintf(stderr, "kind %d budget %.2f: lru %.3f belady %.3f forecast demand %.3f forecast %.3f (loads %llu vs lru %llu)\n",
                    kind, budgets[b], lru.hit_rate, bel.hit_rate, dem.hit_rate, fc.hit_rate,
                    (unsigned long long)fc.loads, (unsigned long long)lru.loads);
            ck_assert_uint_le(dem.hits, bel.hits);
            ck_assert_uint_le(fc.loads, lru.loads + (uint64_t)(L * K));
            /* structured kinds: better than LRU where the cache is tight; at 50%
             * the fixed subsets fit and every policy is near 0.97 */
            if (kind < 3 && b == 0) ck_assert(fc.hit_rate > lru.hit_rate + 0.02);
            if (kind < 3) ck_assert(fc.hit_rate > lru.hit_rate - 0.01);
            pred_replay_result_free(&lru);
            pred_replay_result_free(&bel);
            pred_replay_result_free(&dem);
            pred_replay_result_free(&fc);
        }
        pred_trace_free(&t);
    }
    /* bad options name themselves */
    pred_trace t;
    cyclic_trace(&t, 2, 4, 2, 1, 4);
    const pred_trace *tp[1] = {&t};
    pred_replay_opts o;
    pred_replay_opts_default(&o);
    o.policy = PRED_REPLAY_FORECAST;
    o.fc_precision = 1.0;
    pred_replay_result r;
    emoe_err err;
    ck_assert_int_ne(pred_replay_run(tp, 1, &o, &r, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "precision"));
    pred_replay_opts_default(&o);
    o.policy = PRED_REPLAY_FORECAST;
    o.fc_history = 0;
    ck_assert_int_ne(pred_replay_run(tp, 1, &o, &r, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "history"));
    pred_replay_policy pp;
    ck_assert_int_eq(pred_replay_policy_parse("forecast", &pp), 0);
    ck_assert_int_eq(pp, PRED_REPLAY_FORECAST);
    ck_assert_str_eq(pred_replay_policy_name(pp), "forecast");
    pred_trace_free(&t);
}
END_TEST

/* The bar on the real traces, token by token, interleaved: forecast
 * >= max(LRU, LFU) + 10 points at 25% and 50% with no more loads than LRU,
 * and within 10 points of Belady at 50%. */
START_TEST(forecast_real_traces)
{
    const char *d = tu_shared_dir();
    if (!d) { TU_SKIP_NO_SHARED("forecast_real_traces"); return; }
    for (int s = 0; s < REAL_TRACE_SETS; s++) {
        pred_trace t[2];
        const pred_trace *tp[2];
        const char *name;
        int n = real_trace_set_load(d, s, t, tp, &name);
        emoe_err err;
        for (int b = 25; b <= 50; b += 25) {
            pred_replay_result r[4];
            const pred_replay_policy pol[4] = {PRED_REPLAY_LRU, PRED_REPLAY_LFU, PRED_REPLAY_BELADY,
                                               PRED_REPLAY_FORECAST};
            for (int p = 0; p < 4; p++) {
                pred_replay_opts o;
                pred_replay_opts_default(&o);
                o.policy = pol[p];
                o.budget = b / 100.0;
                ck_assert_msg(pred_replay_run(tp, n, &o, &r[p], &err) == EMOE_OK, "%s", err.msg);
            }
            double best = fmax(r[0].hit_rate, r[1].hit_rate);
            fprintf(stderr, "%s %d%%: lru %.4f (%llu loads) lfu %.4f belady %.4f forecast %.4f (%llu loads)\n",
                    name, b, r[0].hit_rate, (unsigned long long)r[0].loads, r[1].hit_rate, r[2].hit_rate,
                    r[3].hit_rate, (unsigned long long)r[3].loads);
            ck_assert_msg(r[3].hit_rate >= best + 0.10, "%s %d%%: forecast %g, max(lru, lfu) %g", name, b,
                          r[3].hit_rate, best);
            ck_assert_uint_le(r[3].loads, r[0].loads);
            if (b == 50)
                ck_assert_msg(r[3].hit_rate >= r[2].hit_rate - 0.10, "%s: forecast %g, belady %g", name,
                              r[3].hit_rate, r[2].hit_rate);
            for (int p = 0; p < 4; p++) pred_replay_result_free(&r[p]);
        }
        for (int i = 0; i < n; i++) pred_trace_free(&t[i]);
    }
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("forecast");
    TCase *tc = tcase_create("forecast");
    tcase_add_test(tc, pathmem_votes);
    tcase_add_test(tc, forecast_learns_persistence);
    tcase_add_test(tc, forecast_beats_lru_on_cycles);
    tcase_add_test(tc, forecast_synth_bounds);
    tcase_add_test(tc, forecast_real_traces);
    tcase_set_timeout(tc, 240);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
