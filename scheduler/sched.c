/*
 * sched.c — bounded queue, run loop with continuous batching, per-request
 * channels. See sched.h.
 *
 * Locking: one mutex (s->mu) guards the queue, the running set, every
 * request's shared fields (refs, cancel, produced text/tokens, finish) and
 * the stats. Fields marked "loop" in struct sched_req are touched only by the
 * run-loop thread and need no lock. The engine is called without the lock, so
 * HTTP threads are never blocked behind a step.
 */
#include "scheduler/sched.h"
#include "scheduler/textstream.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { REQ_QUEUED = 0, REQ_RUNNING, REQ_DONE };

const double sched_hist_bounds[SCHED_HIST_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
};

struct sched_req {
    sched *s;
    uint64_t id;
    int32_t *prompt;
    int n_prompt;
    int max_tokens;
    eng_sampling sampling;
    int ignore_eos;
    double deadline;
    char task[64];
    char *stop[SCHED_MAX_STOP];
    /* SLO (fixed at submit) */
    double slo_ttft_s, slo_tpot_s;
    int priority;
    int best_effort;      /* SLO unattainable at submit and accepted without a deadline */
    int pred_out;         /* predicted output tokens */
    double load_s;        /* expected expert-load time */
    double predicted_ttft;
    /* loop */
    int paused;           /* preempted: KV kept, left out of steps (also read under s->mu) */
    unsigned long long last_dec_step;
    /* issue 15: logprobs, logit_bias, n > 1 forks, constrained decoding */
    int top_n;           /* -1 = no logprobs */
    int32_t *bias_ids;
    float *bias;
    int n_bias;
    sched_req *fork_of;  /* holds a reference */
    int forked;          /* loop: 1 once the KV cache came from fork_of */
    const sched_constraint_ops *cons_ops;
    void *cons;
    float *gen_lp;       /* shared: per generated token (cap_gen) */
    int prompt_lp_on;
    float *prompt_lp;    /* loop until prefilled, then read-only: n_prompt */
    int32_t *prompt_top_ids; /* n_prompt * top_n */
    float *prompt_top_lp;
    float *chunk_logits; /* loop: SCHED_PROMPT_LP_CHUNK * vocab */
    int32_t *top_ids;    /* shared: cap_gen * top_n */
    float *top_lp;
    /* loop */
    eng_seq *seq;
    eng_sampler *sampler;
    void *detok;
    sched_textstream ts;
    int ts_ready;
    int n_prefilled;
    int32_t last_token;
    float *logits;
    int set_up;
    /* shared, under s->mu */
    int state;
    int refs;
    int cancel;
    sched_buf text;      /* everything produced */
    size_t text_read;    /* consumer position */
    int32_t *gen;
    int n_gen, cap_gen, n_gen_read;
    int finished;
    sched_finish finish;
    emoe_status error;
    char error_msg[256];
    pthread_cond_t cv;
    double t_submit, t_start, t_last, t_first;
    int n_preempted;
};

struct sched {
    eng_engine *e;
    const eng_model_desc *desc;
    int vocab;
    sched_opts opts;
    sched_policy policy;
    int slo;              /* the policy is the SLO planner (no pick) */
    sched_limits limits;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int thread_started;
    int stop;
    int draining;
    sched_req **waiting;  /* FIFO order of arrival */
    int n_waiting, cap_waiting;
    sched_req **running;  /* admission order; includes paused requests */
    int n_running, cap_running;
    int n_paused;
    sched_stats stats;
    /* slo policy scratch (loop thread, under s->mu) */
    slo_view *views;
    sched_req **view_reqs;
    int *plan_buf;
    int cap_views;
    slo_plan plan;
};

static void *sched_run_loop(void *arg);
static int views_reserve(sched *s, int n);
static void view_of(const sched_req *r, slo_view *v);

const char *sched_finish_name(sched_finish f)
{
    switch (f) {
    case SCHED_FINISH_NONE: return "none";
    case SCHED_FINISH_STOP: return "stop";
    case SCHED_FINISH_LENGTH: return "length";
    case SCHED_FINISH_CANCELLED: return "cancelled";
    case SCHED_FINISH_ERROR: return "error";
    }
    return "?";
}

static int fifo_pick(void *self, sched_req *const *waiting, int n)
{
    (void)self;
    (void)waiting;
    return n > 0 ? 0 : -1;
}

static const sched_policy fifo_policy = {"fifo", fifo_pick, NULL};
static const sched_policy slo_policy = {"slo", NULL, NULL};

const sched_policy *sched_policy_fifo(void) { return &fifo_policy; }
const sched_policy *sched_policy_slo(void) { return &slo_policy; }

const char *sched_reject_name(sched_reject_reason r)
{
    switch (r) {
    case SCHED_REJECT_NONE: return "none";
    case SCHED_REJECT_QUEUE_FULL: return "queue_full";
    case SCHED_REJECT_SLO: return "slo_unattainable";
    case SCHED_REJECT_DRAINING: return "shutting_down";
    case SCHED_REJECT_N: break;
    }
    return "?";
}

uint64_t sched_req_id(const sched_req *r) { return r->id; }
const char *sched_req_task(const sched_req *r) { return r->task; }
uint64_t sched_req_lowbit(const sched_req *r) { return r->seq ? eng_seq_lowbit(r->seq) : 0; }
double sched_req_arrival(const sched_req *r) { return r->t_submit; }
int sched_req_n_prompt(const sched_req *r) { return r->n_prompt; }
int sched_req_max_tokens(const sched_req *r) { return r->max_tokens; }
double sched_req_deadline(const sched_req *r) { return r->deadline; }
const int32_t *sched_req_prompt(const sched_req *r) { return r->prompt; }
int sched_req_priority(const sched_req *r) { return r->priority; }
double sched_req_slo_ttft(const sched_req *r) { return r->slo_ttft_s; }
double sched_req_slo_tpot(const sched_req *r) { return r->slo_tpot_s; }
void sched_req_set_load_s_locked(sched_req *r, double load_s)
{
    r->load_s = load_s > 0 && load_s < 1e6 ? load_s : 0;
    sched_est_set_load(&r->s->stats.est, r->task, r->load_s); /* what the next request of the task starts from */
}

/* The SLO counters of a task; the last slot takes every task beyond the
 * table. Caller holds s->mu. */
static sched_slo_task *slo_task_locked(sched *s, const char *task)
{
    sched_stats *st = &s->stats;
    for (int i = 0; i < st->n_slo_tasks; i++)
        if (!strcmp(st->slo_tasks[i].name, task)) return &st->slo_tasks[i];
    if (st->n_slo_tasks < SCHED_EST_TASKS - 1) {
        sched_slo_task *t = &st->slo_tasks[st->n_slo_tasks++];
        snprintf(t->name, sizeof t->name, "%s", task);
        return t;
    }
    sched_slo_task *t = &st->slo_tasks[SCHED_EST_TASKS - 1];
    if (st->n_slo_tasks < SCHED_EST_TASKS) {
        st->n_slo_tasks = SCHED_EST_TASKS;
        snprintf(t->name, sizeof t->name, "_other");
    }
    return t;
}

