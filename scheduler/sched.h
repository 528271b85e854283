/*
 * sched.h — the scheduler: the one place where HTTP threads and the engine
 * meet. HTTP threads submit requests into a bounded queue and read results
 * from each request's channel; one run-loop thread owns the engine, admits
 * queued requests by a policy (FIFO or SLO-aware: scheduler/slo.h), forms continuous batches
 * (every running request's decode token plus prefill chunks of newly admitted
 * prompts, up to a token budget), runs eng_step(), samples, applies stop
 * conditions (EOS ids, max_tokens, context end, stop strings on the
 * detokenized text) and publishes text deltas.
 *
 * Text: the scheduler turns tokens into text through a small detokenizer
 * interface (sched_text_ops) so it does not depend on a particular tokenizer.
 * Published text is always valid UTF-8 (incomplete sequences are held back,
 * invalid bytes become U+FFFD) and never contains a stop string or any part of
 * one: a suffix that could start a stop string is held back until it is
 * decided.
 *
 * Ownership: a sched_req is shared by its submitter and the run loop
 * (reference counted). The submitter calls sched_req_release() when done
 * (after sched_req_cancel() if it gives up early); the request's KV cache is
 * freed by the run loop as soon as the request finishes or is cancelled.
 */
#ifndef EMOE_SCHED_H
#define EMOE_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "engine/common.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "scheduler/textstream.h"
#include "scheduler/slo.h"
#include "scheduler/estimator.h"

typedef struct sched sched;
typedef struct sched_req sched_req;

/* Streaming detokenizer. new_state/free_state/flush may be NULL. push
 * appends the bytes that token `id` adds to the text (possibly part of a
 * UTF-8 sequence) to out and returns 0, or -1 on error; flush appends what
 * the state still holds at the end. Special tokens should produce no bytes.
 * Called only from the run loop. */
typedef struct sched_text_ops {
    void *ctx;
    void *(*new_state)(void *ctx);
    void (*free_state)(void *ctx, void *state);
    int (*push)(void *ctx, void *state, int32_t id, sched_buf *out);
    int (*flush)(void *ctx, void *state, sched_buf *out);
} sched_text_ops;

/* Run-time limits (reloadable: sched_set_limits). */
typedef struct sched_limits {
    int max_running;       /* requests in the continuous batch */
    int max_queued;        /* waiting requests; more -> EMOE_EBUSY */
    int max_batch_tokens;  /* tokens per engine step */
    int prefill_chunk;     /* longest prefill piece of one request per step */
} sched_limits;

/* Admission policy: picks which waiting request runs next. */
typedef struct sched_policy {
    const char *name;
    /* Returns an index into waiting[0..n) or -1 to admit nothing now. */
    int (*pick)(void *self, sched_req *const *waiting, int n);
    void *self;
} sched_policy;

/* First come, first served. */
const sched_policy *sched_policy_fifo(void);
/* Least slack first with preemption, TPOT guard and admission control
 * (scheduler/slo.h). Its pick is NULL: a policy without pick is the SLO
 * planner, which decides per run-loop iteration instead of per admission. */
const sched_policy *sched_policy_slo(void);

/* Read-only facts about a request, for policies (fixed at submit; safe to
 * call from pick, which runs under the scheduler's lock). */
uint64_t sched_req_id(const sched_req *r);
const char *sched_req_task(const sched_req *r);   /* "" when none */
double sched_req_arrival(const sched_req *r);     /* emoe_now() at submit */
int sched_req_n_prompt(const sched_req *r);
int sched_req_max_tokens(const sched_req *r);
/* Expert uses of this request computed with the low-bit copy (miss policy
 * lowbit) so far; 0 once its sequence is gone. Loop thread (e.g. on_finish). */
