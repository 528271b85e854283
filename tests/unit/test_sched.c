/* test_sched.c — the scheduler against the real engine on tiny-qwen3-moe:
 * greedy outputs of concurrent, chunk-prefilled, continuously batched requests
 * equal the Hugging Face reference (greedy_16) and single-request runs;
 * cancellation at every stage frees the slot without disturbing others;
 * stop strings across token boundaries; the bounded queue. */
#include "tests/unit/testutil.h"
#include "tests/unit/fixture_cases.h"
#include "scheduler/sched.h"

#include <jansson.h>
#include <pthread.h>
#include <unistd.h>

#define MAXC 8
static int n_cases;
static int32_t prompts[MAXC][32];
static int n_prompt[MAXC];
static int32_t greedy[MAXC][16];
static eng_engine *eng;

static int load_fixture(void)
{
    const char *sh = tu_shared_dir();
    if (!sh) return 0;
    char mdir[8192];
    snprintf(mdir, sizeof mdir, "%s/fixtures/models/tiny-qwen3-moe", sh);
    n_cases = fc_load_qwen3_cases(sh, MAXC, prompts, n_prompt, greedy);
    emoe_err err = {0};
    eng_open_opts o = {.n_threads = 1, .max_ctx = 512};
    ck_assert_msg(eng_open(mdir, &o, &eng, &err) == EMOE_OK, "%s", err.msg);
    return 1;
}

/* Text ops for tests: token id -> "<id>," so stop strings can span tokens. */
static int fake_push(void *ctx, void *st, int32_t id, sched_buf *out)
{
    (void)ctx; (void)st;
    char b[32];
    int n = snprintf(b, sizeof b, "%d,", (int)id);
    return sched_buf_append(out, b, (size_t)n);
}

static sched *start(int max_running, int max_queued, int max_batch, int chunk)
{
    sched_opts o = {0};
    o.limits = (sched_limits){max_running, max_queued, max_batch, chunk};
    o.text.push = fake_push;
    sched *s = NULL;
    emoe_err err = {0};
    ck_assert_msg(sched_init(eng, &o, &s, &err) == EMOE_OK, "%s", err.msg);
    return s;
}

static sched_req *submit(sched *s, int c, int max_tokens, const char *stop)
{
    sched_req_params p = {0};
    p.prompt = prompts[c];
    p.n_prompt = n_prompt[c];
    p.max_tokens = max_tokens;
    eng_sampling_default(&p.sampling);
    p.ignore_eos = 1;
    p.stop[0] = stop;
    p.id = (uint64_t)c;
    sched_req *r = NULL;
    emoe_err err = {0};
    ck_assert_msg(sched_submit(s, &p, &r, &err) == EMOE_OK, "%s", err.msg);
    return r;
}

/* Waits (bounded) for the finish; returns the reason and collects text. */
static sched_finish wait_done(sched_req *r, char *text, size_t cap)
{
    size_t used = 0;
    if (text) text[0] = 0;
    double t0 = emoe_now();
    while (emoe_now() - t0 < 60) {
        sched_update u;
        sched_req_poll(r, 0.2, &u);
        if (u.text && text && used + u.text_len < cap) {
            memcpy(text + used, u.text, u.text_len);
            used += u.text_len;
            text[used] = 0;
        }
        free(u.text);
        if (u.finished) return u.finish;
    }
    ck_abort_msg("request did not finish in 60 s");
    return SCHED_FINISH_NONE;
}

static void wait_idle(sched *s)
{
    double t0 = emoe_now();
    sched_stats st;
    do {
        sched_get_stats(s, &st);
        if (st.running == 0 && st.waiting == 0) return;
        usleep(10000);
    } while (emoe_now() - t0 < 10);
    ck_abort_msg("scheduler did not become idle: %d running, %d waiting", st.running, st.waiting);
}

START_TEST(batched_greedy_matches_reference)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    /* Small budgets force chunked prefill mixed with decodes and a queue. */
    sched *s = start(3, 16, 5, 2);
    sched_req *r[MAXC * 2];
    int n = 0;
    for (int rep = 0; rep < 2; rep++)
        for (int c = 0; c < n_cases; c++) r[n++] = submit(s, c, 16, NULL);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(wait_done(r[i], NULL, 0), SCHED_FINISH_LENGTH);
        int32_t got[32];
        for (int k = 0; k < 32; k++) got[k] = -7; /* poison */
        ck_assert_int_eq(sched_req_tokens(r[i], got, 32), 16);
        int c = i % n_cases;
        for (int k = 0; k < 16; k++)
            ck_assert_msg(got[k] == greedy[c][k], "request %d (case %d) token %d: %d != reference %d", i, c, k,
                          got[k], greedy[c][k]);
        sched_req_release(r[i]);
    }
    sched_stats st;
    sched_get_stats(s, &st);
    ck_assert_int_eq(st.running, 0);
    ck_assert_uint_eq(st.generation_tokens, (uint64_t)n * 16);
    ck_assert_uint_eq(st.ttft.n, (uint64_t)n);
    sched_free(s);
    /* Single requests one at a time give the same tokens. */
    s = start(1, 4, 64, 64);
    for (int c = 0; c < n_cases; c++) {
        sched_req *q = submit(s, c, 16, NULL);
        wait_done(q, NULL, 0);
        int32_t got[16];
        ck_assert_int_eq(sched_req_tokens(q, got, 16), 16);
        ck_assert(!memcmp(got, greedy[c], sizeof got));
        sched_req_release(q);
    }
    sched_free(s);
    eng_free(eng);
}
END_TEST

