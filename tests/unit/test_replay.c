/* test_replay.c — the offline cache simulator: hand-checked access sequences,
 * invariants on synthetic traces with known structure (Belady is never beaten
 * by LRU or LFU; counts add up), the predictor on those traces, and the real
 * traces in ../shared/traces when present (predictor > LRU and LFU, Belady >=
 * both, at 25/50/75% in both orders). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predictor/replay.h"
#include "testutil.h"
#include "synth_trace.h"

/* A 1-layer, top-1 trace of single-token requests with the given experts. */
static void seq_trace(pred_trace *t, int E, const int *seq, int n, const char *const *tasks)
{
    emoe_err err;
    pred_trace_init(t);
    for (int i = 0; i < n; i++) {
        pred_trace_req r;
        ck_assert_int_eq(pred_req_begin(&r, "seq", tasks ? tasks[i] : "t", i, 1, E, 1, 0, &err), EMOE_OK);
        ck_assert_int_eq(pred_req_add_token(&r, PRED_PHASE_DECODE, 0, &err), 0);
        ck_assert_int_eq(pred_req_set_layer(&r, 0, 0, &seq[i], NULL, 1, &err), EMOE_OK);
        ck_assert_int_eq(pred_trace_append(t, &r, &err), EMOE_OK);
    }
}

static pred_replay_result run1(const pred_trace *t, pred_replay_policy pol, pred_replay_order ord, double budget)
{
    pred_replay_opts o;
    pred_replay_opts_default(&o);
    o.policy = pol;
    o.order = ord;
    o.budget = budget;
    o.expert_bytes = 1000;
    pred_replay_result r;
    emoe_err err;
    const pred_trace *tp[1] = {t};
    ck_assert_msg(pred_replay_run(tp, 1, &o, &r, &err) == EMOE_OK, "%s", err.msg);
    return r;
}

START_TEST(replay_hand_cyclic)
{
    /* 0 1 2 0 1 2 with 2 slots: LRU and LFU never hit; Belady hits twice. */
    int seq[] = {0, 1, 2, 0, 1, 2};
    pred_trace t;
    seq_trace(&t, 4, seq, 6, NULL);
    pred_replay_result r = run1(&t, PRED_REPLAY_LRU, PRED_REPLAY_ORDER_FILE, 0.5);
    ck_assert_int_eq(r.capacity, 2);
    ck_assert_uint_eq(r.accesses, 6);
    ck_assert_uint_eq(r.hits, 0);
    ck_assert_uint_eq(r.bytes_loaded, 6000);
    r = run1(&t, PRED_REPLAY_LFU, PRED_REPLAY_ORDER_FILE, 0.5);
    ck_assert_uint_eq(r.hits, 0);
    r = run1(&t, PRED_REPLAY_BELADY, PRED_REPLAY_ORDER_FILE, 0.5);
    ck_assert_uint_eq(r.hits, 2);
    ck_assert_uint_eq(r.misses, 4);
    ck_assert_uint_eq(r.bytes_loaded, 4000);
    ck_assert_double_eq_tol(r.misses_per_token, 4.0 / 6.0, 1e-12);
    pred_trace_free(&t);
}
END_TEST

START_TEST(replay_hand_frequency)
{
    /* 0 0 0 1 2 0 with 2 slots: LRU evicts 0 for 2 (2 hits); LFU and Belady keep it (3). */
    int seq[] = {0, 0, 0, 1, 2, 0};
    pred_trace t;
    seq_trace(&t, 4, seq, 6, NULL);
    ck_assert_uint_eq(run1(&t, PRED_REPLAY_LRU, PRED_REPLAY_ORDER_FILE, 0.5).hits, 2);
    ck_assert_uint_eq(run1(&t, PRED_REPLAY_LFU, PRED_REPLAY_ORDER_FILE, 0.5).hits, 3);
    ck_assert_uint_eq(run1(&t, PRED_REPLAY_BELADY, PRED_REPLAY_ORDER_FILE, 0.5).hits, 3);
    pred_trace_free(&t);
}
END_TEST

