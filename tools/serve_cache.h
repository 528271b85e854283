/*
 * serve_cache.h — `emoe serve`'s serving path through the tiered expert cache
 * and the expert predictor. It owns both, connects them to the engine (expert
 * provider, routing callback) and to the scheduler (run-loop hooks), and
 * renders their /metrics families. Neither the scheduler nor the HTTP server
 * knows the cache or the predictor: they only see callbacks.
 *
 * Threads: every predictor call happens on the scheduler's run-loop thread
 * (the routing callback runs there during eng_step; the hooks run there
 * between steps). /metrics (HTTP threads) reads only the cache's thread-safe
 * stats and atomic counters mirrored by the run loop.
 */
#ifndef EMOE_SERVE_CACHE_H
#define EMOE_SERVE_CACHE_H

#include <stdio.h>

#include "config/config.h"
#include "engine/engine.h"
#include "scheduler/sched.h"

typedef struct serve_cache serve_cache;

/* Attaches the cache per [cache] (store found or built per store_path) and,
 * with [predictor] enabled, creates the predictor. When the device budget is
 * 100% (every expert resident) nothing is attached: *out = NULL, EMOE_OK.
 * fail_nth_read > 0 (testing only) makes the Nth expert read from the store
 * fail with EIO. Logs the budget and resident figures. On failure the engine
 * is left on its checkpoint provider. */
emoe_status serve_cache_init(const emoe_config *cfg, eng_engine *e, int fail_nth_read, serve_cache **out,
                             emoe_err *err);
/* Installs the run-loop hooks into so and the engine's routing callback. Call
 * before sched_init. */
void serve_cache_hooks(serve_cache *sc, sched_opts *so);
/* srv_metrics_fn: the cache's and the predictor's Prometheus families. */
void serve_cache_metrics(void *user, FILE *f);
/* Detaches from the engine (checkpoint provider, no routing callback) and
 * frees. Call after sched_free and srv_free, before eng_free. NULL-safe. */
void serve_cache_free(serve_cache *sc);

#endif