START_TEST(stop_string_across_tokens)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    sched *s = start(4, 16, 64, 16);
    char stop[64], want[128], text[4096];
    /* Stop at the boundary between tokens 2 and 3: ",<t3>" spans two tokens' text. */
    snprintf(stop, sizeof stop, ",%d", (int)greedy[0][2]);
    snprintf(want, sizeof want, "%d,%d", (int)greedy[0][0], (int)greedy[0][1]);
    sched_req *r = submit(s, 0, 16, stop);
    ck_assert_int_eq(wait_done(r, text, sizeof text), SCHED_FINISH_STOP);
    ck_assert_str_eq(text, want);
    int32_t got[16];
    ck_assert_int_eq(sched_req_tokens(r, got, 16), 3);
    sched_req_release(r);
    /* max_tokens finishes as length with all text. */
    r = submit(s, 1, 2, "no-such-stop");
    ck_assert_int_eq(wait_done(r, text, sizeof text), SCHED_FINISH_LENGTH);
    snprintf(want, sizeof want, "%d,%d,", (int)greedy[1][0], (int)greedy[1][1]);
    ck_assert_str_eq(text, want);
    sched_req_release(r);
    sched_free(s);
    eng_free(eng);
}
END_TEST

START_TEST(cancel_every_stage)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    sched *s = start(2, 8, 8, 1);
    /* Two long decodes occupy both slots; a third waits in the queue. */
    sched_req *a = submit(s, 0, 400, NULL);
    sched_req *b = submit(s, 1, 16, NULL);
    sched_req *q = submit(s, 2, 16, NULL);
    /* Cancel while queued. */
    sched_req_cancel(q);
    sched_update u;
    sched_req_poll(q, 1.0, &u);
    free(u.text);
    ck_assert(u.finished && u.finish == SCHED_FINISH_CANCELLED);
    ck_assert_int_eq(u.started, 0);
    sched_req_release(q);
    /* Cancel a while decoding: wait until it has tokens. */
    double t0 = emoe_now();
    int32_t tmp[4];
    while (sched_req_tokens(a, tmp, 4) < 3 && emoe_now() - t0 < 30) usleep(2000);
    ck_assert_int_ge(sched_req_tokens(a, tmp, 4), 3);
    sched_req_cancel(a);
    ck_assert_int_eq(wait_done(a, NULL, 0), SCHED_FINISH_CANCELLED);
    sched_req_release(a);
    /* b is unharmed. */
    ck_assert_int_eq(wait_done(b, NULL, 0), SCHED_FINISH_LENGTH);
    int32_t got[16];
    ck_assert_int_eq(sched_req_tokens(b, got, 16), 16);
    ck_assert(!memcmp(got, greedy[1], sizeof got));
    sched_req_release(b);
    /* Cancel during prefill: prefill_chunk 1 makes a long prompt take steps. */
    sched_req *c = submit(s, 3, 16, NULL);
    sched_req_cancel(c);
    ck_assert_int_eq(wait_done(c, NULL, 0), SCHED_FINISH_CANCELLED);
    sched_req_release(c);
    /* Release without cancel after finishing, and release of a running
     * request whose submitter gave up (cancel + release right away). */
    sched_req *d = submit(s, 0, 300, NULL);
    sched_req_cancel(d);
    sched_req_release(d);
    wait_idle(s);
    sched_stats st;
    sched_get_stats(s, &st);
    ck_assert_int_eq(st.running, 0);
    ck_assert_int_eq(st.waiting, 0);
    ck_assert_uint_ge(st.requests_finished[SCHED_FINISH_CANCELLED], 4);
    /* Still works afterwards. */
    sched_req *e = submit(s, 2, 16, NULL);
    wait_done(e, NULL, 0);
    ck_assert_int_eq(sched_req_tokens(e, got, 16), 16);
    ck_assert(!memcmp(got, greedy[2], sizeof got));
    sched_req_release(e);
    sched_free(s);
    eng_free(eng);
}
END_TEST