uint64_t sched_req_lowbit(const sched_req *r);
double sched_req_deadline(const sched_req *r);    /* 0 = none */
const int32_t *sched_req_prompt(const sched_req *r);
int sched_req_priority(const sched_req *r);
double sched_req_slo_ttft(const sched_req *r);    /* seconds; 0 = none */
double sched_req_slo_tpot(const sched_req *r);    /* seconds; 0 = none */
/* Sets the expected expert-load time of a waiting request (seconds, clamped
 * to [0, 1e6)); the SLO policy orders and predicts TTFT with it. Only from
 * on_queue (run-loop thread, scheduler lock held), where the predictor and
 * the cache can be read without racing the engine. The scheduler keeps the
 * last value per task: a new request of the task starts from it at submit
 * (admission), before on_queue has seen it. */
void sched_req_set_load_s_locked(sched_req *r, double load_s);

/* What the SLO policy does with a request whose TTFT SLO cannot be met behind
 * the requests it would serve first (slo_queue_ttft). */
typedef enum sched_unattainable {
    SCHED_UNATTAINABLE_REJECT = 0,      /* EMOE_EBUSY, reason SCHED_REJECT_SLO */
    SCHED_UNATTAINABLE_BEST_EFFORT = 1, /* accept it without a deadline */
} sched_unattainable;

typedef struct sched_opts {
    sched_limits limits;
    const sched_policy *policy;    /* NULL = FIFO */
    sched_text_ops text;           /* push NULL = no text (token ids only; stop strings unusable) */
    /* Called from the run loop at least once a second (for the systemd
     * watchdog); may be NULL. */
    void (*tick)(void *user);
    void *tick_user;
    /* Run-loop hooks (each may be NULL), all called on the run-loop thread,
     * which is also the thread of the engine's routing callback; they let the
     * caller drive an expert cache and predictor without the scheduler knowing
     * either. on_admit: a request was admitted and set up, before its first
     * prefill step. on_finish: a running request ends (any reason; called with
     * the scheduler's lock held, so it must not call into the scheduler).
     * on_step_end: after each engine step (also a failed one). */
    void (*on_admit)(void *user, sched_req *r);
    void (*on_finish)(void *user, sched_req *r);
    void (*on_step_end)(void *user);
    /* on_queue (may be NULL): once per run-loop iteration, before admission,
     * with the waiting requests in queue order (n may be 0), so the caller can
     * prepare for them (prefetch) and notice the ones that left without being
     * admitted (cancelled). Called with the scheduler's lock held: it must not
     * call into the scheduler, and should be quick. */
    void (*on_queue)(void *user, sched_req *const *waiting, int n);
    void *hook_user;
    /* Estimator hook for the SLO policy (may be NULL = every expert resident):
     * the expected seconds of expert loading before r's first token (the
     * predictor's plan minus what is resident, times the measured load
     * latency). Called once from sched_submit, on the submitting thread,
     * without the scheduler's lock, with hook_user. */
    double (*expected_load_s)(void *user, const sched_req *r);
    sched_unattainable on_unattainable;
} sched_opts;

typedef enum sched_finish {
    SCHED_FINISH_NONE = 0,
    SCHED_FINISH_STOP,      /* EOS token or stop string */
    SCHED_FINISH_LENGTH,    /* max_tokens, context end or request timeout */
    SCHED_FINISH_CANCELLED, /* cancelled by the submitter or by shutdown */
    SCHED_FINISH_ERROR,     /* engine error; see the error message */
} sched_finish;

const char *sched_finish_name(sched_finish f);

#define SCHED_MAX_STOP 4
#define SCHED_MAX_TOP_LOGPROBS 20
#define SCHED_PROMPT_LP_CHUNK 16

/* Constrained decoding (structured output): a per-request state that masks
 * the logits each step. The scheduler owns the state after a successful
 * submit and frees it with free. mask sets every token the constraint does
 * not allow to -INFINITY (EOS ids only where the output may end) and returns
 * how many remain (0 = dead end: the request fails); accept advances by the
 * sampled token and returns 1 when the output is complete and nothing may
 * follow (the request finishes as STOP), 0 to go on, -1 on error. */
