/* test_prefetch.c — the serving loop's prediction side (scheduler/prefetch.c)
 * with the real scheduler, engine and expert cache on tiny-qwen3-moe at a 25%
 * device budget: greedy outputs equal the Hugging Face reference (greedy_16)
 * with queued prefetch, lookahead and the eviction hint at work (requests
 * queued behind max_running = 1), with the visit order's next-step prefetch
 * and with the older reuse order (4 running), when queued requests are cancelled (their
 * prefetch is dropped), with an injected expert read error, and for the exact
 * tasks of a per-task miss policy while the others substitute; the task
 * profile loader's errors (missing, malformed, unknown task, other model) and
 * the reload that keeps the old profile; live traces read back by the trace
 * reader; the expected-load estimator. */
#include "tests/unit/testutil.h"
#include "tests/unit/fixture_cases.h"
#include "scheduler/prefetch.h"
#include "predictor/profile.h"
#include "predictor/trace.h"

#include <jansson.h>
#include <unistd.h>

#define MAXC 8
static int n_cases;
static int32_t prompts[MAXC][32];
static int n_prompt[MAXC];
static int32_t greedy[MAXC][16];
static eng_engine *eng;
static char mdir[4096], tmpd[4096];

static int load_fixture(void)
{
    const char *sh = tu_shared_dir();
    if (!sh) return 0;
    snprintf(mdir, sizeof mdir, "%s/fixtures/models/tiny-qwen3-moe", sh);
    n_cases = fc_load_qwen3_cases(sh, MAXC, prompts, n_prompt, greedy);
    emoe_err err = {0};
    eng_open_opts o = {.n_threads = 1, .max_ctx = 512};
    ck_assert_msg(eng_open(mdir, &o, &eng, &err) == EMOE_OK, "%s", err.msg);
    snprintf(tmpd, sizeof tmpd, "%s/emoe-prefetch-XXXXXX", getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpd));
    return 1;
}

static void unload(void)
{
    eng_free(eng);
    eng = NULL;
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpd);
    ck_assert_int_eq(system(cmd), 0);
}

static void set(emoe_config *c, const char *sec, const char *key, const char *val)
{
    emoe_err err = {0};
    ck_assert_msg(cfg_set(c, sec, key, val, "test", &err) == EMOE_OK, "%s.%s=%s: %s", sec, key, val, err.msg);
}

static void base_config(emoe_config *c)
{
    cfg_init(c);
    snprintf(c->model.path, sizeof c->model.path, "%s", mdir);
    char store[8192];
    snprintf(store, sizeof store, "%s/experts.emoe", tmpd);
    set(c, "cache", "device_budget", "25%");
    set(c, "cache", "store_path", store);
    set(c, "predictor", "plan_every", "2");
}

static int fake_push(void *ctx, void *st, int32_t id, sched_buf *out)
{
    (void)ctx; (void)st;
    char b[32];
    int n = snprintf(b, sizeof b, "%d,", (int)id);
    return sched_buf_append(out, b, (size_t)n);
}

typedef struct rig {
    prefetch_t *pf;
    sched *s;
} rig;