START_TEST(queue_bound_and_validation)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    sched *s = start(1, 1, 8, 8);
    sched_req *a = submit(s, 0, 200, NULL);
    /* Wait until a runs, then fill the single queue slot. */
    sched_update u;
    double t0 = emoe_now();
    do { sched_req_poll(a, 0.05, &u); free(u.text); } while (!u.started && emoe_now() - t0 < 10);
    sched_req *b = submit(s, 1, 4, NULL);
    sched_req_params p = {0};
    p.prompt = prompts[2];
    p.n_prompt = n_prompt[2];
    p.max_tokens = 4;
    eng_sampling_default(&p.sampling);
    sched_req *c = NULL;
    emoe_err err = {0};
    ck_assert_int_eq(sched_submit(s, &p, &c, &err), EMOE_EBUSY);
    ck_assert(strstr(err.msg, "queue") != NULL);
    /* Validation. */
    p.max_tokens = 600;
    ck_assert_int_eq(sched_submit(s, &p, &c, &err), EMOE_EINVAL);
    ck_assert(strstr(err.msg, "context") != NULL);
    int32_t bad[2] = {5, 151936};
    p.prompt = bad;
    p.n_prompt = 2;
    p.max_tokens = 4;
    ck_assert_int_eq(sched_submit(s, &p, &c, &err), EMOE_EINVAL);
    ck_assert(strstr(err.msg, "prompt[1]") != NULL);
    sched_req_cancel(a);
    sched_req_release(a);
    wait_done(b, NULL, 0);
    sched_req_release(b);
    /* Draining refuses new work. */
    sched_drain(s);
    p.prompt = prompts[0];
    p.n_prompt = n_prompt[0];
    ck_assert_int_eq(sched_submit(s, &p, &c, &err), EMOE_EBUSY);
    sched_free(s);
    eng_free(eng);
}
END_TEST

/* A custom policy (fewest max_tokens first) decides the admission order. */
static int shortest_pick(void *self, sched_req *const *waiting, int n)
{
    (void)self;
    int best = -1;
    for (int i = 0; i < n; i++)
        if (best < 0 || sched_req_max_tokens(waiting[i]) < sched_req_max_tokens(waiting[best])) best = i;
    return best;
}

START_TEST(policy_decides_admission)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    sched_policy pol = {"shortest", shortest_pick, NULL};
    sched_opts o = {0};
    o.limits = (sched_limits){1, 16, 64, 64};
    o.policy = &pol;
    o.text.push = fake_push;
    sched *s = NULL;
    emoe_err err = {0};
    ck_assert(sched_init(eng, &o, &s, &err) == EMOE_OK);
    /* A occupies the only slot; B (30 tokens), C (5), D (12) queue up. */
    sched_req *a = submit(s, 0, 60, NULL);
    sched_update u;
    double t0 = emoe_now();
    do { sched_req_poll(a, 0.05, &u); free(u.text); } while (!u.started && emoe_now() - t0 < 10);
    sched_req *b = submit(s, 1, 30, NULL), *c = submit(s, 2, 5, "x"), *d = submit(s, 3, 12, NULL);
    ck_assert_int_eq(sched_req_max_tokens(c), 5);
    ck_assert_int_eq(sched_req_n_prompt(b), n_prompt[1]);
    ck_assert(sched_req_arrival(b) <= sched_req_arrival(c));
    ck_assert_str_eq(sched_req_task(b), "");
    sched_req *order[3] = {b, c, d};
    double started[3] = {0, 0, 0};
    t0 = emoe_now();
    while ((started[0] == 0 || started[1] == 0 || started[2] == 0) && emoe_now() - t0 < 30) {
        for (int i = 0; i < 3; i++) {
            if (started[i] > 0) continue;
            sched_req_poll(order[i], 0, &u);
            free(u.text);
            if (u.started) started[i] = emoe_now();
        }
        usleep(500);
    }
    /* C (5) before D (12) before B (30), although B arrived first. */
    ck_assert(started[1] > 0 && started[2] > 0 && started[0] > 0);
    ck_assert(started[1] <= started[2] && started[2] <= started[0]);
    sched_req *all[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++) { wait_done(all[i], NULL, 0); sched_req_release(all[i]); }
    sched_free(s);
    eng_free(eng);
}
END_TEST


/* Run-loop hooks: on_admit before a request's first routing, on_finish once
 * after its last, on_step_end after every step; all of them and the engine's
 * routing callback on the one run-loop thread (where serve keeps the
 * predictor). */