/* A request that ends without its SLOs measured (rejected at submit,
 * cancelled or failed before finishing) missed every SLO it had that is not
 * counted yet: the TTFT one before its first token, the TPOT one always
 * (counted only when a request finishes normally). Caller holds s->mu. */
static void slo_missed_locked(sched *s, const sched_req *r)
{
    if (r->slo_ttft_s > 0 && r->n_gen == 0) slo_task_locked(s, r->task)->ttft_missed++;
    if (r->slo_tpot_s > 0) slo_task_locked(s, r->task)->tpot_missed++;
}

static void hist_add(sched_hist *h, double v)
{
    int b = 0;
    while (b < SCHED_HIST_BUCKETS && v > sched_hist_bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->n++;
}

static void req_free(sched_req *r)
{
    if (!r) return;
    free(r->prompt);
    for (int i = 0; i < SCHED_MAX_STOP; i++) free(r->stop[i]);
    sched_buf_free(&r->text);
    free(r->gen);
    free(r->bias_ids);
    free(r->bias);
    free(r->gen_lp);
    free(r->top_ids);
    free(r->top_lp);
    free(r->prompt_lp);
    free(r->prompt_top_ids);
    free(r->prompt_top_lp);
    free(r->chunk_logits);
    if (r->cons && r->cons_ops && r->cons_ops->free) r->cons_ops->free(r->cons);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* Drops one reference; the caller holds s->mu. Returns 1 if r must be freed
 * (after unlocking). */
static int req_unref_locked(sched_req *r)
{
    return --r->refs == 0;
}

/* Frees the request's engine-side resources. Loop thread (or after it stopped). */
static void req_teardown(sched *s, sched_req *r)
{
    if (r->seq) eng_seq_free(r->seq);
    r->seq = NULL;
    eng_sampler_free(r->sampler);
    r->sampler = NULL;
    if (r->detok && s->opts.text.free_state) s->opts.text.free_state(s->opts.text.ctx, r->detok);
    r->detok = NULL;
    if (r->ts_ready) sched_ts_free(&r->ts);
    r->ts_ready = 0;
    free(r->logits);
    r->logits = NULL;
}

static void remove_at(sched_req **arr, int *n, int i)
{
    memmove(arr + i, arr + i + 1, (size_t)(*n - i - 1) * sizeof *arr);
    (*n)--;
}

/* Marks r finished; caller holds s->mu and has already removed it from the
 * waiting/running arrays. Returns 1 if it must be freed. */
static int finish_locked(sched *s, sched_req *r, sched_finish f, emoe_status st, const char *msg)
{
    r->state = REQ_DONE;
    r->finished = 1;
    r->finish = f;
    r->error = st;
    if (msg) snprintf(r->error_msg, sizeof r->error_msg, "%s", msg);
    s->stats.requests_finished[f]++;
    if (r->fork_of) {
        sched_req *parent = r->fork_of;
        r->fork_of = NULL;
        if (req_unref_locked(parent)) req_free(parent); /* req_free takes no lock */
    }
    if (f != SCHED_FINISH_CANCELLED && r->t_submit > 0) hist_add(&s->stats.e2e, emoe_now() - r->t_submit);
    if (f == SCHED_FINISH_CANCELLED || f == SCHED_FINISH_ERROR) slo_missed_locked(s, r);
    else if (r->slo_ttft_s > 0 && r->n_gen == 0) slo_task_locked(s, r->task)->ttft_missed++; /* expired before a token */
    if ((f == SCHED_FINISH_STOP || f == SCHED_FINISH_LENGTH) && r->n_gen > 0) {
        sched_est_finished(&s->stats.est, r->task, r->n_gen);
        if (r->slo_tpot_s > 0 && r->n_gen >= 2) {
            double tpot = (r->t_last - r->t_first) / (double)(r->n_gen - 1);
            sched_slo_task *t = slo_task_locked(s, r->task);
            if (tpot <= r->slo_tpot_s) t->tpot_met++;
            else t->tpot_missed++;
        }
    }
    pthread_cond_broadcast(&r->cv);
    return req_unref_locked(r);
}

emoe_status sched_init(eng_engine *e, const sched_opts *opts, sched **out, emoe_err *err)
{
    *out = NULL;
    sched *s = calloc(1, sizeof *s);
    if (!s) return emoe_errf(err, EMOE_ENOMEM, "scheduler: out of memory");
    s->e = e;
    s->desc = eng_desc(e);
    s->vocab = s->desc->vocab;
    s->opts = *opts;
    s->policy = opts->policy ? *opts->policy : fifo_policy;
    s->slo = s->policy.pick == NULL;
    s->limits = opts->limits;
    sched_est_init(&s->stats.est);
    if (s->limits.max_running < 1 || s->limits.max_batch_tokens < s->limits.max_running ||
        s->limits.prefill_chunk < 1 || s->limits.max_queued < 0) {
        free(s);
        return emoe_errf(err, EMOE_EINVAL, "scheduler: bad limits (max_running %d, max_batch_tokens %d, prefill_chunk %d)",
                         opts->limits.max_running, opts->limits.max_batch_tokens, opts->limits.prefill_chunk);
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = s;
    if (pthread_create(&s->thread, NULL, sched_run_loop, s) != 0) {
        sched_free(s);
        *out = NULL;
        return emoe_errf(err, EMOE_ENOMEM, "scheduler: cannot start the run loop thread");
    }
    s->thread_started = 1;
    return EMOE_OK;
}

void sched_free(sched *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started) pthread_join(s->thread, NULL);
    /* The loop is gone: finish whatever is left. */
    pthread_mutex_lock(&s->mu);
    while (s->n_running) {
        sched_req *r = s->running[0];
        remove_at(s->running, &s->n_running, 0);
        req_teardown(s, r);
        if (finish_locked(s, r, SCHED_FINISH_CANCELLED, EMOE_ECANCEL, "server shutting down")) req_free(r);
    }
    while (s->n_waiting) {
        sched_req *r = s->waiting[0];
        remove_at(s->waiting, &s->n_waiting, 0);
        if (finish_locked(s, r, SCHED_FINISH_CANCELLED, EMOE_ECANCEL, "server shutting down")) req_free(r);
    }
    pthread_mutex_unlock(&s->mu);
    free(s->waiting);
    free(s->running);
    free(s->views);
    free(s->view_reqs);
    free(s->plan_buf);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void sched_set_limits(sched *s, const sched_limits *l)
{
    if (l->max_running < 1 || l->max_batch_tokens < l->max_running || l->prefill_chunk < 1 || l->max_queued < 0)
        return;
    pthread_mutex_lock(&s->mu);
    s->limits = *l;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int grow(sched_req ***arr, int *cap, int need)
{
    if (need <= *cap) return 0;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    sched_req **p = realloc(*arr, (size_t)nc * sizeof *p);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

emoe_status sched_submit(sched *s, const sched_req_params *p, sched_req **out, emoe_err *err)
{
    *out = NULL;
    int max_ctx = eng_max_ctx(s->e);
    if (p->n_prompt < 1) return emoe_errf(err, EMOE_EINVAL, "prompt: must have at least one token");
    if (p->max_tokens < 1) return emoe_errf(err, EMOE_EINVAL, "max_tokens: must be at least 1");
    if ((int64_t)p->n_prompt + p->max_tokens > max_ctx)
        return emoe_errf(err, EMOE_EINVAL, "context length is %d tokens; the prompt has %d and max_tokens is %d",
                         max_ctx, p->n_prompt, p->max_tokens);
    for (int i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= s->vocab)
            return emoe_errf(err, EMOE_EINVAL, "prompt[%d]: token id %d is outside the vocabulary [0, %d)", i,
                             (int)p->prompt[i], s->vocab);
    emoe_status st = eng_sampling_check(&p->sampling, err);
    if (st != EMOE_OK) return st;
    if (!(p->slo_ttft_s >= 0) || !(p->slo_tpot_s >= 0) || p->slo_ttft_s > 1e6 || p->slo_tpot_s > 1e6)
        return emoe_errf(err, EMOE_EINVAL, "slo: must be between 0 and 1e6 seconds");
    if (p->reject) memset(p->reject, 0, sizeof *p->reject);
    if (p->top_logprobs < 0 || p->top_logprobs > SCHED_MAX_TOP_LOGPROBS)
        return emoe_errf(err, EMOE_EINVAL, "logprobs: at most %d top log-probabilities", SCHED_MAX_TOP_LOGPROBS);
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] < 0 || p->bias_ids[i] >= s->vocab)
            return emoe_errf(err, EMOE_EINVAL, "logit_bias: token id %d is outside the vocabulary [0, %d)",
                             (int)p->bias_ids[i], s->vocab);

    sched_req *r = calloc(1, sizeof *r);
    if (!r) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    r->s = s;
    r->id = p->id;
    r->prompt = malloc((size_t)p->n_prompt * sizeof *r->prompt);
    if (!r->prompt) { free(r); return emoe_errf(err, EMOE_ENOMEM, "out of memory"); }
    memcpy(r->prompt, p->prompt, (size_t)p->n_prompt * sizeof *r->prompt);
    r->n_prompt = p->n_prompt;
    r->max_tokens = p->max_tokens;
    r->sampling = p->sampling;
    r->ignore_eos = p->ignore_eos;
    r->deadline = p->deadline;
    snprintf(r->task, sizeof r->task, "%s", p->task ? p->task : "");
    r->top_n = p->logprobs ? p->top_logprobs : -1;
    r->prompt_lp_on = p->logprobs && p->prompt_logprobs;
    if (p->n_bias > 0) {
        r->bias_ids = malloc((size_t)p->n_bias * sizeof *r->bias_ids);
        r->bias = malloc((size_t)p->n_bias * sizeof *r->bias);
        if (!r->bias_ids || !r->bias) {
            free(r->bias_ids);
            free(r->bias);
            free(r->prompt);
            free(r);
            return emoe_errf(err, EMOE_ENOMEM, "out of memory");
        }
        memcpy(r->bias_ids, p->bias_ids, (size_t)p->n_bias * sizeof *r->bias_ids);
        memcpy(r->bias, p->bias, (size_t)p->n_bias * sizeof *r->bias);
        r->n_bias = p->n_bias;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0, k = 0; i < SCHED_MAX_STOP; i++)
        if (p->stop[i] && p->stop[i][0]) {
            r->stop[k] = strdup(p->stop[i]);
            if (!r->stop[k++]) { req_free(r); return emoe_errf(err, EMOE_ENOMEM, "out of memory"); }
        }
    r->refs = 2; /* submitter + loop */
    r->slo_ttft_s = p->slo_ttft_s;
    r->slo_tpot_s = p->slo_tpot_s;
    r->priority = p->priority;
    if (s->opts.expected_load_s) {
        double l = s->opts.expected_load_s(s->opts.hook_user, r);
        r->load_s = l > 0 && l < 1e6 ? l : 0;
    }
    r->t_submit = emoe_now();

    pthread_mutex_lock(&s->mu);
    if (s->draining || s->stop) {
        slo_missed_locked(s, r);
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        if (p->reject) p->reject->reason = SCHED_REJECT_DRAINING;
        return emoe_errf(err, EMOE_EBUSY, "the server is shutting down");
    }
    if (s->n_waiting >= s->limits.max_queued && s->n_running - s->n_paused >= s->limits.max_running) {
        s->stats.requests_rejected++;
        s->stats.rejected_by[SCHED_REJECT_QUEUE_FULL]++;
        slo_missed_locked(s, r);
        int q = s->n_waiting;
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        if (p->reject) *p->reject = (sched_reject){SCHED_REJECT_QUEUE_FULL, 1, 0};
        return emoe_errf(err, EMOE_EBUSY, "the queue is full (%d waiting); retry later", q);
    }
    r->pred_out = sched_est_out_tokens(&s->stats.est, r->task, p->out_tokens_prior, r->max_tokens);
    /* Without a submit-time estimator the run loop's on_queue sets load_s
     * later; until then (and for admission) take the task's last estimate. */
    if (!s->opts.expected_load_s) r->load_s = sched_est_load(&s->stats.est, r->task);
    s->stats.load_s_sum += r->load_s;
    s->stats.load_n++;
    {
        /* Admission control: the TTFT in the order the policy will run the
         * queue (the requests it would serve first, then this one), sharing
         * steps with the running decodes. */
        slo_est est;
        sched_est_get(&s->stats.est, &est);
        int rows = s->n_running - s->n_paused;
        if (rows > s->limits.max_running) rows = s->limits.max_running;
        slo_view v = {0};
        v.arrival = r->t_submit;
        v.n_prompt = r->n_prompt;
        v.pred_out = r->pred_out;
        v.max_out = r->max_tokens;
        v.load_s = r->load_s;
        v.ttft_deadline = r->slo_ttft_s > 0 ? r->t_submit + r->slo_ttft_s : 0;
        v.has_slo = r->slo_ttft_s > 0 || r->slo_tpot_s > 0;
        v.priority = r->priority;
        double wait = 0, pred = 0;
        int nq = s->n_running + s->n_waiting;
        slo_view *qv = s->slo && v.ttft_deadline > 0 ? malloc((size_t)(nq > 0 ? nq : 1) * sizeof *qv) : NULL;
        int queued = qv != NULL;
        if (qv) {
            for (int i = 0; i < s->n_running; i++) view_of(s->running[i], &qv[i]);
            for (int i = 0; i < s->n_waiting; i++) view_of(s->waiting[i], &qv[s->n_running + i]);
            slo_limits lim = {s->limits.max_running, s->limits.max_running, s->limits.prefill_chunk,
                              s->limits.max_batch_tokens};
            pred = slo_queue_ttft(qv, nq, &v, &est, &lim, r->t_submit, &wait);
            free(qv);
        }
        int ok = queued ? r->t_submit + pred <= v.ttft_deadline
                    : slo_attainable(&est, &v, r->t_submit, wait, rows, s->limits.prefill_chunk, &pred);
        r->predicted_ttft = pred;
        if (!ok && s->slo) {
            if (s->opts.on_unattainable == SCHED_UNATTAINABLE_REJECT) {
                s->stats.requests_rejected++;
                s->stats.rejected_by[SCHED_REJECT_SLO]++;
                slo_missed_locked(s, r);
                int n_queued = s->n_waiting + s->n_paused;
                pthread_mutex_unlock(&s->mu);
                double ttft_ms = r->slo_ttft_s * 1e3;
                req_free(r);
                if (p->reject) {
                    double ra = pred > 1 ? pred : 1;
                    *p->reject = (sched_reject){SCHED_REJECT_SLO, ra, pred};
                }
                return emoe_errf(err, EMOE_EBUSY,
                                 "the time-to-first-token SLO of %g ms cannot be met: the predicted time to first "
                                 "token is %.0f ms (%.0f ms until a slot is free, %d prompt tokens, %d running, "
                                 "%d queued)",
                                 ttft_ms, pred * 1e3, wait * 1e3, p->n_prompt, rows, n_queued);
            }
            r->best_effort = 1;
        }
        LOG_DEBUG("request %llu: task '%s' priority %d slo ttft %.0fms tpot %.0fms; predicted ttft %.1fms, output %d "
                  "tokens, expert load %.1fms%s",
                  (unsigned long long)r->id, r->task, r->priority, r->slo_ttft_s * 1e3, r->slo_tpot_s * 1e3, pred * 1e3,
                  r->pred_out, r->load_s * 1e3, r->best_effort ? " (unattainable: best effort)" : "");
    }
    if (grow(&s->waiting, &s->cap_waiting, s->n_waiting + 1)) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    }
    s->waiting[s->n_waiting++] = r;
    r->state = REQ_QUEUED;
    r->cons_ops = p->constraint_ops;
    r->cons = p->constraint_ops ? p->constraint : NULL;
    /* The parent stays allocated while this choice may fork it (released in
     * finish_locked); a finished parent makes the choice prefill itself. */
    if (p->fork_of && p->fork_of->n_prompt == p->n_prompt &&
        !memcmp(p->fork_of->prompt, p->prompt, (size_t)p->n_prompt * sizeof *p->prompt)) {
        p->fork_of->refs++;
        r->fork_of = p->fork_of;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *out = r;
    return EMOE_OK;
}

void sched_req_cancel(sched_req *r)
{
    if (!r) return;
    sched *s = r->s;
    int do_free = 0;
    pthread_mutex_lock(&s->mu);
    if (!r->finished) {
        r->cancel = 1;
        if (r->state == REQ_QUEUED) {
            for (int i = 0; i < s->n_waiting; i++)
                if (s->waiting[i] == r) { remove_at(s->waiting, &s->n_waiting, i); break; }
            do_free = finish_locked(s, r, SCHED_FINISH_CANCELLED, EMOE_ECANCEL, "cancelled");
        }
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (do_free) req_free(r);
}

void sched_req_release(sched_req *r)
{
    if (!r) return;
    sched *s = r->s;
    pthread_mutex_lock(&s->mu);
    int do_free = req_unref_locked(r);
    pthread_mutex_unlock(&s->mu);
    if (do_free) req_free(r);
}

static void abs_deadline(struct timespec *ts, double timeout_s)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    double t = (double)ts->tv_sec + (double)ts->tv_nsec * 1e-9 + timeout_s;
    ts->tv_sec = (time_t)t;
    ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) { ts->tv_sec++; ts->tv_nsec -= 1000000000L; }
}

int sched_req_poll(sched_req *r, double timeout_s, sched_update *u)
{
    sched *s = r->s;
    memset(u, 0, sizeof *u);
    pthread_mutex_lock(&s->mu);
    if (timeout_s > 0 && !r->finished && r->text_read == r->text.n && r->n_gen_read == r->n_gen) {
        struct timespec ts;
        abs_deadline(&ts, timeout_s);
        while (!r->finished && r->text_read == r->text.n && r->n_gen_read == r->n_gen)
            if (pthread_cond_timedwait(&r->cv, &s->mu, &ts) == ETIMEDOUT) break;
    }
    int news = 0;
    if (r->text.n > r->text_read) {
        u->text_len = r->text.n - r->text_read;
        u->text = malloc(u->text_len + 1);
        if (u->text) {
            memcpy(u->text, r->text.p + r->text_read, u->text_len);
            u->text[u->text_len] = 0;
            r->text_read = r->text.n;
            news = 1;
        } else {
            u->text_len = 0;
        }
    }
    if (r->n_gen > r->n_gen_read) {
        u->n_new_tokens = r->n_gen - r->n_gen_read;
        r->n_gen_read = r->n_gen;
        news = 1;
    }
    /* Finished only once all text was handed over. */
    if (r->finished && r->text_read == r->text.n) {
        u->finished = 1;
        u->finish = r->finish;
        u->error = r->error;
        snprintf(u->error_msg, sizeof u->error_msg, "%s", r->error_msg);
        news = 1;
    }
    u->n_prompt = r->n_prompt;
    u->n_gen = r->n_gen;
    u->started = r->t_start > 0;
    u->ttft_s = r->t_first > 0 ? r->t_first - r->t_submit : 0;
    u->predicted_ttft_s = r->predicted_ttft;
    u->preempted = r->n_preempted;
    pthread_mutex_unlock(&s->mu);
    return news;
}

int sched_req_tokens(sched_req *r, int32_t *out, int cap)
{
    sched *s = r->s;
    pthread_mutex_lock(&s->mu);
    int n = r->n_gen < cap ? r->n_gen : cap;
    if (n > 0) memcpy(out, r->gen, (size_t)n * sizeof *out);
    pthread_mutex_unlock(&s->mu);
    return n;
}

int sched_req_logprobs(sched_req *r, int from, int count, float *lp, int32_t *top_ids, float *top_lp)
{
    if (r->top_n < 0) return -1;
    sched *s = r->s;
    pthread_mutex_lock(&s->mu);
    int n = 0;
    if (from >= 0 && from < r->n_gen) {
        n = r->n_gen - from < count ? r->n_gen - from : count;
        if (n > 0) {
            memcpy(lp, r->gen_lp + from, (size_t)n * sizeof *lp);
            if (r->top_n > 0) {
                memcpy(top_ids, r->top_ids + (size_t)from * r->top_n, (size_t)n * r->top_n * sizeof *top_ids);
                memcpy(top_lp, r->top_lp + (size_t)from * r->top_n, (size_t)n * r->top_n * sizeof *top_lp);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return n < 0 ? 0 : n;
}

int sched_req_forked(const sched_req *r) { return r->forked == 1; }

int sched_req_prompt_logprobs(sched_req *r, float *lp, int32_t *top_ids, float *top_lp)
{
    if (!r->prompt_lp_on) return -1;
    sched *s = r->s;
    pthread_mutex_lock(&s->mu);
    int n = r->prompt_lp && r->n_prefilled >= r->n_prompt ? r->n_prompt : 0;
    if (n) {
        memcpy(lp, r->prompt_lp, (size_t)n * sizeof *lp);
        if (r->top_n > 0) {
            memcpy(top_ids, r->prompt_top_ids, (size_t)n * r->top_n * sizeof *top_ids);
            memcpy(top_lp, r->prompt_top_lp, (size_t)n * r->top_n * sizeof *top_lp);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sched_drain(sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    pthread_mutex_unlock(&s->mu);
}

void sched_cancel_all(sched *s)
{
    pthread_mutex_lock(&s->mu);
    sched_req *freeable[64];
    int nf = 0;
    while (s->n_waiting) {
        sched_req *r = s->waiting[0];
        remove_at(s->waiting, &s->n_waiting, 0);
        r->cancel = 1;
        if (finish_locked(s, r, SCHED_FINISH_CANCELLED, EMOE_ECANCEL, "server shutting down")) {
            if (nf < 64) freeable[nf++] = r;
            else req_free(r); /* still under the lock: req_free takes no lock */
        }
    }
    for (int i = 0; i < s->n_running; i++) s->running[i]->cancel = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < nf; i++) req_free(freeable[i]);
}

void sched_get_stats(sched *s, sched_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->stats;
    st->running = s->n_running;
    st->waiting = s->n_waiting;
    st->draining = s->draining;
    st->paused = s->n_paused;
    pthread_mutex_unlock(&s->mu);
}

/* ---- run loop ---- */

/* Allocates the engine-side state of a newly admitted request. Loop thread. */
static emoe_status req_setup(sched *s, sched_req *r, emoe_err *err)
{
    r->seq = eng_seq_new(s->e, r->n_prompt + r->max_tokens, err);
    if (!r->seq) return err->code ? err->code : EMOE_ENOMEM;
    eng_seq_set_tag(r->seq, r);
    r->sampler = eng_sampler_new(&r->sampling, s->vocab);
    r->logits = malloc((size_t)s->vocab * sizeof *r->logits);
    if (!r->sampler || !r->logits) return emoe_errf(err, EMOE_ENOMEM, "out of memory for request state");
    if (r->n_bias && eng_sampler_set_bias(r->sampler, r->bias_ids, r->bias, r->n_bias, err) != EMOE_OK)
        return err->code;
    if (r->prompt_lp_on) {
        size_t np = (size_t)r->n_prompt, tn = (size_t)(r->top_n > 0 ? r->top_n : 1);
        r->prompt_lp = malloc(np * sizeof *r->prompt_lp);
        r->prompt_top_ids = calloc(np * tn, sizeof *r->prompt_top_ids);
        r->prompt_top_lp = calloc(np * tn, sizeof *r->prompt_top_lp);
        r->chunk_logits = malloc((size_t)SCHED_PROMPT_LP_CHUNK * (size_t)s->vocab * sizeof *r->chunk_logits);
        if (!r->prompt_lp || !r->prompt_top_ids || !r->prompt_top_lp || !r->chunk_logits)
            return emoe_errf(err, EMOE_ENOMEM, "out of memory for prompt log-probabilities");
        r->prompt_lp[0] = NAN;
    }
    if (s->opts.text.new_state) {
        r->detok = s->opts.text.new_state(s->opts.text.ctx);
        if (!r->detok) return emoe_errf(err, EMOE_ENOMEM, "out of memory for the detokenizer");
    }
    if (sched_ts_init(&r->ts, (const char *const *)r->stop, SCHED_MAX_STOP))
        return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    r->ts_ready = 1;
    r->set_up = 1;
    return EMOE_OK;
}

static int is_eos(const sched *s, int t)
{
    for (int i = 0; i < s->desc->n_eos; i++)
        if (s->desc->eos_ids[i] == t) return 1;
    return 0;
}

/* Removes r from the running set and finishes it. Caller holds s->mu. */
static void end_running_locked(sched *s, sched_req *r, sched_finish f, emoe_status st, const char *msg)
{
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i] == r) { remove_at(s->running, &s->n_running, i); break; }
    if (r->paused) { r->paused = 0; s->n_paused--; }
    if (s->opts.on_finish) s->opts.on_finish(s->opts.hook_user, r);
    req_teardown(s, r);
    if (finish_locked(s, r, f, st, msg)) req_free(r);
}

/* End of a request's text: the detokenizer's held bytes, then the stream's. */
static void text_finish(sched *s, sched_req *r, sched_buf *out)
{
    if (!r->ts_ready) return;
    if (s->opts.text.flush && r->detok) {
        sched_buf bytes = {0};
        s->opts.text.flush(s->opts.text.ctx, r->detok, &bytes);
        if (bytes.n && sched_ts_push(&r->ts, bytes.p, bytes.n, out) == 1) {
            sched_buf_free(&bytes);
            return;
        }
        sched_buf_free(&bytes);
    }
    sched_ts_finish(&r->ts, out);
}

/* Handles one sampled token: stop conditions and text. Loop thread, no lock. */
static void on_token(sched *s, sched_req *r, int32_t t, float lp, const int32_t *top_ids, const float *top_lp,
                     int cons_done)
{
    double now = emoe_now();
    sched_buf out = {0};
    sched_finish fin = SCHED_FINISH_NONE;
    if (!r->ignore_eos && is_eos(s, t)) {
        fin = SCHED_FINISH_STOP;
        text_finish(s, r, &out);
    } else {
        sched_buf bytes = {0};
        if (s->opts.text.push) s->opts.text.push(s->opts.text.ctx, r->detok, t, &bytes);
        int rc = sched_ts_push(&r->ts, bytes.p, bytes.n, &out);
        sched_buf_free(&bytes);
        if (rc == 1 || cons_done) {
            fin = SCHED_FINISH_STOP;
            if (rc != 1) text_finish(s, r, &out);
        } else if (r->n_gen + 1 >= r->max_tokens || (r->deadline > 0 && now >= r->deadline)) {
            fin = SCHED_FINISH_LENGTH;
            text_finish(s, r, &out);
        }
    }
    r->last_token = t;
    pthread_mutex_lock(&s->mu);
    if (r->n_gen == 0) {
        hist_add(&s->stats.ttft, now - r->t_submit);
        r->t_first = now;
        if (r->slo_ttft_s > 0) {
            sched_slo_task *tk = slo_task_locked(s, r->task);
            if (now - r->t_submit <= r->slo_ttft_s) tk->ttft_met++;
            else tk->ttft_missed++;
        }
    } else {
        hist_add(&s->stats.itl, now - r->t_last);
    }
    r->t_last = now;
    if (r->n_gen == r->cap_gen) {
        int nc = r->cap_gen ? r->cap_gen * 2 : 64;
        int32_t *g = realloc(r->gen, (size_t)nc * sizeof *g);
        if (g) r->gen = g;
        if (g && r->top_n >= 0) {
            float *a = realloc(r->gen_lp, (size_t)nc * sizeof *a);
            if (a) r->gen_lp = a;
            int32_t *b = a && r->top_n ? realloc(r->top_ids, (size_t)nc * r->top_n * sizeof *b) : NULL;
            if (b) r->top_ids = b;
            float *c = b ? realloc(r->top_lp, (size_t)nc * r->top_n * sizeof *c) : NULL;
            if (c) r->top_lp = c;
            if (!a || (r->top_n && !c)) g = NULL;
        }
        if (g) r->cap_gen = nc;
    }
    if (r->n_gen < r->cap_gen) {
        if (r->top_n >= 0) {
            r->gen_lp[r->n_gen] = lp;
            if (r->top_n) {
                memcpy(r->top_ids + (size_t)r->n_gen * r->top_n, top_ids, (size_t)r->top_n * sizeof *top_ids);
                memcpy(r->top_lp + (size_t)r->n_gen * r->top_n, top_lp, (size_t)r->top_n * sizeof *top_lp);
            }
        }
        r->gen[r->n_gen++] = t;
    }
    s->stats.generation_tokens++;
    if (out.n && sched_buf_append(&r->text, out.p, out.n)) {
        end_running_locked(s, r, SCHED_FINISH_ERROR, EMOE_ENOMEM, "out of memory");
    } else if (fin != SCHED_FINISH_NONE) {
        end_running_locked(s, r, fin, EMOE_OK, NULL);
    } else {
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&s->mu);
    sched_buf_free(&out);
}

/* Samples r's next token from r->logits (penalties and bias, the constraint's
 * mask, then the draw), records its log-probabilities and handles it. */
static void sample_emit(sched *s, sched_req *r)
{
    eng_sampler_prepare(r->sampler, r->logits);
    if (r->cons && r->cons_ops->mask(r->cons, r->logits, s->vocab) <= 0) {
        pthread_mutex_lock(&s->mu);
        end_running_locked(s, r, SCHED_FINISH_ERROR, EMOE_EINVAL, "constrained decoding: no token can continue the output");
        pthread_mutex_unlock(&s->mu);
        return;
    }
    int t = eng_sampler_pick(r->sampler, r->logits);
    int32_t ids[SCHED_MAX_TOP_LOGPROBS];
    float tl[SCHED_MAX_TOP_LOGPROBS], lp = 0;
    if (r->top_n >= 0) lp = eng_logprobs(r->logits, s->vocab, t, r->top_n, ids, tl);
    eng_sampler_accept(r->sampler, t);
    int done = 0;
    if (r->cons && !is_eos(s, t)) {
        done = r->cons_ops->accept(r->cons, t);
        if (done < 0) {
            pthread_mutex_lock(&s->mu);
            end_running_locked(s, r, SCHED_FINISH_ERROR, EMOE_EINVAL, "constrained decoding: token not accepted");
            pthread_mutex_unlock(&s->mu);
            return;
        }
    }
    on_token(s, r, t, lp, ids, tl, done == 1);
}

/* A choice waits for its parent's prefill while the parent is running and
 * still prefilling. Loop thread. */
static int fork_waiting(const sched_req *r)
{
    const sched_req *p = r->fork_of;
    return p && !r->forked && !r->prompt_lp_on && r->n_prefilled == 0 && p->state == REQ_RUNNING && p->set_up &&
           p->n_prefilled < p->n_prompt;
}

/* parent just finished its prefill (its logits hold the last position):
 * copies its KV cache into the choices waiting on it and samples their first
 * token. A choice whose copy fails prefills on its own. Loop thread. */
static void fork_children(sched *s, sched_req *parent)
{
    /* The running set (changed only by this thread) holds live requests;
     * each pass handles one child, which may end and leave the set. */
    for (;;) {
        sched_req *c = NULL;
        for (int i = 0; i < s->n_running && !c; i++) {
            sched_req *x = s->running[i];
            if (x->fork_of == parent && x->set_up && !x->forked && !x->n_prefilled && !x->prompt_lp_on) c = x;
        }
        if (!c) return;
        emoe_err err = {0};
        eng_seq *q = eng_seq_fork(parent->seq, c->n_prompt + c->max_tokens, &err);
        if (!q) {
            LOG_DEBUG("request %llu: no fork (%s); prefilling", (unsigned long long)c->id, err.msg);
            c->forked = -1;
            continue;
        }
        eng_seq_free(c->seq);
        c->seq = q;
        eng_seq_set_tag(q, c);
        memcpy(c->logits, parent->logits, (size_t)s->vocab * sizeof *c->logits);
        c->n_prefilled = c->n_prompt;
        c->forked = 1;
        sample_emit(s, c);
    }
}

typedef struct step_item {
    sched_req *r;
    int n_prefill;  /* prompt tokens in this item; 0 = decode */
    int sample;     /* 1: logits wanted, sample after the step */
} step_item;

/* One engine step for the given items; on failure retries them one by one so
 * that a bad request fails alone. Loop thread. */
static void run_items(sched *s, step_item *it, eng_batch_item *bi, int n)
{
    emoe_err err = {0};
    if (eng_step(s->e, bi, n, &err) == EMOE_OK) {
        for (int i = 0; i < n; i++) {
            sched_req *r = it[i].r;
            if (it[i].n_prefill && r->prompt_lp_on) {
                /* position p predicts prompt[p + 1] */
                for (int j = 0; j < it[i].n_prefill; j++) {
                    int p = r->n_prefilled + j;
                    if (p + 1 >= r->n_prompt) break;
                    int tn = r->top_n;
                    r->prompt_lp[p + 1] = eng_logprobs(r->chunk_logits + (size_t)j * s->vocab, s->vocab, r->prompt[p + 1], tn,
                                                       r->prompt_top_ids + (size_t)(p + 1) * tn,
                                                       r->prompt_top_lp + (size_t)(p + 1) * tn);
                }
            }
            if (it[i].n_prefill) {
                /* under the lock: sched_submit's admission control reads it */
                pthread_mutex_lock(&s->mu);
                r->n_prefilled += it[i].n_prefill;
                s->stats.prompt_tokens += (uint64_t)it[i].n_prefill;
                pthread_mutex_unlock(&s->mu);
            }
            if (it[i].sample) {
                if (it[i].n_prefill) fork_children(s, r);
                sample_emit(s, r);
            }
        }
        return;
    }
    if (n == 1) {
        LOG_WARN("request %llu: engine step failed: %s", (unsigned long long)it[0].r->id, err.msg);
        pthread_mutex_lock(&s->mu);
        end_running_locked(s, it[0].r, SCHED_FINISH_ERROR, err.code ? err.code : EMOE_EINVAL, err.msg);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    for (int i = 0; i < n; i++) run_items(s, it + i, bi + i, 1);
}

static void timed_wait(sched *s, double sec)
{
    struct timespec ts;
    abs_deadline(&ts, sec);
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

/* ---- slo policy glue (loop thread) ---- */

static int views_reserve(sched *s, int n)
{
    if (n <= s->cap_views) return 0;
    int nc = s->cap_views ? s->cap_views : 32;
    while (nc < n) nc *= 2;
    slo_view *v = realloc(s->views, (size_t)nc * sizeof *v);
    if (v) s->views = v;
    sched_req **vr = realloc(s->view_reqs, (size_t)nc * sizeof *vr);
    if (vr) s->view_reqs = vr;
    int *pb = realloc(s->plan_buf, (size_t)nc * 3 * sizeof *pb);
    if (pb) s->plan_buf = pb;
    if (!v || !vr || !pb) return -1;
    s->cap_views = nc;
    return 0;
}

static void view_of(const sched_req *r, slo_view *v)
{
    memset(v, 0, sizeof *v);
    v->arrival = r->t_submit;
    v->ttft_deadline = r->slo_ttft_s > 0 && !r->best_effort && r->n_gen == 0 ? r->t_submit + r->slo_ttft_s : 0;
    v->tpot_s = r->best_effort ? 0 : r->slo_tpot_s;
    v->priority = r->priority;
    v->has_slo = !r->best_effort && (r->slo_ttft_s > 0 || r->slo_tpot_s > 0);
    v->n_prompt = r->n_prompt;
    v->n_prefilled = r->n_prefilled;
    v->n_gen = r->n_gen;
    v->pred_out = r->pred_out > 0 ? r->pred_out : r->max_tokens;
    v->max_out = r->max_tokens;
    v->load_s = r->load_s;
    v->active = r->state == REQ_RUNNING && !r->paused;
    v->paused = r->state == REQ_RUNNING && r->paused;
}

/* Plans this iteration with the slo policy and carries out its pauses and
 * admissions; the step order is left in s->plan (indices into s->view_reqs).
 * Caller holds s->mu. */
static void slo_admit_locked(sched *s, double now)
{
    s->plan.n_order = 0;
    int n = s->n_waiting + s->n_running;
    if (n == 0 || views_reserve(s, n)) return;
    int k = 0;
    for (int i = 0; i < s->n_running; i++, k++) {
        s->view_reqs[k] = s->running[i];
        view_of(s->running[i], &s->views[k]);
    }
    for (int i = 0; i < s->n_waiting; i++, k++) {
        s->view_reqs[k] = s->waiting[i];
        view_of(s->waiting[i], &s->views[k]);
    }
    /* Task-aware batching where experts are loaded (the serving loop drives
     * an expert cache: on_queue set): a waiting request whose task is
     * running shares its experts. */
    if (s->opts.on_queue)
        for (int i = 0; i < n; i++) {
            const sched_req *r = s->view_reqs[i];
            if (s->views[i].active || !r->task[0]) continue;
            for (int j = 0; j < s->n_running && !s->views[i].task_hot; j++)
                if (s->views[j].active && !strcmp(s->running[j]->task, r->task)) s->views[i].task_hot = 1;
        }
    slo_est est;
    sched_est_get(&s->stats.est, &est);
    slo_limits lim = {s->limits.max_running, s->limits.max_running, s->limits.prefill_chunk, s->limits.max_batch_tokens};
    s->plan.admit = s->plan_buf;
    s->plan.pause = s->plan_buf + n;
    s->plan.order = s->plan_buf + 2 * n;
    if (slo_plan_step(s->views, n, &est, &lim, now, &s->plan)) {
        s->plan.n_order = 0;
        return;
    }
    for (int i = 0; i < s->plan.n_pause; i++) {
        sched_req *r = s->view_reqs[s->plan.pause[i]];
        r->paused = 1;
        r->n_preempted++;
        s->n_paused++;
        s->stats.preempted++;
        LOG_DEBUG("request %llu: paused (preempted) after %d tokens", (unsigned long long)r->id, r->n_gen);
    }
    for (int i = 0; i < s->plan.n_admit; i++) {
        sched_req *r = s->view_reqs[s->plan.admit[i]];
        if (r->state == REQ_RUNNING) {
            if (r->paused) { r->paused = 0; s->n_paused--; }
            continue;
        }
        if (grow(&s->running, &s->cap_running, s->n_running + 1)) break;
        for (int w = 0; w < s->n_waiting; w++)
            if (s->waiting[w] == r) { remove_at(s->waiting, &s->n_waiting, w); break; }
        s->running[s->n_running++] = r;
        r->state = REQ_RUNNING;
        r->t_start = now;
        hist_add(&s->stats.queue_time, now - r->t_submit);
        pthread_cond_broadcast(&r->cv);
    }
}

/* The step's decode rows under the slo policy: every ready row in plan order,
 * or, when the TPOT guard caps them, rows with an SLO first and then those
 * that decoded longest ago. Marks the chosen rows in take[]. */
static int slo_pick_decodes(sched_req **reqs, int n, int cap, unsigned long long step, char *take)
{
    int ready = 0;
    for (int i = 0; i < n; i++) {
        take[i] = 0;
        if (reqs[i] && reqs[i]->n_prefilled >= reqs[i]->n_prompt) ready++;
    }
    int got = 0;
    for (int i = 0; i < n && got < cap; i++) {
        sched_req *r = reqs[i];
        if (!r || r->n_prefilled < r->n_prompt) continue;
        if (ready <= cap || (!r->best_effort && (r->slo_ttft_s > 0 || r->slo_tpot_s > 0))) { take[i] = 1; got++; }
    }
    while (got < cap && got < ready) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            sched_req *r = reqs[i];
            if (!r || take[i] || r->n_prefilled < r->n_prompt) continue;
            if (best < 0 || r->last_dec_step < reqs[best]->last_dec_step) best = i;
        }
        if (best < 0) break;
        take[best] = 1;
        got++;
    }
    for (int i = 0; i < n; i++)
        if (take[i]) reqs[i]->last_dec_step = step;
    return got;
}

static void *sched_run_loop(void *arg)
{
    sched *s = arg;
    step_item *items = NULL;
    eng_batch_item *bi = NULL;
    sched_req **batch_reqs = NULL;
    char *take = NULL;
    int cap_items = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        s->stats.last_tick = emoe_now();
        if (s->opts.tick) {
            pthread_mutex_unlock(&s->mu);
            s->opts.tick(s->opts.tick_user);
            pthread_mutex_lock(&s->mu);
            if (s->stop) break;
        }
        /* Reap cancelled and expired requests: frees their KV cache now. */
        double now = emoe_now();
        for (int i = 0; i < s->n_running;) {
            sched_req *r = s->running[i];
            if (r->cancel) {
                end_running_locked(s, r, SCHED_FINISH_CANCELLED, EMOE_ECANCEL, "cancelled");
                continue;
            }
            if (r->deadline > 0 && now >= r->deadline) {
                sched_buf out = {0};
                text_finish(s, r, &out);
                if (out.n) sched_buf_append(&r->text, out.p, out.n);
                sched_buf_free(&out);
                end_running_locked(s, r, SCHED_FINISH_LENGTH, EMOE_OK, NULL);
                continue;
            }
            i++;
        }
        /* [prefetch hook] the queue, before admission */
        if (s->opts.on_queue) s->opts.on_queue(s->opts.hook_user, s->waiting, s->n_waiting);
        /* Admit by policy. */
        if (s->slo) slo_admit_locked(s, now);
        while (!s->slo && s->n_running < s->limits.max_running && s->n_waiting > 0) {
            int k = s->policy.pick(s->policy.self, s->waiting, s->n_waiting);
            if (k < 0 || k >= s->n_waiting) break;
            if (grow(&s->running, &s->cap_running, s->n_running + 1)) break;
            sched_req *r = s->waiting[k];
            remove_at(s->waiting, &s->n_waiting, k);
            s->running[s->n_running++] = r;
            r->state = REQ_RUNNING;
            r->t_start = now;
            hist_add(&s->stats.queue_time, now - r->t_submit);
            pthread_cond_broadcast(&r->cv);
        }
        if (s->n_running - s->n_paused == 0) {
            timed_wait(s, 0.5);
            continue;
        }
        /* Snapshot the running set; only this thread changes it. */
        int n_run = s->n_running;
        sched_limits lim = s->limits;
        int slo = s->slo, dec_cap = n_run, pf_budget = lim.max_batch_tokens, pf_deadline_only = 0;
        if (n_run > cap_items) {
            int nc = n_run * 2;
            step_item *ni = realloc(items, (size_t)nc * sizeof *ni);
            if (ni) items = ni;
            eng_batch_item *nb = realloc(bi, (size_t)nc * sizeof *nb);
            if (nb) bi = nb;
            sched_req **nr = realloc(batch_reqs, (size_t)nc * sizeof *nr);
            if (nr) batch_reqs = nr;
            char *nt = realloc(take, (size_t)nc);
            if (nt) take = nt;
            if (!ni || !nb || !nr || !nt) { timed_wait(s, 0.1); continue; }
            cap_items = nc;
        }
        if (slo) {
            /* Active requests in the plan's order (tightest first). */
            int k = 0;
            if (s->plan.n_order > 0) {
                for (int i = 0; i < s->plan.n_order; i++) {
                    sched_req *r = s->view_reqs[s->plan.order[i]];
                    if (r->state == REQ_RUNNING && !r->paused && k < n_run) batch_reqs[k++] = r;
                }
                dec_cap = s->plan.max_decode_rows;
                pf_budget = s->plan.prefill_budget;
                pf_deadline_only = s->plan.deadline_prefill_only;
            } else {
                for (int i = 0; i < n_run; i++)
                    if (!s->running[i]->paused) batch_reqs[k++] = s->running[i];
            }
            n_run = k;
        } else {
            memcpy(batch_reqs, s->running, (size_t)n_run * sizeof *batch_reqs);
        }
        unsigned long long step_no = s->stats.steps;
        pthread_mutex_unlock(&s->mu);

        /* Set up newly admitted requests. */
        for (int i = 0; i < n_run; i++) {
            sched_req *r = batch_reqs[i];
            if (r->set_up) continue;
            emoe_err err = {0};
            if (req_setup(s, r, &err) != EMOE_OK) {
                LOG_WARN("request %llu: %s", (unsigned long long)r->id, err.msg);
                pthread_mutex_lock(&s->mu);
                end_running_locked(s, r, SCHED_FINISH_ERROR, err.code ? err.code : EMOE_ENOMEM, err.msg);
                pthread_mutex_unlock(&s->mu);
                batch_reqs[i] = NULL;
                continue;
            }
            if (s->opts.on_admit) s->opts.on_admit(s->opts.hook_user, r);
        }
        /* Decodes first (one token each), then prefill chunks in admission
         * order (slo: in the plan's order, within the TPOT guard's caps). */
        int n = 0, budget = lim.max_batch_tokens;
        if (slo) slo_pick_decodes(batch_reqs, n_run, dec_cap, step_no, take);
        for (int i = 0; i < n_run; i++) {
            sched_req *r = batch_reqs[i];
            if (!r || r->n_prefilled < r->n_prompt || budget < 1 || (slo && !take[i])) continue;
            items[n] = (step_item){r, 0, 1};
            bi[n] = (eng_batch_item){r->seq, &r->last_token, 1, r->logits, NULL};
            n++;
            budget--;
        }
        int n_dec = n, n_pf = 0;
        if (slo && budget > pf_budget) budget = pf_budget;
        for (int i = 0; i < n_run && budget > 0; i++) {
            sched_req *r = batch_reqs[i];
            if (!r || r->n_prefilled >= r->n_prompt || fork_waiting(r)) continue;
            if (pf_deadline_only && !(r->slo_ttft_s > 0 && !r->best_effort && r->n_gen == 0)) continue;
            int chunk = r->n_prompt - r->n_prefilled;
            if (chunk > lim.prefill_chunk) chunk = lim.prefill_chunk;
            if (chunk > budget) chunk = budget;
            if (r->prompt_lp_on && chunk > SCHED_PROMPT_LP_CHUNK) chunk = SCHED_PROMPT_LP_CHUNK;
            int last = r->n_prefilled + chunk == r->n_prompt;
            items[n] = (step_item){r, chunk, last};
            bi[n] = (eng_batch_item){r->seq, r->prompt + r->n_prefilled, chunk, last ? r->logits : NULL,
                                     r->prompt_lp_on ? r->chunk_logits : NULL};
            n++;
            budget -= chunk;
            n_pf += chunk;
        }
        double t_step = 0;
        if (n > 0) {
            double t0 = emoe_now();
            run_items(s, items, bi, n);
            t_step = emoe_now() - t0;
            if (s->opts.on_step_end) s->opts.on_step_end(s->opts.hook_user);
        }
        pthread_mutex_lock(&s->mu);
        s->stats.steps++;
        if (n > 0) {
            sched_est_step(&s->stats.est, n_dec, n_pf, t_step);
            if (s->stats.steps % 500 == 0) {
                slo_est e;
                sched_est_get(&s->stats.est, &e);
                LOG_DEBUG("scheduler estimates: step %.3f ms + %.3f ms per decode row + %.4f ms per prefill token",
                          e.base_s * 1e3, e.row_s * 1e3, e.tok_s * 1e3);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    free(items);
    free(bi);
    free(batch_reqs);
    free(take);
    return NULL;
}