START_TEST(replay_prefill_step)
{
    /* 1 layer, 4 experts, top-2; prefill tokens {0,1} {1,2} {0,1}, then decode {2,3}.
     * As one step the prompt acquires 0, 1, 2 once each (3 accesses, all misses
     * in an empty cache); token by token it is 6 accesses. */
    emoe_err err;
    pred_trace t;
    pred_trace_init(&t);
    pred_trace_req q;
    ck_assert_int_eq(pred_req_begin(&q, "m", "a", 0, 1, 4, 2, 0, &err), EMOE_OK);
    int rows[4][2] = {{0, 1}, {1, 2}, {0, 1}, {2, 3}};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(pred_req_add_token(&q, i < 3 ? PRED_PHASE_PREFILL : PRED_PHASE_DECODE, i, &err), i);
        ck_assert_int_eq(pred_req_set_layer(&q, i, 0, rows[i], NULL, 2, &err), EMOE_OK);
    }
    ck_assert_int_eq(pred_trace_append(&t, &q, &err), EMOE_OK);
    const pred_trace *tp[1] = {&t};
    for (int p = 0; p < 4; p++) {
        pred_replay_opts o;
        pred_replay_opts_default(&o);
        o.policy = (pred_replay_policy)p;
        o.budget = 1.0;
        o.prefill_step = 1;
        pred_replay_result r;
        ck_assert_int_eq(pred_replay_run(tp, 1, &o, &r, &err), EMOE_OK);
        ck_assert_uint_eq(r.tokens, 4);
        ck_assert_uint_eq(r.accesses, 5);         /* 3 distinct + one decode token's 2 */
        ck_assert_uint_eq(r.misses, 4);           /* 0, 1, 2, then 3 */
        ck_assert_uint_eq(r.hits, 1);             /* 2 in the decode token */
        pred_replay_result_free(&r);
        o.prefill_step = 0;
        ck_assert_int_eq(pred_replay_run(tp, 1, &o, &r, &err), EMOE_OK);
        ck_assert_uint_eq(r.accesses, 8);
        ck_assert_uint_eq(r.misses, 4);
        pred_replay_result_free(&r);
    }
    pred_trace_free(&t);
}
END_TEST

START_TEST(replay_orders)
{
    /* tasks a a b b using experts 0 0 1 1, one slot: grouped keeps the pairs
     * together (2 hits), interleaved alternates (0 hits). */
    int seq[] = {0, 0, 1, 1};
    const char *tasks[] = {"a", "a", "b", "b"};
    pred_trace t;
    seq_trace(&t, 2, seq, 4, tasks);
    ck_assert_uint_eq(run1(&t, PRED_REPLAY_LRU, PRED_REPLAY_ORDER_GROUPED, 0.5).hits, 2);
    ck_assert_uint_eq(run1(&t, PRED_REPLAY_LRU, PRED_REPLAY_ORDER_FILE, 0.5).hits, 2);
    ck_assert_uint_eq(run1(&t, PRED_REPLAY_LRU, PRED_REPLAY_ORDER_INTERLEAVED, 0.5).hits, 0);
    pred_trace_free(&t);
}
END_TEST

static void check_counts(const pred_replay_result *r, uint64_t eb)
{
    ck_assert_uint_eq(r->hits + r->misses, r->accesses);
    ck_assert_uint_eq(r->loads, r->misses + r->prefetches);
    ck_assert_uint_eq(r->bytes_loaded, r->loads * eb);
    ck_assert_uint_le(r->prefetch_used, r->prefetches);
    ck_assert_uint_eq(r->accesses, r->tokens * (uint64_t)r->n_layers * (uint64_t)r->top_k);
}

/* Synthetic traces: kind 0 fixed subset, 1 alternating tasks, 2 drifting task, 3 uniform noise. */
static void make_synth(pred_trace *t, int kind, int L, int E, int K)
{
    pred_trace_init(t);
    synth_rng rng = {(uint64_t)kind + 10};
    for (int i = 0; i < 12; i++) {
        switch (kind) {
        case 0: synth_append(t, "fixed", L, E, K, 30, 1, E / 4, 3, &rng); break;
        case 1: synth_append(t, i % 2 ? "b" : "a", L, E, K, 30, i % 2 ? 2 : 3, E / 4, 3, &rng); break;
        case 2: synth_append(t, "drift", L, E, K, 30, 100 + i / 3, E / 4, 3, &rng); break;
        default: synth_append(t, "noise", L, E, K, 30, 1, E / 4, 100, &rng); break;
        }
    }
}

