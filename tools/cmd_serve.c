/*
 * cmd_serve.c — `emoe serve`: loads the configuration, listens at once
 * (/health says 503 while loading), loads the model, tokenizer and scheduler,
 * then serves until SIGTERM/SIGINT (drain: stop taking work, let in-flight
 * requests finish for [server] drain_timeout, cancel the rest, exit 0).
 * SIGHUP re-reads the config file (with the same --set overrides) and applies
 * the reloadable settings; an invalid file keeps the running configuration.
 * systemd: READY=1 after loading, STATUS= lines, WATCHDOG=1 from the
 * scheduler's run loop (so a stuck engine step stops the pings), RELOADING=1,
 * STOPPING=1.
 *
 * Signals are blocked in every thread and taken synchronously by the main
 * thread with sigtimedwait, so no work happens in a signal handler.
 */
#include "tools/args.h"
#include "tools/config_check.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "engine/engine.h"
#include "scheduler/sched.h"
#include "server/server.h"
#include "server/text.h"
#include "tools/cmds.h"
#include "scheduler/prefetch.h"

static void serve_usage(FILE *f)
{
    fprintf(f, "usage: emoe serve [--config FILE] [--set section.key=value ...] [-m DIR] [--host H] [--port P]\n"
               "       emoe serve --check-config --config FILE     (validate and exit: 0 = valid)\n"
               "  --config FILE       INI configuration (see docs/configuration.md)\n"
               "  --set S.K=V         override one setting (repeatable; wins over the file)\n"
               "  -m, --model DIR     same as --set model.path=DIR\n"
               "  --host H, --port P  same as --set server.host=H / server.port=P (port 0 = any free port)\n"
               "  --budget B          same as --set cache.device_budget=B: 25%% of all experts, or 20GiB\n"
               "  --host-budget B     same as --set cache.host_budget=B\n"
               "  --check-config      validate the configuration (as `emoe config --check`) and the paths it\n"
               "                      names (the model's config.json, the API key file), then exit\n"
               "  --inject-read-error N  testing only: the Nth expert read from the store fails with EIO\n"
               "                      (needs a [cache] device_budget below 100%%)\n");
}

typedef struct serve_args {
    const char *path;
    char **sets;   /* "section.key=value" */
    int n_sets;
    int check;
    int fail_nth_read; /* testing: fault injection into the expert loader */
} serve_args;

/* Builds a config from defaults + file + overrides, validated. */
static emoe_status build_config(const serve_args *a, emoe_config *c, emoe_err *err)
{
    return config_build(a->path, a->sets, a->n_sets, c, err); /* the same as `emoe config --check` */
}

typedef struct watchdog {
    uint64_t usec;        /* 0 = disabled */
    _Atomic double last;
} watchdog;

static void on_tick(void *user)
{
    watchdog *w = user;
    if (!w->usec) return;
    double now = emoe_now();
    if (now - atomic_load(&w->last) >= (double)w->usec * 1e-6 / 3.0) {
        atomic_store(&w->last, now);
        sd_notify(0, "WATCHDOG=1");
    }
}

/* While the model loads there is no run loop yet; systemd's watchdog runs
 * from the start of the service, so a helper pings until the loop takes
 * over (TimeoutStartSec bounds a load that hangs). */
typedef struct load_pinger {
    watchdog *wd;
    atomic_int stop;
} load_pinger;

