/*
 * estimator.h — online estimates for the SLO policy: the cost of an engine
 * step as a function of its decode rows and prefill tokens (measured every
 * step, smoothed), and each task's output-length distribution (p50/p90 of the
 * completion tokens of its last requests). Not thread-safe: the scheduler
 * calls it under its lock.
 *
 * Step cost: decode-only steps are averaged (EWMA) per row count; a line
 * base + row * rows is fitted through those averages (least squares, each
 * row count weighted equally). Steps with prefill tokens update the cost per
 * prefill token as the EWMA of (step time - decode part) / prefill tokens.
 * Until measured, priors are used (SCHED_EST_PRIOR_*).
 */
#ifndef EMOE_ESTIMATOR_H
#define EMOE_ESTIMATOR_H

#include "scheduler/slo.h"

#define SCHED_EST_ROWS 64         /* row counts tracked (more are clamped) */
#define SCHED_EST_TASKS 32        /* tasks tracked; later ones share the "" slot */
#define SCHED_EST_WINDOW 64       /* output lengths kept per task */
#define SCHED_EST_ALPHA 0.2       /* EWMA weight of a new measurement */
#define SCHED_EST_PRIOR_BASE 0.005
#define SCHED_EST_PRIOR_ROW 0.001
#define SCHED_EST_PRIOR_TOK 0.0005

typedef struct sched_est_task {
    char name[64];
    int lens[SCHED_EST_WINDOW];
    int n, pos;                  /* kept lengths, ring position */
    unsigned long long seen;
    double load_s;               /* last expected expert-load time of its requests */
    int load_known;
} sched_est_task;

typedef struct sched_est {
    double dec[SCHED_EST_ROWS + 1];   /* EWMA seconds of decode-only steps by rows; 0 = not seen */
    double tok_s;                     /* 0 = not measured */
    unsigned long long steps;
    sched_est_task tasks[SCHED_EST_TASKS];
    int n_tasks;
    double load_last;                 /* the last expected expert-load time of any task */
    int load_any;
} sched_est;

void sched_est_init(sched_est *e);
/* One engine step took `seconds` with these rows and prefill tokens. */
void sched_est_step(sched_est *e, int decode_rows, int prefill_tokens, double seconds);
/* The current cost model. */
void sched_est_get(const sched_est *e, slo_est *out);
/* A request of `task` ("" = none) finished after n_gen tokens. */
void sched_est_finished(sched_est *e, const char *task, int n_gen);
/* p50/p90 of the task's output lengths; returns the number kept (0: none, outputs untouched). */
int sched_est_quantiles(const sched_est *e, const char *task, int *p50, int *p90);
/* Predicted output tokens: the task's p50 if it has >= 4 observations, else
 * prior (> 0), else max_tokens; never above max_tokens. */
int sched_est_out_tokens(const sched_est *e, const char *task, int prior, int max_tokens);

/* The expected expert-load time of a queued request of `task` was set (by the
 * run loop's on_queue hook, which can read the predictor and the cache). */
void sched_est_set_load(sched_est *e, const char *task, double load_s);
/* The estimate for a new request of `task` at submit, before on_queue has
 * seen it: the task's last one, else the last of any task (the cache's
 * residency moves for every task), else 0. */
double sched_est_load(const sched_est *e, const char *task);

#endif