static void rig_start(rig *g, const emoe_config *c, int max_running, int fail_nth)
{
    emoe_err err = {0};
    ck_assert_msg(prefetch_init(c, eng, fail_nth, &g->pf, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_ptr_nonnull(g->pf);
    sched_opts o = {0};
    o.limits = (sched_limits){max_running, 64, 64, 8};
    o.text.push = fake_push;
    prefetch_hooks(g->pf, &o);
    ck_assert_msg(sched_init(eng, &o, &g->s, &err) == EMOE_OK, "%s", err.msg);
}

static void rig_stop(rig *g)
{
    sched_free(g->s);
    prefetch_free(g->pf);
    g->s = NULL;
    g->pf = NULL;
}

static sched_req *submit_n(sched *s, int c, const char *task, int max_tokens)
{
    sched_req_params p = {0};
    p.prompt = prompts[c];
    p.n_prompt = n_prompt[c];
    p.max_tokens = max_tokens;
    eng_sampling_default(&p.sampling);
    p.ignore_eos = 1;
    p.task = task;
    p.id = (uint64_t)c;
    sched_req *r = NULL;
    emoe_err err = {0};
    ck_assert_msg(sched_submit(s, &p, &r, &err) == EMOE_OK, "%s", err.msg);
    return r;
}

static sched_req *submit(sched *s, int c, const char *task) { return submit_n(s, c, task, 16); }

static sched_finish wait_done(sched_req *r)
{
    double t0 = emoe_now();
    while (emoe_now() - t0 < 120) {
        sched_update u;
        sched_req_poll(r, 0.2, &u);
        free(u.text);
        if (u.finished) return u.finish;
    }
    ck_abort_msg("request did not finish in 120 s");
    return SCHED_FINISH_NONE;
}

/* Waits for r and checks its ids against the reference. */
static void expect_reference(sched_req *r, int c)
{
    ck_assert_int_eq(wait_done(r), SCHED_FINISH_LENGTH);
    int32_t got[16];
    ck_assert_int_eq(sched_req_tokens(r, got, 16), 16);
    for (int k = 0; k < 16; k++) ck_assert_msg(got[k] == greedy[c][k], "case %d token %d: %d != %d", c, k, got[k], greedy[c][k]);
}

static const char *task_of_case(int c) { return c % 2 ? "odd" : "even"; }

/* One round: every case submitted at once, waited for, checked. */
static void round_all(rig *g)
{
    sched_req *r[MAXC];
    for (int c = 0; c < n_cases; c++) r[c] = submit(g->s, c, task_of_case(c));
    for (int c = 0; c < n_cases; c++) {
        expect_reference(r[c], c);
        sched_req_release(r[c]);
    }
}

/* One request per task, in turn: gives the predictor statistics for both. */
static void warm(rig *g)
{
    for (int c = 0; c < 2 && c < n_cases; c++) {
        sched_req *r = submit(g->s, c, task_of_case(c));
        expect_reference(r, c);
        sched_req_release(r);
    }
}

static char *metrics_text(prefetch_t *pf)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    prefetch_metrics(pf, f);
    fclose(f);
    return buf;
}

static double metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, name, n) && p[n] == ' ') return atof(p + n + 1);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

START_TEST(test_exact_queued_lookahead)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    emoe_config c;
    base_config(&c);
    set(&c, "predictor", "lookahead_layers", "2");
    char acq[64];
    snprintf(acq, sizeof acq, "/tmp/emoe_test_acq.%d.log", (int)getpid());
    set(&c, "predictor", "acquire_log", acq);
    rig g;
    rig_start(&g, &c, 1, 0); /* one at a time: the others wait in the queue */
    warm(&g);                /* the first plans are empty */
    round_all(&g);
    prefetch_stats st;
    prefetch_get_stats(g.pf, &st);
    ck_assert_uint_ge(st.queue_plans, (uint64_t)(n_cases - 1));
    ck_assert_uint_gt(st.queue_prefetched, 0);
    ck_assert_uint_gt(st.lookahead_prefetched, 0);
    ck_assert_uint_gt(st.lookahead_checked, 0);
    ck_assert_uint_le(st.lookahead_hits, st.lookahead_checked);
    ck_assert_uint_gt(st.lookahead_hits, 0);
    ck_assert_uint_eq(st.requests, (uint64_t)(n_cases + 2));
    char *m = metrics_text(g.pf);
    ck_assert_ptr_nonnull(strstr(m, "emoe_expert_cache_prefetch_loads_total{source=\"queue\"}"));
    ck_assert(metric(m, "emoe_expert_cache_prefetch_loads_total{source=\"lookahead\"}") > 0);
    ck_assert(metric(m, "emoe_expert_cache_substituted_experts_total") == 0); /* exact: nothing substituted */
    double acc = metric(m, "emoe_predictor_lookahead_accuracy");
    ck_assert(acc > 0 && acc <= 1);
    ck_assert(metric(m, "emoe_expert_cache_task_hit_rate{task=\"odd\"}") >= 0);
    ck_assert(metric(m, "emoe_expert_cache_task_lookups_total{task=\"even\"}") > 0);
    /* the load-queue figures */
    double steps = metric(m, "emoe_expert_cache_steps_total"), loads = metric(m, "emoe_expert_cache_loads_total");
    double acquires = metric(m, "emoe_expert_cache_acquires_total");
    ck_assert(steps > 0 && loads > 0);
    ck_assert(metric(m, "emoe_expert_cache_inflight_max") >= 1);
    ck_assert(metric(m, "emoe_expert_cache_inflight_mean") >= 0);
    ck_assert(metric(m, "emoe_expert_cache_busy_seconds_total") > 0);
    ck_assert(metric(m, "emoe_expert_cache_stall_bytes_total") <= metric(m, "emoe_expert_cache_bytes_loaded_total"));
    free(m);
    rig_stop(&g);
    /* acquire_log: one line per step that acquired, every entry a valid (layer, expert),
     * as many entries as the cache counted acquires */
    FILE *f = fopen(acq, "r");
    ck_assert_ptr_nonnull(f);
    int lines = 0, entries = 0, l, x;
    char tok[32];
    while (fscanf(f, "%31s", tok) == 1) {
        ck_assert_int_eq(sscanf(tok, "%d:%d", &l, &x), 2);
        ck_assert(l >= 0 && l < 4 && x >= 0 && x < 16);
        entries++;
    }
    rewind(f);
    for (int ch; (ch = fgetc(f)) != EOF;) lines += ch == '\n';
    fclose(f);
    unlink(acq);
    ck_assert_int_gt(lines, 0);
    ck_assert(lines <= steps + 1); /* a request can finish before its step's end is counted */
    ck_assert_int_ge(entries, lines);
    ck_assert(entries == acquires);
    unload();
}
END_TEST