START_TEST(replay_synth_invariants)
{
    const int L = 4, E = 16, K = 2;
    const double budgets[] = {0.125, 0.25, 0.5, 0.75};
    for (int kind = 0; kind < 4; kind++) {
        pred_trace t;
        make_synth(&t, kind, L, E, K);
        for (int bi = 0; bi < 4; bi++)
            for (int ord = 0; ord < 3; ord++) {
                pred_replay_result r[4];
                for (int p = 0; p < 4; p++) {
                    r[p] = run1(&t, (pred_replay_policy)p, (pred_replay_order)ord, budgets[bi]);
                    check_counts(&r[p], 1000);
                    if (p != PRED_REPLAY_PREDICTOR) ck_assert_uint_eq(r[p].prefetches, 0);
                }
                ck_assert_msg(r[PRED_REPLAY_BELADY].hits >= r[PRED_REPLAY_LRU].hits &&
                                  r[PRED_REPLAY_BELADY].hits >= r[PRED_REPLAY_LFU].hits,
                              "kind %d budget %g order %d: belady %llu lru %llu lfu %llu", kind,
                              budgets[bi], ord, (unsigned long long)r[PRED_REPLAY_BELADY].hits,
                              (unsigned long long)r[PRED_REPLAY_LRU].hits,
                              (unsigned long long)r[PRED_REPLAY_LFU].hits);
                for (int p = 0; p < 4; p++) pred_replay_result_free(&r[p]);
            }
        pred_trace_free(&t);
    }
}
END_TEST

