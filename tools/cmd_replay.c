/*
 * cmd_replay.c — `emoe replay`: the offline policy evaluator. Loads routing
 * traces (JSONL, predictor/trace.h) and replays them through the simulated
 * device tier of the expert cache (predictor/replay.h) under one policy,
 * printing hit rate, misses per token and bytes loaded (prefetches included),
 * and for the predictor its per-layer precision / recall.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/args.h"
#include "predictor/replay.h"
#include "tools/cmds.h"

#define MAX_TRACES 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: emoe replay --trace FILE [--trace FILE ...] --budget X%% --policy P [options]\n"
            "\n"
            "  --trace FILE        routing trace (JSONL); repeatable, all of one model shape\n"
            "  --budget X%%         cache size: X%% of all (layer, expert) slots\n"
            "  --policy P          lru | lfu | belady | predictor | lookahead (predictor + next-layer prefetch)\n"
            "                      | forecast (evict by predicted next use, docs/predictor.md)\n"
            "  --order O           interleaved (default) | grouped | file\n"
            "  --per-layer         one pool of X%% of the experts per layer (default: one global pool)\n"
            "  --expert-bytes N    bytes of one expert, for bytes_loaded (default 1: counts loads)\n"
            "  --phases P          all (default) | prefill | decode\n"
            "  --prefill-step      replay each prompt as one step (per layer, each distinct expert once)\n"
            "  --json              print one JSON object\n"
            "predictor knobs:\n"
            "  --evict E           score (default: lowest keep-score, plan-seeded EWMA of use)\n"
            "                      | pin-lru (pin the plan, LRU for the rest)\n"
            "  --pin-frac F        share of the cache the plan selects and prefetches, 0..1 (default 0.5)\n"
            "  --replan-every N    recompute a task's plan every N of its requests (default 4)\n"
            "  --decay D           weight of a task's history per new request, 0..1 (default 0.5)\n"
            "  --alpha A           per-token EWMA rate of the keep-score, (0, 1] (default 0.06)\n"
            "  --prior-w W         weight of the plan's score in the keep-score (default 0.1)\n"
            "  --no-prior          ablation: ignore the task statistics (no plan, no prefetch)\n"
            "  --lookahead M       prefetch the top-M predicted experts of the next layer (default 0)\n"
            "  --la-blend W        lookahead ranks by transition P + W x the keep-score of the next layer (default 0)\n"
            "  --la-new            lookahead prefetches the M best-ranked experts not already resident\n"
            "  --fc-threshold P    forecast: prefetch a next-layer expert whose estimated use is >= P and\n"
            "                      expected sooner than its victim (default 0.3, the start when adapted;\n"
            "                      above 1 with --fc-precision 0: no prefetch)\n"
            "  --fc-max N          forecast: at most N such prefetches per layer (default top_k)\n"
            "  --fc-plan           forecast: also prefetch the task's plan at request start\n"
            "  --fc-lr R           forecast: SGD step of its logistic estimates (default 0.05)\n"
            "  --fc-depth D        forecast: estimates from this token's path for D layers ahead (default 3)\n"
            "  --fc-history H      forecast: path memory of the last H tokens (default 4096)\n"
            "  --fc-matches M      forecast: the M best-matching paths vote (default 16)\n"
            "  --fc-gamma G        forecast: weight of earlier layers in a path match (default 0.8)\n"
            "  --fc-ctx C          forecast: weight of the previous tokens in a path match (default 0.3)\n"
            "  --fc-power P        forecast: a matching path votes with its score to the power P (default 4)\n"
            "  --fc-precision Q    forecast: adapt the threshold so that a share Q of the prefetches is used\n"
            "                      at their layer's next run (default 0.6; 0: fixed threshold)\n"
            "  --fc-no-lru-budget  forecast: prefetch without the budget (by default it prefetches only while\n"
            "                      its loads so far stay below those of a shadow LRU cache of the same size)\n"
            "  --fc-stale          forecast: evict prefetched experts their layer ran without first\n");
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s) return -1;
    if (*end == '%') end++;
    if (*end) return -1;
    *out = v;
    return 0;
}

static int parse_long(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static void print_text(const pred_replay_opts *o, const pred_replay_result *r)
{
    printf("policy %s, order %s, budget %.4g%% (%d of %d slots, %s), %d requests, %llu tokens\n",
           pred_replay_policy_name(o->policy), pred_replay_order_name(o->order), o->budget * 100.0,
           r->capacity, r->n_layers * r->n_experts, o->per_layer ? "per layer" : "global",
           r->n_requests, (unsigned long long)r->tokens);
    printf("hit_rate %.4f  hits %llu  misses %llu  misses_per_token %.3f\n", r->hit_rate,
           (unsigned long long)r->hits, (unsigned long long)r->misses, r->misses_per_token);
    printf("loads %llu (prefetches %llu, used %llu)  bytes_loaded %llu\n",
           (unsigned long long)r->loads, (unsigned long long)r->prefetches,
           (unsigned long long)r->prefetch_used, (unsigned long long)r->bytes_loaded);
    if (r->precision) {
        printf("plan precision %.4f  recall %.4f  coverage %.4f  (plans computed %llu)\n",
               r->precision_all, r->recall_all, r->coverage_all,
               (unsigned long long)r->plans_computed);
        if (o->policy == PRED_REPLAY_FORECAST)
            printf("forecast log-loss far %.4f near %.4f  prefetch threshold at the end %.4f\n", r->fc_logloss_far,
                   r->fc_logloss_near, r->fc_threshold_end);
        if (r->lookahead_checked)
            printf("lookahead accuracy %.4f (%llu of %llu next-layer experts predicted)\n", r->lookahead_accuracy,
                   (unsigned long long)r->lookahead_hits, (unsigned long long)r->lookahead_checked);
        printf("layer  precision  recall  coverage\n");
        for (int l = 0; l < r->n_layers; l++)
            printf("%5d  %9.4f  %6.4f  %8.4f\n", l, r->precision[l], r->recall[l], r->coverage[l]);
    }
}

static void print_json(const pred_replay_opts *o, const pred_replay_result *r)
{
    printf("{\"policy\": \"%s\", \"order\": \"%s\", \"budget\": %.6g, \"per_layer\": %s, "
           "\"capacity\": %d, \"slots\": %d, \"requests\": %d, \"tokens\": %llu, \"accesses\": %llu, "
           "\"hits\": %llu, \"misses\": %llu, \"hit_rate\": %.6f, \"misses_per_token\": %.6f, "
           "\"prefetches\": %llu, \"prefetch_used\": %llu, \"loads\": %llu, \"expert_bytes\": %llu, "
           "\"bytes_loaded\": %llu, \"prefill_step\": %s",
           pred_replay_policy_name(o->policy), pred_replay_order_name(o->order), o->budget,
           o->per_layer ? "true" : "false", r->capacity, r->n_layers * r->n_experts, r->n_requests,
           (unsigned long long)r->tokens, (unsigned long long)r->accesses,
           (unsigned long long)r->hits, (unsigned long long)r->misses, r->hit_rate,
           r->misses_per_token, (unsigned long long)r->prefetches,
           (unsigned long long)r->prefetch_used, (unsigned long long)r->loads,
           (unsigned long long)o->expert_bytes, (unsigned long long)r->bytes_loaded,
           o->prefill_step ? "true" : "false");
    if (r->precision) {
        printf(", \"precision\": %.6f, \"recall\": %.6f, \"coverage\": %.6f, \"plans_computed\": %llu, "
               "\"lookahead_accuracy\": %.6f, \"lookahead_checked\": %llu",
               r->precision_all, r->recall_all, r->coverage_all,
               (unsigned long long)r->plans_computed, r->lookahead_accuracy, (unsigned long long)r->lookahead_checked);
        if (o->policy == PRED_REPLAY_FORECAST)
            printf(", \"fc_logloss_far\": %.6f, \"fc_logloss_near\": %.6f, \"fc_threshold_end\": %.6f",
                   r->fc_logloss_far, r->fc_logloss_near, r->fc_threshold_end);
        const double *arr[3] = {r->precision, r->recall, r->coverage};
        const char *nm[3] = {"layer_precision", "layer_recall", "layer_coverage"};
        for (int a = 0; a < 3; a++) {
            printf(", \"%s\": [", nm[a]);
            for (int l = 0; l < r->n_layers; l++) printf("%s%.6f", l ? ", " : "", arr[a][l]);
            printf("]");
        }
    }
    printf("}\n");
}

int cmd_replay(int argc, char **argv)
{
    const char *files[MAX_TRACES];
    int n_files = 0, json = 0, have_budget = 0, have_policy = 0;
    pred_replay_opts o;
    pred_replay_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        } else if (!strcmp(a, "--per-layer")) {
            o.per_layer = 1;
            continue;
        } else if (!strcmp(a, "--prefill-step")) {
            o.prefill_step = 1;
            continue;
        } else if (!strcmp(a, "--no-prior")) {
            o.no_prior = 1;
            continue;
        } else if (!strcmp(a, "--fc-no-lru-budget")) {
            o.fc_lru_budget = 0;
            continue;
        } else if (!strcmp(a, "--fc-stale")) {
            o.fc_stale = 1;
            continue;
        } else if (!strcmp(a, "--fc-plan")) {
            o.fc_plan = 1;
            continue;
        } else if (!strcmp(a, "--la-new")) {
            o.la_new = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "emoe replay: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        double d;
        long long n;
        if (!strcmp(a, "--trace")) {
            if (n_files == MAX_TRACES) {
                fprintf(stderr, "emoe replay: at most %d traces\n", MAX_TRACES);
                return 2;
            }
            files[n_files++] = v;
        } else if (!strcmp(a, "--budget")) {
            if (arg_budget("replay", a, v, 1)) return 2;
            char num[64];
            snprintf(num, sizeof num, "%.*s", (int)(strlen(v) - 1), v); /* without the % */
            if (parse_double(num, &d) || !(d > 0.0 && d <= 100.0)) {
                fprintf(stderr, "emoe replay: --budget '%s': want a percentage in (0, 100]\n", v);
                return 2;
            }
            o.budget = d / 100.0;
            have_budget = 1;
        } else if (!strcmp(a, "--policy")) {
            if (pred_replay_policy_parse(v, &o.policy)) {
                fprintf(stderr, "emoe replay: --policy '%s': want lru, lfu, belady or predictor\n", v);
                return 2;
            }
            have_policy = 1;
        } else if (!strcmp(a, "--order")) {
            if (pred_replay_order_parse(v, &o.order)) {
                fprintf(stderr, "emoe replay: --order '%s': want interleaved, grouped or file\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--expert-bytes")) {
            if (parse_long(v, 1, (long long)1 << 40, &n)) {
                fprintf(stderr, "emoe replay: --expert-bytes '%s': want an integer in [1, 2^40]\n", v);
                return 2;
            }
            o.expert_bytes = (uint64_t)n;
        } else if (!strcmp(a, "--phases")) {
            if (!strcmp(v, "all")) o.phases = 3;
            else if (!strcmp(v, "prefill")) o.phases = 1;
            else if (!strcmp(v, "decode")) o.phases = 2;
            else {
                fprintf(stderr, "emoe replay: --phases '%s': want all, prefill or decode\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--pin-frac")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d <= 1.0)) {
                fprintf(stderr, "emoe replay: --pin-frac '%s': want a number in [0, 1]\n", v);
                return 2;
            }
            o.pin_frac = d;
        } else if (!strcmp(a, "--replan-every")) {
            if (parse_long(v, 1, 1000000, &n)) {
                fprintf(stderr, "emoe replay: --replan-every '%s': want an integer in [1, 1000000]\n", v);
                return 2;
            }
            o.pcfg.replan_every = (int)n;
        } else if (!strcmp(a, "--decay")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d < 1.0)) {
                fprintf(stderr, "emoe replay: --decay '%s': want a number in [0, 1)\n", v);
                return 2;
            }
            o.pcfg.decay = (float)d;
        } else if (!strcmp(a, "--alpha")) {
            if (parse_double(v, &d) || !(d > 0.0 && d <= 1.0)) {
                fprintf(stderr, "emoe replay: --alpha '%s': want a number in (0, 1]\n", v);
                return 2;
            }
            o.pcfg.track_alpha = (float)d;
        } else if (!strcmp(a, "--prior-w")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d <= 100.0)) {
                fprintf(stderr, "emoe replay: --prior-w '%s': want a number in [0, 100]\n", v);
                return 2;
            }
            o.pcfg.track_prior_w = (float)d;
        } else if (!strcmp(a, "--evict")) {
            if (!strcmp(v, "score")) o.evict = PRED_REPLAY_EVICT_SCORE;
            else if (!strcmp(v, "pin-lru")) o.evict = PRED_REPLAY_EVICT_PIN_LRU;
            else {
                fprintf(stderr, "emoe replay: --evict '%s': want score or pin-lru\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--lookahead")) {
            if (parse_long(v, 0, 4096, &n)) {
                fprintf(stderr, "emoe replay: --lookahead '%s': want an integer in [0, 4096]\n", v);
                return 2;
            }
            o.lookahead = (int)n;
        } else if (!strcmp(a, "--la-blend")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d <= 100.0)) {
                fprintf(stderr, "emoe replay: --la-blend '%s': want a number in [0, 100]\n", v);
                return 2;
            }
            o.la_blend = d;
        } else if (!strcmp(a, "--fc-threshold")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d <= 2.0)) {
                fprintf(stderr, "emoe replay: --fc-threshold '%s': want a number in [0, 2] (above 1: no prefetch)\n", v);
                return 2;
            }
            o.fc_threshold = d;
        } else if (!strcmp(a, "--fc-max")) {
            if (parse_long(v, 0, 4096, &n)) {
                fprintf(stderr, "emoe replay: --fc-max '%s': want an integer in [0, 4096]\n", v);
                return 2;
            }
            o.fc_max = (int)n;
        } else if (!strcmp(a, "--fc-lr")) {
            if (parse_double(v, &d) || !(d > 0.0 && d <= 1.0)) {
                fprintf(stderr, "emoe replay: --fc-lr '%s': want a number in (0, 1]\n", v);
                return 2;
            }
            o.fc_lr = d;
        } else if (!strcmp(a, "--fc-depth")) {
            if (parse_long(v, 1, 64, &n)) {
                fprintf(stderr, "emoe replay: --fc-depth '%s': want an integer in [1, 64]\n", v);
                return 2;
            }
            o.fc_depth = (int)n;
        } else if (!strcmp(a, "--fc-history")) {
            if (parse_long(v, 1, 1 << 20, &n)) {
                fprintf(stderr, "emoe replay: --fc-history '%s': want an integer in [1, 1048576]\n", v);
                return 2;
            }
            o.fc_history = (int)n;
        } else if (!strcmp(a, "--fc-matches")) {
            if (parse_long(v, 1, 4096, &n)) {
                fprintf(stderr, "emoe replay: --fc-matches '%s': want an integer in [1, 4096]\n", v);
                return 2;
            }
            o.fc_matches = (int)n;
        } else if (!strcmp(a, "--fc-gamma")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d <= 1.0)) {
                fprintf(stderr, "emoe replay: --fc-gamma '%s': want a number in [0, 1]\n", v);
                return 2;
            }
            o.fc_gamma = d;
        } else if (!strcmp(a, "--fc-ctx")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d <= 1.0)) {
                fprintf(stderr, "emoe replay: --fc-ctx '%s': want a number in [0, 1]\n", v);
                return 2;
            }
            o.fc_ctx = d;
        } else if (!strcmp(a, "--fc-power")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d <= 16.0)) {
                fprintf(stderr, "emoe replay: --fc-power '%s': want a number in [0, 16]\n", v);
                return 2;
            }
            o.fc_power = d;
        } else if (!strcmp(a, "--fc-precision")) {
            if (parse_double(v, &d) || !(d >= 0.0 && d < 1.0)) {
                fprintf(stderr, "emoe replay: --fc-precision '%s': want a number in [0, 1)\n", v);
                return 2;
            }
            o.fc_precision = d;
        } else {
            fprintf(stderr, "emoe replay: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!n_files || !have_budget || !have_policy) {
        fprintf(stderr, "emoe replay: --trace, --budget and --policy are required\n");
        usage(stderr);
        return 2;
    }
    pred_trace traces[MAX_TRACES];
    const pred_trace *tp[MAX_TRACES];
    int rc = 1;
    emoe_err err = {0};
    pred_replay_result res;
    memset(&res, 0, sizeof res);
    int loaded = 0;
    for (int i = 0; i < n_files; i++) {
        pred_trace_init(&traces[i]);
        loaded++;
        if (pred_trace_load(&traces[i], files[i], &err)) {
            fprintf(stderr, "emoe replay: %s\n", err.msg);
            goto out;
        }
        tp[i] = &traces[i];
    }
    if (pred_replay_run(tp, n_files, &o, &res, &err)) {
        fprintf(stderr, "emoe replay: %s\n", err.msg);
        goto out;
    }
    if (json) print_json(&o, &res);
    else print_text(&o, &res);
    rc = 0;
out:
    pred_replay_result_free(&res);
    for (int i = 0; i < loaded; i++) pred_trace_free(&traces[i]);
    return rc;
}