START_TEST(test_cancel_queued)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    emoe_config c;
    base_config(&c);
    rig g;
    rig_start(&g, &c, 1, 0);
    warm(&g);
    sched_req *r[MAXC];
    prefetch_stats st;
    prefetch_get_stats(g.pf, &st);
    uint64_t base = st.queue_plans;
    /* The first request runs long (its first 16 tokens are still checked), so
     * the two cancelled below are still queued when they are cancelled. */
    for (int k = 0; k < n_cases; k++) r[k] = submit_n(g.s, k, task_of_case(k), k == 0 ? 400 : 16);
    /* wait until the queue prefetch has seen every one of them in the queue
     * (each request passes on_queue before it can be admitted), then cancel two */
    double t0 = emoe_now();
    do {
        prefetch_get_stats(g.pf, &st);
        if (st.queue_plans >= base + (uint64_t)n_cases) break;
        usleep(1000);
    } while (emoe_now() - t0 < 30);
    ck_assert_uint_ge(st.queue_plans, base + (uint64_t)n_cases);
    int a = n_cases - 1, b = n_cases - 2;
    sched_req_cancel(r[a]);
    sched_req_cancel(r[b]);
    /* Stats lag the queue by one run-loop iteration: a request admitted before
     * its cancel ends as a running one, not as a dropped queued plan. */
    int still_queued = 0;
    for (int k = 0; k < n_cases; k++) {
        if (k != a && k != b) continue;
        sched_update u;
        sched_req_poll(r[k], 0, &u);
        free(u.text);
        still_queued += !u.started;
    }
    ck_assert_int_ge(still_queued, 1);
    for (int k = 0; k < n_cases; k++) {
        if (k == a || k == b) ck_assert_int_eq(wait_done(r[k]), SCHED_FINISH_CANCELLED);
        else expect_reference(r[k], k);
        sched_req_release(r[k]);
    }
    prefetch_get_stats(g.pf, &st);
    ck_assert_uint_eq(st.queue_dropped, (uint64_t)still_queued);
    ck_assert_int_eq(st.queued, 0);
    rig_stop(&g);
    unload();
}
END_TEST

/* The visit order (evict_order = visit; forecast is the default) with the next-step
 * prefetch at a low threshold (many gated loads) under concurrency, and the
 * older reuse order: greedy outputs equal the reference in both. */