enum { EV_ADMIT = 1, EV_FINISH, EV_STEP, EV_ROUTE };
typedef struct hook_ev { int kind; uint64_t id; pthread_t th; } hook_ev;
typedef struct hook_log {
    pthread_mutex_t mu;
    hook_ev ev[20000];
    int n, overflow;
} hook_log;

static void hlog(hook_log *h, int kind, uint64_t id)
{
    pthread_mutex_lock(&h->mu);
    if (h->n < (int)(sizeof h->ev / sizeof h->ev[0])) h->ev[h->n++] = (hook_ev){kind, id, pthread_self()};
    else h->overflow = 1;
    pthread_mutex_unlock(&h->mu);
}
static void h_admit(void *u, sched_req *r) { hlog(u, EV_ADMIT, sched_req_id(r)); }
static void h_finish(void *u, sched_req *r) { hlog(u, EV_FINISH, sched_req_id(r)); }
static void h_step(void *u) { hlog(u, EV_STEP, 0); }
static void h_route(void *u, void *tag, int pos, int layer, const int *ex, const float *w, int k)
{
    (void)pos; (void)ex; (void)w; (void)k;
    if (layer == 0) hlog(u, EV_ROUTE, sched_req_id(tag));
}

START_TEST(run_loop_hooks)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    static hook_log h;
    memset(&h, 0, sizeof h);
    pthread_mutex_init(&h.mu, NULL);
    sched_opts o = {0};
    o.limits = (sched_limits){2, 16, 8, 2}; /* prefill in chunks of 2: several steps */
    o.text.push = fake_push;
    o.on_admit = h_admit;
    o.on_finish = h_finish;
    o.on_step_end = h_step;
    o.hook_user = &h;
    eng_set_routing_cb(eng, h_route, &h);
    sched *s = NULL;
    emoe_err err = {0};
    ck_assert(sched_init(eng, &o, &s, &err) == EMOE_OK);
    int nr = n_cases < 4 ? n_cases : 4;
    ck_assert_int_ge(nr, 1);
    sched_req *r[4] = {NULL};
    for (int i = 0; i < nr; i++) r[i] = submit(s, i, 6, NULL);
    sched_req_cancel(r[nr - 1]); /* cancelled early: may or may not have been admitted */
    for (int i = 0; i < nr; i++) {
        sched_finish f = wait_done(r[i], NULL, 0);
        ck_assert(i == nr - 1 || f == SCHED_FINISH_LENGTH);
        sched_req_release(r[i]);
    }
    wait_idle(s);
    sched_free(s);
    eng_set_routing_cb(eng, NULL, NULL);
    ck_assert(!h.overflow);
    ck_assert_int_gt(h.n, 0);
    pthread_t loop = h.ev[0].th;
    ck_assert(!pthread_equal(loop, pthread_self()));
    int admitted[4] = {0}, finished[4] = {0}, steps = 0, routes = 0;
    for (int i = 0; i < h.n; i++) {
        hook_ev *e = &h.ev[i];
        ck_assert_msg(pthread_equal(e->th, loop), "event %d (kind %d) off the run-loop thread", i, e->kind);
        int id = (int)e->id;
        if (e->kind != EV_STEP) ck_assert(id >= 0 && id < nr);
        switch (e->kind) {
        case EV_ADMIT: ck_assert(!admitted[id] && !finished[id]); admitted[id] = 1; break;
        case EV_FINISH: ck_assert(admitted[id] && !finished[id]); finished[id] = 1; break;
        case EV_ROUTE: ck_assert(admitted[id] && !finished[id]); routes++; break;
        case EV_STEP: steps++; break;
        }
    }
    for (int i = 0; i < nr - 1; i++) ck_assert(admitted[i] && finished[i]);
    ck_assert_int_eq(admitted[nr - 1], finished[nr - 1]);
    /* Every routed token's step is closed by on_step_end. */
    int last_route = -1, last_step = -1;
    for (int i = 0; i < h.n; i++) {
        if (h.ev[i].kind == EV_ROUTE) last_route = i;
        if (h.ev[i].kind == EV_STEP) last_step = i;
    }
    ck_assert_int_gt(last_step, last_route);
    /* request 0 alone needs ceil(n_prompt/2) prefill steps + 5 decode steps */
    ck_assert_int_ge(steps, (n_prompt[0] + 1) / 2 + 5);
    ck_assert_int_gt(routes, 0);
    pthread_mutex_destroy(&h.mu);
    eng_free(eng);
}
END_TEST

static Suite *sched_suite(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, batched_greedy_matches_reference);
    tcase_add_test(tc, stop_string_across_tokens);
    tcase_add_test(tc, cancel_every_stage);
    tcase_add_test(tc, queue_bound_and_validation);
    tcase_add_test(tc, policy_decides_admission);
    tcase_add_test(tc, run_loop_hooks);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(sched_suite)
