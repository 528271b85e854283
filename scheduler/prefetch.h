/*
 * prefetch.h — the serving loop's prediction side: `emoe serve`'s expert
 * cache and expert predictor, driven from the scheduler's run loop so that the
 * scheduler calls the predictor and the predicted experts load before the
 * engine needs them:
 *   - queued prefetch: a request's plan (its task's predicted experts) is
 *     taken while it waits in the queue and prefetched, in queue order, under
 *     a bounded share of the device slots, so its experts load while earlier
 *     requests run; a request that leaves the queue without being admitted
 *     (cancelled) is forgotten and its remaining loads are never issued;
 *   - plan prefetch at admission (the rest of the plan);
 *   - in-request lookahead: while layer l is routed, the experts the
 *     predictor's cross-layer transitions predict for layers l+1..l+d
 *     ([predictor] lookahead_layers) are prefetched; its accuracy (share of
 *     the next layer's routed experts that were predicted) is measured live;
 *   - eviction by the expected time to next use on the engine's cyclic walk
 *     over the layers (scheduler/reuse.h; [predictor] evict_order = visit),
 *     speculative loads gated by it, and the next step's likely experts of a
 *     layer loaded once its visit ends ([predictor] next_step_min_use); or by
 *     the predictor's expected reuse distance (evict_order = reuse);
 *   - per-task miss policy from a task profile ([predictor] task_profile,
 *     predictor/profile.h): tasks the profile marks insensitive substitute
 *     resident experts for missing ones, the others stay exact;
 *   - live routing traces ([predictor] trace_path) in the trace format;
 *   - the cache's and the predictor's /metrics families.
 * Neither the scheduler nor the HTTP server knows the cache or the predictor:
 * they only see callbacks (sched_opts hooks, the engine's routing callback
 * and expert provider).
 *
 * Threads: every predictor call happens on the scheduler's run-loop thread
 * (the routing callback and the provider run there during eng_step; the hooks
 * run there between steps). /metrics (HTTP threads) reads only the cache's
 * thread-safe stats and atomic counters / a mutex-guarded task table.
 * prefetch_reload (the main thread, on SIGHUP) validates a new task profile
 * and hands it to the run loop, which installs it between steps.
 */
#ifndef EMOE_PREFETCH_H
#define EMOE_PREFETCH_H

#include <stdio.h>

#include "config/config.h"
#include "engine/engine.h"
#include "scheduler/sched.h"

typedef struct prefetch_t prefetch_t;

/* Attaches the cache per [cache] (store found or built per store_path) and,
 * with [predictor] enabled, creates the predictor; loads [predictor]
 * task_profile and opens [predictor] trace_path (clear error naming the file
 * when either fails). When the device budget is 100% (every expert resident)
 * nothing is attached: *out = NULL, EMOE_OK (a task_profile or trace_path is
 * then reported as unused). fail_nth_read > 0 (testing only) makes the Nth
 * expert read from the store fail with EIO. Logs the budget and resident
 * figures. On failure the engine is left on its checkpoint provider. */
emoe_status prefetch_init(const emoe_config *cfg, eng_engine *e, int fail_nth_read, prefetch_t **out,
                          emoe_err *err);
/* Installs the run-loop hooks into so and the engine's routing callback and
 * provider. Call before sched_init. NULL-safe. */
void prefetch_hooks(prefetch_t *pf, sched_opts *so);
/* On SIGHUP: re-reads [predictor] task_profile from next (path or content may
 * have changed). On error the running profile is kept and err says why. */
emoe_status prefetch_reload(prefetch_t *pf, const emoe_config *next, emoe_err *err);
/* srv_metrics_fn: the cache's and the predictor's Prometheus families. */
void prefetch_metrics(void *user, FILE *f);
/* Detaches from the engine (checkpoint provider, no routing callback) and
 * frees. Call after sched_free and srv_free, before eng_free. NULL-safe. */
void prefetch_free(prefetch_t *pf);

/* The estimator hook for the scheduler's policy: the expected time (seconds)
 * a request of `task` with n_tokens tokens (prompt + expected output) will
 * wait for expert loads, were it admitted now: for every (layer, expert) not
 * resident, the probability that at least one of its tokens routes there
 * (1 - (1 - p)^n_tokens, p the task's predicted per-token use) times the
 * measured mean load latency (a default of 1 ms before any load). 0 when
 * pf is NULL (all resident) or without a predictor. Run-loop thread only
 * (e.g. from a sched_policy's pick). */
double prefetch_expected_load_s(prefetch_t *pf, const char *task, int n_tokens);

/* Expected output length of a task from the loaded profile (0 = unknown). */
int prefetch_expected_output_tokens(prefetch_t *pf, const char *task);

/* Figures for tests and reports (consistent snapshot of the counters). */
typedef struct prefetch_stats {
    uint64_t plans, queue_plans, queue_prefetched, queue_dropped, plan_prefetched;
    uint64_t lookahead_prefetched, lookahead_predicted, lookahead_hits; /* hits / predicted-against = accuracy */
    uint64_t lookahead_checked;          /* next-layer experts routed and checked against the prediction */
    uint64_t next_step_prefetched;       /* loads for the next step's visit of a layer (visit order), in lookahead_prefetched too */
    uint64_t observed_tokens, requests, errors, traced_requests;
    uint64_t substituted;                /* experts substituted (per-task policy included) */
    int queued;                          /* requests the queue prefetch is tracking */
} prefetch_stats;
void prefetch_get_stats(prefetch_t *pf, prefetch_stats *out);

#endif
