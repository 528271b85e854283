/*
 * slo.h — the SLO-aware scheduling policy as a pure function of the queue
 * state, the cost estimates and a clock (no threads, no engine, no time
 * source of its own), so it can be unit-tested with a fake clock
 * (tests/unit/test_slo.c). sched.c builds the views, calls slo_plan() once
 * per run-loop iteration and carries the plan out.
 *
 * Model of the cost of one engine step (measured online, scheduler/estimator.c):
 *     t(step) = base + row * decode_rows + tok * prefill_tokens
 * A request's predicted time to first token if it is served from now on:
 *     expected expert-load time + its prefill, in chunks of `prefill_chunk`,
 *     each chunk a step shared with the running decodes.
 * Slack = TTFT deadline - now - predicted TTFT (infinite without a TTFT SLO).
 *
 * The plan:
 *  - order: waiting and paused requests by least slack (requests with slack
 *    within SLO_SIMILAR_S of each other form one band; inside a band, lower
 *    expected expert-load time first: task-aware batching), then priority
 *    (lower = more important), then arrival; a request whose slack is
 *    already negative (it will miss its TTFT even if served now) goes after
 *    every request that can still meet its own, before those without one;
 *    among those without a deadline (same priority, in arrival order), a
 *    request whose task is running (task_hot) goes before up to
 *    SLO_HOT_WINDOW - 1 older ones that arrived less than SLO_HOT_SPAN_S
 *    before it, so steps share experts under a device budget (an older
 *    request is passed over only by requests that arrived within
 *    SLO_HOT_SPAN_S after it: no starvation);
 *  - admission: free slots (max_running minus active) go in that order;
 *  - preemption: a candidate with a TTFT SLO that would miss it waiting for a
 *    slot (and can still meet it if served now) takes the slot of an active
 *    request without an SLO, or of lower priority (higher number); that
 *    request is paused (KV cache kept, left out of steps) and resumes later
 *    like any waiting request;
 *  - TPOT guard: with active TPOT SLOs, decode rows and the prefill tokens of
 *    a step are capped so the predicted step time stays within the tightest
 *    TPOT (rows with an SLO always run; prefill always progresses by at least
 *    SLO_MIN_PREFILL tokens so nothing stalls);
 *  - first-token steps: while an active request whose TTFT deadline has not
 *    passed is prefilling, steps prefill only requests with a TTFT deadline:
 *    best-effort prompt chunks (and, under a device budget, the experts they
 *    would load) wait a step or two instead of delaying a first token; decode
 *    rows still run (deadline_prefill_only).
 */
#ifndef EMOE_SLO_H
#define EMOE_SLO_H

#define SLO_SIMILAR_S 0.05     /* slack band for task-aware batching */
#define SLO_MIN_PREFILL 16     /* prefill tokens a step always allows */
#define SLO_INF 1e30
#define SLO_HOT_WINDOW 8       /* task-aware batching: a request may pass up to 7 older ones... */
#define SLO_HOT_SPAN_S 3.0     /* ...that arrived at most this long before it */

typedef struct slo_est {
    double base_s;     /* per-step overhead */
    double row_s;      /* per decode row */
    double tok_s;      /* per prefill token */
} slo_est;

/* A request as the policy sees it. */
typedef struct slo_view {
    double arrival;        /* clock time of submission */
    double ttft_deadline;  /* clock time; 0 = no TTFT SLO (or already produced its first token) */
    double tpot_s;         /* 0 = no TPOT SLO */
    int priority;          /* lower = more important */
    int has_slo;           /* 1: the request has a TTFT or TPOT SLO (not preemptible by equal priority) */
    int n_prompt, n_prefilled;
    int n_gen;
    int pred_out;          /* predicted output tokens (total) */
    int max_out;           /* max_tokens: the bound once n_gen passed pred_out (0 = unknown) */
    double load_s;         /* expected expert-load time (0 = resident) */
    int task_hot;          /* its task is running now: its experts are resident or loading
                              (set by the caller where loading experts costs time) */
    int active;            /* in the batch (taking part in steps) */
    int paused;            /* preempted: KV kept, not in steps */
} slo_view;