START_TEST(test_exact_visit_next_step)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    emoe_config c;
    base_config(&c);
    set(&c, "predictor", "evict_order", "visit");
    set(&c, "predictor", "next_step_min_use", "1");
    rig g;
    rig_start(&g, &c, 4, 0);
    warm(&g);
    round_all(&g);
    round_all(&g);
    prefetch_stats st;
    prefetch_get_stats(g.pf, &st);
    ck_assert_uint_gt(st.next_step_prefetched, 0);
    ck_assert_uint_ge(st.lookahead_prefetched, st.next_step_prefetched);
    char *m = metrics_text(g.pf);
    ck_assert(metric(m, "emoe_predictor_next_step_prefetched_experts_total") == (double)st.next_step_prefetched);
    ck_assert(metric(m, "emoe_expert_cache_evictions_total") > 0); /* the budget bit */
    ck_assert(metric(m, "emoe_expert_cache_substituted_experts_total") == 0);
    free(m);
    rig_stop(&g);
    base_config(&c);
    set(&c, "predictor", "evict_order", "reuse");
    rig_start(&g, &c, 4, 0);
    warm(&g);
    round_all(&g);
    prefetch_get_stats(g.pf, &st);
    ck_assert_uint_eq(st.next_step_prefetched, 0); /* visit order only */
    rig_stop(&g);
    unload();
}
END_TEST

/* evict_order = forecast: batched rows under the budget stay bitwise
 * identical to all-resident (expect_reference), the forecast is trained at
 * every layer visit, and the cache really evicts by it. */
START_TEST(test_exact_forecast)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    emoe_config c;
    base_config(&c);
    set(&c, "predictor", "evict_order", "forecast");
    rig g;
    rig_start(&g, &c, 4, 0);
    warm(&g);
    round_all(&g);
    round_all(&g);
    prefetch_stats st;
    prefetch_get_stats(g.pf, &st);
    ck_assert_uint_gt(st.forecast_visits, 0);
    char *m = metrics_text(g.pf);
    ck_assert(metric(m, "emoe_predictor_forecast_visits_total") == (double)st.forecast_visits);
    /* every step visits each of the fixture's 4 layers once: one training
     * visit per layer and step, 16 decode steps at least (not a multiple of 4
     * exactly: the last step's visits may still be folding when read) */
    ck_assert_uint_ge(st.forecast_visits, 4 * 16);
    ck_assert(metric(m, "emoe_expert_cache_evictions_total") > 0); /* the budget bit */
    ck_assert(metric(m, "emoe_expert_cache_substituted_experts_total") == 0);
    free(m);
    rig_stop(&g);
    base_config(&c); /* the visit order trains no forecast */
    set(&c, "predictor", "evict_order", "visit");
    rig_start(&g, &c, 4, 0);
    warm(&g);
    prefetch_get_stats(g.pf, &st);
    ck_assert_uint_eq(st.forecast_visits, 0);
    rig_stop(&g);
    unload();
}
END_TEST

START_TEST(test_read_error)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    emoe_config c;
    base_config(&c);
    rig g;
    rig_start(&g, &c, 4, 7); /* the 7th store read fails */
    sched_req *r[MAXC];
    for (int k = 0; k < n_cases; k++) r[k] = submit(g.s, k, task_of_case(k));
    int failed = 0;
    for (int k = 0; k < n_cases; k++) {
        sched_finish f = wait_done(r[k]);
        if (f == SCHED_FINISH_ERROR) failed++;
        else {
            int32_t got[16];
            ck_assert_int_eq(f, SCHED_FINISH_LENGTH);
            ck_assert_int_eq(sched_req_tokens(r[k], got, 16), 16);
            for (int t = 0; t < 16; t++) ck_assert_int_eq(got[t], greedy[k][t]);
        }
        sched_req_release(r[k]);
    }
    ck_assert_int_le(failed, 1);
    round_all(&g); /* later requests are not affected */
    rig_stop(&g);
    unload();
}
END_TEST

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

#define PROFILE_HEAD "{\"format\": \"emoe-task-profile\", \"version\": 1, \"num_layers\": 4, \"num_experts\": 16, \"top_k\": 4, "
#define PROFILE_OK PROFILE_HEAD "\"ranking\": [\"odd\", \"even\"], \"tasks\": {" \
    "\"odd\": {\"sensitivity\": 0.01, \"insensitive\": true, \"miss_policy\": \"substitute\", \"expected_output_tokens\": 12}," \
    "\"even\": {\"sensitivity\": 0.5, \"insensitive\": false, \"miss_policy\": \"exact\", \"expected_output_tokens\": 40}}}"