typedef struct sched_constraint_ops {
    int (*mask)(void *state, float *logits, int vocab);
    int (*accept)(void *state, int32_t token);
    void (*free)(void *state);
} sched_constraint_ops;

typedef enum sched_reject_reason {
    SCHED_REJECT_NONE = 0,
    SCHED_REJECT_QUEUE_FULL,       /* "queue_full" */
    SCHED_REJECT_SLO,              /* "slo_unattainable" */
    SCHED_REJECT_DRAINING,         /* "shutting_down" */
    SCHED_REJECT_N
} sched_reject_reason;

const char *sched_reject_name(sched_reject_reason r);

/* Why sched_submit returned EMOE_EBUSY. */
typedef struct sched_reject {
    sched_reject_reason reason;
    double retry_after_s;          /* a hint for Retry-After */
    double predicted_ttft_s;       /* SCHED_REJECT_SLO: the prediction that failed */
} sched_reject;

typedef struct sched_req_params {
    const int32_t *prompt;   /* copied */
    int n_prompt;            /* >= 1 */
    int max_tokens;          /* >= 1; prompt + max_tokens must fit the context */
    eng_sampling sampling;
    const char *stop[SCHED_MAX_STOP]; /* copied; NULL or "" entries ignored */
    int ignore_eos;          /* 1: EOS ids do not stop (benchmarks) */
    double deadline;         /* emoe_now() time after which it finishes as LENGTH; 0 = none */
    const char *task;        /* predictor task name; may be NULL */
    uint64_t id;             /* request id for logs */
    /* SLOs (used by the slo policy; counted in the stats under any policy). */
    double slo_ttft_s;       /* time to first token, seconds; 0 = none */
    double slo_tpot_s;       /* mean time per output token after the first; 0 = none */
    int priority;            /* lower = more important; 0 = default */
    int out_tokens_prior;    /* expected output tokens of the task (config); 0 = unknown */
    sched_reject *reject;    /* optional: filled when sched_submit returns EMOE_EBUSY */
    /* --- OpenAI API extras (issue 15) --- */
    int logprobs;            /* 1: record each token's log-probability ... */
    int top_logprobs;        /* ... and the top N (0..SCHED_MAX_TOP_LOGPROBS) */
    int prompt_logprobs;     /* 1: also of the prompt tokens (echo); prefill runs in chunks of at most
                              * SCHED_PROMPT_LP_CHUNK tokens for this request */
    const int32_t *bias_ids; /* logit_bias (copied); ids in the vocabulary */
    const float *bias;
    int n_bias;
    /* n > 1: a choice that continues `fork_of`'s prompt: when both run, the
     * parent's KV cache is copied after its prefill (eng_seq_fork) instead of
     * prefilling again; otherwise it prefills on its own. Same prompt. */
    sched_req *fork_of;
    const sched_constraint_ops *constraint_ops; /* NULL = unconstrained */
    void *constraint;        /* owned by the request once submitted */
} sched_req_params;

/* Creates the scheduler and starts its run loop on engine e (borrowed; the
 * scheduler is its only user until sched_free). */
emoe_status sched_init(eng_engine *e, const sched_opts *opts, sched **out, emoe_err *err);
/* Stops the run loop, cancels everything still queued or running, frees. */
void sched_free(sched *s);

void sched_set_limits(sched *s, const sched_limits *l);

/* Submits a request. On success *out holds a reference (release it with
 * sched_req_release). EMOE_EBUSY: queue full or draining (err says which);
 * EMOE_EINVAL: bad parameters (length, ids, sampling). */
emoe_status sched_submit(sched *s, const sched_req_params *p, sched_req **out, emoe_err *err);

/* Asks to stop a request at whatever stage it is in; its KV cache and slot are
 * freed by the run loop before its next step. Idempotent. */
void sched_req_cancel(sched_req *r);
/* Drops the submitter's reference. */
void sched_req_release(sched_req *r);