static void *load_ping_main(void *arg)
{
    load_pinger *lp = arg;
    while (!atomic_load(&lp->stop)) {
        on_tick(lp->wd);
        struct timespec nap = {0, 50 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    return NULL;
}

static sched_limits limits_of(const emoe_config *c)
{
    sched_limits l = {c->scheduler.max_running, c->scheduler.max_queued, c->scheduler.max_batch_tokens,
                      c->scheduler.prefill_chunk};
    return l;
}

int cmd_serve(int argc, char **argv)
{
    serve_args a = {0};
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    char **owned = calloc((size_t)argc + 1, sizeof *owned);
    int n_owned = 0, rc = 1;
    if (!sets || !owned) { free(sets); free(owned); return 1; }
    a.sets = sets;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) { serve_usage(stdout); rc = 0; goto out; }
        else if (!strcmp(o, "--config") && has) a.path = argv[++i];
        else if (!strcmp(o, "--set") && has) sets[a.n_sets++] = argv[++i];
        else if (!strcmp(o, "--check-config")) a.check = 1;
        else if (!strcmp(o, "--inject-read-error") && has) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > (1L << 30)) {
                fprintf(stderr, "emoe serve: --inject-read-error: '%s' is not a number in [1, 2^30]\n", argv[i]);
                rc = 2;
                goto out;
            }
            a.fail_nth_read = (int)v;
        }
        else if ((!strcmp(o, "--budget") || !strcmp(o, "--host-budget")) && has &&
                 arg_budget("serve", o, argv[i + 1], 0)) {
            rc = 2;
            goto out;
        }
        else if ((!strcmp(o, "-m") || !strcmp(o, "--model") || !strcmp(o, "--host") || !strcmp(o, "--port") ||
                  !strcmp(o, "--budget") || !strcmp(o, "--host-budget")) && has) {
            const char *key = o[1] == 'm' || !strcmp(o, "--model") ? "model.path" : !strcmp(o, "--host") ? "server.host"
                              : !strcmp(o, "--budget") ? "cache.device_budget" : !strcmp(o, "--host-budget") ? "cache.host_budget"
                              : "server.port";
            size_t n = strlen(key) + strlen(argv[i + 1]) + 2;
            char *s = malloc(n);
            if (!s) goto out;
            snprintf(s, n, "%s=%s", key, argv[++i]);
            owned[n_owned++] = s;
            sets[a.n_sets++] = s;
        } else {
            fprintf(stderr, "emoe serve: unknown or incomplete option '%s'\n", o);
            serve_usage(stderr);
            rc = 2;
            goto out;
        }
    }

    emoe_config cfg;
    emoe_err err = {0};
    if (build_config(&a, &cfg, &err) != EMOE_OK) {
        fprintf(stderr, "emoe: configuration error: %s\n", err.msg);
        goto out;
    }
    if (!cfg.model.path[0]) {
        fprintf(stderr, "emoe: configuration error: [model] path is required (or -m DIR)\n");
        goto out;
    }
    emoe_log_set_level((emoe_log_level)cfg.log.level);
    if (a.check) {
        char what[CFG_STR_MAX + 128];
        if (config_check_paths(&cfg, what, sizeof what, &err) != EMOE_OK) {
            fprintf(stderr, "emoe: configuration error (syntax and values are valid; a path it names is not): %s\n",
                    err.msg);
            goto out;
        }
        printf("emoe: configuration %s is valid: syntax, values and paths (%s)\n", a.path ? a.path : "(defaults)",
               what);
        rc = 0;
        goto out;
    }

    /* Every thread created from here on inherits the blocked set. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv *server = NULL;
    eng_engine *eng = NULL;
    srv_text *text = NULL;
    sched *sc = NULL;
    prefetch_t *xc = NULL;
    watchdog wd = {0};
    uint64_t wusec = 0;
    if (sd_watchdog_enabled(0, &wusec) > 0) wd.usec = wusec;
    atomic_store(&wd.last, 0.0);

    if (srv_init(&cfg, &server, &err) != EMOE_OK) {
        LOG_ERROR("%s", err.msg);
        goto out;
    }
    LOG_INFO("listening on %s:%d", cfg.server.host, srv_port(server));
    sd_notifyf(0, "STATUS=loading model %s", cfg.model.path);
    load_pinger lp = {.wd = &wd};
    atomic_store(&lp.stop, 0);
    pthread_t lp_thread;
    int lp_started = wd.usec && pthread_create(&lp_thread, NULL, load_ping_main, &lp) == 0;
    double t0 = emoe_now();
    /* [engine] backend is the enum "cpu|auto|cuda": its index is the eng_backend_kind. */
    _Static_assert(ENG_BACKEND_CPU == 0 && ENG_BACKEND_AUTO == 1 && ENG_BACKEND_CUDA == 2, "config enum order");
    /* [engine] kv_dtype is the enum "f32|f16|bf16": its index is the eng_dtype. */
    _Static_assert(ENG_DT_F32 == 0 && ENG_DT_F16 == 1 && ENG_DT_BF16 == 2, "config enum order");
    eng_open_opts eo = {.n_threads = cfg.engine.threads, .max_ctx = cfg.model.context_length, .backend = cfg.engine.backend,
                        .kv_dtype = cfg.engine.kv_dtype, .cuda_no_graphs = !cfg.engine.cuda_graphs,
                        .dense_format = cfg.engine.dense_format /* "native|q8": DENSE_NATIVE 0, DENSE_Q8 1 */};
    if (eng_open(cfg.model.path, &eo, &eng, &err) != EMOE_OK) {
        LOG_ERROR("loading the model: %s", err.msg);
        sd_notifyf(0, "STATUS=failed to load the model: %s", err.msg);
        goto stop;
    }
    if (srv_text_load(cfg.model.path, &text, &err) != EMOE_OK) {
        LOG_ERROR("loading the tokenizer: %s", err.msg);
        goto stop;
    }
    if (!srv_text_available(text)) LOG_WARN("text disabled: %s", srv_text_missing_reason(text));
    if (prefetch_init(&cfg, eng, a.fail_nth_read, &xc, &err) != EMOE_OK) {
        LOG_ERROR("expert cache: %s", err.msg);
        goto stop;
    }
    sched_opts so = {0};
    prefetch_hooks(xc, &so);
    so.limits = limits_of(&cfg);
    so.policy = cfg.scheduler.policy == CFG_SCHED_SLO ? sched_policy_slo() : sched_policy_fifo();
    so.on_unattainable = cfg.scheduler.on_unattainable ? SCHED_UNATTAINABLE_BEST_EFFORT : SCHED_UNATTAINABLE_REJECT;
    so.text = srv_text_ops(text);
    so.tick = on_tick;
    so.tick_user = &wd;
    if (sched_init(eng, &so, &sc, &err) != EMOE_OK) {
        LOG_ERROR("%s", err.msg);
        goto stop;
    }
    /* Ready means the dense weights are in memory, not still being read by
     * the engine's reader threads (a cold first request would wait for them).
     * The load pinger keeps the watchdog fed meanwhile. */
    double t_open = emoe_now() - t0, t_dense = eng_dense_wait(eng);
    if (lp_started) {
        atomic_store(&lp.stop, 1);
        pthread_join(lp_thread, NULL);
        lp_started = 0;
    }
    if (xc) srv_set_metrics_extra(server, prefetch_metrics, xc);
    srv_attach(server, eng, sc, text);
    LOG_INFO("model %s loaded in %.2fs (%s, context %d; %.2fs to open the model, tokenizer and scheduler, then %.2fs until the dense "
             "weights were in memory); ready", cfg.model.path, emoe_now() - t0, eng_desc(eng)->model_type, eng_max_ctx(eng), t_open,
             t_dense);
    sd_notifyf(0, "READY=1\nSTATUS=serving %s on %s:%d", cfg.model.path, cfg.server.host, srv_port(server));

    for (;;) {
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            break;
        }
        if (sig == SIGHUP) {
            sd_notify(0, "RELOADING=1");
            emoe_config next;
            emoe_err rerr = {0};
            if (build_config(&a, &next, &rerr) != EMOE_OK || prefetch_reload(xc, &next, &rerr) != EMOE_OK ||
                srv_reload(server, &next, &rerr) != EMOE_OK) {
                LOG_ERROR("reload failed, keeping the running configuration: %s", rerr.msg);
                sd_notify(0, "READY=1\nSTATUS=reload failed; running configuration kept");
                continue;
            }
            char fixed[512];
            int changed = cfg_apply_reloadable(&cfg, &next, fixed, sizeof fixed);
            sched_limits lim = limits_of(&cfg);
            sched_set_limits(sc, &lim);
            emoe_log_set_level((emoe_log_level)cfg.log.level);
            if (fixed[0]) LOG_WARN("reload: %s changed but need a restart; keeping the old values", fixed);
            LOG_INFO("reloaded configuration: %d setting(s) changed", changed);
            sd_notify(0, "READY=1\nSTATUS=serving (configuration reloaded)");
            continue;
        }
        /* SIGTERM / SIGINT: drain. */
        LOG_INFO("signal %d: draining (up to %.1fs)", sig, cfg.server.drain_timeout);
        sd_notify(0, "STOPPING=1\nSTATUS=draining");
        srv_drain(server);
        sched_drain(sc);
        double deadline = emoe_now() + cfg.server.drain_timeout;
        while (emoe_now() < deadline) {
            sched_stats st;
            sched_get_stats(sc, &st);
            if (srv_inflight(server) == 0 && st.running == 0 && st.waiting == 0) break;
            struct timespec nap = {0, 20 * 1000 * 1000};
            nanosleep(&nap, NULL);
        }
        if (srv_inflight(server) > 0) {
            LOG_WARN("drain timeout: cancelling %d request(s)", srv_inflight(server));
            sched_cancel_all(sc);
            double d2 = emoe_now() + 5.0;
            while (srv_inflight(server) > 0 && emoe_now() < d2) {
                struct timespec nap = {0, 20 * 1000 * 1000};
                nanosleep(&nap, NULL);
            }
        }
        rc = 0;
        break;
    }
stop:
    if (lp_started) {
        atomic_store(&lp.stop, 1);
        pthread_join(lp_thread, NULL);
    }
    srv_free(server); /* waits for every connection thread */
    sched_free(sc);
    prefetch_free(xc);
    srv_text_free(text);
    eng_free(eng);
    if (rc == 0) LOG_INFO("stopped");
out:
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    free(sets);
    return rc;
}