START_TEST(test_profile_errors)
{
    pred_profile p;
    emoe_err err = {0};
    ck_assert_int_eq(pred_profile_parse(PROFILE_OK, strlen(PROFILE_OK), "ok", 4, 16, 4, &p, &err), EMOE_OK);
    ck_assert_int_eq(p.n_tasks, 2);
    ck_assert_int_eq(pred_profile_find(&p, "odd")->substitute, 1);
    ck_assert_int_eq(pred_profile_find(&p, "even")->expected_output_tokens, 40);
    ck_assert_ptr_null(pred_profile_find(&p, "none"));
    struct { const char *text, *msg; } bad[] = {
        {"{not json", "line 1"},
        {"[]", "not a JSON object"},
        {"{\"format\": \"x\"}", "\"format\""},
        {PROFILE_HEAD "\"tasks\": {}}", "\"tasks\" missing or empty"},
        {PROFILE_HEAD "\"ranking\": [\"nope\"], \"tasks\": {\"a\": {\"sensitivity\": 1, \"insensitive\": false, \"miss_policy\": \"exact\"}}}",
         "unknown task \"nope\""},
        {PROFILE_HEAD "\"tasks\": {\"a\": {\"sensitivity\": 1, \"insensitive\": false, \"miss_policy\": \"maybe\"}}}", "tasks.a.miss_policy"},
        {PROFILE_HEAD "\"tasks\": {\"a\": {\"insensitive\": false, \"miss_policy\": \"exact\"}}}", "tasks.a.sensitivity"},
        {PROFILE_HEAD "\"tasks\": {\"a\\\"b\": {\"sensitivity\": 1, \"insensitive\": false, \"miss_policy\": \"exact\"}}}", "bad task name"},
        {"{\"format\": \"emoe-task-profile\", \"num_layers\": 32, \"num_experts\": 16, \"top_k\": 4, \"tasks\": {}}",
         "another model"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        ck_assert_int_eq(pred_profile_parse(bad[i].text, strlen(bad[i].text), "t.json", 4, 16, 4, &p, &err), EMOE_EINVAL);
        ck_assert_msg(strstr(err.msg, bad[i].msg) && strstr(err.msg, "t.json"), "case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
        ck_assert_int_eq(p.n_tasks, 0);
    }
    ck_assert_int_eq(pred_profile_load("/nonexistent/profile.json", 4, 16, 4, &p, &err), EMOE_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/profile.json"));
}
END_TEST

/* Per-task miss policy: "odd" substitutes, "even" stays exact; a bad
 * profile fails at start; a bad reload keeps the running profile. */
START_TEST(test_profile_serving)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    char good[8300], bad[8300], missing[8300];
    snprintf(good, sizeof good, "%s/profile.json", tmpd);
    snprintf(bad, sizeof bad, "%s/bad.json", tmpd);
    snprintf(missing, sizeof missing, "%s/missing.json", tmpd);
    write_file(good, PROFILE_OK);
    write_file(bad, "{\"format\": \"emoe-task-profile\", ");
    emoe_config c;
    base_config(&c);
    set(&c, "predictor", "task_profile", missing);
    prefetch_t *pf = NULL;
    emoe_err err = {0};
    ck_assert_int_ne(prefetch_init(&c, eng, 0, &pf, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing.json"));
    ck_assert_ptr_null(pf);
    set(&c, "predictor", "task_profile", bad);
    ck_assert_int_ne(prefetch_init(&c, eng, 0, &pf, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad.json"));
    set(&c, "predictor", "task_profile", good);
    rig g;
    rig_start(&g, &c, 4, 0);
    ck_assert_int_eq(prefetch_expected_output_tokens(g.pf, "even"), 40);
    /* the exact task keeps the reference ids while the other substitutes */
    for (int round = 0; round < 1; round++) {
        sched_req *r[MAXC];
        for (int k = 0; k < n_cases; k++) r[k] = submit(g.s, k, task_of_case(k));
        for (int k = 0; k < n_cases; k++) {
            if (k % 2 == 0) expect_reference(r[k], k);
            else ck_assert_int_eq(wait_done(r[k]), SCHED_FINISH_LENGTH);
            sched_req_release(r[k]);
        }
    }
    char *m = metrics_text(g.pf);
    ck_assert(metric(m, "emoe_expert_cache_task_substituted_experts_total{task=\"even\"}") == 0);
    ck_assert(metric(m, "emoe_expert_cache_task_substituted_experts_total{task=\"odd\"}") > 0);
    ck_assert(metric(m, "emoe_expert_cache_substituted_experts_total") ==
              metric(m, "emoe_expert_cache_task_substituted_experts_total{task=\"odd\"}"));
    free(m);
    /* a bad reload keeps the running profile */
    emoe_config next = c;
    set(&next, "predictor", "task_profile", bad);
    ck_assert_int_ne(prefetch_reload(g.pf, &next, &err), EMOE_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad.json"));
    set(&next, "predictor", "task_profile", missing);
    ck_assert_int_ne(prefetch_reload(g.pf, &next, &err), EMOE_OK);
    sched_req *r0 = submit(g.s, 0, "even");
    expect_reference(r0, 0);
    sched_req_release(r0);
    ck_assert_int_eq(prefetch_expected_output_tokens(g.pf, "even"), 40);
    /* a good one is installed between steps */
    write_file(good, PROFILE_HEAD "\"tasks\": {\"even\": {\"sensitivity\": 0.5, \"insensitive\": false, "
                                  "\"miss_policy\": \"exact\", \"expected_output_tokens\": 7}}}");
    set(&next, "predictor", "task_profile", good);
    ck_assert_int_eq(prefetch_reload(g.pf, &next, &err), EMOE_OK);
    r0 = submit(g.s, 0, "even");
    expect_reference(r0, 0);
    sched_req_release(r0);
    ck_assert_int_eq(prefetch_expected_output_tokens(g.pf, "even"), 7);
    ck_assert_int_eq(prefetch_expected_output_tokens(g.pf, "odd"), 0);
    rig_stop(&g);
    unload();
}
END_TEST

START_TEST(test_trace_and_estimate)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    char tp[8300];
    snprintf(tp, sizeof tp, "%s/live.jsonl", tmpd);
    emoe_config c;
    base_config(&c);
    set(&c, "predictor", "trace_path", tp);
    rig g;
    rig_start(&g, &c, 2, 0);
    ck_assert(prefetch_expected_load_s(g.pf, "even", 100) == prefetch_expected_load_s(g.pf, "even", 100));
    ck_assert(prefetch_expected_load_s(NULL, "even", 100) == 0);
    for (int k = 0; k < 3; k++) {
        sched_req *r = submit(g.s, k, task_of_case(k));
        expect_reference(r, k);
        sched_req_release(r);
    }
    /* the predictor knows the task now: a long request expects loads, an empty one none */
    ck_assert(prefetch_expected_load_s(g.pf, "even", 0) == 0);
    double e1 = prefetch_expected_load_s(g.pf, "even", 1), e100 = prefetch_expected_load_s(g.pf, "even", 100);
    ck_assert(e1 >= 0 && e100 >= e1);
    prefetch_stats st;
    prefetch_get_stats(g.pf, &st);
    ck_assert_uint_eq(st.traced_requests, 3);
    rig_stop(&g);
    pred_trace t;
    pred_trace_init(&t);
    emoe_err err = {0};
    ck_assert_msg(pred_trace_load(&t, tp, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(t.n_reqs, 3);
    ck_assert_int_eq(t.n_layers, 4);
    ck_assert_int_eq(t.n_experts, 16);
    for (int k = 0; k < 3; k++) {
        const pred_trace_req *q = &t.reqs[k];
        ck_assert_str_eq(q->task, task_of_case(k));
        /* every prompt token and every generated token but the last went through the engine */
        ck_assert_int_eq(q->n_tokens, n_prompt[k] + 15);
        ck_assert_int_eq(q->phase[0], PRED_PHASE_PREFILL);
        ck_assert_int_eq(q->phase[q->n_tokens - 1], PRED_PHASE_DECODE);
        ck_assert_int_eq(q->pos[q->n_tokens - 1], q->n_tokens - 1);
    }
    pred_trace_free(&t);
    unload();
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("prefetch");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_exact_queued_lookahead);
    tcase_add_test(tc, test_cancel_queued);
    tcase_add_test(tc, test_exact_visit_next_step);
    tcase_add_test(tc, test_exact_forecast);
    tcase_add_test(tc, test_read_error);
    tcase_add_test(tc, test_profile_errors);
    tcase_add_test(tc, test_profile_serving);
    tcase_add_test(tc, test_trace_and_estimate);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