/* What a request has produced since the last sched_req_poll. */
typedef struct sched_update {
    char *text;              /* new text (valid UTF-8), malloc'd, caller frees; NULL if none */
    size_t text_len;
    int n_new_tokens;        /* tokens generated since the last poll */
    int finished;            /* 1 once the request is over (and all text is delivered) */
    sched_finish finish;
    emoe_status error;       /* for SCHED_FINISH_ERROR */
    char error_msg[256];
    int n_prompt, n_gen;     /* usage so far */
    int started;             /* 1 once admitted (left the queue) */
    double ttft_s;           /* measured time to first token (0 = none yet) */
    double predicted_ttft_s; /* predicted at submit (time to first token behind the queue the policy serves first) */
    int preempted;           /* times the request was paused */
} sched_update;

/* Waits up to timeout_s (0 = don't wait) for new output or the finish, then
 * fills u. Returns 1 if u carries anything new (text, tokens or finish). */
int sched_req_poll(sched_req *r, double timeout_s, sched_update *u);

/* Copies the token ids generated so far (up to cap); returns the count. */
int sched_req_tokens(sched_req *r, int32_t *out, int cap);

/* Log-probabilities (params.logprobs set) of generated tokens [from,
 * from+count): lp[i] for token from+i, and N = the requested top count
 * entries per token in top_ids/top_lp (i*N + j). Returns how many tokens were
 * copied (fewer if not generated yet), or -1 when logprobs are off. */
int sched_req_logprobs(sched_req *r, int from, int count, float *lp, int32_t *top_ids, float *top_lp);
/* Log-probabilities of the prompt tokens (params.prompt_logprobs): for
 * i in [1, n_prompt), lp[i] is prompt[i]'s given prompt[0..i) from the raw
 * logits, with the top N in top_ids/top_lp (i*N + j); index 0 has none (NaN).
 * Returns n_prompt once the prompt is prefilled, 0 before, -1 when off. */
int sched_req_prompt_logprobs(sched_req *r, float *lp, int32_t *top_ids, float *top_lp);
/* 1 when this choice's KV cache was copied from its fork_of parent (no prefill of its own), else 0. */
int sched_req_forked(const sched_req *r);

/* Stops admitting: later submits fail with EMOE_EBUSY ("draining"). */
void sched_drain(sched *s);
/* Cancels every queued and running request. */
void sched_cancel_all(sched *s);

/* Counters for /metrics. Histograms are cumulative bucket counts. */
#define SCHED_HIST_BUCKETS 14
extern const double sched_hist_bounds[SCHED_HIST_BUCKETS]; /* seconds, upper bounds; +Inf implied */

typedef struct sched_hist {
    uint64_t counts[SCHED_HIST_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    double sum;
    uint64_t n;
} sched_hist;

/* SLO outcomes of one task ("" = requests without a task). */
typedef struct sched_slo_task {
    char name[64];
    uint64_t ttft_met, ttft_missed, tpot_met, tpot_missed;
} sched_slo_task;

typedef struct sched_stats {
    int running, waiting;
    int paused;                      /* preempted requests (counted in running) */
    int draining;
    uint64_t prompt_tokens, generation_tokens;
    uint64_t requests_finished[5];   /* by sched_finish */
    uint64_t requests_rejected;      /* all reasons */
    uint64_t rejected_by[SCHED_REJECT_N];
    uint64_t preempted;              /* pauses by the slo policy */
    sched_slo_task slo_tasks[SCHED_EST_TASKS];
    int n_slo_tasks;
    sched_est est;                   /* estimator state (step cost, output lengths) */
    double load_s_sum;               /* expected expert-load time of submitted requests */
    uint64_t load_n;
    uint64_t steps;
    sched_hist ttft, itl, e2e, queue_time;
    double last_tick;                /* emoe_now() of the run loop's last iteration */
} sched_stats;

void sched_get_stats(sched *s, sched_stats *st);

#endif
