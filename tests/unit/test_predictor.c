/* test_predictor.c — the trace reader/writer and the predictor on traces with
 * known structure (fixed subset, alternating tasks, drifting task), plus the
 * real traces in ../shared/traces when present. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predictor/predictor.h"
#include "predictor/trace.h"
#include "testutil.h"
#include "synth_trace.h"

/* ---- trace format ---------------------------------------------------------- */

START_TEST(trace_roundtrip)
{
    emoe_err err;
    pred_trace_req r;
    ck_assert_int_eq(pred_req_begin(&r, "m \"q\"", "t\\1", 7, 3, 5, 2, 1, &err), EMOE_OK);
    for (int t = 0; t < 70; t++) { /* > the first block of 64 rows */
        int row = pred_req_add_token(&r, t < 10 ? PRED_PHASE_PREFILL : PRED_PHASE_DECODE, t + 1, &err);
        ck_assert_int_eq(row, t);
        for (int l = 0; l < 3; l++) {
            int ex[2] = {(t + l) % 5, (t + l + 2) % 5};
            float w[2] = {0.75f, 0.25f};
            ck_assert_int_eq(pred_req_set_layer(&r, row, l, ex, w, 2, &err), EMOE_OK);
        }
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_int_eq(pred_req_write(&r, f, &err), EMOE_OK);
    ck_assert_int_eq(pred_req_write(&r, f, &err), EMOE_OK);
    fclose(f);
    pred_trace t;
    pred_trace_init(&t);
    ck_assert_msg(pred_trace_load_mem(&t, buf, len, "mem", &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(t.n_reqs, 2);
    const pred_trace_req *q = &t.reqs[1];
    ck_assert_str_eq(q->model, "m \"q\"");
    ck_assert_str_eq(q->task, "t\\1");
    ck_assert_int_eq(q->request, 7);
    ck_assert_int_eq(q->n_tokens, 70);
    ck_assert_ptr_nonnull(q->weights);
    for (int i = 0; i < 70; i++) {
        ck_assert_int_eq(q->phase[i], i < 10 ? PRED_PHASE_PREFILL : PRED_PHASE_DECODE);
        ck_assert_int_eq(q->pos[i], i + 1);
        for (int l = 0; l < 3; l++) {
            ck_assert_int_eq(pred_req_experts(q, i, l)[0], (i + l) % 5);
            ck_assert_int_eq(pred_req_experts(q, i, l)[1], (i + l + 2) % 5);
        }
    }
    ck_assert_float_eq(q->weights[1], 0.25f);
    pred_trace_free(&t);
    pred_req_free(&r);
    free(buf);
}
END_TEST

START_TEST(trace_unfilled_row_refused)
{
    emoe_err err;
    pred_trace_req r;
    ck_assert_int_eq(pred_req_begin(&r, "m", "t", 0, 2, 4, 1, 0, &err), EMOE_OK);
    ck_assert_int_eq(pred_req_add_token(&r, PRED_PHASE_DECODE, 0, &err), 0);
    int e = 1;
    ck_assert_int_eq(pred_req_set_layer(&r, 0, 0, &e, NULL, 1, &err), EMOE_OK);
    FILE *f = tmpfile();
    ck_assert_int_ne(pred_req_write(&r, f, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "layer 1"));
    e = 9;
    ck_assert_int_ne(pred_req_set_layer(&r, 0, 1, &e, NULL, 1, &err), EMOE_OK);
    fclose(f);
    pred_req_free(&r);
}
END_TEST

static void expect_error(const char *text, const char *needle1, const char *needle2)
{
    pred_trace t;
    pred_trace_init(&t);
    emoe_err err = {0};
    emoe_status st = pred_trace_load_mem(&t, text, strlen(text), "x.jsonl", &err);
    ck_assert_msg(st != EMOE_OK, "accepted: %s", text);
    ck_assert_msg(strstr(err.msg, needle1) != NULL, "message '%s' lacks '%s'", err.msg, needle1);
    if (needle2) ck_assert_msg(strstr(err.msg, needle2) != NULL, "message '%s' lacks '%s'", err.msg, needle2);
    pred_trace_free(&t);
}

#define HDR "{\"task\": \"a\", \"num_layers\": 2, \"num_experts\": 4, \"top_k\": 2, "
#define TOK_OK "{\"phase\": \"decode\", \"pos\": 0, \"experts\": [[0, 1], [2, 3]]}"

START_TEST(trace_errors_name_line_and_field)
{
    expect_error(HDR "\"tokens\": [" TOK_OK "]}\n{oops", "x.jsonl:2", "invalid JSON");
    expect_error("{\"task\": \"a\", \"num_experts\": 4, \"top_k\": 2, \"tokens\": []}", "x.jsonl:1",
                 "num_layers");
    expect_error(HDR "\"tokens\": [" TOK_OK ", {\"phase\": \"decode\", \"experts\": [[0, 4], [2, 3]]}]}",
                 "tokens[1].experts[0][1]", "out of range");
    expect_error(HDR "\"tokens\": [{\"phase\": \"decode\", \"experts\": [[0, 1]]}]}", "tokens[0].experts",
                 "num_layers");
    expect_error(HDR "\"tokens\": [{\"phase\": \"decode\", \"experts\": [[0, 1, 2], [0, 1]]}]}",
                 "tokens[0].experts[0]", "top_k");
    expect_error(HDR "\"tokens\": [{\"phase\": \"decode\", \"experts\": [[1, 1], [0, 1]]}]}",
                 "tokens[0].experts[0]", "repeats");
    expect_error(HDR "\"tokens\": [{\"phase\": \"other\", \"experts\": [[0, 1], [0, 1]]}]}",
                 "tokens[0].phase", NULL);
    expect_error(HDR "\"tokens\": [{\"phase\": \"decode\", \"experts\": [[0, \"1\"], [0, 1]]}]}",
                 "tokens[0].experts[0][1]", "integer");
    expect_error(HDR "\"tokens\": [" TOK_OK ", {\"phase\": \"decode\", \"experts\": [[0, 1], [2, 3]], "
                 "\"weights\": [[0.5, 0.5], [0.5, 0.5]]}]}",
                 "tokens[1].weights", NULL);
    expect_error("{\"task\": \"a\", \"num_layers\": 2, \"num_experts\": 4, \"top_k\": 5, \"tokens\": []}",
                 "top_k", "num_experts");
    expect_error("[1, 2]", "x.jsonl:1", "object");
    expect_error(HDR "\"tokens\": []}\n{\"task\": \"b\", \"num_layers\": 3, \"num_experts\": 4, \"top_k\": 2, "
                 "\"tokens\": []}",
                 "x.jsonl:2", "shape");
    expect_error("{\"task\": \"\", \"num_layers\": 2, \"num_experts\": 4, \"top_k\": 2, \"tokens\": []}",
                 "task", "empty");
}
END_TEST

/* Every prefix and many single-byte mutations of a valid line: a trace or a
 * message, never a crash (the sanitizers watch). */
START_TEST(trace_parser_total)
{
    const char *good = HDR "\"tokens\": [" TOK_OK ", {\"phase\": \"prefill\", \"pos\": 3, \"experts\": "
                           "[[3, 1], [2, 0]], \"weights\": [[0.6, 0.4], [1, 0]]}]}";
    size_t n = strlen(good);
    char *buf = malloc(n + 1);
    int ok = 0, bad = 0;
    for (size_t cut = 0; cut <= n; cut++) {
        pred_trace t;
        pred_trace_init(&t);
        emoe_err err = {0};
        if (pred_trace_load_mem(&t, good, cut, "p", &err) == EMOE_OK) ok++;
        else { bad++; ck_assert(err.msg[0] != 0); }
        pred_trace_free(&t);
    }
    synth_rng rng = {42};
    const char alphabet[] = "{}[],:\"0123456789-.eE abcdefghijklmnopqrstuvwxyz\\\n\x01\xff";
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, good, n + 1);
        int nm = 1 + (int)(synth_next(&rng) % 3);
        for (int j = 0; j < nm; j++)
            buf[synth_next(&rng) % n] = alphabet[synth_next(&rng) % (sizeof alphabet - 1)];
        pred_trace t;
        pred_trace_init(&t);
        emoe_err err = {0};
        if (pred_trace_load_mem(&t, buf, n, "p", &err) == EMOE_OK) {
            ok++;
            for (int r = 0; r < t.n_reqs; r++)
                for (size_t i = 0; i < (size_t)t.reqs[r].n_tokens * 4; i++)
                    ck_assert(t.reqs[r].experts[i] >= 0 && t.reqs[r].experts[i] < t.reqs[r].n_experts);
        } else {
            bad++;
            ck_assert(err.msg[0] != 0);
        }
        pred_trace_free(&t);
    }
    free(buf);
    ck_assert_int_gt(ok, 1); /* the full line and some harmless mutations */
    ck_assert_int_gt(bad, 100);
}
END_TEST

START_TEST(trace_real_files)
{
    const char *d = tu_shared_dir();
    if (!d) { TU_SKIP_NO_SHARED("trace_real_files"); return; }
    char p[4200];
    snprintf(p, sizeof p, "%s/traces/tiny-moe-7task.jsonl", d);
    pred_trace t;
    pred_trace_init(&t);
    emoe_err err;
    ck_assert_msg(pred_trace_load(&t, p, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(t.n_reqs, 28);
    ck_assert_int_eq(t.n_layers, 6);
    ck_assert_int_eq(t.n_experts, 32);
    ck_assert_int_eq(t.top_k, 4);
    int tasks = 0;
    for (int i = 0; i < t.n_reqs; i++) {
        const pred_trace_req *r = &t.reqs[i];
        ck_assert_int_eq(r->n_tokens, 127);
        int np = 0;
        for (int j = 0; j < r->n_tokens; j++) np += r->phase[j] == PRED_PHASE_PREFILL;
        ck_assert_int_eq(np, 96);
        ck_assert_int_eq(r->pos[126], 126);
        if (i == 0 || strcmp(r->task, t.reqs[i - 1].task)) tasks++;
    }
    ck_assert_int_eq(tasks, 7);
    /* the first token of the file: [[15, 19, 6, 27], ...] */
    ck_assert_int_eq(pred_req_experts(&t.reqs[0], 0, 0)[0], 15);
    ck_assert_int_eq(pred_req_experts(&t.reqs[0], 0, 0)[3], 27);
    ck_assert_int_eq(pred_req_experts(&t.reqs[0], 0, 5)[0], 24);
    pred_trace_free(&t);

    snprintf(p, sizeof p, "%s/traces/mixtral-8x7b-instruct.gsm8k.jsonl", d);
    pred_trace_init(&t);
    ck_assert_msg(pred_trace_load(&t, p, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(t.n_reqs, 2);
    ck_assert_int_eq(t.n_layers, 32);
    ck_assert_int_eq(t.reqs[0].n_tokens, 166);
    ck_assert_int_eq(t.reqs[1].n_tokens, 78);
    ck_assert_ptr_nonnull(t.reqs[0].weights);
    ck_assert_int_eq(pred_req_experts(&t.reqs[0], 0, 0)[0], 7);
    ck_assert_float_eq_tol(t.reqs[0].weights[0], 0.8004f, 1e-6f);
    /* write it back and read it again: identical ids */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    for (int i = 0; i < t.n_reqs; i++) ck_assert_int_eq(pred_req_write(&t.reqs[i], f, &err), EMOE_OK);
    fclose(f);
    pred_trace t2;
    pred_trace_init(&t2);
    ck_assert_msg(pred_trace_load_mem(&t2, buf, len, "rt", &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(t2.n_reqs, 2);
    for (int i = 0; i < 2; i++)
        ck_assert(!memcmp(t.reqs[i].experts, t2.reqs[i].experts,
                          (size_t)t.reqs[i].n_tokens * 32 * 2 * sizeof(int16_t)));
    free(buf);
    pred_trace_free(&t2);
    pred_trace_free(&t);
}
END_TEST

/* ---- predictor ----------------------------------------------------------- */

static void feed(pred_t *p, const pred_trace_req *r)
{
    emoe_err err;
    int ids[4096];
    for (int t = 0; t < r->n_tokens; t++) {
        for (int l = 0; l < r->n_layers; l++)
            for (int j = 0; j < r->top_k; j++) ids[l * r->top_k + j] = pred_req_experts(r, t, l)[j];
        ck_assert_int_eq(pred_observe(p, r->task, ids, &err), EMOE_OK);
    }
    pred_end_request(p, r->task);
}

/* Fraction of the plan that is in the task's subset, and of the subset in the plan. */
static void plan_vs_subset(const pred_plan *pl, int seed, int m, double *prec, double *rec)
{
    int in = 0, sel = 0, sub[4096];
    for (int l = 0; l < pl->n_layers; l++) {
        synth_subset(seed, l, pl->n_experts, m, sub);
        for (int i = 0; i < pl->n_sel[l]; i++) {
            sel++;
            for (int j = 0; j < m; j++) in += pl->order[l * pl->n_experts + i] == sub[j];
        }
    }
    *prec = sel ? (double)in / sel : 0;
    *rec = (double)in / (pl->n_layers * m);
}

START_TEST(pred_fixed_subset_recovered)
{
    const int L = 4, E = 16, K = 2, M = 5;
    pred_t *p;
    emoe_err err;
    ck_assert_int_eq(pred_init(NULL, L, E, K, &p, &err), EMOE_OK);
    pred_plan pl;
    ck_assert_int_eq(pred_plan_init(&pl, L, E, &err), EMOE_OK);
    int re;
    ck_assert_int_eq(pred_plan_get(p, "a", NULL, L * M, 0, &pl, &re, &err), EMOE_OK);
    ck_assert_int_eq(pl.source, PRED_PLAN_EMPTY);
    ck_assert_int_eq(pl.total_sel, 0);
    synth_rng rng = {1};
    for (int i = 0; i < 3; i++) {
        pred_trace_req r;
        synth_request(&r, "a", i, L, E, K, 60, 7, M, 0, &rng);
        feed(p, &r);
        pred_req_free(&r);
    }
    ck_assert_int_eq(pred_task_requests(p, "a"), 3);
    ck_assert_int_eq(pred_plan_get(p, "a", NULL, L * M, 0, &pl, &re, &err), EMOE_OK);
    ck_assert_int_eq(re, 1);
    ck_assert_int_eq(pl.source, PRED_PLAN_TASK);
    double prec, rec;
    plan_vs_subset(&pl, 7, M, &prec, &rec);
    ck_assert_msg(prec == 1.0 && rec == 1.0, "precision %g recall %g", prec, rec);
    /* a smaller budget keeps only subset members; per-layer mode gives each layer its share */
    ck_assert_int_eq(pred_plan_get(p, "a", NULL, L * 3, 1, &pl, &re, &err), EMOE_OK);
    for (int l = 0; l < L; l++) ck_assert_int_eq(pl.n_sel[l], 3);
    plan_vs_subset(&pl, 7, M, &prec, &rec);
    ck_assert(prec == 1.0);
    /* scores: subset experts share ~K/M each, the others 0 */
    float sc[4 * 16];
    ck_assert_int_eq(pred_scores(p, "a", sc, &err), EMOE_OK);
    int sub[16];
    synth_subset(7, 0, E, M, sub);
    double in = 0;
    for (int j = 0; j < M; j++) in += sc[sub[j]];
    ck_assert_double_eq_tol(in, K, 1e-4);
    pred_plan_free(&pl);
    pred_free(p);
}
END_TEST

START_TEST(pred_alternating_tasks_separated)
{
    const int L = 3, E = 24, K = 2, M = 4;
    pred_t *p;
    emoe_err err;
    pred_config c;
    pred_config_default(&c);
    c.replan_every = 1;
    ck_assert_int_eq(pred_init(&c, L, E, K, &p, &err), EMOE_OK);
    synth_rng rng = {2};
    for (int i = 0; i < 8; i++) {
        pred_trace_req r;
        synth_request(&r, i % 2 ? "b" : "a", i, L, E, K, 40, i % 2 ? 200 : 100, M, 5, &rng);
        feed(p, &r);
        pred_req_free(&r);
    }
    pred_plan pl;
    ck_assert_int_eq(pred_plan_init(&pl, L, E, &err), EMOE_OK);
    double prec, rec;
    ck_assert_int_eq(pred_plan_get(p, "a", NULL, L * M, 0, &pl, NULL, &err), EMOE_OK);
    plan_vs_subset(&pl, 100, M, &prec, &rec);
    ck_assert_msg(prec >= 0.99 && rec >= 0.99, "task a: precision %g recall %g", prec, rec);
    ck_assert_int_eq(pred_plan_get(p, "b", NULL, L * M, 0, &pl, NULL, &err), EMOE_OK);
    plan_vs_subset(&pl, 200, M, &prec, &rec);
    ck_assert_msg(prec >= 0.99 && rec >= 0.99, "task b: precision %g recall %g", prec, rec);
    /* cold start: an unseen task gets the global popular set (both subsets) */
    ck_assert_int_eq(pred_plan_get(p, "c", NULL, 2 * L * M, 0, &pl, NULL, &err), EMOE_OK);
    ck_assert_int_eq(pl.source, PRED_PLAN_GLOBAL);
    double pa, ra, pb, rb;
    plan_vs_subset(&pl, 100, M, &pa, &ra);
    plan_vs_subset(&pl, 200, M, &pb, &rb);
    ck_assert_msg(ra >= 0.9 && rb >= 0.9, "global plan recall a %g b %g", ra, rb);
    /* insensitive: a's plan becomes the global one */
    ck_assert_int_eq(pred_set_insensitive(p, "a", 1, &err), EMOE_OK);
    ck_assert_int_eq(pred_plan_get(p, "a", NULL, 2 * L * M, 0, &pl, NULL, &err), EMOE_OK);
    ck_assert_int_eq(pl.source, PRED_PLAN_INSENSITIVE);
    plan_vs_subset(&pl, 200, M, &pb, &rb);
    ck_assert(rb >= 0.9);
    pred_plan_free(&pl);
    pred_free(p);
}
END_TEST

START_TEST(pred_drifting_task_followed)
{
    const int L = 3, E = 32, K = 2, M = 4;
    pred_t *p;
    emoe_err err;
    pred_config c;
    pred_config_default(&c);
    c.replan_every = 1;
    ck_assert_int_eq(pred_init(&c, L, E, K, &p, &err), EMOE_OK);
    pred_plan pl;
    ck_assert_int_eq(pred_plan_init(&pl, L, E, &err), EMOE_OK);
    synth_rng rng = {3};
    double prec, rec;
    for (int i = 0; i < 10; i++) {
        pred_trace_req r;
        synth_request(&r, "d", i, L, E, K, 50, i < 5 ? 11 : 12, M, 0, &rng);
        feed(p, &r);
        pred_req_free(&r);
        ck_assert_int_eq(pred_plan_get(p, "d", NULL, L * M, 0, &pl, NULL, &err), EMOE_OK);
        plan_vs_subset(&pl, i < 5 ? 11 : 12, M, &prec, &rec);
        if (i < 5 || i >= 7) /* two requests after the drift, the new set is planned */
            ck_assert_msg(prec >= 0.99, "after request %d: precision %g", i, prec);
    }
    pred_plan_free(&pl);
    pred_free(p);
}
END_TEST

START_TEST(pred_replan_every_n)
{
    const int L = 2, E = 8, K = 2;
    pred_t *p;
    emoe_err err;
    pred_config c;
    pred_config_default(&c);
    c.replan_every = 3;
    ck_assert_int_eq(pred_init(&c, L, E, K, &p, &err), EMOE_OK);
    pred_plan pl;
    ck_assert_int_eq(pred_plan_init(&pl, L, E, &err), EMOE_OK);
    synth_rng rng = {4};
    int re;
    uint64_t v0 = 0;
    int replans = 0;
    for (int i = 0; i < 7; i++) {
        pred_trace_req r;
        synth_request(&r, "a", i, L, E, K, 10, 5 + i, 3, 0, &rng); /* a new subset each time */
        feed(p, &r);
        pred_req_free(&r);
        ck_assert_int_eq(pred_plan_get(p, "a", NULL, 4, 0, &pl, &re, &err), EMOE_OK);
        if (i == 0) { ck_assert_int_eq(re, 1); v0 = pl.version; }
        replans += re;
        if (!re) ck_assert_uint_eq(pl.version, v0);
        else v0 = pl.version;
    }
    /* after requests 1 (first), 4, 7: three plans over seven requests */
    ck_assert_int_eq(replans, 3);
    /* another budget forces a new plan */
    ck_assert_int_eq(pred_plan_get(p, "a", NULL, 6, 0, &pl, &re, &err), EMOE_OK);
    ck_assert_int_eq(re, 1);
    ck_assert_int_eq(pl.total_sel, 6);
    pred_plan_free(&pl);
    pred_free(p);
}
END_TEST

START_TEST(pred_transitions_lookahead)
{
    const int L = 4, E = 8, K = 1;
    pred_t *p;
    emoe_err err;
    ck_assert_int_eq(pred_init(NULL, L, E, K, &p, &err), EMOE_OK);
    /* expert e at layer l is always followed by (3e+1) mod 8 at layer l+1 */
    synth_rng rng = {5};
    for (int t = 0; t < 400; t++) {
        int ids[4];
        ids[0] = (int)(synth_next(&rng) % 8);
        for (int l = 1; l < L; l++) ids[l] = (3 * ids[l - 1] + 1) % 8;
        ck_assert_int_eq(pred_observe(p, "x", ids, &err), EMOE_OK);
        if (t % 50 == 49) pred_end_request(p, "x");
    }
    float sc[8];
    for (int l = 0; l + 1 < L; l++)
        for (int e = 0; e < E; e++) {
            ck_assert_int_eq(pred_next_layer(p, "x", l, &e, 1, sc, &err), EMOE_OK);
            int best = 0;
            for (int b = 1; b < E; b++) if (sc[b] > sc[best]) best = b;
            ck_assert_int_eq(best, (3 * e + 1) % 8);
            ck_assert(sc[best] > 0.5f);
        }
    int z = 0;
    ck_assert_int_ne(pred_next_layer(p, "x", L - 1, &z, 1, sc, &err), EMOE_OK);
    pred_free(p);
}
END_TEST

START_TEST(pred_bounded_tasks_and_config)
{
    pred_t *p;
    emoe_err err;
    pred_config c;
    pred_config_default(&c);
    c.max_tasks = 2;
    ck_assert_int_eq(pred_init(&c, 2, 4, 1, &p, &err), EMOE_OK);
    int ids[2] = {1, 2};
    const char *names[] = {"t1", "t2", "t3", "t1"};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(pred_observe(p, names[i], ids, &err), EMOE_OK);
        pred_end_request(p, names[i]);
    }
    ck_assert_int_eq(pred_n_tasks(p), 2);
    ck_assert_int_eq(pred_task_requests(p, "t2"), 0); /* recycled */
    ck_assert_int_eq(pred_task_requests(p, "t3"), 1);
    ck_assert_int_eq(pred_task_requests(p, "t1"), 1); /* came back fresh */
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    ck_assert_int_ne(pred_observe(p, longname, ids, &err), EMOE_OK);
    ck_assert_int_ne(pred_observe_layer(p, "t1", 5, ids, 1, &err), EMOE_OK);
    pred_free(p);
    pred_config_default(&c);
    c.decay = 1.0f;
    ck_assert_int_ne(pred_init(&c, 2, 4, 1, &p, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "decay"));
    pred_config_default(&c);
    c.replan_every = 0;
    ck_assert_int_ne(pred_init(&c, 2, 4, 1, &p, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "replan_every"));
    ck_assert_int_ne(pred_init(NULL, 2, 4, 5, &p, &err), EMOE_OK);
    pred_free(NULL);
}
END_TEST

START_TEST(pred_tracker_follows_use)
{
    pred_t *p;
    emoe_err err;
    ck_assert_int_eq(pred_init(NULL, 1, 4, 1, &p, &err), EMOE_OK);
    pred_tracker t;
    ck_assert_int_eq(pred_tracker_init(&t, p, &err), EMOE_OK);
    pred_plan pl;
    ck_assert_int_eq(pred_plan_init(&pl, 1, 4, &err), EMOE_OK);
    pl.score[0] = 0.9f, pl.score[1] = 0.1f;
    pred_tracker_reset(&t, &pl);
    ck_assert(pred_tracker_score(&t, 0, 0) > pred_tracker_score(&t, 0, 1));
    ck_assert(pred_tracker_score(&t, 0, 3) == 0.0f);
    int e = 3;
    for (int i = 0; i < 60; i++) pred_tracker_observe(&t, 0, &e, 1);
    ck_assert(pred_tracker_score(&t, 0, 3) > pred_tracker_score(&t, 0, 0));
    ck_assert(pred_tracker_score(&t, 0, 0) > pred_tracker_score(&t, 0, 2));
    pred_tracker_reset(&t, NULL);
    ck_assert(pred_tracker_score(&t, 0, 3) == 0.0f);
    pred_plan_free(&pl);
    pred_tracker_free(&t);
    pred_free(p);

    /* reuse distance over 4 layers: at equal use probability the layer coming
     * next is reused sooner than the one just served; a likelier expert sooner
     * than a rarer one of the same layer; a sure lookahead means "next step". */
    ck_assert_int_eq(pred_init(NULL, 4, 4, 1, &p, &err), EMOE_OK);
    ck_assert_int_eq(pred_tracker_init(&t, p, &err), EMOE_OK);
    pred_tracker_reset(&t, NULL);
    for (int l = 0; l < 4; l++) {
        e = 0;
        for (int i = 0; i < 30; i++) pred_tracker_observe(&t, l, &e, 1); /* expert 0 is frequent */
        e = 1;
        pred_tracker_observe(&t, l, &e, 1);                              /* expert 1 seen once */
    }
    double d_next = pred_tracker_reuse(&t, 1, 2, 0, NULL), d_served = pred_tracker_reuse(&t, 1, 1, 0, NULL);
    double d_rare = pred_tracker_reuse(&t, 1, 2, 1, NULL), d_never = pred_tracker_reuse(&t, 1, 2, 3, NULL);
    ck_assert_msg(d_next < d_served, "next %g served %g", d_next, d_served);
    ck_assert(d_next < d_rare && d_rare < d_never);
    ck_assert(pred_tracker_reuse(&t, 1, 3, 0, NULL) > d_next); /* two layers away */
    float q[4] = {0, 0, 0, 1};
    ck_assert_double_eq_tol(pred_tracker_reuse(&t, 1, 2, 3, q), 1.0, 1e-9);
    ck_assert(pred_tracker_reuse(&t, 1, 2, 0, q) > d_next); /* the lookahead says: not this token */
    pred_tracker_free(&t);
    pred_free(p);
}
END_TEST

/* On the real tiny-moe traces, a task's plan learned from 3 requests covers most
 * of its 4th request's accesses, far more than another task's plan does. */
START_TEST(pred_real_tiny_tasks_distinct)
{
    const char *d = tu_shared_dir();
    if (!d) { TU_SKIP_NO_SHARED("pred_real_tiny_tasks_distinct"); return; }
    char path[4200];
    snprintf(path, sizeof path, "%s/traces/tiny-moe-7task.jsonl", d);
    pred_trace t;
    pred_trace_init(&t);
    emoe_err err;
    ck_assert_msg(pred_trace_load(&t, path, &err) == EMOE_OK, "%s", err.msg);
    pred_t *p;
    ck_assert_int_eq(pred_init(NULL, t.n_layers, t.n_experts, t.top_k, &p, &err), EMOE_OK);
    for (int i = 0; i < t.n_reqs; i++)
        if (i % 4 != 3) feed(p, &t.reqs[i]);
    pred_plan pl;
    ck_assert_int_eq(pred_plan_init(&pl, t.n_layers, t.n_experts, &err), EMOE_OK);
    int budget = t.n_layers * t.n_experts / 4; /* 25% */
    double own = 0, other = 0;
    for (int task = 0; task < 7; task++) {
        const pred_trace_req *held = &t.reqs[task * 4 + 3];
        for (int which = 0; which < 2; which++) {
            const char *name = which == 0 ? held->task : t.reqs[((task + 1) % 7) * 4].task;
            ck_assert_int_eq(pred_plan_get(p, name, NULL, budget, 0, &pl, NULL, &err), EMOE_OK);
            int in = 0, all = 0;
            for (int tk = 0; tk < held->n_tokens; tk++)
                for (int l = 0; l < t.n_layers; l++)
                    for (int j = 0; j < t.top_k; j++, all++)
                        in += pred_plan_selected(&pl, l, pred_req_experts(held, tk, l)[j]);
            if (which == 0) own += (double)in / all / 7;
            else other += (double)in / all / 7;
        }
    }
    fprintf(stderr, "tiny-moe held-out coverage of a 25%% plan: own task %.3f, other task %.3f\n", own, other);
    ck_assert_msg(own > 0.45 && own > other + 0.15, "own %.3f other %.3f", own, other);
    pred_plan_free(&pl);
    pred_free(p);
    pred_trace_free(&t);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("predictor");
    TCase *tc = tcase_create("trace");
    tcase_add_test(tc, trace_roundtrip);
    tcase_add_test(tc, trace_unfilled_row_refused);
    tcase_add_test(tc, trace_errors_name_line_and_field);
    tcase_add_test(tc, trace_parser_total);
    tcase_add_test(tc, trace_real_files);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("predictor");
    tcase_add_test(tc, pred_fixed_subset_recovered);
    tcase_add_test(tc, pred_alternating_tasks_separated);
    tcase_add_test(tc, pred_drifting_task_followed);
    tcase_add_test(tc, pred_replan_every_n);
    tcase_add_test(tc, pred_transitions_lookahead);
    tcase_add_test(tc, pred_bounded_tasks_and_config);
    tcase_add_test(tc, pred_tracker_follows_use);
    tcase_add_test(tc, pred_real_tiny_tasks_distinct);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