typedef struct slo_limits {
    int max_running;       /* active requests */
    int max_paused;        /* paused requests (their KV cache stays allocated) */
    int prefill_chunk;
    int max_batch_tokens;
} slo_limits;

/* What to do this iteration. Indices refer to the caller's view array; the
 * arrays must hold n entries each. */
typedef struct slo_plan {
    int *admit; int n_admit;     /* waiting or paused -> active, in this order */
    int *pause; int n_pause;     /* active -> paused */
    int *order; int n_order;     /* active after the plan, tightest first: the step fills decodes and prefills in this order */
    int max_decode_rows;         /* TPOT guard: decode rows this step (>= rows with an SLO) */
    int prefill_budget;          /* TPOT guard: prefill tokens this step */
    double step_cap_s;           /* the tightest TPOT among active decodes (0 = none) */
    int deadline_prefill_only;   /* a request with a TTFT deadline is prefilling: this step prefills
                                    only requests with one */
} slo_plan;

double slo_step_time(const slo_est *e, int decode_rows, int prefill_tokens);
/* Predicted seconds from now to v's first token if served from now on, with
 * decode_rows other rows sharing each step. */
double slo_predict_ttft(const slo_est *e, const slo_view *v, int decode_rows, int prefill_chunk);
/* Deadline - now - predicted TTFT; SLO_INF without a deadline. */
double slo_slack(const slo_est *e, const slo_view *v, double now, int decode_rows, int prefill_chunk);
/* Predicted seconds until v finishes (remaining prefill and decode; a
 * request that outlived its predicted length is expected to run to max_out). */
double slo_predict_remaining(const slo_est *e, const slo_view *v, int decode_rows, int prefill_chunk);

/* Seconds until candidate c could start if it were at the head of the queue:
 * 0 with a free slot among v[0..n) (the active ones count) or an active
 * request c may preempt (paused count below max_paused), else the predicted
 * remaining time of the active request that finishes first. */
double slo_wait_for_slot(const slo_view *v, int n, const slo_view *c, const slo_est *e, const slo_limits *lim);

/* Computes the plan for views v[0..n) at clock time now. Returns 0, or -1 if
 * memory for sorting ran out (then the plan admits nothing). */
int slo_plan_step(const slo_view *v, int n, const slo_est *e, const slo_limits *lim, double now, slo_plan *out);

/* The predicted time from now to the first token of candidate c (not in
 * v[0..n)) given the requests already there, in the order slo_plan_step
 * would run them: the waiting and paused requests that sort before c (least
 * slack first, see slo.h's top) take the slots before it. Slots are handed
 * out in that order, each to the earliest free one: free now, a running
 * request the candidate may preempt (while paused slots last), or the
 * predicted end of a running request or of a candidate placed earlier;
 * a candidate that may preempt does so at the first time slo_plan_step would
 * (it re-plans every iteration: once its slack is below the time until the
 * first occupied slot frees, which grows as candidates ahead take the slots
 * that free first); c's prefill also shares its steps with the prompts of
 * requests ahead of it still prefilling when it starts. *wait_s (may be NULL) gets the wait for
 * c's slot. Used by admission control (sched_submit). */
double slo_queue_ttft(const slo_view *v, int n, const slo_view *c, const slo_est *e, const slo_limits *lim, double now,
                      double *wait_s);

/* Admission control: 1 if a request with a TTFT SLO can meet it when served
 * next (nothing else ahead of it, after wait_s for a slot: slo_wait_for_slot)
 * with decode_rows running; fills *predicted_s with the predicted TTFT
 * (the wait included). */
int slo_attainable(const slo_est *e, const slo_view *v, double now, double wait_s, int decode_rows,
                   int prefill_chunk, double *predicted_s);

#endif