START_TEST(replay_synth_predictor_recovers_structure)
{
    const int L = 4, E = 16, K = 2;
    /* alternating tasks whose subsets (a quarter of the experts each) fit a 25%
     * cache: the predictor swaps in the right set before each request */
    pred_trace t;
    make_synth(&t, 1, L, E, K);
    pred_replay_result lru = run1(&t, PRED_REPLAY_LRU, PRED_REPLAY_ORDER_FILE, 0.25);
    pred_replay_result lfu = run1(&t, PRED_REPLAY_LFU, PRED_REPLAY_ORDER_FILE, 0.25);
    pred_replay_opts o;
    pred_replay_opts_default(&o);
    o.policy = PRED_REPLAY_PREDICTOR;
    o.order = PRED_REPLAY_ORDER_FILE;
    o.budget = 0.25;
    o.pin_frac = 1.0;
    pred_replay_result pr;
    emoe_err err;
    const pred_trace *tp[1] = {&t};
    ck_assert_msg(pred_replay_run(tp, 1, &o, &pr, &err) == EMOE_OK, "%s", err.msg);
    fprintf(stderr, "alternating synthetic, 25%%: lru %.3f lfu %.3f predictor %.3f (precision %.3f recall %.3f coverage %.3f)\n",
            lru.hit_rate, lfu.hit_rate, pr.hit_rate, pr.precision_all, pr.recall_all, pr.coverage_all);
    ck_assert(pr.hit_rate > lru.hit_rate && pr.hit_rate > lfu.hit_rate);
    /* after the first request of each task the plan is the task's subset: the
     * plans of 10 of 12 requests are exact, the first two come from little data.
     * Recall is over the set of experts used, which the 3% noise inflates; the
     * share of accesses that fell in the plan (coverage) is the robust figure. */
    ck_assert_msg(pr.precision_all > 0.8 && pr.recall_all > 0.5 && pr.coverage_all > 0.75,
                  "precision %g recall %g coverage %g", pr.precision_all, pr.recall_all, pr.coverage_all);
    for (int l = 0; l < L; l++) ck_assert(pr.precision[l] > 0.7);
    ck_assert_uint_gt(pr.prefetch_used, pr.prefetches / 2);
    pred_replay_result_free(&pr);
    pred_trace_free(&t);

    /* fixed subset: the plan is exact from the second request on */
    make_synth(&t, 0, L, E, K);
    ck_assert_msg(pred_replay_run(tp, 1, &o, &pr, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_msg(pr.precision_all > 0.85 && pr.coverage_all > 0.85, "precision %g coverage %g",
                  pr.precision_all, pr.coverage_all);
    pred_replay_result_free(&pr);
    pred_trace_free(&t);
}
END_TEST

/* The lookahead policy is the predictor with --lookahead top_k; its accuracy
 * counts every routed expert of layers 1..L-1 once and is a share. On the
 * synthetic trace (layer l+1's experts follow from layer l's) the transitions
 * predict well above chance (top_k / n_experts). */
START_TEST(replay_lookahead_policy)
{
    const int L = 4, E = 16, K = 2;
    pred_trace t;
    make_synth(&t, 1, L, E, K);
    const pred_trace *tp[1] = {&t};
    pred_replay_opts o;
    pred_replay_opts_default(&o);
    o.policy = PRED_REPLAY_LOOKAHEAD;
    o.order = PRED_REPLAY_ORDER_FILE;
    o.budget = 0.25;
    pred_replay_result a, b;
    emoe_err err;
    ck_assert_msg(pred_replay_run(tp, 1, &o, &a, &err) == EMOE_OK, "%s", err.msg);
    o.policy = PRED_REPLAY_PREDICTOR;
    o.lookahead = K;
    ck_assert_msg(pred_replay_run(tp, 1, &o, &b, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_uint_eq(a.hits, b.hits);
    ck_assert_uint_eq(a.prefetches, b.prefetches);
    ck_assert_uint_gt(a.prefetches, 0);
    ck_assert_uint_eq(a.lookahead_checked, a.tokens * (uint64_t)(L - 1) * (uint64_t)K);
    ck_assert_uint_le(a.lookahead_hits, a.lookahead_checked);
    fprintf(stderr, "synthetic lookahead accuracy %.3f\n", a.lookahead_accuracy);
    ck_assert(a.lookahead_accuracy > 2.0 * K / E);
    pred_replay_policy pp;
    ck_assert_int_eq(pred_replay_policy_parse("lookahead", &pp), 0);
    ck_assert_int_eq(pp, PRED_REPLAY_LOOKAHEAD);
    ck_assert_str_eq(pred_replay_policy_name(pp), "lookahead");
    /* no lookahead: nothing checked */
    o.lookahead = 0;
    pred_replay_result c;
    ck_assert_msg(pred_replay_run(tp, 1, &o, &c, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_uint_eq(c.lookahead_checked, 0);
    /* --la-new: K non-resident experts per layer, so at least as many
     * prefetches as the plain top-K (of which resident ones load nothing),
     * the same predictions (accuracy), and every access a hit or a miss */
    o.lookahead = K;
    o.la_new = 1;
    pred_replay_result d;
    ck_assert_msg(pred_replay_run(tp, 1, &o, &d, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_uint_gt(d.prefetches, a.prefetches);
    ck_assert_uint_eq(d.lookahead_hits, a.lookahead_hits);
    ck_assert_uint_eq(d.hits + d.misses, d.accesses);
    ck_assert_uint_eq(d.loads, d.misses + d.prefetches);
    /* --la-blend: changes which are prefetched, not the accuracy (transitions only) */
    o.la_new = 0;
    o.la_blend = 2.0;
    pred_replay_result f;
    ck_assert_msg(pred_replay_run(tp, 1, &o, &f, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_uint_eq(f.lookahead_hits, a.lookahead_hits);
    ck_assert_uint_eq(f.hits + f.misses, f.accesses);
    pred_replay_result_free(&a);
    pred_replay_result_free(&b);
    pred_replay_result_free(&c);
    pred_replay_result_free(&d);
    pred_replay_result_free(&f);
    pred_trace_free(&t);
}
END_TEST

START_TEST(replay_per_layer_and_errors)
{
    pred_trace t;
    make_synth(&t, 0, 3, 8, 2);
    pred_replay_opts o;
    pred_replay_opts_default(&o);
    o.per_layer = 1;
    o.budget = 0.1; /* floor(0.8) < top_k: each layer still holds 2 */
    pred_replay_result r;
    emoe_err err;
    const pred_trace *tp[2] = {&t, &t};
    ck_assert_int_eq(pred_replay_run(tp, 1, &o, &r, &err), EMOE_OK);
    ck_assert_int_eq(r.capacity, 6);
    check_counts(&r, 1);
    o.budget = 0.5;
    ck_assert_int_eq(pred_replay_run(tp, 2, &o, &r, &err), EMOE_OK);
    ck_assert_int_eq(r.capacity, 12);
    ck_assert_int_eq(r.n_requests, 24);
    o.budget = 0;
    ck_assert_int_ne(pred_replay_run(tp, 1, &o, &r, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "budget"));
    o.budget = 0.5;
    pred_trace t2;
    make_synth(&t2, 0, 2, 8, 2);
    tp[1] = &t2;
    ck_assert_int_ne(pred_replay_run(tp, 2, &o, &r, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "shape"));
    ck_assert_int_ne(pred_replay_run(tp, 0, &o, &r, &err), EMOE_OK);
    pred_trace_free(&t2);
    pred_trace_free(&t);
}
END_TEST

/* The real traces: the acceptance criterion of the predictor. */
START_TEST(replay_real_traces)
{
    const char *d = tu_shared_dir();
    if (!d) { TU_SKIP_NO_SHARED("replay_real_traces"); return; }
    for (int s = 0; s < REAL_TRACE_SETS; s++) {
        pred_trace t[2];
        const pred_trace *tp[2];
        const char *name;
        int n = real_trace_set_load(d, s, t, tp, &name);
        emoe_err err;
        for (int ps = 0; ps < 2; ps++)
        for (int ord = PRED_REPLAY_ORDER_INTERLEAVED; ord <= PRED_REPLAY_ORDER_GROUPED; ord++)
            for (int b = 25; b <= 75; b += 25) {
                pred_replay_result r[4];
                for (int p = 0; p < 4; p++) {
                    pred_replay_opts o;
                    pred_replay_opts_default(&o);
                    o.policy = (pred_replay_policy)p;
                    o.order = (pred_replay_order)ord;
                    o.budget = b / 100.0;
                    o.prefill_step = ps;
                    ck_assert_msg(pred_replay_run(tp, n, &o, &r[p], &err) == EMOE_OK, "%s", err.msg);
                    if (!ps) check_counts(&r[p], 1);
                }
                double lru = r[0].hit_rate, lfu = r[1].hit_rate, bel = r[2].hit_rate, pre = r[3].hit_rate;
                fprintf(stderr, "%s %s %d%%%s: lru %.3f lfu %.3f belady %.3f predictor %.3f\n", name,
                        pred_replay_order_name((pred_replay_order)ord), b, ps ? " prefill-step" : "", lru, lfu,
                        bel, pre);
                ck_assert_msg(bel >= lru && bel >= lfu, "belady %g lru %g lfu %g", bel, lru, lfu);
                ck_assert_msg(pre > lru && pre > lfu, "predictor %g lru %g lfu %g", pre, lru, lfu);
                for (int p = 0; p < 4; p++) pred_replay_result_free(&r[p]);
            }
        for (int i = 0; i < n; i++) pred_trace_free(&t[i]);
    }
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("replay");
    TCase *tc = tcase_create("replay");
    tcase_add_test(tc, replay_hand_cyclic);
    tcase_add_test(tc, replay_hand_frequency);
    tcase_add_test(tc, replay_orders);
    tcase_add_test(tc, replay_prefill_step);
    tcase_add_test(tc, replay_synth_invariants);
    tcase_add_test(tc, replay_synth_predictor_recovers_structure);
    tcase_add_test(tc, replay_per_layer_and_errors);
    tcase_add_test(tc, replay_lookahead_policy);
    tcase_add_test(tc, replay_real_traces);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
